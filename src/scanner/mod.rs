//! The security scanner: Hyperscan databases compiled once from `patterns/` (threat rules and
//! PII/secret rules), a per-core scratch, evasion normalization, verdicts, PII spans, scrubbing
//! into a per-request vault and rehydration. How only; the pipeline decides when and what to do
//! with a verdict.
//!
//! One scan: the original text goes through one database holding threat and PII rules together
//! (PII offsets are therefore on the original text); each normalized/decoded variant
//! (`normalize.rs`) goes through the threat-only database; obfuscation signals become
//! `encoding_evasion` threats.

pub mod cache;
pub mod learned;
pub mod locate;
pub mod names;
pub mod normalize;
pub mod pii;
pub mod quote;
pub mod rehydrate;
pub mod rules;
pub mod validate;
pub mod vault;

use std::path::Path;

use hyperscan::prelude::*;

pub use pii::{PiiKind, PiiSpan};
pub use rehydrate::{JsonEscaper, Rehydrator};
pub use vault::{scrub, Vault};

use normalize::{VariantKind, Variants};
use pii::Candidate;
use rules::{Rule, RuleKind};

/// Errors building a scanner. Scanning itself does not fail (a Hyperscan runtime error is
/// reported as a `scanner.error` warning threat, fail-closed to at least WARNING).
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("pattern syntax at {origin}: {reason}")]
    Syntax { origin: String, reason: String },
    #[error("pattern {rule} does not compile: {reason}")]
    Compile { rule: String, reason: String },
    #[error("reading patterns from {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("allocating Hyperscan scratch: {0}")]
    Scratch(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Clean,
    Warning,
    Blocked,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Clean => "CLEAN",
            Verdict::Warning => "WARNING",
            Verdict::Blocked => "BLOCKED",
        }
    }
}

/// A matched threat rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Threat {
    pub category: String,
    pub rule: String,
    pub severity: Severity,
}

/// Which severity blocks (config `security.block_on`); the other one warns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BlockOn {
    /// Block on critical threats, warn on warnings (default).
    #[default]
    Critical,
    /// Block on any threat.
    Warning,
}

#[derive(Debug, Clone)]
pub struct ScanOptions {
    pub block_on: BlockOn,
    /// Run the threat rules (prompt injection, jailbreak, …).
    pub threats: bool,
    /// Report PII / secret spans.
    pub pii: bool,
    /// Report PERSON and ADDRESS (heuristic, context-cued) spans.
    pub named_pii: bool,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            block_on: BlockOn::Critical,
            threats: true,
            pii: true,
            named_pii: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanReport {
    pub verdict: Verdict,
    pub threats: Vec<Threat>,
    /// Sorted, non-overlapping, byte offsets into the scanned text.
    pub pii: Vec<PiiSpan>,
}

/// How `Scanner::embedded_cached` used its cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    Disabled,
    Loaded,
    Stored,
    StoreFailed,
}

/// Compiled rule databases. `Send + Sync`: share one behind an `Arc` across worker cores.
pub struct Scanner {
    rules: Vec<Rule>,
    /// Structured PII / secret rules and their context cues (ends only), original text only.
    pii_db: Option<BlockDatabase>,
    /// PERSON / ADDRESS rules and the name cues, scanned only when named PII is asked for.
    named_db: Option<BlockDatabase>,
    /// Start-of-match for PII candidates, found around hits only.
    locator: locate::Locator,
    /// The learned injection signal (a WARNING on top of the patterns).
    learned: Option<learned::Model>,
    /// Threat rules (single match), for the original text and every variant.
    threat_db: Option<BlockDatabase>,
    /// Unique per built scanner (never reused), so a per-core scratch knows which one it fits.
    generation: u64,
}

/// Source of `Scanner::generation`.
static NEXT_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_generation() -> u64 {
    NEXT_GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Per-core mutable state: Hyperscan scratch and reusable buffers. Not shared.
pub struct ScanScratch {
    hs: Option<Scratch>,
    loc: locate::LocateCache,
    /// Learned-signal scratch: feature ids and a lowercased copy.
    lm_ids: Vec<u32>,
    lm_lower: String,
    /// Raw PII hits `(rule, end)` of the current scan.
    ends: Vec<(u32, u32)>,
    cands: Vec<Candidate>,
    hits: Vec<u32>,
    spans: Vec<PiiSpan>,
    variants: Variants,
}

// The scanner is shared read-only between cores; Hyperscan databases are immutable after
// compilation (documented thread-safe), and `hyperscan` marks them Send + Sync.
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Scanner>();
};

