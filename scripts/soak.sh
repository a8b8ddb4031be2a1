#!/usr/bin/env bash
# Soak: the release binary under a bounded-rate mix of every kind of call (allowed HTTP/1.1 and
# HTTP/2, 1 KiB and 1 MiB bodies both ways, every refusal rule, aborted downloads, background
# cycles, WebSockets, raw TCP tunnels, new host names, the control API), on 127.0.0.0/8 only.
# Fails on any wrong verdict, RSS growth over 10% after the warm-up, or descriptors and slots
# not back to their value before the load. Writes target/soak/soak.csv and target/soak/soak.png.
#   scripts/soak.sh            # 1 minute of load (plus ~15 s prefill and ~10 s drain)
#   scripts/soak.sh 3          # 3 minutes
#   SOAK_PROFILE=dev scripts/soak.sh 1   # the debug build (what CI runs: no release builds)
#   WXSANDBOX=target/pgo/wxsandbox scripts/soak.sh   # another build of the binary
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-1}
out=target/soak

if ! command -v gnuplot >/dev/null 2>&1; then
  echo "soak: installing gnuplot-nox for the plot"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gnuplot-nox; } >/dev/null 2>&1 \
    || echo "soak: gnuplot-nox could not be installed: no plot (the soak runs anyway)"
fi
profile=${SOAK_PROFILE:-release}
case "$profile" in
  release) flag=--release; dir=target/release ;;
  dev) flag=; dir=target/debug ;;
  *) echo "soak: SOAK_PROFILE is release or dev" >&2; exit 64 ;;
esac
# Two builds: the binary exactly as shipped (an example unifies the dev-dependencies' features).
# WXSANDBOX=path soaks another build of the binary (scripts/pgo.sh's instrumented one).
bin=${WXSANDBOX:-$dir/wxsandbox}
[ -n "${WXSANDBOX:-}" ] || cargo build $flag --locked --bin wxsandbox
cargo build $flag --locked --example soak
mkdir -p "$out"
rc=0
"$dir/examples/soak" --minutes "$minutes" --bin "$bin" --out "$out" || rc=$?
if command -v gnuplot >/dev/null 2>&1 && [ -s "$out/soak.csv" ]; then
  gnuplot "$out/soak.gp" && echo "soak: plot $out/soak.png"
fi
exit "$rc"
