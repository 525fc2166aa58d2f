//! Egress policy: who is asking, where to, and the one typed `Decision` every connection carries.
//!
//! Order of a decision (see `decide`): the client was identified first (`identity`), then
//! the policy rules are matched by name (a denial there is `policy`, no lookup made), then the
//! target is resolved once, then the private-address floor is checked on the address that will
//! be connected to (`private_address`). The caller connects to exactly `Grant::addr`.

pub mod address;
pub mod decide;
pub mod file;
pub mod identity;
pub mod pattern;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

pub use decide::{SystemResolver, decide, host_provider, route_for};
pub use file::{Mode, PolicyFileError, PolicySet};
pub use identity::{AuthFailure, identify};

/// Where a connection asks to go. `host` is normalised: lower-case, no trailing dot, no brackets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

impl Target {
    /// Normalises `host` (case, trailing dot, IPv6 brackets).
    pub fn new(host: &str, port: u16) -> Target {
        Target {
            host: crate::route::normalize_host(host),
            port,
        }
    }

    /// `host:port`, with brackets around an IPv6 literal.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// How the client asked: a CONNECT tunnel, or an absolute-form plain-HTTP request (upgrades too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Connect,
    Http,
    /// A base-URL route on `--reverse-listen`: always captured, sent over TLS.
    Reverse,
}

/// How an allowed connection leaves llmtap; `llmtap.egress.route`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// CONNECT to a host that is not intercepted: bytes spliced, never decrypted.
    Tunnel,
    /// CONNECT to an LLM host: TLS terminated with our leaf, each request recorded.
    Intercept,
    /// Absolute-form plain HTTP (and `Upgrade:` requests).
    Http,
    /// A base-URL route (`--reverse-listen`): plain HTTP in, verified TLS out, recorded.
    Reverse,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Tunnel => "tunnel",
            Route::Intercept => "intercept",
            Route::Http => "http",
            Route::Reverse => "reverse",
        }
    }
}

/// The identified client: `llmtap.client.name` and `llmtap.client.profile`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientId {
    pub name: Arc<str>,
    pub profile: Arc<str>,
}

/// Why a connection was refused. Its status and side are in the proxy's failure table
/// (`proxy::errors::FailureKind`, which a test keeps in step with [`DenyKind::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyKind {
    /// Missing or bad proxy credentials: 407.
    Auth,
    /// No rule allows the target, or a deny rule matches: 403.
    Policy,
    /// The target resolves to a private address (or llmtap itself): 403.
    PrivateAddress,
    /// The name does not resolve: 502.
    Resolve,
    /// Not a target one can connect to (port 0, empty host, not TLS on an intercepted CONNECT): 400.
    BadTarget,
}

impl DenyKind {
    /// `x-llmtap-error` and `error.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyKind::Auth => "proxy_auth",
            DenyKind::Policy => "policy",
            DenyKind::PrivateAddress => "private_address",
            DenyKind::Resolve => "dns",
            DenyKind::BadTarget => "bad_request",
        }
    }
}

/// A refusal, with the words the client and the audit record get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// `None` when the client could not be identified (bad credentials).
    pub client: Option<ClientId>,
    pub target: Target,
    pub route: Route,
    pub kind: DenyKind,
    /// e.g. `code-sandbox (profile code): no rule allows example.com:443`.
    pub reason: String,
}

/// `allow`, or `would_deny` when report mode let through what enforce mode would refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    WouldDeny,
}

impl Verdict {
    /// `llmtap.egress.decision`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::WouldDeny => "would_deny",
        }
    }
}

/// An allowed connection: who, where, and the one address to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub client: ClientId,
    pub target: Target,
    pub route: Route,
    /// The address checked and the only one connected to (no second lookup).
    pub addr: SocketAddr,
    pub verdict: Verdict,
    /// Which rule allowed it (`allow rule api.anthropic.com`), or why report mode would deny it.
    pub reason: String,
}

/// The one decision for a connection, made once, before any upstream connection exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Origin-form requests to llmtap itself (`/healthz`).
    Local,
    Deny(Denial),
    /// Passed without capture: a CONNECT tunnel, or plain HTTP to a host that is not intercepted.
    Tunnel(Grant),
    /// Captured and recorded: an LLM host, by CONNECT (TLS terminated) or plain HTTP.
    Intercept {
        grant: Grant,
        /// `gen_ai.provider.name` from `providers.toml` by host; `None` when no host entry
        /// matches (the request path's API shape then names it).
        provider: Option<Arc<str>>,
    },
}

/// Name resolution, behind a trait so `decide` is tested with a stub.
pub trait Resolver: Send + Sync {
    /// Addresses of `host` (not an IP literal); an error is a human-readable reason.
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<IpAddr>, String>> + Send + 'a>>;
}

/// Operator pins: `--resolve HOST:PORT:ADDR` and `--connect-to HOST:PORT:HOST2:PORT2`.
/// A pinned target is the operator's choice: exempt from the private-address rule (but never
/// from the rule against connecting to llmtap itself).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pins {
    /// (host, port) → address; host normalised.
    pub resolve: std::collections::HashMap<(String, u16), IpAddr>,
    /// (host, port) → (host2, port2); hosts normalised. HOST2 is looked up in `resolve`,
    /// then taken as an IP literal, then resolved.
    pub connect_to: std::collections::HashMap<(String, u16), (String, u16)>,
}

/// Everything `decide` needs besides the client and the target. Rebuilt on SIGHUP.
#[derive(Debug, Clone)]
pub struct EgressRules {
    pub policy: Arc<PolicySet>,
    /// `--llm-hosts`: a CONNECT to one of these is intercepted.
    pub llm_hosts: crate::route::HostList,
    /// `providers.toml`: host → `gen_ai.provider.name`.
    pub providers: crate::route::ProviderMap,
    pub pins: Pins,
    /// `--allow-private` CIDRs, for every client.
    pub allow_private: Vec<ipnet::IpNet>,
    /// llmtap's own listen addresses: always refused, whatever the allow lists say.
    pub own_addrs: Vec<SocketAddr>,
}
