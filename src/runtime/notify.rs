//! systemd service notification (sd_notify protocol, spoken directly): `READY=1` once every core
//! listens, `RELOADING=1` … `READY=1` around a reload, `STOPPING=1` on shutdown, and `WATCHDOG=1`
//! pings at half of `WATCHDOG_USEC` when the unit sets `WatchdogSec`. Without `NOTIFY_SOCKET` every
//! call is a no-op.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends one notification datagram. Errors are ignored: notification is advisory.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        // Abstract socket namespace: a leading NUL instead of '@'.
        use std::os::linux::net::SocketAddrExt;
        if let Ok(addr) = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name) {
            let _ = sock.send_to_addr(state.as_bytes(), &addr);
        }
    } else {
        let _ = sock.send_to(state.as_bytes(), std::path::Path::new(&path));
    }
}

/// `RELOADING=1` needs a MONOTONIC_USEC timestamp (systemd ≥ 253, Type=notify-reload).
pub fn reloading() {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the valid timespec we pass.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    let usec = ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000;
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
}

/// Starts the watchdog pinger if the service manager asked for one (`WATCHDOG_USEC`, and
/// `WATCHDOG_PID` unset or ours). `alive` is checked before each ping so a wedged process stops
/// pinging and gets restarted.
pub fn spawn_watchdog(alive: impl Fn() -> bool + Send + 'static) {
    let Some(usec) = std::env::var("WATCHDOG_USEC")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return;
    };
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok() != Some(std::process::id()) {
            return;
        }
    }
    let period = Duration::from_micros(usec / 2).max(Duration::from_millis(100));
    let _ = std::thread::Builder::new()
        .name("tierflow-watchdog".into())
        .spawn(move || loop {
            if alive() {
                notify("WATCHDOG=1");
            }
            std::thread::sleep(period);
        });
}
