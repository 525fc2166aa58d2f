//! Host patterns of policy rules: names, `*.suffix`, `*`, IP literals and CIDRs, each with an optional port.
//!
//! Forms (no port means any port):
//! - `api.openai.com`, `files.pythonhosted.org:443`: that name exactly (case and a trailing
//!   dot do not matter);
//! - `*.internal`, `*.example.com:443`: any subdomain, at any depth, not the bare suffix;
//! - `*`, `*:443`: any host, names and IP literals alike;
//! - `10.0.0.2`, `10.0.0.0/8`, `10.0.0.0/8:443`, `::1`, `fd00::/8`, `[::1]:8080`,
//!   `[fd00::/8]:443`: IP literal targets by address (an IPv4-mapped IPv6 target compares as
//!   IPv4). A bare IPv6 pattern has no port; put it in brackets to give one.
//!
//! Name patterns never match an IP literal target, and IP patterns never match a name: a
//! rule on names is not a rule on what they resolve to.

use std::net::IpAddr;

use ipnet::IpNet;

use super::Target;
use super::address::{net_contains, parse_cidr};
use crate::route::normalize_host;

/// What a pattern matches, port aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// `*`
    Any,
    /// A normalised name.
    Exact(String),
    /// `*.suffix`, stored with its leading dot: `.internal`.
    Suffix(String),
    /// An IP literal (as a /32 or /128) or a CIDR.
    Net(IpNet),
}

/// One `allow` or `deny` entry, as parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRule {
    host: HostMatch,
    port: Option<u16>,
    /// The pattern as written, for reasons (`allow rule api.anthropic.com`).
    raw: String,
}

impl HostRule {
    /// Parses one pattern; the error says what is wrong (the caller names the field).
    pub fn parse(raw: &str) -> Result<HostRule, String> {
        let text = raw.trim();
        if text.is_empty() {
            return Err("empty host pattern".into());
        }
        let (host, port) = split_port(text)?;
        Ok(HostRule {
            host: parse_host(host)?,
            port,
            raw: text.to_string(),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn host(&self) -> &HostMatch {
        &self.host
    }

    /// `None`: any port.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// Whether the rule covers `target` (its host normalised, as `Target::new` does).
    pub fn matches(&self, target: &Target) -> bool {
        if self.port.is_some_and(|p| p != target.port) {
            return false;
        }
        let literal = target.host.parse::<IpAddr>().ok();
        match (&self.host, literal) {
            (HostMatch::Any, _) => true,
            (HostMatch::Net(net), Some(ip)) => net_contains(net, ip),
            (HostMatch::Net(_), None) => false,
            (_, Some(_)) => false,
            (HostMatch::Exact(name), None) => *name == target.host,
            (HostMatch::Suffix(suffix), None) => {
                target.host.len() > suffix.len() && target.host.ends_with(suffix.as_str())
            }
        }
    }
}

impl std::fmt::Display for HostRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Splits `host[:port]`, `[v6][:port]`; a bare IPv6 address or network has no port.
fn split_port(text: &str) -> Result<(&str, Option<u16>), String> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| "`[` without a closing `]`".to_string())?;
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(parse_port(port)?))),
                None => Err("only `:PORT` may follow `]`".into()),
            },
        };
    }
    match text.matches(':').count() {
        0 => Ok((text, None)),
        1 => match text.split_once(':') {
            Some((host, port)) => Ok((host, Some(parse_port(port)?))),
            None => Ok((text, None)),
        },
        // More than one colon: an IPv6 address or network, without a port.
        _ => Ok((text, None)),
    }
}

fn parse_port(port: &str) -> Result<u16, String> {
    crate::route::parse_port(port).ok_or_else(|| format!("bad port {port:?}: must be 1-65535"))
}

fn parse_host(host: &str) -> Result<HostMatch, String> {
    if host == "*" {
        return Ok(HostMatch::Any);
    }
    if host.contains(':') || host.contains('/') || host.parse::<IpAddr>().is_ok() {
        return parse_cidr(host).map(HostMatch::Net);
    }
    let name = normalize_host(host);
    if let Some(suffix) = name.strip_prefix("*.") {
        check_name(suffix)?;
        return Ok(HostMatch::Suffix(format!(".{suffix}")));
    }
    check_name(&name)?;
    Ok(HostMatch::Exact(name))
}

