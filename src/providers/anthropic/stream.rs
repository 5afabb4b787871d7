//! Streamed Anthropic Messages events -> OpenAI `chat.completion.chunk` SSE events (outbound
//! direction). One instance per response; the gateway's SSE reader hands over complete events.
//! Per event nothing is allocated beyond growth of `out`: event data is parsed into borrowed
//! structs and text/argument strings are copied as raw JSON literals, escapes untouched.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::response::{ChatUsage, ErrorIn, RawUsage, UsageIn};
use super::{finish_reason_from_stop, write_json_str, write_u64, TranslateError, Usage};

/// What every chunk repeats. `id: None` means `chatcmpl-` + the Anthropic message id from
/// `message_start`.
#[derive(Debug, Clone, Copy)]
pub struct ChunkMeta<'a> {
    pub id: Option<&'a str>,
    pub model: &'a str,
    pub created_s: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    Text,
    Thinking,
    Tool { tool_index: u32, args_sent: bool },
    Ignored,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before `message_start`.
    Fresh,
    Streaming,
    /// `message_stop` seen; `finish` ends the stream normally.
    Stopped,
    /// `[DONE]` written (after an error, or by `finish`); everything after is ignored.
    Done,
}

/// Translates one Anthropic Messages SSE stream into OpenAI chunks.
///
/// Tool calls are indexed per `tool_use` block (0, 1, ...) whatever their content-block index,
/// `input_json_delta` fragments are forwarded as `arguments` as they arrive, and a tool whose
/// input had no fragments gets `"{}"` so the client always accumulates valid JSON. Thinking goes
/// out as `reasoning_content`; `signature_delta`, `ping` and unknown events produce nothing.
pub struct MessagesToChatStream {
    /// `{"id":"…","object":"chat.completion.chunk","created":N,"model":"…"` — built once.
    prefix: Vec<u8>,
    model: Vec<u8>,
    created_s: u64,
    include_usage: bool,
    phase: Phase,
    /// Indexed by Anthropic content-block index.
    blocks: Vec<BlockKind>,
    tool_count: u32,
    raw_usage: RawUsage,
    saw_usage: bool,
}

#[derive(Deserialize)]
struct EventIn<'a> {
    #[serde(borrow, default)]
    r#type: Option<&'a str>,
    #[serde(default)]
    index: Option<usize>,
    #[serde(borrow, default)]
    message: Option<MessageStartIn<'a>>,
    #[serde(borrow, default)]
    content_block: Option<BlockStartIn<'a>>,
    #[serde(borrow, default)]
    delta: Option<DeltaIn<'a>>,
    #[serde(default)]
    usage: Option<UsageIn>,
    #[serde(borrow, default)]
    error: Option<ErrorIn<'a>>,
}

#[derive(Deserialize)]
struct MessageStartIn<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(default)]
    usage: Option<UsageIn>,
}

#[derive(Deserialize)]
struct BlockStartIn<'a> {
    #[serde(borrow)]
    r#type: &'a str,
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
    #[serde(borrow, default)]
    thinking: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct DeltaIn<'a> {
    #[serde(borrow, default)]
    r#type: Option<&'a str>,
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
    #[serde(borrow, default)]
    partial_json: Option<&'a RawValue>,
    #[serde(borrow, default)]
    thinking: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stop_reason: Option<&'a str>,
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

impl MessagesToChatStream {
    /// `include_usage` mirrors the client's `stream_options.include_usage`: a final chunk with
    /// empty `choices` and the usage is written by [`finish`](Self::finish).
    pub fn new(meta: ChunkMeta<'_>, include_usage: bool) -> Self {
        let mut model = Vec::with_capacity(meta.model.len() + 2);
        write_json_str(&mut model, meta.model);
        let mut s = MessagesToChatStream {
            prefix: Vec::new(),
            model,
            created_s: meta.created_s,
            include_usage,
            phase: Phase::Fresh,
            blocks: Vec::with_capacity(8),
            tool_count: 0,
            raw_usage: RawUsage::default(),
            saw_usage: false,
        };
        if let Some(id) = meta.id {
            let mut lit = Vec::with_capacity(id.len() + 2);
            write_json_str(&mut lit, id);
            s.build_prefix(&lit, b"");
        }
        s
    }

