//! Compress stage: CtxPack (`crate::compress`) over the text of each `messages` variant a target
//! may receive (client text, PII-scrubbed text, and the Anthropic client's own body), with the
//! passes the request's category enables. Runs after scrubbing: every placeholder of the request's
//! vault is a protected range, so it reaches the upstream byte-identical and rehydrates. A variant
//! is rewritten only when its text shrank; otherwise the original bytes are forwarded untouched.

use std::ops::Range;

use crate::compress::{compress_with_history, CompressConfig, DedupHistory, Pass, PassSavings};
use crate::scanner::Vault;

/// One rewritten `messages` array and what it saved.
#[derive(Debug, Clone)]
pub struct Packed {
    pub messages: Vec<u8>,
    pub saved: Saved,
}

/// What compression saved on one `messages` variant: bytes of message text (not of JSON), the
/// token estimate (bytes / 4 per text, as `prompt_tokens_estimate` counts), and bytes per pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Saved {
    pub bytes: u64,
    pub tokens: u64,
    pub per_pass: PassSavings,
}

impl Saved {
    /// The passes that removed something, in run order.
    pub fn passes(&self) -> impl Iterator<Item = Pass> + '_ {
        Pass::ALL.into_iter().filter(|p| self.per_pass.get(*p) > 0)
    }
}

/// The `messages` inputs of one request (`None`: that variant is not sent).
#[derive(Debug, Clone, Copy, Default)]
pub struct Inputs<'a> {
    /// What targets without scrubbing get (the client's, or with a forcing prefix stripped).
    pub plain: Option<&'a [u8]>,
    /// The scrubbed text, for providers with `pii: true`.
    pub pii: Option<&'a [u8]>,
    /// An Anthropic client's own `messages`, for Anthropic upstreams.
    pub anthropic_plain: Option<&'a [u8]>,
    pub anthropic_pii: Option<&'a [u8]>,
}

/// The rewritten variants (`None`: unchanged, forward the input).
#[derive(Debug, Clone, Default)]
pub struct Variants {
    pub plain: Option<Packed>,
    pub pii: Option<Packed>,
    pub anthropic_plain: Option<Packed>,
    pub anthropic_pii: Option<Packed>,
}

/// The compressed `messages` of a variant when compression shrank it, else `uncompressed`.
pub fn or_uncompressed<'a>(
    packed: &'a Option<Packed>,
    uncompressed: Option<&'a [u8]>,
) -> Option<&'a [u8]> {
    packed
        .as_ref()
        .map(|p| p.messages.as_slice())
        .or(uncompressed)
}

impl Variants {
    /// What the variant sent to the chosen target saved (`None`: nothing).
    pub fn sent(&self, anthropic_body: bool, scrubbed: bool) -> Option<Saved> {
        let v = match (anthropic_body, scrubbed) {
            (false, false) => &self.plain,
            (false, true) => &self.pii,
            (true, false) => &self.anthropic_plain,
            (true, true) => &self.anthropic_pii,
        };
        v.as_ref().map(|p| p.saved)
    }
}

/// Compresses every given variant with `cfg`; placeholders of `vault` are protected in the
/// scrubbed ones.
/// `vault` is the request's vault when it was scrubbed (the `pii` variants exist only then).
pub fn pack(cfg: &CompressConfig, inputs: &Inputs<'_>, vault: Option<&Vault>) -> Variants {
    Variants {
        plain: inputs.plain.and_then(|m| compress_messages(m, cfg, None)),
        pii: inputs.pii.and_then(|m| compress_messages(m, cfg, vault)),
        anthropic_plain: inputs
            .anthropic_plain
            .and_then(|m| compress_messages(m, cfg, None)),
        anthropic_pii: inputs
            .anthropic_pii
            .and_then(|m| compress_messages(m, cfg, vault)),
    }
}

/// Compresses the `content` strings and `text` parts of a `messages` array (OpenAI or Anthropic
/// shape, any depth; tool-call `arguments` and every other field untouched), in order, so
/// `dedup` can refer to blocks of earlier messages. `None` when the array does not parse or no
/// text shrank. With `vault`, each occurrence of one of its placeholders is left byte-identical.
pub fn compress_messages(
    messages_json: &[u8],
    cfg: &CompressConfig,
    vault: Option<&Vault>,
) -> Option<Packed> {
    // Every pass needs a line break, an escape or a CR, all of which JSON escapes with `\`:
    // a body without one (a short question) is left alone without parsing it.
    memchr::memchr(b'\\', messages_json)?;
    let mut v: serde_json::Value = serde_json::from_slice(messages_json).ok()?;
    let placeholders: Vec<&str> = vault
        .map(|v| v.placeholders().filter(|p| !p.is_empty()).collect())
        .unwrap_or_default();
    let mut walk = Walk {
        cfg,
        placeholders: &placeholders,
        history: DedupHistory::default(),
        saved: Saved::default(),
    };
    walk.value(&mut v, false);
    if walk.saved.bytes == 0 {
        return None;
    }
    let messages = serde_json::to_vec(&v).ok()?;
    Some(Packed {
        messages,
        saved: walk.saved,
    })
}