impl Scanner {
    /// The rule set embedded at compile time from `patterns/`.
    pub fn embedded() -> Result<Scanner, ScanError> {
        Self::from_rules(rules::load_embedded()?)
    }

    /// Every `*.txt` rule file in `dir` (runtime override of the embedded set).
    pub fn from_dir(dir: &Path) -> Result<Scanner, ScanError> {
        Self::from_rules(rules::load_dir(dir)?)
    }

    /// The embedded rule set, loaded from the compiled-database cache in `cache_dir` when a
    /// matching file is there, else compiled and stored there (best effort).
    pub fn embedded_cached(cache_dir: Option<&Path>) -> Result<(Scanner, CacheUse), ScanError> {
        Self::from_rules_cached(rules::load_embedded()?, cache_dir)
    }

    /// The rule files of `patterns_dir` (`None`: the embedded set), through the cache in
    /// `cache_dir` like `embedded_cached`.
    pub fn load_cached(
        patterns_dir: Option<&Path>,
        cache_dir: Option<&Path>,
    ) -> Result<(Scanner, CacheUse), ScanError> {
        let rules = match patterns_dir {
            Some(d) => rules::load_dir(d)?,
            None => rules::load_embedded()?,
        };
        Self::from_rules_cached(rules, cache_dir)
    }

    /// The cache key of the rules this scanner was built from (equal keys: same databases).
    pub fn rules_key(&self) -> String {
        cache::key(&self.rules)
    }

