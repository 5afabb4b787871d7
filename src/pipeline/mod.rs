//! Per-request policy, one stage per file, in the order a chat request meets them:
//!
//! 1. `accept`  — the downstream connection: heads, bodies, keep-alive, limits, dispatch
//! 2. `parse`   — the JSON body in place (simd-json), validated, plus a map of its original bytes
//! 3. `route`   — model name / tier / route / prefix / classifier → a chain of upstream targets
//!    (`security` screens and scrubs, `compress` packs the message text, before forwarding)
//! 4. `forward` — pooled upstream connections, failover before the first byte
//! 5. `relay`   — JSON or SSE back to the client, routing metadata added
//! 6. `account` — the metadata object, cost, per-core counters, the usage record
//!
//! Before forwarding, `handle_chat` also admits the request: virtual key (401/403), then the
//! budgets and rate limits of the key and its app (429 + Retry-After); after the relay the
//! reservation is settled with the real usage and one `UsageRecord` goes to the ledger — for
//! every chat request, errors the gateway produced included.
//!
//! `handle_chat` below is the whole path; each stage leaves wire details to `http`. Anthropic
//! Messages clients (`messages`) take the same path with their body translated, and get their
//! answer translated back.

pub mod accept;
pub mod account;
pub mod compress;
pub mod early;
pub mod forward;
pub mod messages;
pub mod parse;
pub mod probe;
pub mod relay;
pub mod route;
pub mod security;

use std::sync::Arc;
use std::time::Instant;

use monoio::net::TcpStream;

use crate::error::GatewayError;
use crate::http::head::{bearer_token, RequestHead};
use crate::http::pool::Pool;
use crate::http::response;
use crate::ledger::{KeyInfo, Outcome as LedgerOutcome};
use crate::runtime::Shared;

use crate::config::Dialect;
use crate::providers::anthropic;
use account::{Acct, CoreAccounting, RouteMeta, WorkerCounters};
use forward::{AnthropicOriginal, Outgoing};
use relay::Dialects;

/// Everything one worker core owns: its pool, its counters, and a handle on shared state.
pub struct Worker {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub pool: Pool,
    pub counters: Arc<WorkerCounters>,
    pub conns: accept::ConnRegistry,
    /// This core's ledger ring, stats writer and Redis budget.
    pub acct: CoreAccounting,
    /// Upstream health (EWMA TTFB, error rate, circuit breakers) for the config snapshot it was
    /// built for; rebuilt when a reload swaps the snapshot.
    health: std::cell::RefCell<Option<(usize, std::rc::Rc<crate::health::HealthTable>)>>,
    /// This core's end of the classifier rings (None: rules only).
    pub classifier: Option<crate::classifier::ClassifierHandle>,
    /// This core's response cache shard (created on first use; settings follow reloads).
    cache: std::cell::OnceCell<std::cell::RefCell<crate::cache::ResponseCache>>,
}

impl Worker {
    /// Builds the core's state; call on the core's own thread (the Redis budget is `!Send`).
    pub fn new(id: usize, shared: Arc<Shared>) -> Self {
        let counters = shared.counters[id].clone();
        let acct = shared.accounting.core();
        Worker {
            id,
            shared,
            pool: Pool::new(),
            counters,
            conns: accept::ConnRegistry::default(),
            acct,
            health: std::cell::RefCell::new(None),
            cache: std::cell::OnceCell::new(),
            classifier: None,
        }
    }

    /// This core's cache shard, with `cc` as its settings.
    pub fn cache(
        &self,
        cc: &crate::cache::CacheConfig,
    ) -> &std::cell::RefCell<crate::cache::ResponseCache> {
        let shard = self.cache.get_or_init(|| {
            let shard = crate::cache::ResponseCache::new(cc.clone());
            self.shared
                .cache_counters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(shard.counters().clone());
            std::cell::RefCell::new(shard)
        });
        if shard.borrow().config() != cc {
            shard.borrow_mut().set_config(cc.clone());
        }
        shard
    }

