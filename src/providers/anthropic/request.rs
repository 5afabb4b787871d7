//! OpenAI Chat Completions request -> Anthropic Messages request (outbound). Model choice, `route`
//! stripping and PII scrubbing happen before this, in the pipeline; this file only changes dialect.

use serde_json::{json, Map, Value};

use super::{to_vec, TranslateError};

/// Knobs of the outbound request translation. `Default` documents the defaults.
#[derive(Debug, Clone)]
pub struct RequestOptions {
    /// `max_tokens` when the client sends neither `max_tokens` nor `max_completion_tokens`
    /// (Anthropic requires one). Default 4096.
    pub default_max_tokens: u32,
    /// Thinking budgets for `reasoning_effort` `minimal`/`low`, `medium`, `high`.
    /// Defaults 1024 (Anthropic's minimum), 4096, 16384.
    pub thinking_budget_low: u32,
    pub thinking_budget_medium: u32,
    pub thinking_budget_high: u32,
}

impl Default for RequestOptions {
    fn default() -> Self {
        RequestOptions {
            default_max_tokens: 4096,
            thinking_budget_low: 1024,
            thinking_budget_medium: 4096,
            thinking_budget_high: 16384,
        }
    }
}

/// Anthropic rejects a thinking budget below this.
const MIN_THINKING_BUDGET: u64 = 1024;

