//! Fuzz the classifier's WordPiece tokenizer against `tokenizers` itself: for any text (special
//! tokens' texts included) its ids equal `tokenizers`' exactly.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::{Mutex, OnceLock};
use tierflow::classifier::wordpiece::BertWordPiece;
use tokenizers::Tokenizer;

static TOKENIZER_JSON: &[u8] = include_bytes!("../../models/tokenizer.json");
static BOTH: OnceLock<Mutex<(BertWordPiece, Tokenizer)>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    // Prompts reach the tokenizer cut to 4 KB (`PRE_TOKENIZE_MAX_BYTES`); any bytes, made text.
    let text = String::from_utf8_lossy(&data[..data.len().min(4096)]);
    let both = BOTH.get_or_init(|| {
        let fast = BertWordPiece::from_json(TOKENIZER_JSON).expect("BERT WordPiece");
        let mut slow = Tokenizer::from_bytes(TOKENIZER_JSON).expect("tokenizer");
        slow.with_truncation(None).expect("no truncation");
        slow.with_padding(None);
        Mutex::new((fast, slow))
    });
    let mut guard = both.lock().unwrap_or_else(|e| e.into_inner());
    let (fast, slow) = &mut *guard;
    let mut got = Vec::new();
    fast.encode(&text, &mut got);
    let want = slow.encode(text.as_ref(), true).expect("tokenizers encodes any text");
    assert_eq!(got, want.get_ids(), "{text:?}");
});
