//! Allocation check for the stream translators: after construction, translating an event allocates
//! nothing beyond growth of the caller's output buffer (here pre-sized, so nothing at all).
//! Its own test binary because it installs a counting global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::Ordering;

use tierflow::providers::anthropic::{
    parse_sse_event, ChatToMessagesStream, ChunkMeta, MessagesToChatStream,
};

struct Counting;

/// Allocations made by the current thread only: the test harness allocates on other threads
/// (spawning the next test, printing), which must not count.
struct ThreadAllocs;

thread_local! {
    static THREAD_ALLOCS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl ThreadAllocs {
    fn bump(&self) {
        // `try_with`: during thread teardown the slot may be gone; those allocations do not matter.
        let _ = THREAD_ALLOCS.try_with(|c| c.set(c.get() + 1));
    }

    fn load(&self, _o: Ordering) -> usize {
        THREAD_ALLOCS.try_with(|c| c.get()).unwrap_or(0)
    }

    fn fetch_add(&self, _n: usize, _o: Ordering) {
        self.bump();
    }
}

static ALLOCS: ThreadAllocs = ThreadAllocs;

// SAFETY: forwards every call unchanged to `System`; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/anthropic/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn blocks(text: &str) -> Vec<&str> {
    text.split_inclusive("\n\n")
        .filter(|b| !b.trim().is_empty())
        .collect()
}

/// Allocations per event, translating every event of `name` once.
fn outbound_allocs(name: &str, id: Option<&str>) -> Vec<(String, usize)> {
    let text = fixture(name);
    let events: Vec<(Option<&str>, Vec<u8>)> = blocks(&text)
        .iter()
        .map(|b| {
            let (e, d) = parse_sse_event(b.as_bytes());
            (e, d.into_owned())
        })
        .collect();
    let mut s = MessagesToChatStream::new(
        ChunkMeta {
            id,
            model: "auto",
            created_s: 1,
        },
        true,
    );
    let mut out = Vec::with_capacity(1 << 16);
    let mut counts = Vec::new();
    for (e, d) in &events {
        let before = ALLOCS.load(Ordering::Relaxed);
        let _ = s.on_event(e.unwrap_or(""), d, &mut out);
        let n = ALLOCS.load(Ordering::Relaxed) - before;
        counts.push((e.unwrap_or("").to_owned(), n));
    }
    let before = ALLOCS.load(Ordering::Relaxed);
    s.finish(&mut out);
    let n = ALLOCS.load(Ordering::Relaxed) - before;
    counts.push(("finish".into(), n));
    counts
}

#[test]
fn outbound_events_allocate_nothing() {
    // The counter is process-wide: run the counting tests one at a time.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for name in [
        "text.anthropic.sse",
        "parallel_tools.anthropic.sse",
        "thinking.anthropic.sse",
        "error_mid_stream.anthropic.sse",
    ] {
        let counts = outbound_allocs(name, Some("chatcmpl-fixed"));
        assert!(counts.iter().all(|c| c.1 == 0), "{name}: {counts:?}");
        // Without a caller id, the chunk prefix is built once, at message_start.
        let counts = outbound_allocs(name, None);
        assert_eq!(counts[0], ("message_start".to_owned(), 1), "{name}");
        assert!(counts[1..].iter().all(|c| c.1 == 0), "{name}: {counts:?}");
    }
}

#[test]
fn inbound_text_chunks_allocate_nothing() {
    // The counter is process-wide: run the counting tests one at a time.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let text = fixture("inbound_text.openai.sse");
    let datas: Vec<Vec<u8>> = blocks(&text)
        .iter()
        .map(|b| parse_sse_event(b.as_bytes()).1.into_owned())
        .collect();
    let mut s = ChatToMessagesStream::new("claude-sonnet-4-5", Some("msg_1"), 0);
    let mut out = Vec::with_capacity(1 << 16);
    for d in &datas {
        let before = ALLOCS.load(Ordering::Relaxed);
        s.on_data(d, &mut out).unwrap();
        assert_eq!(
            ALLOCS.load(Ordering::Relaxed) - before,
            0,
            "{}",
            String::from_utf8_lossy(d)
        );
    }
    assert!(s.is_done());
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