/// Translates an OpenAI chat request body into an Anthropic Messages request body for
/// `upstream_model`.
///
/// - `system`/`developer` messages, wherever they appear, become the top-level `system` in order;
/// - `tool` messages become `tool_result` blocks of a user turn, and consecutive same-role turns are
///   merged (with `tool_result` blocks first, as Anthropic requires);
/// - `max_completion_tokens` wins over `max_tokens`; with thinking enabled, a client `max_tokens`
///   not above the budget becomes `budget + max_tokens` (the client's cap then bounds the answer);
/// - `temperature` above 1 is clamped to 1 (Anthropic's range is 0..=1); with thinking enabled
///   `temperature`, `top_p` and `top_k` are dropped (Anthropic rejects them then);
/// - thinking is not requested when `tool_choice` forces a tool (Anthropic rejects the pair);
/// - `user` or `metadata.user` becomes `metadata.user_id`;
/// - fields with no Anthropic equivalent (`presence_penalty`, `frequency_penalty`, `seed`,
///   `logit_bias`, `response_format`, `stream_options`, ...) are dropped; `n` > 1 is an error.
///
/// `Err` names the offending field of the downstream request (a 400 for the client).
pub fn chat_to_messages_request(
    req: &Value,
    upstream_model: &str,
    opts: &RequestOptions,
) -> Result<Vec<u8>, TranslateError> {
    let obj = req.as_object().ok_or_else(|| TranslateError::WrongType {
        field: "$".into(),
        expected: "an object",
    })?;
    let messages = match obj.get("messages") {
        Some(Value::Array(a)) => a,
        None | Some(Value::Null) => return Err(missing("messages")),
        Some(_) => return Err(wrong("messages", "an array")),
    };

    let mut system: Vec<Value> = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = match m.get("role") {
            Some(Value::String(r)) => r.as_str(),
            None | Some(Value::Null) => return Err(missing(format!("messages[{i}].role"))),
            Some(_) => return Err(wrong(format!("messages[{i}].role"), "a string")),
        };
        match role {
            "system" | "developer" => {
                let content = m.get("content").unwrap_or(&Value::Null);
                system.extend(text_blocks(content, &format!("messages[{i}].content"))?);
            }
            "user" => {
                let blocks = user_blocks(m.get("content").unwrap_or(&Value::Null), i)?;
                push_turn(&mut turns, "user", blocks);
            }
            "assistant" => {
                let blocks = assistant_blocks(m, i)?;
                // Anthropic rejects empty turns; an empty assistant message carries nothing.
                if !blocks.is_empty() {
                    push_turn(&mut turns, "assistant", blocks);
                }
            }
            "tool" => {
                let id = match m.get("tool_call_id") {
                    Some(Value::String(s)) => s.clone(),
                    _ => return Err(missing(format!("messages[{i}].tool_call_id"))),
                };
                let content = m.get("content").unwrap_or(&Value::Null);
                let mut block = json!({"type": "tool_result", "tool_use_id": id});
                match content {
                    Value::String(s) => {
                        if !s.is_empty() {
                            block["content"] = Value::String(s.clone());
                        }
                    }
                    Value::Null => {}
                    _ => {
                        block["content"] = Value::Array(user_blocks(content, i)?);
                    }
                }
                push_turn(&mut turns, "user", vec![block]);
            }
            other => {
                return Err(TranslateError::Unsupported {
                    field: format!("messages[{i}].role"),
                    value: other.into(),
                })
            }
        }
    }

    let mut out = Map::new();
    out.insert("model".into(), Value::String(upstream_model.into()));

    // max tokens and thinking
    let client_max = match (obj.get("max_completion_tokens"), obj.get("max_tokens")) {
        (Some(v), _) if !v.is_null() => Some(uint(v, "max_completion_tokens")?),
        (_, Some(v)) if !v.is_null() => Some(uint(v, "max_tokens")?),
        _ => None,
    };
    // Anthropic rejects thinking together with a forced tool choice; the forced tool wins.
    let forced_tool = match obj.get("tool_choice") {
        Some(Value::String(c)) => c == "required",
        Some(Value::Object(_)) => true,
        _ => false,
    } && obj
        .get("tools")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty());
    let budget = thinking_budget(obj, opts)?.filter(|_| !forced_tool);
    let max_tokens = match (client_max, budget) {
        (Some(m), Some(b)) if m <= b => b + m,
        (Some(m), _) => m,
        (None, Some(b)) => b + u64::from(opts.default_max_tokens),
        (None, None) => u64::from(opts.default_max_tokens),
    };
    out.insert("max_tokens".into(), max_tokens.into());

    if !system.is_empty() {
        out.insert("system".into(), collapse_text(system));
    }
    let msgs: Vec<Value> = turns
        .into_iter()
        .map(|(role, mut blocks)| {
            if role == "user" {
                // tool_result blocks must open the user turn that follows a tool_use turn.
                blocks
                    .sort_by_key(|b| b.get("type").and_then(Value::as_str) != Some("tool_result"));
            }
            json!({"role": role, "content": collapse_text(blocks)})
        })
        .collect();
    out.insert("messages".into(), Value::Array(msgs));

    if let Some(b) = budget {
        out.insert(
            "thinking".into(),
            json!({"type": "enabled", "budget_tokens": b}),
        );
    } else {
        if let Some(t) = obj.get("temperature").filter(|v| !v.is_null()) {
            let t = t.as_f64().ok_or_else(|| wrong("temperature", "a number"))?;
            out.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
        }
        if let Some(p) = obj.get("top_p").filter(|v| !v.is_null()) {
            let p = p.as_f64().ok_or_else(|| wrong("top_p", "a number"))?;
            out.insert("top_p".into(), json!(p));
        }
        if let Some(k) = obj.get("top_k").filter(|v| !v.is_null()) {
            out.insert("top_k".into(), uint(k, "top_k")?.into());
        }
    }

    match obj.get("stop") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(a)) => {
            for (j, s) in a.iter().enumerate() {
                if !s.is_string() {
                    return Err(wrong(format!("stop[{j}]"), "a string"));
                }
            }
            if !a.is_empty() {
                out.insert("stop_sequences".into(), Value::Array(a.clone()));
            }
        }
        Some(_) => return Err(wrong("stop", "a string or an array of strings")),
    }

    if let Some(n) = obj.get("n").filter(|v| !v.is_null()) {
        if uint(n, "n")? != 1 {
            return Err(TranslateError::Unsupported {
                field: "n".into(),
                value: n.to_string(),
            });
        }
    }

    let user = match obj.get("metadata").and_then(|m| m.get("user")) {
        Some(u) if !u.is_null() => Some(u),
        _ => obj.get("user").filter(|u| !u.is_null()),
    };
    if let Some(u) = user {
        let u = u.as_str().ok_or_else(|| wrong("user", "a string"))?;
        out.insert("metadata".into(), json!({"user_id": u}));
    }

    translate_tools(obj, &mut out)?;

    if obj.get("stream").and_then(Value::as_bool) == Some(true) {
        out.insert("stream".into(), Value::Bool(true));
    }
    Ok(to_vec(&Value::Object(out)))
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