    /// This core's health table for `cfg`.
    pub fn health(
        &self,
        cfg: &Arc<crate::config::Config>,
    ) -> std::rc::Rc<crate::health::HealthTable> {
        let key = Arc::as_ptr(cfg) as usize;
        let mut slot = self.health.borrow_mut();
        if let Some((k, t)) = slot.as_ref() {
            if *k == key {
                return t.clone();
            }
        }
        let board = self.shared.health_board(cfg);
        let table = std::rc::Rc::new(crate::health::HealthTable::with_board(
            cfg.health.breaker.clone(),
            board,
            self.id,
        ));
        *slot = Some((key, table.clone()));
        table
    }
}

/// Who a request says it is: its key and `X-TierFlow-App`/`-Env` headers (slices of the read buffer).
#[derive(Debug, Default, Clone, Copy)]
pub struct Caller<'a> {
    /// `Authorization: Bearer …` token, else the `x-api-key` value.
    pub token: Option<&'a [u8]>,
    pub app: Option<&'a [u8]>,
    pub env: Option<&'a [u8]>,
    /// `Cache-Control: no-cache` (or `X-TierFlow-Cache: off`): bypass the response cache.
    pub no_cache: bool,
}

impl<'a> Caller<'a> {
    pub fn from_head(head: &RequestHead, buf: &'a [u8]) -> Caller<'a> {
        let token = head
            .authorization
            .clone()
            .and_then(|r| bearer_token(&buf[r]))
            .or_else(|| head.x_api_key.clone().map(|r| buf[r].trim_ascii()));
        let nonempty = |r: Option<std::ops::Range<usize>>| {
            r.map(|r| buf[r].trim_ascii()).filter(|v| !v.is_empty())
        };
        Caller {
            token,
            app: nonempty(head.app.clone()),
            env: nonempty(head.env.clone()),
            no_cache: head.cache_control_no_cache,
        }
    }
}

/// Header values used as labels: bounded and printable, else ignored.
fn label_value(v: Option<&[u8]>) -> Option<Arc<str>> {
    let v = v?;
    if v.len() > 64 || !v.iter().all(|&b| b.is_ascii_graphic()) {
        return None;
    }
    std::str::from_utf8(v).ok().map(Arc::from)
}

/// What the connection loop should do after a request.
pub struct Done {
    pub keep_alive: bool,
    pub status: u16,
}

/// Writes an error response; returns the connection disposition.
pub async fn respond_error(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    err: &GatewayError,
    keep_alive: bool,
) -> Done {
    out.clear();
    response::error(out, err, keep_alive, &[]);
    let ok = relay::flush(stream, out).await.is_ok();
    Done {
        keep_alive: keep_alive && ok,
        status: err.status(),
    }
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
    response::finish_with_body(
        out,
        "application/json",
        &anthropic::error_body_anthropic(err.status(), &err.to_string()),
    );
    let ok = relay::flush(stream, out).await.is_ok();
    Done {
        keep_alive: keep_alive && ok,
        status: err.status(),
    }
}

/// An inbound Anthropic Messages request; `handle_chat_as` routes its OpenAI translation.
pub struct Inbound<'a> {
    /// The client's own Messages body.
    pub original: &'a [u8],
    /// Estimated input tokens, for `message_start` of translated streams.
    pub input_tokens_hint: u32,
}

