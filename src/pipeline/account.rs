//! Account stage: the routing metadata every response carries (model, tier, category, reason,
//! fallbacks, estimated cost and savings against the flagship), the per-core connection counters,
//! and the wiring of the accounting engine (`crate::ledger`, `crate::stats`): the process-wide
//! `Accounting` (key store, budget, Redis link, stats registry, ledger writer) and each core's
//! `CoreAccounting` (its ledger ring, stats writer and Redis budget), plus the `UsageRecord`
//! every chat request ends as. Counters are relaxed atomics written by one core only.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::{Config, RawPrice};
use crate::error::push_json_str;
use crate::ledger::{
    AppLimits, Budget, BudgetConfig, KeyInfo, KeyStore, Ledger, LedgerConfig, LedgerCounters,
    LedgerHandle, NewKey, Outcome as LedgerOutcome, RedisBudget, RedisConfig, RedisState,
    UsageRecord,
};
use crate::stats::{CoreStatsWriter, StatsLabels, StatsRegistry};

use super::parse::Usage;

/// Output tokens assumed for admission when the request sets no `max_tokens`.
pub const DEFAULT_OUTPUT_TOKENS_ESTIMATE: u64 = 256;

/// The accounting engine as the whole process shares it (`Send + Sync`, one per gateway).
pub struct Accounting {
    /// Virtual keys (in the ledger file); `None` when the ledger is disabled.
    pub keys: Option<Arc<KeyStore>>,
    /// At least one active key exists (refreshed by `reload`).
    any_key: AtomicBool,
    pub budget: Arc<Budget>,
    pub redis: Option<Arc<RedisState>>,
    pub stats: Arc<StatsRegistry>,
    ledger: Mutex<Option<Ledger>>,
    /// A key with no limits of its own: app limits still apply to keyless traffic through it.
    pub anonymous: Arc<KeyInfo>,
    /// Failovers away from each provider (rare path; a lock is fine there).
    pub upstream_failovers: Mutex<BTreeMap<String, u64>>,
    /// Shared label values for records (a clone is a refcount, not an allocation).
    pub labels: RecordLabels,
}

/// `""` and `"default"` as shared strings.
pub struct RecordLabels {
    pub empty: Arc<str>,
    pub default_app: Arc<str>,
}

impl Default for RecordLabels {
    fn default() -> Self {
        RecordLabels {
            empty: Arc::from(""),
            default_app: Arc::from("default"),
        }
    }
}

fn budget_config(cfg: &Config) -> BudgetConfig {
    BudgetConfig {
        apps: cfg
            .apps
            .iter()
            .map(|(k, &(d, m))| {
                (
                    k.clone(),
                    AppLimits {
                        daily_budget_usd: d,
                        monthly_budget_usd: m,
                    },
                )
            })
            .collect(),
    }
}

