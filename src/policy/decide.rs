//! `decide`: the one decision for a connection, and the system resolver it uses in production.
//!
//! Steps, in order: a target one can connect to; the route (`Intercept` for an LLM host,
//! else `Tunnel`; `Route::Http` for plain HTTP); the client's profile rules by name (deny
//! wins, nothing allowing is a denial; report mode lets it through as `would_deny`, and no
//! lookup is made for an enforced denial); one resolution (pins first); the address floor
//! (private ranges, unless allowed or pinned; llmtap's own addresses, always).

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::address::{canonical, net_contains, special_range};
use super::file::{Mode, RuleMatch};
use super::{
    ClientId, Decision, Denial, DenyKind, EgressRules, Grant, Resolver, Route, Target, Verdict, Via,
};
use crate::providers::ApiShape;
use crate::route::ProviderMap;

/// How long `SystemResolver` waits for one lookup.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The one decision for `client` asking for `target` by `via`.
pub async fn decide(
    rules: &EgressRules,
    client: &ClientId,
    target: &Target,
    via: Via,
    resolver: &dyn Resolver,
) -> Decision {
    let target = Target::new(&target.host, target.port);
    // A base-URL route's upstream is an LLM API by construction: always captured.
    let intercept = via == Via::Reverse || rules.llm_hosts.matches(&target.host);
    let route = route_for(intercept, via);
    let deny = |kind: DenyKind, reason: String| {
        Decision::Deny(Denial {
            client: Some(client.clone()),
            target: target.clone(),
            route,
            kind,
            reason,
        })
    };
    if let Some(reason) = bad_target(&target) {
        return deny(DenyKind::BadTarget, reason);
    }
    let (verdict, reason) = match check_rules(rules, client, &target) {
        Ok(rule) => (Verdict::Allow, format!("allow rule {rule}")),
        Err(reason) if rules.policy.mode == Mode::Report => (Verdict::WouldDeny, reason),
        Err(reason) => return deny(DenyKind::Policy, reason),
    };
    let addr = match resolve_checked(rules, client, &target, resolver).await {
        Ok(addr) => addr,
        Err((kind, reason)) => return deny(kind, reason),
    };
    let grant = Grant {
        client: client.clone(),
        target,
        route,
        addr,
        verdict,
        reason,
    };
    if intercept {
        let provider = host_provider(&rules.providers, &grant.target.host);
        Decision::Intercept { grant, provider }
    } else {
        Decision::Tunnel(grant)
    }
}

/// How a connection to an LLM host (`intercept`) or another host leaves, by how it asked.
pub fn route_for(intercept: bool, via: Via) -> Route {
    match (via, intercept) {
        (Via::Connect, true) => Route::Intercept,
        (Via::Connect, false) => Route::Tunnel,
        (Via::Http, _) => Route::Http,
        (Via::Reverse, _) => Route::Reverse,
    }
}

/// `gen_ai.provider.name` from the providers file's host map only (no path shape here).
pub fn host_provider(providers: &ProviderMap, host: &str) -> Option<Arc<str>> {
    providers
        .provider_for(host, ApiShape::Unknown)
        .map(Arc::from)
}

/// Why `target` cannot be connected to at all, if so.
fn bad_target(target: &Target) -> Option<String> {
    if target.host.is_empty() {
        return Some("empty host".into());
    }
    if target.port == 0 {
        return Some(format!("port 0 of {} is not a port", target.host));
    }
    if numeric_but_not_canonical(&target.host) {
        return Some(format!(
            "{:?} is a number but not a dotted-quad IPv4 address; write the address as a.b.c.d",
            target.host
        ));
    }
    let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':');
    let bad_v6 = target.host.contains(':') && target.host.parse::<IpAddr>().is_err();
    if !target.host.bytes().all(ok) || bad_v6 {
        return Some(format!("{:?} is not a host name", target.host));
    }
    None
}

/// `2130706433`, `127.1`, `0x7f.1`, `017700000001`: resolvers read these as IPv4 addresses,
/// so judged as names they would walk around IP rules. A last label that is a number (decimal
/// or `0x` hex) makes the host an address, and then only the strict dotted quad is accepted.
fn numeric_but_not_canonical(host: &str) -> bool {
    let last = host.rsplit('.').next().unwrap_or(host);
    let numeric = !last.is_empty()
        && (last.bytes().all(|b| b.is_ascii_digit())
            || last
                .strip_prefix("0x")
                .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit())));
    numeric && host.parse::<IpAddr>().is_err()
}

