//! Test support: start the real `tierflow` binary on 127.0.0.1:0 with a config pointing at mock
//! upstreams, and a small blocking HTTP/1.1 client that reads responses exactly (Content-Length,
//! chunked) so tests can compare bytes.

#![allow(dead_code)]

pub mod mock;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Gateway {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub log: Arc<Mutex<Vec<String>>>,
}

/// The `XDG_CACHE_HOME` every spawned gateway shares, with the scanner's compiled databases
/// stored there once (by `tierflow inspect` on empty input) before the first gateway starts, so
/// each spawn loads them instead of compiling (~12 s of CPU).
pub fn scanner_cache_home() -> std::path::PathBuf {
    static WARM: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    WARM.get_or_init(|| {
        let home = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("scanner-cache");
        let _ = std::fs::create_dir_all(&home);
        let status = Command::new(env!("CARGO_BIN_EXE_tierflow"))
            .arg("inspect")
            .env("XDG_CACHE_HOME", &home)
            .env("HOME", &home)
            .env_remove("CACHE_DIRECTORY")
            .env_remove("TIERFLOW_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run tierflow inspect");
        assert!(status.success(), "warming the scanner cache failed");
        home
    })
    .clone()
}

impl Gateway {
    pub fn spawn(config: &serde_json::Value) -> Gateway {
        Self::spawn_with(config, &[], &[])
    }

    pub fn spawn_with(config: &serde_json::Value, args: &[&str], env: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.json");
        std::fs::write(&path, serde_json::to_vec_pretty(config).unwrap()).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tierflow"));
        cmd.arg("--config")
            .arg(&path)
            .arg("--port")
            .arg("0")
            .args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.env("HOME", dir.path());
        // One compiled-scanner cache for every gateway of the run (warmed once, below).
        cmd.env("XDG_CACHE_HOME", scanner_cache_home());
        cmd.env_remove("CACHE_DIRECTORY");
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn tierflow");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("msg=listening") {
                    if let Some(tx) = tx.take() {
                        let addr = line
                            .split_whitespace()
                            .find_map(|f| f.strip_prefix("addr="))
                            .unwrap_or("")
                            .to_string();
                        let _ = tx.send(addr);
                    }
                }
                log2.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a.parse().expect("listen addr"),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "gateway did not start; log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        Gateway {
            child,
            addr,
            dir,
            log,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Reads one response from `r`. `None` if the connection closed before a status line.
pub fn read_response<R: BufRead>(r: &mut R) -> Option<Response> {
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let status: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            r.read_line(&mut h).ok()?;
            if h == "\r\n" || h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.trim_end().split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        if status == 100 {
            continue;
        }
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
        };
        let mut body = Vec::new();
        if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                let mut size = String::new();
                r.read_line(&mut size).ok()?;
                let n = usize::from_str_radix(size.trim(), 16).ok()?;
                if n == 0 {
                    let mut end = String::new();
                    r.read_line(&mut end).ok()?;
                    break;
                }
                let mut chunk = vec![0u8; n + 2];
                r.read_exact(&mut chunk).ok()?;
                body.extend_from_slice(&chunk[..n]);
            }
        } else if let Some(n) = get("content-length") {
            let n: usize = n.parse().ok()?;
            body.resize(n, 0);
            r.read_exact(&mut body).ok()?;
        } else {
            r.read_to_end(&mut body).ok()?;
        }
        return Some(Response {
            status,
            headers,
            body,
        });
    }
}

/// One request on a fresh connection.
pub fn send_raw(addr: SocketAddr, raw: &[u8]) -> Option<Response> {
    let mut s = connect(addr);
    s.write_all(raw).ok()?;
    let mut r = BufReader::new(s);
    read_response(&mut r)
}

pub fn post_json_raw(path: &str, body: &str, extra: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

pub fn chat(addr: SocketAddr, body: &serde_json::Value) -> Response {
    send_raw(
        addr,
        &post_json_raw("/v1/chat/completions", &body.to_string(), ""),
    )
    .expect("response")
}

pub fn get(addr: SocketAddr, path: &str, extra: &str) -> Response {
    send_raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n").as_bytes(),
    )
    .expect("response")
}

/// `data:` payloads of an SSE body.
pub fn sse_data(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|ev| {
            ev.lines()
                .find_map(|l| l.strip_prefix("data: "))
                .map(str::to_string)
        })
        .collect()
}

/// A config whose targets are the mock's fault modes: `mock/<mode>`.
pub fn mock_config(mock_addr: SocketAddr, extra: serde_json::Value) -> serde_json::Value {
    let mut cfg = serde_json::json!({
        "providers": {
            "mock": {"baseUrl": format!("http://{mock_addr}/v1"), "auth": {"type": "env", "key": "TF_TEST_KEY"},
                     "models": ["ok", "echo"], "first_byte_timeout_ms": 1500, "idle_timeout_ms": 1500, "connect_timeout_ms": 500},
            "dead": {"baseUrl": "http://127.0.0.1:9/v1", "auth": {"type": "none"}, "connect_timeout_ms": 300}
        },
        "tiers": {
            "1": {"primary": "mock/ok"},
            "2": {"primary": "mock/ok"},
            "3": {"primary": "mock/ok"},
            "4": {"primary": "mock/ok"}
        },
        "routes": {
            "flow/failover": {"primary": "mock/e500", "fallback": ["dead/x", "mock/e429", "mock/ok"]},
            "flow/all-bad": {"primary": "mock/e500", "fallback": ["mock/e429"]},
            "flow/timeout": {"primary": "mock/slow-3000"}
        },
        "aliases": {"gpt-4o-mini": "mock/ok"},
        "flagship": "mock/flagship",
        "prices": {"mock/ok": {"input": 0.15, "output": 0.6}, "mock/flagship": {"input": 2.5, "output": 10.0}},
        "limits": {"max_header_bytes": 4096, "max_headers": 32, "max_body_bytes": 1048576,
                   "header_timeout_ms": 1000, "idle_timeout_ms": 1500, "max_connections_per_worker": 64, "drain_ms": 5000}
    });
    if let (Some(base), Some(extra)) = (cfg.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            base.insert(k.clone(), v.clone());
        }
    }
    cfg
}
