//! Secret scrubbing for everything llmtap logs: header allowlist, key-shaped strings, URL query values.

use regex::{Captures, Regex, RegexSet};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// What a redacted value is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Headers that carry credentials: redacted whatever the allowlist says.
pub const ALWAYS_REDACTED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "cookie",
    "set-cookie",
];

/// The shipped rules; also the default when no config dir is given.
pub const EMBEDDED_CONFIG: &str = include_str!("../addons-config/redaction.toml");

/// Name of the capture group that, when present, is the only part of a match replaced.
const SECRET_GROUP: &str = "secret";

/// Wire form of `addons-config/redaction.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactionConfig {
    /// Header names logged as-is (case-insensitive; a trailing `*` matches a prefix).
    #[serde(default)]
    pub safe_headers: Vec<String>,
    /// Header names redacted in addition to [`ALWAYS_REDACTED_HEADERS`].
    #[serde(default)]
    pub redacted_headers: Vec<String>,
    /// Query parameters whose values are replaced in URLs (case-insensitive).
    #[serde(default)]
    pub redacted_query_params: Vec<String>,
    /// Regexes scrubbed from bodies, header values and URLs.
    #[serde(default)]
    pub body_patterns: Vec<BodyPattern>,
}

/// One named scrub pattern.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BodyPattern {
    pub name: String,
    pub regex: String,
}

