#!/usr/bin/env bash
# Ledger durability under load (issue #4 target): N requests through the full pipeline against a
# fast nginx mock upstream, `kill -9` of the gateway right after, then the SQLite ledger is opened
# and checked: integrity_check ok; every request the mock answered more than the flush interval
# (plus a small margin) before the kill has its row; every row carries exactly the usage the mock
# returned, so the ledger's token totals equal the mock's over the same requests.
# Not part of `cargo test` (it takes a loaded machine for ~20 s); run it by hand:
#
#   tests/load/ledger_kill9.sh [--bin target/fast/tierflow] [--requests 100000] [--conns 32]
#                              [--flush-ms 100] [--margin-ms 50] [--settle-ms 0] [--keep]
#
# --settle-ms waits after the load before the kill: with a settle time above the flush interval the
# ledger must hold every request and its totals must equal the mock's exactly.
# Needs: nginx, wrk, sqlite3, python3 (a free port). Starts and stops only its own processes, by PID.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

BIN=target/fast/tierflow
REQUESTS=100000
CONNS=32
FLUSH_MS=100
MARGIN_MS=50
SETTLE_MS=0
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN=$2; shift 2 ;;
    --requests) REQUESTS=$2; shift 2 ;;
    --conns) CONNS=$2; shift 2 ;;
    --flush-ms) FLUSH_MS=$2; shift 2 ;;
    --margin-ms) MARGIN_MS=$2; shift 2 ;;
    --settle-ms) SETTLE_MS=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
for tool in nginx wrk sqlite3 python3; do
  command -v "$tool" >/dev/null || { echo "ledger_kill9: $tool is required" >&2; exit 2; }
done
if [ ! -x "$BIN" ]; then
  echo "building $BIN (cargo build --profile fast)" >&2
  nice -n 10 cargo build --locked --profile fast >&2
fi

# Fixed per-request usage, as a real completion reports it.
PROMPT_TOKENS=331
COMPLETION_TOKENS=41

