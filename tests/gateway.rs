//! The one integration binary: starts the real gateway against mock upstreams (plain TCP and TLS)
//! and checks the data path end to end — relay bytes, failover, timeouts, limits, malformed input,
//! pipelining, keep-alive reuse, shutdown drain, and the official OpenAI Python SDK.

#[path = "gateway_accounting.rs"]
mod accounting;
#[path = "gateway_compression.rs"]
mod compression;
#[path = "gateway_dashboard.rs"]
mod dashboard;
#[path = "gateway_health_probe.rs"]
mod health_probe;
#[path = "gateway_ledger_errors.rs"]
mod ledger_errors;
#[path = "gateway_patterns_reload.rs"]
mod patterns_reload;
mod resilience;
mod security;
mod service;
mod support;

use std::io::{BufReader, Read, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;
use support::mock;
use support::*;

fn user(content: &str) -> serde_json::Value {
    json!([{"role": "user", "content": content}])
}

fn setup() -> (mock::Mock, Gateway) {
    let m = mock::start(None);
    let gw = Gateway::spawn_with(
        &mock_config(m.addr, json!({})),
        &[],
        &[("TF_TEST_KEY", "sk-test-123")],
    );
    (m, gw)
}

/// Removes the `,"tierflow":{…}` member the gateway inserted; what is left must be the upstream's bytes.
fn without_tierflow(body: &[u8]) -> Vec<u8> {
    let s = String::from_utf8(body.to_vec()).unwrap();
    let i = s.find(",\"tierflow\":").expect("tierflow object");
    let rest = &s[i + 12..];
    // the object ends at the matching brace
    let mut depth = 0;
    let mut end = 0;
    let mut in_str = false;
    let mut esc = false;
    for (j, c) in rest.char_indices() {
        if in_str {
            if esc {
                esc = false
            } else if c == '\\' {
                esc = true
            } else if c == '"' {
                in_str = false
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    end = j + 1;
                    break;
                }
            }
            _ => {}
        }
    }
    format!("{}{}", &s[..i], &rest[end..]).into_bytes()
}

