//! Command line: `tierflow [serve]` runs the gateway; `--init` writes a commented config template,
//! `--check` validates a config and prints the routing table. Exit codes: 0 ok, 1 runtime failure,
//! 2 bad configuration or arguments.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::config::{Config, Overrides};

#[derive(Debug, Parser)]
#[command(name = "tierflow", version, about = "OpenAI-compatible LLM routing gateway")]
pub struct Args {
    /// Configuration file (JSON with // comments). Default: $TIERFLOW_CONFIG, else
    /// ~/.config/tierflow/config.json if it exists, else the embedded default.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Listen address (overrides the config; default 127.0.0.1).
    #[arg(long)]
    pub host: Option<String>,
    /// Listen port (overrides the config; default 18800).
    #[arg(long)]
    pub port: Option<u16>,
    /// Worker cores (default: available cores).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Debug logging (still never logs prompts, PII or secrets).
    #[arg(long)]
    pub debug: bool,
    /// Write a commented config template to --config (or the default path) and exit.
    #[arg(long)]
    pub init: bool,
    /// Validate the configuration, print the resolved routing table, and exit.
    #[arg(long)]
    pub check: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default).
    Serve,
}

fn default_config_path() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("TIERFLOW_CONFIG") {
        return Some(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME")?;
    Some(Path::new(&home).join(".config/tierflow/config.json"))
}

/// Loads the config the arguments point at. `Ok(None)` never happens: no file means the embedded default.
pub fn load_config(args_config: Option<&Path>, overrides: &Overrides) -> Result<Config, String> {
    match args_config {
        Some(p) => Config::load(p, overrides).map_err(|e| e.to_string()),
        None => match default_config_path() {
            Some(p) if p.exists() => Config::load(&p, overrides).map_err(|e| e.to_string()),
            _ => Config::embedded(overrides).map_err(|e| e.to_string()),
        },
    }
}

pub const TEMPLATE: &str = include_str!("config_template.jsonc");

pub fn main() -> i32 {
    let args = Args::parse();
    crate::log::set_debug(args.debug);
    let overrides = Overrides { host: args.host.clone(), port: args.port, workers: args.workers };
    if args.init {
        let Some(path) = args.config.clone().or_else(default_config_path) else {
            eprintln!("tierflow: no --config path and no HOME to put the template in");
            return 2;
        };
        if path.exists() {
            eprintln!("tierflow: {} exists; not overwriting it", path.display());
            return 2;
        }
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = std::fs::write(&path, TEMPLATE) {
            eprintln!("tierflow: cannot write {}: {e}", path.display());
            return 1;
        }
        println!("wrote {}", path.display());
        return 0;
    }
    let config = match load_config(args.config.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tierflow: configuration error: {e}");
            return 2;
        }
    };
    if args.check {
        print!("{}", config.routing_table());
        println!("configuration OK");
        return 0;
    }
    match args.command {
        None | Some(Command::Serve) => serve(config, args.config.clone(), overrides),
    }
}

fn serve(config: Config, config_path: Option<PathBuf>, overrides: Overrides) -> i32 {
    for line in config.routing_table().lines() {
        crate::log::info("route table", &[("entry", line)]);
    }
    let running = match crate::runtime::start(Arc::new(config)) {
        Ok(r) => r,
        Err(e) => {
            crate::log::error("start failed", &[("error", &format!("{e:#}"))]);
            return 1;
        }
    };
    let shared = running.shared.clone();
    let reload_shared = running.shared.clone();
    let reload = move || {
        crate::runtime::notify::reloading();
        match load_config(config_path.as_deref(), &overrides) {
            Ok(c) => {
                reload_shared.config.store(Arc::new(c));
                crate::log::info("configuration reloaded", &[]);
            }
            Err(e) => crate::log::error("reload refused; the running configuration keeps serving", &[("error", &e)]),
        }
        crate::runtime::notify::notify("READY=1");
    };
    if let Err(e) = crate::runtime::spawn_signal_thread(shared, reload) {
        crate::log::error("cannot install signal handlers", &[("error", &e.to_string())]);
        return 1;
    }
    let watchdog_shared = running.shared.clone();
    crate::runtime::notify::spawn_watchdog(move || !watchdog_shared.is_shutting_down());
    crate::runtime::notify::notify(&format!("READY=1\nMAINPID={}\nSTATUS=serving on {}", std::process::id(), running.addr));
    running.join();
    crate::log::info("stopped", &[]);
    0
}
