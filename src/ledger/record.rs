//! `UsageRecord`: the one row the ledger keeps per request — who, which route and model, tokens,
//! cost, verdicts and timings. It never holds prompt text or PII (only counts); the pipeline fills
//! it in `account`, the writer persists it, stats count it.

use std::sync::Arc;

/// The security scanner's verdict as the ledger stores it (`X-TierFlow-Security`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityVerdict {
    #[default]
    Clean,
    Warning,
    Blocked,
    /// Served while the scanner was still loading at start (see `pipeline::security`).
    Unscanned,
}

impl SecurityVerdict {
    pub const ALL: [SecurityVerdict; 4] =
        [Self::Clean, Self::Warning, Self::Blocked, Self::Unscanned];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Clean => "CLEAN",
            Self::Warning => "WARNING",
            Self::Blocked => "BLOCKED",
            Self::Unscanned => "UNSCANNED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// How the request ended, from the downstream client's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Outcome {
    /// A complete response was delivered.
    #[default]
    Ok,
    /// The downstream client went away before the response was complete.
    ClientCancelled,
    /// The upstream failed after the first byte was sent downstream (final SSE error event).
    UpstreamBroken,
    /// The gateway answered with an error (4xx/5xx).
    Error,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Self::Ok,
        Self::ClientCancelled,
        Self::UpstreamBroken,
        Self::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::ClientCancelled => "client_cancelled",
            Self::UpstreamBroken => "upstream_broken",
            Self::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// One accounted request. Strings that come from configuration or keys are `Arc<str>` so that
/// filling a record on the hot path clones a pointer instead of allocating; `requested_model`
/// is whatever the client sent (bounded by the parser's limits).
///
/// Contract: no prompt text, no PII values — `pii_count` is the only trace of scrubbed data.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UsageRecord {
    /// Wall-clock time the request was accepted, ms since the Unix epoch.
    pub time_ms: u64,
    /// Virtual key id (`KeyInfo::id`), empty when keys are not enforced.
    pub key_id: Arc<str>,
    /// `X-TierFlow-App` or the key's app.
    pub app: Arc<str>,
    /// `X-TierFlow-Env` or the key's env.
    pub env: Arc<str>,
    /// The `model` field as the client sent it (`auto`, `tier-2`, `flow/x`, `gpt-4o-mini`, …).
    pub requested_model: String,
    /// The named route or tier the request resolved to (`auto`, `tier-2`, `flow/fast-eval`).
    pub route: Arc<str>,
    /// Category name (`coding`, `general`, …).
    pub category: &'static str,
    /// Tier 1..=4; 0 when not routed by tier (explicit `provider/model`).
    pub tier: u8,
    /// The model that answered, `provider/model`; empty when no upstream was reached.
    pub model: Arc<str>,
    /// Number of upstream models tried before `model` (failovers).
    pub fallbacks: u8,
    /// Names (`provider/model`) of the models tried and abandoned, in order.
    pub fallback_models: Vec<Arc<str>>,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub cost_usd: f64,
    pub cache_hit: bool,
    pub security: SecurityVerdict,
    /// How many PII spans were scrubbed from the request (never the values).
    pub pii_count: u16,
    /// Status of the last upstream response; 0 when no upstream answered.
    pub upstream_status: u16,
    /// Status the gateway sent downstream.
    pub status: u16,
    /// Request accepted → response complete.
    pub latency_ms: u32,
    /// Upstream request sent → first upstream byte.
    pub ttfb_ms: u32,
    /// Time spent in the gateway itself, excluding the upstream.
    pub overhead_us: u32,
    pub stream: bool,
    pub outcome: Outcome,
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
///
/// Read from `CLOCK_REALTIME_COARSE` (the kernel's last tick, no TSC read: a few ns): every user of
/// this clock (ledger time, budget windows, cache TTLs, circuit cool-downs) works in milliseconds to
/// seconds, and the tick (1–4 ms) is well inside that. Durations that need precision use `Instant`.
pub fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes it.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } == 0 && ts.tv_sec > 0 {
        return ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000;
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip_through_their_names() {
        for v in SecurityVerdict::ALL {
            assert_eq!(SecurityVerdict::parse(v.as_str()), Some(v));
        }
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(Outcome::parse("OK"), None);
    }

    #[test]
    fn default_record_is_empty_and_clock_is_sane() {
        let r = UsageRecord::default();
        assert_eq!(r.outcome, Outcome::Ok);
        assert!(r.fallback_models.is_empty());
        // 2020-01-01 in ms: any real clock is past it.
        assert!(now_ms() > 1_577_836_800_000);
    }
}
