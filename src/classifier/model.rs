//! The ONNX router model and its tokenizer: load (from a directory, bytes, or embedded),
//! head+tail truncation to the model window, batched inference with one optimised tract plan per
//! padded sequence-length bucket. Owned by the classifier thread; batching/queueing is `batcher`'s.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;
use tract_onnx::prelude::*;

use super::input::push_head_tail;
use super::wordpiece::BertWordPiece;

/// One model answer: category probabilities in `Category::ALL` order and the probability that
/// the request needs a strong model (difficulty).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelOutput {
    pub probs: [f32; 8],
    pub strong_prob: f32,
}

/// Loading or running the model failed.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tokenizer.json: {detail}")]
    Tokenizer { detail: String },
    #[error("router.onnx: {detail}")]
    Onnx { detail: String },
    #[error("router.onnx does not honour the IO contract: {detail}")]
    Contract { detail: String },
    #[error("inference failed: {detail}")]
    Run { detail: String },
}

/// Model window in tokens (the IO contract: seq <= 128).
pub const MAX_SEQ_TOKENS: usize = 128;
/// Tokens kept from the head of an over-long text; the rest of the window comes from its tail.
pub const DEFAULT_HEAD_TOKENS: usize = 64;
/// Padded sequence lengths, one optimised plan each: short prompts do not pay for 128 tokens.
const SEQ_BUCKETS: [usize; 4] = [16, 32, 64, 128];
/// Texts are cut (head+tail) to this many bytes before tokenizing: enough for 128 tokens of any
/// script, and tokenizing a 1 MB prompt would cost milliseconds.
const PRE_TOKENIZE_MAX_BYTES: usize = 4096;

const INPUT_NAMES: [&str; 2] = ["input_ids", "attention_mask"];
const OUTPUT_NAMES: [&str; 2] = ["category_probs", "strong_prob"];

struct Plan {
    seq_tokens: usize,
    state: TypedSimpleState,
}

/// Tokenizer + router model. `!Sync` by intent: one thread (the classifier core) owns it.
pub struct Model {
    tokenizer: Tok,
    plans: Vec<Plan>,
    pad_id: i64,
    head_tokens: usize,
    // Reused per batch.
    cut: String,
    token_rows: Vec<Vec<u32>>,
    ids: Vec<i64>,
    mask: Vec<i64>,
}

