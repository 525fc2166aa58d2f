//! Private and special address ranges that are never reached unless allowed.
//!
//! `special_range` names the range an address is in (`None`: a public address). IPv6 forms
//! that carry an IPv4 address (IPv4-mapped, IPv4-compatible, IPv4-translated, NAT64, 6to4)
//! are unwrapped and the IPv4 address classified, so `::ffff:10.0.0.1` is as private as
//! `10.0.0.1`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

const fn v6(segments: [u16; 8], len: u8) -> Ipv6Net {
    let [a, b, c, d, e, f, g, h] = segments;
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), len)
}

/// IPv4 special ranges, most specific first (broadcast lies inside reserved 240/4).
const V4_RANGES: &[(Ipv4Net, &str)] = &[
    (v4(0, 0, 0, 0, 8), "this network 0.0.0.0/8"),
    (v4(10, 0, 0, 0, 8), "private network 10.0.0.0/8"),
    (v4(100, 64, 0, 0, 10), "carrier-grade NAT 100.64.0.0/10"),
    (v4(127, 0, 0, 0, 8), "loopback 127.0.0.0/8"),
    (
        v4(169, 254, 0, 0, 16),
        "link-local 169.254.0.0/16, cloud metadata",
    ),
    (v4(172, 16, 0, 0, 12), "private network 172.16.0.0/12"),
    (v4(192, 168, 0, 0, 16), "private network 192.168.0.0/16"),
    (v4(224, 0, 0, 0, 4), "multicast 224.0.0.0/4"),
    (v4(255, 255, 255, 255, 32), "broadcast 255.255.255.255"),
    (v4(240, 0, 0, 0, 4), "reserved 240.0.0.0/4"),
];

/// IPv6 ranges that are special in themselves (checked after the IPv4-carrying forms).
const V6_RANGES: &[(Ipv6Net, &str)] = &[
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 128), "unspecified ::"),
    (v6([0, 0, 0, 0, 0, 0, 0, 1], 128), "loopback ::1"),
    (
        v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
        "link-local fe80::/10",
    ),
    (
        v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
        "site-local fec0::/10",
    ),
    (
        v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        "unique local fc00::/7, cloud metadata fd00:ec2::254",
    ),
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), "multicast ff00::/8"),
];

/// IPv6 prefixes whose last 32 bits are an IPv4 address.
const V6_EMBEDDING_V4: &[Ipv6Net] = &[
    // IPv4-mapped ::ffff:a.b.c.d
    v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96),
    // IPv4-translated (SIIT) ::ffff:0:a.b.c.d
    v6([0, 0, 0, 0, 0xffff, 0, 0, 0], 96),
    // NAT64 well-known prefix
    v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96),
    // NAT64 local-use prefix (RFC 8215), in its usual /96 layout
    v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
    // IPv4-compatible ::a.b.c.d (deprecated); `::` and `::1` are classified as IPv6
    v6([0, 0, 0, 0, 0, 0, 0, 0], 96),
];

/// 6to4: bits 16..48 are an IPv4 address.
const SIX_TO_FOUR: Ipv6Net = v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16);

/// The special range `ip` is in, e.g. `private network 10.0.0.0/8`; `None` for a public address.
pub fn special_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => special_v4(ip),
        IpAddr::V6(ip) => special_v6(ip),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    V4_RANGES
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|(_, name)| *name)
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(embedded) = embedded_v4(ip) {
        return special_v4(embedded);
    }
    V6_RANGES
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|(_, name)| *name)
}

/// The IPv4 address an IPv6 address carries (mapped, translated, compatible, NAT64, 6to4).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    if bits <= 1 {
        return None; // `::` and `::1` are IPv6 addresses of their own
    }
    if V6_EMBEDDING_V4.iter().any(|net| net.contains(&ip)) {
        return Some(Ipv4Addr::from((bits & 0xffff_ffff) as u32));
    }
    if SIX_TO_FOUR.contains(&ip) {
        return Some(Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32));
    }
    None
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as the IPv4 address it is; others unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Whether `net` holds `ip`, comparing an IPv4-mapped IPv6 address as IPv4 too.
pub fn net_contains(net: &IpNet, ip: IpAddr) -> bool {
    net.contains(&ip) || net.contains(&canonical(ip))
}

/// A CIDR (`10.0.0.0/8`, `fd00::/8`) or a bare address (a /32 or /128). Host bits must be
/// zero (`10.0.0.1/8` is refused: it is almost always a typo). An IPv4-mapped network
/// (`::ffff:10.0.0.0/104`) is stored as the IPv4 network it means.
pub fn parse_cidr(raw: &str) -> Result<IpNet, String> {
    let text = raw.trim();
    let net = if text.contains('/') {
        text.parse::<IpNet>()
            .map_err(|_| "not a CIDR (like 10.0.0.0/8 or fd00::/8)".to_string())?
    } else {
        let ip = text
            .parse::<IpAddr>()
            .map_err(|_| "not an IP address or CIDR".to_string())?;
        IpNet::from(ip)
    };
    if net.trunc() != net {
        return Err(format!("host bits set (the network is {})", net.trunc()));
    }
    Ok(canonical_net(net))
}

