//! Streamed OpenAI `chat.completion.chunk`s -> Anthropic Messages SSE events (inbound direction:
//! an Anthropic client served by an OpenAI-shaped upstream). Text, thinking and tool-call deltas
//! are copied as raw JSON string literals; framing of upstream bytes is the gateway's.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::inbound::{anthropic_error_type, ChatUsageIn};
use super::response::ErrorIn;
use super::{stop_reason_from_finish, write_json_str, write_u64, TranslateError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    None,
    Text,
    Thinking,
    Tool { openai_index: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Fresh,
    Streaming,
    Done,
}

/// Translates one OpenAI chunk stream into the Anthropic event sequence: `message_start`, then per
/// content block `content_block_start` / `content_block_delta`… / `content_block_stop` (text,
/// thinking, or `tool_use` with `input_json_delta`), then `message_delta` (stop reason and usage)
/// and `message_stop`.
///
/// OpenAI sends `finish_reason` before the usage chunk, so `message_delta` waits for `[DONE]` (or
/// [`finish`](Self::finish)). Parallel tool calls are expected one after another, as OpenAI, vLLM
/// and others send them; a fragment for a tool call whose block was already closed is a protocol
/// error (Anthropic blocks cannot reopen).
pub struct ChatToMessagesStream {
    model_lit: Vec<u8>,
    message_id: Option<String>,
    input_tokens_hint: u32,
    phase: Phase,
    open: Open,
    next_block: u32,
    /// OpenAI tool indexes already given a block.
    tools_seen: Vec<u32>,
    stop_reason: Option<&'static str>,
    usage: Option<ChatUsageIn>,
}

#[derive(Deserialize)]
struct ChunkIn<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    choices: FirstChoice<'a>,
    #[serde(default)]
    usage: Option<ChatUsageIn>,
    #[serde(borrow, default)]
    error: Option<ErrorIn<'a>>,
}

#[derive(Deserialize)]
struct ChoiceIn<'a> {
    #[serde(borrow, default)]
    delta: Option<DeltaIn<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<&'a str>,
}

#[derive(Deserialize)]
struct DeltaIn<'a> {
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    reasoning_content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    reasoning: Option<&'a RawValue>,
    #[serde(borrow, default)]
    refusal: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<ToolCallIn<'a>>>,
}

#[derive(Deserialize)]
struct ToolCallIn<'a> {
    #[serde(default)]
    index: Option<u32>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    function: Option<FunctionIn<'a>>,
}

#[derive(Deserialize)]
struct FunctionIn<'a> {
    #[serde(borrow, default)]
    name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    arguments: Option<&'a RawValue>,
}

/// `choices`, keeping only the first element without collecting the array (n is always 1 here).
#[derive(Default)]
struct FirstChoice<'a>(Option<ChoiceIn<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for FirstChoice<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = FirstChoice<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of choices")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(FirstChoice(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let first = seq.next_element::<ChoiceIn<'a>>()?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(FirstChoice(first))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// JSON string literals of a tool call's first fragment.
struct ToolStart<'a> {
    id: Option<&'a [u8]>,
    name: Option<&'a [u8]>,
}

/// A raw JSON value that must be a string literal; `""` counts as absent.
fn nonempty_str(raw: Option<&RawValue>) -> Result<Option<&[u8]>, TranslateError> {
    match raw {
        None => Ok(None),
        Some(r) => {
            let b = r.get().as_bytes();
            if b.first() != Some(&b'"') {
                return Err(TranslateError::Protocol {
                    reason: "expected a JSON string",
                });
            }
            Ok(if b == b"\"\"" { None } else { Some(b) })
        }
    }
}