impl Model {
    /// Loads `tokenizer.json` and `router.onnx` from `dir`.
    pub fn load_dir(dir: impl AsRef<Path>) -> Result<Model, ModelError> {
        let dir = dir.as_ref();
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| ModelError::Io { path, source })
        };
        Model::from_bytes(&read("router.onnx")?, &read("tokenizer.json")?)
    }

    /// The model and tokenizer compiled into the binary from `models/` at the crate root.
    pub fn embedded() -> Result<Model, ModelError> {
        static ONNX: &[u8] = include_bytes!("../../models/router.onnx");
        static TOKENIZER: &[u8] = include_bytes!("../../models/tokenizer.json");
        let model = Model::from_bytes(ONNX, TOKENIZER);
        // Both were parsed into owned structures: their pages of the binary need not stay
        // resident (a reload reads them again from the executable file).
        crate::runtime::release_read_only(ONNX);
        crate::runtime::release_read_only(TOKENIZER);
        model
    }

    /// Builds the model from the bytes of `router.onnx` and `tokenizer.json`, checks the IO
    /// contract and optimises one plan per sequence bucket (batch stays symbolic).
    pub fn from_bytes(onnx: &[u8], tokenizer_json: &[u8]) -> Result<Model, ModelError> {
        let mut full =
            Tokenizer::from_bytes(tokenizer_json).map_err(|e| ModelError::Tokenizer {
                detail: e.to_string(),
            })?;
        // Truncation and padding are ours (head+tail, bucketed); the file's settings would fight them.
        full.with_truncation(None)
            .map_err(|e| ModelError::Tokenizer {
                detail: e.to_string(),
            })?;
        let pad_id = full
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| full.token_to_id("[PAD]"))
            .or_else(|| full.token_to_id("<pad>"))
            .unwrap_or(0) as i64;
        full.with_padding(None);
        let tokenizer = Tok::choose(tokenizer_json, full);

        let onnx_err = |e: TractError| ModelError::Onnx {
            detail: format!("{e:#}"),
        };
        let mut model = tract_onnx::onnx()
            .model_for_read(&mut &*onnx)
            .map_err(onnx_err)?;
        model = model
            .with_input_names(INPUT_NAMES)
            .map_err(|e| ModelError::Contract {
                detail: format!("inputs: {e:#}"),
            })?
            .with_outputs_by_name(OUTPUT_NAMES)
            .map_err(|e| ModelError::Contract {
                detail: format!("outputs: {e:#}"),
            })?;
        let batch = model.symbols.sym("tierflow_batch");
        let seq = model.symbols.sym("tierflow_seq");
        for ix in 0..2 {
            let fact =
                InferenceFact::dt_shape(i64::datum_type(), tvec!(batch.to_dim(), seq.to_dim()));
            model.set_input_fact(ix, fact).map_err(onnx_err)?;
        }
        let mut typed = model
            .into_typed()
            .map_err(onnx_err)?
            .into_decluttered()
            .map_err(onnx_err)?;
        check_output_facts(&typed)?;
        // tract's generic ReduceMax was a third of the inference time (see `seqmax`).
        super::seqmax::replace_reduce_max(&mut typed).map_err(onnx_err)?;

        let mut plans = Vec::with_capacity(SEQ_BUCKETS.len());
        for seq_tokens in SEQ_BUCKETS {
            let subs: HashMap<Symbol, TDim> =
                HashMap::from([(seq.clone(), (seq_tokens as i64).into())]);
            let runnable = typed
                .set_symbols(&subs)
                .and_then(|m| m.into_optimized())
                .and_then(|m| m.into_runnable())
                .map_err(onnx_err)?;
            let state = runnable.spawn().map_err(onnx_err)?;
            plans.push(Plan { seq_tokens, state });
        }
        Ok(Model {
            tokenizer,
            plans,
            pad_id,
            head_tokens: DEFAULT_HEAD_TOKENS,
            cut: String::with_capacity(PRE_TOKENIZE_MAX_BYTES),
            token_rows: Vec::new(),
            ids: Vec::new(),
            mask: Vec::new(),
        })
    }

    /// How many of the `MAX_SEQ_TOKENS` come from the head of an over-long text (the rest from
    /// its tail). Must match what the model was trained with (models/README.md).
    pub fn set_head_tokens(&mut self, head_tokens: usize) {
        self.head_tokens = head_tokens.clamp(1, MAX_SEQ_TOKENS - 1);
    }

    /// Token ids the model sees for `text`: special tokens included, at most `MAX_SEQ_TOKENS`,
    /// head+tail cut when longer (keeps the leading [CLS] and the trailing [SEP]).
    pub fn token_ids(&mut self, text: &str) -> Result<Vec<u32>, ModelError> {
        let mut row = Vec::with_capacity(MAX_SEQ_TOKENS);
        self.tokenize_into(text, &mut row)?;
        Ok(row)
    }

    fn tokenize_into(&mut self, text: &str, row: &mut Vec<u32>) -> Result<(), ModelError> {
        self.cut.clear();
        push_head_tail(&mut self.cut, text, PRE_TOKENIZE_MAX_BYTES);
        row.clear();
        match &mut self.tokenizer {
            Tok::Fast(fast) => fast.encode(&self.cut, row),
            Tok::Full(full) => {
                let enc = full.encode_fast(self.cut.as_str(), true).map_err(|e| {
                    ModelError::Tokenizer {
                        detail: e.to_string(),
                    }
                })?;
                row.extend_from_slice(enc.get_ids());
            }
        }
        cut_head_tail_in_place(row, self.head_tokens, MAX_SEQ_TOKENS);
        Ok(())
    }

    /// Tokenizes and runs `texts` as one batch. Answers are in input order. An empty slice
    /// gives an empty answer without running the model.
    pub fn predict_batch(&mut self, texts: &[&str]) -> Result<Vec<ModelOutput>, ModelError> {
        let n = texts.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut rows = std::mem::take(&mut self.token_rows);
        rows.resize_with(n.max(rows.len()), || Vec::with_capacity(MAX_SEQ_TOKENS));
        let mut longest = 1;
        for (text, row) in texts.iter().zip(rows.iter_mut()) {
            if let Err(e) = self.tokenize_into(text, row) {
                self.token_rows = rows;
                return Err(e);
            }
            longest = longest.max(row.len());
        }
        let result = self.run_rows(&rows[..n], longest);
        self.token_rows = rows;
        result
    }

    fn run_rows(
        &mut self,
        rows: &[Vec<u32>],
        longest: usize,
    ) -> Result<Vec<ModelOutput>, ModelError> {
        let n = rows.len();
        let plan_ix = self
            .plans
            .iter()
            .position(|p| p.seq_tokens >= longest)
            .unwrap_or(self.plans.len() - 1);
        let seq = self.plans[plan_ix].seq_tokens;
        self.ids.clear();
        self.mask.clear();
        for row in rows {
            let take = row.len().min(seq);
            self.ids.extend(row[..take].iter().map(|&t| t as i64));
            self.ids
                .extend(std::iter::repeat_n(self.pad_id, seq - take));
            self.mask.extend(std::iter::repeat_n(1i64, take));
            self.mask.extend(std::iter::repeat_n(0i64, seq - take));
        }
        let run_err = |e: TractError| ModelError::Run {
            detail: format!("{e:#}"),
        };
        let ids = Tensor::from_shape(&[n, seq], &self.ids).map_err(run_err)?;
        let mask = Tensor::from_shape(&[n, seq], &self.mask).map_err(run_err)?;
        let outputs = self.plans[plan_ix]
            .state
            .run(tvec!(ids.into_tvalue(), mask.into_tvalue()))
            .map_err(run_err)?;
        let probs = outputs[0].to_plain_array_view::<f32>().map_err(run_err)?;
        let strong = outputs[1].to_plain_array_view::<f32>().map_err(run_err)?;
        if probs.shape() != [n, 8] || strong.len() != n {
            return Err(ModelError::Contract {
                detail: format!(
                    "got shapes {:?} and {:?} for batch {n}",
                    probs.shape(),
                    strong.shape()
                ),
            });
        }
        let probs = probs.as_slice().ok_or_else(|| ModelError::Run {
            detail: "non-contiguous output".into(),
        })?;
        let strong: Vec<f32> = strong.iter().copied().collect();
        Ok((0..n)
            .map(|i| {
                let mut p = [0f32; 8];
                p.copy_from_slice(&probs[i * 8..i * 8 + 8]);
                ModelOutput {
                    probs: p,
                    strong_prob: strong[i],
                }
            })
            .collect())
    }
}

