//! Config parsing: `parse_size`, `parse_resolve`, `parse_connect_to` and the policy file
//! (`PolicySet::from_toml`), on arbitrary text, on generated valid input and on mutations of it.

use std::net::IpAddr;

use proptest::collection::vec;
use proptest::prelude::*;

use llmtap::config::{parse_connect_to, parse_resolve, parse_size};
use llmtap::policy::PolicySet;
use llmtap::route::normalize_host;

use crate::gens::{edits, mutate};
use crate::{cases, shared};

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9-]{1,12}(\\.[a-zA-Z0-9-]{1,8}){0,2}"
}

fn ip() -> impl Strategy<Value = IpAddr> {
    any::<IpAddr>()
}

/// An address as `--resolve`/`--connect-to` take it: IPv6 in brackets, or bare for `--resolve`.
fn ip_text(ip: IpAddr, bracket: bool) -> String {
    match ip {
        IpAddr::V6(v6) if bracket => format!("[{v6}]"),
        other => other.to_string(),
    }
}

/// Config-ish text: digits, units, colons, brackets, spaces, any character, and pins whose
/// hosts and ports are odd (`.`, `[]`, `0`, `+443`).
fn config_soup() -> impl Strategy<Value = String> {
    let odd = || {
        proptest::sample::select(
            &[
                "", ".", "..", "[]", "[.]", "[", "x", "[::1]", "::1", "0", "+443", "443", "65536",
                " 1",
            ][..],
        )
    };
    prop_oneof![
        any::<String>(),
        "[0-9kKmMgGiIbB :\\[\\].a-f+-]{0,24}",
        (odd(), odd(), odd(), odd()).prop_map(|(a, b, c, d)| format!("{a}:{b}:{c}:{d}")),
        (odd(), odd()).prop_map(|(a, b)| format!("{a}:{b}:10.0.0.1")),
    ]
}

/// A policy file, valid, and what it holds: (text, client count, profile names).
fn policy_file() -> impl Strategy<Value = (String, usize, Vec<String>)> {
    // A host name's last label is not all digits (`*.0` is neither a name nor an address).
    let host = || "[a-z0-9-]{1,8}\\.[a-z][a-z0-9-]{0,8}";
    let pattern = prop_oneof![
        host(),
        host().prop_map(|n| format!("*.{n}")),
        (host(), 1u16..=65535).prop_map(|(n, p)| format!("{n}:{p}")),
        Just("*".to_string()),
        Just("*:443".to_string()),
        Just("10.0.0.0/8".to_string()),
        Just("[fd00::/8]:443".to_string()),
        Just("::1".to_string()),
    ];
    let cidr = proptest::sample::select(
        &[
            "10.0.0.0/8",
            "172.30.2.0/24",
            "192.168.1.7",
            "fd00::/8",
            "::ffff:10.0.0.0/104",
        ][..],
    );
    let profile = (
        vec(pattern.clone(), 0..4),
        vec(pattern, 0..3),
        vec(cidr.clone(), 0..3),
    );
    (
        proptest::option::of(proptest::sample::select(&["enforce", "report"][..])),
        proptest::collection::btree_map("[a-z][a-z0-9_-]{0,8}", profile, 0..4),
        proptest::collection::btree_set("[a-z][a-z0-9 .-]{0,8}[a-z0-9]", 0..4),
        vec(
            (
                proptest::option::of("[0-9a-fA-F]{64}"),
                vec(cidr, 0..2),
                any::<proptest::sample::Index>(),
            ),
            4,
        ),
    )
        .prop_map(|(mode, profiles, clients, extras)| {
            let mut text = String::from("# generated\n");
            if let Some(mode) = mode {
                text.push_str(&format!("mode = \"{mode}\"\n"));
            }
            let names: Vec<String> = profiles.keys().cloned().collect();
            for (client, (token, sources, pick)) in clients.iter().zip(extras) {
                text.push_str(&format!("\n[[client]]\nname = {}\n", toml_str(client)));
                if let Some(token) = token {
                    text.push_str(&format!("token_sha256 = \"{token}\"\n"));
                }
                if !sources.is_empty() {
                    text.push_str(&format!("sources = {}\n", toml_list(&sources)));
                }
                if !names.is_empty() {
                    text.push_str(&format!(
                        "profile = {}\n",
                        toml_str(&names[pick.index(names.len())])
                    ));
                }
            }
            for (name, (allow, deny, private)) in &profiles {
                text.push_str(&format!(
                    "\n[profile.{name}]\nallow = {}\n",
                    toml_list(allow)
                ));
                if !deny.is_empty() {
                    text.push_str(&format!("deny = {}\n", toml_list(deny)));
                }
                if !private.is_empty() {
                    text.push_str(&format!("allow_private = {}\n", toml_list(private)));
                }
            }
            (text, clients.len(), names)
        })
}

fn toml_str(s: &str) -> String {
    // JSON string escapes are TOML basic-string escapes too.
    serde_json::to_string(s).unwrap()
}

fn toml_list<S: AsRef<str>>(items: &[S]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| toml_str(s.as_ref())).collect();
    format!("[{}]", quoted.join(", "))
}

/// A parsed policy's invariants: the `default` profile exists and every client's profile too.
fn check_policy(p: &PolicySet) -> Result<(), TestCaseError> {
    prop_assert!(p.profile("default").is_some());
    for c in p.clients() {
        prop_assert!(
            p.profile(&c.profile).is_some(),
            "client {} has no profile {}",
            c.name,
            c.profile
        );
        prop_assert!(p.client_named(&c.name).is_some());
    }
    prop_assert!(p.client_named("default").is_some());
    let _ = p.summary();
    Ok(())
}

