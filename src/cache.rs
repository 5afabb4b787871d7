//! Exact-match response cache, one shard per core: the request key (SHA-256 of a canonical
//! request), an LRU with TTL and a byte bound, the recorder of a streamed answer, and replay of an
//! entry as a JSON body or as an SSE stream in either shape. The pipeline decides what is
//! cacheable beyond `cacheable` (errors, blocked requests) and adds the routing metadata on replay.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Cache settings. Defaults in `Default`.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    /// Bound on the accounted bytes of all entries (payload plus per-entry overhead); default 64 MiB.
    pub max_bytes: usize,
    /// An entry older than this is a miss and is dropped on lookup; default 5 min.
    pub ttl_ms: u64,
    /// Larger answers are not stored; default 1 MiB.
    pub max_entry_bytes: usize,
    /// Cache requests sampled with temperature > 0 (or without a temperature, whose OpenAI default
    /// is 1); default false.
    pub allow_nonzero_temperature: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_bytes: 64 << 20,
            ttl_ms: 300_000,
            max_entry_bytes: 1 << 20,
            allow_nonzero_temperature: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("request body is not valid JSON: {0}")]
    BadJson(#[from] serde_json::Error),
    #[error("request body is not a JSON object")]
    NotAnObject,
    #[error("cache entry of {bytes} bytes exceeds the limit of {limit_bytes} bytes")]
    TooLarge { bytes: usize, limit_bytes: usize },
    #[error("cached stream chunk {index} is not a JSON chat completion chunk")]
    BadChunk { index: usize },
}

/// SHA-256 of the canonical request.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(pub [u8; 32]);

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…")
    }
}

/// Top-level request members that do not change the answer: transport (`stream`,
/// `stream_options`), attribution (`user`, `metadata`, `store`), and gateway-only routing (`model`
/// is replaced by the routed model, `route` is removed before forwarding).
const EXCLUDED_MEMBERS: [&str; 7] = [
    "stream",
    "stream_options",
    "user",
    "metadata",
    "store",
    "model",
    "route",
];

/// Key of a request body. `routed_model` is the `provider/model` that will answer. `key_scope`
/// is the API key (or any tenant id) when that key's settings say entries must not be shared
/// across keys; `None` shares entries between keys. Everything else the client sent is part of
/// the key (messages, tools, tool_choice, response_format, sampling parameters, unknown fields),
/// except `EXCLUDED_MEMBERS`. Objects are hashed with sorted keys, and integral floats as integers
/// (`0.0` and `0` hash alike). `Err` when the body is not a JSON object.
pub fn request_key(
    body: &[u8],
    routed_model: &str,
    key_scope: Option<&str>,
) -> Result<CacheKey, CacheError> {
    let v: Value = serde_json::from_slice(body)?;
    request_key_value(&v, routed_model, key_scope)
}

/// `request_key` on an already parsed body.
pub fn request_key_value(
    req: &Value,
    routed_model: &str,
    key_scope: Option<&str>,
) -> Result<CacheKey, CacheError> {
    let obj = req.as_object().ok_or(CacheError::NotAnObject)?;
    let mut buf = Vec::with_capacity(1024);
    buf.extend_from_slice(b"tierflow-cache-v1\0");
    buf.extend_from_slice(routed_model.as_bytes());
    buf.push(0);
    match key_scope {
        Some(k) => {
            buf.push(1);
            buf.extend_from_slice(&Sha256::digest(k.as_bytes()));
        }
        None => buf.push(0),
    }
    let mut keys: Vec<&String> = obj
        .keys()
        .filter(|k| !EXCLUDED_MEMBERS.contains(&k.as_str()))
        .collect();
    keys.sort_unstable();
    buf.push(b'{');
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        write_json_str(&mut buf, k);
        buf.push(b':');
        if let Some(v) = obj.get(k.as_str()) {
            write_canonical(&mut buf, v);
        }
    }
    buf.push(b'}');
    Ok(CacheKey(Sha256::digest(&buf).into()))
}

/// The cheap variant of `request_key` over the body's top-level members as raw bytes
/// (`(key, value)` pairs from the parse stage's member map, key unquoted): no JSON parse, members
/// sorted by key, `EXCLUDED_MEMBERS` skipped, values hashed byte for byte. Two bodies that differ
/// only in whitespace or key order inside a value get different keys (a miss, never a wrong
/// hit). A deployment must use one key function consistently.
pub fn request_key_members<'a>(
    members: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    routed_model: &str,
    key_scope: Option<&str>,
) -> CacheKey {
    let mut kept: Vec<(&str, &[u8])> = members
        .into_iter()
        .filter(|(k, _)| !EXCLUDED_MEMBERS.contains(k))
        .collect();
    kept.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut h = Sha256::new();
    h.update(b"tierflow-cache-raw-v1\0");
    h.update(routed_model.as_bytes());
    h.update([0u8]);
    match key_scope {
        Some(k) => {
            h.update([1u8]);
            h.update(Sha256::digest(k.as_bytes()));
        }
        None => h.update([0u8]),
    }
    for (k, v) in kept {
        // Length-prefixed so that no two member lists hash the same bytes.
        h.update((k.len() as u64).to_le_bytes());
        h.update(k.as_bytes());
        h.update((v.len() as u64).to_le_bytes());
        h.update(v);
    }
    CacheKey(h.finalize().into())
}

