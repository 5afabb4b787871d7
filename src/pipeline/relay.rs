//! Relay stage: writes the upstream's answer to the client. JSON bodies go out as the upstream's
//! bytes plus the `tierflow` object; SSE streams go out event by event as they arrive, with the
//! routing metadata in a last chunk before `[DONE]`. Once the client has bytes, an upstream
//! failure becomes a final SSE error event, then `[DONE]`.
//!
//! When client and upstream speak different dialects (OpenAI chat completions vs Anthropic
//! Messages) the answer is translated on the way: whole bodies at once, streams event by event.

use std::time::Instant;

use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;

use crate::http::chunked::{write_chunk, write_last_chunk};
use crate::http::client::BodyReader;
use crate::http::{response, sse};

use super::account::RouteMeta;
use super::forward::Forwarded;
use super::parse::{find_usage, top_level_members, usage_of, Member, Usage};
use super::security::{SseItem, SseRehydrator};
use super::Worker;
use crate::providers::anthropic::{
    self as anthropic, ChatToMessagesStream, ChunkMeta, MessagesToChatStream,
};
use crate::scanner::Vault;

/// How a relayed exchange ended, for accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The client went away; the upstream request was abandoned (cancelled).
    ClientGone,
    /// The upstream broke after the client had bytes.
    UpstreamBroken,
    /// The upstream broke before the client had bytes (answered with an error).
    UpstreamFailed,
}

pub struct Relayed {
    pub outcome: Outcome,
    pub usage: Option<Usage>,
    pub status: u16,
    /// Keep the downstream connection open afterwards.
    pub keep_alive: bool,
}

/// Which dialects meet in one exchange. `model` is the upstream model name the translated answer
/// carries.
#[derive(Debug, Clone, Copy)]
pub enum Dialects<'a> {
    /// OpenAI client, OpenAI upstream: bytes pass through.
    OpenAi,
    /// OpenAI client, Anthropic upstream: answers become chat completions.
    AnthropicUpstream { model: &'a str },
    /// Anthropic client, OpenAI upstream: answers become Messages.
    AnthropicClient {
        model: &'a str,
        input_tokens_hint: u32,
    },
    /// Anthropic on both sides: bytes pass through.
    Anthropic,
}

impl Dialects<'_> {
    pub fn client_is_anthropic(&self) -> bool {
        matches!(self, Dialects::AnthropicClient { .. } | Dialects::Anthropic)
    }
}

fn from_anthropic_usage(u: anthropic::Usage) -> Usage {
    Usage {
        prompt_tokens: u64::from(u.prompt_tokens),
        completion_tokens: u64::from(u.completion_tokens),
    }
}

/// `usage` of an Anthropic Messages response body (cached prompt tokens counted as prompt).
fn anthropic_body_usage(body: &[u8]) -> Option<Usage> {
    #[derive(serde::Deserialize)]
    struct U {
        #[serde(default)]
        input_tokens: Option<u64>,
        #[serde(default)]
        output_tokens: Option<u64>,
        #[serde(default)]
        cache_creation_input_tokens: Option<u64>,
        #[serde(default)]
        cache_read_input_tokens: Option<u64>,
    }
    #[derive(serde::Deserialize)]
    struct M {
        #[serde(default)]
        usage: Option<U>,
    }
    let u = serde_json::from_slice::<M>(body).ok()?.usage?;
    Some(Usage {
        prompt_tokens: u.input_tokens.unwrap_or(0)
            + u.cache_creation_input_tokens.unwrap_or(0)
            + u.cache_read_input_tokens.unwrap_or(0),
        completion_tokens: u.output_tokens.unwrap_or(0),
    })
}

/// `error.message` of an OpenAI error body, or a message naming the status.
fn openai_error_message(status: u16, body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct E {
        message: String,
    }
    #[derive(serde::Deserialize)]
    struct B {
        error: E,
    }
    match serde_json::from_slice::<B>(body) {
        Ok(b) if !b.error.message.is_empty() => b.error.message,
        _ => format!("upstream returned HTTP {status}"),
    }
}

