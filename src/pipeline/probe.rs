//! Background probe: keeps upstream health fresh while no client uses an upstream. Every
//! `health.probe_interval_ms`, each core takes its share of the configured targets (target id
//! modulo the number of cores) and sends each one that saw no client traffic in that interval —
//! on any core — one minimal real request (`max_tokens: 1`), through the core's own pool, as an
//! async task on the core's runtime (it only waits on I/O and timers, never blocks the core).
//! The outcome goes to the same health table and board as client traffic (`record_probe`), so an
//! upstream that broke while idle has its circuit opened before a client meets it, and a
//! half-open circuit closes as soon as the upstream answers again.

use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::config::{Config, Dialect};
use crate::providers;
use crate::providers::anthropic::{chat_to_messages_request, RequestOptions};

use super::Worker;

/// How often a core with probing off looks whether a reload turned it on.
const OFF_RECHECK_MS: u64 = 1_000;
/// A probe waits for the response head at most max(interval, this), capped by the provider's
/// own first-byte timeout.
const PROBE_TIMEOUT_FLOOR_MS: u64 = 10_000;

/// The probe loop of one core; returns when the gateway shuts down.
pub async fn run(worker: Rc<Worker>) {
    while !worker.shared.is_shutting_down() {
        let cfg = worker.shared.config.load_full();
        let interval_ms = cfg.health.probe_interval_ms;
        if interval_ms == 0 {
            monoio::time::sleep(Duration::from_millis(OFF_RECHECK_MS)).await;
            continue;
        }
        monoio::time::sleep(Duration::from_millis(interval_ms)).await;
        if worker.shared.is_shutting_down() {
            break;
        }
        // The snapshot current after the sleep (a reload may have changed the targets).
        let cfg = worker.shared.config.load_full();
        if cfg.health.probe_interval_ms == 0 {
            continue;
        }
        probe_idle_targets(&worker, &cfg).await;
    }
}

/// Probes this core's share of the targets that had no client traffic for an interval.
async fn probe_idle_targets(worker: &Worker, cfg: &std::sync::Arc<Config>) {
    let cores = worker.shared.workers.max(1);
    let board = worker.shared.health_board(cfg);
    let health = worker.health(cfg);
    let interval_ms = cfg.health.probe_interval_ms;
    for target in (0..cfg.targets.len()).filter(|t| t % cores == worker.id) {
        let now = crate::ledger::now_ms();
        if now.saturating_sub(board.last_traffic_ms(target)) < interval_ms {
            continue;
        }
        // Open and cooling down: nothing to learn yet. Half-open: this takes the probe slot.
        if !health.allow(target, now) {
            continue;
        }
        let started = Instant::now();
        let ok = probe_once(worker, cfg, target).await;
        let us = started.elapsed().as_micros().min(u64::MAX as u128) as u64;
        health.record_probe(target, us, ok, crate::ledger::now_ms());
        if ok {
            worker.counters.probes_ok.inc();
        } else {
            worker.counters.probes_failed.inc();
        }
    }
}

/// The probe body for `target` in its provider's dialect.
pub fn probe_body(cfg: &Config, target: usize, prompt: &str) -> Option<Vec<u8>> {
    let t = cfg.targets.get(target)?;
    let provider = cfg.providers.get(t.provider)?;
    let chat = serde_json::json!({
        "model": t.model,
        "max_tokens": 1,
        "temperature": 0,
        "stream": false,
        "messages": [{"role": "user", "content": prompt}],
    });
    match provider.dialect {
        Dialect::OpenAi => serde_json::to_vec(&chat).ok(),
        Dialect::Anthropic => {
            chat_to_messages_request(&chat, &t.model, &RequestOptions::default()).ok()
        }
    }
}

