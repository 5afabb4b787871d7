//! Redis scale-out for budgets: counters and reservations live in Redis, changed only by two
//! Lua scripts (admit: check-all-then-take-all; settle: apply deltas), so several gateway hosts
//! enforce one limit. A small async RESP2 client over `monoio::net::TcpStream`; when Redis is
//! unreachable, admission falls back to the local counters of `budget.rs` and `redis_up` says so.
//!
//! Why not the `redis` crate: it drives its connections through tokio or async-std; on a monoio
//! core its async API would need a second runtime, and its sync API would stall the core (and
//! every request on it) for a network round trip. The subset needed here — EVALSHA/EVAL,
//! SCRIPT LOAD, AUTH, SELECT, PING and a RESP2 reply parser — is ~300 lines.
//!
//! The runtime must be built with `enable_timer()` (connect and command timeouts).

use std::cell::RefCell;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use super::budget::{Budget, Limit, Plan, Rejection, Reservation};
use super::keys::KeyInfo;
use super::record::now_ms;

/// Redis connection settings. Defaults: connect 100 ms, command 50 ms, retry a down Redis every
/// 1000 ms, key prefix `tf`, 8 idle connections kept per core.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    /// `redis://[:password@]host:port[/db]`
    pub url: String,
    pub connect_timeout_ms: u64,
    pub command_timeout_ms: u64,
    /// While Redis is down, one request per this interval probes it; the rest go local.
    pub retry_after_down_ms: u64,
    pub key_prefix: String,
    pub max_idle_per_core: usize,
}