fn check_output_facts(model: &TypedModel) -> Result<(), ModelError> {
    let contract = |detail: String| ModelError::Contract { detail };
    let probs = model
        .output_fact(0)
        .map_err(|e| contract(format!("{e:#}")))?;
    let strong = model
        .output_fact(1)
        .map_err(|e| contract(format!("{e:#}")))?;
    if probs.datum_type != f32::datum_type() || strong.datum_type != f32::datum_type() {
        return Err(contract("outputs must be f32".into()));
    }
    if probs.rank() != 2 || probs.shape[1] != 8.to_dim() {
        return Err(contract(format!(
            "category_probs must be [batch, 8], is {:?}",
            probs.shape
        )));
    }
    if strong.rank() != 1 {
        return Err(contract(format!(
            "strong_prob must be [batch], is {:?}",
            strong.shape
        )));
    }
    Ok(())
}

/// The tokenizer a model runs. `tokenizers` loads tokenizer.json and defines the ids; when the
/// file is the plain BERT uncased WordPiece layout and `BertWordPiece` reproduces `tokenizers`'
/// ids on [`PROBES`], the fast path is kept and `tokenizers`' structures are dropped (~10 MB
/// resident, and ~100 µs less per prompt); otherwise `tokenizers` tokenizes every prompt.
enum Tok {
    Fast(BertWordPiece),
    Full(Box<Tokenizer>),
}

/// Texts both tokenizers must agree on before the fast one is trusted: ASCII prose and code,
/// accents, CJK, controls, and special tokens' texts inside a prompt.
const PROBES: &[&str] = &[
    "Hello, World! def f(x): return x**2  # e.g. a+b=c; {json: \"x\"} `code` ~^|\\@#%&*_",
    "Café crème brûlée — İstanbul'da IŞIK; Größe ΣΊΣΥΦΟΣ σοφός ς Привет, мир!",
    "東京タワーは高い。北京欢迎你！한국어 문장 مرحبا हिन्दी ﬁ ① ｆｕｌｌ 😀 👩‍💻",
    "ctrl\u{1}a\u{7f}b zero\u{200b}width e\u{301} xs[0] job[4412] [sep] [SEP] x[CLS]y [MASK]",
    "Supercalifragilisticexpialidocious antidisestablishmentarianism 1234567890 3.14e-10",
];

