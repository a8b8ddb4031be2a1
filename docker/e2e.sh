#!/usr/bin/env bash
# End to end with a Docker engine: build, start the compose project, one call through the proxy
# to the backend, one refused call, tear down. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
compose=(docker compose -f docker/docker-compose.yml)
if ! docker info >/dev/null 2>&1; then
  echo "docker/e2e.sh: no Docker engine here; nothing to do" >&2
  exit 0
fi
cleanup() { "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true; }
trap cleanup EXIT
"${compose[@]}" up -d --build
for _ in $(seq 1 60); do
  curl -fsS http://127.0.0.1:8081/healthz >/dev/null 2>&1 && break
  sleep 1
done
ca=$(mktemp)
curl -fsS http://127.0.0.1:8081/ca.pem -o "$ca"
echo "allowed call:"
curl -fsS -x http://127.0.0.1:8080 --cacert "$ca" https://api.example.com/ | tee /dev/stderr | grep -q 'Referer: https://servicewechat.com/wx0123456789abcdef/devtools/page-frame.html'
echo "refused call:"
code=$(curl -s -o /dev/null -w '%{http_connect}' -x http://127.0.0.1:8080 --cacert "$ca" https://example.org/ || true)
[ "$code" = "403" ] || { echo "an unlisted host got $code at the CONNECT, expected 403" >&2; exit 1; }
echo "docker e2e: ok"
