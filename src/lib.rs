//! tierflow: a self-hosted, OpenAI-compatible LLM routing gateway — a thread-per-core io_uring
//! proxy that decides how much model each request needs and sends it to the cheapest upstream
//! that can handle it.
//!
//! ```text
//! downstream ──HTTP/1.1──▶ accept ─▶ parse ─▶ inspect ─▶ route ─▶ forward ─▶ relay ─▶ account
//!  client                  (core N)  httparse  scan,      tiers,   pooled     SSE/JSON  counters,
//!                                    simd-json classify   fallback rustls     back      metadata
//! ```
//!
//! Glossary: *downstream* is the client side, *upstream* the provider side; a *target* is one
//! `provider/model`; a *chain* is a primary target plus fallbacks; a *tier* (1 speed … 4
//! reasoning) says how much model a request needs; a *worker* is one core with its own runtime,
//! listener, pools and counters.
//!
//! Modules, in pipeline order: `runtime` (cores, signals) → `pipeline` (the stages) over `http`
//! (wire format) and `providers` (dialects), configured by `config`, failing through `error`.
//! The accounting engine — `ledger` (usage rows in SQLite, virtual keys, budgets and rate limits,
//! optionally shared through Redis) and `stats` (per-core counters, Prometheus text) — is driven
//! by the pipeline's `account` stage and the `keys`/`usage` commands. The security `scanner`
//! (Hyperscan rules, PII vault) is driven by the pipeline's `security` stage and `inspect`.
//! Context compression (`compress`, CtxPack: lossless-in-meaning passes over message text) is
//! driven by the pipeline's `compress` stage, after PII scrubbing and before forwarding.

pub mod api;
pub mod cache;
pub mod classifier;
pub mod cli;
pub mod compress;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod health;
pub mod http;
pub mod inspect;
pub mod ledger;
pub mod log;
pub mod pipeline;
pub mod providers;
pub mod runtime;
pub mod scanner;
pub mod stats;
