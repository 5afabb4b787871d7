//! Inbound direction, buffered: Anthropic Messages request (from an Anthropic SDK client or coding
//! agent) -> OpenAI chat request for any upstream, the OpenAI response back to a Messages response,
//! Anthropic-shaped error bodies and a local token estimate for `/v1/messages/count_tokens`.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{stop_reason_from_finish, to_vec, TranslateError};

/// What the gateway needs from an inbound Messages request besides the translated body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundInfo {
    /// The requested `model`, for routing (aliases, `auto`, tiers).
    pub model: String,
    pub stream: bool,
    /// Anthropic `max_tokens` (required there), forwarded as OpenAI `max_tokens`; a provider that
    /// wants `max_completion_tokens` renames it.
    pub max_tokens: u64,
    /// `thinking.budget_tokens` when thinking was enabled (sent upstream as `reasoning_effort`).
    pub thinking_budget_tokens: Option<u64>,
}

fn missing(field: impl Into<String>) -> TranslateError {
    TranslateError::Missing {
        field: field.into(),
    }
}

fn wrong(field: impl Into<String>, expected: &'static str) -> TranslateError {
    TranslateError::WrongType {
        field: field.into(),
        expected,
    }
}

/// Translates an Anthropic Messages request body into an OpenAI chat request body.
///
/// - `system` (string or text blocks, joined with a blank line) becomes the first `system` message;
/// - `tool_result` blocks become `tool` messages placed before the rest of their user turn
///   (`is_error` results are prefixed `Error: `; images inside results move to a user message after
///   the tool messages, as OpenAI tool messages are text-only);
/// - assistant `tool_use` blocks become `tool_calls`; `thinking`/`redacted_thinking` blocks are
///   dropped (OpenAI-shaped upstreams cannot verify Anthropic signatures);
/// - images (base64 or url) become `image_url` parts, base64 PDFs `file` parts;
/// - `thinking.budget_tokens` becomes `reasoning_effort`: < 4096 `low`, < 16384 `medium`, else `high`;
/// - `stop_sequences` -> `stop`, `metadata.user_id` -> `user`, `tool_choice` any -> `required`,
///   `disable_parallel_tool_use` -> `parallel_tool_calls: false`; streaming asks for usage
///   (`stream_options.include_usage`); `top_k` and server tools have no equivalent: `top_k` is
///   dropped, a server tool is an error naming `tools[i].type`.
pub fn messages_request_to_chat(body: &[u8]) -> Result<(Vec<u8>, InboundInfo), TranslateError> {
    let req: Value =
        serde_json::from_slice(body).map_err(|source| TranslateError::InvalidJson { source })?;
    let obj = req.as_object().ok_or_else(|| wrong("$", "an object"))?;
    let model = match obj.get("model") {
        Some(Value::String(m)) => m.clone(),
        None | Some(Value::Null) => return Err(missing("model")),
        Some(_) => return Err(wrong("model", "a string")),
    };
    let max_tokens = match obj.get("max_tokens") {
        Some(v) if !v.is_null() => v
            .as_u64()
            .ok_or_else(|| wrong("max_tokens", "a non-negative integer"))?,
        _ => return Err(missing("max_tokens")),
    };
    let stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);

    let mut msgs: Vec<Value> = Vec::new();
    match obj.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => msgs.push(json!({"role": "system", "content": s})),
        Some(Value::Array(blocks)) => {
            let mut text = String::new();
            for (k, b) in blocks.iter().enumerate() {
                let t = b
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| missing(format!("system[{k}].text")))?;
                if !text.is_empty() {
                    text.push_str("\n\n");
                }
                text.push_str(t);
            }
            msgs.push(json!({"role": "system", "content": text}));
        }
        Some(_) => return Err(wrong("system", "a string or an array of text blocks")),
    }

    let messages = match obj.get("messages") {
        Some(Value::Array(a)) => a,
        None | Some(Value::Null) => return Err(missing("messages")),
        Some(_) => return Err(wrong("messages", "an array")),
    };
    for (i, m) in messages.iter().enumerate() {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| missing(format!("messages[{i}].role")))?;
        let content = m
            .get("content")
            .ok_or_else(|| missing(format!("messages[{i}].content")))?;
        match role {
            "user" => user_message(content, i, &mut msgs)?,
            "assistant" => msgs.push(assistant_message(content, i)?),
            other => {
                return Err(TranslateError::Unsupported {
                    field: format!("messages[{i}].role"),
                    value: other.into(),
                })
            }
        }
    }

    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.clone()));
    out.insert("messages".into(), Value::Array(msgs));
    out.insert("max_tokens".into(), max_tokens.into());
    for k in ["temperature", "top_p"] {
        if let Some(v) = obj.get(k).filter(|v| !v.is_null()) {
            if !v.is_number() {
                return Err(wrong(k, "a number"));
            }
            out.insert(k.into(), v.clone());
        }
    }
    if let Some(s) = obj.get("stop_sequences").filter(|v| !v.is_null()) {
        let a = s
            .as_array()
            .ok_or_else(|| wrong("stop_sequences", "an array of strings"))?;
        if !a.is_empty() {
            out.insert("stop".into(), s.clone());
        }
    }
    if let Some(u) = obj
        .get("metadata")
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
    {
        out.insert("user".into(), u.into());
    }
    let mut thinking_budget_tokens = None;
    if let Some(t) = obj.get("thinking").filter(|v| !v.is_null()) {
        if t.get("type").and_then(Value::as_str) == Some("enabled") {
            let b = t
                .get("budget_tokens")
                .and_then(Value::as_u64)
                .ok_or_else(|| missing("thinking.budget_tokens"))?;
            thinking_budget_tokens = Some(b);
            let effort = if b < 4096 {
                "low"
            } else if b < 16384 {
                "medium"
            } else {
                "high"
            };
            out.insert("reasoning_effort".into(), effort.into());
        }
    }
    inbound_tools(obj, &mut out)?;
    if stream {
        out.insert("stream".into(), Value::Bool(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let info = InboundInfo {
        model,
        stream,
        max_tokens,
        thinking_budget_tokens,
    };
    Ok((to_vec(&Value::Object(out)), info))
}

fn blocks_of(content: &Value, path: &str) -> Result<Vec<Value>, TranslateError> {
    match content {
        Value::String(s) => Ok(vec![json!({"type": "text", "text": s})]),
        Value::Array(a) => Ok(a.clone()),
        _ => Err(wrong(path, "a string or an array of content blocks")),
    }
}

fn image_part(b: &Value, path: &str) -> Result<Value, TranslateError> {
    let src = b
        .get("source")
        .ok_or_else(|| missing(format!("{path}.source")))?;
    match src.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media = src
                .get("media_type")
                .and_then(Value::as_str)
                .ok_or_else(|| missing(format!("{path}.source.media_type")))?;
            let data = src
                .get("data")
                .and_then(Value::as_str)
                .ok_or_else(|| missing(format!("{path}.source.data")))?;
            Ok(
                json!({"type": "image_url", "image_url": {"url": format!("data:{media};base64,{data}")}}),
            )
        }
        Some("url") => {
            let url = src
                .get("url")
                .and_then(Value::as_str)
                .ok_or_else(|| missing(format!("{path}.source.url")))?;
            Ok(json!({"type": "image_url", "image_url": {"url": url}}))
        }
        Some(other) => Err(TranslateError::Unsupported {
            field: format!("{path}.source.type"),
            value: other.into(),
        }),
        None => Err(missing(format!("{path}.source.type"))),
    }
}

