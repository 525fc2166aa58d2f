//! The hand-written encoder against `prost` and the `opentelemetry-proto` types it replaces:
//! the same bytes for every value kind, edge values, batches, and random records.

use super::*;
use crate::export::record::Severity;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use proptest::prelude::*;
use prost::Message;
use std::borrow::Cow;
use std::time::Duration;

/// What llmtap encoded before `proto.rs`: the `opentelemetry-proto` messages, built by copying.
fn reference_request(resource: &[(String, String)], records: &[LogRecordData<'_>]) -> Vec<u8> {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(reference_resource(resource)),
            scope_logs: vec![ScopeLogs {
                scope: Some(reference_scope()),
                log_records: records.iter().map(reference_record).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn reference_resource(resource: &[(String, String)]) -> Resource {
    Resource {
        attributes: resource
            .iter()
            .map(|(k, v)| KeyValue {
                key: k.clone(),
                value: Some(string_value(v)),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn reference_scope() -> InstrumentationScope {
    InstrumentationScope {
        name: SCOPE_NAME.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..Default::default()
    }
}

fn reference_record(record: &LogRecordData<'_>) -> LogRecord {
    LogRecord {
        event_name: record.event_name.to_owned(),
        time_unix_nano: unix_nanos(record.timestamp),
        observed_time_unix_nano: unix_nanos(record.observed_timestamp),
        severity_number: record.severity.number(),
        severity_text: record.severity.text().to_owned(),
        body: Some(string_value(&record.body)),
        attributes: record
            .attributes
            .iter()
            .map(|(key, value)| KeyValue {
                key: (*key).to_owned(),
                value: Some(reference_value(value)),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn reference_value(value: &AttrValue<'_>) -> AnyValue {
    let value = match value {
        AttrValue::Str(s) => any_value::Value::StringValue(s.to_string()),
        AttrValue::Int(i) => any_value::Value::IntValue(*i),
        AttrValue::Double(d) => any_value::Value::DoubleValue(*d),
        AttrValue::Bool(b) => any_value::Value::BoolValue(*b),
        AttrValue::StrArray(items) => any_value::Value::ArrayValue(ArrayValue {
            values: items.iter().map(|s| string_value(s)).collect(),
        }),
    };
    AnyValue { value: Some(value) }
}

fn string_value(s: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.to_owned())),
    }
}

fn resource() -> Vec<(String, String)> {
    vec![
        ("service.name".to_owned(), "llmtap".to_owned()),
        ("deployment.environment.name".to_owned(), String::new()),
        (String::new(), "no key".to_owned()),
    ]
}

fn record(
    body: String,
    attributes: Vec<(&'static str, AttrValue<'static>)>,
) -> LogRecordData<'static> {
    LogRecordData {
        event_name: "gen_ai.client.inference.operation.details",
        timestamp: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        observed_timestamp: UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789),
        severity: Severity::Info,
        body,
        attributes,
    }
}

/// Records that reach every branch: each value kind with edge values, empty and long strings
/// (multi-byte lengths), zero and pre-epoch times, every severity, no event name.
fn edge_records() -> Vec<LogRecordData<'static>> {
    let kinds = vec![
        ("a.str", AttrValue::Str("x".into())),
        ("a.empty", AttrValue::Str("".into())),
        ("a.long", AttrValue::Str("é".repeat(70_000).into())),
        ("a.int", AttrValue::Int(-3)),
        ("a.zero", AttrValue::Int(0)),
        ("a.max", AttrValue::Int(i64::MAX)),
        ("a.min", AttrValue::Int(i64::MIN)),
        ("a.double", AttrValue::Double(0.25)),
        ("a.double0", AttrValue::Double(0.0)),
        ("a.nan", AttrValue::Double(f64::NAN)),
        ("a.neg0", AttrValue::Double(-0.0)),
        ("a.true", AttrValue::Bool(true)),
        ("a.false", AttrValue::Bool(false)),
        ("", AttrValue::Bool(true)),
        (
            "a.array",
            AttrValue::StrArray(vec!["stop".into(), "".into()]),
        ),
        ("a.none", AttrValue::StrArray(Vec::new())),
    ];
    let mut records = vec![
        record("{\"request\":{}}".into(), kinds),
        record(String::new(), Vec::new()),
        record("x".repeat(200), vec![("a.int", AttrValue::Int(7))]),
        record("y".repeat(3_000_000), Vec::new()),
    ];
    let mut odd = record("z".into(), Vec::new());
    odd.timestamp = UNIX_EPOCH;
    odd.observed_timestamp = UNIX_EPOCH - Duration::from_secs(5);
    odd.event_name = "";
    odd.severity = Severity::Error;
    records.push(odd);
    let mut warn = record("w".into(), Vec::new());
    warn.severity = Severity::Warn;
    warn.event_name = "llmtap.egress";
    records.push(warn);
    records
}

#[test]
fn same_bytes_as_prost_for_every_value_kind() {
    let records = edge_records();
    for n in 0..=records.len() {
        assert_eq!(
            encode_request(&resource(), &records[..n]),
            reference_request(&resource(), &records[..n]),
            "{n} records"
        );
    }
    for record in &records {
        assert_eq!(
            encode_record(record),
            reference_record(record).encode_to_vec()
        );
    }
    assert_eq!(
        encode_resource(&resource()),
        reference_resource(&resource()).encode_to_vec()
    );
    assert_eq!(encode_scope(), reference_scope().encode_to_vec());
    assert_eq!(encode_request(&[], &[]), reference_request(&[], &[]));
}

#[test]
fn varint_lengths() {
    for value in [0u64, 1, 127, 128, 16_383, 16_384, u32::MAX as u64, u64::MAX] {
        let mut out = Vec::new();
        put_varint(&mut out, value);
        assert_eq!(out.len(), varint_len(value), "{value}");
        assert_eq!(
            out.len(),
            prost::encoding::encoded_len_varint(value),
            "{value}"
        );
    }
}

#[test]
fn request_from_parts_is_byte_identical() {
    let records: Vec<LogRecordData> = [10usize, 200, 70_000]
        .iter()
        .map(|n| record("x".repeat(*n), vec![("a.int", AttrValue::Int(7))]))
        .collect();
    let resource = vec![("service.name".to_owned(), "llmtap".to_owned())];
    for n in 0..=records.len() {
        let parts = request_from_parts(
            &encode_resource(&resource),
            &encode_scope(),
            &records[..n].iter().map(encode_record).collect::<Vec<_>>(),
        );
        assert_eq!(
            parts,
            encode_request(&resource, &records[..n]),
            "{n} records"
        );
    }
}

#[test]
fn encoding_round_trips() {
    let mut record = record(
        "{\"request\":{}}".into(),
        vec![
            ("a.str", AttrValue::Str("x".into())),
            ("a.int", AttrValue::Int(-3)),
            ("a.double", AttrValue::Double(0.25)),
            ("a.bool", AttrValue::Bool(true)),
            (
                "a.array",
                AttrValue::StrArray(vec!["stop".into(), "length".into()]),
            ),
        ],
    );
    record.event_name = "llmtap.egress";
    record.severity = Severity::Warn;
    let bytes = encode_request(&[("service.name".into(), "llmtap".into())], &[record]);
    let decoded = ExportLogsServiceRequest::decode(bytes.as_slice()).unwrap();
    let scope_logs = &decoded.resource_logs[0].scope_logs[0];
    assert_eq!(scope_logs.scope.as_ref().unwrap().name, "llmtap");
    let log = &scope_logs.log_records[0];
    assert_eq!(log.time_unix_nano, 1_700_000_000_000_000_000);
    assert_eq!(log.event_name, "llmtap.egress");
    assert_eq!(
        (log.severity_number, log.severity_text.as_str()),
        (13, "WARN")
    );
    assert_eq!(log.attributes.len(), 5);
    let array = log.attributes[4]
        .value
        .as_ref()
        .and_then(|v| v.value.clone());
    assert!(matches!(array, Some(any_value::Value::ArrayValue(a)) if a.values.len() == 2));
}

/// Attribute keys as `&'static str`: a fixed list, as the record builders have.
const KEYS: &[&str] = &["", "k", "gen_ai.request.model", "llmtap.request.headers"];

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,40}",
        proptest::collection::vec(any::<char>(), 0..300).prop_map(|c| c.into_iter().collect()),
        (0usize..20_000).prop_map(|n| "a".repeat(n)),
    ]
}

fn any_attr_value() -> impl Strategy<Value = AttrValue<'static>> {
    prop_oneof![
        any_text().prop_map(|s| AttrValue::Str(Cow::Owned(s))),
        any::<i64>().prop_map(AttrValue::Int),
        any::<f64>().prop_map(AttrValue::Double),
        any::<bool>().prop_map(AttrValue::Bool),
        proptest::collection::vec(any_text().prop_map(Cow::Owned), 0..4)
            .prop_map(AttrValue::StrArray),
    ]
}

fn any_record() -> impl Strategy<Value = LogRecordData<'static>> {
    let attribute = (0..KEYS.len(), any_attr_value()).prop_map(|(k, v)| (KEYS[k], v));
    (
        any_text(),
        proptest::collection::vec(attribute, 0..40),
        any::<u64>(),
        any::<u64>(),
        0..3usize,
        0..3usize,
    )
        .prop_map(
            |(body, attributes, at, observed, severity, event)| LogRecordData {
                event_name: [
                    "",
                    "llmtap.egress",
                    "gen_ai.client.inference.operation.details",
                ][event],
                timestamp: UNIX_EPOCH + Duration::from_nanos(at >> (at % 64)),
                observed_timestamp: UNIX_EPOCH + Duration::from_nanos(observed >> (observed % 64)),
                severity: [Severity::Info, Severity::Warn, Severity::Error][severity],
                body,
                attributes,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_batches_encode_as_prost_does(records in proptest::collection::vec(any_record(), 0..6)) {
        let resource = resource();
        prop_assert_eq!(encode_request(&resource, &records), reference_request(&resource, &records));
    }
}

#[test]
fn records_built_from_exchanges_encode_as_prost_does() {
    use crate::capture::{CapturedBody, Exchange, Outcome};
    use crate::export::record::{RecordContext, build_record};
    use crate::redact::{RedactionConfig, Redactor};
    let redactor = Redactor::new(&RedactionConfig::default()).unwrap();
    let mut exchanges = Vec::new();
    for i in 0..24u64 {
        let mut exchange = Exchange::sample();
        exchange.id = i;
        exchange.url = format!(
            "https://api.anthropic.com/v1/messages?key=AIza{}&n={i}",
            "x".repeat(35)
        );
        exchange
            .request_headers
            .push(("User-Agent".into(), format!("agent/{i} \"q\"")));
        exchange.request_body =
            CapturedBody::complete("é\"\\\n".repeat(usize::try_from(i).unwrap() * 997));
        match i % 4 {
            0 => exchange.status = None,
            1 => {
                exchange.outcome = Outcome::Timeout {
                    side: "response_body",
                }
            }
            2 => exchange.cost_usd = Some(0.125),
            _ => exchange.key.foreign = true,
        }
        exchanges.push(exchange);
    }
    let ctx = RecordContext {
        redactor: &redactor,
        max_record_bytes: 64 * 1024,
        body_decode_limit: 128 * 1024,
    };
    let records: Vec<_> = exchanges.iter().map(|e| build_record(e, &ctx)).collect();
    assert_eq!(
        encode_request(&resource(), &records),
        reference_request(&resource(), &records)
    );
}
