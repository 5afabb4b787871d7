//! Golden transcripts: fixtures in `tests/fixtures/anthropic/` translated in both directions and
//! compared byte-for-byte (after normalising `chatcmpl-…` ids and `created`) with a line diff.
//! `TIERFLOW_BLESS=1 cargo test` rewrites the expected files (review the git diff before keeping).

use std::path::PathBuf;

use serde_json::{json, Value};

use super::sse::split_sse_blocks;
use super::*;

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/anthropic")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// `chatcmpl-<id>` -> `chatcmpl-ID`, `"created":<n>` -> `"created":0`.
fn normalise(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    loop {
        let a = rest.find("chatcmpl-");
        let b = rest.find("\"created\":");
        let (pos, is_id) = match (a, b) {
            (None, None) => break,
            (Some(a), Some(b)) if b < a => (b, false),
            (Some(a), _) => (a, true),
            (None, Some(b)) => (b, false),
        };
        let (tok, skip): (&str, fn(char) -> bool) = if is_id {
            ("chatcmpl-ID", |c: char| {
                c.is_ascii_alphanumeric() || c == '_' || c == '-'
            })
        } else {
            ("\"created\":0", |c: char| c.is_ascii_digit() || c == ' ')
        };
        let head = if is_id {
            "chatcmpl-".len()
        } else {
            "\"created\":".len()
        };
        out.push_str(&rest[..pos]);
        out.push_str(tok);
        let after = &rest[pos + head..];
        let n = after.find(|c: char| !skip(c)).unwrap_or(after.len());
        rest = &after[n..];
    }
    out.push_str(rest);
    out
}

/// Order-preserving pretty printer (two-space indent), so JSON fixtures are readable while the
/// comparison still sees the exact key order and string escapes of the output.
fn pretty(json: &[u8]) -> String {
    let s = std::str::from_utf8(json).expect("utf-8");
    let mut out = String::new();
    let mut depth = 0usize;
    let mut in_str = false;
    let mut esc = false;
    let chars: Vec<char> = s.chars().collect();
    let nl = |out: &mut String, d: usize| {
        out.push('\n');
        for _ in 0..d {
            out.push_str("  ");
        }
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if in_str {
            out.push(c);
            if esc {
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == '"' {
                in_str = false;
            }
        } else {
            match c {
                '"' => {
                    in_str = true;
                    out.push(c);
                }
                '{' | '[' => {
                    let close = if c == '{' { '}' } else { ']' };
                    if chars.get(i + 1) == Some(&close) {
                        out.push(c);
                        out.push(close);
                        i += 1;
                    } else {
                        out.push(c);
                        depth += 1;
                        nl(&mut out, depth);
                    }
                }
                '}' | ']' => {
                    depth = depth.saturating_sub(1);
                    nl(&mut out, depth);
                    out.push(c);
                }
                ',' => {
                    out.push(c);
                    nl(&mut out, depth);
                }
                ':' => out.push_str(": "),
                c if c.is_whitespace() => {}
                c => out.push(c),
            }
        }
        i += 1;
    }
    out.push('\n');
    out
}

/// A readable line diff (LCS), `-` expected, `+` got.
fn line_diff(expected: &str, got: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = got.lines().collect();
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push_str(&format!("  {}\n", a[i]));
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push_str(&format!("+ {}\n", b[j]));
            j += 1;
        } else {
            out.push_str(&format!("- {}\n", a[i]));
            i += 1;
        }
    }
    out
}

fn assert_golden(expected_name: &str, got: &str) {
    let got = normalise(got);
    if std::env::var_os("TIERFLOW_BLESS").is_some() {
        std::fs::write(fixture_path(expected_name), &got).expect("bless");
        return;
    }
    let expected = normalise(&String::from_utf8(read(expected_name)).expect("utf-8 fixture"));
    if expected != got {
        panic!(
            "golden mismatch for {expected_name} (- expected, + got):\n{}",
            line_diff(&expected, &got)
        );
    }
}

fn chat_stream(name: &str, include_usage: bool) -> Vec<u8> {
    let input = read(&format!("{name}.anthropic.sse"));
    let mut s = MessagesToChatStream::new(
        ChunkMeta {
            id: None,
            model: "auto",
            created_s: 1_763_842_611,
        },
        include_usage,
    );
    let mut out = Vec::new();
    for block in split_sse_blocks(&input) {
        let (ev, data) = parse_sse_event(block);
        let _ = s.on_event(ev.unwrap_or(""), &data, &mut out);
    }
    s.finish(&mut out);
    out
}

