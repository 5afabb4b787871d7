//! Downstream response heads and bodies as bytes: status line, the headers the gateway always
//! sends, Content-Length or chunked framing. Builds into a reusable buffer; the caller writes it.

use crate::error::{reason_phrase, GatewayError};

/// Starts a response head: status line plus `Server` and `Connection` headers.
pub fn begin(out: &mut Vec<u8>, status: u16, keep_alive: bool) {
    out.extend_from_slice(b"HTTP/1.1 ");
    let mut b = itoa::Buffer::new();
    out.extend_from_slice(b.format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\nServer: tierflow\r\n");
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
}

pub fn header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    // Values come from config and upstream responses; CR/LF would split the head.
    for &b in value {
        out.push(if b == b'\r' || b == b'\n' { b' ' } else { b });
    }
    out.extend_from_slice(b"\r\n");
}

pub fn header_num(out: &mut Vec<u8>, name: &str, value: u64) {
    let mut b = itoa::Buffer::new();
    header(out, name, b.format(value).as_bytes());
}

/// Ends the head with `Content-Length` and appends the body.
pub fn finish_with_body(out: &mut Vec<u8>, content_type: &str, body: &[u8]) {
    header(out, "Content-Type", content_type.as_bytes());
    header_num(out, "Content-Length", body.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// Ends the head of a chunked response (SSE streams).
pub fn finish_chunked_head(out: &mut Vec<u8>, content_type: &str) {
    header(out, "Content-Type", content_type.as_bytes());
    out.extend_from_slice(b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n");
}

/// A complete error response in the OpenAI schema.
pub fn error(out: &mut Vec<u8>, err: &GatewayError, keep_alive: bool, extra: &[(&str, &[u8])]) {
    begin(out, err.status(), keep_alive);
    if let Some(s) = err.retry_after_s() {
        header_num(out, "Retry-After", s);
    }
    for (k, v) in extra {
        header(out, k, v);
    }
    finish_with_body(out, "application/json", &err.to_json());
}

/// A complete response for a head-level failure (431, 400, 413, 503 …) before any routing
/// happened; the connection is closed after it.
pub fn simple_error(out: &mut Vec<u8>, status: u16, message: &str, code: &str) {
    begin(out, status, false);
    let mut body = String::with_capacity(128 + message.len());
    body.push_str("{\"error\":{\"message\":");
    crate::error::push_json_str(&mut body, message);
    body.push_str(",\"type\":");
    body.push_str(if status >= 500 {
        "\"server_error\""
    } else {
        "\"invalid_request_error\""
    });
    body.push_str(",\"param\":null,\"code\":");
    crate::error::push_json_str(&mut body, code);
    body.push_str("}}");
    finish_with_body(out, "application/json", body.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_head_and_body() {
        let mut out = Vec::new();
        begin(&mut out, 200, true);
        header(&mut out, "X-A", b"b\r\nInjected: 1");
        finish_with_body(&mut out, "application/json", b"{}");
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(s.contains("X-A: b  Injected: 1\r\n"));
        assert!(s.ends_with("Content-Length: 2\r\n\r\n{}"));
    }
}
