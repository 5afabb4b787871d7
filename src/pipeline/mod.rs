//! Per-request policy, one stage per file, in the order a chat request meets them:
//!
//! 1. `accept`  — the downstream connection: heads, bodies, keep-alive, limits, dispatch
//! 2. `parse`   — the JSON body in place (simd-json), validated, plus a map of its original bytes
//! 3. `route`   — model name / tier / route / prefix / classifier → a chain of upstream targets
//! 4. `forward` — pooled upstream connections, failover before the first byte
//! 5. `relay`   — JSON or SSE back to the client, routing metadata added
//! 6. `account` — the metadata object, cost, per-core counters
//!
//! `handle_chat` below is the whole path; each stage leaves wire details to `http`. Anthropic
//! Messages clients (`messages`) take the same path with their body translated, and get their
//! answer translated back.

pub mod accept;
pub mod account;
pub mod forward;
pub mod messages;
pub mod parse;
pub mod relay;
pub mod route;

use std::sync::Arc;
use std::time::Instant;

use monoio::net::TcpStream;

use crate::error::GatewayError;
use crate::http::pool::Pool;
use crate::config::Dialect;
use crate::http::response;
use crate::providers::anthropic;
use crate::runtime::Shared;

use account::{RouteMeta, WorkerCounters};
use forward::{AnthropicOriginal, Outgoing};
use relay::Dialects;

/// Everything one worker core owns: its pool, its counters, and a handle on shared state.
pub struct Worker {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub pool: Pool,
    pub counters: Arc<WorkerCounters>,
    pub conns: accept::ConnRegistry,
}

impl Worker {
    pub fn new(id: usize, shared: Arc<Shared>) -> Self {
        let counters = shared.counters[id].clone();
        Worker { id, shared, pool: Pool::new(), counters, conns: accept::ConnRegistry::default() }
    }
}

/// What the connection loop should do after a request.
pub struct Done {
    pub keep_alive: bool,
    pub status: u16,
}

/// Writes an error response; returns the connection disposition.
pub async fn respond_error(stream: &mut TcpStream, out: &mut Vec<u8>, err: &GatewayError, keep_alive: bool) -> Done {
    out.clear();
    response::error(out, err, keep_alive, &[]);
    let ok = relay::flush(stream, out).await.is_ok();
    Done { keep_alive: keep_alive && ok, status: err.status() }
}

/// Writes an error response in the client's dialect (Anthropic's error shape for Messages clients).
pub async fn respond_error_as(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    err: &GatewayError,
    keep_alive: bool,
    anthropic_client: bool,
) -> Done {
    if !anthropic_client {
        return respond_error(stream, out, err, keep_alive).await;
    }
    out.clear();
    response::begin(out, err.status(), keep_alive);
    if let Some(s) = err.retry_after_s() {
        response::header_num(out, "Retry-After", s);
    }
    response::finish_with_body(out, "application/json", &anthropic::error_body_anthropic(err.status(), &err.to_string()));
    let ok = relay::flush(stream, out).await.is_ok();
    Done { keep_alive: keep_alive && ok, status: err.status() }
}

/// An inbound Anthropic Messages request; `handle_chat_as` routes its OpenAI translation.
pub struct Inbound<'a> {
    /// The client's own Messages body.
    pub original: &'a [u8],
    /// Estimated input tokens, for `message_start` of translated streams.
    pub input_tokens_hint: u32,
}

/// `POST /v1/chat/completions`: parse → route → forward → relay → account.
pub async fn handle_chat(
    worker: &Worker,
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    body: &[u8],
    scratch: &mut Vec<u8>,
    keep_alive: bool,
    started: Instant,
) -> Done {
    handle_chat_as(worker, stream, out, body, scratch, keep_alive, started, None).await
}