/// Rebuilds what an OpenAI SDK accumulates from a chunk stream.
fn accumulate_chat(sse: &[u8]) -> Value {
    let mut content = String::new();
    let mut reasoning = String::new();
    let mut calls: Vec<Value> = Vec::new();
    let mut finish = Value::Null;
    let mut usage = Value::Null;
    let mut done = 0;
    for block in split_sse_blocks(sse) {
        let (ev, data) = parse_sse_event(block);
        assert!(ev.is_none(), "OpenAI events have no name");
        if &*data == b"[DONE]" {
            done += 1;
            continue;
        }
        assert_eq!(done, 0, "nothing after [DONE]");
        let v: Value = serde_json::from_slice(&data).expect("chunk is JSON");
        if v.get("error").is_some() {
            return json!({"error": v["error"]});
        }
        if !v["usage"].is_null() {
            usage = v["usage"].clone();
        }
        let Some(c) = v["choices"].get(0) else {
            continue;
        };
        let d = &c["delta"];
        content.push_str(d["content"].as_str().unwrap_or(""));
        reasoning.push_str(d["reasoning_content"].as_str().unwrap_or(""));
        for tc in d["tool_calls"].as_array().into_iter().flatten() {
            let k = tc["index"].as_u64().unwrap() as usize;
            if k == calls.len() {
                calls.push(json!({"id": tc["id"], "type": "function", "function": {"name": tc["function"]["name"], "arguments": ""}}));
            }
            let args = calls[k]["function"]["arguments"]
                .as_str()
                .unwrap()
                .to_owned()
                + tc["function"]["arguments"].as_str().unwrap_or("");
            calls[k]["function"]["arguments"] = Value::String(args);
        }
        if !c["finish_reason"].is_null() {
            finish = c["finish_reason"].clone();
        }
    }
    assert_eq!(done, 1, "[DONE] exactly once");
    json!({"content": content, "reasoning": reasoning, "tool_calls": calls, "finish_reason": finish, "usage": usage})
}

fn summarise_completion(body: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(body).unwrap();
    let m = &v["choices"][0]["message"];
    json!({
        "content": m["content"].as_str().unwrap_or(""),
        "reasoning": m["reasoning_content"].as_str().unwrap_or(""),
        "tool_calls": m.get("tool_calls").cloned().unwrap_or(json!([])),
        "finish_reason": v["choices"][0]["finish_reason"],
        "usage": v["usage"],
    })
}

const STREAMS: &[(&str, bool)] = &[
    ("text", true),
    ("one_tool", false),
    ("parallel_tools", true),
    ("thinking", true),
    ("max_tokens", false),
    ("error_mid_stream", true),
];

#[test]
fn outbound_streams_match_golden() {
    for &(name, include_usage) in STREAMS {
        let out = chat_stream(name, include_usage);
        assert_golden(
            &format!("{name}.chat.sse"),
            &String::from_utf8(out).unwrap(),
        );
    }
}

#[test]
fn outbound_stream_accumulates_to_the_non_streamed_translation() {
    for &(name, _) in STREAMS.iter().filter(|s| s.0 != "error_mid_stream") {
        let streamed = accumulate_chat(&chat_stream(name, true));
        let whole = summarise_completion(
            &messages_response_to_chat(&read(&format!("{name}.anthropic.json")), "auto").unwrap(),
        );
        assert_eq!(streamed["content"], whole["content"], "{name}");
        assert_eq!(streamed["reasoning"], whole["reasoning"], "{name}");
        assert_eq!(streamed["finish_reason"], whole["finish_reason"], "{name}");
        assert_eq!(streamed["usage"], whole["usage"], "{name}");
        let (s, w) = (
            streamed["tool_calls"].as_array().unwrap(),
            whole["tool_calls"].as_array().unwrap(),
        );
        assert_eq!(s.len(), w.len(), "{name}");
        for (a, b) in s.iter().zip(w) {
            assert_eq!(a["id"], b["id"]);
            assert_eq!(a["function"]["name"], b["function"]["name"]);
            let pa: Value = serde_json::from_str(a["function"]["arguments"].as_str().unwrap())
                .expect("complete JSON args");
            let pb: Value =
                serde_json::from_str(b["function"]["arguments"].as_str().unwrap()).unwrap();
            assert_eq!(pa, pb, "{name}");
        }
    }
}

#[test]
fn outbound_error_mid_stream_keeps_text_then_errors() {
    let v = accumulate_chat(&chat_stream("error_mid_stream", true));
    assert_eq!(v["error"]["type"], "overloaded_error");
    assert_eq!(v["error"]["message"], "Overloaded");
}

