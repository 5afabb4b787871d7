//! `tierflow usage`: reads the ledger and prints requests, tokens and cost grouped by key, app,
//! model or day. Argument parsing is main's business; this owns the query and the table.

use std::fmt::Write as _;
use std::path::Path;

use rusqlite::OpenFlags;

use super::LedgerError;

/// How `usage_report` groups rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Key,
    App,
    Model,
    /// UTC calendar day of `time_ms`.
    Day,
}

impl GroupBy {
    /// Parses `key|app|model|day` (the CLI's `--by`).
    pub fn parse(s: &str) -> Option<GroupBy> {
        match s {
            "key" => Some(Self::Key),
            "app" => Some(Self::App),
            "model" => Some(Self::Model),
            "day" => Some(Self::Day),
            _ => None,
        }
    }

    fn column(self) -> (&'static str, &'static str) {
        match self {
            // The key's display prefix when the key is still in the key table.
            Self::Key => ("key", "u.key_id || COALESCE(' (' || k.prefix || '…)', '')"),
            Self::App => ("app", "u.app"),
            Self::Model => ("model", "u.model"),
            Self::Day => ("day", "strftime('%Y-%m-%d', u.time_ms / 1000, 'unixepoch')"),
        }
    }
}

/// A human table of requests, tokens in/out and cost per group, for records at or after
/// `since_ms` (ms since the epoch; `None`: all), largest cost first (days: in date order), with
/// a total line. `Err` if the file is missing or not a ledger.
pub fn usage_report(
    path: impl AsRef<Path>,
    group_by: GroupBy,
    since_ms: Option<u64>,
) -> Result<String, LedgerError> {
    let path = path.as_ref();
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn =
        rusqlite::Connection::open_with_flags(path, flags).map_err(|source| LedgerError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let (title, expr) = group_by.column();
    let order = if group_by == GroupBy::Day {
        "grp"
    } else {
        "cost DESC, grp"
    };
    let sql = format!(
        "SELECT {expr} AS grp, count(*), sum(u.prompt_tokens), sum(u.completion_tokens), sum(u.cost_usd) AS cost
         FROM usage u LEFT JOIN keys k ON k.id = u.key_id
         WHERE u.time_ms >= ?1 GROUP BY grp ORDER BY {order}"
    );
    let mut st = conn.prepare(&sql)?;
    let rows: Vec<(String, i64, i64, i64, f64)> = st
        .query_map([since_ms.unwrap_or(0) as i64], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?.unwrap_or_default(),
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
            ))
        })?
        .collect::<Result<_, _>>()?;

    let label = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let width = rows
        .iter()
        .map(|r| label(&r.0).chars().count())
        .max()
        .unwrap_or(0)
        .max(title.len())
        .max(5);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{title:<width$}  {:>10}  {:>12}  {:>12}  {:>12}",
        "requests", "tokens_in", "tokens_out", "cost_usd"
    );
    let (mut n, mut tin, mut tout, mut cost) = (0i64, 0i64, 0i64, 0f64);
    for (g, req, pin, pout, c) in &rows {
        let _ = writeln!(
            out,
            "{:<width$}  {req:>10}  {pin:>12}  {pout:>12}  {c:>12.6}",
            label(g)
        );
        n += req;
        tin += pin;
        tout += pout;
        cost += c;
    }
    let _ = writeln!(
        out,
        "{:<width$}  {n:>10}  {tin:>12}  {tout:>12}  {cost:>12.6}",
        "total"
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::keys::{KeyStore, NewKey};
    use super::super::record::UsageRecord;
    use super::super::writer::{Ledger, LedgerConfig};
    use super::*;

    const DAY_MS: u64 = 86_400_000;

    fn rec(
        time_ms: u64,
        key: &str,
        app: &str,
        model: &str,
        pin: u32,
        pout: u32,
        cost: f64,
    ) -> UsageRecord {
        UsageRecord {
            time_ms,
            key_id: key.into(),
            app: app.into(),
            model: model.into(),
            prompt_tokens: pin,
            completion_tokens: pout,
            cost_usd: cost,
            category: "general",
            ..Default::default()
        }
    }

    #[test]
    fn groups_and_totals() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let keys = KeyStore::open(&path).unwrap();
        let (_, k) = keys
            .create(&NewKey {
                app: "billing".into(),
                ..Default::default()
            })
            .unwrap();
        let ledger = Ledger::open(&path, LedgerConfig::default()).unwrap();
        let mut h = ledger.handle();
        let d0 = 19_700 * DAY_MS; // 2023-12-09
        h.record(rec(
            d0 + 1000,
            &k.id,
            "billing",
            "openai/gpt-4o-mini",
            100,
            10,
            0.5,
        ));
        h.record(rec(
            d0 + 2000,
            &k.id,
            "billing",
            "openai/gpt-4o",
            200,
            20,
            1.5,
        ));
        h.record(rec(
            d0 + DAY_MS,
            "key_gone",
            "search",
            "openai/gpt-4o",
            300,
            30,
            0.25,
        ));
        ledger.shutdown().unwrap();

        let by_app = usage_report(&path, GroupBy::App, None).unwrap();
        let lines: Vec<&str> = by_app.lines().collect();
        assert!(
            lines[0].starts_with("app")
                && lines[0].contains("requests")
                && lines[0].contains("cost_usd")
        );
        assert!(
            lines[1].starts_with("billing")
                && lines[1].contains(" 2 ")
                && lines[1].contains("300")
                && lines[1].contains("2.000000")
        );
        assert!(lines[2].starts_with("search") && lines[2].contains("0.250000"));
        assert!(
            lines[3].starts_with("total")
                && lines[3].contains(" 3 ")
                && lines[3].contains("600")
                && lines[3].contains("2.250000")
        );

        let by_key = usage_report(&path, GroupBy::Key, None).unwrap();
        assert!(by_key.contains(&format!("{} ({}…)", k.id, k.prefix)));
        assert!(by_key.contains("key_gone "));

        let by_day = usage_report(&path, GroupBy::Day, None).unwrap();
        let days: Vec<&str> = by_day
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().next().unwrap())
            .collect();
        assert_eq!(days, ["2023-12-09", "2023-12-10", "total"]);

        let by_model = usage_report(&path, GroupBy::Model, Some(d0 + DAY_MS)).unwrap();
        assert_eq!(by_model.lines().count(), 3);
        assert!(by_model
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("openai/gpt-4o "));

        assert!(matches!(
            usage_report(dir.path().join("missing.db"), GroupBy::App, None),
            Err(LedgerError::Open { .. })
        ));
        assert_eq!(GroupBy::parse("day"), Some(GroupBy::Day));
        assert_eq!(GroupBy::parse("week"), None);
    }
}
