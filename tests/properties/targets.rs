//! Where a connection asks to go: the CONNECT authority (`authority_target`), the
//! `policy check` target (`parse_target`) and policy host patterns (`HostRule::parse`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::uri::Authority;
use proptest::prelude::*;

use llmtap::policy::Target;
use llmtap::policy::pattern::{HostMatch, HostRule};
use llmtap::policy_check::parse_target;
use llmtap::proxy::handler::authority_target;
use llmtap::route::normalize_host;

use crate::{cases, shared};

/// Hosts as clients write them, good and bad.
fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z0-9-]{1,12}(\\.[a-zA-Z0-9-]{1,8}){0,3}\\.?",
        2 => any::<Ipv4Addr>().prop_map(|ip| ip.to_string()),
        2 => any::<Ipv6Addr>().prop_map(|ip| format!("[{ip}]")),
        1 => proptest::sample::select(&["", ".", "..", "[]", "[", "]", "[::1", "::1", "a..b", "-"][..]).prop_map(str::to_string),
        1 => "[a-z._~%!$&'()*+,;=-]{0,10}",
    ]
}

/// Ports as clients write them, good and bad: `None` is no `:` at all.
fn port_text() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        1 => Just(None),
        4 => (1u16..=65535).prop_map(|p| Some(p.to_string())),
        2 => proptest::sample::select(&["", "0", "00", "+443", "-1", "0443", "65535", "65536", "99999", "4294967739", " 443", "443 ", "4a", "١٢"][..]).prop_map(|s| Some(s.to_string())),
        1 => "[0-9a-z+ -]{1,6}".prop_map(Some),
    ]
}

/// `text` is a port the strict rules accept: 1–65535, written in ASCII digits.
fn strict_port(text: &str) -> Option<u16> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u16>().ok().filter(|p| *p != 0)
}

fn authority(userinfo: &Option<String>, host: &str, port: &Option<String>) -> String {
    let mut s = userinfo
        .clone()
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    s.push_str(host);
    if let Some(p) = port {
        s.push(':');
        s.push_str(p);
    }
    s
}

