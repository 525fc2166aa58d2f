//! Who is asking: proxy credentials, else source CIDR, else the `default` client.
//!
//! 1. `Proxy-Authorization: Basic base64(NAME:PASSWORD)`: NAME picks the `[[client]]`; when it
//!    has `token_sha256`, SHA-256(PASSWORD) must equal it (compared in constant time). A client
//!    without a token is identified by its name alone (the password is ignored).
//! 2. No credentials: the first client whose `sources` hold the source address. Sources
//!    identify a client that sends no credentials; they never restrict one that does.
//! 3. Otherwise the `default` client.
//!
//! A client with a token that is reached by 2 or 3 without credentials is refused (407).
//! The built-in open policy (no `--policy`) ignores credentials: everyone is `default`.

use std::net::IpAddr;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::address::net_contains;
use super::file::Client;
use super::{ClientId, PolicySet};

/// Credentials missing, malformed or wrong for a client that requires them: answered 407.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFailure {
    /// Safe to show: never contains the password.
    pub reason: String,
}

impl AuthFailure {
    fn new(reason: impl Into<String>) -> AuthFailure {
        AuthFailure {
            reason: reason.into(),
        }
    }
}

/// `proxy_authorization` is the raw `Proxy-Authorization` header value, if any.
pub fn identify(
    policy: &PolicySet,
    proxy_authorization: Option<&[u8]>,
    source: IpAddr,
) -> Result<ClientId, AuthFailure> {
    if policy.is_builtin() {
        return Ok(policy.default_client());
    }
    if let Some(header) = proxy_authorization {
        return by_credentials(policy, header);
    }
    let by_source = policy
        .clients()
        .iter()
        .find(|c| c.sources.iter().any(|net| net_contains(net, source)));
    match by_source.or_else(|| policy.client(super::file::DEFAULT)) {
        Some(client) if client.token_sha256().is_some() => Err(AuthFailure::new(format!(
            "client {} requires proxy credentials",
            client.name
        ))),
        Some(client) => Ok(client.id()),
        None => Ok(policy.default_client()),
    }
}

fn by_credentials(policy: &PolicySet, header: &[u8]) -> Result<ClientId, AuthFailure> {
    let (user, password) = parse_basic(header)?;
    let client = policy
        .client(&user)
        .ok_or_else(|| AuthFailure::new(format!("unknown proxy user {}", printable(&user))))?;
    check_password(client, &password)?;
    Ok(client.id())
}

fn check_password(client: &Client, password: &[u8]) -> Result<(), AuthFailure> {
    let Some(expected) = client.token_sha256() else {
        return Ok(());
    };
    let actual = digest::digest(&digest::SHA256, password);
    verify_slices_are_equal(actual.as_ref(), expected)
        .map_err(|_| AuthFailure::new(format!("wrong proxy password for client {}", client.name)))
}

/// `Basic base64(user:password)` (scheme case-insensitive) → (user, password bytes).
fn parse_basic(header: &[u8]) -> Result<(String, Vec<u8>), AuthFailure> {
    let text = std::str::from_utf8(header)
        .map_err(|_| AuthFailure::new("Proxy-Authorization is not text"))?
        .trim();
    let (scheme, encoded) = text
        .split_once(|c: char| c.is_ascii_whitespace())
        .unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(AuthFailure::new(
            "Proxy-Authorization must be Basic (user name and password)",
        ));
    }
    let decoded = STANDARD
        .decode(encoded.trim())
        .map_err(|_| AuthFailure::new("Proxy-Authorization: Basic credentials are not base64"))?;
    let colon = decoded
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| AuthFailure::new("Proxy-Authorization: Basic credentials have no `:`"))?;
    let (user, rest) = decoded.split_at(colon);
    let user = String::from_utf8(user.to_vec())
        .map_err(|_| AuthFailure::new("proxy user name is not UTF-8"))?;
    let password = rest.get(1..).unwrap_or_default().to_vec();
    Ok((user, password))
}