/// An Anthropic `error` SSE event.
fn anthropic_error_event(out: &mut Vec<u8>, message: &str) {
    out.extend_from_slice(b"event: error\ndata: ");
    out.extend_from_slice(&anthropic::error_body_anthropic(502, message));
    out.extend_from_slice(b"\n\n");
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Writes `out` to the client and clears it.
pub async fn flush(stream: &mut TcpStream, out: &mut Vec<u8>) -> std::io::Result<()> {
    let buf = std::mem::take(out);
    let (res, mut buf) = stream.write_all(buf).await;
    buf.clear();
    *out = buf;
    res.map(|_| ())
}

fn write_meta_headers(out: &mut Vec<u8>, meta: &RouteMeta, overhead_us: u64) {
    response::header(out, "X-TierFlow-Model", meta.routed_model.as_bytes());
    response::header_num(out, "X-TierFlow-Tier", meta.tier as u64);
    response::header(out, "X-TierFlow-Category", meta.category.as_bytes());
    response::header(out, "X-TierFlow-Reason", meta.reason.as_bytes());
    response::header(out, "X-TierFlow-Security", meta.security.as_bytes());
    response::header(out, "X-Cache", meta.cache_status.as_bytes());
    if !meta.fallbacks.is_empty() {
        response::header_num(out, "X-TierFlow-Fallbacks", meta.fallbacks.len() as u64);
    }
    if let Some(c) = &meta.compression {
        response::header_num(out, "X-TierFlow-Compressed-Tokens", c.tokens);
    }
    response::header_num(out, "X-TierFlow-Overhead-Us", overhead_us);
}

/// Relays a non-streaming response (or any non-SSE response, errors included).
#[allow(clippy::too_many_arguments)]
pub async fn relay_json(
    worker: &Worker,
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    mut fwd: Forwarded,
    meta: &mut RouteMeta,
    keep_alive: bool,
    pre_upstream_us: u64,
    dialects: Dialects<'_>,
    vault: Option<&Vault>,
) -> Relayed {
    let anthropic_client = dialects.client_is_anthropic();
    let mut body = Vec::with_capacity(match fwd.head.framing {
        crate::http::client::ResponseFraming::Length(n) => (n as usize).min(1 << 20) + 256,
        _ => 4096,
    });
    let mut reader = BodyReader::new(fwd.head.framing);
    loop {
        match reader
            .read_some(&mut fwd.conn, &mut body, fwd.idle_timeout_ms)
            .await
        {
            Ok(true) => break,
            Ok(false) => {
                if body.len() > 64 << 20 {
                    return fail_before_bytes(
                        stream,
                        out,
                        meta,
                        "upstream response larger than 64 MiB",
                        keep_alive,
                        anthropic_client,
                    )
                    .await;
                }
            }
            Err(e) => {
                worker.counters.upstream_errors.inc();
                let msg = format!("upstream {} failed mid-response: {e}", meta.routed_model);
                return fail_before_bytes(stream, out, meta, &msg, keep_alive, anthropic_client)
                    .await;
            }
        }
    }
    let post_start = Instant::now();
    if let Some(v) = vault {
        // The request was scrubbed: put the originals back (JSON-aware) before any translation.
        body = v.rehydrate(&body);
    }
    if fwd.head.keep_alive {
        worker.pool.checkin(fwd.conn, fwd.pool_max_idle);
    }
    let status = fwd.head.status;
    let mut is_json = fwd
        .head
        .content_type
        .as_deref()
        .is_some_and(|c| c.contains("json"));
    let mut translated = true;
    // The member map of the body as relayed, when already computed (the body is not rewritten).
    let mut known_members: Option<Option<Vec<Member>>> = None;
    let usage = match dialects {
        Dialects::OpenAi => {
            translated = false;
            if status == 200 && meta.cache_capture && is_json {
                meta.captured = Some(crate::cache::CachedBody::Json(
                    body.clone().into_boxed_slice(),
                ));
            }
            if status == 200 {
                let members = top_level_members(&body);
                let usage = members.as_deref().and_then(|m| usage_of(&body, m));
                known_members = Some(members);
                usage
            } else {
                None
            }
        }
        Dialects::Anthropic => {
            translated = false;
            if status == 200 {
                anthropic_body_usage(&body)
            } else {
                None
            }
        }
        Dialects::AnthropicUpstream { model } => {
            if status == 200 {
                match anthropic::messages_response_to_chat(&body, model) {
                    Ok(b) => body = b,
                    Err(e) => {
                        let msg = format!(
                            "upstream {} sent an unreadable Messages response: {e}",
                            meta.routed_model
                        );
                        return fail_before_bytes(
                            stream,
                            out,
                            meta,
                            &msg,
                            keep_alive,
                            anthropic_client,
                        )
                        .await;
                    }
                }
                find_usage(&body)
            } else {
                body = anthropic::anthropic_error_to_chat(status, &body);
                None
            }
        }
        Dialects::AnthropicClient { model, .. } => {
            if status == 200 {
                let usage = find_usage(&body);
                match anthropic::chat_response_to_messages(&body, model) {
                    Ok(b) => body = b,
                    Err(e) => {
                        let msg = format!(
                            "upstream {} sent an unreadable chat completion: {e}",
                            meta.routed_model
                        );
                        return fail_before_bytes(
                            stream,
                            out,
                            meta,
                            &msg,
                            keep_alive,
                            anthropic_client,
                        )
                        .await;
                    }
                }
                usage
            } else {
                body =
                    anthropic::error_body_anthropic(status, &openai_error_message(status, &body));
                None
            }
        }
    };
    if translated {
        is_json = true;
    }
    meta.set_usage(usage);
    // Add the `tierflow` object to a JSON object body: before its closing brace.
    // (end of the object, whether it has members)
    let mut insert_at = None;
    if status == 200 && is_json {
        if let Some(end) = body.iter().rposition(|b| !b.is_ascii_whitespace()) {
            if body[end] == b'}' {
                let members = match known_members {
                    Some(m) => m,
                    None => top_level_members(&body),
                };
                if let Some(m) = members {
                    insert_at = Some((end, !m.is_empty()));
                }
            }
        }
    }
    response::begin(out, status, keep_alive);
    let overhead = pre_upstream_us + post_start.elapsed().as_micros() as u64;
    write_meta_headers(out, meta, overhead);
    if let Some(rid) = &fwd.head.request_id {
        response::header(out, "X-Upstream-Request-Id", rid.as_bytes());
    }
    let content_type = match (translated, fwd.head.content_type.clone()) {
        (false, Some(c)) => c,
        _ => "application/json".into(),
    };
    match insert_at {
        Some((end, has_members)) => {
            let mut obj = String::with_capacity(256);
            meta.write_json(&mut obj);
            let extra = obj.len() + 11 + usize::from(has_members);
            response::header(out, "Content-Type", content_type.as_bytes());
            response::header_num(out, "Content-Length", (body.len() + extra) as u64);
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&body[..end]);
            if has_members {
                out.push(b',');
            }
            out.extend_from_slice(b"\"tierflow\":");
            out.extend_from_slice(obj.as_bytes());
            out.extend_from_slice(&body[end..]);
        }
        None => response::finish_with_body(out, &content_type, &body),
    }
    let ok = flush(stream, out).await.is_ok();
    Relayed {
        outcome: if ok { Outcome::Ok } else { Outcome::ClientGone },
        usage,
        status,
        keep_alive: keep_alive && ok,
    }
}