fn user_message(content: &Value, i: usize, msgs: &mut Vec<Value>) -> Result<(), TranslateError> {
    let blocks = blocks_of(content, &format!("messages[{i}].content"))?;
    let mut parts: Vec<Value> = Vec::new();
    let mut moved_images: Vec<Value> = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let path = format!("messages[{i}].content[{j}]");
        match b.get("type").and_then(Value::as_str) {
            Some("text") => {
                let t = b
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| missing(format!("{path}.text")))?;
                parts.push(json!({"type": "text", "text": t}));
            }
            Some("image") => parts.push(image_part(b, &path)?),
            Some("document") => {
                let src = b
                    .get("source")
                    .ok_or_else(|| missing(format!("{path}.source")))?;
                match (src.get("type").and_then(Value::as_str), src.get("media_type").and_then(Value::as_str), src.get("data").and_then(Value::as_str)) {
                    (Some("base64"), Some(media), Some(data)) => parts.push(json!({"type": "file", "file": {
                        "filename": "document.pdf", "file_data": format!("data:{media};base64,{data}")}})),
                    (Some("text"), _, Some(data)) => parts.push(json!({"type": "text", "text": data})),
                    _ => return Err(TranslateError::Unsupported { field: format!("{path}.source"), value: "non-base64 document".into() }),
                }
            }
            Some("tool_result") => {
                let id = b
                    .get("tool_use_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| missing(format!("{path}.tool_use_id")))?;
                let mut text = String::new();
                if b.get("is_error").and_then(Value::as_bool) == Some(true) {
                    text.push_str("Error: ");
                }
                match b.get("content") {
                    None | Some(Value::Null) => {}
                    Some(Value::String(s)) => text.push_str(s),
                    Some(Value::Array(inner)) => {
                        let mut first = true;
                        for (k, ib) in inner.iter().enumerate() {
                            let ipath = format!("{path}.content[{k}]");
                            match ib.get("type").and_then(Value::as_str) {
                                Some("text") => {
                                    if !first {
                                        text.push('\n');
                                    }
                                    first = false;
                                    text.push_str(
                                        ib.get("text").and_then(Value::as_str).unwrap_or(""),
                                    );
                                }
                                Some("image") => moved_images.push(image_part(ib, &ipath)?),
                                Some(other) => {
                                    return Err(TranslateError::Unsupported {
                                        field: format!("{ipath}.type"),
                                        value: other.into(),
                                    })
                                }
                                None => return Err(missing(format!("{ipath}.type"))),
                            }
                        }
                    }
                    Some(_) => {
                        return Err(wrong(format!("{path}.content"), "a string or an array"))
                    }
                }
                msgs.push(json!({"role": "tool", "tool_call_id": id, "content": text}));
            }
            Some(other) => {
                return Err(TranslateError::Unsupported {
                    field: format!("{path}.type"),
                    value: other.into(),
                })
            }
            None => return Err(missing(format!("{path}.type"))),
        }
    }
    if !moved_images.is_empty() {
        msgs.push(json!({"role": "user", "content": moved_images}));
    }
    if !parts.is_empty() {
        let content = if parts.len() == 1 && parts[0]["type"] == "text" {
            parts[0]["text"].clone()
        } else {
            Value::Array(parts)
        };
        msgs.push(json!({"role": "user", "content": content}));
    }
    Ok(())
}

