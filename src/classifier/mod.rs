//! Routing brain: turns a request into a `Decision` (category, tier 1–4, who decided).
//! Order of authority: structure (tools, audio) > prompt-prefix override > model answer > rule scorer.
//! The per-core submit/await lives in `batcher`, the ONNX runtime in `model`, the fallback in `rules`.

pub mod batcher;
pub mod input;
pub mod model;
pub mod rules;
mod seqmax;
pub mod wordpiece;

pub use batcher::{
    BatchConfig, ClassifierHandle, ClassifierLink, ClassifierService, ClassifierStats,
    StatsSnapshot,
};
pub use input::{detect_override, ClassifyInput, Role, Turn};
pub use model::{Model, ModelError, ModelOutput};

/// Routing category; `as_str` gives the wire name used in headers, stats and `inspect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    SimpleChat,
    General,
    Coding,
    Reasoning,
    Creative,
    Data,
    Agentic,
    Transcription,
}

impl Category {
    /// All categories, in the model's output order (`category_probs[i]` is `ALL[i]`).
    pub const ALL: [Category; 8] = [
        Category::SimpleChat,
        Category::General,
        Category::Coding,
        Category::Reasoning,
        Category::Creative,
        Category::Data,
        Category::Agentic,
        Category::Transcription,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::SimpleChat => "simple_chat",
            Category::General => "general",
            Category::Coding => "coding",
            Category::Reasoning => "reasoning",
            Category::Creative => "creative",
            Category::Data => "data",
            Category::Agentic => "agentic",
            Category::Transcription => "transcription",
        }
    }

    /// Parses a wire name; `None` for anything else (case-sensitive, like the config keys).
    #[allow(clippy::should_implement_trait)]
    pub fn from_str(name: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// Position in `category_probs`.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::str::FromStr for Category {
    type Err = UnknownCategory;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Category::from_str(s).ok_or(UnknownCategory)
    }
}

/// `Category::from_str` got a name that is not one of the eight wire names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown category")]
pub struct UnknownCategory;

/// Who made the decision (the `decided_by` of `inspect`, the `X-TierFlow-Reason` prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecidedBy {
    Classifier,
    Rules,
    Override,
    Structure,
}

impl DecidedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            DecidedBy::Classifier => "classifier",
            DecidedBy::Rules => "rules",
            DecidedBy::Override => "override",
            DecidedBy::Structure => "structure",
        }
    }
}

/// The routing decision for one request. `tier` is 1..=4; tier >= 3 means a strong model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub category: Category,
    pub tier: u8,
    pub confidence: f32,
    pub decided_by: DecidedBy,
}

/// Thresholds on the model's `strong_prob` (difficulty) that split tiers 1|2|3|4. Tier >= 3 is
/// the strong model. Values follow classifier-train's recommendation (see models/README.md);
/// these defaults are used until it is read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TierThresholds {
    /// strong_prob below this: tier 1.
    pub t2: f32,
    /// strong_prob at or above this: strong model (tier 3).
    pub t3: f32,
    /// strong_prob at or above this: tier 4.
    pub t4: f32,
}

impl Default for TierThresholds {
    fn default() -> Self {
        TierThresholds {
            t2: 0.3071,
            t3: 0.4018,
            t4: 0.4781,
        }
    }
}

/// Maps the model's difficulty estimate and category to a tier in 1..=4.
pub fn tier_from_difficulty(strong_prob: f32, category: Category, th: &TierThresholds) -> u8 {
    // A broken model answer counts as borderline: the first strong tier.
    let p = if strong_prob.is_finite() {
        strong_prob
    } else {
        th.t3
    };
    let tier = if p >= th.t4 {
        4
    } else if p >= th.t3 {
        3
    } else if p >= th.t2 {
        2
    } else {
        1
    };
    clamp_tier_for(category, tier)
}

/// Category bounds on the tier: chit-chat never needs a strong model; code, reasoning and tool
/// use never go to the smallest one.
fn clamp_tier_for(category: Category, tier: u8) -> u8 {
    let (lo, hi) = match category {
        Category::SimpleChat => (1, 2),
        Category::Transcription => (1, 2),
        Category::Coding | Category::Reasoning => (2, 4),
        Category::Agentic => (1, 4),
        Category::General | Category::Creative | Category::Data => (1, 4),
    };
    tier.clamp(lo, hi)
}

/// Combines structure, prompt-prefix overrides, the model's answer (if it came in time) and the
/// rule scorer into one decision. `model_answer` is `None` when the classifier was late, full or
/// absent; then the rule scorer decides. Never panics, whatever the input.
pub fn decide(input: &ClassifyInput, model_answer: Option<ModelOutput>) -> Decision {
    decide_with(input, model_answer, &TierThresholds::default())
}