    /// `id_lit` is a JSON string literal; `id_prefix` goes right after its opening quote.
    fn build_prefix(&mut self, id_lit: &[u8], id_prefix: &[u8]) {
        let mut p = Vec::with_capacity(96 + id_lit.len() + self.model.len());
        p.extend_from_slice(b"{\"id\":\"");
        p.extend_from_slice(id_prefix);
        p.extend_from_slice(id_lit.get(1..).unwrap_or(b"\""));
        p.extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
        write_u64(&mut p, self.created_s);
        p.extend_from_slice(b",\"model\":");
        p.extend_from_slice(&self.model);
        self.prefix = p;
    }

    /// Token usage seen so far (`None` before `message_start` carried any).
    pub fn usage(&self) -> Option<Usage> {
        self.saw_usage.then(|| self.raw_usage.to_usage())
    }

    /// True once `[DONE]` has been written.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Translates one upstream event (`event_name` may be empty: the data's `type` is used) and
    /// appends zero or more complete `data: …\n\n` events to `out`.
    ///
    /// On `Err` the stream is over: `out` already ends with an OpenAI error event and
    /// `data: [DONE]`; forward it, then close. Events after the end are ignored.
    pub fn on_event(
        &mut self,
        event_name: &str,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), TranslateError> {
        if self.phase == Phase::Done {
            return Ok(());
        }
        let start = out.len();
        match self.translate(event_name, data, out) {
            Ok(()) => Ok(()),
            Err(e) => {
                // Never leave half an event behind.
                out.truncate(start);
                let msg: &str = match &e {
                    TranslateError::Protocol { reason } => reason,
                    _ => "upstream sent a malformed stream event",
                };
                self.write_error(out, "api_error", msg);
                Err(e)
            }
        }
    }