fn write_json_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    // serde_json's escaping is canonical (shortest form); writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn write_canonical(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => {
            if let (false, Some(f)) = (n.is_i64() || n.is_u64(), n.as_f64()) {
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    let _ = std::io::Write::write_fmt(out, format_args!("{}", f as i64));
                    return;
                }
            }
            let _ = std::io::Write::write_fmt(out, format_args!("{n}"));
        }
        Value::String(s) => write_json_str(out, s),
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(out, x);
            }
            out.push(b']');
        }
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort_unstable();
            out.push(b'{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json_str(out, k);
                out.push(b':');
                if let Some(x) = o.get(k.as_str()) {
                    write_canonical(out, x);
                }
            }
            out.push(b'}');
        }
    }
}

/// Whether a request may be answered from (and stored in) the cache, judged on its sampling:
/// temperature must be present and ≤ 0 unless `allow_nonzero_temperature`; `n` must not ask for
/// several samples at a nonzero temperature. Errors and blocked requests are the caller's call
/// (see `cacheable_response`). Not an object or no `messages`: false.
pub fn cacheable(req: &Value, cfg: &CacheConfig) -> bool {
    let Some(obj) = req.as_object() else {
        return false;
    };
    if !obj.get("messages").is_some_and(Value::is_array) {
        return false;
    }
    cacheable_sampling(obj.get("temperature").and_then(Value::as_f64), cfg)
}

/// The sampling rule of `cacheable`, for callers that parsed the body themselves.
pub fn cacheable_sampling(temperature: Option<f64>, cfg: &CacheConfig) -> bool {
    cfg.allow_nonzero_temperature || temperature.is_some_and(|t| t <= 0.0)
}

/// Whether an answer may be stored: a 200 that the security policy did not block.
pub fn cacheable_response(status: u16, blocked: bool) -> bool {
    status == 200 && !blocked
}

/// What an entry holds: the final non-streaming body, or the ordered `data:` payloads of a
/// recorded stream (without `[DONE]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CachedBody {
    Json(Box<[u8]>),
    Stream {
        chunks: Box<[Box<[u8]>]>,
        /// Index of the usage-only chunk (`"choices":[]` with `usage`), dropped on replay unless asked for.
        usage_chunk: Option<usize>,
    },
}

impl CachedBody {
    fn payload_bytes(&self) -> usize {
        match self {
            CachedBody::Json(b) => b.len(),
            CachedBody::Stream { chunks, .. } => chunks
                .iter()
                .map(|c| c.len() + std::mem::size_of::<Box<[u8]>>())
                .sum(),
        }
    }
}

/// One cached answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub body: CachedBody,
    pub inserted_ms: u64,
    /// Accounted size: payload plus `ENTRY_OVERHEAD_BYTES`.
    pub bytes: usize,
}

/// Fixed bytes charged per entry: the node, the map slot and control byte, the `Arc` header, and
/// the spare capacity a doubling slot vector and a 7/8-full hash table carry (up to one more
/// node and map slot per entry), so that the real heap stays within `max_bytes`
/// (tests/cache_memory.rs measures it).
pub const ENTRY_OVERHEAD_BYTES: usize = 2
    * (std::mem::size_of::<Node>() + std::mem::size_of::<(CacheKey, u32)>() + 1)
    + std::mem::size_of::<Entry>()
    + 16;

/// Counters of one shard; shared with /stats through the `Arc` (Relaxed, single writer).
#[derive(Debug, Default)]
pub struct CacheCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub evictions: AtomicU64,
    pub expirations: AtomicU64,
    pub insertions: AtomicU64,
    pub rejected: AtomicU64,
    pub bytes: AtomicU64,
    pub entries: AtomicU64,
}

/// A plain copy of the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub expirations: u64,
    pub insertions: u64,
    pub rejected: u64,
    pub bytes: u64,
    pub entries: u64,
}

impl CacheCounters {
    pub fn load(&self) -> CacheStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStats {
            hits: l(&self.hits),
            misses: l(&self.misses),
            evictions: l(&self.evictions),
            expirations: l(&self.expirations),
            insertions: l(&self.insertions),
            rejected: l(&self.rejected),
            bytes: l(&self.bytes),
            entries: l(&self.entries),
        }
    }
}

fn bump(a: &AtomicU64) {
    a.store(a.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

/// The key is already a uniform hash: its first 8 bytes are the map hash.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(b);
        }
    }
}

const NIL: u32 = u32::MAX;

#[derive(Debug)]
struct Node {
    key: CacheKey,
    entry: Option<Arc<Entry>>,
    prev: u32,
    next: u32,
}

/// One core's LRU shard. `get` and `insert` are O(1); eviction removes least recently used
/// entries until the accounted bytes are within `max_bytes`.
#[derive(Debug)]
pub struct ResponseCache {
    cfg: CacheConfig,
    map: HashMap<CacheKey, u32, BuildHasherDefault<KeyHasher>>,
    nodes: Vec<Node>,
    free: Vec<u32>,
    /// Most recently used.
    head: u32,
    /// Least recently used.
    tail: u32,
    bytes: usize,
    counters: Arc<CacheCounters>,
}

impl ResponseCache {
    pub fn new(cfg: CacheConfig) -> ResponseCache {
        ResponseCache {
            cfg,
            map: HashMap::default(),
            nodes: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            bytes: 0,
            counters: Arc::new(CacheCounters::default()),
        }
    }

    pub fn config(&self) -> &CacheConfig {
        &self.cfg
    }

    /// Applies new settings (reload); shrinking `max_bytes` evicts at once.
    pub fn set_config(&mut self, cfg: CacheConfig) {
        self.cfg = cfg;
        self.evict_to_bound();
    }

    pub fn counters(&self) -> &Arc<CacheCounters> {
        &self.counters
    }

    pub fn stats(&self) -> CacheStats {
        self.counters.load()
    }