#[test]
fn non_streaming_relay_is_byte_exact_plus_metadata() {
    let (m, gw) = setup();
    let r = chat(
        gw.addr,
        &json!({"model": "auto", "messages": user("hello"), "temperature": 0.2, "x_custom": {"keep": [1, 2]}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let expected = mock::completion_json(
        "ok",
        &mock::CONTENT_WORDS.concat(),
        m.state.bodies.lock().unwrap()[0].len() as u64 / 4,
        5,
    );
    assert_eq!(
        String::from_utf8(without_tierflow(&r.body)).unwrap(),
        expected
    );
    let v = r.json();
    assert_eq!(v["tierflow"]["requested_model"], "auto");
    assert_eq!(v["tierflow"]["routed_model"], "mock/ok");
    // `auto` was decided by the learned classifier (or its rule fallback), not a default.
    let category = v["tierflow"]["category"].as_str().unwrap().to_string();
    assert!(
        ["simple_chat", "general"].contains(&category.as_str()),
        "{category}"
    );
    assert!(["classifier", "rules"].contains(&v["tierflow"]["decided_by"].as_str().unwrap()));
    assert!(v["tierflow"]["estimated_cost_usd"].as_f64().unwrap() > 0.0);
    assert!(v["tierflow"]["saved_vs_flagship"].as_f64().unwrap() > 0.0);
    assert_eq!(r.header("X-TierFlow-Model"), Some("mock/ok"));
    assert!(matches!(r.header("X-TierFlow-Tier"), Some("1" | "2")));
    assert_eq!(r.header("X-TierFlow-Category"), Some(category.as_str()));
    assert_eq!(r.header("X-TierFlow-Security"), Some("CLEAN"));
    assert_eq!(r.header("X-Cache"), Some("MISS"));
    assert!(r
        .header("X-TierFlow-Overhead-Us")
        .unwrap()
        .parse::<u64>()
        .is_ok());
    // The forwarded body: model rewritten, everything else the client's own bytes; key sent upstream.
    let sent: serde_json::Value =
        serde_json::from_slice(&m.state.bodies.lock().unwrap()[0]).unwrap();
    assert_eq!(sent["model"], "ok");
    assert_eq!(sent["x_custom"], json!({"keep": [1, 2]}));
    assert!(m.state.heads.lock().unwrap()[0].contains("Authorization: Bearer sk-test-123"));
}

#[test]
fn streaming_relay_forwards_events_and_strips_unrequested_usage() {
    let (_m, gw) = setup();
    let r = chat(
        gw.addr,
        &json!({"model": "auto", "stream": true, "messages": user("hi")}),
    );
    assert_eq!(r.status, 200);
    assert!(r
        .header("Content-Type")
        .unwrap()
        .starts_with("text/event-stream"));
    let data = sse_data(&r.body);
    let upstream = mock::stream_events("ok", true, 0);
    // all content chunks forwarded as the upstream's bytes, the usage chunk (not asked for) removed
    assert_eq!(&data[..upstream.len() - 1], &upstream[..upstream.len() - 1]);
    let meta: serde_json::Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(meta["tierflow"]["routed_model"], "mock/ok");
    assert_eq!(meta["id"], "chatcmpl-mock123");
    assert!(meta.get("usage").is_none());
    assert_eq!(data.last().unwrap(), "[DONE]");
    assert_eq!(data.len(), upstream.len() - 1 + 2);

    // The client asks for usage: the usage chunk stays.
    let r = chat(
        gw.addr,
        &json!({"model": "auto", "stream": true, "stream_options": {"include_usage": true}, "messages": user("hi")}),
    );
    let data = sse_data(&r.body);
    let usage_chunk: serde_json::Value = serde_json::from_str(&data[data.len() - 3]).unwrap();
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 5);
    let meta: serde_json::Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert!(meta["tierflow"]["estimated_cost_usd"].as_f64().unwrap() > 0.0);
}

#[test]
fn streaming_first_byte_arrives_before_the_stream_ends() {
    let (_m, gw) = setup();
    let mut s = connect(gw.addr);
    let body = json!({"model": "mock/drip", "stream": true, "messages": user("hi")}).to_string();
    let start = Instant::now();
    s.write_all(&post_json_raw("/v1/chat/completions", &body, ""))
        .unwrap();
    let mut first = [0u8; 1];
    s.read_exact(&mut first).unwrap();
    let ttfb = start.elapsed();
    let mut r = BufReader::new(s);
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
    let total = start.elapsed();
    // the mock drips 8 events 100 ms apart: the first byte must not wait for the whole stream
    assert!(ttfb < Duration::from_millis(400), "ttfb {ttfb:?}");
    assert!(total >= Duration::from_millis(600), "total {total:?}");
}

#[test]
fn failover_tries_the_chain_in_order() {
    let (m, gw) = setup();
    let r = chat(
        gw.addr,
        &json!({"model": "flow/failover", "messages": user("x")}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["tierflow"]["routed_model"], "mock/ok");
    assert_eq!(
        v["tierflow"]["fallbacks"],
        json!(["mock/e500", "dead/x", "mock/e429"])
    );
    assert_eq!(*m.state.models.lock().unwrap(), vec!["e500", "e429", "ok"]);
    assert!(r.header("X-TierFlow-Reason").unwrap().contains("fallback"));

    // route.fallback=false: only the primary
    let r = chat(
        gw.addr,
        &json!({"model": "flow/failover", "route": {"fallback": false}, "messages": user("x")}),
    );
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"]["type"], "upstream_error");

    // everything fails: 502 naming every attempt
    let r = chat(
        gw.addr,
        &json!({"model": "flow/all-bad", "messages": user("x")}),
    );
    assert_eq!(r.status, 502);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("mock/e500") && msg.contains("mock/e429"),
        "{msg}"
    );

    // a 4xx that is the client's fault is passed through, not failed over
    let r = chat(
        gw.addr,
        &json!({"model": "mock/e400", "messages": user("x")}),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "invalid_value");

    // unreachable only: 503
    let r = chat(gw.addr, &json!({"model": "dead/x", "messages": user("x")}));
    assert_eq!(r.status, 503);
}

#[test]
fn first_byte_timeout_gives_504_and_stalls_end_streams_with_an_error_event() {
    let (_m, gw) = setup();
    let start = Instant::now();
    let r = chat(
        gw.addr,
        &json!({"model": "flow/timeout", "messages": user("x")}),
    );
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(start.elapsed() < Duration::from_millis(2900));

    for mode in ["stall", "reset"] {
        let r = chat(
            gw.addr,
            &json!({"model": format!("mock/{mode}"), "stream": true, "messages": user("x")}),
        );
        assert_eq!(r.status, 200);
        let data = sse_data(&r.body);
        assert_eq!(data.last().unwrap(), "[DONE]", "{mode}");
        let err = data
            .iter()
            .find(|d| d.contains("\"error\""))
            .unwrap_or_else(|| panic!("{mode}: no error event in {data:?}"));
        let v: serde_json::Value = serde_json::from_str(err).unwrap();
        assert_eq!(v["error"]["type"], "upstream_error", "{mode}");
        assert!(
            data.len() >= 3,
            "{mode}: events before the failure were relayed"
        );
    }
}

#[test]
fn limits_answer_with_clear_errors() {
    let (_m, gw) = setup();
    // header bytes
    let big = format!(
        "GET /health HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(5000)
    );
    assert_eq!(send_raw(gw.addr, big.as_bytes()).unwrap().status, 431);
    // header count
    let mut many = String::from("GET /health HTTP/1.1\r\n");
    for i in 0..40 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let r = send_raw(gw.addr, many.as_bytes()).unwrap();
    assert_eq!(r.status, 431);
    assert!(r.json()["error"]["message"].as_str().is_some());
    // body bytes (declared)
    let r = send_raw(
        gw.addr,
        b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 413);
    // body bytes (chunked, discovered while reading)
    let mut s = connect(gw.addr);
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 600_000, "a".repeat(600_000));
    let _ = s.write_all(chunk.as_bytes());
    let _ = s.write_all(chunk.as_bytes());
    let r = read_response(&mut BufReader::new(s)).unwrap();
    assert_eq!(r.status, 413);
    // slow client: a partial head times out (408) instead of holding the core
    let mut s = connect(gw.addr);
    s.write_all(b"GET /health HTTP/1.1\r\nHost:").unwrap();
    let start = Instant::now();
    let r = read_response(&mut BufReader::new(s)).unwrap();
    assert_eq!(r.status, 408);
    assert!(start.elapsed() < Duration::from_secs(5));
    // idle keep-alive connections are closed after the idle timeout
    let mut s = connect(gw.addr);
    s.write_all(b"GET /health HTTP/1.1\r\n\r\n").unwrap();
    let mut r = BufReader::new(s);
    assert_eq!(read_response(&mut r).unwrap().status, 200);
    let start = Instant::now();
    let mut rest = Vec::new();
    let n = r.read_to_end(&mut rest).unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        start.elapsed() >= Duration::from_millis(1000) && start.elapsed() < Duration::from_secs(6)
    );
}