/// The policy rules by name: `Ok(pattern)` that allows, or the reason of a denial.
fn check_rules(rules: &EgressRules, client: &ClientId, target: &Target) -> Result<String, String> {
    let who = format!("{} (profile {})", client.name, client.profile);
    let Some(profile) = rules.policy.profile(&client.profile) else {
        return Err(format!("{who}: no such profile"));
    };
    match profile.check(target) {
        RuleMatch::Allowed(rule) => Ok(rule.to_string()),
        RuleMatch::Denied(rule) => Err(format!(
            "{who}: deny rule {rule} matches {}",
            target.authority()
        )),
        RuleMatch::NoRule => Err(format!("{who}: no rule allows {}", target.authority())),
    }
}

/// What the target resolved to.
struct Resolved {
    /// Every address the lookup answered (one for a pin or an IP literal).
    addrs: Vec<IpAddr>,
    /// The port connected to (`--connect-to` may change it).
    port: u16,
    /// Pinned by the operator (`--resolve`, `--connect-to`): exempt from the private rule.
    pinned: bool,
    /// The target is an IP literal (for the wording of reasons).
    literal: bool,
}

type Refusal = (DenyKind, String);

/// Resolves once and applies the address floor; the address to connect to.
async fn resolve_checked(
    rules: &EgressRules,
    client: &ClientId,
    target: &Target,
    resolver: &dyn Resolver,
) -> Result<SocketAddr, Refusal> {
    let resolved = resolve(rules, target, resolver).await?;
    let Some(&first) = resolved.addrs.first() else {
        let reason = format!("cannot resolve {}: no addresses", target.host);
        return Err((DenyKind::Resolve, reason));
    };
    let addr = SocketAddr::new(canonical(first), resolved.port);
    if is_own_addr(&rules.own_addrs, addr) {
        let reason = format!(
            "{} llmtap itself (a proxy loop)",
            subject_own(target, &resolved, addr)
        );
        return Err((DenyKind::PrivateAddress, reason));
    }
    if !resolved.pinned {
        check_private(rules, client, target, &resolved)?;
    }
    Ok(addr)
}

/// `10.0.0.1:8080 is` / `evil.test resolves to 127.0.0.1:8080, which is`.
fn subject_own(target: &Target, resolved: &Resolved, addr: SocketAddr) -> String {
    if resolved.literal && !resolved.pinned && addr.port() == target.port {
        format!("{addr} is")
    } else {
        format!("{} resolves to {addr}, which is", target.authority())
    }
}

/// The private-address floor: every answer must be public or allowed.
fn check_private(
    rules: &EgressRules,
    client: &ClientId,
    target: &Target,
    resolved: &Resolved,
) -> Result<(), Refusal> {
    let profile_allow = rules
        .policy
        .profile(&client.profile)
        .map(|p| p.allow_private.as_slice())
        .unwrap_or_default();
    for &ip in &resolved.addrs {
        let Some(range) = special_range(ip) else {
            continue;
        };
        let allowed = |nets: &[ipnet::IpNet]| nets.iter().any(|n| net_contains(n, ip));
        if allowed(&rules.allow_private) || allowed(profile_allow) {
            continue;
        }
        let reason = if resolved.literal {
            format!("{ip} is a private address ({range})")
        } else {
            format!(
                "{} resolves to {ip}, a private address ({range})",
                target.host
            )
        };
        return Err((DenyKind::PrivateAddress, reason));
    }
    Ok(())
}

/// llmtap's own listen address; the unspecified address (`0.0.0.0`, `::`: "this host") on
/// one of its ports; or any loopback address on the port of an own address that listens on
/// every interface.
fn is_own_addr(own: &[SocketAddr], addr: SocketAddr) -> bool {
    let ip = canonical(addr.ip());
    own.iter().any(|o| {
        let own_ip = canonical(o.ip());
        o.port() == addr.port()
            && (own_ip == ip
                || ip.is_unspecified()
                || (own_ip.is_unspecified() && ip.is_loopback()))
    })
}

