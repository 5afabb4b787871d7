//! The classifier core and the per-worker handle: worker cores submit text through an rtrb SPSC
//! ring (pre-allocated text slots, no lock, no allocation), the classifier thread drains all rings
//! into bounded batches, runs the model, answers through a second ring and wakes the waiting task.
//! Pinning the thread to a core and choosing deadlines are the runtime's and pipeline's jobs.

use std::cell::{RefCell, UnsafeCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;
use rtrb::{Consumer, Producer, RingBuffer};

use super::input::{push_head_tail, ClassifyInput, MODEL_TEXT_MAX_BYTES};
use super::model::{Model, ModelOutput};

/// Batching knobs. Defaults: batch of up to 32, 100 µs gathering window under load, 256 slots of
/// 2 KiB per worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Most requests run in one model call.
    pub max_batch: usize,
    /// How long the classifier waits for more requests once it has some, when the previous batch
    /// had more than one request (under light load a lone request runs at once).
    pub max_wait_us: u64,
    /// In-flight requests per worker (ring capacity = text slots).
    pub ring_slots: usize,
    /// Capacity of each text slot; longer texts are cut head+tail to fit.
    pub max_text_bytes: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_batch: 32,
            max_wait_us: 100,
            ring_slots: 256,
            max_text_bytes: MODEL_TEXT_MAX_BYTES,
        }
    }
}

/// A request in the ring: which text slot, and when its answer stops being useful.
struct Request {
    slot: u32,
    deadline: Instant,
}

/// An answer in the ring: `output` is `None` when the request expired in the queue or the model
/// failed.
struct Answer {
    slot: u32,
    output: Option<ModelOutput>,
}

/// A text buffer shared by one worker and the classifier thread.
struct TextSlot {
    text: UnsafeCell<String>,
    waker: AtomicWaker,
}

// SAFETY: `text` is written only by the owning worker while the slot is free (not in the request
// ring, no answer pending), and read only by the classifier thread between popping the slot's
// request and pushing its answer. rtrb's push (Release) / pop (Acquire) order those accesses, so
// they never overlap. `waker` is an AtomicWaker, itself Sync.
unsafe impl Sync for TextSlot {}

/// Counters written by one worker (no cross-core contention on the submit path).
#[derive(Default)]
struct LinkCounters {
    submitted: AtomicU64,
    answered: AtomicU64,
    late: AtomicU64,
    ring_full: AtomicU64,
}

struct LinkShared {
    slots: Box<[TextSlot]>,
    counters: LinkCounters,
    max_text_bytes: usize,
}

/// Counters of the classifier thread.
#[derive(Default)]
struct CoreCounters {
    inferred: AtomicU64,
    expired_in_queue: AtomicU64,
    failed: AtomicU64,
    batches: AtomicU64,
    batch_hist: [AtomicU64; BATCH_HIST_BUCKETS],
}

/// Batch-size histogram upper bounds: 1, 2, 4, 8, 16, 32, more.
pub const BATCH_HIST_BOUNDS: [usize; BATCH_HIST_BUCKETS - 1] = [1, 2, 4, 8, 16, 32];
const BATCH_HIST_BUCKETS: usize = 7;

/// Live counters of the classifier service, for /stats. Cheap to read at any time.
pub struct ClassifierStats {
    links: Vec<Arc<LinkShared>>,
    core: CoreCounters,
}

/// A point-in-time copy of `ClassifierStats`, summed over workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    /// Requests accepted into a ring.
    pub submitted: u64,
    /// Model answers delivered to the caller before its deadline.
    pub answered: u64,
    /// Callers whose deadline passed first (they fell back to the rule scorer).
    pub late: u64,
    /// Requests refused because the worker's ring was full.
    pub ring_full: u64,
    /// Rows the model ran.
    pub inferred: u64,
    /// Requests skipped by the classifier because their deadline had passed in the queue.
    pub expired_in_queue: u64,
    /// Rows whose model call failed.
    pub failed: u64,
    /// Model calls.
    pub batches: u64,
    /// Model calls by batch size, buckets `<= BATCH_HIST_BOUNDS[i]`, the last one larger.
    pub batch_size_hist: [u64; BATCH_HIST_BUCKETS],
    /// Requests submitted and not yet handled by the classifier (queued or running).
    pub queue_depth: u64,
}

