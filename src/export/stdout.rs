//! The sink used when no OTLP endpoint is set: one JSON object per record, one per line.
//!
//! Each line carries the same fields as the OTLP record:
//! `{"event_name":"gen_ai.client.inference.operation.details","time_unix_nano":…,
//!   "observed_time_unix_nano":…,"severity_number":9,"severity_text":"INFO",
//!   "body":{"request":{…},"response":{…}},"attributes":{"gen_ai.request.model":"…",…},
//!   "resource":{"service.name":"llmtap",…},"scope":"llmtap"}`.
//! A call's body is embedded as the JSON object it is (not as an escaped string) so it reads
//! well; an egress record's body (`"event_name":"llmtap.egress"`) is its one-line string.

use serde::Serialize;
use serde_json::{Map, Value};
use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::export::otlp::{SCOPE_NAME, unix_nanos};
use crate::export::record::LogRecordData;

/// Where JSON lines are written (stdout in production, a buffer in tests).
pub type SharedWriter = Arc<Mutex<Box<dyn Write + Send>>>;

/// A writer to the process's stdout.
pub fn stdout_writer() -> SharedWriter {
    Arc::new(Mutex::new(Box::new(std::io::stdout())))
}

#[derive(Serialize)]
struct Line {
    event_name: &'static str,
    time_unix_nano: u64,
    observed_time_unix_nano: u64,
    severity_number: i32,
    severity_text: &'static str,
    body: Value,
    attributes: Map<String, Value>,
    resource: Map<String, Value>,
    scope: &'static str,
}

/// One record as a JSON line (no trailing newline).
pub fn render_line(resource: &[(String, String)], record: &LogRecordData) -> String {
    let body =
        serde_json::from_str(&record.body).unwrap_or_else(|_| Value::String(record.body.clone()));
    let attributes = record
        .attributes
        .iter()
        .map(|(key, value)| {
            (
                (*key).to_owned(),
                serde_json::to_value(value).unwrap_or(Value::Null),
            )
        })
        .collect();
    let resource = resource
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let line = Line {
        event_name: record.event_name,
        time_unix_nano: unix_nanos(record.timestamp),
        observed_time_unix_nano: unix_nanos(record.observed_timestamp),
        severity_number: record.severity.number(),
        severity_text: record.severity.text(),
        body,
        attributes,
        resource,
        scope: SCOPE_NAME,
    };
    serde_json::to_string(&line).unwrap_or_default()
}

/// Writes the records as lines; blocking, so the worker runs it off the async threads.
pub fn write_lines(
    writer: &SharedWriter,
    resource: &[(String, String)],
    records: &[LogRecordData],
) -> std::io::Result<()> {
    let mut text = String::new();
    for record in records {
        text.push_str(&render_line(resource, record));
        text.push('\n');
    }
    let mut writer = writer
        .lock()
        .map_err(|_| std::io::Error::other("stdout writer lock poisoned"))?;
    writer.write_all(text.as_bytes())?;
    writer.flush()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::export::record::{AttrValue, Severity};
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn line_shape() {
        let record = LogRecordData {
            event_name: "gen_ai.client.inference.operation.details",
            timestamp: UNIX_EPOCH + Duration::from_secs(2),
            observed_timestamp: UNIX_EPOCH + Duration::from_secs(3),
            severity: Severity::Error,
            body: r#"{"request":{"body":"hi","truncated":false}}"#.into(),
            attributes: vec![
                ("gen_ai.usage.input_tokens", AttrValue::Int(12)),
                (
                    "gen_ai.response.finish_reasons",
                    AttrValue::StrArray(vec!["stop".into()]),
                ),
            ],
        };
        let line = render_line(&[("service.name".into(), "llmtap".into())], &record);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["event_name"], "gen_ai.client.inference.operation.details");
        assert_eq!(v["time_unix_nano"], 2_000_000_000u64);
        assert_eq!(v["severity_number"], 17);
        assert_eq!(v["severity_text"], "ERROR");
        assert_eq!(v["body"]["request"]["body"], "hi");
        assert_eq!(v["attributes"]["gen_ai.usage.input_tokens"], 12);
        assert_eq!(v["attributes"]["gen_ai.response.finish_reasons"][0], "stop");
        assert_eq!(v["resource"]["service.name"], "llmtap");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn plain_text_body_stays_a_string() {
        let record = LogRecordData {
            event_name: "llmtap.egress",
            timestamp: UNIX_EPOCH,
            observed_timestamp: UNIX_EPOCH,
            severity: Severity::Warn,
            body: "deny tunnel c -> example.com:443: no rule".into(),
            attributes: vec![("llmtap.egress.decision", AttrValue::Str("deny".into()))],
        };
        let v: Value = serde_json::from_str(&render_line(&[], &record)).unwrap();
        assert_eq!(v["event_name"], "llmtap.egress");
        assert_eq!(v["body"], "deny tunnel c -> example.com:443: no rule");
        assert_eq!(v["attributes"]["llmtap.egress.decision"], "deny");
    }
}
