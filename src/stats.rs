//! Stats: per-core counters and histograms, merged only when /stats is scraped, rendered in the
//! Prometheus text exposition format (0.0.4). What to count comes from `UsageRecord`s and the
//! budget's rejections; snapshots of the classifier, upstream pools and Redis are handed in.
//!
//! Merge: each worker core registers once and gets a `CoreStatsWriter` — the only writer of its
//! `CoreStats`. Counters are `AtomicU64` written with relaxed load + store (single writer: a
//! plain `mov`/`add` on x86, no `lock` prefix, no contention) so that the scraping thread can read
//! them without a data race. A scrape sums every core's counters into a `StatsSnapshot`; it may
//! see one request's counters half-applied (e.g. a histogram's count one ahead of its sum), which
//! Prometheus tolerates, and is exact again at the next scrape.
//!
//! Hand-written exposition instead of the `prometheus-client` crate: its labelled families keep
//! series in a map behind a lock (`RwLock<HashMap>`) and update counters with atomic RMW
//! (`lock xadd`) shared across cores — both on the hot path. Here labels are fixed index tables
//! built at start (models/apps/routes from config and keys, bounded); unknown names count as
//! "other". Names that appear after start (a new key's app) show as "other" until restart.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::ledger::{Limit, Outcome, SecurityVerdict, UsageRecord};

const OTHER: &str = "other";
const CATEGORIES: [&str; 8] = [
    "simple_chat",
    "general",
    "coding",
    "reasoning",
    "creative",
    "data",
    "agentic",
    "transcription",
];
const STATUSES: [u16; 14] = [
    200, 400, 401, 403, 404, 408, 413, 429, 499, 500, 502, 503, 504, 0,
];
const TIERS: usize = 5; // 0 (not tiered) ..= 4
/// Overhead buckets, µs.
const OVERHEAD_BOUNDS_US: [u64; 12] = [
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 50_000,
];
/// Upstream time-to-first-byte and total duration buckets, µs.
const LATENCY_BOUNDS_US: [u64; 14] = [
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    120_000_000,
];

/// The bounded label values known at start.
#[derive(Debug, Clone, Default)]
pub struct StatsLabels {
    /// `provider/model` names from the config.
    pub models: Vec<String>,
    /// Apps from the config and keys.
    pub apps: Vec<String>,
    /// Route names: `auto`, `tier-1`…`tier-4`, named routes.
    pub routes: Vec<String>,
}

#[derive(Debug)]
struct Dim {
    /// Label values; the last is "other".
    names: Vec<Box<str>>,
    index: HashMap<Box<str>, usize>,
}

impl Dim {
    fn new<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Dim {
        let mut d = Dim {
            names: Vec::new(),
            index: HashMap::new(),
        };
        for n in names {
            let n = n.as_ref();
            if n != OTHER && !d.index.contains_key(n) {
                d.index.insert(n.into(), d.names.len());
                d.names.push(n.into());
            }
        }
        d.names.push(OTHER.into());
        d
    }

    fn idx(&self, name: &str) -> usize {
        self.index
            .get(name)
            .copied()
            .unwrap_or(self.names.len() - 1)
    }

    fn len(&self) -> usize {
        self.names.len()
    }
}

#[derive(Debug)]
struct LabelSpace {
    models: Dim,
    apps: Dim,
    routes: Dim,
}

fn status_idx(status: u16) -> usize {
    STATUSES
        .iter()
        .position(|&s| s == status)
        .unwrap_or(STATUSES.len())
}

fn status_name(i: usize) -> String {
    match STATUSES.get(i) {
        Some(0) => "none".into(),
        Some(s) => s.to_string(),
        None => OTHER.into(),
    }
}

fn category_idx(c: &str) -> usize {
    CATEGORIES
        .iter()
        .position(|&x| x == c)
        .unwrap_or(CATEGORIES.len())
}

fn counters(n: usize) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

