//! Classifier hot paths: model tokenize+infer at batch 1/8/32 on one core, the rule scorer on a
//! 1.5 KB prompt, the full decide path, and the ring round trip through the classifier thread.
//!
//! run: nice -n 10 cargo bench --bench classifier -- --warm-up-time 1 --measurement-time 3
//!      (add `taskset -c 1` to pin; model = models/ at the crate root, i.e. `Model::embedded()`)
//!
//! Figures (2026-11-22, 2-core AMD EPYC VM shared with 5 other builds, load avg ~6, taskset -c 1,
//! model = classifier-train's preliminary router.onnx, 7.9 MB, BERT WordPiece tokenizer):
//!   model load (4 seq-bucket plans)            130–196 ms
//!   tokenize+infer batch 1  (short prompts)    112 µs mean; p50 55 µs, p99 151 µs (2000 runs)
//!   tokenize+infer batch 8                     269 µs  (29.7 k prompts/s)
//!   tokenize+infer batch 32                    789 µs  (40.6 k prompts/s)
//!   model text+tokenize+infer+decide, 1.5 KB   896 µs  (seq bucket 128: tract's Gather dominates)
//!   rules::score 1.5 KB / 120 B                25.2 µs / 4.0 µs
//!   decide with model answer / with rules      27 ns / 31 µs
//!   service round trip, 1 in flight            p50 57 µs, p99 187 µs
//!
//! 2026-11-23, same VM with one fuzzing process on the other core, `cargo bench --profile fast
//! --bench classifier -- --warm-up-time 1 --measurement-time 3`, shipped model: the 1.5 KB code
//! prompt holds `[` (`&[u32]`), which sent it down the slow `tokenizers` pipeline (58% of its
//! time in Unicode tables and allocation). With `[` handled by the ASCII fast path (special
//! tokens still go the slow way):
//!   model text+tokenize+infer+decide, 1.5 KB   804 µs → 164 µs (same run conditions)
//!   tokenize+infer batch 1 / 8 / 32            67 µs / 325 µs / 1.12 ms
//!   rules::score 1.5 KB                        16.9 µs
//! Then the fast path's vocabulary split into word-start and `##` tables looked up by slices of
//! the lower-cased word (no string per lookup, fixed-seed foldhash), fuzzer stopped:
//!   model text+tokenize+infer+decide, 1.5 KB   144 µs;  batch 1 / 8 / 32  63 µs / 293 µs / 1.01 ms
//!
//! 2026-11-23 (session 4), a CI build running on the other core, old and new bench binaries
//! alternated twice in one run: tract's generic `Reduce<Max>` (the max-pooling over the sequence,
//! one ndarray slice per output element) replaced by `SeqMax` at load (src/classifier/seqmax.rs):
//!   tokenize+infer batch 1 / 8 / 32            69–71 µs → 56 µs / 328–330 µs → 210–218 µs /
//!                                              1.17–1.23 ms → 0.63–0.67 ms (27 k → 48–51 k prompts/s)
//!   model text+tokenize+infer+decide, 1.5 KB   155–161 µs → 138–145 µs
//! Then the fast WordPiece path took non-ASCII text too (BertNormalizer's char pipeline with
//! the same Unicode tables as `tokenizers`; ids equal on 7,186 test texts, 1,430 non-ASCII):
//!   tokenize non-ASCII 0.6 KB (de/ru/ja/fr)    100–105 µs → 32–35 µs;  ASCII 1.5 KB 11.4–12.4 µs

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tierflow::classifier::{decide, rules, BatchConfig, ClassifierService, ClassifyInput, Model};

const NON_ASCII_PROMPT: &str = "Könnten Sie bitte die Größe der Datenbank prüfen? Die Abfrage \
    dauert über fünf Sekunden. Можете ли вы объяснить, почему запрос выполняется так медленно? \
    このクエリを高速化する方法を教えてください。索引は既に作成済みです。 Merci d'avance, \
    l'équipe réseau — façade naïve, crème brûlée.";

const PROMPTS: [&str; 8] = [
    "hello, how are you today?",
    "Write a python function to find the longest palindromic substring of a string.",
    "Carl buys ten packs of cookies. Each pack has six cookies. Each cookie costs $0.10. How much change does he get from $10?",
    "Write a short poem about autumn leaves falling on a quiet river.",
    "Extract all the email addresses and dates from the following text and return them as JSON.",
    "Which of the following is a prime number?\nA. 21\nB. 27\nC. 29\nD. 33\nAnswer:",
    "set a timer for twenty minutes and remind me to check the oven",
    "Explain the difference between TCP and UDP, with examples of when each is preferable.",
];