fn assistant_message(content: &Value, i: usize) -> Result<Value, TranslateError> {
    let blocks = blocks_of(content, &format!("messages[{i}].content"))?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let path = format!("messages[{i}].content[{j}]");
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => {
                let id = b
                    .get("id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| missing(format!("{path}.id")))?;
                let name = b
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| missing(format!("{path}.name")))?;
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({"id": id, "type": "function", "function": {"name": name, "arguments": to_string(&input)}}));
            }
            Some("thinking" | "redacted_thinking") => {}
            Some(other) => {
                return Err(TranslateError::Unsupported {
                    field: format!("{path}.type"),
                    value: other.into(),
                })
            }
            None => return Err(missing(format!("{path}.type"))),
        }
    }
    let mut m = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) }});
    if !calls.is_empty() {
        m["tool_calls"] = Value::Array(calls);
    }
    Ok(m)
}

fn to_string(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn inbound_tools(
    obj: &Map<String, Value>,
    out: &mut Map<String, Value>,
) -> Result<(), TranslateError> {
    if let Some(tools) = obj.get("tools").filter(|v| !v.is_null()) {
        let tools = tools.as_array().ok_or_else(|| wrong("tools", "an array"))?;
        let mut t_out = Vec::with_capacity(tools.len());
        for (k, t) in tools.iter().enumerate() {
            match t.get("type").and_then(Value::as_str) {
                None | Some("custom") => {}
                Some(other) => {
                    return Err(TranslateError::Unsupported {
                        field: format!("tools[{k}].type"),
                        value: other.into(),
                    })
                }
            }
            let name = t
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| missing(format!("tools[{k}].name")))?;
            let mut f = Map::new();
            f.insert("name".into(), name.into());
            if let Some(d) = t.get("description").filter(|d| d.is_string()) {
                f.insert("description".into(), d.clone());
            }
            f.insert(
                "parameters".into(),
                t.get("input_schema")
                    .cloned()
                    .ok_or_else(|| missing(format!("tools[{k}].input_schema")))?,
            );
            t_out.push(json!({"type": "function", "function": f}));
        }
        if !t_out.is_empty() {
            out.insert("tools".into(), Value::Array(t_out));
        }
    }
    if let Some(c) = obj.get("tool_choice").filter(|v| !v.is_null()) {
        let choice = match c.get("type").and_then(Value::as_str) {
            Some("auto") => json!("auto"),
            Some("any") => json!("required"),
            Some("none") => json!("none"),
            Some("tool") => {
                let name = c
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| missing("tool_choice.name"))?;
                json!({"type": "function", "function": {"name": name}})
            }
            Some(other) => {
                return Err(TranslateError::Unsupported {
                    field: "tool_choice.type".into(),
                    value: other.into(),
                })
            }
            None => return Err(missing("tool_choice.type")),
        };
        out.insert("tool_choice".into(), choice);
        if c.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true)
            && out.contains_key("tools")
        {
            out.insert("parallel_tool_calls".into(), Value::Bool(false));
        }
    }
    Ok(())
}

