//! Anthropic Messages response (non-streamed) and error bodies -> OpenAI chat.completion and OpenAI
//! error bodies (outbound direction). Also the Anthropic usage -> OpenAI usage mapping shared with
//! the stream translator.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{finish_reason_from_stop, TranslateError, Usage};

/// Anthropic `usage` as sent in responses, `message_start` and `message_delta` (fields may be
/// absent or null).
#[derive(Debug, Default, Clone, Copy, Deserialize)]
pub(crate) struct UsageIn {
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
}

fn sat32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl UsageIn {
    /// Folds these (possibly partial) numbers into `u`: present fields replace, absent ones keep.
    pub(crate) fn apply(&self, raw: &mut RawUsage) {
        if let Some(n) = self.input_tokens {
            raw.input = n;
        }
        if let Some(n) = self.output_tokens {
            raw.output = n;
        }
        if let Some(n) = self.cache_creation_input_tokens {
            raw.cache_write = n;
        }
        if let Some(n) = self.cache_read_input_tokens {
            raw.cache_read = n;
        }
    }
}

/// Anthropic's counts as sent: `input` excludes cached tokens.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RawUsage {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
}

impl RawUsage {
    pub(crate) fn to_usage(self) -> Usage {
        Usage {
            prompt_tokens: sat32(
                self.input
                    .saturating_add(self.cache_read)
                    .saturating_add(self.cache_write),
            ),
            completion_tokens: sat32(self.output),
            cache_read: sat32(self.cache_read),
            cache_write: sat32(self.cache_write),
        }
    }
}

/// OpenAI usage object. `prompt_tokens` includes cache reads and writes; the Anthropic cache
/// numbers are kept both in `prompt_tokens_details` (`cached_tokens` is OpenAI's name for reads,
/// `cache_creation_tokens` is ours for writes) and at top level under Anthropic's names, as
/// LiteLLM-style clients read them.
#[derive(Debug, Serialize)]
pub(crate) struct ChatUsage {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
    prompt_tokens_details: PromptDetails,
    cache_read_input_tokens: u32,
    cache_creation_input_tokens: u32,
}

#[derive(Debug, Serialize)]
struct PromptDetails {
    cached_tokens: u32,
    cache_creation_tokens: u32,
}

impl From<Usage> for ChatUsage {
    fn from(u: Usage) -> Self {
        ChatUsage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.prompt_tokens.saturating_add(u.completion_tokens),
            prompt_tokens_details: PromptDetails {
                cached_tokens: u.cache_read,
                cache_creation_tokens: u.cache_write,
            },
            cache_read_input_tokens: u.cache_read,
            cache_creation_input_tokens: u.cache_write,
        }
    }
}

#[derive(Deserialize)]
struct MessageIn<'a> {
    #[serde(borrow, default)]
    r#type: Option<&'a str>,
    #[serde(borrow, default)]
    id: Cow<'a, str>,
    #[serde(borrow, default)]
    content: Vec<BlockIn<'a>>,
    #[serde(borrow, default)]
    stop_reason: Option<&'a str>,
    #[serde(default)]
    usage: UsageIn,
}

#[derive(Deserialize)]
struct BlockIn<'a> {
    #[serde(borrow)]
    r#type: Cow<'a, str>,
    #[serde(borrow, default)]
    text: Cow<'a, str>,
    #[serde(borrow, default)]
    thinking: Cow<'a, str>,
    #[serde(borrow, default)]
    id: Cow<'a, str>,
    #[serde(borrow, default)]
    name: Cow<'a, str>,
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
}

#[derive(Serialize)]
struct ChatCompletion<'a> {
    id: String,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    usage: ChatUsage,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: ChatMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct ChatMessage<'a> {
    role: &'static str,
    content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCall<'a>>,
    refusal: Option<()>,
}

#[derive(Serialize)]
struct ToolCall<'a> {
    id: &'a str,
    r#type: &'static str,
    function: Function<'a>,
}

#[derive(Serialize)]
struct Function<'a> {
    name: &'a str,
    arguments: &'a str,
}

