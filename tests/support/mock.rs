//! Mock upstream speaking the real OpenAI wire format over plain TCP or TLS: chat.completion JSON
//! with usage, SSE chunks with a final usage chunk and `[DONE]`, error bodies, and faults chosen by
//! the request's `model`: `slow-<ms>` (late first byte), `stall` (stops mid-stream), `reset`
//! (connection reset mid-stream), `e429`, `e500`, `e400`, `echo` (returns the request body),
//! `close` (close-delimited body), `hangup` (closes idle keep-alive connections after 50 ms).
//! A request with `tools` is answered with parallel tool calls.
//!
//! Requests to `…/messages` get the Anthropic Messages dialect (bodies from
//! `tierflow::providers::anthropic::mock`), the scenario chosen by `model`: `a-tool`, `a-parallel`,
//! `a-thinking`, `a-maxtokens`, `a-error` (529 error body, or an `overloaded_error` event
//! mid-stream), `a-e429`/`a-e500`/`a-e400` (error bodies), `a-reset` (connection reset mid-stream);
//! anything else is text ("Hello from the mock."), or parallel tool_use blocks when the request has
//! tools.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
pub struct MockState {
    pub connections: AtomicU64,
    pub requests: AtomicU64,
    /// Models of the requests received, in order.
    pub models: Mutex<Vec<String>>,
    /// Raw bodies received.
    pub bodies: Mutex<Vec<Vec<u8>>>,
    /// Request heads received.
    pub heads: Mutex<Vec<String>>,
    /// When set, new connections are accepted and closed at once (upstream down).
    pub down: AtomicBool,
    pub prompt_tokens_total: AtomicU64,
    pub completion_tokens_total: AtomicU64,
}

pub struct Mock {
    pub addr: SocketAddr,
    pub state: Arc<MockState>,
}

pub struct TlsFiles {
    pub ca_pem: String,
    pub server: Arc<rustls::ServerConfig>,
}

/// A CA and a server certificate for 127.0.0.1/localhost, generated now.
pub fn make_tls() -> TlsFiles {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "tierflow test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("leaf params");
    let leaf = leaf_params
        .signed_by(&leaf_key, &issuer)
        .expect("leaf cert");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .expect("server config");
    TlsFiles {
        ca_pem: ca_cert.pem(),
        server: Arc::new(server),
    }
}

pub fn start(tls: Option<Arc<rustls::ServerConfig>>) -> Mock {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind mock");
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(MockState::default());
    let st = state.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            st.connections.fetch_add(1, Ordering::SeqCst);
            if st.down.load(Ordering::SeqCst) {
                drop(conn);
                continue;
            }
            let st = st.clone();
            let tls = tls.clone();
            std::thread::spawn(move || {
                let _ = conn.set_nodelay(true);
                match tls {
                    None => {
                        let raw = conn.try_clone().ok();
                        serve(conn, raw, &st)
                    }
                    Some(cfg) => {
                        let raw = conn.try_clone().ok();
                        let sc = rustls::ServerConnection::new(cfg).expect("server conn");
                        serve(rustls::StreamOwned::new(sc, conn), raw, &st)
                    }
                }
            });
        }
    });
    Mock { addr, state }
}

fn serve<S: Read + Write>(stream: S, raw: Option<TcpStream>, st: &MockState) {
    let mut reader = BufReader::new(stream);
    loop {
        // Request head.
        let mut head = String::new();
        let mut content_length = 0usize;
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                content_length = v.trim().parse().unwrap_or(0);
            }
            head.push_str(&line);
        }
        let mut body = vec![0u8; content_length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if st.down.load(Ordering::SeqCst) {
            return; // upstream "down": established connections die too
        }
        st.requests.fetch_add(1, Ordering::SeqCst);
        let req: serde_json::Value =
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        let model = req["model"].as_str().unwrap_or("").to_string();
        st.models.lock().unwrap().push(model.clone());
        st.bodies.lock().unwrap().push(body.clone());
        st.heads.lock().unwrap().push(head.clone());
        let stream = req["stream"].as_bool().unwrap_or(false);
        let include_usage = req["stream_options"]["include_usage"]
            .as_bool()
            .unwrap_or(false);
        let has_tools = req["tools"].as_array().is_some_and(|t| !t.is_empty());
        let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
        let w = reader.get_mut();
        let keep = if path.ends_with("/messages") {
            respond_anthropic(w, raw.as_ref(), &model, stream, has_tools)
        } else if has_tools {
            respond_tools(w, stream)
        } else {
            respond(w, raw.as_ref(), st, &model, stream, include_usage, &body)
        };
        if !keep {
            return;
        }
        if model == "hangup" {
            // Close the idle keep-alive connection shortly after answering.
            std::thread::sleep(Duration::from_millis(50));
            return;
        }
    }
}

pub const CONTENT_WORDS: [&str; 5] = ["Hello", " from", " the", " mock", "."];

pub fn completion_json(
    model: &str,
    content: &str,
    prompt_tokens: u64,
    completion_tokens: u64,
) -> String {
    serde_json::json!({
        "id": "chatcmpl-mock123",
        "object": "chat.completion",
        "created": 1_700_000_000u64,
        "model": model,
        "system_fingerprint": "fp_mock",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": null},
                     "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens,
                  "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}
    })
    .to_string()
}

