//! Command line: `tierflow [serve]` runs the gateway; `--init` writes a commented config template,
//! `--check` validates a config and prints the routing table; `keys create|list|revoke` manage
//! virtual keys and `usage` prints the spend report, both on the ledger file the config names;
//! `inspect` prints the router's and scanner's view of JSON lines on stdin (`crate::inspect`).
//! Exit codes: 0 ok, 1 runtime failure, 2 bad configuration or arguments.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::config::{Config, Overrides};

#[derive(Debug, Parser)]
#[command(
    name = "tierflow",
    version,
    about = "OpenAI-compatible LLM routing gateway"
)]
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
    /// Manage virtual keys (`tf-sk-…`) in the ledger database. A running gateway picks up
    /// changes on SIGHUP.
    Keys {
        #[command(subcommand)]
        action: KeysCommand,
    },
    /// Print the routing decision for a prompt, for a person (`tierflow route "text"`).
    Route {
        /// The prompt text.
        text: String,
    },
    /// Offline evaluation: JSON lines on stdin (`{"prompt": ...}` or a chat body) → one JSON line
    /// per input with category, tier, security verdict, PII spans and the scrubbed text.
    Inspect,
    /// Requests, tokens and cost from the ledger, grouped.
    Usage {
        /// Group by `key`, `app`, `model` or `day`.
        #[arg(long, default_value = "app")]
        by: String,
        /// Only records of the last N days.
        #[arg(long)]
        days: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; prints its plaintext once (only its SHA-256 is stored).
    Create {
        #[arg(long)]
        app: String,
        #[arg(long, default_value = "prod")]
        env: String,
        /// Comma-separated globs over the requested model, route or `provider/model`; default all.
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        #[arg(long)]
        daily_usd: Option<f64>,
        #[arg(long)]
        monthly_usd: Option<f64>,
        /// Requests per minute.
        #[arg(long)]
        rpm: Option<u32>,
        /// Tokens per minute.
        #[arg(long)]
        tpm: Option<u32>,
    },
    /// List keys (id, prefix, app, env, limits, state); never the keys themselves.
    List,
    /// Revoke a key by id.
    Revoke { id: String },
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
    crate::runtime::disable_transparent_huge_pages();
    crate::runtime::tune_allocator();
    let args = Args::parse();
    crate::log::set_debug(args.debug);
    let overrides = Overrides {
        host: args.host.clone(),
        port: args.port,
        workers: args.workers,
    };
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
        Some(Command::Keys { action }) => keys_command(&config, action),
        Some(Command::Usage { by, days }) => usage_command(&config, &by, days),
        Some(Command::Inspect) => crate::inspect::run(&config),
        Some(Command::Route { text }) => route_command(&config, &text),
    }
}

fn ledger_path(config: &Config) -> Result<&Path, i32> {
    match &config.ledger {
        Some(l) => Ok(&l.path),
        None => {
            eprintln!(
                "tierflow: the ledger is disabled in the configuration (`ledger.enabled: false`)"
            );
            Err(2)
        }
    }
}

fn fmt_usd(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v}"))
}

