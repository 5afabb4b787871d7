//! CtxPack: context compression that keeps the meaning, one switchable pass per file, run in
//! the order below over one message text. Protected byte ranges (PII placeholders) are swapped
//! for sentinels before the passes and restored after, so they come back byte-identical; a pass
//! that would lose a sentinel is discarded. The pipeline decides which messages to compress.
//!
//! 1. `ansi`        — terminal escapes and carriage-return progress overwrites
//! 2. `whitespace`  — trailing blanks, runs of blank lines, CRLF (outside code fences only)
//! 3. `json`        — minify a message, fenced block or embedded multi-line value that is JSON
//! 4. `comments`    — full-line comments inside fenced code (off by default)
//! 5. `stacktrace`  — repeated frames (and repeated log lines) folded to one plus a count
//! 6. `dedup`       — a block seen earlier in the text replaced by a short reference

pub mod ansi;
pub mod comments;
#[cfg(test)]
mod corpus;
pub mod dedup;
pub mod json;
pub mod settings;
pub mod stacktrace;
pub mod whitespace;

use std::borrow::Cow;
use std::ops::Range;

pub use dedup::DedupHistory;

/// Which passes run, and their knobs. Defaults in `Default`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressConfig {
    /// Remove ANSI escapes and `\r` progress overwrites (default on).
    pub ansi: bool,
    /// Trim trailing blanks, collapse blank-line runs, CRLF → LF, outside code fences (default on).
    pub whitespace: bool,
    /// Blank lines kept in a row by `whitespace` (default 2).
    pub max_blank_lines: usize,
    /// Minify JSON documents, fenced JSON blocks and embedded multi-line JSON (default on).
    pub json: bool,
    /// Drop full-line comments inside fenced code of known languages (default off: comments can
    /// carry intent).
    pub comments: bool,
    /// Fold repeated stack frames and repeated log lines (default on).
    pub stack_traces: bool,
    /// A frame unit repeated at least this many times in a row is folded (default 3).
    pub fold_min_repeats: usize,
    /// Replace blocks identical to an earlier one by a reference (default on).
    pub dedup: bool,
    /// Smallest block `dedup` replaces, in bytes (default 120).
    pub dedup_min_block_bytes: usize,
}

impl Default for CompressConfig {
    fn default() -> Self {
        CompressConfig {
            ansi: true,
            whitespace: true,
            max_blank_lines: 2,
            json: true,
            comments: false,
            stack_traces: true,
            fold_min_repeats: 3,
            dedup: true,
            dedup_min_block_bytes: 120,
        }
    }
}

impl CompressConfig {
    /// Every pass off.
    pub fn none() -> CompressConfig {
        CompressConfig {
            ansi: false,
            whitespace: false,
            json: false,
            comments: false,
            stack_traces: false,
            dedup: false,
            ..Default::default()
        }
    }

    /// Only `pass` on (the knobs keep their defaults).
    pub fn only(pass: Pass) -> CompressConfig {
        let mut c = CompressConfig::none();
        c.set(pass, true);
        c
    }

    pub fn enabled(&self, pass: Pass) -> bool {
        match pass {
            Pass::Ansi => self.ansi,
            Pass::Whitespace => self.whitespace,
            Pass::Json => self.json,
            Pass::Comments => self.comments,
            Pass::StackTraces => self.stack_traces,
            Pass::Dedup => self.dedup,
        }
    }

    pub fn set(&mut self, pass: Pass, on: bool) {
        match pass {
            Pass::Ansi => self.ansi = on,
            Pass::Whitespace => self.whitespace = on,
            Pass::Json => self.json = on,
            Pass::Comments => self.comments = on,
            Pass::StackTraces => self.stack_traces = on,
            Pass::Dedup => self.dedup = on,
        }
    }
}

/// The passes, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pass {
    Ansi,
    Whitespace,
    Json,
    Comments,
    StackTraces,
    Dedup,
}