pub fn chunk_json(
    model: &str,
    delta: serde_json::Value,
    finish: Option<&str>,
    include_usage: bool,
) -> String {
    let mut v = serde_json::json!({
        "id": "chatcmpl-mock123", "object": "chat.completion.chunk", "created": 1_700_000_000u64,
        "model": model, "system_fingerprint": "fp_mock",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
    });
    if include_usage {
        v["usage"] = serde_json::Value::Null;
    }
    v.to_string()
}

/// The SSE events (data payloads) the mock sends for a streamed answer.
pub fn stream_events(model: &str, include_usage: bool, prompt_tokens: u64) -> Vec<String> {
    let mut ev = vec![chunk_json(
        model,
        serde_json::json!({"role": "assistant", "content": "", "refusal": null}),
        None,
        include_usage,
    )];
    for w in CONTENT_WORDS {
        ev.push(chunk_json(
            model,
            serde_json::json!({"content": w}),
            None,
            include_usage,
        ));
    }
    ev.push(chunk_json(
        model,
        serde_json::json!({}),
        Some("stop"),
        include_usage,
    ));
    if include_usage {
        ev.push(
            serde_json::json!({"id": "chatcmpl-mock123", "object": "chat.completion.chunk", "created": 1_700_000_000u64,
                "model": model, "system_fingerprint": "fp_mock", "choices": [],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": CONTENT_WORDS.len(),
                          "total_tokens": prompt_tokens + CONTENT_WORDS.len() as u64}})
            .to_string(),
        );
    }
    ev
}

/// `echo` streamed: the request body as content, 5 bytes (or the next char boundary) per event,
/// so anything in it is split across events.
pub fn echo_stream_events(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(body).into_owned();
    let mut ev = vec![chunk_json(
        "echo",
        serde_json::json!({"role": "assistant", "content": ""}),
        None,
        false,
    )];
    let mut at = 0;
    while at < text.len() {
        let mut end = (at + 5).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        ev.push(chunk_json(
            "echo",
            serde_json::json!({"content": &text[at..end]}),
            None,
            false,
        ));
        at = end;
    }
    ev.push(chunk_json(
        "echo",
        serde_json::json!({}),
        Some("stop"),
        false,
    ));
    ev
}

fn write_chunk<W: Write>(w: &mut W, data: &[u8]) -> std::io::Result<()> {
    write!(w, "{:x}\r\n", data.len())?;
    w.write_all(data)?;
    w.write_all(b"\r\n")?;
    w.flush()
}

fn error_body(status: u16, message: &str, ty: &str, code: &str) -> String {
    serde_json::json!({"error": {"message": message, "type": ty, "param": null, "code": code}})
        .to_string()
        + if status == 0 { "" } else { "" }
}

