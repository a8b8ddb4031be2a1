#!/usr/bin/env bash
# Measures a shaped network profile through the real proxy on 127.0.0.1 (test backend, proxy and
# client in one process, see the ignored test `network_bench` in tests/network.rs): a 1 MiB
# download (throughput against the profile's rate) and 100 sequential 1 KiB calls (latency added
# per call), each beside the same on the `online` profile.
#   scripts/network_bench.sh                 # the 4g preset
#   PROFILE=3g scripts/network_bench.sh      # any preset: wifi, 4g, 3g, 2g, gprs
#   RELEASE=1 scripts/network_bench.sh       # release build (shaping is sleep-bound: same figures)
set -euo pipefail
cd "$(dirname "$0")/.."
release=()
[ -n "${RELEASE:-}" ] && release=(--release)
NETWORK_BENCH_PROFILE="${PROFILE:-4g}" exec cargo test "${release[@]}" --test network -- \
  --ignored --exact network_bench --nocapture