fn prompt_1500() -> String {
    let mut s = String::from(
        "I have the following Rust code and it fails to compile with a borrow checker error. \
         Can you explain why and fix it? Also analyze the performance of the loop.\n```rust\n",
    );
    while s.len() < 1400 {
        s.push_str("fn push_all(v: &mut Vec<u32>, xs: &[u32]) { for x in xs { v.push(*x); } }\n");
    }
    s.push_str("```\nWhat is the complexity, and how would you make it faster?");
    s
}

fn bench(c: &mut Criterion) {
    let t = Instant::now();
    let mut model = Model::embedded().expect("models/ present");
    eprintln!("model load: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);

    let mut g = c.benchmark_group("model");
    for &n in &[1usize, 8, 32] {
        let texts: Vec<&str> = (0..n).map(|i| PROMPTS[i % PROMPTS.len()]).collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("tokenize+infer batch {n}"), |b| {
            b.iter(|| black_box(model.predict_batch(black_box(&texts)).expect("predict")))
        });
    }
    g.finish();

    let long = prompt_1500();
    let input = ClassifyInput::from_prompt(&long);
    let mut g = c.benchmark_group("rules");
    g.throughput(Throughput::Bytes(long.len() as u64));
    g.bench_function("score 1.5 KB prompt", |b| {
        b.iter(|| black_box(rules::score(black_box(&input))))
    });
    let short = ClassifyInput::from_prompt(PROMPTS[2]);
    g.bench_function("score 120 B prompt", |b| {
        b.iter(|| black_box(rules::score(black_box(&short))))
    });
    g.finish();

    let mut g = c.benchmark_group("decide");
    let answer = model.predict_batch(&[PROMPTS[1]]).expect("predict")[0];
    g.bench_function("decide with model answer", |b| {
        b.iter(|| black_box(decide(black_box(&input), Some(answer))))
    });
    g.bench_function("decide with rules (no answer)", |b| {
        b.iter(|| black_box(decide(black_box(&input), None)))
    });
    g.bench_function("model text + tokenize + infer + decide", |b| {
        b.iter(|| {
            let text = input.model_text();
            let out = model.predict_batch(&[text.as_str()]).expect("predict");
            black_box(decide(&input, out.into_iter().next()))
        })
    });
    g.finish();

    // Non-ASCII prompts (accented Latin, Cyrillic, CJK): the char pipeline of the fast WordPiece
    // path; before it, every such prompt went through `tokenizers`.
    let mut g = c.benchmark_group("tokenize");
    for (name, text) in [
        ("tokenize ASCII 1.5 KB", long.as_str()),
        ("tokenize non-ASCII 0.6 KB", NON_ASCII_PROMPT),
    ] {
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| black_box(model.token_ids(black_box(text)).expect("tokenize")))
        });
    }
    g.finish();

    // Percentiles criterion does not give: model batch 1, and the ring round trip through the
    // classifier thread (submit from a monoio worker, batch, infer, answer, wake).
    let mut lat = Vec::with_capacity(2000);
    for i in 0..2000 {
        let t = Instant::now();
        black_box(
            model
                .predict_batch(&[PROMPTS[i % PROMPTS.len()]])
                .expect("predict"),
        );
        lat.push(t.elapsed());
    }
    report("model batch 1 (tokenize+infer)", &mut lat);

    let (mut links, classifier) = ClassifierService::start(model, 1, BatchConfig::default());
    let link = links.pop().expect("link");
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("rt");
    let mut lat = rt.block_on(async move {
        let handle = link.into_handle();
        let mut lat = Vec::with_capacity(2000);
        for i in 0..2000 {
            let t = Instant::now();
            let out = handle
                .classify(PROMPTS[i % PROMPTS.len()], Duration::from_millis(50))
                .await;
            lat.push(t.elapsed());
            assert!(out.is_some());
        }
        lat
    });
    report("service round trip, 1 in flight", &mut lat);
    let _ = classifier.join();
}

fn report(what: &str, lat: &mut [Duration]) {
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)].as_secs_f64() * 1e6;
    eprintln!(
        "{what}: p50 {:.1} us, p99 {:.1} us, max {:.1} us (n={})",
        p(0.5),
        p(0.99),
        p(1.0),
        lat.len()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