/// Why redaction rules could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RedactError {
    #[error("cannot read redaction config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot parse redaction config: {0}")]
    Parse(#[from] toml::de::Error),
    /// Every bad entry, not only the first.
    #[error("invalid redaction config: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

impl RedactionConfig {
    /// Parses the TOML text of a redaction config.
    pub fn from_toml(text: &str) -> Result<Self, RedactError> {
        Ok(toml::from_str(text)?)
    }

    /// Reads and parses a redaction config file.
    pub fn load(path: &Path) -> Result<Self, RedactError> {
        let text = std::fs::read_to_string(path).map_err(|source| RedactError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Used only if the embedded file failed to parse (a unit test guards against that):
    /// redact every header and still scrub the most common key shapes.
    fn fallback() -> Self {
        let patterns = [
            ("anthropic_key", r"sk-ant-[A-Za-z0-9_\-]{8,}"),
            ("sk_key", r"(?-u:\b)sk-[A-Za-z0-9_\-]{20,}"),
            ("google_api_key", r"AIza[0-9A-Za-z_\-]{35}"),
            (
                "bearer_token",
                r"(?i)(?-u:\b)bearer\s+(?P<secret>[A-Za-z0-9._~+/\-]+=*)",
            ),
        ];
        RedactionConfig {
            safe_headers: Vec::new(),
            redacted_headers: Vec::new(),
            redacted_query_params: vec!["key".into(), "api_key".into(), "token".into()],
            body_patterns: patterns
                .iter()
                .map(|(name, regex)| BodyPattern {
                    name: (*name).to_owned(),
                    regex: (*regex).to_owned(),
                })
                .collect(),
        }
    }
}

impl Default for RedactionConfig {
    /// The embedded `addons-config/redaction.toml`.
    fn default() -> Self {
        match Self::from_toml(EMBEDDED_CONFIG) {
            Ok(config) => config,
            Err(error) => {
                tracing::error!(%error, "embedded redaction config is invalid; redacting all headers");
                Self::fallback()
            }
        }
    }
}

/// Compiled redaction rules, built once at start-up and shared (`Arc`) by every exchange.
#[derive(Debug, Clone)]
pub struct Redactor {
    safe_exact: HashSet<String>,
    safe_prefixes: Vec<String>,
    always_redacted: HashSet<String>,
    query_params: HashSet<String>,
    /// Cheap "does anything match" test, so clean text is returned borrowed.
    set: RegexSet,
    /// Same patterns, same order as `set`, for the replacement pass.
    patterns: Vec<Regex>,
}

impl Redactor {
    /// Compiles the rules; every invalid pattern or header name is reported, by name.
    pub fn new(config: &RedactionConfig) -> Result<Redactor, RedactError> {
        let mut problems = Vec::new();
        let mut patterns = Vec::with_capacity(config.body_patterns.len());
        for pattern in &config.body_patterns {
            match Regex::new(&pattern.regex) {
                Ok(regex) => patterns.push(regex),
                Err(error) => problems.push(format!(
                    "body pattern {:?} ({}): {error}",
                    pattern.name, pattern.regex
                )),
            }
        }
        let (safe_exact, safe_prefixes) = split_safe_headers(&config.safe_headers, &mut problems);
        if !problems.is_empty() {
            return Err(RedactError::Invalid(problems));
        }
        let set = RegexSet::new(patterns.iter().map(Regex::as_str))
            .map_err(|error| RedactError::Invalid(vec![format!("body patterns: {error}")]))?;
        let always_redacted = ALWAYS_REDACTED_HEADERS
            .iter()
            .map(|name| (*name).to_owned())
            .chain(
                config
                    .redacted_headers
                    .iter()
                    .map(|h| h.trim().to_ascii_lowercase()),
            )
            .collect();
        let query_params = config
            .redacted_query_params
            .iter()
            .map(|p| p.trim().to_ascii_lowercase())
            .collect();
        Ok(Redactor {
            safe_exact,
            safe_prefixes,
            always_redacted,
            query_params,
            set,
            patterns,
        })
    }

    /// Is this header's value safe to log as-is? (Only allowlisted, never always-redacted ones.)
    pub fn is_safe_header(&self, name: &str) -> bool {
        let name = name.trim().to_ascii_lowercase();
        if self.always_redacted.contains(&name) {
            return false;
        }
        self.safe_exact.contains(&name)
            || self
                .safe_prefixes
                .iter()
                .any(|p| name.starts_with(p.as_str()))
    }

    /// Headers with every value not known safe replaced by `[REDACTED]`; safe values are scrubbed too.
    pub fn redact_headers(&self, headers: &[(String, String)]) -> Vec<(String, String)> {
        headers
            .iter()
            .map(|(name, value)| {
                let value = if self.is_safe_header(name) {
                    self.redact_text(value).into_owned()
                } else {
                    REDACTED.to_owned()
                };
                (name.clone(), value)
            })
            .collect()
    }

    /// Text with every key-shaped string replaced; borrowed when nothing matched.
    pub fn redact_text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let matched = self.set.matches(text);
        if !matched.matched_any() {
            return Cow::Borrowed(text);
        }
        let mut out = Cow::Borrowed(text);
        for index in matched.iter() {
            let Some(regex) = self.patterns.get(index) else {
                continue;
            };
            if let Cow::Owned(replaced) = replace_secrets(regex, &out) {
                out = Cow::Owned(replaced);
            }
        }
        out
    }

    /// A URL with userinfo and sensitive query values replaced, then scrubbed like text.
    pub fn redact_url<'a>(&self, url: &'a str) -> Cow<'a, str> {
        let structural = self.redact_url_parts(url);
        match self.redact_text(&structural) {
            Cow::Borrowed(_) => structural,
            Cow::Owned(scrubbed) => Cow::Owned(scrubbed),
        }
    }

    fn redact_url_parts<'a>(&self, url: &'a str) -> Cow<'a, str> {
        let (before_fragment, fragment) = match url.find('#') {
            Some(at) => url.split_at(at),
            None => (url, ""),
        };
        let (base, query) = match before_fragment.find('?') {
            Some(at) => (&before_fragment[..at], Some(&before_fragment[at + 1..])),
            None => (before_fragment, None),
        };
        let base_out = redact_userinfo(base);
        let query_out = query.map(|q| self.redact_query(q));
        let changed = matches!(base_out, Cow::Owned(_)) || matches!(query_out, Some(Cow::Owned(_)));
        if !changed {
            return Cow::Borrowed(url);
        }
        let mut out = String::with_capacity(url.len() + REDACTED.len());
        out.push_str(&base_out);
        if let Some(query) = query_out {
            out.push('?');
            out.push_str(&query);
        }
        out.push_str(fragment);
        Cow::Owned(out)
    }

    fn redact_query<'a>(&self, query: &'a str) -> Cow<'a, str> {
        let mut changed = false;
        let pairs: Vec<Cow<'a, str>> = query
            .split('&')
            .map(|pair| {
                let name = pair.split_once('=').map_or(pair, |(name, _)| name);
                if pair.contains('=') && self.query_params.contains(&query_name(name)) {
                    changed = true;
                    Cow::Owned(format!("{name}={REDACTED}"))
                } else {
                    Cow::Borrowed(pair)
                }
            })
            .collect();
        if changed {
            Cow::Owned(pairs.join("&"))
        } else {
            Cow::Borrowed(query)
        }
    }
}