impl ChatToMessagesStream {
    /// `model` is echoed in `message_start`. `input_tokens_hint` (e.g. from
    /// [`count_tokens_local`](super::count_tokens_local)) fills `message_start.usage.input_tokens`,
    /// which OpenAI only reports at the end; the real number follows in `message_delta.usage`.
    /// `message_id: None` uses `msg_` + the upstream chunk id.
    pub fn new(model: &str, message_id: Option<&str>, input_tokens_hint: u32) -> Self {
        let mut model_lit = Vec::with_capacity(model.len() + 2);
        write_json_str(&mut model_lit, model);
        ChatToMessagesStream {
            model_lit,
            message_id: message_id.map(str::to_owned),
            input_tokens_hint,
            phase: Phase::Fresh,
            open: Open::None,
            next_block: 0,
            tools_seen: Vec::with_capacity(4),
            stop_reason: None,
            usage: None,
        }
    }

    /// True once the terminal event (`message_stop` or `error`) has been written.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Translates the data of one OpenAI SSE event (a chunk, an `{"error":…}` object or `[DONE]`)
    /// and appends zero or more complete Anthropic `event: …\ndata: …\n\n` events to `out`.
    ///
    /// On `Err` the stream is over: `out` already ends with an Anthropic `error` event.
    pub fn on_data(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), TranslateError> {
        if self.phase == Phase::Done {
            return Ok(());
        }
        let start = out.len();
        match self.translate(data, out) {
            Ok(()) => Ok(()),
            Err(e) => {
                // Never leave half an event behind.
                out.truncate(start);
                let msg: &str = match &e {
                    TranslateError::Protocol { reason } => reason,
                    _ => "upstream sent a malformed stream chunk",
                };
                self.write_error(out, "api_error", msg);
                Err(e)
            }
        }
    }

