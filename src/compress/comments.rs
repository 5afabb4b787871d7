//! Pass 4 (off by default): full-line comments inside fenced code of a known language. Only
//! lines that are nothing but a comment go (trailing comments could sit inside a string);
//! shebangs, doc comments and tool directives stay, and so does any line with a protected range.

use super::{classify_lines, LineKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Syntax {
    /// `//` lines and `/* … */` blocks that start and end whole lines.
    Slash,
    /// `#` lines (Python docstrings are tracked so `#` inside them stays).
    Hash,
    /// `--` lines.
    DashDash,
}

fn syntax_of(lang: &str) -> Option<Syntax> {
    let l = lang.to_ascii_lowercase();
    Some(match l.as_str() {
        "rust" | "rs" | "c" | "h" | "cpp" | "c++" | "cc" | "hpp" | "cxx" | "java" | "js"
        | "javascript" | "jsx" | "ts" | "typescript" | "tsx" | "go" | "golang" | "kotlin"
        | "kt" | "swift" | "cs" | "csharp" | "c#" | "scala" | "dart" | "zig" | "groovy"
        | "proto" | "protobuf" | "solidity" => Syntax::Slash,
        "python" | "py" | "python3" | "sh" | "bash" | "zsh" | "shell" | "ruby" | "rb" | "yaml"
        | "yml" | "toml" | "perl" | "pl" | "r" | "dockerfile" | "makefile" | "make" | "cmake"
        | "nix" | "elixir" | "ex" | "powershell" | "ps1" => Syntax::Hash,
        "sql" | "lua" | "haskell" | "hs" | "elm" | "ada" => Syntax::DashDash,
        _ => return None,
    })
}

/// Comment lines that carry meaning for tools or readers of an API.
fn is_kept_comment(t: &str) -> bool {
    const KEEP: [&str; 14] = [
        "///",
        "//!",
        "//go:",
        "// +build",
        "//#",
        "// @ts-",
        "// eslint",
        "// prettier",
        "// SAFETY",
        "#!",
        "# -*-",
        "# type:",
        "# noqa",
        "# pragma",
    ];
    KEEP.iter().any(|k| t.starts_with(k)) || t.starts_with("/**") || t.starts_with("/*!")
}

/// The text without full-line comments in fenced code; `None` when nothing changes.
pub fn strip(text: &str, mark: Option<char>) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut in_block = false; // inside /* … */
    let mut in_docstring: Option<&str> = None; // Python """ or '''
    let mut changed = false;
    for (line, kind, lang) in classify_lines(text) {
        let syntax = if kind == LineKind::Code {
            syntax_of(lang)
        } else {
            None
        };
        let Some(syntax) = syntax else {
            in_block = false;
            in_docstring = None;
            out.push_str(line);
            continue;
        };
        let t = line.trim();
        let protected = mark.is_some_and(|m| line.contains(m));
        let drop = match syntax {
            Syntax::Slash => {
                if in_block {
                    if t.contains("*/") {
                        in_block = false;
                        // Code after the block's end stays.
                        t.ends_with("*/")
                    } else {
                        true
                    }
                } else if t.starts_with("//") {
                    !is_kept_comment(t)
                } else if t.starts_with("/*") && !is_kept_comment(t) {
                    match t.find("*/") {
                        Some(p) => p + 2 == t.len(),
                        None => {
                            in_block = true;
                            true
                        }
                    }
                } else {
                    false
                }
            }
            Syntax::Hash => {
                if let Some(q) = in_docstring {
                    if t.matches(q).count() % 2 == 1 {
                        in_docstring = None;
                    }
                    false
                } else {
                    for q in ["\"\"\"", "'''"] {
                        if t.matches(q).count() % 2 == 1 {
                            in_docstring = Some(q);
                        }
                    }
                    t.starts_with('#') && !is_kept_comment(t)
                }
            }
            Syntax::DashDash => t.starts_with("--") && !t.starts_with("---"),
        };
        if drop && !protected {
            changed = true;
        } else {
            out.push_str(line);
        }
    }
    (changed && out.len() < text.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: &str) -> String {
        strip(t, None).unwrap_or_else(|| t.to_string())
    }

    #[test]
    fn strips_only_full_line_comments_in_code() {
        let t = "// prose stays\n```rust\n// gone\n/// doc stays\nlet url = \"http://x\"; // trailing stays\n/* gone\n   too */\nfn f() {}\n```\n";
        assert_eq!(s(t), "// prose stays\n```rust\n/// doc stays\nlet url = \"http://x\"; // trailing stays\nfn f() {}\n```\n");
        let t = "```python\n#!/usr/bin/env python\n# gone\nx = 1  # stays\ns = \"\"\"\n# inside a docstring\n\"\"\"\n```\n";
        assert_eq!(s(t), "```python\n#!/usr/bin/env python\nx = 1  # stays\ns = \"\"\"\n# inside a docstring\n\"\"\"\n```\n");
        let t = "```c\n#include <stdio.h>\n// gone\n```\n";
        assert_eq!(s(t), "```c\n#include <stdio.h>\n```\n");
        let t = "```sql\n-- gone\nSELECT 1;\n```\n";
        assert_eq!(s(t), "```sql\nSELECT 1;\n```\n");
        assert!(strip("```\n// unknown language\n```\n", None).is_none());
    }

    #[test]
    fn protected_lines_stay() {
        let t = "```js\n// key \u{e000}0\u{e000}\n// gone\n```\n";
        assert_eq!(
            strip(t, Some('\u{e000}')).as_deref(),
            Some("```js\n// key \u{e000}0\u{e000}\n```\n")
        );
    }

    #[test]
    fn edge_inputs() {
        for t in [
            "",
            "```rust\n/*",
            "```py\n\"\"\"",
            "```rust\n*/\n",
            "```sh\n#\n#\n",
            "```rust\n/* é */ x\n日",
        ] {
            for i in 0..=t.len() {
                if t.is_char_boundary(i) {
                    let _ = strip(&t[..i], None);
                }
            }
        }
    }
}
