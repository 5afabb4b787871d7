//! Stream translation cost per SSE event, both directions.
//!
//! Run: `nice -n 10 cargo bench --bench anthropic -- --warm-up-time 1 --measurement-time 3`
//! Figures, 2026-11-22, 2-core shared VM "Intel(R) Xeon(R) Processor", Rust 1.95, release, whole
//! transcript per iteration (median; per event = median / events; target <= 10 us per event):
//!   anthropic_to_chat/text            8 events  6.49 us  -> 0.81 us/event
//!   anthropic_to_chat/parallel_tools 19 events 14.23 us  -> 0.75 us/event
//!   anthropic_to_chat/thinking       12 events  8.36 us  -> 0.70 us/event
//!   chat_to_anthropic/inbound_text    6 events  7.39 us  -> 1.23 us/event
//!   chat_to_anthropic/inbound_parallel_tools 10 events 16.38 us -> 1.64 us/event
//! Allocations per event (tests/anthropic_alloc.rs, counting global allocator): 0 outbound, 0
//! inbound for text chunks (a chunk carrying `tool_calls` allocates its small Vec).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use tierflow::providers::anthropic::{
    parse_sse_event, ChatToMessagesStream, ChunkMeta, MessagesToChatStream,
};

fn events(name: &str) -> Vec<(String, Vec<u8>)> {
    let text = std::fs::read_to_string(format!(
        "{}/tests/fixtures/anthropic/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    text.split_inclusive("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|b| {
            let (e, d) = parse_sse_event(b.as_bytes());
            (e.unwrap_or("").to_owned(), d.into_owned())
        })
        .collect()
}

fn outbound(c: &mut Criterion) {
    let mut g = c.benchmark_group("anthropic_to_chat");
    for name in ["text", "parallel_tools", "thinking"] {
        let evs = events(&format!("{name}.anthropic.sse"));
        g.throughput(Throughput::Elements(evs.len() as u64));
        g.bench_function(format!("{name} ({} events)", evs.len()), |b| {
            b.iter_batched_ref(
                || {
                    (
                        MessagesToChatStream::new(
                            ChunkMeta {
                                id: Some("chatcmpl-x"),
                                model: "auto",
                                created_s: 1,
                            },
                            true,
                        ),
                        Vec::with_capacity(1 << 16),
                    )
                },
                |(s, out)| {
                    for (e, d) in &evs {
                        let _ = s.on_event(e, d, out);
                    }
                    s.finish(out);
                    black_box(out.len())
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn inbound(c: &mut Criterion) {
    let mut g = c.benchmark_group("chat_to_anthropic");
    for name in ["inbound_text", "inbound_parallel_tools"] {
        let evs = events(&format!("{name}.openai.sse"));
        g.throughput(Throughput::Elements(evs.len() as u64));
        g.bench_function(format!("{name} ({} events)", evs.len()), |b| {
            b.iter_batched_ref(
                || {
                    (
                        ChatToMessagesStream::new("claude-sonnet-4-5", Some("msg_1"), 0),
                        Vec::with_capacity(1 << 16),
                    )
                },
                |(s, out)| {
                    for (_, d) in &evs {
                        let _ = s.on_data(d, out);
                    }
                    s.finish(out);
                    black_box(out.len())
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, outbound, inbound);
criterion_main!(benches);