impl Pass {
    pub const ALL: [Pass; 6] = [
        Pass::Ansi,
        Pass::Whitespace,
        Pass::Json,
        Pass::Comments,
        Pass::StackTraces,
        Pass::Dedup,
    ];

    /// The pass named `name` (as `as_str` spells it).
    pub fn from_name(name: &str) -> Option<Pass> {
        Pass::ALL.into_iter().find(|p| p.as_str() == name)
    }

    /// Position in `ALL` (for per-pass counters).
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Pass::Ansi => "ansi",
            Pass::Whitespace => "whitespace",
            Pass::Json => "json",
            Pass::Comments => "comments",
            Pass::StackTraces => "stack_traces",
            Pass::Dedup => "dedup",
        }
    }
}

/// Bytes each pass removed (0 for a pass that was off, changed nothing, or was discarded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PassSavings {
    pub ansi: usize,
    pub whitespace: usize,
    pub json: usize,
    pub comments: usize,
    pub stack_traces: usize,
    pub dedup: usize,
}

impl PassSavings {
    pub fn get(&self, pass: Pass) -> usize {
        match pass {
            Pass::Ansi => self.ansi,
            Pass::Whitespace => self.whitespace,
            Pass::Json => self.json,
            Pass::Comments => self.comments,
            Pass::StackTraces => self.stack_traces,
            Pass::Dedup => self.dedup,
        }
    }

    pub fn add(&mut self, pass: Pass, n: usize) {
        let slot = match pass {
            Pass::Ansi => &mut self.ansi,
            Pass::Whitespace => &mut self.whitespace,
            Pass::Json => &mut self.json,
            Pass::Comments => &mut self.comments,
            Pass::StackTraces => &mut self.stack_traces,
            Pass::Dedup => &mut self.dedup,
        };
        *slot += n;
    }
}

/// What a call saved. Tokens are estimated as bytes / 4 (the usual figure for English and code
/// with GPT-style BPE; no tokenizer on this path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Savings {
    pub bytes_before: usize,
    pub bytes_after: usize,
    pub est_tokens_saved: usize,
    pub per_pass: PassSavings,
}

/// Estimated tokens of `bytes` bytes of text.
pub fn estimate_tokens(bytes: usize) -> usize {
    bytes.div_ceil(4)
}

/// Compresses `text` with the passes `cfg` enables. Every byte range in `protect` comes back
/// byte-identical (ranges are clipped to the text, widened to char boundaries and merged; they
/// may be unsorted). Returns the text borrowed when nothing changed. Never panics on any input.
pub fn compress<'a>(
    text: &'a str,
    cfg: &CompressConfig,
    protect: &[Range<usize>],
) -> (Cow<'a, str>, Savings) {
    compress_inner(text, cfg, protect, None)
}

/// `compress` for one message of a conversation, in order: `dedup` also replaces blocks that
/// appeared in the earlier messages fed through the same `history` (the first occurrence stays
/// where it was, so a prefix of the conversation compresses the same way on every turn).
pub fn compress_with_history<'a>(
    text: &'a str,
    cfg: &CompressConfig,
    protect: &[Range<usize>],
    history: &mut DedupHistory,
) -> (Cow<'a, str>, Savings) {
    compress_inner(text, cfg, protect, Some(history))
}

