//! `tierflow inspect`: offline evaluation of the gateway's decisions (DESIGN.md "Inspection").
//! Reads JSON lines on stdin — `{"prompt": ...}` or a full chat request body — and writes one
//! JSON line per input line, in order: `category`, `tier`, `decided_by`, `confidence`,
//! `security` {verdict, threats}, `pii` [{start, end, type}] (byte offsets into the prompt text:
//! `prompt`, or a chat body's latest user message) and `scrubbed`. A line that cannot be read
//! is answered with `{"error": ...}`; blank lines are skipped.

use std::borrow::Cow;
use std::io::{BufRead, Write};

use serde_json::{json, Value};

use crate::config::Config;
use crate::pipeline::parse::{parse_chat_request, ChatRequest, MessageText};
use crate::pipeline::security;
use crate::scanner::{scrub, BlockOn, ScanOptions, ScanScratch, Scanner, Vault};

/// The routing part of an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct InspectDecision {
    pub category: String,
    pub tier: u8,
    pub decided_by: &'static str,
    pub confidence: f64,
}

/// How `auto` categorises the request — exactly the gateway's decision: structure, then forcing
/// prefixes, then the learned model (run synchronously here), else the rule scorer when no model
/// is given. `route.tier` pins the tier as in the gateway.
pub fn decide_for_inspect(
    _cfg: &Config,
    req: Option<&ChatRequest<'_>>,
    prompt: &str,
    model: Option<&mut crate::classifier::Model>,
) -> InspectDecision {
    let input = match req {
        Some(r) => crate::pipeline::classify_input(r),
        None => crate::classifier::ClassifyInput::from_prompt(prompt),
    };
    let answer = if crate::pipeline::needs_model(&input) {
        model
            .and_then(|m| m.predict_batch(&[input.model_text().as_str()]).ok())
            .and_then(|v| v.into_iter().next())
    } else {
        None
    };
    let d = crate::classifier::decide(&input, answer);
    let tier = req.and_then(|r| r.route.tier).unwrap_or(d.tier);
    InspectDecision {
        category: d.category.as_str().to_string(),
        tier,
        decided_by: d.decided_by.as_str(),
        confidence: (d.confidence as f64 * 1e4).round() / 1e4,
    }
}

/// Latest user message text of a parsed request.
fn latest_user<'a>(msgs: &'a [MessageText<'a>]) -> Option<&'a str> {
    msgs.iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| m.text.as_ref())
}

/// The answer for one input line.
pub fn answer_line(
    cfg: &Config,
    scanner: &Scanner,
    scratch: &mut ScanScratch,
    model: Option<&mut crate::classifier::Model>,
    line: &str,
) -> Value {
    let v: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return json!({"error": format!("not JSON: {e}")}),
    };
    let mut owned;
    let (req, prompt): (Option<ChatRequest<'_>>, Cow<'_, str>) = match v.get("prompt") {
        Some(Value::String(p)) => {
            owned = serde_json::to_vec(
                &json!({"model": "auto", "messages": [{"role": "user", "content": p}]}),
            )
            .unwrap_or_default();
            (
                parse_chat_request(&mut owned).ok(),
                Cow::Borrowed(p.as_str()),
            )
        }
        Some(_) => return json!({"error": "`prompt` must be a string"}),
        None => {
            if v.get("messages").is_none() {
                return json!({"error": "expected {\"prompt\": ...} or a chat request body"});
            }
            owned = line.as_bytes().to_vec();
            match parse_chat_request(&mut owned) {
                Ok(r) => {
                    let p = latest_user(&r.messages).unwrap_or("").to_string();
                    (Some(r), Cow::Owned(p))
                }
                Err(e) => return json!({"error": format!("invalid chat request: {e}")}),
            }
        }
    };
    let decision = decide_for_inspect(cfg, req.as_ref(), &prompt, model);
    let sec = &cfg.security;
    let opts = ScanOptions {
        block_on: if sec.block_on_warning {
            BlockOn::Warning
        } else {
            BlockOn::Critical
        },
        ..ScanOptions::default()
    };
    let mut report = scanner.scan(scratch, &prompt, &opts);
    // A chat body: the other user-controlled messages count for the verdict too.
    if let Some(r) = req.as_ref().filter(|r| r.messages.len() > 1) {
        let others = security::screen(scanner, &r.messages, sec, false);
        for t in others.threats {
            if !report.threats.iter().any(|x| x.rule == t.rule) {
                report.threats.push(t);
            }
        }
        let rank = |s: &str| match s {
            "BLOCKED" => 2,
            "WARNING" => 1,
            _ => 0,
        };
        if rank(others.verdict) > rank(report.verdict.as_str()) {
            report.verdict = if others.verdict == "BLOCKED" {
                crate::scanner::Verdict::Blocked
            } else {
                crate::scanner::Verdict::Warning
            };
        }
    }
    let mut vault = Vault::new();
    let scrubbed = scrub(&prompt, &report.pii, &mut vault);
    let threats: Vec<Value> = report
        .threats
        .iter()
        .map(|t| json!({"category": t.category, "rule": t.rule, "severity": t.severity.as_str()}))
        .collect();
    let pii: Vec<Value> = report
        .pii
        .iter()
        .map(|s| json!({"start": s.start, "end": s.end, "type": s.kind.as_str()}))
        .collect();
    json!({
        "category": decision.category,
        "tier": decision.tier,
        "decided_by": decision.decided_by,
        "confidence": decision.confidence,
        "security": {"verdict": report.verdict.as_str(), "threats": threats},
        "pii": pii,
        "scrubbed": scrubbed,
    })
}

