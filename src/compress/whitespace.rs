//! Pass 2: redundant whitespace outside fenced code — trailing blanks, runs of blank lines
//! beyond a limit, CRLF line ends. Fenced code (where indentation and trailing blanks may
//! matter) is copied byte for byte; leading indentation is kept everywhere.

use super::{classify_lines, LineKind};

/// Cheap over-approximation of "collapse would change something" (the common clean prompt
/// skips the copy): a blank or CR before a newline or at the end, or a run of blank lines.
/// Whether `collapse` could shorten `text`: a blank or CR before a line break or at the end, or
/// more than `max_blank_lines` blank lines in a row. One SIMD search per line break; a line is
/// looked at only up to its first non-blank byte.
pub(crate) fn may_change(text: &str, max_blank_lines: usize) -> bool {
    let b = text.as_bytes();
    if matches!(b.last(), Some(b' ' | b'\t' | b'\r')) {
        return true;
    }
    let mut blank_run = 0usize;
    let mut line_start = 0usize;
    for nl in memchr::memchr_iter(b'\n', b) {
        if nl > 0 && matches!(b[nl - 1], b' ' | b'\t' | b'\r') {
            return true;
        }
        let blank = b[line_start..nl].iter().all(|&c| c == b' ' || c == b'\t');
        blank_run = if blank { blank_run + 1 } else { 0 };
        if blank_run > max_blank_lines {
            return true;
        }
        line_start = nl + 1;
    }
    false
}

pub fn collapse(text: &str, max_blank_lines: usize) -> Option<String> {
    if !may_change(text, max_blank_lines) {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut blanks = 0usize;
    for (line, kind, _) in classify_lines(text) {
        if kind == LineKind::Code {
            blanks = 0;
            out.push_str(line);
            continue;
        }
        let has_nl = line.ends_with('\n');
        let body = line
            .trim_end_matches(['\n', '\r'])
            .trim_end_matches([' ', '\t', '\r']);
        if body.is_empty() {
            blanks += 1;
            if blanks > max_blank_lines {
                continue;
            }
        } else {
            blanks = 0;
        }
        out.push_str(body);
        if has_nl {
            out.push('\n');
        }
    }
    (out.len() < text.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(t: &str, n: usize) -> String {
        collapse(t, n).unwrap_or_else(|| t.to_string())
    }

    #[test]
    fn trims_and_collapses_outside_fences() {
        assert_eq!(c("a  \t\nb\n\n\n\n\nc", 2), "a\nb\n\n\nc");
        assert_eq!(c("a\n\n\n\nb", 1), "a\n\nb");
        assert_eq!(c("a\r\nb  \r\n", 2), "a\nb\n");
        assert_eq!(c("    indented  \n", 2), "    indented\n");
        assert!(collapse("clean\ntext\n", 2).is_none());
    }

    #[test]
    fn fenced_code_is_untouched() {
        let t = "x  \n```py\ndef f():  \n\n\n\n    return 1\t\n```\ny  \n";
        assert_eq!(
            c(t, 1),
            "x\n```py\ndef f():  \n\n\n\n    return 1\t\n```\ny\n"
        );
        // Unclosed fence: everything after it is code.
        let t = "~~~\n  a  \n\n\n\n";
        assert!(collapse(t, 0).is_none());
    }

    #[test]
    fn edge_inputs() {
        assert!(collapse("", 2).is_none());
        assert_eq!(c("\n\n\n\n", 0), "");
        assert_eq!(c(" ", 2), "");
        let t = "é 日本 🎉  \n".repeat(10_000);
        assert_eq!(c(&t, 2).len(), t.len() - 20_000);
        let head = &t[..t.char_indices().nth(40).map(|(i, _)| i).unwrap_or(0)];
        for i in 0..=head.len() {
            if head.is_char_boundary(i) {
                let _ = collapse(&head[..i], 1);
                let _ = collapse(&head[i..], 1);
            }
        }
    }
}
