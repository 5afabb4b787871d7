//! PII kinds and spans, and turning raw Hyperscan candidate matches into validated,
//! non-overlapping spans on the original text. Checksums live in `validate.rs`; scrubbing in
//! `vault.rs`.

use super::locate::{self, LocateCache, Locator};
use super::rules::{Rule, RuleKind};
use super::validate as v;

/// The PII / secret types of the inspect contract (DESIGN.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PiiKind {
    PrivateKey,
    ApiKey,
    Password,
    Email,
    Iban,
    // A national ID outranks a card on the same digits: its checksums are stronger evidence
    // (INSEE's mod-97 key against Luhn's mod 10).
    NationalId,
    CreditCard,
    Ssn,
    Phone,
    IpAddress,
    DateOfBirth,
    Person,
    Address,
    /// Not a PII type: a context cue that other rules may require (`CTX/<group>`).
    Context,
}

impl PiiKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PiiKind::PrivateKey => "PRIVATE_KEY",
            PiiKind::ApiKey => "API_KEY",
            PiiKind::Password => "PASSWORD",
            PiiKind::Email => "EMAIL",
            PiiKind::Iban => "IBAN",
            PiiKind::CreditCard => "CREDIT_CARD",
            PiiKind::NationalId => "NATIONAL_ID",
            PiiKind::Ssn => "SSN",
            PiiKind::Phone => "PHONE",
            PiiKind::IpAddress => "IP_ADDRESS",
            PiiKind::DateOfBirth => "DATE_OF_BIRTH",
            PiiKind::Person => "PERSON",
            PiiKind::Address => "ADDRESS",
            PiiKind::Context => "CTX",
        }
    }

    pub fn parse(s: &str) -> Option<PiiKind> {
        Some(match s {
            "PRIVATE_KEY" => PiiKind::PrivateKey,
            "API_KEY" => PiiKind::ApiKey,
            "PASSWORD" => PiiKind::Password,
            "EMAIL" => PiiKind::Email,
            "IBAN" => PiiKind::Iban,
            "CREDIT_CARD" => PiiKind::CreditCard,
            "NATIONAL_ID" => PiiKind::NationalId,
            "SSN" => PiiKind::Ssn,
            "PHONE" => PiiKind::Phone,
            "IP_ADDRESS" => PiiKind::IpAddress,
            "DATE_OF_BIRTH" => PiiKind::DateOfBirth,
            "PERSON" => PiiKind::Person,
            "ADDRESS" => PiiKind::Address,
            "CTX" => PiiKind::Context,
            _ => return None,
        })
    }

    /// All reportable kinds (not `Context`).
    pub const ALL: [PiiKind; 13] = [
        PiiKind::PrivateKey,
        PiiKind::ApiKey,
        PiiKind::Password,
        PiiKind::Email,
        PiiKind::Iban,
        PiiKind::CreditCard,
        PiiKind::NationalId,
        PiiKind::Ssn,
        PiiKind::Phone,
        PiiKind::IpAddress,
        PiiKind::DateOfBirth,
        PiiKind::Person,
        PiiKind::Address,
    ];
}

/// A PII span: UTF-8 byte offsets `[start, end)` into the scanned (original) text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PiiSpan {
    pub start: usize,
    pub end: usize,
    pub kind: PiiKind,
}

/// A raw candidate reported by Hyperscan: rule index and byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Candidate {
    pub rule: u32,
    pub start: u32,
    pub end: u32,
}

/// How a PII rule's validator field is read: `name` or `name@ctxgroup` (needs a `CTX/ctxgroup`
/// match ending at most `MAX_CTX_GAP` non-alphanumeric bytes before the value).
pub const MAX_CTX_GAP: usize = 12;

fn split_validator(s: &str) -> (&str, Option<&str>) {
    match s.split_once('@') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    }
}

/// How far around a delimited digit field an e-mail address is looked for (bytes).
const FIELD_REACH: usize = 120;

