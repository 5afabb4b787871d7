//! Relay stage: writes the upstream's answer to the client. JSON bodies go out as the upstream's
//! bytes plus the `tierflow` object; SSE streams go out event by event as they arrive, with the
//! routing metadata in a last chunk before `[DONE]`. Once the client has bytes, an upstream
//! failure becomes a final SSE error event, then `[DONE]`.

use std::time::Instant;

use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;

use crate::http::chunked::{write_chunk, write_last_chunk};
use crate::http::client::BodyReader;
use crate::http::{response, sse};

use super::account::RouteMeta;
use super::forward::Forwarded;
use super::parse::{find_usage, top_level_members, Usage};
use super::Worker;

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
    response::header(out, "X-Cache", b"MISS");
    if !meta.fallbacks.is_empty() {
        response::header_num(out, "X-TierFlow-Fallbacks", meta.fallbacks.len() as u64);
    }
    response::header_num(out, "X-TierFlow-Overhead-Us", overhead_us);
}

/// Relays a non-streaming response (or any non-SSE response, errors included).
pub async fn relay_json(
    worker: &Worker,
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    mut fwd: Forwarded,
    meta: &mut RouteMeta,
    keep_alive: bool,
    pre_upstream_us: u64,
) -> Relayed {
    let mut body = Vec::with_capacity(match fwd.head.framing {
        crate::http::client::ResponseFraming::Length(n) => (n as usize).min(1 << 20) + 256,
        _ => 4096,
    });
    let mut reader = BodyReader::new(fwd.head.framing);
    loop {
        match reader.read_some(&mut fwd.conn, &mut body, fwd.idle_timeout_ms).await {
            Ok(true) => break,
            Ok(false) => {
                if body.len() > 64 << 20 {
                    return fail_before_bytes(stream, out, meta, "upstream response larger than 64 MiB", keep_alive).await;
                }
            }
            Err(e) => {
                worker.counters.upstream_errors.inc();
                let msg = format!("upstream {} failed mid-response: {e}", meta.routed_model);
                return fail_before_bytes(stream, out, meta, &msg, keep_alive).await;
            }
        }
    }
    let post_start = Instant::now();
    if fwd.head.keep_alive {
        worker.pool.checkin(fwd.conn, fwd.pool_max_idle);
    }
    let status = fwd.head.status;
    let usage = if status == 200 { find_usage(&body) } else { None };
    meta.set_usage(usage);
    let is_json = fwd.head.content_type.as_deref().is_some_and(|c| c.contains("json"));
    // Add the `tierflow` object to a JSON object body: before its closing brace.
    let mut insert_at = None;
    if status == 200 && is_json {
        if let Some(end) = body.iter().rposition(|b| !b.is_ascii_whitespace()) {
            if body[end] == b'}' && top_level_members(&body).is_some() {
                insert_at = Some(end);
            }
        }
    }
    response::begin(out, status, keep_alive);
    let overhead = pre_upstream_us + post_start.elapsed().as_micros() as u64;
    write_meta_headers(out, meta, overhead);
    if let Some(rid) = &fwd.head.request_id {
        response::header(out, "X-Upstream-Request-Id", rid.as_bytes());
    }
    let content_type = fwd.head.content_type.clone().unwrap_or_else(|| "application/json".into());
    match insert_at {
        Some(end) => {
            let mut obj = String::with_capacity(256);
            meta.write_json(&mut obj);
            let has_members = top_level_members(&body).is_some_and(|m| !m.is_empty());
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
) -> Relayed {
    let err = crate::error::GatewayError::UpstreamFailed { message: message.to_string() };
    out.clear();
    response::begin(out, err.status(), keep_alive);
    write_meta_headers(out, meta, 0);
    response::finish_with_body(out, "application/json", &err.to_json());
    let ok = flush(stream, out).await.is_ok();
    Relayed { outcome: Outcome::UpstreamFailed, usage: None, status: 502, keep_alive: keep_alive && ok }
}

/// Relays an SSE stream event by event.
pub async fn relay_sse(
    worker: &Worker,
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    mut fwd: Forwarded,
    meta: &mut RouteMeta,
    keep_alive: bool,
    pre_upstream_us: u64,
    client_wants_usage: bool,
) -> Relayed {
    let mut reader = BodyReader::new(fwd.head.framing);
    let mut pending: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk: Vec<u8> = Vec::with_capacity(8192);
    let mut head_written = false;
    let mut usage: Option<Usage> = None;
    let mut saw_done = false;
    let mut first_chunk_fields: Option<(String, String, String)> = None; // id, created, model
    let mut completion_chars: u64 = 0;
    let status = fwd.head.status;
    let broken: Option<String> = loop {
        let res = reader.read_some(&mut fwd.conn, &mut pending, fwd.idle_timeout_ms).await;
        let (done, err) = match res {
            Ok(d) => (d, None),
            Err(e) => (true, Some(e.to_string())),
        };
        let n = if done && err.is_none() { pending.len() } else { sse::complete_prefix(&pending) };
        chunk.clear();
        for ev in sse::events(&pending[..n]) {
            let parsed = sse::parse_event(ev);
            if !parsed.has_data {
                continue; // comments and keep-alive pings carry nothing for the client
            }
            let data: &[u8] = &parsed.data;
            if data == b"[DONE]" {
                saw_done = true;
                continue;
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
        if !head_written && (!chunk.is_empty() || done) {
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
            meta.set_usage(usage.or(Some(estimate_usage(meta, completion_chars))));
            return Relayed { outcome: Outcome::ClientGone, usage, status, keep_alive: false };
        }
        if let Some(e) = err {
            break Some(e);
        }
        if done {
            break None;
        }
    };
    if broken.is_none() && fwd.head.keep_alive && reader.is_done() {
        worker.pool.checkin(fwd.conn, fwd.pool_max_idle);
    }
    let final_usage = usage.or_else(|| broken.as_ref().map(|_| estimate_usage(meta, completion_chars)));
    meta.set_usage(final_usage);
    chunk.clear();
    if let Some(e) = &broken {
        worker.counters.upstream_errors.inc();
        let err = crate::error::GatewayError::UpstreamFailed {
            message: format!("upstream {} failed mid-stream: {e}", meta.routed_model),
        };
        chunk.extend_from_slice(b"data: ");
        chunk.extend_from_slice(&err.to_json());
        chunk.extend_from_slice(b"\n\n");
    }
    // Routing metadata rides in a last chunk before [DONE].
    let mut obj = String::with_capacity(256);
    meta.write_json(&mut obj);
    chunk.extend_from_slice(b"data: {");
    if let Some((id, created, model)) = &first_chunk_fields {
        chunk.extend_from_slice(format!("\"id\":{id},\"created\":{created},\"model\":{model},").as_bytes());
    }
    chunk.extend_from_slice(b"\"object\":\"chat.completion.chunk\",\"choices\":[],\"tierflow\":");
    chunk.extend_from_slice(obj.as_bytes());
    chunk.extend_from_slice(b"}\n\n");
    let _ = saw_done;
    chunk.extend_from_slice(b"data: [DONE]\n\n");
    write_chunk(out, &chunk);
    write_last_chunk(out);
    let ok = flush(stream, out).await.is_ok();
    Relayed {
        outcome: if broken.is_some() {
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

fn memchr_usage(data: &[u8]) -> bool {
    data.windows(8).any(|w| w == b"\"usage\":")
}

fn is_empty_choices(data: &[u8]) -> bool {
    let Some(members) = top_level_members(data) else { return false };
    members
        .iter()
        .find(|m| m.key_is(data, "choices"))
        .is_none_or(|m| data[m.value.clone()].iter().filter(|b| !b.is_ascii_whitespace()).eq(b"[]".iter()))
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
    Some((get("id")?, get("created").unwrap_or_else(|| "0".into()), get("model").unwrap_or_else(|| "\"\"".into())))
}

/// Rough size of the content a chunk carries (for billing a stream that ended without usage).
fn count_content_chars(data: &[u8]) -> u64 {
    let mut n = 0u64;
    let needle = b"\"content\":\"";
    let mut i = 0;
    while i + needle.len() <= data.len() {
        if &data[i..i + needle.len()] == needle {
            let mut j = i + needle.len();
            while j < data.len() && data[j] != b'"' {
                if data[j] == b'\\' {
                    j += 1;
                }
                j += 1;
                n += 1;
            }
            i = j;
        } else {
            i += 1;
        }
    }
    n
}

/// Usage estimate for a stream that broke or was cancelled without a usage chunk: ~4 characters
/// per token for the relayed content, the request's estimate for the prompt.
fn estimate_usage(meta: &RouteMeta, completion_chars: u64) -> Usage {
    Usage { prompt_tokens: meta.prompt_tokens_estimate, completion_tokens: completion_chars.div_ceil(4) }
}
