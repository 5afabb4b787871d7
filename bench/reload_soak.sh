#!/usr/bin/env bash
# Reload soak (issue 6): N `POST /reload-config` while wrk drives chat load through the gateway to
# a fast nginx mock upstream; reports failed requests (non-200 or socket errors) and the gateway's
# RSS (VmRSS from /proc/PID/status) at start, middle and end of the reloads, and after a settle.
#
#   cargo build --profile fast && bash bench/reload_soak.sh [target/fast/tierflow]
#
# Knobs: RELOADS [1000] CONNS [16] WORKERS [1] PORT [18890] MOCK_PORT [18891] SECURITY [on]
#        EDIT_EVERY [2]: every Nth reload also changes something — a route toggled in the config
#        and (with SECURITY=on) one extra rule file toggled in `security.patterns_dir` (a copy of
#        patterns/), so those reloads swap in a new routing table AND rebuilt Hyperscan databases
#        (both rule-set variants come from the compiled-database cache after their first compile;
#        the cache lives in /tmp/tierflow-soak-cache so reruns start warm); 0 = same file.
# Starts and stops only its own processes (by PID). Needs nginx, wrk, curl.
set -euo pipefail

BIN="${1:-target/fast/tierflow}"
RELOADS="${RELOADS:-1000}"
CONNS="${CONNS:-16}"
WORKERS="${WORKERS:-1}"
PORT="${PORT:-18890}"
MOCK_PORT="${MOCK_PORT:-18891}"
SECURITY="${SECURITY:-on}"
EDIT_EVERY="${EDIT_EVERY:-2}"
DIR="$(mktemp -d /tmp/tierflow-soak.XXXXXX)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

mkdir -p "$DIR/logs" "$DIR/tmp" "$DIR/patterns" /tmp/tierflow-soak-cache
cp "$(dirname "$0")/../patterns/"*.txt "$DIR/patterns/"
EXTRA_RULE='soak.extra | prompt_injection | warning | * | i | toggled by the soak | \bsoak-toggle-marker-[0-9]+\b'

cat >"$DIR/mock.conf" <<EOF
worker_processes 1;
daemon off;
pid $DIR/nginx.pid;
error_log $DIR/logs/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $DIR/tmp;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$MOCK_PORT;
    location / {
      default_type application/json;
      return 200 '{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}';
    }
  }
}
EOF
nginx -c "$DIR/mock.conf" -p "$DIR" &
PIDS+=($!)

write_config() { # $1 = extra route and extra rule on/off
  local extra=""
  [ "$1" = on ] && extra=',"flow/extra": {"primary": "mock/m"}'
  if [ "$1" = on ]; then echo "$EXTRA_RULE" >"$DIR/patterns/zz_soak.txt"; else rm -f "$DIR/patterns/zz_soak.txt"; fi
  local sec=true
  [ "$SECURITY" = on ] || sec=false
  cat >"$DIR/config.json" <<EOF
{"workers": $WORKERS,
 "providers": {"mock": {"baseUrl": "http://127.0.0.1:$MOCK_PORT/v1", "auth": {"type": "none"}, "models": ["m"]}},
 "tiers": {"1": {"primary": "mock/m"}, "2": {"primary": "mock/m"}, "3": {"primary": "mock/m"}, "4": {"primary": "mock/m"}},
 "routes": {"flow/base": {"primary": "mock/m"}$extra},
 "cache": {"enabled": false},
 "ledger": {"enabled": false},
 "security": {"enabled": $sec, "patterns_dir": "$DIR/patterns", "cache_dir": "/tmp/tierflow-soak-cache"}}
EOF
}
write_config off
HOME="$DIR" "$BIN" --config "$DIR/config.json" --port "$PORT" 2>"$DIR/logs/gateway.log" &
GW=$!
PIDS+=($GW)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.1; done
# Wait for the scanner so the start figure includes its databases.
for _ in $(seq 600); do
  grep -q "scanner ready" "$DIR/logs/gateway.log" 2>/dev/null && break
  [ "$SECURITY" = on ] || break
  sleep 0.5
