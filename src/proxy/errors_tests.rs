use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use super::*;
use crate::capture::timeout::BodyError;

use FailureKind as K;
use Side::{Client, Internal, Policy, Upstream};

/// The README table, row by row: every kind, its status, its `error.type`, its side.
#[rustfmt::skip]
const TABLE: [(FailureKind, u16, &str, Side); 31] = [
    (K::Dns, 502, "dns", Upstream),
    (K::Connect, 502, "connect", Upstream),
    (K::ConnectTimeout, 504, "connect_timeout", Upstream),
    (K::Tls, 502, "tls", Upstream),
    (K::TlsTimeout, 504, "upstream_tls_timeout", Upstream),
    (K::Upstream, 502, "upstream", Upstream),
    (K::UpstreamBody, 502, "upstream_body", Upstream),
    (K::ResponseBodyTimeout, 504, "response_body_timeout", Upstream),
    (K::TunnelIdle, 504, "timeout", Upstream),
    (K::BadRequest, 400, "bad_request", Client),
    (K::RequestBodyTimeout, 408, "request_body_timeout", Client),
    (K::ClientAborted, 400, "client_aborted", Client),
    (K::ClientClosed, 400, "client_closed", Client),
    (K::NotTls, 400, "not_tls", Client),
    (K::ClientTlsTimeout, 408, "tls_timeout", Client),
    (K::ClientTlsHandshake, 400, "tls_handshake", Client),
    (K::Misdirected, 421, "misdirected", Client),
    (K::NoRoute, 404, "no_route", Client),
    (K::ProxyAuth, 407, "proxy_auth", Policy),
    (K::Policy, 403, "policy", Policy),
    (K::PrivateAddress, 403, "private_address", Policy),
    (K::SniMismatch, 403, "sni_mismatch", Policy),
    (K::ConnectInTunnel, 405, "connect_in_tunnel", Policy),
    (K::ForeignKey, 403, "foreign_key", Policy),
    (K::KeyNotGranted, 403, "key_not_granted", Policy),
    (K::KeyCleartext, 403, "key_cleartext", Policy),
    (K::Limit, 429, "limit", Policy),
    (K::LimitsStore, 503, "limits_store", Internal),
    (K::LeafCertificate, 500, "leaf_certificate", Internal),
    (K::Shutdown, 503, "shutdown", Internal),
    (K::Internal, 500, "internal", Internal),
];

#[test]
fn every_kind_has_its_status_error_type_and_side() {
    let listed: Vec<FailureKind> = TABLE.iter().map(|row| row.0).collect();
    assert_eq!(listed, FailureKind::ALL, "the table lists every kind once");
    for (kind, status, error_type, side) in TABLE {
        assert_eq!(kind.status().as_u16(), status, "{kind:?}");
        assert_eq!(kind.as_str(), error_type, "{kind:?}");
        assert_eq!(kind.side(), side, "{kind:?}");
        assert_eq!(
            kind.spec(),
            Spec {
                status: kind.status(),
                error_type,
                side
            }
        );
    }
}

#[test]
fn error_types_are_distinct_and_statuses_follow_the_side() {
    let names: HashSet<&str> = FailureKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(
        names.len(),
        FailureKind::ALL.len(),
        "one error.type per kind"
    );
    for kind in FailureKind::ALL {
        let status = kind.status();
        match kind.side() {
            Client | Policy => assert!(status.is_client_error(), "{kind:?} {status}"),
            Upstream => assert!(
                [StatusCode::BAD_GATEWAY, StatusCode::GATEWAY_TIMEOUT].contains(&status),
                "{kind:?} {status}"
            ),
            Internal => assert!(status.is_server_error(), "{kind:?} {status}"),
        }
        // Every upstream timeout is a 504, every other upstream failure a 502.
        if kind.side() == Upstream {
            let timeout = kind.as_str().contains("timeout");
            assert_eq!(status == StatusCode::GATEWAY_TIMEOUT, timeout, "{kind:?}");
        }
        assert!(
            http::HeaderValue::from_str(kind.as_str()).is_ok(),
            "x-llmtap-error"
        );
    }
}

#[test]
fn policy_and_key_refusals_keep_their_names() {
    use crate::keys::swap::RefusalKind;
    use crate::policy::DenyKind;
    let denials = [
        (DenyKind::Auth, 407),
        (DenyKind::Policy, 403),
        (DenyKind::PrivateAddress, 403),
        (DenyKind::Resolve, 502),
        (DenyKind::BadTarget, 400),
    ];
    for (deny, status) in denials {
        let kind = FailureKind::from(deny);
        assert_eq!(kind.as_str(), deny.as_str(), "{deny:?}");
        assert_eq!(kind.status().as_u16(), status, "{deny:?}");
    }
    for refusal in [
        RefusalKind::ForeignKey,
        RefusalKind::KeyNotGranted,
        RefusalKind::Cleartext,
    ] {
        let kind = FailureKind::from(refusal);
        assert_eq!(kind.as_str(), refusal.as_str(), "{refusal:?}");
        assert_eq!(kind.status(), StatusCode::FORBIDDEN);
        assert_eq!(kind.side(), Policy);
    }
}

