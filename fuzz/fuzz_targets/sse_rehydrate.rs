//! The gateway's SSE rehydrator: any split of a scrubbed answer into OpenAI delta events gives
//! back exactly the whole text with originals restored.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tierflow::pipeline::security::SseRehydrator;
use tierflow::scanner::{PiiKind, Vault};

fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else { return };
    let Ok(s) = std::str::from_utf8(rest) else { return };
    let mut vault = Vault::new();
    let e = vault.insert(PiiKind::Email, "a\"b@c.example").to_string();
    let c = vault.insert(PiiKind::CreditCard, "1234 5678 9").to_string();
    let scrubbed = format!("{s}{e} {s}{c}{}", &e[..e.len() / 2]);
    let expected = vault.rehydrate_text(&scrubbed);
    let step = usize::from(step % 11) + 1;
    let mut r = SseRehydrator::new(&vault, false);
    let mut out = Vec::new();
    let mut at = 0;
    while at < scrubbed.len() {
        let mut end = (at + step).min(scrubbed.len());
        while !scrubbed.is_char_boundary(end) {
            end += 1;
        }
        let ev = serde_json::json!({"choices": [{"index": 0, "delta": {"content": &scrubbed[at..end]}, "finish_reason": null}]});
        r.event(b"", ev.to_string().as_bytes(), &mut out);
        at = end;
    }
    r.event(b"", b"[DONE]", &mut out);
    let mut got = String::new();
    for (_, d) in &out {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(d) {
            got.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
        }
    }
    assert_eq!(got, expected);
});