done
# Warm the compiled-database cache for the second rule-set variant (a cold compile is ~10 s of
# CPU per variant), then go back to the first; both reloads happen before any measurement.
if [ "$SECURITY" = on ] && [ "$EDIT_EVERY" -gt 0 ]; then
  write_config on
  curl -s -o /dev/null --max-time 300 -X POST "http://127.0.0.1:$PORT/reload-config"
  write_config off
  curl -s -o /dev/null --max-time 300 -X POST "http://127.0.0.1:$PORT/reload-config"
fi

cat >"$DIR/load.lua" <<'EOF'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"tier-1","messages":[{"role":"user","content":"Summarise the incident report in two sentences."}]}'
function done(summary, latency, requests)
  io.write(string.format("SOAK requests=%d non200=%d connect_err=%d read_err=%d write_err=%d timeout=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.errors.status, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout, latency:percentile(50), latency:percentile(99)))
end
EOF
rss() { awk '/^VmRSS/ {print $2}' "/proc/$GW/status"; }
# Warm up (pools, allocator arenas), then measure.
wrk -t1 -c"$CONNS" -d3s -s "$DIR/load.lua" "http://127.0.0.1:$PORT/v1/chat/completions" >/dev/null
# Load in back-to-back 3 s wrk runs until the reloads are done (wrk prints nothing if killed).
( while [ ! -e "$DIR/stop" ]; do
    wrk -t1 -c"$CONNS" -d3s -s "$DIR/load.lua" "http://127.0.0.1:$PORT/v1/chat/completions"
  done ) >"$DIR/wrk.out" &
WRK=$!
PIDS+=($WRK)
sleep 1
RSS_START=$(rss)
FAILED_RELOADS=0
SERIES=""
T0=$(date +%s.%N)
for i in $(seq 1 "$RELOADS"); do
  if [ "$EDIT_EVERY" -gt 0 ] && [ $((i % EDIT_EVERY)) -eq 0 ]; then
    if [ $((i / EDIT_EVERY % 2)) -eq 0 ]; then write_config off; else write_config on; fi
  fi
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 300 -X POST "http://127.0.0.1:$PORT/reload-config")
  [ "$code" = 200 ] || FAILED_RELOADS=$((FAILED_RELOADS + 1))
  [ "$i" -eq $((RELOADS / 2)) ] && RSS_MID=$(rss)
  [ $((i % (RELOADS / 10 > 0 ? RELOADS / 10 : 1))) -eq 0 ] && SERIES="$SERIES $(rss)"
done
T1=$(date +%s.%N)
RSS_END=$(rss)
touch "$DIR/stop"
wait "$WRK" 2>/dev/null || true
sleep 2
RSS_SETTLED=$(rss)
echo "reloads=$RELOADS failed_reloads=$FAILED_RELOADS seconds=$(echo "$T1 - $T0" | bc) workers=$WORKERS security=$SECURITY conns=$CONNS"
awk '/^SOAK/ { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] ~ /_us$/) { if (kv[2] > max[kv[1]]) max[kv[1]] = kv[2] } else sum[kv[1]] += kv[2] } runs++ }
     END { printf "load: %d wrk runs", runs; for (k in sum) printf " %s=%d", k, sum[k]; for (k in max) printf " worst_%s=%d", k, max[k]; print "" }' "$DIR/wrk.out"
echo "rss_kb start=$RSS_START mid=${RSS_MID:-?} end=$RSS_END settled=$RSS_SETTLED"
echo "rss_kb every $((RELOADS / 10)) reloads:$SERIES"
echo "pattern rebuilds logged: $(grep -c 'security rules rebuilt' "$DIR/logs/gateway.log" || true)"
