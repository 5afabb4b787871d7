//! Downstream request head: httparse over the connection's read buffer, without copying. Header
//! values the gateway needs are kept as byte ranges into that buffer; framing (Content-Length vs
//! chunked), keep-alive and `Expect: 100-continue` are decided here, policy is not.

use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Head,
    Options,
    Other,
}

/// How the request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// A parsed request head. Ranges index the buffer the head was parsed from.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: Method,
    pub path: Range<usize>,
    pub query: Option<Range<usize>>,
    /// HTTP/1.x minor version.
    pub minor: u8,
    /// Length of the head including the blank line.
    pub head_len: usize,
    pub framing: BodyFraming,
    pub keep_alive: bool,
    pub expect_continue: bool,
    pub authorization: Option<Range<usize>>,
    pub x_api_key: Option<Range<usize>>,
    pub app: Option<Range<usize>>,
    pub env: Option<Range<usize>>,
    pub cache_control_no_cache: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("too many request headers (limit {limit})")]
    TooManyHeaders { limit: usize },
    #[error("request head is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("malformed request head: {reason}")]
    Malformed { reason: &'static str },
    #[error("unsupported Transfer-Encoding")]
    UnsupportedTransferEncoding,
    #[error("invalid Content-Length")]
    BadContentLength,
    #[error("unsupported HTTP version")]
    Version,
}

impl HeadError {
    pub fn status(&self) -> u16 {
        match self {
            HeadError::TooManyHeaders { .. } | HeadError::TooLarge { .. } => 431,
            HeadError::UnsupportedTransferEncoding => 501,
            HeadError::Version => 505,
            _ => 400,
        }
    }
}

fn offset_in(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

fn eq_ignore_case(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Parses a request head at the start of `buf`.
///
/// `Ok(None)`: the head is incomplete (read more bytes, unless `buf` already exceeds `max_bytes`,
/// which is reported as `TooLarge`). `Err`: the head is unusable; answer with `err.status()` and close.
pub fn parse_request_head(
    buf: &[u8],
    max_headers: usize,
    max_bytes: usize,
) -> Result<Option<RequestHead>, HeadError> {
    const STACK_HEADERS: usize = 64;
    let mut stack = [httparse::EMPTY_HEADER; STACK_HEADERS];
    let mut heap;
    let headers: &mut [httparse::Header] = if max_headers <= STACK_HEADERS {
        &mut stack[..max_headers]
    } else {
        heap = vec![httparse::EMPTY_HEADER; max_headers];
        &mut heap[..]
    };
    let mut req = httparse::Request::new(headers);
    let status = match req.parse(buf) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadError::TooManyHeaders { limit: max_headers })
        }
        Err(httparse::Error::Version) => return Err(HeadError::Version),
        Err(_) => {
            return Err(HeadError::Malformed {
                reason: "not an HTTP/1.x request",
            })
        }
    };
    let head_len = match status {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => {
            if buf.len() > max_bytes {
                return Err(HeadError::TooLarge { limit: max_bytes });
            }
            return Ok(None);
        }
    };
    if head_len > max_bytes {
        return Err(HeadError::TooLarge { limit: max_bytes });
    }
    let method = match req.method.unwrap_or("") {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "HEAD" => Method::Head,
        "OPTIONS" => Method::Options,
        _ => Method::Other,
    };
    let target = req.path.unwrap_or("/");
    let target_range = offset_in(buf, target.as_bytes());
    let (path, query) = match target.find('?') {
        Some(i) => (
            target_range.start..target_range.start + i,
            Some(target_range.start + i + 1..target_range.end),
        ),
        None => (target_range, None),
    };
    let minor = req.version.unwrap_or(1);
    let mut head = RequestHead {
        method,
        path,
        query,
        minor,
        head_len,
        framing: BodyFraming::None,
        keep_alive: minor >= 1,
        expect_continue: false,
        authorization: None,
        x_api_key: None,
        app: None,
        env: None,
        cache_control_no_cache: false,
    };
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    for h in req.headers.iter() {
        let name = h.name;
        if eq_ignore_case(name, "content-length") {
            let v = std::str::from_utf8(h.value)
                .map_err(|_| HeadError::BadContentLength)?
                .trim();
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) || v.len() > 19 {
                return Err(HeadError::BadContentLength);
            }
            let n: u64 = v.parse().map_err(|_| HeadError::BadContentLength)?;
            if content_length.is_some_and(|c| c != n) {
                return Err(HeadError::BadContentLength);
            }
            content_length = Some(n);
        } else if eq_ignore_case(name, "transfer-encoding") {
            let v =
                std::str::from_utf8(h.value).map_err(|_| HeadError::UnsupportedTransferEncoding)?;
            // Only `chunked` alone is accepted; anything else could desynchronise framing.
            let mut codings = v.split(',').map(str::trim).filter(|s| !s.is_empty());
            match (codings.next(), codings.next()) {
                (Some(c), None) if c.eq_ignore_ascii_case("chunked") && !chunked => chunked = true,
                _ => return Err(HeadError::UnsupportedTransferEncoding),
            }
        } else if eq_ignore_case(name, "connection") {
            for token in h.value.split(|&b| b == b',') {
                let t = trim_ascii(token);
                if t.eq_ignore_ascii_case(b"close") {
                    head.keep_alive = false;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    head.keep_alive = true;
                }
            }
        } else if eq_ignore_case(name, "expect") {
            if trim_ascii(h.value).eq_ignore_ascii_case(b"100-continue") {
                head.expect_continue = true;
            }
        } else if eq_ignore_case(name, "authorization") {
            head.authorization = Some(offset_in(buf, h.value));
        } else if eq_ignore_case(name, "x-api-key") {
            head.x_api_key = Some(offset_in(buf, h.value));
        } else if eq_ignore_case(name, "x-tierflow-app") {
            head.app = Some(offset_in(buf, h.value));
        } else if eq_ignore_case(name, "x-tierflow-env") {
            head.env = Some(offset_in(buf, h.value));
        } else if eq_ignore_case(name, "x-tierflow-cache") {
            if trim_ascii(h.value).eq_ignore_ascii_case(b"off") {
                head.cache_control_no_cache = true;
            }
        } else if eq_ignore_case(name, "cache-control") {
            if h.value
                .windows(8)
                .any(|w| w.eq_ignore_ascii_case(b"no-cache"))
            {
                head.cache_control_no_cache = true;
            }
        }
    }
    // RFC 9112 §6.3: Content-Length together with chunked is a smuggling vector; refuse it.
    head.framing = match (chunked, content_length) {
        (true, Some(_)) => {
            return Err(HeadError::Malformed {
                reason: "both Content-Length and chunked",
            })
        }
        (true, None) => BodyFraming::Chunked,
        (false, Some(0)) | (false, None) => BodyFraming::None,
        (false, Some(n)) => BodyFraming::Length(n),
    };
    Ok(Some(head))
}

