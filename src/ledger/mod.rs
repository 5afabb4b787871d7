//! The accounting engine: usage ledger (SQLite, one writer thread), virtual keys, budgets and
//! rate limits (local atomics, optionally shared through Redis). The pipeline's `account` stage
//! and the endpoints decide when to call it; this module owns how.
//!
//! Hot path, per request, on a worker core — no lock, no blocking call:
//! `KeyStore::lookup` (snapshot read) → `Budget::admit` (CAS on atomics, or `RedisBudget::admit`
//! on the core's monoio runtime) → forward → `Reservation::settle` → `LedgerHandle::record`
//! (push into the core's SPSC ring) → `stats::CoreStatsWriter::observe`.
//!
//! Cold path: the ledger writer thread, `KeyStore::create/list/revoke`, `usage_report`.

mod budget;
mod keys;
mod record;
mod redis;
mod report;
mod writer;

pub use budget::{AppLimits, Budget, BudgetConfig, Limit, Rejection, Reservation};
pub use keys::{KeyInfo, KeyStore, NewKey};
pub use record::{now_ms, Outcome, SecurityVerdict, UsageRecord};
pub use redis::{RedisBudget, RedisConfig, RedisError, RedisState};
pub use report::{usage_report, GroupBy};
pub use writer::{Ledger, LedgerConfig, LedgerCounters, LedgerHandle, Recorded};

use std::path::{Path, PathBuf};

/// Errors of the ledger and key store (SQLite side). Budgets reject with [`Rejection`],
/// Redis failures are [`RedisError`] and never reach the request: they switch to local counters.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot open ledger database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("ledger database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot start the ledger writer thread: {0}")]
    Spawn(std::io::Error),
    #[error("{records} usage records could not be committed before shutdown")]
    Unflushed { records: u64 },
    #[error("the ledger writer thread panicked")]
    WriterPanicked,
    #[error("no key with id {id}")]
    UnknownKey { id: String },
    #[error("key generation failed: {0}")]
    Random(String),
    #[error("invalid {field}: {reason}")]
    Invalid {
        field: &'static str,
        reason: &'static str,
    },
}

/// Opens (creating if needed) the shared SQLite file with the ledger's settings.
///
/// WAL: the writer never blocks readers (`tierflow usage`, key admin) and a commit is one
/// sequential append. `synchronous=NORMAL` in WAL mode fsyncs only at checkpoints, so a commit
/// survives a process crash (kill -9: the WAL is in the OS page cache and is replayed on the next
/// open) and the file is never corrupted; only a power loss or kernel crash can drop the last
/// commits, and the ledger accepts that rather than an fsync per 100 ms batch.
pub(crate) fn open_db(path: &Path) -> Result<rusqlite::Connection, LedgerError> {
    let open_err = |source| LedgerError::Open {
        path: path.to_path_buf(),
        source,
    };
    let conn = rusqlite::Connection::open(path).map_err(open_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(open_err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(open_err)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(open_err)?;
    writer::ensure_schema(&conn)?;
    keys::ensure_schema(&conn)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}

    /// The threading contract the pipeline relies on: shared engines are `Send + Sync`, per-core
    /// handles move to their core, reservations may cross an await point on any runtime.
    #[test]
    fn threading_contract() {
        send_sync::<Budget>();
        send_sync::<KeyStore>();
        send_sync::<KeyInfo>();
        send_sync::<redis::RedisState>();
        send_sync::<crate::stats::StatsRegistry>();
        send::<Reservation>();
        send::<LedgerHandle>();
        send::<crate::stats::CoreStatsWriter>();
    }
}