/// Splits allowlist entries into exact names and `prefix*` prefixes, lower-cased.
fn split_safe_headers(
    entries: &[String],
    problems: &mut Vec<String>,
) -> (HashSet<String>, Vec<String>) {
    let mut exact = HashSet::new();
    let mut prefixes = Vec::new();
    for entry in entries {
        let entry = entry.trim().to_ascii_lowercase();
        let (name, is_prefix) = match entry.strip_suffix('*') {
            Some(prefix) => (prefix.to_owned(), true),
            None => (entry.clone(), false),
        };
        if !is_header_token(&name) || (!is_prefix && name.is_empty()) {
            problems.push(format!("safe header {entry:?} is not a header name"));
        } else if is_prefix {
            prefixes.push(name);
        } else {
            exact.insert(name);
        }
    }
    (exact, prefixes)
}

/// RFC 9110 token characters (an empty prefix is rejected: it would allow every header).
fn is_header_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Replaces the `secret` group of each match, or the whole match when there is none.
fn replace_secrets<'a>(regex: &Regex, text: &'a str) -> Cow<'a, str> {
    regex.replace_all(text, |caps: &Captures| {
        let Some(whole) = caps.get(0) else {
            return REDACTED.to_owned();
        };
        match caps.name(SECRET_GROUP) {
            Some(secret) => {
                let head = &text[whole.start()..secret.start()];
                let tail = &text[secret.end()..whole.end()];
                format!("{head}{REDACTED}{tail}")
            }
            None => REDACTED.to_owned(),
        }
    })
}

/// `scheme://user:pass@host/...` → `scheme://[REDACTED]@host/...`.
fn redact_userinfo(base: &str) -> Cow<'_, str> {
    let Some(scheme_end) = base.find("://") else {
        return Cow::Borrowed(base);
    };
    let authority_start = scheme_end + 3;
    let authority_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |at| authority_start + at);
    match base[authority_start..authority_end].rfind('@') {
        Some(at) => Cow::Owned(format!(
            "{}{REDACTED}{}",
            &base[..authority_start],
            &base[authority_start + at..]
        )),
        None => Cow::Borrowed(base),
    }
}

/// A query parameter name, percent-decoded (`%5F` → `_`) and lower-cased for matching.
fn query_name(raw: &str) -> String {
    percent_decode(raw).to_ascii_lowercase()
}

