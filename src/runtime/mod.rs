//! The runtime: one monoio runtime per worker core, each with its own SO_REUSEPORT listener
//! (io_uring driver with COOP_TASKRUN/SINGLE_ISSUER/DEFER_TASKRUN, the legacy epoll driver only
//! where io_uring cannot be set up), plus the signal thread that drives graceful shutdown.
//! Per-request policy lives in `pipeline`; this module only starts, stops and hands out state.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod notify;

use arc_swap::ArcSwap;
use monoio::net::{ListenerOpts, TcpListener};

use crate::config::Config;
use crate::pipeline::account::{Accounting, WorkerCounters};
use crate::pipeline::Worker;

/// A config reload: `Ok(summary)` or `Err(reason)` (the running config keeps serving).
pub type Reloader = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// Which I/O driver the workers run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    IoUring,
    Legacy,
}

impl DriverKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DriverKind::IoUring => "io_uring",
            DriverKind::Legacy => "epoll",
        }
    }
}

impl std::fmt::Display for DriverKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// State shared by all cores: read-mostly (the config snapshot) or written by one core only.
pub struct Shared {
    pub config: ArcSwap<Config>,
    shutdown: AtomicBool,
    pub started: Instant,
    pub workers: usize,
    pub driver: DriverKind,
    pub counters: Vec<Arc<WorkerCounters>>,
    /// Keys, budgets, ledger and stats registry (the accounting engine).
    pub accounting: Arc<Accounting>,
    /// Cross-core upstream health board for the current config snapshot (keyed by its address;
    /// rebuilt when a reload changes the target list). Locked only when a core first sees a snapshot.
    health_board: Mutex<Option<(usize, crate::health::SharedHealth)>>,
    /// Re-reads the config file and swaps the snapshot (set by the CLI; used by SIGHUP and
    /// `POST /reload-config`). Runs off the worker cores; serialised by its own lock.
    pub reloader: std::sync::OnceLock<Reloader>,
    /// The address every core listens on (for the deep health probe's self-request).
    pub listen_addr: std::sync::OnceLock<SocketAddr>,
    /// Last deep health answer: (when, status, body); reused for a few seconds.
    pub deep_health: Mutex<Option<(Instant, u16, String)>>,
    /// Every core's cache counters, for /stats (pushed once when a core creates its shard).
    pub cache_counters: Mutex<Vec<Arc<crate::cache::CacheCounters>>>,
    /// The classifier core's counters (None when it is off or failed to load).
    pub classifier_stats: Option<Arc<crate::classifier::ClassifierStats>>,
    /// The security scanner (loads in the background; see `pipeline::security`).
    pub security: Arc<crate::pipeline::security::SecurityEngine>,
    listener_fds: Mutex<Vec<i32>>,
}