fn uint(v: &Value, field: &str) -> Result<u64, TranslateError> {
    v.as_u64()
        .ok_or_else(|| wrong(field, "a non-negative integer"))
}

fn push_turn(turns: &mut Vec<(&'static str, Vec<Value>)>, role: &'static str, blocks: Vec<Value>) {
    match turns.last_mut() {
        Some((r, b)) if *r == role => b.extend(blocks),
        _ => turns.push((role, blocks)),
    }
}

/// One plain text block collapses to a string; anything else stays a block list.
fn collapse_text(mut blocks: Vec<Value>) -> Value {
    if blocks.len() == 1 {
        if let Some(o) = blocks[0].as_object() {
            if o.len() == 2 && o.get("type").and_then(Value::as_str) == Some("text") {
                if let Some(Value::String(_)) = o.get("text") {
                    let b = blocks.swap_remove(0);
                    return b.get("text").cloned().unwrap_or(Value::Null);
                }
            }
        }
    }
    Value::Array(blocks)
}

/// Text-only content (system, developer): a string or an array of `text` parts.
fn text_blocks(content: &Value, path: &str) -> Result<Vec<Value>, TranslateError> {
    match content {
        Value::String(s) => Ok(if s.is_empty() {
            vec![]
        } else {
            vec![text_block(s, None)]
        }),
        Value::Array(parts) => {
            let mut out = Vec::with_capacity(parts.len());
            for (j, p) in parts.iter().enumerate() {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => out.push(text_part(p, &format!("{path}[{j}]"))?),
                    Some(t) => {
                        return Err(TranslateError::Unsupported {
                            field: format!("{path}[{j}].type"),
                            value: t.into(),
                        })
                    }
                    None => return Err(missing(format!("{path}[{j}].type"))),
                }
            }
            Ok(out)
        }
        Value::Null => Ok(vec![]),
        _ => Err(wrong(path, "a string or an array of content parts")),
    }
}

fn text_block(s: &str, cache_control: Option<&Value>) -> Value {
    let mut b = json!({"type": "text", "text": s});
    if let Some(cc) = cache_control {
        b["cache_control"] = cc.clone();
    }
    b
}

fn text_part(p: &Value, path: &str) -> Result<Value, TranslateError> {
    match p.get("text") {
        Some(Value::String(s)) => Ok(text_block(s, p.get("cache_control"))),
        None | Some(Value::Null) => Err(missing(format!("{path}.text"))),
        Some(_) => Err(wrong(format!("{path}.text"), "a string")),
    }
}

/// User content: text, images (`image_url` data: or http(s) URLs) and PDF `file` parts.
fn user_blocks(content: &Value, i: usize) -> Result<Vec<Value>, TranslateError> {
    let parts = match content {
        Value::String(s) => return Ok(vec![text_block(s, None)]),
        Value::Array(parts) => parts,
        Value::Null => return Err(missing(format!("messages[{i}].content"))),
        _ => {
            return Err(wrong(
                format!("messages[{i}].content"),
                "a string or an array",
            ))
        }
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, p) in parts.iter().enumerate() {
        let path = format!("messages[{i}].content[{j}]");
        match p.get("type").and_then(Value::as_str) {
            Some("text") => out.push(text_part(p, &path)?),
            Some("image_url") => {
                let url = match p.get("image_url") {
                    Some(Value::String(u)) => u.as_str(),
                    Some(o) => match o.get("url") {
                        Some(Value::String(u)) => u.as_str(),
                        _ => return Err(missing(format!("{path}.image_url.url"))),
                    },
                    None => return Err(missing(format!("{path}.image_url"))),
                };
                let source = media_source(url, &format!("{path}.image_url.url"), "image/")?;
                let mut b = json!({"type": "image", "source": source});
                if let Some(cc) = p.get("cache_control") {
                    b["cache_control"] = cc.clone();
                }
                out.push(b);
            }
            Some("file") => {
                let data = p
                    .get("file")
                    .and_then(|f| f.get("file_data"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| missing(format!("{path}.file.file_data")))?;
                let source =
                    media_source(data, &format!("{path}.file.file_data"), "application/pdf")?;
                out.push(json!({"type": "document", "source": source}));
            }
            Some(t) => {
                return Err(TranslateError::Unsupported {
                    field: format!("{path}.type"),
                    value: t.into(),
                })
            }
            None => return Err(missing(format!("{path}.type"))),
        }
    }
    Ok(out)
}

/// `data:<media>;base64,<data>` -> base64 source; `http(s)://` -> url source.
fn media_source(url: &str, path: &str, media_prefix: &str) -> Result<Value, TranslateError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| TranslateError::Invalid {
                field: path.into(),
                reason: "data: URL without a comma",
            })?;
        let media = meta
            .strip_suffix(";base64")
            .ok_or_else(|| TranslateError::Invalid {
                field: path.into(),
                reason: "data: URL must be base64",
            })?;
        if !media.starts_with(media_prefix) {
            return Err(TranslateError::Unsupported {
                field: path.into(),
                value: media.into(),
            });
        }
        Ok(json!({"type": "base64", "media_type": media, "data": data}))
    } else if url.starts_with("https://") || url.starts_with("http://") {
        Ok(json!({"type": "url", "url": url}))
    } else {
        Err(TranslateError::Invalid {
            field: path.into(),
            reason: "expected a data: or http(s) URL",
        })
    }
}

