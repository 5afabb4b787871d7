//! Pass 3: JSON minification. A whole message, a fenced block (no language or `json`) or a
//! multi-line value starting a line in prose that parses as JSON loses its insignificant
//! whitespace; string contents, key order and number spellings stay byte-identical.

use super::{classify_lines, LineKind};

/// An embedded value is looked for at most this far; beyond it the text is left alone.
const MAX_SCAN_BYTES: usize = 4 << 20;

/// Whether `s` is exactly one JSON value (surrounding whitespace allowed). serde_json's own
/// recursion limit turns deep nesting into `false`, not a stack overflow.
pub fn is_json(s: &str) -> bool {
    serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok()
}

/// `s` (valid JSON) without whitespace outside strings.
pub fn minify(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b' ' | b'\t' | b'\n' | b'\r' => {
                out.push_str(&s[copied..i]);
                i += 1;
                copied = i;
            }
            _ => i += 1,
        }
    }
    out.push_str(&s[copied.min(s.len())..]);
    out
}

/// End (exclusive) of the bracketed value starting at `b[0]` (`{` or `[`), string-aware; `None`
/// when unbalanced within the scan limit.
fn value_end(b: &[u8]) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = 0;
    let limit = b.len().min(MAX_SCAN_BYTES);
    while i < limit {
        match b[i] {
            b'"' => {
                i += 1;
                while i < limit && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Minifies the JSON found in `text`; `None` when nothing changes.
/// Whether `minify_embedded` could change `text`: only JSON that starts the text or a line, or
/// sits in a fence, is minified, so some line must start (after blanks) with `{`, `[` or a fence
/// character. One SIMD search per line break.
pub(crate) fn may_change(text: &str) -> bool {
    let b = text.as_bytes();
    let opens = |start: usize| {
        let rest = &b[start..];
        let lead = rest
            .iter()
            .take_while(|&&c| c == b' ' || c == b'\t')
            .count();
        matches!(rest.get(lead), Some(b'{' | b'[' | b'`' | b'~'))
    };
    text.trim_start().starts_with(['{', '['])
        || opens(0)
        || memchr::memchr_iter(b'\n', b).any(|i| opens(i + 1))
}

pub fn minify_embedded(text: &str) -> Option<String> {
    if !may_change(text) {
        return None;
    }
    minify_embedded_unchecked(text)
}

pub(crate) fn minify_embedded_unchecked(text: &str) -> Option<String> {
    let trimmed = text.trim();
    if trimmed.starts_with(['{', '[']) && trimmed.contains('\n') && is_json(trimmed) {
        let m = minify(trimmed);
        return (m.len() < text.len()).then_some(m);
    }
    let lines = classify_lines(text);
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut offset = 0; // byte offset of lines[i]
    let mut gave_up_scanning = false;
    // Candidates inside a rejected one are not tried: keeps nested garbage linear.
    let mut skip_until = 0usize;
    while i < lines.len() {
        let (line, kind, lang) = lines[i];
        // A fenced block whose whole body is JSON.
        if kind == LineKind::Fence && (lang.is_empty() || lang.eq_ignore_ascii_case("json")) {
            if let Some(close) = (i + 1..lines.len()).find(|&j| lines[j].1 == LineKind::Fence) {
                let body_start = offset + line.len();
                let body_len: usize = lines[i + 1..close].iter().map(|l| l.0.len()).sum();
                let body = &text[body_start..body_start + body_len];
                if body.contains('\n')
                    && body.trim().len() > 1
                    && body.trim().starts_with(['{', '['])
                    && is_json(body)
                {
                    let m = minify(body.trim());
                    if m.len() + 1 < body.len() {
                        out.push_str(line);
                        out.push_str(&m);
                        out.push('\n');
                        out.push_str(lines[close].0);
                        offset = body_start + body_len + lines[close].0.len();
                        i = close + 1;
                        continue;
                    }
                }
            }
        }
        // A value starting a prose line and spanning several lines.
        if kind == LineKind::Prose && !gave_up_scanning {
            let lead = line.len() - line.trim_start_matches([' ', '\t']).len();
            let start = offset + lead;
            if start >= skip_until && text[start..].starts_with(['{', '[']) {
                match value_end(&text.as_bytes()[start..]) {
                    Some(len) => {
                        let cand = &text[start..start + len];
                        let rest_of_line = text[start + len..].split('\n').next().unwrap_or("");
                        let end_line = start + len + rest_of_line.len();
                        // Lines the value covers: i..j; it must not reach into fenced code.
                        let mut j = i;
                        let mut at = offset;
                        let mut crosses_fence = false;
                        while j < lines.len() && at <= end_line {
                            crosses_fence |= lines[j].1 != LineKind::Prose;
                            at += lines[j].0.len();
                            j += 1;
                            if at > end_line {
                                break;
                            }
                        }
                        if cand.contains('\n')
                            && rest_of_line.trim().is_empty()
                            && !crosses_fence
                            && is_json(cand)
                        {
                            out.push_str(&line[..lead]);
                            out.push_str(&minify(cand));
                            if text.as_bytes().get(end_line) == Some(&b'\n') {
                                out.push('\n');
                            }
                            offset = at;
                            i = j;
                            continue;
                        }
                        skip_until = start + len;
                    }
                    // Unbalanced to the end: any later start lies inside the same unbalanced run.
                    None => gave_up_scanning = true,
                }
            }
        }
        out.push_str(line);
        offset += line.len();
        i += 1;
    }
    (out.len() < text.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(t: &str) -> String {
        minify_embedded(t).unwrap_or_else(|| t.to_string())
    }

    #[test]
    fn whole_message() {
        assert_eq!(
            m("{\n  \"a\": [1, 2.50, 1e3],\n  \"b\": \"x  y\\\" z\"\n}\n"),
            "{\"a\":[1,2.50,1e3],\"b\":\"x  y\\\" z\"}"
        );
        assert_eq!(m("[\n 1,\n 2\n]"), "[1,2]");
        assert_eq!(m("{\"already\":1}"), "{\"already\":1}");
    }

    #[test]
    fn fenced_and_embedded() {
        let t = "Response:\n```json\n{\n  \"ok\": true,\n  \"items\": [\n    1\n  ]\n}\n```\nend\n";
        assert_eq!(
            m(t),
            "Response:\n```json\n{\"ok\":true,\"items\":[1]}\n```\nend\n"
        );
        let t = "$ curl -s api/x\n{\n  \"id\": 7,\n  \"tags\": [\"a\", \"b\"]\n}\n$ echo done\n";
        assert_eq!(
            m(t),
            "$ curl -s api/x\n{\"id\":7,\"tags\":[\"a\",\"b\"]}\n$ echo done\n"
        );
        // Python code block is not touched even if JSON-like.
        let t = "```python\n{\n  \"a\": 1\n}\n```\n";
        assert!(minify_embedded(t).is_none());
        // Not JSON: left alone.
        let t = "[INFO] start\n{\n  not: json\n}\n";
        assert!(minify_embedded(t).is_none());
        // One-line values are not worth it.
        assert!(minify_embedded("x\n{\"a\": 1}\n").is_none());
    }

    #[test]
    fn embedded_value_must_end_its_line_and_not_cross_a_fence() {
        assert!(minify_embedded("{\n\"a\": 1\n} trailing\n").is_none());
        assert!(minify_embedded("[\n```\n]\n```\n").is_none());
    }

    #[test]
    fn edge_inputs() {
        for t in [
            "",
            "{",
            "[",
            "}",
            "{\"a\":\"\\",
            "\"",
            "[[[[",
            "{\n",
            "é{\n}",
            "{\n\"é\": \"日🎉\"\n}",
        ] {
            let _ = minify_embedded(t);
            for i in 0..=t.len() {
                if t.is_char_boundary(i) {
                    let _ = minify_embedded(&t[..i]);
                }
            }
        }
        assert_eq!(m("{\n\"é\": \"日 🎉\"\n}"), "{\"é\":\"日 🎉\"}");
        let deep = format!("{}\n{}", "[".repeat(100_000), "]".repeat(100_000));
        // Valid, only deep: validation and minification are iterative, no recursion limit to hit.
        assert_eq!(m(&deep).len(), 200_000);
        let many = "{\n".repeat(100_000);
        assert!(minify_embedded(&many).is_none());
    }
}
