//! Upstream health, per core: EWMA of time-to-first-byte and of the error rate, a circuit breaker
//! per upstream target, a lock-free published snapshot other cores read, and `order_chain`, which
//! turns a configured chain into the order to try. The forward stage records outcomes and decides
//! when to call; clocks are passed in (`now_ms`) so tests run on simulated time.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

/// Tunables of the breaker and the averages. Defaults in `Default`.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    /// Weight of a new TTFB sample in the EWMA (default 0.2).
    pub ttfb_alpha: f64,
    /// Weight of a new outcome in the error-rate EWMA (default 0.1).
    pub error_alpha: f64,
    /// Consecutive failures that open a closed circuit (default 5).
    pub consecutive_failures_to_open: u32,
    /// Outcomes kept for the ratio rule, at most 64 (default 20).
    pub window_requests: u32,
    /// The ratio rule only applies once the window holds this many outcomes (default 10).
    pub window_min_requests: u32,
    /// Failure ratio in the window that opens the circuit (default 0.5).
    pub window_error_ratio_to_open: f64,
    /// Time an open circuit waits before admitting probes (default 5 s); doubled on each re-open.
    pub cool_down_ms: u64,
    /// Cap of the doubled cool-down (default 60 s).
    pub max_cool_down_ms: u64,
    /// Probe requests a half-open circuit admits at once (default 1).
    pub half_open_max_probes: u32,
    /// A probe with no recorded outcome after this long frees its slot (default 30 s): a probe
    /// admitted by `order_chain` but never sent (an earlier target answered) must not wedge the circuit.
    pub probe_timeout_ms: u64,
    /// Successful probes that close a half-open circuit (default 1).
    pub half_open_successes_to_close: u32,
    /// Successful samples before a local TTFB average is trusted over the peers' (default 3).
    pub min_samples: u32,
    /// A closed circuit whose error EWMA is above this (parts per million) is "degraded":
    /// `order_chain` tries it after the healthy targets of its tier (default 250 000 = 25%).
    pub degraded_error_ppm: u32,
    /// The error EWMA halves for every this long without outcomes (default 30 s), so a degraded
    /// target that routing stopped using becomes eligible again instead of starving.
    pub error_half_life_ms: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            ttfb_alpha: 0.2,
            error_alpha: 0.1,
            consecutive_failures_to_open: 5,
            window_requests: 20,
            window_min_requests: 10,
            window_error_ratio_to_open: 0.5,
            cool_down_ms: 5_000,
            max_cool_down_ms: 60_000,
            half_open_max_probes: 1,
            probe_timeout_ms: 30_000,
            half_open_successes_to_close: 1,
            min_samples: 3,
            degraded_error_ppm: 250_000,
            error_half_life_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum CircuitState {
    #[default]
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

impl CircuitState {
    fn from_u8(v: u8) -> CircuitState {
        match v {
            1 => CircuitState::Open,
            2 => CircuitState::HalfOpen,
            _ => CircuitState::Closed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

/// One core's view of one upstream target.
#[derive(Debug, Clone, Default)]
struct Upstream {
    ewma_ttfb_us: f64,
    /// Successful samples folded into `ewma_ttfb_us` (saturating).
    samples: u32,
    error_ewma: f64,
    /// When `error_ewma` was last updated (for the time decay).
    error_updated_ms: u64,
    consecutive_failures: u32,
    /// Last `window_len` outcomes, bit set = failure, newest in bit 0.
    window_bits: u64,
    window_len: u32,
    state: CircuitState,
    opened_at_ms: u64,
    reopen_count: u32,
    probes_in_flight: u32,
    last_probe_ms: u64,
    probe_successes: u32,
    /// When a client request last got an outcome here (background probes do not count).
    last_traffic_ms: u64,
}

/// The compact record a core publishes for one target; other cores read it without locks.
/// Fields are stored independently (Relaxed), so a reader may see a mix of two consecutive
/// updates: acceptable for a routing hint.
#[derive(Debug, Default)]
pub struct UpstreamHealth {
    ewma_ttfb_us: AtomicU64,
    error_ewma_ppm: AtomicU32,
    state: AtomicU8,
    samples: AtomicU32,
    last_traffic_ms: AtomicU64,
}

/// A plain copy of an `UpstreamHealth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HealthSnapshot {
    pub ewma_ttfb_us: u64,
    pub error_ewma_ppm: u32,
    pub state: CircuitState,
    pub samples: u32,
    /// When a client request last got an outcome (ms since the epoch; 0 never).
    pub last_traffic_ms: u64,
}

impl UpstreamHealth {
    pub fn load(&self) -> HealthSnapshot {
        HealthSnapshot {
            ewma_ttfb_us: self.ewma_ttfb_us.load(Ordering::Relaxed),
            error_ewma_ppm: self.error_ewma_ppm.load(Ordering::Relaxed),
            state: CircuitState::from_u8(self.state.load(Ordering::Relaxed)),
            samples: self.samples.load(Ordering::Relaxed),
            last_traffic_ms: self.last_traffic_ms.load(Ordering::Relaxed),
        }
    }

    fn store(&self, s: HealthSnapshot) {
        self.ewma_ttfb_us.store(s.ewma_ttfb_us, Ordering::Relaxed);
        self.error_ewma_ppm
            .store(s.error_ewma_ppm, Ordering::Relaxed);
        self.state.store(s.state as u8, Ordering::Relaxed);
        self.samples.store(s.samples, Ordering::Relaxed);
        self.last_traffic_ms
            .store(s.last_traffic_ms, Ordering::Relaxed);
    }
}

/// The cross-core board: one row of `targets` slots per core, row `core` written only by that
/// core. Cheap to clone (one `Arc`). Built once per config generation (target ids are config ids).
#[derive(Debug, Clone)]
pub struct SharedHealth {
    cores: usize,
    targets: usize,
    slots: Arc<[UpstreamHealth]>,
}

/// What the other cores say about one target.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PeerView {
    /// Sample-weighted mean of the peers' TTFB averages; `None` when no peer has samples.
    pub ewma_ttfb_us: Option<u64>,
    /// Mean of the peers' error EWMAs, parts per million.
    pub error_ewma_ppm: u32,
    /// Peers whose circuit for the target is open.
    pub open_cores: usize,
    /// Peers that have recorded anything for the target.
    pub reporting_cores: usize,
}

impl SharedHealth {
    pub fn new(cores: usize, targets: usize) -> SharedHealth {
        let slots: Vec<UpstreamHealth> = (0..cores.saturating_mul(targets))
            .map(|_| UpstreamHealth::default())
            .collect();
        SharedHealth {
            cores,
            targets,
            slots: slots.into(),
        }
    }

    pub fn cores(&self) -> usize {
        self.cores
    }

    pub fn targets(&self) -> usize {
        self.targets
    }

    /// The slot of `core` for `target`; `None` when out of range.
    pub fn slot(&self, core: usize, target: usize) -> Option<&UpstreamHealth> {
        if core >= self.cores || target >= self.targets {
            return None;
        }
        self.slots.get(core * self.targets + target)
    }

    /// When any core last saw client traffic to `target` (0: never).
    pub fn last_traffic_ms(&self, target: usize) -> u64 {
        (0..self.cores)
            .filter_map(|core| self.slot(core, target))
            .map(|s| s.last_traffic_ms.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0)
    }

    /// Merges the rows of every core except `exclude_core` for `target` (for /stats, pass `None`).
    pub fn peers(&self, target: usize, exclude_core: Option<usize>) -> PeerView {
        let mut v = PeerView::default();
        let (mut weighted_us, mut weight, mut err_sum) = (0u128, 0u128, 0u64);
        for core in 0..self.cores {
            if Some(core) == exclude_core {
                continue;
            }
            let Some(slot) = self.slot(core, target) else {
                continue;
            };
            let s = slot.load();
            if s.samples == 0 && s.error_ewma_ppm == 0 && s.state == CircuitState::Closed {
                continue;
            }
            v.reporting_cores += 1;
            err_sum += u64::from(s.error_ewma_ppm);
            if s.state == CircuitState::Open {
                v.open_cores += 1;
            }
            if s.samples > 0 {
                weighted_us += u128::from(s.ewma_ttfb_us) * u128::from(s.samples);
                weight += u128::from(s.samples);
            }
        }
        v.ewma_ttfb_us = weighted_us.checked_div(weight).map(|x| x as u64);
        if v.reporting_cores > 0 {
            v.error_ewma_ppm = (err_sum / v.reporting_cores as u64) as u32;
        }
        v
    }
}

/// What routing needs to know about one target right now, local view merged with the peers'.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TargetView {
    /// Local state, with an open circuit past its cool-down shown as `HalfOpen`; a closed local
    /// circuit with too few samples of its own shows `Open` when most reporting peers have it open.
    pub state: CircuitState,
    /// Local TTFB average once it has `min_samples`, else the peers', else the local one if any.
    pub ewma_ttfb_us: Option<u64>,
    pub error_ewma_ppm: u32,
}

/// Per-core health of every upstream target, indexed by target id. Interior mutability (the
/// worker is shared as `&Worker` on its core); no method holds the borrow across a call out, so
/// the `RefCell` never conflicts. Not `Sync`: one table per core.
#[derive(Debug)]
pub struct HealthTable {
    cfg: HealthConfig,
    upstreams: RefCell<Vec<Upstream>>,
    board: Option<(SharedHealth, usize)>,
}

impl HealthTable {
    /// A table with no cross-core board.
    pub fn new(cfg: HealthConfig) -> HealthTable {
        HealthTable {
            cfg,
            upstreams: RefCell::new(Vec::new()),
            board: None,
        }
    }

    /// A table that publishes into row `core` of `board` after every change and reads the other rows.
    pub fn with_board(cfg: HealthConfig, board: SharedHealth, core: usize) -> HealthTable {
        HealthTable {
            cfg,
            upstreams: RefCell::new(Vec::new()),
            board: Some((board, core)),
        }
    }

    pub fn config(&self) -> &HealthConfig {
        &self.cfg
    }

    fn cool_down_ms(&self, reopen_count: u32) -> u64 {
        let factor = 1u64 << reopen_count.min(16);
        self.cfg
            .cool_down_ms
            .saturating_mul(factor)
            .min(self.cfg.max_cool_down_ms.max(self.cfg.cool_down_ms))
    }

    fn with_upstream<R>(&self, target: usize, f: impl FnOnce(&mut Upstream) -> R) -> R {
        let mut ups = self.upstreams.borrow_mut();
        if ups.len() <= target {
            ups.resize(target + 1, Upstream::default());
        }
        let r = f(&mut ups[target]);
        if let Some((board, core)) = &self.board {
            if let Some(slot) = board.slot(*core, target) {
                slot.store(snapshot_of(&ups[target]));
            }
        }
        r
    }

    /// Records the outcome of one attempt. `ttfb_us` is only folded into the average when `ok`
    /// (a refused connection answers fast and would look healthy). Unknown ids grow the table.
    pub fn record(&self, target: usize, ttfb_us: u64, ok: bool, now_ms: u64) {
        self.record_outcome(target, ttfb_us, ok, now_ms, true);
    }

    /// `record` for a background probe: the same breaker and averages, but the target still
    /// counts as idle (`last_traffic_ms` unchanged), so the prober keeps probing it.
    pub fn record_probe(&self, target: usize, ttfb_us: u64, ok: bool, now_ms: u64) {
        self.record_outcome(target, ttfb_us, ok, now_ms, false);
    }

    fn record_outcome(&self, target: usize, ttfb_us: u64, ok: bool, now_ms: u64, traffic: bool) {
        let cfg = &self.cfg;
        let window = cfg.window_requests.clamp(1, 64);
        self.with_upstream(target, |u| {
            if traffic {
                u.last_traffic_ms = u.last_traffic_ms.max(now_ms);
            }
            if ok {
                if u.samples == 0 {
                    u.ewma_ttfb_us = ttfb_us as f64;
                } else {
                    u.ewma_ttfb_us += cfg.ttfb_alpha * (ttfb_us as f64 - u.ewma_ttfb_us);
                }
                u.samples = u.samples.saturating_add(1);
            }
            u.error_ewma = decayed(
                u.error_ewma,
                u.error_updated_ms,
                now_ms,
                cfg.error_half_life_ms,
            );
            u.error_updated_ms = u.error_updated_ms.max(now_ms);
            let x = if ok { 0.0 } else { 1.0 };
            u.error_ewma += cfg.error_alpha * (x - u.error_ewma);
            u.window_bits = (u.window_bits << 1) | u64::from(!ok);
            if window < 64 {
                u.window_bits &= (1u64 << window) - 1;
            }
            u.window_len = (u.window_len + 1).min(window);
            match u.state {
                CircuitState::Closed => {
                    if ok {
                        u.consecutive_failures = 0;
                    } else {
                        u.consecutive_failures += 1;
                        let failures = u.window_bits.count_ones();
                        let ratio_trips = u.window_len >= cfg.window_min_requests.max(1)
                            && f64::from(failures)
                                >= cfg.window_error_ratio_to_open * f64::from(u.window_len);
                        if u.consecutive_failures >= cfg.consecutive_failures_to_open.max(1)
                            || ratio_trips
                        {
                            open(u, now_ms);
                        }
                    }
                }
                CircuitState::HalfOpen => {
                    u.probes_in_flight = u.probes_in_flight.saturating_sub(1);
                    if ok {
                        u.probe_successes += 1;
                        if u.probe_successes >= cfg.half_open_successes_to_close.max(1) {
                            close(u);
                        }
                    } else {
                        u.reopen_count = u.reopen_count.saturating_add(1);
                        open(u, now_ms);
                    }
                }
                // A late answer to a request sent before the circuit opened: averages only.
                CircuitState::Open => {}
            }
        });
    }

    /// The local circuit state as last changed (an open circuit stays `Open` here until `allow`
    /// moves it on; `view` shows the time-aware state).
    pub fn state(&self, target: usize) -> CircuitState {
        self.upstreams
            .borrow()
            .get(target)
            .map(|u| u.state)
            .unwrap_or_default()
    }

    /// Whether a request may be sent to `target` now. Closed: yes. Open: no until the cool-down
    /// has passed, then half-open. Half-open: yes for at most `half_open_max_probes` outstanding
    /// probes (this call takes a slot; a slot frees on `record` or after `probe_timeout_ms`).
    pub fn allow(&self, target: usize, now_ms: u64) -> bool {
        self.admit(target, now_ms, true)
    }

    /// What `allow` would answer now, without taking a probe slot or changing state.
    pub fn would_allow(&self, target: usize, now_ms: u64) -> bool {
        self.admit(target, now_ms, false)
    }

    fn admit(&self, target: usize, now_ms: u64, take: bool) -> bool {
        let cool_down = {
            let ups = self.upstreams.borrow();
            match ups.get(target) {
                None => return true,
                Some(u) if u.state == CircuitState::Closed => return true,
                Some(u) => self.cool_down_ms(u.reopen_count),
            }
        };
        let cfg = &self.cfg;
        let decide = |u: &mut Upstream| {
            if u.state == CircuitState::Open {
                if now_ms.saturating_sub(u.opened_at_ms) < cool_down {
                    return false;
                }
                u.state = CircuitState::HalfOpen;
                u.probes_in_flight = 0;
                u.probe_successes = 0;
            }
            if u.probes_in_flight < cfg.half_open_max_probes.max(1) {
                u.probes_in_flight += 1;
                u.last_probe_ms = now_ms;
                return true;
            }
            if now_ms.saturating_sub(u.last_probe_ms) >= cfg.probe_timeout_ms {
                // The outstanding probes are presumed lost; start a fresh one.
                u.probes_in_flight = 1;
                u.last_probe_ms = now_ms;
                return true;
            }
            false
        };
        if take {
            self.with_upstream(target, decide)
        } else {
            let mut copy = self
                .upstreams
                .borrow()
                .get(target)
                .cloned()
                .unwrap_or_default();
            decide(&mut copy)
        }
    }

    /// The local snapshot of `target` (what this core publishes).
    pub fn snapshot(&self, target: usize) -> HealthSnapshot {
        self.upstreams
            .borrow()
            .get(target)
            .map(snapshot_of)
            .unwrap_or_default()
    }

    /// Local state merged with the peers' published rows; see `TargetView`.
    pub fn view(&self, target: usize, now_ms: u64) -> TargetView {
        let ups = self.upstreams.borrow();
        let local = ups.get(target).cloned().unwrap_or_default();
        drop(ups);
        let mut state = local.state;
        if state == CircuitState::Open
            && now_ms.saturating_sub(local.opened_at_ms) >= self.cool_down_ms(local.reopen_count)
        {
            state = CircuitState::HalfOpen;
        }
        let local_ttfb = (local.samples > 0).then_some(local.ewma_ttfb_us.round() as u64);
        let local_err = (decayed(
            local.error_ewma,
            local.error_updated_ms,
            now_ms,
            self.cfg.error_half_life_ms,
        ) * 1e6)
            .round() as u32;
        let trusted = local.samples >= self.cfg.min_samples;
        let Some((board, core)) = &self.board else {
            return TargetView {
                state,
                ewma_ttfb_us: local_ttfb,
                error_ewma_ppm: local_err,
            };
        };
        let peers = board.peers(target, Some(*core));
        if state == CircuitState::Closed
            && !trusted
            && local.consecutive_failures == 0
            && peers.reporting_cores > 0
            && peers.open_cores * 2 > peers.reporting_cores
        {
            state = CircuitState::Open;
        }
        let ewma_ttfb_us = if trusted {
            local_ttfb
        } else {
            peers.ewma_ttfb_us.or(local_ttfb)
        };
        let error_ewma_ppm = if trusted || peers.reporting_cores == 0 {
            local_err
        } else {
            peers.error_ewma_ppm
        };
        TargetView {
            state,
            ewma_ttfb_us,
            error_ewma_ppm,
        }
    }
}

/// `value` halved for every `half_life_ms` between `since_ms` and `now_ms` (0 = no decay).
fn decayed(value: f64, since_ms: u64, now_ms: u64, half_life_ms: u64) -> f64 {
    if half_life_ms == 0 || now_ms <= since_ms {
        return value;
    }
    value * 0.5f64.powf((now_ms - since_ms) as f64 / half_life_ms as f64)
}

fn open(u: &mut Upstream, now_ms: u64) {
    u.state = CircuitState::Open;
    u.opened_at_ms = now_ms;
    u.probes_in_flight = 0;
    u.probe_successes = 0;
}

fn close(u: &mut Upstream) {
    u.state = CircuitState::Closed;
    // The probe proved it answers again: start clean rather than "degraded" for a half-life.
    u.error_ewma = 0.0;
    u.consecutive_failures = 0;
    u.window_bits = 0;
    u.window_len = 0;
    u.reopen_count = 0;
    u.probes_in_flight = 0;
    u.probe_successes = 0;
}

fn snapshot_of(u: &Upstream) -> HealthSnapshot {
    HealthSnapshot {
        ewma_ttfb_us: u.ewma_ttfb_us.max(0.0).round() as u64,
        error_ewma_ppm: (u.error_ewma.clamp(0.0, 1.0) * 1e6).round() as u32,
        state: u.state,
        samples: u.samples,
        last_traffic_ms: u.last_traffic_ms,
    }
}

/// One entry of a configured chain: the target id and the tier it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub target: usize,
    pub tier: u8,
}

