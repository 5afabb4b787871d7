//! Pass 6: de-duplication. A block (a whole fenced code block, or a paragraph of prose) whose
//! text already appeared earlier in the same text is replaced by `[identical to the block above:
//! <first line>…]`; a run of such blocks copying a run of earlier ones becomes one reference.
//! Blocks holding a protected range are never replaced.

use std::collections::HashMap;

use super::{classify_lines, line_body, truncate_chars, LineKind};

/// Bytes of the first line quoted in a reference.
const QUOTE_BYTES: usize = 60;

#[derive(Debug, Clone)]
struct Block {
    /// Byte range of the whole block in the text (fence lines included).
    start: usize,
    end: usize,
    /// What identity is judged on: the body of a fenced block (with its language), or the paragraph.
    content_start: usize,
    content_end: usize,
    lang: String,
    fenced: bool,
}

fn blocks(text: &str) -> Vec<Block> {
    let lines = classify_lines(text);
    let mut out = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while i < lines.len() {
        let (line, kind, lang) = lines[i];
        match kind {
            LineKind::Fence => {
                let start = at;
                at += line.len();
                let content_start = at;
                let mut j = i + 1;
                while j < lines.len() && lines[j].1 == LineKind::Code {
                    at += lines[j].0.len();
                    j += 1;
                }
                let content_end = at;
                if j < lines.len() {
                    at += lines[j].0.len();
                    j += 1;
                }
                out.push(Block {
                    start,
                    end: at,
                    content_start,
                    content_end,
                    lang: lang.to_string(),
                    fenced: true,
                });
                i = j;
            }
            _ if line.trim().is_empty() => {
                at += line.len();
                i += 1;
            }
            _ => {
                let start = at;
                while i < lines.len()
                    && lines[i].1 == LineKind::Prose
                    && !lines[i].0.trim().is_empty()
                {
                    at += lines[i].0.len();
                    i += 1;
                }
                out.push(Block {
                    start,
                    end: at,
                    content_start: start,
                    content_end: at,
                    lang: String::new(),
                    fenced: false,
                });
            }
        }
    }
    out
}

fn reference(first_line: &str, blocks: usize, earlier_message: bool) -> String {
    let q = truncate_chars(first_line.trim(), QUOTE_BYTES);
    match (blocks, earlier_message) {
        (1, false) => format!("[identical to the block above: {q}…]"),
        (n, false) => format!("[identical to the {n} blocks above, from: {q}…]"),
        (1, true) => format!("[identical to a block in an earlier message: {q}…]"),
        (n, true) => format!("[identical to {n} blocks in earlier messages, from: {q}…]"),
    }
}

/// Blocks seen in earlier messages of one conversation, for `compress_with_history`: the text
/// of each eligible block (fenced flag, language, content) and its first line.
#[derive(Debug, Default, Clone)]
pub struct DedupHistory {
    seen: HashMap<(bool, String, String), String>,
    bytes: usize,
}

impl DedupHistory {
    /// Bytes of block text remembered (the history holds copies).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// Where a repeated block was first seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Block `n` of this text.
    Here(usize),
    EarlierMessage,
}

fn first_line(content: &str) -> &str {
    line_body(content.lines().find(|l| !l.trim().is_empty()).unwrap_or(""))
}

/// The de-duplicated text; `None` when no block repeats.
pub fn dedup(text: &str, min_block_bytes: usize, mark: Option<char>) -> Option<String> {
    dedup_with_history(text, min_block_bytes, mark, None)
}

/// `dedup` that also replaces blocks seen in earlier messages (`history`), then remembers this
/// text's eligible blocks there.
pub fn dedup_with_history(
    text: &str,
    min_block_bytes: usize,
    mark: Option<char>,
    mut history: Option<&mut DedupHistory>,
) -> Option<String> {
    // Two blocks need a blank line or a fence between them (unless history may match one).
    let history_empty = history.as_ref().is_none_or(|h| h.is_empty());
    if history_empty
        && !text.contains("\n\n")
        && !text.contains("\n\r\n")
        && !text.contains("``")
        && !text.contains("~~")
    {
        if let Some(h) = history.as_deref_mut() {
            remember(h, text, &blocks(text), min_block_bytes, mark);
        }
        return None;
    }
    let bs = blocks(text);
    let eligible = |b: &Block| {
        b.end - b.start >= min_block_bytes.max(1)
            && !mark.is_some_and(|m| text[b.start..b.end].contains(m))
    };
    let mut first_seen: HashMap<(bool, &str, &str), usize> = HashMap::new();
    let mut copy_of: Vec<Option<Source>> = vec![None; bs.len()];
    for (i, b) in bs.iter().enumerate() {
        let k = key(text, b);
        if k.2.is_empty() {
            continue;
        }
        if let Some(&orig) = first_seen.get(&k) {
            if eligible(b) {
                copy_of[i] = Some(Source::Here(orig));
            }
            continue;
        }
        let in_history = history.as_ref().is_some_and(|h| {
            h.seen
                .contains_key(&(k.0, k.1.to_string(), k.2.to_string()))
        });
        if in_history && eligible(b) {
            copy_of[i] = Some(Source::EarlierMessage);
        } else {
            first_seen.insert(k, i);
        }
    }
    if let Some(h) = history {
        remember(h, text, &bs, min_block_bytes, mark);
    }
    if copy_of.iter().all(Option::is_none) {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    let mut i = 0;
    while i < bs.len() {
        let Some(src) = copy_of[i] else {
            i += 1;
            continue;
        };
        // Extend over following blocks that continue the same copied run.
        let mut n = 1;
        while i + n < bs.len() {
            let next_continues = match (src, copy_of[i + n]) {
                (Source::Here(orig), Some(Source::Here(o))) => o == orig + n && orig + n < i,
                (Source::EarlierMessage, Some(Source::EarlierMessage)) => true,
                _ => false,
            };
            if !next_continues {
                break;
            }
            n += 1;
        }
        let (start, end) = (bs[i].start, bs[i + n - 1].end);
        let quoted = match src {
            Source::Here(orig) => first_line(content(text, &bs[orig])),
            Source::EarlierMessage => first_line(content(text, &bs[i])),
        };
        let r = reference(quoted, n, src == Source::EarlierMessage);
        let keeps_newline = text[start..end].ends_with('\n');
        if r.len() + 1 < end - start {
            out.push_str(&text[at..start]);
            out.push_str(&r);
            if keeps_newline {
                out.push('\n');
            }
            at = end;
        }
        i += n;
    }
    out.push_str(&text[at..]);
    (out.len() < text.len()).then_some(out)
}

fn remember(
    h: &mut DedupHistory,
    text: &str,
    bs: &[Block],
    min_block_bytes: usize,
    mark: Option<char>,
) {
    for b in bs {
        if b.end - b.start < min_block_bytes.max(1)
            || mark.is_some_and(|m| text[b.start..b.end].contains(m))
        {
            continue;
        }
        let k = key(text, b);
        if k.2.is_empty() {
            continue;
        }
        let owned = (k.0, k.1.to_string(), k.2.to_string());
        if !h.seen.contains_key(&owned) {
            h.bytes += owned.2.len();
            h.seen
                .insert(owned, first_line(content(text, b)).to_string());
        }
    }
}

fn content<'t>(text: &'t str, b: &Block) -> &'t str {
    &text[b.content_start..b.content_end]
}

