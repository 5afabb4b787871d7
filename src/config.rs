//! Configuration: `RawConfig` is what the user wrote (serde, unknown keys rejected with their dotted
//! path); `Config` is the validated, resolved form every core reads through an `Arc` snapshot.
//! Loading, validation, the embedded default and the redacted view for `GET /config` live here;
//! when a snapshot is swapped is the runtime's business.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Categories a request can be classified into, in the order DESIGN.md lists them.
pub const CATEGORIES: [&str; 8] = [
    "simple_chat",
    "general",
    "coding",
    "reasoning",
    "creative",
    "data",
    "agentic",
    "transcription",
];

/// Default tier (1 = speed … 4 = reasoning) of each category when its table names no chain.
pub fn default_tier(category: &str) -> u8 {
    match category {
        "simple_chat" | "transcription" => 1,
        "general" | "creative" | "data" => 2,
        "coding" | "agentic" => 3,
        "reasoning" => 4,
        _ => 2,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: at `{key}`: {message}")]
    Parse {
        path: String,
        key: String,
        message: String,
    },
    #[error("at `{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Raw form
// ---------------------------------------------------------------------------------------------

/// The JSON file as written. A superset of the TierFlow (Node) schema.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Listen address; default 127.0.0.1 (never exposed unless asked for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Listen port; default 18800.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Worker cores; default: available cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    /// Bearer token for admin endpoints. Without one they answer on loopback only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_key: Option<RawAuth>,
    #[serde(default)]
    pub providers: BTreeMap<String, RawProvider>,
    /// Category name -> chain (primary + fallbacks).
    #[serde(default)]
    pub categories: BTreeMap<String, RawChain>,
    /// "1".."4" -> chain.
    #[serde(default)]
    pub tiers: BTreeMap<String, RawChain>,
    /// Named routes such as `flow/fast-eval`.
    #[serde(default)]
    pub routes: BTreeMap<String, RawChain>,
    /// Bare model names as unmodified clients send them -> `provider/model`.
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    /// Category used for `auto` when no classifier decides (default `general`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_category: Option<String>,
    /// The model `saved_vs_flagship` is measured against (`provider/model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flagship: Option<String>,
    /// `provider/model` (or bare model name) -> $ per million tokens.
    #[serde(default)]
    pub prices: BTreeMap<String, RawPrice>,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub routing: RawRouting,
    /// The learned classifier on its own core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier: Option<RawClassifier>,
    /// Exact-match response cache (per core shard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<RawCache>,
    /// Usage ledger (SQLite, one row per chat request). Default: on, at
    /// `$STATE_DIRECTORY/ledger.db` under systemd, else `~/.local/state/tierflow/ledger.db`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger: Option<RawLedger>,
    /// Virtual-key policy. Default: keys are required as soon as one exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<RawKeys>,
    /// App name (`X-TierFlow-App` or a key's app) -> spend limits. Default: none.
    #[serde(default)]
    pub apps: BTreeMap<String, RawAppLimits>,
    /// Share budgets and rate limits across gateway instances through Redis. Default: local only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RawRedis>,
    /// The security scanner (prompt-injection verdicts, PII scrubbing). Default: on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<RawSecurity>,
    /// CtxPack context compression of message text (`crate::compress::settings`). Default: on,
    /// passes `ansi`, `whitespace`, `json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<crate::compress::settings::RawCompression>,
    /// Circuit-breaker tunables and the background probe of idle upstreams (`crate::health`).
    /// Default: breaker defaults, no probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::health::RawHealth>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecurity {
    /// Default true. `false`: no scanning, no scrubbing (`X-TierFlow-Security: CLEAN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// `critical` (default) or `warning`: the lowest threat severity answered with 403.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_on: Option<String>,
    /// Also scan system/developer messages (default false: they are the operator's text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_system: Option<bool>,
    /// Where compiled Hyperscan databases are cached; default `$CACHE_DIRECTORY`, else
    /// `$XDG_CACHE_HOME/tierflow`, else `~/.cache/tierflow`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<PathBuf>,
    /// While the scanner is still loading at start, wait this long per request before serving
    /// it unscanned (`X-TierFlow-Security: UNSCANNED`); default 2000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_wait_ms: Option<u64>,
    /// A directory whose `*.txt` rule files replace the embedded `patterns/` set (default: the
    /// embedded set). Reloads rebuild the databases when its files change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patterns_dir: Option<PathBuf>,
}

/// The `security` section, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct SecuritySettings {
    pub enabled: bool,
    /// Block on warnings too (`block_on: "warning"`).
    pub block_on_warning: bool,
    pub scan_system: bool,
    pub cache_dir: Option<PathBuf>,
    pub startup_wait_ms: u64,
    /// Rule files replacing the embedded set (`None`: embedded).
    pub patterns_dir: Option<PathBuf>,
}

impl Default for SecuritySettings {
    fn default() -> Self {
        SecuritySettings {
            enabled: true,
            block_on_warning: false,
            scan_system: false,
            cache_dir: None,
            startup_wait_ms: 2000,
            patterns_dir: None,
        }
    }
}

fn security_settings(raw: Option<&RawSecurity>) -> Result<SecuritySettings, ConfigError> {
    let mut s = SecuritySettings::default();
    let Some(r) = raw else { return Ok(s) };
    s.enabled = r.enabled.unwrap_or(true);
    s.block_on_warning = match r.block_on.as_deref() {
        None | Some("critical") => false,
        Some("warning") => true,
        Some(_) => {
            return Err(invalid(
                "security.block_on",
                "must be \"critical\" or \"warning\"",
            ))
        }
    };
    s.scan_system = r.scan_system.unwrap_or(false);
    s.cache_dir = r.cache_dir.clone();
    s.startup_wait_ms = r.startup_wait_ms.unwrap_or(2000);
    s.patterns_dir = r.patterns_dir.clone();
    if s.patterns_dir
        .as_ref()
        .is_some_and(|d| d.as_os_str().is_empty())
    {
        return Err(invalid("security.patterns_dir", "must not be empty"));
    }
    Ok(s)
}

