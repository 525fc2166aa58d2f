//! X.509 name constraints of the CA: made from `--llm-hosts` for a new CA, read back from
//! `ca.pem`, and checked against `--llm-hosts` at start.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use rcgen::{CidrSubnet, GeneralSubtree, NameConstraints};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use super::CaError;
use crate::route::{HostList, HostPattern};

/// The name constraints of a CA, for the name types a TLS server presents (DNS names, IP
/// addresses). Other name types (e-mail, URI, directory names) never constrain those.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameScope {
    /// Lower-case DNS subtrees; `""` is every name, a leading `.` means subdomains only.
    permitted_dns: Vec<String>,
    excluded_dns: Vec<String>,
    permitted_ip: Vec<IpNet>,
    excluded_ip: Vec<IpNet>,
}

/// What one `--llm-hosts` pattern needs from the CA.
enum Need<'a> {
    Dns(&'a str),
    /// Every name ending in `suffix` (`.example.com`, or `-aiplatform.googleapis.com`): all of
    /// them are subdomains of `base` (`example.com`, `googleapis.com`).
    DnsSuffix {
        base: &'a str,
        suffix: &'a str,
    },
    Ip(IpAddr),
}

fn need(pattern: &HostPattern) -> Option<Need<'_>> {
    match pattern {
        HostPattern::Exact(host) => Some(match host.parse::<IpAddr>() {
            Ok(ip) => Need::Ip(ip),
            Err(_) => Need::Dns(host),
        }),
        HostPattern::Suffix(suffix) => {
            let (_, base) = suffix.split_once('.')?;
            Some(Need::DnsSuffix { base, suffix })
        }
    }
}

/// `*.example.com` as the user wrote it, from its parsed form.
pub(super) fn pattern_text(pattern: &HostPattern) -> String {
    match pattern {
        HostPattern::Exact(host) => host.clone(),
        HostPattern::Suffix(suffix) => format!("*{suffix}"),
    }
}

/// Constraints permitting only `hosts`: an exact name becomes its DNS subtree, `*.example.com`
/// the subtree `example.com`, an address its /32 or /128. A name type with nothing permitted is
/// excluded whole (every DNS name, every IPv4 or IPv6 address), or it would be unconstrained.
pub(super) fn for_hosts(hosts: &HostList) -> Result<NameConstraints, CaError> {
    let mut dns: Vec<String> = Vec::new();
    let mut ips: Vec<CidrSubnet> = Vec::new();
    for pattern in hosts.patterns() {
        let bad = |reason: &str| CaError::BadConstraintHost {
            host: pattern_text(pattern),
            reason: reason.to_string(),
        };
        match need(pattern).ok_or_else(|| bad("no domain after the wildcard"))? {
            Need::Ip(ip) => {
                push_unique(&mut ips, CidrSubnet::from_addr_prefix(ip, full_prefix(ip)))
            }
            Need::Dns(name) | Need::DnsSuffix { base: name, .. } => {
                if !is_dns_subtree(name) {
                    return Err(bad(
                        "not an ASCII DNS name (letters, digits, `-`, `_`, dots)",
                    ));
                }
                push_unique(&mut dns, name.to_string());
            }
        }
    }
    if dns.is_empty() && ips.is_empty() {
        return Err(CaError::NothingToPermit);
    }
    let mut excluded = Vec::new();
    if dns.is_empty() {
        excluded.push(GeneralSubtree::DnsName(String::new()));
    }
    if !ips.iter().any(|s| matches!(s, CidrSubnet::V4(..))) {
        excluded.push(GeneralSubtree::IpAddress(CidrSubnet::V4([0; 4], [0; 4])));
    }
    if !ips.iter().any(|s| matches!(s, CidrSubnet::V6(..))) {
        excluded.push(GeneralSubtree::IpAddress(CidrSubnet::V6([0; 16], [0; 16])));
    }
    let permitted = dns
        .into_iter()
        .map(GeneralSubtree::DnsName)
        .chain(ips.into_iter().map(GeneralSubtree::IpAddress))
        .collect();
    Ok(NameConstraints {
        permitted_subtrees: permitted,
        excluded_subtrees: excluded,
    })
}

fn push_unique<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if !list.contains(&item) {
        list.push(item);
    }
}

fn full_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