impl Accounting {
    /// Opens the ledger file (creating its directory), loads the keys, connects nothing yet
    /// (Redis is reached lazily by each core). Cold path: call once at start.
    pub fn open(cfg: &Config) -> anyhow::Result<Accounting> {
        let (keys, ledger) = match &cfg.ledger {
            Some(l) => {
                if let Some(dir) = l.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        anyhow::anyhow!("cannot create the ledger directory {}: {e}", dir.display())
                    })?;
                }
                let ledger = Ledger::open(
                    &l.path,
                    LedgerConfig {
                        flush_interval_ms: l.flush_interval_ms,
                        ..LedgerConfig::default()
                    },
                )?;
                let keys = KeyStore::open(&l.path)?;
                (Some(Arc::new(keys)), Some(ledger))
            }
            None => (None, None),
        };
        let mut apps: Vec<String> = cfg.apps.keys().cloned().collect();
        let mut any_key = false;
        if let Some(k) = &keys {
            for info in k.list()?.into_iter().filter(|k| k.revoked_ms.is_none()) {
                any_key = true;
                apps.push(info.app.to_string());
            }
        }
        apps.push("default".into());
        let mut routes = vec!["auto".to_string()];
        routes.extend((1..=4).map(|t| format!("tier-{t}")));
        routes.extend(cfg.routes.keys().cloned());
        routes.push("direct".into());
        let labels = StatsLabels {
            models: cfg.targets.iter().map(|t| t.name.clone()).collect(),
            apps,
            routes,
        };
        let redis = match &cfg.redis_url {
            Some(url) => {
                let mut rc = RedisConfig::new(url);
                if let Some(ms) = cfg.redis_timeouts_ms.0 {
                    rc.connect_timeout_ms = ms;
                }
                if let Some(ms) = cfg.redis_timeouts_ms.1 {
                    rc.command_timeout_ms = ms;
                }
                Some(RedisState::new(rc).map_err(|e| anyhow::anyhow!("redis: {e}"))?)
            }
            None => None,
        };
        Ok(Accounting {
            keys,
            any_key: AtomicBool::new(any_key),
            budget: Arc::new(Budget::new(&budget_config(cfg))),
            redis,
            stats: StatsRegistry::new(&labels),
            ledger: Mutex::new(ledger),
            anonymous: Arc::new(KeyInfo::unstored("", "default", &NewKey::default())),
            upstream_failovers: Mutex::new(BTreeMap::new()),
            labels: RecordLabels::default(),
        })
    }

    /// SIGHUP: re-reads the keys (created or revoked by `tierflow keys` meanwhile) and the app limits.
    pub fn reload(&self, cfg: &Config) -> Result<(), String> {
        self.budget.set_config(&budget_config(cfg));
        if let Some(k) = &self.keys {
            k.reload().map_err(|e| e.to_string())?;
            let any = k
                .list()
                .map_err(|e| e.to_string())?
                .iter()
                .any(|k| k.revoked_ms.is_none());
            self.any_key.store(any, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Whether chat requests must carry a valid key.
    pub fn keys_required(&self, cfg: &Config) -> bool {
        self.keys.is_some() && (cfg.require_key || self.any_key.load(Ordering::Relaxed))
    }

    /// One worker core's end (call on that core: the Redis budget is `!Send`).
    pub fn core(&self) -> CoreAccounting {
        let ledger = self
            .ledger
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|l| l.handle());
        CoreAccounting {
            ledger: RefCell::new(ledger),
            stats: self.stats.register(),
            redis: self
                .redis
                .as_ref()
                .map(|r| RedisBudget::new(self.budget.clone(), r.clone())),
        }
    }

    pub fn ledger_counters(&self) -> Option<LedgerCounters> {
        self.ledger
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|l| l.counters())
    }

    /// Flushes every recorded row and stops the writer (after the workers have stopped).
    pub fn shutdown_ledger(&self) -> Option<Result<LedgerCounters, crate::ledger::LedgerError>> {
        let ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner()).take();
        ledger.map(|l| l.shutdown())
    }

    /// Counts a failover away from `target` (`provider/model`).
    pub fn count_failover(&self, target: &str) {
        let provider = target.split('/').next().unwrap_or(target);
        let mut m = self
            .upstream_failovers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *m.entry(provider.to_string()).or_insert(0) += 1;
    }
}

/// A worker core's accounting handles.
pub struct CoreAccounting {
    ledger: RefCell<Option<LedgerHandle>>,
    pub stats: CoreStatsWriter,
    pub redis: Option<RedisBudget>,
}

impl CoreAccounting {
    /// Counts `rec` in /stats and hands it to the ledger.
    pub fn finish(&self, rec: UsageRecord, saved_usd: f64) {
        self.stats.observe(&rec, saved_usd);
        if let Some(h) = self.ledger.borrow_mut().as_mut() {
            if let crate::ledger::Recorded::Closed = h.record(rec) {
                crate::log::warn("usage record not taken: the ledger is shut down", &[]);
            }
        }
    }

    /// The ledger is past its overflow limit: refuse new work until it catches up.
    pub fn ledger_saturated(&self) -> bool {
        self.ledger
            .borrow()
            .as_ref()
            .is_some_and(|h| h.is_saturated())
    }
}

/// What the chat path learned about a request, for its `UsageRecord` (filled as it goes).
#[derive(Default)]
pub struct Acct {
    pub key_id: Option<Arc<str>>,
    pub app: Option<Arc<str>>,
    pub env: Option<Arc<str>>,
    pub requested_model: String,
    pub route: Option<Arc<str>>,
    pub category: &'static str,
    pub tier: u8,
    pub meta: Option<RouteMeta>,
    pub upstream_status: u16,
    pub stream: bool,
    pub outcome: Option<LedgerOutcome>,
    pub ttfb_ms: u32,
    pub pre_upstream_us: u64,
    pub cache_hit: bool,
    /// The security scanner's verdict (Clean when scanning is off).
    pub security: crate::ledger::SecurityVerdict,
    /// PII spans scrubbed from what the chosen upstream received.
    pub pii_count: u32,
}