/// One core's counters. Written only through its `CoreStatsWriter`; read by scrapes.
#[derive(Debug)]
pub struct CoreStats {
    by_status: Box<[AtomicU64]>,
    by_route: Box<[AtomicU64]>,
    by_category: Box<[AtomicU64]>,
    by_tier: Box<[AtomicU64]>,
    by_model: Box<[AtomicU64]>,
    tokens_in_by_model: Box<[AtomicU64]>,
    tokens_out_by_model: Box<[AtomicU64]>,
    cost_micros_by_model: Box<[AtomicU64]>,
    by_app: Box<[AtomicU64]>,
    cost_micros_by_app: Box<[AtomicU64]>,
    saved_micros: AtomicU64,
    cache: [AtomicU64; 2],
    verdicts: [AtomicU64; 4],
    outcomes: [AtomicU64; 4],
    pii_scrubbed: AtomicU64,
    failovers: AtomicU64,
    budget_rejections: [AtomicU64; 6],
    overhead: AtomicHistogram,
    ttfb: AtomicHistogram,
    duration: AtomicHistogram,
}

#[derive(Debug)]
struct AtomicHistogram {
    bounds_us: &'static [u64],
    /// Per bucket (not cumulative), plus the +Inf bucket last.
    buckets: Box<[AtomicU64]>,
    sum_us: AtomicU64,
}

impl AtomicHistogram {
    fn new(bounds_us: &'static [u64]) -> Self {
        AtomicHistogram {
            bounds_us,
            buckets: counters(bounds_us.len() + 1),
            sum_us: AtomicU64::new(0),
        }
    }

    fn observe(&self, v_us: u64) {
        let i = self
            .bounds_us
            .iter()
            .position(|&b| v_us <= b)
            .unwrap_or(self.bounds_us.len());
        bump(&self.buckets[i], 1);
        bump(&self.sum_us, v_us);
    }

    fn snapshot_into(&self, into: &mut HistogramSnapshot) {
        for (a, b) in into.counts.iter_mut().zip(self.buckets.iter()) {
            *a += b.load(Ordering::Relaxed);
        }
        into.sum += self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
    }
}

/// Single-writer increment: relaxed load + store, no atomic read-modify-write.
#[inline]
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

fn usd_micros(usd: f64) -> u64 {
    if usd.is_finite() && usd > 0.0 {
        (usd * 1e6).round() as u64
    } else {
        0
    }
}

/// Where cores register and /stats reads. Share one `Arc<StatsRegistry>`.
#[derive(Debug)]
pub struct StatsRegistry {
    labels: Arc<LabelSpace>,
    /// Locked only to register a core (start) and to scrape.
    cores: Mutex<Vec<Arc<CoreStats>>>,
}

/// A core's handle for updating its own counters. `Send` (move it to its core) but not `Sync`
/// and not `Clone`: exactly one writer per `CoreStats`.
#[derive(Debug)]
pub struct CoreStatsWriter {
    stats: Arc<CoreStats>,
    labels: Arc<LabelSpace>,
    _single_writer: PhantomData<Cell<()>>,
}

impl StatsRegistry {
    pub fn new(labels: &StatsLabels) -> Arc<StatsRegistry> {
        Arc::new(StatsRegistry {
            labels: Arc::new(LabelSpace {
                models: Dim::new(&labels.models),
                apps: Dim::new(&labels.apps),
                routes: Dim::new(&labels.routes),
            }),
            cores: Mutex::new(Vec::new()),
        })
    }

    /// Registers one worker core (cold path) and returns its writer.
    pub fn register(&self) -> CoreStatsWriter {
        let l = &self.labels;
        let stats = Arc::new(CoreStats {
            by_status: counters(STATUSES.len() + 1),
            by_route: counters(l.routes.len()),
            by_category: counters(CATEGORIES.len() + 1),
            by_tier: counters(TIERS),
            by_model: counters(l.models.len()),
            tokens_in_by_model: counters(l.models.len()),
            tokens_out_by_model: counters(l.models.len()),
            cost_micros_by_model: counters(l.models.len()),
            by_app: counters(l.apps.len()),
            cost_micros_by_app: counters(l.apps.len()),
            saved_micros: AtomicU64::new(0),
            cache: Default::default(),
            verdicts: Default::default(),
            outcomes: Default::default(),
            pii_scrubbed: AtomicU64::new(0),
            failovers: AtomicU64::new(0),
            budget_rejections: Default::default(),
            overhead: AtomicHistogram::new(&OVERHEAD_BOUNDS_US),
            ttfb: AtomicHistogram::new(&LATENCY_BOUNDS_US),
            duration: AtomicHistogram::new(&LATENCY_BOUNDS_US),
        });
        self.cores
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(stats.clone());
        CoreStatsWriter {
            stats,
            labels: self.labels.clone(),
            _single_writer: PhantomData,
        }
    }

