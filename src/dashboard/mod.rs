//! `GET /dashboard`: the operator's web page — one self-contained HTML file (`page.html`: inline
//! CSS and JS, no CDN, no web fonts) that polls `GET /stats` every 2 s and renders request rate,
//! routing mix, cost and savings, latency quantiles, security events and upstream health. This
//! module owns serving it and who may see it; the numbers are `crate::stats`'.
//!
//! Access follows the admin rule (it shows spend): with an admin key configured, the key as a
//! bearer token or as `?key=` (the page then keeps it in memory, drops it from the address bar
//! and sends it as a bearer token with its polls); without one, loopback peers only. The page's
//! one inline script is pinned by its SHA-256 in a strict Content-Security-Policy, so the page
//! can load nothing from elsewhere and no injected script runs.

use std::sync::OnceLock;

use monoio::net::TcpStream;
use sha2::{Digest, Sha256};

use crate::api::{admin_allowed, constant_time_eq};
use crate::http::head::RequestHead;
use crate::http::response;
use crate::pipeline::{relay::flush, respond_error, Done, Worker};

/// The page, compiled into the binary.
pub const PAGE: &str = include_str!("page.html");

/// `GET /dashboard`. `query`: the raw query string, for `key=`.
pub async fn dashboard(
    worker: &Worker,
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    keep_alive: bool,
    head: &RequestHead,
    buf: &[u8],
    query: Option<&[u8]>,
) -> Done {
    let by_query = {
        let cfg = worker.shared.config.load();
        match (&cfg.admin_key, query.and_then(|q| query_param(q, b"key"))) {
            (Some(admin), Some(given)) => constant_time_eq(&given, admin.as_bytes()),
            _ => false,
        }
    };
    if !by_query {
        if let Err(e) = admin_allowed(worker, head, buf, stream) {
            return respond_error(stream, out, &e, keep_alive).await;
        }
    }
    out.clear();
    response::begin(out, 200, keep_alive);
    response::header(out, "Content-Security-Policy", csp().as_bytes());
    // The URL may carry the admin key: never cached, never sent on as a referrer.
    response::header(out, "Cache-Control", b"no-store");
    response::header(out, "Referrer-Policy", b"no-referrer");
    response::header(out, "X-Content-Type-Options", b"nosniff");
    response::header(out, "X-Frame-Options", b"DENY");
    response::finish_with_body(out, "text/html; charset=utf-8", PAGE.as_bytes());
    let ok = flush(stream, out).await.is_ok();
    Done {
        keep_alive: keep_alive && ok,
        status: 200,
    }
}

/// The policy: nothing but this page's own script (by hash), its inline styles and fetches to
/// this origin.
pub fn csp() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        let script = inline_script(PAGE).unwrap_or("");
        let hash = base64(&Sha256::digest(script.as_bytes()));
        format!(
            "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'"
        )
    })
}

/// The text of the page's one `<script>` element (what a CSP hash covers).
fn inline_script(page: &str) -> Option<&str> {
    let open = page.find("<script>")? + "<script>".len();
    let close = open + page[open..].find("</script>")?;
    Some(&page[open..close])
}

/// The percent-decoded value of `name` in a query string; `None` when absent or not decodable.
fn query_param(query: &[u8], name: &[u8]) -> Option<Vec<u8>> {
    let raw = query.split(|&b| b == b'&').find_map(|kv| {
        let (k, v) = match kv.iter().position(|&b| b == b'=') {
            Some(i) => (&kv[..i], &kv[i + 1..]),
            None => (kv, &kv[kv.len()..]),
        };
        (k == name).then_some(v)
    })?;
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'%' => {
                let hex = raw.get(i + 1..i + 3)?;
                let s = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(s, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// Standard base64 with padding (RFC 4648 §4), as CSP hash sources are written.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                s.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_is_self_contained() {
        // No external resource of any kind: everything the page needs is in the file.
        for needle in [
            "http://", "https://", "//cdn", "@import", "<link", "src=", "url(",
        ] {
            assert!(!PAGE.contains(needle), "page references {needle:?}");
        }
        assert_eq!(PAGE.matches("<script").count(), 1);
        assert!(inline_script(PAGE).is_some_and(|s| s.contains("fetch(\"/stats\"")));
    }

    #[test]
    fn csp_pins_the_script_by_hash() {
        let csp = csp();
        assert!(csp.contains("script-src 'sha256-"), "{csp}");
        assert!(csp.contains("default-src 'none'"));
        assert!(!csp.contains("unsafe-eval"));
        let hash = base64(&Sha256::digest(inline_script(PAGE).unwrap().as_bytes()));
        assert!(csp.contains(&hash));
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want);
        }
    }

    #[test]
    fn query_key_is_found_and_decoded() {
        assert_eq!(
            query_param(b"key=abc", b"key").as_deref(),
            Some(&b"abc"[..])
        );
        assert_eq!(
            query_param(b"x=1&key=a%2Bb%3D+c&y", b"key").as_deref(),
            Some(&b"a+b= c"[..])
        );
        assert_eq!(query_param(b"keys=1", b"key"), None);
        assert_eq!(query_param(b"key=%zz", b"key"), None);
        assert_eq!(query_param(b"key=%4", b"key"), None);
        assert_eq!(query_param(b"key", b"key").as_deref(), Some(&b""[..]));
    }
}
