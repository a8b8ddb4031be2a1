#!/usr/bin/env bash
# End to end: one call through the proxy to the backend (which must see the servicewechat
# Referer), one refused call (403 at the CONNECT). Exits non-zero on any failure.
#
# Two ways to run it:
#   docker/e2e.sh
#       with a Docker engine: build, start the compose project, check, tear down. Without one it
#       says so and exits 0.
#   E2E_PROXY=http://wx0123456789abcdef:x@192.168.77.1:8080 docker/e2e.sh
#       against a proxy that already runs (no Docker, nothing started or stopped): tests/netns.rs
#       runs it this way from a phone's network namespace. Optional:
#       E2E_CONTROL=http://127.0.0.1:8081  the control port (health, /ca.pem); without it the CA
#                                          comes through the proxy from http://wxsandbox.cert/ca.pem
#       E2E_CA=FILE                        the proxy's CA (PEM), instead of downloading it
#       E2E_APPID=wx...                    the appid the Referer must name (default below)
#       E2E_URL=https://...                the allowed URL (default https://api.example.com/)
#       E2E_REFUSED_URL=https://...        a URL in no list (default https://example.org/)
set -euo pipefail
cd "$(dirname "$0")/.."
appid=${E2E_APPID:-wx0123456789abcdef}
allowed=${E2E_URL:-https://api.example.com/}
refused=${E2E_REFUSED_URL:-https://example.org/}
referer="Referer: https://servicewechat.com/$appid/devtools/page-frame.html"
c=(curl -sS --max-time 20 --connect-timeout 10)

tmp=$(mktemp -d)
cleanup() { rm -rf "$tmp"; }
if [ -n "${E2E_PROXY:-}" ]; then
  proxy=$E2E_PROXY
  control=${E2E_CONTROL:-}
  echo "docker/e2e.sh: checking the running proxy at ${proxy##*@} (no compose)"
else
  if ! docker info >/dev/null 2>&1; then
    echo "docker/e2e.sh: no Docker engine here; nothing to do (set E2E_PROXY to check a running proxy)" >&2
    rm -rf "$tmp"
    exit 0
  fi
  proxy=http://127.0.0.1:8080
  control=http://127.0.0.1:8081
  compose=(docker compose -f docker/docker-compose.yml)
  cleanup() { "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true; rm -rf "$tmp"; }
  trap cleanup EXIT
  "${compose[@]}" up -d --build
fi
trap cleanup EXIT

# Wait (bounded) until the proxy answers: on the control port when there is one, else the
# install page through the proxy.
ready=no
for _ in $(seq 1 60); do
  if [ -n "$control" ]; then
    "${c[@]}" -f "$control/healthz" >/dev/null 2>&1 && { ready=yes; break; }
  else
    "${c[@]}" -f -x "$proxy" http://wxsandbox.cert/ >/dev/null 2>&1 && { ready=yes; break; }
  fi
  sleep 1
done
[ "$ready" = yes ] || { echo "the proxy never answered" >&2; exit 1; }

ca=$tmp/ca.pem
if [ -n "${E2E_CA:-}" ]; then
  cp "$E2E_CA" "$ca"
elif [ -n "$control" ]; then
  "${c[@]}" -f "$control/ca.pem" -o "$ca"
else
  "${c[@]}" -f -x "$proxy" http://wxsandbox.cert/ca.pem -o "$ca"
fi

echo "allowed call:"
"${c[@]}" -f -x "$proxy" --cacert "$ca" "$allowed" -o "$tmp/allowed"
cat "$tmp/allowed" >&2
grep -qF "$referer" "$tmp/allowed" || { echo "the backend did not see '$referer'" >&2; exit 1; }
echo "refused call:"
code=$("${c[@]}" -o /dev/null -w '%{http_connect}' -x "$proxy" --cacert "$ca" "$refused" 2>/dev/null || true)
[ "$code" = "403" ] || { echo "an unlisted host got $code at the CONNECT, expected 403" >&2; exit 1; }
echo "docker e2e: ok"