    /// Sums every core's counters (the scrape).
    pub fn snapshot(&self) -> StatsSnapshot {
        let l = &self.labels;
        let hist = |bounds: &[u64]| HistogramSnapshot {
            bounds: bounds.iter().map(|&b| b as f64 / 1e6).collect(),
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        };
        let mut s = StatsSnapshot {
            labels: l.clone(),
            cores: 0,
            by_status: vec![0; STATUSES.len() + 1],
            by_route: vec![0; l.routes.len()],
            by_category: vec![0; CATEGORIES.len() + 1],
            by_tier: vec![0; TIERS],
            by_model: vec![0; l.models.len()],
            tokens_in_by_model: vec![0; l.models.len()],
            tokens_out_by_model: vec![0; l.models.len()],
            cost_micros_by_model: vec![0; l.models.len()],
            by_app: vec![0; l.apps.len()],
            cost_micros_by_app: vec![0; l.apps.len()],
            saved_micros: 0,
            cache: [0; 2],
            verdicts: [0; 4],
            outcomes: [0; 4],
            pii_scrubbed: 0,
            failovers: 0,
            budget_rejections: [0; 6],
            overhead: hist(&OVERHEAD_BOUNDS_US),
            ttfb: hist(&LATENCY_BOUNDS_US),
            duration: hist(&LATENCY_BOUNDS_US),
        };
        fn add(into: &mut [u64], from: &[AtomicU64]) {
            for (a, b) in into.iter_mut().zip(from) {
                *a += b.load(Ordering::Relaxed);
            }
        }
        let cores = self.cores.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for c in &cores {
            s.cores += 1;
            add(&mut s.by_status, &c.by_status);
            add(&mut s.by_route, &c.by_route);
            add(&mut s.by_category, &c.by_category);
            add(&mut s.by_tier, &c.by_tier);
            add(&mut s.by_model, &c.by_model);
            add(&mut s.tokens_in_by_model, &c.tokens_in_by_model);
            add(&mut s.tokens_out_by_model, &c.tokens_out_by_model);
            add(&mut s.cost_micros_by_model, &c.cost_micros_by_model);
            add(&mut s.by_app, &c.by_app);
            add(&mut s.cost_micros_by_app, &c.cost_micros_by_app);
            s.saved_micros += c.saved_micros.load(Ordering::Relaxed);
            add(&mut s.cache, &c.cache);
            add(&mut s.verdicts, &c.verdicts);
            add(&mut s.outcomes, &c.outcomes);
            s.pii_scrubbed += c.pii_scrubbed.load(Ordering::Relaxed);
            s.failovers += c.failovers.load(Ordering::Relaxed);
            add(&mut s.budget_rejections, &c.budget_rejections);
            c.overhead.snapshot_into(&mut s.overhead);
            c.ttfb.snapshot_into(&mut s.ttfb);
            c.duration.snapshot_into(&mut s.duration);
        }
        s
    }
}