WORK=$(mktemp -d /tmp/tierflow-kill9.XXXXXX)
NGINX_PID=""; GW_PID=""
cleanup() {
  [ -n "$GW_PID" ] && kill -9 "$GW_PID" 2>/dev/null || true
  if [ -n "$NGINX_PID" ] && kill -0 "$NGINX_PID" 2>/dev/null; then
    kill -QUIT "$NGINX_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$NGINX_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$NGINX_PID" 2>/dev/null || true
  fi
  if [ "$KEEP" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MOCK_PORT=$(free_port)
GW_PORT=$(free_port)

# ---- mock upstream: nginx, one fixed completion, an access log of answer times ($msec) ----------
mkdir -p "$WORK/nginx"
RESPONSE='{"id":"chatcmpl-kill9","object":"chat.completion","created":1731000000,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"Re-issuing the service token restored the export."},"finish_reason":"stop"}],"usage":{"prompt_tokens":'$PROMPT_TOKENS',"completion_tokens":'$COMPLETION_TOKENS',"total_tokens":'$((PROMPT_TOKENS + COMPLETION_TOKENS))'}}'
cat > "$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
  log_format answered '\$msec \$status';
  access_log $WORK/nginx/answered.log answered buffer=256k flush=1s;
  keepalive_requests 10000000;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  client_body_buffer_size 64k;
  server {
    listen 127.0.0.1:$MOCK_PORT backlog=4096;
    location = /v1/chat/completions { default_type application/json; return 200 '$RESPONSE'; }
  }
}
EOF
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
NGINX_PID=$!

# ---- the gateway: full pipeline (scanner, ledger, stats), two workers ---------------------------
cat > "$WORK/config.json" <<EOF
{
  "providers": {"mock": {"baseUrl": "http://127.0.0.1:$MOCK_PORT/v1", "auth": {"type": "none"},
                         "models": ["small", "big"]}},
  "tiers": {"1": {"primary": "mock/small"}, "2": {"primary": "mock/small"},
            "3": {"primary": "mock/big"}, "4": {"primary": "mock/big"}},
  "flagship": "mock/big",
  "prices": {"mock/small": {"input": 0.15, "output": 0.6}, "mock/big": {"input": 2.5, "output": 10}},
  "ledger": {"path": "$WORK/ledger.db", "flush_interval_ms": $FLUSH_MS},
  "limits": {"max_connections_per_worker": 10000}
}
EOF
# One compiled-scanner cache across runs (compiling the rules takes ~12 s of CPU).
export XDG_CACHE_HOME="$ROOT/target/kill9-cache"
mkdir -p "$XDG_CACHE_HOME"
"$BIN" --config "$WORK/config.json" --port "$GW_PORT" 2> "$WORK/gateway.log" &
GW_PID=$!
for _ in $(seq 600); do
  grep -q 'msg="scanner ready"' "$WORK/gateway.log" 2>/dev/null && break
  kill -0 "$GW_PID" 2>/dev/null || { cat "$WORK/gateway.log" >&2; exit 1; }
  sleep 0.1
done
grep -q 'msg="scanner ready"' "$WORK/gateway.log" || { echo "gateway not ready" >&2; exit 1; }

# ---- load: wrk stops the whole process at the N-th answer -------------------------------------
cat > "$WORK/body.json" <<'EOF'
{"model":"tier-1","temperature":0.2,"max_tokens":64,"messages":[{"role":"system","content":"You are an on-call assistant. Answer briefly."},{"role":"user","content":"Summarise: the nightly export failed after the storage credentials rotated; re-issuing the token fixed it."}]}
EOF
cat > "$WORK/load.lua" <<EOF
local ok, non200, limit = 0, 0, $REQUESTS
function init(args)
  local f = assert(io.open("$WORK/body.json", "rb"))
  wrk.method = "POST"
  wrk.body = f:read("*a")
  f:close()
  wrk.headers["Content-Type"] = "application/json"
end
function response(status, headers, body)
  if status == 200 then ok = ok + 1 else non200 = non200 + 1 end
  if ok + non200 >= limit then
    io.write(string.format("KILL9_LOAD answered=%d ok=%d non200=%d\n", ok + non200, ok, non200))
    io.flush()
    os.exit(0)
  end
end
EOF
T0=$(date +%s.%N)
wrk -t1 -c"$CONNS" -d600s --timeout 10s -s "$WORK/load.lua" "http://127.0.0.1:$GW_PORT/v1/chat/completions" > "$WORK/wrk.out" 2>&1
T1=$(date +%s.%N)
[ "$SETTLE_MS" -gt 0 ] && sleep "$(awk -v ms="$SETTLE_MS" 'BEGIN{print ms/1000}')"
T_KILL=$(date +%s.%N)
kill -9 "$GW_PID"
{ wait "$GW_PID"; } 2>/dev/null || true
GW_PID=""
# nginx writes its buffered access log on a graceful stop.
kill -QUIT "$NGINX_PID"; wait "$NGINX_PID" 2>/dev/null || true; NGINX_PID=""

LOAD=$(grep KILL9_LOAD "$WORK/wrk.out" || true)
[ -n "$LOAD" ] || { cat "$WORK/wrk.out" >&2; echo "wrk did not finish the load" >&2; exit 1; }
ANSWERED=$(sed -n 's/.*answered=\([0-9]*\).*/\1/p' <<<"$LOAD")
CLIENT_OK=$(sed -n 's/.* ok=\([0-9]*\).*/\1/p' <<<"$LOAD")

# ---- the ledger after kill -9 -----------------------------------------------------------------
DB="$WORK/ledger.db"
INTEGRITY=$(sqlite3 "$DB" 'PRAGMA integrity_check;')
read -r ROWS ROWS_UP PIN POUT <<<"$(sqlite3 -separator ' ' "$DB" \
  "SELECT count(*), coalesce(sum(upstream_status = 200), 0), coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0) FROM usage;")"
