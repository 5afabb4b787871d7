//! Pass 5: stack-trace folding. A unit of 1–6 lines that starts with a frame (Java/JS `at …`,
//! Python `File "…"`, Ruby `from …`, gdb/PHP `#N …`) and repeats back to back is kept once and
//! followed by `[… N identical frames]` (one-line unit) or `[… the K lines above repeated N more
//! times]` (a unit of K lines, so the count stays exact); a long plain line repeated back to back
//! in prose or log output becomes one line plus `[… N identical lines]`. Units holding a
//! protected range stay.

use super::{classify_lines, line_body, LineKind};

const MAX_UNIT_LINES: usize = 6;
/// Plain lines shorter than this (`}`, `---`) are never folded.
const MIN_PLAIN_LINE_BYTES: usize = 8;

fn is_frame(body: &str) -> bool {
    let t = body.trim_start();
    if t.starts_with("at ") || t.starts_with("File \"") || t.starts_with("from ") {
        return true;
    }
    // pytest's short form: `path/to/file.py:41: in func`.
    if let Some(p) = t.find(": in ") {
        let head = &t[..p];
        if let Some(colon) = head.rfind(':') {
            let line_no = &head[colon + 1..];
            if !line_no.is_empty()
                && line_no.bytes().all(|b| b.is_ascii_digit())
                && !head[..colon].contains(' ')
            {
                return true;
            }
        }
    }
    if let Some(rest) = t.strip_prefix('#') {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        return digits > 0 && rest[digits..].starts_with(' ');
    }
    false
}

/// What replaces `n` more repeats of a unit of `k` lines.
fn marker(k: usize, n: usize, frame: bool) -> String {
    match (k, frame) {
        (1, true) => format!("[… {n} identical frames]"),
        (1, false) => format!("[… {n} identical lines]"),
        _ => format!("[… the {k} lines above repeated {n} more times]"),
    }
}

fn indent_len(body: &str) -> usize {
    body.len() - body.trim_start().len()
}

/// Whether generic line folding applies to a fenced block of this language (log-like output).
fn is_output_lang(lang: &str) -> bool {
    matches!(
        lang.to_ascii_lowercase().as_str(),
        "" | "text" | "txt" | "log" | "console" | "output" | "shell-session" | "terminal"
    )
}