fn keys_command(config: &Config, action: KeysCommand) -> i32 {
    use crate::ledger::{KeyStore, NewKey};
    let path = match ledger_path(config) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    let store = match KeyStore::open(path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tierflow: {e}");
            return 1;
        }
    };
    match action {
        KeysCommand::Create {
            app,
            env,
            models,
            daily_usd,
            monthly_usd,
            rpm,
            tpm,
        } => {
            let new = NewKey {
                app,
                env,
                allowed_models: models
                    .into_iter()
                    .map(|m| m.trim().to_string())
                    .filter(|m| !m.is_empty())
                    .collect(),
                security_threshold: None,
                daily_budget_usd: daily_usd,
                monthly_budget_usd: monthly_usd,
                rpm,
                tpm,
            };
            match store.create(&new) {
                Ok((plaintext, info)) => {
                    eprintln!(
                        "created key {} for app {} ({}); it is shown once, store it now:",
                        info.id, info.app, info.env
                    );
                    println!("{plaintext}");
                    eprintln!("a running gateway uses it after SIGHUP (systemctl reload tierflow)");
                    0
                }
                Err(e) => {
                    eprintln!("tierflow: {e}");
                    2
                }
            }
        }
        KeysCommand::List => match store.list() {
            Ok(keys) => {
                println!(
                    "{:<18} {:<11} {:<16} {:<8} {:>10} {:>10} {:>6} {:>8}  {:<20} state",
                    "id", "prefix", "app", "env", "daily_usd", "month_usd", "rpm", "tpm", "models"
                );
                for k in keys {
                    println!(
                        "{:<18} {:<11} {:<16} {:<8} {:>10} {:>10} {:>6} {:>8}  {:<20} {}",
                        k.id,
                        k.prefix,
                        k.app,
                        k.env,
                        fmt_usd(k.daily_budget_usd),
                        fmt_usd(k.monthly_budget_usd),
                        k.rpm.map_or_else(|| "-".into(), |v| v.to_string()),
                        k.tpm.map_or_else(|| "-".into(), |v| v.to_string()),
                        if k.allowed_models.is_empty() {
                            "*".to_string()
                        } else {
                            k.allowed_models.join(",")
                        },
                        if k.revoked_ms.is_some() {
                            "revoked"
                        } else {
                            "active"
                        }
                    );
                }
                0
            }
            Err(e) => {
                eprintln!("tierflow: {e}");
                1
            }
        },
        KeysCommand::Revoke { id } => match store.revoke(&id) {
            Ok(()) => {
                println!("revoked {id}");
                0
            }
            Err(e @ crate::ledger::LedgerError::UnknownKey { .. }) => {
                eprintln!("tierflow: {e}");
                2
            }
            Err(e) => {
                eprintln!("tierflow: {e}");
                1
            }
        },
    }
}

fn usage_command(config: &Config, by: &str, days: Option<u64>) -> i32 {
    use crate::ledger::{usage_report, GroupBy};
    let path = match ledger_path(config) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let Some(group) = GroupBy::parse(by) else {
        eprintln!("tierflow: --by must be key, app, model or day");
        return 2;
    };
    let since = days.map(|d| crate::ledger::now_ms().saturating_sub(d.saturating_mul(86_400_000)));
    match usage_report(path, group, since) {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(e) => {
            eprintln!("tierflow: {e}");
            1
        }
    }
}

