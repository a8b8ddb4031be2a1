#!/usr/bin/env bash
# Benchmark wxsandbox side by side with hudsucker (and any other installed peer) in one run of
# the shared harness (../shared/bench; its README says what is measured). Needs root (network
# and mount namespaces). First time: bash ../shared/bench/setup.sh (~10 min).
#   scripts/bench.sh                      # wxsandbox + hudsucker, one round
#   ROUNDS=3 scripts/bench.sh             # medians of 3 interleaved rounds
#   PEERS=hudsucker,squid scripts/bench.sh
#   PGO=0 ROUNDS=3 scripts/bench.sh      # the release build alone (no profile-guided build)
#   PGO=reuse ROUNDS=3 scripts/bench.sh  # the last target/pgo/wxsandbox, not built again
# By default the profile-guided build of scripts/pgo.sh (trained on the soak, not on this load;
# ~15 min to build) runs too, as the peer wxsandbox-pgo, in the same rounds as the release build.
set -euo pipefail
cd "$(dirname "$0")/.."
bench=${BENCH_DIR:-../shared/bench}
# BENCH_DIR may be absolute or relative to the repository.
case "$bench" in /*) ;; *) bench="$PWD/$bench" ;; esac
[ -x "$bench/peers.sh" ] || { echo "no harness at $bench (set BENCH_DIR)" >&2; exit 1; }
cargo build --release --locked --bin wxsandbox
only="${PEERS:-hudsucker}"
adds=()
# peer NAME PORT BINARY: one build of wxsandbox as a peer of the harness.
peer() {
  only="$only,$1"
  adds+=(--add "$1" "$2" '$BENCH_MITM_CA_CRT' "exec $bench/wxsandbox-start.sh $PWD/$3")
}
peer wxsandbox 18090 target/release/wxsandbox
case "${PGO:-1}" in
  0) ;;
  1 | reuse)
    if [ "${PGO:-1}" = 1 ] || [ ! -x target/pgo/wxsandbox ]; then
      bash scripts/pgo.sh
    elif [ -n "$(find src Cargo.toml Cargo.lock -newer target/pgo/wxsandbox -print -quit)" ]; then
      echo "bench: PGO=reuse: target/pgo/wxsandbox is older than the sources; wxsandbox-pgo is not this code" >&2
    fi
    peer wxsandbox-pgo 18091 target/pgo/wxsandbox
    ;;
  *) echo "PGO is 1, 0 or reuse" >&2; exit 64 ;;
esac
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"$bench/peers.sh" --only "$only" "${adds[@]}" | tee "$log"
# Per round, wxsandbox against hudsucker (the medians above hide how far the rounds spread).
results=$(sed -n 's/^raw results: \([^ ]*results\.tsv\).*/\1/p' "$log" | tail -1)
[ -f "$results" ] || exit 0
python3 - "$results" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
v = {(r[0], r[1], r[-1]): r[2] for r in rows if len(r) >= 6}
rounds = sorted({r[-1] for r in rows if len(r) >= 6}, key=int)
if not any(("hudsucker", "1k.rps", n) in v for n in rounds):
    sys.exit(0)
for ours in ("wxsandbox", "wxsandbox-pgo"):
    if not any((ours, "1k.rps", n) in v for n in rounds):
        continue
    print(f"\nper round, {ours} / hudsucker (ratio):")
    for metric, label in [("1k.proxy_cpu_us_per_req", "1k CPU us/req"), ("1k.rps", "1k rps"),
                          ("first_req.mint_mean_ms", "new host ms"), ("first_req.cached_mean_ms", "cached host ms")]:
        cells = []
        for n in rounds:
            w, h = v.get((ours, metric, n)), v.get(("hudsucker", metric, n))
            if w and h:
                cells.append(f"{float(w):.1f} / {float(h):.1f} ({float(w) / float(h):.2f})")
        if cells:
            print(f"  {label:<15} " + "   ".join(cells))
PY