impl ClassifierStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut s = StatsSnapshot::default();
        for l in &self.links {
            s.submitted += l.counters.submitted.load(Relaxed);
            s.answered += l.counters.answered.load(Relaxed);
            s.late += l.counters.late.load(Relaxed);
            s.ring_full += l.counters.ring_full.load(Relaxed);
        }
        s.inferred = self.core.inferred.load(Relaxed);
        s.expired_in_queue = self.core.expired_in_queue.load(Relaxed);
        s.failed = self.core.failed.load(Relaxed);
        s.batches = self.core.batches.load(Relaxed);
        for (h, c) in s.batch_size_hist.iter_mut().zip(&self.core.batch_hist) {
            *h = c.load(Relaxed);
        }
        s.queue_depth = s
            .submitted
            .saturating_sub(s.inferred + s.expired_in_queue + s.failed);
        s
    }
}

/// Unparks the classifier thread when dropped, so it notices a closed ring and can exit.
struct ClassifierWake(Thread);
impl Drop for ClassifierWake {
    fn drop(&mut self) {
        self.0.unpark();
    }
}

/// One worker's connection to the classifier; `Send`, so it can be moved to the worker thread,
/// where `into_handle` turns it into the handle the worker's tasks use.
pub struct ClassifierLink {
    requests: Producer<Request>,
    answers: Consumer<Answer>,
    shared: Arc<LinkShared>,
    stats: Arc<ClassifierStats>,
    // Last: dropped after the producer, so the woken classifier sees the ring abandoned.
    wake: ClassifierWake,
}

/// The classifier service: one thread owning the model, fed by one ring pair per worker.
pub struct ClassifierService;

impl ClassifierService {
    /// Starts the classifier thread with `model` and returns one link per worker and the thread's
    /// handle. The thread exits when every link (or handle made from it) is dropped.
    pub fn start(
        model: Model,
        n_workers: usize,
        config: BatchConfig,
    ) -> (Vec<ClassifierLink>, JoinHandle<()>) {
        let config = BatchConfig {
            max_batch: config.max_batch.max(1),
            ring_slots: config.ring_slots.clamp(1, u32::MAX as usize),
            ..config
        };
        let mut shared = Vec::with_capacity(n_workers);
        let mut worker_ends = Vec::with_capacity(n_workers);
        let mut core_ends = Vec::with_capacity(n_workers);
        for _ in 0..n_workers {
            let (req_tx, req_rx) = RingBuffer::<Request>::new(config.ring_slots);
            let (ans_tx, ans_rx) = RingBuffer::<Answer>::new(config.ring_slots);
            let slots: Box<[TextSlot]> = (0..config.ring_slots)
                .map(|_| TextSlot {
                    text: UnsafeCell::new(String::with_capacity(config.max_text_bytes)),
                    waker: AtomicWaker::new(),
                })
                .collect();
            let link = Arc::new(LinkShared {
                slots,
                counters: LinkCounters::default(),
                max_text_bytes: config.max_text_bytes,
            });
            shared.push(link.clone());
            worker_ends.push((req_tx, ans_rx, link.clone()));
            core_ends.push(CoreEnd {
                requests: req_rx,
                answers: ans_tx,
                shared: link,
            });
        }
        let stats = Arc::new(ClassifierStats {
            links: shared,
            core: CoreCounters::default(),
        });
        let core_stats = stats.clone();
        let handle = thread::Builder::new()
            .name("tierflow-classifier".into())
            .spawn(move || run_classifier(model, core_ends, config, &core_stats))
            // Spawning fails only when the OS is out of threads/memory at start-up.
            .unwrap_or_else(|e| panic!("cannot spawn the classifier thread: {e}"));
        let thread = handle.thread().clone();
        let links = worker_ends
            .into_iter()
            .map(|(requests, answers, shared)| ClassifierLink {
                requests,
                answers,
                shared,
                stats: stats.clone(),
                wake: ClassifierWake(thread.clone()),
            })
            .collect();
        (links, handle)
    }
}

