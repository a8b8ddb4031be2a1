#!/usr/bin/env bash
# Benchmark wxsandbox side by side with hudsucker (and any other installed peer) in one run of
# the shared harness (../shared/bench; its README says what is measured). Needs root (network
# and mount namespaces). First time: bash ../shared/bench/setup.sh (~10 min).
#   scripts/bench.sh                      # wxsandbox + hudsucker, one round
#   ROUNDS=3 scripts/bench.sh             # medians of 3 interleaved rounds
#   PEERS=hudsucker,squid scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bench=${BENCH_DIR:-../shared/bench}
# BENCH_DIR may be absolute or relative to the repository.
case "$bench" in /*) ;; *) bench="$PWD/$bench" ;; esac
[ -x "$bench/peers.sh" ] || { echo "no harness at $bench (set BENCH_DIR)" >&2; exit 1; }
cargo build --release --locked --bin wxsandbox
exec "$bench/peers.sh" --only "${PEERS:-hudsucker},wxsandbox" \
  --add wxsandbox 18090 '$BENCH_MITM_CA_CRT' "exec $bench/wxsandbox-start.sh $PWD/target/release/wxsandbox"
