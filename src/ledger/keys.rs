//! Virtual keys (`tf-sk-…`): creation, listing and revocation in the ledger's SQLite file (table
//! `keys`, SHA-256 of the key only), and the read-mostly snapshot the hot path looks bearers up in.
//! Which requests need a key, and the 401, are the pipeline's business.
//!
//! Lookup hashes the bearer once (SHA-256), finds candidates by the first 8 bytes of the digest
//! (a hash-map probe on a digest leaks nothing usable about any key: an attacker cannot steer a
//! digest prefix), then compares the full 32-byte digests in constant time with `subtle`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rusqlite::OptionalExtension;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::record::now_ms;
use super::{open_db, LedgerError};

const KEY_PREFIX: &str = "tf-sk-";
const KEY_RANDOM_CHARS: usize = 32; // 32 base62 chars ≈ 190 bits
const ID_RANDOM_CHARS: usize = 12;
/// Characters of the key shown in listings (`tf-sk-` + 4).
const DISPLAY_PREFIX_CHARS: usize = KEY_PREFIX.len() + 4;

/// What a new key may do. Budgets and rates are `None` for "no limit"; an empty
/// `allowed_models` allows every model and route.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewKey {
    pub app: String,
    pub env: String,
    /// Globs (`*`, `?`) over the requested model, route or `provider/model`.
    pub allowed_models: Vec<String>,
    /// Security score at or above which this key's requests are blocked (policy's own default if None).
    pub security_threshold: Option<f32>,
    pub daily_budget_usd: Option<f64>,
    pub monthly_budget_usd: Option<f64>,
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
}

/// A stored key as the hot path sees it. Never contains the plaintext.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyInfo {
    pub id: Arc<str>,
    /// `tf-sk-AbCd` — enough to recognise a key in a listing.
    pub prefix: String,
    pub app: Arc<str>,
    pub env: Arc<str>,
    pub allowed_models: Vec<String>,
    pub security_threshold: Option<f32>,
    pub daily_budget_usd: Option<f64>,
    pub monthly_budget_usd: Option<f64>,
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    pub created_ms: u64,
    pub revoked_ms: Option<u64>,
    hash: [u8; 32],
}

impl KeyInfo {
    /// True if `name` (requested model, route or `provider/model`) matches one of the allowed globs.
    pub fn allows_model(&self, name: &str) -> bool {
        self.allowed_models.is_empty()
            || self
                .allowed_models
                .iter()
                .any(|g| glob_match(g.as_bytes(), name.as_bytes()))
    }

    /// A key with the given limits that is not stored anywhere (tests, benches, config-defined keys).
    pub fn unstored(id: &str, app: &str, limits: &NewKey) -> KeyInfo {
        KeyInfo {
            id: id.into(),
            prefix: String::new(),
            app: app.into(),
            env: limits.env.as_str().into(),
            allowed_models: limits.allowed_models.clone(),
            security_threshold: limits.security_threshold,
            daily_budget_usd: limits.daily_budget_usd,
            monthly_budget_usd: limits.monthly_budget_usd,
            rpm: limits.rpm,
            tpm: limits.tpm,
            created_ms: now_ms(),
            revoked_ms: None,
            hash: [0; 32],
        }
    }
}

/// `*` matches any run (including `/`), `?` one byte.
fn glob_match(glob: &[u8], s: &[u8]) -> bool {
    let (mut g, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if g < glob.len() && (glob[g] == b'?' || glob[g] == s[i]) {
            g += 1;
            i += 1;
        } else if g < glob.len() && glob[g] == b'*' {
            star = Some((g, i));
            g += 1;
        } else if let Some((sg, si)) = star {
            g = sg + 1;
            i = si + 1;
            star = Some((sg, si + 1));
        } else {
            return false;
        }
    }
    glob[g..].iter().all(|&c| c == b'*')
}

#[derive(Default)]
struct KeySnapshot {
    /// First 8 digest bytes → active keys with that tag (almost always one).
    by_tag: HashMap<u64, Vec<Arc<KeyInfo>>>,
}

