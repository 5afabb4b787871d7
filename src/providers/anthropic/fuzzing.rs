//! Property checks for the stream translators, driven by arbitrary bytes: shared by the cargo-fuzz
//! target `fuzz/fuzz_targets/anthropic_stream.rs` and a seeded unit test. Not for production use.

use super::sse::split_sse_blocks;
use super::{parse_sse_event, ChatToMessagesStream, ChunkMeta, MessagesToChatStream};

/// Byte-driven event source: each event is chosen from plausible templates (with fuzzed indexes,
/// strings and JSON fragments) or is raw garbage, so the translators get deep, not just rejected.
struct Source<'a> {
    data: &'a [u8],
}

impl Source<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    /// A short piece of the input as a JSON string literal (lossy UTF-8, escaped).
    fn string_lit(&mut self) -> String {
        let n = usize::from(self.byte().unwrap_or(0) % 12).min(self.data.len());
        let (s, rest) = self.data.split_at(n);
        self.data = rest;
        serde_json::to_string(&String::from_utf8_lossy(s)).unwrap_or_else(|_| "\"\"".into())
    }

    /// Raw bytes, possibly invalid JSON.
    fn raw(&mut self) -> Vec<u8> {
        let n = usize::from(self.byte().unwrap_or(0) % 24).min(self.data.len());
        let (s, rest) = self.data.split_at(n);
        self.data = rest;
        s.to_vec()
    }
}

const STOP_REASONS: [&str; 6] = [
    "end_turn",
    "max_tokens",
    "tool_use",
    "stop_sequence",
    "refusal",
    "pause_turn",
];

