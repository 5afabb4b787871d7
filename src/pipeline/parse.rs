//! Parse stage: the chat request body, read in place with simd-json (strings borrow the scratch
//! copy), validated field by field so a bad request gets 400 naming the field; plus a byte-level
//! map of the top-level members of the ORIGINAL body so that everything the gateway does not
//! change is forwarded as the client's own bytes.

use std::borrow::Cow;
use std::ops::Range;

use simd_json::prelude::*;

use crate::error::GatewayError;

/// One top-level member of a JSON object, as byte ranges into the original body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The key without its quotes (raw, possibly escaped).
    pub key: Range<usize>,
    pub value: Range<usize>,
}

impl Member {
    pub fn key_is(&self, body: &[u8], name: &str) -> bool {
        let raw = &body[self.key.clone()];
        if raw.contains(&b'\\') {
            // Escaped key (`"mo\u0064el"`): decode it the slow way; this is rare.
            let quoted = &body[self.key.start - 1..self.key.end + 1];
            return serde_json::from_slice::<String>(quoted)
                .map(|k| k == name)
                .unwrap_or(false);
        }
        raw == name.as_bytes()
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// Index just past the string starting at `i` (which must be `"`).
/// Jumps from one quote or backslash to the next with `memchr2` (SIMD), so long message texts cost
/// a few vector compares instead of a branch per byte.
fn skip_string(b: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    while i < b.len() {
        i += memchr::memchr2(b'"', b'\\', &b[i..])?;
        match b[i] {
            b'"' => return Some(i + 1),
            _ => i += 2,
        }
    }
    None
}

/// Index just past the JSON value starting at `i`.
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

/// Maps the members of the top-level object in `body`. Only meaningful for a body that already
/// parsed as valid JSON; returns `None` if the structure is not an object.
pub fn top_level_members(body: &[u8]) -> Option<Vec<Member>> {
    let mut members = Vec::with_capacity(12);
    let mut i = skip_ws(body, 0);
    if body.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(body, i + 1);
    if body.get(i) == Some(&b'}') {
        return Some(members);
    }
    loop {
        if body.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = skip_string(body, i)?;
        let key = i + 1..key_end - 1;
        i = skip_ws(body, key_end);
        if body.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(body, i + 1);
        let v_end = skip_value(body, i)?;
        members.push(Member {
            key,
            value: i..v_end,
        });
        i = skip_ws(body, v_end);
        match body.get(i) {
            Some(b',') => i = skip_ws(body, i + 1),
            Some(b'}') => return Some(members),
            _ => return None,
        }
    }
}

/// The `route` object of a request (removed before forwarding).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteOptions {
    pub fallback: Option<bool>,
    pub latency_budget_ms: Option<u64>,
    pub max_cost_usd: Option<f64>,
    pub tier: Option<u8>,
}

/// One message's role and its text (text parts joined by `\n`), for classification and scanning.
#[derive(Debug, Clone)]
pub struct MessageText<'a> {
    pub role: &'a str,
    pub text: Cow<'a, str>,
}

/// What the gateway reads of a chat request. Borrows from the simd-json scratch buffer.
#[derive(Debug)]
pub struct ChatRequest<'a> {
    pub model: Cow<'a, str>,
    pub stream: bool,
    /// `stream_options.include_usage` as the client sent it.
    pub include_usage: bool,
    pub route: RouteOptions,
    pub has_tools: bool,
    pub has_audio: bool,
    /// Every text-bearing field of `messages` is in `messages[].text` (contents are strings or
    /// parts of the known types): a stage that looks for something in the text (compression's
    /// may-change check) can trust `messages` alone.
    pub texts_complete: bool,
    pub messages: Vec<MessageText<'a>>,
    pub max_tokens: Option<u64>,
    /// `temperature` when it is a number (the cache only stores deterministic requests).
    pub temperature: Option<f64>,
    /// `n` (choices asked for), default 1.
    pub n: u64,
}