/// The default scanner cache directory: `$CACHE_DIRECTORY` (systemd `CacheDirectory=`; the first
/// of a `:`-separated list), else `$XDG_CACHE_HOME/tierflow`, else `~/.cache/tierflow`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CACHE_DIRECTORY").filter(|d| !d.is_empty()) {
        let first = dir
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_string();
        if !first.is_empty() {
            return Some(PathBuf::from(first));
        }
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(x).join("tierflow"));
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|h| PathBuf::from(h).join(".cache").join("tierflow"))
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLedger {
    /// Default true. `false`: no usage rows and no virtual keys (they live in the ledger file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// SQLite file; default `$STATE_DIRECTORY/ledger.db`, else `~/.local/state/tierflow/ledger.db`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// At most this long between a request and its row being committed; default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flush_interval_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeys {
    /// Refuse requests without a valid `tf-sk-` key even while no key exists; default false
    /// (then keys are required as soon as one exists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_key: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAppLimits {
    /// USD per UTC day for the whole app; default no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_usd: Option<f64>,
    /// USD per UTC calendar month for the whole app; default no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_usd: Option<f64>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    /// `redis://[:password@]host:port[/db]`. Redis down: each instance enforces limits locally.
    pub url: String,
    /// Connect timeout; default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u64>,
    /// Per-command timeout, after which the admission is decided locally; default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    #[serde(rename = "baseUrl")]
    pub base_url: String,
    /// `openai` (default) or `anthropic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<RawAuth>,
    /// Scrub PII before sending to this provider (default true; local providers may say false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pii: Option<bool>,
    /// Models this provider serves, for bare-name resolution and `/v1/models`.
    #[serde(default)]
    pub models: Vec<String>,
    /// Extra PEM CA bundle trusted for this provider, besides the webpki roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_byte_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_max_idle: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_idle_ms: Option<u64>,
    /// Extra request headers sent upstream (no secrets here: use `auth`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// `{"type": "env", "key": "OPENAI_API_KEY"}` or `{"type": "none"}`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawChain {
    pub primary: String,
    #[serde(default)]
    pub fallback: Vec<String>,
    /// Overrides the providers' first-byte timeout for this chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    /// $ per million input tokens.
    pub input: f64,
    /// $ per million output tokens.
    pub output: f64,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Request head (request line + headers) bytes; default 16384. Over it: 431.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_header_bytes: Option<usize>,
    /// Header count; default 64. Over it: 431.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_headers: Option<usize>,
    /// Request body bytes; default 16 MiB. Over it: 413.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// Time a client has to send a whole request head (and body); default 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_timeout_ms: Option<u64>,
    /// Idle keep-alive time between requests; default 60000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
    /// Open downstream connections per worker core; default 10000. Over it: 503 and close.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_per_worker: Option<usize>,
    /// Time in-flight requests get to finish on SIGTERM/SIGINT; default 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_ms: Option<u64>,
}

/// `"classifier": {...}` — the learned router on a dedicated core. Defaults: enabled, a 2 ms
/// deadline per request (late answers fall back to the rule scorer), batches of up to 32 rows
/// gathered for at most 100 µs.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawClassifier {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wait_us: Option<u64>,
}

/// `"cache": {...}` — exact-match response cache. Defaults: enabled, 64 MiB per core, 5 min TTL,
/// 1 MiB per entry, only requests with `temperature <= 0`, shared across keys.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_entry_bytes: Option<usize>,
    /// Also cache sampled requests (temperature > 0 or absent); default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_nonzero_temperature: Option<bool>,
    /// Make the API key part of the cache key, so keys never share answers; default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_key: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouting {
    /// Fallbacks tried after the primary before giving up; default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fallbacks: Option<usize>,
    /// Model names that are routed like `auto` (classified, then sent to the tier's chain): for
    /// clients whose model name is fixed in code. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_models: Option<Vec<String>>,
}

// ---------------------------------------------------------------------------------------------
// Resolved form
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Anthropic,
}

impl Dialect {
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::OpenAi => "openai",
            Dialect::Anthropic => "anthropic",
        }
    }
}

/// One upstream provider, resolved.
#[derive(Debug)]
pub struct Provider {
    pub name: String,
    pub dialect: Dialect,
    pub tls: bool,
    /// Host name for SNI and the Host header.
    pub host: String,
    pub port: u16,
    /// Path prefix, no trailing slash (e.g. `/v1`).
    pub base_path: String,
    /// Resolved API key (from the environment); never printed.
    pub api_key: Option<String>,
    /// Name of the environment variable the key came from, for display.
    pub api_key_env: Option<String>,
    pub pii: bool,
    pub models: Vec<String>,
    pub ca_file: Option<PathBuf>,
    pub connect_timeout_ms: u64,
    pub first_byte_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub pool_max_idle: usize,
    pub pool_idle_ms: u64,
    pub headers: Vec<(String, String)>,
    /// rustls client configuration (webpki roots + the optional CA file), for https providers.
    pub tls_config: Option<Arc<rustls::ClientConfig>>,
    /// Pool key: scheme, host and port.
    pub pool_key: Arc<str>,
    /// Addresses resolved when the config was loaded (empty if DNS failed then; retried on connect).
    pub addrs: Vec<SocketAddr>,
}

/// A concrete upstream model: index into `Config::targets`.
pub type TargetId = usize;

#[derive(Debug, Clone)]
pub struct Target {
    pub provider: usize,
    pub model: String,
    /// `provider/model`.
    pub name: String,
    pub price: Option<RawPrice>,
}

#[derive(Debug, Clone)]
pub struct Chain {
    pub targets: Vec<TargetId>,
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_body_bytes: u64,
    pub header_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub max_connections_per_worker: usize,
    pub drain_ms: u64,
}

