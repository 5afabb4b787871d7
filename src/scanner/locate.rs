//! Start-of-match for PII candidates. The PII Hyperscan database is compiled without
//! start-of-match tracking (SOM over the whole database dominated the scan); it reports only
//! `(rule, end)`. For the few candidate ends that survive the cheap checks, this module finds
//! the leftmost start of a match of that rule ending there, with a reverse lazy DFA of the same
//! regex (regex-automata) run anchored backwards from the end: the same answer as Hyperscan's
//! `SOM_LEFTMOST`, paid only around hits.
//!
//! Context-bound rules (`KIND/validator@group`) are not in any Hyperscan database: their value
//! must start right after a cue of their group, so they are matched forwards, anchored, from
//! the few positions after each cue (`ends_from`), and report every end like Hyperscan would.
//!
//! Syntax is kept Hyperscan-compatible: `\b`, `\d`, `\w`, `\s` are ASCII (Hyperscan without
//! `UCP`), classes like `\p{Lu}` keep Unicode; look-around sees the whole text, not just the
//! candidate.

use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::nfa::thompson;
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input, MatchKind};

use super::rules::{Rule, RuleKind};
use super::ScanError;

/// Per rule index: a reverse DFA (spans found by Hyperscan), a forward DFA (context-bound
/// rules), or nothing (threats, context cues).
pub struct Locator {
    revs: Vec<Option<DFA>>,
    /// Per cue rule index: the context-bound rules of its group.
    bound: Vec<Vec<u32>>,
}

/// Per-core lazy-DFA caches for a `Locator`.
pub struct LocateCache {
    caches: Vec<Option<Cache>>,
}

/// Whether a rule is matched only right after a context cue (validator `name@group`).
pub fn is_ctx_bound(r: &Rule) -> bool {
    matches!(r.kind, RuleKind::Pii(k) if k != super::PiiKind::Context) && r.validator.contains('@')
}

