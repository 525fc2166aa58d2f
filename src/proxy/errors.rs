//! Failures on the forwarding path, typed: each kind knows its side, its status and its
//! `error.type`, all in one table ([`FailureKind::spec`]), like pingora's `ErrorSource`.

use std::error::Error as StdError;

use http::StatusCode;

use super::upstream::ConnectError;
use crate::capture::timeout::BodyError;
use crate::keys::swap::RefusalKind;
use crate::policy::DenyKind;

/// Who failed. Client and policy failures answer 4xx, upstream ones 502/504, internal 5xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The client sent something wrong, stalled, or went away.
    Client,
    /// The upstream could not be reached, failed TLS, timed out or broke off.
    Upstream,
    /// A rule refused it: the policy, the keys, a limit.
    Policy,
    /// llmtap itself (or a store it depends on) could not serve it.
    Internal,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Upstream => "upstream",
            Side::Policy => "policy",
            Side::Internal => "internal",
        }
    }
}

/// One class of failure. Its status, `error.type` (also `x-llmtap-error` and the egress
/// record's `error.type`) and side are in [`FailureKind::spec`], and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The upstream name does not resolve.
    Dns,
    /// The TCP connection to the decided address was refused or failed.
    Connect,
    /// The TCP connection was not made within the connect timeout.
    ConnectTimeout,
    /// The upstream's TLS failed: a bad certificate, a protocol error.
    Tls,
    /// The upstream accepted TCP but did not finish the TLS handshake in time.
    TlsTimeout,
    /// The upstream reset or closed the connection, or broke HTTP, before a response head.
    Upstream,
    /// The upstream response body broke off (set by the body tee).
    UpstreamBody,
    /// The upstream response body moved no byte for `--body-timeout`.
    ResponseBodyTimeout,
    /// A CONNECT tunnel moved no byte either way for `--body-timeout`.
    TunnelIdle,
    /// A request or CONNECT target llmtap cannot serve.
    BadRequest,
    /// The client's request body moved no byte for `--body-timeout`.
    RequestBodyTimeout,
    /// The client's request body broke off.
    ClientAborted,
    /// The client closed an intercepted CONNECT before TLS.
    ClientClosed,
    /// Not TLS on an intercepted CONNECT.
    NotTls,
    /// No complete ClientHello within `--handshake-timeout`.
    ClientTlsTimeout,
    /// The TLS handshake with the client failed or timed out after the ClientHello.
    ClientTlsHandshake,
    /// A request inside an intercepted tunnel for another target.
    Misdirected,
    /// A path on the base-URL listener that is no route.
    NoRoute,
    /// Missing or bad proxy credentials.
    ProxyAuth,
    /// No rule allows the target, or a deny rule matches.
    Policy,
    /// The target resolves to a private address (or llmtap itself).
    PrivateAddress,
    /// The TLS SNI is not the CONNECT host.
    SniMismatch,
    /// A CONNECT inside an intercepted tunnel.
    ConnectInTunnel,
    /// A credential other than the sentinel to a host that requires it.
    ForeignKey,
    /// A sentinel whose key is not granted to this client.
    KeyNotGranted,
    /// A sentinel for a keyed host over plain HTTP.
    KeyCleartext,
    /// A request, concurrency, token or cost limit.
    Limit,
    /// The limits store did not answer and `--limits-store-fail` is closed.
    LimitsStore,
    /// No leaf certificate could be issued for the host.
    LeafCertificate,
    /// Cut at the end of the shutdown grace.
    Shutdown,
    /// A state that should not exist (a bug), refused rather than served.
    Internal,
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// What llmtap answers, when it still can answer.
    pub status: StatusCode,
    /// `error.type` and `x-llmtap-error`.
    pub error_type: &'static str,
    pub side: Side,
}

impl FailureKind {
    pub const ALL: [FailureKind; 31] = {
        use FailureKind::*;
        [
            Dns,
            Connect,
            ConnectTimeout,
            Tls,
            TlsTimeout,
            Upstream,
            UpstreamBody,
            ResponseBodyTimeout,
            TunnelIdle,
            BadRequest,
            RequestBodyTimeout,
            ClientAborted,
            ClientClosed,
            NotTls,
            ClientTlsTimeout,
            ClientTlsHandshake,
            Misdirected,
            NoRoute,
            ProxyAuth,
            Policy,
            PrivateAddress,
            SniMismatch,
            ConnectInTunnel,
            ForeignKey,
            KeyNotGranted,
            KeyCleartext,
            Limit,
            LimitsStore,
            LeafCertificate,
            Shutdown,
            Internal,
        ]
    };