#[test]
fn outbound_json_match_golden() {
    for name in [
        "text",
        "one_tool",
        "parallel_tools",
        "thinking",
        "max_tokens",
        "stop_sequence",
        "refusal",
    ] {
        let out =
            messages_response_to_chat(&read(&format!("{name}.anthropic.json")), "auto").unwrap();
        assert_golden(&format!("{name}.chat.json"), &pretty(&out));
    }
}

#[test]
fn outbound_requests_match_golden() {
    for name in ["tool_roundtrip", "multimodal_system"] {
        let req: Value =
            serde_json::from_slice(&read(&format!("{name}.chat_request.json"))).unwrap();
        let out = chat_to_messages_request(
            &req,
            "claude-sonnet-4-5-20250929",
            &RequestOptions::default(),
        )
        .unwrap();
        assert_golden(&format!("{name}.anthropic_request.json"), &pretty(&out));
    }
}

#[test]
fn inbound_request_matches_golden() {
    let (out, info) =
        messages_request_to_chat(&read("inbound_tools.anthropic_request.json")).unwrap();
    assert_golden("inbound_tools.chat_request.json", &pretty(&out));
    assert_eq!(info.model, "claude-sonnet-4-5");
    assert!(info.stream);
    assert_eq!(info.max_tokens, 32000);
    assert_eq!(info.thinking_budget_tokens, Some(16000));
}

#[test]
fn inbound_response_matches_golden() {
    let out =
        chat_response_to_messages(&read("inbound_tools.openai.json"), "claude-sonnet-4-5").unwrap();
    assert_golden("inbound_tools.anthropic.json", &pretty(&out));
}

fn messages_stream(name: &str) -> Vec<u8> {
    let input = read(&format!("{name}.openai.sse"));
    let mut s = ChatToMessagesStream::new("claude-sonnet-4-5", None, 0);
    let mut out = Vec::new();
    for block in split_sse_blocks(&input) {
        let (_, data) = parse_sse_event(block);
        let _ = s.on_data(&data, &mut out);
    }
    s.finish(&mut out);
    out
}

/// Rebuilds what an Anthropic SDK accumulates from an event stream, checking event order.
fn accumulate_messages(sse: &[u8]) -> Value {
    let mut content: Vec<Value> = Vec::new();
    let mut open: Option<usize> = None;
    let mut msg = Value::Null;
    for block in split_sse_blocks(sse) {
        let (ev, data) = parse_sse_event(block);
        let v: Value = serde_json::from_slice(&data).expect("event data is JSON");
        assert_eq!(ev, v["type"].as_str(), "event name matches data type");
        match ev.unwrap() {
            "message_start" => msg = v["message"].clone(),
            "content_block_start" => {
                assert!(open.is_none(), "one block at a time");
                assert_eq!(v["index"], content.len());
                content.push(v["content_block"].clone());
                open = Some(content.len() - 1);
            }
            "content_block_delta" => {
                let i = v["index"].as_u64().unwrap() as usize;
                assert_eq!(Some(i), open);
                let d = &v["delta"];
                let (field, piece) = match d["type"].as_str().unwrap() {
                    "text_delta" => ("text", &d["text"]),
                    "thinking_delta" => ("thinking", &d["thinking"]),
                    "input_json_delta" => ("partial", &d["partial_json"]),
                    t => panic!("delta {t}"),
                };
                let s =
                    content[i][field].as_str().unwrap_or("").to_owned() + piece.as_str().unwrap();
                content[i][field] = Value::String(s);
            }
            "content_block_stop" => {
                let i = v["index"].as_u64().unwrap() as usize;
                assert_eq!(Some(i), open);
                if let Some(p) = content[i]
                    .get("partial")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                {
                    content[i]["input"] = serde_json::from_str(&p).expect("complete JSON input");
                    content[i].as_object_mut().unwrap().remove("partial");
                }
                open = None;
            }
            "message_delta" => {
                msg["stop_reason"] = v["delta"]["stop_reason"].clone();
                msg["usage"] = v["usage"].clone();
            }
            "message_stop" => {
                msg["content"] = Value::Array(content);
                return msg;
            }
            "error" => return json!({"error": v["error"]}),
            e => panic!("unexpected event {e}"),
        }
    }
    panic!("stream without terminal event")
}

#[test]
fn inbound_streams_match_golden() {
    for name in [
        "inbound_text",
        "inbound_parallel_tools",
        "inbound_reasoning",
        "inbound_error",
    ] {
        let out = messages_stream(name);
        assert_golden(
            &format!("{name}.anthropic.sse"),
            &String::from_utf8(out).unwrap(),
        );
    }
}

