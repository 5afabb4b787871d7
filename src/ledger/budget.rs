//! Budgets and rate limits: daily/monthly spend per key and per app, RPM/TPM per key, enforced by
//! reserving an estimate before forwarding and settling the real figures after. Local counters
//! live here (atomics shared by all worker cores); `redis.rs` shares them across hosts. Mapping a
//! `Rejection` to 429 + Retry-After is the pipeline's business.
//!
//! Each counter is one `AtomicU64` packing a 20-bit window tag (day, month or minute number mod
//! 2^20) over a 44-bit value (micro-dollars, requests or tokens; 2^44 µ$ ≈ $17.6M). A reservation
//! is a CAS that succeeds only if `value + estimate <= limit` in the current window, so the
//! admitted estimates of any number of concurrent requests never sum past a limit. Several limits
//! are taken in order and rolled back if a later one refuses, which can only make admission
//! stricter for a moment, never looser. Real costs above their estimate push a counter past its
//! limit by at most the in-flight excess; the next admissions are refused until the window ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::keys::KeyInfo;
use super::record::now_ms;

const TAG_BITS: u32 = 20;
const VALUE_BITS: u32 = 64 - TAG_BITS;
const VALUE_MAX: u64 = (1 << VALUE_BITS) - 1;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;

/// Limits configured per app (from the config file's `budgets`). `None`: no limit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppLimits {
    pub daily_budget_usd: Option<f64>,
    pub monthly_budget_usd: Option<f64>,
}

/// Budget settings that are not per key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BudgetConfig {
    pub apps: HashMap<String, AppLimits>,
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    KeyRpm,
    KeyTpm,
    KeyDaily,
    KeyMonthly,
    AppDaily,
    AppMonthly,
}

impl Limit {
    pub const ALL: [Limit; 6] = [
        Self::KeyRpm,
        Self::KeyTpm,
        Self::KeyDaily,
        Self::KeyMonthly,
        Self::AppDaily,
        Self::AppMonthly,
    ];

    /// Stable name for metrics labels and error codes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::KeyRpm => "key_rpm",
            Self::KeyTpm => "key_tpm",
            Self::KeyDaily => "key_daily_budget",
            Self::KeyMonthly => "key_monthly_budget",
            Self::AppDaily => "app_daily_budget",
            Self::AppMonthly => "app_monthly_budget",
        }
    }

    fn is_app(self) -> bool {
        matches!(self, Self::AppDaily | Self::AppMonthly)
    }

    pub(crate) fn window(self) -> WindowKind {
        match self {
            Self::KeyRpm | Self::KeyTpm => WindowKind::Minute,
            Self::KeyDaily | Self::AppDaily => WindowKind::Day,
            Self::KeyMonthly | Self::AppMonthly => WindowKind::Month,
        }
    }
}

/// A refused admission: which limit, and when its window resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{} exceeded; retry after {retry_after_s} s", self.limit_message())]
pub struct Rejection {
    pub limit: Limit,
    pub retry_after_s: u64,
}

impl Rejection {
    fn limit_message(&self) -> &'static str {
        match self.limit {
            Limit::KeyRpm => "requests-per-minute limit of this key",
            Limit::KeyTpm => "tokens-per-minute limit of this key",
            Limit::KeyDaily => "daily budget of this key",
            Limit::KeyMonthly => "monthly budget of this key",
            Limit::AppDaily => "daily budget of this app",
            Limit::AppMonthly => "monthly budget of this app",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WindowKind {
    Minute,
    Day,
    Month,
}

/// The current minute, day and month (UTC) and how long until each ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Windows {
    pub minute: u64,
    pub day: u64,
    /// Months since 1970-01.
    pub month: u64,
    pub minute_left_s: u64,
    pub day_left_s: u64,
    pub month_left_s: u64,
}

impl Windows {
    pub(crate) fn at(now_ms: u64) -> Windows {
        let secs = now_ms / 1000;
        let day = secs / 86_400;
        let (y, m, _) = civil_from_days(day as i64);
        let month = ((y - 1970) * 12 + (m as i64 - 1)).max(0) as u64;
        let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
        let next_month_s = (days_from_civil(ny, nm, 1).max(0) as u64) * 86_400;
        Windows {
            minute: secs / 60,
            day,
            month,
            minute_left_s: 60 - secs % 60,
            day_left_s: 86_400 - secs % 86_400,
            month_left_s: next_month_s.saturating_sub(secs).max(1),
        }
    }