/// One resolution: `--connect-to`, else `--resolve`, else an IP literal, else a lookup.
async fn resolve(
    rules: &EgressRules,
    target: &Target,
    resolver: &dyn Resolver,
) -> Result<Resolved, Refusal> {
    let key = (target.host.clone(), target.port);
    if let Some((host2, port2)) = rules.pins.connect_to.get(&key) {
        let addrs = match lookup_pinned(rules, host2, *port2) {
            Some(ip) => vec![ip],
            None => lookup(resolver, host2, *port2).await?,
        };
        return Ok(Resolved {
            addrs,
            port: *port2,
            pinned: true,
            literal: false,
        });
    }
    if let Some(&ip) = rules.pins.resolve.get(&key) {
        return Ok(Resolved {
            addrs: vec![ip],
            port: target.port,
            pinned: true,
            literal: false,
        });
    }
    if let Ok(ip) = target.host.parse::<IpAddr>() {
        return Ok(Resolved {
            addrs: vec![ip],
            port: target.port,
            pinned: false,
            literal: true,
        });
    }
    let addrs = lookup(resolver, &target.host, target.port).await?;
    Ok(Resolved {
        addrs,
        port: target.port,
        pinned: false,
        literal: false,
    })
}

/// HOST2 of a `--connect-to`: a `--resolve` pin at (HOST2, PORT2), else an IP literal.
fn lookup_pinned(rules: &EgressRules, host: &str, port: u16) -> Option<IpAddr> {
    let host = crate::route::normalize_host(host);
    rules
        .pins
        .resolve
        .get(&(host.clone(), port))
        .copied()
        .or_else(|| host.parse().ok())
}

async fn lookup(resolver: &dyn Resolver, host: &str, port: u16) -> Result<Vec<IpAddr>, Refusal> {
    match resolver.lookup(host, port).await {
        Ok(addrs) if !addrs.is_empty() => Ok(addrs),
        Ok(_) => Err((
            DenyKind::Resolve,
            format!("cannot resolve {host}: no addresses"),
        )),
        Err(reason) => Err((
            DenyKind::Resolve,
            format!("cannot resolve {host}: {reason}"),
        )),
    }
}