/// The order in which to try `candidates`, as positions into it:
/// - open circuits are skipped (a half-open one is kept, in its configured place, if it admits a
///   probe; the slot is taken only when it stays in the returned list), unless every candidate
///   is blocked: then all are tried in configured order;
/// - tiers keep the order of their first appearance; inside one tier, degraded targets (error
///   EWMA above `degraded_error_ppm`) go last, then targets with a known TTFB come first,
///   fastest first, the others keep their configured order;
/// - with `latency_budget_ms`, the first target (in that order) whose TTFB average fits moves to
///   the front; if none fits, the fastest known one does;
/// - without `allow_fallback`, only the first position is returned.
///
/// Empty in, empty out.
pub fn order_chain(
    candidates: &[Candidate],
    table: &HealthTable,
    latency_budget_ms: Option<u64>,
    allow_fallback: bool,
    now_ms: u64,
) -> Vec<usize> {
    let degraded_ppm = table.config().degraded_error_ppm;
    let mut usable: Vec<(usize, Option<u64>, bool)> = Vec::with_capacity(candidates.len());
    let mut half_open = vec![false; candidates.len()];
    for (pos, c) in candidates.iter().enumerate() {
        let v = table.view(c.target, now_ms);
        let ok = match v.state {
            CircuitState::Closed => true,
            CircuitState::HalfOpen => {
                half_open[pos] = true;
                table.would_allow(c.target, now_ms)
            }
            CircuitState::Open => false,
        };
        if ok {
            // A half-open target is probed in its place, never pushed back.
            let degraded = v.state == CircuitState::Closed && v.error_ewma_ppm > degraded_ppm;
            usable.push((pos, v.ewma_ttfb_us, degraded));
        }
    }
    let all_blocked = usable.is_empty();
    let mut order: Vec<usize> = if all_blocked {
        (0..candidates.len()).collect()
    } else {
        // Group by tier in order of first appearance; stable sort inside each group.
        let mut tiers: Vec<u8> = Vec::new();
        for &(pos, _, _) in &usable {
            if !tiers.contains(&candidates[pos].tier) {
                tiers.push(candidates[pos].tier);
            }
        }
        let mut ordered: Vec<(usize, Option<u64>, bool)> = Vec::with_capacity(usable.len());
        for tier in tiers {
            let start = ordered.len();
            ordered.extend(
                usable
                    .iter()
                    .copied()
                    .filter(|&(pos, _, _)| candidates[pos].tier == tier),
            );
            ordered[start..]
                .sort_by_key(|&(_, ttfb, degraded)| (degraded, ttfb.unwrap_or(u64::MAX)));
        }
        if let Some(budget_ms) = latency_budget_ms {
            let budget_us = budget_ms.saturating_mul(1000);
            let fits = ordered
                .iter()
                .position(|&(_, t, _)| t.is_some_and(|t| t <= budget_us));
            let pick = fits.or_else(|| {
                ordered
                    .iter()
                    .enumerate()
                    .filter_map(|(i, &(_, t, _))| t.map(|t| (i, t)))
                    .min_by_key(|&(_, t)| t)
                    .map(|(i, _)| i)
            });
            if let Some(i) = pick {
                let e = ordered.remove(i);
                ordered.insert(0, e);
            }
        }
        ordered.into_iter().map(|(pos, _, _)| pos).collect()
    };
    if !allow_fallback {
        order.truncate(1);
    }
    if !all_blocked {
        // Take probe slots only for the half-open targets that made the final list.
        order.retain(|&pos| !half_open[pos] || table.allow(candidates[pos].target, now_ms));
    }
    order
}

