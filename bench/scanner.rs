//! Scan+scrub latency for a 1.5 KB and a 32 KB prompt, and streaming rehydration per SSE event.
//! `scan_scrub_*` use the default options (threats + structured + named PII, as `inspect`);
//! `gateway_scan_scrub_*` the request path (threats + structured PII); `scan_*_only` split one
//! scan into its two halves for profiling.
//!
//! Run: `cargo bench --profile fast --bench scanner -- --warm-up-time 2 --measurement-time 5`
//! Machine: 2-core AMD EPYC VM shared with other builds (load average 2–3 during both runs),
//! Debian 12, libhyperscan 5.4.0, Rust 1.95. Criterion means:
//!
//! | bench                      | before (78741f4) | after   |
//! |----------------------------|------------------|---------|
//! | scan_scrub_1_5kb           | 104 µs           | 54 µs   |
//! | scan_scrub_32kb            | 2.56 ms          | 1.03 ms |
//! | gateway_scan_scrub_1_5kb   | –                | 49 µs   |
//! | gateway_scan_scrub_32kb    | –                | 1.00 ms |
//! | scan_threats_only_1_5kb    | 50 µs (heavier load) | 26 µs |
//! | scan_pii_only_1_5kb        | 67 µs (heavier load) | 18 µs |
//! | rehydrate_stream_per_event | 0.45 µs          | 0.39 µs |
//!
//! (Under the heavier load of the earlier session the same `before` binary measured 213 µs and
//! 5.6 ms.) What changed: the PII database has no start-of-match tracking (starts come from
//! reverse lazy DFAs around hits, `src/scanner/locate.rs`), context-bound PII rules left Hyperscan
//! (matched forwards right after their cues), PERSON/ADDRESS got their own database scanned only
//! when asked for, three UTF-8 rules that dominated were split into byte-mode ones, and the
//! normalizer's signal pass is one allocation-free sweep. Still over the 30 µs / 300 µs target:
//! the remaining time is Hyperscan (~10 µs threats, ~12 µs PII for 1.5 KB), the learned signal
//! (~4 µs) and the variant/decoder passes (~5 µs).

//!
//! 2026-11-23, after the scrub fixpoint (`Scanner::settle_pii`), two fuzz builds busy on the
//! machine: gateway_scan_scrub_1_5kb 91 µs, gateway_scan_scrub_32kb 2.20 ms, and the new
//! adversarial gateway_scan_scrub_32kb_pii_dense (every value glued to the next, each a settle
//! trigger) 1.83 ms — the settle check stays linear (spans found by binary search per candidate).
//!
//! 2026-11-23 09:30 (session 5), 2-core Intel Xeon VM, bench binaries of f4d8de4 and of this
//! session's rules alternated (old/new/old/new, `--warm-up-time 1 --measurement-time 3`):
//! gateway_scan_scrub_1_5kb 53.6–57.4 → 56.2–62.4 µs, gateway_scan_scrub_32kb 1.17–1.22 →
//! 1.31–1.36 ms, scan_threats_only_1_5kb 25.6–25.9 → 30.4–30.7 µs, scan_pii_only_1_5kb 25.6–25.9
//! → 25.1–25.3 µs. The cost is the ~70 new injection rules (detect TPR on the dev set 0.933 →
//! 0.963): Hyperscan's threat database grew from 206 to 274 expressions; the new PII rules
//! (record-shaped dates, IDs, cards and phones) did not move the PII half.
//!
//! 2026-11-23 12:40 (session 6), same machine, bench binaries before/after alternated
//! (old/new/old/new, `--warm-up-time 1 --measurement-time 3`): gateway_scan_scrub_1_5kb
//! 61.2/59.0 → 53.0/52.4 µs, gateway_scan_scrub_32kb 1.344/1.342 → 1.160/1.172 ms,
//! scan_threats_only_1_5kb 28.2/28.7 → 21.5/22.9 µs. What changed: three threat rules that
//! kept Hyperscan automata busy on benign text, found by leave-one-out timing of the threat
//! database (Python `hyperscan` over the bench prompt, the harness request and 200 routing
//! prompts): `spx.doubled_letters.en` (a verb of repeated letters has no literal factor) is now
//! led by a doubled "your" or a doubled noun; `spx.reveal.en` is split in two smaller rules;
//! `jb.gcg_suffix` bounds its tail so a long first line ends the anchored automaton. The dev
//! injection scores are unchanged (TPR 0.9633, FPR 0.0007).

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use tierflow::scanner::{scrub, JsonEscaper, Rehydrator, ScanOptions, Scanner, Vault};

