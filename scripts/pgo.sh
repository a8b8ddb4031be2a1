#!/usr/bin/env bash
# A profile-guided (PGO) release build of wxsandbox, trained on the soak (issue #11).
#
# 1. an instrumented release build (rustc -Cprofile-generate) in target/pgo-gen;
# 2. training: scripts/soak.sh's load (every kind of call: HTTP/1.1 and HTTP/2, 1 KiB and
#    1 MiB bodies both ways, every refusal rule, WebSockets, raw TCP, new hosts, background
#    cycles, the control API; loopback only) against that build, PGO_MINUTES long (default 1).
#    Not the benchmark's load: the profile says which paths a mixed day of calls takes;
# 3. llvm-profdata merges the raw profiles into target/pgo/wxsandbox.profdata;
# 4. the release build again with -Cprofile-use: target/pgo/wxsandbox.
#
# The same code as `cargo build --release`, laid out by the profile: hot paths together and
# straight, cold ones apart, inlining where calls are frequent. ~15 minutes on 2 cores.
#   scripts/pgo.sh                  # -> target/pgo/wxsandbox
#   PGO_MINUTES=3 scripts/pgo.sh    # a longer training run
# Both builds keep the caller's RUSTFLAGS, so the profile matches the code it is used on.
# Needs llvm-profdata as new as rustc's LLVM raw format: rustup's llvm-tools component, else
# Debian's llvm-19 or newer (installed with apt-get when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=$root/target/pgo
raw=$out/raw
minutes=${PGO_MINUTES:-1}
mkdir -p "$out"

# llvm-profdata: rustup's (matches rustc's LLVM), else the newest of Debian's (19 reads the raw
# profiles of rustc 1.95's LLVM 22 and writes an indexed profile it reads).
profdata() {
  local host sysroot p
  host=$(rustc -vV | sed -n 's/^host: //p')
  sysroot=$(rustc --print sysroot)
  p="$sysroot/lib/rustlib/$host/bin/llvm-profdata"
  [ -x "$p" ] && { echo "$p"; return; }
  p=$(ls -d /usr/lib/llvm-*/bin/llvm-profdata 2>/dev/null | sort -t- -k2 -n | tail -1 || true)
  if [ -n "$p" ] && [ "$(echo "$p" | sed 's#.*/llvm-\([0-9]*\)/.*#\1#')" -ge 19 ]; then
    echo "$p"
    return
  fi
  return 1
}
if ! tool=$(profdata); then
  echo "pgo: installing Debian's llvm-19 for llvm-profdata"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq llvm-19; } >/dev/null
  tool=$(profdata) || { echo "pgo: no llvm-profdata >= 19 (rustup component add llvm-tools, or apt-get install llvm-19)" >&2; exit 1; }
fi
echo "pgo: llvm-profdata: $tool"

echo "pgo: 1/4 instrumented build (target/pgo-gen)"
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$raw" cargo build --release --locked --bin wxsandbox --target-dir target/pgo-gen

echo "pgo: 2/4 training: the soak, $minutes minute(s)"
# Build scripts of the instrumented build wrote profiles here too: not the proxy's. (The soak's
# driver is built without instrumentation: only the proxy's own runs go into the profile.)
rm -rf "$raw"
mkdir -p "$raw"
if ! WXSANDBOX=target/pgo-gen/release/wxsandbox bash scripts/soak.sh "$minutes"; then
  # An instrumented proxy is slower; its profile is still the paths the calls took.
  echo "pgo: the soak reported failures against the instrumented build (see target/soak); its profile is used anyway"
fi
ls "$raw"/*.profraw >/dev/null 2>&1 || { echo "pgo: the proxy wrote no profile (did it exit on SIGTERM?)" >&2; exit 1; }

echo "pgo: 3/4 merge"
"$tool" merge -o "$out/wxsandbox.profdata" "$raw"/*.profraw

echo "pgo: 4/4 the release build with the profile (target/pgo-use)"
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$out/wxsandbox.profdata" cargo build --release --locked --bin wxsandbox --target-dir target/pgo-use
cp target/pgo-use/release/wxsandbox "$out/wxsandbox"
echo "pgo: $out/wxsandbox"
