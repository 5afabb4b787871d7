//! Scrubbing and the per-request vault: type-preserving placeholders, originals encrypted with
//! AES-256-GCM under a per-vault random key (memory only, zeroized on drop), and whole-body
//! rehydration. Streaming rehydration is in `rehydrate.rs`; both share the JSON escape tracker.
//!
//! Placeholder formats (fixed width so none is a prefix of another; each is rejected by the PII
//! validators, so scrubbing scrubbed text changes nothing):
//! EMAIL `user_0001@redacted.example`, PHONE `+1-555-0101` (fictional 555-01xx), CREDIT_CARD
//! `0000-0000-0000-0001`, SSN `000-00-0001`, IBAN `XX00REDACTED00000001`, IP_ADDRESS
//! `198.18.100.101` / `2001:db8::1:1`, API_KEY `redacted_api_key_0001`, PRIVATE_KEY
//! `[REDACTED_PRIVATE_KEY_0001]`, PASSWORD `redacted_pw_0001`, NATIONAL_ID `REDACTED-ID-0001`,
//! DATE_OF_BIRTH `1900-01-02`, PERSON `Person_0001`, ADDRESS `Redacted Address 0001`.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::{Aead, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::{Zeroize, Zeroizing};

use super::pii::{PiiKind, PiiSpan};
use super::rehydrate::{JsonEscaper, Rehydrator};

struct Entry {
    placeholder: String,
    kind: PiiKind,
    value_hash: u64,
    ciphertext: Vec<u8>,
}

/// Per-request store of scrubbed originals. Values are encrypted at rest in memory; the key and
/// every decrypted copy are zeroized when dropped.
pub struct Vault {
    cipher: Aes256Gcm,
    hasher: RandomState,
    entries: Vec<Entry>,
    counts: [u32; 14],
}

impl Default for Vault {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print originals (or even placeholders' values).
        f.debug_struct("Vault")
            .field("entries", &self.entries.len())
            .finish()
    }
}

impl Drop for Vault {
    fn drop(&mut self) {
        for e in &mut self.entries {
            e.ciphertext.zeroize();
        }
    }
}

fn nonce_for(index: usize) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&(index as u64).to_le_bytes());
    n
}

/// The placeholder for the `n`-th (1-based) value of `kind`.
pub fn placeholder(kind: PiiKind, n: u32) -> String {
    match kind {
        PiiKind::Email => format!("user_{n:04}@redacted.example"),
        PiiKind::Phone => format!("+1-555-0{:03}", 100 + n % 900),
        PiiKind::CreditCard => format!("0000-0000-0000-{n:04}"),
        PiiKind::Ssn => format!("000-00-{n:04}"),
        PiiKind::Iban => format!("XX00REDACTED{n:08}"),
        PiiKind::IpAddress => format!("198.18.{}.{}", 100 + (n / 100) % 156, 100 + n % 100),
        PiiKind::ApiKey => format!("redacted_api_key_{n:04}"),
        PiiKind::PrivateKey => format!("[REDACTED_PRIVATE_KEY_{n:04}]"),
        PiiKind::Password => format!("redacted_pw_{n:04}"),
        PiiKind::NationalId => format!("REDACTED-ID-{n:04}"),
        PiiKind::DateOfBirth => format!("1900-{:02}-{:02}", (n / 28) % 12 + 1, n % 28 + 1),
        PiiKind::Person => format!("Person_{n:04}"),
        PiiKind::Address => format!("Redacted Address {n:04}"),
        PiiKind::Context => format!("ctx_{n:04}"),
    }
}

/// Whether `s` is one of our placeholders (any number), so it is never scrubbed again.
/// The shapes' fixed parts, as they occur inside placeholder text.
const PLACEHOLDER_MARKERS: [&[u8]; 11] = [
    b"@redacted.example",
    b"+1-555-0",
    b"0000-0000-0000-",
    b"000-00-",
    b"XX00REDACTED",
    b"198.18.",
    b"2001:db8::",
    b"1900-",
    b"Person_",
    b"edacted",
    b"REDACTED",
];

/// Byte ranges of the placeholder-shaped tokens in `text`: every occurrence of a placeholder's fixed
/// part, widened over the token characters around it (`[A-Za-z0-9_.:@+-]`). A PII candidate that
/// overlaps one is part of an earlier scrub's output, not a value: scrubbing scrubbed text changes
/// nothing. Empty for text without any marker (one SIMD search per marker).
pub fn placeholder_ranges(text: &[u8]) -> Vec<std::ops::Range<usize>> {
    let token =
        |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'@' | b'+' | b'-');
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    for m in PLACEHOLDER_MARKERS {
        for at in memchr::memmem::find_iter(text, m) {
            let mut start = at;
            while start > 0 && token(text[start - 1]) {
                start -= 1;
            }
            let mut end = at + m.len();
            while end < text.len() && token(text[end]) {
                end += 1;
            }
            out.push(start..end);
        }
    }
    out
}

