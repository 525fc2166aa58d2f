//! Secret scrubbing for everything llmtap logs: header allowlist, key-shaped strings, URL query values.
//!
//! A body pattern's regex runs only on text where the [`prefilter`] (one Aho-Corasick scan for
//! the literals each pattern needs) found a candidate; the result is the same as running every
//! pattern (`redact_text_unfiltered`, kept for the tests that say so).

mod prefilter;

use regex::{Captures, Regex, RegexSet};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
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
/// Name of the capture group compared with a pattern's `keep_fields`.
const FIELD_GROUP: &str = "field";

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
    /// Matches whose `field` group is one of these names (ASCII case-insensitive) are kept
    /// as they are; the regex must then have a `(?P<field>…)` group.
    #[serde(default)]
    pub keep_fields: Vec<String>,
}

impl BodyPattern {
    /// A pattern without `keep_fields`.
    pub fn new(name: &str, regex: &str) -> BodyPattern {
        BodyPattern {
            name: name.to_owned(),
            regex: regex.to_owned(),
            keep_fields: Vec::new(),
        }
    }
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
                .map(|(name, regex)| BodyPattern::new(name, regex))
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

/// FNV-1a: the sets below hold a few dozen short names chosen by the operator, looked up for
/// every header of every call; SipHash's flood resistance buys nothing there.
#[derive(Debug, Default, Clone, Copy)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut hash = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for byte in bytes {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = hash;
    }
}

/// A set of lower-cased names.
type Names = HashSet<String, BuildHasherDefault<Fnv>>;

/// Compiled redaction rules, built once at start-up and shared (`Arc`) by every exchange.
#[derive(Debug, Clone)]
pub struct Redactor {
    safe_exact: Names,
    safe_prefixes: Vec<String>,
    always_redacted: Names,
    query_params: Names,
    /// The body patterns, in the configured order.
    patterns: Vec<Pattern>,
    /// Which patterns can match a text at all, found by one literal scan.
    prefilter: prefilter::Prefilter,
}

/// Longest header name lower-cased on the stack (longer ones are lower-cased on the heap).
const MAX_STACK_HEADER_NAME: usize = 64;

/// One compiled body pattern.
#[derive(Debug, Clone)]
struct Pattern {
    regex: Regex,
    /// Lower-cased `keep_fields`: a match whose `field` group is one of them stays.
    keep_fields: HashSet<String>,
}

impl Pattern {
    /// Compiles one configured pattern, or says what is wrong with it, by name.
    fn compile(pattern: &BodyPattern) -> Result<Pattern, String> {
        let regex = Regex::new(&pattern.regex).map_err(|error| {
            format!(
                "body pattern {:?} ({}): {error}",
                pattern.name, pattern.regex
            )
        })?;
        let has_field = regex.capture_names().flatten().any(|n| n == FIELD_GROUP);
        if !pattern.keep_fields.is_empty() && !has_field {
            return Err(format!(
                "body pattern {:?} has keep_fields but no (?P<{FIELD_GROUP}>…) group",
                pattern.name
            ));
        }
        let keep_fields = pattern
            .keep_fields
            .iter()
            .map(|f| f.trim().to_ascii_lowercase())
            .collect();
        Ok(Pattern { regex, keep_fields })
    }
}