    fn translate(
        &mut self,
        event_name: &str,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), TranslateError> {
        if event_name == "ping" {
            return Ok(());
        }
        let ev: EventIn<'_> =
            serde_json::from_slice(data).map_err(|source| TranslateError::UpstreamEvent {
                event: static_name(event_name),
                source,
            })?;
        let name = if event_name.is_empty() {
            ev.r#type.unwrap_or("")
        } else {
            event_name
        };
        if name != "message_start"
            && name != "error"
            && name != "ping"
            && self.phase == Phase::Fresh
        {
            return Err(TranslateError::Protocol {
                reason: "event before message_start",
            });
        }
        match name {
            "message_start" => {
                if self.phase != Phase::Fresh {
                    return Err(TranslateError::Protocol {
                        reason: "second message_start",
                    });
                }
                let m = ev.message.ok_or(TranslateError::Protocol {
                    reason: "message_start without message",
                })?;
                if self.prefix.is_empty() {
                    let id = m.id.map_or("\"unknown\"", |r| r.get());
                    if !id.starts_with('"') {
                        return Err(TranslateError::Protocol {
                            reason: "message id is not a string",
                        });
                    }
                    self.build_prefix(id.as_bytes(), b"chatcmpl-");
                }
                if let Some(u) = m.usage {
                    u.apply(&mut self.raw_usage);
                    self.saw_usage = true;
                }
                self.phase = Phase::Streaming;
                self.open_chunk(out);
                out.extend_from_slice(b"{\"role\":\"assistant\",\"content\":\"\"}");
                self.close_chunk(out, None);
            }
            "content_block_start" => {
                let idx = ev.index.ok_or(TranslateError::Protocol {
                    reason: "content_block_start without index",
                })?;
                let cb = ev.content_block.ok_or(TranslateError::Protocol {
                    reason: "content_block_start without content_block",
                })?;
                let kind = match cb.r#type {
                    "text" => {
                        if let Some(t) = nonempty_str(cb.text)? {
                            self.delta_field(out, b"content", t);
                        }
                        BlockKind::Text
                    }
                    "thinking" => {
                        if let Some(t) = nonempty_str(cb.thinking)? {
                            self.delta_field(out, b"reasoning_content", t);
                        }
                        BlockKind::Thinking
                    }
                    "tool_use" => {
                        let id = nonempty_str(cb.id)?.ok_or(TranslateError::Protocol {
                            reason: "tool_use without id",
                        })?;
                        let name = nonempty_str(cb.name)?.ok_or(TranslateError::Protocol {
                            reason: "tool_use without name",
                        })?;
                        let tool_index = self.tool_count;
                        self.tool_count += 1;
                        self.open_chunk(out);
                        out.extend_from_slice(b"{\"tool_calls\":[{\"index\":");
                        write_u64(out, u64::from(tool_index));
                        out.extend_from_slice(b",\"id\":");
                        out.extend_from_slice(id);
                        out.extend_from_slice(b",\"type\":\"function\",\"function\":{\"name\":");
                        out.extend_from_slice(name);
                        out.extend_from_slice(b",\"arguments\":\"\"}}]}");
                        self.close_chunk(out, None);
                        // Input is normally `{}` here and streamed as deltas; a complete input
                        // (no deltas will follow) is sent whole.
                        let mut args_sent = false;
                        if let Some(input) = cb.input {
                            let raw = input.get().trim();
                            if raw != "{}" && !raw.is_empty() {
                                self.tool_args(out, tool_index, None, Some(raw));
                                args_sent = true;
                            }
                        }
                        BlockKind::Tool {
                            tool_index,
                            args_sent,
                        }
                    }
                    _ => BlockKind::Ignored,
                };
                if idx >= self.blocks.len() {
                    if idx > self.blocks.len() + 64 {
                        return Err(TranslateError::Protocol {
                            reason: "content block index out of range",
                        });
                    }
                    self.blocks.resize(idx + 1, BlockKind::Ignored);
                }
                self.blocks[idx] = kind;
            }
            "content_block_delta" => {
                let idx = ev.index.ok_or(TranslateError::Protocol {
                    reason: "content_block_delta without index",
                })?;
                let kind = *self.blocks.get(idx).ok_or(TranslateError::Protocol {
                    reason: "delta for a block never started",
                })?;
                let d = ev.delta.ok_or(TranslateError::Protocol {
                    reason: "content_block_delta without delta",
                })?;
                match (d.r#type.unwrap_or(""), kind) {
                    ("text_delta", BlockKind::Text) => {
                        if let Some(t) = nonempty_str(d.text)? {
                            self.delta_field(out, b"content", t);
                        }
                    }
                    ("thinking_delta", BlockKind::Thinking) => {
                        if let Some(t) = nonempty_str(d.thinking)? {
                            self.delta_field(out, b"reasoning_content", t);
                        }
                    }
                    ("input_json_delta", BlockKind::Tool { tool_index, .. }) => {
                        if let Some(p) = nonempty_str(d.partial_json)? {
                            self.tool_args(out, tool_index, Some(p), None);
                            self.blocks[idx] = BlockKind::Tool {
                                tool_index,
                                args_sent: true,
                            };
                        }
                    }
                    ("text_delta" | "thinking_delta" | "input_json_delta", BlockKind::Ignored) => {}
                    ("text_delta" | "thinking_delta" | "input_json_delta", _) => {
                        return Err(TranslateError::Protocol {
                            reason: "delta type does not match its block",
                        })
                    }
                    _ => {} // signature_delta, citations_delta, future delta types
                }
            }
            "content_block_stop" => {
                let idx = ev.index.ok_or(TranslateError::Protocol {
                    reason: "content_block_stop without index",
                })?;
                if let Some(BlockKind::Tool {
                    tool_index,
                    args_sent: false,
                }) = self.blocks.get(idx).copied()
                {
                    self.tool_args(out, tool_index, Some(b"\"{}\""), None);
                    self.blocks[idx] = BlockKind::Tool {
                        tool_index,
                        args_sent: true,
                    };
                }
            }
            "message_delta" => {
                if let Some(u) = ev.usage {
                    u.apply(&mut self.raw_usage);
                    self.saw_usage = true;
                }
                if let Some(reason) = ev.delta.and_then(|d| d.stop_reason) {
                    self.open_chunk(out);
                    out.extend_from_slice(b"{}");
                    self.close_chunk(out, Some(finish_reason_from_stop(reason)));
                }
            }
            "message_stop" => self.phase = Phase::Stopped,
            "error" => {
                let e = ev.error.ok_or(TranslateError::Protocol {
                    reason: "error event without error",
                })?;
                let kind = if e.r#type.is_empty() {
                    "api_error"
                } else {
                    &e.r#type
                };
                self.write_error(out, kind, &e.message);
            }
            _ => {} // ping and event types added later: ignore, as Anthropic asks
        }
        Ok(())
    }

    /// Ends the stream: the usage chunk (if asked for) then `data: [DONE]`, exactly once. A
    /// stream that ended before `message_stop` (and without an error event) ends with an error
    /// event instead, so a truncated upstream never looks like a complete answer.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.finish_with(None, out)
    }

    /// Like [`finish`](Self::finish); `extra` is a raw JSON object written as `"tierflow":{…}` into
    /// the last chunk before `[DONE]` (the usage chunk, or an empty-choices chunk).
    pub fn finish_with(&mut self, extra: Option<&[u8]>, out: &mut Vec<u8>) {
        match self.phase {
            Phase::Done => {}
            Phase::Fresh | Phase::Streaming => self.write_error(
                out,
                "api_error",
                "upstream stream ended before message_stop",
            ),
            Phase::Stopped => {
                if self.include_usage || extra.is_some() {
                    out.extend_from_slice(b"data: ");
                    out.extend_from_slice(&self.prefix);
                    out.extend_from_slice(b",\"choices\":[]");
                    if self.include_usage {
                        out.extend_from_slice(b",\"usage\":");
                        let u: ChatUsage = self.raw_usage.to_usage().into();
                        let _ = serde_json::to_writer(&mut *out, &u);
                    }
                    if let Some(x) = extra {
                        out.extend_from_slice(b",\"tierflow\":");
                        out.extend_from_slice(x);
                    }
                    out.extend_from_slice(b"}\n\n");
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
                self.phase = Phase::Done;
            }
        }
    }

    /// Writes a terminal OpenAI error event and `[DONE]`.
    fn write_error(&mut self, out: &mut Vec<u8>, kind: &str, message: &str) {
        out.extend_from_slice(b"data: {\"error\":{\"message\":");
        write_json_str(out, message);
        out.extend_from_slice(b",\"type\":");
        write_json_str(out, kind);
        out.extend_from_slice(b",\"param\":null,\"code\":");
        write_json_str(out, kind);
        out.extend_from_slice(b"}}\n\ndata: [DONE]\n\n");
        self.phase = Phase::Done;
    }

    fn open_chunk(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(b",\"choices\":[{\"index\":0,\"delta\":");
    }

    fn close_chunk(&self, out: &mut Vec<u8>, finish_reason: Option<&str>) {
        out.extend_from_slice(b",\"logprobs\":null,\"finish_reason\":");
        match finish_reason {
            Some(f) => write_json_str(out, f),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b"}]}\n\n");
    }

    /// A delta with one string field; `lit` is a JSON string literal.
    fn delta_field(&self, out: &mut Vec<u8>, field: &[u8], lit: &[u8]) {
        self.open_chunk(out);
        out.extend_from_slice(b"{\"");
        out.extend_from_slice(field);
        out.extend_from_slice(b"\":");
        out.extend_from_slice(lit);
        out.push(b'}');
        self.close_chunk(out, None);
    }

    /// A tool-call arguments delta: either a JSON string literal, or raw JSON text to encode.
    fn tool_args(
        &self,
        out: &mut Vec<u8>,
        tool_index: u32,
        lit: Option<&[u8]>,
        raw_json: Option<&str>,
    ) {
        self.open_chunk(out);
        out.extend_from_slice(b"{\"tool_calls\":[{\"index\":");
        write_u64(out, u64::from(tool_index));
        out.extend_from_slice(b",\"function\":{\"arguments\":");
        if let Some(l) = lit {
            out.extend_from_slice(l);
        } else if let Some(r) = raw_json {
            write_json_str(out, r);
        }
        out.extend_from_slice(b"}}]}");
        self.close_chunk(out, None);
    }
}