const ROLES: [&str; 6] = [
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

fn invalid(param: impl Into<String>, msg: impl Into<String>) -> GatewayError {
    GatewayError::invalid(param, msg)
}

thread_local! {
    /// simd-json's working buffers, reused by every parse on this thread (one worker = one thread):
    /// no per-request allocation of the structural index or the string buffer.
    static JSON_BUFFERS: std::cell::RefCell<simd_json::Buffers> =
        std::cell::RefCell::new(simd_json::Buffers::new(16 * 1024));
}

type TapeValue<'t, 'i> = simd_json::tape::Value<'t, 'i>;
type TapeObject<'t, 'i> = simd_json::tape::Object<'t, 'i>;

/// The LAST member named `key` (what most JSON readers upstream keep when a key is repeated, so the
/// gateway judges the same value the provider will act on).
/// A string value borrowed for the input's lifetime (not the tape's).
fn string<'i>(v: TapeValue<'_, 'i>) -> Option<&'i str> {
    v.into_string()
}

fn member<'t, 'i>(obj: &TapeObject<'t, 'i>, key: &str) -> Option<TapeValue<'t, 'i>> {
    let mut found = None;
    for (k, v) in obj.iter() {
        if k == key {
            found = Some(v);
        }
    }
    found
}

/// Parses and validates a chat completions body in place (`scratch` is a copy the parser may
/// overwrite). `Err` is a 400 naming the field. Reads simd-json's tape directly: no map or
/// vector is built per JSON object, and every string (escapes decoded in place) borrows `scratch`.
pub fn parse_chat_request(scratch: &mut [u8]) -> Result<ChatRequest<'_>, GatewayError> {
    if scratch.is_empty() {
        return Err(GatewayError::malformed(
            "request body is empty; expected a JSON chat completions request",
        ));
    }
    JSON_BUFFERS.with(|buffers| {
        let mut fresh;
        let mut guard = buffers.try_borrow_mut();
        let buffers: &mut simd_json::Buffers = match guard.as_deref_mut() {
            Ok(b) => b,
            Err(_) => {
                fresh = simd_json::Buffers::new(scratch.len());
                &mut fresh
            }
        };
        let big = scratch.len() > 1 << 20;
        let parsed = match simd_json::to_tape_with_buffers(scratch, buffers) {
            Ok(tape) => chat_request_from_tape(tape.as_value()),
            Err(e) => Err(GatewayError::malformed(format!(
                "request body is not valid JSON: {e}"
            ))),
        };
        if big {
            // Do not keep megabytes of parser buffers per core after one huge request.
            *buffers = simd_json::Buffers::new(16 * 1024);
        }
        parsed
    })
}