    /// Unique per built scanner; never reused within the process.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn from_rules_cached(
        rules: Vec<Rule>,
        cache_dir: Option<&Path>,
    ) -> Result<(Scanner, CacheUse), ScanError> {
        let Some(dir) = cache_dir else {
            return Ok((Self::from_rules(rules)?, CacheUse::Disabled));
        };
        let file = cache::path(dir, &cache::key(&rules));
        if let Some([pii_db, named_db, threat_db]) =
            cache::load(&file, 3).and_then(|v| <[Option<BlockDatabase>; 3]>::try_from(v).ok())
        {
            let locator = locate::Locator::new(&rules)?;
            return Ok((
                Scanner {
                    rules,
                    pii_db,
                    named_db,
                    locator,
                    learned: learned::Model::embedded(),
                    threat_db,
                    generation: next_generation(),
                },
                CacheUse::Loaded,
            ));
        }
        let s = Self::from_rules(rules)?;
        let stored = cache::store(
            &file,
            &[s.pii_db.as_ref(), s.named_db.as_ref(), s.threat_db.as_ref()],
        );
        Ok((
            s,
            if stored.is_ok() {
                CacheUse::Stored
            } else {
                CacheUse::StoreFailed
            },
        ))
    }

    fn from_rules(rules: Vec<Rule>) -> Result<Scanner, ScanError> {
        let pii_db = rules::compile(&rules, |r| {
            matches!(r.kind, RuleKind::Pii(_)) && !rules::is_named(r) && !locate::is_ctx_bound(r)
        })?;
        let named_db = rules::compile(&rules, |r| rules::is_named(r) && !locate::is_ctx_bound(r))?;
        let threat_db = rules::compile(&rules, |r| matches!(r.kind, RuleKind::Threat(_)))?;
        let locator = locate::Locator::new(&rules)?;
        Ok(Scanner {
            rules,
            pii_db,
            named_db,
            locator,
            learned: learned::Model::embedded(),
            threat_db,
            generation: next_generation(),
        })
    }

    pub fn new_scratch(&self) -> Result<ScanScratch, ScanError> {
        let mut hs: Option<Scratch> = None;
        for db in [&self.pii_db, &self.named_db, &self.threat_db]
            .into_iter()
            .flatten()
        {
            match hs.as_mut() {
                None => {
                    hs = Some(
                        db.alloc_scratch()
                            .map_err(|e| ScanError::Scratch(e.to_string()))?,
                    )
                }
                Some(s) => {
                    db.realloc_scratch(s)
                        .map_err(|e| ScanError::Scratch(e.to_string()))?;
                }
            }
        }
        Ok(ScanScratch {
            hs,
            loc: self.locator.new_cache(),
            lm_ids: Vec::new(),
            lm_lower: String::new(),
            ends: Vec::new(),
            cands: Vec::new(),
            hits: Vec::new(),
            spans: Vec::new(),
            variants: Variants::default(),
        })
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// The rules, for listing (`id`, category, severity, languages, comment).
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Scans `text`: threats on the original and its evasion variants, PII on the original.
    pub fn scan(&self, scratch: &mut ScanScratch, text: &str, opts: &ScanOptions) -> ScanReport {
        self.scan_inner(scratch, text, opts, true)
    }

    /// `scan`; `settle`: whether PII spans are settled to a fixpoint of scrubbing (off for the
    /// scans `settle_pii` makes itself, so settling never nests).
    fn scan_inner(
        &self,
        scratch: &mut ScanScratch,
        text: &str,
        opts: &ScanOptions,
        settle: bool,
    ) -> ScanReport {
        let ScanScratch {
            hs,
            loc,
            lm_ids,
            lm_lower,
            ends,
            cands,
            hits,
            spans,
            variants,
        } = scratch;
        cands.clear();
        ends.clear();
        hits.clear();
        let mut quoted: Vec<u32> = Vec::new();
        let mut threats: Vec<Threat> = Vec::new();
        let mut scan_error = false;
        let Some(hs) = hs.as_ref() else {
            return ScanReport {
                verdict: Verdict::Clean,
                threats,
                pii: Vec::new(),
            };
        };
        let rules = &self.rules;
        let want_pii = opts.pii;
        let want_threats = opts.threats;

        // 1. original text: PII candidate ends, then starts around the hits that can count
        if want_pii {
            let dbs = [
                self.pii_db.as_ref(),
                self.named_db.as_ref().filter(|_| opts.named_pii),
            ];
            for db in dbs.into_iter().flatten() {
                let r = db.scan(text, hs, |id: u32, _: u64, to: u64, _flags: u32| {
                    ends.push((id, to as u32));
                    Matching::Continue
                });
                scan_error |= r.is_err();
            }
            if !ends.is_empty() {
                pii::locate_candidates(
                    text,
                    rules,
                    &self.locator,
                    loc,
                    ends,
                    cands,
                    opts.named_pii,
                );
            }
        }
        if want_threats {
            if let Some(db) = &self.threat_db {
                // computed at the first hit only: clean prompts never pay for it
                let mut mention: Option<bool> = None;
                let r = db.scan(text, hs, |id: u32, _: u64, to: u64, _: u32| {
                    // "Translate 'forget everything I said'": a quoted phrase in a request
                    // about the phrase itself is a mention, not an instruction.
                    let m = *mention.get_or_insert_with(|| quote::mention_request(text));
                    if m && quote::is_quoted_at(text.as_bytes(), to as usize) {
                        quoted.push(id);
                    } else {
                        hits.push(id);
                    }
                    Matching::Continue
                });
                scan_error |= r.is_err();
            }
        }
        let original_hits = hits.len();

        // 2. variants: threats only
        if want_threats {
            let sig = normalize::build_variants(text, variants);
            sig.evasions(|rule, critical| {
                threats.push(Threat {
                    category: "encoding_evasion".into(),
                    rule: rule.into(),
                    severity: if critical {
                        Severity::Critical
                    } else {
                        Severity::Warning
                    },
                });
            });
            if let Some(db) = &self.threat_db {
                for (kind, v) in &variants.texts {
                    let before = hits.len();
                    let r = db.scan(v.as_str(), hs, |id: u32, _: u64, _: u64, _: u32| {
                        hits.push(id);
                        Matching::Continue
                    });
                    scan_error |= r.is_err();
                    // A threat visible only after de-obfuscation is itself evidence of evasion.
                    let new = hits[before..]
                        .iter()
                        .any(|h| !hits[..original_hits].contains(h));
                    if new && !threats.iter().any(|t| t.rule.ends_with(kind.as_str())) {
                        threats.push(Threat {
                            category: "encoding_evasion".into(),
                            rule: format!("evasion.hidden_in_{}", kind.as_str()),
                            severity: if *kind == VariantKind::Normalized {
                                Severity::Warning
                            } else {
                                Severity::Critical
                            },
                        });
                    }
                }
            }
            if let Some(m) = &self.learned {
                if m.score(text, lm_ids, lm_lower) > learned::THRESHOLD {
                    threats.push(Threat {
                        category: "learned".into(),
                        rule: "learned.injection_score".into(),
                        severity: Severity::Warning,
                    });
                }
            }
            hits.sort_unstable();
            hits.dedup();
            // variants repeat the quoted phrase: a rule only ever seen quoted stays a mention
            hits.retain(|h| !quoted.contains(h));
            for &h in hits.iter() {
                let r = &rules[h as usize];
                if let RuleKind::Threat(sev) = r.kind {
                    threats.push(Threat {
                        category: r.category.clone(),
                        rule: r.id.clone(),
                        severity: sev,
                    });
                }
            }
        }
        if scan_error {
            threats.push(Threat {
                category: "scanner".into(),
                rule: "scanner.error".into(),
                severity: Severity::Warning,
            });
        }

        // 3. PII: validate candidates on the original text
        let mut pii = Vec::new();
        if cands.is_empty() {
            spans.clear();
        } else {
            pii::resolve(text, rules, cands, spans);
        }
        if want_pii && opts.named_pii {
            add_gazetteer_names(text, spans);
        }
        if !spans.is_empty() {
            let placeholders = if spans.is_empty() {
                Vec::new()
            } else {
                vault::placeholder_ranges(text.as_bytes())
            };
            pii.extend(
                spans
                    .iter()
                    // a placeholder of any kind (an SSN placeholder also looks like a phone), or
                    // any part of one (`Person` of `Person_0001`, `0101:db8::0` across a phone and
                    // an IP placeholder): scrubbing scrubbed text must change nothing
                    .filter(|s| {
                        !vault::is_any_placeholder(&text.as_bytes()[s.start..s.end])
                            && !placeholders
                                .iter()
                                .any(|p| p.start < s.end && s.start < p.end)
                    }),
            );
        }

        // The name gazetteer's vetoes read neighbours too (a house number after a name); named
        // PII is asked for by `inspect` only, so it settles whenever it found anything.
        if settle
            && !pii.is_empty()
            && (want_pii && opts.named_pii || needs_rescan(text.as_bytes(), rules, cands, &pii))
        {
            self.settle_pii(scratch, text, opts, &mut pii);
        }

        let verdict = verdict_for(&threats, opts.block_on);
        ScanReport {
            verdict,
            threats,
            pii,
        }
    }
}

