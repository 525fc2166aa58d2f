//! Model-name patterns of `prices.toml`: exact names or `*` globs, matched case-insensitively.

use std::borrow::Cow;

/// A model pattern: literal text with `*` wildcards (any run of characters, also none).
/// Stored lower-cased and split at the wildcards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPattern {
    raw: String,
    /// The literal pieces between wildcards: `claude-sonnet-4-5*` is `["claude-sonnet-4-5", ""]`;
    /// a pattern without `*` is one piece.
    parts: Vec<String>,
}

impl ModelPattern {
    /// Parses a pattern; the error is the reason, for the caller to put next to the field name.
    pub fn parse(raw: &str) -> Result<ModelPattern, &'static str> {
        if raw.is_empty() {
            return Err("must not be empty");
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must not contain spaces or control characters");
        }
        if raw.contains("**") {
            return Err("`**` is the same as `*`: write one");
        }
        let lower = raw.to_ascii_lowercase();
        let parts = lower.split('*').map(str::to_string).collect();
        Ok(ModelPattern {
            raw: raw.to_string(),
            parts,
        })
    }

    /// The pattern as written in the file.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// How specific the pattern is: the number of literal (non-`*`) characters. Where several
    /// patterns match a model, the most specific one wins.
    pub fn specificity(&self) -> usize {
        self.parts.iter().map(String::len).sum()
    }

    /// Whether the pattern has no wildcard.
    pub fn is_exact(&self) -> bool {
        self.parts.len() == 1
    }

    /// Whether `model` matches, ignoring ASCII case.
    pub fn matches(&self, model: &str) -> bool {
        let model = lower(model);
        glob(&self.parts, &model)
    }
}

/// `model` in lower case, borrowed when it already is.
pub(super) fn lower(model: &str) -> Cow<'_, str> {
    if model.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(model.to_ascii_lowercase())
    } else {
        Cow::Borrowed(model)
    }
}

/// `*`-glob match of lower-cased pieces against a lower-cased name. The first piece anchors the
/// start, the last the end; the middle pieces are found left to right, which is exact for
/// patterns whose only wildcard is `*`.
fn glob(parts: &[String], name: &str) -> bool {
    let [first, middle @ .., last] = parts else {
        return parts.first().is_some_and(|only| only == name);
    };
    if name.len() < first.len().saturating_add(last.len())
        || !name.starts_with(first.as_str())
        || !name.ends_with(last.as_str())
    {
        return false;
    }
    let Some(mut rest) = name.get(first.len()..name.len().saturating_sub(last.len())) else {
        return false;
    };
    for piece in middle {
        match rest.find(piece.as_str()) {
            Some(at) => match rest.get(at.saturating_add(piece.len())..) {
                Some(after) => rest = after,
                None => return false,
            },
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_documented() {
        let cases = [
            ("claude-sonnet-4-5*", "claude-sonnet-4-5", true),
            ("claude-sonnet-4-5*", "claude-sonnet-4-5-20250929", true),
            ("claude-sonnet-4-5*", "CLAUDE-Sonnet-4-5-20250929", true),
            ("claude-sonnet-4-5*", "claude-sonnet-4-6", false),
            ("claude-sonnet-4-5*", "x-claude-sonnet-4-5", false),
            ("gpt-5", "gpt-5", true),
            ("gpt-5", "gpt-5-mini", false),
            ("gpt-5-20*", "gpt-5-2025-08-07", true),
            ("gpt-5-20*", "gpt-5-mini-2025-08-07", false),
            ("*-mini", "o4-mini", true),
            ("*-mini", "mini", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "a-b-c", true),
            ("a*b*c", "acb", false),
            ("a*b*c", "abcb", false),
            ("ab*ba", "aba", false),
            ("ab*ba", "abba", true),
            ("*", "", true),
            ("*", "anything", true),
            ("gemini-*-flash", "gemini-2.5-flash", true),
            ("gemini-*-flash", "gemini-2.5-flash-lite", false),
        ];
        for (pattern, model, want) in cases {
            let p = ModelPattern::parse(pattern).unwrap();
            assert_eq!(p.matches(model), want, "{pattern} vs {model}");
        }
    }

    #[test]
    fn specificity_counts_literal_characters() {
        let spec = |p: &str| ModelPattern::parse(p).unwrap().specificity();
        assert_eq!(spec("gpt-5*"), 5);
        assert_eq!(spec("gpt-5-mini*"), 10);
        assert_eq!(spec("*"), 0);
        assert!(ModelPattern::parse("gpt-5").unwrap().is_exact());
        assert!(!ModelPattern::parse("gpt-5*").unwrap().is_exact());
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in ["", "gpt 5", "gpt-5**", "a\tb"] {
            assert!(ModelPattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn non_ascii_names_do_not_panic() {
        let p = ModelPattern::parse("é*ü").unwrap();
        assert!(p.matches("éü"));
        assert!(p.matches("éxü"));
        assert!(!p.matches("é"));
        assert!(!ModelPattern::parse("ab*").unwrap().matches("a"));
    }
}