#[test]
fn inbound_parallel_tools_accumulate() {
    let m = accumulate_messages(&messages_stream("inbound_parallel_tools"));
    assert_eq!(m["stop_reason"], "tool_use");
    assert_eq!(
        m["content"],
        json!([
            {"type": "tool_use", "id": "call_Xk3mW0Qe7bN1aT5yR2uV8pLs", "name": "get_weather", "input": {"location": "Paris, France"}},
            {"type": "tool_use", "id": "call_9dFhQ2sLwPz4XyNc6VbM1kTr", "name": "get_time", "input": {"timezone": "Asia/Tokyo"}}
        ])
    );
    assert_eq!(m["usage"]["output_tokens"], 52);
    let m = accumulate_messages(&messages_stream("inbound_text"));
    assert_eq!(
        m["content"],
        json!([{"type": "text", "text": "Hello! A \"quoted\"\nline and café."}])
    );
    assert_eq!(
        m["usage"],
        json!({"input_tokens": 151, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 1920, "output_tokens": 12})
    );
    let m = accumulate_messages(&messages_stream("inbound_reasoning"));
    assert_eq!(m["stop_reason"], "max_tokens");
    assert_eq!(m["content"][0]["type"], "thinking");
    assert_eq!(m["content"][1]["text"], "9.9 is larger.");
    let m = accumulate_messages(&messages_stream("inbound_error"));
    assert_eq!(m["error"]["type"], "api_error");
}

#[test]
fn normalise_and_pretty_helpers() {
    assert_eq!(
        normalise(r#"{"id":"chatcmpl-abc_1","created":123,"x":"chatcmpl-Z"}"#),
        r#"{"id":"chatcmpl-ID","created":0,"x":"chatcmpl-ID"}"#
    );
    assert_eq!(
        pretty(br#"{"a":[1,{}],"b":"x,{\"y"}"#),
        "{\n  \"a\": [\n    1,\n    {}\n  ],\n  \"b\": \"x,{\\\"y\"\n}\n"
    );
}

// Regressions for issue 5: the peer bugs this module must not repeat.

#[test]
fn issue_5_streamed_tool_input_reaches_the_client() {
    // LiteLLM dropped streamed tool_use input: every input_json_delta fragment must arrive.
    let v = accumulate_chat(&chat_stream("one_tool", false));
    assert_eq!(
        v["tool_calls"][0]["function"]["arguments"],
        "{\"location\": \"San Francisco, CA\", \"unit\": \"fahrenheit\"}"
    );
}

#[test]
fn issue_5_message_start_usage_is_counted() {
    // LiteLLM reported zero usage from message_start: input tokens are known from the first event.
    let input = read("text.anthropic.sse");
    let first = split_sse_blocks(&input)[0];
    let (ev, data) = parse_sse_event(first);
    let mut s = MessagesToChatStream::new(
        ChunkMeta {
            id: None,
            model: "auto",
            created_s: 0,
        },
        true,
    );
    s.on_event(ev.unwrap_or(""), &data, &mut Vec::new())
        .unwrap();
    assert_eq!(
        s.usage(),
        Some(Usage {
            prompt_tokens: 21 + 1536,
            completion_tokens: 1,
            cache_read: 1536,
            cache_write: 0
        })
    );
}

#[test]
fn issue_5_parallel_tool_indexes_count_tool_blocks() {
    // Portkey used the content-block index (1, 2, 3 here, after a text block) as the tool index.
    let out = String::from_utf8(chat_stream("parallel_tools", false)).unwrap();
    let starts: Vec<u64> = out
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v.pointer("/choices/0/delta/tool_calls/0").cloned())
        .filter(|tc| tc.get("id").is_some())
        .map(|tc| tc["index"].as_u64().unwrap())
        .collect();
    assert_eq!(starts, vec![0, 1, 2]);
}

#[test]
fn issue_5_openai_tool_payloads_become_anthropic_blocks() {
    // Bifrost broke OpenAI -> Anthropic tool payloads: arguments strings must become input objects,
    // tool results must answer the right tool_use id, first in their user turn.
    let req: Value = serde_json::from_slice(&read("tool_roundtrip.chat_request.json")).unwrap();
    let out: Value = serde_json::from_slice(
        &chat_to_messages_request(&req, "m", &RequestOptions::default()).unwrap(),
    )
    .unwrap();
    let a = &out["messages"][1]["content"];
    assert_eq!(a[1]["input"], json!({"location": "Paris, France"}));
    assert_eq!(a[2]["input"], json!({"timezone": "Asia/Tokyo"}));
    let u = &out["messages"][2]["content"];
    assert_eq!(u[0]["tool_use_id"], a[1]["id"]);
    assert_eq!(u[1]["tool_use_id"], a[2]["id"]);
    assert_eq!(u[2]["type"], "text");
}