/// Adds the names of the gazetteer ([`names::find`]) that no other span overlaps.
fn add_gazetteer_names(text: &str, spans: &mut Vec<PiiSpan>) {
    let mut found = Vec::new();
    names::find(text, &mut found);
    if found.is_empty() {
        return;
    }
    for (start, end) in found {
        if !spans.iter().any(|o| o.start < end && start < o.end) {
            spans.push(PiiSpan {
                start,
                end,
                kind: PiiKind::Person,
            });
        }
    }
    spans.sort_unstable_by_key(|s| s.start);
}

/// Rounds of [`Scanner::settle_pii`] at most; real text settles in one.
const MAX_SETTLE_ROUNDS: usize = 3;

impl Scanner {
    /// Makes the spans a fixpoint of scrubbing: scans the text as scrubbing would leave it (each
    /// span replaced by a placeholder of its kind) and adds, mapped back to the original offsets,
    /// whatever that finds outside the placeholders — until nothing new turns up. Validators read
    /// a value's neighbours (`+1555 055` is not a phone number when ` 01` follows), and a scrub
    /// changes neighbours: without this a second scrub of scrubbed text could find values the
    /// first let through. Only run when a span touches text that could read differently
    /// afterwards ([`needs_rescan`]), so ordinary text never pays for it.
    fn settle_pii(
        &self,
        scratch: &mut ScanScratch,
        text: &str,
        opts: &ScanOptions,
        pii: &mut Vec<PiiSpan>,
    ) {
        let only_pii = ScanOptions {
            threats: false,
            ..*opts
        };
        for _ in 0..MAX_SETTLE_ROUNDS {
            // the scrubbed shape, and where each placeholder sits in it
            let mut shaped = String::with_capacity(text.len() + pii.len() * 16);
            let mut segs: Vec<(usize, usize, usize, usize)> = Vec::with_capacity(pii.len());
            let mut pos = 0;
            for s in pii.iter() {
                shaped.push_str(&text[pos..s.start]);
                let at = shaped.len();
                shaped.push_str(&vault::placeholder(s.kind, 1));
                segs.push((s.start, s.end, at, shaped.len()));
                pos = s.end;
            }
            shaped.push_str(&text[pos..]);
            let found = self.scan_inner(scratch, &shaped, &only_pii, false).pii;
            let mut added = false;
            for f in found {
                if segs.iter().any(|&(_, _, a, b)| a < f.end && f.start < b) {
                    continue;
                }
                // offset of the gap the span lies in: after the last placeholder before it
                let (o_end, n_end) = segs
                    .iter()
                    .take_while(|&&(_, _, a, _)| a < f.start)
                    .last()
                    .map_or((0, 0), |&(_, e, _, b)| (e, b));
                let start = f.start - n_end + o_end;
                let end = f.end - n_end + o_end;
                if end <= text.len()
                    && text.is_char_boundary(start)
                    && text.is_char_boundary(end)
                    && !pii.iter().any(|p| p.start < end && start < p.end)
                {
                    pii.push(PiiSpan {
                        start,
                        end,
                        kind: f.kind,
                    });
                    added = true;
                }
            }
            if !added {
                return;
            }
            pii.sort_unstable_by_key(|s| s.start);
        }
    }
}