fn serve(config: Config, config_path: Option<PathBuf>, overrides: Overrides) -> i32 {
    for line in config.routing_table().lines() {
        crate::log::info("route table", &[("entry", line)]);
    }
    let accounting = match crate::pipeline::account::Accounting::open(&config) {
        Ok(a) => Arc::new(a),
        Err(e) => {
            crate::log::error("start failed", &[("error", &format!("{e:#}"))]);
            return 1;
        }
    };
    if let Some(l) = &config.ledger {
        crate::log::info(
            "ledger",
            &[
                ("path", &l.path.display().to_string()),
                ("flush_interval_ms", &l.flush_interval_ms.to_string()),
            ],
        );
    }
    let running = match crate::runtime::start(Arc::new(config), accounting.clone()) {
        Ok(r) => r,
        Err(e) => {
            crate::log::error("start failed", &[("error", &format!("{e:#}"))]);
            return 1;
        }
    };
    let shared = running.shared.clone();
    let reload_shared = running.shared.clone();
    let reload_lock = std::sync::Mutex::new(());
    let do_reload = move || -> Result<String, String> {
        let _serial = reload_lock.lock().unwrap_or_else(|e| e.into_inner());
        crate::runtime::notify::reloading();
        // The pattern databases are rebuilt here too (off the worker cores) when the rules
        // changed; a rule that does not parse or compile refuses the whole reload.
        let loaded = load_config(config_path.as_deref(), &overrides).and_then(|c| {
            let scanner = reload_shared.security.rebuild(&c.security)?;
            Ok((c, scanner))
        });
        let result = match loaded {
            Ok((c, scanner)) => {
                if let Err(e) = reload_shared.accounting.reload(&c) {
                    crate::log::error(
                        "key reload failed; the previous keys stay in force",
                        &[("error", &e)],
                    );
                }
                let mut summary = format!(
                    "{} providers, {} targets, {} routes",
                    c.providers.len(),
                    c.targets.len(),
                    c.routes.len()
                );
                if let Some(s) = scanner {
                    summary.push_str(&format!(", {} security rules rebuilt", s.rule_count()));
                    reload_shared.security.install(s);
                }
                reload_shared.config.store(Arc::new(c));
                crate::log::info("configuration reloaded", &[("summary", &summary)]);
                Ok(summary)
            }
            Err(e) => {
                crate::log::error(
                    "reload refused; the running configuration keeps serving",
                    &[("error", &e)],
                );
                // Keys changed by `tierflow keys` still take effect.
                if let Err(e) = reload_shared
                    .accounting
                    .reload(&reload_shared.config.load())
                {
                    crate::log::error(
                        "key reload failed; the previous keys stay in force",
                        &[("error", &e)],
                    );
                }
                Err(e)
            }
        };
        crate::runtime::return_free_memory();
        crate::runtime::notify::notify("READY=1");
        result
    };
    let reloader: crate::runtime::Reloader = Arc::new(do_reload);
    let _ = running.shared.reloader.set(reloader.clone());
    let reload = move || {
        let _ = reloader();
    };
    if let Err(e) = crate::runtime::spawn_signal_thread(shared, reload) {
        crate::log::error(
            "cannot install signal handlers",
            &[("error", &e.to_string())],
        );
        return 1;
    }
    let watchdog_shared = running.shared.clone();
    crate::runtime::notify::spawn_watchdog(move || !watchdog_shared.is_shutting_down());
    crate::runtime::notify::notify(&format!(
        "READY=1\nMAINPID={}\nSTATUS=serving on {}",
        std::process::id(),
        running.addr
    ));
    running.join();
    // The workers are gone: commit what they recorded.
    let mut code = 0;
    match accounting.shutdown_ledger() {
        Some(Ok(c)) => crate::log::info(
            "ledger flushed",
            &[("written_total", &c.written_total.to_string())],
        ),
        Some(Err(e)) => {
            crate::log::error("ledger flush failed", &[("error", &e.to_string())]);
            code = 1;
        }
        None => {}
    }
    crate::log::info("stopped", &[]);
    code
}

fn route_command(config: &Config, text: &str) -> i32 {
    let started = std::time::Instant::now();
    let mut model = crate::classifier::Model::embedded().ok();
    let loaded = started.elapsed();
    let t = std::time::Instant::now();
    let d = crate::inspect::decide_for_inspect(config, None, text, model.as_mut());
    let took = t.elapsed();
    let cat_tier = config.chain_for_category(&d.category, d.tier);
    let chain = cat_tier
        .map(|c| {
            c.targets
                .iter()
                .map(|&t| config.targets[t].name.as_str())
                .collect::<Vec<_>>()
                .join(" -> ")
        })
        .unwrap_or_else(|| "(no upstream configured)".into());
    println!("category:   {}", d.category);
    println!(
        "tier:       {} ({})",
        d.tier,
        if d.tier >= 3 {
            "strong model"
        } else {
            "fast model"
        }
    );
    println!(
        "decided by: {} (confidence {:.2})",
        d.decided_by, d.confidence
    );
    println!("chain:      {chain}");
    println!(
        "time:       {} µs (model load {} ms)",
        took.as_micros(),
        loaded.as_millis()
    );
    0
}
