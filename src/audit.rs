//! The connection audit: one `EgressRecord` per connection decision (`llmtap.egress` events).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

/// `--audit`: which decisions produce an audit record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuditLevel {
    /// Every decision (the default).
    #[default]
    All,
    /// Only `deny` and `would_deny`.
    Deny,
    Off,
}

impl AuditLevel {
    pub fn parse(value: &str) -> Result<AuditLevel, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "all" => Ok(AuditLevel::All),
            "deny" => Ok(AuditLevel::Deny),
            "off" => Ok(AuditLevel::Off),
            _ => Err("expected all, deny or off".into()),
        }
    }

    /// Whether a record with this `llmtap.egress.decision` is kept.
    pub fn keeps(self, decision: EgressDecision) -> bool {
        match self {
            AuditLevel::All => true,
            AuditLevel::Deny => decision != EgressDecision::Allow,
            AuditLevel::Off => false,
        }
    }
}

/// `llmtap.egress.decision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EgressDecision {
    Allow,
    Deny,
    WouldDeny,
}

impl EgressDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            EgressDecision::Allow => "allow",
            EgressDecision::Deny => "deny",
            EgressDecision::WouldDeny => "would_deny",
        }
    }
}

/// One connection decision as exported: at once for a denial, at the close of a connection
/// that was allowed.
#[derive(Debug, Clone, PartialEq)]
pub struct EgressRecord {
    /// When the connection (or the plain-HTTP request) arrived.
    pub started_at: SystemTime,
    pub decision: EgressDecision,
    /// `llmtap.egress.reason`: the rule that allowed it, or why it was (or would be) refused.
    pub reason: String,
    /// `llmtap.egress.route`: `tunnel`, `intercept` or `http`.
    pub route: &'static str,
    /// `error.type` of a denial (`policy`, `private_address`, `proxy_auth`, `dns`, `bad_request`)
    /// or of an allowed connection that failed (`connect`, `connect_timeout`, `not_tls`, ...).
    pub error_type: Option<String>,
    /// `llmtap.client.name`; `None` when credentials were bad.
    pub client_name: Option<String>,
    /// `llmtap.client.profile`.
    pub client_profile: Option<String>,
    /// `client.address` (and the source port, unused in the record).
    pub client_addr: SocketAddr,
    /// `server.address`: the host asked for.
    pub server_address: String,
    /// `server.port`.
    pub server_port: u16,
    /// `network.peer.address`: the address connected to; `None` when no connection was made.
    pub peer_addr: Option<SocketAddr>,
    /// `llmtap.egress.bytes_sent`: bytes the client sent through this connection.
    pub bytes_sent: u64,
    /// `llmtap.egress.bytes_received`: bytes the client received through this connection.
    pub bytes_received: u64,
    /// `llmtap.duration`: connection open to close, seconds in the record.
    pub duration: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_levels_parse_and_filter() {
        let all = AuditLevel::parse("ALL").unwrap();
        let deny = AuditLevel::parse(" deny ").unwrap();
        let off = AuditLevel::parse("off").unwrap();
        assert!(AuditLevel::parse("some").is_err());
        for d in [
            EgressDecision::Allow,
            EgressDecision::Deny,
            EgressDecision::WouldDeny,
        ] {
            assert!(all.keeps(d));
            assert!(!off.keeps(d));
            assert_eq!(deny.keeps(d), d != EgressDecision::Allow);
        }
    }
}