impl Shared {
    /// The health board shared by all cores for `cfg`.
    pub fn health_board(&self, cfg: &Arc<Config>) -> crate::health::SharedHealth {
        let key = Arc::as_ptr(cfg) as usize;
        let mut guard = self.health_board.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some((k, board)) if *k == key => board.clone(),
            _ => {
                let board = crate::health::SharedHealth::new(self.workers, cfg.targets.len());
                *guard = Some((key, board.clone()));
                board
            }
        }
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed)
    }

    /// Starts graceful shutdown: listeners stop accepting, idle connections close, in-flight
    /// requests get the drain time.
    pub fn begin_shutdown(&self) {
        if self.shutdown.swap(true, Ordering::SeqCst) {
            return;
        }
        notify::notify("STOPPING=1");
        if let Ok(fds) = self.listener_fds.lock() {
            for &fd in fds.iter() {
                // SAFETY: the fd is a listening socket owned by a worker that is still running (it
                // only closes it after observing the shutdown flag); shutdown(2) wakes its pending
                // accept with an error and does not close the descriptor.
                unsafe {
                    libc::shutdown(fd, libc::SHUT_RDWR);
                }
            }
        }
    }

    /// The /stats text: the accounting engine's families (requests by status, route, model, app;
    /// tokens, cost, savings, outcomes, budget rejections, latency histograms), upstream pools
    /// and failovers, Redis and ledger state, then the connection-level counters of this module.
    pub fn render_stats(&self) -> String {
        use crate::stats::{render_prometheus, Scrape, UpstreamGauge};
        use std::fmt::Write;
        let snapshot = self.accounting.stats.snapshot();
        let cfg = self.config.load();
        let failovers = self
            .accounting
            .upstream_failovers
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        let upstreams: Vec<UpstreamGauge> = cfg
            .providers
            .iter()
            .enumerate()
            .map(|(i, p)| UpstreamGauge {
                upstream: p.name.clone(),
                pool_connections: self
                    .counters
                    .iter()
                    .map(|c| c.pool_idle_by_provider(i))
                    .sum(),
                healthy: self.counters.iter().all(|c| !c.provider_failing(i)),
                failovers_total: failovers.get(&p.name).copied().unwrap_or(0),
            })
            .collect();
        let redis_up = self.accounting.redis.as_ref().map(|r| r.is_up());
        let classifier = self.classifier_stats.as_ref().map(|c| {
            let c = c.snapshot();
            let bounds = crate::classifier::batcher::BATCH_HIST_BOUNDS
                .iter()
                .map(|&b| b as f64)
                .collect();
            crate::stats::ClassifierSnapshot {
                requests_total: c.submitted,
                late_answers_total: c.late + c.ring_full,
                batch_size: crate::stats::HistogramSnapshot {
                    bounds,
                    counts: c.batch_size_hist.to_vec(),
                    sum: c.inferred as f64,
                },
            }
        });
        let mut s = render_prometheus(&Scrape {
            stats: &snapshot,
            classifier: classifier.as_ref(),
            upstreams: &upstreams,
            redis_up,
            ledger: self.accounting.ledger_counters(),
        });
        macro_rules! sum {
            ($f:ident) => {
                self.counters.iter().map(|c| c.$f.get()).sum::<u64>()
            };
        }
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            "tierflow_http_requests_total",
            "HTTP requests received on every endpoint.",
            sum!(requests),
        );
        counter(
            "tierflow_http_responses_2xx_total",
            "Responses with a 2xx status (every endpoint).",
            sum!(responses_2xx),
        );
        counter(
            "tierflow_http_responses_4xx_total",
            "Responses with a 4xx status (every endpoint).",
            sum!(responses_4xx),
        );
        counter(
            "tierflow_http_responses_5xx_total",
            "Responses with a 5xx status (every endpoint).",
            sum!(responses_5xx),
        );
        counter(
            "tierflow_streams_total",
            "Streamed responses.",
            sum!(streams),
        );
        counter(
            "tierflow_upstream_errors_total",
            "Upstream attempts that failed.",
            sum!(upstream_errors),
        );
        counter(
            "tierflow_client_cancels_total",
            "Streams abandoned by the client.",
            sum!(client_cancels),
        );
        counter(
            "tierflow_connections_total",
            "Downstream connections accepted.",
            sum!(connections_open),
        );
        counter(
            "tierflow_connections_rejected_total",
            "Connections refused over the per-core limit.",
            sum!(connections_rejected),
        );
        counter(
            "tierflow_upstream_connections_opened_total",
            "Upstream connections opened.",
            sum!(pool_opened),
        );
        counter(
            "tierflow_upstream_connections_reused_total",
            "Requests sent on a pooled connection.",
            sum!(pool_reused),
        );
        let caches: Vec<crate::cache::CacheStats> = self
            .cache_counters
            .lock()
            .map(|v| v.iter().map(|c| c.load()).collect())
            .unwrap_or_default();
        let total = |f: fn(&crate::cache::CacheStats) -> u64| caches.iter().map(f).sum::<u64>();
        counter(
            "tierflow_cache_hits_total",
            "Response cache hits.",
            total(|c| c.hits),
        );
        counter(
            "tierflow_cache_misses_total",
            "Response cache misses.",
            total(|c| c.misses),
        );
        counter(
            "tierflow_cache_evictions_total",
            "Entries evicted to stay within the memory bound.",
            total(|c| c.evictions),
        );
        counter(
            "tierflow_cache_insertions_total",
            "Answers stored in the cache.",
            total(|c| c.insertions),
        );
        let _ = writeln!(
            s,
            "# HELP tierflow_cache_bytes Accounted bytes held by the response cache.\n# TYPE tierflow_cache_bytes gauge\ntierflow_cache_bytes {}",
            total(|c| c.bytes)
        );
        crate::pipeline::compress::render_stats(&mut s, &self.counters);
        crate::pipeline::probe::render_stats(&mut s, self);
        s
    }
}