impl CoreStatsWriter {
    /// Counts one finished request. `saved_vs_flagship_usd`: the flagship's price for the same
    /// tokens minus `rec.cost_usd` (negative values count as 0).
    pub fn observe(&self, rec: &UsageRecord, saved_vs_flagship_usd: f64) {
        let s = &*self.stats;
        let l = &*self.labels;
        bump(&s.by_status[status_idx(rec.status)], 1);
        bump(&s.by_route[l.routes.idx(&rec.route)], 1);
        bump(&s.by_category[category_idx(rec.category)], 1);
        bump(&s.by_tier[usize::from(rec.tier).min(TIERS - 1)], 1);
        let cost = usd_micros(rec.cost_usd);
        if !rec.model.is_empty() {
            let m = l.models.idx(&rec.model);
            bump(&s.by_model[m], 1);
            bump(&s.tokens_in_by_model[m], rec.prompt_tokens.into());
            bump(&s.tokens_out_by_model[m], rec.completion_tokens.into());
            bump(&s.cost_micros_by_model[m], cost);
        }
        let a = l.apps.idx(&rec.app);
        bump(&s.by_app[a], 1);
        bump(&s.cost_micros_by_app[a], cost);
        bump(&s.saved_micros, usd_micros(saved_vs_flagship_usd));
        bump(&s.cache[usize::from(!rec.cache_hit)], 1);
        bump(&s.verdicts[rec.security as usize], 1);
        bump(&s.outcomes[rec.outcome as usize], 1);
        bump(&s.pii_scrubbed, rec.pii_count.into());
        bump(&s.failovers, rec.fallbacks.into());
        s.overhead.observe(rec.overhead_us.into());
        if rec.upstream_status != 0 && !rec.cache_hit {
            s.ttfb.observe(u64::from(rec.ttfb_ms) * 1000);
        }
        s.duration.observe(u64::from(rec.latency_ms) * 1000);
    }

    /// Counts a request refused by a budget or rate limit (it produces no `UsageRecord` with
    /// an upstream, but the 429 is still `observe`d if the pipeline records it).
    pub fn budget_rejected(&self, limit: Limit) {
        bump(&self.stats.budget_rejections[limit as usize], 1);
    }
}

/// Merged counters of all cores at one scrape.
#[derive(Debug, Clone)]
pub struct StatsSnapshot {
    labels: Arc<LabelSpace>,
    pub cores: usize,
    pub by_status: Vec<u64>,
    pub by_route: Vec<u64>,
    pub by_category: Vec<u64>,
    pub by_tier: Vec<u64>,
    pub by_model: Vec<u64>,
    pub tokens_in_by_model: Vec<u64>,
    pub tokens_out_by_model: Vec<u64>,
    pub cost_micros_by_model: Vec<u64>,
    pub by_app: Vec<u64>,
    pub cost_micros_by_app: Vec<u64>,
    pub saved_micros: u64,
    /// [hits, misses]
    pub cache: [u64; 2],
    /// Indexed by `SecurityVerdict as usize`.
    pub verdicts: [u64; 4],
    /// Indexed by `Outcome as usize`.
    pub outcomes: [u64; 4],
    pub pii_scrubbed: u64,
    pub failovers: u64,
    /// Indexed by `Limit as usize`.
    pub budget_rejections: [u64; 6],
    pub overhead: HistogramSnapshot,
    pub ttfb: HistogramSnapshot,
    pub duration: HistogramSnapshot,
}

impl StatsSnapshot {
    /// Total requests observed.
    pub fn requests(&self) -> u64 {
        self.by_status.iter().sum()
    }
}

/// A histogram as exported: upper bounds (in the exported unit, e.g. seconds), per-bucket counts
/// (not cumulative; one more than `bounds`: the +Inf bucket), and the sum.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    pub bounds: Vec<f64>,
    pub counts: Vec<u64>,
    pub sum: f64,
}

/// The classifier core's counters, as it reports them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClassifierSnapshot {
    pub requests_total: u64,
    /// Answers that came after the request's deadline (routed by rules instead).
    pub late_answers_total: u64,
    /// Batch sizes (bounds in requests).
    pub batch_size: HistogramSnapshot,
}

/// One upstream's pool and health, as the upstream module reports them.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamGauge {
    pub upstream: String,
    pub pool_connections: u64,
    pub healthy: bool,
    pub failovers_total: u64,
}

/// Everything one /stats response shows.
#[derive(Debug, Clone, Copy)]
pub struct Scrape<'a> {
    pub stats: &'a StatsSnapshot,
    pub classifier: Option<&'a ClassifierSnapshot>,
    pub upstreams: &'a [UpstreamGauge],
    /// `None` when no Redis is configured.
    pub redis_up: Option<bool>,
    pub ledger: Option<crate::ledger::LedgerCounters>,
}