/// The validated configuration. Immutable; a reload builds a new one.
#[derive(Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub workers: usize,
    pub admin_key: Option<String>,
    pub providers: Vec<Provider>,
    pub targets: Vec<Target>,
    pub target_index: HashMap<String, TargetId>,
    pub categories: HashMap<String, Chain>,
    pub tiers: [Option<Chain>; 4],
    pub routes: BTreeMap<String, Chain>,
    pub aliases: HashMap<String, TargetId>,
    pub default_category: String,
    pub flagship: Option<TargetId>,
    pub limits: Limits,
    pub max_fallbacks: usize,
    /// `routing.auto_models`: names routed like `auto`.
    pub auto_models: std::collections::HashSet<String>,
    /// Response cache settings; `None` when disabled.
    pub cache: Option<crate::cache::CacheConfig>,
    /// Whether the API key is part of the cache key.
    pub cache_per_key: bool,
    /// Classifier settings (`enabled`, deadline, batching).
    pub classifier: RawClassifier,
    /// The usage ledger, `None` when disabled.
    pub ledger: Option<LedgerSettings>,
    /// Keys required even while none exists.
    pub require_key: bool,
    /// App spend limits (USD): (daily, monthly).
    pub apps: BTreeMap<String, (Option<f64>, Option<f64>)>,
    pub redis_url: Option<String>,
    /// Redis (connect, command) timeouts, ms, when set in the file.
    pub redis_timeouts_ms: (Option<u64>, Option<u64>),
    pub security: SecuritySettings,
    /// Which compression passes run for which category.
    pub compression: crate::compress::settings::CompressionSettings,
    /// Breaker tunables and the background probe.
    pub health: crate::health::HealthSettings,
    /// Where it came from (`embedded default` or a path), for logs.
    pub source: String,
    /// The raw form, kept for `GET /config` (secrets redacted there).
    pub raw: RawConfig,
}

/// Where and how the usage ledger writes.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerSettings {
    pub path: PathBuf,
    pub flush_interval_ms: u64,
}

/// The default ledger file: `$STATE_DIRECTORY/ledger.db` (systemd `StateDirectory=`; the first
/// of a `:`-separated list), else `~/.local/state/tierflow/ledger.db`; `None` without either.
pub fn default_ledger_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
        let first = dir
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_string();
        if !first.is_empty() {
            return Some(Path::new(&first).join("ledger.db"));
        }
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(Path::new(&home).join(".local/state/tierflow/ledger.db"))
}

/// Overrides from the command line, applied on top of the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub workers: Option<usize>,
}

impl Config {
    /// Whether a request's `model` is routed like `auto` (`auto` itself or a `routing.auto_models` name).
    pub fn is_auto_model(&self, model: &str) -> bool {
        model == "auto" || (!self.auto_models.is_empty() && self.auto_models.contains(model))
    }

    pub fn classifier_enabled(&self) -> bool {
        self.classifier.enabled.unwrap_or(true)
    }

    /// Time a request waits for the classifier before the rule scorer decides.
    pub fn classifier_deadline(&self) -> std::time::Duration {
        std::time::Duration::from_micros(
            self.classifier
                .deadline_ms
                .map_or(2_000, |ms| ms.saturating_mul(1000)),
        )
    }

