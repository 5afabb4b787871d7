//! Accept stage: one downstream HTTP/1.1 connection from first byte to close. Reads heads and
//! bodies under the configured limits and timeouts, answers pipelined requests in order, keeps
//! the connection alive between requests, and dispatches each request to its endpoint.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;

use crate::http::chunked::ChunkedDecoder;
use crate::http::head::{parse_request_head, BodyFraming, Method, RequestHead};
use crate::http::response;

use super::{early, handle_chat, Worker};

/// The worker's open downstream connections, so shutdown can close the idle ones.
#[derive(Default)]
pub struct ConnRegistry {
    next_id: Cell<u64>,
    conns: RefCell<HashMap<u64, (RawFd, Rc<Cell<bool>>)>>,
}

impl ConnRegistry {
    pub fn len(&self) -> usize {
        self.conns.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn register(&self, fd: RawFd, idle: Rc<Cell<bool>>) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        self.conns.borrow_mut().insert(id, (fd, idle));
        id
    }

    fn remove(&self, id: u64) {
        self.conns.borrow_mut().remove(&id);
    }

    /// Shuts the read side of connections waiting for a request, so their read ends with EOF and
    /// they close; connections mid-request are left to finish.
    pub fn close_idle(&self) {
        for (fd, idle) in self.conns.borrow().values() {
            if idle.get() {
                // SAFETY: the fd belongs to a live TcpStream owned by a task of this thread (it is
                // removed from the registry before the stream is dropped); shutdown(2) does not
                // close or invalidate the descriptor.
                unsafe {
                    libc::shutdown(*fd, libc::SHUT_RD);
                }
            }
        }
    }
}

struct Registration<'a> {
    registry: &'a ConnRegistry,
    id: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

const READ_RESERVE: usize = 16 * 1024;

enum ReadErr {
    Eof,
    Timeout,
    Io,
}

async fn read_more(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    timeout: Duration,
) -> Result<usize, ReadErr> {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(READ_RESERVE);
    }
    let owned = std::mem::take(buf);
    let len = owned.len();
    let cap = owned.capacity();
    let fut = stream.read(monoio::buf::IoBufMut::slice_mut(owned, len..cap));
    match monoio::time::timeout(timeout, fut).await {
        Ok((res, slice)) => {
            *buf = slice.into_inner();
            match res {
                Ok(0) => Err(ReadErr::Eof),
                Ok(n) => Ok(n),
                Err(_) => Err(ReadErr::Io),
            }
        }
        // The buffer went with the cancelled read; the connection is closed anyway.
        Err(_) => Err(ReadErr::Timeout),
    }
}

/// Writes a final error and closes gracefully: the write side is shut first and unread request
/// bytes are drained for a moment, so the client reads the error instead of a connection reset.
async fn write_simple(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    status: u16,
    message: &str,
    code: &str,
) {
    write_simple_as(stream, out, status, message, code, false).await
}

/// `write_simple` in the client's dialect: Anthropic's error shape for `/v1/messages` clients.
async fn write_simple_as(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    status: u16,
    message: &str,
    code: &str,
    anthropic: bool,
) {
    out.clear();
    if anthropic {
        response::begin(out, status, false);
        response::finish_with_body(
            out,
            "application/json",
            &crate::providers::anthropic::error_body_anthropic(status, message),
        );
    } else {
        response::simple_error(out, status, message, code);
    }
    if super::relay::flush(stream, out).await.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    let deadline = Instant::now() + Duration::from_millis(500);
    let mut drained = 0usize;
    let mut sink: Vec<u8> = Vec::with_capacity(16 * 1024);
    while drained < 8 << 20 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        sink.clear();
        match read_more(stream, &mut sink, left).await {
            Ok(n) => drained += n,
            Err(_) => break,
        }
    }
}