/// Keys in SQLite plus the hot-path snapshot. `Send + Sync`: share one `Arc<KeyStore>`.
pub struct KeyStore {
    conn: Mutex<rusqlite::Connection>,
    snapshot: ArcSwap<KeySnapshot>,
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn tag(hash: &[u8; 32]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&hash[..8]);
    u64::from_le_bytes(b)
}

fn random_base62(n: usize) -> Result<String, LedgerError> {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        getrandom::fill(&mut buf).map_err(|e| LedgerError::Random(e.to_string()))?;
        // Rejection sampling: 248 = 4 * 62, so `b % 62` is uniform for b < 248.
        for &b in buf.iter().filter(|&&b| b < 248) {
            if out.len() == n {
                break;
            }
            out.push(ALPHABET[(b % 62) as usize] as char);
        }
    }
    Ok(out)
}

pub(crate) fn ensure_schema(conn: &rusqlite::Connection) -> Result<(), LedgerError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS keys (
            id TEXT PRIMARY KEY,
            prefix TEXT NOT NULL,
            hash BLOB NOT NULL UNIQUE,
            app TEXT NOT NULL,
            env TEXT NOT NULL,
            allowed_models TEXT NOT NULL,
            security_threshold REAL,
            daily_budget_usd REAL,
            monthly_budget_usd REAL,
            rpm INTEGER,
            tpm INTEGER,
            created_ms INTEGER NOT NULL,
            revoked_ms INTEGER
        );",
    )?;
    Ok(())
}

fn validate(new: &NewKey) -> Result<(), LedgerError> {
    let bad_usd = |v: Option<f64>| v.is_some_and(|v| !v.is_finite() || v < 0.0);
    if bad_usd(new.daily_budget_usd) {
        return Err(LedgerError::Invalid {
            field: "daily_budget_usd",
            reason: "must be a finite number >= 0",
        });
    }
    if bad_usd(new.monthly_budget_usd) {
        return Err(LedgerError::Invalid {
            field: "monthly_budget_usd",
            reason: "must be a finite number >= 0",
        });
    }
    if new
        .security_threshold
        .is_some_and(|t| !(0.0..=1.0).contains(&t))
    {
        return Err(LedgerError::Invalid {
            field: "security_threshold",
            reason: "must be within 0..=1",
        });
    }
    Ok(())
}

impl KeyStore {
    /// Opens the key table in the ledger file at `path` (creating it) and loads the snapshot.
    pub fn open(path: impl AsRef<Path>) -> Result<KeyStore, LedgerError> {
        let conn = open_db(path.as_ref())?;
        let store = KeyStore {
            conn: Mutex::new(conn),
            snapshot: ArcSwap::from_pointee(KeySnapshot::default()),
        };
        store.reload()?;
        Ok(store)
    }

