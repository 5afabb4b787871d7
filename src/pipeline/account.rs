//! Account stage: the routing metadata every response carries (model, tier, category, reason,
//! fallbacks, estimated cost and savings against the flagship) and the per-core counters that
//! /stats merges when scraped. Counters are relaxed atomics written by one core only.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::RawPrice;
use crate::error::push_json_str;

use super::parse::Usage;

/// A single-writer counter (one core writes, /stats reads).
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }
    #[inline]
    pub fn add(&self, n: u64) {
        // Only the owning core writes: a load+store avoids a locked RMW on the hot path.
        self.0.store(self.0.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One worker core's counters.
#[derive(Debug, Default)]
pub struct WorkerCounters {
    pub requests: Counter,
    pub responses_2xx: Counter,
    pub responses_4xx: Counter,
    pub responses_5xx: Counter,
    pub streams: Counter,
    pub failovers: Counter,
    pub upstream_errors: Counter,
    pub client_cancels: Counter,
    pub prompt_tokens: Counter,
    pub completion_tokens: Counter,
    /// Cost in micro-dollars.
    pub cost_micro_usd: Counter,
    pub saved_micro_usd: Counter,
    pub connections_open: Counter,
    pub connections_rejected: Counter,
    pub pool_opened: Counter,
    pub pool_reused: Counter,
}

impl WorkerCounters {
    pub fn count_status(&self, status: u16) {
        match status {
            200..=299 => self.responses_2xx.inc(),
            400..=499 => self.responses_4xx.inc(),
            _ => self.responses_5xx.inc(),
        }
    }
}

/// The routing metadata of one request (headers and the `tierflow` object).
#[derive(Debug, Clone)]
pub struct RouteMeta {
    pub requested_model: String,
    pub routed_model: String,
    pub category: &'static str,
    pub tier: u8,
    pub reason: String,
    pub decided_by: &'static str,
    pub fallbacks: Vec<String>,
    pub security: &'static str,
    pub price: Option<RawPrice>,
    pub flagship_price: Option<RawPrice>,
    pub estimated_cost_usd: Option<f64>,
    pub saved_vs_flagship: Option<f64>,
    pub usage: Option<Usage>,
    /// ~4 bytes per token over the request text; used when a stream ends without usage.
    pub prompt_tokens_estimate: u64,
}

pub fn cost_usd(price: &RawPrice, usage: &Usage) -> f64 {
    (usage.prompt_tokens as f64 * price.input + usage.completion_tokens as f64 * price.output) / 1_000_000.0
}

impl RouteMeta {
    pub fn set_usage(&mut self, usage: Option<Usage>) {
        self.usage = usage;
        if let Some(u) = &usage {
            self.estimated_cost_usd = self.price.map(|p| cost_usd(&p, u));
            self.saved_vs_flagship = match (self.flagship_price, self.estimated_cost_usd) {
                (Some(f), Some(c)) => Some((cost_usd(&f, u) - c).max(0.0)),
                _ => None,
            };
        }
    }

    /// The `tierflow` JSON object.
    pub fn write_json(&self, out: &mut String) {
        out.push_str("{\"requested_model\":");
        push_json_str(out, &self.requested_model);
        out.push_str(",\"routed_model\":");
        push_json_str(out, &self.routed_model);
        out.push_str(",\"category\":");
        push_json_str(out, self.category);
        let _ = write!(out, ",\"tier\":{}", self.tier);
        out.push_str(",\"route_reason\":");
        push_json_str(out, &self.reason);
        out.push_str(",\"decided_by\":");
        push_json_str(out, self.decided_by);
        out.push_str(",\"fallbacks\":[");
        for (i, f) in self.fallbacks.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_str(out, f);
        }
        out.push(']');
        match self.estimated_cost_usd {
            Some(c) => {
                let _ = write!(out, ",\"estimated_cost_usd\":{}", ryu::Buffer::new().format(round9(c)));
            }
            None => out.push_str(",\"estimated_cost_usd\":null"),
        }
        match self.saved_vs_flagship {
            Some(c) => {
                let _ = write!(out, ",\"saved_vs_flagship\":{}", ryu::Buffer::new().format(round9(c)));
            }
            None => out.push_str(",\"saved_vs_flagship\":null"),
        }
        out.push('}');
    }
}

fn round9(x: f64) -> f64 {
    (x * 1e9).round() / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_json_and_cost() {
        let mut m = RouteMeta {
            requested_model: "auto".into(),
            routed_model: "mock/small".into(),
            category: "general",
            tier: 2,
            reason: "auto:default".into(),
            decided_by: "default",
            fallbacks: vec!["mock/broken".into()],
            security: "CLEAN",
            price: Some(RawPrice { input: 0.15, output: 0.6 }),
            flagship_price: Some(RawPrice { input: 2.5, output: 10.0 }),
            estimated_cost_usd: None,
            saved_vs_flagship: None,
            usage: None,
            prompt_tokens_estimate: 0,
        };
        m.set_usage(Some(Usage { prompt_tokens: 1000, completion_tokens: 1000 }));
        let mut s = String::new();
        m.write_json(&mut s);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert!((v["estimated_cost_usd"].as_f64().unwrap() - 0.00075).abs() < 1e-12);
        assert!((v["saved_vs_flagship"].as_f64().unwrap() - 0.01175).abs() < 1e-12);
        assert_eq!(v["fallbacks"][0], "mock/broken");
    }
}
