//! Pure mapping of one connection decision (`EgressRecord`) to one `llmtap.egress` log record.
//!
//! The body (Loki's log line) is one short human line,
//! `deny tunnel code-sandbox -> example.com:443: code-sandbox (profile code): no rule allows example.com:443`;
//! the facts are in attributes. Host names, the reason and the client name come from (or
//! quote) the client: each is capped like the call records' short strings, and control
//! characters never reach the line.

use std::time::SystemTime;

use crate::audit::{EgressDecision, EgressRecord};
use crate::export::attributes as key;
use crate::export::record::{
    Attrs, LogRecordData, MAX_SHORT_BYTES, Severity, cut_with_ellipsis, saturating_i64,
};

/// Builds the record for one decision. Never fails: what is not known is left out.
pub fn build_egress_record(record: &EgressRecord) -> LogRecordData<'_> {
    let mut attrs = Attrs::default();
    let decision = record.decision.as_str();
    attrs.short(key::LLMTAP_EGRESS_DECISION, Some(decision));
    attrs.short(key::LLMTAP_EGRESS_REASON, Some(&record.reason));
    attrs.short(key::LLMTAP_EGRESS_ROUTE, Some(record.route));
    attrs.short(key::LLMTAP_CLIENT_NAME, record.client_name.as_deref());
    attrs.short(key::LLMTAP_CLIENT_PROFILE, record.client_profile.as_deref());
    let client = record.client_addr.ip().to_string();
    attrs.text(key::CLIENT_ADDRESS, Some(client.into()), MAX_SHORT_BYTES);
    attrs.short(key::SERVER_ADDRESS, Some(&record.server_address));
    attrs.int(key::SERVER_PORT, Some(i64::from(record.server_port)));
    if let Some(peer) = record.peer_addr {
        let ip = peer.ip().to_string();
        attrs.text(key::NETWORK_PEER_ADDRESS, Some(ip.into()), MAX_SHORT_BYTES);
        attrs.int(key::NETWORK_PEER_PORT, Some(i64::from(peer.port())));
    }
    let sent = saturating_i64(record.bytes_sent);
    attrs.int(key::LLMTAP_EGRESS_BYTES_SENT, Some(sent));
    let received = saturating_i64(record.bytes_received);
    attrs.int(key::LLMTAP_EGRESS_BYTES_RECEIVED, Some(received));
    attrs.seconds(key::LLMTAP_DURATION, Some(record.duration));
    attrs.short(key::ERROR_TYPE, record.error_type.as_deref());
    LogRecordData {
        event_name: key::EVENT_EGRESS,
        timestamp: record.started_at,
        observed_timestamp: SystemTime::now(),
        severity: severity(record.decision),
        body: line(record),
        attributes: attrs.0,
    }
}

/// INFO for an allowed connection, WARN for a denial, real or (report mode) would-be.
fn severity(decision: EgressDecision) -> Severity {
    match decision {
        EgressDecision::Allow => Severity::Info,
        EgressDecision::Deny | EgressDecision::WouldDeny => Severity::Warn,
    }
}

/// `{decision} {route} {client} -> {host}:{port}: {reason}`, plus `({error.type})` when the
/// connection failed; the client is its address when it has no name (bad credentials).
fn line(record: &EgressRecord) -> String {
    let client = match record.client_name.as_deref() {
        Some(name) if !name.is_empty() => one_line(name),
        _ => record.client_addr.ip().to_string(),
    };
    let mut line = format!(
        "{} {} {client} -> {}:{}",
        record.decision.as_str(),
        one_line(record.route),
        host_for_line(&record.server_address),
        record.server_port,
    );
    if !record.reason.is_empty() {
        line.push_str(": ");
        line.push_str(&one_line(&record.reason));
    }
    if let Some(error) = record.error_type.as_deref().filter(|e| !e.is_empty()) {
        line.push_str(" (");
        line.push_str(&one_line(error));
        line.push(')');
    }
    line
}

/// An IPv6 literal in brackets, so `host:port` reads unambiguously.
fn host_for_line(host: &str) -> String {
    let host = one_line(host);
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    }
}