pub(crate) fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Translates a non-streamed Anthropic Messages response into an OpenAI `chat.completion` whose
/// `model` is `requested_model`. Text blocks are concatenated into `content` (null when there is
/// none), `thinking` blocks into `reasoning_content`, `tool_use` blocks become `tool_calls` keeping
/// Anthropic's `toolu_` ids; other blocks (redacted thinking, server tool results) are dropped.
/// The id is `chatcmpl-` + the Anthropic message id. `Err` means the upstream body is not a
/// Messages response (a 502 for the client).
pub fn messages_response_to_chat(
    body: &[u8],
    requested_model: &str,
) -> Result<Vec<u8>, TranslateError> {
    let msg: MessageIn<'_> =
        serde_json::from_slice(body).map_err(|source| TranslateError::UpstreamEvent {
            event: "message",
            source,
        })?;
    if msg.r#type.is_some_and(|t| t != "message") {
        return Err(TranslateError::Protocol {
            reason: "response body is not a message",
        });
    }
    let mut text: Option<String> = None;
    let mut thinking: Option<String> = None;
    let mut tool_calls = Vec::new();
    for b in &msg.content {
        match &*b.r#type {
            "text" => text.get_or_insert_with(String::new).push_str(&b.text),
            "thinking" => thinking
                .get_or_insert_with(String::new)
                .push_str(&b.thinking),
            "tool_use" => tool_calls.push(ToolCall {
                id: &b.id,
                r#type: "function",
                function: Function {
                    name: &b.name,
                    arguments: b.input.map_or("{}", |r| r.get()),
                },
            }),
            _ => {}
        }
    }
    let mut raw = RawUsage::default();
    msg.usage.apply(&mut raw);
    let out = ChatCompletion {
        id: format!("chatcmpl-{}", msg.id),
        object: "chat.completion",
        created: now_s(),
        model: requested_model,
        choices: [Choice {
            index: 0,
            message: ChatMessage {
                role: "assistant",
                content: text,
                reasoning_content: thinking,
                tool_calls,
                refusal: None,
            },
            logprobs: None,
            finish_reason: finish_reason_from_stop(msg.stop_reason.unwrap_or("end_turn")),
        }],
        usage: raw.to_usage().into(),
    };
    Ok(serde_json::to_vec(&out).unwrap_or_default())
}

#[derive(Deserialize)]
struct ErrorEnvelopeIn<'a> {
    #[serde(borrow)]
    error: ErrorIn<'a>,
}

#[derive(Deserialize)]
pub(crate) struct ErrorIn<'a> {
    #[serde(borrow, default)]
    pub r#type: Cow<'a, str>,
    #[serde(borrow, default)]
    pub message: Cow<'a, str>,
}

#[derive(Serialize)]
pub(crate) struct OpenAiError<'a> {
    pub error: OpenAiErrorBody<'a>,
}

#[derive(Serialize)]
pub(crate) struct OpenAiErrorBody<'a> {
    pub message: &'a str,
    pub r#type: &'a str,
    pub param: Option<&'a str>,
    pub code: Option<&'a str>,
}

/// Translates an Anthropic error response body (`{"type":"error","error":{"type","message"}}`)
/// with HTTP `status` into the OpenAI error schema, keeping Anthropic's error type as `type` and
/// `code`. A body that is not Anthropic's error shape yields a generic message naming the status
/// (the body itself is not echoed: it may carry anything).
pub fn anthropic_error_to_chat(status: u16, body: &[u8]) -> Vec<u8> {
    let parsed: Option<ErrorEnvelopeIn<'_>> = serde_json::from_slice(body).ok();
    let fallback;
    let (kind, message) = match &parsed {
        Some(e) if !e.error.message.is_empty() => (&*e.error.r#type, &*e.error.message),
        _ => {
            fallback = format!("upstream returned HTTP {status}");
            ("api_error", fallback.as_str())
        }
    };
    let kind = if kind.is_empty() { "api_error" } else { kind };
    let out = OpenAiError {
        error: OpenAiErrorBody {
            message,
            r#type: kind,
            param: None,
            code: Some(kind),
        },
    };
    serde_json::to_vec(&out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn tr(v: Value) -> Value {
        let b = messages_response_to_chat(&serde_json::to_vec(&v).unwrap(), "auto").unwrap();
        serde_json::from_slice(&b).unwrap()
    }

    #[test]
    fn usage_includes_cache_in_prompt_tokens() {
        let out = tr(
            json!({"id": "msg_1", "type": "message", "role": "assistant", "content": [{"type": "text", "text": "hi"}],
            "stop_reason": "end_turn", "usage": {"input_tokens": 10, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5, "output_tokens": 3}}),
        );
        assert_eq!(out["usage"]["prompt_tokens"], 115);
        assert_eq!(out["usage"]["completion_tokens"], 3);
        assert_eq!(out["usage"]["total_tokens"], 118);
        assert_eq!(out["usage"]["prompt_tokens_details"]["cached_tokens"], 100);
        assert_eq!(out["usage"]["cache_creation_input_tokens"], 5);
        assert_eq!(out["choices"][0]["message"]["content"], "hi");
        assert_eq!(out["id"], "chatcmpl-msg_1");
        assert_eq!(out["model"], "auto");
    }

    #[test]
    fn stop_reasons_map() {
        for (s, f) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
            ("pause_turn", "stop"),
        ] {
            let out = tr(json!({"id": "m", "content": [], "stop_reason": s, "usage": {}}));
            assert_eq!(out["choices"][0]["finish_reason"], f);
            assert!(out["choices"][0]["message"]["content"].is_null());
        }
    }

    #[test]
    fn not_a_message_is_an_error() {
        assert!(messages_response_to_chat(b"{\"type\":\"error\",\"error\":{}}", "m").is_err());
        assert!(messages_response_to_chat(b"nope", "m").is_err());
    }

    #[test]
    fn error_bodies() {
        let b = anthropic_error_to_chat(
            529,
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            v,
            json!({"error": {"message": "Overloaded", "type": "overloaded_error", "param": null, "code": "overloaded_error"}})
        );
        let v: Value = serde_json::from_slice(&anthropic_error_to_chat(502, b"<html>")).unwrap();
        assert_eq!(v["error"]["message"], "upstream returned HTTP 502");
    }
}