/// Hands memory freed since start back to the OS. Parsing the routing model and compiling or
/// loading the pattern databases allocate several times what they keep (the ONNX protobuf, tract's
/// intermediate graphs, tokenizer JSON); mimalloc keeps freed pages for reuse, so without this they
/// stayed resident (idle RSS with everything on: 109 MB before, 94 MB after). Called once all cores
/// listen, when the scanner thread has loaded, and after each reload; costs a few milliseconds,
/// never on a request. Harmless when mimalloc is not the global allocator (its heaps are then empty).
pub fn return_free_memory() {
    // SAFETY: `mi_collect` takes no pointers and may be called from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// Keeps this process off transparent huge pages (`prctl(PR_SET_THP_DISABLE)`), unless the
/// environment sets `TIERFLOW_THP=1`. mimalloc marks its arenas `MADV_HUGEPAGE`, so on hosts with
/// THP in `madvise` mode (as on the build host; `always` does the same to any region) every 2 MiB
/// region it touches becomes resident in full: with everything on, idle RSS was ~80 MB of which
/// ~35 MB were huge pages; without them 61–64 MB (measured side by side, see README). Called first thing in `cli::main`, before the model
/// and pattern databases are loaded; the setting is inherited by every thread. Returns whether THP
/// is now off for this process. Allowed by the unit's `SystemCallFilter` (`@process`).
pub fn disable_transparent_huge_pages() -> bool {
    if std::env::var_os("TIERFLOW_THP").is_some_and(|v| v == "1") {
        return false;
    }
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes no memory.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0 }
}

/// mimalloc's `mi_option_purge_delay` (index 15 of `mi_option_e` in its v3 `mimalloc.h`; the
/// crate names no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long (ms) mimalloc keeps freed pages before handing them back to the OS. Its v3 default is
/// 1000 ms, so under load a second's worth of the classifier's per-batch buffers and the workers'
/// per-request buffers stayed resident. Measured with the full pipeline under wrk (1 worker, 32
/// connections, alternated, README): 1000 ms → RSS 79 MB after load, 10 ms → 69 MB at ~5% fewer
/// req/s, 0 → 62–63 MB at ~12% fewer (each free page goes back at once and faults in again on
/// reuse). 10 ms (mimalloc v2's default) is the middle; `MIMALLOC_PURGE_DELAY=0` trades the
/// throughput for the memory.
pub const PURGE_DELAY_MS: i64 = 10;

/// Sets tierflow's allocator defaults, first thing in `cli::main`. A default only: an operator's
/// `MIMALLOC_PURGE_DELAY` still wins. (`mi_option_set_default` cannot express this: mimalloc reads
/// every option, environment included, when the process loads, and a default set after that is
/// ignored.)
pub fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: sets an integer option; mimalloc reads it on each purge and allows this at any time.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS as _);
    }
}

/// Drops the resident pages of `bytes`, data embedded in the executable (`include_bytes!`) that was
/// only read at start (the ONNX model, the tokenizer JSON). They are clean pages of a private file
/// mapping: `MADV_DONTNEED` frees them now instead of whenever the kernel needs the memory, and a
/// later read (a reload) faults them in again from the file. Only whole pages inside `bytes` are
/// released, so neighbouring data is untouched.
pub fn release_read_only(bytes: &'static [u8]) {
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let first = (bytes.as_ptr() as usize).div_ceil(page) * page;
    let last = (bytes.as_ptr() as usize + bytes.len()) / page * page;
    if last > first {
        // SAFETY: [first, last) lies inside a `'static` read-only slice of the executable's
        // mapping, page-aligned; for a private file mapping DONTNEED only drops clean pages, and
        // the data reads back unchanged from the file on the next access.
        unsafe {
            libc::madvise(
                first as *mut libc::c_void,
                last - first,
                libc::MADV_DONTNEED,
            );
        }
    }
}

/// Loads the routing model and starts the classifier core (one ring pair per worker). On any
/// failure the gateway still serves: `auto` is routed by the rule scorer, and the log says why.
fn start_classifier(config: &Config, workers: usize) -> Vec<crate::classifier::ClassifierLink> {
    if !config.classifier_enabled() {
        crate::log::info("classifier off", &[("routing", "rules")]);
        return Vec::new();
    }
    let t = Instant::now();
    match crate::classifier::Model::embedded() {
        Ok(model) => {
            let load_ms = t.elapsed().as_millis().to_string();
            let d = crate::classifier::BatchConfig::default();
            let cfg = crate::classifier::BatchConfig {
                max_batch: config.classifier.max_batch.unwrap_or(d.max_batch),
                max_wait_us: config.classifier.max_wait_us.unwrap_or(d.max_wait_us),
                ..d
            };
            let (links, _thread) = crate::classifier::ClassifierService::start(model, workers, cfg);
            crate::log::info(
                "classifier ready",
                &[
                    ("load_ms", &load_ms),
                    (
                        "deadline_us",
                        &config.classifier_deadline().as_micros().to_string(),
                    ),
                ],
            );
            links
        }
        Err(e) => {
            crate::log::error(
                "classifier model failed to load; routing by rules",
                &[("error", &e.to_string())],
            );
            Vec::new()
        }
    }
}