/// The folded text; `None` when nothing repeats enough.
pub fn fold(text: &str, min_repeats: usize, mark: Option<char>) -> Option<String> {
    let min_repeats = min_repeats.max(2);
    let lines = classify_lines(text);
    let bodies: Vec<&str> = lines.iter().map(|l| line_body(l.0)).collect();
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    let mut i = 0;
    while i < lines.len() {
        let (line, kind, lang) = lines[i];
        let mut best: Option<(usize, usize, bool)> = None; // (unit lines, repeats, is_frame)
        if kind != LineKind::Fence && !mark.is_some_and(|m| line.contains(m)) {
            let frame = is_frame(bodies[i]);
            let plain_ok = !frame
                && (kind == LineKind::Prose || is_output_lang(lang))
                && bodies[i].trim().len() >= MIN_PLAIN_LINE_BYTES;
            let max_k = if frame {
                MAX_UNIT_LINES
            } else if plain_ok {
                1
            } else {
                0
            };
            let mut best_saved = 0usize;
            for k in 1..=max_k {
                if i + 2 * k > lines.len() {
                    break;
                }
                let unit = &bodies[i..i + k];
                if lines[i..i + k].iter().any(|l| l.1 != kind)
                    || unit.iter().any(|b| mark.is_some_and(|m| b.contains(m)))
                {
                    break;
                }
                let mut reps = 1;
                while i + (reps + 1) * k <= lines.len()
                    && bodies[i + reps * k..i + (reps + 1) * k] == *unit
                {
                    reps += 1;
                }
                let unit_bytes: usize = unit.iter().map(|b| b.len() + 1).sum();
                let saved = (reps - 1) * unit_bytes;
                let marker_bytes = marker(k, reps - 1, frame).len() + indent_len(bodies[i]) + 1;
                if reps >= min_repeats && saved > best_saved && saved > marker_bytes {
                    best_saved = saved;
                    best = Some((k, reps, frame));
                }
            }
        }
        match best {
            Some((k, reps, frame)) => {
                for l in &lines[i..i + k] {
                    out.push_str(l.0);
                }
                if !out.ends_with('\n') {
                    out.push('\n');
                }
                let indent = &bodies[i][..bodies[i].len() - bodies[i].trim_start().len()];
                let last = &lines[i + reps * k - 1].0;
                out.push_str(indent);
                out.push_str(&marker(k, reps - 1, frame));
                if last.ends_with('\n') {
                    out.push('\n');
                }
                changed = true;
                i += reps * k;
            }
            None => {
                out.push_str(line);
                i += 1;
            }
        }
    }
    (changed && out.len() < text.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(t: &str) -> String {
        fold(t, 3, None).unwrap_or_else(|| t.to_string())
    }

    #[test]
    fn java_recursion() {
        let t = format!(
            "java.lang.StackOverflowError\n{}\tat com.acme.Main.main(Main.java:3)\n",
            "\tat com.acme.Tree.walk(Tree.java:42)\n\tat com.acme.Tree.visit(Tree.java:17)\n"
                .repeat(50)
        );
        assert_eq!(
            f(&t),
            "java.lang.StackOverflowError\n\tat com.acme.Tree.walk(Tree.java:42)\n\tat com.acme.Tree.visit(Tree.java:17)\n\t[… the 2 lines above repeated 49 more times]\n\tat com.acme.Main.main(Main.java:3)\n"
        );
    }

    #[test]
    fn python_two_line_frames() {
        let unit = "  File \"/app/t.py\", line 4, in fact\n    return n * fact(n - 1)\n";
        let t = format!("Traceback (most recent call last):\n{}RecursionError: maximum recursion depth exceeded\n", unit.repeat(4));
        assert_eq!(
            f(&t),
            format!("Traceback (most recent call last):\n{unit}  [… the 2 lines above repeated 3 more times]\nRecursionError: maximum recursion depth exceeded\n")
        );
    }

    #[test]
    fn pytest_short_frames() {
        let unit = "ledger/tree.py:41: in total\n    return sum(total(c) for c in node.children)\n";
        let t = unit.repeat(5);
        assert_eq!(
            f(&t),
            format!("{unit}[… the 2 lines above repeated 4 more times]\n")
        );
        assert!(is_frame("src/app.py:7: in <module>"));
        assert!(!is_frame("note: 12: in the morning"));
    }

    #[test]
    fn plain_lines_fold_but_code_does_not() {
        let t = "warning: unused variable `x`\n".repeat(5);
        assert_eq!(
            f(&t),
            "warning: unused variable `x`\n[… 4 identical lines]\n"
        );
        let code = "```rust\n        x += 1;\n        x += 1;\n        x += 1;\n```\n";
        assert!(fold(code, 3, None).is_none());
        let short = "}\n}\n}\n}\n";
        assert!(fold(short, 3, None).is_none());
        assert!(
            fold("at x\nat x\n", 3, None).is_none(),
            "below the repeat threshold"
        );
    }

    #[test]
    fn protected_units_stay() {
        let t = "  at f(\u{e000}0\u{e000})\n".to_string() + &"  at f(x.js:1)\n".repeat(3);
        let out = fold(&t, 3, Some('\u{e000}')).unwrap_or_default();
        assert!(out.starts_with("  at f(\u{e000}0\u{e000})\n"));
        assert!(out.contains("[… 2 identical frames]"));
    }

    #[test]
    fn no_trailing_newline_and_edges() {
        assert_eq!(
            f("at a.b.C.d(C.java:1)\nat a.b.C.d(C.java:1)\nat a.b.C.d(C.java:1)"),
            "at a.b.C.d(C.java:1)\n[… 2 identical frames]"
        );
        assert!(
            fold("at a\nat a\nat a\n", 3, None).is_none(),
            "the marker would be longer"
        );
        for t in [
            "",
            "\n",
            "#1 x\n#1 x\n#1 x",
            "é\né\né\n",
            "#\n#\n#\n",
            "at 日本\nat 日本\nat 日本\n",
        ] {
            for i in 0..=t.len() {
                if t.is_char_boundary(i) {
                    let _ = fold(&t[..i], 2, None);
                }
            }
        }
    }
}