fn respond<W: Write>(
    w: &mut W,
    raw: Option<&TcpStream>,
    st: &MockState,
    model: &str,
    stream: bool,
    include_usage: bool,
    body: &[u8],
) -> bool {
    let prompt_tokens = (body.len() as u64 / 4).max(1);
    if let Some(ms) = model.strip_prefix("slow-") {
        std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(1000)));
    }
    let send_error = |w: &mut W, status: u16, reason: &str, body: String| {
        let _ = write!(
            w,
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nx-request-id: req_mock\r\n\r\n{body}",
            body.len()
        );
        let _ = w.flush();
    };
    match model {
        "e429" => {
            send_error(
                w,
                429,
                "Too Many Requests",
                error_body(
                    429,
                    "Rate limit reached for requests",
                    "requests",
                    "rate_limit_exceeded",
                ),
            );
            return true;
        }
        "e500" => {
            send_error(
                w,
                500,
                "Internal Server Error",
                error_body(
                    500,
                    "The server had an error while processing your request.",
                    "server_error",
                    "internal_error",
                ),
            );
            return true;
        }
        "e400" => {
            send_error(
                w,
                400,
                "Bad Request",
                error_body(
                    400,
                    "Invalid value for 'temperature'.",
                    "invalid_request_error",
                    "invalid_value",
                ),
            );
            return true;
        }
        _ => {}
    }
    if !stream {
        let content = if model == "echo" {
            String::from_utf8_lossy(body).into_owned()
        } else {
            CONTENT_WORDS.concat()
        };
        let text = completion_json(model, &content, prompt_tokens, CONTENT_WORDS.len() as u64);
        st.prompt_tokens_total
            .fetch_add(prompt_tokens, Ordering::SeqCst);
        st.completion_tokens_total
            .fetch_add(CONTENT_WORDS.len() as u64, Ordering::SeqCst);
        if model == "close" {
            let _ = write!(w, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{text}");
            let _ = w.flush();
            return false;
        }
        let _ = write!(
            w,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nx-request-id: req_mock\r\nopenai-processing-ms: 1\r\n\r\n{text}",
            text.len()
        );
        let _ = w.flush();
        return true;
    }
    let _ = write!(w, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nTransfer-Encoding: chunked\r\nCache-Control: no-cache\r\n\r\n");
    let events = if model == "echo" {
        echo_stream_events(body)
    } else {
        stream_events(model, include_usage, prompt_tokens)
    };
    for (i, e) in events.iter().enumerate() {
        if (model == "stall" || model == "reset") && i == 3 {
            if model == "stall" {
                std::thread::sleep(Duration::from_secs(30));
            } else if let Some(raw) = raw {
                use std::os::fd::AsRawFd;
                let linger = libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                };
                // SAFETY: valid socket fd and a properly sized linger struct.
                unsafe {
                    libc::setsockopt(
                        raw.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_LINGER,
                        &linger as *const libc::linger as *const libc::c_void,
                        std::mem::size_of::<libc::linger>() as libc::socklen_t,
                    );
                }
                let _ = raw.shutdown(std::net::Shutdown::Both);
            }
            return false;
        }
        if write_chunk(w, format!("data: {e}\n\n").as_bytes()).is_err() {
            return false;
        }
        if model == "drip" {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    st.prompt_tokens_total
        .fetch_add(prompt_tokens, Ordering::SeqCst);
    st.completion_tokens_total
        .fetch_add(CONTENT_WORDS.len() as u64, Ordering::SeqCst);
    let _ = write_chunk(w, b"data: [DONE]\n\n");
    let _ = w.write_all(b"0\r\n\r\n");
    let _ = w.flush();
    true
}

/// The Anthropic text the mock answers with.
pub const ANTHROPIC_TEXT: &str = "Hello from the mock.";

fn reset<S>(raw: Option<&TcpStream>, _w: &mut S) {
    if let Some(raw) = raw {
        use std::os::fd::AsRawFd;
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: valid socket fd and a properly sized linger struct.
        unsafe {
            libc::setsockopt(
                raw.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                &linger as *const libc::linger as *const libc::c_void,
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
        let _ = raw.shutdown(std::net::Shutdown::Both);
    }
}

fn send_json<W: Write>(w: &mut W, status: u16, reason: &str, body: &[u8]) {
    let _ = write!(
        w,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nrequest-id: req_mock\r\n\r\n",
        body.len()
    );
    let _ = w.write_all(body);
    let _ = w.flush();
}

fn send_sse<W: Write>(w: &mut W, events: &[Vec<u8>]) -> bool {
    let _ = write!(w, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nTransfer-Encoding: chunked\r\nCache-Control: no-cache\r\n\r\n");
    for e in events {
        if write_chunk(w, e).is_err() {
            return false;
        }
    }
    let _ = w.write_all(b"0\r\n\r\n");
    let _ = w.flush();
    true
}

/// OpenAI dialect, request with tools: two parallel tool calls.
fn respond_tools<W: Write>(w: &mut W, stream: bool) -> bool {
    use tierflow::providers::anthropic::mock as am;
    if stream {
        send_sse(w, &am::mock_chat_sse_tool_calls())
    } else {
        send_json(w, 200, "OK", &am::mock_chat_json_tool_calls());
        true
    }
}

fn anthropic_error(kind: &str, message: &str) -> Vec<u8> {
    serde_json::json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_mock"})
        .to_string()
        .into_bytes()
}

/// Anthropic Messages dialect.
fn respond_anthropic<W: Write>(
    w: &mut W,
    raw: Option<&TcpStream>,
    model: &str,
    stream: bool,
    has_tools: bool,
) -> bool {
    use tierflow::providers::anthropic::mock::{self as am, Scenario};
    let scenario = match model {
        "a-e429" => {
            send_json(
                w,
                429,
                "Too Many Requests",
                &anthropic_error(
                    "rate_limit_error",
                    "Number of request tokens has exceeded your per-minute rate limit",
                ),
            );
            return true;
        }
        "a-e500" => {
            send_json(
                w,
                500,
                "Internal Server Error",
                &anthropic_error("api_error", "Internal server error"),
            );
            return true;
        }
        "a-e400" => {
            send_json(
                w,
                400,
                "Bad Request",
                &anthropic_error("invalid_request_error", "max_tokens: Field required"),
            );
            return true;
        }
        "a-tool" => Scenario::OneTool,
        "a-parallel" => Scenario::ParallelTools,
        "a-thinking" => Scenario::Thinking,
        "a-maxtokens" => Scenario::MaxTokens,
        "a-error" => Scenario::ErrorMidStream,
        _ if has_tools => Scenario::ParallelTools,
        _ => Scenario::Text(ANTHROPIC_TEXT),
    };
    if !stream {
        if matches!(scenario, Scenario::ErrorMidStream) {
            send_json(w, 529, "Overloaded", &am::mock_message_json(scenario));
        } else {
            send_json(w, 200, "OK", &am::mock_message_json(scenario));
        }
        return true;
    }
    let mut events = am::mock_message_sse(scenario);
    if model == "a-reset" {
        events.truncate(3);
        let _ = write!(w, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n");
        for e in &events {
            let _ = write_chunk(w, e);
        }
        std::thread::sleep(Duration::from_millis(20));
        reset(raw, w);
        return false;
    }
    send_sse(w, &events)
}