#[test]
fn connection_limit_per_core() {
    let m = mock::start(None);
    let mut cfg = mock_config(m.addr, json!({}));
    cfg["limits"]["max_connections_per_worker"] = json!(3);
    let gw = Gateway::spawn_with(&cfg, &["--workers", "1"], &[]);
    let held: Vec<_> = (0..3).map(|_| connect(gw.addr)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let r = get(gw.addr, "/health", "");
    assert_eq!(r.status, 503);
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(get(gw.addr, "/health", "").status, 200);
}

#[test]
fn malformed_heads_and_bodies_get_openai_errors() {
    let (_m, gw) = setup();
    let r = send_raw(gw.addr, b"\x16\x03\x01garbage\r\n\r\n").unwrap();
    assert_eq!(r.status, 400);
    let r = send_raw(
        gw.addr,
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 400);
    let cases = [
        ("{not json", None),
        ("[]", None),
        (
            r#"{"messages":[{"role":"user","content":"x"}]}"#,
            Some("model"),
        ),
        (
            r#"{"model":"auto","messages":[{"role":"user"},{"role":"robot","content":"x"}]}"#,
            Some("messages[1].role"),
        ),
        (r#"{"model":"auto","messages":"hi"}"#, Some("messages")),
        (
            r#"{"model":"auto","messages":[{"role":"user","content":"x"}],"route":{"tier":0}}"#,
            Some("route.tier"),
        ),
    ];
    for (body, param) in cases {
        let r = send_raw(gw.addr, &post_json_raw("/v1/chat/completions", body, "")).unwrap();
        assert_eq!(r.status, 400, "{body}");
        let v = r.json();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["message"].as_str().unwrap().len() > 5);
        if let Some(p) = param {
            assert_eq!(v["error"]["param"], p, "{body}");
        }
    }
    // binary garbage as a body
    let mut raw = b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 64\r\n\r\n".to_vec();
    raw.extend((0..64u8).map(|b| b.wrapping_mul(37)));
    assert_eq!(send_raw(gw.addr, &raw).unwrap().status, 400);
    // unknown model, unknown endpoint, wrong method
    let r = chat(
        gw.addr,
        &json!({"model": "no-such-model", "messages": user("x")}),
    );
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["param"], "model");
    assert_eq!(get(gw.addr, "/v1/nothing", "").status, 404);
    assert_eq!(get(gw.addr, "/v1/chat/completions", "").status, 405);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let (_m, gw) = setup();
    let mut s = connect(gw.addr);
    let mut raw = Vec::new();
    raw.extend_from_slice(&post_json_raw(
        "/v1/chat/completions",
        &json!({"model": "mock/echo", "messages": user("first")}).to_string(),
        "",
    ));
    raw.extend_from_slice(b"GET /health HTTP/1.1\r\n\r\n");
    raw.extend_from_slice(&post_json_raw(
        "/v1/chat/completions",
        &json!({"model": "mock/echo", "messages": user("third")}).to_string(),
        "",
    ));
    s.write_all(&raw).unwrap();
    let mut r = BufReader::new(s);
    let a = read_response(&mut r).unwrap();
    let b = read_response(&mut r).unwrap();
    let c = read_response(&mut r).unwrap();
    assert!(a.text().contains("first") && !a.text().contains("third"));
    assert_eq!(b.json()["status"], "ok");
    assert!(c.text().contains("third"));
}