/// Whether `s` is a placeholder of any kind (no allocation; the union of `is_placeholder`).
pub fn is_any_placeholder(s: &[u8]) -> bool {
    s.ends_with(b"@redacted.example")
        || s.starts_with(b"+1-555-0")
        || s.starts_with(b"0000-0000-0000-")
        || s.starts_with(b"000-00-")
        || s.starts_with(b"XX00REDACTED")
        || s.starts_with(b"198.18.")
        || s.starts_with(b"2001:db8::")
        || s.starts_with(b"1900-")
        || s.starts_with(b"Person_")
        || memchr::memmem::find(s, b"edacted").is_some()
        || memchr::memmem::find(s, b"REDACTED").is_some()
}

pub fn is_placeholder(kind: PiiKind, s: &[u8]) -> bool {
    let t = String::from_utf8_lossy(s);
    match kind {
        PiiKind::Email => t.ends_with("@redacted.example"),
        PiiKind::Phone => t.starts_with("+1-555-0"),
        PiiKind::CreditCard => t.starts_with("0000-0000-0000-"),
        PiiKind::Ssn => t.starts_with("000-00-"),
        PiiKind::Iban => t.starts_with("XX00REDACTED"),
        PiiKind::IpAddress => t.starts_with("198.18.") || t.starts_with("2001:db8::"),
        PiiKind::DateOfBirth => t.starts_with("1900-"),
        _ => t.contains("edacted") || t.contains("REDACTED") || t.starts_with("Person_"),
    }
}

impl Vault {
    /// A fresh vault with a random AES-256 key from the OS.
    pub fn new() -> Vault {
        let mut key = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(&mut key[..]);
        let cipher =
            Aes256Gcm::new_from_slice(&key[..]).unwrap_or_else(|_| unreachable!("32-byte key"));
        Vault {
            cipher,
            hasher: RandomState::new(),
            entries: Vec::new(),
            counts: [0; 14],
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The placeholder for `value`: the same value (and kind) always gets the same placeholder.
    pub fn insert(&mut self, kind: PiiKind, value: &str) -> &str {
        self.insert_avoiding(kind, value, "")
    }

    /// `insert`, but a new placeholder is never one that already occurs in `text` (the request's
    /// own words): otherwise rehydration would turn that literal text into the PII value.
    pub fn insert_avoiding(&mut self, kind: PiiKind, value: &str, text: &str) -> &str {
        let h = self.hasher.hash_one((kind as u8, value));
        let found = self.entries.iter().position(|e| {
            e.kind == kind
                && e.value_hash == h
                && self
                    .decrypt_entry(e)
                    .is_some_and(|v| v.as_slice() == value.as_bytes())
        });
        let idx = match found {
            Some(i) => i,
            None => {
                let idx = self.entries.len();
                let nonce = nonce_for(idx);
                let ciphertext = self
                    .cipher
                    .encrypt(Nonce::from_slice(&nonce), value.as_bytes())
                    .unwrap_or_else(|_| {
                        unreachable!("AES-GCM encryption of a short buffer cannot fail")
                    });
                let slot = &mut self.counts[kind as usize];
                *slot += 1;
                let mut ph = placeholder(kind, *slot);
                // Bounded: placeholder numbers wrap for some kinds; give up rather than spin.
                let mut tries = 0;
                while !text.is_empty() && text.contains(ph.as_str()) && tries < 10_000 {
                    *slot += 1;
                    tries += 1;
                    ph = placeholder(kind, *slot);
                }
                self.entries.push(Entry {
                    placeholder: ph,
                    kind,
                    value_hash: h,
                    ciphertext,
                });
                idx
            }
        };
        &self.entries[idx].placeholder
    }

    fn decrypt_entry(&self, e: &Entry) -> Option<Zeroizing<Vec<u8>>> {
        let idx = self.entries.iter().position(|x| std::ptr::eq(x, e))?;
        self.cipher
            .decrypt(Nonce::from_slice(&nonce_for(idx)), e.ciphertext.as_slice())
            .ok()
            .map(Zeroizing::new)
    }

    /// The original for placeholder number `index` (as listed by `placeholders`).
    pub(crate) fn original(&self, index: usize) -> Option<Zeroizing<Vec<u8>>> {
        let e = self.entries.get(index)?;
        self.cipher
            .decrypt(
                Nonce::from_slice(&nonce_for(index)),
                e.ciphertext.as_slice(),
            )
            .ok()
            .map(Zeroizing::new)
    }

    /// The placeholders in insertion order.
    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.placeholder.as_str())
    }

    /// Replaces every placeholder in a whole response body with its original. The body is
    /// treated as JSON: inside a JSON string the original is escaped once, and inside a string
    /// within a tool call's `arguments` (JSON text carried in a JSON string) it is escaped twice.
    /// Non-JSON bodies pass through the same tracker and get originals verbatim outside strings.
    pub fn rehydrate(&self, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(body.len() + 64);
        if self.entries.is_empty() {
            out.extend_from_slice(body);
            return out;
        }
        let mut r = Rehydrator::new(self, JsonEscaper::json());
        r.push(body, &mut out);
        r.finish(&mut out);
        out
    }

