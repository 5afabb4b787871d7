//! Anthropic Messages dialect: pure, I/O-free translation between OpenAI Chat Completions and the
//! Anthropic Messages API, in both directions, buffered and streamed. Framing of upstream bytes into
//! SSE events, HTTP and routing stay with the gateway (`http/`, `pipeline/`).
//!
//! Directions:
//! - outbound (OpenAI client -> Anthropic upstream): [`chat_to_messages_request`],
//!   [`messages_response_to_chat`], [`MessagesToChatStream`], [`anthropic_error_to_chat`];
//! - inbound (Anthropic client -> any OpenAI-shaped upstream): [`messages_request_to_chat`],
//!   [`chat_response_to_messages`], [`ChatToMessagesStream`], [`error_body_anthropic`],
//!   [`count_tokens_local`].
//!
//! Anthropic's extended thinking is surfaced to OpenAI clients as `reasoning_content` (the field
//! DeepSeek, vLLM and LiteLLM use), both in `choices[0].message` and in stream deltas; OpenAI-side
//! `reasoning_content` (or `reasoning`) becomes a `thinking` block for Anthropic clients.

#[doc(hidden)]
pub mod fuzzing;
mod inbound;
mod inbound_stream;
pub mod mock;
mod request;
mod response;
mod sse;
mod stream;

pub use inbound::{
    chat_response_to_messages, count_tokens_local, error_body_anthropic, messages_request_to_chat,
    InboundInfo,
};
pub use inbound_stream::ChatToMessagesStream;
pub use request::{chat_to_messages_request, RequestOptions};
pub use response::{anthropic_error_to_chat, messages_response_to_chat};
pub use sse::parse_sse_event;
pub use stream::{ChunkMeta, MessagesToChatStream};

#[cfg(test)]
mod golden;

/// Why a body or event could not be translated. `field` is a JSON path into the offending input
/// (`messages[2].content[1].type`), suitable for the `param` of an OpenAI 400 error.
#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    /// The body is not JSON at all (or not UTF-8 JSON).
    #[error("body is not valid JSON: {source}")]
    InvalidJson {
        #[source]
        source: serde_json::Error,
    },
    /// A required field is absent or null.
    #[error("`{field}` is required")]
    Missing { field: String },
    /// A field has the wrong JSON type.
    #[error("`{field}` must be {expected}")]
    WrongType {
        field: String,
        expected: &'static str,
    },
    /// A value is well-formed but has no equivalent in the target dialect.
    #[error("`{field}`: unsupported value `{value}`")]
    Unsupported { field: String, value: String },
    /// A value is well-typed but invalid for a stated reason.
    #[error("`{field}`: {reason}")]
    Invalid { field: String, reason: &'static str },
    /// An upstream stream event's data does not match the dialect's schema.
    #[error("upstream `{event}` event is malformed: {source}")]
    UpstreamEvent {
        event: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// Events arrived in an order the dialect forbids (e.g. a delta for a block never started).
    #[error("upstream stream protocol violation: {reason}")]
    Protocol { reason: &'static str },
}

impl TranslateError {
    /// The JSON path of the offending field, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            TranslateError::Missing { field }
            | TranslateError::WrongType { field, .. }
            | TranslateError::Unsupported { field, .. }
            | TranslateError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }

    /// True when the error comes from the downstream request (400), false when the upstream sent
    /// something we cannot translate (502).
    pub fn is_downstream(&self) -> bool {
        !matches!(
            self,
            TranslateError::UpstreamEvent { .. } | TranslateError::Protocol { .. }
        )
    }
}

/// Token accounting of one exchange, in the gateway's terms. `prompt_tokens` already includes the
/// cached prompt tokens (`cache_read` + `cache_write`), as OpenAI counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// Anthropic `cache_read_input_tokens` (OpenAI `prompt_tokens_details.cached_tokens`).
    pub cache_read: u32,
    /// Anthropic `cache_creation_input_tokens`.
    pub cache_write: u32,
}

/// Anthropic `stop_reason` -> OpenAI `finish_reason`. `pause_turn` (a server tool paused a long
/// turn) ends the OpenAI turn as `stop`: the client may resend to continue. Unknown reasons map to
/// `stop` rather than failing a response that already has content.
pub(crate) fn finish_reason_from_stop(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop", // end_turn, stop_sequence, pause_turn
    }
}

/// OpenAI `finish_reason` -> Anthropic `stop_reason`.
pub(crate) fn stop_reason_from_finish(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// Appends `s` as a JSON string literal (quotes included).
pub(crate) fn write_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends a decimal integer without going through `fmt` machinery.
pub(crate) fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Serializes a `Value` we built ourselves; serde_json cannot fail on a `Value`.
pub(crate) fn to_vec(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_str_escapes_like_serde() {
        for s in ["", "plain", "q\"b\\s", "nl\n\r\t", "\u{1}\u{1f}x", "é😀"] {
            let mut out = Vec::new();
            write_json_str(&mut out, s);
            assert_eq!(out, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn u64_digits() {
        for n in [0u64, 7, 10, 1234567890, u64::MAX] {
            let mut out = Vec::new();
            write_u64(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }

    #[test]
    fn reasons_map_both_ways() {
        assert_eq!(finish_reason_from_stop("end_turn"), "stop");
        assert_eq!(finish_reason_from_stop("stop_sequence"), "stop");
        assert_eq!(finish_reason_from_stop("max_tokens"), "length");
        assert_eq!(finish_reason_from_stop("tool_use"), "tool_calls");
        assert_eq!(finish_reason_from_stop("refusal"), "content_filter");
        assert_eq!(finish_reason_from_stop("pause_turn"), "stop");
        assert_eq!(stop_reason_from_finish("length"), "max_tokens");
        assert_eq!(stop_reason_from_finish("tool_calls"), "tool_use");
        assert_eq!(stop_reason_from_finish("content_filter"), "refusal");
        assert_eq!(stop_reason_from_finish("stop"), "end_turn");
    }
}