impl ClassifierLink {
    /// Becomes the worker-local handle (call on the worker thread).
    pub fn into_handle(self) -> ClassifierHandle {
        let n = self.shared.slots.len();
        ClassifierHandle {
            state: RefCell::new(HandleState {
                requests: self.requests,
                answers: self.answers,
                free: (0..n as u32).rev().collect(),
                local: vec![LocalSlot::Free; n],
            }),
            shared: self.shared,
            stats: self.stats,
            wake: self.wake,
        }
    }

    pub fn stats(&self) -> Arc<ClassifierStats> {
        self.stats.clone()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum LocalSlot {
    Free,
    /// Submitted; a task is waiting for it.
    Waiting,
    /// Submitted; its task gave up (late or dropped). Freed when the answer arrives.
    Abandoned,
    /// Answer arrived, not yet taken by its task.
    Ready(Option<ModelOutput>),
}

struct HandleState {
    requests: Producer<Request>,
    answers: Consumer<Answer>,
    /// Free slot indices; capacity = slots, so push/pop never allocate.
    free: Vec<u32>,
    local: Vec<LocalSlot>,
}

impl HandleState {
    /// Moves arrived answers to their slots; frees the slots nobody waits for any more.
    fn drain_answers(&mut self) {
        while let Ok(a) = self.answers.pop() {
            let ix = a.slot as usize;
            match self.local.get(ix) {
                Some(LocalSlot::Waiting) => self.local[ix] = LocalSlot::Ready(a.output),
                Some(LocalSlot::Abandoned) => {
                    self.local[ix] = LocalSlot::Free;
                    self.free.push(a.slot);
                }
                // An answer for a slot not in flight cannot happen; ignore rather than corrupt.
                _ => {}
            }
        }
    }
}

/// The worker-local side of a link: submit text, await the model's answer. Not `Sync`: one
/// worker thread uses it (from any number of its tasks).
pub struct ClassifierHandle {
    state: RefCell<HandleState>,
    shared: Arc<LinkShared>,
    stats: Arc<ClassifierStats>,
    wake: ClassifierWake,
}

impl ClassifierHandle {
    /// Classifies `text` (cut head+tail to the slot size). `None` when the ring is full, the
    /// deadline passes first, or the model failed: the caller then routes with the rule scorer.
    /// The submit path takes no lock and allocates nothing; the await needs monoio's timer
    /// (`RuntimeBuilder::enable_timer`).
    pub async fn classify(&self, text: &str, deadline: Duration) -> Option<ModelOutput> {
        let max = self.shared.max_text_bytes;
        let (slot, due) = self.submit(deadline, |buf| push_head_tail(buf, text, max))?;
        self.await_answer(slot, deadline, due).await
    }

    /// Like `classify`, writing the conversation's model text (`ClassifyInput::write_model_text`)
    /// straight into the slot.
    pub async fn classify_input(
        &self,
        input: &ClassifyInput<'_>,
        deadline: Duration,
    ) -> Option<ModelOutput> {
        let max = self.shared.max_text_bytes;
        let (slot, due) = self.submit(deadline, |buf| input.write_model_text(buf, max))?;
        self.await_answer(slot, deadline, due).await
    }

    pub fn stats(&self) -> Arc<ClassifierStats> {
        self.stats.clone()
    }

    /// Copies the text into a free slot and queues it; returns the slot and its due instant.
    fn submit(&self, deadline: Duration, fill: impl FnOnce(&mut String)) -> Option<(u32, Instant)> {
        let counters = &self.shared.counters;
        let mut st = self.state.borrow_mut();
        st.drain_answers();
        let Some(slot) = st.free.pop() else {
            counters.ring_full.fetch_add(1, Relaxed);
            return None;
        };
        {
            // SAFETY: the slot came from the free list: it is not in the request ring and no answer
            // for it is pending, so the classifier thread does not read it now (see TextSlot).
            let buf = unsafe { &mut *self.shared.slots[slot as usize].text.get() };
            buf.clear();
            fill(buf);
        }
        let due = Instant::now() + deadline;
        let request = Request {
            slot,
            deadline: due,
        };
        if st.requests.push(request).is_err() {
            // Cannot happen (ring capacity = slots), but stay correct if it does.
            st.free.push(slot);
            counters.ring_full.fetch_add(1, Relaxed);
            return None;
        }
        st.local[slot as usize] = LocalSlot::Waiting;
        counters.submitted.fetch_add(1, Relaxed);
        drop(st);
        // Cheap when the classifier is awake (an atomic swap); a futex wake when it is parked.
        self.wake.0.unpark();
        Some((slot, due))
    }

    async fn await_answer(
        &self,
        slot: u32,
        deadline: Duration,
        due: Instant,
    ) -> Option<ModelOutput> {
        let wait = AnswerWait {
            handle: self,
            slot,
            done: false,
        };
        match monoio::time::timeout(deadline, wait).await {
            Ok(Some(answer)) => {
                self.shared.counters.answered.fetch_add(1, Relaxed);
                Some(answer)
            }
            Ok(None) => {
                // Expired in the classifier's queue (late) or the model failed (counted there).
                if Instant::now() >= due {
                    self.shared.counters.late.fetch_add(1, Relaxed);
                }
                None
            }
            Err(_elapsed) => {
                self.shared.counters.late.fetch_add(1, Relaxed);
                None
            }
        }
    }
}

/// Waits for one slot's answer; marks the slot abandoned when dropped before it arrived.
struct AnswerWait<'h> {
    handle: &'h ClassifierHandle,
    slot: u32,
    done: bool,
}

impl Future for AnswerWait<'_> {
    type Output = Option<ModelOutput>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let ix = self.slot as usize;
        let handle = self.handle;
        let mut st = handle.state.borrow_mut();
        st.drain_answers();
        if !matches!(st.local[ix], LocalSlot::Ready(_)) {
            handle.shared.slots[ix].waker.register(cx.waker());
            // The answer may have landed between the drain and the registration.
            st.drain_answers();
        }
        if let LocalSlot::Ready(output) = st.local[ix] {
            st.local[ix] = LocalSlot::Free;
            st.free.push(self.slot);
            drop(st);
            self.done = true;
            return Poll::Ready(output);
        }
        Poll::Pending
    }
}