    /// Creates a key. Returns the plaintext — the only time it exists outside the caller — and
    /// the stored info.
    pub fn create(&self, new: &NewKey) -> Result<(String, KeyInfo), LedgerError> {
        validate(new)?;
        let plaintext = format!("{KEY_PREFIX}{}", random_base62(KEY_RANDOM_CHARS)?);
        let info = KeyInfo {
            id: format!("key_{}", random_base62(ID_RANDOM_CHARS)?).into(),
            prefix: plaintext[..DISPLAY_PREFIX_CHARS].to_string(),
            app: new.app.as_str().into(),
            env: new.env.as_str().into(),
            allowed_models: new.allowed_models.clone(),
            security_threshold: new.security_threshold,
            daily_budget_usd: new.daily_budget_usd,
            monthly_budget_usd: new.monthly_budget_usd,
            rpm: new.rpm,
            tpm: new.tpm,
            created_ms: now_ms(),
            revoked_ms: None,
            hash: digest(&plaintext),
        };
        let allowed = serde_json::to_string(&info.allowed_models).unwrap_or_else(|_| "[]".into());
        self.with_conn(|c| {
            c.execute(
                "INSERT INTO keys (id, prefix, hash, app, env, allowed_models, security_threshold,
                 daily_budget_usd, monthly_budget_usd, rpm, tpm, created_ms, revoked_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, NULL)",
                rusqlite::params![
                    &*info.id,
                    info.prefix,
                    &info.hash[..],
                    &*info.app,
                    &*info.env,
                    allowed,
                    info.security_threshold,
                    info.daily_budget_usd,
                    info.monthly_budget_usd,
                    info.rpm,
                    info.tpm,
                    info.created_ms as i64,
                ],
            )
        })?;
        self.reload()?;
        Ok((plaintext, info))
    }

    /// Every key, revoked ones included, oldest first.
    pub fn list(&self) -> Result<Vec<KeyInfo>, LedgerError> {
        self.with_conn(load_all)
    }

    /// Revokes key `id` (idempotent). `Err(UnknownKey)` if there is no such key.
    pub fn revoke(&self, id: &str) -> Result<(), LedgerError> {
        let now = now_ms() as i64;
        let found = self.with_conn(|c| {
            c.query_row("SELECT 1 FROM keys WHERE id = ?1", [id], |_| Ok(()))
                .optional()
                .map(|o| o.is_some())
        })?;
        if !found {
            return Err(LedgerError::UnknownKey { id: id.to_string() });
        }
        self.with_conn(|c| {
            c.execute(
                "UPDATE keys SET revoked_ms = ?2 WHERE id = ?1 AND revoked_ms IS NULL",
                rusqlite::params![id, now],
            )
        })?;
        self.reload()
    }

    /// Rebuilds the snapshot from the database (after changes made by another process, e.g. a
    /// `tierflow keys` command while the gateway runs; call on SIGHUP).
    pub fn reload(&self) -> Result<(), LedgerError> {
        let keys = self.with_conn(load_all)?;
        let mut snap = KeySnapshot::default();
        for k in keys.into_iter().filter(|k| k.revoked_ms.is_none()) {
            snap.by_tag
                .entry(tag(&k.hash))
                .or_default()
                .push(Arc::new(k));
        }
        self.snapshot.store(Arc::new(snap));
        Ok(())
    }

    /// The active key whose plaintext is `bearer` (the token, without `Bearer `), or `None`.
    /// Lock-free: reads the current snapshot.
    pub fn lookup(&self, bearer: &str) -> Option<Arc<KeyInfo>> {
        if !bearer.starts_with(KEY_PREFIX) {
            return None;
        }
        let h = digest(bearer);
        let snap = self.snapshot.load();
        let candidates = snap.by_tag.get(&tag(&h))?;
        let mut found = None;
        for k in candidates {
            if bool::from(k.hash.ct_eq(&h)) {
                found = Some(k.clone());
            }
        }
        found
    }

    fn with_conn<T>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> Result<T, rusqlite::Error>,
    ) -> Result<T, LedgerError> {
        // A poisoned lock only means another admin call panicked; the connection is still valid.
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        Ok(f(&conn)?)
    }
}