/// Chooses the driver once at start: io_uring unless unavailable or `TIERFLOW_DRIVER=epoll`.
fn choose_driver() -> DriverKind {
    match std::env::var("TIERFLOW_DRIVER").as_deref() {
        Ok("epoll") | Ok("legacy") => return DriverKind::Legacy,
        _ => {}
    }
    if !monoio::utils::detect_uring() {
        return DriverKind::Legacy;
    }
    match build_uring_runtime() {
        Ok(_) => DriverKind::IoUring,
        Err(_) => DriverKind::Legacy,
    }
}

type UringRuntime = monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>>;
type LegacyRuntime = monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>>;

fn build_uring_runtime() -> std::io::Result<UringRuntime> {
    // Measured on this machine class (FINDINGS.md): default ring flags ~78k req/s, with these three
    // ~124k, epoll ~111k. DEFER_TASKRUN needs Linux 6.1; fall back to plain flags if refused.
    let mut b = io_uring::IoUring::builder();
    b.setup_coop_taskrun()
        .setup_single_issuer()
        .setup_defer_taskrun();
    match monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .with_entries(1024)
        .uring_builder(b)
        .enable_timer()
        .build()
    {
        Ok(rt) => Ok(rt),
        Err(_) => monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(1024)
            .enable_timer()
            .build(),
    }
}

fn build_legacy_runtime() -> std::io::Result<LegacyRuntime> {
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
}