/// `POST /v1/chat/completions`: authenticate → parse → route → admit → forward → relay →
/// settle → account. Every outcome, errors included, ends as one `UsageRecord`.
#[allow(clippy::too_many_arguments)]
pub async fn handle_chat(
    worker: &Worker,
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    body: &[u8],
    scratch: &mut Vec<u8>,
    keep_alive: bool,
    started: Instant,
    caller: Caller<'_>,
) -> Done {
    handle_chat_as(
        worker, stream, out, body, scratch, keep_alive, started, caller, None,
    )
    .await
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
    caller: Caller<'_>,
    inbound: Option<Inbound<'_>>,
) -> Done {
    let time_ms = crate::ledger::now_ms();
    let mut acct = Acct::default();
    let done = chat(
        worker, stream, out, body, scratch, keep_alive, started, caller, &mut acct, inbound,
    )
    .await;
    let latency_ms = started.elapsed().as_millis().min(u32::MAX as u128) as u32;
    let (rec, saved) = acct.into_record(
        &worker.shared.accounting.labels,
        time_ms,
        done.status,
        latency_ms,
    );
    for f in &rec.fallback_models {
        worker.shared.accounting.count_failover(f);
    }
    worker.acct.finish(rec, saved);
    if let Some(rb) = worker.acct.redis.as_ref().filter(|rb| rb.state().is_up()) {
        // Settlements queued by this request go out now (else with the next admission). While
        // Redis is down, admission's own probe finds out when it is back; no connect here.
        let _ = rb.flush_pending().await;
    }
    done
}

/// The key a request must present, when keys are in force: `Ok(None)` when they are not.
fn authenticate(
    worker: &Worker,
    cfg: &crate::config::Config,
    caller: &Caller<'_>,
) -> Result<Option<Arc<KeyInfo>>, GatewayError> {
    let accounting = &worker.shared.accounting;
    let Some(store) = accounting
        .keys
        .as_ref()
        .filter(|_| accounting.keys_required(cfg))
    else {
        return Ok(None);
    };
    let Some(token) = caller.token else {
        return Err(GatewayError::Unauthorized {
            message: "missing API key: send `Authorization: Bearer tf-sk-…` (or `x-api-key`)"
                .into(),
        });
    };
    match std::str::from_utf8(token)
        .ok()
        .and_then(|t| store.lookup(t))
    {
        Some(k) => Ok(Some(k)),
        None => Err(GatewayError::Unauthorized {
            message: "invalid or revoked API key".into(),
        }),
    }
}