    /// Accounted bytes of the live entries.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The entry for `key` if present and younger than the TTL; marks it most recently used.
    /// An expired entry is removed and counted as an expiration and a miss.
    pub fn get(&mut self, key: &CacheKey, now_ms: u64) -> Option<Arc<Entry>> {
        let Some(&idx) = self.map.get(key) else {
            bump(&self.counters.misses);
            return None;
        };
        let entry = self.nodes[idx as usize].entry.clone()?;
        if now_ms.saturating_sub(entry.inserted_ms) >= self.cfg.ttl_ms {
            self.remove_index(idx);
            bump(&self.counters.expirations);
            bump(&self.counters.misses);
            return None;
        }
        self.unlink(idx);
        self.push_front(idx);
        bump(&self.counters.hits);
        Some(entry)
    }

    /// Stores an answer, replacing any entry under `key`, then evicts LRU entries until within
    /// `max_bytes`. `Err(TooLarge)` (nothing stored) when the entry alone exceeds
    /// `max_entry_bytes` or `max_bytes`.
    pub fn insert(
        &mut self,
        key: CacheKey,
        body: CachedBody,
        now_ms: u64,
    ) -> Result<(), CacheError> {
        let bytes = body.payload_bytes() + ENTRY_OVERHEAD_BYTES;
        let limit_bytes = self.cfg.max_entry_bytes.min(self.cfg.max_bytes);
        if body.payload_bytes() > self.cfg.max_entry_bytes || bytes > self.cfg.max_bytes {
            bump(&self.counters.rejected);
            return Err(CacheError::TooLarge { bytes, limit_bytes });
        }
        if let Some(&old) = self.map.get(&key) {
            self.remove_index(old);
        }
        let entry = Arc::new(Entry {
            body,
            inserted_ms: now_ms,
            bytes,
        });
        let idx = match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = Node {
                    key,
                    entry: Some(entry),
                    prev: NIL,
                    next: NIL,
                };
                i
            }
            None => {
                self.nodes.push(Node {
                    key,
                    entry: Some(entry),
                    prev: NIL,
                    next: NIL,
                });
                (self.nodes.len() - 1) as u32
            }
        };
        self.map.insert(key, idx);
        self.push_front(idx);
        self.bytes += bytes;
        bump(&self.counters.insertions);
        self.evict_to_bound();
        self.publish_size();
        Ok(())
    }

    /// Removes `key`; true if it was present.
    pub fn remove(&mut self, key: &CacheKey) -> bool {
        match self.map.get(key) {
            Some(&idx) => {
                self.remove_index(idx);
                true
            }
            None => false,
        }
    }

    /// Drops every entry older than the TTL (O(entries); for a periodic sweep, not the hot path).
    pub fn purge_expired(&mut self, now_ms: u64) -> usize {
        let ttl = self.cfg.ttl_ms;
        let expired: Vec<u32> = self
            .map
            .values()
            .copied()
            .filter(|&i| {
                self.nodes[i as usize]
                    .entry
                    .as_ref()
                    .is_some_and(|e| now_ms.saturating_sub(e.inserted_ms) >= ttl)
            })
            .collect();
        for &i in &expired {
            self.remove_index(i);
            bump(&self.counters.expirations);
        }
        expired.len()
    }

    fn evict_to_bound(&mut self) {
        while self.bytes > self.cfg.max_bytes && self.tail != NIL {
            self.remove_index(self.tail);
            bump(&self.counters.evictions);
        }
        self.publish_size();
    }

    fn publish_size(&self) {
        self.counters
            .bytes
            .store(self.bytes as u64, Ordering::Relaxed);
        self.counters
            .entries
            .store(self.map.len() as u64, Ordering::Relaxed);
    }

    fn remove_index(&mut self, idx: u32) {
        self.unlink(idx);
        let node = &mut self.nodes[idx as usize];
        if let Some(e) = node.entry.take() {
            self.bytes -= e.bytes;
        }
        let key = node.key;
        self.map.remove(&key);
        self.free.push(idx);
        self.publish_size();
    }

    fn unlink(&mut self, idx: u32) {
        let (prev, next) = {
            let n = &self.nodes[idx as usize];
            (n.prev, n.next)
        };
        if prev != NIL {
            self.nodes[prev as usize].next = next;
        } else if self.head == idx {
            self.head = next;
        }
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        } else if self.tail == idx {
            self.tail = prev;
        }
        let n = &mut self.nodes[idx as usize];
        n.prev = NIL;
        n.next = NIL;
    }

    fn push_front(&mut self, idx: u32) {
        let old = self.head;
        {
            let n = &mut self.nodes[idx as usize];
            n.prev = NIL;
            n.next = old;
        }
        if old != NIL {
            self.nodes[old as usize].prev = idx;
        }
        self.head = idx;
        if self.tail == NIL {
            self.tail = idx;
        }
    }
}

/// Collects the `data:` payloads of an upstream chat-completion stream for the cache. Feed it the
/// upstream's events before the gateway adds its own metadata chunk; `finish` yields an entry
/// only for a stream that completed with `[DONE]`, carried no error, and stayed within the limit.
#[derive(Debug)]
pub struct StreamRecorder {
    chunks: Vec<Box<[u8]>>,
    bytes: usize,
    limit_bytes: usize,
    usage_chunk: Option<usize>,
    done: bool,
    poisoned: bool,
}

impl StreamRecorder {
    pub fn new(max_entry_bytes: usize) -> StreamRecorder {
        StreamRecorder {
            chunks: Vec::new(),
            bytes: 0,
            limit_bytes: max_entry_bytes,
            usage_chunk: None,
            done: false,
            poisoned: false,
        }
    }

