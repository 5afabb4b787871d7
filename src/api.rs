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
            | b"/v1/models"
            | b"/models"
            | b"/health"
            | b"/config"
            | b"/stats"
            | b"/metrics"
            | b"/dashboard"
    )
}

async fn send_json(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    status: u16,
    body: &[u8],
    keep_alive: bool,
) -> Done {
    out.clear();
    response::begin(out, status, keep_alive);
    response::finish_with_body(out, "application/json", body);
    let ok = flush(stream, out).await.is_ok();
    Done {
        keep_alive: keep_alive && ok,
        status,
    }
}

pub async fn models(
    worker: &Worker,
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    keep_alive: bool,
) -> Done {
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
    query: Option<&[u8]>,
) -> Done {
    let deep = query.is_some_and(|q| {
        q.split(|&b| b == b'&')
            .any(|kv| kv == b"deep=1" || kv == b"deep=true")
    });
    if deep {
        let (status, body) = deep_health(worker).await;
        return send_json(stream, out, status, body.as_bytes(), keep_alive).await;
    }
    let uptime = worker.shared.started.elapsed().as_secs();
    let body = format!(
        "{{\"status\":\"ok\",\"uptime_s\":{uptime},\"workers\":{},\"driver\":\"{}\"}}",
        worker.shared.workers, worker.shared.driver
    );
    send_json(stream, out, 200, body.as_bytes(), keep_alive).await
}

/// How long a deep health answer is reused (probes cost real upstream tokens).
const DEEP_HEALTH_CACHE_MS: u64 = 5_000;
/// The probe prompt: tiny, and answerable by any model.
const DEEP_HEALTH_PROMPT: &str = "Reply with the single word: ok";

/// `GET /health?deep=1`: one real request through the whole pipeline — over loopback into this
/// gateway's own listener, so parsing, routing, failover, the upstream and the relay all run —
/// to the cheapest tier (`tier-1`, `max_tokens: 1`), plus each upstream's health as the cores see
/// it. 200 when the probe got a 200, else 503. Cached for a few seconds.
async fn deep_health(worker: &Worker) -> (u16, String) {
    if let Ok(guard) = worker.shared.deep_health.lock() {
        if let Some((at, status, body)) = guard.as_ref() {
            if at.elapsed().as_millis() < DEEP_HEALTH_CACHE_MS as u128 {
                return (*status, body.clone());
            }
        }
    }
    let started = std::time::Instant::now();
    let probe = probe_self(worker).await;
    let latency_ms = started.elapsed().as_millis() as u64;
    let cfg = worker.shared.config.load_full();
    let board = worker.shared.health_board(&cfg);
    let mut body = String::with_capacity(512);
    let (ok, probe_status, routed) = match &probe {
        Ok((status, routed)) => (*status == 200, *status, routed.clone()),
        Err(_) => (false, 0, String::new()),
    };
    body.push_str(if ok {
        "{\"status\":\"ok\""
    } else {
        "{\"status\":\"failing\""
    });
    body.push_str(&format!(
        ",\"probe\":{{\"status\":{probe_status},\"latency_ms\":{latency_ms},\"routed_model\":"
    ));
    push_json_str(&mut body, &routed);
    if let Err(e) = &probe {
        body.push_str(",\"error\":");
        push_json_str(&mut body, e);
    }
    body.push_str("},\"upstreams\":[");
    for (i, t) in cfg.targets.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        let v = board.peers(i, None);
        let state = if v.open_cores > 0 {
            "open"
        } else if v.reporting_cores == 0 {
            "unknown"
        } else {
            "closed"
        };
        body.push_str("{\"target\":");
        push_json_str(&mut body, &t.name);
        body.push_str(&format!(
            ",\"circuit\":\"{state}\",\"open_cores\":{},\"ewma_ttfb_ms\":{},\"error_rate\":{}}}",
            v.open_cores,
            v.ewma_ttfb_us.map_or("null".to_string(), |us| format!(
                "{:.3}",
                us as f64 / 1000.0
            )),
            v.error_ewma_ppm as f64 / 1e6
        ));
    }
    body.push_str("]}");
    let status = if ok { 200 } else { 503 };
    if let Ok(mut guard) = worker.shared.deep_health.lock() {
        *guard = Some((std::time::Instant::now(), status, body.clone()));
    }
    (status, body)
}