async fn fail_before_bytes(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    meta: &RouteMeta,
    message: &str,
    keep_alive: bool,
    anthropic_client: bool,
) -> Relayed {
    let err = crate::error::GatewayError::UpstreamFailed {
        message: message.to_string(),
    };
    out.clear();
    response::begin(out, err.status(), keep_alive);
    write_meta_headers(out, meta, 0);
    let body = if anthropic_client {
        anthropic::error_body_anthropic(err.status(), message)
    } else {
        err.to_json()
    };
    response::finish_with_body(out, "application/json", &body);
    let ok = flush(stream, out).await.is_ok();
    Relayed {
        outcome: Outcome::UpstreamFailed,
        usage: None,
        status: 502,
        keep_alive: keep_alive && ok,
    }
}

/// Per-stream translation state (see [`Dialects`]).
enum Xlate {
    None,
    FromAnthropic(MessagesToChatStream),
    ToAnthropic(ChatToMessagesStream),
    /// Pass-through; the translator only reads the usage.
    Anthropic(MessagesToChatStream, Vec<u8>),
}

/// Relays an SSE stream event by event.
#[allow(clippy::too_many_arguments)]
pub async fn relay_sse(
    worker: &Worker,
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    mut fwd: Forwarded,
    meta: &mut RouteMeta,
    keep_alive: bool,
    pre_upstream_us: u64,
    client_wants_usage: bool,
    dialects: Dialects<'_>,
    vault: Option<&Vault>,
) -> Relayed {
    let mut reader = BodyReader::new(fwd.head.framing);
    let upstream_anthropic = matches!(
        dialects,
        Dialects::AnthropicUpstream { .. } | Dialects::Anthropic
    );
    let mut rehydrator = vault.map(|v| SseRehydrator::new(v, upstream_anthropic));
    let mut rh_events: Vec<SseItem> = Vec::new();
    let mut pending: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk: Vec<u8> = Vec::with_capacity(8192);
    let mut head_written = false;
    let mut usage: Option<Usage> = None;
    let mut saw_done = false;
    let mut first_chunk_fields: Option<(String, String, String)> = None; // id, created, model
    let mut completion_chars: u64 = 0;
    // Recording for the response cache (OpenAI streams only; the chat path decides).
    let mut recorder = (meta.cache_capture && matches!(dialects, Dialects::OpenAi))
        .then(|| crate::cache::StreamRecorder::new(1 << 20));
    let status = fwd.head.status;
    let mut xlate = match dialects {
        Dialects::OpenAi => Xlate::None,
        Dialects::AnthropicUpstream { model } => Xlate::FromAnthropic(MessagesToChatStream::new(
            ChunkMeta {
                id: None,
                model,
                created_s: now_s(),
            },
            client_wants_usage,
        )),
        Dialects::AnthropicClient {
            model,
            input_tokens_hint,
        } => Xlate::ToAnthropic(ChatToMessagesStream::new(model, None, input_tokens_hint)),
        Dialects::Anthropic => Xlate::Anthropic(
            MessagesToChatStream::new(
                ChunkMeta {
                    id: Some(""),
                    model: "",
                    created_s: 0,
                },
                false,
            ),
            Vec::with_capacity(1024),
        ),
    };
    // A translator met an event it cannot translate: its terminal event is written; stop reading.
    let mut stopped = false;
    let broken: Option<String> = loop {
        let res = reader
            .read_some(&mut fwd.conn, &mut pending, fwd.idle_timeout_ms)
            .await;
        let (done, err) = match res {
            Ok(d) => (d, None),
            Err(e) => (true, Some(e.to_string())),
        };
        let n = if done && err.is_none() {
            pending.len()
        } else {
            sse::complete_prefix(&pending)
        };
        chunk.clear();
        // A scrubbed request's events go through the rehydrator first (it may split or add events).
        rh_events.clear();
        if let Some(r) = rehydrator.as_mut() {
            for ev in sse::events(&pending[..n]) {
                let parsed = sse::parse_event(ev);
                if parsed.has_data {
                    r.event(parsed.event.unwrap_or(b""), &parsed.data, &mut rh_events);
                }
            }
        }
        let direct = rehydrator.is_none().then(|| {
            sse::events(&pending[..n])
                .map(sse::parse_event)
                .filter(|p| p.has_data)
                .map(|p| (p.event, p.data))
        });
        let rewritten = rehydrator.is_some().then(|| {
            rh_events.iter().map(|(e, d)| {
                (
                    Some(e.as_slice()).filter(|e| !e.is_empty()),
                    std::borrow::Cow::Borrowed(d.as_slice()),
                )
            })
        });
        // (comments and keep-alive pings carry nothing for the client and are dropped)
        for (ev_name, ev_data) in direct
            .into_iter()
            .flatten()
            .chain(rewritten.into_iter().flatten())
        {
            let data: &[u8] = &ev_data;
            let event_name = ev_name
                .and_then(|e| std::str::from_utf8(e).ok())
                .unwrap_or("");
            match &mut xlate {
                Xlate::None => {}
                Xlate::FromAnthropic(s) => {
                    let start = chunk.len();
                    stopped = s.on_event(event_name, data, &mut chunk).is_err();
                    completion_chars += count_content_chars(&chunk[start..]);
                    if stopped {
                        break;
                    }
                    continue;
                }
                Xlate::ToAnthropic(s) => {
                    if memchr_usage(data) {
                        if let Some(u) = find_usage(data) {
                            usage = Some(u);
                        }
                    }
                    completion_chars += count_content_chars(data);
                    stopped = s.on_data(data, &mut chunk).is_err();
                    if stopped {
                        break;
                    }
                    continue;
                }
                Xlate::Anthropic(s, scratch) => {
                    scratch.clear();
                    let _ = s.on_event(event_name, data, scratch);
                    completion_chars += count_content_chars(scratch);
                    if !event_name.is_empty() {
                        chunk.extend_from_slice(b"event: ");
                        chunk.extend_from_slice(event_name.as_bytes());
                        chunk.push(b'\n');
                    }
                    chunk.extend_from_slice(b"data: ");
                    chunk.extend_from_slice(data);
                    chunk.extend_from_slice(b"\n\n");
                    continue;
                }
            }
            if data == b"[DONE]" {
                saw_done = true;
                continue;
            }
            if let Some(r) = recorder.as_mut() {
                r.push_data(data);
            }
            if first_chunk_fields.is_none() {
                first_chunk_fields = chunk_identity(data);
            }
            let is_usage_chunk = memchr_usage(data) && {
                let u = find_usage(data);
                if u.is_some() {
                    usage = u;
                }
                u.is_some() && is_empty_choices(data)
            };
            if is_usage_chunk && !client_wants_usage {
                continue; // asked upstream for accounting only; the client did not ask for it
            }
            completion_chars += count_content_chars(data);
            chunk.extend_from_slice(b"data: ");
            chunk.extend_from_slice(data);
            chunk.extend_from_slice(b"\n\n");
        }
        pending.drain(..n);
        if !head_written && (!chunk.is_empty() || done || stopped) {
            out.clear();
            response::begin(out, status, keep_alive);
            let overhead = pre_upstream_us + 1;
            write_meta_headers(out, meta, overhead);
            response::finish_chunked_head(out, "text/event-stream");
            head_written = true;
        }
        if !chunk.is_empty() {
            write_chunk(out, &chunk);
        }
        if !out.is_empty() && flush(stream, out).await.is_err() {
            // Client gone: dropping the upstream connection cancels the upstream request.
            worker.counters.client_cancels.inc();
            let u = translator_usage(&xlate).or(usage);
            meta.set_usage(u.or(Some(estimate_usage(meta, completion_chars))));
            return Relayed {
                outcome: Outcome::ClientGone,
                usage: u,
                status,
                keep_alive: false,
            };
        }
        if let Some(e) = err {
            break Some(e);
        }
        if done || stopped {
            break None;
        }
    };
    if let (None, Some(mut r)) = (&broken, recorder.take()) {
        if saw_done {
            r.push_data(b"[DONE]");
        }
        meta.captured = r.finish();
    }
    if broken.is_none() && !stopped && fwd.head.keep_alive && reader.is_done() {
        worker.pool.checkin(fwd.conn, fwd.pool_max_idle);
    }
    let final_usage = translator_usage(&xlate).or(usage).or_else(|| {
        broken
            .as_ref()
            .map(|_| estimate_usage(meta, completion_chars))
    });
    meta.set_usage(final_usage);
    chunk.clear();
    if broken.is_some() {
        worker.counters.upstream_errors.inc();
    }
    let broken_message = broken
        .as_ref()
        .map(|e| format!("upstream {} failed mid-stream: {e}", meta.routed_model));
    let mut obj = String::with_capacity(256);
    meta.write_json(&mut obj);
    match &mut xlate {
        Xlate::None => {
            if let Some(message) = &broken_message {
                let err = crate::error::GatewayError::UpstreamFailed {
                    message: message.clone(),
                };
                chunk.extend_from_slice(b"data: ");
                chunk.extend_from_slice(&err.to_json());
                chunk.extend_from_slice(b"\n\n");
            }
            // Routing metadata rides in a last chunk before [DONE].
            chunk.extend_from_slice(b"data: {");
            if let Some((id, created, model)) = &first_chunk_fields {
                chunk.extend_from_slice(
                    format!("\"id\":{id},\"created\":{created},\"model\":{model},").as_bytes(),
                );
            }
            chunk.extend_from_slice(
                b"\"object\":\"chat.completion.chunk\",\"choices\":[],\"tierflow\":",
            );
            chunk.extend_from_slice(obj.as_bytes());
            chunk.extend_from_slice(b"}\n\n");
            let _ = saw_done;
            chunk.extend_from_slice(b"data: [DONE]\n\n");
        }
        Xlate::FromAnthropic(s) => match &broken_message {
            Some(message) if !s.is_done() => {
                let err = crate::error::GatewayError::UpstreamFailed {
                    message: message.clone(),
                };
                chunk.extend_from_slice(b"data: ");
                chunk.extend_from_slice(&err.to_json());
                chunk.extend_from_slice(b"\n\ndata: [DONE]\n\n");
            }
            _ => s.finish_with(Some(obj.as_bytes()), &mut chunk),
        },
        Xlate::ToAnthropic(s) => match &broken_message {
            Some(message) if !s.is_done() => anthropic_error_event(&mut chunk, message),
            _ => s.finish(&mut chunk),
        },
        Xlate::Anthropic(..) => {
            if let Some(message) = &broken_message {
                anthropic_error_event(&mut chunk, message);
            }
        }
    }
    write_chunk(out, &chunk);
    write_last_chunk(out);
    let ok = flush(stream, out).await.is_ok();
    let failed = broken.is_some() || stopped;
    Relayed {
        outcome: if failed {
            Outcome::UpstreamBroken
        } else if ok {
            Outcome::Ok
        } else {
            Outcome::ClientGone
        },
        usage: final_usage,
        status,
        keep_alive: keep_alive && ok && broken.is_none(),
    }
}

