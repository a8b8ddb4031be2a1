#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser that sees outside input (the cargo-fuzz crate in fuzz/,
# targets and oracles in fuzz/harness.rs). Needs a nightly toolchain; without one it says so and
# exits 0. Installs cargo-fuzz from crates.io when missing.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     each target SECONDS (default 60), one after another
#
# Each run is one libFuzzer job under `nice -n 19`, started from fuzz/corpus/<target> (grown
# corpus, git-ignored) and fuzz/seeds/<target> (checked in), with fuzz/dict/<target>.dict when
# there is one. Prints per target the executions (libFuzzer's final
# stat::number_of_executed_units) and whether it crashed; a crash's input is copied to
# fuzz/regressions/<target>/ (replayed by `cargo test --test fuzz_regressions`; check it in) and
# the script exits 1.
# Environment: FUZZ_SANITIZER (none | address, default none: the crate forbids unsafe code, and
# none runs about twice as many inputs); FUZZ_TALLY=FILE appends one markdown row per target
# (`| target | seconds run | executions | crashes | commit |`), e.g. FUZZ_TALLY=fuzz/EXECUTIONS.md.
set -uo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
shift $(($# > 0 ? 1 : 0))
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(judge wsframes decode config project audit)
sanitizer=${FUZZ_SANITIZER:-none}

if ! rustup toolchain list 2>/dev/null | grep -q nightly || ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: no nightly toolchain installed, nothing fuzzed (rustup toolchain install nightly to fuzz)"
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  if ! nice -n 19 cargo +nightly install cargo-fuzz --locked; then
    echo "fuzz: cargo-fuzz could not be installed" >&2
    exit 1
  fi
fi

logs=fuzz/target/logs
mkdir -p "$logs"
echo "fuzz: building the targets (sanitizer $sanitizer)"
if ! nice -n 19 cargo +nightly fuzz build -s "$sanitizer" >"$logs/build.log" 2>&1; then
  tail -30 "$logs/build.log" >&2
  echo "fuzz: build failed" >&2
  exit 1
fi
crashed=0
printf '%-9s %8s %14s  %s\n' target seconds executions result
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t" "fuzz/regressions/$t"
  before=$(ls "fuzz/artifacts/$t")
  dict=()
  [ -f "fuzz/dict/$t.dict" ] && dict=("-dict=fuzz/dict/$t.dict")
  start=$SECONDS
  nice -n 19 cargo +nightly fuzz run -s "$sanitizer" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
    "${dict[@]}" >"$logs/$t.log" 2>&1
  rc=$?
  took=$((SECONDS - start))
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$logs/$t.log" | tail -1 | grep -o '[0-9]*$')
  new=$(comm -13 <(echo "$before" | sort) <(ls "fuzz/artifacts/$t" | sort))
  result=ok
  crashes=0
  if [ $rc -ne 0 ] || [ -n "$new" ]; then
    crashed=1
    crashes=$(echo "$new" | grep -c . || true)
    result="CRASHED (exit $rc), log $logs/$t.log"
    for f in $new; do
      cp "fuzz/artifacts/$t/$f" "fuzz/regressions/$t/$f"
      result="$result; input fuzz/regressions/$t/$f"
    done
    grep -m1 -A1 -E "panicked at|ERROR: " "$logs/$t.log" | cut -c1-300 | sed 's/^/    /'
  fi
  printf '%-9s %8s %14s  %s\n' "$t" "$took" "${execs:-?}" "$result"
  if [ -n "${FUZZ_TALLY:-}" ]; then
    printf '| %s | %s | %s | %s | %s |\n' "$t" "$took" "${execs:-?}" "$crashes" \
      "$(git rev-parse --short HEAD 2>/dev/null)" >>"$FUZZ_TALLY"
  fi
done
if [ $crashed -ne 0 ]; then
  echo "fuzz: crashes found: their inputs are in fuzz/regressions/ (cargo test --test fuzz_regressions replays them)"
  exit 1
fi
echo "fuzz: no crash"