/// A DNS name: dot-separated labels of letters, digits, `-` and `_`, not all-numeric at the end.
fn check_name(name: &str) -> Result<(), String> {
    if name.contains('*') {
        return Err("`*` is allowed only alone or as a leading `*.`".into());
    }
    if name.is_empty() || name.len() > 253 {
        return Err("not a host name".into());
    }
    for label in name.split('.') {
        let ok_chars = label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if label.is_empty() || label.len() > 63 || !ok_chars {
            return Err(format!("not a host name (label {label:?})"));
        }
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a valid IP address, and not a host name".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    type ParseCase = (&'static str, Result<(HostMatch, Option<u16>), &'static str>);

    #[test]
    fn patterns_parse() {
        let cases: &[ParseCase] = &[
            ("*", Ok((HostMatch::Any, None))),
            ("*:443", Ok((HostMatch::Any, Some(443)))),
            (
                "API.OpenAI.com.",
                Ok((HostMatch::Exact("api.openai.com".into()), None)),
            ),
            (
                "files.pythonhosted.org:443",
                Ok((HostMatch::Exact("files.pythonhosted.org".into()), Some(443))),
            ),
            (
                "*.internal",
                Ok((HostMatch::Suffix(".internal".into()), None)),
            ),
            (
                "10.0.0.2",
                Ok((HostMatch::Net(parse_cidr("10.0.0.2").unwrap()), None)),
            ),
            (
                "10.0.0.0/8:443",
                Ok((HostMatch::Net(parse_cidr("10.0.0.0/8").unwrap()), Some(443))),
            ),
            (
                "::1",
                Ok((HostMatch::Net(parse_cidr("::1").unwrap()), None)),
            ),
            (
                "[::1]:8080",
                Ok((HostMatch::Net(parse_cidr("::1").unwrap()), Some(8080))),
            ),
            (
                "[fd00::/8]",
                Ok((HostMatch::Net(parse_cidr("fd00::/8").unwrap()), None)),
            ),
            ("", Err("empty")),
            ("a.*.com", Err("`*` is allowed only")),
            ("*.", Err("`*` is allowed only")),
            ("*.0.0.1", Err("not a valid IP address")),
            ("**.x.com", Err("`*` is allowed only")),
            ("a b.com", Err("not a host name")),
            ("x.com:0", Err("bad port")),
            ("x.com:99999", Err("bad port")),
            ("x.com:https", Err("bad port")),
            ("10.0.0.0/33", Err("not a CIDR")),
            ("10.0.0.256", Err("not a valid IP address")),
            ("[::1", Err("without a closing")),
            ("[::1]8080", Err("only `:PORT`")),
            ("http://x.com", Err("bad port")),
        ];
        for (raw, want) in cases {
            match (HostRule::parse(raw), want) {
                (Ok(rule), Ok((host, port))) => {
                    assert_eq!((rule.host(), rule.port()), (host, *port), "{raw}")
                }
                (Err(e), Err(w)) => assert!(e.contains(w), "{raw}: {e}"),
                (got, _) => panic!("{raw}: {got:?}"),
            }
        }
    }

    #[test]
    fn patterns_match() {
        let cases: &[(&str, &str, u16, bool)] = &[
            ("*", "example.com", 443, true),
            ("*", "10.0.0.1", 80, true),
            ("*:443", "example.com", 80, false),
            ("api.openai.com", "api.openai.com", 8443, true),
            ("api.openai.com", "API.OPENAI.COM.", 443, true),
            ("api.openai.com", "x.api.openai.com", 443, false),
            (
                "files.pythonhosted.org:443",
                "files.pythonhosted.org",
                80,
                false,
            ),
            ("*.internal", "db.internal", 443, true),
            ("*.internal", "a.b.internal", 443, true),
            ("*.internal", "internal", 443, false),
            ("*.internal", "evilinternal", 443, false),
            ("10.0.0.0/8", "10.1.2.3", 443, true),
            ("10.0.0.0/8", "[::ffff:10.1.2.3]", 443, true),
            ("10.0.0.0/8", "10.example.com", 443, false),
            ("10.0.0.0/8:443", "10.1.2.3", 80, false),
            ("[::1]:8080", "[::1]", 8080, true),
            ("::1", "0:0:0:0:0:0:0:1", 1, true),
            ("localhost", "127.0.0.1", 80, false),
        ];
        for (pattern, host, port, want) in cases {
            let rule = HostRule::parse(pattern).unwrap();
            let target = Target::new(host, *port);
            assert_eq!(rule.matches(&target), *want, "{pattern} vs {host}:{port}");
        }
    }
}