/// Words that, shortly before a dotted quad, mean it is a version number and not an address.
const VERSION_CUES: &[&str] = &[
    "version", "build", "firmware", "release", "upgrade", "update", "patch", "ver.", "v.",
];

/// How far before a number `OTHER_NUMBER_CUES` and `VERSION_CUES` are looked for (bytes).
pub const NUMBER_VETO_REACH: usize = 48;

/// Whether `s` holds a word that, before a number, makes it something other than PII
/// (`invoice`, `version`, …).
pub fn holds_number_veto(s: &[u8]) -> bool {
    let mut buf = [0u8; NUMBER_VETO_REACH];
    let s = &s[s.len().saturating_sub(NUMBER_VETO_REACH)..];
    let lower = &mut buf[..s.len()];
    for (d, c) in lower.iter_mut().zip(s) {
        *d = c.to_ascii_lowercase();
    }
    // The window is at most 48 bytes: comparing in place beats building a searcher per cue
    // (this runs for every number candidate with a span before it).
    OTHER_NUMBER_CUES.iter().chain(VERSION_CUES).any(|c| {
        let c = c.as_bytes();
        lower.windows(c.len()).any(|w| w[0] == c[0] && w == c)
    })
}

/// Start of the value after the last separator (whitespace, `=`, `:`, quote) in `[start, end)`.
fn tail_start(text: &[u8], start: usize, end: usize) -> usize {
    text[start..end]
        .iter()
        .rposition(|c| c.is_ascii_whitespace() || matches!(c, b'=' | b':' | b'"' | b'\''))
        .map_or(start, |p| start + p + 1)
}

