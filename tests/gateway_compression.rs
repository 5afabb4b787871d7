//! Context compression (CtxPack) end to end: agent traffic with terminal escapes, blank-line
//! runs, a repeated stack trace and a file pasted twice reaches the mock upstream compressed,
//! with the savings in the metadata, a header and /stats; a category with compression off is
//! forwarded with its `messages` bytes untouched.

use serde_json::json;

use super::support::mock;
use super::support::*;

/// The raw `messages` member of an upstream body.
fn messages_of(body: &[u8]) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(body).expect("upstream body is JSON");
    v["messages"].clone()
}

fn tool_output() -> String {
    let frames =
        "    at Object.<anonymous> (/app/node_modules/retry/lib/retry.js:41:17)\n".repeat(12);
    let file = "```js\nexport function retry(fn, n) {\n  for (let i = 0; i < n; i++) {\n    try { return fn(); } catch (e) { if (i === n - 1) throw e; }\n  }\n}\n```\n";
    format!(
        "\u{1b}[1m\u{1b}[31mFAIL\u{1b}[39m\u{1b}[22m src/retry.test.js   \n\n\n\n\n\nRangeError: Maximum call stack size exceeded\n{frames}\nsrc/retry.js:\n\n{file}\nsrc/retry.js (again, unchanged):\n\n{file}"
    )
}

#[test]
fn agent_traffic_is_compressed_and_reported_issue_6() {
    let m = mock::start(None);
    let gw = Gateway::spawn_with(
        &mock_config(
            m.addr,
            json!({
                "compression": {
                    "categories": {
                        "agentic": ["ansi", "whitespace", "json", "stack_traces", "dedup"],
                        "general": []
                    }
                }
            }),
        ),
        &[],
        &[("TF_TEST_KEY", "sk-test-123")],
    );
    let out = tool_output();
    // A tool result routes as `agentic` (structure), which runs every pass but comments.
    let messages = json!([
        {"role": "user", "content": "Why does the retry test fail?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
            "function": {"name": "sh", "arguments": "{\"cmd\": \"npm test   \\n\\n\\n\\n\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": out}
    ]);
    let r = chat(gw.addr, &json!({"model": "auto", "messages": messages}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-tierflow-category"), Some("agentic"));
    let body = m.state.bodies.lock().unwrap().last().cloned().unwrap();
    let sent = messages_of(&body);
    let text = sent[2]["content"].as_str().unwrap();
    assert!(!text.contains('\u{1b}'), "{text}");
    assert!(
        text.starts_with("FAIL src/retry.test.js\n\n\nRangeError"),
        "{text}"
    );
    assert!(text.contains("[… 11 identical frames]"), "{text}");
    assert_eq!(text.matches("for (let i = 0").count(), 1, "{text}");
    assert!(
        text.contains("[identical to the block above: export function retry(fn, n) {…]"),
        "{text}"
    );
    // Everything else arrives as sent: the question, the tool call and its arguments.
    assert_eq!(sent[0], messages[0]);
    assert_eq!(sent[1]["tool_calls"], messages[1]["tool_calls"]);
    let meta = &r.json()["tierflow"]["compression"];
    let saved = meta["saved_tokens"].as_u64().unwrap();
    assert_eq!(
        meta["saved_bytes"].as_u64().unwrap() as usize,
        out.len() - text.len()
    );
    assert!(
        saved > 0 && saved * 4 >= (out.len() - text.len()) as u64 - 4,
        "{meta}"
    );
    assert_eq!(
        meta["passes"],
        json!(["ansi", "whitespace", "stack_traces", "dedup"])
    );
    assert_eq!(
        r.header("x-tierflow-compressed-tokens"),
        Some(saved.to_string().as_str())
    );
    let stats = get(gw.addr, "/stats", "").text();
    assert!(
        stats.contains("tierflow_compression_requests_total 1"),
        "{stats}"
    );
    for pass in ["ansi", "whitespace", "stack_traces", "dedup"] {
        let line = format!("tierflow_compression_saved_tokens_total{{pass=\"{pass}\"}} ");
        let v: u64 = stats
            .lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{line} missing:\n{stats}"));
        assert!(v > 0, "{pass}: {v}");
    }
    assert!(stats.contains("tierflow_compression_saved_tokens_total{pass=\"comments\"} 0"));

    // `general` has compression off: the same text goes upstream with its `messages` bytes as
    // the client wrote them (only `model` is replaced), and nothing is reported.
    let raw_messages = serde_json::to_string(&messages).unwrap();
    let raw_body = format!("{{\"model\": \"tier-2\", \"messages\": {raw_messages}}}");
    let r = send_raw(
        gw.addr,
        &post_json_raw("/v1/chat/completions", &raw_body, ""),
    )
    .expect("response");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-tierflow-category"), Some("general"));
    let body = m.state.bodies.lock().unwrap().last().cloned().unwrap();
    let body = String::from_utf8(body).unwrap();
    assert!(
        body.contains(&raw_messages),
        "messages were rewritten:\n{body}"
    );
    assert!(r.header("x-tierflow-compressed-tokens").is_none());
    assert!(r.json()["tierflow"].get("compression").is_none());
}

#[test]
fn scrubbed_text_is_compressed_around_its_placeholders_issue_6() {
    let m = mock::start(None);
    // Defaults: compression on (ansi, whitespace, json); the mock provider scrubs PII.
    let gw = Gateway::spawn_with(
        &mock_config(m.addr, json!({})),
        &[],
        &[("TF_TEST_KEY", "sk-test-123")],
    );
    let email = format!("dana.lee{}@example.com", std::process::id());
    let prompt = format!(
        "Reply to {email}   \n\n\n\n\n\u{1b}[31mERROR\u{1b}[0m quota exceeded for {email}\n"
    );
    let r = chat(
        gw.addr,
        &json!({"model": "mock/echo", "messages": [{"role": "user", "content": prompt}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // Upstream: placeholders instead of the address, escapes and blank lines gone.
    let body = String::from_utf8(m.state.bodies.lock().unwrap().last().cloned().unwrap()).unwrap();
    let sent = messages_of(body.as_bytes())[0]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!body.contains(&email), "PII reached the upstream");
    assert!(!sent.contains('\u{1b}'), "{sent:?}");
    assert!(sent.starts_with("Reply to "), "{sent:?}");
    assert!(
        sent.contains("@redacted.example\n\n\nERROR quota exceeded for "),
        "{sent:?}"
    );
    assert_eq!(sent.matches("@redacted.example").count(), 2, "{sent:?}");
    // The echoed request comes back rehydrated: the placeholders survived compression intact.
    let v = r.json();
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(content.matches(email.as_str()).count(), 2, "{content}");
    assert_eq!(
        v["tierflow"]["compression"]["passes"],
        json!(["ansi", "whitespace"])
    );
}