impl Drop for AnswerWait<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Ok(mut st) = self.handle.state.try_borrow_mut() {
            let ix = self.slot as usize;
            match st.local[ix] {
                LocalSlot::Waiting => st.local[ix] = LocalSlot::Abandoned,
                LocalSlot::Ready(_) => {
                    st.local[ix] = LocalSlot::Free;
                    st.free.push(self.slot);
                }
                _ => {}
            }
        }
    }
}

/// The classifier thread's end of one link.
struct CoreEnd {
    requests: Consumer<Request>,
    answers: Producer<Answer>,
    shared: Arc<LinkShared>,
}

struct Pending {
    link: usize,
    slot: u32,
    deadline: Instant,
}

/// Pops requests round-robin from all rings until `batch` holds `max` (fairness: one worker
/// cannot fill every batch).
fn collect(ends: &mut [CoreEnd], batch: &mut Vec<Pending>, max: usize) {
    loop {
        let before = batch.len();
        for (link, end) in ends.iter_mut().enumerate() {
            if batch.len() >= max {
                return;
            }
            if let Ok(r) = end.requests.pop() {
                batch.push(Pending {
                    link,
                    slot: r.slot,
                    deadline: r.deadline,
                });
            }
        }
        if batch.len() == before {
            return;
        }
    }
}

