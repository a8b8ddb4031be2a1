#!/usr/bin/env bash
# Where a 1 KiB call's CPU goes, wxsandbox beside hudsucker (issue #11): the shared harness's
# 1 KiB load (../shared/bench/run.sh: oha, 32 keep-alive connections, policy judged on every
# call), sampled for 5 s in the middle of its 10 s, per request:
#   user and kernel CPU (/proc/PID/stat), voluntary context switches (the worker going to sleep
#   in epoll_wait and being woken), and with perf installed the epoll_wait, recvfrom and writev
#   calls. The harness's load is bounded by the client's core, so a cheaper proxy idles more,
#   sleeps and wakes more often and polls epoll for fewer events at a time: its kernel time per
#   request grows as its user time shrinks. CAP=PCT runs each proxy in a cpu cgroup limited to
#   PCT% of a core, so that the proxy is the bottleneck and never idles: rps is then requests per
#   CPU budget, the comparison without the idling.
#   scripts/cpu-split.sh                          # release build and hudsucker, 3 rounds
#   CAP=50 scripts/cpu-split.sh                   # each proxy limited to half a core
#   WXSANDBOX=target/pgo/wxsandbox ROUNDS=5 scripts/cpu-split.sh
# Needs root and the harness (first time: bash ../shared/bench/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bench=${BENCH_DIR:-../shared/bench}
case "$bench" in /*) ;; *) bench="$PWD/$bench" ;; esac
[ -x "$bench/run.sh" ] || { echo "no harness at $bench (set BENCH_DIR)" >&2; exit 1; }
hudsucker=${HUDSUCKER:-/opt/bench/hudsucker-bench/target/release/hudsucker-bench}
[ -x "$hudsucker" ] || { echo "hudsucker is not built at $hudsucker (bash $bench/setup.sh)" >&2; exit 1; }
wxsandbox=${WXSANDBOX:-}
if [ -z "$wxsandbox" ]; then
  cargo build --release --locked --bin wxsandbox
  wxsandbox=target/release/wxsandbox
fi
case "$wxsandbox" in /*) ;; *) wxsandbox="$PWD/$wxsandbox" ;; esac
rounds=${ROUNDS:-3}
cap=${CAP:-}
case "$cap" in '' | [1-9] | [1-9][0-9]) ;; *) echo "CAP is a percentage of one core, 1-99" >&2; exit 64 ;; esac
out=$PWD/target/cpu-split
mkdir -p "$out"
ticks=$(getconf CLK_TCK)
have_perf=0
command -v perf >/dev/null && perf stat -e syscalls:sys_enter_epoll_wait true >/dev/null 2>&1 && have_perf=1

# The cgroup a capped proxy runs in: cgroup v1's cpu controller or v2's cpu.max.
group=""
if [ -n "$cap" ]; then
  if [ -d /sys/fs/cgroup/cpu ] && [ -f /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then
    group=/sys/fs/cgroup/cpu/wxsandbox-cpu-split
    mkdir -p "$group"
    echo 10000 > "$group/cpu.cfs_period_us"
    echo $((cap * 100)) > "$group/cpu.cfs_quota_us"
  elif [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    group=/sys/fs/cgroup/wxsandbox-cpu-split
    mkdir -p "$group"
    echo "+cpu" > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
    echo "$((cap * 100)) 10000" > "$group/cpu.max"
  else
    echo "no cpu cgroup to cap with" >&2; exit 1
  fi
  trap 'rmdir "$group" 2>/dev/null || true' EXIT
fi
# A start command that enters the cgroup first (when capped), then runs the proxy.
enter() { [ -n "$group" ] && printf 'echo $$ > %s/cgroup.procs; ' "$group"; true; }

# sample NAME PROCESS START: one harness run; prints "name rps cpu user sys vcs epoll recv writev".
sample() {
  local name=$1 proc=$2 start=$3 pid="" h
  VERIFY_CHECK=0 "$bench/run.sh" -n "cs-$name" -p 18090 -c /tmp/mitmbench/pki/mitm-ca.crt \
    --no-64k --no-mint -- "$(enter)$start" > "$out/$name.log" 2>&1 &
  h=$!
  for _ in $(seq 1 600); do pgrep -f "oha.*-z 10s.*-x" >/dev/null && break; sleep 0.1; done
  sleep 3
  pid=$(pgrep -x "$proc" | head -1 || true)
  if [ -z "$pid" ]; then wait "$h" || true; echo "$name: the proxy is not running" >&2; return 1; fi
  local a b v0 v1 perf_out=/dev/null
  a=$(awk '{print $14, $15}' "/proc/$pid/stat")
  v0=$(cat /proc/"$pid"/task/*/status | awk '/^voluntary_ctxt/{s+=$2} END{print s}')
  if [ "$have_perf" = 1 ]; then
    perf_out=$out/$name.perf
    perf stat -x, -e syscalls:sys_enter_epoll_wait,syscalls:sys_enter_recvfrom,syscalls:sys_enter_writev \
      -p "$pid" -o "$perf_out" -- sleep 5
  else
    sleep 5
  fi
  b=$(awk '{print $14, $15}' "/proc/$pid/stat")
  v1=$(cat /proc/"$pid"/task/*/status | awk '/^voluntary_ctxt/{s+=$2} END{print s}')
  wait "$h" || true
  local rps
  rps=$(awk '$2=="1k.rps"{print $3}' "$out/$name.log")
  [ -n "$rps" ] || { echo "$name: no 1k.rps in $out/$name.log" >&2; return 1; }
  python3 - "$name" "$rps" "$ticks" "$a" "$b" "$v0" "$v1" "$perf_out" <<'PY'
import sys
name, rps, tck, a, b, v0, v1, perf = sys.argv[1:]
reqs = float(rps) * 5
u0, s0 = map(int, a.split()); u1, s1 = map(int, b.split())
us = lambda t: t / int(tck) * 1e6 / reqs
calls = {}
try:
    for line in open(perf):
        f = line.strip().split(",")
        if len(f) > 2 and f[2].startswith("syscalls:sys_enter_"):
            calls[f[2][19:]] = float(f[0]) / reqs if f[0].replace(".", "").isdigit() else float("nan")
except OSError:
    pass
nan = float("nan")
print(name, rps, f"{us(u1 - u0 + s1 - s0):.1f}", f"{us(u1 - u0):.1f}", f"{us(s1 - s0):.1f}",
      f"{(int(v1) - int(v0)) / reqs:.3f}",
      *(f"{calls.get(k, nan):.2f}" for k in ("epoll_wait", "recvfrom", "writev")))
PY
}

rows=$out/rows.txt
: > "$rows"
for r in $(seq 1 "$rounds"); do
  sample wxsandbox wxsandbox "exec $bench/wxsandbox-start.sh $wxsandbox" | sed "s/^/$r /" | tee -a "$rows"
  sample hudsucker hudsucker-bench "exec $hudsucker 127.0.0.1:\"\$BENCH_PORT\" \"\$BENCH_MITM_CA_CRT\" \"\$BENCH_MITM_CA_KEY\" \"\$BENCH_UPSTREAM_CA\"" \
    | sed "s/^/$r /" | tee -a "$rows"
done
python3 - "$rows" "${cap:-none}" <<'PY'
import sys, statistics, collections
cols = ["rps", "CPU us", "user us", "kernel us", "sleeps", "epoll_wait", "recvfrom", "writev"]
d = collections.defaultdict(lambda: collections.defaultdict(list))
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) != 10:
        continue
    for c, v in zip(cols, f[2:]):
        d[f[1]][c].append(float(v))
print(f"\nmedians per request over the rounds (cap: {sys.argv[2]}% of a core)" if sys.argv[2] != "none"
      else "\nmedians per request over the rounds (no cap: the client's core sets the rate)")
print(f"{'':10}" + "".join(f"{c:>12}" for c in cols))
med = {n: {c: statistics.median(v[c]) for c in cols} for n, v in d.items()}
for n, m in med.items():
    print(f"{n:10}" + "".join(f"{m[c]:12.2f}" if c != "rps" else f"{m[c]:12.0f}" for c in cols))
if "wxsandbox" in med and "hudsucker" in med:
    w, h = med["wxsandbox"], med["hudsucker"]
    print(f"{'ratio':10}" + "".join(f"{w[c] / h[c]:12.2f}" if h[c] else f"{'-':>12}" for c in cols))
PY