fn is_dns_subtree(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The certificate's name constraints; `None` when it has none.
pub(super) fn read(cert: &X509Certificate<'_>) -> Result<Option<NameScope>, String> {
    let ext = cert
        .name_constraints()
        .map_err(|e| format!("name constraints extension: {e}"))?;
    let Some(ext) = ext else {
        return Ok(None);
    };
    let mut scope = NameScope::default();
    for subtree in ext.value.permitted_subtrees.iter().flatten() {
        add(
            &subtree.base,
            &mut scope.permitted_dns,
            &mut scope.permitted_ip,
        )?;
    }
    for subtree in ext.value.excluded_subtrees.iter().flatten() {
        add(
            &subtree.base,
            &mut scope.excluded_dns,
            &mut scope.excluded_ip,
        )?;
    }
    Ok(Some(scope))
}

fn add(name: &GeneralName<'_>, dns: &mut Vec<String>, ips: &mut Vec<IpNet>) -> Result<(), String> {
    match name {
        GeneralName::DNSName(d) => dns.push(d.trim_end_matches('.').to_ascii_lowercase()),
        GeneralName::IPAddress(bytes) => ips.push(ip_subtree(bytes)?),
        GeneralName::Invalid(tag, _) => {
            return Err(format!("name constraint with unreadable value (tag {tag})"));
        }
        _ => {}
    }
    Ok(())
}

/// An iPAddress subtree: address then mask, 4 + 4 or 16 + 16 bytes.
fn ip_subtree(bytes: &[u8]) -> Result<IpNet, String> {
    let (addr, mask): (IpAddr, IpAddr) = match bytes.len() {
        8 => {
            let (a, m) = bytes.split_at(4);
            let a: [u8; 4] = a.try_into().map_err(|_| "bad IPv4 subtree")?;
            let m: [u8; 4] = m.try_into().map_err(|_| "bad IPv4 subtree")?;
            (a.into(), m.into())
        }
        32 => {
            let (a, m) = bytes.split_at(16);
            let a: [u8; 16] = a.try_into().map_err(|_| "bad IPv6 subtree")?;
            let m: [u8; 16] = m.try_into().map_err(|_| "bad IPv6 subtree")?;
            (a.into(), m.into())
        }
        n => {
            return Err(format!(
                "IP address name constraint of {n} bytes (want 8 or 32)"
            ));
        }
    };
    IpNet::with_netmask(addr, mask)
        .map(|net| net.trunc())
        .map_err(|_| format!("IP address name constraint {addr} with non-contiguous mask {mask}"))
}

impl NameScope {
    /// Whether it limits DNS names or IP addresses at all.
    pub fn constrains_anything(&self) -> bool {
        !(self.permitted_dns.is_empty()
            && self.excluded_dns.is_empty()
            && self.permitted_ip.is_empty()
            && self.excluded_ip.is_empty())
    }

    /// Whether every host `pattern` matches may get a leaf that clients accept (RFC 5280
    /// 4.2.1.10: a name must be inside a permitted subtree of its type, if there is one, and
    /// outside every excluded one).
    pub fn admits(&self, pattern: &HostPattern) -> bool {
        match need(pattern) {
            None => false,
            Some(Need::Ip(ip)) => {
                (self.permitted_ip.is_empty() || self.permitted_ip.iter().any(|n| n.contains(&ip)))
                    && !self.excluded_ip.iter().any(|n| n.contains(&ip))
            }
            Some(Need::Dns(name)) => {
                (self.permitted_dns.is_empty()
                    || self.permitted_dns.iter().any(|s| dns_within(name, s)))
                    && !self.excluded_dns.iter().any(|s| dns_within(name, s))
            }
            Some(Need::DnsSuffix { base, suffix }) => {
                let covers = |s: &String| dns_within(base, s) || s.strip_prefix('.') == Some(base);
                // Some matched name lies in `e`: `e` holds `base`, is itself a matched name,
                // or (`.x`, subdomains only) is a tail of the suffix.
                let hits = |e: &String| {
                    dns_within(base, e)
                        || (e.len() > suffix.len() && e.ends_with(suffix))
                        || (e.starts_with('.') && suffix.ends_with(e.as_str()))
                };
                (self.permitted_dns.is_empty() || self.permitted_dns.iter().any(covers))
                    && !self.excluded_dns.iter().any(hits)
            }
        }
    }
}

/// RFC 5280 DNS subtree matching: `""` holds every name, `example.com` itself and its
/// subdomains, `.example.com` (as OpenSSL reads it) only the subdomains.
fn dns_within(name: &str, subtree: &str) -> bool {
    if subtree.is_empty() {
        return true;
    }
    if subtree.starts_with('.') {
        return name.len() > subtree.len() && name.ends_with(subtree);
    }
    name == subtree
        || name
            .strip_suffix(subtree)
            .is_some_and(|rest| rest.ends_with('.'))
}

impl fmt::Display for NameScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |dns: &[String], ips: &[IpNet]| -> String {
            let dns = dns.iter().map(|d| match d.as_str() {
                "" => "DNS * (every name)".to_string(),
                d => format!("DNS {d}"),
            });
            let ips = ips.iter().map(|n| format!("IP {n}"));
            dns.chain(ips).collect::<Vec<_>>().join(", ")
        };
        let permitted = list(&self.permitted_dns, &self.permitted_ip);
        let excluded = list(&self.excluded_dns, &self.excluded_ip);
        match (permitted.is_empty(), excluded.is_empty()) {
            (true, true) => write!(f, "no DNS or IP constraints"),
            (false, true) => write!(f, "permitted {permitted}"),
            (true, false) => write!(f, "excluded {excluded}"),
            (false, false) => write!(f, "permitted {permitted}; excluded {excluded}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(
        permitted_dns: &[&str],
        excluded_dns: &[&str],
        ips: &[&str],
        ex_ips: &[&str],
    ) -> NameScope {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        let n = |v: &[&str]| v.iter().map(|s| s.parse().unwrap()).collect();
        NameScope {
            permitted_dns: s(permitted_dns),
            excluded_dns: s(excluded_dns),
            permitted_ip: n(ips),
            excluded_ip: n(ex_ips),
        }
    }

    #[test]
    fn patterns_inside_and_outside_a_scope() {
        let ours = scope(
            &["api.openai.com", "example.com"],
            &[],
            &["127.0.0.1/32"],
            &["::/0"],
        );
        let cases = [
            ("api.openai.com", true),
            ("x.api.openai.com", true),
            ("*.api.openai.com", true),
            ("openai.com", false),
            ("*.openai.com", false),
            ("api.openai.com.evil.com", false),
            ("example.com", true),
            ("*.example.com", true),
            ("*-x.example.com", true),
            ("notexample.com", false),
            ("*-example.com", false),
            ("127.0.0.1", true),
            ("127.0.0.2", false),
            ("::1", false),
        ];
        for (pattern, want) in cases {
            let p = HostPattern::parse(pattern).unwrap();
            assert_eq!(ours.admits(&p), want, "{pattern}");
        }
    }

    #[test]
    fn excluded_subtrees_win() {
        let s = scope(
            &[],
            &["bad.example.com", ".sub.example.com"],
            &[],
            &["10.0.0.0/8"],
        );
        let cases = [
            ("example.com", true),
            ("bad.example.com", false),
            ("x.bad.example.com", false),
            ("*.example.com", false),
            ("sub.example.com", true),
            ("a.sub.example.com", false),
            ("*.sub.example.com", false),
            ("*-aiplatform.googleapis.com", true),
            ("10.1.2.3", false),
            ("11.1.2.3", true),
        ];
        for (pattern, want) in cases {
            let p = HostPattern::parse(pattern).unwrap();
            assert_eq!(s.admits(&p), want, "{pattern}");
        }
        let nothing = scope(&[], &[""], &[], &[]);
        assert!(!nothing.admits(&HostPattern::parse("a.com").unwrap()));
        assert!(!nothing.admits(&HostPattern::parse("*.a.com").unwrap()));
        assert!(nothing.admits(&HostPattern::parse("1.2.3.4").unwrap()));
    }

    #[test]
    fn constraints_from_hosts() {
        let hosts = HostList::parse(
            "API.openai.com,*.example.com,*-aiplatform.googleapis.com,*.example.com",
        )
        .unwrap();
        let nc = for_hosts(&hosts).unwrap();
        assert_eq!(
            nc.permitted_subtrees,
            ["api.openai.com", "example.com", "googleapis.com"]
                .map(|d| GeneralSubtree::DnsName(d.into()))
        );
        assert_eq!(
            nc.excluded_subtrees,
            vec![
                GeneralSubtree::IpAddress(CidrSubnet::V4([0; 4], [0; 4])),
                GeneralSubtree::IpAddress(CidrSubnet::V6([0; 16], [0; 16])),
            ]
        );
        let nc = for_hosts(&HostList::parse("127.0.0.1,[::1]").unwrap()).unwrap();
        assert_eq!(
            nc.excluded_subtrees,
            vec![GeneralSubtree::DnsName(String::new())]
        );
        assert_eq!(nc.permitted_subtrees.len(), 2);

        assert!(matches!(
            for_hosts(&HostList::parse("").unwrap()),
            Err(CaError::NothingToPermit)
        ));
        let err =
            for_hosts(&HostList::parse("api.openai.com,bücher.example").unwrap()).unwrap_err();
        assert!(err.to_string().contains("bücher.example"), "{err}");
    }

    #[test]
    fn ip_subtrees_read_back() {
        assert_eq!(
            ip_subtree(&[10, 0, 0, 0, 255, 0, 0, 0]).unwrap(),
            "10.0.0.0/8".parse::<IpNet>().unwrap()
        );
        assert!(ip_subtree(&[10, 0, 0, 0, 255, 0, 255, 0]).is_err());
        assert!(ip_subtree(&[10, 0, 0, 0]).is_err());
        let s = scope(&["a.com"], &[], &[], &["0.0.0.0/0"]);
        assert_eq!(s.to_string(), "permitted DNS a.com; excluded IP 0.0.0.0/0");
    }
}
