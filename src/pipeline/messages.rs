//! Inbound Anthropic Messages endpoint (`POST /v1/messages`, `POST /v1/messages/count_tokens`):
//! the body is translated to an OpenAI chat request and takes the same path as any chat request
//! (routing, failover, accounting); the answer is translated back (or passed through when the
//! routed upstream speaks Anthropic too). Errors use Anthropic's error shape.

use std::time::Instant;

use monoio::net::TcpStream;

use crate::error::GatewayError;
use crate::http::response;
use crate::providers::anthropic::{self, TranslateError};

use super::{handle_chat_as, relay, respond_error_as, Done, Inbound, Worker};

fn translate_error(e: &TranslateError) -> GatewayError {
    GatewayError::BadRequest {
        message: e.to_string(),
        param: e.field().map(str::to_string),
        code: "invalid_request",
    }
}

/// `POST /v1/messages`.
pub async fn handle_messages(
    worker: &Worker,
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    body: &[u8],
    scratch: &mut Vec<u8>,
    keep_alive: bool,
    started: Instant,
    caller: super::Caller<'_>,
) -> Done {
    let chat_body = match anthropic::messages_request_to_chat(body) {
        Ok((b, _info)) => b,
        Err(e) => {
            let done = respond_error_as(stream, out, &translate_error(&e), keep_alive, true).await;
            super::early::record_early_caller(worker, caller, started, done.status);
            return done;
        }
    };
    let input_tokens_hint = anthropic::count_tokens_local(body).unwrap_or(0);
    let inbound = Inbound {
        original: body,
        input_tokens_hint,
    };
    handle_chat_as(
        worker,
        stream,
        out,
        &chat_body,
        scratch,
        keep_alive,
        started,
        caller,
        Some(inbound),
    )
    .await
}

/// `POST /v1/messages/count_tokens`: a local estimate, `{"input_tokens": n}`.
pub async fn handle_count_tokens(
    worker: &Worker,
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    body: &[u8],
    keep_alive: bool,
) -> Done {
    let _ = worker;
    match anthropic::count_tokens_local(body) {
        Ok(n) => {
            out.clear();
            response::begin(out, 200, keep_alive);
            let body = format!("{{\"input_tokens\":{n}}}");
            response::finish_with_body(out, "application/json", body.as_bytes());
            let ok = relay::flush(stream, out).await.is_ok();
            Done {
                keep_alive: keep_alive && ok,
                status: 200,
            }
        }
        Err(e) => respond_error_as(stream, out, &translate_error(&e), keep_alive, true).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translation_errors_are_400_naming_the_field() {
        let e =
            anthropic::messages_request_to_chat(br#"{"model":"auto","messages":[]}"#).unwrap_err();
        let g = translate_error(&e);
        assert_eq!(g.status(), 400);
        assert_eq!(g.param(), Some("max_tokens"));
        let body: serde_json::Value =
            serde_json::from_slice(&anthropic::error_body_anthropic(g.status(), &g.to_string()))
                .unwrap();
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }
}
