//! Upstream HTTP/1.1 client connection: plain TCP or rustls, the response head (httparse) and body
//! framing (Content-Length, chunked, close-delimited), each read bounded by a timeout. Which
//! upstream to call and what to do with the answer is `pipeline::forward`'s business.

use std::io;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use super::chunked::{ChunkError, ChunkedDecoder};

pub type TlsStream = monoio_rustls::ClientTlsStream<TcpStream>;

/// A byte stream to an upstream: plain TCP or TLS over TCP.
pub enum UpstreamStream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl UpstreamStream {
    pub async fn read_into<B: IoBufMut>(&mut self, buf: B) -> monoio::BufResult<usize, B> {
        match self {
            UpstreamStream::Plain(s) => s.read(buf).await,
            UpstreamStream::Tls(s) => s.read(buf).await,
        }
    }

    pub async fn write_all_buf(&mut self, buf: Vec<u8>) -> monoio::BufResult<usize, Vec<u8>> {
        match self {
            UpstreamStream::Plain(s) => s.write_all(buf).await,
            UpstreamStream::Tls(s) => {
                let r = s.write_all(buf).await;
                if r.0.is_ok() {
                    if let Err(e) = s.flush().await {
                        return (Err(e), r.1);
                    }
                }
                r
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamIoError {
    #[error("connect failed: {0}")]
    Connect(io::Error),
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    #[error("write failed: {0}")]
    Write(io::Error),
    #[error("read failed: {0}")]
    Read(io::Error),
    #[error("connection closed before a response")]
    ClosedBeforeResponse,
    #[error("connection closed mid-body")]
    ClosedMidBody,
    #[error("no response within {0} ms")]
    FirstByteTimeout(u64),
    #[error("stalled for {0} ms")]
    IdleTimeout(u64),
    #[error("malformed response: {0}")]
    Malformed(&'static str),
    #[error("bad chunked body: {0}")]
    Chunked(#[from] ChunkError),
    #[error("response head too large")]
    HeadTooLarge,
}

impl UpstreamIoError {
    /// Failures where a reused pooled connection had simply died while idle: safe to retry once
    /// on a fresh connection because the upstream cannot have acted on the request.
    pub fn is_stale_connection(&self) -> bool {
        match self {
            UpstreamIoError::Write(_) | UpstreamIoError::ClosedBeforeResponse => true,
            UpstreamIoError::Read(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionAborted
            ),
            _ => false,
        }
    }

    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            UpstreamIoError::ConnectTimeout
                | UpstreamIoError::FirstByteTimeout(_)
                | UpstreamIoError::IdleTimeout(_)
        )
    }

    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            UpstreamIoError::Connect(_) | UpstreamIoError::ConnectTimeout | UpstreamIoError::Tls(_)
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub status: u16,
    pub framing: ResponseFraming,
    pub keep_alive: bool,
    pub content_type: Option<String>,
    pub retry_after: Option<String>,
    pub request_id: Option<String>,
}

impl ResponseHead {
    pub fn is_event_stream(&self) -> bool {
        self.content_type.as_deref().is_some_and(|c| {
            c.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        })
    }
}

/// Parses a response head at the start of `buf`; `Ok(None)` means incomplete.
pub fn parse_response_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, UpstreamIoError> {
    let mut headers = [httparse::EMPTY_HEADER; 96];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(UpstreamIoError::Malformed("too many headers"))
        }
        Err(_) => return Err(UpstreamIoError::Malformed("not an HTTP/1.x response")),
    };
    let status = resp.code.unwrap_or(0);
    let mut head = ResponseHead {
        status,
        framing: ResponseFraming::UntilClose,
        keep_alive: resp.version == Some(1),
        content_type: None,
        retry_after: None,
        request_id: None,
    };
    let mut length = None;
    let mut chunked = false;
    for h in resp.headers.iter() {
        let v = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            length = Some(
                v.parse::<u64>()
                    .map_err(|_| UpstreamIoError::Malformed("bad Content-Length"))?,
            );
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = v
                .to_ascii_lowercase()
                .split(',')
                .any(|t| t.trim() == "chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = v.to_ascii_lowercase();
            if v.contains("close") {
                head.keep_alive = false;
            } else if v.contains("keep-alive") {
                head.keep_alive = true;
            }
        } else if h.name.eq_ignore_ascii_case("content-type") {
            head.content_type = Some(v.to_string());
        } else if h.name.eq_ignore_ascii_case("retry-after") {
            head.retry_after = Some(v.to_string());
        } else if h.name.eq_ignore_ascii_case("x-request-id")
            || h.name.eq_ignore_ascii_case("request-id")
        {
            head.request_id = Some(
                v.chars()
                    .filter(|c| c.is_ascii_graphic())
                    .take(128)
                    .collect(),
            );
        }
    }
    head.framing = if (100..200).contains(&status) || status == 204 || status == 304 {
        ResponseFraming::Empty
    } else if chunked {
        ResponseFraming::Chunked
    } else if let Some(n) = length {
        if n == 0 {
            ResponseFraming::Empty
        } else {
            ResponseFraming::Length(n)
        }
    } else {
        head.keep_alive = false;
        ResponseFraming::UntilClose
    };
    Ok(Some((head, n)))
}

/// One upstream connection with its read buffer (bytes read but not yet consumed).
pub struct UpstreamConn {
    pub stream: UpstreamStream,
    pub rbuf: Vec<u8>,
    /// Taken from the pool (it may have died while idle).
    pub reused: bool,
    pub pool_key: std::sync::Arc<str>,
}

const READ_CHUNK: usize = 16 * 1024;

impl UpstreamConn {
    /// Reads more bytes into `rbuf`; returns how many (0 = EOF). The timeout drops the connection's
    /// buffer with the cancelled read, which is fine: a timed-out connection is never reused.
    async fn fill(&mut self, timeout: Duration) -> Result<usize, io::Error> {
        let mut buf = std::mem::take(&mut self.rbuf);
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(READ_CHUNK);
        }
        let len = buf.len();
        let cap = buf.capacity();
        let fut = self
            .stream
            .read_into(monoio::buf::IoBufMut::slice_mut(buf, len..cap));
        match monoio::time::timeout(timeout, fut).await {
            Ok((res, slice)) => {
                self.rbuf = slice.into_inner();
                res
            }
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "upstream read timed out",
            )),
        }
    }

    pub async fn send(&mut self, request: Vec<u8>) -> Result<Vec<u8>, (UpstreamIoError, Vec<u8>)> {
        let (res, buf) = self.stream.write_all_buf(request).await;
        match res {
            Ok(_) => Ok(buf),
            Err(e) => Err((UpstreamIoError::Write(e), buf)),
        }
    }

    /// Waits for the response head (skipping 1xx interim responses).
    pub async fn read_head(
        &mut self,
        first_byte_timeout_ms: u64,
    ) -> Result<ResponseHead, UpstreamIoError> {
        let deadline = monoio::time::Instant::now() + Duration::from_millis(first_byte_timeout_ms);
        loop {
            if !self.rbuf.is_empty() {
                if let Some((head, n)) = parse_response_head(&self.rbuf)? {
                    self.rbuf.drain(..n);
                    if (100..200).contains(&head.status) && head.status != 101 {
                        continue;
                    }
                    return Ok(head);
                }
                if self.rbuf.len() > 64 * 1024 {
                    return Err(UpstreamIoError::HeadTooLarge);
                }
            }
            let now = monoio::time::Instant::now();
            if now >= deadline {
                return Err(UpstreamIoError::FirstByteTimeout(first_byte_timeout_ms));
            }
            match self.fill(deadline - now).await {
                Ok(0) if self.rbuf.is_empty() => return Err(UpstreamIoError::ClosedBeforeResponse),
                Ok(0) => return Err(UpstreamIoError::Malformed("truncated response head")),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return Err(UpstreamIoError::FirstByteTimeout(first_byte_timeout_ms))
                }
                Err(e) => return Err(UpstreamIoError::Read(e)),
            }
        }
    }
}