fn assistant_blocks(m: &Value, i: usize) -> Result<Vec<Value>, TranslateError> {
    let mut out = text_blocks(
        m.get("content").unwrap_or(&Value::Null),
        &format!("messages[{i}].content"),
    )?;
    out.retain(|b| {
        b.get("text")
            .and_then(Value::as_str)
            .is_some_and(|t| !t.is_empty())
    });
    match m.get("tool_calls") {
        None | Some(Value::Null) => {}
        Some(Value::Array(calls)) => {
            for (j, c) in calls.iter().enumerate() {
                let path = format!("messages[{i}].tool_calls[{j}]");
                let id = c
                    .get("id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| missing(format!("{path}.id")))?;
                let f = c
                    .get("function")
                    .ok_or_else(|| missing(format!("{path}.function")))?;
                let name = f
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| missing(format!("{path}.function.name")))?;
                let input = match f.get("arguments") {
                    None | Some(Value::Null) => json!({}),
                    Some(Value::String(s)) if s.trim().is_empty() => json!({}),
                    Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                        Ok(v @ Value::Object(_)) => v,
                        _ => {
                            return Err(TranslateError::Invalid {
                                field: format!("{path}.function.arguments"),
                                reason: "must be a JSON object encoded as a string",
                            })
                        }
                    },
                    Some(_) => return Err(wrong(format!("{path}.function.arguments"), "a string")),
                };
                out.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
            }
        }
        Some(_) => return Err(wrong(format!("messages[{i}].tool_calls"), "an array")),
    }
    Ok(out)
}

fn thinking_budget(
    obj: &Map<String, Value>,
    opts: &RequestOptions,
) -> Result<Option<u64>, TranslateError> {
    if let Some(t) = obj.get("thinking").filter(|v| !v.is_null()) {
        return match t.get("type").and_then(Value::as_str) {
            Some("enabled") => {
                let b = t
                    .get("budget_tokens")
                    .ok_or_else(|| missing("thinking.budget_tokens"))?;
                Ok(Some(
                    uint(b, "thinking.budget_tokens")?.max(MIN_THINKING_BUDGET),
                ))
            }
            Some("disabled") => Ok(None),
            Some(other) => Err(TranslateError::Unsupported {
                field: "thinking.type".into(),
                value: other.into(),
            }),
            None => Err(missing("thinking.type")),
        };
    }
    match obj.get("reasoning_effort") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(e)) => match e.as_str() {
            "none" => Ok(None),
            "minimal" | "low" => Ok(Some(
                u64::from(opts.thinking_budget_low).max(MIN_THINKING_BUDGET),
            )),
            "medium" => Ok(Some(
                u64::from(opts.thinking_budget_medium).max(MIN_THINKING_BUDGET),
            )),
            "high" => Ok(Some(
                u64::from(opts.thinking_budget_high).max(MIN_THINKING_BUDGET),
            )),
            other => Err(TranslateError::Unsupported {
                field: "reasoning_effort".into(),
                value: other.into(),
            }),
        },
        Some(_) => Err(wrong("reasoning_effort", "a string")),
    }
}

