//! Rule files from `patterns/`: the line format, parsing, and compilation into Hyperscan block
//! databases. What a match means (verdicts, PII validation) is left to `mod.rs` and `pii.rs`.
//!
//! Line format (also documented at the top of every pattern file):
//! `id | category | severity | langs | flags | comment | regex`
//! - `severity` is `critical`, `warning`, or `pii` (a PII/secret span, not a threat);
//! - for `pii` rules `category` is `KIND` or `KIND/validator` (e.g. `CREDIT_CARD/luhn`);
//! - `flags`: any of `i` (caseless), `s` (dot matches newline), `m` (multi-line anchors),
//!   `w` (Unicode properties for `\w`, `\b`, classes), or `-` for none; UTF-8 mode is always on;
//! - the regex is everything after the sixth ` | `, so it may contain `|` freely;
//! - blank lines and lines starting with `#` are ignored.

use std::path::Path;

use hyperscan::prelude::*;

use super::pii::PiiKind;
use super::{ScanError, Severity};

/// The embedded rule files, compiled into the binary. Order is irrelevant.
pub(crate) const EMBEDDED: &[(&str, &str)] = &[
    (
        "injection_override.txt",
        include_str!("../../patterns/injection_override.txt"),
    ),
    (
        "jailbreak.txt",
        include_str!("../../patterns/jailbreak.txt"),
    ),
    (
        "system_prompt_extraction.txt",
        include_str!("../../patterns/system_prompt_extraction.txt"),
    ),
    (
        "exfiltration.txt",
        include_str!("../../patterns/exfiltration.txt"),
    ),
    (
        "command_injection.txt",
        include_str!("../../patterns/command_injection.txt"),
    ),
    (
        "social_engineering.txt",
        include_str!("../../patterns/social_engineering.txt"),
    ),
    (
        "secret_leakage.txt",
        include_str!("../../patterns/secret_leakage.txt"),
    ),
    ("ssrf.txt", include_str!("../../patterns/ssrf.txt")),
    (
        "harmful_request.txt",
        include_str!("../../patterns/harmful_request.txt"),
    ),
    (
        "encoding_evasion.txt",
        include_str!("../../patterns/encoding_evasion.txt"),
    ),
    (
        "filesystem.txt",
        include_str!("../../patterns/filesystem.txt"),
    ),
    ("pii.txt", include_str!("../../patterns/pii.txt")),
];

/// What a rule reports when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    /// A threat rule with its severity.
    Threat(Severity),
    /// A PII / secret candidate span of this kind, to be validated.
    Pii(PiiKind),
}

/// One parsed rule line.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub category: String,
    pub kind: RuleKind,
    /// Validator name after `/` in a PII category (`luhn`, `mod97`, `pesel`, ...), empty if none.
    pub validator: String,
    pub langs: String,
    pub comment: String,
    pub regex: String,
    pub flags: String,
    /// `file:line`, for error messages.
    pub origin: String,
}

/// Parses one rule file; `name` is used in error messages.
pub fn parse_rules(name: &str, text: &str, out: &mut Vec<Rule>) -> Result<(), ScanError> {
    for (lineno, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let origin = format!("{name}:{}", lineno + 1);
        let fields: Vec<&str> = line.splitn(7, " | ").collect();
        if fields.len() != 7 {
            return Err(ScanError::Syntax {
                origin,
                reason: "expected 7 fields separated by ' | '".into(),
            });
        }
        let id = fields[0].trim().to_string();
        let category = fields[1].trim();
        let severity = fields[2].trim();
        let (kind, category, validator) = match severity {
            "critical" => (
                RuleKind::Threat(Severity::Critical),
                category.to_string(),
                String::new(),
            ),
            "warning" => (
                RuleKind::Threat(Severity::Warning),
                category.to_string(),
                String::new(),
            ),
            "pii" => {
                let (k, v) = category.split_once('/').unwrap_or((category, ""));
                let pk = PiiKind::parse(k).ok_or_else(|| ScanError::Syntax {
                    origin: origin.clone(),
                    reason: format!("unknown PII kind {k:?}"),
                })?;
                (RuleKind::Pii(pk), k.to_string(), v.to_string())
            }
            other => {
                return Err(ScanError::Syntax {
                    origin,
                    reason: format!("unknown severity {other:?}"),
                })
            }
        };
        let flags = fields[4].trim().to_string();
        if !flags
            .chars()
            .all(|c| matches!(c, 'i' | 's' | 'm' | 'w' | '-'))
        {
            return Err(ScanError::Syntax {
                origin,
                reason: format!("unknown flags {flags:?}"),
            });
        }
        let regex = fields[6].trim_end_matches(['\r', '\n']).to_string();
        if regex.is_empty() {
            return Err(ScanError::Syntax {
                origin,
                reason: "empty regex".into(),
            });
        }
        out.push(Rule {
            id,
            category,
            kind,
            validator,
            langs: fields[3].trim().to_string(),
            comment: fields[5].trim().to_string(),
            regex,
            flags,
            origin,
        });
    }
    Ok(())
}

