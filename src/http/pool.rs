//! Per-core keep-alive pools of upstream connections, keyed by scheme, host and port. A core owns
//! its pool outright (no locks); connections idle too long are dropped when next looked at.
//! Connecting (TCP, then rustls for https) lives here too.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use rustls_pki_types::ServerName;

use super::client::{UpstreamConn, UpstreamIoError, UpstreamStream};

/// Where and how to connect; built from a provider's config.
pub struct Endpoint<'a> {
    pub pool_key: &'a Arc<str>,
    pub host: &'a str,
    pub addrs: &'a [SocketAddr],
    pub port: u16,
    pub tls: Option<&'a Arc<rustls::ClientConfig>>,
    pub connect_timeout_ms: u64,
    pub max_idle: usize,
    pub idle_ms: u64,
}

struct Idle {
    conn: UpstreamConn,
    since: Instant,
}

/// One core's upstream connection pools.
#[derive(Default)]
pub struct Pool {
    idle: RefCell<HashMap<Arc<str>, Vec<Idle>>>,
    /// Connections opened, for /stats and the keep-alive tests.
    pub opened: std::cell::Cell<u64>,
    pub reused: std::cell::Cell<u64>,
}

impl Pool {
    pub fn new() -> Self {
        Self::default()
    }

    /// A pooled connection if a live one is idle, else a new one.
    pub async fn checkout(&self, ep: &Endpoint<'_>) -> Result<UpstreamConn, UpstreamIoError> {
        if let Some(conn) = self.take_idle(ep) {
            self.reused.set(self.reused.get() + 1);
            return Ok(conn);
        }
        self.connect(ep).await
    }

    fn take_idle(&self, ep: &Endpoint<'_>) -> Option<UpstreamConn> {
        let mut map = self.idle.borrow_mut();
        let list = map.get_mut(ep.pool_key)?;
        let max_age = Duration::from_millis(ep.idle_ms);
        while let Some(idle) = list.pop() {
            if idle.since.elapsed() < max_age && idle.conn.rbuf.is_empty() {
                let mut conn = idle.conn;
                conn.reused = true;
                return Some(conn);
            }
        }
        None
    }

    /// Opens a fresh connection (never from the pool).
    pub async fn connect(&self, ep: &Endpoint<'_>) -> Result<UpstreamConn, UpstreamIoError> {
        let timeout = Duration::from_millis(ep.connect_timeout_ms);
        let addrs: Vec<SocketAddr> = if ep.addrs.is_empty() {
            // Resolution failed at config load (no DNS then); try once more now. This blocks the
            // core for the lookup, which only happens for providers unresolvable at start.
            use std::net::ToSocketAddrs;
            (ep.host, ep.port)
                .to_socket_addrs()
                .map_err(UpstreamIoError::Connect)?
                .collect()
        } else {
            ep.addrs.to_vec()
        };
        let mut last = UpstreamIoError::ConnectTimeout;
        for addr in addrs {
            match monoio::time::timeout(timeout, TcpStream::connect_addr(addr)).await {
                Ok(Ok(tcp)) => {
                    let _ = tcp.set_nodelay(true);
                    let stream = match ep.tls {
                        None => UpstreamStream::Plain(tcp),
                        Some(cfg) => {
                            let name = ServerName::try_from(ep.host.to_string())
                                .map_err(|e| UpstreamIoError::Tls(e.to_string()))?;
                            let connector = monoio_rustls::TlsConnector::from(cfg.clone());
                            match monoio::time::timeout(timeout, connector.connect(name, tcp)).await
                            {
                                Ok(Ok(s)) => UpstreamStream::Tls(Box::new(s)),
                                Ok(Err(e)) => return Err(UpstreamIoError::Tls(e.to_string())),
                                Err(_) => return Err(UpstreamIoError::ConnectTimeout),
                            }
                        }
                    };
                    self.opened.set(self.opened.get() + 1);
                    return Ok(UpstreamConn {
                        stream,
                        rbuf: Vec::with_capacity(16 * 1024),
                        reused: false,
                        pool_key: ep.pool_key.clone(),
                    });
                }
                Ok(Err(e)) => last = UpstreamIoError::Connect(e),
                Err(_) => last = UpstreamIoError::ConnectTimeout,
            }
        }
        Err(last)
    }

    /// Returns a connection whose response was read completely and which may be reused.
    pub fn checkin(&self, conn: UpstreamConn, max_idle: usize) {
        if !conn.rbuf.is_empty() {
            return; // unexpected extra bytes: the framing is out of sync, do not reuse
        }
        let mut map = self.idle.borrow_mut();
        let list = map.entry(conn.pool_key.clone()).or_default();
        if list.len() < max_idle {
            list.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    /// Idle connections across all upstreams, for /stats.
    /// Idle connections to one endpoint (`Endpoint::pool_key`).
    pub fn idle_count_for(&self, pool_key: &str) -> usize {
        self.idle.borrow().get(pool_key).map_or(0, Vec::len)
    }

    pub fn idle_count(&self) -> usize {
        self.idle.borrow().values().map(Vec::len).sum()
    }
}
