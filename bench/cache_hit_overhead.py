#!/usr/bin/env python3
"""Gateway time of response-cache hits (issue 6 target: <= 50 us), as the gateway itself reports it
in `X-TierFlow-Overhead-Us` (request head read -> response written, upstream excluded), over one
keep-alive connection, for a JSON and a streamed request.

    cargo build --profile fast && python3 bench/cache_hit_overhead.py [target/fast/tierflow]

Env: N [20000] requests per mode, SECURITY [on] (scanner on the path: a hit is still screened
first), PORT [18892], MOCK_PORT [18893]. Starts nginx as the mock upstream; stops what it started.
"""
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/fast/tierflow"
N = int(os.environ.get("N", "20000"))
SECURITY = os.environ.get("SECURITY", "on") == "on"
PORT = int(os.environ.get("PORT", "18892"))
MOCK_PORT = int(os.environ.get("MOCK_PORT", "18893"))

ANSWER = ('{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,'
          '"message":{"role":"assistant","content":"The export failed because the bucket credentials rotated."},'
          '"finish_reason":"stop"}],"usage":{"prompt_tokens":30,"completion_tokens":12,"total_tokens":42}}')
STREAM = "".join(
    'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"w%d "},"finish_reason":null}]}\\n\\n' % i
    for i in range(20)) + 'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":30,"completion_tokens":20,"total_tokens":50}}\\n\\ndata: [DONE]\\n\\n'


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def main():
    d = tempfile.mkdtemp(prefix="tierflow-cachehit.")
    procs = []
    try:
        os.makedirs(os.path.join(d, "tmp"))
        stream_conf = STREAM.replace('"', '\\"')  # inside an nginx double-quoted string
        with open(os.path.join(d, "mock.conf"), "w") as f:
            f.write(f"""worker_processes 1; daemon off; pid {d}/nginx.pid; error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{ access_log off; client_body_temp_path {d}/tmp; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{MOCK_PORT};
    location / {{ default_type application/json; return 200 '{ANSWER}'; }}
    location /s/ {{ default_type text/event-stream; return 200 "{stream_conf}"; }}
  }}
}}
""")
        procs.append(subprocess.Popen(["nginx", "-c", f"{d}/mock.conf", "-p", d]))
        cfg = {
            "workers": 1,
            "providers": {
                "mock": {"baseUrl": f"http://127.0.0.1:{MOCK_PORT}/v1", "auth": {"type": "none"}, "models": ["m"]},
                "smock": {"baseUrl": f"http://127.0.0.1:{MOCK_PORT}/s", "auth": {"type": "none"}, "models": ["m"]},
            },
            "tiers": {str(t): {"primary": "mock/m"} for t in range(1, 5)},
            "routes": {"flow/stream": {"primary": "smock/m"}},
            "ledger": {"enabled": False},
            "security": {"enabled": SECURITY},
        }
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f)
        env = dict(os.environ, HOME=d, XDG_CACHE_HOME="/tmp/tierflow-bench-cache")
        log = open(os.path.join(d, "gateway.log"), "w")
        procs.append(subprocess.Popen([BIN, "--config", f"{d}/config.json", "--port", str(PORT)],
                                      env=env, stderr=log))
        for _ in range(100):
            try:
                c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=2)
                c.request("GET", "/health")
                c.getresponse().read()
                break
            except OSError:
                time.sleep(0.1)
        # Wait for the scanner (a first run compiles it into /tmp/tierflow-bench-cache, ~10 s):
        # until then requests are UNSCANNED, and those are never cached.
        for _ in range(1200):
            if not SECURITY or "scanner ready" in open(os.path.join(d, "gateway.log")).read():
                break
            time.sleep(0.1)
        print(f"cache-hit gateway time (X-TierFlow-Overhead-Us), {N} requests per mode, "
              f"security {'on' if SECURITY else 'off'}, 1 worker")
        for mode, model, stream in (("json", "tier-1", False), ("sse", "flow/stream", True)):
            body = json.dumps({"model": model, "temperature": 0, "stream": stream, "messages": [
                {"role": "system", "content": "You are a concise incident analyst."},
                {"role": "user", "content": "Why did the nightly export fail? Answer in one sentence."}]})
            c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=5)
            us, hits, misses = [], 0, 0
            for i in range(N + 1):
                c.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
                r = c.getresponse()
                r.read()
                if r.status != 200:
                    raise SystemExit(f"{mode}: status {r.status}")
                if r.getheader("X-Cache") == "HIT":
                    hits += 1
                    us.append(int(r.getheader("X-TierFlow-Overhead-Us") or 0))
                else:
                    misses += 1
            print(f"  {mode}: hits {hits} misses {misses}  p50 {pct(us, 50)} us  p90 {pct(us, 90)} us  "
                  f"p99 {pct(us, 99)} us  max {max(us)} us")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