    pub(crate) fn id(&self, kind: WindowKind) -> u64 {
        match kind {
            WindowKind::Minute => self.minute,
            WindowKind::Day => self.day,
            WindowKind::Month => self.month,
        }
    }

    pub(crate) fn left_s(&self, kind: WindowKind) -> u64 {
        match kind {
            WindowKind::Minute => self.minute_left_s,
            WindowKind::Day => self.day_left_s,
            WindowKind::Month => self.month_left_s,
        }
    }
}

// Howard Hinnant's civil-calendar algorithms (proleptic Gregorian, days since 1970-01-01).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = (z - era * 146_097) as u64;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe as i64 + era * 400;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = (y - era * 400) as u64;
    let mp = if m > 2 { m - 3 } else { m + 9 } as u64;
    let doy = (153 * mp + 2) / 5 + d as u64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe as i64 - 719_468
}

/// One windowed counter: `tag << 44 | value`.
#[derive(Debug, Default)]
pub(crate) struct Window(AtomicU64);

fn unpack(w: u64) -> (u64, u64) {
    (w >> VALUE_BITS, w & VALUE_MAX)
}

fn pack(tag: u64, value: u64) -> u64 {
    (tag & TAG_MASK) << VALUE_BITS | value.min(VALUE_MAX)
}

impl Window {
    /// Adds `amount` if the current window's value stays `<= limit`. `false`: refused, unchanged.
    fn reserve(&self, window: u64, amount: u64, limit: u64) -> bool {
        let tag = window & TAG_MASK;
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            let (t, v) = unpack(cur);
            let v = if t == tag { v } else { 0 };
            // A limit of 0 refuses everything, even a free request.
            if limit == 0 || v.saturating_add(amount) > limit {
                return false;
            }
            match self.0.compare_exchange_weak(
                cur,
                pack(tag, v + amount),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    /// Adds `delta` to the value if the counter is still in `window` (a settlement after the
    /// window ended has nothing left to correct). Saturates at 0 and at the maximum.
    fn adjust(&self, window: u64, delta: i64) {
        let tag = window & TAG_MASK;
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            let (t, v) = unpack(cur);
            if t != tag || delta == 0 {
                return;
            }
            let nv = if delta < 0 {
                v.saturating_sub(delta.unsigned_abs())
            } else {
                v.saturating_add(delta as u64)
            };
            match self.0.compare_exchange_weak(
                cur,
                pack(tag, nv),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => cur = now,
            }
        }
    }

    pub(crate) fn value(&self, window: u64) -> u64 {
        let (t, v) = unpack(self.0.load(Ordering::Relaxed));
        if t == window & TAG_MASK {
            v
        } else {
            0
        }
    }
}

/// The counters of one key or app.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub rpm: Window,
    pub tpm: Window,
    pub day: Window,
    pub month: Window,
}

impl Counters {
    fn window(&self, limit: Limit) -> &Window {
        match limit {
            Limit::KeyRpm => &self.rpm,
            Limit::KeyTpm => &self.tpm,
            Limit::KeyDaily | Limit::AppDaily => &self.day,
            Limit::KeyMonthly | Limit::AppMonthly => &self.month,
        }
    }
}

pub(crate) fn usd_to_micros(usd: f64) -> u64 {
    if usd.is_finite() && usd > 0.0 {
        (usd * 1e6).ceil().min(VALUE_MAX as f64) as u64
    } else {
        0
    }
}

fn plan_in(
    st: &BudgetState,
    now_ms: u64,
    key: &KeyInfo,
    app: &str,
    est_cost_usd: f64,
    est_tokens: u64,
) -> Plan {
    let windows = Windows::at(now_ms);
    let cost = usd_to_micros(est_cost_usd);
    let tokens = est_tokens.min(VALUE_MAX);
    let step = |limit: Limit, amount: u64, cap: Option<u64>| {
        cap.map(|cap| Step {
            limit,
            amount,
            cap,
            window: windows.id(limit.window()),
        })
    };
    let (app_day, app_month) = if st.app_caps.is_empty() {
        (None, None)
    } else {
        st.app_caps.get(app).copied().unwrap_or((None, None))
    };
    Plan {
        steps: [
            step(Limit::KeyRpm, 1, key.rpm.map(u64::from)),
            step(Limit::KeyTpm, tokens, key.tpm.map(u64::from)),
            step(
                Limit::KeyDaily,
                cost,
                key.daily_budget_usd.map(usd_to_micros),
            ),
            step(
                Limit::KeyMonthly,
                cost,
                key.monthly_budget_usd.map(usd_to_micros),
            ),
            step(Limit::AppDaily, cost, app_day),
            step(Limit::AppMonthly, cost, app_month),
        ],
        windows,
    }
}