/// `decide` with explicit tier thresholds (from the model's README or the config).
pub fn decide_with(
    input: &ClassifyInput,
    model_answer: Option<ModelOutput>,
    th: &TierThresholds,
) -> Decision {
    // The difficulty of the request, for tiers of structural/override decisions too.
    let difficulty_tier = |category: Category| -> u8 {
        match model_answer {
            Some(m) => tier_from_difficulty(m.strong_prob, category, th),
            None => clamp_tier_for(category, rules::score(input).tier),
        }
    };
    if input.has_audio {
        return Decision {
            category: Category::Transcription,
            tier: 1,
            confidence: 1.0,
            decided_by: DecidedBy::Structure,
        };
    }
    if input.has_tools || input.turns.iter().any(|t| t.role == Role::Tool) {
        let tier = difficulty_tier(Category::Agentic).max(2);
        return Decision {
            category: Category::Agentic,
            tier,
            confidence: 1.0,
            decided_by: DecidedBy::Structure,
        };
    }
    if let Some(text) = input.latest_user_text() {
        if let Some((category, _)) = detect_override(text) {
            let tier = match category {
                Category::SimpleChat => 1,
                Category::Reasoning => 4,
                Category::Coding => difficulty_tier(category).max(3),
                _ => difficulty_tier(category),
            };
            return Decision {
                category,
                tier,
                confidence: 1.0,
                decided_by: DecidedBy::Override,
            };
        }
    }
    match model_answer {
        Some(m) => {
            let (best, p) = argmax(&m.probs);
            let category = Category::ALL[best];
            // The model never sees audio, so it cannot honestly say "transcription".
            let category = if category == Category::Transcription {
                Category::General
            } else {
                category
            };
            Decision {
                category,
                tier: tier_from_difficulty(m.strong_prob, category, th),
                confidence: if p.is_finite() {
                    p.clamp(0.0, 1.0)
                } else {
                    0.0
                },
                decided_by: DecidedBy::Classifier,
            }
        }
        None => {
            let r = rules::score(input);
            Decision {
                category: r.category,
                tier: clamp_tier_for(r.category, r.tier),
                confidence: r.confidence,
                decided_by: DecidedBy::Rules,
            }
        }
    }
}

fn argmax(p: &[f32; 8]) -> (usize, f32) {
    let mut best = 0;
    for i in 1..8 {
        // NaN never wins: comparisons with NaN are false.
        if p[i] > p[best] || p[best].is_nan() {
            best = i;
        }
    }
    (best, p[best])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(cat: Category, strong: f32) -> ModelOutput {
        let mut probs = [0.01; 8];
        probs[cat.index()] = 0.93;
        ModelOutput {
            probs,
            strong_prob: strong,
        }
    }

    #[test]
    fn category_names_round_trip() {
        for c in Category::ALL {
            assert_eq!(Category::from_str(c.as_str()), Some(c));
            assert_eq!(c.as_str().parse::<Category>(), Ok(c));
        }
        assert_eq!(Category::from_str("Coding"), None);
        assert_eq!(Category::ALL[Category::Data.index()], Category::Data);
    }

    #[test]
    fn structure_beats_override_and_model() {
        let mut input = ClassifyInput::from_prompt("/simple hi");
        input.has_tools = true;
        let d = decide(&input, Some(answer(Category::Creative, 0.1)));
        assert_eq!(
            (d.category, d.decided_by),
            (Category::Agentic, DecidedBy::Structure)
        );
        input.has_audio = true;
        let d = decide(&input, None);
        assert_eq!(
            (d.category, d.decided_by),
            (Category::Transcription, DecidedBy::Structure)
        );
    }

    #[test]
    fn tool_role_turn_is_agentic() {
        let input = ClassifyInput {
            system: vec![],
            turns: vec![
                Turn {
                    role: Role::User,
                    text: "what's the weather",
                },
                Turn {
                    role: Role::Assistant,
                    text: "",
                },
                Turn {
                    role: Role::Tool,
                    text: "{\"temp\": 20}",
                },
            ],
            has_tools: false,
            has_audio: false,
        };
        assert_eq!(decide(&input, None).category, Category::Agentic);
    }

    #[test]
    fn override_beats_model() {
        let input = ClassifyInput::from_prompt("/deep what is 2+2");
        let d = decide(&input, Some(answer(Category::SimpleChat, 0.0)));
        assert_eq!(
            (d.category, d.tier, d.decided_by),
            (Category::Reasoning, 4, DecidedBy::Override)
        );
        let d = decide(&ClassifyInput::from_prompt("/cheap prove Fermat"), None);
        assert_eq!((d.category, d.tier), (Category::SimpleChat, 1));
    }

    #[test]
    fn model_decides_when_present_rules_otherwise() {
        let input = ClassifyInput::from_prompt("write a sonnet about rust");
        let d = decide(&input, Some(answer(Category::Creative, 0.9)));
        assert_eq!(
            (d.category, d.tier, d.decided_by),
            (Category::Creative, 4, DecidedBy::Classifier)
        );
        assert!((d.confidence - 0.93).abs() < 1e-6);
        let d = decide(&input, None);
        assert_eq!(d.decided_by, DecidedBy::Rules);
        assert!((1..=4).contains(&d.tier));
    }

    #[test]
    fn tier_thresholds_and_clamps() {
        let th = TierThresholds::default();
        assert_eq!(tier_from_difficulty(0.0, Category::General, &th), 1);
        assert_eq!(tier_from_difficulty(0.35, Category::General, &th), 2);
        assert_eq!(tier_from_difficulty(0.45, Category::General, &th), 3);
        assert_eq!(tier_from_difficulty(0.99, Category::General, &th), 4);
        assert_eq!(tier_from_difficulty(0.99, Category::SimpleChat, &th), 2);
        assert_eq!(tier_from_difficulty(0.0, Category::Coding, &th), 2);
        assert_eq!(tier_from_difficulty(f32::NAN, Category::General, &th), 3);
    }

    #[test]
    fn nan_model_output_does_not_panic() {
        let input = ClassifyInput::from_prompt("hello");
        let m = ModelOutput {
            probs: [f32::NAN; 8],
            strong_prob: f32::NAN,
        };
        let d = decide(&input, Some(m));
        assert!((1..=4).contains(&d.tier));
        assert!(d.confidence >= 0.0 && d.confidence <= 1.0);
    }
}
