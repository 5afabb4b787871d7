//! The small endpoints beside chat: `GET /v1/models`, `GET /health`, `GET /config` (admin),
//! `GET /stats`. Admin access: a configured admin key as a bearer token, else loopback peers only.

use monoio::net::TcpStream;

use crate::error::{push_json_str, GatewayError};
use crate::http::head::{bearer_token, RequestHead};
use crate::http::response;
use crate::pipeline::{relay::flush, respond_error, Done, Worker};

pub fn is_known_path(p: &[u8]) -> bool {
    matches!(
        p,
        b"/v1/chat/completions"
            | b"/chat/completions"
            | b"/v1/messages"
            | b"/messages"
            | b"/v1/messages/count_tokens"
            | b"/messages/count_tokens"
            | b"/v1/models" | b"/models" | b"/health" | b"/config" | b"/stats" | b"/metrics"
    )
}

async fn send_json(stream: &mut TcpStream, out: &mut Vec<u8>, status: u16, body: &[u8], keep_alive: bool) -> Done {
    out.clear();
    response::begin(out, status, keep_alive);
    response::finish_with_body(out, "application/json", body);
    let ok = flush(stream, out).await.is_ok();
    Done { keep_alive: keep_alive && ok, status }
}

pub async fn models(worker: &Worker, stream: &mut TcpStream, out: &mut Vec<u8>, keep_alive: bool) -> Done {
    let cfg = worker.shared.config.load_full();
    let mut ids: Vec<(String, String)> = vec![("auto".into(), "tierflow".into())];
    for t in 1..=4 {
        ids.push((format!("tier-{t}"), "tierflow".into()));
    }
    for r in cfg.routes.keys() {
        ids.push((r.clone(), "tierflow".into()));
    }
    for t in &cfg.targets {
        ids.push((t.name.clone(), cfg.providers[t.provider].name.clone()));
    }
    for a in cfg.aliases.keys() {
        if !ids.iter().any(|(id, _)| id == a) {
            ids.push((a.clone(), "tierflow".into()));
        }
    }
    let mut body = String::from("{\"object\":\"list\",\"data\":[");
    for (i, (id, owner)) in ids.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str("{\"id\":");
        push_json_str(&mut body, id);
        body.push_str(",\"object\":\"model\",\"created\":0,\"owned_by\":");
        push_json_str(&mut body, owner);
        body.push('}');
    }
    body.push_str("]}");
    send_json(stream, out, 200, body.as_bytes(), keep_alive).await
}

pub async fn health(
    worker: &Worker,
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    keep_alive: bool,
    _query: Option<&[u8]>,
) -> Done {
    let uptime = worker.shared.started.elapsed().as_secs();
    let body = format!(
        "{{\"status\":\"ok\",\"uptime_s\":{uptime},\"workers\":{},\"driver\":\"{}\"}}",
        worker.shared.workers, worker.shared.driver
    );
    send_json(stream, out, 200, body.as_bytes(), keep_alive).await
}

/// Admin check: bearer admin key when configured, else the peer must be on loopback.
pub fn admin_allowed(worker: &Worker, head: &RequestHead, buf: &[u8], stream: &TcpStream) -> Result<(), GatewayError> {
    let cfg = worker.shared.config.load();
    match &cfg.admin_key {
        Some(key) => {
            let token = head.authorization.clone().and_then(|r| bearer_token(&buf[r]).map(|t| t.to_vec()));
            let ok = token.is_some_and(|t| constant_time_eq(&t, key.as_bytes()));
            if ok {
                Ok(())
            } else {
                Err(GatewayError::Unauthorized { message: "admin endpoint: missing or wrong admin key".into() })
            }
        }
        None => match stream.peer_addr() {
            Ok(a) if a.ip().is_loopback() => Ok(()),
            _ => Err(GatewayError::Forbidden {
                message: "admin endpoints answer on loopback only when no admin key is configured".into(),
                code: "admin_loopback_only",
            }),
        },
    }
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub async fn config(
    worker: &Worker,
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    keep_alive: bool,
    head: &RequestHead,
    buf: &[u8],
) -> Done {
    if let Err(e) = admin_allowed(worker, head, buf, stream) {
        return respond_error(stream, out, &e, keep_alive).await;
    }
    let cfg = worker.shared.config.load_full();
    send_json(stream, out, 200, cfg.redacted_json().as_bytes(), keep_alive).await
}

pub async fn stats(worker: &Worker, stream: &mut TcpStream, out: &mut Vec<u8>, keep_alive: bool) -> Done {
    let text = worker.shared.render_stats();
    out.clear();
    response::begin(out, 200, keep_alive);
    response::finish_with_body(out, "text/plain; version=0.0.4; charset=utf-8", text.as_bytes());
    let ok = flush(stream, out).await.is_ok();
    Done { keep_alive: keep_alive && ok, status: 200 }
}

/// `POST /reload-config` (admin): re-read the config file on a helper thread (never on the core),
/// swap the snapshot atomically; a bad file is refused with its reason and the old config serves on.
pub async fn reload_config(
    worker: &Worker,
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    keep_alive: bool,
    head: &RequestHead,
    buf: &[u8],
) -> Done {
    if let Err(e) = admin_allowed(worker, head, buf, stream) {
        return respond_error(stream, out, &e, keep_alive).await;
    }
    let Some(reloader) = worker.shared.reloader.get().cloned() else {
        let e = GatewayError::ServiceUnavailable { message: "reload is not available in this process".into() };
        return respond_error(stream, out, &e, keep_alive).await;
    };
    let slot: std::sync::Arc<std::sync::Mutex<Option<Result<String, String>>>> = Default::default();
    let slot2 = slot.clone();
    let spawned = std::thread::Builder::new().name("tierflow-reload".into()).spawn(move || {
        let r = reloader();
        if let Ok(mut s) = slot2.lock() {
            *s = Some(r);
        }
    });
    if spawned.is_err() {
        let e = GatewayError::Internal { message: "cannot start the reload thread".into() };
        return respond_error(stream, out, &e, keep_alive).await;
    }
    let result = loop {
        if let Some(r) = slot.lock().ok().and_then(|mut s| s.take()) {
            break r;
        }
        monoio::time::sleep(std::time::Duration::from_millis(2)).await;
    };
    match result {
        Ok(summary) => {
            let mut body = String::from("{\"status\":\"reloaded\",\"summary\":");
            push_json_str(&mut body, &summary);
            body.push('}');
            send_json(stream, out, 200, body.as_bytes(), keep_alive).await
        }
        Err(reason) => {
            let e = GatewayError::BadRequest {
                message: format!("configuration refused; the running configuration keeps serving: {reason}"),
                param: None,
                code: "invalid_config",
            };
            respond_error(stream, out, &e, keep_alive).await
        }
    }
}