/// One limit to take for one admission.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Step {
    pub limit: Limit,
    pub amount: u64,
    pub cap: u64,
    pub window: u64,
}

/// The limits that apply to one admission, in the order they are taken.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub steps: [Option<Step>; 6],
    pub windows: Windows,
}

impl Plan {
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Step> {
        self.steps.iter().flatten()
    }

    pub(crate) fn rejection(&self, limit: Limit) -> Rejection {
        Rejection {
            limit,
            retry_after_s: self.windows.left_s(limit.window()),
        }
    }
}

/// What an admission took; released on drop unless settled.
#[derive(Debug)]
pub struct Reservation {
    key: Option<Arc<Counters>>,
    app: Option<Arc<Counters>>,
    plan: Plan,
    settled: bool,
    pub(crate) redis: Option<super::redis::RedisHold>,
}

impl Reservation {
    /// Replaces the estimate by the real cost and tokens. The request stays counted for RPM.
    pub fn settle(mut self, real_cost_usd: f64, real_tokens: u64) {
        self.settled = true;
        let real_micros = usd_to_micros(real_cost_usd);
        let deltas = self.deltas(real_micros, real_tokens, false);
        self.apply(&deltas);
        if let Some(r) = self.redis.take() {
            r.settle(&self.plan, &deltas);
        }
    }

    /// Estimated cost reserved, µ$ (for the response's `estimated_cost_usd`).
    pub fn estimate_micros(&self) -> u64 {
        self.plan
            .iter()
            .find(|s| matches!(s.limit.window(), WindowKind::Day | WindowKind::Month))
            .map_or(0, |s| s.amount)
    }

    /// Per-step deltas: settle replaces amount by the real figure; release takes it all back.
    fn deltas(&self, real_micros: u64, real_tokens: u64, release: bool) -> [i64; 6] {
        let mut d = [0i64; 6];
        for (i, s) in self.plan.steps.iter().enumerate() {
            let Some(s) = s else { continue };
            let real = match (release, s.limit) {
                (true, _) => 0,
                (false, Limit::KeyRpm) => s.amount,
                (false, Limit::KeyTpm) => real_tokens.min(VALUE_MAX),
                (false, _) => real_micros,
            };
            d[i] = real as i64 - s.amount as i64;
        }
        d
    }

    fn apply(&self, deltas: &[i64; 6]) {
        for (s, d) in self.plan.steps.iter().zip(deltas) {
            let Some(s) = s else { continue };
            if let Some(c) = self.counters_for(s.limit) {
                c.window(s.limit).adjust(s.window, *d);
            }
        }
    }

    fn counters_for(&self, limit: Limit) -> Option<&Counters> {
        if limit.is_app() {
            self.app.as_deref()
        } else {
            self.key.as_deref()
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let deltas = self.deltas(0, 0, true);
        self.apply(&deltas);
        if let Some(r) = self.redis.take() {
            r.settle(&self.plan, &deltas);
        }
    }
}

type CounterMap = HashMap<Arc<str>, Arc<Counters>>;

/// App caps in µ$: (daily, monthly).
type AppCaps = (Option<u64>, Option<u64>);

/// Everything admission reads, behind one atomic pointer: one snapshot load per admission.
#[derive(Default, Clone)]
struct BudgetState {
    app_caps: HashMap<Arc<str>, AppCaps>,
    keys: CounterMap,
    apps: CounterMap,
}

/// Budget and rate-limit enforcement shared by all worker cores (`Send + Sync`; wrap in `Arc`).
pub struct Budget {
    state: ArcSwap<BudgetState>,
    /// Serialises only changes of the state: a first-seen key or app, a reload (cold).
    change_lock: Mutex<()>,
}

impl Budget {
    pub fn new(config: &BudgetConfig) -> Budget {
        let b = Budget {
            state: ArcSwap::from_pointee(BudgetState::default()),
            change_lock: Mutex::new(()),
        };
        b.set_config(config);
        b
    }

