//! Upstream dialects: how a request for one provider is written on the wire (path, auth headers,
//! body shape) and how its answers are read back. One file (or folder) per dialect; the pipeline
//! only sees the functions here and the translation API of `anthropic`.

pub mod anthropic;
pub mod openai;

use crate::config::{Dialect, Provider};

/// The `anthropic-version` header sent to Anthropic upstreams.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Appends the HTTP/1.1 request head for a chat call to `provider` with a body of `body_len` bytes.
pub fn write_chat_request_head(out: &mut Vec<u8>, provider: &Provider, body_len: usize, stream: bool) {
    match provider.dialect {
        Dialect::OpenAi => openai::write_request_head(out, provider, body_len, stream),
        Dialect::Anthropic => write_anthropic_request_head(out, provider, body_len, stream),
    }
}

/// `POST {base}/messages` with `x-api-key` and `anthropic-version`.
fn write_anthropic_request_head(out: &mut Vec<u8>, provider: &Provider, body_len: usize, stream: bool) {
    out.extend_from_slice(b"POST ");
    out.extend_from_slice(provider.base_path.as_bytes());
    out.extend_from_slice(b"/messages HTTP/1.1\r\nHost: ");
    out.extend_from_slice(provider.host.as_bytes());
    let default_port = if provider.tls { 443 } else { 80 };
    if provider.port != default_port {
        out.push(b':');
        out.extend_from_slice(itoa::Buffer::new().format(provider.port).as_bytes());
    }
    out.extend_from_slice(b"\r\nUser-Agent: tierflow/0.1\r\nContent-Type: application/json\r\n");
    out.extend_from_slice(if stream { b"Accept: text/event-stream\r\n" as &[u8] } else { b"Accept: application/json\r\n" });
    out.extend_from_slice(b"anthropic-version: ");
    out.extend_from_slice(ANTHROPIC_VERSION.as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(key) = &provider.api_key {
        out.extend_from_slice(b"x-api-key: ");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (k, v) in &provider.headers {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Content-Length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body_len).as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}