/// Checks a candidate and returns the value span (context-carrying rules trim to the value).
fn validate(name: &str, text: &[u8], start: usize, end: usize) -> Option<(usize, usize)> {
    let s = &text[start..end];
    let before = if start > 0 { text[start - 1] } else { b' ' };
    let after = if end < text.len() { text[end] } else { b' ' };
    let ok = |b: bool| if b { Some((start, end)) } else { None };
    match name {
        "luhn" => ok(v::card_shape(s)
            && s[0] != b'0'
            && before != b'.'
            && !before.is_ascii_digit()
            && !after.is_ascii_digit()),
        "mod97" => {
            // The rule may run on into following words: the longest valid prefix ending at a
            // group boundary is the IBAN.
            if s.starts_with(b"XX") {
                return None;
            }
            let mut e = end;
            loop {
                if v::iban(&text[start..e]) {
                    return Some((start, e));
                }
                let p = memchr::memrchr(b' ', &text[start..e])?;
                e = start + p;
                if e - start < 15 {
                    return None;
                }
            }
        }
        "ssn" => ok(v::ssn(s)
            && !before.is_ascii_digit()
            && !after.is_ascii_digit()
            && before != b'-'
            && after != b'-'),
        "ipv4" => {
            if !v::ipv4(s)
                || before == b'.'
                || after == b'.' && text.get(end + 1).is_some_and(u8::is_ascii_digit)
            {
                return None;
            }
            let lo = start.saturating_sub(NUMBER_VETO_REACH);
            let window = String::from_utf8_lossy(&text[lo..start]).to_ascii_lowercase();
            let line = window.rsplit('\n').next().unwrap_or("");
            // A dotted quad in a test assertion (`assert f("…")==('1.2.3.4')`) is example data
            // of a code prompt, not someone's address.
            let code = line.contains("assert") || line.contains("==");
            ok(!VERSION_CUES.iter().any(|c| line.contains(c))
                && !code
                && !matches!(before, b'v' | b'V'))
        }
        "ipv6" => ok(v::ipv6(s) && !before.is_ascii_hexdigit() && before != b':' && after != b':'),
        "dob" => ok(v::birth_date(s) && !s.starts_with(b"1900-")),
        "dob_record" => {
            // "On 01/05/1972 Kristen Freeman opened an account …": a full date written right
            // before a person's name in a record. Only the date is the value; a birth year
            // after 2012 reads as an event date (a log line, a signature), not a birth date.
            let e = start + s.iter().position(u8::is_ascii_whitespace)?;
            let d = &text[start..e];
            let year = if d.get(4) == Some(&b'-') {
                d.get(..4)?
            } else {
                d.get(d.len().checked_sub(4)?..)?
            };
            let year = std::str::from_utf8(year).ok()?.parse::<u32>().ok()?;
            (v::birth_date(d) && year <= 2012 && !before.is_ascii_digit()).then_some((start, e))
        }
        "luhn12" => ok(v::luhn_len(s, 12..=12)
            && s[0] != b'0'
            && !before.is_ascii_digit()
            && !after.is_ascii_digit()),
        "nid12" => ok(!in_longer_group(text, start, end) && !after.is_ascii_digit()),
        "phone_field" => {
            // A whole field of a delimited contact record ("… | 2540868937 | a@b.org",
            // "Name, Org, 789 172 068, a@b.pl") with an e-mail address in the same record.
            let inner = |c: &u8| c.is_ascii_digit();
            let s0 = start + s.iter().position(inner)?;
            let e0 = start + s.iter().rposition(inner)? + 1;
            let lo = start.saturating_sub(FIELD_REACH);
            let hi = (end + FIELD_REACH).min(text.len());
            let lo = memchr::memrchr(b'\n', &text[lo..start]).map_or(lo, |p| lo + p + 1);
            let hi = memchr::memchr(b'\n', &text[end..hi]).map_or(hi, |p| end + p);
            if memchr::memchr(b'@', &text[lo..start]).is_none()
                && memchr::memchr(b'@', &text[end..hi]).is_none()
            {
                return None;
            }
            validate("phone", text, s0, e0)
        }
        "phone_label" => {
            // A number followed by its label ("655 437 108 office", "28-64-66-98 fax").
            let e0 = start + s.iter().rposition(u8::is_ascii_digit)? + 1;
            validate("phone", text, start, e0)
        }
        "pesel" => ok(v::pesel(s)),
        "bsn" => ok(v::bsn(s)),
        "cpf" => ok(v::cpf(s)),
        "nif" => ok(v::nif(s)),
        "insee" => ok(v::insee(s)),
        "cf" => ok(v::codice_fiscale(s)),
        "aadhaar" => ok(v::aadhaar(s) && !in_longer_group(text, start, end)),
        "nino" => {
            ok(s.iter().filter(|c| c.is_ascii_digit()).count() == 6 && !s.starts_with(b"REDACTED"))
        }
        "secret" => ok(!v::is_digest_like(s) && v::looks_random(s)),
        "secret_tail" => {
            let vs = tail_start(text, start, end);
            let val = &text[vs..end];
            (val.len() >= 16
                && !v::is_digest_like(val)
                && v::looks_random(val)
                && !val.starts_with(b"redacted"))
            .then_some((vs, end))
        }
        "hexsecret" => {
            ok(s.len() >= 32 && !v::is_digest_like(s) && s.iter().any(|c| c.is_ascii_alphabetic()))
        }
        "phone" => {
            let d = s.iter().filter(|c| c.is_ascii_digit()).count();
            let main: &[u8] = s.split(|&c| c == b'x' || c == b'e').next().unwrap_or(s);
            let md = main.iter().filter(|c| c.is_ascii_digit()).count();
            ok((7..=15).contains(&md)
                && d <= 20
                && !street_number(text, end)
                && before != b'-'
                && !in_longer_group(text, start, end)
                && !other_number_cue(text, start)
                && !v::birth_date(s)
                && !before.is_ascii_digit()
                && !after.is_ascii_digit()
                && before != b'.'
                && !v::ipv4(s)
                && !s.starts_with(b"+1-555-0"))
        }
        "pwflag" => {
            let p = memchr::memmem::rfind(s, b" -p")? + 3;
            let vs = start + p;
            password_ok(&text[vs..end]).then_some((vs, end))
        }
        "pwassign" | "pwtail" => {
            let vs = tail_start(text, start, end);
            password_ok(&text[vs..end]).then_some((vs, end))
        }
        "dsn" => {
            let scheme = memchr::memmem::find(s, b"://")? + 3;
            let at = memchr::memrchr(b'@', s)?;
            let colon = scheme + memchr::memchr(b':', &s[scheme..at])? + 1;
            (colon < at && password_ok(&s[colon..at])).then_some((start + colon, start + at))
        }
        "person" => person_ok(s).then_some((start, end)),
        // a house number, not a section number ("3.5 Multi-Language Bypass")
        "street" => ok(before != b'.' && !before.is_ascii_digit()),
        "" | "any" => Some((start, end)),
        _ => None,
    }
}

