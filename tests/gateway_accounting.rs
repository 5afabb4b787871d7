//! Accounting end to end through the real binary: virtual keys (`tierflow keys`, 401/403, SIGHUP
//! reload), budgets under concurrency (429 + Retry-After), the usage ledger (one row per request,
//! totals equal to the mock's, SIGTERM flush, kill -9 durability, `tierflow usage`), /stats, and
//! one budget shared by two instances through a real `redis-server`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::json;

use super::support::mock;
use super::support::*;

fn user(content: &str) -> serde_json::Value {
    json!([{"role": "user", "content": content}])
}

/// Writes `cfg` to `dir/name` for the CLI subcommands.
fn write_config(dir: &Path, cfg: &serde_json::Value) -> PathBuf {
    let p = dir.join("cli-config.json");
    std::fs::write(&p, serde_json::to_vec_pretty(cfg).unwrap()).unwrap();
    p
}

/// Runs `tierflow --config <cfg> <args>`; returns (exit code, stdout, stderr).
fn cli(cfg: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tierflow"))
        .arg("--config")
        .arg(cfg)
        .args(args)
        .output()
        .expect("run tierflow");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn create_key(cfg: &Path, args: &[&str]) -> String {
    let mut a = vec!["keys", "create"];
    a.extend_from_slice(args);
    let (code, stdout, stderr) = cli(cfg, &a);
    assert_eq!(code, 0, "keys create failed: {stderr}");
    let key = stdout.trim().to_string();
    assert!(key.starts_with("tf-sk-") && key.len() > 20, "{stdout}");
    key
}

fn chat_with(addr: std::net::SocketAddr, body: &serde_json::Value, headers: &str) -> Response {
    send_raw(
        addr,
        &post_json_raw("/v1/chat/completions", &body.to_string(), headers),
    )
    .expect("response")
}

fn bearer(key: &str) -> String {
    format!("Authorization: Bearer {key}\r\n")
}

/// A mock config with a ledger file in `dir`, room for many connections, and `extra` merged in.
fn ledger_config(m: &mock::Mock, dir: &Path, extra: serde_json::Value) -> serde_json::Value {
    let mut cfg = mock_config(m.addr, extra);
    cfg["ledger"] = json!({"path": dir.join("ledger.db"), "flush_interval_ms": 100});
    cfg["limits"]["max_connections_per_worker"] = json!(2000);
    cfg
}

fn open_db(path: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).expect("open ledger");
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c
}