    /// One complete SSE event (its lines, without the blank line). Multi-line `data:` fields are
    /// joined with `\n` as the SSE spec says; an `event: error` poisons the recording.
    pub fn push_event(&mut self, event: &[u8]) {
        let mut data: Option<Vec<u8>> = None;
        for line in event.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(rest) = line.strip_prefix(b"data:") {
                let rest = rest.strip_prefix(b" ").unwrap_or(rest);
                let d = data.get_or_insert_with(Vec::new);
                if !d.is_empty() {
                    d.push(b'\n');
                }
                d.extend_from_slice(rest);
            } else if let Some(rest) = line.strip_prefix(b"event:") {
                if rest.trim_ascii() == b"error" {
                    self.poisoned = true;
                }
            }
        }
        if let Some(d) = data {
            self.push_data(&d);
        }
    }

    /// One `data:` payload.
    pub fn push_data(&mut self, data: &[u8]) {
        if self.poisoned || self.done {
            // Anything after [DONE] is not part of the answer; mark it unusable.
            self.poisoned |= self.done;
            return;
        }
        let d = data.trim_ascii();
        if d == b"[DONE]" {
            self.done = true;
            return;
        }
        if d.starts_with(b"{\"error\"") {
            self.poisoned = true;
            return;
        }
        self.bytes += d.len() + std::mem::size_of::<Box<[u8]>>();
        if self.bytes > self.limit_bytes {
            self.poisoned = true;
            self.chunks = Vec::new();
            return;
        }
        if is_usage_only_chunk(d) {
            self.usage_chunk = Some(self.chunks.len());
        }
        self.chunks.push(d.into());
    }

    /// The body to cache; `None` for an incomplete, failed or oversized stream.
    pub fn finish(self) -> Option<CachedBody> {
        (self.done && !self.poisoned && !self.chunks.is_empty()).then(|| CachedBody::Stream {
            chunks: self.chunks.into_boxed_slice(),
            usage_chunk: self.usage_chunk,
        })
    }
}

fn is_usage_only_chunk(d: &[u8]) -> bool {
    let has = |needle: &[u8]| d.windows(needle.len()).any(|w| w == needle);
    (has(b"\"choices\":[]") || has(b"\"choices\": []")) && has(b"\"usage\"")
}

/// The answer as an SSE body: `data: …\n\n` events ending in `data: [DONE]\n\n`. A recorded
/// stream replays its payloads (its usage-only chunk only with `include_usage`); a JSON entry is
/// cut into synthetic chunks (role, content pieces, tool calls, finish reason, usage if asked).
pub fn replay_sse(entry: &Entry, include_usage: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(entry.bytes + 64);
    replay_sse_into(entry, include_usage, &mut out);
    out
}

/// `replay_sse` appending to `out`. A JSON entry that does not parse as a chat completion
/// replays as one error event (never happens for entries the gateway stored).
pub fn replay_sse_into(entry: &Entry, include_usage: bool, out: &mut Vec<u8>) {
    match &entry.body {
        CachedBody::Stream { chunks, usage_chunk } => {
            for (i, c) in chunks.iter().enumerate() {
                if !include_usage && Some(i) == *usage_chunk {
                    continue;
                }
                write_event(out, c);
            }
        }
        CachedBody::Json(body) => match serde_json::from_slice::<Value>(body) {
            Ok(v) => write_synthetic_stream(&v, include_usage, out),
            Err(_) => write_event(
                out,
                br#"{"error":{"message":"cached response is unreadable","type":"server_error","param":null,"code":"cache_corrupt"}}"#,
            ),
        },
    }
    write_event(out, b"[DONE]");
}

fn write_event(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\n\n");
}

/// Bytes of content per synthetic chunk (cut at a char boundary).
const SYNTH_CHUNK_BYTES: usize = 96;

fn split_content(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = s;
    while rest.len() > SYNTH_CHUNK_BYTES {
        let mut cut = SYNTH_CHUNK_BYTES;
        while !rest.is_char_boundary(cut) {
            cut += 1;
        }
        let (a, b) = rest.split_at(cut);
        parts.push(a);
        rest = b;
    }
    if !rest.is_empty() {
        parts.push(rest);
    }
    parts
}