/// One output line: JSON with the line separators Python's `splitlines()` honours escaped.
pub fn to_line(v: &Value) -> String {
    let mut s = v.to_string();
    for (c, esc) in [
        ('\u{2028}', "\\u2028"),
        ('\u{2029}', "\\u2029"),
        ('\u{85}', "\\u0085"),
        ('\u{1c}', "\\u001c"),
        ('\u{1d}', "\\u001d"),
        ('\u{1e}', "\\u001e"),
    ] {
        if s.contains(c) {
            s = s.replace(c, esc);
        }
    }
    s
}

/// Runs the command over stdin/stdout. Exit code: 0, or 1 if the scanner cannot be built or
/// stdout fails.
pub fn run(cfg: &Config) -> i32 {
    let dir = cfg
        .security
        .cache_dir
        .clone()
        .or_else(crate::config::default_cache_dir);
    let scanner = match security::load_scanner_from(cfg.security.patterns_dir.as_deref(), dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tierflow: scanner: {e}");
            return 1;
        }
    };
    let mut scratch = match scanner.new_scratch() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tierflow: scanner: {e}");
            return 1;
        }
    };
    let mut model = if cfg.classifier_enabled() {
        match crate::classifier::Model::embedded() {
            Ok(m) => Some(m),
            Err(e) => {
                eprintln!("tierflow: classifier model failed to load ({e}); deciding by rules");
                None
            }
        }
    } else {
        None
    };
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut input = stdin.lock();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match input.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                eprintln!("tierflow: reading stdin: {e}");
                return 1;
            }
        }
        let line = String::from_utf8_lossy(&buf);
        if line.trim().is_empty() {
            continue;
        }
        let answer = answer_line(
            cfg,
            &scanner,
            &mut scratch,
            model.as_mut(),
            line.trim_end_matches(['\n', '\r']),
        );
        if writeln!(out, "{}", to_line(&answer)).is_err() {
            return 1;
        }
    }
    if out.flush().is_err() {
        return 1;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_keep_order_and_report_errors_per_line() {
        let cfg = Config::embedded(&crate::config::Overrides::default()).unwrap();
        let scanner = security::test_scanner();
        let mut scratch = scanner.new_scratch().unwrap();
        let email = format!("{}@{}.com", "alice", "example");
        let a = answer_line(
            &cfg,
            &scanner,
            &mut scratch,
            None,
            &json!({"prompt": format!("mail {email}")}).to_string(),
        );
        assert_eq!(a["pii"][0]["type"], "EMAIL");
        assert_eq!(a["pii"][0]["start"], 5);
        assert_eq!(a["pii"][0]["end"], 5 + email.len());
        assert!(!a["scrubbed"].as_str().unwrap().contains(&email));
        assert_eq!(a["decided_by"], "rules");
        let b = answer_line(&cfg, &scanner, &mut scratch, None, "{not json");
        assert!(b["error"].is_string());
        let c = answer_line(
            &cfg,
            &scanner,
            &mut scratch,
            None,
            r#"{"model":"auto","messages":[{"role":"user","content":"/code fix it"}]}"#,
        );
        assert_eq!(c["category"], "coding");
        assert_eq!(c["decided_by"], "override");
        assert_eq!(c["security"]["verdict"], "CLEAN");
    }
}