fn answer(end: &mut CoreEnd, slot: u32, output: Option<ModelOutput>) {
    // Never full: each slot has at most one answer in flight and capacity = slots.
    let _ = end.answers.push(Answer { slot, output });
    if let Some(s) = end.shared.slots.get(slot as usize) {
        s.waker.wake();
    }
}

fn run_classifier(
    mut model: Model,
    mut ends: Vec<CoreEnd>,
    config: BatchConfig,
    stats: &ClassifierStats,
) {
    let core = &stats.core;
    let mut batch: Vec<Pending> = Vec::with_capacity(config.max_batch);
    let mut live: Vec<(usize, u32)> = Vec::with_capacity(config.max_batch);
    let max_wait = Duration::from_micros(config.max_wait_us);
    let mut last_batch_len = 0usize;
    loop {
        batch.clear();
        collect(&mut ends, &mut batch, config.max_batch);
        if batch.is_empty() {
            if ends
                .iter()
                .all(|e| e.requests.is_abandoned() && e.requests.is_empty())
            {
                return;
            }
            // Idle: park, never spin (a spinning thread sharing a core collapses throughput).
            // Submitters unpark us; the timeout only bounds a missed wake.
            thread::park_timeout(Duration::from_millis(50));
            continue;
        }
        if batch.len() < config.max_batch && last_batch_len > 1 && !max_wait.is_zero() {
            let until = Instant::now() + max_wait;
            loop {
                collect(&mut ends, &mut batch, config.max_batch);
                let now = Instant::now();
                if batch.len() >= config.max_batch || now >= until {
                    break;
                }
                thread::park_timeout(until - now);
            }
        }
        last_batch_len = batch.len();

        let now = Instant::now();
        live.clear();
        for p in &batch {
            if p.deadline <= now {
                core.expired_in_queue.fetch_add(1, Relaxed);
                answer(&mut ends[p.link], p.slot, None);
            } else {
                live.push((p.link, p.slot));
            }
        }
        if live.is_empty() {
            continue;
        }
        let result = {
            let texts: Vec<&str> = live
                .iter()
                .map(|&(link, slot)| {
                    // SAFETY: this slot's request was popped and its answer not yet pushed: the
                    // worker does not touch the text until then (see TextSlot).
                    unsafe { (*ends[link].shared.slots[slot as usize].text.get()).as_str() }
                })
                .collect();
            model.predict_batch(&texts)
        };
        core.batches.fetch_add(1, Relaxed);
        let bucket = BATCH_HIST_BOUNDS
            .iter()
            .position(|&b| live.len() <= b)
            .unwrap_or(BATCH_HIST_BUCKETS - 1);
        core.batch_hist[bucket].fetch_add(1, Relaxed);
        match result {
            Ok(outputs) if outputs.len() == live.len() => {
                core.inferred.fetch_add(live.len() as u64, Relaxed);
                for (&(link, slot), out) in live.iter().zip(outputs) {
                    answer(&mut ends[link], slot, Some(out));
                }
            }
            _ => {
                core.failed.fetch_add(live.len() as u64, Relaxed);
                for &(link, slot) in &live {
                    answer(&mut ends[link], slot, None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn test_model() -> Model {
        Model::load_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/classifier"))
            .expect("test model")
    }

    fn runtime() -> monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>> {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime")
    }

    #[test]
    fn end_to_end_from_two_worker_threads() {
        let (links, classifier) = ClassifierService::start(
            test_model(),
            2,
            BatchConfig {
                max_batch: 8,
                max_wait_us: 200,
                ..Default::default()
            },
        );
        let stats = links[0].stats();
        let mut workers = Vec::new();
        for (w, link) in links.into_iter().enumerate() {
            workers.push(thread::spawn(move || {
                runtime().block_on(async move {
                    let handle = link.into_handle();
                    let mut got = 0;
                    for i in 0..20 {
                        let text = format!("worker {w} prompt {i}: write a python function");
                        if let Some(out) = handle.classify(&text, Duration::from_secs(5)).await {
                            let sum: f32 = out.probs.iter().sum();
                            assert!((sum - 1.0).abs() < 1e-3);
                            got += 1;
                        }
                    }
                    // Concurrent tasks on one worker share the ring.
                    let h = &handle;
                    let second = ClassifyInput::from_prompt("/code second");
                    let (a, b) = monoio::join!(
                        h.classify("first concurrent", Duration::from_secs(5)),
                        h.classify_input(&second, Duration::from_secs(5))
                    );
                    assert!(a.is_some() && b.is_some());
                    got
                })
            }));
        }
        for w in workers {
            assert_eq!(w.join().expect("worker"), 20);
        }
        let s = stats.snapshot();
        assert_eq!(s.submitted, 44);
        assert_eq!(s.answered, 44);
        assert_eq!(s.inferred, 44);
        assert_eq!((s.late, s.ring_full, s.queue_depth), (0, 0, 0));
        assert_eq!(s.batch_size_hist.iter().sum::<u64>(), s.batches);
        classifier
            .join()
            .expect("classifier thread exits once links are gone");
    }

    #[test]
    fn late_deadline_gives_none_and_is_counted_and_slot_is_reused() {
        let (mut links, classifier) = ClassifierService::start(
            test_model(),
            1,
            BatchConfig {
                ring_slots: 2,
                ..Default::default()
            },
        );
        let link = links.pop().expect("one link");
        let stats = link.stats();
        runtime().block_on(async move {
            let handle = link.into_handle();
            assert_eq!(handle.classify("too late", Duration::ZERO).await, None);
            assert_eq!(handle.classify("also late", Duration::ZERO).await, None);
            // Both slots are abandoned until their answers come back; then they are reused.
            for _ in 0..5 {
                assert!(handle
                    .classify("in time", Duration::from_secs(5))
                    .await
                    .is_some());
            }
        });
        let s = stats.snapshot();
        assert_eq!(s.late, 2);
        assert_eq!(s.answered, 5);
        assert_eq!(s.submitted, 7);
        assert_eq!(s.inferred + s.expired_in_queue, 7);
        classifier.join().expect("exit");
    }

    #[test]
    fn full_ring_gives_none_and_is_counted() {
        let (mut links, classifier) = ClassifierService::start(
            test_model(),
            1,
            BatchConfig {
                ring_slots: 1,
                ..Default::default()
            },
        );
        let link = links.pop().expect("one link");
        let stats = link.stats();
        let attempts = runtime().block_on(async move {
            let handle = link.into_handle();
            let h = &handle;
            // One slot: while "one" is in flight, "two" finds it taken. If the classifier answers
            // "one" before "two" is submitted (a preempted test thread), try again.
            for attempt in 1..=200u64 {
                let (a, b) = monoio::join!(
                    h.classify("one", Duration::from_secs(5)),
                    h.classify("two", Duration::from_secs(5))
                );
                assert!(a.is_some());
                if b.is_none() {
                    return attempt;
                }
            }
            panic!("the second submit never found the single slot taken");
        });
        let s = stats.snapshot();
        assert_eq!(s.ring_full, 1);
        assert_eq!(s.submitted + s.ring_full, 2 * attempts);
        classifier.join().expect("exit");
    }

    #[test]
    fn huge_text_is_cut_to_the_slot_without_growing_it() {
        let (mut links, classifier) =
            ClassifierService::start(test_model(), 1, BatchConfig::default());
        let link = links.pop().expect("one link");
        let shared = link.shared.clone();
        let big = "x".repeat(1 << 20);
        runtime().block_on(async move {
            let handle = link.into_handle();
            assert!(handle
                .classify(&big, Duration::from_secs(5))
                .await
                .is_some());
        });
        classifier.join().expect("exit");
        // SAFETY: the classifier thread has exited; nothing else touches the slots.
        let caps: Vec<usize> = shared
            .slots
            .iter()
            .map(|s| unsafe { (*s.text.get()).capacity() })
            .collect();
        assert!(
            caps.iter().all(|&c| c == MODEL_TEXT_MAX_BYTES),
            "slot buffers must not grow"
        );
    }
}