impl Redactor {
    /// Compiles the rules; every invalid pattern or header name is reported, by name.
    pub fn new(config: &RedactionConfig) -> Result<Redactor, RedactError> {
        let mut problems = Vec::new();
        let mut patterns = Vec::with_capacity(config.body_patterns.len());
        for pattern in &config.body_patterns {
            match Pattern::compile(pattern) {
                Ok(compiled) => patterns.push(compiled),
                Err(problem) => problems.push(problem),
            }
        }
        let (safe_exact, safe_prefixes) = split_safe_headers(&config.safe_headers, &mut problems);
        if !problems.is_empty() {
            return Err(RedactError::Invalid(problems));
        }
        // Compiled together once, as the rules were checked before the prefilter existed: a set
        // of patterns too large for one regex program is still refused.
        RegexSet::new(patterns.iter().map(|p| p.regex.as_str()))
            .map_err(|error| RedactError::Invalid(vec![format!("body patterns: {error}")]))?;
        let prefilter = prefilter::Prefilter::new(patterns.iter().map(|p| p.regex.as_str()));
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
            patterns,
            prefilter,
        })
    }

    /// Is this header's value safe to log as-is? (Only allowlisted, never always-redacted ones.)
    pub fn is_safe_header(&self, name: &str) -> bool {
        let name = name.trim();
        let mut stack = [0u8; MAX_STACK_HEADER_NAME];
        let heap;
        let lower = match stack.get_mut(..name.len()) {
            Some(buf) => {
                buf.copy_from_slice(name.as_bytes());
                buf.make_ascii_lowercase();
                // ASCII lower-casing keeps UTF-8 valid; the fallback is never taken.
                std::str::from_utf8(buf).unwrap_or(name)
            }
            None => {
                heap = name.to_ascii_lowercase();
                heap.as_str()
            }
        };
        if self.always_redacted.contains(lower) {
            return false;
        }
        self.safe_exact.contains(lower)
            || self
                .safe_prefixes
                .iter()
                .any(|p| lower.starts_with(p.as_str()))
    }

    /// A header's value as logged: scrubbed when the header is safe, else `[REDACTED]`.
    pub fn redact_header<'a>(&self, name: &str, value: &'a str) -> Cow<'a, str> {
        if self.is_safe_header(name) {
            self.redact_text(value)
        } else {
            Cow::Borrowed(REDACTED)
        }
    }

    /// Headers with every value not known safe replaced by `[REDACTED]`; safe values are scrubbed too.
    pub fn redact_headers(&self, headers: &[(String, String)]) -> Vec<(String, String)> {
        headers
            .iter()
            .map(|(name, value)| (name.clone(), self.redact_header(name, value).into_owned()))
            .collect()
    }

    /// Whether the text holds anything key-shaped (a real key where a sentinel belongs).
    pub fn looks_secret(&self, text: &str) -> bool {
        let candidates = self.prefilter.candidates(text);
        candidates.indices(self.patterns.len()).any(|index| {
            self.patterns
                .get(index)
                .is_some_and(|p| p.regex.is_match(text))
        })
    }

    /// Text with every key-shaped string replaced; borrowed when nothing matched.
    ///
    /// Each pattern that matches the text as given is applied, in order, to the text as the
    /// patterns before it left it; the prefilter only skips patterns that cannot match.
    pub fn redact_text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        self.redact_candidates(text, self.prefilter.candidates(text))
    }

    /// [`Redactor::redact_text`] with every pattern tried: the reference the prefilter must
    /// agree with (tests).
    #[doc(hidden)]
    pub fn redact_text_unfiltered<'a>(&self, text: &'a str) -> Cow<'a, str> {
        self.redact_candidates(text, prefilter::Candidates::all())
    }

    fn redact_candidates<'a>(
        &self,
        text: &'a str,
        candidates: prefilter::Candidates,
    ) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for index in candidates.indices(self.patterns.len()) {
            let Some(pattern) = self.patterns.get(index) else {
                continue;
            };
            let replaced = match &out {
                // Unchanged so far: replacing finds the matches, if any, in one pass.
                Cow::Borrowed(text) => replace_secrets(pattern, text),
                // Only a pattern that matches the text as given applies.
                Cow::Owned(current) if pattern.regex.is_match(text) => {
                    replace_secrets(pattern, current)
                }
                Cow::Owned(_) => continue,
            };
            if let Cow::Owned(replaced) = replaced {
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
fn split_safe_headers(entries: &[String], problems: &mut Vec<String>) -> (Names, Vec<String>) {
    let mut exact = Names::default();
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

/// Replaces the `secret` group of each match, or the whole match when there is none; a match
/// whose `field` group is in the pattern's `keep_fields` is left as it is.
fn replace_secrets<'a>(pattern: &Pattern, text: &'a str) -> Cow<'a, str> {
    pattern.regex.replace_all(text, |caps: &Captures| {
        let Some(whole) = caps.get(0) else {
            return REDACTED.to_owned();
        };
        let kept = caps.name(FIELD_GROUP).is_some_and(|f| {
            pattern
                .keep_fields
                .contains(&f.as_str().to_ascii_lowercase())
        });
        if kept {
            return whole.as_str().to_owned();
        }
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

    /// Redacts each input with the shipped rules and compares with the expected text.
    fn check(cases: &[(&str, &str)]) {
        let r = redactor();
        for (input, want) in cases {
            assert_eq!(r.redact_text(input), *want, "input {input:?}");
        }
    }

    /// Every sample is removed wherever it sits: alone, quoted, after a JSON escape, in prose.
    fn check_removed(samples: &[&str]) {
        let r = redactor();
        for sample in samples {
            let forms = [
                (*sample).to_owned(),
                format!("key: {sample} end"),
                format!(r#"{{"note":"{sample}","n":1}}"#),
                format!(r#"{{"note":"line one\n{sample}\tmore"}}"#),
                format!("data: {{\"text\":\"{sample}\"}}\n\n"),
                format!("https://h/p?x={sample}&y=2"),
            ];
            for form in forms {
                let out = r.redact_text(&form);
                assert!(!out.contains(sample), "{sample} survived in {out}");
                assert!(out.contains(REDACTED), "{form} -> {out}");
            }
        }
    }

    const GITHUB_TOKENS: &[&str] = &[
        "ghp_u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8d",
        "gho_KLzdocJ2isAjIhKtJ0RlgLKOmxgJTeKdNnFR",
        "ghu_IBXuDL7DxtpYlSXpfKtHF4vUCsMehGAkWvj7",
        "ghs_FAc9QeWJKY40uvSwMFLZDe1f8rESQedUStPK",
        "ghr_R0CsTy4Qwb8DwkNhFdnXsiVpzz63FfkCzJr4",
        "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",
    ];

    #[test]
    fn github_tokens() {
        check_removed(GITHUB_TOKENS);
        check(&[
            (
                "ghp_short and github_pat_ are words",
                "ghp_short and github_pat_ are words",
            ),
            (
                "git clone https://x:ghp_u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8d@github.com/o/r",
                "git clone https://x:[REDACTED]@github.com/o/r",
            ),
        ]);
    }

    #[test]
    fn gitlab_tokens() {
        check_removed(&[
            "glpat-UdjAWtGSU8po_799Nksn",
            "glpat-RH9ucAUsdMlHUvTCQCyEZDz-Tdd.01.r4qmw2wxf",
            "gldt-UdjAWtGSU8po_799Nksn",
            "glrt-t1_UdjAWtGSU8po_799Nksn",
            "glcbt-64_UdjAWtGSU8po_799Nksn",
            "glptt-0123456789abcdef0123456789abcdef01234567",
            "glft-UdjAWtGSU8po_799Nksn",
            "gloas-0123456789abcdef0123456789abcdef0123456789abcdef0123456789ab",
            "GR1348941UdjAWtGSU8po_799Nksn",
        ]);
        check(&[(
            "token glpat-RH9ucAUsdMlHUvTCQCyEZDz-Tdd.01.r4qmw2wxf. Next",
            "token [REDACTED]. Next",
        )]);
    }

    #[test]
    fn slack_tokens() {
        check_removed(&[
            "xoxb-313735379907-5116372651676-V8fUkkibjL5DZPjN0MEQ7wjJ",
            "xoxp-313735379907-5116372651676-5116372651677-0123456789abcdef0123456789abcdef",
            "xoxa-2-313735379907-5116372651676-V8fUkkibjL5DZPjN",
            "xoxr-313735379907-5116372651676-V8fUkkibjL5DZPjN",
            "xoxs-313735379907-5116372651676-V8fUkkibjL5DZPjN",
            "xoxe.xoxp-1-Mi0yLTMxMzczNTM3OTkwNy01MTE2MzcyNjUxNjc2",
            "xapp-1-A9IBAG7I1MN-0434839548620-bed440e50454f31af3176813e02ea68ef786e4d3cea27d26934b484e73cf575d",
        ]);
        check(&[(
            "POST https://hooks.slack.com/services/T01ABCDEF/B02ABCDEF/AbCdEfGhIjKlMnOpQrStUvWx ok",
            "POST https://hooks.slack.com/services/[REDACTED] ok",
        )]);
    }

    #[test]
    fn stripe_keys() {
        check_removed(&[
            "sk_live_GzvAmwufUxbvJDCTbyvHNsG9",
            "rk_live_eh6Yo4gfqrc5XlrWi0B26R08",
            "sk_test_qzjI6GKFSufrdZSlB5er8bOf",
            "rk_test_qzjI6GKFSufrdZSlB5er8bOf",
            "whsec_ZqfM2oeq3hDavJA76rNicHTp8hkqdlm7",
        ]);
        // Publishable keys are public by design.
        check(&[(
            "pk_live_GzvAmwufUxbvJDCTbyvHNsG9",
            "pk_live_GzvAmwufUxbvJDCTbyvHNsG9",
        )]);
    }

    #[test]
    fn aws_access_key_ids() {
        check_removed(&["AKIATT7NS26LRWBQCAB6", "ASIA9M64P2G158Z6TNOV"]);
        check(&[
            (
                "AKIATT7NS26LRWBQCAB6X is longer",
                "AKIATT7NS26LRWBQCAB6X is longer",
            ),
            (r#""x\nAKIATT7NS26LRWBQCAB6""#, r#""x\n[REDACTED]""#),
        ]);
    }

    #[test]
    fn aws_secret_access_keys() {
        const SECRET: &str = "zrZSgqbjG3uhkWKFLf6xuI5aHUQPFeNBTxaQWk8J";
        let forms = [
            format!("[default]\naws_secret_access_key = {SECRET}\n"),
            format!("export AWS_SECRET_ACCESS_KEY={SECRET}"),
            format!("AWS_SECRET_ACCESS_KEY=\"{SECRET}\""),
            format!("SecretAccessKey: {SECRET}"),
            format!(r#"{{"SecretAccessKey": "{SECRET}", "AccessKeyId": "ASIA9M64P2G158Z6TNOV"}}"#),
            format!(r#"{{"aws_secret_access_key":"{SECRET}"}}"#),
            format!(r#"{{"env":"aws_secret_access_key=\"{SECRET}\"\nregion=x"}}"#),
            format!(r#"{{"args":"{{\"aws_secret_access_key\": \"{SECRET}\"}}"}}"#),
            format!(":aws_secret_access_key => '{SECRET}'"),
            format!("aws_session_token = {SECRET}{SECRET}"),
        ];
        let r = redactor();
        for form in forms {
            let out = r.redact_text(&form);
            assert!(!out.contains(&SECRET[..16]), "{form} -> {out}");
        }
        // The same 40 characters without a name next to them could be anything: they stay.
        check(&[(SECRET, SECRET)]);
    }

    #[test]
    fn google_tokens() {
        check_removed(&[
            "ya29.zFalHlsZfYcMMDktXP-tKsf2rcDkdfrUnW5gcF_Ha6ili8GjHEAD6-Wj9KfzjsQGMrb9h_ImB_LK777pzNk8cL6j5IXAAjlsHUqJ",
            "AIzaoUD-_Ydua_5ZMs1SWOpQaPRYpzbLGViYXjU",
            "1//02JgJngKtFI3OyV2dZAkg05rK_gqv81RKMGHZEM9YpvujA-C5Q52ryFlwRlOE",
            "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",
        ]);
    }

    const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IlRlc3QgVXNlciIsImlhdCI6MTUxNjIzOTAyMn0.28_ajY75FnCttn6kfaqDeMqG3omjMyXHCabM6JOF8EF";

    #[test]
    fn jwts() {
        check_removed(&[
            JWT,
            // alg: none, empty signature
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxMjM0NTY3ODkwIn0.",
        ]);
        check(&[
            ("version eyJ.x.y stays", "version eyJ.x.y stays"),
            (
                &format!("Cookie-ish id_token={JWT}; path=/"),
                "Cookie-ish id_token=[REDACTED]; path=/",
            ),
        ]);
    }

    const PEM_LINES: [&str; 3] = [
        "d0Nhcy/1kGD2VD/eR1UYzaLiA/zNyD7CHLn/xC+1hsYgBds1ghxY5OokvQyx7eNW",
        "VQ4vnakJkS1pAWTN3lg8zV5yPU8d0FZfWe7ihGyiRUIQfHOJMaidDn87XG3/q/xb",
        "MtEPO6UkzYuF0ie9Pu2njHkAm1/5wDr16EpLLJIVGHz4FxFEtKyPiYGFDm7ena8D",
    ];

    fn pem(label: &str, newline: &str, indent: &str) -> String {
        let mut out = format!("{indent}-----BEGIN {label}-----{newline}");
        for line in PEM_LINES {
            out.push_str(&format!("{indent}{line}{newline}"));
        }
        out.push_str(&format!("{indent}-----END {label}-----"));
        out
    }

    fn assert_no_pem_line(out: &str, context: &str) {
        for line in PEM_LINES {
            assert!(
                !out.contains(&line[..12]),
                "{context}: key text survived in {out}"
            );
        }
    }

    #[test]
    fn pem_private_key_blocks() {
        let r = redactor();
        let labels = [
            "PRIVATE KEY",
            "RSA PRIVATE KEY",
            "EC PRIVATE KEY",
            "DSA PRIVATE KEY",
            "OPENSSH PRIVATE KEY",
            "ENCRYPTED PRIVATE KEY",
            "PGP PRIVATE KEY BLOCK",
        ];
        for label in labels {
            for (newline, indent) in [("\n", ""), ("\r\n", ""), ("\n", "    "), (r"\n", "")] {
                let block = pem(label, newline, indent);
                let text = format!("before {block}{newline}after.");
                let out = r.redact_text(&text);
                assert_no_pem_line(&out, label);
                assert!(out.starts_with("before "), "{out}");
                assert!(out.ends_with("after."), "{out}");
            }
        }
        // Legacy encrypted PEM with headers.
        let legacy = format!(
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,2AF25325A9B286F4CBD8D6D0A0A4C3E5\n\n{}\n-----END RSA PRIVATE KEY-----\n",
            PEM_LINES.join("\n")
        );
        let out = r.redact_text(&legacy);
        assert_eq!(out, format!("{REDACTED}\n"));
        // Certificates and public keys are not secrets.
        let cert = pem("CERTIFICATE", "\n", "");
        assert_eq!(r.redact_text(&cert), cert);
    }

    #[test]
    fn pem_in_json_stays_valid_json() {
        let r = redactor();
        let block = pem("RSA PRIVATE KEY", "\n", "");
        let doc = serde_json::json!({
            "type": "service_account",
            "note": format!("key:\n{block}\nend"),
            "nested": {"k": pem("OPENSSH PRIVATE KEY", "\n", "")},
        });
        for text in [doc.to_string(), serde_json::to_string_pretty(&doc).unwrap()] {
            let out = r.redact_text(&text);
            assert_no_pem_line(&out, "json");
            let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(parsed["note"], format!("key:\n{REDACTED}\nend"));
            assert_eq!(parsed["nested"]["k"], REDACTED);
            assert_eq!(parsed["type"], "service_account");
        }
        // Escaped once more (a JSON string holding a JSON document), and `\/` escapes.
        let inner = doc.to_string();
        let outer = serde_json::json!({ "arguments": inner }).to_string();
        let out = r.redact_text(&outer);
        assert_no_pem_line(&out, "double-escaped");
        serde_json::from_str::<serde_json::Value>(&out).unwrap();
        let slashed = doc.to_string().replace('/', "\\/");
        let out = r.redact_text(&slashed);
        assert_no_pem_line(&out, "slash-escaped");
        serde_json::from_str::<serde_json::Value>(&out).unwrap();
    }

    #[test]
    fn pem_cut_by_the_capture_cap() {
        let r = redactor();
        let block = pem("PRIVATE KEY", "\n", "");
        let cut = &block[..block.len() - 60];
        assert_eq!(r.redact_text(cut), REDACTED);
        let json_cut = &serde_json::json!({ "k": block }).to_string()[..150];
        let out = r.redact_text(json_cut);
        assert_no_pem_line(&out, "cut json");
        assert!(out.starts_with(r#"{"k":"[REDACTED]"#), "{out}");
    }

    #[test]
    fn json_secret_fields() {
        check(&[
            (
                r#"{"anthropic_api_key": "not-key-shaped-1", "model": "claude-sonnet-4-5"}"#,
                r#"{"anthropic_api_key": "[REDACTED]", "model": "claude-sonnet-4-5"}"#,
            ),
            (
                r#"{"refreshToken":"abc","client_secret":"def","db_password":"p@ss word!"}"#,
                r#"{"refreshToken":"[REDACTED]","client_secret":"[REDACTED]","db_password":"[REDACTED]"}"#,
            ),
            (
                r#"{"X-Api-Key":"a","apikey":"b","OPENAI_API_KEY":"c","Authorization":"Basic x"}"#,
                r#"{"X-Api-Key":"[REDACTED]","apikey":"[REDACTED]","OPENAI_API_KEY":"[REDACTED]","Authorization":"[REDACTED]"}"#,
            ),
            (
                r#"{"token":"t0k","session_token":"s","private_key":"k","secret":"s","credentials":"c"}"#,
                r#"{"token":"[REDACTED]","session_token":"[REDACTED]","private_key":"[REDACTED]","secret":"[REDACTED]","credentials":"[REDACTED]"}"#,
            ),
            (
                "{\n  \"password\" :\n    \"a\\\"b\\\\c\\u0041\",\n  \"next\": 1\n}",
                "{\n  \"password\" :\n    \"[REDACTED]\",\n  \"next\": 1\n}",
            ),
            // Usage numbers, token counts and other non-credential names stay.
            (
                r#"{"max_tokens":64,"usage":{"input_tokens":12,"output_tokens":34},"token_type":"bearer","tokens":"many","token_count":"3","password":"","api_key":null,"secret":true}"#,
                r#"{"max_tokens":64,"usage":{"input_tokens":12,"output_tokens":34},"token_type":"bearer","tokens":"many","token_count":"3","password":"","api_key":null,"secret":true}"#,
            ),
            // Known-harmless names ending in "token".
            (
                r#"{"eos_token":"</s>","BOS_TOKEN":"<s>","nextPageToken":"CgQIARAB","page_token":"p"}"#,
                r#"{"eos_token":"</s>","BOS_TOKEN":"<s>","nextPageToken":"CgQIARAB","page_token":"p"}"#,
            ),
            // A value cut by the capture cap is removed to the end of its line.
            (
                "{\"model\":\"x\",\"password\":\"hunter2 and mo",
                "{\"model\":\"x\",\"password\":\"[REDACTED]",
            ),
        ]);
    }

    #[test]
    fn json_secret_fields_keep_documents_valid() {
        let r = redactor();
        let doc = serde_json::json!({
            "model": "gpt-4o",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": "say \"hi\"\n"}],
            "tools": [{"function": {"arguments": "{\"api_key\": \"tool-\\\"quoted\\\"-value\", \"city\": \"Paris\"}"}}],
            "auth": {"clientSecret": "a\"b\\c\u{1}é", "accessToken": "x", "token_type": "bearer"},
        });
        for text in [doc.to_string(), serde_json::to_string_pretty(&doc).unwrap()] {
            let out = r.redact_text(&text);
            let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(parsed["auth"]["clientSecret"], REDACTED);
            assert_eq!(parsed["auth"]["accessToken"], REDACTED);
            assert_eq!(parsed["auth"]["token_type"], "bearer");
            assert_eq!(parsed["max_tokens"], 64);
            assert_eq!(parsed["messages"], doc["messages"]);
            let arguments = parsed["tools"][0]["function"]["arguments"]
                .as_str()
                .unwrap();
            let arguments: serde_json::Value = serde_json::from_str(arguments).unwrap();
            assert_eq!(arguments["api_key"], REDACTED);
            assert_eq!(arguments["city"], "Paris");
        }
    }

    #[test]
    fn json_secret_fields_in_sse() {
        let sse = concat!(
            "event: content_block_delta\n",
            "data: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"input_json_delta\",",
            "\"partial_json\":\"{\\\"password\\\": \\\"s3cr3t-value\\\"}\"}}\n\n",
            "data: {\"usage\":{\"output_tokens\":15},\"api_key\":\"plain-value\"}\n\n",
        );
        let out = redactor().redact_text(sse).into_owned();
        assert!(
            !out.contains("s3cr3t-value") && !out.contains("plain-value"),
            "{out}"
        );
        assert!(out.contains("\"output_tokens\":15"), "{out}");
        for line in out.lines().filter_map(|l| l.strip_prefix("data: ")) {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
    }

    #[test]
    fn env_style_assignments() {
        check(&[
            (
                "DB_PASSWORD=hunter2\nexport GITHUB_TOKEN=\"abc123\"\nMAX_TOKENS=100",
                "DB_PASSWORD=[REDACTED]\nexport GITHUB_TOKEN=\"[REDACTED]\"\nMAX_TOKENS=100",
            ),
            (
                r#"{"content":"STRIPE_SECRET=abc\nPGPASSWORD=x y"}"#,
                r#"{"content":"STRIPE_SECRET=[REDACTED]\nPGPASSWORD=[REDACTED] y"}"#,
            ),
        ]);
    }

    #[test]
    fn keys_after_json_escapes() {
        // In JSON text `\n` leaves no word boundary before the key: the patterns allow for it.
        let r = redactor();
        let keys = [
            "sk-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKL",
            "gsk_abcdefghijklmnopqrstuvwxyz0123",
            "xai-abcdefghijklmnopqrstuvwxyz0123",
            "hf_abcdefghijklmnopqrstuvwxyz0123456789",
            "AKIATT7NS26LRWBQCAB6",
        ];
        for key in keys {
            for escape in [r"\n", r"\t", r"\r"] {
                let text = format!(r#"{{"text":"x{escape}{key}"}}"#);
                assert_eq!(
                    r.redact_text(&text),
                    format!(r#"{{"text":"x{escape}{REDACTED}"}}"#)
                );
            }
        }
        check(&[(
            "task-abcdefghijklmnopqrstuvwxyz",
            "task-abcdefghijklmnopqrstuvwxyz",
        )]);
    }

    #[test]
    fn keep_fields_need_a_field_group_and_are_case_insensitive() {
        let config = RedactionConfig {
            body_patterns: vec![BodyPattern {
                keep_fields: vec!["Keep_Me".into()],
                ..BodyPattern::new("f", r#""(?P<field>\w+)":"(?P<secret>\w+)""#)
            }],
            ..RedactionConfig::fallback()
        };
        let r = Redactor::new(&config).unwrap();
        assert_eq!(
            r.redact_text(r#""KEEP_ME":"a","other":"b""#),
            format!(r#""KEEP_ME":"a","other":"{REDACTED}""#)
        );
    }

    /// Hostile 1 MiB bodies: every pattern stays linear (no blow-up, no quadratic rescans).
    #[test]
    fn one_mebibyte_bodies_stay_fast() {
        let r = redactor();
        let mib = 1 << 20;
        let repeat = |unit: &str| unit.repeat(mib / unit.len());
        let bodies = [
            repeat("a"),
            repeat("A"),
            repeat("\""),
            repeat("\\"),
            repeat("-----BEGIN PRIVATE KEY-----"),
            repeat("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n"),
            repeat("\"token\":\""),
            repeat("\"password\":\"x"),
            repeat("\\\"api_key\\\":\\\"x"),
            repeat("eyJaaaaaaaaa."),
            repeat("ghp_"),
            repeat("AKIA"),
            repeat("aws_secret_access_key="),
            repeat("A_TOKEN="),
            repeat("bearer "),
            repeat("sk-"),
            repeat("\\n"),
            repeat("日本語のテキスト"),
            format!("\"api_key\":\"{}\"", "x".repeat(mib)),
            format!("-----BEGIN PRIVATE KEY-----\n{}", "QUJD\n".repeat(mib / 5)),
        ];
        // Generous for debug builds on a loaded machine; linear runs take well under a second.
        let bound = std::time::Duration::from_secs(20);
        for body in &bodies {
            let start = std::time::Instant::now();
            let out = r.redact_text(body);
            let took = start.elapsed();
            assert!(
                took < bound,
                "{took:?} for {:?}… ({} bytes out)",
                &body[..body.len().min(40)],
                out.len()
            );
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
                BodyPattern::new("broken_one", "(unclosed"),
                BodyPattern::new("fine", "abc"),
                BodyPattern::new("broken_two", "[z-a]"),
                BodyPattern {
                    keep_fields: vec!["x".into()],
                    ..BodyPattern::new("keep_without_field", "(?P<secret>abc)")
                },
            ],
            ..RedactionConfig::fallback()
        };
        let err = Redactor::new(&config).unwrap_err().to_string();
        for needle in [
            "broken_one",
            "broken_two",
            "keep_without_field",
            "bad name",
            "\"*\"",
        ] {
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