    /// Replaces placeholders in plain text (no escaping).
    pub fn rehydrate_text(&self, text: &str) -> String {
        let mut out = Vec::with_capacity(text.len() + 64);
        let mut r = Rehydrator::new(self, JsonEscaper::raw());
        r.push(text.as_bytes(), &mut out);
        r.finish(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Replaces each span of `text` with its placeholder from `vault`. Spans must be sorted,
/// non-overlapping and on char boundaries (as `Scanner::scan` returns them); others are skipped.
pub fn scrub(text: &str, spans: &[PiiSpan], vault: &mut Vault) -> String {
    let mut out = String::with_capacity(text.len() + spans.len() * 8);
    let mut pos = 0;
    for s in spans {
        if s.start < pos
            || s.end > text.len()
            || s.start >= s.end
            || !text.is_char_boundary(s.start)
            || !text.is_char_boundary(s.end)
        {
            continue;
        }
        let value = &text[s.start..s.end];
        if is_placeholder(s.kind, value.as_bytes()) {
            continue;
        }
        out.push_str(&text[pos..s.start]);
        out.push_str(vault.insert_avoiding(s.kind, value, text));
        pos = s.end;
    }
    out.push_str(&text[pos..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fuzz finding (scrub_roundtrip): the prompt already contained the text of the placeholder
    /// the next phone number would get; rehydration turned that literal into the phone number.
    #[test]
    fn placeholders_never_collide_with_text_already_in_the_prompt() {
        let mut v = Vault::new();
        let text = "call +1 555 0100 or +1-555-0101";
        let start = text.find("+1 555").unwrap();
        let spans = [PiiSpan {
            start,
            end: start + "+1 555 0100".len(),
            kind: PiiKind::Phone,
        }];
        let scrubbed = scrub(text, &spans, &mut v);
        assert!(!scrubbed.contains("+1 555 0100"));
        assert_eq!(
            String::from_utf8(v.rehydrate(scrubbed.as_bytes())).unwrap(),
            text
        );
    }

    #[test]
    fn same_value_same_placeholder_and_kinds_are_shaped() {
        let mut v = Vault::new();
        let a = v.insert(PiiKind::Email, "a@b.example").to_string();
        let b = v.insert(PiiKind::Email, "c@d.example").to_string();
        let a2 = v.insert(PiiKind::Email, "a@b.example").to_string();
        assert_eq!(a, a2);
        assert_ne!(a, b);
        assert_eq!(v.len(), 2);
        assert_eq!(a, "user_0001@redacted.example");
        for k in PiiKind::ALL {
            let p1 = placeholder(k, 1);
            let p12 = placeholder(k, 12);
            assert!(is_placeholder(k, p1.as_bytes()), "{p1}");
            assert!(
                !p12.starts_with(&p1) && !p1.starts_with(&p12),
                "{p1} / {p12}"
            );
        }
    }

    #[test]
    fn debug_never_shows_values() {
        let mut v = Vault::new();
        v.insert(PiiKind::Password, "hunter2-secret");
        assert!(!format!("{v:?}").contains("hunter2"));
        assert!(!v.entries[0].ciphertext.windows(7).any(|w| w == b"hunter2"));
    }

    #[test]
    fn scrub_then_rehydrate_round_trips() {
        let text = "mail a@b.example or a@b.example, pw p\"q\\r";
        let spans = [
            PiiSpan {
                start: 5,
                end: 16,
                kind: PiiKind::Email,
            },
            PiiSpan {
                start: 20,
                end: 31,
                kind: PiiKind::Email,
            },
            PiiSpan {
                start: 36,
                end: 41,
                kind: PiiKind::Password,
            },
        ];
        let mut v = Vault::new();
        let s = scrub(text, &spans, &mut v);
        assert_eq!(
            s,
            "mail user_0001@redacted.example or user_0001@redacted.example, pw redacted_pw_0001"
        );
        assert_eq!(v.rehydrate_text(&s), text);
        // inside JSON the original is escaped
        let body = format!("{{\"content\":\"{s}\"}}");
        let got = v.rehydrate(body.as_bytes());
        let parsed: serde_json::Value = serde_json::from_slice(&got).unwrap();
        assert_eq!(parsed["content"], text);
    }

    #[test]
    fn tool_call_arguments_are_escaped_twice() {
        let mut v = Vault::new();
        let pw = "a\"b\\c";
        let ph = v.insert(PiiKind::Password, pw).to_string();
        let args = serde_json::json!({"password": ph, "note": format!("see {ph}")}).to_string();
        let body = serde_json::json!({"choices": [{"message": {"tool_calls": [{"function": {"name": "f", "arguments": args}}]}}], "x": ph}).to_string();
        let got = v.rehydrate(body.as_bytes());
        let outer: serde_json::Value = serde_json::from_slice(&got).unwrap();
        assert_eq!(outer["x"], pw);
        let inner: serde_json::Value = serde_json::from_str(
            outer["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(inner["password"], pw);
        assert_eq!(inner["note"], format!("see {pw}"));
    }
}
