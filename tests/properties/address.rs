//! `special_range` against an independent reference: IPv4 ranges by bit arithmetic, `std`'s
//! address predicates, and every IPv6 form that carries an IPv4 address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use llmtap::policy::address::special_range;

use crate::{cases, shared};

/// The IPv4 special ranges by first bits, written apart from the crate's table.
fn reference_v4(ip: u32) -> Option<&'static str> {
    let [a, b, _, _] = ip.to_be_bytes();
    let range = match (a, b) {
        _ if ip == u32::MAX => "broadcast",
        (0, _) => "this network",
        (10, _) => "private",
        (100, 64..=127) => "carrier-grade NAT",
        (127, _) => "loopback",
        (169, 254) => "link-local",
        (172, 16..=31) => "private",
        (192, 168) => "private",
        (224..=239, _) => "multicast",
        (240..=255, _) => "reserved",
        _ => return None,
    };
    Some(range)
}

/// The first words of the crate's names, to compare with the reference's.
fn kind(name: Option<&str>) -> Option<&'static str> {
    let name = name?;
    let kinds = [
        "broadcast",
        "this network",
        "private",
        "carrier-grade NAT",
        "loopback",
        "link-local",
        "multicast",
        "reserved",
        "unspecified",
        "site-local",
        "unique local",
    ];
    Some(
        kinds
            .into_iter()
            .find(|k| name.starts_with(k))
            .unwrap_or("unnamed"),
    )
}

/// `std`'s view of an IPv4 address being special (what it can say on stable Rust).
fn std_special(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || a == 0
        || a >= 240
        || (a == 100 && (64..128).contains(&b))
}

/// The IPv6 forms that carry an IPv4 address, built from it.
#[derive(Debug, Clone, Copy)]
enum Carrier {
    Mapped,
    Translated,
    Compatible,
    Nat64,
    Nat64Local,
    SixToFour,
}

fn carry(form: Carrier, v4: u32, noise: u128) -> Ipv6Addr {
    let v4 = u128::from(v4);
    let bits = match form {
        Carrier::Mapped => 0xffff << 32 | v4,
        Carrier::Translated => 0xffff << 48 | v4,
        Carrier::Compatible => v4,
        Carrier::Nat64 => 0x64_ff9b << 96 | v4,
        // 64:ff9b:1::/48: any bits between the prefix and the last 32 are allowed.
        Carrier::Nat64Local => 0x0064_ff9b_0001_u128 << 80 | (noise & ((1 << 48) - 1)) << 32 | v4,
        // 2002:V4::/48, any subnet and interface id.
        Carrier::SixToFour => 0x2002 << 112 | v4 << 80 | (noise & ((1 << 80) - 1)),
    };
    Ipv6Addr::from(bits)
}

/// IPv4 addresses near the ranges' edges, and anywhere.
fn v4() -> impl Strategy<Value = u32> {
    let edges: Vec<u32> = [
        [0, 0, 0, 0],
        [10, 0, 0, 0],
        [100, 64, 0, 0],
        [100, 128, 0, 0],
        [127, 0, 0, 0],
        [128, 0, 0, 0],
        [169, 254, 0, 0],
        [169, 255, 0, 0],
        [172, 16, 0, 0],
        [172, 32, 0, 0],
        [192, 168, 0, 0],
        [192, 169, 0, 0],
        [224, 0, 0, 0],
        [240, 0, 0, 0],
        [255, 255, 255, 255],
    ]
    .iter()
    .map(|o| u32::from_be_bytes(*o))
    .collect();
    prop_oneof![
        any::<u32>(),
        (proptest::sample::select(edges), -2i64..=2)
            .prop_map(|(e, d)| (i64::from(e) + d).clamp(0, i64::from(u32::MAX)) as u32),
    ]
}

/// The pure-IPv6 special ranges, written apart from the crate's table.
fn reference_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let bits = u128::from(ip);
    let top = (bits >> 112) as u16;
    match () {
        _ if bits == 0 => Some("unspecified"),
        _ if bits == 1 => Some("loopback"),
        _ if top & 0xffc0 == 0xfe80 => Some("link-local"),
        _ if top & 0xffc0 == 0xfec0 => Some("site-local"),
        _ if top & 0xfe00 == 0xfc00 => Some("unique local"),
        _ if top & 0xff00 == 0xff00 => Some("multicast"),
        _ => None,
    }
}

