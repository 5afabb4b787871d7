//! Streaming rehydration: replaces vault placeholders in a byte stream fed in arbitrary pieces,
//! holding back only a suffix that could still become a placeholder, and escaping originals for
//! where they land (raw text, a JSON string, or a string inside JSON-in-a-JSON-string).
//!
//! How tool-call arguments are handled: OpenAI `function.arguments` (and Anthropic
//! `partial_json`) carry JSON text inside a JSON string. The `JsonEscaper` tracks the outer JSON
//! string state byte by byte and, for values of those keys, also the inner JSON string state on
//! the unescaped characters. An original landing in an inner string is JSON-escaped twice, one
//! landing elsewhere in a string once, and outside strings not at all. The tracker state is per
//! byte, so any chunking gives the same output. For SSE, feed the concatenated `data:` payloads
//! of one response to one `Rehydrator` (inner argument strings then stay tracked across events);
//! when a model splits a placeholder across *events* (token by token), the relay instead feeds
//! each choice's decoded delta text to a `Rehydrator::new(vault, JsonEscaper::raw())` and
//! re-encodes what it emits, so held-back text moves to the next event.

use super::vault::Vault;

/// Tracks JSON string nesting over a byte stream to know how to escape inserted text.
#[derive(Debug, Clone, Default)]
pub struct JsonEscaper {
    track: bool,
    in_str: bool,
    esc: bool,
    unicode_left: u8,
    cur: [u8; 16],
    cur_len: u8,
    cur_overflow: bool,
    last_key_is_args: bool,
    last_str_is_args_name: bool,
    prev_sig: u8,
    str_is_args: bool,
    inner_in_str: bool,
    inner_esc: bool,
}

impl JsonEscaper {
    /// Plain text: originals are inserted verbatim.
    pub fn raw() -> Self {
        JsonEscaper::default()
    }

    /// A JSON document stream (whole body, or concatenated SSE payloads).
    pub fn json() -> Self {
        JsonEscaper {
            track: true,
            ..Default::default()
        }
    }

    /// The content of one JSON string (already inside the quotes): originals escaped once.
    pub fn json_string_content() -> Self {
        JsonEscaper {
            track: true,
            in_str: true,
            ..Default::default()
        }
    }

    /// How many times an original inserted at the current position must be JSON-escaped.
    pub fn depth(&self) -> u8 {
        if !self.track || !self.in_str {
            0
        } else if self.str_is_args && self.inner_in_str {
            2
        } else {
            1
        }
    }

    fn feed_inner(&mut self, u: u8) {
        if !self.str_is_args {
            return;
        }
        if self.inner_esc {
            self.inner_esc = false;
        } else if self.inner_in_str && u == b'\\' {
            self.inner_esc = true;
        } else if u == b'"' {
            self.inner_in_str = !self.inner_in_str;
        }
    }

    /// Advances over one output byte.
    #[inline]
    pub fn feed(&mut self, b: u8) {
        if !self.track {
            return;
        }
        if self.in_str {
            if self.unicode_left > 0 {
                self.unicode_left -= 1;
                if self.unicode_left == 0 {
                    self.feed_inner(b'x');
                }
                return;
            }
            if self.esc {
                self.esc = false;
                match b {
                    b'u' => self.unicode_left = 4,
                    b'"' => self.feed_inner(b'"'),
                    b'\\' => self.feed_inner(b'\\'),
                    _ => self.feed_inner(b'x'),
                }
            } else if b == b'\\' {
                self.esc = true;
            } else if b == b'"' {
                self.in_str = false;
                let s = &self.cur[..self.cur_len as usize];
                self.last_str_is_args_name =
                    !self.cur_overflow && (s == b"arguments" || s == b"partial_json");
                self.prev_sig = b'"';
            } else {
                self.feed_inner(b);
            }
            if self.in_str && !self.esc {
                if (self.cur_len as usize) < self.cur.len() {
                    self.cur[self.cur_len as usize] = b;
                    self.cur_len += 1;
                } else {
                    self.cur_overflow = true;
                }
            }
            return;
        }
        match b {
            b'"' => {
                self.in_str = true;
                self.str_is_args = self.prev_sig == b':' && self.last_key_is_args;
                self.inner_in_str = false;
                self.inner_esc = false;
                self.cur_len = 0;
                self.cur_overflow = false;
            }
            b' ' | b'\n' | b'\r' | b'\t' => {}
            b':' => {
                self.last_key_is_args = self.prev_sig == b'"' && self.last_str_is_args_name;
                self.prev_sig = b':';
            }
            _ => self.prev_sig = b,
        }
    }
}

/// Appends `s` JSON-escaped (string content, no quotes).
pub fn json_escape_into(s: &[u8], out: &mut Vec<u8>) {
    for &c in s {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(c >> 4) as usize]);
                out.push(HEX[(c & 15) as usize]);
            }
            _ => out.push(c),
        }
    }
}

/// Streaming placeholder replacement over one response. Borrows the request's vault.
pub struct Rehydrator<'v> {
    vault: &'v Vault,
    placeholders: Vec<&'v [u8]>,
    first: [bool; 256],
    escaper: JsonEscaper,
    hold: Vec<u8>,
}