impl Acct {
    /// The request's record, given the status sent downstream.
    pub fn into_record(
        self,
        labels: &RecordLabels,
        time_ms: u64,
        status: u16,
        latency_ms: u32,
    ) -> (UsageRecord, f64) {
        let empty = &labels.empty;
        let meta = self.meta;
        let usage = meta.as_ref().and_then(|m| m.usage);
        let saved = meta
            .as_ref()
            .and_then(|m| m.saved_vs_flagship)
            .unwrap_or(0.0);
        let outcome = match self.outcome {
            Some(o) if o != LedgerOutcome::Ok => o,
            _ if status >= 400 => LedgerOutcome::Error,
            Some(o) => o,
            None => LedgerOutcome::Ok,
        };
        let rec = UsageRecord {
            time_ms,
            key_id: self.key_id.unwrap_or_else(|| empty.clone()),
            app: self.app.unwrap_or_else(|| labels.default_app.clone()),
            env: self.env.unwrap_or_else(|| empty.clone()),
            requested_model: self.requested_model,
            route: self.route.unwrap_or_else(|| empty.clone()),
            category: self.category,
            tier: self.tier,
            model: meta
                .as_ref()
                .map_or_else(|| empty.clone(), |m| Arc::from(m.routed_model.as_str())),
            fallbacks: meta
                .as_ref()
                .map_or(0, |m| m.fallbacks.len().min(255) as u8),
            fallback_models: meta.as_ref().map_or_else(Vec::new, |m| {
                m.fallbacks.iter().map(|f| Arc::from(f.as_str())).collect()
            }),
            prompt_tokens: usage.map_or(0, |u| u.prompt_tokens.min(u32::MAX as u64) as u32),
            completion_tokens: usage.map_or(0, |u| u.completion_tokens.min(u32::MAX as u64) as u32),
            cost_usd: meta
                .as_ref()
                .and_then(|m| m.estimated_cost_usd)
                .unwrap_or(0.0),
            cache_hit: self.cache_hit,
            security: self.security,
            pii_count: self.pii_count.min(u16::MAX as u32) as u16,
            upstream_status: self.upstream_status,
            status,
            latency_ms,
            ttfb_ms: self.ttfb_ms,
            overhead_us: self.pre_upstream_us.min(u32::MAX as u64) as u32,
            stream: self.stream,
            outcome,
        };
        (rec, saved)
    }
}

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
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One worker core's connection-level counters (tokens, cost and savings are counted by
/// `crate::stats` from each `UsageRecord`).
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
    pub connections_open: Counter,
    pub connections_rejected: Counter,
    pub pool_opened: Counter,
    pub pool_reused: Counter,
    /// Idle pooled connections per provider index (the first `TRACKED_PROVIDERS`), after the
    /// last request this core sent there.
    pub pool_idle: [Counter; TRACKED_PROVIDERS],
    /// 1 when the last attempt this core made at the provider failed.
    pub failing: [Counter; TRACKED_PROVIDERS],
    /// Message-text bytes removed by each compression pass (`compress::Pass::index`), and the
    /// token estimate of all of them, on the text actually sent upstream.
    pub compression_saved_bytes: [Counter; 6],
    pub compression_saved_tokens: Counter,
    /// Requests whose text compression shrank.
    pub compressed_requests: Counter,
    /// Background probes of idle upstreams (`probe`), by result.
    pub probes_ok: Counter,
    pub probes_failed: Counter,
}

/// Providers with per-upstream gauges in /stats (configs rarely have more).
pub const TRACKED_PROVIDERS: usize = 32;

impl WorkerCounters {
    pub fn pool_idle_by_provider(&self, i: usize) -> u64 {
        self.pool_idle.get(i).map_or(0, Counter::get)
    }

    pub fn provider_failing(&self, i: usize) -> bool {
        self.failing.get(i).is_some_and(|c| c.get() != 0)
    }