#[test]
fn keep_alive_reuses_one_upstream_connection() {
    let m = mock::start(None);
    let gw = Gateway::spawn_with(&mock_config(m.addr, json!({})), &["--workers", "1"], &[]);
    let mut s = connect(gw.addr);
    let mut r = BufReader::new(s.try_clone().unwrap());
    for i in 0..25 {
        let stream = i % 2 == 0;
        let body = json!({"model": "auto", "stream": stream, "messages": user("x")}).to_string();
        s.write_all(&post_json_raw("/v1/chat/completions", &body, ""))
            .unwrap();
        assert_eq!(read_response(&mut r).unwrap().status, 200);
    }
    assert_eq!(m.state.requests.load(Ordering::SeqCst), 25);
    assert_eq!(m.state.connections.load(Ordering::SeqCst), 1);
}

#[test]
fn dead_pooled_connection_is_retried_transparently() {
    let m = mock::start(None);
    let gw = Gateway::spawn_with(&mock_config(m.addr, json!({})), &["--workers", "1"], &[]);
    for _ in 0..3 {
        let r = chat(
            gw.addr,
            &json!({"model": "mock/hangup", "messages": user("x")}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        std::thread::sleep(Duration::from_millis(150)); // the mock closes the idle connection
    }
    assert_eq!(m.state.requests.load(Ordering::SeqCst), 3);
    assert_eq!(m.state.connections.load(Ordering::SeqCst), 3);
}

#[test]
fn chunked_request_bodies_and_expect_continue() {
    let (_m, gw) = setup();
    let body = json!({"model": "mock/echo", "messages": user("chunky")}).to_string();
    let (a, b) = body.split_at(10);
    let raw = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x};ext=1\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    let r = send_raw(gw.addr, raw.as_bytes()).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("chunky"));

    let mut s = connect(gw.addr);
    s.write_all(format!("POST /v1/chat/completions HTTP/1.1\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n", body.len()).as_bytes())
        .unwrap();
    let mut buf = [0u8; 25];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(body.as_bytes()).unwrap();
    let r = read_response(&mut BufReader::new(s)).unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn tls_upstream_with_test_ca() {
    let tls = mock::make_tls();
    let m = mock::start(Some(tls.server.clone()));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &tls.ca_pem).unwrap();
    let mut cfg = mock_config(m.addr, json!({}));
    cfg["providers"]["mock"]["baseUrl"] = json!(format!("https://localhost:{}/v1", m.addr.port()));
    cfg["providers"]["mock"]["ca_file"] = json!(ca);
    let gw = Gateway::spawn_with(&cfg, &["--workers", "1"], &[]);
    for stream in [false, true, false] {
        let r = chat(
            gw.addr,
            &json!({"model": "auto", "stream": stream, "messages": user("over tls")}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(
        m.state.connections.load(Ordering::SeqCst),
        1,
        "TLS connection reused"
    );

    // Without the CA the certificate is not trusted: the upstream fails, no plaintext fallback.
    cfg["providers"]["mock"]
        .as_object_mut()
        .unwrap()
        .remove("ca_file");
    let gw2 = Gateway::spawn(&cfg);
    let r = chat(gw2.addr, &json!({"model": "auto", "messages": user("x")}));
    assert_eq!(r.status, 503, "{}", r.text());
}

#[test]
fn models_health_and_redacted_config() {
    let (_m, gw) = setup();
    let r = get(gw.addr, "/v1/models", "");
    let ids: Vec<String> = r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    for want in [
        "auto",
        "tier-1",
        "tier-4",
        "flow/failover",
        "mock/ok",
        "gpt-4o-mini",
    ] {
        assert!(ids.iter().any(|i| i == want), "{want} missing from {ids:?}");
    }
    assert_eq!(get(gw.addr, "/health", "").json()["status"], "ok");
    let r = get(gw.addr, "/config", "");
    assert_eq!(r.status, 200);
    assert!(!r.text().contains("sk-test-123"));
    assert!(r.text().contains("TF_TEST_KEY"));
    // bare model names resolve through aliases
    let r = chat(
        gw.addr,
        &json!({"model": "gpt-4o-mini", "messages": user("x")}),
    );
    assert_eq!(r.json()["tierflow"]["routed_model"], "mock/ok");
    // tier-N and prefixes
    let r = chat(gw.addr, &json!({"model": "tier-3", "messages": user("x")}));
    assert_eq!(r.header("X-TierFlow-Tier"), Some("3"));
    let r = chat(
        gw.addr,
        &json!({"model": "auto", "messages": user("/code write a parser")}),
    );
    assert_eq!(r.header("X-TierFlow-Category"), Some("coding"));
    assert_eq!(r.json()["tierflow"]["decided_by"], "override");
    // The classifier routes by content: a coding request and a proof land in their categories.
    let r = chat(
        gw.addr,
        &json!({"model": "auto", "messages": user("Write a Python function that parses an ISO 8601 date string and returns a datetime; include unit tests with pytest.")}),
    );
    assert_eq!(
        r.header("X-TierFlow-Category"),
        Some("coding"),
        "{}",
        r.text()
    );
    let r = chat(
        gw.addr,
        &json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]}),
    );
    assert_eq!(r.header("X-TierFlow-Category"), Some("agentic"));
    assert_eq!(r.json()["tierflow"]["decided_by"], "structure");
}

