//! Forward stage: sends the request to the chain's targets in order over pooled connections until
//! one answers with a response head the client should see. Connect errors, timeouts, 429 and 5xx
//! before the first byte move on to the next target (up to the configured bound); a dead pooled
//! connection is retried once on a fresh one. Nothing here has written to the client yet.
//!
//! Each target gets the body of its own dialect: OpenAI upstreams the client's OpenAI body (or the
//! translation of an inbound Anthropic body), Anthropic upstreams a Messages body — translated from
//! the OpenAI body, or the Anthropic client's own bytes with `model` replaced.

use std::time::Instant;

use crate::config::{Config, Dialect, Provider};
use crate::error::GatewayError;
use crate::http::client::{ResponseHead, UpstreamConn, UpstreamIoError};
use crate::http::pool::Endpoint;
use crate::providers;
use crate::providers::anthropic::{chat_to_messages_request, RequestOptions, TranslateError};

use super::parse::{build_upstream_body, Member};
use super::route::{RouteDecision, RouteTarget};
use super::Worker;

/// A target that was tried and failed, for the routing metadata and error messages.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub target: String,
    pub error: String,
}

/// A live upstream response whose head has been read.
pub struct Forwarded {
    pub conn: UpstreamConn,
    pub head: ResponseHead,
    /// Index into `RouteDecision::targets` of the target that answered.
    pub chosen: usize,
    pub attempts: Vec<Attempt>,
    pub idle_timeout_ms: u64,
    pub pool_max_idle: usize,
    /// When the request was handed to the upstream (for TTFB and the overhead split).
    pub sent_at: Instant,
    pub head_at: Instant,
}

enum Failure {
    Timeout,
    Connect,
    Other,
    /// The request has no equivalent in the target's dialect (a 400 if no target could take it).
    Translate {
        param: Option<String>,
    },
}

/// The request parts forward needs to build each target's body.
pub struct Outgoing<'a> {
    pub original: &'a [u8],
    pub members: &'a [Member],
    pub stream: bool,
    pub messages_override: Option<&'a [u8]>,
    /// `messages` with PII scrubbed, for providers with `pii: true` (`None`: nothing to scrub).
    pub pii_messages: Option<&'a [u8]>,
    /// Set when the client spoke Anthropic Messages (`original` is then its translation).
    pub anthropic_original: Option<AnthropicOriginal<'a>>,
}

/// An inbound Anthropic Messages body, sent to Anthropic upstreams as is (`model` replaced).
pub struct AnthropicOriginal<'a> {
    pub body: &'a [u8],
    pub members: &'a [Member],
    pub messages_override: Option<&'a [u8]>,
    /// Its `messages` with PII scrubbed, for providers with `pii: true`.
    pub pii_messages: Option<&'a [u8]>,
}

/// The OpenAI body as a `Value` for the Anthropic request translation, `messages` overridden.
fn chat_value(req: &Outgoing<'_>, scrub: bool) -> Result<serde_json::Value, TranslateError> {
    let mut v: serde_json::Value = serde_json::from_slice(req.original)
        .map_err(|source| TranslateError::InvalidJson { source })?;
    let messages = if scrub {
        req.pii_messages.or(req.messages_override)
    } else {
        req.messages_override
    };
    if let (Some(msgs), Some(obj)) = (messages, v.as_object_mut()) {
        let m = serde_json::from_slice(msgs)
            .map_err(|source| TranslateError::InvalidJson { source })?;
        obj.insert("messages".into(), m);
    }
    Ok(v)
}

