//! Upstream dialects: how a request for one provider is written on the wire (path, auth headers,
//! body shape) and how its answers are read back. One file (or folder) per dialect; the pipeline
//! only sees the functions here and the translation API of `anthropic`. The OpenAI dialect (OpenAI,
//! OpenRouter, Groq, Together, Mistral, DeepSeek, vLLM, Ollama — any OpenAI-compatible base URL)
//! needs no translation: its bodies pass through, and its request head is written below.

pub mod anthropic;

use crate::config::{Dialect, Provider};

/// The `anthropic-version` header sent to Anthropic upstreams.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Appends the HTTP/1.1 request head for a chat call to `provider` with a body of `body_len` bytes.
pub fn write_chat_request_head(
    out: &mut Vec<u8>,
    provider: &Provider,
    body_len: usize,
    stream: bool,
) {
    match provider.dialect {
        Dialect::OpenAi => {
            let auth = provider
                .api_key
                .as_deref()
                .map(|k| ("Authorization", "Bearer ", k));
            write_request_head(
                out,
                provider,
                "/chat/completions",
                &[],
                auth,
                body_len,
                stream,
            )
        }
        Dialect::Anthropic => {
            // `POST {base}/messages` with `x-api-key` and `anthropic-version`.
            let auth = provider.api_key.as_deref().map(|k| ("x-api-key", "", k));
            write_request_head(
                out,
                provider,
                "/messages",
                &[("anthropic-version", ANTHROPIC_VERSION)],
                auth,
                body_len,
                stream,
            )
        }
    }
}

/// The head both dialects share: request line, Host (with a non-default port), content
/// negotiation, the dialect's own headers, the credential, the provider's extra headers, length.
fn write_request_head(
    out: &mut Vec<u8>,
    provider: &Provider,
    path: &str,
    dialect_headers: &[(&str, &str)],
    auth: Option<(&str, &str, &str)>,
    body_len: usize,
    stream: bool,
) {
    out.extend_from_slice(b"POST ");
    out.extend_from_slice(provider.base_path.as_bytes());
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(provider.host.as_bytes());
    let default_port = if provider.tls { 443 } else { 80 };
    if provider.port != default_port {
        out.push(b':');
        out.extend_from_slice(itoa::Buffer::new().format(provider.port).as_bytes());
    }
    out.extend_from_slice(b"\r\nUser-Agent: tierflow/0.1\r\nContent-Type: application/json\r\n");
    out.extend_from_slice(if stream {
        b"Accept: text/event-stream\r\n" as &[u8]
    } else {
        b"Accept: application/json\r\n"
    });
    let mut header = |name: &str, prefix: &str, value: &str| {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(prefix.as_bytes());
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    };
    for (k, v) in dialect_headers {
        header(k, "", v);
    }
    if let Some((name, prefix, key)) = auth {
        header(name, prefix, key);
    }
    for (k, v) in &provider.headers {
        header(k, "", v);
    }
    out.extend_from_slice(b"Content-Length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body_len).as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}
