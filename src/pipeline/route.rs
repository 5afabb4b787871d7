//! Route stage: turns the request's `model` field (and `route` options, prompt prefixes, and the
//! classifier's decision once it runs) into an ordered chain of upstream targets, with the
//! category, tier and reason every response reports.

use crate::config::{default_tier, Config, TargetId};
use crate::error::GatewayError;

use super::parse::ChatRequest;

/// One upstream to try: a configured target, or an explicit `provider/model` the config does not list.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteTarget {
    Configured(TargetId),
    Explicit { provider: usize, model: String },
}

impl RouteTarget {
    pub fn provider(&self, cfg: &Config) -> usize {
        match self {
            RouteTarget::Configured(t) => cfg.targets[*t].provider,
            RouteTarget::Explicit { provider, .. } => *provider,
        }
    }

    pub fn model<'c>(&'c self, cfg: &'c Config) -> &'c str {
        match self {
            RouteTarget::Configured(t) => &cfg.targets[*t].model,
            RouteTarget::Explicit { model, .. } => model,
        }
    }

    /// `provider/model`.
    pub fn name(&self, cfg: &Config) -> String {
        match self {
            RouteTarget::Configured(t) => cfg.targets[*t].name.clone(),
            RouteTarget::Explicit { provider, model } => {
                format!("{}/{}", cfg.providers[*provider].name, model)
            }
        }
    }

    pub fn price(&self, cfg: &Config) -> Option<crate::config::RawPrice> {
        match self {
            RouteTarget::Configured(t) => cfg.targets[*t].price,
            RouteTarget::Explicit { provider, model } => cfg
                .raw
                .prices
                .get(&format!("{}/{}", cfg.providers[*provider].name, model))
                .or_else(|| cfg.raw.prices.get(model))
                .copied()
                .or_else(|| crate::config::builtin_price(model)),
        }
    }
}

/// Who made the routing decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecidedBy {
    Classifier,
    Rules,
    Override,
    Structure,
    /// The client named the model, tier or route itself.
    Client,
    /// No classifier ran: the configured default category.
    Default,
}

impl DecidedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            DecidedBy::Classifier => "classifier",
            DecidedBy::Rules => "rules",
            DecidedBy::Override => "override",
            DecidedBy::Structure => "structure",
            DecidedBy::Client => "client",
            DecidedBy::Default => "default",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RouteDecision {
    pub targets: Vec<RouteTarget>,
    pub category: &'static str,
    pub tier: u8,
    /// Short machine-readable reason, e.g. `auto:default`, `tier-2`, `route:flow/x`, `explicit`, `alias`.
    pub reason: String,
    pub decided_by: DecidedBy,
    /// Bytes of a forcing prompt prefix (`/code …`) to strip from the latest user message.
    pub strip_prefix: Option<usize>,
    pub timeout_ms: Option<u64>,
    /// Whether fallbacks may be tried (`route.fallback`).
    pub fallback: bool,
    /// `route.latency_budget_ms`: prefer a target whose recent time to first byte fits.
    pub latency_budget_ms: Option<u64>,
}

/// Prompt prefixes that force a category; returns the category and the bytes to strip
/// (prefix plus following whitespace).
pub fn detect_prefix(text: &str) -> Option<(&'static str, usize)> {
    const PREFIXES: [(&str, &str); 9] = [
        ("/simple", "simple_chat"),
        ("/basic", "simple_chat"),
        ("/cheap", "simple_chat"),
        ("/code", "coding"),
        ("/advanced", "coding"),
        ("/max", "reasoning"),
        ("/think", "reasoning"),
        ("/deep", "reasoning"),
        ("/creative", "creative"),
    ];
    let trimmed = text.trim_start();
    let lead = text.len() - trimmed.len();
    for (p, cat) in PREFIXES {
        if let Some(rest) = trimmed.strip_prefix(p) {
            if rest.is_empty() || rest.starts_with(char::is_whitespace) {
                let ws = rest.len() - rest.trim_start().len();
                return Some((cat, lead + p.len() + ws));
            }
        }
    }
    None
}

fn category_static(name: &str) -> &'static str {
    crate::config::CATEGORIES
        .iter()
        .copied()
        .find(|c| *c == name)
        .unwrap_or("general")
}