/// Escapes a label value: backslash, double quote and line feed.
pub fn escape_label(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(
            self.out,
            "# HELP {name} {}",
            help.replace('\\', "\\\\").replace('\n', "\\n")
        );
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_label(v, &mut self.out);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        if value.is_infinite() {
            self.out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
        } else if value.is_nan() {
            self.out.push_str("NaN");
        } else {
            let _ = write!(self.out, "{value}");
        }
        self.out.push('\n');
    }

    fn counter_by(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        names: impl IntoIterator<Item = String>,
        values: &[u64],
    ) {
        self.family(name, "counter", help);
        for (n, v) in names.into_iter().zip(values) {
            self.sample(name, &[(label, &n)], *v as f64);
        }
    }

    fn scalar(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    fn histogram(&mut self, name: &str, help: &str, h: &HistogramSnapshot) {
        self.family(name, "histogram", help);
        let mut cumulative = 0u64;
        let bucket = format!("{name}_bucket");
        for (i, c) in h.counts.iter().enumerate() {
            cumulative += c;
            let le = h
                .bounds
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| format!("{b}"));
            self.sample(&bucket, &[("le", &le)], cumulative as f64);
        }
        self.sample(&format!("{name}_sum"), &[], h.sum);
        self.sample(&format!("{name}_count"), &[], cumulative as f64);
    }
}

fn names(d: &Dim) -> impl Iterator<Item = String> + '_ {
    d.names.iter().map(|n| n.to_string())
}