/// `s` capped like an attribute, with control characters (newlines included) made visible.
fn one_line(s: &str) -> String {
    let capped = cut_with_ellipsis(s, MAX_SHORT_BYTES);
    if !capped.chars().any(char::is_control) {
        return capped.into_owned();
    }
    capped
        .chars()
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::export::attributes::ALL;
    use crate::export::record::AttrValue;
    use std::time::{Duration, UNIX_EPOCH};

    fn str_attribute<'r>(record: &'r LogRecordData, name: &str) -> Option<&'r str> {
        record.attribute(name).and_then(AttrValue::as_str)
    }

    fn denial() -> EgressRecord {
        EgressRecord {
            started_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            decision: EgressDecision::Deny,
            reason: "code-sandbox (profile code): no rule allows example.com:443".into(),
            route: "tunnel",
            error_type: Some("policy".into()),
            client_name: Some("code-sandbox".into()),
            client_profile: Some("code".into()),
            client_addr: "172.30.2.5:40123".parse().unwrap(),
            server_address: "example.com".into(),
            server_port: 443,
            peer_addr: None,
            bytes_sent: 0,
            bytes_received: 0,
            duration: Duration::from_millis(2),
        }
    }

    fn allowed() -> EgressRecord {
        EgressRecord {
            decision: EgressDecision::Allow,
            reason: "code-sandbox (profile code): allowed by api.anthropic.com".into(),
            route: "intercept",
            error_type: None,
            server_address: "api.anthropic.com".into(),
            peer_addr: Some("[2606:4700::6810:1]:443".parse().unwrap()),
            bytes_sent: 5_000,
            bytes_received: 120_000,
            duration: Duration::from_millis(1500),
            ..denial()
        }
    }

    #[test]
    fn severity_by_decision() {
        let cases = [
            (EgressDecision::Allow, Severity::Info, "allow"),
            (EgressDecision::Deny, Severity::Warn, "deny"),
            (EgressDecision::WouldDeny, Severity::Warn, "would_deny"),
        ];
        for (decision, want, name) in cases {
            let source = EgressRecord {
                decision,
                ..denial()
            };
            let record = build_egress_record(&source);
            assert_eq!(record.severity, want, "{name}");
            assert_eq!(
                str_attribute(&record, key::LLMTAP_EGRESS_DECISION),
                Some(name)
            );
            assert_eq!(record.event_name, key::EVENT_EGRESS);
            assert!(
                record.body.starts_with(&format!("{name} ")),
                "{}",
                record.body
            );
        }
    }

    #[test]
    fn denial_record() {
        let source = denial();
        let record = build_egress_record(&source);
        assert_eq!(
            record.timestamp,
            UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        );
        assert_eq!(
            record.body,
            "deny tunnel code-sandbox -> example.com:443: \
             code-sandbox (profile code): no rule allows example.com:443 (policy)"
        );
        let expect_str = [
            (
                key::LLMTAP_EGRESS_REASON,
                "code-sandbox (profile code): no rule allows example.com:443",
            ),
            (key::LLMTAP_EGRESS_ROUTE, "tunnel"),
            (key::LLMTAP_CLIENT_NAME, "code-sandbox"),
            (key::LLMTAP_CLIENT_PROFILE, "code"),
            (key::CLIENT_ADDRESS, "172.30.2.5"),
            (key::SERVER_ADDRESS, "example.com"),
            (key::ERROR_TYPE, "policy"),
        ];
        for (k, v) in expect_str {
            assert_eq!(str_attribute(&record, k), Some(v), "{k}");
        }
        let expect = [
            (key::SERVER_PORT, AttrValue::Int(443)),
            (key::LLMTAP_EGRESS_BYTES_SENT, AttrValue::Int(0)),
            (key::LLMTAP_EGRESS_BYTES_RECEIVED, AttrValue::Int(0)),
            (key::LLMTAP_DURATION, AttrValue::Double(0.002)),
        ];
        for (k, v) in expect {
            assert_eq!(record.attribute(k), Some(&v), "{k}");
        }
        // No connection was made: no peer.
        for absent in [key::NETWORK_PEER_ADDRESS, key::NETWORK_PEER_PORT] {
            assert_eq!(record.attribute(absent), None, "{absent}");
        }
    }

    #[test]
    fn allowed_record() {
        let source = allowed();
        let record = build_egress_record(&source);
        assert_eq!(record.severity, Severity::Info);
        assert_eq!(
            str_attribute(&record, key::NETWORK_PEER_ADDRESS),
            Some("2606:4700::6810:1")
        );
        let expect = [
            (key::NETWORK_PEER_PORT, AttrValue::Int(443)),
            (key::LLMTAP_EGRESS_BYTES_SENT, AttrValue::Int(5_000)),
            (key::LLMTAP_EGRESS_BYTES_RECEIVED, AttrValue::Int(120_000)),
            (key::LLMTAP_DURATION, AttrValue::Double(1.5)),
        ];
        for (k, v) in expect {
            assert_eq!(record.attribute(k), Some(&v), "{k}");
        }
        assert_eq!(record.attribute(key::ERROR_TYPE), None);
        assert_eq!(
            record.body,
            "allow intercept code-sandbox -> api.anthropic.com:443: \
             code-sandbox (profile code): allowed by api.anthropic.com"
        );
    }

    #[test]
    fn unknown_client_is_left_out() {
        let source = EgressRecord {
            client_name: None,
            client_profile: None,
            reason: "proxy credentials required".into(),
            error_type: Some("proxy_auth".into()),
            server_address: "::1".into(),
            ..denial()
        };
        let record = build_egress_record(&source);
        for absent in [key::LLMTAP_CLIENT_NAME, key::LLMTAP_CLIENT_PROFILE] {
            assert_eq!(record.attribute(absent), None, "{absent}");
        }
        assert_eq!(
            record.body,
            "deny tunnel 172.30.2.5 -> [::1]:443: proxy credentials required (proxy_auth)"
        );
    }

    #[test]
    fn client_strings_are_capped_and_kept_on_one_line() {
        let long = "a".repeat(100_000);
        let source = EgressRecord {
            reason: format!("no rule allows {long}\nforged line"),
            client_name: Some(long.clone()),
            client_profile: Some(long.clone()),
            server_address: format!("{long}.example"),
            error_type: Some(long.clone()),
            ..denial()
        };
        let record = build_egress_record(&source);
        for k in [
            key::LLMTAP_EGRESS_REASON,
            key::LLMTAP_CLIENT_NAME,
            key::LLMTAP_CLIENT_PROFILE,
            key::SERVER_ADDRESS,
            key::ERROR_TYPE,
        ] {
            let value = str_attribute(&record, k).unwrap();
            assert!(value.len() <= MAX_SHORT_BYTES, "{k}: {}", value.len());
            assert!(value.ends_with('…'), "{k}");
        }
        assert!(
            record.body.len() <= 4 * MAX_SHORT_BYTES + 64,
            "{}",
            record.body.len()
        );
        assert!(!record.body.contains('\n'));
        let newline_source = EgressRecord {
            reason: "bad\r\nname".into(),
            ..denial()
        };
        let newline = build_egress_record(&newline_source);
        assert!(
            newline.body.contains("bad\u{FFFD}\u{FFFD}name"),
            "{}",
            newline.body
        );
        // Five capped attributes and a line of four capped parts: far below Loki's limits.
        assert!(record.size_hint() < 10 * 1024, "{}", record.size_hint());
    }

    #[test]
    fn every_key_is_declared_once() {
        let source = allowed();
        let record = build_egress_record(&source);
        for (k, _) in &record.attributes {
            assert!(ALL.contains(k), "{k} missing from attributes::ALL");
        }
        let mut keys: Vec<_> = record.attributes.iter().map(|(k, _)| *k).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), record.attributes.len(), "duplicate keys");
        assert!(crate::export::attributes::EVENTS.contains(&record.event_name));
    }
}