/// Writes a chat completion as chunk events, byte by byte (no intermediate values): a role
/// chunk, content pieces, refusal, one chunk per tool call, the finish chunk, then usage if asked.
fn write_synthetic_stream(v: &Value, include_usage: bool, out: &mut Vec<u8>) {
    // `{"created":…,"id":…,"model":…,"object":"chat.completion.chunk","choices":` shared by all chunks.
    let mut head = Map::new();
    for k in [
        "id",
        "created",
        "model",
        "system_fingerprint",
        "service_tier",
    ] {
        if let Some(x) = v.get(k) {
            head.insert(k.into(), x.clone());
        }
    }
    head.insert("object".into(), Value::from("chat.completion.chunk"));
    let mut prefix = serde_json::to_vec(&Value::Object(head)).unwrap_or_else(|_| b"{}".to_vec());
    prefix.pop(); // the closing brace
    prefix.extend_from_slice(b",\"choices\":");
    let mut event = Vec::with_capacity(256);
    let mut emit = |out: &mut Vec<u8>, index: &[u8], delta: &[u8], finish: &[u8]| {
        event.clear();
        event.extend_from_slice(&prefix);
        event.extend_from_slice(b"[{\"index\":");
        event.extend_from_slice(index);
        event.extend_from_slice(b",\"delta\":");
        event.extend_from_slice(delta);
        event.extend_from_slice(b",\"finish_reason\":");
        event.extend_from_slice(finish);
        event.extend_from_slice(b"}]}");
        write_event(out, &event);
    };
    let to_vec = |x: &Value| serde_json::to_vec(x).unwrap_or_else(|_| b"null".to_vec());
    let mut delta = Vec::with_capacity(256);
    for ch in v
        .get("choices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let index = to_vec(ch.get("index").unwrap_or(&Value::from(0)));
        let msg = ch.get("message").unwrap_or(&Value::Null);
        delta.clear();
        delta.extend_from_slice(b"{\"role\":");
        delta.extend_from_slice(&to_vec(
            msg.get("role").unwrap_or(&Value::from("assistant")),
        ));
        delta.extend_from_slice(b",\"content\":\"\"}");
        emit(out, &index, &delta, b"null");
        if let Some(text) = msg.get("content").and_then(Value::as_str) {
            for part in split_content(text) {
                delta.clear();
                delta.extend_from_slice(b"{\"content\":");
                write_json_str(&mut delta, part);
                delta.push(b'}');
                emit(out, &index, &delta, b"null");
            }
        }
        if let Some(r) = msg.get("refusal").filter(|r| !r.is_null()) {
            delta.clear();
            delta.extend_from_slice(b"{\"refusal\":");
            delta.extend_from_slice(&to_vec(r));
            delta.push(b'}');
            emit(out, &index, &delta, b"null");
        }
        for (i, call) in msg
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let mut c = call.as_object().cloned().unwrap_or_default();
            c.insert("index".into(), Value::from(i));
            delta.clear();
            delta.extend_from_slice(b"{\"tool_calls\":[");
            delta.extend_from_slice(&to_vec(&Value::Object(c)));
            delta.extend_from_slice(b"]}");
            emit(out, &index, &delta, b"null");
        }
        emit(
            out,
            &index,
            b"{}",
            &to_vec(ch.get("finish_reason").unwrap_or(&Value::Null)),
        );
    }
    if include_usage {
        if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
            event.clear();
            event.extend_from_slice(&prefix);
            event.extend_from_slice(b"[],\"usage\":");
            event.extend_from_slice(&to_vec(u));
            event.push(b'}');
            write_event(out, &event);
        }
    }
}

/// The answer as a non-streaming JSON body: a JSON entry as stored (borrowed); a recorded
/// stream assembled into a `chat.completion` (content and tool-call fragments concatenated per
/// choice, the last finish reason, usage if the stream had it). `Err(BadChunk)` if a payload is
/// not a JSON object.
pub fn replay_json(entry: &Entry) -> Result<Cow<'_, [u8]>, CacheError> {
    match &entry.body {
        CachedBody::Json(b) => Ok(Cow::Borrowed(b)),
        CachedBody::Stream { chunks, .. } => stream_to_json(chunks).map(Cow::Owned),
    }
}

#[derive(Default)]
struct ChoiceAcc {
    role: Option<String>,
    content: Option<String>,
    refusal: Option<String>,
    tool_calls: Vec<Map<String, Value>>,
    finish: Value,
}

/// The parts of a chunk that assembly reads; everything else is skipped by serde.
#[derive(serde::Deserialize)]
struct ChunkIn<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(default)]
    created: Option<Value>,
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    system_fingerprint: Option<Value>,
    #[serde(default)]
    choices: Vec<ChoiceIn<'a>>,
    #[serde(default)]
    usage: Option<Value>,
}

#[derive(serde::Deserialize)]
struct ChoiceIn<'a> {
    #[serde(default)]
    index: u64,
    #[serde(borrow, default)]
    delta: Option<DeltaIn<'a>>,
    #[serde(default)]
    finish_reason: Option<Value>,
}

#[derive(serde::Deserialize)]
struct DeltaIn<'a> {
    #[serde(borrow, default)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    refusal: Option<Cow<'a, str>>,
    #[serde(default)]
    tool_calls: Option<Vec<Value>>,
}

fn stream_to_json(chunks: &[Box<[u8]>]) -> Result<Vec<u8>, CacheError> {
    let mut head = Map::new();
    let mut usage = None;
    let mut choices: Vec<(u64, ChoiceAcc)> = Vec::new();
    for (i, raw) in chunks.iter().enumerate() {
        let c: ChunkIn<'_> =
            serde_json::from_slice(raw).map_err(|_| CacheError::BadChunk { index: i })?;
        if !head.contains_key("id") {
            if let Some(x) = c.id {
                head.insert("id".into(), Value::from(x.into_owned()));
            }
        }
        if !head.contains_key("created") {
            if let Some(x) = c.created {
                head.insert("created".into(), x);
            }
        }
        if !head.contains_key("model") {
            if let Some(x) = c.model {
                head.insert("model".into(), Value::from(x.into_owned()));
            }
        }
        if !head.contains_key("system_fingerprint") {
            if let Some(x) = c.system_fingerprint.filter(|x| !x.is_null()) {
                head.insert("system_fingerprint".into(), x);
            }
        }
        if let Some(u) = c.usage.filter(|u| !u.is_null()) {
            usage = Some(u);
        }
        for ch in c.choices {
            let pos = match choices.iter().position(|(i, _)| *i == ch.index) {
                Some(p) => p,
                None => {
                    choices.push((ch.index, ChoiceAcc::default()));
                    choices.len() - 1
                }
            };
            let acc = &mut choices[pos].1;
            if let Some(f) = ch.finish_reason.filter(|f| !f.is_null()) {
                acc.finish = f;
            }
            let Some(delta) = ch.delta else { continue };
            if let Some(r) = delta.role {
                acc.role = Some(r.into_owned());
            }
            if let Some(t) = delta.content {
                acc.content.get_or_insert_with(String::new).push_str(&t);
            }
            if let Some(t) = delta.refusal {
                acc.refusal.get_or_insert_with(String::new).push_str(&t);
            }
            for call in delta.tool_calls.iter().flatten() {
                merge_tool_call(&mut acc.tool_calls, call);
            }
        }
    }
    choices.sort_by_key(|(i, _)| *i);
    let mut out = head;
    out.insert("object".into(), Value::from("chat.completion"));
    let arr = choices
        .into_iter()
        .map(|(index, acc)| {
            let mut msg = Map::new();
            msg.insert(
                "role".into(),
                Value::from(acc.role.unwrap_or_else(|| "assistant".into())),
            );
            msg.insert(
                "content".into(),
                acc.content.map(Value::from).unwrap_or(Value::Null),
            );
            if let Some(r) = acc.refusal {
                msg.insert("refusal".into(), Value::from(r));
            }
            if !acc.tool_calls.is_empty() {
                let calls = acc
                    .tool_calls
                    .into_iter()
                    .map(|mut c| {
                        c.remove("index");
                        Value::Object(c)
                    })
                    .collect();
                msg.insert("tool_calls".into(), Value::Array(calls));
            }
            let mut c = Map::new();
            c.insert("index".into(), Value::from(index));
            c.insert("message".into(), Value::Object(msg));
            c.insert("finish_reason".into(), acc.finish);
            Value::Object(c)
        })
        .collect();
    out.insert("choices".into(), Value::Array(arr));
    if let Some(u) = usage {
        out.insert("usage".into(), u);
    }
    Ok(serde_json::to_vec(&Value::Object(out))?)
}