/// The system resolver (getaddrinfo through tokio), bounded by `LOOKUP_TIMEOUT`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> Pin<Box<dyn std::future::Future<Output = Result<Vec<IpAddr>, String>> + Send + 'a>> {
        Box::pin(async move {
            let found = tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((host, port)))
                .await
                .map_err(|_| format!("timed out after {}s", LOOKUP_TIMEOUT.as_secs()))?
                .map_err(|e| e.to_string())?;
            let mut addrs: Vec<IpAddr> = Vec::new();
            for addr in found {
                if !addrs.contains(&addr.ip()) {
                    addrs.push(addr.ip());
                }
            }
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::policy::{Pins, PolicySet};
    use crate::route::HostList;

    /// Names → answers, counting every lookup. Unknown names do not resolve.
    struct StubResolver {
        answers: HashMap<&'static str, Vec<IpAddr>>,
        calls: AtomicUsize,
    }

    impl StubResolver {
        fn new() -> StubResolver {
            let table: &[(&str, &[&str])] = &[
                ("example.com", &["93.184.216.34"]),
                ("blocked.example.com", &["93.184.216.35"]),
                ("api.anthropic.com", &["160.79.104.10"]),
                ("api.openai.com", &["162.159.140.245"]),
                ("my.openai.azure.com", &["20.1.1.1"]),
                ("pypi.org", &["151.101.0.223"]),
                ("files.pythonhosted.org", &["151.101.1.63"]),
                ("registry.npmjs.org", &["104.16.0.35"]),
                ("six.test", &["2606:4700::1111"]),
                ("evil.test", &["10.1.2.3"]),
                ("mixed.test", &["93.184.216.34", "10.0.0.7"]),
                (
                    "mixed6.test",
                    &["2606:4700::1111", "::ffff:169.254.169.254"],
                ),
                ("localhost", &["127.0.0.1", "::1"]),
                ("db.internal", &["10.1.1.1"]),
                ("lab-db.test", &["10.0.0.2"]),
                ("mapped.test", &["::ffff:10.0.0.2"]),
                ("upstream.test", &["10.0.0.5"]),
                ("pinned.test", &["10.9.9.9"]),
                ("empty.test", &[]),
            ];
            let answers = table
                .iter()
                .map(|(name, ips)| (*name, ips.iter().map(|ip| ip.parse().unwrap()).collect()))
                .collect();
            StubResolver {
                answers,
                calls: AtomicUsize::new(0),
            }
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl Resolver for StubResolver {
        fn lookup<'a>(
            &'a self,
            host: &'a str,
            _port: u16,
        ) -> Pin<Box<dyn std::future::Future<Output = Result<Vec<IpAddr>, String>> + Send + 'a>>
        {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let answer = self
                .answers
                .get(host)
                .cloned()
                .ok_or_else(|| "no such host".to_string());
            Box::pin(async move { answer })
        }
    }

    const POLICY: &str = r#"
[[client]]
name = "browser-sandbox"
profile = "browse"
[[client]]
name = "code-sandbox"
profile = "code"
[[client]]
name = "lab"
profile = "lab"
[profile.browse]
allow = ["*"]
deny = ["*.internal", "blocked.example.com:443", "203.0.113.0/24"]
[profile.code]
allow = ["api.anthropic.com", "api.openai.com", "pypi.org", "files.pythonhosted.org:443",
         "*.npmjs.org", "[2606:4700::1111]:443", "93.184.216.0/24"]
[profile.lab]
allow = ["*"]
allow_private = ["10.0.0.2/32", "fd00:1::/64"]
[profile.default]
allow = []
"#;

    fn pins() -> Pins {
        let mut pins = Pins::default();
        let resolve = [
            ("pinned.test", 443, "10.9.9.9"),
            ("loop.test", 8080, "127.0.0.1"),
            ("loop.test", 9091, "127.0.0.1"),
            ("loop.test", 9092, "127.0.0.1"),
            ("mockhost", 18444, "127.0.0.2"),
        ];
        for (host, port, ip) in resolve {
            pins.resolve
                .insert((host.into(), port), ip.parse().unwrap());
        }
        let connect_to = [
            ("api.openai.com", 8443, "127.0.0.1", 18443),
            ("api.openai.com", 9443, "mockhost", 18444),
            ("api.openai.com", 7443, "upstream.test", 443),
            ("api.openai.com", 6443, "127.0.0.1", 8080),
            ("api.openai.com", 5443, "nx.test", 443),
        ];
        for (host, port, host2, port2) in connect_to {
            pins.connect_to
                .insert((host.into(), port), (host2.into(), port2));
        }
        pins
    }

    fn rules(report: bool) -> EgressRules {
        let text = if report {
            format!("mode = \"report\"\n{POLICY}")
        } else {
            POLICY.to_string()
        };
        EgressRules {
            policy: Arc::new(PolicySet::from_toml(&text, None).unwrap()),
            llm_hosts: HostList::parse("api.anthropic.com,api.openai.com,*.openai.azure.com")
                .unwrap(),
            providers: ProviderMap::builtin(),
            pins: pins(),
            allow_private: vec!["192.168.50.0/24".parse().unwrap()],
            own_addrs: vec![
                "127.0.0.1:8080".parse().unwrap(),
                "0.0.0.0:9091".parse().unwrap(),
                "192.168.50.1:3128".parse().unwrap(),
            ],
        }
    }

    fn client(rules: &EgressRules, name: &str) -> ClientId {
        rules.policy.client_named(name).unwrap_or_else(|| ClientId {
            name: name.into(),
            profile: "nope".into(),
        })
    }

    #[derive(Debug)]
    enum Want {
        /// Kind, and a text the reason must contain.
        Deny(DenyKind, &'static str),
        /// Address, verdict, text the reason must contain.
        Tunnel(&'static str, Verdict, &'static str),
        /// Address, provider.
        Intercept(&'static str, Option<&'static str>),
    }
    use Verdict::{Allow, WouldDeny};
    use Via::{Connect, Http};
    use Want::{Deny, Intercept, Tunnel};
    const POL: DenyKind = DenyKind::Policy;
    const PRIV: DenyKind = DenyKind::PrivateAddress;

    /// (client, host, port, via, report mode, want, lookups made)
    type Case = (&'static str, &'static str, u16, Via, bool, Want, usize);

    #[rustfmt::skip]
    fn cases() -> Vec<Case> {
        vec![
            // wildcards, case, trailing dots, deny over allow
            ("browser-sandbox", "example.com", 443, Connect, false, Tunnel("93.184.216.34:443", Allow, "allow rule *"), 1),
            ("browser-sandbox", "EXAMPLE.COM.", 443, Connect, false, Tunnel("93.184.216.34:443", Allow, "allow rule *"), 1),
            ("browser-sandbox", "db.internal", 443, Connect, false, Deny(POL, "browser-sandbox (profile browse): deny rule *.internal matches db.internal:443"), 0),
            ("browser-sandbox", "A.B.Internal.", 80, Connect, false, Deny(POL, "deny rule *.internal matches a.b.internal:80"), 0),
            ("browser-sandbox", "internal", 443, Connect, false, Deny(DenyKind::Resolve, "cannot resolve internal: no such host"), 1),
            ("browser-sandbox", "blocked.example.com", 443, Connect, false, Deny(POL, "deny rule blocked.example.com:443 matches"), 0),
            ("browser-sandbox", "blocked.example.com", 80, Http, false, Tunnel("93.184.216.35:80", Allow, "allow rule *"), 1),
            ("browser-sandbox", "203.0.113.9", 443, Connect, false, Deny(POL, "deny rule 203.0.113.0/24 matches 203.0.113.9:443"), 0),
            ("browser-sandbox", "[::ffff:203.0.113.9]", 443, Connect, false, Deny(POL, "deny rule 203.0.113.0/24 matches [::ffff:203.0.113.9]:443"), 0),
            ("browser-sandbox", "six.test", 443, Connect, false, Tunnel("[2606:4700::1111]:443", Allow, ""), 1),
            // exact names, ports, suffixes; Intercept vs Tunnel vs Http, provider
            ("code-sandbox", "api.anthropic.com", 443, Connect, false, Intercept("160.79.104.10:443", Some("anthropic")), 1),
            ("code-sandbox", "API.Anthropic.COM.", 443, Connect, false, Intercept("160.79.104.10:443", Some("anthropic")), 1),
            ("code-sandbox", "api.openai.com", 80, Http, false, Intercept("162.159.140.245:80", Some("openai")), 1),
            ("code-sandbox", "pypi.org", 443, Connect, false, Tunnel("151.101.0.223:443", Allow, "allow rule pypi.org"), 1),
            ("code-sandbox", "pypi.org", 80, Http, false, Tunnel("151.101.0.223:80", Allow, "allow rule pypi.org"), 1),
            ("code-sandbox", "files.pythonhosted.org", 443, Connect, false, Tunnel("151.101.1.63:443", Allow, "allow rule files.pythonhosted.org:443"), 1),
            ("code-sandbox", "files.pythonhosted.org", 80, Connect, false, Deny(POL, "code-sandbox (profile code): no rule allows files.pythonhosted.org:80"), 0),
            ("code-sandbox", "example.com", 443, Connect, false, Deny(POL, "code-sandbox (profile code): no rule allows example.com:443"), 0),
            ("code-sandbox", "registry.npmjs.org", 443, Connect, false, Tunnel("104.16.0.35:443", Allow, "allow rule *.npmjs.org"), 1),
            ("code-sandbox", "npmjs.org", 443, Connect, false, Deny(POL, "no rule allows npmjs.org:443"), 0),
            ("code-sandbox", "x.api.anthropic.com", 443, Connect, false, Deny(POL, "no rule allows x.api.anthropic.com:443"), 0),
            ("default", "example.com", 443, Connect, false, Deny(POL, "default (profile default): no rule allows example.com:443"), 0),
            ("ghost", "example.com", 443, Connect, false, Deny(POL, "ghost (profile nope): no such profile"), 0),
            // IP literals and IPv4-mapped IPv6
            ("code-sandbox", "[2606:4700::1111]", 443, Connect, false, Tunnel("[2606:4700::1111]:443", Allow, "allow rule [2606:4700::1111]:443"), 0),
            ("code-sandbox", "[2606:4700::1111]", 80, Connect, false, Deny(POL, "no rule allows [2606:4700::1111]:80"), 0),
            ("code-sandbox", "93.184.216.34", 443, Connect, false, Tunnel("93.184.216.34:443", Allow, "allow rule 93.184.216.0/24"), 0),
            ("code-sandbox", "[::ffff:93.184.216.34]", 443, Connect, false, Tunnel("93.184.216.34:443", Allow, "allow rule 93.184.216.0/24"), 0),
            ("browser-sandbox", "my.openai.azure.com", 443, Connect, false, Intercept("20.1.1.1:443", Some("azure.ai.openai")), 1),
            // the private floor, by literal and by name
            ("browser-sandbox", "10.1.2.3", 443, Connect, false, Deny(PRIV, "10.1.2.3 is a private address (private network 10.0.0.0/8)"), 0),
            ("browser-sandbox", "[::ffff:10.1.2.3]", 443, Connect, false, Deny(PRIV, "::ffff:10.1.2.3 is a private address (private network 10.0.0.0/8)"), 0),
            ("browser-sandbox", "[64:ff9b::a9fe:a9fe]", 80, Http, false, Deny(PRIV, "a private address (link-local 169.254.0.0/16, cloud metadata)"), 0),
            ("browser-sandbox", "[fd00:ec2::254]", 80, Http, false, Deny(PRIV, "unique local fc00::/7"), 0),
            ("browser-sandbox", "[::1]", 443, Connect, false, Deny(PRIV, "::1 is a private address (loopback ::1)"), 0),
            ("browser-sandbox", "[::]", 443, Connect, false, Deny(PRIV, "unspecified ::"), 0),
            ("browser-sandbox", "[fe80::1]", 443, Connect, false, Deny(PRIV, "link-local fe80::/10"), 0),
            ("browser-sandbox", "[ff02::1]", 443, Connect, false, Deny(PRIV, "multicast ff00::/8"), 0),
            ("browser-sandbox", "[::10.1.2.3]", 443, Connect, false, Deny(PRIV, "private network 10.0.0.0/8"), 0),
            ("browser-sandbox", "[2002:a01:203::1]", 443, Connect, false, Deny(PRIV, "private network 10.0.0.0/8"), 0),
            ("browser-sandbox", "evil.test", 443, Connect, false, Deny(PRIV, "evil.test resolves to 10.1.2.3, a private address (private network 10.0.0.0/8)"), 1),
            ("browser-sandbox", "mixed.test", 443, Connect, false, Deny(PRIV, "mixed.test resolves to 10.0.0.7, a private address"), 1),
            ("browser-sandbox", "mixed6.test", 443, Connect, false, Deny(PRIV, "mixed6.test resolves to ::ffff:169.254.169.254, a private address (link-local"), 1),
            ("browser-sandbox", "localhost", 443, Connect, false, Deny(PRIV, "localhost resolves to 127.0.0.1, a private address (loopback 127.0.0.0/8)"), 1),
            // report mode: policy denials pass as would_deny, the floor still holds
            ("code-sandbox", "example.com", 443, Connect, true, Tunnel("93.184.216.34:443", WouldDeny, "code-sandbox (profile code): no rule allows example.com:443"), 1),
            ("browser-sandbox", "blocked.example.com", 443, Connect, true, Tunnel("93.184.216.35:443", WouldDeny, "deny rule blocked.example.com:443"), 1),
            ("browser-sandbox", "db.internal", 443, Connect, true, Deny(PRIV, "db.internal resolves to 10.1.1.1"), 1),
            ("browser-sandbox", "evil.test", 443, Connect, true, Deny(PRIV, "evil.test resolves to 10.1.2.3"), 1),
            ("code-sandbox", "api.anthropic.com", 443, Connect, true, Intercept("160.79.104.10:443", Some("anthropic")), 1),
            // allow_private: per profile and global, mapped forms compared as IPv4
            ("lab", "lab-db.test", 5432, Connect, false, Tunnel("10.0.0.2:5432", Allow, "allow rule *"), 1),
            ("lab", "10.0.0.3", 443, Connect, false, Deny(PRIV, "10.0.0.3 is a private address"), 0),
            ("lab", "[::ffff:10.0.0.2]", 443, Connect, false, Tunnel("10.0.0.2:443", Allow, ""), 0),
            ("lab", "mapped.test", 443, Connect, false, Tunnel("10.0.0.2:443", Allow, ""), 1),
            ("lab", "[fd00:1::5]", 443, Connect, false, Tunnel("[fd00:1::5]:443", Allow, ""), 0),
            ("browser-sandbox", "10.0.0.2", 443, Connect, false, Deny(PRIV, "10.0.0.2 is a private address"), 0),
            ("browser-sandbox", "192.168.50.7", 443, Connect, false, Tunnel("192.168.50.7:443", Allow, ""), 0),
            ("code-sandbox", "192.168.50.7", 443, Connect, false, Deny(POL, "no rule allows 192.168.50.7:443"), 0),
            // pins are exempt from the private rule, never from the loop rule
            ("browser-sandbox", "pinned.test", 443, Connect, false, Tunnel("10.9.9.9:443", Allow, ""), 0),
            ("browser-sandbox", "pinned.test", 80, Connect, false, Deny(PRIV, "pinned.test resolves to 10.9.9.9"), 1),
            ("code-sandbox", "api.openai.com", 8443, Connect, false, Intercept("127.0.0.1:18443", Some("openai")), 0),
            ("code-sandbox", "api.openai.com", 9443, Connect, false, Intercept("127.0.0.2:18444", Some("openai")), 0),
            ("code-sandbox", "api.openai.com", 7443, Connect, false, Intercept("10.0.0.5:443", Some("openai")), 1),
            ("code-sandbox", "api.openai.com", 5443, Connect, false, Deny(DenyKind::Resolve, "cannot resolve nx.test: no such host"), 1),
            ("code-sandbox", "api.openai.com", 6443, Connect, false, Deny(PRIV, "api.openai.com:6443 resolves to 127.0.0.1:8080, which is llmtap itself (a proxy loop)"), 0),
            ("browser-sandbox", "loop.test", 8080, Connect, false, Deny(PRIV, "loop.test:8080 resolves to 127.0.0.1:8080, which is llmtap itself"), 0),
            ("browser-sandbox", "loop.test", 9091, Connect, false, Deny(PRIV, "which is llmtap itself (a proxy loop)"), 0),
            ("browser-sandbox", "loop.test", 9092, Connect, false, Tunnel("127.0.0.1:9092", Allow, ""), 0),
            ("browser-sandbox", "[::1]", 9091, Connect, false, Deny(PRIV, "[::1]:9091 is llmtap itself (a proxy loop)"), 0),
            ("browser-sandbox", "192.168.50.1", 3128, Connect, false, Deny(PRIV, "192.168.50.1:3128 is llmtap itself (a proxy loop)"), 0),
            ("browser-sandbox", "192.168.50.1", 3128, Connect, true, Deny(PRIV, "llmtap itself"), 0),
            // not a target, or no address
            ("browser-sandbox", "", 443, Connect, false, Deny(DenyKind::BadTarget, "empty host"), 0),
            ("browser-sandbox", "example.com", 0, Connect, false, Deny(DenyKind::BadTarget, "port 0"), 0),
            ("browser-sandbox", "exa mple.com", 443, Http, false, Deny(DenyKind::BadTarget, "not a host name"), 0),
            ("browser-sandbox", "fe80::1%eth0", 443, Connect, false, Deny(DenyKind::BadTarget, "not a host name"), 0),
            ("browser-sandbox", "2130706433", 443, Connect, false, Deny(DenyKind::BadTarget, "not a dotted-quad"), 0),
            ("browser-sandbox", "127.1", 443, Connect, false, Deny(DenyKind::BadTarget, "not a dotted-quad"), 0),
            ("browser-sandbox", "0x7f.1", 443, Connect, false, Deny(DenyKind::BadTarget, "not a dotted-quad"), 0),
            ("browser-sandbox", "017700000001", 443, Http, false, Deny(DenyKind::BadTarget, "not a dotted-quad"), 0),
            ("browser-sandbox", "127.0.0.01", 443, Http, false, Deny(DenyKind::BadTarget, "not a dotted-quad"), 0),
            ("browser-sandbox", "nx.test", 443, Connect, false, Deny(DenyKind::Resolve, "cannot resolve nx.test: no such host"), 1),
            ("browser-sandbox", "empty.test", 443, Connect, false, Deny(DenyKind::Resolve, "cannot resolve empty.test: no addresses"), 1),
        ]
    }

    fn expected_route(rules: &EgressRules, host: &str, via: Via) -> Route {
        match via {
            Via::Http => Route::Http,
            Via::Reverse => Route::Reverse,
            Via::Connect if rules.llm_hosts.matches(host) => Route::Intercept,
            Via::Connect => Route::Tunnel,
        }
    }

    fn check_grant(grant: &Grant, id: &ClientId, route: Route, addr: &str, verdict: Verdict) {
        assert_eq!(&grant.client, id);
        assert_eq!(grant.route, route);
        assert_eq!(grant.addr, addr.parse::<SocketAddr>().unwrap());
        assert_eq!(grant.verdict, verdict);
    }

    #[tokio::test]
    async fn decide_table() {
        let table = cases();
        assert!(table.len() >= 45, "{} cases", table.len());
        let (enforce, report) = (rules(false), rules(true));
        for (name, host, port, via, report_mode, want, lookups) in table {
            let label = format!("{name} -> {host}:{port} {via:?} report={report_mode}");
            let rules = if report_mode { &report } else { &enforce };
            let id = client(rules, name);
            let stub = StubResolver::new();
            let got = decide(rules, &id, &Target::new(host, port), via, &stub).await;
            let route = expected_route(rules, host, via);
            match (&got, &want) {
                (Decision::Deny(d), Deny(kind, reason)) => {
                    assert_eq!(d.kind, *kind, "{label}: {d:?}");
                    assert!(d.reason.contains(reason), "{label}: {}", d.reason);
                    assert_eq!(d.client.as_ref(), Some(&id), "{label}");
                    assert_eq!(d.route, route, "{label}");
                    assert_eq!(d.target, Target::new(host, port), "{label}");
                }
                (Decision::Tunnel(g), Tunnel(addr, verdict, reason)) => {
                    check_grant(g, &id, route, addr, *verdict);
                    assert!(g.reason.contains(reason), "{label}: {}", g.reason);
                }
                (Decision::Intercept { grant, provider }, Intercept(addr, want_provider)) => {
                    check_grant(grant, &id, route, addr, Verdict::Allow);
                    assert_eq!(provider.as_deref(), *want_provider, "{label}");
                }
                _ => panic!("{label}: got {got:?}, want {want:?}"),
            }
            assert_eq!(stub.calls(), lookups, "{label}: lookups");
        }
    }

    #[tokio::test]
    async fn every_private_range_is_refused_in_every_form() {
        let samples = [
            ("0.1.2.3", "this network 0.0.0.0/8"),
            ("10.1.2.3", "private network 10.0.0.0/8"),
            ("100.64.1.1", "carrier-grade NAT 100.64.0.0/10"),
            ("127.0.0.1", "loopback 127.0.0.0/8"),
            (
                "169.254.169.254",
                "link-local 169.254.0.0/16, cloud metadata",
            ),
            ("172.16.5.4", "private network 172.16.0.0/12"),
            ("192.168.1.1", "private network 192.168.0.0/16"),
            ("224.0.0.251", "multicast 224.0.0.0/4"),
            ("255.255.255.255", "broadcast 255.255.255.255"),
            ("240.0.0.1", "reserved 240.0.0.0/4"),
        ];
        let rules = rules(false);
        let id = client(&rules, "browser-sandbox");
        let stub = StubResolver::new();
        for (v4, range) in samples {
            let forms = [
                v4.to_string(),
                format!("[::ffff:{v4}]"),
                format!("[64:ff9b::{v4}]"),
                format!("[64:ff9b:1::{v4}]"),
                format!("[::{v4}]"),
            ];
            for host in forms {
                for via in [Via::Connect, Via::Http] {
                    let got = decide(&rules, &id, &Target::new(&host, 443), via, &stub).await;
                    let Decision::Deny(d) = &got else {
                        panic!("{host}: {got:?}")
                    };
                    assert_eq!(d.kind, DenyKind::PrivateAddress, "{host}");
                    assert!(
                        d.reason
                            .ends_with(&format!("is a private address ({range})")),
                        "{host}: {}",
                        d.reason
                    );
                }
            }
        }
        assert_eq!(stub.calls(), 0);
    }

    #[tokio::test]
    async fn the_open_policy_allows_public_hosts_only() {
        let rules = EgressRules {
            policy: Arc::new(PolicySet::open()),
            ..rules(false)
        };
        let id = rules.policy.default_client();
        let stub = StubResolver::new();
        let ok = decide(
            &rules,
            &id,
            &Target::new("example.com", 443),
            Via::Connect,
            &stub,
        )
        .await;
        assert!(
            matches!(ok, Decision::Tunnel(ref g) if g.reason == "allow rule *"),
            "{ok:?}"
        );
        let bad = decide(
            &rules,
            &id,
            &Target::new("evil.test", 443),
            Via::Connect,
            &stub,
        )
        .await;
        assert!(
            matches!(bad, Decision::Deny(ref d) if d.kind == DenyKind::PrivateAddress),
            "{bad:?}"
        );
    }

    #[tokio::test]
    async fn system_resolver_answers_ip_literals_without_the_network() {
        let addrs = SystemResolver.lookup("127.0.0.1", 443).await.unwrap();
        assert_eq!(addrs, vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn host_provider_uses_the_host_map_only() {
        let map = ProviderMap::builtin();
        assert_eq!(
            host_provider(&map, "API.anthropic.com.").as_deref(),
            Some("anthropic")
        );
        assert_eq!(host_provider(&map, "localhost"), None);
    }
}