    pub fn count_compression(&self, saved: &super::compress::Saved) {
        self.compressed_requests.inc();
        self.compression_saved_tokens.add(saved.tokens);
        for p in crate::compress::Pass::ALL {
            if let Some(c) = self.compression_saved_bytes.get(p.index()) {
                c.add(saved.per_pass.get(p) as u64);
            }
        }
    }

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
    /// What context compression saved on the text sent upstream (`None`: nothing).
    pub compression: Option<super::compress::Saved>,
    /// `X-Cache` value: `HIT` or `MISS`.
    pub cache_status: &'static str,
    /// Set by the chat path when the answer may be stored; the relay then records it here.
    pub cache_capture: bool,
    pub captured: Option<crate::cache::CachedBody>,
}

pub fn cost_usd(price: &RawPrice, usage: &Usage) -> f64 {
    (usage.prompt_tokens as f64 * price.input + usage.completion_tokens as f64 * price.output)
        / 1_000_000.0
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
                let _ = write!(
                    out,
                    ",\"estimated_cost_usd\":{}",
                    ryu::Buffer::new().format(round9(c))
                );
            }
            None => out.push_str(",\"estimated_cost_usd\":null"),
        }
        match self.saved_vs_flagship {
            Some(c) => {
                let _ = write!(
                    out,
                    ",\"saved_vs_flagship\":{}",
                    ryu::Buffer::new().format(round9(c))
                );
            }
            None => out.push_str(",\"saved_vs_flagship\":null"),
        }
        if let Some(c) = &self.compression {
            let _ = write!(
                out,
                ",\"compression\":{{\"saved_tokens\":{},\"saved_bytes\":{},\"passes\":[",
                c.tokens, c.bytes
            );
            for (i, p) in c.passes().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json_str(out, p.as_str());
            }
            out.push_str("]}");
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
    fn records_map_outcomes_and_never_invent_usage() {
        // A request refused before routing: no model, no tokens, an error outcome.
        let a = Acct {
            app: Some("billing".into()),
            ..Acct::default()
        };
        let (r, saved) = a.into_record(&RecordLabels::default(), 1, 401, 3);
        assert_eq!(
            (r.status, r.outcome, r.prompt_tokens, saved),
            (401, LedgerOutcome::Error, 0, 0.0)
        );
        assert_eq!((&*r.app, &*r.model, &*r.key_id), ("billing", "", ""));
        // Keyless traffic without an app header is grouped as `default`.
        let (r, _) = Acct::default().into_record(&RecordLabels::default(), 1, 200, 3);
        assert_eq!((&*r.app, r.outcome), ("default", LedgerOutcome::Ok));
        // A cancelled stream keeps its outcome although the status was 200.
        let a = Acct {
            outcome: Some(LedgerOutcome::ClientCancelled),
            stream: true,
            ..Acct::default()
        };
        assert_eq!(
            a.into_record(&RecordLabels::default(), 1, 200, 3).0.outcome,
            LedgerOutcome::ClientCancelled
        );
        // An upstream 4xx relayed as is counts as an error.
        let a = Acct {
            outcome: Some(LedgerOutcome::Ok),
            upstream_status: 400,
            ..Acct::default()
        };
        assert_eq!(
            a.into_record(&RecordLabels::default(), 1, 400, 3).0.outcome,
            LedgerOutcome::Error
        );
    }

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
            price: Some(RawPrice {
                input: 0.15,
                output: 0.6,
            }),
            flagship_price: Some(RawPrice {
                input: 2.5,
                output: 10.0,
            }),
            estimated_cost_usd: None,
            saved_vs_flagship: None,
            usage: None,
            prompt_tokens_estimate: 0,
            compression: None,
            cache_status: "MISS",
            cache_capture: false,
            captured: None,
        };
        m.set_usage(Some(Usage {
            prompt_tokens: 1000,
            completion_tokens: 1000,
        }));
        let mut s = String::new();
        m.write_json(&mut s);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert!((v["estimated_cost_usd"].as_f64().unwrap() - 0.00075).abs() < 1e-12);
        assert!((v["saved_vs_flagship"].as_f64().unwrap() - 0.01175).abs() < 1e-12);
        assert_eq!(v["fallbacks"][0], "mock/broken");
    }
}