struct Walk<'a> {
    cfg: &'a CompressConfig,
    placeholders: &'a [&'a str],
    history: DedupHistory,
    saved: Saved,
}

impl Walk<'_> {
    fn value(&mut self, v: &mut serde_json::Value, text_key: bool) {
        match v {
            serde_json::Value::String(s) if text_key => self.text(s),
            serde_json::Value::Array(a) => {
                for x in a {
                    self.value(x, text_key);
                }
            }
            serde_json::Value::Object(o) => {
                for (k, x) in o.iter_mut() {
                    // Tool-call records (OpenAI `arguments`, Anthropic `tool_use.input`) are the
                    // model's own past calls, data for a tool: never rewritten, even where they
                    // hold a `content` field (a file a tool wrote).
                    if matches!(
                        k.as_str(),
                        "tool_calls" | "function_call" | "function" | "arguments" | "input"
                    ) {
                        continue;
                    }
                    let t = matches!(k.as_str(), "content" | "text");
                    self.value(x, t);
                }
            }
            _ => {}
        }
    }

    fn text(&mut self, s: &mut String) {
        let protect = placeholder_ranges(s, self.placeholders);
        let (out, sv) = compress_with_history(s, self.cfg, &protect, &mut self.history);
        if sv.bytes_after >= sv.bytes_before {
            return;
        }
        self.saved.bytes += (sv.bytes_before - sv.bytes_after) as u64;
        self.saved.tokens += sv.est_tokens_saved as u64;
        for p in Pass::ALL {
            self.saved.per_pass.add(p, sv.per_pass.get(p));
        }
        *s = out.into_owned();
    }
}

/// Appends the compression families to a /stats text: per pass the message-text bytes removed
/// and their token estimate (bytes / 4), and the requests compression shrank.
pub fn render_stats(s: &mut String, counters: &[std::sync::Arc<super::account::WorkerCounters>]) {
    use std::fmt::Write;
    let per_pass = |p: Pass| -> u64 {
        counters
            .iter()
            .filter_map(|c| c.compression_saved_bytes.get(p.index()))
            .map(|c| c.get())
            .sum()
    };
    for (name, help, div) in [
        (
            "tierflow_compression_saved_tokens_total",
            "Estimated prompt tokens (bytes / 4) context compression removed, by pass.",
            4,
        ),
        (
            "tierflow_compression_saved_bytes_total",
            "Message-text bytes context compression removed, by pass.",
            1,
        ),
    ] {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter");
        for p in Pass::ALL {
            let _ = writeln!(s, "{name}{{pass=\"{}\"}} {}", p.as_str(), per_pass(p) / div);
        }
    }
    let n: u64 = counters.iter().map(|c| c.compressed_requests.get()).sum();
    let _ = writeln!(
        s,
        "# HELP tierflow_compression_requests_total Requests whose message text compression shrank.\n# TYPE tierflow_compression_requests_total counter\ntierflow_compression_requests_total {n}"
    );
}

