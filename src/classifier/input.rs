//! What the classifier looks at: `ClassifyInput` (borrowed from the parsed request), prompt-prefix
//! overrides, and the bounded "model text" built from a conversation. Parsing the request body is
//! the gateway's job; stripping the prefix before forwarding is the pipeline's.

use super::Category;

/// Who spoke a turn. Anything the gateway does not recognise maps to `User`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
    Tool,
}

/// One conversation turn: role and its text (text parts joined by the gateway, or the first part).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn<'a> {
    pub role: Role,
    pub text: &'a str,
}

/// Everything routing needs from a request, borrowed from the parsed body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClassifyInput<'a> {
    /// System / developer prompts, in order.
    pub system: Vec<&'a str>,
    /// Non-system turns, in order (oldest first).
    pub turns: Vec<Turn<'a>>,
    /// The request declares tools (or functions).
    pub has_tools: bool,
    /// The request carries audio input.
    pub has_audio: bool,
}

/// Default bound of the model text (the slot size of the batcher). The model sees 128 tokens;
/// 2 KiB keeps far more than 64 head and 64 tail tokens of any script.
pub const MODEL_TEXT_MAX_BYTES: usize = 2048;
/// Separator between the latest user turn and the excerpt of the one before (classifier-train's
/// `TURN_SEPARATOR`).
const TURN_SEPARATOR: &str = "\n\n";
/// Characters (Unicode scalar values) kept from the previous user turn (`PREV_TURN_CHARS`).
const PREV_TURN_CHARS: usize = 256;
/// Marker put where the middle of a long text was cut.
const CUT_MARKER: &str = " … ";

impl<'a> ClassifyInput<'a> {
    /// A single user turn, no system prompt, no tools, no audio (plain `{"prompt": ...}` input).
    pub fn from_prompt(prompt: &'a str) -> ClassifyInput<'a> {
        ClassifyInput {
            system: Vec::new(),
            turns: vec![Turn {
                role: Role::User,
                text: prompt,
            }],
            has_tools: false,
            has_audio: false,
        }
    }

    /// Text of the latest user turn; `None` when the conversation has no user turn.
    pub fn latest_user_text(&self) -> Option<&'a str> {
        self.turns
            .iter()
            .rev()
            .find(|t| t.role == Role::User)
            .map(|t| t.text)
    }

    /// Appends the text the model classifies to `out`, at most `max_bytes` bytes (never splits a
    /// character). Layout = classifier-train's `request_text` (models/README.md): the latest user
    /// turn (override prefix stripped), then "\n\n" and the first 256 characters of the user turn
    /// before it; system and assistant turns are ignored, so a long system prompt cannot drown the
    /// request. A latest turn too long for the budget is cut head+tail (the model keeps only its
    /// first and last 64 tokens anyway). Without any user turn, the last turn of any role is used.
    /// Does not allocate when `out` has `max_bytes` of spare capacity.
    pub fn write_model_text(&self, out: &mut String, max_bytes: usize) {
        let mut users = self.turns.iter().rev().filter(|t| t.role == Role::User);
        let (latest, previous) = match users.next() {
            Some(t) => (t.text, users.next().map(|t| t.text)),
            None => (self.turns.last().map(|t| t.text).unwrap_or(""), None),
        };
        let latest = match detect_override(latest) {
            Some((_, strip)) => &latest[strip..],
            None => latest,
        };
        // The excerpt of the previous turn, bounded to half the budget.
        let excerpt = previous.map(|p| {
            let chars_end = p
                .char_indices()
                .nth(PREV_TURN_CHARS)
                .map_or(p.len(), |(i, _)| i);
            let end = floor_char_boundary(
                p,
                chars_end.min((max_bytes / 2).saturating_sub(TURN_SEPARATOR.len())),
            );
            &p[..end]
        });
        let reserved = excerpt.map_or(0, |e| TURN_SEPARATOR.len() + e.len());
        push_head_tail(out, latest, max_bytes.saturating_sub(reserved));
        if let Some(e) = excerpt {
            if max_bytes >= reserved {
                out.push_str(TURN_SEPARATOR);
                out.push_str(e);
            }
        }
    }

    /// `write_model_text` into a new `String` bounded by `MODEL_TEXT_MAX_BYTES` (tools, tests).
    pub fn model_text(&self) -> String {
        let mut s = String::with_capacity(MODEL_TEXT_MAX_BYTES);
        self.write_model_text(&mut s, MODEL_TEXT_MAX_BYTES);
        s
    }
}

