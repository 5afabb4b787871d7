//! Exact fast path of the BERT uncased WordPiece tokenizer (`BertNormalizer` + `BertPreTokenizer`
//! + `WordPiece` + `[CLS] $A [SEP]`): the `tokenizers` pipeline spends ~100 µs or more per prompt
//! building alignment vectors and strings; this does the same normalisation, split and lookup
//! without them. Pure-ASCII text (most prompts) takes a byte loop; other text a char pipeline
//! built from the very functions `tokenizers` uses (`unicode_categories`, the NFD of
//! `unicode-normalization-alignments`, `char::to_lowercase`), so the ids are the same by
//! construction and checked against `tokenizers` in the tests and the `wordpiece` fuzz target.
//! A special token's text inside a prompt (`[SEP]` …) is split out whole, as `tokenizers` does
//! for added tokens that are not normalised. `model` loads tokenizer.json with `tokenizers`,
//! checks this path against it on probe texts, and then keeps only this one.

use std::collections::HashMap;
use std::iter::once;

use foldhash::fast::FixedState;

use serde_json::Value;
use unicode_categories::UnicodeCategories;
use unicode_normalization_alignments::UnicodeNormalization;

/// BERT WordPiece parameters read from tokenizer.json; `None` from `from_json` when the file is
/// not the plain uncased BERT layout this path reproduces.
pub struct BertWordPiece {
    /// Word-initial pieces, and continuation pieces stored without their `##` (so a lookup is
    /// a slice of the lower-cased word, no string building). Fixed-seed hashing: the tables are
    /// fixed at load, a prompt only queries them.
    starts: HashMap<Box<[u8]>, u32, FixedState>,
    conts: HashMap<Box<[u8]>, u32, FixedState>,
    unk_id: u32,
    cls_id: u32,
    sep_id: u32,
    max_word_chars: usize,
    /// The added (special) tokens (`[CLS]`, `[SEP]`, …) and their ids: where one's exact text
    /// occurs in a prompt, `tokenizers` splits it out whole (leftmost, longest first).
    specials: Vec<(Vec<u8>, u32)>,
    pad_id: u32,
    /// The current word, lower-cased.
    lower: Vec<u8>,
    /// The normalised text (Unicode path).
    norm: String,
}

/// `BertNormalizer`'s whitespace: mapped to ' ' by clean_text.
fn is_whitespace(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || c.is_whitespace()
}

/// `BertNormalizer`'s control characters (general category C*): deleted by clean_text.
fn is_control(c: char) -> bool {
    !matches!(c, '\t' | '\n' | '\r') && c.is_other()
}