#[derive(Deserialize)]
struct ChatCompletionIn {
    #[serde(default)]
    id: String,
    #[serde(default)]
    choices: Vec<ChoiceIn>,
    #[serde(default)]
    usage: Option<ChatUsageIn>,
}

#[derive(Deserialize)]
struct ChoiceIn {
    message: MessageIn,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct MessageIn {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    reasoning: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Vec<ToolCallIn>,
}

#[derive(Deserialize)]
struct ToolCallIn {
    #[serde(default)]
    id: String,
    function: FunctionIn,
}

#[derive(Deserialize)]
struct FunctionIn {
    name: String,
    #[serde(default)]
    arguments: String,
}

#[derive(Deserialize, Default, Clone, Copy)]
pub(crate) struct ChatUsageIn {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptDetailsIn>,
}

#[derive(Deserialize, Default, Clone, Copy)]
pub(crate) struct PromptDetailsIn {
    #[serde(default)]
    pub cached_tokens: Option<u64>,
}

impl ChatUsageIn {
    pub(crate) fn cached(&self) -> u64 {
        self.prompt_tokens_details
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0)
    }
}

/// Anthropic usage out; `input_tokens` excludes cache reads, as Anthropic counts.
#[derive(Serialize)]
pub(crate) struct AnthropicUsage {
    pub input_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub output_tokens: u64,
}