/// Resolves the request's model to a chain. `Err` is 404 for unknown names.
/// `auto` is the classifier's decision for `model: auto` (structure, prefix, model or rules);
/// without one, `auto` falls back to prefixes, structure and the configured default category.
pub fn resolve(
    cfg: &Config,
    req: &ChatRequest<'_>,
    auto: Option<&crate::classifier::Decision>,
) -> Result<RouteDecision, GatewayError> {
    let model = req.model.as_ref();
    let fallback = req.route.fallback.unwrap_or(true);
    let from_chain = |chain: &crate::config::Chain| {
        chain
            .targets
            .iter()
            .map(|&t| RouteTarget::Configured(t))
            .collect::<Vec<_>>()
    };
    let not_found = |what: String| GatewayError::NotFound {
        message: what,
        param: Some("model".into()),
        code: "model_not_found",
    };

    if cfg.is_auto_model(model) {
        let latest_user = req.messages.iter().rev().find(|m| m.role == "user");
        let prefix = latest_user.and_then(|m| detect_prefix(&m.text));
        let (category, decided_by, strip) = if let Some(d) = auto {
            let by = match d.decided_by {
                crate::classifier::DecidedBy::Classifier => DecidedBy::Classifier,
                crate::classifier::DecidedBy::Rules => DecidedBy::Rules,
                crate::classifier::DecidedBy::Override => DecidedBy::Override,
                crate::classifier::DecidedBy::Structure => DecidedBy::Structure,
            };
            (d.category.as_str(), by, prefix.map(|(_, n)| n))
        } else if let Some((cat, n)) = prefix {
            (cat, DecidedBy::Override, Some(n))
        } else if req.has_audio {
            ("transcription", DecidedBy::Structure, None)
        } else if req.has_tools {
            ("agentic", DecidedBy::Structure, None)
        } else {
            (
                category_static(&cfg.default_category),
                DecidedBy::Default,
                None,
            )
        };
        let tier = req
            .route
            .tier
            .unwrap_or_else(|| auto.map_or_else(|| default_tier(category), |d| d.tier.clamp(1, 4)));
        let chain = if req.route.tier.is_some() {
            cfg.chain_for_tier(tier)
        } else {
            cfg.chain_for_category(category, tier)
        }
        .ok_or_else(|| {
            not_found(
                "no upstream is configured for `auto`: add tiers or categories to the config"
                    .into(),
            )
        })?;
        return Ok(RouteDecision {
            targets: from_chain(chain),
            category,
            tier,
            reason: format!("auto:{}", decided_by.as_str()),
            decided_by,
            strip_prefix: strip,
            timeout_ms: chain.timeout_ms,
            fallback,
            latency_budget_ms: req.route.latency_budget_ms,
        });
    }
    if let Some(t) = model.strip_prefix("tier-") {
        let tier = match t.parse::<u8>() {
            Ok(n @ 1..=4) => n,
            _ => {
                return Err(not_found(format!(
                    "unknown model `{model}`: tiers are tier-1 to tier-4"
                )))
            }
        };
        let chain = cfg
            .chain_for_tier(tier)
            .ok_or_else(|| not_found(format!("no upstream is configured for `{model}`")))?;
        return Ok(RouteDecision {
            targets: from_chain(chain),
            category: category_static(&cfg.default_category),
            tier,
            reason: format!("tier-{tier}"),
            decided_by: DecidedBy::Client,
            strip_prefix: None,
            timeout_ms: chain.timeout_ms,
            fallback,
            latency_budget_ms: req.route.latency_budget_ms,
        });
    }
    if let Some(chain) = cfg.routes.get(model) {
        return Ok(RouteDecision {
            targets: from_chain(chain),
            category: category_static(&cfg.default_category),
            tier: req.route.tier.unwrap_or(2),
            reason: format!("route:{model}"),
            decided_by: DecidedBy::Client,
            strip_prefix: None,
            timeout_ms: chain.timeout_ms,
            fallback,
            latency_budget_ms: req.route.latency_budget_ms,
        });
    }
    let single = |t: RouteTarget, reason: &str| RouteDecision {
        targets: vec![t],
        category: category_static(&cfg.default_category),
        tier: req.route.tier.unwrap_or(2),
        reason: reason.to_string(),
        decided_by: DecidedBy::Client,
        strip_prefix: None,
        timeout_ms: None,
        fallback,
        latency_budget_ms: req.route.latency_budget_ms,
    };
    if let Some((provider, m)) = cfg.explicit_target(model) {
        let name = format!("{}/{}", cfg.providers[provider].name, m);
        let t = match cfg.target_index.get(&name) {
            Some(&id) => RouteTarget::Configured(id),
            None => RouteTarget::Explicit {
                provider,
                model: m.to_string(),
            },
        };
        return Ok(single(t, "explicit"));
    }
    if let Some(id) = cfg.target_for_bare_name(model) {
        return Ok(single(RouteTarget::Configured(id), "alias"));
    }
    Err(not_found(format!(
        "unknown model `{}`: use auto, tier-1..tier-4, a named route, provider/model, or a configured alias",
        model.chars().take(100).collect::<String>()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(detect_prefix("/code write a parser"), Some(("coding", 6)));
        assert_eq!(detect_prefix("  /think\n\nwhy?"), Some(("reasoning", 10)));
        assert_eq!(detect_prefix("/codex is a tool"), None);
        assert_eq!(detect_prefix("/simple"), Some(("simple_chat", 7)));
        assert_eq!(detect_prefix("no prefix"), None);
    }

    #[test]
    fn auto_models_are_classified_like_auto() {
        let raw = crate::config::parse_raw(
            r#"{"providers": {"a": {"baseUrl": "http://127.0.0.1:9/v1", "models": ["small", "big"]}},
                "tiers": {"1": {"primary": "a/small"}, "2": {"primary": "a/small"},
                          "3": {"primary": "a/big"}, "4": {"primary": "a/big"}},
                "aliases": {"gpt-4o-mini": "a/small"},
                "routing": {"auto_models": ["gpt-4o-mini"]}}"#,
            "test",
        )
        .expect("parses");
        let cfg = Config::resolve(raw, &Default::default(), "test".into()).expect("resolves");
        assert!(cfg.is_auto_model("auto") && cfg.is_auto_model("gpt-4o-mini"));
        assert!(!cfg.is_auto_model("a/small"));
        let mut body =
            br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#.to_vec();
        let req = crate::pipeline::parse::parse_chat_request(&mut body).expect("valid");
        let hard = crate::classifier::Decision {
            category: crate::classifier::Category::Reasoning,
            tier: 4,
            confidence: 0.9,
            decided_by: crate::classifier::DecidedBy::Classifier,
        };
        let d = resolve(&cfg, &req, Some(&hard)).expect("routes");
        assert_eq!(d.targets[0].name(&cfg), "a/big");
        assert!(d.reason.starts_with("auto:"));
    }
}