    /// Replaces the app limits (reload). Counters, and what they have counted, are kept.
    pub fn set_config(&self, config: &BudgetConfig) {
        let _g = self.change_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = BudgetState::clone(&self.state.load());
        next.app_caps = config
            .apps
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().into(),
                    (
                        v.daily_budget_usd.map(usd_to_micros),
                        v.monthly_budget_usd.map(usd_to_micros),
                    ),
                )
            })
            .collect();
        self.state.store(Arc::new(next));
    }

    /// Reserves `est_cost_usd` and `est_tokens` (and one request) against every limit of `key`
    /// and of `app` (the request's app: `X-TierFlow-App` or the key's), now.
    /// `Err` names the first limit that refused; nothing is held then.
    pub fn admit(
        &self,
        key: &KeyInfo,
        app: &str,
        est_cost_usd: f64,
        est_tokens: u64,
    ) -> Result<Reservation, Rejection> {
        self.admit_at(now_ms(), key, app, est_cost_usd, est_tokens)
    }

    /// [`Budget::admit`] at a given wall-clock time (ms since the epoch).
    pub fn admit_at(
        &self,
        now_ms: u64,
        key: &KeyInfo,
        app: &str,
        est_cost_usd: f64,
        est_tokens: u64,
    ) -> Result<Reservation, Rejection> {
        let mut r = self.prepare(now_ms, key, app, est_cost_usd, est_tokens);
        for (taken, s) in r.plan.steps.iter().flatten().enumerate() {
            let ok = r
                .counters_for(s.limit)
                .is_some_and(|c| c.window(s.limit).reserve(s.window, s.amount, s.cap));
            if !ok {
                let rejection = r.plan.rejection(s.limit);
                // Roll back what was taken; `r` must not release the rest on drop.
                for s in r.plan.steps.iter().flatten().take(taken) {
                    if let Some(c) = r.counters_for(s.limit) {
                        c.window(s.limit).adjust(s.window, -(s.amount as i64));
                    }
                }
                r.settled = true;
                return Err(rejection);
            }
        }
        Ok(r)
    }

    /// Takes every step of the plan without checking limits (used to mirror an admission that
    /// Redis granted, so the local counters know this host's share if Redis goes away).
    pub(crate) fn force(
        &self,
        now_ms: u64,
        key: &KeyInfo,
        app: &str,
        est_cost_usd: f64,
        est_tokens: u64,
    ) -> Reservation {
        let r = self.prepare(now_ms, key, app, est_cost_usd, est_tokens);
        for s in r.plan.steps.iter().flatten() {
            if let Some(c) = r.counters_for(s.limit) {
                c.window(s.limit).reserve(s.window, s.amount, VALUE_MAX);
            }
        }
        r
    }

    /// An unfilled reservation: the plan and the counters it needs.
    fn prepare(
        &self,
        now_ms: u64,
        key: &KeyInfo,
        app: &str,
        est_cost_usd: f64,
        est_tokens: u64,
    ) -> Reservation {
        let st = self.state.load();
        let plan = plan_in(&st, now_ms, key, app, est_cost_usd, est_tokens);
        let has_key = plan.iter().any(|s| !s.limit.is_app());
        let has_app = plan.iter().any(|s| s.limit.is_app());
        let key_counters = if has_key {
            Some(
                st.keys
                    .get(&*key.id)
                    .cloned()
                    .unwrap_or_else(|| self.insert_counters(false, &key.id)),
            )
        } else {
            None
        };
        let app_counters = if has_app {
            Some(
                st.apps
                    .get(app)
                    .cloned()
                    .unwrap_or_else(|| self.insert_counters(true, app)),
            )
        } else {
            None
        };
        Reservation {
            key: key_counters,
            app: app_counters,
            plan,
            settled: false,
            redis: None,
        }
    }

    /// The limits that apply to an admission (read by the Redis path too).
    pub(crate) fn plan(
        &self,
        now_ms: u64,
        key: &KeyInfo,
        app: &str,
        est_cost_usd: f64,
        est_tokens: u64,
    ) -> Plan {
        plan_in(
            &self.state.load(),
            now_ms,
            key,
            app,
            est_cost_usd,
            est_tokens,
        )
    }

    #[cold]
    fn insert_counters(&self, is_app: bool, name: &str) -> Arc<Counters> {
        let _g = self.change_lock.lock().unwrap_or_else(|p| p.into_inner());
        let cur = self.state.load();
        let map = if is_app { &cur.apps } else { &cur.keys };
        if let Some(c) = map.get(name) {
            return c.clone();
        }
        let c = Arc::new(Counters::default());
        let mut next = BudgetState::clone(&cur);
        let map = if is_app {
            &mut next.apps
        } else {
            &mut next.keys
        };
        map.insert(name.into(), c.clone());
        self.state.store(Arc::new(next));
        c
    }

    /// What a key has used in the current windows: (day µ$, month µ$, requests this minute,
    /// tokens this minute). For /stats, tests and the dashboard.
    pub fn key_usage(&self, key_id: &str) -> (u64, u64, u64, u64) {
        let w = Windows::at(now_ms());
        self.state
            .load()
            .keys
            .get(key_id)
            .map_or((0, 0, 0, 0), |c| {
                (
                    c.day.value(w.day),
                    c.month.value(w.month),
                    c.rpm.value(w.minute),
                    c.tpm.value(w.minute),
                )
            })
    }

    /// What an app has spent in the current day and month, µ$.
    pub fn app_usage(&self, app: &str) -> (u64, u64) {
        let w = Windows::at(now_ms());
        self.state
            .load()
            .apps
            .get(app)
            .map_or((0, 0), |c| (c.day.value(w.day), c.month.value(w.month)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::keys::NewKey;
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Barrier;

    fn key(limits: NewKey) -> KeyInfo {
        KeyInfo::unstored("key_t", "billing", &limits)
    }

    #[test]
    fn calendar_windows() {
        // 2024-02-29T23:59:30Z: leap day, last minute of the month.
        let t =
            days_from_civil(2024, 2, 29) as u64 * 86_400_000 + (23 * 3600 + 59 * 60 + 30) * 1000;
        let w = Windows::at(t);
        assert_eq!(civil_from_days(w.day as i64), (2024, 2, 29));
        assert_eq!(w.minute_left_s, 30);
        assert_eq!(w.day_left_s, 30);
        assert_eq!(w.month_left_s, 30);
        assert_eq!(w.month, (2024 - 1970) * 12 + 1);
        let w2 = Windows::at(t + 30_000);
        assert_eq!(w2.month, w.month + 1);
        assert_eq!(w2.month_left_s, 31 * 86_400);
        for z in [-1000i64, 0, 59, 60, 365, 10_957, 20_000, 30_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }

    #[test]
    fn window_resets_when_the_tag_changes() {
        let w = Window::default();
        assert!(w.reserve(7, 5, 10));
        assert!(w.reserve(7, 5, 10));
        assert!(!w.reserve(7, 1, 10));
        assert_eq!(w.value(7), 10);
        // The next window starts from zero; adjusting an old window changes nothing.
        assert!(w.reserve(8, 3, 10));
        w.adjust(7, -5);
        assert_eq!(w.value(8), 3);
        w.adjust(8, -10);
        assert_eq!(w.value(8), 0);
    }

    #[test]
    fn rejection_names_the_limit_and_when_it_resets() {
        let b = Budget::new(&BudgetConfig::default());
        let k = key(NewKey {
            rpm: Some(2),
            ..Default::default()
        });
        let t = 1_700_000_000_000 + 15_000 - (1_700_000_000_000 % 60_000);
        let _a = b.admit_at(t, &k, "billing", 0.0, 0).unwrap();
        let _b = b.admit_at(t, &k, "billing", 0.0, 0).unwrap();
        let e = b.admit_at(t, &k, "billing", 0.0, 0).unwrap_err();
        assert_eq!(
            e,
            Rejection {
                limit: Limit::KeyRpm,
                retry_after_s: 45
            }
        );
        assert!(e.to_string().contains("requests-per-minute"));
        // The next minute admits again.
        assert!(b.admit_at(t + 60_000, &k, "billing", 0.0, 0).is_ok());
        // A zero budget blocks even free requests.
        let zero = key(NewKey {
            daily_budget_usd: Some(0.0),
            ..Default::default()
        });
        assert_eq!(
            b.admit_at(t, &zero, "billing", 0.0, 0).unwrap_err().limit,
            Limit::KeyDaily
        );
    }

    #[test]
    fn settle_replaces_the_estimate_and_drop_releases() {
        let b = Budget::new(&BudgetConfig::default());
        let k = key(NewKey {
            daily_budget_usd: Some(1.0),
            tpm: Some(1000),
            rpm: Some(100),
            ..Default::default()
        });
        let r = b.admit(&k, "billing", 0.5, 800).unwrap();
        assert_eq!(b.key_usage("key_t"), (500_000, 0, 1, 800));
        // Another 0.6 does not fit while 0.5 is reserved…
        assert_eq!(
            b.admit(&k, "billing", 0.6, 10).unwrap_err().limit,
            Limit::KeyDaily
        );
        r.settle(0.1, 150);
        assert_eq!(b.key_usage("key_t"), (100_000, 0, 1, 150));
        // …and fits once the real cost is known.
        let r2 = b.admit(&k, "billing", 0.6, 10).unwrap();
        drop(r2);
        assert_eq!(b.key_usage("key_t"), (100_000, 0, 1, 150));
        // A rejected admission holds nothing (the TPM step was taken, then rolled back).
        assert_eq!(
            b.admit(&k, "billing", 0.95, 10).unwrap_err().limit,
            Limit::KeyDaily
        );
        assert_eq!(b.key_usage("key_t"), (100_000, 0, 1, 150));
    }

    #[test]
    fn app_limits_apply_across_keys_and_follow_reload() {
        let mut cfg = BudgetConfig::default();
        cfg.apps.insert(
            "billing".into(),
            AppLimits {
                daily_budget_usd: Some(1.0),
                monthly_budget_usd: None,
            },
        );
        let b = Budget::new(&cfg);
        let k1 = KeyInfo::unstored("k1", "billing", &NewKey::default());
        let k2 = KeyInfo::unstored("k2", "billing", &NewKey::default());
        b.admit(&k1, "billing", 0.6, 0).unwrap().settle(0.6, 0);
        let e = b.admit(&k2, "billing", 0.6, 0).unwrap_err();
        assert_eq!(e.limit, Limit::AppDaily);
        assert!(e.to_string().contains("daily budget of this app"));
        assert!(b.admit(&k2, "other-app", 0.6, 0).is_ok());
        cfg.apps.get_mut("billing").unwrap().daily_budget_usd = Some(2.0);
        b.set_config(&cfg);
        assert!(b.admit(&k2, "billing", 0.6, 0).is_ok());
        assert_eq!(b.app_usage("billing").0, 600_000);
    }

    /// 200 threads admit at once against a budget that fits exactly 50 estimates.
    #[test]
    fn concurrent_admissions_never_overspend() {
        for with_app_limit in [false, true] {
            let mut cfg = BudgetConfig::default();
            if with_app_limit {
                cfg.apps.insert(
                    "billing".into(),
                    AppLimits {
                        daily_budget_usd: Some(1.0),
                        monthly_budget_usd: Some(1.0),
                    },
                );
            }
            let b = Arc::new(Budget::new(&cfg));
            let k = Arc::new(key(NewKey {
                daily_budget_usd: Some(1.0),
                monthly_budget_usd: Some(1.0),
                ..Default::default()
            }));
            let barrier = Arc::new(Barrier::new(200));
            let admitted = Arc::new(AtomicUsize::new(0));
            let threads: Vec<_> = (0..200)
                .map(|_| {
                    let (b, k, barrier, admitted) =
                        (b.clone(), k.clone(), barrier.clone(), admitted.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        if let Ok(r) = b.admit(&k, "billing", 0.02, 10) {
                            admitted.fetch_add(1, Ordering::Relaxed);
                            std::thread::yield_now();
                            r.settle(0.02, 10);
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            let n = admitted.load(Ordering::Relaxed);
            let (day, month, _, _) = b.key_usage("key_t");
            assert!(n <= 50, "admitted {n}");
            assert!(day <= 1_000_000 && month <= 1_000_000, "spent {day} µ$");
            assert_eq!(day, n as u64 * 20_000);
            if !with_app_limit {
                // With a single kind of limit no admission is refused by a transient rollback.
                assert_eq!(n, 50);
            } else {
                assert!(n >= 1);
            }
        }
    }
}
