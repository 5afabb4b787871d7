//! The OpenAI dialect (OpenAI, OpenRouter, Groq, Together, Mistral, DeepSeek, vLLM, Ollama — any
//! OpenAI-compatible base URL): `POST {base}/chat/completions` with a bearer key. Bodies pass
//! through as the client wrote them, except the fields the pipeline rewrites.

use crate::config::Provider;

pub fn write_request_head(out: &mut Vec<u8>, provider: &Provider, body_len: usize, stream: bool) {
    out.extend_from_slice(b"POST ");
    out.extend_from_slice(provider.base_path.as_bytes());
    out.extend_from_slice(b"/chat/completions HTTP/1.1\r\nHost: ");
    out.extend_from_slice(provider.host.as_bytes());
    let default_port = if provider.tls { 443 } else { 80 };
    if provider.port != default_port {
        out.push(b':');
        out.extend_from_slice(itoa::Buffer::new().format(provider.port).as_bytes());
    }
    out.extend_from_slice(b"\r\nUser-Agent: tierflow/0.1\r\nContent-Type: application/json\r\n");
    out.extend_from_slice(if stream { b"Accept: text/event-stream\r\n" as &[u8] } else { b"Accept: application/json\r\n" });
    if let Some(key) = &provider.api_key {
        out.extend_from_slice(b"Authorization: Bearer ");
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