fn compress_inner<'a>(
    text: &'a str,
    cfg: &CompressConfig,
    protect: &[Range<usize>],
    mut history: Option<&mut DedupHistory>,
) -> (Cow<'a, str>, Savings) {
    let unchanged = |text: &'a str| {
        (
            Cow::Borrowed(text),
            Savings {
                bytes_before: text.len(),
                bytes_after: text.len(),
                ..Savings::default()
            },
        )
    };
    if !may_change(text, cfg) {
        return unchanged(text);
    }
    let ranges = normalize_ranges(text, protect);
    let shield = match Shield::new(text, &ranges) {
        Some(s) => s,
        None => return unchanged(text),
    };
    let mut cur: Cow<'_, str> = match &shield {
        Shield::Off => Cow::Borrowed(text),
        Shield::On { shielded, .. } => Cow::Owned(shielded.clone()),
    };
    let mark = shield.mark();
    let marks = shield.count_marks(&cur);
    let mut per_pass = PassSavings::default();
    for pass in Pass::ALL {
        if !cfg.enabled(pass) {
            continue;
        }
        let out = match pass {
            Pass::Ansi => ansi::strip(&cur),
            Pass::Whitespace => whitespace::collapse(&cur, cfg.max_blank_lines),
            Pass::Json => json::minify_embedded(&cur),
            Pass::Comments => comments::strip(&cur, mark),
            Pass::StackTraces => stacktrace::fold(&cur, cfg.fold_min_repeats, mark),
            Pass::Dedup => dedup::dedup_with_history(
                &cur,
                cfg.dedup_min_block_bytes,
                mark,
                history.as_deref_mut(),
            ),
        };
        if let Some(out) = out {
            // A pass must never lose or duplicate a protected range; if it did, skip its output.
            if out.len() < cur.len() && shield.count_marks(&out) == marks {
                per_pass.add(pass, cur.len() - out.len());
                cur = Cow::Owned(out);
            }
        }
    }
    let result: Cow<'a, str> = match (&shield, cur) {
        (_, Cow::Borrowed(_)) => Cow::Borrowed(text),
        (Shield::Off, Cow::Owned(s)) => Cow::Owned(s),
        (Shield::On { shielded, .. }, Cow::Owned(s)) if s == *shielded => Cow::Borrowed(text),
        (on @ Shield::On { .. }, Cow::Owned(s)) => match on.restore(&s, text) {
            Some(r) => Cow::Owned(r),
            None => return unchanged(text),
        },
    };
    let after = result.len();
    if after >= text.len() {
        return unchanged(text);
    }
    let savings = Savings {
        bytes_before: text.len(),
        bytes_after: after,
        est_tokens_saved: estimate_tokens(text.len()) - estimate_tokens(after),
        per_pass,
    };
    (result, savings)
}

/// Clipped, char-aligned, sorted, merged, non-empty ranges.
/// Whether any enabled pass could change `text` (a cheap superset check: most prompts have
/// nothing for the default passes, and skip the shielding and the passes altogether). `dedup`
/// always runs: it also records blocks for later messages.
pub fn may_change(text: &str, cfg: &CompressConfig) -> bool {
    Pass::ALL
        .into_iter()
        .filter(|&p| cfg.enabled(p))
        .any(|p| match p {
            Pass::Ansi => ansi::may_change(text),
            Pass::Whitespace => whitespace::may_change(text, cfg.max_blank_lines),
            Pass::Json => json::may_change(text),
            Pass::Comments | Pass::StackTraces | Pass::Dedup => true,
        })
}

