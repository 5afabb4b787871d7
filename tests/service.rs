//! Service integration: the sd_notify protocol against a fake `NOTIFY_SOCKET`, and the unit file
//! checked by `systemd-analyze verify` and scored by `systemd-analyze security`.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use serde_json::json;

use crate::support::{mock, mock_config, Gateway};

fn recv_all(sock: &UnixDatagram, want: &str, timeout: Duration) -> Vec<String> {
    let start = std::time::Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < timeout {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            if got.iter().any(|m| m.contains(want)) {
                break;
            }
        }
    }
    got
}

#[test]
fn sd_notify_ready_reloading_stopping() {
    let m = mock::start(None);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut gw = Gateway::spawn_with(
        &mock_config(m.addr, json!({})),
        &[],
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let msgs = recv_all(&sock, "READY=1", Duration::from_secs(5));
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("READY=1") && m.contains(&format!("MAINPID={}", gw.child.id()))),
        "{msgs:?}"
    );
    let msgs = recv_all(&sock, "WATCHDOG=1", Duration::from_secs(3));
    assert!(msgs.iter().any(|m| m == "WATCHDOG=1"), "{msgs:?}");
    gw.signal(libc::SIGHUP);
    let msgs = recv_all(&sock, "READY=1", Duration::from_secs(5));
    let reloading = msgs
        .iter()
        .position(|m| m.starts_with("RELOADING=1") && m.contains("MONOTONIC_USEC="));
    let ready = msgs.iter().rposition(|m| m == "READY=1");
    assert!(
        reloading.is_some() && ready.is_some() && reloading < ready,
        "{msgs:?}"
    );
    gw.signal(libc::SIGTERM);
    let msgs = recv_all(&sock, "STOPPING=1", Duration::from_secs(5));
    assert!(msgs.iter().any(|m| m == "STOPPING=1"), "{msgs:?}");
    assert_eq!(gw.wait_exit(Duration::from_secs(5)), Some(0));
}

#[test]
fn unit_file_verifies_and_scores_ok() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/tierflow.service"
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // verify needs the ExecStart binary to exist: point it at the one cargo built.
    let unit = unit.replace("/usr/local/bin/tierflow", env!("CARGO_BIN_EXE_tierflow"));
    let path = dir.path().join("tierflow.service");
    std::fs::write(&path, unit).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (apt-get install systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("tierflow.service"))
        .collect();
    assert!(
        out.status.success() && complaints.is_empty(),
        "verify: {stderr}"
    );
    let out = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("{stdout}"));
    let score: f64 = line
        .split(':')
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(score <= 3.0, "exposure {score}: {line}");
}
