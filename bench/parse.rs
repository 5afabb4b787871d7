//! Request parse path: HTTP head (httparse) + chat body (simd-json in place, validation) + the
//! top-level member map + the upstream body splice, for a short and a typical (1.5 KB) request.
//!
//! Run: `cargo bench --bench parse`
//!
//! Latest figures (2026-11-22, 2-core AMD EPYC VM shared with other builds, Rust 1.95, criterion
//! medians): see README "Figures"; recorded there after each run so this header stays in sync with it.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

use tierflow::http::head::parse_request_head;
use tierflow::pipeline::parse::{build_upstream_body, parse_chat_request, top_level_members};

fn typical_body() -> String {
    let system = "You are a careful senior engineer. Answer precisely, cite the relevant lines, and keep answers short. ".repeat(4);
    let user = "Here is my function; why does it return None for empty input and how do I fix it without changing the signature? ".repeat(8);
    serde_json::json!({
        "model": "auto",
        "temperature": 0.2,
        "stream": true,
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": "def f(xs):\n    if not xs:\n        return\n    return max(xs)"},
            {"role": "assistant", "content": "It returns None because of the bare return."},
            {"role": "user", "content": user},
        ],
        "route": {"tier": 2},
    })
    .to_string()
}

fn bench_parse(c: &mut Criterion) {
    let short =
        serde_json::json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
            .to_string();
    let typical = typical_body();
    for (name, body) in [("short", short), ("typical_1_5kb", typical)] {
        let mut raw = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:18800\r\nContent-Type: application/json\r\nAuthorization: Bearer tf-sk-abc\r\nUser-Agent: OpenAI/Python 1.50\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        raw.extend_from_slice(body.as_bytes());
        let mut group = c.benchmark_group(format!("parse_{name}"));
        group.throughput(Throughput::Bytes(raw.len() as u64));
        let mut scratch = Vec::with_capacity(raw.len());
        let mut out = Vec::with_capacity(raw.len() + 128);
        group.bench_function("head+json+splice", |b| {
            b.iter(|| {
                let head = parse_request_head(black_box(&raw), 64, 16384)
                    .unwrap()
                    .unwrap();
                let body = &raw[head.head_len..];
                scratch.clear();
                scratch.extend_from_slice(body);
                let req = parse_chat_request(&mut scratch).unwrap();
                black_box(req.messages.len());
                drop(req);
                let members = top_level_members(body).unwrap();
                out.clear();
                build_upstream_body(body, &members, "gpt-4o-mini", true, None, &mut out);
                black_box(out.len())
            })
        });
        group.bench_function("head_only", |b| {
            b.iter(|| {
                parse_request_head(black_box(&raw), 64, 16384)
                    .unwrap()
                    .unwrap()
                    .head_len
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench_parse);
criterion_main!(benches);