fn key<'t>(text: &'t str, b: &'t Block) -> (bool, &'t str, &'t str) {
    (b.fenced, b.lang.as_str(), content(text, b).trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_paste_becomes_a_reference() {
        let file = "```python\ndef add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n```\n";
        let t =
            format!("Here is utils.py:\n{file}\nAnd again, unchanged:\n{file}\nWhat differs?\n");
        let out = dedup(&t, 40, None).unwrap_or_default();
        assert_eq!(out, format!("Here is utils.py:\n{file}\nAnd again, unchanged:\n[identical to the block above: def add(a, b):…]\n\nWhat differs?\n"));
    }

    #[test]
    fn runs_of_paragraphs_coalesce() {
        let para1 = "error[E0308]: mismatched types\n  --> src/main.rs:4:18\n   |\n4  |     let x: u32 = \"a\";\n";
        let para2 = "For more information about this error, try `rustc --explain E0308`.\nerror: could not compile `demo`\n";
        let log = format!("{para1}\n{para2}");
        let t = format!("$ cargo build\n{log}\n$ cargo build\n{log}");
        let out = dedup(&t, 40, None).unwrap_or_default();
        // The command line belongs to the first paragraph, so the whole repeated run is one reference.
        assert_eq!(
            out,
            "$ cargo build\n".to_string()
                + &log
                + "\n[identical to the 2 blocks above, from: $ cargo build…]\n"
        );
    }

    #[test]
    fn blocks_from_earlier_messages() {
        let out1 = "$ git status\nOn branch main\nnothing to commit, working tree clean, and a long enough line\n";
        let mut h = DedupHistory::default();
        assert!(dedup_with_history(out1, 40, None, Some(&mut h)).is_none());
        assert_eq!(h.len(), 1);
        let msg2 = format!("Ran it again:\n\n{out1}\nSame?\n");
        let out = dedup_with_history(&msg2, 40, None, Some(&mut h)).unwrap_or_default();
        assert_eq!(out, "Ran it again:\n\n[identical to a block in an earlier message: $ git status…]\n\nSame?\n");
        // Without history nothing happens.
        assert!(dedup(&msg2, 40, None).is_none());
    }

    #[test]
    fn small_or_protected_blocks_stay() {
        let t = "ok\n\nok\n";
        assert!(dedup(t, 1, None).is_none(), "reference would be longer");
        let p =
            "line with \u{e000}0\u{e000} a long enough paragraph to be worth replacing, really\n";
        let t = format!("{p}\n{p}");
        assert!(dedup(&t, 10, Some('\u{e000}')).is_none());
        // A fenced block and the same text unfenced are different blocks.
        let body = "x = compute_something_long(argument_one, argument_two)\n";
        let t = format!("```\n{body}```\n\n{body}");
        assert!(dedup(&t, 10, None).is_none());
    }

    #[test]
    fn edge_inputs() {
        for t in [
            "",
            "\n\n",
            "```\n```\n```\n```\n",
            "a\n\na",
            "é日🎉\n\né日🎉",
            "```\nunclosed\n\n```\nunclosed",
        ] {
            for i in 0..=t.len() {
                if t.is_char_boundary(i) {
                    let _ = dedup(&t[..i], 1, None);
                }
            }
        }
        let para = format!(
            "{}\n\n",
            "a paragraph pasted many times, long enough to be worth a reference. ".repeat(3)
        );
        let big = para.repeat(5_000);
        let out = dedup(&big, 10, None).unwrap_or_default();
        assert!(
            !out.is_empty() && out.len() < big.len() / 2,
            "{}",
            out.len()
        );
    }
}