#[allow(clippy::too_many_arguments)]
async fn chat(
    worker: &Worker,
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    body: &[u8],
    scratch: &mut Vec<u8>,
    keep_alive: bool,
    started: Instant,
    caller: Caller<'_>,
    acct: &mut Acct,
    inbound: Option<Inbound<'_>>,
) -> Done {
    let anthropic_client = inbound.is_some();
    let cfg = worker.shared.config.load_full();
    let key = match authenticate(worker, &cfg, &caller) {
        Ok(k) => k,
        Err(e) => return respond_error_as(stream, out, &e, keep_alive, anthropic_client).await,
    };
    if let Some(k) = &key {
        acct.key_id = Some(k.id.clone());
        acct.app = Some(k.app.clone());
        acct.env = Some(k.env.clone());
    } else {
        acct.app = label_value(caller.app);
        acct.env = label_value(caller.env);
    }
    if worker.acct.ledger_saturated() {
        let e = GatewayError::ServiceUnavailable {
            message: "the usage ledger is behind; retry shortly".into(),
        };
        return respond_error_as(stream, out, &e, keep_alive, anthropic_client).await;
    }
    // simd-json rewrites its input; parse a copy so the original bytes can be forwarded.
    scratch.clear();
    scratch.extend_from_slice(body);
    let req = match parse::parse_chat_request(scratch) {
        Ok(r) => r,
        Err(e) => return respond_error_as(stream, out, &e, keep_alive, anthropic_client).await,
    };
    let Some(members) = parse::top_level_members(body) else {
        return respond_error_as(
            stream,
            out,
            &GatewayError::malformed("request body must be a JSON object"),
            keep_alive,
            anthropic_client,
        )
        .await;
    };
    acct.requested_model = req.model.to_string();
    acct.stream = req.stream;
    // Security: the user-controlled text of the request → a verdict (403 when BLOCKED).
    let sec = &cfg.security;
    let mut scanner: Option<Arc<crate::scanner::Scanner>> = None;
    let screening = if sec.enabled {
        match worker.shared.security.wait(sec.startup_wait_ms).await {
            Some(s) => {
                let s = scanner.insert(s);
                // Look for PII too when the request may reach a scrubbing provider: a request
                // without any skips the JSON rewrite. Tool-call arguments are not in the message
                // texts, so a body with any goes to the scrubber regardless.
                let want_pii = cfg.providers.iter().any(|p| p.pii);
                let mut r = security::screen(s, &req.messages, sec, want_pii);
                r.pii_seen |= want_pii && memchr::memmem::find(body, b"\"arguments\"").is_some();
                r
            }
            None => security::Screening::unscanned(),
        }
    } else {
        security::Screening {
            verdict: "CLEAN",
            ..security::Screening::unscanned()
        }
    };
    acct.security = screening.ledger_verdict();
    if screening.blocked() {
        let rules = screening.blocking_rules(sec.block_on_warning).join(", ");
        let e = GatewayError::Forbidden {
            message: format!("request blocked by the security policy (rules: {rules})"),
            code: "security_blocked",
        };
        return respond_error_as(stream, out, &e, keep_alive, anthropic_client).await;
    }
    let auto = if cfg.is_auto_model(&req.model) {
        classify(worker, &cfg, &req).await
    } else {
        None
    };
    let decision = match route::resolve(&cfg, &req, auto.as_ref()) {
        Ok(d) => d,
        Err(e) => return respond_error_as(stream, out, &e, keep_alive, anthropic_client).await,
    };
    acct.category = decision.category;
    acct.tier = decision.tier;
    let requested = req.model.as_ref();
    // The route label: `auto`, `tier-N`, a named route, or `direct` (a model asked for by name).
    let is_tier = matches!(
        requested.as_bytes(),
        [b't', b'i', b'e', b'r', b'-', b'1'..=b'4']
    );
    let named = cfg.is_auto_model(requested) || is_tier || cfg.routes.contains_key(requested);
    acct.route = Some(Arc::from(if named { requested } else { "direct" }));
    // A key may be limited to some models: the requested name or the target it resolves to.
    if let Some(k) = &key {
        let primary = decision
            .targets
            .first()
            .map(|t| t.name(&cfg))
            .unwrap_or_default();
        if !k.allows_model(requested) && !k.allows_model(&primary) {
            let e = GatewayError::Forbidden {
                message: format!("this API key may not use model `{requested}`"),
                code: "model_not_allowed",
            };
            return respond_error_as(stream, out, &e, keep_alive, anthropic_client).await;
        }
    }
    // Admission: reserve an estimate (whole body bytes / 4 as prompt tokens, which is never below
    // the upstream's count of the rewritten body, plus max_tokens or a default) at the primary's price.
    let est_prompt = (body.len() as u64).div_ceil(4);
    let est_tokens = est_prompt
        + req
            .max_tokens
            .unwrap_or(account::DEFAULT_OUTPUT_TOKENS_ESTIMATE);
    let est_cost = decision
        .targets
        .first()
        .and_then(|t| t.price(&cfg))
        .map(|p| {
            account::cost_usd(
                &p,
                &parse::Usage {
                    prompt_tokens: est_prompt,
                    completion_tokens: est_tokens - est_prompt,
                },
            )
        })
        .unwrap_or(0.0);
    let admit_key = key
        .clone()
        .unwrap_or_else(|| worker.shared.accounting.anonymous.clone());
    let app: &str = acct.app.as_deref().unwrap_or("default");
    let admitted = match &worker.acct.redis {
        Some(rb) => rb.admit(&admit_key, app, est_cost, est_tokens).await,
        None => worker
            .shared
            .accounting
            .budget
            .admit(&admit_key, app, est_cost, est_tokens),
    };
    let reservation = match admitted {
        Ok(r) => r,
        Err(rej) => {
            worker.acct.stats.budget_rejected(rej.limit);
            let e = GatewayError::RateLimited {
                message: format!("{rej} (limit `{}`)", rej.limit.as_str()),
                retry_after_s: rej.retry_after_s.max(1),
            };
            return respond_error_as(stream, out, &e, keep_alive, anthropic_client).await;
        }
    };
    // Response cache (per core): deterministic OpenAI-dialect requests only; `Cache-Control:
    // no-cache` opts out. Keyed on the routed primary model and the raw request members.
    let primary_openai = decision
        .targets
        .first()
        .is_some_and(|t| cfg.providers[t.provider(&cfg)].dialect == Dialect::OpenAi);
    let cache_key = match &cfg.cache {
        Some(cc)
            if !caller.no_cache
                // Answers to requests carrying PII hold per-request placeholders: never shared.
                && !screening.pii_seen
                && screening.verdict == "CLEAN"
                && !anthropic_client
                && primary_openai
                && req.n <= 1
                && crate::cache::cacheable_sampling(req.temperature, cc) =>
        {
            let scope = if cfg.cache_per_key {
                key.as_ref().map(|k| k.id.to_string())
            } else {
                None
            };
            let primary = decision
                .targets
                .first()
                .map(|t| t.name(&cfg))
                .unwrap_or_default();
            let pairs = members.iter().filter_map(|m| {
                std::str::from_utf8(&body[m.key.clone()])
                    .ok()
                    .map(|k| (k, &body[m.value.clone()]))
            });
            Some(crate::cache::request_key_members(
                pairs,
                &primary,
                scope.as_deref(),
            ))
        }
        _ => None,
    };
    if let (Some(k), Some(cc)) = (&cache_key, &cfg.cache) {
        let hit = worker
            .cache(cc)
            .borrow_mut()
            .get(k, crate::ledger::now_ms());
        if let Some(entry) = hit {
            let target = &decision.targets[0];
            let mut meta = RouteMeta {
                requested_model: req.model.to_string(),
                routed_model: target.name(&cfg),
                category: decision.category,
                tier: decision.tier,
                reason: format!("{}+cache", decision.reason),
                decided_by: decision.decided_by.as_str(),
                fallbacks: Vec::new(),
                security: "CLEAN",
                price: target.price(&cfg),
                flagship_price: cfg.flagship.and_then(|f| cfg.targets[f].price),
                estimated_cost_usd: None,
                saved_vs_flagship: None,
                usage: None,
                prompt_tokens_estimate: 0,
                compression: None,
                cache_status: "HIT",
                cache_capture: false,
                captured: None,
            };
            let relayed = relay::serve_cached(
                stream,
                out,
                &entry,
                &mut meta,
                keep_alive,
                req.stream,
                req.include_usage,
                started,
            )
            .await;
            reservation.settle(0.0, 0);
            acct.cache_hit = true;
            acct.outcome = Some(match relayed.outcome {
                relay::Outcome::Ok => LedgerOutcome::Ok,
                _ => LedgerOutcome::ClientCancelled,
            });
            acct.meta = Some(meta);
            return Done {
                keep_alive: relayed.keep_alive,
                status: 200,
            };
        }
    }
    // A forcing prefix is stripped before forwarding: rewrite `messages` (rare path).
    let messages_override = match decision.strip_prefix {
        Some(n) => strip_prefix_messages(body, &members, n),
        None => None,
    };
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
    // PII: when a provider of the chain scrubs (`pii: true`), build the scrubbed `messages`
    // once, into this request's vault; the relay rehydrates the answer if one was used.
    // The vault (a fresh AES key from the OS) is made only for a request that is scrubbed.
    let mut vault: Option<crate::scanner::Vault> = None;
    let mut pii_messages: Option<(Vec<u8>, u32)> = None;
    let mut anthropic_pii: Option<Vec<u8>> = None;
    let scrubbing = screening.pii_seen
        && decision
            .targets
            .iter()
            .any(|t| cfg.providers[t.provider(&cfg)].pii);
    if let Some(s) = scanner.as_deref().filter(|_| scrubbing) {
        let vault = vault.insert(crate::scanner::Vault::new());
        let base = messages_override
            .as_deref()
            .or_else(|| security::messages_member(body, &members));
        // The screening already scanned these texts: their spans are reused, not rescanned.
        let known = security::known_pii(&req.messages, &screening);
        pii_messages = base.and_then(|b| security::scrub_messages(s, b, vault, &known));
        if let (Some(_), Some(i), Some(m)) = (&pii_messages, &inbound, &anthropic_members) {
            let base = anthropic_override
                .as_deref()
                .or_else(|| security::messages_member(i.original, m));
            anthropic_pii = base
                .and_then(|b| security::scrub_messages(s, b, vault, &known))
                .map(|(b, _)| b);
        }
    }
    // Compression: each variant above loses what the model does not need (placeholders kept).
    let packed = match cfg.compression.for_category(decision.category) {
        // Nothing any enabled pass could change (most prompts): no JSON parse of the messages.
        // Judged on the parsed texts when they are all of them (an OpenAI-shaped body as the
        // client sent it); scrubbing adds nothing a pass reacts to outside placeholders, which
        // compression never touches.
        Some(cc)
            if inbound.is_none()
                && messages_override.is_none()
                && req.texts_complete
                && !req
                    .messages
                    .iter()
                    .any(|m| crate::compress::may_change(&m.text, cc)) =>
        {
            compress::Variants::default()
        }
        Some(cc) => {
            let inputs = compress::Inputs {
                plain: messages_override
                    .as_deref()
                    .or_else(|| security::messages_member(body, &members)),
                pii: pii_messages.as_ref().map(|(b, _)| b.as_slice()),
                anthropic_plain: match (&inbound, &anthropic_members) {
                    (Some(i), Some(m)) => anthropic_override
                        .as_deref()
                        .or_else(|| security::messages_member(i.original, m)),
                    _ => None,
                },
                anthropic_pii: anthropic_pii.as_deref(),
            };
            compress::pack(cc, &inputs, vault.as_ref())
        }
        None => compress::Variants::default(),
    };
    let prompt_bytes: usize = req.messages.iter().map(|m| m.text.len()).sum();
    let client_wants_usage = req.include_usage;
    let stream_requested = req.stream;
    let requested_model = req.model.to_string();
    drop(req);

    let outgoing = Outgoing {
        original: body,
        members: &members,
        stream: stream_requested,
        messages_override: compress::or_uncompressed(&packed.plain, messages_override.as_deref()),
        pii_messages: compress::or_uncompressed(
            &packed.pii,
            pii_messages.as_ref().map(|(b, _)| b.as_slice()),
        ),
        anthropic_original: match (&inbound, &anthropic_members) {
            (Some(i), Some(m)) => Some(AnthropicOriginal {
                body: i.original,
                members: m,
                messages_override: compress::or_uncompressed(
                    &packed.anthropic_plain,
                    anthropic_override.as_deref(),
                ),
                pii_messages: compress::or_uncompressed(
                    &packed.anthropic_pii,
                    anthropic_pii.as_deref(),
                ),
            }),
            _ => None,
        },
    };
    let pre_upstream_us = started.elapsed().as_micros() as u64;
    acct.pre_upstream_us = pre_upstream_us;
    let fwd = match forward::forward(worker, &cfg, &decision, &outgoing).await {
        Ok(f) => f,
        Err(e) => return respond_error_as(stream, out, &e, keep_alive, anthropic_client).await,
    };
    acct.upstream_status = fwd.head.status;
    acct.ttfb_ms = fwd
        .head_at
        .duration_since(fwd.sent_at)
        .as_millis()
        .min(u32::MAX as u128) as u32;
    let target = &decision.targets[fwd.chosen];
    let upstream_model = target.model(&cfg).to_string();
    let scrubbed = cfg.providers[target.provider(&cfg)].pii && pii_messages.is_some();
    acct.pii_count = if scrubbed {
        pii_messages.as_ref().map_or(0, |(_, n)| *n)
    } else {
        0
    };
    let vault_used = if scrubbed { vault.as_ref() } else { None };
    let anthropic_body =
        inbound.is_some() && cfg.providers[target.provider(&cfg)].dialect == Dialect::Anthropic;
    let compression = packed.sent(anthropic_body, scrubbed);
    if let Some(c) = &compression {
        worker.counters.count_compression(c);
    }
    let dialects = match (&inbound, cfg.providers[target.provider(&cfg)].dialect) {
        (None, Dialect::OpenAi) => Dialects::OpenAi,
        (None, Dialect::Anthropic) => Dialects::AnthropicUpstream {
            model: &upstream_model,
        },
        (Some(i), Dialect::OpenAi) => Dialects::AnthropicClient {
            model: &upstream_model,
            input_tokens_hint: i.input_tokens_hint,
        },
        (Some(_), Dialect::Anthropic) => Dialects::Anthropic,
    };
    let mut meta = RouteMeta {
        requested_model,
        routed_model: target.name(&cfg),
        category: decision.category,
        tier: decision.tier,
        reason: if fwd.attempts.is_empty() {
            decision.reason.clone()
        } else {
            format!("{}+fallback", decision.reason)
        },
        decided_by: decision.decided_by.as_str(),
        fallbacks: fwd.attempts.iter().map(|a| a.target.clone()).collect(),
        security: screening.verdict,
        price: target.price(&cfg),
        flagship_price: cfg.flagship.and_then(|f| cfg.targets[f].price),
        estimated_cost_usd: None,
        saved_vs_flagship: None,
        usage: None,
        prompt_tokens_estimate: (prompt_bytes as u64)
            .div_ceil(4)
            .saturating_sub(compression.map_or(0, |c| c.tokens)),
        compression,
        cache_status: "MISS",
        cache_capture: cache_key.is_some() && fwd.head.status == 200,
        captured: None,
    };
    let relayed = if fwd.head.status == 200 && fwd.head.is_event_stream() {
        worker.counters.streams.inc();
        relay::relay_sse(
            worker,
            stream,
            out,
            fwd,
            &mut meta,
            keep_alive,
            pre_upstream_us,
            client_wants_usage,
            dialects,
            vault_used,
        )
        .await
    } else {
        relay::relay_json(
            worker,
            stream,
            out,
            fwd,
            &mut meta,
            keep_alive,
            pre_upstream_us,
            dialects,
            vault_used,
        )
        .await
    };
    // Upstream gauges: this provider's idle pool after the exchange, and which providers failed.
    let pi = target.provider(&cfg);
    if let Some(c) = worker.counters.pool_idle.get(pi) {
        c.set(worker.pool.idle_count_for(&cfg.providers[pi].pool_key) as u64);
    }
    if let Some(c) = worker.counters.failing.get(pi) {
        c.set(0);
    }
    for f in &meta.fallbacks {
        let name = f.split('/').next().unwrap_or("");
        if let Some(c) = cfg
            .providers
            .iter()
            .position(|p| p.name == name)
            .and_then(|i| worker.counters.failing.get(i))
        {
            c.set(1);
        }
    }
    let tokens = meta
        .usage
        .map_or(0, |u| u.prompt_tokens + u.completion_tokens);
    reservation.settle(meta.estimated_cost_usd.unwrap_or(0.0), tokens);
    acct.outcome = Some(match relayed.outcome {
        relay::Outcome::Ok => LedgerOutcome::Ok,
        relay::Outcome::ClientGone => LedgerOutcome::ClientCancelled,
        relay::Outcome::UpstreamBroken => LedgerOutcome::UpstreamBroken,
        relay::Outcome::UpstreamFailed => LedgerOutcome::Error,
    });
    if let (Some(k), Some(cc), Some(body)) = (cache_key, &cfg.cache, meta.captured.take()) {
        if relayed.outcome == relay::Outcome::Ok {
            let _ = worker
                .cache(cc)
                .borrow_mut()
                .insert(k, body, crate::ledger::now_ms());
        }
    }
    acct.meta = Some(meta);
    Done {
        keep_alive: relayed.keep_alive,
        status: relayed.status,
    }
}

