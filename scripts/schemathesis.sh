#!/usr/bin/env bash
# Property-based check of the control API against its OpenAPI 3.1 document
# (src/control/openapi.json, served at /api/openapi.json) with schemathesis: start `wxsandbox run`
# with a temp config on 127.0.0.1 (ports picked by the OS), run schemathesis against the served
# document, stop the proxy. Exits with schemathesis' status; 2 when schemathesis is missing.
#   scripts/schemathesis.sh                     # 30 examples per operation
#   EXAMPLES=200 SEED=1 scripts/schemathesis.sh
#   BIN=target/release/wxsandbox scripts/schemathesis.sh
# Needs schemathesis (pip install schemathesis; 4.x) and curl.
# GET /api/events is left out: it is an endless event stream, which schemathesis would wait on
# until its request timeout for every example (tests/control.rs covers it).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v schemathesis >/dev/null 2>&1 || {
  echo "scripts/schemathesis.sh: schemathesis is not installed (pip install schemathesis)" >&2
  exit 2
}
bin=${BIN:-target/debug/wxsandbox}
if [ -z "${BIN:-}" ]; then cargo build --locked --quiet --bin wxsandbox; fi

tmp=$(mktemp -d)
pid=
stop() {
  if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap stop EXIT
cat > "$tmp/wxsandbox.yaml" <<YAML
proxy: {listen: 127.0.0.1:0, clients: [127.0.0.0/8]}
control: {listen: 127.0.0.1:0}
ca: {dir: $tmp/ca}
apps:
  - appid: wx0123456789abcdef
    version: devtools
    domains: {request: [https://api.example.com]}
YAML
"$bin" run -c "$tmp/wxsandbox.yaml" --log-format pretty 2> "$tmp/proxy.log" &
pid=$!
# The start-up line names the control address: "... dashboard http://127.0.0.1:PORT/; ...".
control=
for _ in $(seq 1 100); do
  control=$(grep -o 'dashboard http://127\.0\.0\.1:[0-9]*' "$tmp/proxy.log" | head -1 | sed 's/^dashboard //') || true
  [ -n "$control" ] && curl -fsS --max-time 2 "$control/healthz" >/dev/null 2>&1 && break
  control=
  sleep 0.1
done
[ -n "$control" ] || { echo "the proxy did not start:" >&2; cat "$tmp/proxy.log" >&2; exit 1; }
echo "scripts/schemathesis.sh: $(schemathesis --version) against $control/api/openapi.json"

args=(
  run "$control/api/openapi.json"
  --checks not_a_server_error,response_schema_conformance
  --max-examples "${EXAMPLES:-30}"
  --exclude-path /api/events
  --request-timeout 10
  --workers 1
)
[ -n "${SEED:-}" ] && args+=(--seed "$SEED")
status=0
# From the temp dir: schemathesis keeps a cache (.schemathesis/) in its working directory.
(cd "$tmp" && timeout "${SCHEMATHESIS_TIMEOUT:-600}" schemathesis "${args[@]}") || status=$?
if ! kill -0 "$pid" 2>/dev/null; then
  echo "the proxy died during the run:" >&2
  tail -50 "$tmp/proxy.log" >&2
  status=1
fi
exit "$status"
