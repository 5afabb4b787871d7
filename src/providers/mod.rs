//! Upstream dialects: how a request for one provider is written on the wire (path, auth headers,
//! body shape) and how its answers are read back. One file per dialect; the pipeline only sees
//! the functions here.

pub mod openai;

use crate::config::{Dialect, Provider};

/// Appends the HTTP/1.1 request head for a chat call to `provider` with a body of `body_len` bytes.
pub fn write_chat_request_head(out: &mut Vec<u8>, provider: &Provider, body_len: usize, stream: bool) {
    match provider.dialect {
        Dialect::OpenAi => openai::write_request_head(out, provider, body_len, stream),
        // Anthropic upstreams speak /v1/messages; the translated body is built by its module.
        Dialect::Anthropic => openai::write_request_head(out, provider, body_len, stream),
    }
}
