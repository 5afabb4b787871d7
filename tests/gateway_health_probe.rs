//! The background health probe: with no client traffic at all, an upstream that breaks gets its
//! circuit opened by the probe alone, and closed again once it answers (mock fault switch).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;

use super::support::mock;
use super::support::*;

/// The value of one /stats sample line (`name{labels}`), if present.
fn stat(addr: std::net::SocketAddr, sample: &str) -> Option<u64> {
    let text = get(addr, "/stats", "").text();
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn idle_upstream_circuit_follows_the_probe_issue_6() {
    let m = mock::start(None);
    let cfg = json!({
        "providers": {
            "mock": {"baseUrl": format!("http://{}/v1", m.addr), "auth": {"type": "none"},
                     "models": ["ok"], "connect_timeout_ms": 300, "first_byte_timeout_ms": 1000}
        },
        "tiers": {"1": {"primary": "mock/ok"}},
        "health": {"probe_interval_ms": 150, "consecutive_failures_to_open": 2, "cool_down_ms": 300}
    });
    let gw = Gateway::spawn(&cfg);
    let open = "tierflow_upstream_circuit_open_cores{target=\"mock/ok\"}";
    // Probes reach the upstream although no client sends anything.
    wait_for("a probe at the mock", Duration::from_secs(5), || {
        m.state.requests.load(Ordering::SeqCst) >= 2
    });
    let body = m.state.bodies.lock().unwrap().last().cloned().unwrap();
    let probe: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (probe["model"].as_str(), probe["max_tokens"].as_u64()),
        (Some("ok"), Some(1))
    );
    assert_eq!(stat(gw.addr, open), Some(0));
    // The upstream breaks while idle: the probe alone opens the circuit.
    m.state.down.store(true, Ordering::SeqCst);
    wait_for("the circuit to open", Duration::from_secs(10), || {
        stat(gw.addr, open) == Some(1)
    });
    assert!(stat(gw.addr, "tierflow_health_probes_total{result=\"failed\"}").unwrap_or(0) >= 2);
    // Everything the mock saw so far was a probe: no client request took part.
    for b in m.state.bodies.lock().unwrap().iter() {
        let v: serde_json::Value = serde_json::from_slice(b).unwrap();
        assert_eq!(
            v["messages"][0]["content"],
            "Reply with the single word: ok"
        );
    }
    // It comes back: after the cool-down a probe is admitted half-open and closes it.
    m.state.down.store(false, Ordering::SeqCst);
    wait_for("the circuit to close", Duration::from_secs(10), || {
        stat(gw.addr, open) == Some(0)
    });
    let r = chat(
        gw.addr,
        &json!({"model": "tier-1", "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}