/// Whether `[start, end)` is part of a longer run of digit groups (`6715 2496 9765 4913`).
fn in_longer_group(text: &[u8], start: usize, end: usize) -> bool {
    let digit_at = |i: Option<usize>| i.and_then(|i| text.get(i)).is_some_and(u8::is_ascii_digit);
    let sep = |i: Option<usize>| {
        i.and_then(|i| text.get(i))
            .is_some_and(|c| matches!(c, b' ' | b'-'))
    };
    (sep(start.checked_sub(1)) && digit_at(start.checked_sub(2)))
        || (sep(Some(end)) && digit_at(Some(end + 1)))
}

/// Whether digits ending at `end` are followed by a capitalised word: a house number before a
/// street name ("at 7943 2027 Prospect St"), not a phone number.
fn street_number(text: &[u8], end: usize) -> bool {
    text.get(end) == Some(&b' ')
        && text.get(end + 1).is_some_and(u8::is_ascii_uppercase)
        && text.get(end + 2).is_some_and(u8::is_ascii_lowercase)
}

/// Words that, just before a number, say it is some other identifier than a phone number.
const OTHER_NUMBER_CUES: &[&str] = &[
    "license",
    "licence",
    "card",
    "account",
    "invoice",
    "order",
    "reference",
    "passport",
    "tracking",
    "policy",
    "serial",
    "booking",
];
/// Phone words that override `OTHER_NUMBER_CUES` in the same window.
const PHONE_WORDS: &[&str] = &["phone", "tel", "mobile", "call", "fax", "whatsapp", "cell"];

fn other_number_cue(text: &[u8], start: usize) -> bool {
    let mut lo = start.saturating_sub(24);
    while lo < start && !text[lo].is_ascii() {
        lo += 1;
    }
    let window = String::from_utf8_lossy(&text[lo..start]).to_ascii_lowercase();
    OTHER_NUMBER_CUES.iter().any(|c| window.contains(c))
        && !PHONE_WORDS.iter().any(|c| window.contains(c))
}

fn password_ok(p: &[u8]) -> bool {
    p.len() >= 4
        && !p.starts_with(b"$")
        && !p.starts_with(b"{")
        && !p.starts_with(b"<")
        && !p.starts_with(b"*")
        && !p.starts_with(b"redacted")
        && !p.starts_with(b"os.")
        && !p.starts_with(b"process.")
        && !p.starts_with(b"env")
        && p.iter().any(|c| c.is_ascii_alphanumeric())
        && (p.iter().any(u8::is_ascii_digit)
            || p.iter().any(|c| !c.is_ascii_alphanumeric())
            || p.len() >= 12)
}