pub async fn forward(
    worker: &Worker,
    cfg: &std::sync::Arc<Config>,
    decision: &RouteDecision,
    req: &Outgoing<'_>,
) -> Result<Forwarded, GatewayError> {
    let mut attempts = Vec::new();
    let mut failures = Vec::new();
    let limit = if decision.fallback {
        1 + cfg.max_fallbacks
    } else {
        1
    };
    let mut body = Vec::new();
    let mut wire = Vec::new();
    let mut parsed: [Option<Result<serde_json::Value, TranslateError>>; 2] = [None, None];
    let health = worker.health(cfg);
    let order = health_order(cfg, decision, &health, crate::ledger::now_ms());
    for (n, idx) in order.into_iter().enumerate().take(limit) {
        let target = &decision.targets[idx];
        let health_id = match target {
            RouteTarget::Configured(id) => Some(*id),
            RouteTarget::Explicit { .. } => None,
        };
        let provider = &cfg.providers[target.provider(cfg)];
        // Providers with `pii: true` get the scrubbed messages; the others the client's text.
        let scrub = provider.pii && req.pii_messages.is_some();
        body.clear();
        match (provider.dialect, &req.anthropic_original) {
            (Dialect::OpenAi, _) => {
                let msgs = if scrub {
                    req.pii_messages
                } else {
                    req.messages_override
                };
                build_upstream_body(
                    req.original,
                    req.members,
                    target.model(cfg),
                    req.stream,
                    msgs,
                    &mut body,
                )
            }
            (Dialect::Anthropic, Some(a)) => {
                let msgs = if scrub {
                    a.pii_messages.or(a.messages_override)
                } else {
                    a.messages_override
                };
                build_upstream_body(a.body, a.members, target.model(cfg), false, msgs, &mut body)
            }
            (Dialect::Anthropic, None) => {
                let slot = &mut parsed[usize::from(scrub)];
                if slot.is_none() {
                    *slot = Some(chat_value(req, scrub));
                }
                let translated = match &parsed[usize::from(scrub)] {
                    Some(Ok(v)) => {
                        chat_to_messages_request(v, target.model(cfg), &RequestOptions::default())
                            .map_err(|e| (e.to_string(), e.field().map(str::to_string)))
                    }
                    Some(Err(e)) => Err((e.to_string(), None)),
                    None => Err(("request body unavailable".to_string(), None)),
                };
                match translated {
                    Ok(b) => body = b,
                    Err((error, param)) => {
                        attempts.push(Attempt {
                            target: target.name(cfg),
                            error,
                        });
                        failures.push(Failure::Translate { param });
                        continue;
                    }
                }
            }
        }
        wire.clear();
        providers::write_chat_request_head(&mut wire, provider, body.len(), req.stream);
        wire.extend_from_slice(&body);
        let first_byte_timeout_ms = decision
            .timeout_ms
            .unwrap_or(provider.first_byte_timeout_ms);
        let ep = endpoint(provider);
        let attempt_start = Instant::now();
        let result = try_once(worker, &ep, &mut wire, first_byte_timeout_ms).await;
        let record = |ok: bool, at: Instant| {
            if let Some(id) = health_id {
                let us = at
                    .duration_since(attempt_start)
                    .as_micros()
                    .min(u64::MAX as u128) as u64;
                health.record(id, us, ok, crate::ledger::now_ms());
            }
        };
        worker.counters.pool_opened.set(worker.pool.opened.get());
        worker.counters.pool_reused.set(worker.pool.reused.get());
        // One clock read serves the health sample and the routing metadata.
        let now = Instant::now();
        match result {
            Ok((conn, head, sent_at)) => {
                if head.status == 429 || head.status >= 500 {
                    record(false, now);
                    attempts.push(Attempt {
                        target: target.name(cfg),
                        error: format!("HTTP {}", head.status),
                    });
                    failures.push(Failure::Other);
                    worker.counters.upstream_errors.inc();
                    drop(conn); // body unread: never reuse
                    continue;
                }
                record(true, now);
                if n > 0 {
                    worker.counters.failovers.inc();
                }
                return Ok(Forwarded {
                    conn,
                    head,
                    chosen: idx,
                    attempts,
                    idle_timeout_ms: provider.idle_timeout_ms,
                    pool_max_idle: provider.pool_max_idle,
                    sent_at,
                    head_at: now,
                });
            }
            Err(e) => {
                record(false, now);
                worker.counters.upstream_errors.inc();
                failures.push(if e.is_timeout() {
                    Failure::Timeout
                } else if e.is_connect() {
                    Failure::Connect
                } else {
                    Failure::Other
                });
                attempts.push(Attempt {
                    target: target.name(cfg),
                    error: e.to_string(),
                });
            }
        }
    }
    let summary = attempts
        .iter()
        .map(|a| format!("{}: {}", a.target, a.error))
        .collect::<Vec<_>>()
        .join("; ");
    let message = format!("all upstreams failed ({summary})");
    if let Some(Failure::Translate { param }) = failures.first() {
        if failures
            .iter()
            .all(|f| matches!(f, Failure::Translate { .. }))
        {
            let message = attempts
                .first()
                .map(|a| a.error.clone())
                .unwrap_or_default();
            return Err(GatewayError::BadRequest {
                message,
                param: param.clone(),
                code: "invalid_request",
            });
        }
    }
    Err(
        if !failures.is_empty() && failures.iter().all(|f| matches!(f, Failure::Timeout)) {
            GatewayError::UpstreamTimeout { message }
        } else if !failures.is_empty() && failures.iter().all(|f| matches!(f, Failure::Connect)) {
            GatewayError::UpstreamUnavailable { message }
        } else {
            GatewayError::UpstreamFailed { message }
        },
    )
}