/// Usage read by a translator from Anthropic events, if any.
fn translator_usage(x: &Xlate) -> Option<Usage> {
    match x {
        Xlate::FromAnthropic(s) | Xlate::Anthropic(s, _) => s.usage().map(from_anthropic_usage),
        _ => None,
    }
}

/// Serves a cached answer (`X-Cache: HIT`) in the shape the client asked for: JSON as stored (or
/// assembled from a recorded stream), streams replayed as SSE (or synthesised from a JSON answer),
/// with the routing metadata added like a live answer. No upstream is contacted.
#[allow(clippy::too_many_arguments)]
pub async fn serve_cached(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    entry: &crate::cache::Entry,
    meta: &mut RouteMeta,
    keep_alive: bool,
    want_stream: bool,
    client_wants_usage: bool,
    started: Instant,
) -> Relayed {
    use crate::cache::{replay_json, replay_sse_into, CachedBody};
    let usage = match &entry.body {
        CachedBody::Json(b) => find_usage(b),
        CachedBody::Stream {
            chunks,
            usage_chunk,
        } => usage_chunk
            .and_then(|i| chunks.get(i))
            .and_then(|c| find_usage(c)),
    };
    meta.set_usage(usage);
    // Nothing was spent upstream: the whole flagship price is saved.
    if let Some(u) = &usage {
        meta.saved_vs_flagship = meta.flagship_price.map(|f| super::account::cost_usd(&f, u));
    }
    meta.estimated_cost_usd = Some(0.0);
    meta.cache_status = "HIT";
    out.clear();
    if want_stream {
        let mut events = Vec::with_capacity(4096);
        replay_sse_into(entry, client_wants_usage, &mut events);
        // Metadata chunk before the final [DONE].
        let done = b"data: [DONE]\n\n";
        if events.ends_with(done) {
            events.truncate(events.len() - done.len());
        }
        let mut obj = String::with_capacity(256);
        meta.write_json(&mut obj);
        events.extend_from_slice(
            b"data: {\"object\":\"chat.completion.chunk\",\"choices\":[],\"tierflow\":",
        );
        events.extend_from_slice(obj.as_bytes());
        events.extend_from_slice(b"}\n\ndata: [DONE]\n\n");
        response::begin(out, 200, keep_alive);
        write_meta_headers(out, meta, started.elapsed().as_micros() as u64);
        response::finish_chunked_head(out, "text/event-stream");
        write_chunk(out, &events);
        write_last_chunk(out);
    } else {
        let body = match replay_json(entry) {
            Ok(b) => b.into_owned(),
            Err(_) => Vec::new(),
        };
        let mut obj = String::with_capacity(256);
        meta.write_json(&mut obj);
        let end = body
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .filter(|&e| body[e] == b'}');
        response::begin(out, 200, keep_alive);
        write_meta_headers(out, meta, started.elapsed().as_micros() as u64);
        let mut full = Vec::with_capacity(body.len() + obj.len() + 16);
        match end {
            Some(e) => {
                full.extend_from_slice(&body[..e]);
                full.extend_from_slice(b",\"tierflow\":");
                full.extend_from_slice(obj.as_bytes());
                full.extend_from_slice(&body[e..]);
            }
            None => full.extend_from_slice(&body),
        }
        response::finish_with_body(out, "application/json", &full);
    }
    let ok = flush(stream, out).await.is_ok();
    Relayed {
        outcome: if ok { Outcome::Ok } else { Outcome::ClientGone },
        usage,
        status: 200,
        keep_alive: keep_alive && ok,
    }
}