/// `BertNormalizer`'s CJK ideographs: each becomes a word of its own.
fn is_chinese_char(c: char) -> bool {
    matches!(
        c as u32,
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B920..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}

/// `BertPreTokenizer`'s punctuation: a word of its own.
fn is_bert_punc(c: char) -> bool {
    c.is_ascii_punctuation() || c.is_punctuation()
}

impl BertWordPiece {
    pub fn from_json(tokenizer_json: &[u8]) -> Option<BertWordPiece> {
        let t: Value = serde_json::from_slice(tokenizer_json).ok()?;
        let n = &t["normalizer"];
        let bert_norm =
            n["type"] == "BertNormalizer" && n["lowercase"] == true && n["clean_text"] == true;
        if !bert_norm || t["pre_tokenizer"]["type"] != "BertPreTokenizer" {
            return None;
        }
        let m = &t["model"];
        if m["type"] != "WordPiece" || m["continuing_subword_prefix"] != "##" {
            return None;
        }
        let vocab: HashMap<String, u32> = m["vocab"]
            .as_object()?
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), u32::try_from(v.as_u64()?).ok()?)))
            .collect();
        let unk_id = *vocab.get(m["unk_token"].as_str()?)?;
        let max_word_chars = m["max_input_chars_per_word"].as_u64().unwrap_or(100) as usize;
        // Post-processor must be exactly "[CLS] $A [SEP]".
        let p = &t["post_processor"];
        let single = p["single"].as_array()?;
        let special = |v: &Value| v["SpecialToken"]["id"].as_str().map(str::to_string);
        if p["type"] != "TemplateProcessing"
            || single.len() != 3
            || single[1]["Sequence"]["id"] != "A"
        {
            return None;
        }
        let cls_id = *vocab.get(&special(&single[0])?)?;
        let sep_id = *vocab.get(&special(&single[2])?)?;
        // Added tokens: only the plain layout (special, matched on the raw text, no stripping
        // or whole-word rule) is reproduced here.
        let added = t["added_tokens"].as_array()?;
        let plain = |a: &Value| {
            a["special"] == true
                && a["normalized"] == false
                && a["lstrip"] != true
                && a["rstrip"] != true
                && a["single_word"] != true
        };
        if !added.iter().all(plain) {
            return None;
        }
        let specials: Vec<(Vec<u8>, u32)> = added
            .iter()
            .map(|a| {
                let text = a["content"].as_str()?.as_bytes().to_vec();
                Some((text, u32::try_from(a["id"].as_u64()?).ok()?))
            })
            .collect::<Option<_>>()?;
        // The '[' search in `encode` relies on every special token starting with '['.
        if specials.iter().any(|(c, _)| c.first() != Some(&b'[')) {
            return None;
        }
        let pad_id = vocab.get("[PAD]").copied().unwrap_or(0);
        let mut starts = HashMap::with_capacity_and_hasher(vocab.len(), FixedState::default());
        let mut conts = HashMap::with_capacity_and_hasher(vocab.len() / 4, FixedState::default());
        for (k, &v) in &vocab {
            match k.strip_prefix("##") {
                Some(c) => conts.insert(c.as_bytes().into(), v),
                None => starts.insert(k.as_bytes().into(), v),
            };
        }
        Some(BertWordPiece {
            starts,
            conts,
            unk_id,
            cls_id,
            sep_id,
            max_word_chars,
            specials,
            pad_id,
            lower: Vec::with_capacity(128),
            norm: String::with_capacity(1024),
        })
    }

    /// The id of `[PAD]` (0 when the vocabulary has none).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Appends `[CLS] pieces… [SEP]` for `text` to `out`. A special token's exact text inside
    /// the prompt (`[SEP]`) becomes its id, and the text between is tokenized on its own; a '['
    /// that starts no special token is punctuation like any other: code and logs (`xs[0]`,
    /// `job[4412]`) are full of them.
    pub fn encode(&mut self, text: &str, out: &mut Vec<u32>) {
        out.push(self.cls_id);
        let b = text.as_bytes();
        let mut from = 0;
        for i in memchr::memchr_iter(b'[', b) {
            if i < from {
                continue;
            }
            let special = self
                .specials
                .iter()
                .filter(|(sp, _)| b[i..].starts_with(sp))
                .max_by_key(|(sp, _)| sp.len())
                .map(|(sp, id)| (sp.len(), *id));
            if let Some((len, id)) = special {
                // specials are ASCII, so `i` and `i + len` are char boundaries
                self.encode_segment(&text[from..i], out);
                out.push(id);
                from = i + len;
            }
        }
        self.encode_segment(&text[from..], out);
        out.push(self.sep_id);
    }

    /// The pieces of a text without special tokens (no `[CLS]` / `[SEP]`).
    fn encode_segment(&mut self, text: &str, out: &mut Vec<u32>) {
        let b = text.as_bytes();
        // Non-ASCII text, and control characters (deleted by clean_text, joining their
        // neighbours), take the char pipeline.
        let unusual = |c: &u8| {
            !c.is_ascii() || *c == 0x7f || (*c < 0x20 && !matches!(c, b'\t' | b'\n' | b'\r'))
        };
        if b.iter().any(unusual) {
            self.encode_unicode(text, out);
            return;
        }
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            // clean_text drops NUL and control characters other than whitespace.
            if c.is_ascii_whitespace() {
                i += 1;
                continue;
            }
            if c.is_ascii_punctuation() {
                self.push_word(&b[i..i + 1], out);
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && b[i].is_ascii_alphanumeric() {
                i += 1;
            }
            self.push_word(&b[start..i], out);
        }
    }

    /// Any text: `BertNormalizer` (clean_text, CJK characters spaced, NFD with nonspacing marks
    /// dropped, lower-cased — in that order, as `tokenizers` applies them), then the
    /// `BertPreTokenizer` split, then WordPiece on the normalised words.
    fn encode_unicode(&mut self, text: &str, out: &mut Vec<u32>) {
        let cleaned = text
            .chars()
            .filter(|&c| !(c == '\0' || c == '\u{fffd}' || is_control(c)))
            .flat_map(|c| {
                let (pad, c) = if is_whitespace(c) {
                    (false, ' ')
                } else {
                    (is_chinese_char(c), c)
                };
                let pad = pad.then_some(' ');
                pad.into_iter().chain(once(c)).chain(pad)
            });
        let mut norm = std::mem::take(&mut self.norm);
        norm.clear();
        for (c, _) in cleaned.nfd() {
            if !c.is_mark_nonspacing() {
                norm.extend(c.to_lowercase());
            }
        }
        let mut start = None;
        for (i, c) in norm.char_indices() {
            let space = c.is_whitespace();
            if space || is_bert_punc(c) {
                if let Some(s) = start.take() {
                    self.push_normalized_word(norm[s..i].as_bytes(), out);
                }
                if !space {
                    self.push_normalized_word(norm[i..i + c.len_utf8()].as_bytes(), out);
                }
            } else if start.is_none() {
                start = Some(i);
            }
        }
        if let Some(s) = start {
            self.push_normalized_word(norm[s..].as_bytes(), out);
        }
        self.norm = norm;
    }

    /// WordPiece on an already normalised word (UTF-8 bytes): longest vocabulary match first,
    /// shrinking by whole chars; a word longer than `max_word_chars` chars, or one with a piece
    /// the vocabulary lacks, is `[UNK]`.
    fn push_normalized_word(&self, word: &[u8], out: &mut Vec<u32>) {
        let continuation = |b: u8| b & 0xC0 == 0x80;
        if word.iter().filter(|&&b| !continuation(b)).count() > self.max_word_chars {
            out.push(self.unk_id);
            return;
        }
        let mark = out.len();
        let mut start = 0;
        while start < word.len() {
            let table = if start == 0 {
                &self.starts
            } else {
                &self.conts
            };
            let mut end = word.len();
            let mut found = None;
            while start < end {
                if let Some(&id) = table.get(&word[start..end]) {
                    found = Some(id);
                    break;
                }
                end -= 1;
                while end > start && continuation(word[end]) {
                    end -= 1;
                }
            }
            match found {
                Some(id) => {
                    out.push(id);
                    start = end;
                }
                None => {
                    out.truncate(mark);
                    out.push(self.unk_id);
                    return;
                }
            }
        }
    }

    /// An ASCII word: lower-cased, then WordPiece.
    fn push_word(&mut self, word: &[u8], out: &mut Vec<u32>) {
        self.lower.clear();
        self.lower.extend(word.iter().map(u8::to_ascii_lowercase));
        self.push_normalized_word(&self.lower, out);
    }
}