/// The order to try the chain in: by upstream health when every target is a configured one
/// (open circuits skipped, the fastest first among targets with the SAME price — the configured
/// order between differently priced targets is the operator's cost decision and is kept —, the
/// latency budget honoured); configured order otherwise.
fn health_order(
    cfg: &Config,
    decision: &RouteDecision,
    health: &crate::health::HealthTable,
    now_ms: u64,
) -> Vec<usize> {
    let mut candidates = Vec::with_capacity(decision.targets.len());
    for (i, t) in decision.targets.iter().enumerate() {
        let RouteTarget::Configured(id) = t else {
            return (0..decision.targets.len()).collect();
        };
        let price = t
            .price(cfg)
            .map(|p| (p.input.to_bits(), p.output.to_bits()));
        // Group = position of the first target with the same price.
        let group = decision.targets[..i]
            .iter()
            .position(|o| {
                o.price(cfg)
                    .map(|p| (p.input.to_bits(), p.output.to_bits()))
                    == price
            })
            .unwrap_or(i);
        candidates.push(crate::health::Candidate {
            target: *id,
            tier: group.min(255) as u8,
        });
    }
    crate::health::order_chain(
        &candidates,
        health,
        decision.latency_budget_ms,
        decision.fallback,
        now_ms,
    )
}

/// Where and how to reach `provider`'s upstream (its pool, address, TLS and timeouts).
pub(crate) fn endpoint(provider: &Provider) -> Endpoint<'_> {
    Endpoint {
        pool_key: &provider.pool_key,
        host: &provider.host,
        addrs: &provider.addrs,
        port: provider.port,
        tls: provider.tls_config.as_ref(),
        connect_timeout_ms: provider.connect_timeout_ms,
        max_idle: provider.pool_max_idle,
        idle_ms: provider.pool_idle_ms,
    }
}

/// One target: checkout, send, read the head. A reused connection that turns out dead is replaced
/// by a fresh one once.
pub(crate) async fn try_once(
    worker: &Worker,
    ep: &Endpoint<'_>,
    wire: &mut Vec<u8>,
    first_byte_timeout_ms: u64,
) -> Result<(UpstreamConn, ResponseHead, Instant), UpstreamIoError> {
    let mut conn = worker.pool.checkout(ep).await?;
    for attempt in 0..2 {
        let sent_at = Instant::now();
        let buf = std::mem::take(wire);
        let err = match conn.send(buf).await {
            Ok(buf) => {
                *wire = buf;
                match conn.read_head(first_byte_timeout_ms).await {
                    Ok(head) => return Ok((conn, head, sent_at)),
                    Err(e) => e,
                }
            }
            Err((e, buf)) => {
                *wire = buf;
                e
            }
        };
        if attempt == 0 && conn.reused && err.is_stale_connection() {
            conn = worker.pool.connect(ep).await?;
            continue;
        }
        return Err(err);
    }
    Err(UpstreamIoError::ClosedBeforeResponse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_value_applies_the_messages_override() {
        let original = br#"{"model":"auto","messages":[{"role":"user","content":"/code hi"}],"route":{"tier":2}}"#;
        let msgs = br#"[{"role":"user","content":"hi"}]"#;
        let req = Outgoing {
            original,
            members: &[],
            stream: false,
            messages_override: Some(msgs),
            pii_messages: None,
            anthropic_original: None,
        };
        let v = chat_value(&req, false).unwrap();
        assert_eq!(v["messages"][0]["content"], "hi");
        let body = chat_to_messages_request(&v, "claude-x", &RequestOptions::default()).unwrap();
        let sent: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(sent["model"], "claude-x");
        assert_eq!(sent["messages"][0]["content"], "hi");
        assert!(sent.get("route").is_none(), "{sent}");
        let bad = Outgoing {
            original: b"{",
            members: &[],
            stream: false,
            messages_override: None,
            pii_messages: None,
            anthropic_original: None,
        };
        assert!(chat_value(&bad, false).is_err());
    }
}