#[test]
fn admin_key_guards_config() {
    let m = mock::start(None);
    let cfg = mock_config(
        m.addr,
        json!({"admin_key": {"type": "env", "key": "TF_ADMIN"}}),
    );
    let gw = Gateway::spawn_with(&cfg, &[], &[("TF_ADMIN", "adm1n")]);
    assert_eq!(get(gw.addr, "/config", "").status, 401);
    assert_eq!(
        get(gw.addr, "/config", "Authorization: Bearer wrong\r\n").status,
        401
    );
    assert_eq!(
        get(gw.addr, "/config", "Authorization: Bearer adm1n\r\n").status,
        200
    );
}

#[test]
fn graceful_shutdown_drains_in_flight_requests() {
    let m = mock::start(None);
    let mut gw = Gateway::spawn_with(&mock_config(m.addr, json!({})), &[], &[]);
    let addr = gw.addr;
    let slow = std::thread::spawn(move || {
        chat(
            addr,
            &json!({"model": "mock/slow-800", "messages": user("x")}),
        )
    });
    let idle = connect(gw.addr); // an idle keep-alive connection must not hold shutdown up
    std::thread::sleep(Duration::from_millis(200));
    gw.signal(libc::SIGTERM);
    let r = slow.join().unwrap();
    assert_eq!(r.status, 200, "in-flight request finished");
    assert_eq!(
        gw.wait_exit(Duration::from_secs(4)),
        Some(0),
        "log:\n{}",
        gw.log_text()
    );
    drop(idle);
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "listener closed"
    );
}

#[test]
fn config_errors_name_the_key_and_check_prints_routes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.json");
    std::fs::write(
        &p,
        r#"{"providers": {"a": {"baseUrl": "http://127.0.0.1:1/v1", "colour": 1}}}"#,
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tierflow"))
        .arg("--config")
        .arg(&p)
        .arg("--check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("providers.a") && err.contains("colour"),
        "{err}"
    );

    let init = dir.path().join("new.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tierflow"))
        .arg("--config")
        .arg(&init)
        .arg("--init")
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tierflow"))
        .arg("--config")
        .arg(&init)
        .arg("--check")
        .env("OPENAI_API_KEY", "x")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("tier-1: openai/gpt-4o-mini -> ollama/llama3.2"),
        "{table}"
    );
}

#[test]
fn openai_python_sdk_streaming_and_not() {
    let (_m, gw) = setup();
    let script = r#"
import sys, openai
c = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="unused")
r = c.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
assert r.choices[0].message.content == "Hello from the mock.", r
assert r.usage.completion_tokens == 5
parts = []
for chunk in c.chat.completions.create(model="auto", stream=True, stream_options={"include_usage": True},
                                       messages=[{"role": "user", "content": "hi"}]):
    for ch in chunk.choices:
        if ch.delta.content:
            parts.append(ch.delta.content)
assert "".join(parts) == "Hello from the mock.", parts
print("SDK_OK")
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(gw.url())
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("SDK_OK"),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---- Anthropic Messages dialect ---------------------------------------------------------------

/// `mock_config` plus an Anthropic-dialect provider `anth` on the same mock; with `tiers_anth` the
/// tiers route to `anth/a-text`.
fn anth_config(mock_addr: std::net::SocketAddr, tiers_anth: bool) -> serde_json::Value {
    let mut cfg = mock_config(mock_addr, json!({}));
    cfg["providers"]["anth"] = json!({"baseUrl": format!("http://{mock_addr}/v1"), "api": "anthropic",
        "auth": {"type": "env", "key": "TF_TEST_KEY"}, "models": ["a-text"],
        "first_byte_timeout_ms": 1500, "idle_timeout_ms": 1500, "connect_timeout_ms": 500});
    cfg["prices"]["anth/a-text"] = json!({"input": 3.0, "output": 15.0});
    cfg["routes"]["flow/anth-failover"] =
        json!({"primary": "anth/a-e500", "fallback": ["anth/a-e429", "anth/a-text"]});
    if tiers_anth {
        for t in ["1", "2", "3", "4"] {
            cfg["tiers"][t] = json!({"primary": "anth/a-text"});
        }
    }
    cfg
}

fn anth_setup(tiers_anth: bool) -> (mock::Mock, Gateway) {
    let m = mock::start(None);
    let gw = Gateway::spawn_with(
        &anth_config(m.addr, tiers_anth),
        &[],
        &[("TF_TEST_KEY", "sk-test-123")],
    );
    (m, gw)
}

fn messages(addr: std::net::SocketAddr, body: &serde_json::Value) -> Response {
    send_raw(addr, &post_json_raw("/v1/messages", &body.to_string(), "")).expect("response")
}