    /// Reads and resolves a config file. `Err` names the dotted key that is wrong.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let raw = parse_raw(&text, &path.display().to_string())?;
        Config::resolve(raw, overrides, path.display().to_string())
    }

    /// The default configuration used when no file exists: providers whose API-key variables are set,
    /// plus a local Ollama.
    pub fn embedded(overrides: &Overrides) -> Result<Config, ConfigError> {
        Config::resolve(embedded_raw(), overrides, "embedded default".to_string())
    }

    pub fn resolve(
        raw: RawConfig,
        overrides: &Overrides,
        source: String,
    ) -> Result<Config, ConfigError> {
        let host = overrides
            .host
            .clone()
            .or_else(|| raw.host.clone())
            .unwrap_or_else(|| "127.0.0.1".into());
        let port = overrides.port.or(raw.port).unwrap_or(18800);
        let ip: IpAddr = host
            .parse()
            .map_err(|_| invalid("host", format!("`{host}` is not an IP address")))?;
        let listen = SocketAddr::new(ip, port);
        let workers = overrides
            .workers
            .or(raw.workers)
            .filter(|&w| w > 0)
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            });

        let admin_key = match &raw.admin_key {
            Some(a) => resolve_auth(a, "admin_key")?.0,
            None => None,
        };

        let mut providers = Vec::new();
        let mut provider_index = HashMap::new();
        for (name, p) in &raw.providers {
            let key = format!("providers.{name}");
            if name.is_empty() || name.contains('/') {
                return Err(invalid(
                    key,
                    "provider names must be non-empty and contain no `/`",
                ));
            }
            let provider = resolve_provider(name, p, &key)?;
            provider_index.insert(name.clone(), providers.len());
            providers.push(provider);
        }

        let mut cfg = Config {
            listen,
            workers,
            admin_key,
            providers,
            targets: Vec::new(),
            target_index: HashMap::new(),
            categories: HashMap::new(),
            tiers: [None, None, None, None],
            routes: BTreeMap::new(),
            aliases: HashMap::new(),
            default_category: raw
                .default_category
                .clone()
                .unwrap_or_else(|| "general".into()),
            flagship: None,
            limits: Limits {
                max_header_bytes: raw.limits.max_header_bytes.unwrap_or(16 * 1024),
                max_headers: raw.limits.max_headers.unwrap_or(64),
                max_body_bytes: raw.limits.max_body_bytes.unwrap_or(16 * 1024 * 1024),
                header_timeout_ms: raw.limits.header_timeout_ms.unwrap_or(10_000),
                idle_timeout_ms: raw.limits.idle_timeout_ms.unwrap_or(60_000),
                max_connections_per_worker: raw.limits.max_connections_per_worker.unwrap_or(10_000),
                drain_ms: raw.limits.drain_ms.unwrap_or(10_000),
            },
            max_fallbacks: raw.routing.max_fallbacks.unwrap_or(3),
            auto_models: raw
                .routing
                .auto_models
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            cache: {
                let c = raw.cache.clone().unwrap_or_default();
                c.enabled.unwrap_or(true).then(|| {
                    let d = crate::cache::CacheConfig::default();
                    crate::cache::CacheConfig {
                        max_bytes: c.max_bytes.unwrap_or(d.max_bytes),
                        ttl_ms: c.ttl_ms.unwrap_or(d.ttl_ms),
                        max_entry_bytes: c.max_entry_bytes.unwrap_or(d.max_entry_bytes),
                        allow_nonzero_temperature: c.allow_nonzero_temperature.unwrap_or(false),
                    }
                })
            },
            cache_per_key: raw.cache.as_ref().and_then(|c| c.per_key).unwrap_or(false),
            classifier: raw.classifier.clone().unwrap_or_default(),
            ledger: None,
            require_key: raw
                .keys
                .as_ref()
                .and_then(|k| k.require_key)
                .unwrap_or(false),
            apps: BTreeMap::new(),
            redis_url: None,
            redis_timeouts_ms: (None, None),
            security: security_settings(raw.security.as_ref())?,
            compression: crate::compress::settings::CompressionSettings::resolve(
                raw.compression.as_ref(),
                &CATEGORIES,
            )
            .map_err(|e| invalid(e.key, e.message))?,
            health: crate::health::HealthSettings::resolve(raw.health.as_ref())
                .map_err(|(k, m)| invalid(k, m))?,
            source,
            raw: RawConfig::default(),
        };
        if cfg.limits.max_headers == 0 || cfg.limits.max_headers > 1024 {
            return Err(invalid("limits.max_headers", "must be between 1 and 1024"));
        }
        if cfg.limits.max_header_bytes < 256 {
            return Err(invalid("limits.max_header_bytes", "must be at least 256"));
        }
        if !CATEGORIES.contains(&cfg.default_category.as_str()) {
            return Err(invalid(
                "default_category",
                format!("unknown category `{}`", cfg.default_category),
            ));
        }

        let ledger_raw = raw.ledger.clone().unwrap_or_default();
        if ledger_raw.enabled.unwrap_or(true) {
            let path = match ledger_raw.path.clone().or_else(default_ledger_path) {
                Some(p) => p,
                None => {
                    return Err(invalid(
                        "ledger.path",
                        "no default location (neither STATE_DIRECTORY nor HOME is set); set a path or `\"enabled\": false`",
                    ))
                }
            };
            if path.as_os_str().is_empty() {
                return Err(invalid("ledger.path", "must not be empty"));
            }
            let flush_interval_ms = ledger_raw.flush_interval_ms.unwrap_or(100);
            if flush_interval_ms == 0 || flush_interval_ms > 60_000 {
                return Err(invalid(
                    "ledger.flush_interval_ms",
                    "must be between 1 and 60000",
                ));
            }
            cfg.ledger = Some(LedgerSettings {
                path,
                flush_interval_ms,
            });
        } else if cfg.require_key {
            return Err(invalid(
                "keys.require_key",
                "needs the ledger: virtual keys live in its database",
            ));
        }
        for (app, l) in &raw.apps {
            for (v, field) in [(l.daily_usd, "daily_usd"), (l.monthly_usd, "monthly_usd")] {
                if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
                    return Err(invalid(
                        format!("apps.{app}.{field}"),
                        "must be a number >= 0",
                    ));
                }
            }
            cfg.apps.insert(app.clone(), (l.daily_usd, l.monthly_usd));
        }
        if let Some(r) = &raw.redis {
            if !r.url.starts_with("redis://") {
                return Err(invalid("redis.url", "must start with redis://"));
            }
            cfg.redis_url = Some(r.url.clone());
            cfg.redis_timeouts_ms = (r.connect_timeout_ms, r.command_timeout_ms);
        }

        // Every model any provider lists is a target, so `/v1/models` and bare names see it.
        for (pi, p) in raw.providers.iter().enumerate() {
            for m in &p.1.models {
                cfg.intern_target(pi, m, &raw.prices);
            }
        }
        for (name, chain) in &raw.categories {
            if !CATEGORIES.contains(&name.as_str()) {
                return Err(invalid(
                    format!("categories.{name}"),
                    format!(
                        "unknown category; expected one of {}",
                        CATEGORIES.join(", ")
                    ),
                ));
            }
            let c = cfg.resolve_chain(
                chain,
                &format!("categories.{name}"),
                &provider_index,
                &raw.prices,
            )?;
            cfg.categories.insert(name.clone(), c);
        }
        for (name, chain) in &raw.tiers {
            let tier: usize = match name.parse() {
                Ok(t @ 1..=4) => t,
                _ => {
                    return Err(invalid(
                        format!("tiers.{name}"),
                        "tiers are named \"1\" to \"4\"",
                    ))
                }
            };
            let c = cfg.resolve_chain(
                chain,
                &format!("tiers.{name}"),
                &provider_index,
                &raw.prices,
            )?;
            cfg.tiers[tier - 1] = Some(c);
        }
        for (name, chain) in &raw.routes {
            if name == "auto" || name.starts_with("tier-") {
                return Err(invalid(
                    format!("routes.{name}"),
                    "route name clashes with a built-in model name",
                ));
            }
            let c = cfg.resolve_chain(
                chain,
                &format!("routes.{name}"),
                &provider_index,
                &raw.prices,
            )?;
            cfg.routes.insert(name.clone(), c);
        }
        for (alias, target) in &raw.aliases {
            let t = cfg.resolve_target(
                target,
                &format!("aliases.{alias}"),
                &provider_index,
                &raw.prices,
            )?;
            cfg.aliases.insert(alias.clone(), t);
        }
        if let Some(f) = &raw.flagship {
            cfg.flagship = Some(cfg.resolve_target(f, "flagship", &provider_index, &raw.prices)?);
        }
        for key in raw.prices.keys() {
            if key.is_empty() {
                return Err(invalid("prices", "empty model name"));
            }
        }
        cfg.raw = raw;
        Ok(cfg)
    }

    fn intern_target(
        &mut self,
        provider: usize,
        model: &str,
        prices: &BTreeMap<String, RawPrice>,
    ) -> TargetId {
        let name = format!("{}/{}", self.providers[provider].name, model);
        if let Some(&id) = self.target_index.get(&name) {
            return id;
        }
        let price = prices
            .get(&name)
            .or_else(|| prices.get(model))
            .copied()
            .or_else(|| builtin_price(model));
        let id = self.targets.len();
        self.targets.push(Target {
            provider,
            model: model.to_string(),
            name: name.clone(),
            price,
        });
        self.target_index.insert(name, id);
        id
    }

    fn resolve_target(
        &mut self,
        spec: &str,
        key: &str,
        provider_index: &HashMap<String, usize>,
        prices: &BTreeMap<String, RawPrice>,
    ) -> Result<TargetId, ConfigError> {
        let Some((prov, model)) = spec.split_once('/') else {
            return Err(invalid(key, format!("`{spec}` must be `provider/model`")));
        };
        let Some(&pi) = provider_index.get(prov) else {
            return Err(invalid(
                key,
                format!("`{spec}` names unknown provider `{prov}`"),
            ));
        };
        if model.is_empty() {
            return Err(invalid(key, format!("`{spec}` has an empty model name")));
        }
        Ok(self.intern_target(pi, model, prices))
    }

    fn resolve_chain(
        &mut self,
        chain: &RawChain,
        key: &str,
        provider_index: &HashMap<String, usize>,
        prices: &BTreeMap<String, RawPrice>,
    ) -> Result<Chain, ConfigError> {
        let mut targets = vec![self.resolve_target(
            &chain.primary,
            &format!("{key}.primary"),
            provider_index,
            prices,
        )?];
        for (i, f) in chain.fallback.iter().enumerate() {
            let t =
                self.resolve_target(f, &format!("{key}.fallback[{i}]"), provider_index, prices)?;
            if !targets.contains(&t) {
                targets.push(t);
            }
        }
        Ok(Chain {
            targets,
            timeout_ms: chain.timeout_ms,
        })
    }

    /// The chain for a category: its own table entry, else the table of its default tier, else any tier.
    pub fn chain_for_category(&self, category: &str, tier: u8) -> Option<&Chain> {
        self.categories
            .get(category)
            .or_else(|| self.chain_for_tier(tier))
    }

    /// The chain for a tier, or the nearest configured tier (higher first, then lower).
    pub fn chain_for_tier(&self, tier: u8) -> Option<&Chain> {
        let t = tier.clamp(1, 4) as usize - 1;
        if let Some(c) = &self.tiers[t] {
            return Some(c);
        }
        (t + 1..4)
            .chain((0..t).rev())
            .find_map(|i| self.tiers[i].as_ref())
    }

    /// Resolves a bare model name: alias, else a provider that lists it.
    pub fn target_for_bare_name(&self, model: &str) -> Option<TargetId> {
        if let Some(&t) = self.aliases.get(model) {
            return Some(t);
        }
        self.targets.iter().position(|t| t.model == model)
    }

    /// Resolves `provider/model`; the model part may itself contain `/` (OpenRouter names).
    pub fn explicit_target<'s>(&self, spec: &'s str) -> Option<(usize, &'s str)> {
        let (prov, model) = spec.split_once('/')?;
        let pi = self.providers.iter().position(|p| p.name == prov)?;
        if model.is_empty() {
            return None;
        }
        Some((pi, model))
    }

    /// The running configuration with secrets redacted, for `GET /config`.
    pub fn redacted_json(&self) -> String {
        let mut raw = self.raw.clone();
        if let Some(a) = raw.admin_key.as_mut() {
            if a.kind != "env" {
                a.key = a.key.as_ref().map(|_| "<redacted>".to_string());
            }
        }
        if let Some(r) = raw.redis.as_mut() {
            // `redis://:password@host`: keep the host, hide the credentials.
            if let Some(at) = r.url.rfind('@') {
                r.url = format!("redis://<redacted>@{}", &r.url[at + 1..]);
            }
        }
        let mut v = serde_json::to_value(&raw).unwrap_or(serde_json::Value::Null);
        if let Some(obj) = v.as_object_mut() {
            obj.insert("host".into(), self.listen.ip().to_string().into());
            obj.insert("port".into(), self.listen.port().into());
            obj.insert("workers".into(), self.workers.into());
            obj.insert("source".into(), self.source.clone().into());
            let active: Vec<serde_json::Value> = self
                .providers
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "name": p.name, "api": p.dialect.as_str(), "tls": p.tls,
                        "key": if p.api_key.is_some() { "<redacted>" } else { "<none>" },
                        "key_env": p.api_key_env,
                    })
                })
                .collect();
            obj.insert("resolved_providers".into(), active.into());
        }
        serde_json::to_string_pretty(&v).unwrap_or_else(|_| "{}".into())
    }

    /// A human-readable routing table for `--check` and the start-up log.
    pub fn routing_table(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let chain_str = |c: &Chain| {
            c.targets
                .iter()
                .map(|&t| self.targets[t].name.as_str())
                .collect::<Vec<_>>()
                .join(" -> ")
        };
        let _ = writeln!(s, "source: {}", self.source);
        let _ = writeln!(s, "listen: {}  workers: {}", self.listen, self.workers);
        for p in &self.providers {
            let _ = writeln!(
                s,
                "provider {:<12} {} {}://{}:{}{}  key: {}  pii-scrub: {}",
                p.name,
                p.dialect.as_str(),
                if p.tls { "https" } else { "http" },
                p.host,
                p.port,
                p.base_path,
                match (&p.api_key, &p.api_key_env) {
                    (Some(_), Some(env)) => format!("${env}"),
                    (None, Some(env)) => format!("${env} (unset)"),
                    _ => "none".into(),
                },
                p.pii
            );
        }
        for t in 1..=4u8 {
            match self.chain_for_tier(t) {
                Some(c) => {
                    let _ = writeln!(s, "tier-{t}: {}", chain_str(c));
                }
                None => {
                    let _ = writeln!(s, "tier-{t}: (none)");
                }
            }
        }
        for cat in CATEGORIES {
            if let Some(c) = self.chain_for_category(cat, default_tier(cat)) {
                let _ = writeln!(
                    s,
                    "category {cat:<13} (tier {}): {}",
                    default_tier(cat),
                    chain_str(c)
                );
            }
        }
        for (name, c) in &self.routes {
            let _ = writeln!(s, "route {name}: {}", chain_str(c));
        }
        for (alias, &t) in &self.aliases {
            let _ = writeln!(s, "alias {alias} -> {}", self.targets[t].name);
        }
        s
    }
}

