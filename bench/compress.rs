//! CtxPack on the agent-traffic corpus (`tests/fixtures/ctxpack/`): first a one-off table of the
//! savings per file and per pass (each pass alone, the gateway's default passes, every pass) and
//! the time per KB, then criterion timings of the whole corpus and of one `messages` array through
//! the pipeline's compress stage (JSON parse + passes + re-serialise).
//!
//! Run: `nice -n 10 cargo bench --bench compress -- --warm-up-time 1 --measurement-time 3`
//! (table only: `cargo bench --bench compress -- --table-only`; one file before/after:
//! `cargo bench --bench compress -- --show pytest_run.txt`).
//! Latest (2026-11-23, 2-core VM, load average ~5 from other builds, `--profile fast`): savings on
//! the 38.6 KB corpus 14.0% with the gateway's default passes, 56.4% with all but comments, 58.0%
//! with every pass; whole corpus 172 µs (default passes) / 320 µs (all but comments); the pipeline
//! stage on the corpus as one `messages` array 509 µs; a short question skipped in 26 ns. Full table
//! and spot check: README "Figures".

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use criterion::{criterion_group, Criterion, Throughput};
use tierflow::compress::settings::DEFAULT_PASSES;
use tierflow::compress::{compress, CompressConfig, Pass, Savings};

fn corpus() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ctxpack");
    let mut v: Vec<(String, String)> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    Some((
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read_to_string(e.path()).ok()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    assert!(!v.is_empty(), "no corpus in {}", dir.display());
    v
}

fn gateway_default() -> CompressConfig {
    let mut c = CompressConfig::none();
    for p in DEFAULT_PASSES {
        c.set(p, true);
    }
    c
}

fn every_pass() -> CompressConfig {
    CompressConfig {
        comments: true,
        ..CompressConfig::default()
    }
}

fn total(files: &[(String, String)], cfg: &CompressConfig) -> Savings {
    let mut t = Savings::default();
    for (_, text) in files {
        let (_, s) = compress(text, cfg, &[]);
        t.bytes_before += s.bytes_before;
        t.bytes_after += s.bytes_after;
        t.est_tokens_saved += s.est_tokens_saved;
        for p in Pass::ALL {
            t.per_pass.add(p, s.per_pass.get(p));
        }
    }
    t
}

/// Microseconds per KB of input over the corpus (best of 5 rounds of 20 passes over it).
fn us_per_kb(files: &[(String, String)], cfg: &CompressConfig) -> f64 {
    let bytes: usize = files.iter().map(|f| f.1.len()).sum();
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..20 {
            for (_, text) in files {
                black_box(compress(black_box(text), cfg, &[]).1.bytes_after);
            }
        }
        best = best.min(t.elapsed().as_secs_f64() * 1e6 / 20.0);
    }
    best / (bytes as f64 / 1024.0)
}

fn pct(s: &Savings) -> f64 {
    100.0 * (s.bytes_before - s.bytes_after) as f64 / s.bytes_before.max(1) as f64
}