/// The IPv4 address an IPv6 address carries, by the forms the module documents.
fn reference_embedded(ip: Ipv6Addr) -> Option<u32> {
    let bits = u128::from(ip);
    let low = bits as u32;
    let high96 = bits >> 32;
    match () {
        _ if bits <= 1 => None,
        _ if high96 == 0xffff || high96 == 0xffff_0000 || high96 == 0 => Some(low),
        _ if high96 == 0x64_ff9b_0000_0000_0000_0000 => Some(low),
        _ if bits >> 80 == 0x0064_ff9b_0001 => Some(low),
        _ if bits >> 112 == 0x2002 => Some((bits >> 80) as u32),
        _ => None,
    }
}

/// Every IPv4 address is in the reference's range, and special exactly when `std` says so.
#[test]
fn ipv4_ranges_match_the_reference() {
    let _g = shared();
    proptest!(cases(256), |(
        ip in v4(),
    )| {
        let addr = Ipv4Addr::from(ip);
        let got = special_range(IpAddr::V4(addr));
        prop_assert_eq!(kind(got), reference_v4(ip), "{} is {:?}", addr, got);
        prop_assert_eq!(got.is_some(), std_special(addr), "{} is {:?}", addr, got);
    });
}

/// An IPv6 address carrying an IPv4 address is classified as that IPv4 address, with the
/// same name; `std`'s `to_ipv4_mapped` agrees for the mapped form.
#[test]
fn ipv4_carrying_ipv6_is_classified_as_ipv4() {
    let _g = shared();
    proptest!(cases(256), |(
        ip in v4(),
        form in proptest::sample::select(&[Carrier::Mapped, Carrier::Translated, Carrier::Compatible, Carrier::Nat64, Carrier::Nat64Local, Carrier::SixToFour][..]),
        noise in any::<u128>(),
    )| {
        let v6 = carry(form, ip, noise);
        let got = special_range(IpAddr::V6(v6));
        let as_v4 = special_range(IpAddr::V4(Ipv4Addr::from(ip)));
        if u128::from(v6) <= 1 {
            // `::` and `::1` are IPv6 addresses of their own.
            prop_assert_eq!(kind(got), reference_v6(v6));
        } else {
            prop_assert_eq!(got, as_v4, "{} ({:?} of {})", v6, form, Ipv4Addr::from(ip));
        }
        if let Some(mapped) = v6.to_ipv4_mapped() {
            prop_assert_eq!(got, special_range(IpAddr::V4(mapped)));
        }
    });
}

/// Any IPv6 address: an embedded IPv4 address decides if there is one, else the IPv6 ranges;
/// `std`'s predicates agree on the ranges it knows.
#[test]
fn ipv6_ranges_match_the_reference() {
    let _g = shared();
    proptest!(cases(256), |(
        bits in prop_oneof![ any::<u128>(), (proptest::sample::select(&[0u128, 0xfe80, 0xfebf, 0xfec0, 0xfc00, 0xfdff, 0xff00, 0x2002, 0x0064, 0x2001][..]), any::<u128>()) .prop_map(|(top, rest)| top << 112 | (rest >> 16)), (0u128..4), ],
    )| {
        let v6 = Ipv6Addr::from(bits);
        let got = special_range(IpAddr::V6(v6));
        match reference_embedded(v6) {
            Some(v4) => prop_assert_eq!(kind(got), reference_v4(v4), "{} is {:?}", v6, got),
            None => prop_assert_eq!(kind(got), reference_v6(v6), "{} is {:?}", v6, got),
        }
        if reference_embedded(v6).is_none() {
            let std_says = v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || v6.is_unicast_link_local()
                || v6.is_unique_local();
            if std_says {
                prop_assert!(got.is_some(), "{} is special to std", v6);
            }
        }
    });
}