/// Sends the probe request to this gateway's own listener; returns (status, routed model).
async fn probe_self(worker: &Worker) -> Result<(u16, String), String> {
    use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
    let addr = *worker
        .shared
        .listen_addr
        .get()
        .ok_or("listener address unknown")?;
    let body = format!(
        "{{\"model\":\"tier-1\",\"max_tokens\":1,\"temperature\":0,\"messages\":[{{\"role\":\"user\",\"content\":\"{DEEP_HEALTH_PROMPT}\"}}]}}"
    );
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nX-TierFlow-App: health-probe\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let fut = async {
        let mut s = TcpStream::connect_addr(addr)
            .await
            .map_err(|e| e.to_string())?;
        let (r, _) = s.write_all(req.into_bytes()).await;
        r.map_err(|e| e.to_string())?;
        let mut resp = Vec::with_capacity(4096);
        loop {
            let buf = Vec::with_capacity(8192);
            let (r, buf) = s.read(buf).await;
            match r {
                Ok(0) => break,
                Ok(_) => resp.extend_from_slice(&buf),
                Err(e) => return Err(e.to_string()),
            }
            if resp.len() > 1 << 20 {
                break;
            }
        }
        Ok::<Vec<u8>, String>(resp)
    };
    let resp = monoio::time::timeout(std::time::Duration::from_secs(30), fut)
        .await
        .map_err(|_| "probe timed out".to_string())??;
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut headers);
    match parsed.parse(&resp) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err("malformed probe response".into()),
    }
    let status = parsed.code.unwrap_or(0);
    let routed = parsed
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("x-tierflow-model"))
        .map(|h| String::from_utf8_lossy(h.value).into_owned())
        .unwrap_or_default();
    Ok((status, routed))
}

/// Admin check: bearer admin key when configured, else the peer must be on loopback.
pub fn admin_allowed(
    worker: &Worker,
    head: &RequestHead,
    buf: &[u8],
    stream: &TcpStream,
) -> Result<(), GatewayError> {
    let cfg = worker.shared.config.load();
    match &cfg.admin_key {
        Some(key) => {
            let token = head
                .authorization
                .clone()
                .and_then(|r| bearer_token(&buf[r]).map(|t| t.to_vec()));
            let ok = token.is_some_and(|t| constant_time_eq(&t, key.as_bytes()));
            if ok {
                Ok(())
            } else {
                Err(GatewayError::Unauthorized {
                    message: "admin endpoint: missing or wrong admin key".into(),
                })
            }
        }
        None => match stream.peer_addr() {
            Ok(a) if a.ip().is_loopback() => Ok(()),
            _ => Err(GatewayError::Forbidden {
                message: "admin endpoints answer on loopback only when no admin key is configured"
                    .into(),
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

pub async fn stats(
    worker: &Worker,
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    keep_alive: bool,
) -> Done {
    let text = worker.shared.render_stats();
    out.clear();
    response::begin(out, 200, keep_alive);
    response::finish_with_body(
        out,
        "text/plain; version=0.0.4; charset=utf-8",
        text.as_bytes(),
    );
    let ok = flush(stream, out).await.is_ok();
    Done {
        keep_alive: keep_alive && ok,
        status: 200,
    }
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
        let e = GatewayError::ServiceUnavailable {
            message: "reload is not available in this process".into(),
        };
        return respond_error(stream, out, &e, keep_alive).await;
    };
    let slot: std::sync::Arc<std::sync::Mutex<Option<Result<String, String>>>> = Default::default();
    let slot2 = slot.clone();
    let spawned = std::thread::Builder::new()
        .name("tierflow-reload".into())
        .spawn(move || {
            let r = reloader();
            if let Ok(mut s) = slot2.lock() {
                *s = Some(r);
            }
        });
    if spawned.is_err() {
        let e = GatewayError::Internal {
            message: "cannot start the reload thread".into(),
        };
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
                message: format!(
                    "configuration refused; the running configuration keeps serving: {reason}"
                ),
                param: None,
                code: "invalid_config",
            };
            respond_error(stream, out, &e, keep_alive).await
        }
    }
}