/// The classifier's view of a parsed request: system prompts apart, turns in order.
pub fn classify_input<'a>(req: &'a parse::ChatRequest<'_>) -> crate::classifier::ClassifyInput<'a> {
    use crate::classifier::{ClassifyInput, Role, Turn};
    let mut input = ClassifyInput {
        system: Vec::new(),
        turns: Vec::with_capacity(req.messages.len()),
        has_tools: req.has_tools,
        has_audio: req.has_audio,
    };
    for m in &req.messages {
        match m.role {
            "system" | "developer" => input.system.push(&m.text),
            "user" => input.turns.push(Turn {
                role: Role::User,
                text: &m.text,
            }),
            "assistant" => input.turns.push(Turn {
                role: Role::Assistant,
                text: &m.text,
            }),
            _ => input.turns.push(Turn {
                role: Role::Tool,
                text: &m.text,
            }),
        }
    }
    input
}

/// Whether the model is asked at all: structure (tools, tool results, audio) and forcing prompt
/// prefixes decide without it.
pub fn needs_model(input: &crate::classifier::ClassifyInput<'_>) -> bool {
    use crate::classifier::Role;
    !input.has_tools
        && !input.has_audio
        && !input.turns.iter().any(|t| t.role == Role::Tool)
        && input
            .latest_user_text()
            .is_some_and(|t| crate::classifier::detect_override(t).is_none())
}

