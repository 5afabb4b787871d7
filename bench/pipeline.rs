//! Routing latency end to end inside the process: everything the gateway does to a request between
//! reading its bytes and writing the upstream request, without the network — HTTP head parse →
//! chat body parse (simd-json) and member map → security screen (normalizer + Hyperscan threat and
//! PII scan) → PII scrub into a vault when something was found → classification → route
//! resolution → upstream body splice + request head. For a short (~60 B), a typical (1.5 KB, with
//! an email and a phone number to scrub) and a long (32 KB) `model: auto` request.
//!
//! Two lines per size:
//! - `worker` — the worker core's own work, the classifier answered by the rule scorer
//!   (`decide(input, None)`): what a request costs on its core.
//! - `worker+model` — plus the learned model's batch-1 tokenize+infer on the same thread. In the
//!   gateway the model runs on the classifier core (batched, behind rings, with a 2 ms deadline),
//!   so this line is the request's whole routing CPU, not its wait.
//!
//! Run: `cargo bench --bench pipeline` (the scanner's compiled databases come from the on-disk
//! cache, built once by the first run: ~10 s CPU).
//!
//! Latest figures: see README "Figures" (kept there with machine and date after each run).

use std::hint::black_box;
use std::io::Write;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use tierflow::classifier::{decide, Model};
use tierflow::config::{Config, Overrides};
use tierflow::http::head::parse_request_head;
use tierflow::pipeline::parse::{build_upstream_body, parse_chat_request, top_level_members};
use tierflow::pipeline::{classify_input, needs_model, route, security};
use tierflow::providers::write_chat_request_head;
use tierflow::scanner::Vault;

const CONFIG: &str = r#"{
  "providers": {
    "cheap": {"baseUrl": "https://cheap.example/v1", "auth": {"type": "none"}, "models": ["small"], "pii": true},
    "strong": {"baseUrl": "https://strong.example/v1", "auth": {"type": "none"}, "models": ["large"], "pii": true}
  },
  "tiers": {"1": {"primary": "cheap/small"}, "2": {"primary": "cheap/small", "fallback": ["strong/large"]},
            "3": {"primary": "strong/large"}, "4": {"primary": "strong/large"}},
  "prices": {"cheap/small": {"input": 0.15, "output": 0.6}, "strong/large": {"input": 2.5, "output": 10}}
}"#;

fn typical_user_text() -> String {
    let mut s = String::from(
        "Please summarise the incident below for the weekly report and draft a short note to the \
         customer contact (jane.doe@example.com, +1 415 555 0134) explaining the impact.\n\n",
    );
    let log = "09:02:40 export-job[5120]: retry 2/3 after 4s; PUT s3://exports/part-0007.parquet -> 403 AccessDenied\n";
    while s.len() < 1450 {
        s.push_str(log);
    }
    s
}

fn body_with(user: &str) -> String {
    serde_json::json!({
        "model": "auto",
        "temperature": 0.2,
        "stream": true,
        "messages": [
            {"role": "system", "content": "You are an on-call assistant. Answer precisely and briefly."},
            {"role": "user", "content": user},
        ],
    })
    .to_string()
}

fn raw_request(body: &str) -> Vec<u8> {
    let mut raw = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:18800\r\nContent-Type: application/json\r\nAuthorization: Bearer tf-sk-abc\r\nUser-Agent: OpenAI/Python 1.50\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body.as_bytes());
    raw
}

/// One request through every in-process stage; returns the upstream request's length.
fn route_once(
    raw: &[u8],
    cfg: &Config,
    scanner: &tierflow::scanner::Scanner,
    model: Option<&mut Model>,
    scratch: &mut Vec<u8>,
    wire: &mut Vec<u8>,
) -> usize {
    let head = parse_request_head(raw, 64, 16 * 1024)
        .expect("head")
        .expect("complete head");
    let body = &raw[head.head_len..];
    scratch.clear();
    scratch.extend_from_slice(body);
    let req = parse_chat_request(scratch).expect("valid request");
    let members = top_level_members(body).expect("object");
    let screening = security::screen(scanner, &req.messages, &cfg.security, true);
    assert!(!screening.blocked());
    let mut vault = None;
    let scrubbed = if screening.pii_seen {
        let v = vault.insert(Vault::new());
        security::messages_member(body, &members).and_then(|m| {
            let known = security::known_pii(&req.messages, &screening);
            security::scrub_messages(scanner, m, v, &known)
        })
    } else {
        None
    };
    let input = classify_input(&req);
    let answer = match model {
        Some(m) if needs_model(&input) => m
            .predict_batch(&[input.model_text().as_str()])
            .ok()
            .and_then(|v| v.into_iter().next()),
        _ => None,
    };
    let auto = decide(&input, answer);
    let decision = route::resolve(cfg, &req, Some(&auto)).expect("route");
    let target = &decision.targets[0];
    let provider = &cfg.providers[target.provider(cfg)];
    let mut upstream = Vec::with_capacity(body.len() + 64);
    build_upstream_body(
        body,
        &members,
        target.model(cfg),
        req.stream,
        scrubbed.as_ref().map(|(b, _)| b.as_slice()),
        &mut upstream,
    );
    wire.clear();
    write_chat_request_head(wire, provider, upstream.len(), req.stream);
    wire.extend_from_slice(&upstream);
    wire.len()
}

fn bench(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("tierflow-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("config.json");
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(CONFIG.as_bytes()))
        .expect("write config");
    let cfg = Config::load(&path, &Overrides::default()).expect("config");
    let _ = std::fs::remove_dir_all(&dir);
    let scanner = security::load_scanner(cfg.security.cache_dir.clone()).expect("scanner");
    let mut model = Model::embedded().expect("models/ present");

    let typical = typical_user_text();
    let mut long = String::new();
    while long.len() < 32 * 1024 {
        long.push_str(&typical);
    }
    let inputs = [
        (
            "short",
            raw_request(&body_with("What is the capital of France?")),
        ),
        ("typical_1_5kb", raw_request(&body_with(&typical))),
        ("long_32kb", raw_request(&body_with(&long))),
    ];
    let mut scratch = Vec::new();
    let mut wire = Vec::new();
    for (name, raw) in &inputs {
        let mut g = c.benchmark_group(format!("route_{name}"));
        g.throughput(Throughput::Bytes(raw.len() as u64));
        g.bench_function("worker", |b| {
            b.iter(|| {
                black_box(route_once(
                    black_box(raw),
                    &cfg,
                    &scanner,
                    None,
                    &mut scratch,
                    &mut wire,
                ))
            })
        });
        g.bench_function("worker+model", |b| {
            b.iter(|| {
                black_box(route_once(
                    black_box(raw),
                    &cfg,
                    &scanner,
                    Some(&mut model),
                    &mut scratch,
                    &mut wire,
                ))
            })
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