    /// The one table: status, `error.type`, side.
    #[rustfmt::skip]
    pub const fn spec(self) -> Spec {
        use FailureKind as K;
        use Side::*;
        const GATEWAY_TIMEOUT: StatusCode = StatusCode::GATEWAY_TIMEOUT;
        const BAD_GATEWAY: StatusCode = StatusCode::BAD_GATEWAY;
        const BAD_REQUEST: StatusCode = StatusCode::BAD_REQUEST;
        const REQUEST_TIMEOUT: StatusCode = StatusCode::REQUEST_TIMEOUT;
        const FORBIDDEN: StatusCode = StatusCode::FORBIDDEN;
        let (status, error_type, side) = match self {
            K::Dns => (BAD_GATEWAY, "dns", Upstream),
            K::Connect => (BAD_GATEWAY, "connect", Upstream),
            K::ConnectTimeout => (GATEWAY_TIMEOUT, "connect_timeout", Upstream),
            K::Tls => (BAD_GATEWAY, "tls", Upstream),
            K::TlsTimeout => (GATEWAY_TIMEOUT, "upstream_tls_timeout", Upstream),
            K::Upstream => (BAD_GATEWAY, "upstream", Upstream),
            K::UpstreamBody => (BAD_GATEWAY, "upstream_body", Upstream),
            K::ResponseBodyTimeout => (GATEWAY_TIMEOUT, "response_body_timeout", Upstream),
            K::TunnelIdle => (GATEWAY_TIMEOUT, "timeout", Upstream),
            K::BadRequest => (BAD_REQUEST, "bad_request", Client),
            K::RequestBodyTimeout => (REQUEST_TIMEOUT, "request_body_timeout", Client),
            K::ClientAborted => (BAD_REQUEST, "client_aborted", Client),
            K::ClientClosed => (BAD_REQUEST, "client_closed", Client),
            K::NotTls => (BAD_REQUEST, "not_tls", Client),
            K::ClientTlsTimeout => (REQUEST_TIMEOUT, "tls_timeout", Client),
            K::ClientTlsHandshake => (BAD_REQUEST, "tls_handshake", Client),
            K::Misdirected => (StatusCode::MISDIRECTED_REQUEST, "misdirected", Client),
            K::NoRoute => (StatusCode::NOT_FOUND, "no_route", Client),
            K::ProxyAuth => (StatusCode::PROXY_AUTHENTICATION_REQUIRED, "proxy_auth", Policy),
            K::Policy => (FORBIDDEN, "policy", Policy),
            K::PrivateAddress => (FORBIDDEN, "private_address", Policy),
            K::SniMismatch => (FORBIDDEN, "sni_mismatch", Policy),
            K::ConnectInTunnel => (StatusCode::METHOD_NOT_ALLOWED, "connect_in_tunnel", Policy),
            K::ForeignKey => (FORBIDDEN, "foreign_key", Policy),
            K::KeyNotGranted => (FORBIDDEN, "key_not_granted", Policy),
            K::KeyCleartext => (FORBIDDEN, "key_cleartext", Policy),
            K::Limit => (StatusCode::TOO_MANY_REQUESTS, "limit", Policy),
            K::LimitsStore => (StatusCode::SERVICE_UNAVAILABLE, "limits_store", Internal),
            K::LeafCertificate => (StatusCode::INTERNAL_SERVER_ERROR, "leaf_certificate", Internal),
            K::Shutdown => (StatusCode::SERVICE_UNAVAILABLE, "shutdown", Internal),
            K::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal", Internal),
        };
        Spec {
            status,
            error_type,
            side,
        }
    }

    pub const fn status(self) -> StatusCode {
        self.spec().status
    }

    /// `error.type` and `x-llmtap-error`.
    pub const fn as_str(self) -> &'static str {
        self.spec().error_type
    }

    pub const fn side(self) -> Side {
        self.spec().side
    }
}

impl From<DenyKind> for FailureKind {
    fn from(kind: DenyKind) -> FailureKind {
        match kind {
            DenyKind::Auth => FailureKind::ProxyAuth,
            DenyKind::Policy => FailureKind::Policy,
            DenyKind::PrivateAddress => FailureKind::PrivateAddress,
            DenyKind::Resolve => FailureKind::Dns,
            DenyKind::BadTarget => FailureKind::BadRequest,
        }
    }
}

impl From<RefusalKind> for FailureKind {
    fn from(kind: RefusalKind) -> FailureKind {
        match kind {
            RefusalKind::ForeignKey => FailureKind::ForeignKey,
            RefusalKind::KeyNotGranted => FailureKind::KeyNotGranted,
            RefusalKind::Cleartext => FailureKind::KeyCleartext,
        }
    }
}

/// A failure of one request or connection: its kind (hence side, status, `error.type`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub kind: FailureKind,
    /// For the answer's body, `llmtap.error.message` and the audit reason; never a secret.
    pub message: String,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
        }
    }

    pub fn side(&self) -> Side {
        self.kind.side()
    }

    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }
}

impl From<&ConnectError> for Failure {
    fn from(e: &ConnectError) -> Failure {
        Failure::new(e.kind(), e.to_string())
    }
}

/// Walks the error of a request sent upstream (looking inside `io::Error`s too) for the cause
/// that explains it. A `BodyError` there is the request body's, so the client's.
pub fn classify(err: &(dyn StdError + 'static)) -> Failure {
    let chain = crate::capture::body::error_chain(err);
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(c) = e.downcast_ref::<ConnectError>() {
            return Failure::from(c);
        }
        if let Some(b) = e.downcast_ref::<BodyError>() {
            return match b {
                BodyError::Timeout { .. } => Failure::new(
                    FailureKind::RequestBodyTimeout,
                    format!("the client's request body stalled: {b}"),
                ),
                BodyError::Body(_) => Failure::new(
                    FailureKind::ClientAborted,
                    format!("the client's request body broke off: {chain}"),
                ),
            };
        }
        if let Some(t) = tls_error(e) {
            return Failure::new(FailureKind::Tls, format!("upstream TLS failed: {t}"));
        }
        current = e.source().or_else(|| io_inner(e));
    }
    Failure::new(
        FailureKind::Upstream,
        format!("upstream request failed: {chain}"),
    )
}

/// A `rustls::Error` that is `e` or that `e` (an `io::Error`) wraps.
pub(super) fn tls_error<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    e.downcast_ref::<rustls::Error>()
        .or_else(|| io_inner(e).and_then(|i| i.downcast_ref::<rustls::Error>()))
}

/// `io::Error::source` skips the wrapped error; `get_ref` does not.
fn io_inner<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a (dyn StdError + 'static)> {
    e.downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        .map(|inner| inner as &(dyn StdError + 'static))
}

#[cfg(test)]
#[path = "errors_tests.rs"]
mod tests;