fn anthropic_event(src: &mut Source<'_>) -> Option<(&'static str, Vec<u8>)> {
    let kind = src.byte()?;
    let idx = src.byte().unwrap_or(0) % 4;
    let ev = match kind % 13 {
        0 => (
            "message_start",
            format!(
                r#"{{"type":"message_start","message":{{"id":{},"usage":{{"input_tokens":{},"output_tokens":1}}}}}}"#,
                src.string_lit(),
                idx
            ),
        ),
        1 => (
            "content_block_start",
            format!(
                r#"{{"type":"content_block_start","index":{idx},"content_block":{{"type":"text","text":{}}}}}"#,
                src.string_lit()
            ),
        ),
        2 => (
            "content_block_start",
            format!(
                r#"{{"type":"content_block_start","index":{idx},"content_block":{{"type":"tool_use","id":{},"name":{},"input":{{}}}}}}"#,
                src.string_lit(),
                src.string_lit()
            ),
        ),
        3 => (
            "content_block_start",
            format!(
                r#"{{"type":"content_block_start","index":{idx},"content_block":{{"type":"thinking","thinking":"","signature":""}}}}"#
            ),
        ),
        4 => (
            "content_block_delta",
            format!(
                r#"{{"type":"content_block_delta","index":{idx},"delta":{{"type":"text_delta","text":{}}}}}"#,
                src.string_lit()
            ),
        ),
        5 => (
            "content_block_delta",
            format!(
                r#"{{"type":"content_block_delta","index":{idx},"delta":{{"type":"input_json_delta","partial_json":{}}}}}"#,
                src.string_lit()
            ),
        ),
        6 => (
            "content_block_delta",
            format!(
                r#"{{"type":"content_block_delta","index":{idx},"delta":{{"type":"thinking_delta","thinking":{}}}}}"#,
                src.string_lit()
            ),
        ),
        7 => (
            "content_block_stop",
            format!(r#"{{"type":"content_block_stop","index":{idx}}}"#),
        ),
        8 => (
            "message_delta",
            format!(
                r#"{{"type":"message_delta","delta":{{"stop_reason":"{}"}},"usage":{{"output_tokens":{idx}}}}}"#,
                STOP_REASONS[usize::from(idx) % 6]
            ),
        ),
        9 => ("message_stop", r#"{"type":"message_stop"}"#.to_owned()),
        10 => (
            "error",
            format!(
                r#"{{"type":"error","error":{{"type":"overloaded_error","message":{}}}}}"#,
                src.string_lit()
            ),
        ),
        11 => ("ping", r#"{"type": "ping"}"#.to_owned()),
        _ => {
            let names = [
                "message_start",
                "content_block_delta",
                "content_block_start",
                "",
                "error",
                "bogus",
            ];
            return Some((names[usize::from(idx) % names.len()], src.raw()));
        }
    };
    Some((ev.0, ev.1.into_bytes()))
}

fn openai_chunk(src: &mut Source<'_>) -> Option<Vec<u8>> {
    let kind = src.byte()?;
    let idx = src.byte().unwrap_or(0) % 3;
    let c = match kind % 10 {
        0 => format!(
            r#"{{"id":"chatcmpl-1","choices":[{{"index":0,"delta":{{"role":"assistant","content":{}}}}}]}}"#,
            src.string_lit()
        ),
        1 => format!(
            r#"{{"id":"chatcmpl-1","choices":[{{"index":0,"delta":{{"reasoning_content":{}}}}}]}}"#,
            src.string_lit()
        ),
        2 => format!(
            r#"{{"id":"chatcmpl-1","choices":[{{"index":0,"delta":{{"tool_calls":[{{"index":{idx},"id":{},"type":"function","function":{{"name":{},"arguments":""}}}}]}}}}]}}"#,
            src.string_lit(),
            src.string_lit()
        ),
        3 => format!(
            r#"{{"id":"chatcmpl-1","choices":[{{"index":0,"delta":{{"tool_calls":[{{"index":{idx},"function":{{"arguments":{}}}}}]}}}}]}}"#,
            src.string_lit()
        ),
        4 => format!(
            r#"{{"id":"chatcmpl-1","choices":[{{"index":0,"delta":{{}},"finish_reason":"{}"}}]}}"#,
            ["stop", "length", "tool_calls", "content_filter"][usize::from(idx)]
        ),
        5 => format!(
            r#"{{"id":"chatcmpl-1","choices":[],"usage":{{"prompt_tokens":{idx},"completion_tokens":3,"prompt_tokens_details":{{"cached_tokens":9}}}}}}"#
        ),
        6 => "[DONE]".to_owned(),
        7 => format!(
            r#"{{"error":{{"message":{},"type":"server_error"}}}}"#,
            src.string_lit()
        ),
        8 => format!(
            r#"{{"id":"c","choices":[{{"index":0,"delta":{{"content":{},"refusal":{}}}}}]}}"#,
            src.string_lit(),
            src.string_lit()
        ),
        _ => return Some(src.raw()),
    };
    Some(c.into_bytes())
}

/// Every block of `out` is `event:`/`data:` lines ending in a blank line, every data is JSON or
/// `[DONE]`. Returns (event name, data) pairs.
fn well_formed(out: &[u8]) -> Vec<(Option<String>, String)> {
    assert!(
        out.is_empty() || out.ends_with(b"\n\n"),
        "output ends mid-event"
    );
    let mut events = Vec::new();
    for block in split_sse_blocks(out) {
        let text = std::str::from_utf8(block).expect("output is UTF-8");
        for line in text.trim_end_matches('\n').split('\n') {
            assert!(
                line.starts_with("event: ") || line.starts_with("data: "),
                "bad SSE line {line:?}"
            );
        }
        let (ev, data) = parse_sse_event(block);
        let data = String::from_utf8(data.into_owned()).expect("utf-8");
        if data != "[DONE]" {
            serde_json::from_str::<serde_json::Value>(&data)
                .unwrap_or_else(|e| panic!("data is not JSON ({e}): {data}"));
        }
        events.push((ev.map(str::to_owned), data));
    }
    events
}

/// Feeds arbitrary events through both stream translators and panics if a property breaks: no
/// panic inside, output always well-formed SSE, exactly one terminal event and nothing after it,
/// tool-call indexes dense from 0 (OpenAI side), content blocks strictly sequential (Anthropic side).
#[doc(hidden)]
pub fn check_streams(input: &[u8]) {
    let (&mode, rest) = match input.split_first() {
        Some(x) => x,
        None => return,
    };
    let mut src = Source { data: rest };
    if mode % 2 == 0 {
        let mut s = MessagesToChatStream::new(
            ChunkMeta {
                id: None,
                model: "auto",
                created_s: 0,
            },
            mode & 2 != 0,
        );
        let mut out = Vec::new();
        while let Some((name, data)) = anthropic_event(&mut src) {
            let _ = s.on_event(name, &data, &mut out);
        }
        s.finish(&mut out);
        let events = well_formed(&out);
        let done: Vec<usize> = events
            .iter()
            .enumerate()
            .filter(|e| e.1 .1 == "[DONE]")
            .map(|e| e.0)
            .collect();
        assert_eq!(done, vec![events.len() - 1], "[DONE] exactly once, last");
        let mut tools = 0u64;
        for (_, d) in &events[..events.len() - 1] {
            let v: serde_json::Value = serde_json::from_str(d).unwrap_or_default();
            for tc in v
                .pointer("/choices/0/delta/tool_calls")
                .and_then(|t| t.as_array())
                .into_iter()
                .flatten()
            {
                let k = tc["index"].as_u64().expect("tool index");
                if tc.get("id").is_some() {
                    assert_eq!(k, tools, "tool indexes dense from 0");
                    tools += 1;
                } else {
                    assert!(k < tools, "arguments for an unknown tool");
                }
            }
        }
    } else {
        let mut s = ChatToMessagesStream::new("claude", None, 0);
        let mut out = Vec::new();
        while let Some(data) = openai_chunk(&mut src) {
            let _ = s.on_data(&data, &mut out);
        }
        s.finish(&mut out);
        let events = well_formed(&out);
        let terminal =
            |e: &(Option<String>, String)| matches!(e.0.as_deref(), Some("message_stop" | "error"));
        let terminals: Vec<usize> = events
            .iter()
            .enumerate()
            .filter(|e| terminal(e.1))
            .map(|e| e.0)
            .collect();
        assert_eq!(
            terminals,
            vec![events.len() - 1],
            "one terminal event, last"
        );
        let mut open: Option<u64> = None;
        let mut next = 0u64;
        for (name, d) in &events {
            let v: serde_json::Value = serde_json::from_str(d).expect("json");
            assert_eq!(
                name.as_deref(),
                v["type"].as_str(),
                "event name matches type"
            );
            match name.as_deref() {
                Some("content_block_start") => {
                    assert!(open.is_none(), "block started while another is open");
                    assert_eq!(v["index"].as_u64(), Some(next));
                    open = Some(next);
                    next += 1;
                }
                Some("content_block_delta") => {
                    assert_eq!(v["index"].as_u64(), open, "delta outside its block")
                }
                Some("content_block_stop") => {
                    assert_eq!(v["index"].as_u64(), open, "stop of a block not open");
                    open = None;
                }
                Some("message_delta" | "message_stop") => {
                    assert!(open.is_none(), "message ends with an open block")
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_random_streams_hold_properties() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..4000 {
            let len = (x % 200) as usize;
            let input: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 24) as u8
                })
                .collect();
            check_streams(&input);
        }
    }

    #[test]
    fn golden_inputs_hold_properties() {
        // Mode byte 0: outbound, then a well-formed prefix exercising all templates in order.
        check_streams(&[
            0, 0, 0, 0, 1, 0, 0, 4, 0, 3, b'a', b'b', b'c', 7, 0, 2, 1, 2, b'i', b'd', 2, b'f',
            b'n', 5, 1, 0, 7, 1, 8, 2, 9, 0,
        ]);
        check_streams(&[
            1, 0, 0, 2, b'h', b'i', 2, 0, 1, b'i', 1, b'f', 3, 0, 2, b'{', b'}', 4, 2, 5, 0, 6, 0,
        ]);
    }
}