/// Decodes `%XX` escapes (invalid ones are kept as they are); used for URLs and OTel env values.
pub fn percent_decode(raw: &str) -> Cow<'_, str> {
    if !raw.contains('%') {
        return Cow::Borrowed(raw);
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn redactor() -> Redactor {
        Redactor::new(&RedactionConfig::default()).unwrap()
    }

    const ANTHROPIC_KEY: &str =
        "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789_-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AA";
    const OPENAI_PROJECT_KEY: &str =
        "sk-proj-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0FeDcBa_T3BlbkFJabcdefghij";
    const OPENAI_KEY: &str = "sk-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKL";
    const GOOGLE_KEY: &str = "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q";

    #[test]
    fn embedded_config_parses_and_compiles() {
        let config = RedactionConfig::from_toml(EMBEDDED_CONFIG).unwrap();
        assert!(!config.safe_headers.is_empty());
        assert!(config.body_patterns.len() >= 5);
        Redactor::new(&config).unwrap();
        assert_eq!(RedactionConfig::default(), config);
        Redactor::new(&RedactionConfig::fallback()).unwrap();
    }

    #[test]
    fn embedded_patterns_use_ascii_word_boundaries() {
        let config = RedactionConfig::default();
        for pattern in &config.body_patterns {
            let bare = pattern.regex.replace(r"(?-u:\b)", "");
            assert!(!bare.contains(r"\b"), "{} uses a Unicode \\b", pattern.name);
        }
    }

    #[test]
    fn headers_by_allowlist() {
        let r = redactor();
        let cases: &[(&str, &str, &str)] = &[
            ("Content-Type", "application/json", "application/json"),
            ("user-agent", "Anthropic/JS 0.50.0", "Anthropic/JS 0.50.0"),
            ("anthropic-version", "2023-06-01", "2023-06-01"),
            ("x-ratelimit-remaining-tokens", "9000", "9000"),
            ("Anthropic-Ratelimit-Requests-Limit", "50", "50"),
            ("x-stainless-os", "Linux", "Linux"),
            ("authorization", "Bearer sk-ant-xyz", REDACTED),
            ("X-Api-Key", ANTHROPIC_KEY, REDACTED),
            ("api-key", "0123456789abcdef0123456789abcdef", REDACTED),
            ("x-goog-api-key", GOOGLE_KEY, REDACTED),
            ("cookie", "session=abc", REDACTED),
            ("set-cookie", "session=abc; HttpOnly", REDACTED),
            ("proxy-authorization", "Basic dXNlcjpwYXNz", REDACTED),
            ("openai-organization", "org-123", REDACTED),
            ("x-custom-thing", "whatever", REDACTED),
            ("ocp-apim-subscription-key", "abc", REDACTED),
        ];
        for (name, value, want) in cases {
            let out = r.redact_headers(&[((*name).to_owned(), (*value).to_owned())]);
            assert_eq!(
                out,
                vec![((*name).to_owned(), (*want).to_owned())],
                "header {name}"
            );
        }
    }

    #[test]
    fn always_redacted_wins_over_allowlist() {
        let config = RedactionConfig {
            safe_headers: ALWAYS_REDACTED_HEADERS
                .iter()
                .map(|h| (*h).to_owned())
                .collect(),
            ..RedactionConfig::fallback()
        };
        let r = Redactor::new(&config).unwrap();
        for name in ALWAYS_REDACTED_HEADERS {
            assert!(!r.is_safe_header(name), "{name}");
            assert!(!r.is_safe_header(&name.to_ascii_uppercase()), "{name}");
        }
        let prefix = RedactionConfig {
            safe_headers: vec!["x-*".into(), "author*".into()],
            ..RedactionConfig::fallback()
        };
        let r = Redactor::new(&prefix).unwrap();
        assert!(!r.is_safe_header("x-api-key"));
        assert!(!r.is_safe_header("authorization"));
        assert!(r.is_safe_header("x-anything"));
    }

    #[test]
    fn safe_header_values_are_still_scrubbed() {
        let r = redactor();
        let out = r.redact_headers(&[("user-agent".into(), format!("tool/1 key={OPENAI_KEY}"))]);
        assert_eq!(out[0].1, format!("tool/1 key={REDACTED}"));
    }

    #[test]
    fn text_patterns() {
        let r = redactor();
        let cases: Vec<(String, String)> = vec![
            (
                format!("key {ANTHROPIC_KEY} end"),
                format!("key {REDACTED} end"),
            ),
            (
                format!("\"{OPENAI_PROJECT_KEY}\""),
                format!("\"{REDACTED}\""),
            ),
            (format!("{OPENAI_KEY}."), format!("{REDACTED}.")),
            (format!("q={GOOGLE_KEY}&x=1"), format!("q={REDACTED}&x=1")),
            (
                "Authorization: Bearer abc.def-ghi_jkl".into(),
                format!("Authorization: Bearer {REDACTED}"),
            ),
            (
                "bearer\teyJhbGciOiJIUzI1NiJ9".into(),
                format!("bearer\t{REDACTED}"),
            ),
            ("AKIAIOSFODNN7EXAMPLE".into(), REDACTED.into()),
            (
                r#"{"api_key": "hunter2", "model":"x"}"#.into(),
                format!(r#"{{"api_key": "{REDACTED}", "model":"x"}}"#),
            ),
            (
                r#"{"password":"a\"b","apiKey":"zz"}"#.into(),
                format!(r#"{{"password":"{REDACTED}","apiKey":"{REDACTED}"}}"#),
            ),
            (
                "no secrets here: task-management sk-short".into(),
                "no secrets here: task-management sk-short".into(),
            ),
            (
                "max_tokens: 1024, \"tokens\": \"many\"".into(),
                "max_tokens: 1024, \"tokens\": \"many\"".into(),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(r.redact_text(&input), want, "input {input}");
        }
    }

    #[test]
    fn clean_text_is_borrowed() {
        let r = redactor();
        assert!(matches!(
            r.redact_text("{\"model\":\"gpt-4o\"}"),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            r.redact_url("https://api.openai.com/v1/chat/completions"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn urls() {
        let r = redactor();
        let base = "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent";
        let cases: Vec<(String, String)> = vec![
            (
                format!("{base}?key={GOOGLE_KEY}"),
                format!("{base}?key={REDACTED}"),
            ),
            (
                format!("{base}?alt=sse&KEY=abc"),
                format!("{base}?alt=sse&KEY={REDACTED}"),
            ),
            (
                format!("{base}?alt=sse&api%5Fkey=abc#frag"),
                format!("{base}?alt=sse&api%5Fkey={REDACTED}#frag"),
            ),
            (
                format!("{base}?model=x&note={OPENAI_KEY}"),
                format!("{base}?model=x&note={REDACTED}"),
            ),
            (
                "https://user:pw@host:8443/p?x=1".into(),
                format!("https://{REDACTED}@host:8443/p?x=1"),
            ),
            (
                "https://host/p?keyword=1&key".into(),
                "https://host/p?keyword=1&key".into(),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(r.redact_url(&input), want, "input {input}");
        }
    }

    #[test]
    fn bad_patterns_are_all_reported_by_name() {
        let config = RedactionConfig {
            safe_headers: vec!["ok".into(), "bad name".into(), "*".into()],
            body_patterns: vec![
                BodyPattern {
                    name: "broken_one".into(),
                    regex: "(unclosed".into(),
                },
                BodyPattern {
                    name: "fine".into(),
                    regex: "abc".into(),
                },
                BodyPattern {
                    name: "broken_two".into(),
                    regex: "[z-a]".into(),
                },
            ],
            ..RedactionConfig::fallback()
        };
        let err = Redactor::new(&config).unwrap_err().to_string();
        for needle in ["broken_one", "broken_two", "bad name", "\"*\""] {
            assert!(err.contains(needle), "{needle} missing from {err}");
        }
        assert!(!err.contains("\"fine\""));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%3Dc"), "a b=c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%C3%A9"), "é");
    }

    #[test]
    fn unknown_config_fields_are_rejected() {
        let err = RedactionConfig::from_toml("safe_header = [\"a\"]").unwrap_err();
        assert!(err.to_string().contains("safe_header"), "{err}");
    }
}