/// Whether a rule belongs to the named-PII database (PERSON, ADDRESS and the name cues), which
/// is scanned only when named PII is asked for.
pub fn is_named(r: &Rule) -> bool {
    match r.kind {
        RuleKind::Pii(PiiKind::Person | PiiKind::Address) => true,
        RuleKind::Pii(PiiKind::Context) => r.validator == "person",
        _ => false,
    }
}

/// Loads the embedded rule set.
pub fn load_embedded() -> Result<Vec<Rule>, ScanError> {
    let mut rules = Vec::new();
    for (name, text) in EMBEDDED {
        parse_rules(name, text, &mut rules)?;
    }
    check_unique(&rules)?;
    Ok(rules)
}

/// Loads every `*.txt` file of `dir` (runtime override of the embedded set).
pub fn load_dir(dir: &Path) -> Result<Vec<Rule>, ScanError> {
    let mut rules = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| ScanError::Io {
        path: dir.display().to_string(),
        source: e,
    })?;
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if path.extension().and_then(|e| e.to_str()) != Some("txt") {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| ScanError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("?")
            .to_string();
        parse_rules(&name, &text, &mut rules)?;
    }
    check_unique(&rules)?;
    Ok(rules)
}

fn check_unique(rules: &[Rule]) -> Result<(), ScanError> {
    let mut ids: Vec<&str> = rules.iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    for w in ids.windows(2) {
        if w[0] == w[1] {
            return Err(ScanError::Syntax {
                origin: w[0].to_string(),
                reason: "duplicate rule id".into(),
            });
        }
    }
    Ok(())
}

fn hs_flags(rule: &Rule, pii: bool) -> CompileFlags {
    // UTF-8 mode only where the regex needs it (non-ASCII literals or classes, Unicode
    // properties): byte-mode classes like `[^.\n]{0,50}` compile far smaller and faster.
    let mut f = CompileFlags::empty();
    if !rule.regex.is_ascii() || rule.regex.contains("\\p{") || rule.flags.contains('w') {
        f |= CompileFlags::UTF8;
    }
    for c in rule.flags.chars() {
        match c {
            'i' => f |= CompileFlags::CASELESS,
            's' => f |= CompileFlags::DOTALL,
            'm' => f |= CompileFlags::MULTILINE,
            'w' => f |= CompileFlags::UCP,
            _ => {}
        }
    }
    if !pii {
        // Threat rules only need to fire once per scan.
        f |= CompileFlags::SINGLEMATCH;
    }
    f
}

/// Compiles the rules selected by `select` into one block database; Hyperscan ids are indices
/// into `rules`. PII rules report every end (no start-of-match: `locate.rs` finds starts around
/// hits only), threat rules fire once.
pub fn compile(
    rules: &[Rule],
    select: impl Fn(&Rule) -> bool,
) -> Result<Option<BlockDatabase>, ScanError> {
    let mut pats = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        if !select(r) {
            continue;
        }
        let pii = matches!(r.kind, RuleKind::Pii(_));
        pats.push(Pattern {
            expression: r.regex.clone(),
            flags: hs_flags(r, pii),
            id: Some(i),
            ext: Default::default(),
            som: None,
        });
    }
    if pats.is_empty() {
        return Ok(None);
    }
    match Patterns(pats.clone()).build() {
        Ok(db) => Ok(Some(db)),
        Err(e) => {
            // Only on failure: compile rules one by one so the error names every bad pattern id.
            for p in pats {
                let id = p.id.unwrap_or(0);
                let single: Result<BlockDatabase, _> = Patterns(vec![p]).build();
                if let Err(e) = single {
                    failed.push(format!("{} ({}): {e}", rules[id].id, rules[id].origin));
                }
            }
            Err(ScanError::Compile {
                rule: failed.join("; "),
                reason: e.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_rules_parse_and_have_unique_ids() {
        let rules = load_embedded().unwrap();
        assert!(rules.len() > 100, "only {} rules", rules.len());
        for r in &rules {
            assert!(!r.comment.is_empty(), "rule {} lacks a comment", r.id);
            assert!(!r.langs.is_empty(), "rule {} lacks languages", r.id);
        }
    }

    #[test]
    fn bad_lines_are_rejected_with_origin() {
        let mut v = Vec::new();
        let e = parse_rules("x.txt", "a | b | severe | en | i | c | foo", &mut v).unwrap_err();
        assert!(e.to_string().contains("x.txt:1"));
        let e = parse_rules("x.txt", "\n\na | b", &mut v).unwrap_err();
        assert!(e.to_string().contains("x.txt:3"));
        parse_rules(
            "x.txt",
            "# c\na | cat | warning | en | i | c | foo | bar",
            &mut v,
        )
        .unwrap();
        assert_eq!(v[0].regex, "foo | bar");
    }

    #[test]
    fn every_embedded_language_is_covered() {
        let rules = load_embedded().unwrap();
        for lang in [
            "en", "de", "fr", "es", "it", "pt", "nl", "pl", "ru", "tr", "zh", "ja", "ko", "ar",
            "hi",
        ] {
            assert!(
                rules.iter().any(|r| matches!(r.kind, RuleKind::Threat(_))
                    && r.langs.split(',').any(|l| l == lang)),
                "no injection rule for {lang}"
            );
        }
    }
}
