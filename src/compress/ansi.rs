//! Pass 1: terminal control. Removes ANSI/VT escape sequences (CSI, OSC, DCS/SOS/PM/APC,
//! charset designations, other two-byte escapes) and resolves bare `\r` redraws (progress bars)
//! to the last state of the line; CR-only line ends of old Mac text are left alone.

const ESC: u8 = 0x1b;
/// An unterminated string sequence (OSC, DCS…) longer than this is not one: only ESC goes.
const MAX_STRING_SEQ_BYTES: usize = 4096;

/// Byte length of the escape sequence at `b[0] == ESC`; 1 for a lone or malformed ESC.
fn escape_len(b: &[u8]) -> usize {
    let Some(&kind) = b.get(1) else { return 1 };
    match kind {
        b'[' => {
            // CSI: parameters 0x30–0x3F, intermediates 0x20–0x2F, final 0x40–0x7E.
            let mut i = 2;
            while i < b.len() && (0x30..=0x3f).contains(&b[i]) {
                i += 1;
            }
            while i < b.len() && (0x20..=0x2f).contains(&b[i]) {
                i += 1;
            }
            match b.get(i) {
                Some(f) if (0x40..=0x7e).contains(f) => i + 1,
                _ => 1,
            }
        }
        b']' | b'P' | b'X' | b'^' | b'_' => {
            // String sequences end at ST (ESC \); OSC also at BEL.
            let limit = b.len().min(MAX_STRING_SEQ_BYTES);
            let mut i = 2;
            while i < limit {
                if kind == b']' && b[i] == 0x07 {
                    return i + 1;
                }
                if b[i] == ESC && b.get(i + 1) == Some(&b'\\') {
                    return i + 2;
                }
                i += 1;
            }
            1
        }
        b'(' | b')' | b'*' | b'+' | b'-' | b'.' | b'/' => match b.get(2) {
            Some(c) if c.is_ascii_graphic() => 3,
            _ => 1,
        },
        0x30..=0x7e => 2,
        _ => 1,
    }
}

/// The text without escapes and progress overwrites; `None` when there is nothing to remove.
/// Whether `strip` could change `text`: it holds an escape, or a carriage return that does not
/// end a line (a progress-bar overwrite). Two SIMD searches.
pub(crate) fn may_change(text: &str) -> bool {
    let b = text.as_bytes();
    memchr::memchr(ESC, b).is_some()
        || memchr::memchr_iter(b'\r', b).any(|i| b.get(i + 1) != Some(&b'\n'))
}

pub fn strip(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let has_bare_cr = b
        .iter()
        .enumerate()
        .any(|(i, &c)| c == b'\r' && b.get(i + 1) != Some(&b'\n'));
    let resolved = if has_bare_cr {
        resolve_overwrites(text)
    } else {
        None
    };
    let src: &str = resolved.as_deref().unwrap_or(text);
    let sb = src.as_bytes();
    if !sb.contains(&ESC) {
        return resolved.filter(|r| r.len() < text.len());
    }
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let mut copied = 0;
    while i < sb.len() {
        if sb[i] == ESC {
            out.push_str(&src[copied..i]);
            // Every sequence is ASCII, so i + len stays on a char boundary.
            i += escape_len(&sb[i..]);
            copied = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&src[copied..]);
    (out.len() < text.len()).then_some(out)
}

/// Whether the `\r`-separated segments of one line look like a terminal redrawing it (a
/// progress bar or counter) rather than old Mac line ends: an escape on the line, a `%`, or a
/// first and last segment that start alike.
fn looks_like_redraw(body: &str) -> bool {
    if body.contains('\x1b') || body.contains('%') {
        return true;
    }
    let mut segs = body.split('\r').filter(|s| !s.is_empty());
    match (segs.next(), segs.next_back()) {
        (Some(first), Some(last)) => {
            let common = first
                .bytes()
                .zip(last.bytes())
                .take_while(|(a, b)| a == b)
                .count();
            common >= 4
        }
        _ => true,
    }
}

/// For each line that looks redrawn, keeps what a terminal would show last after bare `\r`
/// rewinds: the last non-empty `\r`-separated segment (progress bars rewrite the whole line).
/// `None` when no line qualifies.
fn resolve_overwrites(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    for line in text.split_inclusive('\n') {
        let (body, end) = match line.strip_suffix("\r\n") {
            Some(b) => (b, "\r\n"),
            None => match line.strip_suffix('\n') {
                Some(b) => (b, "\n"),
                None => (line, ""),
            },
        };
        if body.contains('\r') && looks_like_redraw(body) {
            let last = body.rsplit('\r').find(|s| !s.is_empty()).unwrap_or("");
            out.push_str(last);
            changed = true;
        } else {
            out.push_str(body);
        }
        out.push_str(end);
    }
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: &str) -> String {
        strip(t).unwrap_or_else(|| t.to_string())
    }

    #[test]
    fn removes_common_sequences() {
        assert_eq!(s("\x1b[1;31merror\x1b[0m: boom"), "error: boom");
        assert_eq!(s("\x1b[38;5;208morange\x1b[39m"), "orange");
        assert_eq!(s("\x1b]0;title\x07text"), "text");
        assert_eq!(s("\x1b]8;;https://x.y\x1b\\link\x1b]8;;\x1b\\"), "link");
        assert_eq!(s("\x1b(Bplain\x1b=\x1b>"), "plain");
        assert_eq!(s("a\x1b[2K\x1b[1Gb"), "ab");
        assert_eq!(s("\x1b[?25lhidden cursor\x1b[?25h"), "hidden cursor");
    }

    #[test]
    fn malformed_escapes_drop_only_esc() {
        assert_eq!(s("\x1b"), "");
        assert_eq!(s("x\x1b[12"), "x[12");
        assert_eq!(s("\x1b[é"), "[é");
        assert_eq!(s("\x1b]unterminated"), "]unterminated");
        assert_eq!(s("\x1b(é"), "(é");
    }

    #[test]
    fn progress_overwrites_resolve() {
        assert_eq!(s("10%\r50%\r100%\ndone\n"), "100%\ndone\n");
        assert_eq!(s("a\r\nb\r\n"), "a\r\nb\r\n", "CRLF is not an overwrite");
        assert_eq!(s("x\r\r\n"), "x\r\n");
        assert_eq!(s("\r"), "");
        assert!(strip("no escapes\r\n").is_none());
        assert_eq!(
            s("\r\x1b[2K[##  ] fetch\r\x1b[2K[####] fetch\n"),
            "[####] fetch\n"
        );
        assert_eq!(s("Downloading 1/3\rDownloading 3/3\n"), "Downloading 3/3\n");
        // Classic Mac line ends are text, not a redraw.
        assert!(strip("name,age\rbob,31\ralice,42\r").is_none());
    }

    #[test]
    fn every_split_point_is_safe() {
        let t = "é\x1b[31m日\x1b]0;t\x07🎉\r\n";
        for i in 0..=t.len() {
            if t.is_char_boundary(i) {
                let _ = strip(&t[..i]);
                let _ = strip(&t[i..]);
            }
        }
        let junk: String = (0..5000u32)
            .filter_map(|i| char::from_u32(i % 0x80 + (i % 7) * 0x400))
            .collect();
        let _ = strip(&junk);
    }
}