/// A user name as it may appear in a reason: control characters replaced, at most 64 chars.
fn printable(user: &str) -> String {
    let mut out: String = user
        .chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if user.chars().count() > 64 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
[[client]]
name = "browser-sandbox"
token_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
sources = ["172.30.1.0/24"]
profile = "browse"
[[client]]
name = "code-sandbox"
sources = ["172.30.2.0/24", "fd00:2::/64"]
profile = "code"
[[client]]
name = "ci"
sources = ["172.30.2.7"]
profile = "code"
[profile.browse]
allow = ["*"]
[profile.code]
allow = ["api.anthropic.com"]
"#;

    fn basic(userpass: &str) -> String {
        format!("Basic {}", STANDARD.encode(userpass))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn identify_table() {
        let policy = PolicySet::from_toml(POLICY, None).unwrap();
        let elsewhere = ip("192.0.2.9");
        let cases: &[(Option<String>, &str, Result<&str, &str>)] = &[
            // (a) credentials
            (
                Some(basic("browser-sandbox:test")),
                "192.0.2.9",
                Ok("browser-sandbox"),
            ),
            (
                Some(format!("bAsIc {}", STANDARD.encode("browser-sandbox:test"))),
                "192.0.2.9",
                Ok("browser-sandbox"),
            ),
            (
                Some(basic("browser-sandbox:wrong")),
                "172.30.1.5",
                Err("wrong proxy password for client browser-sandbox"),
            ),
            (
                Some(basic("browser-sandbox:")),
                "172.30.1.5",
                Err("wrong proxy password"),
            ),
            (
                Some(basic("code-sandbox:anything")),
                "192.0.2.9",
                Ok("code-sandbox"),
            ),
            (
                Some(basic("code-sandbox:")),
                "192.0.2.9",
                Ok("code-sandbox"),
            ),
            // sources do not restrict a credentialed client
            (
                Some(basic("code-sandbox:x")),
                "172.30.1.5",
                Ok("code-sandbox"),
            ),
            (
                Some(basic("browser-sandbox:test")),
                "172.30.2.5",
                Ok("browser-sandbox"),
            ),
            (
                Some(basic("nobody:x")),
                "172.30.2.5",
                Err("unknown proxy user nobody"),
            ),
            (
                Some(basic("default:x")),
                "192.0.2.9",
                Err("unknown proxy user default"),
            ),
            (Some("Bearer abc".into()), "192.0.2.9", Err("must be Basic")),
            (
                Some(format!("Basic\t {}", STANDARD.encode("code-sandbox:"))),
                "192.0.2.9",
                Ok("code-sandbox"),
            ),
            (Some("Basic".into()), "192.0.2.9", Err("no `:`")),
            (Some("".into()), "192.0.2.9", Err("must be Basic")),
            (Some("Basic !!!".into()), "192.0.2.9", Err("not base64")),
            (Some(basic("no-colon")), "192.0.2.9", Err("no `:`")),
            // (b) sources, first match wins, IPv4-mapped compared as IPv4
            (None, "172.30.2.7", Ok("code-sandbox")),
            (None, "::ffff:172.30.2.9", Ok("code-sandbox")),
            (None, "fd00:2::5", Ok("code-sandbox")),
            (
                None,
                "172.30.1.5",
                Err("client browser-sandbox requires proxy credentials"),
            ),
            // (c) default
            (None, "192.0.2.9", Ok("default")),
            (None, "::1", Ok("default")),
        ];
        for (header, source, want) in cases {
            let got = identify(&policy, header.as_deref().map(str::as_bytes), ip(source));
            match (got, want) {
                (Ok(id), Ok(name)) => assert_eq!(&*id.name, *name, "{header:?} from {source}"),
                (Err(e), Err(w)) => assert!(e.reason.contains(w), "{header:?}: {}", e.reason),
                (got, _) => panic!("{header:?} from {source}: {got:?}"),
            }
        }
        let default = identify(&policy, None, elsewhere).unwrap();
        assert_eq!((&*default.name, &*default.profile), ("default", "default"));
        let code = identify(&policy, None, ip("172.30.2.7")).unwrap();
        assert_eq!(&*code.profile, "code");
    }

    #[test]
    fn reasons_never_contain_the_password_or_the_hash() {
        let policy = PolicySet::from_toml(POLICY, None).unwrap();
        let secret = "s3cret-Pa55word";
        for header in [
            basic(&format!("browser-sandbox:{secret}")),
            basic(&format!("nobody:{secret}")),
            format!("Digest {secret}"),
            format!("Basic {secret}"),
        ] {
            let err = identify(&policy, Some(header.as_bytes()), ip("192.0.2.9")).unwrap_err();
            assert!(!err.reason.contains(secret), "{}", err.reason);
            assert!(!err.reason.contains("9f86d0"), "{}", err.reason);
        }
    }

    #[test]
    fn a_default_client_with_a_token_requires_credentials() {
        let text = r#"
[[client]]
name = "default"
token_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
profile = "p"
[profile.p]
allow = ["*"]
"#;
        let policy = PolicySet::from_toml(text, None).unwrap();
        let err = identify(&policy, None, ip("192.0.2.9")).unwrap_err();
        assert_eq!(err.reason, "client default requires proxy credentials");
        let ok = identify(
            &policy,
            Some(basic("default:test").as_bytes()),
            ip("192.0.2.9"),
        );
        assert_eq!(ok.map(|c| c.profile.to_string()), Ok("p".to_string()));
        let unnamed = "[[client]]\nname = \"default\"\nprofile = \"p\"\n[profile.p]\n";
        let policy = PolicySet::from_toml(unnamed, None).unwrap();
        let id = identify(&policy, None, ip("192.0.2.9")).unwrap();
        assert_eq!((&*id.name, &*id.profile), ("default", "p"));
    }

    #[test]
    fn the_open_policy_ignores_credentials() {
        let policy = PolicySet::open();
        for header in [None, Some("Basic !!!"), Some("Bearer x")] {
            let id = identify(&policy, header.map(str::as_bytes), ip("10.0.0.1")).unwrap();
            assert_eq!(id, policy.default_client());
        }
    }

    #[test]
    fn unknown_user_names_are_made_printable() {
        let long = "x".repeat(100);
        assert_eq!(printable("a\u{7}b"), "a?b");
        assert_eq!(printable(&long).chars().count(), 65);
    }
}