/// A running gateway: its address and the handle to stop it.
pub struct Running {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Waits for every worker to finish (after `begin_shutdown` and the drain).
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Binds the listeners and starts the worker cores. Returns once every core listens.
pub fn start(config: Arc<Config>, accounting: Arc<Accounting>) -> anyhow::Result<Running> {
    let workers = config.workers.max(1);
    let driver = choose_driver();
    let counters = (0..workers)
        .map(|_| Arc::new(WorkerCounters::default()))
        .collect();
    let links = start_classifier(&config, workers);
    let shared = Arc::new(Shared {
        config: ArcSwap::new(config.clone()),
        shutdown: AtomicBool::new(false),
        started: Instant::now(),
        workers,
        driver,
        counters,
        accounting,
        health_board: Mutex::new(None),
        reloader: std::sync::OnceLock::new(),
        listen_addr: std::sync::OnceLock::new(),
        deep_health: Mutex::new(None),
        cache_counters: Mutex::new(Vec::new()),
        classifier_stats: links.first().map(|l| l.stats()),
        security: crate::pipeline::security::SecurityEngine::start(&config.security),
        listener_fds: Mutex::new(Vec::new()),
    });
    // Port 0: let the first listener pick, the others join it through SO_REUSEPORT.
    let mut addr = config.listen;
    let mut threads = Vec::with_capacity(workers);
    let mut links = links.into_iter();
    for id in 0..workers {
        let link = links.next();
        let (tx, rx) = std::sync::mpsc::channel::<Result<SocketAddr, String>>();
        let shared2 = shared.clone();
        let bind_addr = addr;
        let t = std::thread::Builder::new()
            .name(format!("tierflow-w{id}"))
            .spawn(move || {
                let fut = worker_main(id, shared2, bind_addr, tx.clone(), link);
                let res = match driver {
                    DriverKind::IoUring => build_uring_runtime().map(|mut rt| rt.block_on(fut)),
                    DriverKind::Legacy => build_legacy_runtime().map(|mut rt| rt.block_on(fut)),
                };
                if let Err(e) = res {
                    let _ = tx.send(Err(format!("runtime: {e}")));
                }
            })?;
        threads.push(t);
        match rx.recv() {
            Ok(Ok(a)) => addr = a,
            Ok(Err(e)) => {
                shared.begin_shutdown();
                anyhow::bail!("worker {id} could not start: {e}");
            }
            Err(_) => anyhow::bail!("worker {id} exited during start"),
        }
    }
    crate::log::info(
        "listening",
        &[
            ("addr", &addr.to_string()),
            ("workers", &workers.to_string()),
            ("driver", driver.as_str()),
            ("config", &config.source),
        ],
    );
    let _ = shared.listen_addr.set(addr);
    return_free_memory();
    Ok(Running {
        addr,
        shared,
        threads,
    })
}

async fn worker_main(
    id: usize,
    shared: Arc<Shared>,
    addr: SocketAddr,
    ready: std::sync::mpsc::Sender<Result<SocketAddr, String>>,
    classifier: Option<crate::classifier::ClassifierLink>,
) {
    let opts = ListenerOpts::new()
        .reuse_port(true)
        .reuse_addr(true)
        .backlog(4096);
    let listener = match TcpListener::bind_with_config(addr, &opts) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(format!("bind {addr}: {e}")));
            return;
        }
    };
    let local = listener.local_addr().unwrap_or(addr);
    if let Ok(mut fds) = shared.listener_fds.lock() {
        fds.push(listener.as_raw_fd());
    }
    let _ = ready.send(Ok(local));
    drop(ready);
    let mut worker = Worker::new(id, shared.clone());
    worker.classifier = classifier.map(|l| l.into_handle());
    let worker = std::rc::Rc::new(worker);
    monoio::spawn(crate::pipeline::probe::run(worker.clone()));
    while !shared.is_shutting_down() {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                if shared.is_shutting_down() {
                    drop(stream);
                    break;
                }
                monoio::spawn(crate::pipeline::accept::serve_connection(
                    worker.clone(),
                    stream,
                ));
            }
            Err(e) => {
                if shared.is_shutting_down() {
                    break;
                }
                // EMFILE and friends: back off briefly instead of spinning.
                crate::log::warn("accept failed", &[("error", &e.to_string())]);
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    drop(listener);
    // Drain: idle keep-alive connections close now, busy ones when their request ends.
    let drain_ms = shared.config.load().limits.drain_ms;
    let deadline = Instant::now() + Duration::from_millis(drain_ms);
    loop {
        worker.conns.close_idle();
        if worker.conns.is_empty() || Instant::now() >= deadline {
            break;
        }
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Installs SIGTERM/SIGINT (graceful shutdown) and SIGHUP (reload) handling on a dedicated thread.
pub fn spawn_signal_thread(
    shared: Arc<Shared>,
    on_reload: impl Fn() + Send + 'static,
) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    std::thread::Builder::new()
        .name("tierflow-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                match sig {
                    SIGHUP => on_reload(),
                    _ => {
                        crate::log::info(
                            "shutdown requested",
                            &[("signal", if sig == SIGTERM { "SIGTERM" } else { "SIGINT" })],
                        );
                        shared.begin_shutdown();
                    }
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{disable_transparent_huge_pages, release_read_only};

    /// The process reads back as kept off transparent huge pages (the flag every later thread and
    /// mapping inherits), unless the operator asked for them.
    #[test]
    fn transparent_huge_pages_are_off_for_the_process() {
        if std::env::var_os("TIERFLOW_THP").is_some_and(|v| v == "1") {
            assert!(!disable_transparent_huge_pages());
            return;
        }
        assert!(disable_transparent_huge_pages());
        // SAFETY: PR_GET_THP_DISABLE takes no pointers.
        let flag = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(flag, 1);
    }

    /// The purge-delay default reaches mimalloc (index 15 is `mi_option_purge_delay`), unless the
    /// environment overrides it.
    #[test]
    fn allocator_purge_delay_default_is_set() {
        super::tune_allocator();
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // SAFETY: reads an integer option.
            let v = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
            assert_eq!(v as i64, super::PURGE_DELAY_MS);
        }
    }

    /// Released pages of embedded data read back unchanged (from the executable file), and the
    /// bytes around them are untouched.
    #[test]
    fn released_embedded_bytes_read_back_unchanged() {
        static BLOB: &[u8] = include_bytes!("../../models/tokenizer.json");
        let sum = |b: &[u8]| {
            b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &c| {
                (h ^ c as u64).wrapping_mul(0x100_0000_01b3)
            })
        };
        let before = (sum(BLOB), BLOB.len(), BLOB[0], BLOB[BLOB.len() - 1]);
        release_read_only(BLOB);
        assert_eq!(
            (sum(BLOB), BLOB.len(), BLOB[0], BLOB[BLOB.len() - 1]),
            before
        );
        release_read_only(&BLOB[1..2]); // less than a page: nothing to release
        assert_eq!(sum(BLOB), before.0);
    }
}