ODD_ROWS=$(sqlite3 "$DB" "SELECT count(*) FROM usage WHERE upstream_status = 200 AND (prompt_tokens != $PROMPT_TOKENS OR completion_tokens != $COMPLETION_TOKENS);")
STATUSES=$(sqlite3 -separator '=' "$DB" "SELECT status, count(*) FROM usage GROUP BY status;" | tr '\n' ' ')
MOCK_ANSWERED=$(awk '$2 == 200' "$WORK/nginx/answered.log" | wc -l)
# Requests the mock answered before kill − flush interval − margin: each must have its row.
OLD=$(awk -v t="$T_KILL" -v w="$(( FLUSH_MS + MARGIN_MS ))" '$2 == 200 && $1 < t - w / 1000 { n++ } END { print n + 0 }' "$WORK/nginx/answered.log")
# How far back from the kill the missing rows reach (assuming the newest answers are the missing ones).
MISSING=$(( MOCK_ANSWERED - ROWS_UP ))
TAIL_MS=$(sort -n "$WORK/nginx/answered.log" | awk -v k="$ROWS_UP" -v t="$T_KILL" 'NR == k + 1 { printf "%.0f", (t - $1) * 1000; found = 1 } END { if (!found) print 0 }')

SECS=$(awk -v a="$T0" -v b="$T1" 'BEGIN { printf "%.2f", b - a }')
RPS=$(awk -v n="$ANSWERED" -v a="$T0" -v b="$T1" 'BEGIN { printf "%.0f", n / (b - a) }')
cat <<EOF
ledger kill -9: $ANSWERED requests answered to wrk in ${SECS} s (${RPS} req/s, $CONNS connections, ok=$CLIENT_OK), kill -9 $(awk -v a="$T1" -v b="$T_KILL" 'BEGIN { printf "%.0f", (b - a) * 1000 }') ms after the load
  mock answered:           $MOCK_ANSWERED   (usage $PROMPT_TOKENS + $COMPLETION_TOKENS tokens each)
  ledger rows:             $ROWS   (with an upstream answer: $ROWS_UP; statuses: $STATUSES)
  missing at the kill:     $MISSING   ($([ "$MISSING" -gt 0 ] && echo "answers from the last ${TAIL_MS} ms before the kill" || echo "none"); flush interval ${FLUSH_MS} ms)
  older than flush+margin: $OLD answered before kill - ${FLUSH_MS} ms - ${MARGIN_MS} ms; all must be rows
  integrity_check:         $INTEGRITY
  tokens in ledger:        prompt $PIN, completion $POUT
  mock, same requests:     prompt $(( ROWS_UP * PROMPT_TOKENS )), completion $(( ROWS_UP * COMPLETION_TOKENS ))   (all it answered: prompt $(( MOCK_ANSWERED * PROMPT_TOKENS )), completion $(( MOCK_ANSWERED * COMPLETION_TOKENS )))
  rows with other usage:   $ODD_ROWS
EOF
fail=0
[ "$INTEGRITY" = ok ] || { echo "FAIL: integrity_check: $INTEGRITY"; fail=1; }
[ "$ROWS_UP" -ge "$OLD" ] || { echo "FAIL: $(( OLD - ROWS_UP )) rows older than the flush interval are missing"; fail=1; }
[ "$ROWS_UP" -le "$MOCK_ANSWERED" ] || { echo "FAIL: more rows than mock answers"; fail=1; }
[ "$ODD_ROWS" = 0 ] || { echo "FAIL: rows whose usage differs from the mock's"; fail=1; }
[ "$PIN" = $(( ROWS_UP * PROMPT_TOKENS )) ] && [ "$POUT" = $(( ROWS_UP * COMPLETION_TOKENS )) ] \
  || { echo "FAIL: token totals differ from the mock's"; fail=1; }
[ "$ROWS" = "$ROWS_UP" ] || { echo "FAIL: rows without an upstream answer (gateway errors under load)"; fail=1; }
if [ "$SETTLE_MS" -gt $(( FLUSH_MS + MARGIN_MS )) ]; then
  [ "$ROWS_UP" = "$MOCK_ANSWERED" ] || { echo "FAIL: settled $SETTLE_MS ms, yet $MISSING rows are missing"; fail=1; }
fi
if [ "$fail" = 0 ]; then echo "PASS"; else exit 1; fi