fn chat_request_from_tape<'i>(value: TapeValue<'_, 'i>) -> Result<ChatRequest<'i>, GatewayError> {
    let Some(obj) = value.as_object() else {
        return Err(GatewayError::malformed(
            "request body must be a JSON object",
        ));
    };
    let model: &'i str = match member(&obj, "model") {
        Some(v) => match string(v) {
            Some(s) if !s.is_empty() => s,
            _ => return Err(invalid("model", "`model` must be a non-empty string")),
        },
        None => return Err(invalid("model", "`model` is required")),
    };
    let stream = match member(&obj, "stream") {
        None => false,
        Some(v) if v.is_null() => false,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| invalid("stream", "`stream` must be a boolean"))?,
    };
    let include_usage = match member(&obj, "stream_options") {
        None => false,
        Some(v) if v.is_null() => false,
        Some(v) => {
            let o = v
                .as_object()
                .ok_or_else(|| invalid("stream_options", "`stream_options` must be an object"))?;
            match member(&o, "include_usage") {
                None => false,
                Some(u) => u
                    .as_bool()
                    .ok_or_else(|| invalid("stream_options.include_usage", "must be a boolean"))?,
            }
        }
    };
    let route = match member(&obj, "route") {
        None => RouteOptions::default(),
        Some(v) if v.is_null() => RouteOptions::default(),
        Some(v) => parse_route(&v)?,
    };
    let has_tools = match member(&obj, "tools") {
        None => false,
        Some(v) if v.is_null() => false,
        Some(v) => !v
            .as_array()
            .ok_or_else(|| invalid("tools", "`tools` must be an array"))?
            .is_empty(),
    } || member(&obj, "functions")
        .is_some_and(|f| f.as_array().is_some_and(|a| !a.is_empty()));
    let max_tokens = member(&obj, "max_completion_tokens")
        .or_else(|| member(&obj, "max_tokens"))
        .and_then(|v| v.as_u64());
    let temperature = member(&obj, "temperature").and_then(|v| v.cast_f64());
    let n = member(&obj, "n").and_then(|v| v.as_u64()).unwrap_or(1);
    let has_audio_modality = member(&obj, "modalities")
        .and_then(|m| m.as_array())
        .is_some_and(|a| a.iter().any(|x| x.as_str() == Some("audio")));
    let messages_value = match member(&obj, "messages") {
        Some(v) => v
            .as_array()
            .ok_or_else(|| invalid("messages", "`messages` must be an array"))?,
        None => return Err(invalid("messages", "`messages` is required")),
    };
    if messages_value.is_empty() {
        return Err(invalid(
            "messages",
            "`messages` must contain at least one message",
        ));
    }
    let mut has_audio = has_audio_modality;
    let mut texts_complete = true;
    let mut has_tool_messages = false;
    let mut messages = Vec::with_capacity(messages_value.len());
    for (i, m) in messages_value.iter().enumerate() {
        let Some(m) = m.as_object() else {
            return Err(invalid(
                format!("messages[{i}]"),
                "each message must be an object",
            ));
        };
        let role: &'static str = match member(&m, "role") {
            Some(r) => match string(r) {
                Some(r) => match ROLES.iter().copied().find(|x| *x == r) {
                    Some(known) => known,
                    None => {
                        return Err(invalid(
                            format!("messages[{i}].role"),
                            format!(
                                "unknown role `{}`; expected one of {}",
                                r.chars().take(40).collect::<String>(),
                                ROLES.join(", ")
                            ),
                        ))
                    }
                },
                None => {
                    return Err(invalid(
                        format!("messages[{i}].role"),
                        "`role` must be a string",
                    ))
                }
            },
            None => return Err(invalid(format!("messages[{i}].role"), "`role` is required")),
        };
        if role == "tool" || role == "function" || member(&m, "tool_calls").is_some() {
            has_tool_messages = true;
        }
        let text: Cow<'i, str> = match member(&m, "content") {
            None => Cow::Borrowed(""),
            Some(c) if c.is_null() => Cow::Borrowed(""),
            Some(c) => {
                if let Some(s) = string(c) {
                    Cow::Borrowed(s)
                } else if let Some(parts) = c.as_array() {
                    let mut joined = String::new();
                    for (j, p) in parts.iter().enumerate() {
                        let Some(po) = p.as_object() else {
                            return Err(invalid(
                                format!("messages[{i}].content[{j}]"),
                                "content parts must be objects",
                            ));
                        };
                        let ty = member(&po, "type").and_then(string).ok_or_else(|| {
                            invalid(
                                format!("messages[{i}].content[{j}].type"),
                                "`type` is required",
                            )
                        })?;
                        match ty {
                            "text" | "input_text" => {
                                let t = member(&po, "text").and_then(string).ok_or_else(|| {
                                    invalid(
                                        format!("messages[{i}].content[{j}].text"),
                                        "`text` must be a string",
                                    )
                                })?;
                                if !joined.is_empty() {
                                    joined.push('\n');
                                }
                                joined.push_str(t);
                            }
                            "input_audio" | "audio" => has_audio = true,
                            "image_url" | "input_image" | "file" | "input_file" => {}
                            _ => texts_complete = false,
                        }
                    }
                    Cow::Owned(joined)
                } else {
                    return Err(invalid(
                        format!("messages[{i}].content"),
                        "`content` must be a string, an array of parts, or null",
                    ));
                }
            }
        };
        messages.push(MessageText { role, text });
    }
    Ok(ChatRequest {
        model: Cow::Borrowed(model),
        stream,
        include_usage,
        route,
        has_tools: has_tools || has_tool_messages,
        has_audio,
        texts_complete,
        messages,
        max_tokens,
        temperature,
        n,
    })
}

