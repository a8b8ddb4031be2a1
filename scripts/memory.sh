#!/usr/bin/env bash
# Memory of the proxy (issue #11): the release binary as a child process, on 127.0.0.1 only.
# Prints its RSS (a) after start-up and warm-up, (b) after a full call ring of 12,000 HTTPS GETs
# with ~1 KiB of request headers (target: <= 48 MiB added), (c) at its peak during one
# GET /api/har of that log (<= 96 MiB over the baseline) and after it, (d) with 1,000 idle
# keep-alive tunnels open (<= 40 MiB added). A measurement: exit 0 whatever the figures, non-zero
# only when it could not measure (a call failed, the proxy did not start...).
#   scripts/memory.sh
#   WXSANDBOX=target/pgo/wxsandbox scripts/memory.sh   # another build (scripts/pgo.sh's)
set -euo pipefail
cd "$(dirname "$0")/.."
# Two builds: the binary exactly as shipped (an example unifies the dev-dependencies' features).
cargo build --release --locked --bin wxsandbox
cargo build --release --locked --example memory
# (d) holds ~3,000 descriptors in the example (client and backend sides); it raises its own
# soft limit to the hard one, and this raises the hard one where the shell may.
ulimit -n 65536 2>/dev/null || true
exec target/release/examples/memory --bin "${WXSANDBOX:-target/release/wxsandbox}"
