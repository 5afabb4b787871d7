//! Upstream health in the request path: a failing upstream is failed over without client errors,
//! its circuit opens so traffic shifts away, and it gets traffic again once it recovers.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;

use crate::support::{chat, mock, Gateway};

#[test]
fn circuit_breaker_shifts_traffic_and_recovers() {
    let a = mock::start(None);
    let b = mock::start(None);
    let cfg = json!({
        "providers": {
            "a": {"baseUrl": format!("http://{}/v1", a.addr), "models": ["ok"], "connect_timeout_ms": 500, "first_byte_timeout_ms": 2000},
            "b": {"baseUrl": format!("http://{}/v1", b.addr), "models": ["ok"], "connect_timeout_ms": 500, "first_byte_timeout_ms": 2000}
        },
        "tiers": {"2": {"primary": "a/ok", "fallback": ["b/ok"]}},
        "prices": {"a/ok": {"input": 0.1, "output": 0.1}, "b/ok": {"input": 1.0, "output": 1.0}}
    });
    let gw = Gateway::spawn_with(&cfg, &["--workers", "1"], &[]);
    let ask = || {
        chat(
            gw.addr,
            &json!({"model": "tier-2", "messages": [{"role": "user", "content": "x"}]}),
        )
    };
    for _ in 0..5 {
        assert_eq!(ask().json()["tierflow"]["routed_model"], "a/ok");
    }
    a.state.down.store(true, Ordering::SeqCst);
    let conns_before = a.state.connections.load(Ordering::SeqCst);
    for _ in 0..20 {
        let r = ask();
        assert_eq!(r.status, 200, "no client error while the primary is down");
        assert_eq!(r.json()["tierflow"]["routed_model"], "b/ok");
    }
    // The circuit opened after 5 consecutive failures (each failure may cost a stale pooled
    // connection plus a fresh one): later requests skip `a` without touching it.
    let tried = a.state.connections.load(Ordering::SeqCst) - conns_before;
    assert!(tried <= 12, "a was tried {tried} times");
    let r = ask();
    assert!(
        r.json()["tierflow"]["fallbacks"]
            .as_array()
            .unwrap()
            .is_empty(),
        "open circuit is skipped, not failed over"
    );
    // Recovery: after the cool-down a probe goes to `a`, succeeds, and the circuit closes.
    a.state.down.store(false, Ordering::SeqCst);
    let served_before = a.state.requests.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(5_300));
    let mut back = false;
    for _ in 0..10 {
        if ask().json()["tierflow"]["routed_model"] == "a/ok" {
            back = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(back, "traffic returned to a");
    assert!(a.state.requests.load(Ordering::SeqCst) > served_before);
    for _ in 0..3 {
        assert_eq!(ask().json()["tierflow"]["routed_model"], "a/ok");
    }
}

#[test]
fn latency_budget_prefers_the_target_that_fits() {
    let slow = mock::start(None);
    let fast = mock::start(None);
    // Same price: the faster target may lead; the budget picks the one whose TTFB fits.
    let cfg = json!({
        "providers": {
            "s": {"baseUrl": format!("http://{}/v1", slow.addr), "models": ["slow-150"]},
            "f": {"baseUrl": format!("http://{}/v1", fast.addr), "models": ["ok"]}
        },
        "tiers": {"2": {"primary": "s/slow-150", "fallback": ["f/ok"]}},
        "prices": {"s/slow-150": {"input": 1, "output": 1}, "f/ok": {"input": 1, "output": 1}}
    });
    let gw = Gateway::spawn_with(&cfg, &["--workers", "1"], &[]);
    // Warm both averages: the first request goes to the primary, route.fallback=false pins it.
    for _ in 0..3 {
        chat(
            gw.addr,
            &json!({"model": "s/slow-150", "messages": [{"role": "user", "content": "x"}]}),
        );
        chat(
            gw.addr,
            &json!({"model": "f/ok", "messages": [{"role": "user", "content": "x"}]}),
        );
    }
    let r = chat(
        gw.addr,
        &json!({"model": "tier-2", "route": {"latency_budget_ms": 50}, "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(r.json()["tierflow"]["routed_model"], "f/ok");
}

#[test]
fn reload_config_swaps_atomically_under_load_and_refuses_bad_files() {
    use crate::support::{mock_config, post_json_raw, send_raw};
    let m = mock::start(None);
    let mut cfg = mock_config(m.addr, json!({}));
    let gw = Gateway::spawn_with(&cfg, &[], &[]);
    let path = gw.dir.path().join("config.json");
    let reload = || send_raw(gw.addr, &post_json_raw("/reload-config", "", "")).expect("response");

    // A new route appears after a reload.
    assert_eq!(
        chat(
            gw.addr,
            &json!({"model": "flow/new", "messages": [{"role": "user", "content": "x"}]})
        )
        .status,
        404
    );
    cfg["routes"]["flow/new"] = json!({"primary": "mock/ok"});
    std::fs::write(&path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let r = reload();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        chat(
            gw.addr,
            &json!({"model": "flow/new", "messages": [{"role": "user", "content": "x"}]})
        )
        .status,
        200
    );

    // A bad file is refused with the dotted key; the running config keeps serving.
    std::fs::write(
        &path,
        br#"{"providers": {"mock": {"baseUrl": "http://x", "colour": 1}}}"#,
    )
    .unwrap();
    let r = reload();
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("providers.mock"),
        "{}",
        r.text()
    );
    assert_eq!(
        chat(
            gw.addr,
            &json!({"model": "flow/new", "messages": [{"role": "user", "content": "x"}]})
        )
        .status,
        200
    );

    // Reloads under load drop no request.
    std::fs::write(&path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let addr = gw.addr;
    let loaders: Vec<_> = (0..3)
        .map(|i| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    let r = chat(addr, &json!({"model": "auto", "stream": i == 0, "messages": [{"role": "user", "content": "x"}]}));
                    assert_eq!(r.status, 200, "{}", r.text());
                    n += 1;
                }
                n
            })
        })
        .collect();
    for _ in 0..100 {
        assert_eq!(reload().status, 200);
    }
    stop.store(true, Ordering::SeqCst);
    let served: usize = loaders.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(served > 0);
}

