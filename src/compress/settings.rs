//! The `compression` section of the config file: `RawCompression` as written, resolved into
//! `CompressionSettings` (which passes run for which category). `config.rs` embeds both; the
//! pipeline's `compress` stage asks `for_category`.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::{CompressConfig, Pass};

/// Passes on by default: the ones that only drop bytes a model does not read (terminal escapes,
/// trailing blanks and blank-line runs outside code, JSON layout). Folding and de-duplication
/// rewrite text into references, and comment stripping removes words: opt-in.
pub const DEFAULT_PASSES: [Pass; 3] = [Pass::Ansi, Pass::Whitespace, Pass::Json];

/// `"compression": {...}` — CtxPack context compression of message text. Defaults: on, passes
/// `ansi`, `whitespace`, `json` for every category.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCompression {
    /// Default true. `false`: every request is forwarded with its text as the client sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Passes for categories not listed in `categories`; default `["ansi", "whitespace", "json"]`.
    /// Names: `ansi`, `whitespace`, `json`, `comments`, `stack_traces`, `dedup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passes: Option<Vec<String>>,
    /// Category -> its own pass list (`[]`: no compression for that category).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub categories: BTreeMap<String, Vec<String>>,
    /// Blank lines kept in a row by `whitespace` (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_blank_lines: Option<usize>,
    /// A frame (or log line) repeated this many times in a row is folded by `stack_traces`
    /// (default 3, at least 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fold_min_repeats: Option<usize>,
    /// Smallest block `dedup` replaces by a reference, in bytes (default 120).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup_min_block_bytes: Option<usize>,
}

/// The resolved section: one engine config per category that compresses.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CompressionSettings {
    default: Option<CompressConfig>,
    categories: HashMap<String, Option<CompressConfig>>,
}

/// A bad `compression` section: the dotted key and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("at `{key}`: {message}")]
pub struct SettingsError {
    pub key: String,
    pub message: String,
}

impl CompressionSettings {
    /// Compression off everywhere.
    pub fn off() -> CompressionSettings {
        CompressionSettings::default()
    }

    /// The passes for a request of `category`; `None` when nothing runs for it.
    pub fn for_category(&self, category: &str) -> Option<&CompressConfig> {
        match self.categories.get(category) {
            Some(c) => c.as_ref(),
            None => self.default.as_ref(),
        }
    }

    /// Resolves the raw section (`None`: the defaults). `known_categories` are the names a
    /// `categories` key may take.
    pub fn resolve(
        raw: Option<&RawCompression>,
        known_categories: &[&str],
    ) -> Result<CompressionSettings, SettingsError> {
        let empty = RawCompression::default();
        let raw = raw.unwrap_or(&empty);
        if !raw.enabled.unwrap_or(true) {
            return Ok(CompressionSettings::off());
        }
        let err = |key: String, message: String| SettingsError { key, message };
        let mut base = CompressConfig::none();
        let d = CompressConfig::default();
        base.max_blank_lines = raw.max_blank_lines.unwrap_or(d.max_blank_lines);
        base.fold_min_repeats = raw.fold_min_repeats.unwrap_or(d.fold_min_repeats);
        if base.fold_min_repeats < 2 {
            return Err(err(
                "compression.fold_min_repeats".into(),
                "must be at least 2".into(),
            ));
        }
        base.dedup_min_block_bytes = raw.dedup_min_block_bytes.unwrap_or(d.dedup_min_block_bytes);
        let with_passes = |names: &[String],
                           key: &str|
         -> Result<Option<CompressConfig>, SettingsError> {
            let mut c = base.clone();
            for (i, n) in names.iter().enumerate() {
                let p = Pass::from_name(n).ok_or_else(|| {
                    err(
                        format!("{key}[{i}]"),
                        format!(
                            "unknown pass `{n}` (known: ansi, whitespace, json, comments, stack_traces, dedup)"
                        ),
                    )
                })?;
                c.set(p, true);
            }
            Ok(Pass::ALL.iter().any(|p| c.enabled(*p)).then_some(c))
        };
        let default = match &raw.passes {
            Some(names) => with_passes(names, "compression.passes")?,
            None => {
                let names: Vec<String> = DEFAULT_PASSES
                    .iter()
                    .map(|p| p.as_str().to_string())
                    .collect();
                with_passes(&names, "compression.passes")?
            }
        };
        let mut categories = HashMap::new();
        for (cat, names) in &raw.categories {
            let key = format!("compression.categories.{cat}");
            if !known_categories.contains(&cat.as_str()) {
                return Err(err(key, format!("unknown category `{cat}`")));
            }
            categories.insert(cat.clone(), with_passes(names, &key)?);
        }
        Ok(CompressionSettings {
            default,
            categories,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CATS: [&str; 3] = ["general", "coding", "creative"];

    fn raw(json: &str) -> RawCompression {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn defaults_are_the_lossless_passes() {
        let s = CompressionSettings::resolve(None, &CATS).unwrap();
        let c = s.for_category("coding").unwrap();
        for p in Pass::ALL {
            assert_eq!(c.enabled(p), DEFAULT_PASSES.contains(&p), "{}", p.as_str());
        }
        assert_eq!(c.max_blank_lines, 2);
    }

    #[test]
    fn per_category_lists_and_off() {
        let r = raw(
            r#"{"passes": ["ansi"], "categories": {"creative": [], "coding": ["dedup", "stack_traces"]}, "fold_min_repeats": 4}"#,
        );
        let s = CompressionSettings::resolve(Some(&r), &CATS).unwrap();
        assert!(s.for_category("creative").is_none());
        let c = s.for_category("coding").unwrap();
        assert!(c.dedup && c.stack_traces && !c.ansi && c.fold_min_repeats == 4);
        let g = s.for_category("general").unwrap();
        assert!(g.ansi && !g.whitespace);
        let off = CompressionSettings::resolve(Some(&raw(r#"{"enabled": false}"#)), &CATS).unwrap();
        assert!(off.for_category("general").is_none());
        let none = CompressionSettings::resolve(Some(&raw(r#"{"passes": []}"#)), &CATS).unwrap();
        assert!(none.for_category("general").is_none());
    }

    #[test]
    fn errors_name_the_dotted_key() {
        let e = CompressionSettings::resolve(Some(&raw(r#"{"passes": ["ansi", "zip"]}"#)), &CATS)
            .unwrap_err();
        assert_eq!(e.key, "compression.passes[1]");
        let e = CompressionSettings::resolve(Some(&raw(r#"{"categories": {"nope": []}}"#)), &CATS)
            .unwrap_err();
        assert_eq!(e.key, "compression.categories.nope");
        let e =
            CompressionSettings::resolve(Some(&raw(r#"{"categories": {"coding": ["x"]}}"#)), &CATS)
                .unwrap_err();
        assert_eq!(e.key, "compression.categories.coding[0]");
        let e = CompressionSettings::resolve(Some(&raw(r#"{"fold_min_repeats": 1}"#)), &CATS)
            .unwrap_err();
        assert_eq!(e.key, "compression.fold_min_repeats");
        assert!(serde_json::from_str::<RawCompression>(r#"{"pases": []}"#).is_err());
    }
}