/// `"health": {...}` as written. Defaults: no background probe; the breaker's defaults
/// (`HealthConfig::default`).
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    /// Every this long, each upstream target that got no client traffic in that time is sent
    /// one minimal real request (`max_tokens: 1`), whose outcome feeds its circuit breaker.
    /// 0 (default) = off: probes are billed by paid providers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_interval_ms: Option<u64>,
    /// The probe's prompt (default "Reply with the single word: ok").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_prompt: Option<String>,
    /// Consecutive failures that open a circuit (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures_to_open: Option<u32>,
    /// How long an open circuit waits before a probe may close it (default 5000; doubles on
    /// each re-open up to 60 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cool_down_ms: Option<u64>,
}

/// The resolved `health` section.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthSettings {
    /// 0: no background probe.
    pub probe_interval_ms: u64,
    pub probe_prompt: String,
    pub breaker: HealthConfig,
}

/// The default probe prompt: tiny, and answerable by any model.
pub const DEFAULT_PROBE_PROMPT: &str = "Reply with the single word: ok";

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            probe_interval_ms: 0,
            probe_prompt: DEFAULT_PROBE_PROMPT.to_string(),
            breaker: HealthConfig::default(),
        }
    }
}

impl HealthSettings {
    /// Resolves the raw section; `Err((dotted key, reason))`.
    pub fn resolve(raw: Option<&RawHealth>) -> Result<HealthSettings, (String, String)> {
        let mut s = HealthSettings::default();
        let Some(r) = raw else { return Ok(s) };
        s.probe_interval_ms = r.probe_interval_ms.unwrap_or(0);
        if s.probe_interval_ms != 0 && s.probe_interval_ms < 100 {
            return Err((
                "health.probe_interval_ms".into(),
                "must be 0 (off) or at least 100".into(),
            ));
        }
        if let Some(p) = &r.probe_prompt {
            if p.is_empty() || p.len() > 4096 {
                return Err((
                    "health.probe_prompt".into(),
                    "must be 1 to 4096 bytes".into(),
                ));
            }
            s.probe_prompt = p.clone();
        }
        if let Some(n) = r.consecutive_failures_to_open {
            if n == 0 {
                return Err((
                    "health.consecutive_failures_to_open".into(),
                    "must be at least 1".into(),
                ));
            }
            s.breaker.consecutive_failures_to_open = n;
        }
        if let Some(ms) = r.cool_down_ms {
            s.breaker.cool_down_ms = ms;
            s.breaker.max_cool_down_ms = s.breaker.max_cool_down_ms.max(ms);
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_feed_the_breaker_but_leave_the_target_idle() {
        let board = SharedHealth::new(2, 3);
        let t = HealthTable::with_board(cfg(), board.clone(), 1);
        t.record(2, 1_000, true, 500);
        assert_eq!(board.last_traffic_ms(2), 500);
        for i in 0..5 {
            t.record_probe(2, 0, false, 1_000 + i);
        }
        assert_eq!(t.state(2), CircuitState::Open);
        assert_eq!(board.last_traffic_ms(2), 500, "probes are not traffic");
        assert_eq!(board.peers(2, None).open_cores, 1);
        assert_eq!(board.last_traffic_ms(0), 0);
    }

    #[test]
    fn health_settings_resolve() {
        assert_eq!(
            HealthSettings::resolve(None).unwrap(),
            HealthSettings::default()
        );
        let raw: RawHealth = serde_json::from_str(
            r#"{"probe_interval_ms": 250, "consecutive_failures_to_open": 2, "cool_down_ms": 90000}"#,
        )
        .unwrap();
        let s = HealthSettings::resolve(Some(&raw)).unwrap();
        assert_eq!(s.probe_interval_ms, 250);
        assert_eq!(s.breaker.consecutive_failures_to_open, 2);
        assert_eq!(s.breaker.max_cool_down_ms, 90_000);
        let raw: RawHealth = serde_json::from_str(r#"{"probe_interval_ms": 5}"#).unwrap();
        assert_eq!(
            HealthSettings::resolve(Some(&raw)).unwrap_err().0,
            "health.probe_interval_ms"
        );
        assert!(serde_json::from_str::<RawHealth>(r#"{"probe_interval_s": 5}"#).is_err());
    }

    fn cfg() -> HealthConfig {
        HealthConfig::default()
    }

    fn fail(t: &HealthTable, target: usize, n: usize, now_ms: u64) {
        for _ in 0..n {
            t.record(target, 0, false, now_ms);
        }
    }

    #[test]
    fn opens_after_consecutive_failures_and_recovers_through_half_open() {
        let t = HealthTable::new(cfg());
        fail(&t, 0, 4, 1_000);
        assert_eq!(t.state(0), CircuitState::Closed);
        assert!(t.allow(0, 1_000));
        fail(&t, 0, 1, 1_000);
        assert_eq!(t.state(0), CircuitState::Open);
        assert!(!t.allow(0, 1_000));
        assert!(!t.allow(0, 5_999));
        assert_eq!(t.view(0, 5_999).state, CircuitState::Open);
        assert_eq!(t.view(0, 6_000).state, CircuitState::HalfOpen);
        // Cool-down over: exactly one probe at a time.
        assert!(t.allow(0, 6_000));
        assert_eq!(t.state(0), CircuitState::HalfOpen);
        assert!(!t.allow(0, 6_001));
        t.record(0, 120_000, true, 6_100);
        assert_eq!(t.state(0), CircuitState::Closed);
        assert!(t.allow(0, 6_101));
        // The old failures do not count against it any more.
        fail(&t, 0, 4, 7_000);
        assert_eq!(t.state(0), CircuitState::Closed);
    }

    #[test]
    fn failed_probe_reopens_with_doubled_cool_down() {
        let t = HealthTable::new(cfg());
        fail(&t, 3, 5, 0);
        assert!(t.allow(3, 5_000));
        t.record(3, 0, false, 5_010);
        assert_eq!(t.state(3), CircuitState::Open);
        assert!(!t.allow(3, 5_010 + 9_999));
        assert!(t.allow(3, 5_010 + 10_000));
        t.record(3, 0, false, 15_020);
        // Third cool-down is 20 s.
        assert!(!t.allow(3, 15_020 + 19_999));
        assert!(t.allow(3, 15_020 + 20_000));
        t.record(3, 50_000, true, 35_100);
        assert_eq!(t.state(3), CircuitState::Closed);
        // Back to the base cool-down after closing.
        fail(&t, 3, 5, 40_000);
        assert!(t.allow(3, 45_000));
    }

    #[test]
    fn cool_down_is_capped() {
        let c = HealthConfig {
            cool_down_ms: 1_000,
            max_cool_down_ms: 3_000,
            ..cfg()
        };
        let t = HealthTable::new(c);
        fail(&t, 0, 5, 0);
        let mut now = 0;
        for _ in 0..10 {
            now += 3_000;
            assert!(t.allow(0, now), "probe admitted at {now}");
            t.record(0, 0, false, now);
        }
    }

    #[test]
    fn error_ratio_opens_without_a_consecutive_run() {
        let t = HealthTable::new(cfg());
        // fail, fail, ok repeating: never 5 in a row, but 2/3 of the window fails.
        let mut opened_at = None;
        for i in 0..30 {
            t.record(1, 10_000, i % 3 == 2, 100);
            if t.state(1) == CircuitState::Open {
                opened_at = Some(i);
                break;
            }
        }
        let i = opened_at.expect("ratio rule must open the circuit");
        assert!(
            i >= 9,
            "not before the window holds 10 outcomes, opened at {i}"
        );
    }

    #[test]
    fn healthy_mix_stays_closed() {
        let t = HealthTable::new(cfg());
        for i in 0..1_000 {
            t.record(0, 50_000, i % 5 != 0, i);
        }
        assert_eq!(t.state(0), CircuitState::Closed);
        let s = t.snapshot(0);
        assert!((150_000..250_000).contains(&s.error_ewma_ppm), "{s:?}");
    }

    #[test]
    fn lost_probe_expires() {
        let t = HealthTable::new(cfg());
        fail(&t, 0, 5, 0);
        assert!(t.allow(0, 5_000));
        assert!(!t.allow(0, 5_000 + 29_999));
        assert!(t.allow(0, 5_000 + 30_000));
    }

    #[test]
    fn ewma_converges_and_ignores_failed_ttfb() {
        let t = HealthTable::new(cfg());
        t.record(0, 100_000, true, 0);
        assert_eq!(t.snapshot(0).ewma_ttfb_us, 100_000);
        for _ in 0..60 {
            t.record(0, 200_000, true, 0);
        }
        let s = t.snapshot(0).ewma_ttfb_us;
        assert!((199_000..=200_000).contains(&s), "{s}");
        t.record(0, 1, false, 0);
        assert_eq!(t.snapshot(0).ewma_ttfb_us, s);
        assert_eq!(t.snapshot(0).samples, 61);
    }

    #[test]
    fn unknown_targets_are_allowed_and_closed() {
        let t = HealthTable::new(cfg());
        assert!(t.allow(usize::MAX / 2, 0));
        assert_eq!(t.state(42), CircuitState::Closed);
        assert_eq!(t.view(42, 0).ewma_ttfb_us, None);
    }

    #[test]
    fn board_publishes_and_peers_merge() {
        let board = SharedHealth::new(3, 4);
        let a = HealthTable::with_board(cfg(), board.clone(), 0);
        let b = HealthTable::with_board(cfg(), board.clone(), 1);
        let c = HealthTable::with_board(cfg(), board.clone(), 2);
        for _ in 0..10 {
            a.record(2, 100_000, true, 0);
        }
        for _ in 0..30 {
            b.record(2, 300_000, true, 0);
        }
        let s = board.slot(0, 2).map(|s| s.load()).unwrap_or_default();
        assert_eq!(s.ewma_ttfb_us, 100_000);
        let p = board.peers(2, Some(2));
        assert_eq!(p.reporting_cores, 2);
        assert_eq!(p.ewma_ttfb_us, Some(250_000));
        // Core c has no samples of its own: it borrows the peers' figure.
        assert_eq!(c.view(2, 0).ewma_ttfb_us, Some(250_000));
        // Both peers open the circuit: c, with nothing of its own, avoids the target too.
        fail(&a, 2, 5, 10);
        assert_eq!(
            c.view(2, 10).state,
            CircuitState::Closed,
            "one of two peers is not a majority"
        );
        fail(&b, 2, 5, 10);
        assert_eq!(c.view(2, 10).state, CircuitState::Open);
        assert_eq!(
            board.slot(1, 2).map(|s| s.load().state),
            Some(CircuitState::Open)
        );
        // Out-of-range reads are harmless.
        assert!(board.slot(3, 0).is_none());
        assert_eq!(board.peers(99, None), PeerView::default());
    }

    fn cands(spec: &[(usize, u8)]) -> Vec<Candidate> {
        spec.iter()
            .map(|&(target, tier)| Candidate { target, tier })
            .collect()
    }

    #[test]
    fn order_skips_open_and_tries_all_when_all_open() {
        let t = HealthTable::new(cfg());
        let c = cands(&[(0, 2), (1, 2), (2, 3)]);
        assert_eq!(order_chain(&c, &t, None, true, 0), vec![0, 1, 2]);
        fail(&t, 0, 5, 0);
        assert_eq!(order_chain(&c, &t, None, true, 1), vec![1, 2]);
        fail(&t, 1, 5, 0);
        fail(&t, 2, 5, 0);
        assert_eq!(order_chain(&c, &t, None, true, 1), vec![0, 1, 2]);
        assert_eq!(order_chain(&c, &t, None, false, 1), vec![0]);
        assert!(order_chain(&[], &t, Some(10), true, 0).is_empty());
    }

    #[test]
    fn order_prefers_fastest_within_a_tier_only() {
        let t = HealthTable::new(cfg());
        let c = cands(&[(0, 2), (1, 2), (2, 2), (3, 3)]);
        for _ in 0..5 {
            t.record(0, 900_000, true, 0);
            t.record(1, 300_000, true, 0);
            t.record(3, 10_000, true, 0);
        }
        // 2 has no data: after the measured ones of its tier; tier 3 stays last although fastest.
        assert_eq!(order_chain(&c, &t, None, true, 0), vec![1, 0, 2, 3]);
        assert_eq!(order_chain(&c, &t, None, false, 0), vec![1]);
    }

    #[test]
    fn order_puts_degraded_targets_last_in_their_tier() {
        let t = HealthTable::new(cfg());
        let c = cands(&[(0, 2), (1, 2), (2, 3)]);
        for i in 0..40 {
            // Fast but failing 40% of the time (never 5 in a row, ratio under 50%: stays closed).
            t.record(0, 50_000, i % 5 < 3, 0);
            t.record(1, 400_000, true, 0);
        }
        assert_eq!(t.state(0), CircuitState::Closed);
        assert_eq!(order_chain(&c, &t, None, true, 0), vec![1, 0, 2]);
        // Unused for a minute and a half: the error average has decayed, 0 is fastest again.
        assert_eq!(order_chain(&c, &t, None, true, 90_000), vec![0, 1, 2]);
    }

    #[test]
    fn order_honours_latency_budget() {
        let t = HealthTable::new(cfg());
        let c = cands(&[(0, 4), (1, 2), (2, 1)]);
        for _ in 0..5 {
            t.record(0, 2_000_000, true, 0);
            t.record(1, 400_000, true, 0);
            t.record(2, 150_000, true, 0);
        }
        assert_eq!(order_chain(&c, &t, Some(500), true, 0), vec![1, 0, 2]);
        assert_eq!(order_chain(&c, &t, Some(5_000), true, 0), vec![0, 1, 2]);
        // Nothing fits: the fastest.
        assert_eq!(order_chain(&c, &t, Some(100), true, 0), vec![2, 0, 1]);
        assert_eq!(order_chain(&c, &t, Some(0), false, 0), vec![2]);
    }

    #[test]
    fn order_admits_one_half_open_probe() {
        let t = HealthTable::new(cfg());
        let c = cands(&[(0, 2), (1, 2)]);
        fail(&t, 0, 5, 0);
        assert_eq!(order_chain(&c, &t, None, true, 4_000), vec![1]);
        assert_eq!(
            order_chain(&c, &t, None, true, 5_000),
            vec![0, 1],
            "probe admitted in its place"
        );
        assert_eq!(
            order_chain(&c, &t, None, true, 5_001),
            vec![1],
            "one probe at a time"
        );
        t.record(0, 100, true, 5_002);
        assert_eq!(order_chain(&c, &t, None, true, 5_003), vec![0, 1]);
    }

    #[test]
    fn probe_slot_not_taken_when_truncated_away() {
        let t = HealthTable::new(cfg());
        let c = cands(&[(0, 2), (1, 2)]);
        for _ in 0..5 {
            t.record(1, 10_000, true, 0);
        }
        fail(&t, 0, 5, 0);
        // 0 is half-open but has no TTFB; 1 is measured and goes first; no fallback: just [1].
        assert!(t.would_allow(0, 5_000));
        assert_eq!(order_chain(&c, &t, None, false, 5_000), vec![1]);
        assert_eq!(t.state(0), CircuitState::Open, "nothing was admitted");
        assert!(t.would_allow(0, 5_001));
        assert!(t.allow(0, 5_001));
        assert!(!t.would_allow(0, 5_002));
    }
}