/// Removes `//` line comments outside strings (the config is JSON with comments, so the
/// `--init` template can explain itself). Newlines are kept so error line numbers stay right.
pub fn strip_comments(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut in_str = false;
    let mut start = 0;
    while i < b.len() {
        let c = b[i];
        if in_str {
            if c == b'\\' {
                i += 2;
                continue;
            }
            if c == b'"' {
                in_str = false;
            }
        } else if c == b'"' {
            in_str = true;
        } else if c == b'/' && b.get(i + 1) == Some(&b'/') {
            out.push_str(&text[start..i]);
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            start = i;
            continue;
        }
        i += 1;
    }
    out.push_str(&text[start.min(text.len())..]);
    out
}

/// Parses the JSON text (with `//` comments); errors carry the dotted path of the offending key.
pub fn parse_raw(text: &str, origin: &str) -> Result<RawConfig, ConfigError> {
    let text = strip_comments(text);
    let de = &mut serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // serde's unknown-field message names the field but not its parent; the path does.
        ConfigError::Parse {
            path: origin.to_string(),
            key: if path == "." { "(root)".into() } else { path },
            message: inner.to_string(),
        }
    })
}

fn resolve_auth(a: &RawAuth, key: &str) -> Result<(Option<String>, Option<String>), ConfigError> {
    match a.kind.as_str() {
        "none" => Ok((None, None)),
        "env" => {
            let Some(var) = a.key.as_deref().filter(|v| !v.is_empty()) else {
                return Err(invalid(
                    format!("{key}.key"),
                    "names the environment variable holding the key",
                ));
            };
            let value = std::env::var(var).ok().filter(|v| !v.is_empty());
            Ok((value, Some(var.to_string())))
        }
        other => Err(invalid(
            format!("{key}.type"),
            format!("`{other}`: expected `env` or `none`"),
        )),
    }
}

