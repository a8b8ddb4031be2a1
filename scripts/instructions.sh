#!/usr/bin/env bash
# Instructions per request, wxsandbox beside hudsucker (issue #11): the shared harness's 1 KiB
# load (../shared/bench/run.sh, 32 keep-alive connections, policy judged on every call) with each
# proxy run under valgrind's callgrind, counting 5 s of the 10 s load. Unlike CPU time,
# the count does not move with the other tenants of a shared VM, so it compares builds and
# proxies on a noisy host. It misses what time sees and instructions don't: cache misses
# (copies done with `rep movsb` count as one instruction) and the kernel's share.
#   scripts/instructions.sh              # wxsandbox (release build) and hudsucker
#   CACHE=1 scripts/instructions.sh      # also simulate the caches (slower; D1/LL misses)
#   PEERS=wxsandbox scripts/instructions.sh
#   WXSANDBOX=/path/to/an/older/wxsandbox PEERS=wxsandbox scripts/instructions.sh   # A/B builds
# Needs root and the harness (first time: bash ../shared/bench/setup.sh), valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."
bench=${BENCH_DIR:-../shared/bench}
case "$bench" in /*) ;; *) bench="$PWD/$bench" ;; esac
[ -x "$bench/run.sh" ] || { echo "no harness at $bench (set BENCH_DIR)" >&2; exit 1; }
command -v callgrind_control >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
hudsucker=${HUDSUCKER:-/opt/bench/hudsucker-bench/target/release/hudsucker-bench}
out=$PWD/target/instructions
mkdir -p "$out"
wxsandbox=${WXSANDBOX:-}
if [ -z "$wxsandbox" ]; then
  cargo build --release --locked --bin wxsandbox
  wxsandbox=$PWD/target/release/wxsandbox
fi
sim=""
[ "${CACHE:-0}" = 1 ] && sim="--cache-sim=yes --branch-sim=yes"

# A wrapper that starts PROGRAM under callgrind with counting off until callgrind_control says.
wrap() {
  cat > "$out/vg-$1" <<EOF
#!/usr/bin/env bash
exec valgrind --tool=callgrind --instr-atstart=no $sim --callgrind-out-file=$out/$1.%p.out "$2" "\$@"
EOF
  chmod +x "$out/vg-$1"
}

# run NAME START_COMMAND: the harness's 1 KiB load. Counting starts SKIP seconds (4) into it,
# once oha's 32 connections are open (under valgrind a handshake takes long, and hudsucker signs
# each with RSA-2048), and stops 5 s later. Requests = calls of hyper's client-side request
# encoder (both proxies send each request upstream over hyper's HTTP/1.1 client).
run() {
  local name=$1 start=$2 pid log=$out/$1.log
  rm -f "$out/$name".*.out*
  VERIFY_CHECK=0 "$bench/run.sh" -n "ins-$name" -p 18090 -c "${BENCH_STATE:-/tmp/mitmbench}/pki/mitm-ca.crt" \
    --no-64k --no-mint -- "$start" > "$log" 2>&1 &
  local harness=$!
  # The load through the proxy (oha's -x), not the direct baseline before it.
  for _ in $(seq 1 1200); do pgrep -f "oha.*-z 10s.*-x" >/dev/null && break; sleep 0.1; done
  pid=$(pgrep -f "valgrind.*--callgrind-out-file=$out/$name" | head -1 || true)
  [ -n "$pid" ] || { echo "$name: no valgrind process (see $log)" >&2; wait $harness || true; return 1; }
  sleep "${SKIP:-4}"
  callgrind_control -i on "$pid" >/dev/null
  sleep 5
  callgrind_control -i off "$pid" >/dev/null
  callgrind_control -d "$pid" >/dev/null
  wait $harness || true
  python3 - "$name" "$out/$name".*.out* <<'PY'
import re, sys
name, files = sys.argv[1], sys.argv[2:]
names, events, totals, requests, handshakes = {}, [], None, 0, 0
encode = re.compile(r"hyper::proto::h1::role::Client as hyper::proto::h1::Http1Transaction>::encode$")
hello = re.compile(r"CompleteClientHelloHandling::handle_client_hello$")
for f in files:
    target = None
    for line in open(f, errors="replace"):
        if line.startswith("events:"):
            events = line.split()[1:]
        elif line.startswith("totals:"):
            vals = [int(v) for v in line.split()[1:]]
            vals += [0] * (len(events) - len(vals))
            totals = vals if totals is None else [a + b for a, b in zip(totals, vals)]
        elif line.startswith(("fn=", "cfn=")):
            m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line.rstrip("\n"))
            if m:
                if m.group(2):
                    names[m.group(1)] = m.group(2)
                target = names.get(m.group(1), "") if line.startswith("cfn=") else None
        elif line.startswith("calls=") and target is not None:
            n = int(line.split()[0][len("calls="):])
            if encode.search(target):
                requests += n
            elif hello.search(target):
                handshakes += n
if not requests or not totals:
    sys.exit(f"{name}: no requests counted")
shown = "  ".join(f"{e} {v / requests:,.0f}" for e, v in zip(events, totals))
print(f"{name:<10} {requests:,} requests ({handshakes} client handshakes) counted; per request: {shown}")
PY
}

wrap wxsandbox "$wxsandbox"
IFS=, read -r -a peers <<< "${PEERS:-wxsandbox,hudsucker}"
for peer in "${peers[@]}"; do
  case "$peer" in
    wxsandbox)
      run wxsandbox "exec $bench/wxsandbox-start.sh $out/vg-wxsandbox" ;;
    hudsucker)
      [ -x "$hudsucker" ] || { echo "hudsucker: not built at $hudsucker (skipped)"; continue; }
      wrap hudsucker "$hudsucker"
      run hudsucker "exec $out/vg-hudsucker 127.0.0.1:\"\$BENCH_PORT\" \"\$BENCH_MITM_CA_CRT\" \"\$BENCH_MITM_CA_KEY\" \"\$BENCH_UPSTREAM_CA\"" ;;
    *) echo "unknown peer $peer" >&2 ;;
  esac
done