fn load_all(c: &rusqlite::Connection) -> Result<Vec<KeyInfo>, rusqlite::Error> {
    let mut st = c.prepare(
        "SELECT id, prefix, hash, app, env, allowed_models, security_threshold, daily_budget_usd,
         monthly_budget_usd, rpm, tpm, created_ms, revoked_ms FROM keys ORDER BY created_ms, id",
    )?;
    let rows = st.query_map([], |r| {
        let hash_vec: Vec<u8> = r.get(2)?;
        let mut hash = [0u8; 32];
        if hash_vec.len() == 32 {
            hash.copy_from_slice(&hash_vec);
        }
        let allowed: String = r.get(5)?;
        Ok(KeyInfo {
            id: r.get::<_, String>(0)?.into(),
            prefix: r.get(1)?,
            hash,
            app: r.get::<_, String>(3)?.into(),
            env: r.get::<_, String>(4)?.into(),
            allowed_models: serde_json::from_str(&allowed).unwrap_or_default(),
            security_threshold: r.get(6)?,
            daily_budget_usd: r.get(7)?,
            monthly_budget_usd: r.get(8)?,
            rpm: r.get(9)?,
            tpm: r.get(10)?,
            created_ms: r.get::<_, i64>(11)? as u64,
            revoked_ms: r.get::<_, Option<i64>>(12)?.map(|v| v as u64),
        })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_key() -> NewKey {
        NewKey {
            app: "billing".into(),
            env: "prod".into(),
            allowed_models: vec!["tier-*".into(), "openai/*".into()],
            security_threshold: Some(0.8),
            daily_budget_usd: Some(5.0),
            monthly_budget_usd: Some(100.0),
            rpm: Some(60),
            tpm: Some(100_000),
        }
    }

    #[test]
    fn create_lookup_list_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let store = KeyStore::open(&path).unwrap();
        let (plain, info) = store.create(&new_key()).unwrap();
        assert!(plain.starts_with("tf-sk-") && plain.len() == 6 + 32);
        assert!(plain[6..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(info.prefix, &plain[..10]);

        let found = store.lookup(&plain).unwrap();
        assert_eq!(found.id, info.id);
        assert_eq!(found.daily_budget_usd, Some(5.0));
        // A different key with the same prefix, a truncated key, garbage: all unknown.
        let mut wrong = plain.clone().into_bytes();
        let last = wrong.len() - 1;
        wrong[last] = if wrong[last] == b'a' { b'b' } else { b'a' };
        assert!(store.lookup(std::str::from_utf8(&wrong).unwrap()).is_none());
        assert!(store.lookup(&plain[..plain.len() - 1]).is_none());
        assert!(store.lookup("sk-not-ours").is_none());

        // The plaintext is not stored anywhere in the table.
        let conn = rusqlite::Connection::open(&path).unwrap();
        let dump: String = conn
            .query_row(
                "SELECT group_concat(id || prefix || hex(hash) || app || allowed_models) FROM keys",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(!dump.contains(&plain[6..]));

        // A second store (another process) sees the key after opening.
        let other = KeyStore::open(&path).unwrap();
        assert!(other.lookup(&plain).is_some());

        let (plain2, _) = store.create(&NewKey::default()).unwrap();
        assert_ne!(plain, plain2);
        assert_eq!(store.list().unwrap().len(), 2);
        store.revoke(&info.id).unwrap();
        store.revoke(&info.id).unwrap();
        assert!(store.lookup(&plain).is_none());
        assert!(store.lookup(&plain2).is_some());
        let listed = store.list().unwrap();
        assert!(listed
            .iter()
            .find(|k| k.id == info.id)
            .unwrap()
            .revoked_ms
            .is_some());
        assert!(matches!(
            store.revoke("key_nope"),
            Err(LedgerError::UnknownKey { .. })
        ));
        // The other process's snapshot still has it until it reloads.
        assert!(other.lookup(&plain).is_some());
        other.reload().unwrap();
        assert!(other.lookup(&plain).is_none());
    }

    #[test]
    fn invalid_limits_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path().join("l.db")).unwrap();
        let bad = NewKey {
            daily_budget_usd: Some(-1.0),
            ..NewKey::default()
        };
        assert!(matches!(
            store.create(&bad),
            Err(LedgerError::Invalid {
                field: "daily_budget_usd",
                ..
            })
        ));
        let bad = NewKey {
            security_threshold: Some(2.0),
            ..NewKey::default()
        };
        assert!(matches!(
            store.create(&bad),
            Err(LedgerError::Invalid {
                field: "security_threshold",
                ..
            })
        ));
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn globs() {
        let k = KeyInfo::unstored("k", "a", &new_key());
        assert!(k.allows_model("tier-2"));
        assert!(k.allows_model("openai/gpt-4o-mini"));
        assert!(!k.allows_model("anthropic/claude"));
        assert!(!k.allows_model("tier"));
        assert!(KeyInfo::unstored("k", "a", &NewKey::default()).allows_model("anything"));
        assert!(glob_match(b"a*b?d", b"axxxbcd"));
        assert!(glob_match(b"*", b""));
        assert!(!glob_match(b"a*b", b"acbd"));
        assert!(glob_match(b"*/*mini*", b"openai/gpt-4o-mini"));
    }

    #[test]
    fn base62_is_uniform_enough() {
        let s = random_base62(62 * 200).unwrap();
        let mut counts = [0u32; 128];
        for b in s.bytes() {
            counts[b as usize] += 1;
        }
        let used: Vec<u32> = counts.iter().copied().filter(|&c| c > 0).collect();
        assert_eq!(used.len(), 62);
        // Expected 200 each; a biased `% 62` without rejection would still pass, but a broken
        // alphabet or a constant stream would not.
        assert!(used.iter().all(|&c| c > 100 && c < 320), "{used:?}");
    }
}