/// (event name, data) pairs of an Anthropic SSE body.
fn sse_events(body: &[u8]) -> Vec<(String, serde_json::Value)> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter(|ev| !ev.trim().is_empty())
        .map(|ev| {
            let name = ev
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or("")
                .to_string();
            let data = ev
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .expect("data line");
            (
                name,
                serde_json::from_str(data).unwrap_or_else(|e| panic!("bad data ({e}): {data}")),
            )
        })
        .collect()
}

#[test]
fn anthropic_upstream_json_is_translated_with_metadata() {
    let (m, gw) = anth_setup(false);
    let r = chat(
        gw.addr,
        &json!({"model": "anth/a-text", "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}], "temperature": 0.2}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], mock::ANTHROPIC_TEXT);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["prompt_tokens"], 12);
    assert_eq!(v["usage"]["completion_tokens"], 5);
    assert_eq!(v["tierflow"]["routed_model"], "anth/a-text");
    let cost = v["tierflow"]["estimated_cost_usd"].as_f64().expect("cost");
    assert!(
        (cost - (12.0 * 3.0 + 5.0 * 15.0) / 1e6).abs() < 1e-12,
        "{cost}"
    );
    assert_eq!(r.header("X-TierFlow-Model"), Some("anth/a-text"));
    // What the Anthropic upstream got: /v1/messages, its auth headers, a Messages body.
    let head = m.state.heads.lock().unwrap()[0].clone();
    assert!(head.starts_with("POST /v1/messages HTTP/1.1"), "{head}");
    assert!(head.contains("x-api-key: sk-test-123"), "{head}");
    assert!(head.contains("anthropic-version: 2023-06-01"), "{head}");
    assert!(!head.contains("Authorization"), "{head}");
    let sent: serde_json::Value =
        serde_json::from_slice(&m.state.bodies.lock().unwrap()[0]).unwrap();
    assert_eq!(sent["model"], "a-text");
    assert_eq!(sent["system"], "Be brief.");
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": "hello"}])
    );
    assert!(sent["max_tokens"].as_u64().unwrap() > 0);

    // Tool use, 4xx passthrough in OpenAI's shape, failover over 500 and 429.
    let r = chat(
        gw.addr,
        &json!({"model": "anth/a-tool", "messages": user("weather in Paris?")}),
    );
    let v = r.json();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert!(serde_json::from_str::<serde_json::Value>(
        call["function"]["arguments"].as_str().unwrap()
    )
    .unwrap()
    .is_object());
    let r = chat(
        gw.addr,
        &json!({"model": "anth/a-e400", "messages": user("x")}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    assert_eq!(r.json()["error"]["message"], "max_tokens: Field required");
    let r = chat(
        gw.addr,
        &json!({"model": "flow/anth-failover", "messages": user("x")}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["tierflow"]["fallbacks"],
        json!(["anth/a-e500", "anth/a-e429"])
    );
    // A request Anthropic cannot express is the client's 400, naming the field.
    let r = chat(
        gw.addr,
        &json!({"model": "anth/a-text", "messages": user("x"), "n": 2}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["param"], "n");
}

#[test]
fn anthropic_upstream_stream_is_translated() {
    let (_m, gw) = anth_setup(false);
    let r = chat(
        gw.addr,
        &json!({"model": "anth/a-text", "stream": true, "stream_options": {"include_usage": true},
        "messages": user("hello")}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("X-TierFlow-Model"), Some("anth/a-text"));
    let data = sse_data(&r.body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    let chunks: Vec<serde_json::Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, mock::ANTHROPIC_TEXT);
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "stop"));
    let last = chunks.last().unwrap();
    assert_eq!(last["usage"]["prompt_tokens"], 12);
    assert_eq!(last["usage"]["completion_tokens"], 5);
    assert_eq!(last["tierflow"]["routed_model"], "anth/a-text");
    assert!(last["tierflow"]["estimated_cost_usd"].as_f64().unwrap() > 0.0);
    // Without include_usage: no usage chunk, the metadata still rides in the last chunk.
    let r = chat(
        gw.addr,
        &json!({"model": "anth/a-text", "stream": true, "messages": user("hello")}),
    );
    let data = sse_data(&r.body);
    let last: serde_json::Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert!(last.get("usage").is_none(), "{last}");
    assert_eq!(last["tierflow"]["routed_model"], "anth/a-text");
}

#[test]
fn anthropic_upstream_parallel_tools_stream_has_complete_arguments() {
    let (_m, gw) = anth_setup(false);
    let r = chat(
        gw.addr,
        &json!({"model": "anth/a-parallel", "stream": true, "messages": user("weather and time?")}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let data = sse_data(&r.body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let mut calls: std::collections::BTreeMap<u64, (String, String, String)> = Default::default();
    let mut finish = None;
    for d in &data[..data.len() - 1] {
        let c: serde_json::Value = serde_json::from_str(d).unwrap();
        if let Some(f) = c["choices"][0]["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
        for tc in c["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let slot = calls.entry(tc["index"].as_u64().unwrap()).or_default();
            if let Some(id) = tc["id"].as_str() {
                assert!(slot.0.is_empty(), "second id for a tool call");
                slot.0 = id.to_string();
            }
            slot.1 += tc["function"]["name"].as_str().unwrap_or("");
            slot.2 += tc["function"]["arguments"].as_str().unwrap_or("");
        }
    }
    assert_eq!(finish.as_deref(), Some("tool_calls"));
    assert_eq!(calls.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2]);
    let names: Vec<&str> = calls.values().map(|c| c.1.as_str()).collect();
    assert_eq!(names, ["get_weather", "get_time", "list_alarms"]);
    for (id, _, args) in calls.values() {
        assert!(id.starts_with("toolu_"), "{id}");
        assert!(
            serde_json::from_str::<serde_json::Value>(args)
                .unwrap()
                .is_object(),
            "{args}"
        );
    }
}

#[test]
fn anthropic_upstream_mid_stream_failures_end_with_an_error_event() {
    let (_m, gw) = anth_setup(false);
    for model in ["anth/a-error", "anth/a-reset"] {
        let r = chat(
            gw.addr,
            &json!({"model": model, "stream": true, "messages": user("hello")}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let data = sse_data(&r.body);
        assert_eq!(
            data.last().map(String::as_str),
            Some("[DONE]"),
            "{model}: {data:?}"
        );
        let err: serde_json::Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
        assert!(
            err["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{model}: {err}"
        );
        assert_eq!(
            data.iter().filter(|d| d.contains("\"error\"")).count(),
            1,
            "{model}: {data:?}"
        );
        if model == "anth/a-error" {
            assert_eq!(err["error"]["type"], "overloaded_error");
            assert!(
                data.iter().any(|d| d.contains("\"content\"")),
                "content before the error: {data:?}"
            );
        }
    }
    // The gateway still serves after both.
    assert_eq!(
        chat(
            gw.addr,
            &json!({"model": "anth/a-text", "messages": user("x")})
        )
        .status,
        200
    );
}

#[test]
fn anthropic_client_to_openai_upstream_json_and_stream() {
    let (m, gw) = setup();
    let req = json!({"model": "auto", "max_tokens": 64, "system": "Be brief.", "messages": [{"role": "user", "content": "hello"}]});
    let r = messages(gw.addr, &req);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": "Hello from the mock."}])
    );
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"]["output_tokens"], 5);
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(r.header("X-TierFlow-Model"), Some("mock/ok"));
    let sent: serde_json::Value =
        serde_json::from_slice(&m.state.bodies.lock().unwrap()[0]).unwrap();
    assert_eq!(sent["model"], "ok");
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
    assert_eq!(sent["max_tokens"], 64);
    assert!(m.state.heads.lock().unwrap()[0].starts_with("POST /v1/chat/completions"));

    let mut req = req.clone();
    req["stream"] = json!(true);
    let r = messages(gw.addr, &req);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    let evs = sse_events(&r.body);
    let names: Vec<&str> = evs.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
    assert_eq!(names.last(), Some(&"message_stop"), "{names:?}");
    let text: String = evs
        .iter()
        .filter_map(|e| e.1["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "Hello from the mock.");
    let delta = evs
        .iter()
        .find(|e| e.0 == "message_delta")
        .expect("message_delta");
    assert_eq!(delta.1["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta.1["usage"]["output_tokens"], 5);

    // Errors in Anthropic's shape; count_tokens answered locally.
    let r = messages(
        gw.addr,
        &json!({"model": "auto", "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    let r = messages(
        gw.addr,
        &json!({"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "not_found_error");
    let r = send_raw(gw.addr, &post_json_raw("/v1/messages/count_tokens",
        &json!({"model": "auto", "messages": [{"role": "user", "content": "hello there, how are you?"}]}).to_string(), "")).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["input_tokens"].as_u64().unwrap() > 0);
}

#[test]
fn anthropic_client_to_anthropic_upstream_passes_through() {
    let (m, gw) = anth_setup(true);
    let req = json!({"model": "auto", "max_tokens": 64, "top_k": 5, "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]});
    let r = messages(gw.addr, &req);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("X-TierFlow-Model"), Some("anth/a-text"));
    let expected = tierflow::providers::anthropic::mock::mock_message_json(
        tierflow::providers::anthropic::mock::Scenario::Text(mock::ANTHROPIC_TEXT),
    );
    assert_eq!(without_tierflow(&r.body), expected);
    assert!(r.json()["tierflow"]["estimated_cost_usd"].as_f64().unwrap() > 0.0);
    // The client's own body, model replaced (top_k survives: no translation happened).
    let mut sent: serde_json::Value =
        serde_json::from_slice(&m.state.bodies.lock().unwrap()[0]).unwrap();
    assert_eq!(sent["model"], "a-text");
    sent["model"] = json!("auto");
    assert_eq!(sent, req);

    let mut req = req.clone();
    req["stream"] = json!(true);
    let r = messages(gw.addr, &req);
    assert_eq!(r.status, 200, "{}", r.text());
    let got = sse_events(&r.body);
    let want: Vec<_> = tierflow::providers::anthropic::mock::mock_message_sse(
        tierflow::providers::anthropic::mock::Scenario::Text(mock::ANTHROPIC_TEXT),
    )
    .iter()
    .flat_map(|b| sse_events(b))
    .collect();
    assert_eq!(got, want);
}

fn run_py(script: &str, url: &str) {
    let path = format!("{}/tests/py/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("python3")
        .arg(&path)
        .arg(url)
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script}: stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        3,
        "{stdout}"
    );
}

#[test]
fn python_sdks_against_the_other_dialect() {
    // OpenAI SDK → gateway → Anthropic upstream.
    let (_m, gw) = anth_setup(true);
    run_py("openai_sdk_check.py", &gw.url());
    // Anthropic SDK → gateway → OpenAI upstream.
    let (_m2, gw2) = setup();
    run_py("anthropic_sdk_check.py", &gw2.url());
}

#[test]
fn anthropic_prefixes_and_errors_in_both_dialects() {
    let (m, gw) = anth_setup(true);
    // A forcing prefix is stripped from the translated request and from a passed-through one.
    let r = chat(
        gw.addr,
        &json!({"model": "auto", "messages": user("/code hello")}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["tierflow"]["category"], "coding");
    let r = messages(
        gw.addr,
        &json!({"model": "auto", "max_tokens": 16, "messages": [{"role": "user", "content": "/code hello"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let bodies = m.state.bodies.lock().unwrap().clone();
    for b in &bodies {
        let sent: serde_json::Value = serde_json::from_slice(b).unwrap();
        assert_eq!(sent["messages"][0]["content"], "hello", "{sent}");
    }
    // Anthropic client, Anthropic upstream: errors pass through, a broken stream ends with `error`.
    let r = messages(
        gw.addr,
        &json!({"model": "anth/a-e400", "max_tokens": 16, "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["message"], "max_tokens: Field required");
    let r = messages(
        gw.addr,
        &json!({"model": "anth/a-reset", "stream": true, "max_tokens": 16, "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let evs = sse_events(&r.body);
    assert_eq!(evs.first().map(|e| e.0.as_str()), Some("message_start"));
    assert_eq!(evs.last().map(|e| e.0.as_str()), Some("error"), "{evs:?}");
    assert_eq!(evs.last().unwrap().1["type"], "error");
    // Anthropic client, OpenAI upstream: the OpenAI error becomes Anthropic's shape, status kept.
    let r = messages(
        gw.addr,
        &json!({"model": "mock/e400", "max_tokens": 16, "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    assert_eq!(
        r.json()["error"]["message"],
        "Invalid value for 'temperature'."
    );
    let r = messages(
        gw.addr,
        &json!({"model": "mock/reset", "stream": true, "max_tokens": 16, "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let evs = sse_events(&r.body);
    assert_eq!(evs.last().map(|e| e.0.as_str()), Some("error"), "{evs:?}");
    // A failover chain that ends on an Anthropic upstream serves an Anthropic client too.
    let r = messages(
        gw.addr,
        &json!({"model": "flow/anth-failover", "max_tokens": 16, "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("X-TierFlow-Fallbacks"), Some("2"));
    assert_eq!(r.json()["content"][0]["text"], mock::ANTHROPIC_TEXT);
}

#[test]
fn anthropic_upstream_thinking_and_max_tokens() {
    let (_m, gw) = anth_setup(false);
    let r = chat(
        gw.addr,
        &json!({"model": "anth/a-thinking", "messages": user("27*453?"), "reasoning_effort": "low"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert!(
        v["choices"][0]["message"]["reasoning_content"]
            .as_str()
            .is_some_and(|t| t.contains("12231")),
        "{v}"
    );
    assert!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .is_some_and(|t| t.contains("12,231")),
        "{v}"
    );
    let r = chat(
        gw.addr,
        &json!({"model": "anth/a-thinking", "stream": true, "messages": user("27*453?")}),
    );
    let data = sse_data(&r.body);
    let reasoning: String = data[..data.len() - 1]
        .iter()
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["reasoning_content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert!(reasoning.contains("12231"), "{data:?}");
    for stream in [false, true] {
        let r = chat(
            gw.addr,
            &json!({"model": "anth/a-maxtokens", "stream": stream, "messages": user("long story")}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            r.text().contains("\"finish_reason\":\"length\""),
            "{}",
            r.text()
        );
    }
}

#[test]
fn messages_endpoint_limit_errors_use_anthropic_shape() {
    let (_m, gw) = setup();
    let r = send_raw(
        gw.addr,
        b"POST /v1/messages HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 413);
    let v = r.json();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], "request_too_large");
    // The OpenAI endpoint keeps the OpenAI schema.
    let r = send_raw(
        gw.addr,
        b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.json()["error"]["code"], "body_too_large");
}