/// The routing decision for `model: auto`: structure and prompt prefixes first, then the learned
/// classifier on its own core if it answers within the deadline, else the rule scorer. Never
/// blocks the core: a late or missing answer is simply `None` from the handle.
async fn classify(
    worker: &Worker,
    cfg: &crate::config::Config,
    req: &parse::ChatRequest<'_>,
) -> Option<crate::classifier::Decision> {
    use crate::classifier::decide;
    let input = classify_input(req);
    let answer = match (&worker.classifier, needs_model(&input)) {
        (Some(h), true) => h.classify_input(&input, cfg.classifier_deadline()).await,
        _ => None,
    };
    Some(decide(&input, answer))
}

/// Re-serialises `messages` with `n` bytes stripped from the latest user message's text.
fn strip_prefix_messages(body: &[u8], members: &[parse::Member], n: usize) -> Option<Vec<u8>> {
    let m = members.iter().find(|m| m.key_is(body, "messages"))?;
    let mut msgs: serde_json::Value = serde_json::from_slice(&body[m.value.clone()]).ok()?;
    let arr = msgs.as_array_mut()?;
    let last_user = arr
        .iter_mut()
        .rev()
        .find(|m| m.get("role").and_then(|r| r.as_str()) == Some("user"))?;
    match last_user.get_mut("content")? {
        serde_json::Value::String(s) => {
            let cut = n.min(s.len());
            if s.is_char_boundary(cut) {
                s.replace_range(..cut, "");
            }
        }
        serde_json::Value::Array(parts) => {
            let p = parts
                .iter_mut()
                .find(|p| p.get("type").and_then(|t| t.as_str()) == Some("text"))?;
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
