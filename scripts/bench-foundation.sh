#!/usr/bin/env bash
# Foundation benchmarks: cold start of `serve` on an empty data dir (time to the first 200 from /health), idle
# RSS, and authenticated admin-request latency with 64 concurrent clients. Results go to stdout; record them in
# docs/benchmarks.md with the machine they ran on.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin frostbyte --example loadgen
BIN=${CARGO_TARGET_DIR:-target}/release/frostbyte
LOADGEN=${CARGO_TARGET_DIR:-target}/release/examples/loadgen
PORT=${PORT:-18765}
DATA=$(mktemp -d)
trap 'kill $PID 2>/dev/null || true; rm -rf "$DATA"' EXIT

start_ns=$(date +%s%N)
FROSTBYTE_LOG=warn "$BIN" serve --port "$PORT" --data-dir "$DATA" >/dev/null 2>&1 &
PID=$!
until curl -sf "http://127.0.0.1:$PORT/health" >/dev/null; do sleep 0.002; done
end_ns=$(date +%s%N)
echo "cold start to first /health 200: $(( (end_ns - start_ns) / 1000000 )) ms"

sleep 2
echo "idle RSS: $(( $(awk '/VmRSS/ {print $2}' /proc/$PID/status) / 1024 )) MiB"

ADMIN=$(cat "$DATA/admin.key")
for i in $(seq 1 20); do
  curl -sf -X POST "http://127.0.0.1:$PORT/api/v1/admin/tenants" -H "Authorization: Bearer $ADMIN" \
    -H 'content-type: application/json' \
    -d "{\"tenant_id\":\"bench-$i\",\"tenant_name\":\"Bench $i\",\"contact_email\":\"b$i@example.com\"}" >/dev/null
done
echo "admin GET /api/v1/admin/tenants/bench-1 (64 clients, 10 s):"
"$LOADGEN" "http://127.0.0.1:$PORT/api/v1/admin/tenants/bench-1" "$ADMIN" 64 10
echo "admin GET /api/v1/admin/tenants?limit=20 (64 clients, 10 s):"
"$LOADGEN" "http://127.0.0.1:$PORT/api/v1/admin/tenants?limit=20" "$ADMIN" 64 10
echo "after load RSS: $(( $(awk '/VmRSS/ {print $2}' /proc/$PID/status) / 1024 )) MiB"