    fn translate(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), TranslateError> {
        let trimmed = data.trim_ascii();
        if trimmed == b"[DONE]" {
            self.end(out);
            return Ok(());
        }
        if trimmed.is_empty() {
            return Ok(());
        }
        let chunk: ChunkIn<'_> =
            serde_json::from_slice(trimmed).map_err(|source| TranslateError::UpstreamEvent {
                event: "chat.completion.chunk",
                source,
            })?;
        if let Some(e) = chunk.error {
            let kind = if e.r#type.is_empty() || e.r#type == "error" {
                "api_error"
            } else {
                &*e.r#type
            };
            let kind = known_error_type(kind);
            self.write_error(out, kind, &e.message);
            return Ok(());
        }
        if self.phase == Phase::Fresh {
            self.start(out, chunk.id);
        }
        if let Some(u) = chunk.usage {
            self.usage = Some(u);
        }
        let Some(choice) = chunk.choices.0 else {
            return Ok(());
        };
        if let Some(d) = choice.delta {
            let thinking = match nonempty_str(d.reasoning_content)? {
                Some(t) => Some(t),
                None => nonempty_str(d.reasoning)?,
            };
            if let Some(t) = thinking {
                self.ensure_open(out, Open::Thinking, None)?;
                self.write_delta(out, b"thinking_delta", b"thinking", t);
            }
            for text in [nonempty_str(d.content)?, nonempty_str(d.refusal)?]
                .into_iter()
                .flatten()
            {
                self.ensure_open(out, Open::Text, None)?;
                self.write_delta(out, b"text_delta", b"text", text);
            }
            if nonempty_str(d.refusal)?.is_some() {
                self.stop_reason = Some("refusal");
            }
            if let Some(calls) = d.tool_calls {
                for (pos, c) in calls.iter().enumerate() {
                    let openai_index = c.index.unwrap_or(pos as u32);
                    let (name, args) = match &c.function {
                        Some(f) => (nonempty_str(f.name)?, nonempty_str(f.arguments)?),
                        None => (None, None),
                    };
                    self.ensure_open(
                        out,
                        Open::Tool { openai_index },
                        Some(ToolStart {
                            id: nonempty_str(c.id)?,
                            name,
                        }),
                    )?;
                    if let Some(a) = args {
                        self.write_delta(out, b"input_json_delta", b"partial_json", a);
                    }
                }
            }
        }
        if let Some(f) = choice.finish_reason {
            if self.stop_reason != Some("refusal") {
                self.stop_reason = Some(stop_reason_from_finish(f));
            }
        }
        Ok(())
    }

    /// Ends the stream if the upstream did not send `[DONE]`: normally when a `finish_reason` was
    /// seen, else with an `error` event (a truncated upstream must not look complete). Writes the
    /// terminal event exactly once.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        match self.phase {
            Phase::Done => {}
            _ if self.stop_reason.is_some() => self.end(out),
            _ => self.write_error(
                out,
                "api_error",
                "upstream stream ended before finish_reason",
            ),
        }
    }

    fn start(&mut self, out: &mut Vec<u8>, chunk_id: Option<&RawValue>) {
        out.extend_from_slice(
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":",
        );
        match (&self.message_id, chunk_id.map(|r| r.get())) {
            (Some(id), _) => write_json_str(out, id),
            (None, Some(raw)) if raw.starts_with('"') => {
                let inner = &raw[1..];
                out.extend_from_slice(b"\"msg_");
                out.extend_from_slice(inner.strip_prefix("chatcmpl-").unwrap_or(inner).as_bytes());
            }
            _ => out.extend_from_slice(b"\"msg_tierflow\""),
        }
        out.extend_from_slice(b",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
        out.extend_from_slice(&self.model_lit);
        out.extend_from_slice(b",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":");
        write_u64(out, u64::from(self.input_tokens_hint));
        out.extend_from_slice(b",\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":0}}}\n\n");
        self.phase = Phase::Streaming;
    }

    /// Makes `want` the open block, closing another one first. `tool` carries the id and name
    /// literals of a tool call's first fragment.
    fn ensure_open(
        &mut self,
        out: &mut Vec<u8>,
        want: Open,
        tool: Option<ToolStart<'_>>,
    ) -> Result<(), TranslateError> {
        if self.open == want {
            return Ok(());
        }
        if let Open::Tool { openai_index } = want {
            if self.tools_seen.contains(&openai_index) {
                return Err(TranslateError::Protocol {
                    reason: "tool call fragment after its block was closed",
                });
            }
        }
        let tool = match want {
            Open::Tool { .. } => match tool {
                Some(ToolStart {
                    id,
                    name: Some(name),
                }) => Some((id, name)),
                _ => {
                    return Err(TranslateError::Protocol {
                        reason: "tool call without a function name",
                    })
                }
            },
            _ => None,
        };
        self.close_block(out);
        let index = self.next_block;
        out.extend_from_slice(
            b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":",
        );
        write_u64(out, u64::from(index));
        out.extend_from_slice(b",\"content_block\":");
        match want {
            Open::Text => out.extend_from_slice(b"{\"type\":\"text\",\"text\":\"\"}"),
            Open::Thinking => out
                .extend_from_slice(b"{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}"),
            Open::Tool { openai_index } => {
                let (id, name) = tool.unwrap_or((None, b"\"\""));
                out.extend_from_slice(b"{\"type\":\"tool_use\",\"id\":");
                match id {
                    Some(id) => out.extend_from_slice(id),
                    None => {
                        out.extend_from_slice(b"\"toolu_tierflow_");
                        write_u64(out, u64::from(openai_index));
                        out.push(b'"');
                    }
                }
                out.extend_from_slice(b",\"name\":");
                out.extend_from_slice(name);
                out.extend_from_slice(b",\"input\":{}}");
                self.tools_seen.push(openai_index);
            }
            Open::None => {}
        }
        out.extend_from_slice(b"}\n\n");
        self.open = want;
        self.next_block += 1;
        Ok(())
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if self.open == Open::None {
            return;
        }
        out.extend_from_slice(
            b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":",
        );
        write_u64(out, u64::from(self.next_block - 1));
        out.extend_from_slice(b"}\n\n");
        self.open = Open::None;
    }

    fn write_delta(&self, out: &mut Vec<u8>, kind: &[u8], field: &[u8], lit: &[u8]) {
        out.extend_from_slice(
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":",
        );
        write_u64(out, u64::from(self.next_block - 1));
        out.extend_from_slice(b",\"delta\":{\"type\":\"");
        out.extend_from_slice(kind);
        out.extend_from_slice(b"\",\"");
        out.extend_from_slice(field);
        out.extend_from_slice(b"\":");
        out.extend_from_slice(lit);
        out.extend_from_slice(b"}}\n\n");
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        if self.phase == Phase::Fresh {
            self.start(out, None);
        }
        self.close_block(out);
        let u = self.usage.unwrap_or_default();
        let cached = u.cached().min(u.prompt_tokens);
        out.extend_from_slice(
            b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":",
        );
        write_json_str(out, self.stop_reason.unwrap_or("end_turn"));
        out.extend_from_slice(b",\"stop_sequence\":null},\"usage\":{\"input_tokens\":");
        write_u64(
            out,
            if self.usage.is_some() {
                u.prompt_tokens - cached
            } else {
                u64::from(self.input_tokens_hint)
            },
        );
        out.extend_from_slice(b",\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":");
        write_u64(out, cached);
        out.extend_from_slice(b",\"output_tokens\":");
        write_u64(out, u.completion_tokens);
        out.extend_from_slice(b"}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        self.phase = Phase::Done;
    }

    fn write_error(&mut self, out: &mut Vec<u8>, kind: &str, message: &str) {
        out.extend_from_slice(b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":");
        write_json_str(out, kind);
        out.extend_from_slice(b",\"message\":");
        write_json_str(out, message);
        out.extend_from_slice(b"}}\n\n");
        self.phase = Phase::Done;
    }
}

/// Keeps an upstream error type when it is one of Anthropic's, else `api_error`.
fn known_error_type(kind: &str) -> &str {
    match kind {
        "invalid_request_error"
        | "authentication_error"
        | "permission_error"
        | "not_found_error"
        | "request_too_large"
        | "rate_limit_error"
        | "api_error"
        | "overloaded_error" => kind,
        "rate_limit_exceeded" | "insufficient_quota" => anthropic_error_type(429),
        _ => "api_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&str]) -> (String, Vec<Result<(), TranslateError>>) {
        let mut s = ChatToMessagesStream::new("claude-x", Some("msg_1"), 5);
        let mut out = Vec::new();
        let r = chunks
            .iter()
            .map(|c| s.on_data(c.as_bytes(), &mut out))
            .collect();
        s.finish(&mut out);
        (String::from_utf8(out).unwrap(), r)
    }

    #[test]
    fn text_then_done() {
        let (t, _) = run(&[
            r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
            r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{"content":"Hi\n"},"finish_reason":null}]}"#,
            r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            r#"{"id":"chatcmpl-1","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}"#,
            "[DONE]",
        ]);
        assert!(t.starts_with("event: message_start\n"));
        assert!(t.contains(r#""delta":{"type":"text_delta","text":"Hi\n"}"#));
        assert!(t.contains(r#""stop_reason":"end_turn""#));
        assert!(t.contains(r#""input_tokens":9,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":2"#));
        assert!(t.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
        assert_eq!(t.matches("message_stop").count(), 2); // event name + type, once
    }

    #[test]
    fn reopening_a_closed_tool_is_an_error() {
        let (t, r) = run(&[
            r#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"f","arguments":""}}]}}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"g","arguments":""}}]}}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]}}]}"#,
        ]);
        assert!(r[2].is_err());
        assert!(t.ends_with("}}\n\n") && t.contains("event: error"));
        assert_eq!(t.matches("event: error").count(), 1);
    }

    #[test]
    fn truncated_stream_is_error_but_finish_reason_without_done_is_fine() {
        let (t, _) = run(&[r#"{"id":"c","choices":[{"index":0,"delta":{"content":"a"}}]}"#]);
        assert!(t.contains("event: error"));
        let (t, _) = run(&[
            r#"{"id":"c","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"length"}]}"#,
        ]);
        assert!(
            t.contains(r#""stop_reason":"max_tokens""#)
                && t.ends_with("{\"type\":\"message_stop\"}\n\n")
        );
    }

    #[test]
    fn upstream_error_object() {
        let (t, r) = run(&[
            r#"{"error":{"message":"Rate limit reached","type":"rate_limit_exceeded","code":"rate_limit_exceeded"}}"#,
        ]);
        assert!(r[0].is_ok());
        assert_eq!(t, "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":\"Rate limit reached\"}}\n\n");
    }
}
