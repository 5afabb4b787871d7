//! On-disk cache of the compiled Hyperscan databases, so a start-up deserializes (milliseconds)
//! instead of compiling (~12 s of CPU). The file name carries a SHA-256 of the rule text, the
//! Hyperscan version and this format's version, so an edited pattern or a library upgrade misses
//! and recompiles; the payload carries its own digest, so a torn or corrupt file is ignored.
//!
//! File: `scanner-<key>.hsdb` = magic, SHA-256 of the rest, then for each database (structured
//! PII, named PII, threats) a little-endian u64 length (0 = no database) and Hyperscan's
//! serialized bytes.

use std::io::Write;
use std::path::{Path, PathBuf};

use hyperscan::prelude::*;
use hyperscan::Serialized;
use sha2::{Digest, Sha256};

use super::rules::Rule;

const MAGIC: &[u8; 8] = b"TFHSDB01";
/// Bump when the compile flags (`rules::hs_flags`) or this layout change.
const FORMAT: &str = "tierflow-scanner-cache-v3";

/// The cache key of a rule set: hex SHA-256 over the format, Hyperscan version and every rule.
pub fn key(rules: &[Rule]) -> String {
    let mut h = Sha256::new();
    h.update(FORMAT.as_bytes());
    h.update(hyperscan::version_str().to_bytes());
    for r in rules {
        for f in [&r.id, &r.category, &r.validator, &r.flags, &r.regex] {
            h.update((f.len() as u64).to_le_bytes());
            h.update(f.as_bytes());
        }
        h.update([match r.kind {
            super::rules::RuleKind::Threat(super::Severity::Warning) => 1,
            super::rules::RuleKind::Threat(super::Severity::Critical) => 2,
            super::rules::RuleKind::Pii(_) => 3,
        }]);
    }
    let d = h.finalize();
    d.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

pub fn path(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("scanner-{key}.hsdb"))
}

/// The `count` databases from `file`, or `None` when it is missing, corrupt, or not loadable.
pub fn load(file: &Path, count: usize) -> Option<Vec<Option<BlockDatabase>>> {
    let bytes = std::fs::read(file).ok()?;
    if bytes.len() < 8 + 32 || &bytes[..8] != MAGIC {
        return None;
    }
    let (digest, rest) = bytes[8..].split_at(32);
    if Sha256::digest(rest).as_slice() != digest {
        return None;
    }
    let mut at = 0usize;
    let mut next = || -> Option<Option<BlockDatabase>> {
        let len = u64::from_le_bytes(rest.get(at..at + 8)?.try_into().ok()?) as usize;
        at += 8;
        if len == 0 {
            return Some(None);
        }
        let blob = rest.get(at..at.checked_add(len)?)?;
        at += len;
        blob.deserialize().ok().map(Some)
    };
    let mut dbs = Vec::with_capacity(count);
    for _ in 0..count {
        dbs.push(next()?);
    }
    (at == rest.len()).then_some(dbs)
}

/// Writes the databases to `file` (through a temporary file and a rename). Best effort.
pub fn store(file: &Path, dbs: &[Option<&BlockDatabase>]) -> std::io::Result<()> {
    let mut payload = Vec::new();
    for &db in dbs {
        match db {
            None => payload.extend_from_slice(&0u64.to_le_bytes()),
            Some(db) => {
                let s = db
                    .serialize()
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                let b: &[u8] = s.as_ref();
                payload.extend_from_slice(&(b.len() as u64).to_le_bytes());
                payload.extend_from_slice(b);
            }
        }
    }
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = file.with_extension(format!("tmp{}-{seq}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(MAGIC)?;
        f.write_all(&Sha256::digest(&payload))?;
        f.write_all(&payload)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, file).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(expr: &str) -> BlockDatabase {
        let p: Pattern = expr.parse().unwrap();
        p.build().unwrap()
    }

    #[test]
    fn stored_databases_load_back_and_corruption_is_ignored() {
        let dir = std::env::temp_dir().join(format!("tierflow-cache-test-{}", std::process::id()));
        let file = path(&dir, "k");
        store(&file, &[Some(&db("/foo/")), None]).unwrap();
        assert!(load(&file, 3).is_none(), "count mismatch");
        let mut dbs = load(&file, 2).expect("loads");
        assert!(dbs[1].is_none());
        let pii = dbs.swap_remove(0).unwrap();
        let s = pii.alloc_scratch().unwrap();
        let mut hits = 0;
        pii.scan("a foo", &s, |_, _, _, _| {
            hits += 1;
            Matching::Continue
        })
        .unwrap();
        assert_eq!(hits, 1);
        let mut bytes = std::fs::read(&file).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&file, &bytes).unwrap();
        assert!(load(&file, 2).is_none());
        bytes.truncate(20);
        std::fs::write(&file, &bytes).unwrap();
        assert!(load(&file, 2).is_none());
        assert!(load(&dir.join("missing"), 2).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn key_changes_with_the_rules() {
        let mut rules = Vec::new();
        super::super::rules::parse_rules(
            "x.txt",
            "a | cat | warning | en | i | c | foo",
            &mut rules,
        )
        .unwrap();
        let k1 = key(&rules);
        rules[0].regex = "bar".into();
        assert_ne!(k1, key(&rules));
        assert_eq!(k1.len(), 32);
    }
}