fn prompt_1k5() -> String {
    let base = "Please review the quarterly report and summarise the key risks for the board. \
                Contact me at jane.doe@corp.example or +44 20 7946 0958 if anything is unclear. \
                The staging server is 10.20.30.40 and the ticket number is 48213. ";
    let mut s = String::new();
    while s.len() < 1500 {
        s.push_str(base);
    }
    s.truncate(1500);
    s
}

fn bench(c: &mut Criterion) {
    // Through the compiled-database cache (as the gateway loads it): no 10 s compile per run.
    let cache = tierflow::config::default_cache_dir();
    let scanner = Scanner::embedded_cached(cache.as_deref()).expect("rules").0;
    let mut scratch = scanner.new_scratch().expect("scratch");
    let opts = ScanOptions::default();
    let small = prompt_1k5();
    let mut big = String::new();
    while big.len() < 32 * 1024 {
        big.push_str(&small);
    }
    big.truncate(32 * 1024);
    c.bench_function("scan_scrub_1_5kb", |b| {
        b.iter(|| {
            let r = scanner.scan(&mut scratch, black_box(&small), &opts);
            let mut v = Vault::new();
            black_box(scrub(&small, &r.pii, &mut v));
        })
    });
    c.bench_function("scan_scrub_32kb", |b| {
        b.iter(|| {
            let r = scanner.scan(&mut scratch, black_box(&big), &opts);
            let mut v = Vault::new();
            black_box(scrub(&big, &r.pii, &mut v));
        })
    });
    // The request path: threats + structured PII (the gateway never scrubs PERSON/ADDRESS).
    let gateway = ScanOptions {
        named_pii: false,
        ..ScanOptions::default()
    };
    c.bench_function("gateway_scan_scrub_1_5kb", |b| {
        b.iter(|| {
            let r = scanner.scan(&mut scratch, black_box(&small), &gateway);
            let mut v = Vault::new();
            black_box(scrub(&small, &r.pii, &mut v));
        })
    });
    c.bench_function("gateway_scan_scrub_32kb", |b| {
        b.iter(|| {
            let r = scanner.scan(&mut scratch, black_box(&big), &gateway);
            let mut v = Vault::new();
            black_box(scrub(&big, &r.pii, &mut v));
        })
    });
    // Adversarial density: 32 KB of values glued to each other and to digits, each one a
    // settle trigger (a scan must stay linear in the number of candidates and spans).
    let mut dense = String::new();
    let mut n = 0u32;
    while dense.len() < 32 * 1024 {
        dense.push_str(&format!(
            "u{n}@x.example7 +44 20 7946 {:04} invoice ",
            n % 10_000
        ));
        n += 1;
    }
    dense.truncate(32 * 1024);
    c.bench_function("gateway_scan_scrub_32kb_pii_dense", |b| {
        b.iter(|| {
            let r = scanner.scan(&mut scratch, black_box(&dense), &gateway);
            let mut v = Vault::new();
            black_box(scrub(&dense, &r.pii, &mut v));
        })
    });
    // The two halves of one scan, for profiling: threat rules (with evasion variants), PII.
    let threats_only = ScanOptions {
        pii: false,
        ..ScanOptions::default()
    };
    let pii_only = ScanOptions {
        threats: false,
        named_pii: false,
        ..ScanOptions::default()
    };
    c.bench_function("scan_threats_only_1_5kb", |b| {
        b.iter(|| black_box(scanner.scan(&mut scratch, black_box(&small), &threats_only)))
    });
    c.bench_function("scan_pii_only_1_5kb", |b| {
        b.iter(|| black_box(scanner.scan(&mut scratch, black_box(&small), &pii_only)))
    });
    let r = scanner.scan(&mut scratch, &small, &opts);
    let mut vault = Vault::new();
    let scrubbed = scrub(&small, &r.pii, &mut vault);
    // ~100 SSE data payloads of 40 bytes of content each, placeholders included.
    let events: Vec<String> = scrubbed
        .as_bytes()
        .chunks(40)
        .map(|c| {
            let t = String::from_utf8_lossy(c);
            serde_json::json!({"choices": [{"index": 0, "delta": {"content": t}}]}).to_string()
        })
        .collect();
    c.bench_function("rehydrate_stream_per_event", |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            for _ in 0..iters {
                let mut rh = Rehydrator::new(&vault, JsonEscaper::json());
                let mut out = Vec::with_capacity(256);
                for e in &events {
                    out.clear();
                    rh.push(e.as_bytes(), &mut out);
                    black_box(&out);
                }
                rh.finish(&mut out);
            }
            start.elapsed() / events.len() as u32
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
