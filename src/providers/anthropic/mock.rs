//! Realistic upstream bodies for the gateway's mock upstream server in tests: Anthropic Messages
//! responses and SSE streams per scenario, and OpenAI chunk streams for the inbound direction. The
//! fixed scenarios are the golden fixtures themselves, so mock and goldens cannot drift apart.

use serde_json::json;

use super::sse::split_sse_blocks;
use super::to_vec;

/// What the mock Anthropic upstream answers.
#[derive(Debug, Clone, Copy)]
pub enum Scenario<'a> {
    /// One text block with this text (streamed in up to three deltas), `end_turn`.
    Text(&'a str),
    /// Text then one `get_weather` tool_use, `tool_use`.
    OneTool,
    /// Text then three tool_use blocks (`get_weather`, `get_time`, `list_alarms` with empty input).
    ParallelTools,
    /// A thinking block (with signature) then text.
    Thinking,
    /// Text cut by `max_tokens`.
    MaxTokens,
    /// Streams: some text, then an `overloaded_error` event. Non-streamed: the error body, to be
    /// sent with HTTP status 529.
    ErrorMidStream,
}

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../../tests/fixtures/anthropic/", $name))
    };
}

/// Input tokens the `Text` scenario reports.
pub const TEXT_INPUT_TOKENS: u32 = 12;

/// Output tokens the `Text` scenario reports for `text`: ceil(chars / 4), at least 1.
pub fn text_output_tokens(text: &str) -> u32 {
    u32::try_from(text.chars().count().div_ceil(4).max(1)).unwrap_or(u32::MAX)
}

/// A non-streamed Anthropic Messages response body for `scenario`.
pub fn mock_message_json(scenario: Scenario<'_>) -> Vec<u8> {
    match scenario {
        Scenario::Text(text) => to_vec(&json!({
            "model": "claude-sonnet-4-5-20250929", "id": "msg_01MockText0000000000000001", "type": "message",
            "role": "assistant", "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
            "stop_sequence": null, "usage": {"input_tokens": TEXT_INPUT_TOKENS, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0, "output_tokens": text_output_tokens(text), "service_tier": "standard"}})),
        Scenario::OneTool => fixture!("one_tool.anthropic.json").trim_end().as_bytes().to_vec(),
        Scenario::ParallelTools => fixture!("parallel_tools.anthropic.json").trim_end().as_bytes().to_vec(),
        Scenario::Thinking => fixture!("thinking.anthropic.json").trim_end().as_bytes().to_vec(),
        Scenario::MaxTokens => fixture!("max_tokens.anthropic.json").trim_end().as_bytes().to_vec(),
        Scenario::ErrorMidStream => {
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_011CUvKnK6qDZPyWz5zL8e3R"}"#.to_vec()
        }
    }
}

fn blocks_of(text: &str) -> Vec<Vec<u8>> {
    split_sse_blocks(text.as_bytes())
        .into_iter()
        .map(<[u8]>::to_vec)
        .collect()
}

fn event(name: &str, data: &serde_json::Value) -> Vec<u8> {
    let mut b = format!("event: {name}\ndata: ").into_bytes();
    b.extend_from_slice(&to_vec(data));
    b.extend_from_slice(b"\n\n");
    b
}

/// The Anthropic SSE stream for `scenario`, one complete event block (`event: …\ndata: …\n\n`)
/// per element, as the API sends them (ping included).
pub fn mock_message_sse(scenario: Scenario<'_>) -> Vec<Vec<u8>> {
    match scenario {
        Scenario::Text(text) => {
            let usage = json!({"input_tokens": TEXT_INPUT_TOKENS, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                "output_tokens": 1, "service_tier": "standard"});
            let mut out = vec![
                event(
                    "message_start",
                    &json!({"type": "message_start", "message": {"model": "claude-sonnet-4-5-20250929",
                    "id": "msg_01MockText0000000000000001", "type": "message", "role": "assistant", "content": [],
                    "stop_reason": null, "stop_sequence": null, "usage": usage}}),
                ),
                event(
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                ),
                b"event: ping\ndata: {\"type\": \"ping\"}\n\n".to_vec(),
            ];
            let chars: Vec<(usize, char)> = text.char_indices().collect();
            let cuts = [0, chars.len() / 3, 2 * chars.len() / 3, chars.len()];
            for w in cuts.windows(2) {
                if w[0] == w[1] {
                    continue;
                }
                let start = chars[w[0]].0;
                let end = chars.get(w[1]).map_or(text.len(), |c| c.0);
                out.push(event(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": &text[start..end]}}),
                ));
            }
            out.push(event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": 0}),
            ));
            out.push(event("message_delta", &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                "usage": {"output_tokens": text_output_tokens(text)}})));
            out.push(event("message_stop", &json!({"type": "message_stop"})));
            out
        }
        Scenario::OneTool => blocks_of(fixture!("one_tool.anthropic.sse")),
        Scenario::ParallelTools => blocks_of(fixture!("parallel_tools.anthropic.sse")),
        Scenario::Thinking => blocks_of(fixture!("thinking.anthropic.sse")),
        Scenario::MaxTokens => blocks_of(fixture!("max_tokens.anthropic.sse")),
        Scenario::ErrorMidStream => blocks_of(fixture!("error_mid_stream.anthropic.sse")),
    }
}