fn static_name(name: &str) -> &'static str {
    match name {
        "message_start" => "message_start",
        "content_block_start" => "content_block_start",
        "content_block_delta" => "content_block_delta",
        "content_block_stop" => "content_block_stop",
        "message_delta" => "message_delta",
        "message_stop" => "message_stop",
        "error" => "error",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> ChunkMeta<'static> {
        ChunkMeta {
            id: Some("chatcmpl-1"),
            model: "auto",
            created_s: 1,
        }
    }

    const START: &[u8] = br#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":7,"cache_read_input_tokens":3,"output_tokens":1}}}"#;

    fn datas(out: &[u8]) -> Vec<serde_json::Value> {
        std::str::from_utf8(out)
            .unwrap()
            .split("\n\n")
            .filter(|s| !s.is_empty() && *s != "data: [DONE]")
            .map(|s| serde_json::from_str(s.strip_prefix("data: ").unwrap()).unwrap())
            .collect()
    }

    #[test]
    fn event_before_start_is_terminal_error() {
        let mut s = MessagesToChatStream::new(meta(), false);
        let mut out = Vec::new();
        let e = s.on_event(
            "content_block_stop",
            br#"{"type":"content_block_stop","index":0}"#,
            &mut out,
        );
        assert!(e.is_err());
        assert!(out.ends_with(b"data: [DONE]\n\n"));
        assert!(s.is_done());
        let n = out.len();
        s.finish(&mut out);
        assert_eq!(out.len(), n, "[DONE] exactly once");
    }

    #[test]
    fn tool_without_deltas_gets_empty_object_args() {
        let mut s = MessagesToChatStream::new(meta(), true);
        let mut out = Vec::new();
        s.on_event("message_start", START, &mut out).unwrap();
        s.on_event("content_block_start", br#"{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_1","name":"now","input":{}}}"#, &mut out).unwrap();
        s.on_event(
            "content_block_stop",
            br#"{"type":"content_block_stop","index":0}"#,
            &mut out,
        )
        .unwrap();
        let d = datas(&out);
        assert_eq!(
            d.last().unwrap()["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
            "{}"
        );
        assert_eq!(
            s.usage(),
            Some(Usage {
                prompt_tokens: 10,
                completion_tokens: 1,
                cache_read: 3,
                cache_write: 0
            })
        );
    }

    #[test]
    fn complete_input_in_block_start_is_sent_whole() {
        let mut s = MessagesToChatStream::new(meta(), false);
        let mut out = Vec::new();
        s.on_event("", START, &mut out).unwrap();
        s.on_event("", br#"{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_1","name":"f","input":{"a":"x\"y"}}}"#, &mut out).unwrap();
        s.on_event("", br#"{"type":"content_block_stop","index":0}"#, &mut out)
            .unwrap();
        let d = datas(&out);
        assert_eq!(d.len(), 3);
        assert_eq!(
            d[2]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
            r#"{"a":"x\"y"}"#
        );
    }

    #[test]
    fn truncated_stream_ends_with_error() {
        let mut s = MessagesToChatStream::new(meta(), true);
        let mut out = Vec::new();
        s.on_event("message_start", START, &mut out).unwrap();
        s.finish(&mut out);
        let t = String::from_utf8(out).unwrap();
        assert!(t.contains("ended before message_stop"));
        assert!(t.ends_with("data: [DONE]\n\n"));
        assert_eq!(t.matches("[DONE]").count(), 1);
    }

    #[test]
    fn malformed_json_is_terminal_error() {
        let mut s = MessagesToChatStream::new(meta(), false);
        let mut out = Vec::new();
        assert!(s.on_event("message_start", b"{not json", &mut out).is_err());
        assert!(out.starts_with(b"data: {\"error\":"));
    }

    #[test]
    fn finish_with_extra_and_id_from_message() {
        let mut s = MessagesToChatStream::new(
            ChunkMeta {
                id: None,
                model: "m\"x",
                created_s: 9,
            },
            false,
        );
        let mut out = Vec::new();
        s.on_event("message_start", START, &mut out).unwrap();
        s.on_event("message_stop", br#"{"type":"message_stop"}"#, &mut out)
            .unwrap();
        s.finish_with(Some(br#"{"tier":2}"#), &mut out);
        let d = datas(&out);
        assert_eq!(d[0]["id"], "chatcmpl-msg_1");
        assert_eq!(d[0]["model"], "m\"x");
        assert_eq!(d[1]["tierflow"]["tier"], 2);
        assert!(d[1].get("usage").is_none());
    }
}