impl<'v> Rehydrator<'v> {
    pub fn new(vault: &'v Vault, escaper: JsonEscaper) -> Self {
        let placeholders: Vec<&[u8]> = vault.placeholders().map(str::as_bytes).collect();
        let mut first = [false; 256];
        for p in &placeholders {
            if let Some(&b) = p.first() {
                first[b as usize] = true;
            }
        }
        Rehydrator {
            vault,
            placeholders,
            first,
            escaper,
            hold: Vec::new(),
        }
    }

    /// Bytes currently held back (a possible placeholder prefix).
    pub fn held(&self) -> usize {
        self.hold.len()
    }

    /// Feeds the next piece; appends everything that can already be emitted to `out`.
    pub fn push(&mut self, piece: &[u8], out: &mut Vec<u8>) {
        if self.placeholders.is_empty() {
            for &b in piece {
                self.escaper.feed(b);
            }
            out.extend_from_slice(piece);
            return;
        }
        if self.hold.is_empty() {
            let rest = self.process(piece, out);
            self.hold.extend_from_slice(&piece[rest..]);
        } else {
            let mut data = std::mem::take(&mut self.hold);
            data.extend_from_slice(piece);
            let rest = self.process(&data, out);
            data.drain(..rest);
            self.hold = data;
        }
    }

    /// Ends the stream: emits any held-back bytes unchanged.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        for &b in &self.hold {
            self.escaper.feed(b);
        }
        out.append(&mut self.hold);
    }

    /// Emits `data` up to a possible placeholder prefix at its end; returns where that starts.
    fn process(&mut self, data: &[u8], out: &mut Vec<u8>) -> usize {
        let mut i = 0;
        let n = data.len();
        out.reserve(n);
        'outer: while i < n {
            let b = data[i];
            if self.first[b as usize] {
                let tail = &data[i..];
                let mut partial = false;
                for (k, p) in self.placeholders.iter().enumerate() {
                    if tail.len() >= p.len() {
                        if tail.starts_with(p) {
                            if let Some(orig) = self.vault.original(k) {
                                match self.escaper.depth() {
                                    0 => out.extend_from_slice(&orig),
                                    1 => json_escape_into(&orig, out),
                                    _ => {
                                        let mut once = Vec::with_capacity(orig.len() + 8);
                                        json_escape_into(&orig, &mut once);
                                        json_escape_into(&once, out);
                                        zeroize::Zeroize::zeroize(&mut once);
                                    }
                                }
                            } else {
                                out.extend_from_slice(p);
                            }
                            i += p.len();
                            continue 'outer;
                        }
                    } else if p.starts_with(tail) {
                        partial = true;
                    }
                }
                if partial {
                    return i;
                }
            }
            self.escaper.feed(b);
            out.push(b);
            i += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scanner::pii::PiiKind;

    fn vault() -> (Vault, String, String) {
        let mut v = Vault::new();
        let e = v.insert(PiiKind::Email, "alice@corp.example").to_string();
        let p = v.insert(PiiKind::Password, "p\"w\\x").to_string();
        (v, e, p)
    }

    #[test]
    fn split_at_every_byte_boundary_gives_the_whole_result() {
        let (v, e, p) = vault();
        let args = serde_json::json!({"user": e, "pw": p}).to_string();
        let payloads = [
            serde_json::json!({"choices": [{"delta": {"content": format!("Hi {e}, your pw is {p}.")}}]}).to_string(),
            serde_json::json!({"choices": [{"delta": {"tool_calls": [{"function": {"arguments": args}}]}}]}).to_string(),
        ];
        let stream: Vec<u8> = payloads.join("\n").into_bytes();
        let whole = v.rehydrate(&stream);
        for cut in 0..=stream.len() {
            let mut r = Rehydrator::new(&v, JsonEscaper::json());
            let mut out = Vec::new();
            r.push(&stream[..cut], &mut out);
            r.push(&stream[cut..], &mut out);
            r.finish(&mut out);
            assert_eq!(out, whole, "cut at {cut}");
        }
        // byte-by-byte too
        let mut r = Rehydrator::new(&v, JsonEscaper::json());
        let mut out = Vec::new();
        for b in &stream {
            r.push(std::slice::from_ref(b), &mut out);
            assert!(r.held() < 32);
        }
        r.finish(&mut out);
        assert_eq!(out, whole);
        let first: serde_json::Value =
            serde_json::from_slice(whole.split(|&b| b == b'\n').next().unwrap()).unwrap();
        assert_eq!(
            first["choices"][0]["delta"]["content"],
            "Hi alice@corp.example, your pw is p\"w\\x."
        );
    }

    #[test]
    fn raw_text_deltas_and_non_placeholders_pass() {
        let (v, e, _) = vault();
        let text = format!("mail {e} and user_0002@redacted.exampl and user_");
        let mut r = Rehydrator::new(&v, JsonEscaper::raw());
        let mut out = Vec::new();
        for piece in text.as_bytes().chunks(3) {
            r.push(piece, &mut out);
        }
        r.finish(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "mail alice@corp.example and user_0002@redacted.exampl and user_"
        );
    }

    #[test]
    fn empty_vault_is_identity() {
        let v = Vault::new();
        let mut r = Rehydrator::new(&v, JsonEscaper::json());
        let mut out = Vec::new();
        r.push(b"{\"a\":\"user_0001@redacted.example\"}", &mut out);
        r.finish(&mut out);
        assert_eq!(out, b"{\"a\":\"user_0001@redacted.example\"}");
    }
}