fn print_table(files: &[(String, String)], timed: bool) {
    let all = every_pass();
    println!(
        "\nCtxPack savings on {} files of agent traffic (tests/fixtures/ctxpack)",
        files.len()
    );
    println!(
        "{:<24} {:>7} {:>7} {:>7}  bytes saved per pass (every pass on)",
        "file", "bytes", "saved", "~tokens"
    );
    for (name, text) in files {
        let (_, s) = compress(text, &all, &[]);
        let per: Vec<String> = Pass::ALL
            .iter()
            .filter(|p| s.per_pass.get(**p) > 0)
            .map(|p| format!("{}={}", p.as_str(), s.per_pass.get(*p)))
            .collect();
        println!(
            "{:<24} {:>7} {:>6.1}% {:>7}  {}",
            name,
            s.bytes_before,
            pct(&s),
            s.est_tokens_saved,
            per.join(" ")
        );
    }
    println!(
        "\n{:<40} {:>8} {:>7} {:>9} {:>8}",
        "passes", "saved B", "saved", "~tokens", "µs/KB"
    );
    let mut rows: Vec<(String, CompressConfig)> = Pass::ALL
        .iter()
        .map(|p| (format!("only {}", p.as_str()), CompressConfig::only(*p)))
        .collect();
    rows.push((
        "gateway default (ansi,whitespace,json)".into(),
        gateway_default(),
    ));
    rows.push(("all but comments".into(), CompressConfig::default()));
    rows.push(("every pass".into(), all));
    for (label, cfg) in rows {
        let t = total(files, &cfg);
        println!(
            "{:<40} {:>8} {:>6.1}% {:>9} {:>8.2}",
            label,
            t.bytes_before - t.bytes_after,
            pct(&t),
            t.est_tokens_saved,
            if timed {
                us_per_kb(files, &cfg)
            } else {
                f64::NAN
            }
        );
    }
    let bytes: usize = files.iter().map(|f| f.1.len()).sum();
    println!(
        "corpus: {bytes} bytes (~{} tokens at 4 bytes/token)\n",
        bytes.div_ceil(4)
    );
}

fn bench(c: &mut Criterion) {
    let files = corpus();
    let cfg = CompressConfig::default();
    let bytes: usize = files.iter().map(|f| f.1.len()).sum();
    let mut g = c.benchmark_group("ctxpack");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("whole corpus, all passes but comments", |b| {
        b.iter(|| {
            files
                .iter()
                .map(|(_, t)| compress(black_box(t), &cfg, &[]).1.bytes_after)
                .sum::<usize>()
        })
    });
    let default = gateway_default();
    g.bench_function("whole corpus, gateway default passes", |b| {
        b.iter(|| {
            files
                .iter()
                .map(|(_, t)| compress(black_box(t), &default, &[]).1.bytes_after)
                .sum::<usize>()
        })
    });
    // The stage as the gateway runs it: one `messages` array holding the whole corpus as tool
    // results (parse, passes, re-serialise).
    let msgs: Vec<serde_json::Value> = files
        .iter()
        .map(|(_, t)| serde_json::json!({"role": "tool", "tool_call_id": "c", "content": t}))
        .collect();
    let msgs = serde_json::to_vec(&msgs).unwrap_or_default();
    g.bench_function("pipeline stage: corpus as one messages array", |b| {
        b.iter(|| {
            tierflow::pipeline::compress::compress_messages(black_box(&msgs), &cfg, None)
                .map_or(0, |p| p.messages.len())
        })
    });
    g.finish();
    let prose =
        "A plain question without any logs, JSON or code in it, the common case. ".repeat(30);
    let short = serde_json::to_vec(&serde_json::json!([{"role": "user", "content": prose}]))
        .unwrap_or_default();
    c.bench_function(
        "pipeline stage: 2 KB single-line prose (skipped unparsed)",
        |b| {
            b.iter(|| {
                tierflow::pipeline::compress::compress_messages(black_box(&short), &cfg, None)
            })
        },
    );
}

criterion_group!(benches, bench);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `--show FILE`: one corpus file before and after (every pass but comments), for spot checks.
    if let Some(i) = args.iter().position(|a| a == "--show") {
        let name = args.get(i + 1).cloned().unwrap_or_default();
        for (n, text) in corpus().iter().filter(|(n, _)| *n == name) {
            let (out, s) = compress(text, &CompressConfig::default(), &[]);
            println!(
                "=== {n} before ({} bytes)\n{text}\n=== after ({} bytes)\n{out}",
                s.bytes_before, s.bytes_after
            );
        }
        return;
    }
    // `cargo bench` passes `--bench`; without it (`cargo test --all-targets`) this is a smoke run:
    // the table without the timing loops, then criterion's one-iteration test mode.
    print_table(&corpus(), args.iter().any(|a| a == "--bench"));
    if args.iter().any(|a| a == "--table-only") {
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