/// `::ffff:a.b.c.d/N` (N ≥ 96) as `a.b.c.d/(N-96)`; other networks unchanged.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(n) if n.prefix_len() >= 96 => match n.addr().to_ipv4_mapped() {
            Some(addr) => Ipv4Net::new(addr, n.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(net),
            None => net,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn special_ranges_are_named() {
        let cases: &[(&str, Option<&str>)] = &[
            ("0.0.0.0", Some("this network 0.0.0.0/8")),
            ("0.1.2.3", Some("this network 0.0.0.0/8")),
            ("10.0.0.1", Some("private network 10.0.0.0/8")),
            ("10.255.255.255", Some("private network 10.0.0.0/8")),
            ("11.0.0.1", None),
            ("100.64.0.1", Some("carrier-grade NAT 100.64.0.0/10")),
            ("100.127.255.255", Some("carrier-grade NAT 100.64.0.0/10")),
            ("100.128.0.0", None),
            ("127.0.0.1", Some("loopback 127.0.0.0/8")),
            ("127.9.9.9", Some("loopback 127.0.0.0/8")),
            (
                "169.254.169.254",
                Some("link-local 169.254.0.0/16, cloud metadata"),
            ),
            ("172.16.0.1", Some("private network 172.16.0.0/12")),
            ("172.31.255.255", Some("private network 172.16.0.0/12")),
            ("172.32.0.1", None),
            ("192.168.1.1", Some("private network 192.168.0.0/16")),
            ("192.169.0.1", None),
            ("224.0.0.1", Some("multicast 224.0.0.0/4")),
            ("239.255.255.250", Some("multicast 224.0.0.0/4")),
            ("240.0.0.1", Some("reserved 240.0.0.0/4")),
            ("255.255.255.254", Some("reserved 240.0.0.0/4")),
            ("255.255.255.255", Some("broadcast 255.255.255.255")),
            ("93.184.216.34", None),
            ("8.8.8.8", None),
            ("::", Some("unspecified ::")),
            ("::1", Some("loopback ::1")),
            ("fe80::1", Some("link-local fe80::/10")),
            ("febf::1", Some("link-local fe80::/10")),
            ("fec0::1", Some("site-local fec0::/10")),
            (
                "fd00:ec2::254",
                Some("unique local fc00::/7, cloud metadata fd00:ec2::254"),
            ),
            (
                "fc00::1",
                Some("unique local fc00::/7, cloud metadata fd00:ec2::254"),
            ),
            ("ff02::1", Some("multicast ff00::/8")),
            ("2606:4700::1111", None),
            ("2001:db8::1", None),
        ];
        for (addr, want) in cases {
            assert_eq!(special_range(ip(addr)), *want, "{addr}");
        }
    }

    #[test]
    fn ipv6_forms_of_ipv4_are_unwrapped() {
        let cases: &[(&str, Option<&str>)] = &[
            ("::ffff:10.1.2.3", Some("private network 10.0.0.0/8")),
            ("::ffff:127.0.0.1", Some("loopback 127.0.0.0/8")),
            (
                "::ffff:169.254.169.254",
                Some("link-local 169.254.0.0/16, cloud metadata"),
            ),
            ("::ffff:0:0", Some("this network 0.0.0.0/8")),
            ("::ffff:8.8.8.8", None),
            ("::ffff:0:10.0.0.1", Some("private network 10.0.0.0/8")),
            ("::10.0.0.1", Some("private network 10.0.0.0/8")),
            ("::127.0.0.1", Some("loopback 127.0.0.0/8")),
            ("::0.0.0.2", Some("this network 0.0.0.0/8")),
            ("::8.8.8.8", None),
            ("64:ff9b::10.0.0.1", Some("private network 10.0.0.0/8")),
            (
                "64:ff9b::a9fe:a9fe",
                Some("link-local 169.254.0.0/16, cloud metadata"),
            ),
            ("64:ff9b::8.8.8.8", None),
            (
                "64:ff9b:1::192.168.0.1",
                Some("private network 192.168.0.0/16"),
            ),
            (
                "64:ff9b:1:2:3:4:c0a8:1",
                Some("private network 192.168.0.0/16"),
            ),
            ("64:ff9b:1::8.8.8.8", None),
            ("2002:a00:1::1", Some("private network 10.0.0.0/8")),
            ("2002:7f00:1::", Some("loopback 127.0.0.0/8")),
            ("2002:808:808::1", None),
        ];
        for (addr, want) in cases {
            assert_eq!(special_range(ip(addr)), *want, "{addr}");
        }
    }

    #[test]
    fn cidrs_parse_and_mapped_forms_compare_as_ipv4() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("10.0.0.0/8", Ok("10.0.0.0/8")),
            ("10.0.0.2", Ok("10.0.0.2/32")),
            (" fd00::/8 ", Ok("fd00::/8")),
            ("::1", Ok("::1/128")),
            ("::ffff:10.0.0.0/104", Ok("10.0.0.0/8")),
            ("10.0.0.0/33", Err("not a CIDR")),
            (
                "10.0.0.1/8",
                Err("host bits set (the network is 10.0.0.0/8)"),
            ),
            ("example.com", Err("not an IP address")),
            ("", Err("not an IP address")),
        ];
        for (raw, want) in cases {
            match (parse_cidr(raw), want) {
                (Ok(net), Ok(w)) => assert_eq!(net.to_string(), *w, "{raw}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{raw}: {e}"),
                (got, _) => panic!("{raw}: {got:?}"),
            }
        }
        let net = parse_cidr("10.0.0.0/8").unwrap();
        assert!(net_contains(&net, ip("::ffff:10.9.9.9")));
        assert!(!net_contains(&net, ip("64:ff9b::10.9.9.9")));
        assert_eq!(canonical(ip("::ffff:1.2.3.4")), ip("1.2.3.4"));
        assert_eq!(canonical(ip("::1")), ip("::1"));
    }
}