/// Whether scrubbing `pii` could make the scanner read the text around a span differently:
/// - a span glued to a letter or digit (word boundaries move);
/// - a candidate that overlaps or comes within 3 bytes of a span without lying inside it (it lost
///   an overlap, or its validator read the span's bytes as neighbours);
/// - a candidate with a span shortly before it and a word that vetoes numbers (`invoice`,
///   `version`, …) within the veto's byte reach: a placeholder of another length moves the word
///   out of reach, or removes it.
fn needs_rescan(text: &[u8], rules: &[Rule], cands: &[Candidate], pii: &[PiiSpan]) -> bool {
    const NEAR: usize = 3;
    let glued = |i: Option<usize>| {
        i.and_then(|i| text.get(i))
            .is_some_and(u8::is_ascii_alphanumeric)
    };
    if pii
        .iter()
        .any(|s| glued(s.start.checked_sub(1)) || glued(Some(s.end)))
    {
        return true;
    }
    let reach = pii::NUMBER_VETO_REACH;
    // `pii` is sorted and non-overlapping, so its ends are sorted too: each candidate looks only
    // at the spans within reach of it (no candidates × spans product on PII-dense text).
    cands.iter().any(|c| {
        if rules[c.rule as usize].kind == RuleKind::Pii(PiiKind::Context) {
            return false;
        }
        let (cs, ce) = (c.start as usize, c.end as usize);
        let first = pii.partition_point(|s| s.end + reach <= cs);
        let (mut inside, mut near, mut before) = (false, false, false);
        for s in pii[first..].iter().take_while(|s| s.start < ce + NEAR) {
            inside |= s.start <= cs && ce <= s.end;
            near |= cs < s.end + NEAR;
            before |= s.end <= cs;
        }
        !inside && (near || before && pii::holds_number_veto(&text[cs.saturating_sub(reach)..cs]))
    })
}

fn verdict_for(threats: &[Threat], block_on: BlockOn) -> Verdict {
    let worst = threats.iter().map(|t| t.severity).max();
    match (worst, block_on) {
        (None, _) => Verdict::Clean,
        (Some(Severity::Critical), _) | (Some(Severity::Warning), BlockOn::Warning) => {
            Verdict::Blocked
        }
        (Some(Severity::Warning), BlockOn::Critical) => Verdict::Warning,
    }
}

#[cfg(test)]
mod tests;