fn normalize_ranges(text: &str, protect: &[Range<usize>]) -> Vec<Range<usize>> {
    let mut v: Vec<Range<usize>> = protect
        .iter()
        .filter_map(|r| {
            let mut s = r.start.min(text.len());
            let mut e = r.end.min(text.len());
            while s > 0 && !text.is_char_boundary(s) {
                s -= 1;
            }
            while e < text.len() && !text.is_char_boundary(e) {
                e += 1;
            }
            (s < e).then_some(s..e)
        })
        .collect();
    v.sort_by_key(|r| r.start);
    let mut out: Vec<Range<usize>> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// Protected ranges swapped for `MARK index MARK`, with MARK a private-use char absent from the
/// text (so passes see an opaque, whitespace-free, ASCII-digit token).
enum Shield {
    Off,
    On {
        mark: char,
        shielded: String,
        originals: Vec<Range<usize>>,
    },
}

impl Shield {
    /// `None` when no private-use char is free (a text holding all 6400 of them).
    fn new(text: &str, ranges: &[Range<usize>]) -> Option<Shield> {
        if ranges.is_empty() {
            return Some(Shield::Off);
        }
        let mut used = vec![false; 0x1900];
        for c in text.chars() {
            let u = c as u32;
            if (0xE000..0xF900).contains(&u) {
                used[(u - 0xE000) as usize] = true;
            }
        }
        let free = used.iter().position(|u| !u)?;
        let mark = char::from_u32(0xE000 + free as u32)?;
        let mut shielded = String::with_capacity(text.len());
        let mut at = 0;
        for (i, r) in ranges.iter().enumerate() {
            shielded.push_str(&text[at..r.start]);
            shielded.push(mark);
            shielded.push_str(&i.to_string());
            shielded.push(mark);
            at = r.end;
        }
        shielded.push_str(&text[at..]);
        Some(Shield::On {
            mark,
            shielded,
            originals: ranges.to_vec(),
        })
    }

    fn mark(&self) -> Option<char> {
        match self {
            Shield::Off => None,
            Shield::On { mark, .. } => Some(*mark),
        }
    }

    fn count_marks(&self, s: &str) -> usize {
        match self {
            Shield::Off => 0,
            Shield::On { mark, .. } => s.matches(*mark).count(),
        }
    }

    /// The text with every sentinel replaced by its original bytes; `None` unless each index
    /// appears exactly once, in order.
    fn restore(&self, s: &str, original: &str) -> Option<String> {
        let Shield::On {
            mark, originals, ..
        } = self
        else {
            return Some(s.to_string());
        };
        let mut out =
            String::with_capacity(s.len() + originals.iter().map(|r| r.len()).sum::<usize>());
        let mut rest = s;
        let mut next = 0usize;
        while let Some(p) = rest.find(*mark) {
            out.push_str(&rest[..p]);
            let after = &rest[p + mark.len_utf8()..];
            let end = after.find(*mark)?;
            let idx: usize = after[..end].parse().ok()?;
            if idx != next {
                return None;
            }
            out.push_str(original.get(originals.get(idx)?.clone())?);
            next += 1;
            rest = &after[end + mark.len_utf8()..];
        }
        out.push_str(rest);
        (next == originals.len()).then_some(out)
    }
}

/// A fenced code block opener (CommonMark: ≤3 spaces, then ≥3 backticks or tildes; a backtick
/// info string holds no backtick): the fence char, its length and the info string's first word.
pub(crate) fn fence_open(line: &str) -> Option<(u8, usize, &str)> {
    let body = line.trim_end_matches(['\n', '\r']);
    let indent = body.len() - body.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let rest = &body[indent..];
    let ch = *rest.as_bytes().first()?;
    if ch != b'`' && ch != b'~' {
        return None;
    }
    let n = rest.bytes().take_while(|&b| b == ch).count();
    if n < 3 {
        return None;
    }
    let info = &rest[n..];
    if ch == b'`' && info.contains('`') {
        return None;
    }
    let lang = info.split_whitespace().next().unwrap_or("");
    Some((ch, n, lang))
}

/// Whether `line` closes a fence opened with `n` × `ch`.
pub(crate) fn fence_closes(line: &str, ch: u8, n: usize) -> bool {
    let body = line.trim_end_matches(['\n', '\r']);
    let indent = body.len() - body.trim_start_matches(' ').len();
    if indent > 3 {
        return false;
    }
    let rest = &body[indent..];
    let m = rest.bytes().take_while(|&b| b == ch).count();
    m >= n && rest[m..].trim().is_empty()
}

/// One line of a text with its fence context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineKind {
    Prose,
    /// An opening or closing fence line.
    Fence,
    /// Inside a fenced block; `lang` is the opener's info word (lower-case not guaranteed).
    Code,
}