/// Reads a response body according to its framing, piece by piece as it arrives.
pub struct BodyReader {
    framing: ResponseFraming,
    remaining: u64,
    chunked: ChunkedDecoder,
    done: bool,
}

impl BodyReader {
    pub fn new(framing: ResponseFraming) -> Self {
        BodyReader {
            framing,
            remaining: match framing {
                ResponseFraming::Length(n) => n,
                _ => 0,
            },
            chunked: ChunkedDecoder::new(),
            done: framing == ResponseFraming::Empty,
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Appends the next decoded body bytes to `out`. Returns `Ok(true)` when the body is complete.
    /// Waits at most `idle_timeout_ms` for bytes to arrive.
    pub async fn read_some(
        &mut self,
        conn: &mut UpstreamConn,
        out: &mut Vec<u8>,
        idle_timeout_ms: u64,
    ) -> Result<bool, UpstreamIoError> {
        if self.done {
            return Ok(true);
        }
        loop {
            // Consume what is buffered first.
            if !conn.rbuf.is_empty() {
                let before = out.len();
                match self.framing {
                    ResponseFraming::Empty => {
                        self.done = true;
                    }
                    ResponseFraming::Length(_) => {
                        let n = (conn.rbuf.len() as u64).min(self.remaining) as usize;
                        out.extend_from_slice(&conn.rbuf[..n]);
                        conn.rbuf.drain(..n);
                        self.remaining -= n as u64;
                        self.done = self.remaining == 0;
                    }
                    ResponseFraming::Chunked => {
                        let r = self.chunked.decode(&conn.rbuf, out)?;
                        conn.rbuf.drain(..r.consumed);
                        self.done = r.done;
                    }
                    ResponseFraming::UntilClose => {
                        out.extend_from_slice(&conn.rbuf);
                        conn.rbuf.clear();
                    }
                }
                if self.done || out.len() > before {
                    return Ok(self.done);
                }
            }
            match conn.fill(Duration::from_millis(idle_timeout_ms)).await {
                Ok(0) => {
                    if self.framing == ResponseFraming::UntilClose {
                        self.done = true;
                        return Ok(true);
                    }
                    return Err(UpstreamIoError::ClosedMidBody);
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return Err(UpstreamIoError::IdleTimeout(idle_timeout_ms))
                }
                Err(e) => return Err(UpstreamIoError::Read(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_head_framing() {
        let raw: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\nxx";
        let (h, n) = parse_response_head(raw).unwrap().unwrap();
        assert_eq!(h.framing, ResponseFraming::Chunked);
        assert!(h.is_event_stream());
        assert!(h.keep_alive);
        assert_eq!(n, raw.len() - 2, "the head ends before the body bytes `xx`");
        let (h, _) = parse_response_head(b"HTTP/1.1 500 X\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, ResponseFraming::UntilClose);
        assert!(!h.keep_alive);
        let (h, _) = parse_response_head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, ResponseFraming::Length(10));
        assert!(!h.keep_alive);
        assert!(parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Le")
            .unwrap()
            .is_none());
        assert!(parse_response_head(b"garbage\r\n\r\n").is_err());
    }
}