#[test]
fn deep_health_runs_a_real_request() {
    use crate::support::{get, mock_config};
    let m = mock::start(None);
    let gw = Gateway::spawn_with(&mock_config(m.addr, json!({})), &[], &[]);
    let plain = get(gw.addr, "/health", "");
    assert_eq!(plain.status, 200);
    assert_eq!(
        m.state.requests.load(Ordering::SeqCst),
        0,
        "plain /health never calls upstream"
    );
    let r = get(gw.addr, "/health?deep=1", "");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["probe"]["status"], 200);
    assert_eq!(v["probe"]["routed_model"], "mock/ok");
    assert!(v["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .any(|u| u["target"] == "mock/ok"));
    assert_eq!(
        m.state.requests.load(Ordering::SeqCst),
        1,
        "one real upstream request"
    );
    // Cached for a few seconds: no second upstream call.
    assert_eq!(get(gw.addr, "/health?deep=1", "").status, 200);
    assert_eq!(m.state.requests.load(Ordering::SeqCst), 1);

    // Reachability lies: an upstream that accepts connections but fails completions is caught.
    let m2 = mock::start(None);
    let mut cfg = mock_config(m2.addr, json!({}));
    cfg["tiers"]["1"] = json!({"primary": "mock/e500"});
    let gw2 = Gateway::spawn_with(&cfg, &[], &[]);
    let r = get(gw2.addr, "/health?deep=1", "");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["status"], "failing");
}

#[test]
fn response_cache_serves_hits_for_json_and_streams() {
    use crate::support::{get, mock_config, sse_data};
    let m = mock::start(None);
    let gw = Gateway::spawn_with(&mock_config(m.addr, json!({})), &["--workers", "1"], &[]);
    let body = |stream: bool, t: f64| json!({"model": "auto", "temperature": t, "stream": stream, "messages": [{"role": "user", "content": "cache me"}]});
    let first = chat(gw.addr, &body(false, 0.0));
    assert_eq!(first.header("X-Cache"), Some("MISS"));
    let hit = chat(gw.addr, &body(false, 0.0));
    assert_eq!(hit.header("X-Cache"), Some("HIT"), "{}", hit.text());
    assert_eq!(
        m.state.requests.load(Ordering::SeqCst),
        1,
        "the hit never reached the upstream"
    );
    assert_eq!(hit.json()["choices"], first.json()["choices"]);
    assert_eq!(hit.json()["tierflow"]["estimated_cost_usd"], 0.0);
    // The same request streamed: replayed from the JSON answer as SSE.
    let s = chat(gw.addr, &body(true, 0.0));
    assert_eq!(s.header("X-Cache"), Some("HIT"));
    let data = sse_data(&s.body);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let text: String = data
        .iter()
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(text, mock::CONTENT_WORDS.concat());
    assert_eq!(m.state.requests.load(Ordering::SeqCst), 1);
    // Sampled requests and opted-out requests are not cached.
    chat(gw.addr, &body(false, 0.7));
    chat(gw.addr, &body(false, 0.7));
    assert_eq!(m.state.requests.load(Ordering::SeqCst), 3);
    let raw = crate::support::post_json_raw(
        "/v1/chat/completions",
        &body(false, 0.0).to_string(),
        "Cache-Control: no-cache\r\n",
    );
    assert_eq!(
        crate::support::send_raw(gw.addr, &raw)
            .unwrap()
            .header("X-Cache"),
        Some("MISS")
    );
    assert_eq!(m.state.requests.load(Ordering::SeqCst), 4);
    // A stream recorded on a miss is replayed on the next streamed request.
    let other = json!({"model": "auto", "temperature": 0, "stream": true, "messages": [{"role": "user", "content": "stream me"}]});
    let a = chat(gw.addr, &other);
    let b = chat(gw.addr, &other);
    assert_eq!(b.header("X-Cache"), Some("HIT"), "{}", gw.log_text());
    let strip = |d: Vec<String>| {
        d.into_iter()
            .filter(|x| !x.contains("tierflow"))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(sse_data(&a.body)), strip(sse_data(&b.body)));
    assert_eq!(m.state.requests.load(Ordering::SeqCst), 5);
    let stats = get(gw.addr, "/stats", "").text();
    assert!(stats.contains("tierflow_cache_hits_total 3"), "{stats}");
}