/// Reads more request-body bytes before `deadline`, first sending `100 Continue` once if the client
/// asked for it. `Err(status)`: the connection is done — answered with `status` (408), or closed
/// without an answer (`0`).
async fn read_body_bytes(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    out: &mut Vec<u8>,
    deadline: Instant,
    expect_continue: bool,
    continue_sent: &mut bool,
    anthropic_errors: bool,
) -> Result<(), u16> {
    if expect_continue && !*continue_sent {
        *continue_sent = true;
        out.clear();
        out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        if super::relay::flush(stream, out).await.is_err() {
            return Err(0);
        }
    }
    let left = deadline.saturating_duration_since(Instant::now());
    match read_more(stream, buf, left.max(Duration::from_millis(1))).await {
        Ok(_) => Ok(()),
        Err(ReadErr::Timeout) => {
            let (status, msg) = (408, "request body not received in time");
            write_simple_as(
                stream,
                out,
                status,
                msg,
                "request_timeout",
                anthropic_errors,
            )
            .await;
            Err(status)
        }
        Err(_) => Err(0),
    }
}

/// Serves one downstream connection until it closes.
pub async fn serve_connection(worker: Rc<Worker>, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let cfg = worker.shared.config.load_full();
    let limits = cfg.limits.clone();
    drop(cfg);
    let idle = Rc::new(Cell::new(true));
    let _reg = Registration {
        registry: &worker.conns,
        id: worker.conns.register(stream.as_raw_fd(), idle.clone()),
    };
    worker.counters.connections_open.inc();
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    if worker.conns.len() > limits.max_connections_per_worker {
        worker.counters.connections_rejected.inc();
        write_simple(
            &mut stream,
            &mut out,
            503,
            "too many open connections on this core; retry",
            "too_many_connections",
        )
        .await;
        return;
    }
    let mut buf: Vec<u8> = Vec::with_capacity(READ_RESERVE);
    let mut body: Vec<u8> = Vec::new();
    let mut scratch: Vec<u8> = Vec::new();
    loop {
        // ---- wait for a request head --------------------------------------------------------
        idle.set(buf.is_empty());
        if worker.shared.is_shutting_down() && buf.is_empty() {
            return;
        }
        let mut request_start: Option<Instant> = (!buf.is_empty()).then(Instant::now);
        let head: RequestHead = loop {
            if !buf.is_empty() {
                match parse_request_head(&buf, limits.max_headers, limits.max_header_bytes) {
                    Ok(Some(h)) => break h,
                    Ok(None) => {}
                    Err(e) => {
                        let status = e.status();
                        write_simple(
                            &mut stream,
                            &mut out,
                            status,
                            &e.to_string(),
                            "bad_request_head",
                        )
                        .await;
                        if early::request_line_is_chat(&buf) {
                            let started = request_start.unwrap_or_else(Instant::now);
                            early::record_early(&worker, None, started, status);
                        }
                        return;
                    }
                }
            }
            let timeout = match request_start {
                Some(t) => {
                    match Duration::from_millis(limits.header_timeout_ms).checked_sub(t.elapsed()) {
                        Some(d) => d,
                        None => {
                            write_simple(
                                &mut stream,
                                &mut out,
                                408,
                                "request head not received in time",
                                "request_timeout",
                            )
                            .await;
                            if early::request_line_is_chat(&buf) {
                                early::record_early(&worker, None, t, 408);
                            }
                            return;
                        }
                    }
                }
                None => Duration::from_millis(limits.idle_timeout_ms),
            };
            let had_bytes = !buf.is_empty();
            // Looked at before the read: a timed-out read takes the buffer with it.
            let chat_line = had_bytes && early::request_line_is_chat(&buf);
            match read_more(&mut stream, &mut buf, timeout).await {
                Ok(_) => {
                    idle.set(false);
                    request_start.get_or_insert_with(Instant::now);
                }
                Err(ReadErr::Eof) | Err(ReadErr::Io) => return,
                Err(ReadErr::Timeout) => {
                    if had_bytes {
                        let mut o = Vec::new();
                        write_simple(
                            &mut stream,
                            &mut o,
                            408,
                            "request head not received in time",
                            "request_timeout",
                        )
                        .await;
                        if let (true, Some(t)) = (chat_line, request_start) {
                            early::record_early(&worker, None, t, 408);
                        }
                    }
                    return;
                }
            }
        };
        idle.set(false);
        let started = request_start.unwrap_or_else(Instant::now);
        worker.counters.requests.inc();

        // ---- read the body --------------------------------------------------------------------
        let head_len = head.head_len;
        // Errors from here on use the client's dialect (Anthropic's shape on /v1/messages).
        let anthropic_errors = buf[head.path.clone()].starts_with(b"/v1/messages")
            || buf[head.path.clone()].starts_with(b"/messages");
        // Errors answered before dispatch are ledger rows when the path is a chat endpoint.
        let chat_path = early::is_chat_path(&buf[head.path.clone()]);
        let deadline = started
            + Duration::from_millis(limits.header_timeout_ms.max(1)).max(Duration::from_secs(30));
        let mut continue_sent = false;
        let consumed: usize;
        let body_ref: &[u8];
        match head.framing {
            BodyFraming::None => {
                consumed = head_len;
                body.clear();
                body_ref = &[];
            }
            BodyFraming::Length(n) => {
                if n > limits.max_body_bytes {
                    worker.counters.responses_4xx.inc();
                    let msg = format!(
                        "request body is {n} bytes; the limit is {} bytes",
                        limits.max_body_bytes
                    );
                    write_simple_as(
                        &mut stream,
                        &mut out,
                        413,
                        &msg,
                        "body_too_large",
                        anthropic_errors,
                    )
                    .await;
                    if chat_path {
                        early::record_early(&worker, Some((&head, &buf)), started, 413);
                    }
                    return;
                }
                let total = head_len + n as usize;
                if buf.capacity() < total {
                    buf.reserve(total - buf.len());
                }
                while buf.len() < total {
                    let more = read_body_bytes(
                        &mut stream,
                        &mut buf,
                        &mut out,
                        deadline,
                        head.expect_continue,
                        &mut continue_sent,
                        anthropic_errors,
                    );
                    if let Err(status) = more.await {
                        if chat_path && status != 0 {
                            early::record_early(&worker, Some((&head, &buf)), started, status);
                        }
                        return;
                    }
                }
                consumed = total;
                body_ref = &buf[head_len..total];
            }
            BodyFraming::Chunked => {
                let mut dec = ChunkedDecoder::new();
                body.clear();
                let mut pos = head_len;
                loop {
                    match dec.decode(&buf[pos..], &mut body) {
                        Ok(r) => pos += r.consumed,
                        Err(e) => {
                            let msg = format!("bad chunked body: {e}");
                            write_simple_as(
                                &mut stream,
                                &mut out,
                                400,
                                &msg,
                                "bad_chunked_body",
                                anthropic_errors,
                            )
                            .await;
                            if chat_path {
                                early::record_early(&worker, Some((&head, &buf)), started, 400);
                            }
                            return;
                        }
                    }
                    if body.len() as u64 > limits.max_body_bytes {
                        let msg = format!(
                            "request body exceeds the limit of {} bytes",
                            limits.max_body_bytes
                        );
                        write_simple_as(
                            &mut stream,
                            &mut out,
                            413,
                            &msg,
                            "body_too_large",
                            anthropic_errors,
                        )
                        .await;
                        if chat_path {
                            early::record_early(&worker, Some((&head, &buf)), started, 413);
                        }
                        return;
                    }
                    if dec.is_done() {
                        break;
                    }
                    // Keep the decoded prefix out of the read buffer so it does not grow without bound.
                    buf.drain(head_len..pos);
                    pos = head_len;
                    let more = read_body_bytes(
                        &mut stream,
                        &mut buf,
                        &mut out,
                        deadline,
                        head.expect_continue,
                        &mut continue_sent,
                        anthropic_errors,
                    );
                    if let Err(status) = more.await {
                        if chat_path && status != 0 {
                            early::record_early(&worker, Some((&head, &buf)), started, status);
                        }
                        return;
                    }
                }
                consumed = pos;
                body_ref = &body;
            }
        }

        // ---- dispatch -------------------------------------------------------------------------
        let keep_alive = head.keep_alive && !worker.shared.is_shutting_down();
        let path = &buf[head.path.clone()];
        let query = head.query.clone().map(|q| &buf[q]);
        let done = match (head.method, path) {
            (Method::Post, b"/v1/chat/completions") | (Method::Post, b"/chat/completions") => {
                let caller = super::Caller::from_head(&head, &buf);
                handle_chat(
                    &worker,
                    &mut stream,
                    &mut out,
                    body_ref,
                    &mut scratch,
                    keep_alive,
                    started,
                    caller,
                )
                .await
            }
            (Method::Post, b"/v1/messages") | (Method::Post, b"/messages") => {
                let caller = super::Caller::from_head(&head, &buf);
                super::messages::handle_messages(
                    &worker,
                    &mut stream,
                    &mut out,
                    body_ref,
                    &mut scratch,
                    keep_alive,
                    started,
                    caller,
                )
                .await
            }
            (Method::Post, b"/v1/messages/count_tokens")
            | (Method::Post, b"/messages/count_tokens") => {
                super::messages::handle_count_tokens(
                    &worker,
                    &mut stream,
                    &mut out,
                    body_ref,
                    keep_alive,
                )
                .await
            }
            (Method::Get, b"/v1/models") | (Method::Get, b"/models") => {
                crate::api::models(&worker, &mut stream, &mut out, keep_alive).await
            }
            (Method::Get, b"/health") | (Method::Head, b"/health") => {
                crate::api::health(&worker, &mut stream, &mut out, keep_alive, query).await
            }
            (Method::Post, b"/reload-config") => {
                crate::api::reload_config(&worker, &mut stream, &mut out, keep_alive, &head, &buf)
                    .await
            }
            (Method::Get, b"/config") => {
                crate::api::config(&worker, &mut stream, &mut out, keep_alive, &head, &buf).await
            }
            (Method::Get, b"/stats") | (Method::Get, b"/metrics") => {
                crate::api::stats(&worker, &mut stream, &mut out, keep_alive).await
            }
            (Method::Get, b"/dashboard") => {
                crate::dashboard::dashboard(
                    &worker,
                    &mut stream,
                    &mut out,
                    keep_alive,
                    &head,
                    &buf,
                    query,
                )
                .await
            }
            (_, p) if crate::api::is_known_path(p) => {
                let e = crate::error::GatewayError::BadRequest {
                    message: "method not allowed on this path".into(),
                    param: None,
                    code: "method_not_allowed",
                };
                out.clear();
                response::begin(&mut out, 405, keep_alive);
                response::finish_with_body(&mut out, "application/json", &e.to_json());
                let ok = super::relay::flush(&mut stream, &mut out).await.is_ok();
                if early::is_chat_path(p) {
                    early::record_early(&worker, Some((&head, &buf)), started, 405);
                }
                super::Done {
                    keep_alive: keep_alive && ok,
                    status: 405,
                }
            }
            _ => {
                let e = crate::error::GatewayError::NotFound {
                    message: format!(
                        "no such endpoint: {}",
                        String::from_utf8_lossy(path)
                            .chars()
                            .take(200)
                            .collect::<String>()
                    ),
                    param: None,
                    code: "unknown_endpoint",
                };
                super::respond_error(&mut stream, &mut out, &e, keep_alive).await
            }
        };
        worker.counters.count_status(done.status);
        if !done.keep_alive {
            let _ = stream.shutdown().await;
            return;
        }
        buf.drain(..consumed.min(buf.len()));
        if buf.capacity() > 1 << 20 && buf.len() < READ_RESERVE {
            buf.shrink_to(READ_RESERVE);
        }
        if body.capacity() > 1 << 20 {
            body = Vec::new();
        }
        if scratch.capacity() > 1 << 20 {
            scratch = Vec::new();
        }
    }
}