impl Tok {
    fn choose(json: &[u8], full: Tokenizer) -> Tok {
        let Some(mut fast) = BertWordPiece::from_json(json) else {
            return Tok::Full(Box::new(full));
        };
        let agree = PROBES.iter().all(|p| {
            let mut got = Vec::new();
            fast.encode(p, &mut got);
            full.encode(*p, true)
                .is_ok_and(|e| e.get_ids() == got.as_slice())
        });
        if agree {
            Tok::Fast(fast)
        } else {
            Tok::Full(Box::new(full))
        }
    }
}

/// Keeps `ids` whole when it fits in `window`, else its first `head` and last `window - head`
/// tokens (the [CLS] opener and the [SEP] closer survive the cut); the copying reference of
/// `cut_head_tail_in_place`.
#[cfg(test)]
pub fn head_tail_tokens(ids: &[u32], head: usize, window: usize, out: &mut Vec<u32>) {
    if ids.len() <= window {
        out.extend_from_slice(ids);
        return;
    }
    let head = head.min(window);
    out.extend_from_slice(&ids[..head]);
    out.extend_from_slice(&ids[ids.len() - (window - head)..]);
}

fn cut_head_tail_in_place(ids: &mut Vec<u32>, head: usize, window: usize) {
    if ids.len() > window {
        let head = head.min(window);
        let tail_start = ids.len() - (window - head);
        ids.copy_within(tail_start.., head);
        ids.truncate(window);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/classifier")
    }

    #[test]
    fn shipped_tokenizer_runs_on_the_fast_path() {
        let m = Model::embedded().expect("embedded model");
        assert!(matches!(m.tokenizer, Tok::Fast(_)));
        // a tokenizer.json that is not plain BERT WordPiece keeps `tokenizers`
        let json = std::fs::read(testdata().join("tokenizer.json")).expect("fixture tokenizer");
        let full = Tokenizer::from_bytes(&json).expect("tokenizer");
        let mut broken: serde_json::Value = serde_json::from_slice(&json).expect("json");
        broken["normalizer"]["lowercase"] = false.into();
        let broken = serde_json::to_vec(&broken).expect("json");
        assert!(matches!(Tok::choose(&broken, full), Tok::Full(_)));
    }

    #[test]
    fn head_tail_token_cut() {
        let ids: Vec<u32> = (0..300).collect();
        let mut out = Vec::new();
        head_tail_tokens(&ids, 64, 128, &mut out);
        assert_eq!(out.len(), 128);
        assert_eq!(&out[..64], &ids[..64]);
        assert_eq!(&out[64..], &ids[300 - 64..]);
        out.clear();
        head_tail_tokens(&ids[..10], 96, 128, &mut out);
        assert_eq!(out, &ids[..10]);
    }

    #[test]
    fn loads_and_matches_onnxruntime_reference() {
        let mut model = Model::load_dir(testdata()).expect("test model loads");
        let reference: Vec<serde_json::Value> = serde_json::from_slice(
            &std::fs::read(testdata().join("reference.json")).expect("reference.json"),
        )
        .expect("json");
        let texts: Vec<String> = reference
            .iter()
            .map(|r| r["text"].as_str().unwrap_or("").to_string())
            .collect();
        let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
        // Batched together (padding + mask) and one by one must both match the unpadded reference.
        let batched = model.predict_batch(&refs).expect("predict");
        for (i, r) in reference.iter().enumerate() {
            let single = model.predict_batch(&refs[i..i + 1]).expect("predict");
            for out in [batched[i], single[0]] {
                for k in 0..8 {
                    let want = r["probs"][k].as_f64().unwrap_or(f64::NAN) as f32;
                    assert!(
                        (out.probs[k] - want).abs() < 1e-4,
                        "{}: {:?} vs {want}",
                        texts[i],
                        out.probs
                    );
                }
                let want = r["strong_prob"].as_f64().unwrap_or(f64::NAN) as f32;
                assert!((out.strong_prob - want).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn long_prompt_keeps_head_and_tail_tokens() {
        let mut model = Model::load_dir(testdata()).expect("load");
        let text = format!(
            "write python code {} what is the answer",
            "filler words here ".repeat(400)
        );
        let ids = model.token_ids(&text).expect("tokenize");
        assert_eq!(ids.len(), MAX_SEQ_TOKENS);
        let head = model.token_ids("write python code").expect("tokenize");
        let tail = model.token_ids("what is the answer").expect("tokenize");
        // [CLS] write python code ... / ... what is the answer [SEP]
        assert_eq!(&ids[..head.len() - 1], &head[..head.len() - 1]);
        assert_eq!(&ids[ids.len() - (tail.len() - 1)..], &tail[1..]);
    }

    #[test]
    fn fast_path_matches_tokenizers_exactly() {
        let json =
            std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/tokenizer.json"))
                .expect("read");
        let mut fast =
            BertWordPiece::from_json(&json).expect("models/tokenizer.json is BERT WordPiece");
        let mut slow = Tokenizer::from_bytes(&json).expect("tokenizer");
        slow.with_truncation(None).expect("no truncation");
        slow.with_padding(None);
        let mut texts: Vec<String> = vec![
            "Hello, World!".into(),
            "def f(x):\n    return x**2 # comment\r\n\tdone".into(),
            "Carl's $10.50 (approx.) -- e.g. a+b=c; {json: \"x\"} <tag/> `code` ~^|\\@#%&*_".into(),
            "Supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopic".into(),
            "x".repeat(150),
            "a".repeat(100),
            "CamelCaseIdentifiers snake_case_names kebab-case-words 1234567890 3.14159e-10".into(),
            "".into(),
            "   \n\n  ".into(),
        ];
        // A deterministic pseudo-random mix of printable ASCII.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in [10usize, 50, 200, 1000] {
            let t: String = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let c = (seed % 96) as u8 + 32;
                    if c == 127 {
                        ' '
                    } else {
                        c as char
                    }
                })
                .collect();
            texts.push(t);
        }
        // '[' that starts no special token is punctuation (code, logs), next to and inside words.
        texts.extend(
            [
                "fn f(xs: &[u32]) -> u32 { xs[0] + xs[i+1] }",
                "02:14:37 export-job[4412]: PUT s3://x -> 403 [warn] [[nested]] [CLS",
                "[",
                "a[",
                "[]",
                "[sep]x",
                "[ SEP ]",
                "[MASKED] [PADDING]",
            ]
            .map(String::from),
        );
        // Every script and the characters BertNormalizer treats specially: accents (NFD, marks
        // dropped), CJK ideographs (own words) next to kana and Hangul (NFD splits syllables),
        // controls and format characters (deleted), odd whitespace, Unicode punctuation, case
        // mappings to several chars (İ), ß, final sigma, emoji and ZWJ, the replacement char.
        texts.extend(
            [
                "Café crème brûlée, naïve façade — Ångström; Øresund «quoted» ¿qué? ¡sí!",
                "Größe der Straße: ÄÖÜ äöü — İstanbul'da IŞIK ılık; ΣΊΣΥΦΟΣ σοφός ς",
                "Привет, мир! Как дела? Ёлка — съешь же ещё этих мягких французских булок",
                "東京タワーは高い。北京欢迎你！한국어 문장입니다. 漢字とカタカナ、ひらがな。",
                "مرحبا بالعالم، كيف حالك؟ שלום עולם हिन्दी में नमस्ते। ภาษาไทย สวัสดี",
                "zero\u{200b}width\u{200d}joiner\u{2060}word\u{feff}bom \u{00ad}soft\u{00a0}nbsp\u{3000}ideo",
                "ctrl\u{1}a\u{7f}b\u{85}c\u{9f}d\u{0}e\u{fffd}f \u{e000}private \u{1f600}😀 👩‍💻 🇩🇪",
                "e\u{301}\u{302}\u{323} a\u{308}\u{331} ﬁﬂ ℌ ① ½ ㍿ Ⅻ ｆｕｌｌｗｉｄｔｈ ＡＢＣ１２３",
                "𠀀𠀁 𪜀 丽 ⺀ 〇 々 ー ・ 「」『』【】〔〕",
                "x̸̧̛̙̣͎͈͔̲̘̙̳͓̙̾̏͆̈́̇̄̉̋̍ zalgo ḁ̵̛͈͂ text",
            ]
            .map(String::from),
        );
        texts.push("é".repeat(101));
        texts.push("日本語".repeat(60));
        // A deterministic pseudo-random mix drawn from all of the above.
        let pool: Vec<char> = texts.iter().flat_map(|t| t.chars()).collect();
        for len in [5usize, 40, 300] {
            for _ in 0..20 {
                let t: String = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        pool[(seed % pool.len() as u64) as usize]
                    })
                    .collect();
                texts.push(t);
            }
        }
        // The labelled dev sets when they are beside the repo (../shared, /work/shared here):
        // thousands of real prompts in many languages.
        for root in ["../shared/data", "/work/shared/data"] {
            let mut found = false;
            for (file, key) in [
                ("routing/dev.jsonl", "prompt"),
                ("injection/dev.jsonl", "prompt"),
            ] {
                if let Ok(data) = std::fs::read_to_string(format!("{root}/{file}")) {
                    found = true;
                    for line in data.lines() {
                        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                            if let Some(p) = v[key].as_str() {
                                texts.push(p.to_string());
                            }
                        }
                    }
                }
            }
            if found {
                break;
            }
        }
        // Special tokens' texts are split out whole (exact case only), anywhere.
        texts.extend(
            [
                "a [SEP] b",
                "x[CLS]",
                "[mask] [MASK]ed",
                "日本 [SEP]",
                "[SEP][SEP]",
                "[PAD]x[UNK]y [CLS",
                "[[SEP]]",
                "é[MASK]ü",
            ]
            .map(String::from),
        );
        let (mut checked, mut unicode_checked) = (0, 0);
        for t in &texts {
            let mut got = Vec::new();
            fast.encode(t, &mut got);
            let want = slow.encode(t.as_str(), true).expect("encode");
            assert_eq!(got, want.get_ids(), "text {t:?}");
            checked += 1;
            unicode_checked += usize::from(!t.is_ascii());
        }
        eprintln!("fast path checked on {checked} texts, {unicode_checked} of them non-ASCII");
        assert!(
            unicode_checked >= 70,
            "{unicode_checked} non-ASCII texts checked"
        );
        assert!(
            checked >= 100,
            "fast path must handle ASCII and Unicode text, handled {checked}"
        );
        let mut out = Vec::new();
        fast.encode("a [SEP] b", &mut out);
        assert_eq!(out[2], 102, "[SEP] inside the text is its own id: {out:?}");
    }

    #[test]
    fn in_place_cut_equals_copying_cut() {
        let ids: Vec<u32> = (0..300).collect();
        let mut a = Vec::new();
        head_tail_tokens(&ids, 64, 128, &mut a);
        let mut b = ids.clone();
        cut_head_tail_in_place(&mut b, 64, 128);
        assert_eq!(a, b);
    }

    #[test]
    fn bad_inputs_never_panic() {
        let mut model = Model::load_dir(testdata()).expect("load");
        let big = "word ".repeat(200_000);
        let garbage: String = (0u32..20_000)
            .filter_map(|i| char::from_u32((i * 7919 + 13) % 0x11000))
            .collect();
        let texts = [
            "",
            " ",
            big.as_str(),
            garbage.as_str(),
            "Привет мир",
            "你好，世界",
            "مرحبا",
            "🦀🦀🦀",
            "\0\u{1}\u{2}",
        ];
        let out = model.predict_batch(&texts).expect("predict");
        assert_eq!(out.len(), texts.len());
        for o in out {
            let sum: f32 = o.probs.iter().sum();
            assert!((sum - 1.0).abs() < 1e-3, "{o:?}");
            assert!((0.0..=1.0).contains(&o.strong_prob));
        }
        assert!(model.predict_batch(&[]).expect("empty").is_empty());
    }

    #[test]
    fn missing_or_broken_files_are_errors() {
        assert!(matches!(
            Model::load_dir("/nonexistent-dir"),
            Err(ModelError::Io { .. })
        ));
        let tok = std::fs::read(testdata().join("tokenizer.json")).expect("read");
        assert!(matches!(
            Model::from_bytes(b"not onnx", &tok),
            Err(ModelError::Onnx { .. })
        ));
        let onnx = std::fs::read(testdata().join("router.onnx")).expect("read");
        assert!(matches!(
            Model::from_bytes(&onnx, b"{}"),
            Err(ModelError::Tokenizer { .. })
        ));
    }
}