/// Splits `text` into lines (each with its `\n`, the last maybe without) tagged with their fence
/// context and, for code lines, the fence's language. An unclosed fence runs to the end.
pub(crate) fn classify_lines(text: &str) -> Vec<(&str, LineKind, &str)> {
    let mut out = Vec::new();
    let mut open: Option<(u8, usize, &str)> = None;
    for line in text.split_inclusive('\n') {
        match open {
            None => match fence_open(line) {
                Some(f) => {
                    open = Some(f);
                    out.push((line, LineKind::Fence, f.2));
                }
                None => out.push((line, LineKind::Prose, "")),
            },
            Some((ch, n, lang)) => {
                if fence_closes(line, ch, n) {
                    open = None;
                    out.push((line, LineKind::Fence, lang));
                } else {
                    out.push((line, LineKind::Code, lang));
                }
            }
        }
    }
    out
}

/// The line without its terminator (`\n` or `\r\n`).
pub(crate) fn line_body(line: &str) -> &str {
    let l = line.strip_suffix('\n').unwrap_or(line);
    l.strip_suffix('\r').unwrap_or(l)
}

/// The longest prefix of `s` of at most `max` bytes ending on a char boundary.
pub(crate) fn truncate_chars(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

#[cfg(test)]
// Single and reversed ranges are the point of some tests here.
#[allow(clippy::single_range_in_vec_init, clippy::reversed_empty_ranges)]
mod tests {
    use super::*;

    /// The cheap checks never skip a text a pass would have changed: random texts over the bytes
    /// the passes react to, each pass run directly against its check.
    #[test]
    fn may_change_checks_are_supersets_of_the_passes() {
        const ALPHA: &[&str] = &[
            " ",
            "\t",
            "\n",
            "\r",
            "{",
            "}",
            "[",
            "]",
            "`",
            "~",
            "\x1b",
            "a",
            "\"",
            ":",
            "1",
            ",",
            "```",
            "```json\n",
            "\x1b[31m",
            "\r\n",
            "é",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        // JSON-shaped pieces, so that embedded documents actually occur
        const JSONISH: &[&str] = &[
            "{\n  \"a\": 1\n}",
            "[1,\n 2]",
            "  {\"k\": [1, 2]}",
            "\n",
            "text ",
            "```\n",
            "```json\n",
            "~~~\n",
            "\t[\n\"x\"\n]",
            " ",
            "{",
            "}\n",
            "log[42]: ",
            "\r\n",
        ];
        let mut changed = [0usize; 3];
        for i in 0..20_000 {
            let len = (next() % 24) as usize;
            let alpha = if i % 2 == 0 { ALPHA } else { JSONISH };
            let t: String = (0..len)
                .map(|_| alpha[(next() % alpha.len() as u64) as usize])
                .collect();
            for max in [0usize, 1, 2] {
                if whitespace::collapse(&t, max).is_some() {
                    changed[0] += 1;
                    assert!(whitespace::may_change(&t, max), "whitespace {t:?}");
                }
            }
            if ansi::strip(&t).is_some() {
                changed[1] += 1;
                assert!(ansi::may_change(&t), "ansi {t:?}");
            }
            if json::minify_embedded_unchecked(&t).is_some() {
                changed[2] += 1;
                assert!(json::may_change(&t), "json {t:?}");
            }
            // minify_embedded returns early on its own check; compare with the full walk
            let full = compress(&t, &CompressConfig::default(), &[]).0;
            if full != t {
                assert!(may_change(&t, &CompressConfig::default()), "{t:?}");
            }
        }
        assert!(changed.iter().all(|&n| n > 50), "{changed:?}");
    }

    #[test]
    fn nothing_to_do_borrows() {
        let (out, s) = compress("hello world\n", &CompressConfig::default(), &[]);
        assert!(matches!(out, Cow::Borrowed(_)));
        assert_eq!(s.bytes_before, s.bytes_after);
        let (out, _) = compress("", &CompressConfig::default(), &[0..10]);
        assert_eq!(out, "");
    }

    #[test]
    fn protected_ranges_survive_every_pass() {
        // A placeholder with trailing spaces, inside a JSON block, an ANSI run and a repeated frame.
        let text = "ERR \x1b[31mFAIL\x1b[0m  token=PII_API_KEY_1   \n\n\n\n\n{\n  \"email\": \"PII_EMAIL_2\",\n  \"n\": 1\n}\n  at f (a.js:1:1)\n  at f (a.js:1:1)\n  at f (a.js:1:1)\n  at f (a.js:1:1)\n";
        let p1 = text.find("PII_API_KEY_1   ").unwrap_or(0);
        let r1 = p1..p1 + "PII_API_KEY_1   ".len();
        let p2 = text.find("PII_EMAIL_2").unwrap_or(0);
        let r2 = p2..p2 + "PII_EMAIL_2".len();
        let (out, s) = compress(text, &CompressConfig::default(), &[r2.clone(), r1.clone()]);
        assert!(out.contains("PII_API_KEY_1   \n"), "{out:?}");
        assert!(
            out.contains("{\"email\":\"PII_EMAIL_2\",\"n\":1}"),
            "{out:?}"
        );
        assert!(!out.contains('\x1b'));
        assert!(out.contains("[… 3 identical frames]"), "{out:?}");
        assert!(
            s.per_pass.ansi > 0
                && s.per_pass.whitespace > 0
                && s.per_pass.json > 0
                && s.per_pass.stack_traces > 0
        );
        assert_eq!(s.bytes_after, out.len());
        assert_eq!(
            s.bytes_before - s.bytes_after,
            Pass::ALL.iter().map(|p| s.per_pass.get(*p)).sum::<usize>()
        );
    }

    #[test]
    fn protected_range_covering_a_frame_blocks_its_folding() {
        let frame = "    at com.x.Y.z(Y.java:10)\n";
        let text = frame.repeat(5);
        let start = frame.len() * 2;
        let (out, _) = compress(
            &text,
            &CompressConfig::default(),
            &[start..start + frame.len() - 1],
        );
        // The protected third frame stays; the frames around it may fold.
        assert!(out.contains(frame), "{out}");
        let (out2, _) = compress(&text, &CompressConfig::default(), &[]);
        assert!(out2.len() < out.len() || out2.len() == out.len());
    }

    #[test]
    fn odd_ranges_are_normalized() {
        let text = "é\u{1b}[1mbold\u{1b}[0m 日本";
        for ranges in [
            vec![1..2],
            vec![100..200],
            vec![5..3],
            vec![0..4, 2..8],
            vec![usize::MAX - 1..usize::MAX],
        ] {
            let (out, _) = compress(text, &CompressConfig::default(), &ranges);
            assert!(out.contains("bold") && out.contains("日本"));
        }
        // Overlap with an escape keeps the escape (it is protected).
        let (out, _) = compress(text, &CompressConfig::default(), &[2..6]);
        assert!(out.contains("\u{1b}[1m"), "{out:?}");
    }

    #[test]
    fn text_full_of_private_use_chars_still_works() {
        let mut text: String = (0xE000u32..0xE010).filter_map(char::from_u32).collect();
        text.push_str("   \n\n\n\n\nx");
        let (out, _) = compress(&text, &CompressConfig::default(), &[0..3]);
        assert!(out.starts_with(&text[..3]));
        assert!(out.len() < text.len());
    }

    #[test]
    fn conversation_history_dedups_across_messages() {
        let file = "```rust\nfn main() {\n    println!(\"a fairly long line so the block is worth a reference\");\n    println!(\"and a second one\");\n}\n```\n";
        let msgs = [
            format!("Read src/main.rs:\n\n{file}"),
            "ok".to_string(),
            format!("Read src/main.rs again:\n\n{file}"),
        ];
        // one conversation through one history, message by message
        let conversation = |msgs: &[String]| -> Vec<String> {
            let mut h = DedupHistory::default();
            msgs.iter()
                .map(|m| {
                    compress_with_history(m, &CompressConfig::default(), &[], &mut h)
                        .0
                        .into_owned()
                })
                .collect()
        };
        let outs = conversation(&msgs);
        assert_eq!(outs[0], msgs[0]);
        assert_eq!(outs[2], "Read src/main.rs again:\n\n[identical to a block in an earlier message: fn main() {…]\n");
        // Same conversation, next turn: earlier messages compress identically.
        let again = conversation(&msgs);
        assert_eq!(again, outs);
    }

    #[test]
    fn fences() {
        assert_eq!(fence_open("```rust\n"), Some((b'`', 3, "rust")));
        assert_eq!(fence_open("  ~~~~ py extra"), Some((b'~', 4, "py")));
        assert_eq!(fence_open("    ```"), None);
        assert_eq!(fence_open("``"), None);
        assert_eq!(fence_open("```a`b"), None);
        assert!(fence_closes("```\n", b'`', 3));
        assert!(!fence_closes("``\n", b'`', 3));
        assert!(!fence_closes("```x\n", b'`', 3));
        let kinds: Vec<LineKind> = classify_lines("a\n```\nb\n```\nc")
            .iter()
            .map(|l| l.1)
            .collect();
        assert_eq!(
            kinds,
            [
                LineKind::Prose,
                LineKind::Fence,
                LineKind::Code,
                LineKind::Fence,
                LineKind::Prose
            ]
        );
    }

    /// Arbitrary input, every pass on, random protected ranges: no panic, ranges preserved.
    #[test]
    fn garbage_never_panics_and_keeps_protected_bytes() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut rnd = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet: Vec<char> =
            "ab {}[]\":,\n\n\r\t \x1b[31m`~#/*at File\"\\é日🎉\u{e000}\u{0}0123456789"
                .chars()
                .collect();
        let cfg = CompressConfig {
            comments: true,
            dedup_min_block_bytes: 4,
            fold_min_repeats: 2,
            ..Default::default()
        };
        for round in 0..400 {
            let len = (rnd() % 400) as usize;
            let mut s = String::new();
            for _ in 0..len {
                s.push(alphabet[(rnd() % alphabet.len() as u64) as usize]);
            }
            if round % 3 == 0 {
                let copy = s.clone();
                s.push_str("\n\n");
                s.push_str(&copy);
            }
            let a = (rnd() as usize) % (s.len() + 1);
            let b = (rnd() as usize) % (s.len() + 1);
            let r = a.min(b)..a.max(b);
            let (out, sv) = compress(&s, &cfg, std::slice::from_ref(&r));
            assert_eq!(sv.bytes_after, out.len());
            let norm = normalize_ranges(&s, &[r]);
            if let Some(r) = norm.first() {
                assert!(
                    out.contains(&s[r.clone()]),
                    "round {round}: lost protected {:?} in {out:?}",
                    &s[r.clone()]
                );
            }
        }
        let bytes: Vec<u8> = (0..20_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let lossy = String::from_utf8_lossy(&bytes);
        let _ = compress(&lossy, &cfg, &[0..50]);
    }

    #[test]
    fn huge_inputs_are_linear_enough() {
        // Pathological shapes (unbalanced JSON starts, many fences, 100k frames) finish: a
        // quadratic pass would make this test take minutes. Time is measured in bench/compress.rs.
        let cfg = CompressConfig {
            comments: true,
            ..Default::default()
        };
        let big = "{\n".repeat(200_000);
        let _ = compress(&big, &cfg, &[]);
        let big = "[x] ".repeat(100_000) + &"\n".repeat(100_000);
        let _ = compress(&big, &cfg, &[]);
        let big = "    at a.b(C.java:1)\n    at a.c(C.java:2)\n".repeat(50_000);
        let (out, _) = compress(&big, &cfg, &[]);
        assert!(out.len() < 200, "{}", out.len());
    }
}
