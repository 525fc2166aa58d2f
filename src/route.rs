//! Which hosts are intercepted (`--llm-hosts`) and which provider a host belongs to (`providers.toml`).

use serde::Deserialize;

use crate::providers::ApiShape;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum RouteError {
    #[error("empty host pattern")]
    EmptyPattern,
    #[error("bad host pattern {0:?}: only a leading `*.` wildcard is allowed")]
    BadPattern(String),
    #[error("cannot read: {0}")]
    Io(String),
    #[error("not valid TOML for providers: {0}")]
    Toml(String),
}

/// Lower-cases a host, drops a trailing dot and IPv6 brackets, so matching is exact.
pub fn normalize_host(host: &str) -> String {
    let h = host.trim().trim_end_matches('.').trim();
    let h = h
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(h);
    h.to_ascii_lowercase()
}

/// A port as written in a URI, a CONNECT target or a flag: 1 to 5 ASCII digits, 1-65535.
/// (`u16::from_str` also takes a leading `+`, which no peer would read the same way.)
pub fn parse_port(digits: &str) -> Option<u16> {
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u16>().ok().filter(|p| *p != 0)
}

/// An exact host or a `*.suffix` wildcard (any depth of subdomain, not the bare suffix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// Stored with its leading dot: `.example.com`.
    Suffix(String),
}

impl HostPattern {
    pub fn parse(raw: &str) -> Result<HostPattern, RouteError> {
        let p = normalize_host(raw);
        if p.is_empty() {
            return Err(RouteError::EmptyPattern);
        }
        if let Some(rest) = p.strip_prefix("*.") {
            if rest.is_empty() || rest.contains('*') {
                return Err(RouteError::BadPattern(raw.to_string()));
            }
            return Ok(HostPattern::Suffix(format!(".{rest}")));
        }
        // `*-aiplatform.googleapis.com`: a leading `*` glued to a label is a suffix match too.
        if let Some(rest) = p.strip_prefix('*') {
            if rest.is_empty() || rest.contains('*') || !rest.contains('.') {
                return Err(RouteError::BadPattern(raw.to_string()));
            }
            return Ok(HostPattern::Suffix(rest.to_string()));
        }
        if p.contains('*') || p.contains('/') || p.contains(' ') {
            return Err(RouteError::BadPattern(raw.to_string()));
        }
        Ok(HostPattern::Exact(p))
    }

    /// `host` must already be normalised.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }
}

/// The `--llm-hosts` list.
#[derive(Debug, Clone, Default)]
pub struct HostList {
    patterns: Vec<HostPattern>,
}

impl HostList {
    /// Parses a comma-separated list; empty entries are ignored.
    pub fn parse(list: &str) -> Result<HostList, RouteError> {
        let patterns = list
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(HostPattern::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(HostList { patterns })
    }

    /// Whether a (not yet normalised) host is to be intercepted.
    pub fn matches(&self, host: &str) -> bool {
        let host = normalize_host(host);
        self.patterns.iter().any(|p| p.matches(&host))
    }

    /// The patterns, in the order given.
    pub fn patterns(&self) -> &[HostPattern] {
        &self.patterns
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProvidersFile {
    #[serde(default)]
    host: Vec<ProviderEntry>,
    /// Base-URL routes for `--reverse-listen`, on top of the built-in ones.
    #[serde(default)]
    route: Vec<crate::base_routes::RouteEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderEntry {
    pattern: String,
    provider: String,
}

/// Host pattern → `gen_ai.provider.name`, first match wins.
#[derive(Debug, Clone, Default)]
pub struct ProviderMap {
    entries: Vec<(HostPattern, String)>,
    /// `--reverse-listen` routes: built in, plus the file's `[[route]]`s.
    pub routes: crate::base_routes::BaseRoutes,
}

/// The providers file shipped with llmtap, used when the config directory has none.
pub const BUILTIN_PROVIDERS_TOML: &str = include_str!("../addons-config/providers.toml");

impl ProviderMap {
    pub fn from_toml(text: &str) -> Result<ProviderMap, RouteError> {
        let file: ProvidersFile =
            toml::from_str(text).map_err(|e| RouteError::Toml(e.to_string()))?;
        let mut entries = Vec::with_capacity(file.host.len());
        for entry in file.host {
            if entry.provider.trim().is_empty() {
                return Err(RouteError::Toml(format!(
                    "host {:?}: provider is empty",
                    entry.pattern
                )));
            }
            entries.push((HostPattern::parse(&entry.pattern)?, entry.provider));
        }
        let routes = crate::base_routes::BaseRoutes::with(&file.route)
            .map_err(|e| RouteError::Toml(e.to_string()))?;
        Ok(ProviderMap { entries, routes })
    }

    pub fn builtin() -> ProviderMap {
        // The builtin file is tested below; an error here can only come from editing it.
        ProviderMap::from_toml(BUILTIN_PROVIDERS_TOML).unwrap_or_default()
    }

    /// The provider for a host, else the one the path shape implies.
    pub fn provider_for(&self, host: &str, shape: ApiShape) -> Option<&str> {
        let host = normalize_host(host);
        self.entries
            .iter()
            .find(|(p, _)| p.matches(&host))
            .map(|(_, name)| name.as_str())
            .or(shape.default_provider())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns_match_as_documented() {
        let list =
            HostList::parse("api.anthropic.com, *.openai.azure.com,API.OpenAI.com.").unwrap();
        let cases = [
            ("api.anthropic.com", true),
            ("API.ANTHROPIC.COM", true),
            ("api.anthropic.com.", true),
            ("x.api.anthropic.com", false),
            ("my.openai.azure.com", true),
            ("a.b.openai.azure.com", true),
            ("openai.azure.com", false),
            ("evilopenai.azure.com", false),
            ("api.openai.com", true),
            ("example.com", false),
        ];
        for (host, want) in cases {
            assert_eq!(list.matches(host), want, "{host}");
        }
    }

    #[test]
    fn bad_patterns_are_rejected() {
        for bad in ["*", "*.", "a.*.com", "a b.com", "**.x.com"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            HostPattern::parse("[::1]").unwrap(),
            HostPattern::Exact("::1".into())
        );
    }

    #[test]
    fn builtin_provider_map_parses_and_maps() {
        let map = ProviderMap::from_toml(BUILTIN_PROVIDERS_TOML).unwrap();
        let cases = [
            ("api.anthropic.com", ApiShape::Unknown, Some("anthropic")),
            (
                "res.openai.azure.com",
                ApiShape::OpenAiChat,
                Some("azure.ai.openai"),
            ),
            (
                "us-central1-aiplatform.googleapis.com",
                ApiShape::GeminiGenerate,
                Some("gcp.vertex_ai"),
            ),
            (
                "bedrock-runtime.us-east-1.amazonaws.com",
                ApiShape::Unknown,
                Some("aws.bedrock"),
            ),
            ("localhost", ApiShape::AnthropicMessages, Some("anthropic")),
            ("localhost", ApiShape::OpenAiResponses, Some("openai")),
            ("localhost", ApiShape::BedrockConverse, Some("aws.bedrock")),
            ("localhost", ApiShape::Unknown, None),
        ];
        for (host, shape, want) in cases {
            assert_eq!(map.provider_for(host, shape), want, "{host}");
        }
    }

    #[test]
    fn bad_provider_file_names_the_problem() {
        let err =
            ProviderMap::from_toml("[[host]]\npattern = \"a.com\"\nprovder = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("provder"), "{err}");
    }
}