/// Sizes: `N`, `N unit` in any case and spacing are `N × unit`; too large or under the
/// minimum is an error; any other text is an error, never a panic.
#[test]
fn sizes_parse_as_written() {
    let _g = shared();
    proptest!(cases(256), |(
        n in prop_oneof![0usize..5000, any::<usize>()],
        unit in proptest::sample::select(&[("", 1usize), ("b", 1), ("K", 1024), ("kb", 1024), ("KiB", 1024), ("m", 1 << 20), ("MB", 1 << 20), ("mib", 1 << 20), ("G", 1 << 30), ("gB", 1 << 30), ("GiB", 1 << 30)][..]),
        spaces in ("[ \t]{0,2}", "[ \t]{0,2}", "[ \t]{0,2}"),
        min in prop_oneof![Just(0usize), 0usize..10_000],
        soup in config_soup(),
    )| {
        let text = format!("{}{n}{}{}{}", spaces.0, spaces.1, unit.0, spaces.2);
        let want = n.checked_mul(unit.1).filter(|v| *v >= min);
        prop_assert_eq!(parse_size(&text, min).ok(), want, "{:?}", text);
        if let Ok(v) = parse_size(&soup, min) {
            prop_assert!(v >= min);
        }
    });
}

/// `--resolve HOST:PORT:ADDR`: what was written comes back, normalised; arbitrary text
/// never panics, and nothing accepted has an empty host.
#[test]
fn resolve_pins_parse_as_written() {
    let _g = shared();
    proptest!(cases(256), |(
        host in name(),
        port in 1u16..=65535,
        addr in ip(),
        bracket in any::<bool>(),
        soup in config_soup(),
    )| {
        let entry = format!("{host}:{port}:{}", ip_text(addr, bracket));
        prop_assert_eq!(parse_resolve(&entry), Ok(((normalize_host(&host), port), addr)), "{:?}", entry);
        if let Ok(((h, p), _)) = parse_resolve(&soup) {
            prop_assert!(!h.is_empty(), "{:?} pins an empty host", soup);
            prop_assert!(p != 0, "{:?} pins port 0", soup);
            let port = soup.trim().split(':').nth(1).unwrap_or_default();
            prop_assert!(port.bytes().all(|b| b.is_ascii_digit()), "{:?}: port {:?} accepted", soup, port);
        }
    });
}

/// `--connect-to HOST:PORT:HOST2:PORT2`: what was written comes back, normalised; arbitrary
/// text never panics, and nothing accepted has an empty host or a port 0.
#[test]
fn connect_to_pins_parse_as_written() {
    let _g = shared();
    proptest!(cases(256), |(
        from in prop_oneof![name(), ip().prop_map(|a| ip_text(a, true))],
        to in prop_oneof![name(), ip().prop_map(|a| ip_text(a, true))],
        ports in (1u16..=65535, 1u16..=65535),
        soup in prop_oneof![config_soup(), (config_soup(), config_soup()).prop_map(|(a, b)| format!("{a}:443:{b}:80"))],
    )| {
        let entry = format!("{from}:{}:{to}:{}", ports.0, ports.1);
        let want = ((normalize_host(&from), ports.0), (normalize_host(&to), ports.1));
        prop_assert_eq!(parse_connect_to(&entry), Ok(want), "{:?}", entry);
        if let Ok(((h1, p1), (h2, p2))) = parse_connect_to(&soup) {
            prop_assert!(!h1.is_empty() && !h2.is_empty(), "{:?} pins an empty host", soup);
            prop_assert!(p1 != 0 && p2 != 0);
        }
    });
}

/// A generated valid policy file is accepted with what it holds; mutated (bytes flipped,
/// inserted, deleted, cut) it never panics, and whatever is accepted is consistent.
#[test]
fn policy_files_parse_and_mutations_never_panic() {
    let _g = shared();
    proptest!(cases(128), |(
        (text, clients, profiles) in policy_file(),
        edits in edits(6),
    )| {
        let policy = PolicySet::from_toml(&text, None)
            .map_err(|e| TestCaseError::fail(format!("{text}\n{e}")))?;
        check_policy(&policy)?;
        prop_assert_eq!(policy.clients().len(), clients);
        for name in &profiles {
            prop_assert!(policy.profile(name).is_some());
        }
        let bytes = mutate(text.as_bytes(), &edits);
        let mutated = String::from_utf8_lossy(&bytes);
        match PolicySet::from_toml(&mutated, None) {
            Ok(p) => check_policy(&p)?,
            Err(e) => prop_assert!(!e.errors.is_empty(), "an error without a reason"),
        }
    });
}

/// Arbitrary text as a policy file: an error that names at least one reason, never a panic.
#[test]
fn policy_files_of_any_text() {
    let _g = shared();
    proptest!(cases(128), |(
        text in prop_oneof![ any::<String>(), "[a-z_\\[\\]=\" \n.0-9*:/]{0,80}", Just("mode = 1\nclient = 2\nprofile = []\nx = {a = 1}\n".to_string()), ],
    )| {
        match PolicySet::from_toml(&text, None) {
            Ok(p) => check_policy(&p)?,
            Err(e) => {
                prop_assert!(!e.errors.is_empty());
                let _ = e.to_string();
            }
        }
    });
}