/// One probe: `true` when the upstream answered with a head that is neither 429 nor 5xx in time
/// (the same rule as client traffic in `forward`). The connection is
/// dropped with its body unread, never pooled.
async fn probe_once(worker: &Worker, cfg: &Config, target: usize) -> bool {
    let Some(t) = cfg.targets.get(target) else {
        return false;
    };
    let Some(provider) = cfg.providers.get(t.provider) else {
        return false;
    };
    let Some(body) = probe_body(cfg, target, &cfg.health.probe_prompt) else {
        return false;
    };
    let mut wire = Vec::with_capacity(body.len() + 512);
    providers::write_chat_request_head(&mut wire, provider, body.len(), false);
    wire.extend_from_slice(&body);
    let ep = super::forward::endpoint(provider);
    // A hanging upstream must not stall this core's probe round for the provider's full
    // first-byte timeout (minutes for reasoning models); a minimal request answers fast.
    let timeout_ms = provider
        .first_byte_timeout_ms
        .min(cfg.health.probe_interval_ms.max(PROBE_TIMEOUT_FLOOR_MS));
    match super::forward::try_once(worker, &ep, &mut wire, timeout_ms).await {
        Ok((conn, head, _)) => {
            drop(conn);
            head.status != 429 && head.status < 500
        }
        Err(_) => false,
    }
}

/// Appends the probe counters and each target's circuit (cores holding it open) to /stats.
pub fn render_stats(s: &mut String, shared: &crate::runtime::Shared) {
    use std::fmt::Write;
    let ok: u64 = shared.counters.iter().map(|c| c.probes_ok.get()).sum();
    let failed: u64 = shared.counters.iter().map(|c| c.probes_failed.get()).sum();
    let _ = writeln!(
        s,
        "# HELP tierflow_health_probes_total Background probes of idle upstreams, by result.\n# TYPE tierflow_health_probes_total counter\ntierflow_health_probes_total{{result=\"ok\"}} {ok}\ntierflow_health_probes_total{{result=\"failed\"}} {failed}"
    );
    let cfg = shared.config.load_full();
    let board = shared.health_board(&cfg);
    let _ = writeln!(
        s,
        "# HELP tierflow_upstream_circuit_open_cores Cores whose circuit breaker for the target is open.\n# TYPE tierflow_upstream_circuit_open_cores gauge"
    );
    for (i, t) in cfg.targets.iter().enumerate() {
        s.push_str("tierflow_upstream_circuit_open_cores{target=\"");
        crate::stats::escape_label(&t.name, s);
        let _ = writeln!(s, "\"}} {}", board.peers(i, None).open_cores);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_bodies_per_dialect() {
        let raw: crate::config::RawConfig = serde_json::from_value(serde_json::json!({
            "providers": {
                "o": {"baseUrl": "http://127.0.0.1:1/v1", "auth": {"type": "none"}, "models": ["m1"]},
                "a": {"baseUrl": "http://127.0.0.1:1/v1", "api": "anthropic", "auth": {"type": "none"}, "models": ["c1"]}
            },
            "tiers": {"1": {"primary": "o/m1", "fallback": ["a/c1"]}},
            "ledger": {"enabled": false}
        }))
        .unwrap();
        let cfg = Config::resolve(raw, &Default::default(), "test".into()).unwrap();
        let o = cfg.target_index["o/m1"];
        let a = cfg.target_index["a/c1"];
        let v: serde_json::Value =
            serde_json::from_slice(&probe_body(&cfg, o, "ping").unwrap()).unwrap();
        assert_eq!(
            (v["model"].as_str(), v["max_tokens"].as_u64()),
            (Some("m1"), Some(1))
        );
        assert_eq!(v["messages"][0]["content"], "ping");
        let v: serde_json::Value =
            serde_json::from_slice(&probe_body(&cfg, a, "ping").unwrap()).unwrap();
        assert_eq!(
            (v["model"].as_str(), v["max_tokens"].as_u64()),
            (Some("c1"), Some(1))
        );
        assert!(probe_body(&cfg, 99, "ping").is_none());
    }
}