/// IPv4 networks with their host bits cleared, as `a.b.c.d/len`.
fn v4_net() -> impl Strategy<Value = (u32, u8)> {
    (any::<u32>(), 0u8..=32).prop_map(|(addr, len)| (addr & mask(len), len))
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

/// CONNECT (no default port) takes exactly `host:port` with a non-empty host and a port of
/// 1–65535 in digits; plain HTTP (default 80) also takes a bare host. What it accepts
/// prints to an authority that parses back to the same target.
#[test]
fn connect_authority_is_strict() {
    let _g = shared();
    proptest!(cases(256), |(
        userinfo in proptest::option::of("[a-z]{1,6}(:[a-z0-9]{1,6})?"),
        host in host(),
        port in port_text(),
        default in proptest::option::of(Just(80u16)),
    )| {
        let raw = authority(&userinfo, &host, &port);
        let Ok(auth) = raw.parse::<Authority>() else {
            return Ok(());
        };
        let got = authority_target(&auth, default);
        let want_port = match (port.as_deref(), default) {
            (None, d) => d,
            (Some(p), _) => strict_port(p),
        };
        let want_host = normalize_host(auth.host());
        match (&got, want_port) {
            (Ok(t), Some(p)) if !want_host.is_empty() => {
                prop_assert_eq!(t, &Target::new(auth.host(), p), "{:?}", raw);
            }
            (Ok(t), _) => prop_assert!(false, "{:?} accepted as {:?}", raw, t),
            (Err(_), Some(_)) if want_host.is_empty() => {}
            (Err(e), Some(p)) => prop_assert!(false, "{:?} (port {}) refused: {}", raw, p, e),
            (Err(_), None) => {}
        }
        if let Ok(t) = got {
            let again: Authority = t.authority().parse().map_err(|e| TestCaseError::fail(format!("{} does not parse: {e}", t.authority())))?;
            prop_assert_eq!(authority_target(&again, None), Ok(t));
        }
    });
}

/// `policy check` targets: no panic; what is accepted has a host and a non-zero port given
/// in digits, and prints to a string that parses back to the same target.
#[test]
fn policy_check_targets_round_trip() {
    let _g = shared();
    proptest!(cases(256), |(
        raw in prop_oneof![ (host(), port_text()).prop_map(|(h, p)| authority(&None, &h, &p)), any::<String>(), "[\\[\\]:a-z0-9. ]{0,12}", ],
        default in 1u16..=65535,
    )| {
        let Ok(t) = parse_target(&raw, default) else {
            return Ok(());
        };
        prop_assert!(!t.host.is_empty() && t.port != 0, "{:?} → {:?}", raw, t);
        if let Some((_, p)) = raw.trim().rsplit_once(':').filter(|(h, _)| !h.contains(':') || h.ends_with(']')) {
            prop_assert!(strict_port(p).is_some(), "{:?}: port {:?} accepted", raw, p);
        }
        let other = if default == 443 { 80 } else { 443 };
        prop_assert_eq!(parse_target(&t.authority(), other), Ok(t.clone()), "{:?} prints as {}", raw, t.authority());
    });
}

/// Policy host patterns on any text: no panic; an accepted pattern keeps its text, has no
/// port 0, re-parses to itself, and matching never panics.
#[test]
fn host_patterns_never_panic_and_reparse() {
    let _g = shared();
    proptest!(cases(256), |(
        raw in prop_oneof![ any::<String>(), "[a-z0-9*.:/\\[\\] -]{0,30}", (host(), port_text()).prop_map(|(h, p)| authority(&None, &h, &p)), ],
        target_host in host(),
        target_port in 1u16..=65535,
    )| {
        let Ok(rule) = HostRule::parse(&raw) else {
            return Ok(());
        };
        prop_assert_eq!(rule.as_str(), raw.trim());
        prop_assert_eq!(rule.to_string(), raw.trim());
        prop_assert!(rule.port() != Some(0));
        if let Some((_, p)) = raw.trim().rsplit_once(':').filter(|(h, _)| !h.contains(':') || h.ends_with(']')) {
            prop_assert!(strict_port(p).is_some(), "{:?}: port {:?} accepted", raw, p);
        }
        prop_assert_eq!(HostRule::parse(rule.as_str()), Ok(rule.clone()));
        let _ = rule.matches(&Target::new(&target_host, target_port));
    });
}

/// Name patterns match the name (any case, trailing dot) and, for `*.`, its subdomains
/// only; ports match when given.
#[test]
fn name_patterns_match_as_documented() {
    let _g = shared();
    proptest!(cases(256), |(
        labels in proptest::collection::vec("[a-zA-Z0-9_-]{1,10}", 1..4),
        last in "[a-z][a-z0-9-]{0,6}",
        wildcard in any::<bool>(),
        dot in any::<bool>(),
        port in proptest::option::of(1u16..=65535),
        sub in "[a-z0-9]{1,6}",
    )| {
        let name = format!("{}.{last}", labels.join("."));
        let mut raw = if wildcard { format!("*.{name}") } else { name.clone() };
        if dot {
            raw.push('.');
        }
        if let Some(p) = port {
            raw.push_str(&format!(":{p}"));
        }
        let rule = HostRule::parse(&raw).map_err(|e| TestCaseError::fail(format!("{raw:?}: {e}")))?;
        let lower = name.to_ascii_lowercase();
        let want = if wildcard { HostMatch::Suffix(format!(".{lower}")) } else { HostMatch::Exact(lower.clone()) };
        prop_assert_eq!(rule.host(), &want);
        prop_assert_eq!(rule.port(), port);
        let p = port.unwrap_or(443);
        let other = if p == 1 { 2 } else { p - 1 };
        let child = format!("{sub}.{}", name.to_ascii_uppercase());
        prop_assert_eq!(rule.matches(&Target::new(&name.to_ascii_uppercase(), p)), !wildcard);
        prop_assert_eq!(rule.matches(&Target::new(&format!("{name}."), p)), !wildcard);
        prop_assert_eq!(rule.matches(&Target::new(&child, p)), wildcard);
        let glued = format!("{sub}{lower}");
        prop_assert!(!rule.matches(&Target::new(&glued, p)));
        if port.is_some() {
            prop_assert!(!rule.matches(&Target::new(&name, other)));
            prop_assert!(!rule.matches(&Target::new(&child, other)));
        }
        prop_assert!(!rule.matches(&Target::new("10.0.0.1", p)));
    });
}

/// CIDR patterns match exactly the addresses in the network (and their IPv4-mapped IPv6
/// forms), never a name; host bits set are refused.
#[test]
fn cidr_patterns_match_their_network() {
    let _g = shared();
    proptest!(cases(256), |(
        (net, len) in v4_net(),
        probe in any::<u32>(),
        stray in any::<u32>(),
        port in proptest::option::of(1u16..=65535),
        bracketed in any::<bool>(),
    )| {
        let base = Ipv4Addr::from(net);
        let text = format!("{base}/{len}");
        let raw = match (port, bracketed) {
            (Some(p), true) => format!("[{text}]:{p}"),
            (Some(p), false) => format!("{text}:{p}"),
            (None, true) => format!("[{text}]"),
            (None, false) => text.clone(),
        };
        let rule = HostRule::parse(&raw).map_err(|e| TestCaseError::fail(format!("{raw:?}: {e}")))?;
        prop_assert!(matches!(rule.host(), HostMatch::Net(_)));
        let p = port.unwrap_or(443);
        let inside = probe & mask(len) == net;
        let ip = Ipv4Addr::from(probe);
        prop_assert_eq!(rule.matches(&Target::new(&ip.to_string(), p)), inside, "{} vs {}", raw, ip);
        let mapped = IpAddr::V6(ip.to_ipv6_mapped());
        prop_assert_eq!(rule.matches(&Target::new(&mapped.to_string(), p)), inside, "{} vs {}", raw, mapped);
        let name = format!("{ip}.example");
        prop_assert!(!rule.matches(&Target::new(&name, p)));
        if stray & !mask(len) != 0 {
            let dirty = format!("{}/{len}", Ipv4Addr::from(net | (stray & !mask(len))));
            prop_assert!(HostRule::parse(&dirty).is_err(), "{} accepted", dirty);
        }
    });
}