impl From<ChatUsageIn> for AnthropicUsage {
    fn from(u: ChatUsageIn) -> Self {
        let cached = u.cached().min(u.prompt_tokens);
        AnthropicUsage {
            input_tokens: u.prompt_tokens - cached,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: cached,
            output_tokens: u.completion_tokens,
        }
    }
}

#[derive(Serialize)]
struct MessageOut<'a> {
    id: String,
    r#type: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<Value>,
    stop_reason: &'static str,
    stop_sequence: Option<()>,
    usage: AnthropicUsage,
}

/// `msg_` + the upstream id (without a `chatcmpl-` prefix), so a response stays traceable.
pub(crate) fn message_id_from(chat_id: &str) -> String {
    format!(
        "msg_{}",
        chat_id.strip_prefix("chatcmpl-").unwrap_or(chat_id)
    )
}

/// Translates an OpenAI `chat.completion` into an Anthropic Messages response for `model`.
/// `reasoning_content` (or `reasoning`) becomes a leading `thinking` block with an empty
/// signature, `refusal` a text block with `stop_reason: refusal`, and `tool_calls` `tool_use`
/// blocks whose `input` is the parsed arguments. `Err` when the body is not a chat completion or
/// a tool call's arguments are not a JSON object (Anthropic clients cannot represent that).
pub fn chat_response_to_messages(body: &[u8], model: &str) -> Result<Vec<u8>, TranslateError> {
    let resp: ChatCompletionIn =
        serde_json::from_slice(body).map_err(|source| TranslateError::UpstreamEvent {
            event: "chat.completion",
            source,
        })?;
    let choice = resp
        .choices
        .into_iter()
        .next()
        .ok_or(TranslateError::Protocol {
            reason: "chat completion without choices",
        })?;
    let m = choice.message;
    let mut content = Vec::new();
    if let Some(r) = m
        .reasoning_content
        .or(m.reasoning)
        .filter(|r| !r.is_empty())
    {
        content.push(json!({"type": "thinking", "thinking": r, "signature": ""}));
    }
    if let Some(t) = m.content.filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": t}));
    }
    let refused = m.refusal.as_ref().is_some_and(|r| !r.is_empty());
    if let Some(r) = m.refusal.filter(|r| !r.is_empty()) {
        content.push(json!({"type": "text", "text": r}));
    }
    for (k, c) in m.tool_calls.iter().enumerate() {
        let input: Value = if c.function.arguments.trim().is_empty() {
            json!({})
        } else {
            match serde_json::from_str(&c.function.arguments) {
                Ok(v @ Value::Object(_)) => v,
                _ => {
                    return Err(TranslateError::Invalid {
                        field: format!("choices[0].message.tool_calls[{k}].function.arguments"),
                        reason: "upstream tool arguments are not a JSON object",
                    })
                }
            }
        };
        let id = if c.id.is_empty() {
            format!("toolu_tierflow_{k}")
        } else {
            c.id.clone()
        };
        content
            .push(json!({"type": "tool_use", "id": id, "name": c.function.name, "input": input}));
    }
    let stop_reason = if refused {
        "refusal"
    } else {
        match choice.finish_reason.as_deref() {
            Some(f) => stop_reason_from_finish(f),
            None if !m.tool_calls.is_empty() => "tool_use",
            None => "end_turn",
        }
    };
    let out = MessageOut {
        id: message_id_from(&resp.id),
        r#type: "message",
        role: "assistant",
        model,
        content,
        stop_reason,
        stop_sequence: None,
        usage: resp.usage.unwrap_or_default().into(),
    };
    Ok(serde_json::to_vec(&out).unwrap_or_default())
}

/// Anthropic's error `type` for an HTTP status.
pub(crate) fn anthropic_error_type(status: u16) -> &'static str {
    match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// An Anthropic error body, `{"type":"error","error":{"type":…,"message":…}}`, the error `type`