/// Words that start a capitalised phrase but are not names.
const NOT_NAMES: &[&str] = &[
    "Mr",
    "Mrs",
    "Ms",
    "Dr",
    "Prof",
    "I",
    "The",
    "A",
    "An",
    "This",
    "That",
    "It",
    "We",
    "You",
    "He",
    "She",
    "They",
    "Here",
    "There",
    "What",
    "How",
    "Please",
    "Thanks",
    "Thank",
    "Sorry",
    "Yes",
    "No",
    "Not",
    "Just",
    "Going",
    "Looking",
    "Writing",
    "Trying",
    "Happy",
    "Glad",
    "Back",
    "Also",
    "So",
    "Very",
    "Good",
    "Fine",
    "New",
    "Interested",
    "Working",
    "Calling",
    "Ready",
    "Sure",
    "Okay",
    "Hi",
    "Hello",
    "Dear",
    "Hey",
    "Can",
    "Could",
    "Would",
    "Will",
    "My",
    "Our",
    "Your",
    "Is",
    "Are",
    "Do",
    "Does",
    "Please",
    "Team",
    "All",
    "Everyone",
    "Sir",
    "Madam",
    "There",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
    "January",
    "February",
    "March",
    "April",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
    "Python",
    "Java",
    "Rust",
    "Write",
    "Create",
    "Make",
    "Given",
    "Return",
    "Complete",
    "Summarize",
    "Translate",
    "Assistant",
    "User",
    "System",
    "Customer",
    "Support",
    "Admin",
    "Developer",
    "Bot",
    "AI",
    "ChatGPT",
    "GPT",
    "Claude",
    "Mode",
    "Now",
];

fn person_ok(s: &[u8]) -> bool {
    let Ok(t) = std::str::from_utf8(s) else {
        return false;
    };
    let first = t
        .split([' ', '-'])
        .next()
        .unwrap_or("")
        .trim_end_matches(['\'', '’']);
    first.chars().count() >= 2
        && !NOT_NAMES.contains(&first)
        && !t.contains("Redacted")
        && !t.starts_with("Person_")
}

/// Ends located per (rule, start) run, longest first: the validators rarely need more.
const MAX_ENDS_PER_SPAN: u32 = 8;
/// Longest value a context-bound rule may match after its cue (bytes).
const MAX_BOUND_LEN: usize = 96;

/// Turns raw `(rule, end)` hits into candidates with starts: spans found by Hyperscan get the
/// leftmost start of a match ending there; context cues keep their end and add the matches of
/// their group's context-bound rules starting within `MAX_CTX_GAP` non-alphanumeric bytes
/// after them. `ends` is sorted and deduplicated in place; candidates are appended to `out`.
#[allow(clippy::too_many_arguments)]
pub fn locate_candidates(
    text: &str,
    rules: &[Rule],
    locator: &Locator,
    cache: &mut LocateCache,
    ends: &mut Vec<(u32, u32)>,
    out: &mut Vec<Candidate>,
    named: bool,
) {
    ends.sort_unstable_by_key(|&(rule, end)| (rule, std::cmp::Reverse(end)));
    ends.dedup();
    let bytes = text.as_bytes();
    let mut bound_ends: Vec<u32> = Vec::new();
    let mut cur_rule = u32::MAX;
    let mut span_start = u32::MAX;
    let mut in_span = 0u32;
    for &(rule, end) in ends.iter() {
        let r = &rules[rule as usize];
        match r.kind {
            RuleKind::Threat(_) => continue,
            RuleKind::Pii(PiiKind::Context) => {
                out.push(Candidate {
                    rule,
                    start: end,
                    end,
                });
                let e = end as usize;
                let first_alnum = bytes[e..]
                    .iter()
                    .take(MAX_CTX_GAP + 1)
                    .position(u8::is_ascii_alphanumeric)
                    .map_or(bytes.len().min(e + MAX_CTX_GAP), |p| e + p);
                for &br in locator.bound_to(rule) {
                    if !named && rules[br as usize].kind == RuleKind::Pii(PiiKind::Person) {
                        continue;
                    }
                    for start in e..=first_alnum {
                        if !text.is_char_boundary(start) {
                            continue;
                        }
                        bound_ends.clear();
                        locator.ends_from(cache, br, bytes, start, MAX_BOUND_LEN, &mut bound_ends);
                        for &be in bound_ends.iter().rev().take(MAX_ENDS_PER_SPAN as usize) {
                            out.push(Candidate {
                                rule: br,
                                start: start as u32,
                                end: be,
                            });
                        }
                    }
                }
                continue;
            }
            RuleKind::Pii(_) => {}
        }
        if locate::is_ctx_bound(r) {
            continue;
        }
        if rule != cur_rule {
            cur_rule = rule;
            span_start = u32::MAX;
            in_span = 0;
        }
        if span_start != u32::MAX && end > span_start && in_span >= MAX_ENDS_PER_SPAN {
            continue;
        }
        let Some(start) = locator.start(cache, rule, bytes, end as usize) else {
            continue;
        };
        let start = start as u32;
        if start == span_start {
            in_span += 1;
        } else {
            span_start = start;
            in_span = 1;
        }
        out.push(Candidate { rule, start, end });
    }
}