/// The chat path for an OpenAI body; `inbound` is set when that body is the translation of an
/// Anthropic Messages request, whose answer then goes back in Anthropic's dialect.
#[allow(clippy::too_many_arguments)]
pub async fn handle_chat_as(
    worker: &Worker,
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    body: &[u8],
    scratch: &mut Vec<u8>,
    keep_alive: bool,
    started: Instant,
    inbound: Option<Inbound<'_>>,
) -> Done {
    let anthropic_client = inbound.is_some();
    let cfg = worker.shared.config.load_full();
    // simd-json rewrites its input; parse a copy so the original bytes can be forwarded.
    scratch.clear();
    scratch.extend_from_slice(body);
    let req = match parse::parse_chat_request(scratch) {
        Ok(r) => r,
        Err(e) => return respond_error_as(stream, out, &e, keep_alive, anthropic_client).await,
    };
    let Some(members) = parse::top_level_members(body) else {
        return respond_error_as(stream, out, &GatewayError::malformed("request body must be a JSON object"), keep_alive, anthropic_client).await;
    };
    let decision = match route::resolve(&cfg, &req) {
        Ok(d) => d,
        Err(e) => return respond_error_as(stream, out, &e, keep_alive, anthropic_client).await,
    };
    // A forcing prefix is stripped before forwarding: rewrite `messages` (rare path).
    let messages_override = match decision.strip_prefix {
        Some(n) => strip_prefix_messages(body, &members, n),
        None => None,
    };
    let prompt_bytes: usize = req.messages.iter().map(|m| m.text.len()).sum();
    let client_wants_usage = req.include_usage;
    let stream_requested = req.stream;
    let requested_model = req.model.to_string();
    drop(req);

    // An Anthropic client's own body goes to Anthropic upstreams (prefix stripped the same way).
    let anthropic_members = match &inbound {
        Some(i) => match parse::top_level_members(i.original) {
            Some(m) => Some(m),
            None => {
                let e = GatewayError::malformed("request body must be a JSON object");
                return respond_error_as(stream, out, &e, keep_alive, true).await;
            }
        },
        None => None,
    };
    let anthropic_override = match (&inbound, &anthropic_members, decision.strip_prefix) {
        (Some(i), Some(m), Some(n)) => strip_prefix_messages(i.original, m, n),
        _ => None,
    };
    let outgoing = Outgoing {
        original: body,
        members: &members,
        stream: stream_requested,
        messages_override: messages_override.as_deref(),
        anthropic_original: match (&inbound, &anthropic_members) {
            (Some(i), Some(m)) => {
                Some(AnthropicOriginal { body: i.original, members: m, messages_override: anthropic_override.as_deref() })
            }
            _ => None,
        },
    };
    let pre_upstream_us = started.elapsed().as_micros() as u64;
    let fwd = match forward::forward(worker, &cfg, &decision, &outgoing).await {
        Ok(f) => f,
        Err(e) => return respond_error_as(stream, out, &e, keep_alive, anthropic_client).await,
    };
    let target = &decision.targets[fwd.chosen];
    let upstream_model = target.model(&cfg).to_string();
    let dialects = match (&inbound, cfg.providers[target.provider(&cfg)].dialect) {
        (None, Dialect::OpenAi) => Dialects::OpenAi,
        (None, Dialect::Anthropic) => Dialects::AnthropicUpstream { model: &upstream_model },
        (Some(i), Dialect::OpenAi) => {
            Dialects::AnthropicClient { model: &upstream_model, input_tokens_hint: i.input_tokens_hint }
        }
        (Some(_), Dialect::Anthropic) => Dialects::Anthropic,
    };
    let mut meta = RouteMeta {
        requested_model,
        routed_model: target.name(&cfg),
        category: decision.category,
        tier: decision.tier,
        reason: if fwd.attempts.is_empty() { decision.reason.clone() } else { format!("{}+fallback", decision.reason) },
        decided_by: decision.decided_by.as_str(),
        fallbacks: fwd.attempts.iter().map(|a| a.target.clone()).collect(),
        security: "CLEAN",
        price: target.price(&cfg),
        flagship_price: cfg.flagship.and_then(|f| cfg.targets[f].price),
        estimated_cost_usd: None,
        saved_vs_flagship: None,
        usage: None,
        prompt_tokens_estimate: (prompt_bytes as u64).div_ceil(4),
    };
    let relayed = if fwd.head.status == 200 && fwd.head.is_event_stream() {
        worker.counters.streams.inc();
        relay::relay_sse(worker, stream, out, fwd, &mut meta, keep_alive, pre_upstream_us, client_wants_usage, dialects)
            .await
    } else {
        relay::relay_json(worker, stream, out, fwd, &mut meta, keep_alive, pre_upstream_us, dialects).await
    };
    if let Some(u) = meta.usage {
        worker.counters.prompt_tokens.add(u.prompt_tokens);
        worker.counters.completion_tokens.add(u.completion_tokens);
    }
    if let Some(c) = meta.estimated_cost_usd {
        worker.counters.cost_micro_usd.add((c * 1e6).round() as u64);
    }
    if let Some(s) = meta.saved_vs_flagship {
        worker.counters.saved_micro_usd.add((s * 1e6).round() as u64);
    }
    Done { keep_alive: relayed.keep_alive, status: relayed.status }
}

/// Re-serialises `messages` with `n` bytes stripped from the latest user message's text.
fn strip_prefix_messages(body: &[u8], members: &[parse::Member], n: usize) -> Option<Vec<u8>> {
    let m = members.iter().find(|m| m.key_is(body, "messages"))?;
    let mut msgs: serde_json::Value = serde_json::from_slice(&body[m.value.clone()]).ok()?;
    let arr = msgs.as_array_mut()?;
    let last_user = arr.iter_mut().rev().find(|m| m.get("role").and_then(|r| r.as_str()) == Some("user"))?;
    match last_user.get_mut("content")? {
        serde_json::Value::String(s) => {
            let cut = n.min(s.len());
            if s.is_char_boundary(cut) {
                s.replace_range(..cut, "");
            }
        }
        serde_json::Value::Array(parts) => {
            let p = parts.iter_mut().find(|p| p.get("type").and_then(|t| t.as_str()) == Some("text"))?;
            if let Some(serde_json::Value::String(s)) = p.get_mut("text") {
                let cut = n.min(s.len());
                if s.is_char_boundary(cut) {
                    s.replace_range(..cut, "");
                }
            }
        }
        _ => {}
    }
    serde_json::to_vec(&msgs).ok()
}