fn metric(stats: &str, line_prefix: &str) -> f64 {
    stats
        .lines()
        .find(|l| l.starts_with(line_prefix) && l[line_prefix.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric `{line_prefix}` in:\n{stats}"))
}

/// Retries `f` until it returns true (after a SIGHUP the reload is asynchronous).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn keys_gate_requests_and_reload_on_sighup() {
    let m = mock::start(None);
    let dir = tempfile::tempdir().unwrap();
    let cfg = ledger_config(&m, dir.path(), json!({}));
    let cfg_path = write_config(dir.path(), &cfg);
    let key = create_key(
        &cfg_path,
        &[
            "--app",
            "billing",
            "--env",
            "test",
            "--models",
            "auto,tier-*",
        ],
    );
    let gw = Gateway::spawn(&cfg);
    let body = json!({"model": "auto", "messages": user("hello")});

    // No key, a wrong key, a key that is not ours: 401 in the OpenAI error schema.
    for headers in [
        String::new(),
        bearer("tf-sk-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        bearer("sk-other"),
    ] {
        let r = chat_with(gw.addr, &body, &headers);
        assert_eq!(r.status, 401, "{}", r.text());
        let v = r.json();
        assert_eq!(v["error"]["type"], "authentication_error");
        assert_eq!(v["error"]["code"], "invalid_api_key");
    }
    // The created key, as a bearer or as x-api-key.
    let r = chat_with(gw.addr, &body, &bearer(&key));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = chat_with(gw.addr, &body, &format!("x-api-key: {key}\r\n"));
    assert_eq!(r.status, 200, "{}", r.text());
    // A model outside the key's globs: 403 naming it.
    let r = chat_with(
        gw.addr,
        &json!({"model": "mock/echo", "messages": user("x")}),
        &bearer(&key),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("mock/echo"));

    // A key created while the gateway runs works after SIGHUP; a revoked one stops working.
    let key2 = create_key(&cfg_path, &["--app", "search", "--env", "dev"]);
    gw.signal(libc::SIGHUP);
    eventually("second key accepted", || {
        chat_with(gw.addr, &body, &bearer(&key2)).status == 200
    });
    let (code, list, _) = cli(&cfg_path, &["keys", "list"]);
    assert_eq!(code, 0);
    assert!(!list.contains(&key[6..]), "listing shows a plaintext key");
    let id = list
        .lines()
        .find(|l| l.contains("billing"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    assert!(id.starts_with("key_"), "{list}");
    let (code, _, err) = cli(&cfg_path, &["keys", "revoke", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(cli(&cfg_path, &["keys", "list"]).1.contains("revoked"));
    assert_eq!(cli(&cfg_path, &["keys", "revoke", "key_nope"]).0, 2);
    gw.signal(libc::SIGHUP);
    eventually("revoked key refused", || {
        chat_with(gw.addr, &body, &bearer(&key)).status == 401
    });
    assert_eq!(chat_with(gw.addr, &body, &bearer(&key2)).status, 200);

    // Requests-per-minute of a key: the 4th request in the minute is refused with Retry-After.
    let key3 = create_key(&cfg_path, &["--app", "rated", "--rpm", "3"]);
    gw.signal(libc::SIGHUP);
    eventually("rpm key accepted", || {
        chat_with(
            gw.addr,
            &json!({"model": "mock/echo", "messages": user("x")}),
            &bearer(&key3),
        )
        .status
            == 200
    });
    let statuses: Vec<Response> = (0..3)
        .map(|_| chat_with(gw.addr, &body, &bearer(&key3)))
        .collect();
    let refused = statuses
        .iter()
        .chain(std::iter::once(&chat_with(gw.addr, &body, &bearer(&key3))))
        .filter(|r| r.status == 429)
        .count();
    assert!(refused >= 1, "no request refused past 3 per minute");
    let r = chat_with(gw.addr, &body, &bearer(&key3));
    assert_eq!(r.status, 429);
    let retry: u64 = r.header("Retry-After").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("key_rpm"));

    // Refusals are ledger rows too, and the admitted requests carry their key.
    eventually("rows committed", || {
        let db = open_db(&dir.path().join("ledger.db"));
        let n401: i64 = db
            .query_row(
                "SELECT count(*) FROM usage WHERE status = 401 AND key_id = ''",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let n403: i64 = db
            .query_row(
                "SELECT count(*) FROM usage WHERE status = 403 AND app = 'billing'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let n200: i64 = db
            .query_row(
                "SELECT count(*) FROM usage WHERE status = 200 AND key_id LIKE 'key_%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let n429: i64 = db
            .query_row(
                "SELECT count(*) FROM usage WHERE status = 429 AND app = 'rated'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        n401 >= 4 && n403 == 1 && n200 >= 6 && n429 >= 2
    });
}

#[test]
fn key_budget_admits_at_most_what_fits_under_concurrency() {
    let m = mock::start(None);
    let dir = tempfile::tempdir().unwrap();
    let cfg = ledger_config(&m, dir.path(), json!({}));
    let cfg_path = write_config(dir.path(), &cfg);
    let gw = Gateway::spawn(&cfg);
    // max_tokens 5 = the mock's completion tokens: the estimate is just above the real cost.
    let body = json!({"model": "auto", "max_tokens": 5, "messages": user("what does this cost?")});
    // No key exists yet: open access. The real cost of one request:
    let probe = chat_with(gw.addr, &body, "");
    assert_eq!(probe.status, 200, "{}", probe.text());
    let real = probe.json()["tierflow"]["estimated_cost_usd"]
        .as_f64()
        .unwrap();
    assert!(real > 0.0);
    let fits = 50.0;
    let budget = real * (fits + 0.5);
    let key = create_key(
        &cfg_path,
        &["--app", "budgeted", "--daily-usd", &format!("{budget:.12}")],
    );
    gw.signal(libc::SIGHUP);
    // Once the reload is done, keys are in force: keyless requests get 401.
    eventually("keys in force after SIGHUP", || {
        chat_with(gw.addr, &body, "").status == 401
    });

    let n = 200;
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (barrier, key, body, addr) = (barrier.clone(), key.clone(), body.clone(), gw.addr);
            std::thread::spawn(move || {
                barrier.wait();
                chat_with(addr, &body, &bearer(&key))
            })
        })
        .collect();
    let responses: Vec<Response> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let admitted = responses.iter().filter(|r| r.status == 200).count();
    let refused: Vec<&Response> = responses.iter().filter(|r| r.status == 429).collect();
    eprintln!(
        "budget for {fits} requests: {admitted} admitted, {} refused of {n}",
        refused.len()
    );
    assert_eq!(
        admitted + refused.len(),
        n,
        "only 200 and 429 expected: {:?}",
        responses.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(
        admitted <= 51,
        "{admitted} admitted for a budget that fits 50"
    );
    assert!(
        admitted >= 40,
        "only {admitted} admitted for a budget that fits 50"
    );
    for r in &refused {
        let retry: u64 = r
            .header("Retry-After")
            .expect("Retry-After")
            .parse()
            .unwrap();
        assert!((1..=86_400).contains(&retry));
        let v = r.json();
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("daily budget of this key"),
            "{v}"
        );
    }
    eventually("all rejections counted", || {
        let stats = get(gw.addr, "/stats", "").text();
        metric(&stats, "tierflow_requests_total{status=\"429\"}") as usize == refused.len()
    });
    let stats = get(gw.addr, "/stats", "").text();
    assert_eq!(
        metric(
            &stats,
            "tierflow_budget_rejections_total{limit=\"key_daily_budget\"}"
        ) as usize,
        refused.len()
    );
    assert_eq!(
        metric(&stats, "tierflow_requests_total{status=\"429\"}") as usize,
        refused.len()
    );
}

#[test]
fn ledger_has_one_row_per_request_and_the_mocks_totals_after_sigterm() {
    let m = mock::start(None);
    let dir = tempfile::tempdir().unwrap();
    let cfg = ledger_config(
        &m,
        dir.path(),
        json!({"apps": {"ledgertest": {"daily_usd": 100}}}),
    );
    let cfg_path = write_config(dir.path(), &cfg);
    let mut gw = Gateway::spawn_with(&cfg, &[], &[("TF_TEST_KEY", "sk-test-123")]);
    let app = "X-TierFlow-App: ledgertest\r\nX-TierFlow-Env: ci\r\n";
    let (mut ok, mut errors) = (0u64, 0u64);
    for i in 0..20 {
        let r = chat_with(
            gw.addr,
            &json!({"model": "auto", "messages": user(&format!("question {i} {}", "x".repeat(i * 7)))}),
            app,
        );
        assert_eq!(r.status, 200);
        ok += 1;
    }
    for i in 0..5 {
        let r = chat_with(
            gw.addr,
            &json!({"model": "tier-1", "stream": true, "messages": user(&"y".repeat(i * 11))}),
            app,
        );
        assert_eq!(r.status, 200);
        ok += 1;
    }
    // Errors the gateway produces are rows too: malformed body, unknown model, all upstreams failing.
    let r = send_raw(
        gw.addr,
        &post_json_raw("/v1/chat/completions", "{\"model\": ", app),
    )
    .unwrap();
    assert_eq!(r.status, 400);
    errors += 1;
    let r = chat_with(
        gw.addr,
        &json!({"model": "flow/all-bad", "messages": user("z")}),
        app,
    );
    assert_eq!(r.status, 502);
    errors += 1;
    let n = ok + errors;

    // A request is counted just after its response is written: wait for the last one.
    eventually("all requests counted", || {
        metric(
            &get(gw.addr, "/stats", "").text(),
            "tierflow_app_requests_total{app=\"ledgertest\"}",
        ) as u64
            == n
    });
    let stats = get(gw.addr, "/stats", "").text();
    assert_eq!(
        metric(&stats, "tierflow_requests_total{status=\"200\"}") as u64,
        ok
    );
    assert_eq!(
        metric(&stats, "tierflow_requests_total{status=\"502\"}") as u64,
        1
    );
    assert_eq!(
        metric(
            &stats,
            "tierflow_tokens_total{model=\"mock/ok\",direction=\"completion\"}"
        ) as u64,
        m.state.completion_tokens_total.load(Ordering::SeqCst)
    );
    assert!(stats.contains("tierflow_upstream_pool_connections{upstream=\"mock\"}"));
    assert!(stats.contains("tierflow_ledger_written_total"));
    assert!(stats.contains("tierflow_upstream_failovers_total{upstream=\"mock\"}"));

    gw.signal(libc::SIGTERM);
    assert_eq!(
        gw.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        gw.log_text()
    );

    let db = open_db(&dir.path().join("ledger.db"));
    let rows: i64 = db
        .query_row("SELECT count(*) FROM usage", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows as u64, n);
    let (pin, pout, cost): (i64, i64, f64) = db
        .query_row(
            "SELECT sum(prompt_tokens), sum(completion_tokens), sum(cost_usd) FROM usage",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        pin as u64,
        m.state.prompt_tokens_total.load(Ordering::SeqCst)
    );
    assert_eq!(
        pout as u64,
        m.state.completion_tokens_total.load(Ordering::SeqCst)
    );
    let expected_cost = (pin as f64 * 0.15 + pout as f64 * 0.6) / 1e6;
    assert!(
        (cost - expected_cost).abs() < 1e-9,
        "{cost} vs {expected_cost}"
    );
    let by_status: Vec<(i64, i64)> = db
        .prepare("SELECT status, count(*) FROM usage GROUP BY status ORDER BY status")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(by_status, vec![(200, ok as i64), (400, 1), (502, 1)]);
    let apps: i64 = db
        .query_row(
            "SELECT count(*) FROM usage WHERE app = 'ledgertest' AND env = 'ci'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(apps as u64, n);
    let streams: i64 = db
        .query_row(
            "SELECT count(*) FROM usage WHERE stream = 1 AND outcome = 'ok'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(streams, 5);
    let errs: i64 = db
        .query_row(
            "SELECT count(*) FROM usage WHERE outcome = 'error'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(errs as u64, errors);

    let (code, report, err) = cli(&cfg_path, &["usage", "--by", "app"]);
    assert_eq!(code, 0, "{err}");
    let line = report
        .lines()
        .find(|l| l.starts_with("ledgertest"))
        .unwrap_or_else(|| panic!("{report}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        cols[1..4],
        [n.to_string(), pin.to_string(), pout.to_string()]
    );
    let (code, by_model, _) = cli(&cfg_path, &["usage", "--by", "model"]);
    assert_eq!(code, 0);
    assert!(by_model.contains("mock/ok"), "{by_model}");
    assert_eq!(cli(&cfg_path, &["usage", "--by", "week"]).0, 2);
}

#[test]
fn kill9_after_a_burst_keeps_the_rows_older_than_the_flush_interval() {
    let m = mock::start(None);
    let dir = tempfile::tempdir().unwrap();
    let cfg = ledger_config(&m, dir.path(), json!({}));
    let mut gw = Gateway::spawn(&cfg);
    let body = json!({"model": "auto", "messages": user("burst")});
    let burst = 40;
    for _ in 0..burst {
        assert_eq!(chat(gw.addr, &body).status, 200);
    }
    // Older than the 100 ms flush interval (plus slack for this shared machine) ...
    std::thread::sleep(Duration::from_millis(1000));
    // ... then a second burst that may or may not be committed when the process dies.
    for _ in 0..10 {
        assert_eq!(chat(gw.addr, &body).status, 200);
    }
    gw.signal(libc::SIGKILL);
    let _ = gw.wait_exit(Duration::from_secs(10));
    let db = open_db(&dir.path().join("ledger.db"));
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let rows: i64 = db
        .query_row("SELECT count(*) FROM usage", [], |r| r.get(0))
        .unwrap();
    eprintln!(
        "kill -9: {rows} of {} rows survived ({burst} were older than the flush interval)",
        burst + 10
    );
    assert!(rows >= burst as i64 && rows <= burst as i64 + 10, "{rows}");
}

/// A throwaway `redis-server` on a free loopback port, killed on drop.
struct TestRedis {
    child: Child,
    port: u16,
}

impl TestRedis {
    fn start() -> TestRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install -y redis-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        TestRedis { child, port }
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn two_instances_share_one_app_budget_through_redis() {
    let redis = TestRedis::start();
    let m = mock::start(None);
    let body = json!({"model": "auto", "max_tokens": 5, "messages": user("shared budget")});
    // The real cost of one request, measured on a throwaway instance without limits.
    let real = {
        let dir = tempfile::tempdir().unwrap();
        let gw = Gateway::spawn(&ledger_config(&m, dir.path(), json!({})));
        let r = chat_with(gw.addr, &body, "");
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["tierflow"]["estimated_cost_usd"].as_f64().unwrap()
    };
    let fits = 20.0;
    let extra = json!({"apps": {"shared": {"daily_usd": real * (fits + 0.5)}},
                       "redis": {"url": format!("redis://127.0.0.1:{}", redis.port),
                                 // generous: this machine's cores are shared with builds
                                 "connect_timeout_ms": 2000, "command_timeout_ms": 2000}});
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let gws = [
        Gateway::spawn(&ledger_config(&m, d1.path(), extra.clone())),
        Gateway::spawn(&ledger_config(&m, d2.path(), extra)),
    ];
    let n = 100;
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (barrier, body, addr) = (barrier.clone(), body.clone(), gws[i % 2].addr);
            std::thread::spawn(move || {
                barrier.wait();
                chat_with(addr, &body, "X-TierFlow-App: shared\r\n").status
            })
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for gw in &gws {
        let stats = get(gw.addr, "/stats", "").text();
        assert_eq!(
            metric(&stats, "tierflow_redis_up"),
            1.0,
            "Redis was not used: {}",
            gw.log_text()
        );
    }
    let admitted = statuses.iter().filter(|&&s| s == 200).count();
    let refused = statuses.iter().filter(|&&s| s == 429).count();
    eprintln!("redis-shared budget for {fits} requests across 2 instances: {admitted} admitted, {refused} refused");
    assert_eq!(admitted + refused, n, "{statuses:?}");
    assert!(
        admitted <= 21,
        "{admitted} admitted across both instances for a shared budget that fits 20"
    );
    assert!(admitted >= 10, "only {admitted} admitted");
    for gw in &gws {
        let stats = get(gw.addr, "/stats", "").text();
        assert_eq!(metric(&stats, "tierflow_redis_up"), 1.0, "{stats}");
    }
    eventually("both instances counted every request", || {
        let counted = |status: &str| -> f64 {
            gws.iter()
                .map(|gw| {
                    metric(
                        &get(gw.addr, "/stats", "").text(),
                        &format!("tierflow_requests_total{{status=\"{status}\"}}"),
                    )
                })
                .sum()
        };
        (counted("200") + counted("429")) as usize == n
    });
    let per_instance: Vec<f64> = gws
        .iter()
        .map(|gw| {
            metric(
                &get(gw.addr, "/stats", "").text(),
                "tierflow_requests_total{status=\"200\"}",
            )
        })
        .collect();
    assert_eq!(per_instance.iter().sum::<f64>() as usize, admitted);
}

#[test]
fn redis_down_falls_back_to_local_limits_and_ledger_can_be_off() {
    let m = mock::start(None);
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    // Redis unreachable: requests are still served and the app limit is enforced by this instance.
    let body = json!({"model": "auto", "max_tokens": 5, "messages": user("redis is down")});
    let cfg = ledger_config(
        &m,
        dir.path(),
        json!({"redis": {"url": format!("redis://127.0.0.1:{dead_port}")}}),
    );
    let gw = Gateway::spawn(&cfg);
    let r = chat_with(gw.addr, &body, "X-TierFlow-App: local\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    let stats = get(gw.addr, "/stats", "").text();
    assert_eq!(metric(&stats, "tierflow_redis_up"), 0.0);
    drop(gw);

    // Default location: ~/.local/state/tierflow/ledger.db (HOME is the gateway's temp dir here).
    let mut gw = Gateway::spawn(&mock_config(m.addr, json!({})));
    assert_eq!(chat(gw.addr, &body).status, 200);
    gw.signal(libc::SIGTERM);
    assert_eq!(gw.wait_exit(Duration::from_secs(15)), Some(0));
    let default_db = gw.dir.path().join(".local/state/tierflow/ledger.db");
    let rows: i64 = open_db(&default_db)
        .query_row("SELECT count(*) FROM usage", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1);
    drop(gw);

    // `"ledger": {"enabled": false}`: no database, no keys, requests still served and counted.
    let mut cfg = mock_config(m.addr, json!({}));
    cfg["ledger"] = json!({"enabled": false});
    let cfg_path = write_config(dir.path(), &cfg);
    let gw = Gateway::spawn(&cfg);
    assert_eq!(chat(gw.addr, &body).status, 200);
    eventually("request counted", || {
        metric(
            &get(gw.addr, "/stats", "").text(),
            "tierflow_requests_total{status=\"200\"}",
        ) == 1.0
    });
    assert!(!get(gw.addr, "/stats", "")
        .text()
        .contains("tierflow_ledger_written_total"));
    assert!(!gw
        .dir
        .path()
        .join(".local/state/tierflow/ledger.db")
        .exists());
    assert_eq!(cli(&cfg_path, &["keys", "list"]).0, 2);
}