fn translate_tools(
    obj: &Map<String, Value>,
    out: &mut Map<String, Value>,
) -> Result<(), TranslateError> {
    let mut has_tools = false;
    match obj.get("tools") {
        None | Some(Value::Null) => {}
        Some(Value::Array(tools)) => {
            let mut t_out = Vec::with_capacity(tools.len());
            for (k, t) in tools.iter().enumerate() {
                match t.get("type").and_then(Value::as_str) {
                    Some("function") => {}
                    Some(other) => {
                        return Err(TranslateError::Unsupported {
                            field: format!("tools[{k}].type"),
                            value: other.into(),
                        })
                    }
                    None => return Err(missing(format!("tools[{k}].type"))),
                }
                let f = t
                    .get("function")
                    .ok_or_else(|| missing(format!("tools[{k}].function")))?;
                let name = f
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| missing(format!("tools[{k}].function.name")))?;
                let mut tool = Map::new();
                tool.insert("name".into(), name.into());
                if let Some(d) = f.get("description").filter(|d| d.is_string()) {
                    tool.insert("description".into(), d.clone());
                }
                let schema = match f.get("parameters") {
                    Some(p @ Value::Object(_)) => p.clone(),
                    None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
                    Some(_) => {
                        return Err(wrong(
                            format!("tools[{k}].function.parameters"),
                            "an object",
                        ))
                    }
                };
                tool.insert("input_schema".into(), schema);
                if let Some(cc) = t.get("cache_control") {
                    tool.insert("cache_control".into(), cc.clone());
                }
                t_out.push(Value::Object(tool));
            }
            has_tools = !t_out.is_empty();
            if has_tools {
                out.insert("tools".into(), Value::Array(t_out));
            }
        }
        Some(_) => return Err(wrong("tools", "an array")),
    }

    let mut choice = match obj.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Some(json!({"type": "auto"})),
            "none" => Some(json!({"type": "none"})),
            "required" => Some(json!({"type": "any"})),
            other => {
                return Err(TranslateError::Unsupported {
                    field: "tool_choice".into(),
                    value: other.into(),
                })
            }
        },
        Some(o @ Value::Object(_)) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| missing("tool_choice.function.name"))?;
            Some(json!({"type": "tool", "name": name}))
        }
        Some(_) => return Err(wrong("tool_choice", "a string or an object")),
    };
    if obj.get("parallel_tool_calls").and_then(Value::as_bool) == Some(false) && has_tools {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if c["type"] != "none" {
            c["disable_parallel_tool_use"] = Value::Bool(true);
        }
    }
    if let Some(c) = choice {
        // A choice without tools is meaningless to Anthropic (and rejected); drop it.
        if has_tools {
            out.insert("tool_choice".into(), c);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tr(v: Value) -> Result<Value, TranslateError> {
        let b = chat_to_messages_request(&v, "claude-sonnet-4-5", &RequestOptions::default())?;
        Ok(serde_json::from_slice(&b).unwrap())
    }

    #[test]
    fn minimal_request_gets_default_max_tokens() {
        let out =
            tr(json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}]})).unwrap();
        assert_eq!(
            out,
            json!({"model": "claude-sonnet-4-5", "max_tokens": 4096, "messages": [{"role": "user", "content": "hi"}]})
        );
    }

    #[test]
    fn system_and_developer_collect_in_order() {
        let out = tr(json!({"messages": [
            {"role": "system", "content": "A"},
            {"role": "user", "content": "q"},
            {"role": "developer", "content": [{"type": "text", "text": "B"}]}
        ]}))
        .unwrap();
        assert_eq!(
            out["system"],
            json!([{"type": "text", "text": "A"}, {"type": "text", "text": "B"}])
        );
        assert_eq!(out["messages"], json!([{"role": "user", "content": "q"}]));
    }

    #[test]
    fn consecutive_user_turns_merge() {
        let out = tr(json!({"messages": [
            {"role": "user", "content": "a"}, {"role": "user", "content": "b"}
        ]}))
        .unwrap();
        assert_eq!(
            out["messages"],
            json!([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}])
        );
    }

    #[test]
    fn errors_name_the_field() {
        let e = tr(json!({"messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "input_audio"}]}
        ]}))
        .unwrap_err();
        assert_eq!(e.field(), Some("messages[2].content[1].type"));
        let e = tr(json!({"messages": [{"role": "user"}]})).unwrap_err();
        assert_eq!(e.field(), Some("messages[0].content"));
        let e = tr(json!({"messages": [{"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{bad"}}]}]}))
        .unwrap_err();
        assert_eq!(
            e.field(),
            Some("messages[0].tool_calls[0].function.arguments")
        );
        let e = tr(json!({"messages": [], "tools": [{"type": "web_search"}]})).unwrap_err();
        assert_eq!(e.field(), Some("tools[0].type"));
        let e = tr(json!({"messages": [], "n": 2})).unwrap_err();
        assert_eq!(e.field(), Some("n"));
        assert!(tr(json!({"model": "x"})).unwrap_err().field() == Some("messages"));
    }

    #[test]
    fn images_data_and_http() {
        let out = tr(json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}},
            {"type": "text", "text": "what?"}
        ]}]}))
        .unwrap();
        assert_eq!(
            out["messages"][0]["content"],
            json!([
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                {"type": "text", "text": "what?"}
            ])
        );
        let e = tr(json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "ftp://x"}}]}]}))
        .unwrap_err();
        assert_eq!(e.field(), Some("messages[0].content[0].image_url.url"));
    }

    #[test]
    fn tool_choice_variants() {
        let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
        for (c, want) in [
            (json!("auto"), json!({"type": "auto"})),
            (json!("none"), json!({"type": "none"})),
            (json!("required"), json!({"type": "any"})),
            (
                json!({"type": "function", "function": {"name": "f"}}),
                json!({"type": "tool", "name": "f"}),
            ),
        ] {
            let out = tr(json!({"messages": [], "tools": tools, "tool_choice": c})).unwrap();
            assert_eq!(out["tool_choice"], want);
        }
        let out =
            tr(json!({"messages": [], "tools": tools, "parallel_tool_calls": false})).unwrap();
        assert_eq!(
            out["tool_choice"],
            json!({"type": "auto", "disable_parallel_tool_use": true})
        );
        let out = tr(json!({"messages": [], "tool_choice": "auto"})).unwrap();
        assert!(out.get("tool_choice").is_none());
    }

    #[test]
    fn thinking_budget_and_max_tokens() {
        let out =
            tr(json!({"messages": [], "reasoning_effort": "medium", "temperature": 0.2})).unwrap();
        assert_eq!(
            out["thinking"],
            json!({"type": "enabled", "budget_tokens": 4096})
        );
        assert_eq!(out["max_tokens"], 4096 + 4096);
        assert!(out.get("temperature").is_none());
        let out = tr(json!({"messages": [], "reasoning_effort": "low", "max_completion_tokens": 8000, "max_tokens": 5})).unwrap();
        assert_eq!(out["max_tokens"], 8000);
        let out = tr(json!({"messages": [], "thinking": {"type": "enabled", "budget_tokens": 2000}, "max_tokens": 500})).unwrap();
        assert_eq!(out["max_tokens"], 2500);
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        let out = tr(json!({"messages": [], "reasoning_effort": "high", "tools": tools, "tool_choice": "required", "max_tokens": 100})).unwrap();
        assert!(out.get("thinking").is_none());
        assert_eq!(out["max_tokens"], 100);
        let out =
            tr(json!({"messages": [], "temperature": 1.7, "stop": "END", "user": "u-1"})).unwrap();
        assert_eq!(out["temperature"], 1.0);
        assert_eq!(out["stop_sequences"], json!(["END"]));
        assert_eq!(out["metadata"], json!({"user_id": "u-1"}));
        let out = tr(json!({"messages": [], "metadata": {"user": "u-2"}, "stream": true})).unwrap();
        assert_eq!(out["metadata"], json!({"user_id": "u-2"}));
        assert_eq!(out["stream"], true);
    }
}