/// Whether a chunk may carry a usage object: some `"usage":` followed by `{` (a `null` usage, as
/// most providers send on every chunk, is ruled out without parsing). `find_usage` decides.
fn memchr_usage(data: &[u8]) -> bool {
    static USAGE: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"usage\""));
    USAGE.find_iter(data).any(|i| {
        let rest = &data[i + 7..];
        let mut j = 0;
        while j < rest.len() && matches!(rest[j], b' ' | b'\t' | b'\n' | b'\r' | b':') {
            j += 1;
        }
        rest.get(j) == Some(&b'{')
    })
}

fn is_empty_choices(data: &[u8]) -> bool {
    let Some(members) = top_level_members(data) else {
        return false;
    };
    members
        .iter()
        .find(|m| m.key_is(data, "choices"))
        .is_none_or(|m| {
            data[m.value.clone()]
                .iter()
                .filter(|b| !b.is_ascii_whitespace())
                .eq(b"[]".iter())
        })
}

/// `id`, `created` and `model` of a chunk, as raw JSON values.
fn chunk_identity(data: &[u8]) -> Option<(String, String, String)> {
    let members = top_level_members(data)?;
    let get = |k: &str| {
        members
            .iter()
            .find(|m| m.key_is(data, k))
            .map(|m| String::from_utf8_lossy(&data[m.value.clone()]).into_owned())
    };
    Some((
        get("id")?,
        get("created").unwrap_or_else(|| "0".into()),
        get("model").unwrap_or_else(|| "\"\"".into()),
    ))
}

