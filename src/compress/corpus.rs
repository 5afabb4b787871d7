//! Properties CtxPack must keep on the agent-traffic corpus in `tests/fixtures/ctxpack/` (real
//! shapes: test runs, stack overflows, npm/cargo logs, API responses, a file pasted twice):
//! every pass saves something, protected ranges survive, JSON stays the same value, a second run
//! changes nothing. The savings table itself is printed by `cargo bench --bench compress`.

use std::ops::Range;
use std::path::PathBuf;

use super::{compress, CompressConfig, Pass, Savings};

fn corpus() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ctxpack");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            std::fs::read_to_string(e.path()).ok().map(|t| (name, t))
        })
        .collect();
    files.sort();
    assert!(files.len() >= 10, "corpus missing: {}", files.len());
    files
}

/// Ranges standing in for PII placeholders: 12 bytes every 701 bytes, on char boundaries.
fn fake_placeholders(text: &str) -> Vec<Range<usize>> {
    let mut v = Vec::new();
    let mut at = 350;
    while at + 12 < text.len() {
        let mut s = at;
        while !text.is_char_boundary(s) {
            s += 1;
        }
        let mut e = s + 12;
        while e < text.len() && !text.is_char_boundary(e) {
            e += 1;
        }
        if e <= text.len() {
            v.push(s..e);
        }
        at += 701;
    }
    v
}

fn total(cfg: &CompressConfig) -> Savings {
    let mut t = Savings::default();
    for (_, text) in corpus() {
        let (out, s) = compress(&text, cfg, &[]);
        assert_eq!(s.bytes_after, out.len());
        assert_eq!(s.bytes_before, text.len());
        t.bytes_before += s.bytes_before;
        t.bytes_after += s.bytes_after;
        for p in Pass::ALL {
            t.per_pass.add(p, s.per_pass.get(p));
        }
    }
    t
}

#[test]
fn every_pass_saves_something_on_the_corpus() {
    let t = total(&CompressConfig::default());
    assert!(t.bytes_after < t.bytes_before);
    for p in [
        Pass::Ansi,
        Pass::Whitespace,
        Pass::Json,
        Pass::StackTraces,
        Pass::Dedup,
    ] {
        assert!(t.per_pass.get(p) > 0, "{} saved nothing", p.as_str());
    }
    assert_eq!(t.per_pass.comments, 0, "comments is off by default");
    let with_comments = total(&CompressConfig {
        comments: true,
        ..CompressConfig::default()
    });
    assert!(with_comments.per_pass.comments > 0);
    assert_eq!(
        t.bytes_before - t.bytes_after,
        Pass::ALL.iter().map(|p| t.per_pass.get(*p)).sum::<usize>()
    );
}

#[test]
fn corpus_protected_ranges_survive_in_order() {
    let cfg = CompressConfig {
        comments: true,
        ..CompressConfig::default()
    };
    for (name, text) in corpus() {
        let ranges = fake_placeholders(&text);
        let (out, _) = compress(&text, &cfg, &ranges);
        let mut at = 0;
        for r in &ranges {
            let needle = &text[r.clone()];
            match out[at..].find(needle) {
                Some(p) => at += p + needle.len(),
                None => panic!("{name}: protected {needle:?} lost or out of order"),
            }
        }
    }
}

#[test]
fn corpus_meaning_checks() {
    let cfg = CompressConfig::default();
    let files = corpus();
    let get = |n: &str| {
        files
            .iter()
            .find(|f| f.0 == n)
            .map(|f| f.1.as_str())
            .unwrap_or_else(|| panic!("no fixture {n}"))
    };
    for (name, text) in &files {
        let (out, _) = compress(text, &cfg, &[]);
        assert!(!out.contains('\x1b'), "{name}: escape left");
        let (again, s2) = compress(&out, &cfg, &[]);
        assert_eq!(again, out, "{name}: second run changed the text ({s2:?})");
    }
    // A JSON tool result stays the same JSON value.
    let tool = get("tool_result.json");
    let (out, _) = compress(tool, &cfg, &[]);
    let a: serde_json::Value = serde_json::from_str(tool).unwrap();
    let b: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(a, b);
    // Embedded API responses: each minified line is the same value as the pretty original.
    let api = get("api_responses.txt");
    let (out, _) = compress(api, &cfg, &[]);
    let values: Vec<serde_json::Value> = out
        .lines()
        .filter(|l| l.starts_with(['[', '{']))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(values.len(), 2, "{out}");
    assert_eq!(values[0].as_array().map(Vec::len), Some(6));
    // The second paste of the file is a reference, the first stays whole.
    let twice = get("file_pasted_twice.md");
    let (out, _) = compress(twice, &cfg, &[]);
    assert_eq!(out.matches("def parse_statement").count(), 1, "{out}");
    assert!(
        out.contains("[identical to the block above: import csv…]"),
        "{out}"
    );
    // Frames fold; the distinct frames around them stay.
    let java = get("java_stackoverflow.md");
    let (out, _) = compress(java, &cfg, &[]);
    assert!(
        out.contains("[… the 3 lines above repeated 39 more times]"),
        "{out}"
    );
    assert!(out.contains("ArrayListSpliterator.forEachRemaining"));
    // Comments inside code stay unless the pass is on.
    let review = get("code_review.md");
    let (out, _) = compress(review, &cfg, &[]);
    assert!(out.contains("// Retry helper used by the webhook sender."));
}