/// An OpenAI chunk stream with two parallel tool calls (`get_weather` Paris, `get_time` Tokyo),
/// a usage chunk and `data: [DONE]`, one `data: …\n\n` block per element.
pub fn mock_chat_sse_tool_calls() -> Vec<Vec<u8>> {
    blocks_of(fixture!("inbound_parallel_tools.openai.sse"))
}

/// An OpenAI chunk stream answering with text (escapes included), usage with cached tokens, `[DONE]`.
pub fn mock_chat_sse_text() -> Vec<Vec<u8>> {
    blocks_of(fixture!("inbound_text.openai.sse"))
}

/// A non-streamed OpenAI chat.completion with text and two tool calls.
pub fn mock_chat_json_tool_calls() -> Vec<u8> {
    fixture!("inbound_tools.openai.json")
        .trim_end()
        .as_bytes()
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;
    use serde_json::Value;

    fn stream_to_chat(blocks: &[Vec<u8>]) -> (Value, Option<Usage>) {
        let mut s = MessagesToChatStream::new(
            ChunkMeta {
                id: None,
                model: "m",
                created_s: 0,
            },
            true,
        );
        let mut out = Vec::new();
        let mut text = String::new();
        for b in blocks {
            let (ev, data) = parse_sse_event(b);
            s.on_event(ev.unwrap_or(""), &data, &mut out).unwrap();
        }
        s.finish(&mut out);
        let mut finish = Value::Null;
        for b in split_sse_blocks(&out) {
            let (_, d) = parse_sse_event(b);
            if &*d == b"[DONE]" {
                continue;
            }
            let v: Value = serde_json::from_slice(&d).unwrap();
            if let Some(c) = v["choices"].get(0) {
                text.push_str(c["delta"]["content"].as_str().unwrap_or(""));
                if !c["finish_reason"].is_null() {
                    finish = c["finish_reason"].clone();
                }
            }
        }
        (json!({"text": text, "finish": finish}), s.usage())
    }

    #[test]
    fn text_scenario_stream_and_json_agree() {
        for t in [
            "",
            "hi",
            "Hello, wörld — a longer answer with \"quotes\"\nand lines.",
        ] {
            let (v, usage) = stream_to_chat(&mock_message_sse(Scenario::Text(t)));
            assert_eq!(v["text"], t);
            assert_eq!(v["finish"], "stop");
            let u = usage.unwrap();
            assert_eq!(
                (u.prompt_tokens, u.completion_tokens),
                (TEXT_INPUT_TOKENS, text_output_tokens(t))
            );
            let j: Value = serde_json::from_slice(
                &messages_response_to_chat(&mock_message_json(Scenario::Text(t)), "m").unwrap(),
            )
            .unwrap();
            assert_eq!(j["usage"]["completion_tokens"], text_output_tokens(t));
        }
    }

    #[test]
    fn every_scenario_translates() {
        for sc in [
            Scenario::OneTool,
            Scenario::ParallelTools,
            Scenario::Thinking,
            Scenario::MaxTokens,
        ] {
            let (v, usage) = stream_to_chat(&mock_message_sse(sc));
            assert!(!v["finish"].is_null(), "{sc:?}");
            assert!(usage.unwrap().completion_tokens > 1);
            messages_response_to_chat(&mock_message_json(sc), "m").unwrap();
        }
        let err: Value = serde_json::from_slice(&anthropic_error_to_chat(
            529,
            &mock_message_json(Scenario::ErrorMidStream),
        ))
        .unwrap();
        assert_eq!(err["error"]["type"], "overloaded_error");
        assert_eq!(
            mock_chat_sse_tool_calls().last().unwrap(),
            b"data: [DONE]\n\n"
        );
        chat_response_to_messages(&mock_chat_json_tool_calls(), "m").unwrap();
        assert!(mock_chat_sse_text().len() > 3);
    }
}