/// Byte ranges of every occurrence of each placeholder in `text`.
fn placeholder_ranges(text: &str, placeholders: &[&str]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    for p in placeholders {
        for at in memchr::memmem::find_iter(text.as_bytes(), p.as_bytes()) {
            out.push(at..at + p.len());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scanner::PiiKind;
    use serde_json::json;

    fn all_passes() -> CompressConfig {
        CompressConfig::default()
    }

    #[test]
    fn short_or_clean_messages_are_left_alone() {
        let m = serde_json::to_vec(&json!([{"role": "user", "content": "hello"}])).unwrap();
        assert!(compress_messages(&m, &all_passes(), None).is_none());
        let m = serde_json::to_vec(&json!([{"role": "user", "content": "line one\nline two"}]))
            .unwrap();
        assert!(compress_messages(&m, &all_passes(), None).is_none());
        assert!(compress_messages(b"[not json\\n", &all_passes(), None).is_none());
    }

    #[test]
    fn text_fields_shrink_and_other_fields_stay() {
        let log = "\u{1b}[32mok\u{1b}[0m test a   \n\n\n\n\n\u{1b}[31mFAIL\u{1b}[0m test b\n";
        let args = "{\n  \"path\": \"a   \\n\\n\\n\\n\"\n}";
        let m = json!([
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "run", "arguments": args}}]},
            {"role": "tool", "tool_call_id": "c1", "content": log},
            {"role": "user", "content": [{"type": "text", "text": log}, {"type": "image_url", "image_url": {"url": "data:x\n\n\n\n\n"}}]}
        ]);
        let p = compress_messages(&serde_json::to_vec(&m).unwrap(), &all_passes(), None).unwrap();
        let out: serde_json::Value = serde_json::from_slice(&p.messages).unwrap();
        assert_eq!(out[0]["tool_calls"][0]["function"]["arguments"], args);
        assert_eq!(out[1]["content"], "ok test a\n\n\nFAIL test b\n");
        assert_eq!(out[2]["content"][0]["text"], "ok test a\n\n\nFAIL test b\n");
        assert_eq!(out[2]["content"][1]["image_url"]["url"], "data:x\n\n\n\n\n");
        // An Anthropic tool_use block's input (here a file a tool wrote) is never rewritten.
        let m = json!([{"role": "assistant", "content": [
            {"type": "tool_use", "id": "t1", "name": "write", "input": {"path": "a.py", "content": log}},
            {"type": "text", "text": log}
        ]}]);
        let p2 = compress_messages(&serde_json::to_vec(&m).unwrap(), &all_passes(), None).unwrap();
        let out2: serde_json::Value = serde_json::from_slice(&p2.messages).unwrap();
        assert_eq!(out2[0]["content"][0]["input"]["content"], log);
        assert_eq!(
            out2[0]["content"][1]["text"],
            "ok test a\n\n\nFAIL test b\n"
        );
        assert_eq!(out[1]["tool_call_id"], "c1");
        let before = log.len() as u64 * 2;
        assert_eq!(
            p.saved.bytes,
            before - 2 * "ok test a\n\n\nFAIL test b\n".len() as u64
        );
        assert!(p.saved.tokens > 0 && p.saved.per_pass.ansi > 0 && p.saved.per_pass.whitespace > 0);
        assert_eq!(
            p.saved.passes().map(Pass::as_str).collect::<Vec<_>>(),
            ["ansi", "whitespace"]
        );
    }

    #[test]
    fn vault_placeholders_are_never_touched() {
        let mut vault = Vault::new();
        let ph = vault.insert(PiiKind::ApiKey, "not-a-real-key").to_string();
        // The placeholder sits where whitespace would be trimmed and inside a repeated frame.
        let text = format!(
            "token {ph}   \n\n\n\n\n{}  at f (x.js:1:1) {ph}\n",
            "  at f (x.js:1:1)\n".repeat(4)
        );
        let m = serde_json::to_vec(&json!([{"role": "user", "content": text}])).unwrap();
        let p = compress_messages(&m, &all_passes(), Some(&vault)).unwrap();
        let out: serde_json::Value = serde_json::from_slice(&p.messages).unwrap();
        let s = out[0]["content"].as_str().unwrap();
        assert!(s.contains(&format!("token {ph}\n")), "{s:?}");
        assert!(s.contains(&format!("  at f (x.js:1:1) {ph}\n")), "{s:?}");
        assert_eq!(s.matches(ph.as_str()).count(), 2);
        assert!(s.contains("[… 3 identical frames]"), "{s:?}");
    }

    #[test]
    fn dedup_refers_to_earlier_messages() {
        let file = format!(
            "```python\n{}```\n",
            "def f(x):\n    return x * 2 + 1  # long enough\n".repeat(4)
        );
        let m = json!([
            {"role": "user", "content": format!("here:\n\n{file}")},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": format!("again:\n\n{file}")}
        ]);
        let p = compress_messages(&serde_json::to_vec(&m).unwrap(), &all_passes(), None).unwrap();
        let out: serde_json::Value = serde_json::from_slice(&p.messages).unwrap();
        assert_eq!(out[0]["content"], m[0]["content"]);
        assert!(out[2]["content"]
            .as_str()
            .unwrap()
            .contains("[identical to a block in an earlier message: def f(x):…]"));
        assert!(p.saved.per_pass.dedup > 0);
    }

    #[test]
    fn variants_report_what_was_sent() {
        let m =
            serde_json::to_vec(&json!([{"role": "user", "content": "a   \n\n\n\n\nb"}])).unwrap();
        let v = pack(
            &all_passes(),
            &Inputs {
                plain: Some(&m),
                ..Inputs::default()
            },
            Some(&Vault::new()),
        );
        assert!(v.sent(false, false).is_some_and(|s| s.bytes == 5));
        assert!(v.sent(false, true).is_none() && v.sent(true, false).is_none());
    }
}