/// chosen from `status` (400 invalid_request_error, 401 authentication_error, 403 permission_error,
/// 404 not_found_error, 413 request_too_large, 429 rate_limit_error, 503/529 overloaded_error,
/// anything else api_error).
pub fn error_body_anthropic(status: u16, message: &str) -> Vec<u8> {
    to_vec(
        &json!({"type": "error", "error": {"type": anthropic_error_type(status), "message": message}}),
    )
}

/// Per-message framing overhead and the fixed cost of a request, in tokens (approximations of
/// Claude's chat template).
const TOKENS_PER_MESSAGE: u64 = 4;
const TOKENS_BASE: u64 = 3;
/// Claude's hidden tool-use system prompt is a few hundred tokens (Anthropic documents 264–346
/// depending on model and tool_choice).
const TOKENS_TOOLS_PREAMBLE: u64 = 300;
/// An image of unknown size: Anthropic's formula (w*h/750) at the ~1.15 MP the API resizes to.
const TOKENS_PER_IMAGE: u64 = 1600;

fn text_tokens(s: &str) -> u64 {
    // ~4 characters per token for English prose and code under Claude's tokenizer.
    (s.chars().count() as u64).div_ceil(4)
}

/// A local estimate of a Messages request's input tokens, for `POST /v1/messages/count_tokens`
/// (answer with `{"input_tokens": n}`). Not Anthropic's tokenizer: text counts ceil(chars/4),
/// each message adds 4, the request 3, tools 300 plus their JSON definition at chars/4, each image
/// 1600 (the cost of a full-size image) and each document 1600 per 3000 base64 characters
/// (approximate, expect ±20% on prose and more on non-Latin text). `Err` when the body is not a
/// JSON object with `messages`.
pub fn count_tokens_local(body: &[u8]) -> Result<u32, TranslateError> {
    let req: Value =
        serde_json::from_slice(body).map_err(|source| TranslateError::InvalidJson { source })?;
    let messages = match req.get("messages") {
        Some(Value::Array(a)) => a,
        None | Some(Value::Null) => return Err(missing("messages")),
        Some(_) => return Err(wrong("messages", "an array")),
    };
    let mut n = TOKENS_BASE;
    if let Some(s) = req.get("system") {
        n += content_tokens(s);
    }
    for m in messages {
        n += TOKENS_PER_MESSAGE + content_tokens(m.get("content").unwrap_or(&Value::Null));
    }
    if let Some(Value::Array(tools)) = req.get("tools") {
        if !tools.is_empty() {
            n += TOKENS_TOOLS_PREAMBLE;
            for t in tools {
                n += text_tokens(&to_string(t));
            }
        }
    }
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

fn content_tokens(c: &Value) -> u64 {
    match c {
        Value::String(s) => text_tokens(s),
        Value::Array(blocks) => blocks
            .iter()
            .map(|b| match b.get("type").and_then(Value::as_str) {
                Some("text") => text_tokens(b.get("text").and_then(Value::as_str).unwrap_or("")),
                Some("thinking") => {
                    text_tokens(b.get("thinking").and_then(Value::as_str).unwrap_or(""))
                }
                Some("image") => TOKENS_PER_IMAGE,
                Some("document") => {
                    let len = b
                        .pointer("/source/data")
                        .and_then(Value::as_str)
                        .map_or(0, str::len) as u64;
                    TOKENS_PER_IMAGE * len.div_ceil(3000).max(1)
                }
                Some("tool_use") => {
                    text_tokens(b.get("name").and_then(Value::as_str).unwrap_or(""))
                        + text_tokens(&to_string(b.get("input").unwrap_or(&Value::Null)))
                }
                Some("tool_result") => content_tokens(b.get("content").unwrap_or(&Value::Null)),
                _ => 0,
            })
            .sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tr(v: Value) -> Result<(Value, InboundInfo), TranslateError> {
        let (b, info) = messages_request_to_chat(&serde_json::to_vec(&v).unwrap())?;
        Ok((serde_json::from_slice(&b).unwrap(), info))
    }

    #[test]
    fn basic_request() {
        let (out, info) = tr(json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "system": "be brief",
            "messages": [{"role": "user", "content": "hi"}], "stream": true, "top_k": 5,
            "metadata": {"user_id": "u1"}, "stop_sequences": ["X"], "thinking": {"type": "enabled", "budget_tokens": 5000}}))
        .unwrap();
        assert_eq!(
            info,
            InboundInfo {
                model: "claude-sonnet-4-5".into(),
                stream: true,
                max_tokens: 100,
                thinking_budget_tokens: Some(5000)
            }
        );
        assert_eq!(
            out,
            json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
            "user": "u1", "stop": ["X"], "reasoning_effort": "medium"})
        );
    }

    #[test]
    fn errors_name_fields() {
        assert_eq!(
            tr(json!({"model": "m", "messages": []}))
                .unwrap_err()
                .field(),
            Some("max_tokens")
        );
        let e = tr(json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "audio"}]}]})).unwrap_err();
        assert_eq!(e.field(), Some("messages[0].content[1].type"));
        let e = tr(json!({"model": "m", "max_tokens": 1, "messages": [], "tools": [{"type": "web_search_20250305", "name": "web_search"}]})).unwrap_err();
        assert_eq!(e.field(), Some("tools[0].type"));
        assert!(matches!(
            messages_request_to_chat(b"{"),
            Err(TranslateError::InvalidJson { .. })
        ));
    }

    #[test]
    fn tool_result_images_move_after_tool_message() {
        let (out, _) = tr(json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": true, "content": [
                {"type": "text", "text": "boom"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA="}}]},
            {"type": "text", "text": "look"}]}]}))
        .unwrap();
        assert_eq!(
            out["messages"],
            json!([
                {"role": "tool", "tool_call_id": "toolu_1", "content": "Error: boom"},
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA="}}]},
                {"role": "user", "content": "look"}
            ])
        );
    }

    #[test]
    fn response_back() {
        let body = json!({"id": "chatcmpl-abc", "object": "chat.completion", "choices": [{"index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]}}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 9, "prompt_tokens_details": {"cached_tokens": 20}}});
        let out: Value = serde_json::from_slice(
            &chat_response_to_messages(&serde_json::to_vec(&body).unwrap(), "claude-x").unwrap(),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"id": "msg_abc", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [{"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}}],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 30, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 20, "output_tokens": 9}})
        );
        let bad = json!({"id": "x", "choices": [{"message": {"tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{"}}]}}]});
        let e = chat_response_to_messages(&serde_json::to_vec(&bad).unwrap(), "m").unwrap_err();
        assert_eq!(
            e.field(),
            Some("choices[0].message.tool_calls[0].function.arguments")
        );
    }

    #[test]
    fn error_bodies_by_status() {
        for (s, t) in [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (413, "request_too_large"),
            (429, "rate_limit_error"),
            (500, "api_error"),
            (502, "api_error"),
            (529, "overloaded_error"),
        ] {
            let v: Value = serde_json::from_slice(&error_body_anthropic(s, "m\"sg")).unwrap();
            assert_eq!(
                v,
                json!({"type": "error", "error": {"type": t, "message": "m\"sg"}})
            );
        }
    }

    #[test]
    fn count_tokens_estimate() {
        let body = json!({"model": "m", "system": "abcdefgh", "messages": [{"role": "user", "content": "abcd"}]});
        // 3 base + 2 system + (4 + 1) message
        assert_eq!(
            count_tokens_local(&serde_json::to_vec(&body).unwrap()).unwrap(),
            10
        );
        let with_img =
            json!({"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]});
        assert_eq!(
            count_tokens_local(&serde_json::to_vec(&with_img).unwrap()).unwrap(),
            3 + 4 + 1600
        );
        assert!(count_tokens_local(b"{}").is_err());
    }
}