fn parse_route(v: &TapeValue<'_, '_>) -> Result<RouteOptions, GatewayError> {
    let o = v
        .as_object()
        .ok_or_else(|| invalid("route", "`route` must be an object"))?;
    let mut r = RouteOptions::default();
    for (k, v) in o.iter() {
        match k {
            "fallback" => {
                r.fallback = Some(
                    v.as_bool()
                        .ok_or_else(|| invalid("route.fallback", "must be a boolean"))?,
                )
            }
            "latency_budget_ms" => {
                r.latency_budget_ms = Some(v.as_u64().ok_or_else(|| {
                    invalid("route.latency_budget_ms", "must be a non-negative integer")
                })?)
            }
            "max_cost_usd" => {
                let x = v
                    .cast_f64()
                    .ok_or_else(|| invalid("route.max_cost_usd", "must be a number"))?;
                if !(x >= 0.0) {
                    return Err(invalid("route.max_cost_usd", "must be ≥ 0"));
                }
                r.max_cost_usd = Some(x);
            }
            "tier" => match v.as_u64() {
                Some(t @ 1..=4) => r.tier = Some(t as u8),
                _ => return Err(invalid("route.tier", "must be an integer from 1 to 4")),
            },
            other => {
                return Err(invalid(
                    format!("route.{}", other.chars().take(40).collect::<String>()),
                    "unknown field; expected fallback, latency_budget_ms, max_cost_usd or tier",
                ))
            }
        }
    }
    Ok(r)
}

/// Usage numbers of an OpenAI response or final stream chunk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// Reads `usage` from a chat.completion body or chunk, if present and not null.
pub fn find_usage(body: &[u8]) -> Option<Usage> {
    usage_of(body, &top_level_members(body)?)
}

/// `usage` of a body whose member map is already known.
pub fn usage_of(body: &[u8], members: &[Member]) -> Option<Usage> {
    let m = members.iter().find(|m| m.key_is(body, "usage"))?;
    let v = &body[m.value.clone()];
    if v.first() != Some(&b'{') {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct U {
        #[serde(default)]
        prompt_tokens: u64,
        #[serde(default)]
        completion_tokens: u64,
    }
    let u: U = serde_json::from_slice(v).ok()?;
    Some(Usage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
    })
}