pub fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

/// The bearer token of an `Authorization` header value, if it is one.
pub fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let v = trim_ascii(value);
    if v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ") {
        Some(trim_ascii(&v[7..]))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: &[u8] = b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nAuthorization: Bearer k1\r\nX-TierFlow-App: app1\r\n\r\nhello";

    #[test]
    fn parses_complete_head() {
        let h = parse_request_head(REQ, 64, 16384).unwrap().unwrap();
        assert_eq!(h.method, Method::Post);
        assert_eq!(&REQ[h.path.clone()], b"/v1/chat/completions");
        assert_eq!(&REQ[h.query.clone().unwrap()], b"x=1");
        assert_eq!(h.framing, BodyFraming::Length(5));
        assert_eq!(&REQ[h.head_len..], b"hello");
        assert_eq!(
            bearer_token(&REQ[h.authorization.clone().unwrap()]),
            Some(&b"k1"[..])
        );
        assert_eq!(&REQ[h.app.clone().unwrap()], b"app1");
        assert!(h.keep_alive);
    }

    #[test]
    fn every_split_point_is_partial_then_complete() {
        let head_len = REQ.len() - 5;
        for cut in 0..head_len {
            assert!(
                parse_request_head(&REQ[..cut], 64, 16384)
                    .unwrap()
                    .is_none(),
                "cut {cut}"
            );
        }
        for cut in head_len..=REQ.len() {
            assert!(
                parse_request_head(&REQ[..cut], 64, 16384)
                    .unwrap()
                    .is_some(),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn limits_and_smuggling() {
        let many: Vec<u8> = {
            let mut v = b"GET / HTTP/1.1\r\n".to_vec();
            for i in 0..10 {
                v.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
            }
            v.extend_from_slice(b"\r\n");
            v
        };
        assert_eq!(
            parse_request_head(&many, 5, 16384).unwrap_err().status(),
            431
        );
        assert_eq!(parse_request_head(&many, 64, 40).unwrap_err().status(), 431);
        let both = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            parse_request_head(both, 64, 16384).unwrap_err().status(),
            400
        );
        let gz = b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(parse_request_head(gz, 64, 16384).unwrap_err().status(), 501);
        let bad = b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n";
        assert_eq!(
            parse_request_head(bad, 64, 16384).unwrap_err().status(),
            400
        );
        let two = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(
            parse_request_head(two, 64, 16384).unwrap_err().status(),
            400
        );
        assert!(parse_request_head(b"\x00\x01garbage\r\n\r\n", 64, 16384).is_err());
    }

    #[test]
    fn connection_close_and_http10() {
        let h = parse_request_head(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 64, 1024)
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
        let h = parse_request_head(b"GET / HTTP/1.0\r\n\r\n", 64, 1024)
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
        let h = parse_request_head(
            b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n",
            64,
            1024,
        )
        .unwrap()
        .unwrap();
        assert!(h.expect_continue);
        assert_eq!(h.framing, BodyFraming::Chunked);
    }
}