/// Rough size of the content a chunk carries (for billing a stream that ended without usage).
fn count_content_chars(data: &[u8]) -> u64 {
    static CONTENT: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"content\":\""));
    let mut n = 0u64;
    let mut i = 0;
    while let Some(at) = CONTENT.find(&data[i..]) {
        // The string's bytes up to its closing quote, an escape sequence counted once.
        let mut j = i + at + CONTENT.needle().len();
        loop {
            match memchr::memchr2(b'"', b'\\', &data[j..]) {
                Some(off) if data[j + off] == b'\\' => {
                    n += off as u64 + 1;
                    j += off + 2;
                    if j >= data.len() {
                        return n;
                    }
                }
                Some(off) => {
                    n += off as u64;
                    j += off + 1;
                    break;
                }
                None => return n + (data.len() - j) as u64,
            }
        }
        i = j;
    }
    n
}

/// Usage estimate for a stream that broke or was cancelled without a usage chunk: ~4 characters
/// per token for the relayed content, the request's estimate for the prompt.
fn estimate_usage(meta: &RouteMeta, completion_chars: u64) -> Usage {
    Usage {
        prompt_tokens: meta.prompt_tokens_estimate,
        completion_tokens: completion_chars.div_ceil(4),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_and_usage_scans() {
        let chunk = br#"{"choices":[{"delta":{"content":"ab\"c"}},{"delta":{"content":"xyz"}}],"usage":null}"#;
        assert_eq!(count_content_chars(chunk), 7);
        assert_eq!(count_content_chars(br#"{"content":"unterminated"#), 12);
        assert_eq!(count_content_chars(br#"{"content":"ends in "#), 8);
        assert!(!memchr_usage(chunk));
        assert!(memchr_usage(
            br#"{"choices":[],"usage": {"prompt_tokens":1}}"#
        ));
        assert!(!memchr_usage(
            br#"{"choices":[{"delta":{"content":"usage"}}]}"#
        ));
    }

    #[test]
    fn anthropic_usage_counts_cache_as_prompt() {
        let body = br#"{"id":"msg_1","usage":{"input_tokens":10,"cache_creation_input_tokens":5,"cache_read_input_tokens":null,"output_tokens":7}}"#;
        assert_eq!(
            anthropic_body_usage(body),
            Some(Usage {
                prompt_tokens: 15,
                completion_tokens: 7
            })
        );
        assert_eq!(anthropic_body_usage(br#"{"id":"msg_1"}"#), None);
        assert_eq!(anthropic_body_usage(b"not json"), None);
    }

    #[test]
    fn openai_error_message_or_status() {
        assert_eq!(
            openai_error_message(400, br#"{"error":{"message":"bad temp","type":"x"}}"#),
            "bad temp"
        );
        assert_eq!(
            openai_error_message(502, b"<html>"),
            "upstream returned HTTP 502"
        );
        assert_eq!(
            openai_error_message(500, br#"{"error":{"message":""}}"#),
            "upstream returned HTTP 500"
        );
    }

    #[test]
    fn anthropic_error_event_is_one_complete_event() {
        let mut out = Vec::new();
        anthropic_error_event(&mut out, "upstream x failed mid-stream: reset");
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("event: error\ndata: ") && text.ends_with("\n\n"),
            "{text}"
        );
        let data: serde_json::Value =
            serde_json::from_str(text.lines().nth(1).unwrap().strip_prefix("data: ").unwrap())
                .unwrap();
        assert_eq!(data["type"], "error");
        assert_eq!(data["error"]["type"], "api_error");
    }

    #[test]
    fn dialect_sides() {
        assert!(!Dialects::OpenAi.client_is_anthropic());
        assert!(!Dialects::AnthropicUpstream { model: "m" }.client_is_anthropic());
        assert!(Dialects::AnthropicClient {
            model: "m",
            input_tokens_hint: 0
        }
        .client_is_anthropic());
        assert!(Dialects::Anthropic.client_is_anthropic());
    }
}
