//! Base-URL routes for `--reverse-listen`: `/anthropic/…` → `https://api.anthropic.com/…`, so a
//! sandbox needs a base URL and a sentinel, and no CA.

use std::fmt;

use serde::Deserialize;

/// Routes every llmtap serves; `providers.toml`'s `[[route]]` adds more.
const BUILTIN: [(&str, &str); 3] = [
    ("anthropic", "https://api.anthropic.com"),
    ("openai", "https://api.openai.com"),
    ("gemini", "https://generativelanguage.googleapis.com"),
];

/// One `[[route]]` of `providers.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteEntry {
    /// The first path segment: `mistral` serves `/mistral/…`.
    pub prefix: String,
    /// `https://host[:port][/base/path]`.
    pub upstream: String,
}

/// A route: its prefix, and the upstream origin and base path it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseRoute {
    pub prefix: String,
    pub host: String,
    pub port: u16,
    /// Prepended to the rest of the path; empty or `/base` without a trailing `/`.
    pub base_path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseRouteError(pub String);

impl fmt::Display for BaseRouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The routes in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseRoutes {
    routes: Vec<BaseRoute>,
}

impl Default for BaseRoutes {
    fn default() -> BaseRoutes {
        BaseRoutes::with(&[]).unwrap_or(BaseRoutes { routes: Vec::new() })
    }
}

impl BaseRoutes {
    /// The built-in routes plus `extra`; every bad entry is an error naming it.
    pub fn with(extra: &[RouteEntry]) -> Result<BaseRoutes, BaseRouteError> {
        let builtin = BUILTIN.iter().map(|(prefix, upstream)| RouteEntry {
            prefix: (*prefix).to_string(),
            upstream: (*upstream).to_string(),
        });
        let mut routes: Vec<BaseRoute> = Vec::new();
        for (index, entry) in builtin.chain(extra.iter().cloned()).enumerate() {
            let name = match index.checked_sub(BUILTIN.len()) {
                Some(i) => format!("route[{i}]"),
                None => format!("built-in route {}", entry.prefix),
            };
            let route = parse(&entry).map_err(|why| BaseRouteError(format!("{name}: {why}")))?;
            if routes.iter().any(|r| r.prefix == route.prefix) {
                return Err(BaseRouteError(format!(
                    "{name}: prefix {:?} is already a route",
                    route.prefix
                )));
            }
            routes.push(route);
        }
        Ok(BaseRoutes { routes })
    }

    pub fn routes(&self) -> &[BaseRoute] {
        &self.routes
    }

    /// The route for a request path and the upstream path (`/anthropic/v1/messages` →
    /// `/v1/messages`); `None` for any path that is no route.
    pub fn resolve(&self, path: &str) -> Option<(&BaseRoute, String)> {
        let rest = path.strip_prefix('/')?;
        let (first, tail) = match rest.find('/') {
            Some(i) => (rest.get(..i)?, rest.get(i..)?),
            None => (rest, ""),
        };
        let route = self.routes.iter().find(|r| r.prefix == first)?;
        let tail = if tail.is_empty() { "/" } else { tail };
        let upstream_path = if route.base_path.is_empty() {
            tail.to_string()
        } else {
            format!("{}{tail}", route.base_path)
        };
        Some((route, upstream_path))
    }
}

fn parse(entry: &RouteEntry) -> Result<BaseRoute, String> {
    let prefix = entry.prefix.trim();
    let valid_prefix = !prefix.is_empty()
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'));
    if !valid_prefix {
        return Err(format!(
            "prefix = {:?}: use lower-case letters, digits, - and _",
            entry.prefix
        ));
    }
    let bad = |why: &str| format!("upstream = {:?}: {why}", entry.upstream);
    let uri: http::Uri = entry
        .upstream
        .trim()
        .parse()
        .map_err(|e| bad(&format!("not a URL ({e})")))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad(
            "must be https:// (keys and bodies never leave in cleartext)",
        ));
    }
    let authority = uri.authority().ok_or_else(|| bad("names no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("must not carry credentials"));
    }
    if uri.query().is_some() {
        return Err(bad("must not have a query"));
    }
    let host = crate::route::normalize_host(authority.host());
    if host.is_empty() {
        return Err(bad("names no host"));
    }
    let port = authority.port_u16().unwrap_or(443);
    let base_path = uri.path().trim_end_matches('/').to_string();
    Ok(BaseRoute {
        prefix: prefix.to_string(),
        host,
        port,
        base_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(prefix: &str, upstream: &str) -> RouteEntry {
        RouteEntry {
            prefix: prefix.into(),
            upstream: upstream.into(),
        }
    }

    #[test]
    fn builtin_routes_map_the_rest_of_the_path() {
        let routes = BaseRoutes::default();
        let (r, p) = routes.resolve("/anthropic/v1/messages").unwrap();
        assert_eq!(
            (r.host.as_str(), r.port, p.as_str()),
            ("api.anthropic.com", 443, "/v1/messages")
        );
        let (r, p) = routes.resolve("/openai").unwrap();
        assert_eq!((r.host.as_str(), p.as_str()), ("api.openai.com", "/"));
        let (r, _) = routes
            .resolve("/gemini/v1beta/models/x:generateContent")
            .unwrap();
        assert_eq!(r.host, "generativelanguage.googleapis.com");
        for other in [
            "/",
            "",
            "/anthropicx/v1",
            "/Anthropic/v1",
            "/healthz",
            "anthropic/v1",
            "/%61nthropic/v1",
        ] {
            assert!(routes.resolve(other).is_none(), "{other}");
        }
    }

    #[test]
    fn extra_routes_keep_their_base_path_and_bad_ones_are_named() {
        let routes =
            BaseRoutes::with(&[entry("azure", "https://me.openai.azure.com/openai/")]).unwrap();
        let (r, p) = routes
            .resolve("/azure/deployments/x/chat/completions")
            .unwrap();
        assert_eq!(r.host, "me.openai.azure.com");
        assert_eq!(p, "/openai/deployments/x/chat/completions");
        for (bad, needle) in [
            (entry("m", "http://api.mistral.ai"), "must be https"),
            (entry("a b", "https://x.com"), "prefix"),
            (entry("anthropic", "https://x.com"), "already a route"),
            (entry("m", "https://u:p@x.com"), "credentials"),
            (entry("m", "https://x.com/?a=b"), "query"),
            (entry("m", "not a url"), "not a URL"),
        ] {
            let err = BaseRoutes::with(&[bad]).unwrap_err().to_string();
            assert!(err.contains("route[0]") && err.contains(needle), "{err}");
        }
    }
}