/// Renders a scrape in the Prometheus text exposition format (`text/plain; version=0.0.4`).
pub fn render_prometheus(scrape: &Scrape<'_>) -> String {
    let s = scrape.stats;
    let l = &*s.labels;
    let mut e = Exposition {
        out: String::with_capacity(16 * 1024),
    };
    let micros = |v: &[u64]| -> Vec<f64> { v.iter().map(|&m| m as f64 / 1e6).collect() };

    e.counter_by(
        "tierflow_requests_total",
        "Requests by downstream status.",
        "status",
        (0..=STATUSES.len()).map(status_name),
        &s.by_status,
    );
    e.counter_by(
        "tierflow_route_requests_total",
        "Requests by route.",
        "route",
        names(&l.routes),
        &s.by_route,
    );
    let cats = CATEGORIES
        .iter()
        .map(|c| c.to_string())
        .chain([OTHER.to_string()]);
    e.counter_by(
        "tierflow_category_requests_total",
        "Requests by category.",
        "category",
        cats,
        &s.by_category,
    );
    e.counter_by(
        "tierflow_tier_requests_total",
        "Requests by tier (0: not tiered).",
        "tier",
        (0..TIERS).map(|t| t.to_string()),
        &s.by_tier,
    );
    e.counter_by(
        "tierflow_model_requests_total",
        "Requests answered by each upstream model.",
        "model",
        names(&l.models),
        &s.by_model,
    );
    e.counter_by(
        "tierflow_app_requests_total",
        "Requests by app.",
        "app",
        names(&l.apps),
        &s.by_app,
    );

    e.family(
        "tierflow_tokens_total",
        "counter",
        "Tokens by model and direction.",
    );
    for (i, m) in l.models.names.iter().enumerate() {
        e.sample(
            "tierflow_tokens_total",
            &[("model", m), ("direction", "prompt")],
            s.tokens_in_by_model[i] as f64,
        );
        e.sample(
            "tierflow_tokens_total",
            &[("model", m), ("direction", "completion")],
            s.tokens_out_by_model[i] as f64,
        );
    }
    e.family(
        "tierflow_cost_usd_total",
        "counter",
        "Upstream cost in USD by model.",
    );
    for (n, v) in l.models.names.iter().zip(micros(&s.cost_micros_by_model)) {
        e.sample("tierflow_cost_usd_total", &[("model", n)], v);
    }
    e.family(
        "tierflow_app_cost_usd_total",
        "counter",
        "Upstream cost in USD by app.",
    );
    for (n, v) in l.apps.names.iter().zip(micros(&s.cost_micros_by_app)) {
        e.sample("tierflow_app_cost_usd_total", &[("app", n)], v);
    }
    e.scalar(
        "tierflow_saved_vs_flagship_usd_total",
        "counter",
        "Cost saved against sending every request to the flagship model, USD.",
        s.saved_micros as f64 / 1e6,
    );
    e.counter_by(
        "tierflow_cache_requests_total",
        "Response cache lookups.",
        "result",
        ["hit".to_string(), "miss".to_string()],
        &s.cache,
    );
    e.counter_by(
        "tierflow_security_verdicts_total",
        "Security verdicts.",
        "verdict",
        SecurityVerdict::ALL.iter().map(|v| v.as_str().to_string()),
        &s.verdicts,
    );
    e.counter_by(
        "tierflow_outcomes_total",
        "How requests ended.",
        "outcome",
        Outcome::ALL.iter().map(|o| o.as_str().to_string()),
        &s.outcomes,
    );
    e.scalar(
        "tierflow_pii_scrubbed_total",
        "counter",
        "PII spans scrubbed from requests.",
        s.pii_scrubbed as f64,
    );
    e.scalar(
        "tierflow_failovers_total",
        "counter",
        "Upstream models tried and abandoned before the one that answered.",
        s.failovers as f64,
    );
    e.counter_by(
        "tierflow_budget_rejections_total",
        "Requests refused by a budget or rate limit.",
        "limit",
        Limit::ALL.iter().map(|l| l.as_str().to_string()),
        &s.budget_rejections,
    );

    e.histogram(
        "tierflow_overhead_seconds",
        "Time spent in the gateway per request, excluding the upstream.",
        &s.overhead,
    );
    e.histogram(
        "tierflow_upstream_ttfb_seconds",
        "Upstream time to first byte.",
        &s.ttfb,
    );
    e.histogram(
        "tierflow_request_duration_seconds",
        "Request accepted to response complete.",
        &s.duration,
    );

    if let Some(c) = scrape.classifier {
        e.scalar(
            "tierflow_classifier_requests_total",
            "counter",
            "Requests submitted to the classifier.",
            c.requests_total as f64,
        );
        e.scalar(
            "tierflow_classifier_late_answers_total",
            "counter",
            "Classifier answers after the deadline (rules routed instead).",
            c.late_answers_total as f64,
        );
        e.histogram(
            "tierflow_classifier_batch_size",
            "Requests per classifier batch.",
            &c.batch_size,
        );
    }
    if !scrape.upstreams.is_empty() {
        e.family(
            "tierflow_upstream_pool_connections",
            "gauge",
            "Pooled upstream connections (all cores).",
        );
        for u in scrape.upstreams {
            e.sample(
                "tierflow_upstream_pool_connections",
                &[("upstream", &u.upstream)],
                u.pool_connections as f64,
            );
        }
        e.family(
            "tierflow_upstream_healthy",
            "gauge",
            "1 if the upstream passes health checks.",
        );
        for u in scrape.upstreams {
            e.sample(
                "tierflow_upstream_healthy",
                &[("upstream", &u.upstream)],
                if u.healthy { 1.0 } else { 0.0 },
            );
        }
        e.family(
            "tierflow_upstream_failovers_total",
            "counter",
            "Failovers away from this upstream.",
        );
        for u in scrape.upstreams {
            e.sample(
                "tierflow_upstream_failovers_total",
                &[("upstream", &u.upstream)],
                u.failovers_total as f64,
            );
        }
    }
    if let Some(up) = scrape.redis_up {
        e.scalar(
            "tierflow_redis_up",
            "gauge",
            "1 if the shared budget store (Redis) is reachable.",
            if up { 1.0 } else { 0.0 },
        );
    }
    if let Some(c) = scrape.ledger {
        e.scalar(
            "tierflow_ledger_written_total",
            "counter",
            "Usage records committed to the ledger.",
            c.written_total as f64,
        );
        e.scalar(
            "tierflow_ledger_overflow_total",
            "counter",
            "Usage records that took the overflow path.",
            c.overflow_total as f64,
        );
        e.scalar(
            "tierflow_ledger_failed_flushes_total",
            "counter",
            "Ledger flushes that failed and were retried.",
            c.failed_flushes_total as f64,
        );
    }
    e.scalar(
        "tierflow_worker_cores",
        "gauge",
        "Worker cores reporting.",
        s.cores as f64,
    );
    e.out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn labels() -> StatsLabels {
        StatsLabels {
            models: vec!["openai/gpt-4o-mini".into(), "openai/gpt-4o".into()],
            apps: vec!["billing".into(), "we\"ird\\app\nx".into()],
            routes: vec!["auto".into(), "tier-1".into()],
        }
    }

    fn rec() -> UsageRecord {
        UsageRecord {
            app: "billing".into(),
            route: "auto".into(),
            category: "coding",
            tier: 2,
            model: "openai/gpt-4o-mini".into(),
            fallbacks: 1,
            prompt_tokens: 100,
            completion_tokens: 20,
            cost_usd: 0.25,
            security: SecurityVerdict::Warning,
            pii_count: 3,
            upstream_status: 200,
            status: 200,
            latency_ms: 300,
            ttfb_ms: 120,
            overhead_us: 40,
            ..Default::default()
        }
    }

    /// Parses exposition text into (family → TYPE) and (series → value), checking the grammar.
    fn parse(text: &str) -> (BTreeMap<String, String>, BTreeMap<String, f64>) {
        let (mut types, mut samples) = (BTreeMap::new(), BTreeMap::new());
        let mut helped = std::collections::BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                assert!(
                    helped.insert(rest.split(' ').next().unwrap().to_string()),
                    "HELP twice: {line}"
                );
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(helped.contains(name), "TYPE before HELP: {line}");
                assert!(["counter", "gauge", "histogram"].contains(&kind));
                assert!(
                    types.insert(name.to_string(), kind.to_string()).is_none(),
                    "TYPE twice: {line}"
                );
            } else {
                let (series, value) = line.rsplit_once(' ').unwrap();
                let name = series.split('{').next().unwrap();
                assert!(
                    name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                    "{line}"
                );
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| {
                        name.strip_suffix(s)
                            .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
                    })
                    .unwrap_or(name);
                assert!(types.contains_key(family), "sample before its TYPE: {line}");
                let v = if value == "+Inf" {
                    f64::INFINITY
                } else {
                    value.parse().unwrap()
                };
                assert!(
                    samples.insert(series.to_string(), v).is_none(),
                    "duplicate series {series}"
                );
            }
        }
        (types, samples)
    }

    #[test]
    fn merges_cores_and_renders_valid_exposition() {
        let reg = StatsRegistry::new(&labels());
        let cores: Vec<_> = (0..2).map(|_| reg.register()).collect();
        cores[0].observe(&rec(), 1.0);
        let mut r2 = rec();
        r2.model = "mystery/model".into();
        r2.app = "we\"ird\\app\nx".into();
        r2.cache_hit = true;
        r2.status = 418;
        r2.category = "poetry";
        r2.overhead_us = 1_000_000;
        cores[1].observe(&r2, -5.0);
        cores[1].budget_rejected(Limit::KeyTpm);

        let snap = reg.snapshot();
        assert_eq!(snap.cores, 2);
        assert_eq!(snap.requests(), 2);
        let classifier = ClassifierSnapshot {
            requests_total: 10,
            late_answers_total: 1,
            batch_size: HistogramSnapshot {
                bounds: vec![1.0, 4.0, 8.0],
                counts: vec![1, 2, 0, 0],
                sum: 7.0,
            },
        };
        let ups = [UpstreamGauge {
            upstream: "openai".into(),
            pool_connections: 4,
            healthy: true,
            failovers_total: 2,
        }];
        let text = render_prometheus(&Scrape {
            stats: &snap,
            classifier: Some(&classifier),
            upstreams: &ups,
            redis_up: Some(false),
            ledger: None,
        });
        let (types, s) = parse(&text);
        assert_eq!(types["tierflow_overhead_seconds"], "histogram");
        assert_eq!(s["tierflow_requests_total{status=\"200\"}"], 1.0);
        assert_eq!(s["tierflow_requests_total{status=\"other\"}"], 1.0);
        assert_eq!(
            s["tierflow_model_requests_total{model=\"openai/gpt-4o-mini\"}"],
            1.0
        );
        assert_eq!(s["tierflow_model_requests_total{model=\"other\"}"], 1.0);
        assert_eq!(
            s["tierflow_category_requests_total{category=\"other\"}"],
            1.0
        );
        assert_eq!(
            s["tierflow_app_requests_total{app=\"we\\\"ird\\\\app\\nx\"}"],
            1.0
        );
        assert_eq!(
            s["tierflow_tokens_total{model=\"openai/gpt-4o-mini\",direction=\"prompt\"}"],
            100.0
        );
        assert_eq!(
            s["tierflow_cost_usd_total{model=\"openai/gpt-4o-mini\"}"],
            0.25
        );
        assert_eq!(s["tierflow_app_cost_usd_total{app=\"billing\"}"], 0.25);
        assert_eq!(s["tierflow_saved_vs_flagship_usd_total"], 1.0);
        assert_eq!(s["tierflow_cache_requests_total{result=\"hit\"}"], 1.0);
        assert_eq!(
            s["tierflow_security_verdicts_total{verdict=\"WARNING\"}"],
            2.0
        );
        assert_eq!(s["tierflow_pii_scrubbed_total"], 6.0);
        assert_eq!(s["tierflow_failovers_total"], 2.0);
        assert_eq!(
            s["tierflow_budget_rejections_total{limit=\"key_tpm\"}"],
            1.0
        );
        assert_eq!(s["tierflow_redis_up"], 0.0);
        assert_eq!(
            s["tierflow_upstream_pool_connections{upstream=\"openai\"}"],
            4.0
        );
        assert_eq!(s["tierflow_classifier_late_answers_total"], 1.0);
        // Histograms: cumulative buckets, +Inf equals _count, sum in seconds.
        assert_eq!(s["tierflow_overhead_seconds_bucket{le=\"0.00005\"}"], 1.0);
        assert_eq!(s["tierflow_overhead_seconds_bucket{le=\"0.05\"}"], 1.0);
        assert_eq!(s["tierflow_overhead_seconds_bucket{le=\"+Inf\"}"], 2.0);
        assert_eq!(s["tierflow_overhead_seconds_count"], 2.0);
        assert!((s["tierflow_overhead_seconds_sum"] - 1.00004).abs() < 1e-9);
        // The cache hit has no upstream time to first byte.
        assert_eq!(s["tierflow_upstream_ttfb_seconds_count"], 1.0);
        assert_eq!(s["tierflow_classifier_batch_size_bucket{le=\"4\"}"], 3.0);
        assert_eq!(s["tierflow_classifier_batch_size_bucket{le=\"+Inf\"}"], 3.0);
        for (series, v) in &s {
            if series.contains("_bucket{") {
                assert!(*v <= s[&format!("{}_count", series.split("_bucket").next().unwrap())]);
            }
        }
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn concurrent_writers_and_scrapes_sum_exactly() {
        let reg = StatsRegistry::new(&labels());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let w = reg.register();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        w.observe(&rec(), 0.0);
                    }
                })
            })
            .collect();
        // Scrapes while writing see monotonic totals.
        let mut last = 0;
        for _ in 0..20 {
            let n = reg.snapshot().requests();
            assert!(n >= last);
            last = n;
        }
        for t in threads {
            t.join().unwrap();
        }
        let snap = reg.snapshot();
        assert_eq!(snap.requests(), 40_000);
        assert_eq!(snap.tokens_in_by_model[0], 4_000_000);
        assert_eq!(snap.duration.counts.iter().sum::<u64>(), 40_000);
    }

    #[test]
    fn duplicate_and_other_labels_are_folded() {
        let d = Dim::new(["a", "b", "a", "other"]);
        assert_eq!(d.names.len(), 3);
        assert_eq!(d.idx("a"), 0);
        assert_eq!(d.idx("zzz"), 2);
        assert_eq!(d.idx("other"), 2);
        let mut out = String::new();
        escape_label("a\\b\"c\nd", &mut out);
        assert_eq!(out, "a\\\\b\\\"c\\nd");
    }
}