/// Builds the body sent upstream from the client's original bytes: `model` replaced, `route`
/// removed, `stream_options.include_usage` forced on for streams (usage is needed for accounting),
/// and optionally `messages` replaced (prefix stripped or PII scrubbed). Every other member is
/// copied byte for byte.
pub fn build_upstream_body(
    original: &[u8],
    members: &[Member],
    upstream_model: &str,
    force_include_usage: bool,
    messages_override: Option<&[u8]>,
    out: &mut Vec<u8>,
) {
    out.reserve(original.len() + 64);
    out.push(b'{');
    let mut first = true;
    let mut saw_stream_options = false;
    let mut sep = |out: &mut Vec<u8>| {
        if !first {
            out.push(b',');
        }
        first = false;
    };
    for m in members {
        let key = &original[m.key.start - 1..m.key.end + 1];
        if m.key_is(original, "route") {
            continue;
        }
        if m.key_is(original, "model") {
            sep(out);
            out.extend_from_slice(b"\"model\":");
            let mut s = String::with_capacity(upstream_model.len() + 2);
            crate::error::push_json_str(&mut s, upstream_model);
            out.extend_from_slice(s.as_bytes());
            continue;
        }
        if let (true, Some(msgs)) = (m.key_is(original, "messages"), messages_override) {
            sep(out);
            out.extend_from_slice(b"\"messages\":");
            out.extend_from_slice(msgs);
            continue;
        }
        if force_include_usage && m.key_is(original, "stream_options") {
            saw_stream_options = true;
            sep(out);
            out.extend_from_slice(b"\"stream_options\":");
            let v = &original[m.value.clone()];
            let inner = top_level_members(v);
            match inner {
                Some(inner) => {
                    out.extend_from_slice(b"{\"include_usage\":true");
                    for im in inner.iter().filter(|im| !im.key_is(v, "include_usage")) {
                        out.push(b',');
                        out.extend_from_slice(&v[im.key.start - 1..im.value.end]);
                    }
                    out.push(b'}');
                }
                None => out.extend_from_slice(b"{\"include_usage\":true}"),
            }
            continue;
        }
        sep(out);
        out.extend_from_slice(key);
        out.push(b':');
        out.extend_from_slice(&original[m.value.clone()]);
    }
    if force_include_usage && !saw_stream_options {
        sep(out);
        out.extend_from_slice(b"\"stream_options\":{\"include_usage\":true}");
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<(bool, String), GatewayError> {
        let mut b = body.as_bytes().to_vec();
        let r = parse_chat_request(&mut b)?;
        Ok((r.stream, r.model.to_string()))
    }

    #[test]
    fn valid_request_parses() {
        let (stream, model) =
            parse(r#"{"model":"auto","stream":true,"messages":[{"role":"user","content":"hi"}]}"#)
                .unwrap();
        assert!(stream);
        assert_eq!(model, "auto");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (r#"{"messages":[]}"#, "model"),
            (r#"{"model":"a"}"#, "messages"),
            (r#"{"model":"a","messages":[]}"#, "messages"),
            (
                r#"{"model":"a","messages":[{"role":"user","content":"x"},{"content":"y"}]}"#,
                "messages[1].role",
            ),
            (
                r#"{"model":"a","messages":[{"role":"wizard","content":"x"}]}"#,
                "messages[0].role",
            ),
            (
                r#"{"model":"a","messages":[{"role":"user","content":5}]}"#,
                "messages[0].content",
            ),
            (
                r#"{"model":"a","messages":[{"role":"user","content":[{"text":"x"}]}]}"#,
                "messages[0].content[0].type",
            ),
            (
                r#"{"model":"a","stream":"yes","messages":[{"role":"user","content":"x"}]}"#,
                "stream",
            ),
            (
                r#"{"model":"a","route":{"tier":9},"messages":[{"role":"user","content":"x"}]}"#,
                "route.tier",
            ),
            (
                r#"{"model":7,"messages":[{"role":"user","content":"x"}]}"#,
                "model",
            ),
        ];
        for (body, param) in cases {
            let e = parse(body).unwrap_err();
            assert_eq!(e.param(), Some(param), "{body}");
            assert_eq!(e.status(), 400);
        }
        assert!(parse("not json")
            .unwrap_err()
            .to_string()
            .contains("not valid JSON"));
        assert!(parse("[1,2]").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn members_map_original_bytes() {
        let body = br#" { "model" : "auto", "messages":[{"role":"user","content":"a \"}\" b"}], "route":{"tier":2},"x":[1,{"y":"]"}], "n": -1.5e3 } "#;
        let m = top_level_members(body).unwrap();
        let keys: Vec<&[u8]> = m.iter().map(|m| &body[m.key.clone()]).collect();
        assert_eq!(keys, vec![&b"model"[..], b"messages", b"route", b"x", b"n"]);
        assert_eq!(&body[m[4].value.clone()], b"-1.5e3");
        let mut out = Vec::new();
        build_upstream_body(body, &m, "gpt-4o-mini", true, None, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["model"], "gpt-4o-mini");
        assert!(v.get("route").is_none());
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["messages"][0]["content"], "a \"}\" b");
        assert_eq!(v["x"][1]["y"], "]");
    }

    #[test]
    fn stream_options_merged() {
        let body =
            br#"{"model":"a","stream_options":{"include_usage":false,"other":1},"messages":[]}"#;
        let m = top_level_members(body).unwrap();
        let mut out = Vec::new();
        build_upstream_body(body, &m, "b", true, None, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v["stream_options"],
            serde_json::json!({"include_usage": true, "other": 1})
        );
    }

    #[test]
    fn usage_is_found() {
        let u = find_usage(br#"{"id":"x","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19}}"#);
        assert_eq!(
            u,
            Some(Usage {
                prompt_tokens: 12,
                completion_tokens: 7
            })
        );
        assert_eq!(find_usage(br#"{"usage":null}"#), None);
    }
}
