//! Pattern databases follow reloads: with `security.patterns_dir` pointing at a tiny rule set,
//! `POST /reload-config` and SIGHUP rebuild the Hyperscan databases when a rule file changed
//! (a new rule flags at once), and a rule that does not compile refuses the reload with its
//! reason while the old rules keep serving.

use std::time::{Duration, Instant};

use serde_json::json;

use super::support::mock;
use super::support::*;

const ALPHA: &str =
    "t.alpha | prompt_injection | critical | * | i | test rule alpha | \\bzebra-alpha-trigger\\b\n";
const BETA: &str =
    "t.beta | prompt_injection | critical | * | i | test rule beta | \\bzebra-beta-trigger\\b\n";
const GAMMA: &str =
    "t.gamma | prompt_injection | critical | * | i | test rule gamma | \\bzebra-gamma-trigger\\b\n";

fn status_for(addr: std::net::SocketAddr, prompt: &str) -> u16 {
    chat(
        addr,
        &json!({"model": "tier-1", "messages": [{"role": "user", "content": prompt}]}),
    )
    .status
}

#[test]
fn reload_rebuilds_pattern_databases_and_refuses_bad_rules_issue_6() {
    let m = mock::start(None);
    let patterns = tempfile::tempdir().unwrap();
    std::fs::write(patterns.path().join("alpha.txt"), ALPHA).unwrap();
    let cfg = mock_config(
        m.addr,
        json!({"security": {"patterns_dir": patterns.path(), "startup_wait_ms": 5000}}),
    );
    let gw = Gateway::spawn_with(&cfg, &[], &[("TF_TEST_KEY", "sk-test-123")]);
    let reload = || send_raw(gw.addr, &post_json_raw("/reload-config", "", "")).expect("response");

    assert_eq!(status_for(gw.addr, "please zebra-alpha-trigger now"), 403);
    assert_eq!(status_for(gw.addr, "please zebra-beta-trigger now"), 200);

    // A new rule file: the reload rebuilds the databases and the new rule flags.
    std::fs::write(patterns.path().join("beta.txt"), BETA).unwrap();
    let r = reload();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text().contains("2 security rules rebuilt"),
        "{}",
        r.text()
    );
    assert_eq!(status_for(gw.addr, "please zebra-beta-trigger now"), 403);
    // Nothing changed: nothing is rebuilt.
    let r = reload();
    assert_eq!(r.status, 200);
    assert!(!r.text().contains("rebuilt"), "{}", r.text());

    // A regex Hyperscan refuses: the reload is refused naming the rule, the old rules serve on.
    let broken =
        "t.broken | prompt_injection | critical | * | - | unbalanced | (zebra-gamma-trigger\n";
    std::fs::write(patterns.path().join("broken.txt"), broken).unwrap();
    let r = reload();
    assert_eq!(r.status, 400, "{}", r.text());
    let msg = r.json()["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        msg.contains("t.broken") && msg.contains("keeps serving"),
        "{msg}"
    );
    assert_eq!(status_for(gw.addr, "please zebra-alpha-trigger now"), 403);
    assert_eq!(status_for(gw.addr, "please zebra-beta-trigger now"), 403);
    // A malformed line is refused too, with its file and line.
    std::fs::write(
        patterns.path().join("broken.txt"),
        "t.x | only three | fields\n",
    )
    .unwrap();
    let r = reload();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("broken.txt:1"), "{}", r.text());

    // SIGHUP does the same: the broken file fixed into a third rule.
    std::fs::write(patterns.path().join("broken.txt"), GAMMA).unwrap();
    gw.signal(libc::SIGHUP);
    let t = Instant::now();
    while status_for(gw.addr, "please zebra-gamma-trigger now") != 403 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "SIGHUP did not rebuild"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(status_for(gw.addr, "please zebra-alpha-trigger now"), 403);
    assert_eq!(status_for(gw.addr, "a harmless question"), 200);
}