fn resolve_provider(name: &str, p: &RawProvider, key: &str) -> Result<Provider, ConfigError> {
    let dialect = match p.api.as_deref().unwrap_or("openai") {
        "openai" => Dialect::OpenAi,
        "anthropic" => Dialect::Anthropic,
        other => {
            return Err(invalid(
                format!("{key}.api"),
                format!("`{other}`: expected `openai` or `anthropic`"),
            ))
        }
    };
    let url = p.base_url.trim_end_matches('/');
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(invalid(
            format!("{key}.baseUrl"),
            "must start with http:// or https://",
        ));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (host, port) = split_authority(authority, if tls { 443 } else { 80 }).ok_or_else(|| {
        invalid(
            format!("{key}.baseUrl"),
            format!("bad host/port in `{}`", p.base_url),
        )
    })?;
    let (api_key, api_key_env) = match &p.auth {
        Some(a) => resolve_auth(a, &format!("{key}.auth"))?,
        None => (None, None),
    };
    let tls_config = if tls {
        Some(
            build_tls_config(p.ca_file.as_deref())
                .map_err(|m| invalid(format!("{key}.ca_file"), m))?,
        )
    } else {
        None
    };
    let headers = p
        .headers
        .iter()
        .map(|(k, v)| {
            if k.bytes()
                .any(|b| !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
                || v.bytes().any(|b| b == b'\r' || b == b'\n')
            {
                Err(invalid(
                    format!("{key}.headers.{k}"),
                    "invalid header name or value",
                ))
            } else {
                Ok((k.clone(), v.clone()))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Provider {
        name: name.to_string(),
        dialect,
        tls,
        host: host.to_string(),
        port,
        base_path: path.to_string(),
        api_key,
        api_key_env,
        pii: p.pii.unwrap_or(true),
        models: p.models.clone(),
        ca_file: p.ca_file.clone(),
        connect_timeout_ms: p.connect_timeout_ms.unwrap_or(5_000),
        first_byte_timeout_ms: p.first_byte_timeout_ms.unwrap_or(120_000),
        idle_timeout_ms: p.idle_timeout_ms.unwrap_or(120_000),
        pool_max_idle: p.pool_max_idle.unwrap_or(256),
        pool_idle_ms: p.pool_idle_ms.unwrap_or(60_000),
        headers,
        tls_config,
        pool_key: Arc::from(format!(
            "{}://{}:{}",
            if tls { "https" } else { "http" },
            host,
            port
        )),
        addrs: {
            use std::net::ToSocketAddrs;
            (host, port)
                .to_socket_addrs()
                .map(|a| a.collect())
                .unwrap_or_default()
        },
    })
}

fn split_authority(authority: &str, default_port: u16) -> Option<(&str, u16)> {
    if authority.is_empty() {
        return None;
    }
    if let Some(rest) = authority.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((h, port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h, p.parse().ok()?)),
        None => Some((authority, default_port)),
    }
}

/// rustls client config: the webpki roots plus an optional extra CA bundle.
pub fn build_tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut n = 0;
        for c in certs {
            let c = c.map_err(|e| format!("bad PEM in {}: {e}", path.display()))?;
            roots
                .add(c)
                .map_err(|e| format!("bad certificate in {}: {e}", path.display()))?;
            n += 1;
        }
        if n == 0 {
            return Err(format!("no certificates in {}", path.display()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Built-in $/M token prices for common models (used when the config names none).
pub fn builtin_price(model: &str) -> Option<RawPrice> {
    let p = |input: f64, output: f64| Some(RawPrice { input, output });
    let m = model.rsplit('/').next().unwrap_or(model);
    match m {
        "gpt-4o" => p(2.5, 10.0),
        "gpt-4o-mini" => p(0.15, 0.6),
        "gpt-4.1" => p(2.0, 8.0),
        "gpt-4.1-mini" => p(0.4, 1.6),
        "gpt-4.1-nano" => p(0.1, 0.4),
        "o3" => p(2.0, 8.0),
        "o4-mini" => p(1.1, 4.4),
        "claude-3-5-haiku-latest" | "claude-3-5-haiku-20241022" => p(0.8, 4.0),
        "claude-sonnet-4-20250514" | "claude-sonnet-4-5" | "claude-3-7-sonnet-latest" => {
            p(3.0, 15.0)
        }
        "claude-opus-4-1" | "claude-opus-4-20250514" => p(15.0, 75.0),
        "llama-3.1-8b-instant" => p(0.05, 0.08),
        "llama-3.3-70b-versatile" => p(0.59, 0.79),
        "deepseek-chat" => p(0.27, 1.1),
        "deepseek-reasoner" => p(0.55, 2.19),
        "mistral-small-latest" => p(0.1, 0.3),
        "mistral-large-latest" => p(2.0, 6.0),
        _ => None,
    }
}

/// The embedded default: every provider whose key variable is set, plus a local Ollama.
pub fn embedded_raw() -> RawConfig {
    struct Known {
        name: &'static str,
        env: &'static str,
        url: &'static str,
        api: &'static str,
        fast: &'static str,
        strong: &'static str,
    }
    const KNOWN: &[Known] = &[
        Known {
            name: "openai",
            env: "OPENAI_API_KEY",
            url: "https://api.openai.com/v1",
            api: "openai",
            fast: "gpt-4o-mini",
            strong: "gpt-4o",
        },
        Known {
            name: "anthropic",
            env: "ANTHROPIC_API_KEY",
            url: "https://api.anthropic.com/v1",
            api: "anthropic",
            fast: "claude-3-5-haiku-latest",
            strong: "claude-sonnet-4-20250514",
        },
        Known {
            name: "openrouter",
            env: "OPENROUTER_API_KEY",
            url: "https://openrouter.ai/api/v1",
            api: "openai",
            fast: "openai/gpt-4o-mini",
            strong: "openai/gpt-4o",
        },
        Known {
            name: "groq",
            env: "GROQ_API_KEY",
            url: "https://api.groq.com/openai/v1",
            api: "openai",
            fast: "llama-3.1-8b-instant",
            strong: "llama-3.3-70b-versatile",
        },
        Known {
            name: "together",
            env: "TOGETHER_API_KEY",
            url: "https://api.together.xyz/v1",
            api: "openai",
            fast: "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo",
            strong: "meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo",
        },
        Known {
            name: "mistral",
            env: "MISTRAL_API_KEY",
            url: "https://api.mistral.ai/v1",
            api: "openai",
            fast: "mistral-small-latest",
            strong: "mistral-large-latest",
        },
        Known {
            name: "deepseek",
            env: "DEEPSEEK_API_KEY",
            url: "https://api.deepseek.com/v1",
            api: "openai",
            fast: "deepseek-chat",
            strong: "deepseek-reasoner",
        },
    ];
    let mut raw = RawConfig::default();
    let mut fast = Vec::new();
    let mut strong = Vec::new();
    for k in KNOWN {
        if std::env::var(k.env).map(|v| v.is_empty()).unwrap_or(true) {
            continue;
        }
        raw.providers.insert(
            k.name.into(),
            RawProvider {
                base_url: k.url.into(),
                api: Some(k.api.into()),
                auth: Some(RawAuth {
                    kind: "env".into(),
                    key: Some(k.env.into()),
                }),
                pii: Some(true),
                models: vec![k.fast.into(), k.strong.into()],
                ca_file: None,
                connect_timeout_ms: None,
                first_byte_timeout_ms: None,
                idle_timeout_ms: None,
                pool_max_idle: None,
                pool_idle_ms: None,
                headers: BTreeMap::new(),
            },
        );
        fast.push(format!("{}/{}", k.name, k.fast));
        strong.push(format!("{}/{}", k.name, k.strong));
        raw.aliases
            .entry(k.fast.into())
            .or_insert_with(|| format!("{}/{}", k.name, k.fast));
        raw.aliases
            .entry(k.strong.into())
            .or_insert_with(|| format!("{}/{}", k.name, k.strong));
    }
    let ollama_model = std::env::var("OLLAMA_MODEL").unwrap_or_else(|_| "llama3.2".into());
    raw.providers.insert(
        "ollama".into(),
        RawProvider {
            base_url: std::env::var("OLLAMA_URL")
                .unwrap_or_else(|_| "http://127.0.0.1:11434/v1".into()),
            api: Some("openai".into()),
            auth: Some(RawAuth {
                kind: "none".into(),
                key: None,
            }),
            pii: Some(false),
            models: vec![ollama_model.clone()],
            ca_file: None,
            connect_timeout_ms: Some(1_000),
            first_byte_timeout_ms: None,
            idle_timeout_ms: None,
            pool_max_idle: None,
            pool_idle_ms: None,
            headers: BTreeMap::new(),
        },
    );
    let local = format!("ollama/{ollama_model}");
    fast.push(local.clone());
    strong.push(local);
    let chain = |list: &[String]| RawChain {
        primary: list[0].clone(),
        fallback: list[1..].to_vec(),
        timeout_ms: None,
    };
    // Tiers 1–2 prefer the cheap models, 3–4 the strong ones; each falls back across providers.
    let mut strong_first = strong.clone();
    strong_first.extend(fast.iter().filter(|f| !strong.contains(f)).cloned());
    raw.tiers.insert("1".into(), chain(&fast));
    raw.tiers.insert("2".into(), chain(&fast));
    raw.tiers.insert("3".into(), chain(&strong_first));
    raw.tiers.insert("4".into(), chain(&strong_first));
    raw.flagship = Some(strong[0].clone());
    raw
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_names_dotted_path() {
        let err = parse_raw(
            r#"{"providers": {"x": {"baseUrl": "http://a", "bogus": 1}}}"#,
            "t",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("providers.x"), "{msg}");
        assert!(msg.contains("bogus"), "{msg}");
    }

    #[test]
    fn resolves_chains_and_aliases() {
        let raw = parse_raw(
            r#"{"providers": {"a": {"baseUrl": "http://127.0.0.1:9/v1", "models": ["m1"]},
                               "b": {"baseUrl": "https://example.com:8443/api/v1/"}},
                "tiers": {"1": {"primary": "a/m1", "fallback": ["b/x/y"]}},
                "aliases": {"small": "a/m1"}, "routes": {"flow/fast": {"primary": "b/z"}}}"#,
            "t",
        )
        .unwrap();
        let cfg = Config::resolve(raw, &Overrides::default(), "t".into()).unwrap();
        let c = cfg.chain_for_tier(4).unwrap();
        assert_eq!(cfg.targets[c.targets[1]].name, "b/x/y");
        assert_eq!(cfg.providers[1].base_path, "/api/v1");
        assert_eq!(cfg.providers[1].port, 8443);
        assert!(cfg.target_for_bare_name("small").is_some());
        assert!(cfg.target_for_bare_name("m1").is_some());
        assert!(cfg.routes.contains_key("flow/fast"));
    }

    #[test]
    fn bad_chain_reference_is_named() {
        let raw = parse_raw(r#"{"categories": {"coding": {"primary": "nope/x"}}}"#, "t").unwrap();
        let err = Config::resolve(raw, &Overrides::default(), "t".into())
            .unwrap_err()
            .to_string();
        assert!(err.contains("categories.coding.primary"), "{err}");
    }

    #[test]
    fn comments_are_stripped_outside_strings() {
        let t = "{\n // a comment\n \"host\": \"127.0.0.1\", // trailing\n \"default_category\": \"coding\" }";
        let raw = parse_raw(t, "t").unwrap();
        assert_eq!(raw.default_category.as_deref(), Some("coding"));
        let raw = parse_raw(r#"{"providers": {"p": {"baseUrl": "http://a//b"}}}"#, "t").unwrap();
        assert_eq!(raw.providers["p"].base_url, "http://a//b");
    }

    #[test]
    fn template_parses_and_resolves_ledger_settings() {
        let raw = parse_raw(include_str!("config_template.jsonc"), "template").unwrap();
        assert_eq!(
            raw.ledger.as_ref().and_then(|l| l.flush_interval_ms),
            Some(100)
        );
        let raw = parse_raw(
            r#"{"ledger": {"path": "/tmp/x/l.db", "flush_interval_ms": 50}, "keys": {"require_key": true},
                "apps": {"billing": {"daily_usd": 5, "monthly_usd": 100}}, "redis": {"url": "redis://:pw@127.0.0.1:7000"}}"#,
            "t",
        )
        .unwrap();
        let cfg = Config::resolve(raw, &Overrides::default(), "t".into()).unwrap();
        assert_eq!(
            cfg.ledger,
            Some(LedgerSettings {
                path: "/tmp/x/l.db".into(),
                flush_interval_ms: 50
            })
        );
        assert!(cfg.require_key);
        assert_eq!(cfg.apps["billing"], (Some(5.0), Some(100.0)));
        assert!(!cfg.redacted_json().contains("pw@"));

        let err = parse_raw(r#"{"ledger": {"path": "x", "flush": 1}}"#, "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ledger") && err.contains("flush"), "{err}");
        let err = parse_raw(r#"{"apps": {"a": {"daily": 1}}}"#, "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("apps.a"), "{err}");
        let raw = parse_raw(
            r#"{"ledger": {"enabled": false}, "keys": {"require_key": true}}"#,
            "t",
        )
        .unwrap();
        let err = Config::resolve(raw, &Overrides::default(), "t".into())
            .unwrap_err()
            .to_string();
        assert!(err.contains("keys.require_key"), "{err}");
        let raw = parse_raw(r#"{"apps": {"a": {"daily_usd": -1}}}"#, "t").unwrap();
        let err = Config::resolve(raw, &Overrides::default(), "t".into())
            .unwrap_err()
            .to_string();
        assert!(err.contains("apps.a.daily_usd"), "{err}");
        let raw = parse_raw(r#"{"ledger": {"enabled": false}}"#, "t").unwrap();
        assert!(Config::resolve(raw, &Overrides::default(), "t".into())
            .unwrap()
            .ledger
            .is_none());
    }

    #[test]
    fn embedded_default_always_has_local_ollama() {
        let cfg = Config::embedded(&Overrides::default()).unwrap();
        assert!(cfg.providers.iter().any(|p| p.name == "ollama"));
        assert!(cfg.chain_for_tier(1).is_some());
        assert_eq!(cfg.listen.port(), 18800);
        assert!(cfg.listen.ip().is_loopback());
    }
}