impl RedisConfig {
    pub fn new(url: &str) -> RedisConfig {
        RedisConfig {
            url: url.to_string(),
            connect_timeout_ms: 100,
            command_timeout_ms: 50,
            retry_after_down_ms: 1000,
            key_prefix: "tf".into(),
            max_idle_per_core: 8,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("invalid Redis URL: {reason}")]
    Url { reason: &'static str },
    #[error("cannot resolve Redis host: {0}")]
    Resolve(std::io::Error),
    #[error("cannot connect to Redis: {0}")]
    Connect(std::io::Error),
    #[error("Redis {what} timed out")]
    Timeout { what: &'static str },
    #[error("Redis I/O: {0}")]
    Io(std::io::Error),
    #[error("Redis protocol error: {0}")]
    Protocol(&'static str),
    #[error("Redis error reply: {0}")]
    Server(String),
    #[error("unexpected Redis reply to {command}")]
    Unexpected { command: &'static str },
}

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

const BULK_MAX_BYTES: i64 = 64 << 20;

/// Parses one reply from the front of `buf`. `Ok(None)`: need more bytes.
pub(crate) fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, RedisError> {
    let Some(cr) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    if cr == 0 {
        return Err(RedisError::Protocol("empty reply line"));
    }
    let line = &buf[1..cr];
    let after = cr + 2;
    let int = |l: &[u8]| -> Result<i64, RedisError> {
        std::str::from_utf8(l)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(RedisError::Protocol("bad integer"))
    };
    let text = |l: &[u8]| String::from_utf8_lossy(l).into_owned();
    Ok(Some(match buf[0] {
        b'+' => (Reply::Simple(text(line)), after),
        b'-' => (Reply::Error(text(line)), after),
        b':' => (Reply::Int(int(line)?), after),
        b'$' => {
            let n = int(line)?;
            if n < 0 {
                return Ok(Some((Reply::Bulk(None), after)));
            }
            if n > BULK_MAX_BYTES {
                return Err(RedisError::Protocol("bulk string too large"));
            }
            let n = n as usize;
            if buf.len() < after + n + 2 {
                return Ok(None);
            }
            if &buf[after + n..after + n + 2] != b"\r\n" {
                return Err(RedisError::Protocol("bulk string not terminated"));
            }
            (
                Reply::Bulk(Some(buf[after..after + n].to_vec())),
                after + n + 2,
            )
        }
        b'*' => {
            let n = int(line)?;
            if n < 0 {
                return Ok(Some((Reply::Array(None), after)));
            }
            let mut items = Vec::new();
            let mut pos = after;
            for _ in 0..n {
                match parse_reply(&buf[pos..])? {
                    Some((r, used)) => {
                        items.push(r);
                        pos += used;
                    }
                    None => return Ok(None),
                }
            }
            (Reply::Array(Some(items)), pos)
        }
        _ => return Err(RedisError::Protocol("unknown reply type")),
    }))
}

/// Appends one command as a RESP array of bulk strings.
pub(crate) fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

// KEYS[i]: one counter per limit; ARGV[3i-2] amount, ARGV[3i-1] cap, ARGV[3i] ttl seconds.
// Returns 0 if all were taken, else the 1-based index of the first limit that refused.
// A cap of 0 refuses everything (as the local counters do).
const ADMIT_LUA: &str = r#"
for i = 1, #KEYS do
  local cur = tonumber(redis.call('GET', KEYS[i]) or '0')
  local cap = tonumber(ARGV[3*i-1])
  if cap == 0 or cur + tonumber(ARGV[3*i-2]) > cap then return i end
end
for i = 1, #KEYS do
  redis.call('INCRBY', KEYS[i], ARGV[3*i-2])
  redis.call('EXPIRE', KEYS[i], ARGV[3*i])
end
return 0
"#;

// KEYS[i] counter, ARGV[i] signed delta. A counter whose window expired is left alone
// (INCRBY would recreate it without a TTL).
const SETTLE_LUA: &str = r#"
for i = 1, #KEYS do
  local d = tonumber(ARGV[i])
  if d ~= 0 and redis.call('EXISTS', KEYS[i]) == 1 then
    if redis.call('INCRBY', KEYS[i], d) < 0 then redis.call('SET', KEYS[i], 0, 'KEEPTTL') end
  end
end
return 0
"#;

/// Extra TTL past a window's end, for clock skew between hosts.
const TTL_MARGIN_S: u64 = 120;
/// Settlements waiting for Redis beyond this are dropped (their windows expire anyway).
const PENDING_MAX: usize = 65_536;

const STATE_UNKNOWN: u8 = 0;
const STATE_UP: u8 = 1;
const STATE_DOWN: u8 = 2;

/// Redis link state shared by all cores (`Send + Sync`): address, up/down, counters.
pub struct RedisState {
    config: RedisConfig,
    addr: SocketAddr,
    password: Option<String>,
    db: Option<u32>,
    state: AtomicU8,
    retry_at_ms: AtomicU64,
    failures_total: AtomicU64,
    local_fallbacks_total: AtomicU64,
}

impl RedisState {
    /// Parses the URL and resolves the host (blocking DNS: call at start-up, not on a core).
    pub fn new(config: RedisConfig) -> Result<Arc<RedisState>, RedisError> {
        let rest = config.url.strip_prefix("redis://").ok_or(RedisError::Url {
            reason: "must start with redis://",
        })?;
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((a, r)) => (Some(a), r),
            None => (None, rest),
        };
        let password = auth
            .map(|a| a.rsplit(':').next().unwrap_or(a).to_string())
            .filter(|p| !p.is_empty());
        let (hostport, db) = match rest.split_once('/') {
            Some((h, "")) => (h, None),
            Some((h, d)) => (
                h,
                Some(d.parse::<u32>().map_err(|_| RedisError::Url {
                    reason: "database must be a number",
                })?),
            ),
            None => (rest, None),
        };
        if hostport.is_empty() {
            return Err(RedisError::Url {
                reason: "missing host",
            });
        }
        let hostport = if hostport
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            hostport.to_string()
        } else {
            format!("{hostport}:6379")
        };
        let addr = hostport
            .to_socket_addrs()
            .map_err(RedisError::Resolve)?
            .next()
            .ok_or(RedisError::Url {
                reason: "host resolves to no address",
            })?;
        Ok(Arc::new(RedisState {
            config,
            addr,
            password,
            db,
            state: AtomicU8::new(STATE_UNKNOWN),
            retry_at_ms: AtomicU64::new(0),
            failures_total: AtomicU64::new(0),
            local_fallbacks_total: AtomicU64::new(0),
        }))
    }

    /// True once a command has succeeded and none has failed since (/health, `redis_up`).
    pub fn is_up(&self) -> bool {
        self.state.load(Ordering::Relaxed) == STATE_UP
    }

    /// (failed Redis operations, admissions decided locally because Redis was down).
    pub fn failure_counts(&self) -> (u64, u64) {
        (
            self.failures_total.load(Ordering::Relaxed),
            self.local_fallbacks_total.load(Ordering::Relaxed),
        )
    }

    /// Whether this admission should use Redis. While down, one caller per retry interval wins
    /// the probe.
    fn should_try(&self, now_ms: u64) -> bool {
        if self.state.load(Ordering::Relaxed) != STATE_DOWN {
            return true;
        }
        let at = self.retry_at_ms.load(Ordering::Relaxed);
        now_ms >= at
            && self
                .retry_at_ms
                .compare_exchange(
                    at,
                    now_ms + self.config.retry_after_down_ms,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    fn mark_up(&self) {
        self.state.store(STATE_UP, Ordering::Relaxed);
    }

    fn mark_down(&self, now_ms: u64) {
        self.failures_total.fetch_add(1, Ordering::Relaxed);
        self.retry_at_ms
            .store(now_ms + self.config.retry_after_down_ms, Ordering::Relaxed);
        self.state.store(STATE_DOWN, Ordering::Relaxed);
    }

    fn counter_key(&self, limit: Limit, window: u64, key_id: &str, app: &str) -> String {
        let p = &self.config.key_prefix;
        match limit {
            Limit::KeyRpm => format!("{p}:k:{key_id}:rpm:{window}"),
            Limit::KeyTpm => format!("{p}:k:{key_id}:tpm:{window}"),
            Limit::KeyDaily => format!("{p}:k:{key_id}:d:{window}"),
            Limit::KeyMonthly => format!("{p}:k:{key_id}:m:{window}"),
            Limit::AppDaily => format!("{p}:a:{app}:d:{window}"),
            Limit::AppMonthly => format!("{p}:a:{app}:m:{window}"),
        }
    }
}

/// A Redis-side reservation: the counters it took, and where to send its settlement.
#[derive(Debug)]
pub(crate) struct RedisHold {
    keys: Vec<String>,
    pending: Sender<Settlement>,
}

#[derive(Debug)]
pub(crate) struct Settlement {
    keys: Vec<String>,
    deltas: Vec<i64>,
}

impl RedisHold {
    /// Queues the deltas (indexed by plan step) for the core's next Redis round trip.
    pub(crate) fn settle(self, plan: &Plan, deltas: &[i64; 6]) {
        let deltas: Vec<i64> = plan
            .steps
            .iter()
            .zip(deltas)
            .filter(|(s, _)| s.is_some())
            .map(|(_, d)| *d)
            .collect();
        if deltas.iter().all(|d| *d == 0) || self.pending.len() >= PENDING_MAX {
            return;
        }
        let _ = self.pending.send(Settlement {
            keys: self.keys,
            deltas,
        });
    }
}

struct Conn {
    stream: TcpStream,
    rbuf: Vec<u8>,
    chunk: Vec<u8>,
}

impl Conn {
    async fn send(&mut self, out: Vec<u8>) -> Result<Vec<u8>, RedisError> {
        let (res, out) = self.stream.write_all(out).await;
        res.map_err(RedisError::Io)?;
        Ok(out)
    }

    async fn read_reply(&mut self) -> Result<Reply, RedisError> {
        loop {
            if let Some((reply, used)) = parse_reply(&self.rbuf)? {
                self.rbuf.drain(..used);
                return Ok(reply);
            }
            let chunk = std::mem::take(&mut self.chunk);
            let (res, chunk) = self.stream.read(chunk).await;
            let n = res.map_err(RedisError::Io)?;
            if n == 0 {
                return Err(RedisError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            self.rbuf.extend_from_slice(&chunk[..n]);
            self.chunk = chunk;
        }
    }
}

/// Per-core Redis-backed admission (`!Send`: lives on one monoio core). Build one per core from
/// the shared `Budget` and `RedisState`.
pub struct RedisBudget {
    budget: Arc<Budget>,
    state: Arc<RedisState>,
    idle: RefCell<Vec<Conn>>,
    shas: RefCell<Option<(String, String)>>,
    pending_tx: Sender<Settlement>,
    pending_rx: Receiver<Settlement>,
}

impl RedisBudget {
    pub fn new(budget: Arc<Budget>, state: Arc<RedisState>) -> RedisBudget {
        let (pending_tx, pending_rx) = crossbeam_channel::unbounded();
        RedisBudget {
            budget,
            state,
            idle: RefCell::new(Vec::new()),
            shas: RefCell::new(None),
            pending_tx,
            pending_rx,
        }
    }

    pub fn state(&self) -> &Arc<RedisState> {
        &self.state
    }

    /// Like [`Budget::admit`], against the limits shared in Redis. Redis down or failing: the
    /// local counters decide (per-host limits), and `RedisState::is_up` turns false.
    pub async fn admit(
        &self,
        key: &KeyInfo,
        app: &str,
        est_cost_usd: f64,
        est_tokens: u64,
    ) -> Result<Reservation, Rejection> {
        let now = now_ms();
        let plan = self.budget.plan(now, key, app, est_cost_usd, est_tokens);
        if plan.iter().next().is_none() || !self.state.should_try(now) {
            if plan.iter().next().is_some() {
                self.state
                    .local_fallbacks_total
                    .fetch_add(1, Ordering::Relaxed);
            }
            return self
                .budget
                .admit_at(now, key, app, est_cost_usd, est_tokens);
        }
        let keys: Vec<String> = plan
            .iter()
            .map(|s| self.state.counter_key(s.limit, s.window, &key.id, app))
            .collect();
        let mut argv: Vec<Vec<u8>> = Vec::with_capacity(keys.len() * 3);
        for s in plan.iter() {
            let ttl = plan.windows.left_s(s.limit.window()) + TTL_MARGIN_S;
            argv.push(s.amount.to_string().into_bytes());
            argv.push(s.cap.to_string().into_bytes());
            argv.push(ttl.to_string().into_bytes());
        }
        match self.eval(Script::Admit, &keys, &argv).await {
            Ok(0) => {
                self.state.mark_up();
                let mut r = self.budget.force(now, key, app, est_cost_usd, est_tokens);
                r.redis = Some(RedisHold {
                    keys,
                    pending: self.pending_tx.clone(),
                });
                Ok(r)
            }
            Ok(i) => {
                self.state.mark_up();
                let limit = plan
                    .iter()
                    .nth((i - 1).max(0) as usize)
                    .map_or(Limit::KeyDaily, |s| s.limit);
                Err(plan.rejection(limit))
            }
            Err(_) => {
                self.state.mark_down(now);
                self.state
                    .local_fallbacks_total
                    .fetch_add(1, Ordering::Relaxed);
                self.budget
                    .admit_at(now, key, app, est_cost_usd, est_tokens)
            }
        }
    }

    /// Sends queued settlements now (call after a response, or from a timer on the core; the
    /// next `admit` on this core also sends them first). `Err` leaves them queued.
    pub async fn flush_pending(&self) -> Result<(), RedisError> {
        let mut conn = self.conn().await?;
        self.send_pending(&mut conn).await?;
        self.put_back(conn);
        Ok(())
    }

    /// Round trip to Redis (for /health?deep=1 and start-up).
    pub async fn ping(&self) -> Result<(), RedisError> {
        let r = self.raw(&[b"PING"]).await;
        match &r {
            Ok(Reply::Simple(s)) if s == "PONG" => {
                self.state.mark_up();
                Ok(())
            }
            Ok(_) => Err(RedisError::Unexpected { command: "PING" }),
            Err(_) => {
                self.state.mark_down(now_ms());
                r.map(|_| ())
            }
        }
    }

    pub(crate) async fn raw(&self, args: &[&[u8]]) -> Result<Reply, RedisError> {
        let mut conn = self.conn().await?;
        let mut out = Vec::new();
        encode_command(&mut out, args);
        let reply = self.with_timeout("command", async {
            conn.send(out).await?;
            conn.read_reply().await
        });
        let reply = reply.await?;
        self.put_back(conn);
        Ok(reply)
    }

    async fn eval(
        &self,
        script: Script,
        keys: &[String],
        argv: &[Vec<u8>],
    ) -> Result<i64, RedisError> {
        let mut conn = self.conn().await?;
        let n = self
            .with_timeout("command", self.eval_on(&mut conn, script, keys, argv))
            .await?;
        self.put_back(conn);
        Ok(n)
    }

    /// Pending settlements, then `script`, pipelined in one write.
    async fn eval_on(
        &self,
        conn: &mut Conn,
        script: Script,
        keys: &[String],
        argv: &[Vec<u8>],
    ) -> Result<i64, RedisError> {
        let pending: Vec<Settlement> = self.pending_rx.try_iter().collect();
        let mut out = Vec::new();
        for s in &pending {
            let argv: Vec<Vec<u8>> = s
                .deltas
                .iter()
                .map(|d| d.to_string().into_bytes())
                .collect();
            self.encode_eval(&mut out, Script::Settle, true, &s.keys, &argv);
        }
        self.encode_eval(&mut out, script, true, keys, argv);
        conn.send(out).await?;
        for s in &pending {
            let argv: Vec<Vec<u8>> = s
                .deltas
                .iter()
                .map(|d| d.to_string().into_bytes())
                .collect();
            self.finish_eval(conn, Script::Settle, &s.keys, &argv)
                .await?;
        }
        self.finish_eval(conn, script, keys, argv).await
    }

    async fn send_pending(&self, conn: &mut Conn) -> Result<(), RedisError> {
        let pending: Vec<Settlement> = self.pending_rx.try_iter().collect();
        if pending.is_empty() {
            return Ok(());
        }
        let fut = async {
            let mut out = Vec::new();
            for s in &pending {
                let argv: Vec<Vec<u8>> = s
                    .deltas
                    .iter()
                    .map(|d| d.to_string().into_bytes())
                    .collect();
                self.encode_eval(&mut out, Script::Settle, true, &s.keys, &argv);
            }
            conn.send(out).await?;
            for s in &pending {
                let argv: Vec<Vec<u8>> = s
                    .deltas
                    .iter()
                    .map(|d| d.to_string().into_bytes())
                    .collect();
                self.finish_eval(conn, Script::Settle, &s.keys, &argv)
                    .await?;
            }
            Ok(())
        };
        let r = self.with_timeout("command", fut).await;
        if r.is_err() {
            // Keep them for the next attempt.
            for s in pending {
                let _ = self.pending_tx.send(s);
            }
        }
        r
    }

    /// Reads one EVALSHA reply; on NOSCRIPT (script cache flushed) re-runs it with EVAL, which
    /// is exactly-once because a NOSCRIPT command did not run.
    async fn finish_eval(
        &self,
        conn: &mut Conn,
        script: Script,
        keys: &[String],
        argv: &[Vec<u8>],
    ) -> Result<i64, RedisError> {
        let reply = match conn.read_reply().await? {
            Reply::Error(e) if e.starts_with("NOSCRIPT") => {
                let mut out = Vec::new();
                self.encode_eval(&mut out, script, false, keys, argv);
                conn.send(out).await?;
                conn.read_reply().await?
            }
            r => r,
        };
        match reply {
            Reply::Int(n) => Ok(n),
            Reply::Error(e) => Err(RedisError::Server(e)),
            _ => Err(RedisError::Unexpected { command: "EVALSHA" }),
        }
    }

    fn encode_eval(
        &self,
        out: &mut Vec<u8>,
        script: Script,
        by_sha: bool,
        keys: &[String],
        argv: &[Vec<u8>],
    ) {
        let shas = self.shas.borrow();
        let (body, sha) = match (script, shas.as_ref()) {
            (Script::Admit, s) => (ADMIT_LUA, s.map(|s| s.0.as_str())),
            (Script::Settle, s) => (SETTLE_LUA, s.map(|s| s.1.as_str())),
        };
        let numkeys = keys.len().to_string();
        let mut args: Vec<&[u8]> = Vec::with_capacity(3 + keys.len() + argv.len());
        match sha {
            Some(sha) if by_sha => {
                args.push(b"EVALSHA");
                args.push(sha.as_bytes());
            }
            _ => {
                args.push(b"EVAL");
                args.push(body.as_bytes());
            }
        }
        args.push(numkeys.as_bytes());
        args.extend(keys.iter().map(|k| k.as_bytes()));
        args.extend(argv.iter().map(|a| a.as_slice()));
        encode_command(out, &args);
    }

    async fn with_timeout<T>(
        &self,
        what: &'static str,
        f: impl std::future::Future<Output = Result<T, RedisError>>,
    ) -> Result<T, RedisError> {
        let ms = if what == "connect" {
            self.state.config.connect_timeout_ms
        } else {
            self.state.config.command_timeout_ms
        };
        match monoio::time::timeout(Duration::from_millis(ms.max(1)), f).await {
            Ok(r) => r,
            Err(_) => Err(RedisError::Timeout { what }),
        }
    }

    /// An idle connection, or a new one (AUTH, SELECT and SCRIPT LOAD done).
    async fn conn(&self) -> Result<Conn, RedisError> {
        if let Some(c) = self.idle.borrow_mut().pop() {
            return Ok(c);
        }
        self.with_timeout("connect", async {
            let stream = TcpStream::connect_addr(self.state.addr)
                .await
                .map_err(RedisError::Connect)?;
            let _ = stream.set_nodelay(true);
            let mut conn = Conn {
                stream,
                rbuf: Vec::with_capacity(512),
                chunk: vec![0; 4096],
            };
            if let Some(p) = &self.state.password {
                self.setup(&mut conn, &[b"AUTH", p.as_bytes()], "AUTH")
                    .await?;
            }
            if let Some(db) = self.state.db {
                self.setup(&mut conn, &[b"SELECT", db.to_string().as_bytes()], "SELECT")
                    .await?;
            }
            if self.shas.borrow().is_none() {
                let admit = self.load_script(&mut conn, ADMIT_LUA).await?;
                let settle = self.load_script(&mut conn, SETTLE_LUA).await?;
                *self.shas.borrow_mut() = Some((admit, settle));
            }
            Ok(conn)
        })
        .await
    }

    async fn setup(
        &self,
        conn: &mut Conn,
        args: &[&[u8]],
        command: &'static str,
    ) -> Result<(), RedisError> {
        let mut out = Vec::new();
        encode_command(&mut out, args);
        conn.send(out).await?;
        match conn.read_reply().await? {
            Reply::Simple(_) => Ok(()),
            Reply::Error(e) => Err(RedisError::Server(e)),
            _ => Err(RedisError::Unexpected { command }),
        }
    }

    async fn load_script(&self, conn: &mut Conn, body: &str) -> Result<String, RedisError> {
        let mut out = Vec::new();
        encode_command(&mut out, &[b"SCRIPT", b"LOAD", body.as_bytes()]);
        conn.send(out).await?;
        match conn.read_reply().await? {
            Reply::Bulk(Some(sha)) => {
                String::from_utf8(sha).map_err(|_| RedisError::Protocol("script sha not UTF-8"))
            }
            Reply::Error(e) => Err(RedisError::Server(e)),
            _ => Err(RedisError::Unexpected {
                command: "SCRIPT LOAD",
            }),
        }
    }

    fn put_back(&self, conn: Conn) {
        let mut idle = self.idle.borrow_mut();
        if idle.len() < self.state.config.max_idle_per_core {
            idle.push(conn);
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Script {
    Admit,
    Settle,
}

#[cfg(test)]
mod tests {
    use super::super::budget::BudgetConfig;
    use super::super::keys::NewKey;
    use super::*;
    use std::process::{Child, Command, Stdio};
    use std::rc::Rc;
    use std::time::Instant;

    #[test]
    fn parses_replies_split_at_every_byte() {
        let wire: &[u8] = b"+OK\r\n-NOSCRIPT No matching script\r\n:-42\r\n$5\r\nhe\r\nl\r\n$-1\r\n*3\r\n:1\r\n$0\r\n\r\n*-1\r\n*0\r\n";
        let expected = vec![
            Reply::Simple("OK".into()),
            Reply::Error("NOSCRIPT No matching script".into()),
            Reply::Int(-42),
            Reply::Bulk(Some(b"he\r\nl".to_vec())),
            Reply::Bulk(None),
            Reply::Array(Some(vec![
                Reply::Int(1),
                Reply::Bulk(Some(vec![])),
                Reply::Array(None),
            ])),
            Reply::Array(Some(vec![])),
        ];
        for split in 0..=wire.len() {
            // Feed the first `split` bytes, then the rest, as a socket would.
            let mut buf = wire[..split].to_vec();
            let mut got = Vec::new();
            let mut fed_rest = false;
            loop {
                match parse_reply(&buf).unwrap() {
                    Some((r, used)) => {
                        got.push(r);
                        buf.drain(..used);
                    }
                    None if !fed_rest => {
                        buf.extend_from_slice(&wire[split..]);
                        fed_rest = true;
                    }
                    None => break,
                }
            }
            assert_eq!(got, expected, "split at {split}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn rejects_malformed_replies() {
        assert!(parse_reply(b"?x\r\n").is_err());
        assert!(parse_reply(b":abc\r\n").is_err());
        assert!(parse_reply(b"$3\r\nabcd\r\n").is_err());
        assert!(parse_reply(b"\r\n").is_err());
        assert!(parse_reply(b"$99999999999\r\n").is_err());
    }

    #[test]
    fn encodes_commands() {
        let mut out = Vec::new();
        encode_command(&mut out, &[b"GET", b"a b"]);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$3\r\na b\r\n");
    }

    #[test]
    fn parses_urls() {
        let s = RedisState::new(RedisConfig::new("redis://:secret@127.0.0.1:7000/2")).unwrap();
        assert_eq!(s.addr, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(s.password.as_deref(), Some("secret"));
        assert_eq!(s.db, Some(2));
        let s = RedisState::new(RedisConfig::new("redis://127.0.0.1")).unwrap();
        assert_eq!(s.addr.port(), 6379);
        assert!(!s.is_up());
        assert!(matches!(
            RedisState::new(RedisConfig::new("http://x")),
            Err(RedisError::Url { .. })
        ));
        assert!(matches!(
            RedisState::new(RedisConfig::new("redis://h:1/x")),
            Err(RedisError::Url { .. })
        ));
    }

    /// A throwaway `redis-server` on a free loopback port; killed on drop.
    struct TestRedis {
        child: Child,
        port: u16,
    }

    impl TestRedis {
        fn start_on(port: u16) -> TestRedis {
            let child = Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed (apt-get install -y redis-server)");
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "redis-server did not start");
                std::thread::sleep(Duration::from_millis(10));
            }
            TestRedis { child, port }
        }

        fn start() -> TestRedis {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            Self::start_on(port)
        }

        fn config(&self) -> RedisConfig {
            // Generous timeouts: this machine's 2 cores are shared with builds.
            RedisConfig {
                connect_timeout_ms: 2000,
                command_timeout_ms: 2000,
                retry_after_down_ms: 200,
                ..RedisConfig::new(&format!("redis://127.0.0.1:{}", self.port))
            }
        }

        fn stop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl Drop for TestRedis {
        fn drop(&mut self) {
            self.stop();
        }
    }

    fn run<F: std::future::Future>(f: F) -> F::Output {
        monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn redis_get(rb: &RedisBudget, key: &str) -> i64 {
        match run(rb.raw(&[b"GET", key.as_bytes()])).unwrap() {
            Reply::Bulk(Some(v)) => String::from_utf8(v).unwrap().parse().unwrap(),
            Reply::Bulk(None) => 0,
            r => panic!("{r:?}"),
        }
    }

    /// Two hosts (two `Budget`s, two runtimes on two threads) share one limit through Redis.
    #[test]
    fn two_hosts_share_one_budget_through_redis() {
        let redis = TestRedis::start();
        let key = Arc::new(KeyInfo::unstored(
            "key_shared",
            "billing",
            &NewKey {
                daily_budget_usd: Some(1.0),
                ..Default::default()
            },
        ));
        let hosts: Vec<_> = (0..2)
            .map(|_| {
                let (cfg, key) = (redis.config(), key.clone());
                std::thread::spawn(move || {
                    let budget = Arc::new(Budget::new(&BudgetConfig::default()));
                    let rb = Rc::new(RedisBudget::new(
                        budget.clone(),
                        RedisState::new(cfg).unwrap(),
                    ));
                    let admitted = run(async {
                        let tasks: Vec<_> = (0..100)
                            .map(|_| {
                                let (rb, key) = (rb.clone(), key.clone());
                                monoio::spawn(async move {
                                    match rb.admit(&key, "billing", 0.02, 100).await {
                                        Ok(r) => {
                                            r.settle(0.02, 100);
                                            1
                                        }
                                        Err(e) => {
                                            assert_eq!(e.limit, Limit::KeyDaily);
                                            0
                                        }
                                    }
                                })
                            })
                            .collect();
                        let mut n = 0;
                        for t in tasks {
                            n += t.await;
                        }
                        n
                    });
                    assert!(rb.state().is_up());
                    assert_eq!(rb.state().failure_counts(), (0, 0));
                    // Each host's local shadow counts only its own share.
                    assert_eq!(budget.key_usage("key_shared").0, admitted as u64 * 20_000);
                    admitted
                })
            })
            .collect();
        let total: usize = hosts.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(
            total, 50,
            "two hosts together admitted {total} of a budget for 50"
        );
        let probe = RedisBudget::new(
            Arc::new(Budget::new(&BudgetConfig::default())),
            RedisState::new(redis.config()).unwrap(),
        );
        let day = super::super::budget::Windows::at(now_ms()).day;
        assert_eq!(
            redis_get(&probe, &format!("tf:k:key_shared:d:{day}")),
            1_000_000
        );
    }

    #[test]
    fn settle_and_release_reach_redis() {
        let redis = TestRedis::start();
        let budget = Arc::new(Budget::new(&BudgetConfig::default()));
        let rb = RedisBudget::new(budget, RedisState::new(redis.config()).unwrap());
        let key = KeyInfo::unstored(
            "key_s",
            "app",
            &NewKey {
                daily_budget_usd: Some(10.0),
                tpm: Some(10_000),
                ..Default::default()
            },
        );
        let w = super::super::budget::Windows::at(now_ms());
        let day_key = format!("tf:k:key_s:d:{}", w.day);
        let tpm_key = format!("tf:k:key_s:tpm:{}", w.minute);
        run(async {
            let r = rb.admit(&key, "app", 1.0, 500).await.unwrap();
            r.settle(0.25, 120);
            let r2 = rb.admit(&key, "app", 2.0, 100).await.unwrap(); // sends the first settlement first
            drop(r2);
            rb.flush_pending().await.unwrap();
        });
        if w.minute == super::super::budget::Windows::at(now_ms()).minute {
            assert_eq!(redis_get(&rb, &tpm_key), 120);
        }
        assert_eq!(redis_get(&rb, &day_key), 250_000);
        // NOSCRIPT: flush Redis's script cache; the next admission still works (EVAL fallback).
        run(rb.raw(&[b"SCRIPT", b"FLUSH"])).unwrap();
        run(async { rb.admit(&key, "app", 0.5, 1).await.unwrap().settle(0.5, 1) });
        run(rb.flush_pending()).unwrap();
        assert_eq!(redis_get(&rb, &day_key), 750_000);
    }

    #[test]
    fn redis_rejection_names_the_limit_that_refused() {
        let redis = TestRedis::start();
        let mut cfg = BudgetConfig::default();
        cfg.apps.insert(
            "shop".into(),
            super::super::budget::AppLimits {
                daily_budget_usd: Some(0.5),
                monthly_budget_usd: None,
            },
        );
        let rb = RedisBudget::new(
            Arc::new(Budget::new(&cfg)),
            RedisState::new(redis.config()).unwrap(),
        );
        let key = KeyInfo::unstored(
            "key_r",
            "shop",
            &NewKey {
                rpm: Some(100),
                daily_budget_usd: Some(1.0),
                ..Default::default()
            },
        );
        let zero = KeyInfo::unstored(
            "key_z",
            "shop",
            &NewKey {
                tpm: Some(0),
                ..Default::default()
            },
        );
        run(async {
            rb.admit(&key, "shop", 0.4, 10)
                .await
                .unwrap()
                .settle(0.4, 10);
            // The key's daily budget would fit 0.2 more; the app's does not.
            let e = rb.admit(&key, "shop", 0.2, 10).await.unwrap_err();
            assert_eq!(e.limit, Limit::AppDaily);
            assert!(e.retry_after_s > 0 && e.retry_after_s <= 86_400);
            assert_eq!(
                rb.admit(&zero, "other", 0.0, 0).await.unwrap_err().limit,
                Limit::KeyTpm
            );
        });
        assert!(rb.state().is_up());
        assert_eq!(rb.state().failure_counts(), (0, 0));
    }

    #[test]
    fn redis_down_falls_back_to_local_and_recovers() {
        let mut redis = TestRedis::start();
        let port = redis.port;
        let budget = Arc::new(Budget::new(&BudgetConfig::default()));
        let rb = RedisBudget::new(budget.clone(), RedisState::new(redis.config()).unwrap());
        let key = KeyInfo::unstored(
            "key_f",
            "app",
            &NewKey {
                daily_budget_usd: Some(1.0),
                ..Default::default()
            },
        );
        run(async {
            rb.ping().await.unwrap();
            assert!(rb.state().is_up());
            rb.admit(&key, "app", 0.3, 0).await.unwrap().settle(0.3, 0);
        });
        redis.stop();
        run(async {
            // The local shadow already holds 0.3 from the Redis-era admission: 2 more fit, not 3.
            let a = rb.admit(&key, "app", 0.3, 0).await.unwrap();
            assert!(!rb.state().is_up());
            let b = rb.admit(&key, "app", 0.3, 0).await.unwrap();
            assert_eq!(
                rb.admit(&key, "app", 0.3, 0).await.unwrap_err().limit,
                Limit::KeyDaily
            );
            a.settle(0.3, 0);
            b.settle(0.3, 0);
        });
        let (failures, fallbacks) = rb.state().failure_counts();
        assert!(
            failures >= 1 && fallbacks == 3,
            "failures {failures}, fallbacks {fallbacks}"
        );
        assert_eq!(budget.key_usage("key_f").0, 900_000);

        // Redis comes back on the same port: after the retry interval one request probes it.
        let _redis = TestRedis::start_on(port);
        std::thread::sleep(Duration::from_millis(250));
        run(async {
            rb.idle.borrow_mut().clear();
            // The restarted Redis has no counters: the shared limit starts over there.
            rb.admit(&key, "app", 0.3, 0).await.unwrap().settle(0.3, 0);
        });
        assert!(rb.state().is_up());
    }
}