/// Rewrites ASCII-meaning escapes for a Unicode-mode regex: Hyperscan without `UCP` reads `\b`,
/// `\d`, `\w` as ASCII, while regex-syntax in Unicode mode would read them as Unicode (and a
/// lazy DFA cannot do a Unicode `\b`).
fn asciify(re: &str) -> String {
    let mut out = String::with_capacity(re.len() + 16);
    let mut chars = re.chars();
    let mut in_class = 0usize;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let Some(n) = chars.next() else {
                    out.push(c);
                    break;
                };
                match (n, in_class > 0) {
                    ('b', false) => out.push_str("(?-u:\\b)"),
                    ('B', false) => out.push_str("(?-u:\\B)"),
                    ('d', false) => out.push_str("[0-9]"),
                    ('d', true) => out.push_str("0-9"),
                    ('w', false) => out.push_str("[0-9A-Za-z_]"),
                    ('w', true) => out.push_str("0-9A-Za-z_"),
                    _ => {
                        out.push(c);
                        out.push(n);
                    }
                }
            }
            '[' => {
                in_class += 1;
                out.push(c);
            }
            ']' if in_class > 0 => {
                in_class -= 1;
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// Whether a rule needs Unicode mode (non-ASCII literals or Unicode classes).
fn needs_unicode(r: &Rule) -> bool {
    !r.regex.is_ascii() || r.regex.contains("\\p{") || r.flags.contains('w')
}

fn build(r: &Rule, reverse: bool) -> Result<DFA, String> {
    let unicode = needs_unicode(r);
    let pattern = if unicode {
        asciify(&r.regex)
    } else {
        r.regex.clone()
    };
    DFA::builder()
        .syntax(
            syntax::Config::new()
                .unicode(unicode)
                .utf8(false)
                .case_insensitive(r.flags.contains('i'))
                .dot_matches_new_line(r.flags.contains('s'))
                .multi_line(r.flags.contains('m')),
        )
        .thompson(
            thompson::Config::new()
                .reverse(reverse)
                .utf8(false)
                .which_captures(thompson::WhichCaptures::None),
        )
        .configure(
            DFA::config()
                .match_kind(MatchKind::All)
                .unicode_word_boundary(false)
                .cache_capacity(256 * 1024)
                .skip_cache_capacity_check(true),
        )
        .build(&pattern)
        .map_err(|e| e.to_string())
}

impl Locator {
    /// Reverse DFAs for every PII rule that reports a span (not context cues).
    pub fn new(rules: &[Rule]) -> Result<Locator, ScanError> {
        let mut revs = Vec::with_capacity(rules.len());
        let mut bound = vec![Vec::new(); rules.len()];
        for (cue, c) in rules.iter().enumerate() {
            if c.kind != RuleKind::Pii(super::PiiKind::Context) {
                continue;
            }
            for (i, r) in rules.iter().enumerate() {
                if is_ctx_bound(r) && r.validator.split_once('@').map(|x| x.1) == Some(&c.validator)
                {
                    bound[cue].push(i as u32);
                }
            }
        }
        for r in rules {
            let wanted = matches!(r.kind, RuleKind::Pii(k) if k != super::PiiKind::Context);
            revs.push(if wanted {
                Some(
                    build(r, !is_ctx_bound(r)).map_err(|reason| ScanError::Compile {
                        rule: format!("{} ({})", r.id, r.origin),
                        reason,
                    })?,
                )
            } else {
                None
            });
        }
        Ok(Locator { revs, bound })
    }

    /// The context-bound rules of the group of cue rule `cue`.
    pub fn bound_to(&self, cue: u32) -> &[u32] {
        self.bound.get(cue as usize).map_or(&[], |v| v.as_slice())
    }

    pub fn new_cache(&self) -> LocateCache {
        LocateCache {
            caches: self
                .revs
                .iter()
                .map(|d| d.as_ref().map(Cache::new))
                .collect(),
        }
    }

    /// Leftmost start of a match of rule `rule` ending exactly at `end`, if there is one.
    pub fn start(
        &self,
        cache: &mut LocateCache,
        rule: u32,
        text: &[u8],
        end: usize,
    ) -> Option<usize> {
        let dfa = self.revs.get(rule as usize)?.as_ref()?;
        let cache = cache.caches.get_mut(rule as usize)?.as_mut()?;
        let input = Input::new(text).range(..end).anchored(Anchored::Yes);
        match dfa.try_search_rev(cache, &input) {
            Ok(Some(hm)) => Some(hm.offset()),
            _ => None,
        }
    }

    /// Every end `e` (ascending, at most `max_len` bytes on) of a match of context-bound rule
    /// `rule` that starts exactly at `start`, appended to `out`.
    pub fn ends_from(
        &self,
        cache: &mut LocateCache,
        rule: u32,
        text: &[u8],
        start: usize,
        max_len: usize,
        out: &mut Vec<u32>,
    ) {
        let (Some(Some(dfa)), Some(Some(cache))) = (
            self.revs.get(rule as usize),
            cache.caches.get_mut(rule as usize),
        ) else {
            return;
        };
        let limit = text.len().min(start.saturating_add(max_len));
        let input = Input::new(text).range(start..limit).anchored(Anchored::Yes);
        let Ok(mut sid) = dfa.start_state_forward(cache, &input) else {
            return;
        };
        // Matches are reported one byte late: a match state after byte `at` ends at `at`.
        for (at, &b) in text.iter().enumerate().take(limit).skip(start) {
            let Ok(next) = dfa.next_state(cache, sid, b) else {
                return;
            };
            sid = next;
            if sid.is_tagged() {
                if sid.is_match() {
                    out.push(at as u32);
                }
                if sid.is_dead() || sid.is_quit() {
                    return;
                }
            }
        }
        let last = if limit < text.len() {
            dfa.next_state(cache, sid, text[limit])
        } else {
            dfa.next_eoi_state(cache, sid)
        };
        if last.is_ok_and(|s| s.is_match()) {
            out.push(limit as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(regex: &str, flags: &str) -> Rule {
        let mut v = Vec::new();
        super::super::rules::parse_rules(
            "t.txt",
            &format!("r | EMAIL | pii | * | {flags} | c | {regex}"),
            &mut v,
        )
        .unwrap();
        v.pop().unwrap()
    }

    #[test]
    fn finds_leftmost_start_with_ascii_boundaries() {
        let r = rule(r"\b\d{3}-\d{2}-\d{4}\b", "-");
        let l = Locator::new(std::slice::from_ref(&r)).unwrap();
        let mut c = l.new_cache();
        let t = b"ssn 123-45-6789 ok";
        assert_eq!(l.start(&mut c, 0, t, 15), Some(4));
        assert_eq!(l.start(&mut c, 0, t, 14), None);
        // \b at the start consults the byte before the candidate
        let t = b"x9123-45-6789";
        assert_eq!(l.start(&mut c, 0, t, t.len()), None);
    }

    #[test]
    fn unicode_rules_keep_ascii_escapes() {
        assert_eq!(asciify(r"\b\p{Lu}[\d\s]\d"), r"(?-u:\b)\p{Lu}[0-9\s][0-9]");
        let r = rule(r"\b\p{Lu}\p{Ll}+straße\s+\d{1,5}\b", "-");
        let l = Locator::new(std::slice::from_ref(&r)).unwrap();
        let mut c = l.new_cache();
        let t = "in der Königstraße 12 wohnt".as_bytes();
        let end = "in der Königstraße 12".len();
        assert_eq!(l.start(&mut c, 0, t, end), Some(7));
    }

    #[test]
    fn context_bound_rules_report_every_end_forwards() {
        let mut v = Vec::new();
        super::super::rules::parse_rules(
            "t.txt",
            r"r | PHONE/phone@phone | pii | * | - | c | \b\d{2,3}(?: \d{2,3})*\b",
            &mut v,
        )
        .unwrap();
        let l = Locator::new(&v).unwrap();
        let mut c = l.new_cache();
        let t = b"tel: 12 345 6789x";
        let mut ends = Vec::new();
        l.ends_from(&mut c, 0, t, 5, 64, &mut ends);
        assert_eq!(ends, vec![7, 11]);
        ends.clear();
        // \b before the start consults the text before it
        l.ends_from(&mut c, 0, b"x12 345", 1, 64, &mut ends);
        assert!(ends.is_empty());
        l.ends_from(&mut c, 0, b"12 345", 0, 4, &mut ends);
        assert_eq!(ends, vec![2]);
    }

    #[test]
    fn every_embedded_pii_rule_builds() {
        let rules = super::super::rules::load_embedded().unwrap();
        Locator::new(&rules).unwrap();
    }
}