/// Folds one streamed tool-call fragment into the calls seen so far (matched by `index`;
/// `function.name` and `function.arguments` fragments are concatenated).
fn merge_tool_call(calls: &mut Vec<Map<String, Value>>, frag: &Value) {
    let Some(f) = frag.as_object() else { return };
    let index = f
        .get("index")
        .and_then(Value::as_u64)
        .unwrap_or(calls.len() as u64);
    let pos = calls
        .iter()
        .position(|c| c.get("index").and_then(Value::as_u64) == Some(index));
    let call = match pos {
        Some(p) => &mut calls[p],
        None => {
            let mut m = Map::new();
            m.insert("index".into(), Value::from(index));
            calls.push(m);
            let last = calls.len() - 1;
            &mut calls[last]
        }
    };
    for (k, v) in f {
        match k.as_str() {
            "index" => {}
            "function" => {
                let func = call
                    .entry("function")
                    .or_insert_with(|| Value::Object(Map::new()));
                let (Some(dst), Some(src)) = (func.as_object_mut(), v.as_object()) else {
                    continue;
                };
                for (fk, fv) in src {
                    match (dst.get_mut(fk), fv.as_str()) {
                        (Some(Value::String(s)), Some(add)) => s.push_str(add),
                        _ => {
                            dst.insert(fk.clone(), fv.clone());
                        }
                    }
                }
            }
            _ if !v.is_null() => {
                call.insert(k.clone(), v.clone());
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap_or_default()
    }

    fn key(v: Value) -> CacheKey {
        match request_key(&body(v), "openai/gpt-4o-mini", None) {
            Ok(k) => k,
            Err(e) => panic!("key: {e}"),
        }
    }

    #[test]
    fn key_ignores_transport_order_and_float_form() {
        let a = key(
            json!({"model":"auto","messages":[{"role":"user","content":"hi"}],"temperature":0,"stream":true,"user":"u1"}),
        );
        let b = key(
            json!({"temperature":0.0,"messages":[{"content":"hi","role":"user"}],"model":"tier-1","stream_options":{"include_usage":true},"user":"u2"}),
        );
        assert_eq!(a, b);
        let raw = br#"{ "messages" : [ {"role":"user", "content":"hi"} ], "temperature": 0 }"#;
        assert_eq!(request_key(raw, "openai/gpt-4o-mini", None).ok(), Some(a));
    }

    #[test]
    fn key_depends_on_what_changes_the_answer() {
        let base = json!({"messages":[{"role":"user","content":"hi"}],"temperature":0});
        let k = key(base.clone());
        let mut variants = vec![];
        for (field, val) in [
            (
                "tools",
                json!([{"type":"function","function":{"name":"f","parameters":{}}}]),
            ),
            ("tool_choice", json!("required")),
            ("response_format", json!({"type":"json_object"})),
            ("max_tokens", json!(5)),
            ("top_p", json!(0.5)),
            ("seed", json!(1)),
            ("temperature", json!(0.1)),
            ("messages", json!([{"role":"user","content":"hi!"}])),
        ] {
            let mut v = base.clone();
            v[field] = val;
            variants.push(key(v));
        }
        for v in &variants {
            assert_ne!(*v, k);
        }
        let other_model = request_key(&body(base.clone()), "openai/gpt-4o", None).ok();
        assert_ne!(other_model, Some(k));
        let scoped_a = request_key(&body(base.clone()), "openai/gpt-4o-mini", Some("key-a")).ok();
        let scoped_b = request_key(&body(base.clone()), "openai/gpt-4o-mini", Some("key-b")).ok();
        assert_ne!(scoped_a, scoped_b);
        assert_ne!(scoped_a, Some(k));
    }

    #[test]
    fn raw_member_key() {
        let m = |pairs: &[(&'static str, &'static str)]| {
            request_key_members(pairs.iter().map(|(k, v)| (*k, v.as_bytes())), "p/m", None)
        };
        let a = m(&[
            ("model", "\"auto\""),
            ("messages", "[1]"),
            ("temperature", "0"),
            ("stream", "true"),
        ]);
        let b = m(&[("temperature", "0"), ("messages", "[1]"), ("user", "\"x\"")]);
        assert_eq!(a, b);
        assert_ne!(a, m(&[("messages", "[2]"), ("temperature", "0")]));
        assert_ne!(m(&[("ab", "c")]), m(&[("a", "bc")]));
        assert_ne!(
            a,
            request_key_members(
                [("messages", &b"[1]"[..]), ("temperature", b"0")],
                "p/m",
                Some("k")
            )
        );
    }

    #[test]
    fn key_rejects_non_objects_and_garbage_without_panic() {
        for input in [
            &b""[..],
            b"[]",
            b"null",
            b"\xff\xfe\x00",
            b"{\"a\":",
            b"\"str\"",
        ] {
            assert!(request_key(input, "m", None).is_err(), "{input:?}");
        }
        // Deep nesting: serde_json's recursion limit turns into an error, not a stack overflow.
        let deep = format!(
            "{{\"messages\":{}{}}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(request_key(deep.as_bytes(), "m", None).is_err());
        let uni = json!({"messages":[{"role":"user","content":"日本語 🎉 \u{0}"}]});
        assert!(request_key(&body(uni), "m", Some("ключ")).is_ok());
    }

    #[test]
    fn cacheable_policy() {
        let cfg = CacheConfig::default();
        assert!(cacheable(&json!({"messages":[],"temperature":0}), &cfg));
        assert!(!cacheable(&json!({"messages":[],"temperature":0.7}), &cfg));
        assert!(
            !cacheable(&json!({"messages":[]}), &cfg),
            "absent temperature defaults to 1"
        );
        assert!(!cacheable(&json!({"temperature":0}), &cfg));
        assert!(!cacheable(&json!([1]), &cfg));
        let loose = CacheConfig {
            allow_nonzero_temperature: true,
            ..cfg
        };
        assert!(cacheable(&json!({"messages":[],"temperature":1.2}), &loose));
        assert!(cacheable_response(200, false));
        assert!(!cacheable_response(200, true));
        assert!(!cacheable_response(500, false));
    }

    fn k(i: u64) -> CacheKey {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&i.to_le_bytes());
        b[8..16].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
        CacheKey(b)
    }

    fn json_body(n: usize) -> CachedBody {
        CachedBody::Json(vec![b'x'; n].into_boxed_slice())
    }

    #[test]
    fn lru_order_ttl_and_counters() {
        let per = 100 + ENTRY_OVERHEAD_BYTES;
        let mut c = ResponseCache::new(CacheConfig {
            max_bytes: per * 3,
            ttl_ms: 1_000,
            ..CacheConfig::default()
        });
        for i in 0..3 {
            assert!(c.insert(k(i), json_body(100), 0).is_ok());
        }
        assert_eq!(c.len(), 3);
        assert!(c.get(&k(0), 10).is_some()); // 0 becomes most recent; 1 is LRU
        assert!(c.insert(k(3), json_body(100), 10).is_ok());
        assert!(c.get(&k(1), 11).is_none());
        assert!(c.get(&k(0), 11).is_some());
        assert!(c.get(&k(2), 11).is_some());
        assert!(c.get(&k(3), 11).is_some());
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.evictions, s.entries), (4, 1, 1, 3));
        assert_eq!(s.bytes as usize, per * 3);
        // TTL
        assert!(c.get(&k(0), 999).is_some());
        assert!(c.get(&k(0), 1_000).is_none());
        assert_eq!(c.stats().expirations, 1);
        assert_eq!(
            c.purge_expired(1_005),
            1,
            "k(2) inserted at 0 expires; k(3) at 10 does not"
        );
        assert_eq!(c.len(), 1);
        // Replacing a key keeps one entry.
        assert!(c.insert(k(3), json_body(10), 20).is_ok());
        assert_eq!(c.len(), 1);
        assert_eq!(c.bytes(), 10 + ENTRY_OVERHEAD_BYTES);
        assert!(c.remove(&k(3)));
        assert!(!c.remove(&k(3)));
        assert_eq!(c.bytes(), 0);
        assert!(c.is_empty());
    }

    #[test]
    fn too_large_entries_are_refused() {
        let mut c = ResponseCache::new(CacheConfig {
            max_bytes: 1_000,
            max_entry_bytes: 500,
            ..CacheConfig::default()
        });
        assert!(matches!(
            c.insert(k(1), json_body(501), 0),
            Err(CacheError::TooLarge { .. })
        ));
        assert!(c.insert(k(1), json_body(400), 0).is_ok());
        assert_eq!(c.stats().rejected, 1);
        c.set_config(CacheConfig {
            max_bytes: 100,
            ..CacheConfig::default()
        });
        assert!(c.is_empty());
    }

    #[test]
    fn bound_holds_under_many_unique_inserts() {
        let max = 256 * 1024;
        let mut c = ResponseCache::new(CacheConfig {
            max_bytes: max,
            ..CacheConfig::default()
        });
        for i in 0..100_000u64 {
            let n = (i as usize * 37) % 2_000;
            assert!(c.insert(k(i), json_body(n), i).is_ok());
            assert!(c.bytes() <= max);
        }
        let s = c.stats();
        assert_eq!(s.insertions, 100_000);
        assert_eq!(s.evictions + s.entries, 100_000);
        assert!(c.nodes.len() < 2_000, "slots are reused: {}", c.nodes.len());
        // The most recent survives.
        assert!(c.get(&k(99_999), 100_000).is_some());
    }

    fn sample_completion() -> Value {
        json!({
            "id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini",
            "choices":[{"index":0,"message":{"role":"assistant","content":"Héllo wörld! ".repeat(20)},"finish_reason":"stop","logprobs":null}],
            "usage":{"prompt_tokens":5,"completion_tokens":40,"total_tokens":45}
        })
    }

    fn parse_sse(bytes: &[u8]) -> Vec<String> {
        let text = String::from_utf8(bytes.to_vec()).unwrap_or_default();
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        text.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                e.strip_prefix("data: ")
                    .unwrap_or_else(|| panic!("bad event {e:?}"))
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn json_entry_replays_as_json_and_as_stream() {
        let v = sample_completion();
        let b = body(v.clone());
        let e = Entry {
            body: CachedBody::Json(b.clone().into_boxed_slice()),
            inserted_ms: 0,
            bytes: 0,
        };
        assert_eq!(replay_json(&e).ok().as_deref(), Some(&b[..]));
        let events = parse_sse(&replay_sse(&e, true));
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        let chunks: Vec<Box<[u8]>> = events[..events.len() - 1]
            .iter()
            .map(|s| s.as_bytes().into())
            .collect();
        for c in &chunks {
            let cv: Value = serde_json::from_slice(c).unwrap_or(Value::Null);
            assert_eq!(cv["object"], "chat.completion.chunk");
            assert_eq!(cv["id"], "chatcmpl-1");
        }
        // Round trip: the synthetic stream assembles back into the same message.
        let back: Value = serde_json::from_slice(&stream_to_json(&chunks).unwrap_or_default())
            .unwrap_or(Value::Null);
        assert_eq!(back["choices"][0]["message"], v["choices"][0]["message"]);
        assert_eq!(back["choices"][0]["finish_reason"], "stop");
        assert_eq!(back["usage"], v["usage"]);
        // Without usage: no usage chunk.
        let events = parse_sse(&replay_sse(&e, false));
        assert!(events.iter().all(|e| !e.contains("\"usage\"")));
    }

    #[test]
    fn recorded_stream_replays_and_assembles() {
        let events = [
            r#"data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
            "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}",
            r#"data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]},"finish_reason":null}]}"#,
            r#"data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]},"finish_reason":null}]}"#,
            r#"data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
            r#"data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":7,"total_tokens":10}}"#,
            "data: [DONE]",
        ];
        let mut rec = StreamRecorder::new(1 << 20);
        for e in events {
            rec.push_event(e.as_bytes());
        }
        let Some(body) = rec.finish() else {
            panic!("complete stream must record")
        };
        let entry = Entry {
            body,
            inserted_ms: 0,
            bytes: 0,
        };
        let with = parse_sse(&replay_sse(&entry, true));
        assert_eq!(with.len(), 7);
        for (got, want) in with.iter().zip(events) {
            assert_eq!(Some(got.as_str()), want.strip_prefix("data: "));
        }
        let without = parse_sse(&replay_sse(&entry, false));
        assert_eq!(without.len(), 6);
        let j: Value = replay_json(&entry)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        assert_eq!(j["object"], "chat.completion");
        assert_eq!(j["choices"][0]["finish_reason"], "tool_calls");
        let call = &j["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["id"], "call_1");
        assert_eq!(call["function"]["name"], "get_weather");
        assert_eq!(call["function"]["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(j["usage"]["total_tokens"], 10);
    }

    #[test]
    fn recorder_refuses_incomplete_failed_and_oversized_streams() {
        let chunk = br#"{"choices":[{"index":0,"delta":{"content":"hi"}}]}"#;
        let mut r = StreamRecorder::new(1 << 20);
        r.push_data(chunk);
        assert!(r.finish().is_none(), "no [DONE]");
        let mut r = StreamRecorder::new(1 << 20);
        r.push_data(chunk);
        r.push_data(br#"{"error":{"message":"boom"}}"#);
        r.push_data(b"[DONE]");
        assert!(r.finish().is_none());
        let mut r = StreamRecorder::new(1 << 20);
        r.push_event(b"event: error\ndata: {\"x\":1}");
        r.push_data(b"[DONE]");
        assert!(r.finish().is_none());
        let mut r = StreamRecorder::new(100);
        for _ in 0..10 {
            r.push_data(chunk);
        }
        r.push_data(b"[DONE]");
        assert!(r.finish().is_none());
        let mut r = StreamRecorder::new(1 << 20);
        r.push_event(b"data: {\"a\":\r\ndata: 1}\r");
        r.push_data(b"[DONE]");
        match r.finish() {
            Some(CachedBody::Stream { chunks, .. }) => assert_eq!(&*chunks[0], b"{\"a\":\n1}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn replay_of_garbage_entries_does_not_panic() {
        for junk in [
            &b""[..],
            b"\xff\x00garbage",
            b"[]",
            b"{\"choices\":7}",
            b"{\"choices\":[{\"message\":\"x\"}]}",
        ] {
            let e = Entry {
                body: CachedBody::Json(junk.into()),
                inserted_ms: 0,
                bytes: 0,
            };
            let out = replay_sse(&e, true);
            assert!(out.ends_with(b"data: [DONE]\n\n"));
            let s = Entry {
                body: CachedBody::Stream {
                    chunks: vec![junk.into()].into(),
                    usage_chunk: None,
                },
                inserted_ms: 0,
                bytes: 0,
            };
            let _ = replay_json(&s);
            assert!(replay_sse(&s, false).ends_with(b"data: [DONE]\n\n"));
        }
        // Content cut on char boundaries, however it is built.
        let text: String = "é🎉a".repeat(500);
        let parts = split_content(&text);
        assert_eq!(parts.concat(), text);
        assert!(parts.iter().all(|p| p.len() <= SYNTH_CHUNK_BYTES + 3));
    }
}
