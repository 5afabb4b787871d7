//! Logging: one line per event on stderr in logfmt (`ts=… level=… msg=… key=value`), which
//! journald stores as is. Callers pass only values that are safe to log: never prompt text,
//! PII or secrets.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static DEBUG: AtomicBool = AtomicBool::new(false);

pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

fn quote_if_needed(v: &str, out: &mut String) {
    if !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'=')
    {
        out.push_str(v);
    } else {
        out.push('"');
        for c in v.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                c if c.is_control() => {}
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

fn emit(level: &str, msg: &str, fields: &[(&str, &str)]) {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let mut line = format!("ts={ts:.3} level={level} msg=");
    quote_if_needed(msg, &mut line);
    for (k, v) in fields {
        line.push(' ');
        line.push_str(k);
        line.push('=');
        quote_if_needed(v, &mut line);
    }
    line.push('\n');
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

pub fn info(msg: &str, fields: &[(&str, &str)]) {
    emit("info", msg, fields);
}

pub fn warn(msg: &str, fields: &[(&str, &str)]) {
    emit("warn", msg, fields);
}

pub fn error(msg: &str, fields: &[(&str, &str)]) {
    emit("error", msg, fields);
}

pub fn debug(msg: &str, fields: &[(&str, &str)]) {
    if debug_enabled() {
        emit("debug", msg, fields);
    }
}