/// An error that wraps another, like hyper's and hyper-util's do.
#[derive(Debug)]
struct Wrapped(&'static str, Box<dyn StdError + Send + Sync>);

impl fmt::Display for Wrapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl StdError for Wrapped {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.1)
    }
}

fn wrapped(e: impl StdError + Send + Sync + 'static) -> Wrapped {
    Wrapped(
        "client error (Connect)",
        Box::new(Wrapped("connect", Box::new(e))),
    )
}

fn target() -> (String, u16, SocketAddr) {
    (
        "api.example.com".into(),
        443,
        SocketAddr::from(([192, 0, 2, 1], 443)),
    )
}

#[test]
fn finds_rustls_errors_wrapped_in_io_errors() {
    let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
    let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
    let f = classify(&io);
    assert_eq!(f.kind, FailureKind::Tls);
    assert!(
        f.message.contains("UnknownIssuer") || f.message.contains("unknown issuer"),
        "{}",
        f.message
    );
}

#[test]
fn connect_errors_keep_their_class() {
    let e = ConnectError::Resolve {
        host: "nope.invalid".into(),
        reason: "not found".into(),
    };
    let f = classify(&e);
    assert_eq!(f.kind, FailureKind::Dns);
    assert!(f.message.contains("nope.invalid"));
}

#[test]
fn classify_finds_the_kind_through_wrapped_chains() {
    let (host, port, addr) = target();
    let bad_cert = || {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        std::io::Error::new(std::io::ErrorKind::InvalidData, tls)
    };
    let reset = || std::io::Error::from(std::io::ErrorKind::ConnectionReset);
    let after = Duration::from_secs(10);
    let cases: Vec<(Box<dyn StdError + Send + Sync>, FailureKind)> = vec![
        (
            Box::new(wrapped(ConnectError::Connect {
                host: host.clone(),
                port,
                addr,
                reason: "Connection refused".into(),
            })),
            K::Connect,
        ),
        (
            Box::new(wrapped(ConnectError::Timeout {
                host: host.clone(),
                port,
                after,
            })),
            K::ConnectTimeout,
        ),
        (
            Box::new(wrapped(ConnectError::TlsTimeout {
                host: host.clone(),
                port,
                after,
            })),
            K::TlsTimeout,
        ),
        (
            Box::new(wrapped(ConnectError::Tls {
                host: host.clone(),
                port,
                source: bad_cert(),
            })),
            K::Tls,
        ),
        (
            // The upstream hung up in the middle of the handshake: a broken connection.
            Box::new(wrapped(ConnectError::Tls {
                host: host.clone(),
                port,
                source: reset(),
            })),
            K::Upstream,
        ),
        (
            Box::new(wrapped(ConnectError::WrongUri("https://other/".into()))),
            K::Internal,
        ),
        // A ConnectError inside an io::Error, which `source` skips.
        (
            Box::new(wrapped(std::io::Error::other(ConnectError::Timeout {
                host: host.clone(),
                port,
                after,
            }))),
            K::ConnectTimeout,
        ),
        // rustls inside io inside io (what hyper-rustls used to hand back).
        (Box::new(wrapped(std::io::Error::other(bad_cert()))), K::Tls),
        (
            Box::new(wrapped(BodyError::Timeout {
                after: Duration::from_millis(300),
            })),
            K::RequestBodyTimeout,
        ),
        (Box::new(wrapped(reset())), K::Upstream),
        (Box::new(reset()), K::Upstream),
    ];
    for (err, kind) in cases {
        let f = classify(&*err);
        assert_eq!(f.kind, kind, "{}", crate::capture::body::error_chain(&*err));
        assert!(!f.message.is_empty());
    }
}

#[test]
fn failure_messages_say_why() {
    let (host, port, _) = target();
    let e = ConnectError::TlsTimeout {
        host,
        port,
        after: Duration::from_secs(10),
    };
    let f = Failure::from(&e);
    assert_eq!(f.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(f.side(), Upstream);
    assert_eq!(
        f.message,
        "TLS handshake with api.example.com:443 not finished after 10s"
    );
    let f = classify(&wrapped(ConnectError::Timeout {
        host: "api.example.com".into(),
        port: 443,
        after: Duration::from_secs(10),
    }));
    assert_eq!(
        f.message,
        "connecting to api.example.com:443 timed out after 10s"
    );
}