/// Appends `text` to `out` using at most `max_bytes`: whole if it fits, else its head (3/4) and
/// tail (1/4) around a cut marker. The start of a prompt says what is asked, the end often holds
/// the actual question after pasted material; the middle is the least informative.
pub fn push_head_tail(out: &mut String, text: &str, max_bytes: usize) {
    if text.len() <= max_bytes {
        out.push_str(text);
        return;
    }
    if max_bytes <= CUT_MARKER.len() + 8 {
        out.push_str(&text[..floor_char_boundary(text, max_bytes)]);
        return;
    }
    let room = max_bytes - CUT_MARKER.len();
    let head_end = floor_char_boundary(text, room * 3 / 4);
    let tail_len = room - head_end;
    let tail_start = ceil_char_boundary(text, text.len() - tail_len);
    out.push_str(&text[..head_end]);
    out.push_str(CUT_MARKER);
    out.push_str(&text[tail_start..]);
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_char_boundary(s: &str, mut i: usize) -> usize {
    while i < s.len() && !s.is_char_boundary(i) {
        i += 1;
    }
    i.min(s.len())
}

/// The override prefixes and the category each forces.
const OVERRIDES: [(&str, Category); 9] = [
    ("/simple", Category::SimpleChat),
    ("/basic", Category::SimpleChat),
    ("/cheap", Category::SimpleChat),
    ("/code", Category::Coding),
    ("/advanced", Category::Coding),
    ("/max", Category::Reasoning),
    ("/think", Category::Reasoning),
    ("/deep", Category::Reasoning),
    ("/creative", Category::Creative),
];

/// Detects a routing prefix such as `/code` at the start of a user turn (leading whitespace
/// allowed, ASCII case-insensitive, must be followed by whitespace or the end). Returns the forced
/// category and how many bytes to strip: leading whitespace, the prefix, and the whitespace after
/// it. `None` when the text does not start with a known prefix (`/coder`, `/etc/passwd` ...).
pub fn detect_override(text: &str) -> Option<(Category, usize)> {
    let lead = text.len() - text.trim_start().len();
    let rest = &text.as_bytes()[lead..];
    if rest.first() != Some(&b'/') {
        return None;
    }
    for (prefix, category) in OVERRIDES {
        let p = prefix.as_bytes();
        if rest.len() >= p.len() && rest[..p.len()].eq_ignore_ascii_case(p) {
            let after = &text[lead + p.len()..];
            let ws = after.len() - after.trim_start().len();
            if after.is_empty() || ws > 0 {
                return Some((category, lead + p.len() + ws));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_detected_and_stripped() {
        let cases = [
            ("/simple hi", Category::SimpleChat, "hi"),
            ("/basic   what", Category::SimpleChat, "what"),
            ("/cheap\nx", Category::SimpleChat, "x"),
            ("/code write a parser", Category::Coding, "write a parser"),
            ("/advanced do it", Category::Coding, "do it"),
            ("/max prove it", Category::Reasoning, "prove it"),
            ("/think hard", Category::Reasoning, "hard"),
            ("  /DEEP\tdive", Category::Reasoning, "dive"),
            ("/creative a poem", Category::Creative, "a poem"),
            ("/code", Category::Coding, ""),
        ];
        for (text, cat, rest) in cases {
            let (c, n) = detect_override(text).unwrap_or_else(|| panic!("no override in {text:?}"));
            assert_eq!(c, cat, "{text:?}");
            assert_eq!(&text[n..], rest, "{text:?}");
        }
    }

    #[test]
    fn non_overrides_ignored() {
        for text in [
            "/coder x",
            "/etc/passwd",
            "code /code",
            "",
            "/",
            "//code x",
            "/simple-minded",
            "/créative x",
        ] {
            assert_eq!(detect_override(text), None, "{text:?}");
        }
    }

    #[test]
    fn override_detection_never_panics_on_any_prefix_of_multibyte_text() {
        let text = "/deep é漢字🦀 done";
        for i in 0..=text.len() {
            if text.is_char_boundary(i) {
                let _ = detect_override(&text[..i]);
                let _ = detect_override(&text[i..]);
            }
        }
    }

    #[test]
    fn head_tail_truncation_keeps_both_ends_on_char_boundaries() {
        let text: String = "début ".to_string() + &"漢字🦀é".repeat(500) + " the actual question?";
        for max in [0, 1, 5, 11, 12, 40, 100, 257, 1000, 2048] {
            let mut out = String::new();
            push_head_tail(&mut out, &text, max);
            assert!(out.len() <= max, "max {max} got {}", out.len());
            if max >= 100 {
                assert!(out.starts_with("début"), "{out:?}");
                assert!(out.ends_with("question?"), "{out:?}");
                assert!(out.contains(CUT_MARKER));
            }
        }
        let mut out = String::new();
        push_head_tail(&mut out, "short", 100);
        assert_eq!(out, "short");
    }

    #[test]
    fn model_text_matches_training_layout() {
        let system = "You are a helpful assistant. ".repeat(400);
        let earlier = "é".repeat(300);
        let input = ClassifyInput {
            system: vec![&system],
            turns: vec![
                Turn {
                    role: Role::User,
                    text: "first question",
                },
                Turn {
                    role: Role::User,
                    text: &earlier,
                },
                Turn {
                    role: Role::Assistant,
                    text: "Lifetimes are ...",
                },
                Turn {
                    role: Role::User,
                    text: "/code now write a borrow checker example",
                },
            ],
            has_tools: false,
            has_audio: false,
        };
        let text = input.model_text();
        // latest turn (prefix stripped) + "\n\n" + first 256 chars of the previous user turn.
        assert_eq!(
            text,
            format!("now write a borrow checker example\n\n{}", "é".repeat(256))
        );
        let one = ClassifyInput::from_prompt("just this");
        assert_eq!(one.model_text(), "just this");
    }

    #[test]
    fn model_text_is_bounded_for_huge_inputs() {
        let big = "x".repeat(1 << 20);
        let turns: Vec<Turn> = (0..50)
            .map(|_| Turn {
                role: Role::User,
                text: &big,
            })
            .collect();
        let input = ClassifyInput {
            system: vec![&big, &big],
            turns,
            has_tools: false,
            has_audio: false,
        };
        for max in [0, 10, 64, 512, 2048] {
            let mut s = String::new();
            input.write_model_text(&mut s, max);
            assert!(s.len() <= max, "max {max} got {}", s.len());
        }
        let empty = ClassifyInput::default();
        assert_eq!(empty.model_text(), "");
        assert_eq!(empty.latest_user_text(), None);
    }

    #[test]
    fn write_model_text_appends_without_reallocating() {
        let input = ClassifyInput::from_prompt("hello there");
        let mut s = String::with_capacity(64);
        s.push_str("ab");
        let cap = s.capacity();
        input.write_model_text(&mut s, 62);
        assert_eq!(s, "abhello there");
        assert_eq!(s.capacity(), cap);
    }
}
