//! Account stage, early exits: the one `UsageRecord` of a chat request the gateway answered
//! before `handle_chat` ran — head and framing errors (400, 408, 413, 431, 501, 505), a wrong
//! method (405) and Messages bodies that do not translate (400). `accept` decides when.
//!
//! Ledger scope: every request to a chat endpoint (`/v1/chat/completions`, `/v1/messages` and
//! their unversioned aliases, any method) that got a response is one row. Not recorded: other
//! endpoints (`/health`, `/stats`, `/dashboard`, `/v1/models`, `count_tokens`, admin) — polls
//! and probes, not usage, counted in `tierflow_http_*` — unknown paths (404: a scanner would fill
//! the ledger with its own paths), heads whose request line names no path, and connections that
//! close without an answer.

use std::time::Instant;

use crate::http::head::RequestHead;
use crate::ledger::{now_ms, Outcome};

use super::account::Acct;
use super::{label_value, Caller, Worker};

/// The chat endpoints whose requests the ledger records.
pub fn is_chat_path(path: &[u8]) -> bool {
    matches!(
        path,
        b"/v1/chat/completions" | b"/chat/completions" | b"/v1/messages" | b"/messages"
    )
}

/// Whether the request line at the start of `buf` (`METHOD SP target SP …`) names a chat
/// endpoint; for heads that failed to parse or arrive. `false` when the line is not complete.
pub fn request_line_is_chat(buf: &[u8]) -> bool {
    let line = &buf[..memchr::memchr(b'\n', buf).unwrap_or(buf.len())];
    let mut parts = line.splitn(3, |&b| b == b' ');
    let (Some(_method), Some(target), Some(_version)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let path = &target[..memchr::memchr(b'?', target).unwrap_or(target.len())];
    is_chat_path(path)
}

/// Records a chat-endpoint request answered with `status` before the chat pipeline ran.
/// `head`: the parsed head and its buffer, when there is one (labels come from its key or
/// `X-TierFlow-App`/`-Env`, as on the chat path). A buffer that no longer holds the head (a
/// timed-out read takes it) gives an anonymous row rather than a panic.
pub fn record_early(
    worker: &Worker,
    head: Option<(&RequestHead, &[u8])>,
    started: Instant,
    status: u16,
) {
    let caller = head
        .filter(|(h, b)| h.head_len <= b.len())
        .map_or_else(Caller::default, |(h, b)| Caller::from_head(h, b));
    record_early_caller(worker, caller, started, status);
}

/// `record_early` for a caller already taken from its head.
pub fn record_early_caller(worker: &Worker, caller: Caller<'_>, started: Instant, status: u16) {
    let accounting = &worker.shared.accounting;
    let cfg = worker.shared.config.load();
    let mut acct = Acct::default();
    if accounting.keys_required(&cfg) {
        // Only a valid key names the caller; an unauthenticated request stays `default`.
        let key = accounting.keys.as_ref().and_then(|store| {
            caller
                .token
                .and_then(|t| std::str::from_utf8(t).ok())
                .and_then(|t| store.lookup(t))
        });
        if let Some(k) = key {
            acct.key_id = Some(k.id.clone());
            acct.app = Some(k.app.clone());
            acct.env = Some(k.env.clone());
        }
    } else {
        acct.app = label_value(caller.app);
        acct.env = label_value(caller.env);
    }
    acct.outcome = Some(Outcome::Error);
    let elapsed = started.elapsed();
    let latency_ms = elapsed.as_millis().min(u32::MAX as u128) as u32;
    let time_ms = now_ms().saturating_sub(elapsed.as_millis() as u64);
    let (rec, saved) = acct.into_record(&accounting.labels, time_ms, status, latency_ms);
    worker.acct.finish(rec, saved);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_paths_and_request_lines() {
        for p in [
            &b"/v1/chat/completions"[..],
            b"/chat/completions",
            b"/v1/messages",
            b"/messages",
        ] {
            assert!(is_chat_path(p));
        }
        for p in [
            &b"/v1/messages/count_tokens"[..],
            b"/health",
            b"/stats",
            b"/v1/models",
            b"/",
        ] {
            assert!(!is_chat_path(p));
        }
        assert!(request_line_is_chat(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        ));
        assert!(request_line_is_chat(
            b"GET /v1/messages?beta=1 HTTP/1.1\r\n"
        ));
        assert!(!request_line_is_chat(b"GET /health HTTP/1.1\r\n"));
        // Incomplete or garbage request lines name no path.
        assert!(!request_line_is_chat(b"POST /v1/chat/completions"));
        assert!(!request_line_is_chat(b"\x16\x03\x01 garbage"));
        assert!(!request_line_is_chat(b""));
        // Split at every byte: only the complete line is recognised.
        let line = b"POST /v1/chat/completions HTTP/1.1\r\n";
        for i in 0..line.len() {
            let got = request_line_is_chat(&line[..i]);
            assert_eq!(got, i >= b"POST /v1/chat/completions ".len(), "at {i}");
        }
    }
}