/// Resolves candidates into validated, non-overlapping spans (sorted by start). `cands` is
/// sorted and consumed as scratch space.
pub fn resolve(text: &str, rules: &[Rule], cands: &mut Vec<Candidate>, out: &mut Vec<PiiSpan>) {
    out.clear();
    if cands.is_empty() {
        return;
    }
    let bytes = text.as_bytes();
    // Longest first within each (rule, start).
    cands.sort_unstable_by(|a, b| {
        (a.rule, a.start, std::cmp::Reverse(a.end)).cmp(&(
            b.rule,
            b.start,
            std::cmp::Reverse(b.end),
        ))
    });
    cands.dedup();
    // Context ends per group, as (group, end).
    let mut ctx: Vec<(&str, usize)> = Vec::new();
    for c in cands.iter() {
        let r = &rules[c.rule as usize];
        if r.kind == RuleKind::Pii(PiiKind::Context) {
            ctx.push((r.validator.as_str(), c.end as usize));
        }
    }
    let has_ctx = |group: &str, start: usize| {
        ctx.iter().any(|&(g, e)| {
            g == group
                && e <= start
                && start - e <= MAX_CTX_GAP
                && bytes[e..start].iter().all(|c| !c.is_ascii_alphanumeric())
        })
    };
    let mut accepted: Vec<PiiSpan> = Vec::new();
    let mut i = 0;
    while i < cands.len() {
        let c = cands[i];
        let r = &rules[c.rule as usize];
        let mut j = i;
        while j < cands.len() && cands[j].rule == c.rule && cands[j].start == c.start {
            j += 1;
        }
        if let RuleKind::Pii(kind) = r.kind {
            if kind != PiiKind::Context {
                let (name, group) = split_validator(&r.validator);
                let start = c.start as usize;
                if group.is_none_or(|g| has_ctx(g, start)) {
                    for cand in &cands[i..j] {
                        let mut end = cand.end as usize;
                        // Trailing sentence punctuation is not part of a value.
                        while end > start + 1
                            && matches!(
                                bytes[end - 1],
                                b'.' | b',' | b';' | b':' | b')' | b'!' | b'?'
                            )
                        {
                            if kind == PiiKind::Password
                                || kind == PiiKind::Phone && bytes[end - 1] == b')'
                            {
                                break;
                            }
                            end -= 1;
                        }
                        if !text.is_char_boundary(start) || !text.is_char_boundary(end) {
                            continue;
                        }
                        if let Some((s, e)) = validate(name, bytes, start, end) {
                            if s < e && text.is_char_boundary(s) && text.is_char_boundary(e) {
                                accepted.push(PiiSpan {
                                    start: s,
                                    end: e,
                                    kind,
                                });
                                break;
                            }
                        }
                    }
                }
            }
        }
        i = j;
    }
    // Priority by kind order, then longer spans first; keep non-overlapping.
    accepted.sort_unstable_by(|a, b| {
        (a.kind, std::cmp::Reverse(a.end - a.start), a.start).cmp(&(
            b.kind,
            std::cmp::Reverse(b.end - b.start),
            b.start,
        ))
    });
    for s in accepted {
        if !out.iter().any(|o| o.start < s.end && s.start < o.end) {
            out.push(s);
        }
    }
    out.sort_unstable_by_key(|s| s.start);
}
