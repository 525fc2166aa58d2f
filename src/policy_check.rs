//! `llmtap policy check`: the decision for one target, as the running proxy would make it.

use crate::config::Config;
use crate::policy::{self, Decision, SystemResolver, Target, Via};

/// The decision for `target` (`HOST[:PORT]`, port 443 by default) and its words.
/// `Ok((allowed, text))`; `Err` for an unknown client or a target that does not parse.
pub async fn run(
    config: &Config,
    client: Option<&str>,
    plain_http: bool,
    target: &str,
) -> Result<(bool, String), String> {
    let target = parse_target(target, if plain_http { 80 } else { 443 })?;
    let client = match client {
        Some(name) => config
            .policy
            .client_named(name)
            .ok_or_else(|| format!("no [[client]] named {name:?} in the policy"))?,
        None => config.policy.default_client(),
    };
    let rules = config.egress_rules(crate::proxy::own_addresses(config.listen));
    let via = if plain_http { Via::Http } else { Via::Connect };
    let decision = policy::decide(&rules, &client, &target, via, &SystemResolver).await;
    Ok(describe(&decision, &target))
}

fn describe(decision: &Decision, target: &Target) -> (bool, String) {
    match decision {
        Decision::Local => (true, format!("local {}", target.authority())),
        Decision::Deny(d) => (
            false,
            format!(
                "deny {} ({}): {}",
                target.authority(),
                d.kind.as_str(),
                d.reason
            ),
        ),
        Decision::Tunnel(g) | Decision::Intercept { grant: g, .. } => (
            true,
            format!(
                "{} {} via {} to {}: {}",
                g.verdict.as_str(),
                target.authority(),
                g.route.as_str(),
                g.addr,
                g.reason
            ),
        ),
    }
}

/// `HOST`, `HOST:PORT`, `[V6]` or `[V6]:PORT`.
pub fn parse_target(raw: &str, default_port: u16) -> Result<Target, String> {
    let raw = raw.trim();
    let bad = || format!("bad target {raw:?}: expected HOST[:PORT]");
    if let Some(v6) = raw.strip_prefix('[') {
        let (host, rest) = v6.split_once(']').ok_or_else(bad)?;
        // Brackets hold an IPv6 literal, nothing else (`[:]` names no host).
        host.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        let port = match rest.strip_prefix(':') {
            Some(p) => crate::route::parse_port(p).ok_or_else(bad)?,
            None if rest.is_empty() => default_port,
            None => return Err(bad()),
        };
        return checked(Target::new(host, port), raw);
    }
    match raw.rsplit_once(':') {
        // A bare IPv6 literal has several colons and no port.
        Some((host, _)) if host.contains(':') => {
            raw.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
            checked(Target::new(raw, default_port), raw)
        }
        Some((host, port)) => {
            let port = crate::route::parse_port(port).ok_or_else(bad)?;
            checked(Target::new(host, port), raw)
        }
        None => checked(Target::new(raw, default_port), raw),
    }
}

fn checked(target: Target, raw: &str) -> Result<Target, String> {
    let host_ok =
        |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':' | b'*');
    // A host that normalises again into another one (`. .` → `.` → ``) names nothing.
    let settled = crate::route::normalize_host(&target.host) == target.host;
    if target.host.is_empty() || target.port == 0 || !settled || !target.host.bytes().all(host_ok) {
        return Err(format!("bad target {raw:?}: expected HOST[:PORT]"));
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_default_ports() {
        let cases = [
            ("example.com", Target::new("example.com", 443)),
            ("Example.COM.:8443", Target::new("example.com", 8443)),
            ("[::1]", Target::new("::1", 443)),
            ("[::1]:80", Target::new("::1", 80)),
            ("::1", Target::new("::1", 443)),
            ("10.0.0.1:22", Target::new("10.0.0.1", 22)),
        ];
        for found_by_the_property_test in [". .", "[:]", "[x]:80", "a:b:c"] {
            assert!(parse_target(found_by_the_property_test, 443).is_err());
        }
        for (raw, want) in cases {
            assert_eq!(parse_target(raw, 443).unwrap(), want, "{raw}");
        }
        for bad in [
            "", "x:0", "x:99999", "[::1", "[::1]x", "x:y", "x:+443", "[::]]:1", ".",
        ] {
            assert!(parse_target(bad, 443).is_err(), "{bad}");
        }
    }
}
