//! Ledger rows for requests answered before the chat pipeline: framing and head errors (413, 400
//! bad chunking, 431, 408), a wrong method (405) and untranslatable Messages bodies, on chat
//! endpoints; and what stays out of the ledger (other endpoints, unknown paths, garbage heads).

use std::io::{BufReader, Write};
use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::support::mock;
use super::support::*;

fn ledger_rows(path: &Path) -> Vec<(i64, String, String, i64, String)> {
    let db = rusqlite::Connection::open(path).expect("open ledger");
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let rows = db
        .prepare(
        "SELECT status, app, outcome, prompt_tokens + completion_tokens, model FROM usage ORDER BY id",
    )
    .unwrap()
    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap();
    rows
}

#[test]
fn errors_before_the_chat_pipeline_are_ledger_rows_on_chat_paths_only() {
    let m = mock::start(None);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = mock_config(m.addr, json!({}));
    cfg["ledger"] = json!({"path": dir.path().join("ledger.db"), "flush_interval_ms": 50});
    cfg["limits"]["max_body_bytes"] = json!(4096);
    let mut gw = Gateway::spawn_with(&cfg, &[], &[("TF_TEST_KEY", "sk-test-123")]);
    let app = "X-TierFlow-App: early\r\n";
    let mut expected: Vec<u16> = Vec::new();

    // One served request, for contrast.
    let ok = json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let r = send_raw(gw.addr, &post_json_raw("/v1/chat/completions", &ok, app)).unwrap();
    assert_eq!(r.status, 200);
    expected.push(200);
    // 413, declared: on the OpenAI path and the Messages path (Anthropic's error shape).
    for path in ["/v1/chat/completions", "/v1/messages"] {
        let raw = format!("POST {path} HTTP/1.1\r\nHost: t\r\n{app}Content-Length: 5000\r\n\r\n");
        let r = send_raw(gw.addr, raw.as_bytes()).unwrap();
        assert_eq!(r.status, 413, "{path}");
        expected.push(413);
    }
    // 413, discovered while decoding a chunked body.
    let mut s = connect(gw.addr);
    s.write_all(
        format!("POST /chat/completions HTTP/1.1\r\n{app}Transfer-Encoding: chunked\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let _ = s.write_all(format!("{:x}\r\n{}\r\n", 5000, "a".repeat(5000)).as_bytes());
    assert_eq!(read_response(&mut BufReader::new(s)).unwrap().status, 413);
    expected.push(413);
    // 400: broken chunk framing; and a body that is not JSON (answered by the chat path).
    let raw = format!(
        "POST /v1/chat/completions HTTP/1.1\r\n{app}Transfer-Encoding: chunked\r\n\r\nzz\r\nxx\r\n0\r\n\r\n"
    );
    assert_eq!(send_raw(gw.addr, raw.as_bytes()).unwrap().status, 400);
    expected.push(400);
    let r = send_raw(
        gw.addr,
        &post_json_raw("/v1/chat/completions", "{\"model\": ", app),
    );
    assert_eq!(r.unwrap().status, 400);
    expected.push(400);
    // 400: a Messages body that does not translate (no max_tokens).
    let body = json!({"model": "auto", "messages": [{"role": "user", "content": "x"}]});
    let r = send_raw(
        gw.addr,
        &post_json_raw("/v1/messages", &body.to_string(), app),
    )
    .unwrap();
    assert_eq!(r.status, 400);
    expected.push(400);
    // 431: too many headers on a chat path.
    let mut many = String::from("POST /v1/chat/completions HTTP/1.1\r\n");
    for i in 0..40 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(send_raw(gw.addr, many.as_bytes()).unwrap().status, 431);
    expected.push(431);
    // 405: a chat path with the wrong method.
    assert_eq!(get(gw.addr, "/v1/chat/completions", app).status, 405);
    expected.push(405);
    // 408: a chat request whose head never completes (header timeout 1 s in the mock config).
    let mut s = connect(gw.addr);
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost:")
        .unwrap();
    assert_eq!(read_response(&mut BufReader::new(s)).unwrap().status, 408);
    expected.push(408);

    // Not usage: other endpoints, their errors, unknown paths, heads that name no path.
    assert_eq!(get(gw.addr, "/health", "").status, 200);
    assert_eq!(get(gw.addr, "/stats", "").status, 200);
    assert_eq!(get(gw.addr, "/v1/models", "").status, 200);
    // No admin key configured: the dashboard answers loopback peers.
    assert_eq!(get(gw.addr, "/dashboard", "").status, 200);
    assert_eq!(get(gw.addr, "/v1/nothing", app).status, 404);
    let raw = post_json_raw("/health", "{}", "");
    assert_eq!(send_raw(gw.addr, &raw).unwrap().status, 405);
    assert_eq!(
        send_raw(gw.addr, b"\x16\x03\x01garbage\r\n\r\n")
            .unwrap()
            .status,
        400
    );
    let raw = "POST /v1/models HTTP/1.1\r\nContent-Length: 9999\r\n\r\n";
    assert_eq!(send_raw(gw.addr, raw.as_bytes()).unwrap().status, 413);

    gw.signal(libc::SIGTERM);
    assert_eq!(
        gw.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        gw.log_text()
    );
    let rows = ledger_rows(&dir.path().join("ledger.db"));
    let mut statuses: Vec<u16> = rows.iter().map(|r| r.0 as u16).collect();
    statuses.sort_unstable();
    expected.sort_unstable();
    assert_eq!(statuses, expected, "{rows:?}");
    for (status, app, outcome, tokens, model) in &rows {
        if *status == 200 {
            assert_eq!((app.as_str(), outcome.as_str()), ("early", "ok"));
            assert!(*tokens > 0 && !model.is_empty());
            continue;
        }
        // Errors are billed nothing and name no model; the app header labels them when the
        // head was read (the 431/408 heads never were).
        assert_eq!(
            (outcome.as_str(), *tokens, model.as_str()),
            ("error", 0, "")
        );
        let want = if matches!(status, 431 | 408) {
            "default"
        } else {
            "early"
        };
        assert_eq!(app, want, "status {status}");
    }
}

#[test]
fn early_rows_carry_the_key_and_unauthenticated_ones_stay_anonymous() {
    let m = mock::start(None);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = mock_config(m.addr, json!({}));
    let db = dir.path().join("ledger.db");
    cfg["ledger"] = json!({"path": db, "flush_interval_ms": 50});
    cfg["limits"]["max_body_bytes"] = json!(4096);
    let cfg_path = dir.path().join("cli-config.json");
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tierflow"))
        .arg("--config")
        .arg(&cfg_path)
        .args(["keys", "create", "--app", "keyed", "--env", "prod"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let mut gw = Gateway::spawn(&cfg);
    // A valid key: the 413 row is the key's; a made-up app header does not relabel it.
    let raw = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nAuthorization: Bearer {key}\r\nX-TierFlow-App: spoof\r\nContent-Length: 5000\r\n\r\n"
    );
    assert_eq!(send_raw(gw.addr, raw.as_bytes()).unwrap().status, 413);
    // No key: an anonymous row (the app header is not trusted when keys are required).
    let raw = "POST /v1/chat/completions HTTP/1.1\r\nX-TierFlow-App: spoof\r\nContent-Length: 5000\r\n\r\n";
    assert_eq!(send_raw(gw.addr, raw.as_bytes()).unwrap().status, 413);
    gw.signal(libc::SIGTERM);
    assert_eq!(gw.wait_exit(Duration::from_secs(15)), Some(0));
    let c = rusqlite::Connection::open(&db).unwrap();
    let rows: Vec<(String, String, String)> = c
        // Two workers may hand their rows to the writer in either order: keyed row first.
        .prepare("SELECT key_id, app, env FROM usage WHERE status = 413 ORDER BY key_id = '', id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(!rows[0].0.is_empty());
    assert_eq!((rows[0].1.as_str(), rows[0].2.as_str()), ("keyed", "prod"));
    assert_eq!(
        (rows[1].0.as_str(), rows[1].1.as_str(), rows[1].2.as_str()),
        ("", "default", "")
    );
}
