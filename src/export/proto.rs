//! OTLP protobuf written straight from borrowed records: no intermediate `opentelemetry-proto`
//! messages, no copies of the strings, one output buffer per batch.
//!
//! The bytes are exactly those `prost` writes for the same `ExportLogsServiceRequest` built
//! from `opentelemetry-proto`'s types (fields in tag order, proto3 defaults left out, a oneof
//! and an `Option` message always written, minimal varints); the tests decode and compare.
//! Every length-delimited field is sized before it is written, so nothing is moved afterwards.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::export::record::{AttrValue, LogRecordData};

/// Instrumentation scope of every record.
pub const SCOPE_NAME: &str = "llmtap";
const SCOPE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;

/// A field's key byte: field number (below 16) and wire type.
const fn key(field: u8, wire: u8) -> u8 {
    (field << 3) | wire
}

// ExportLogsServiceRequest, ResourceLogs, ScopeLogs.
const REQUEST_RESOURCE_LOGS: u8 = key(1, LEN);
const RESOURCE_LOGS_RESOURCE: u8 = key(1, LEN);
const RESOURCE_LOGS_SCOPE_LOGS: u8 = key(2, LEN);
const SCOPE_LOGS_SCOPE: u8 = key(1, LEN);
const SCOPE_LOGS_LOG_RECORDS: u8 = key(2, LEN);
// Resource, InstrumentationScope.
const RESOURCE_ATTRIBUTES: u8 = key(1, LEN);
const SCOPE_NAME_FIELD: u8 = key(1, LEN);
const SCOPE_VERSION_FIELD: u8 = key(2, LEN);
// LogRecord (observed_time_unix_nano = 11 and event_name = 12 need their own constants).
const LOG_TIME: u8 = key(1, FIXED64);
const LOG_SEVERITY_NUMBER: u8 = key(2, VARINT);
const LOG_SEVERITY_TEXT: u8 = key(3, LEN);
const LOG_BODY: u8 = key(5, LEN);
const LOG_ATTRIBUTES: u8 = key(6, LEN);
const LOG_OBSERVED_TIME: u8 = key(11, FIXED64);
const LOG_EVENT_NAME: u8 = key(12, LEN);
// KeyValue, AnyValue, ArrayValue.
const KV_KEY: u8 = key(1, LEN);
const KV_VALUE: u8 = key(2, LEN);
const ANY_STRING: u8 = key(1, LEN);
const ANY_BOOL: u8 = key(2, VARINT);
const ANY_INT: u8 = key(3, VARINT);
const ANY_DOUBLE: u8 = key(4, FIXED64);
const ANY_ARRAY: u8 = key(5, LEN);
const ARRAY_VALUES: u8 = key(1, LEN);

/// One `ExportLogsServiceRequest` (one resource, one scope) holding `records`.
pub fn encode_request(resource: &[(String, String)], records: &[LogRecordData<'_>]) -> Vec<u8> {
    let lengths: Vec<usize> = records.iter().map(record_len).collect();
    let resource_len = resource_len(resource);
    let records_len: usize = lengths.iter().map(|len| field_len(*len)).sum();
    let scope_logs_len = field_len(scope_len()) + records_len;
    let resource_logs_len = field_len(resource_len) + field_len(scope_logs_len);
    let mut out = Vec::with_capacity(field_len(resource_logs_len));
    put_head(&mut out, REQUEST_RESOURCE_LOGS, resource_logs_len);
    put_head(&mut out, RESOURCE_LOGS_RESOURCE, resource_len);
    put_resource(&mut out, resource);
    put_head(&mut out, RESOURCE_LOGS_SCOPE_LOGS, scope_logs_len);
    put_head(&mut out, SCOPE_LOGS_SCOPE, scope_len());
    put_scope(&mut out);
    for (record, len) in records.iter().zip(lengths) {
        put_head(&mut out, SCOPE_LOGS_LOG_RECORDS, len);
        put_record(&mut out, record);
    }
    out
}

/// The encoded `Resource` for these attributes (what a spool segment keeps for its records).
pub fn encode_resource(resource: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(resource_len(resource));
    put_resource(&mut out, resource);
    out
}

/// The encoded `InstrumentationScope` of llmtap's records.
pub fn encode_scope() -> Vec<u8> {
    let mut out = Vec::with_capacity(scope_len());
    put_scope(&mut out);
    out
}

/// One encoded `LogRecord` (what the spool keeps per entry).
pub fn encode_record(record: &LogRecordData<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(record_len(record));
    put_record(&mut out, record);
    out
}

/// An `ExportLogsServiceRequest` put together from an encoded `Resource`, an encoded
/// `InstrumentationScope` and encoded `LogRecord`s, without decoding them: the same bytes
/// [`encode_request`] gives for the decoded values.
pub fn request_from_parts(resource: &[u8], scope: &[u8], records: &[impl AsRef<[u8]>]) -> Vec<u8> {
    let records_len: usize = records.iter().map(|r| field_len(r.as_ref().len())).sum();
    let scope_logs_len = field_len(scope.len()) + records_len;
    let resource_logs_len = field_len(resource.len()) + field_len(scope_logs_len);
    let mut out = Vec::with_capacity(field_len(resource_logs_len));
    put_head(&mut out, REQUEST_RESOURCE_LOGS, resource_logs_len);
    put_head(&mut out, RESOURCE_LOGS_RESOURCE, resource.len());
    out.extend_from_slice(resource);
    put_head(&mut out, RESOURCE_LOGS_SCOPE_LOGS, scope_logs_len);
    put_head(&mut out, SCOPE_LOGS_SCOPE, scope.len());
    out.extend_from_slice(scope);
    for record in records {
        put_head(&mut out, SCOPE_LOGS_LOG_RECORDS, record.as_ref().len());
        out.extend_from_slice(record.as_ref());
    }
    out
}

/// Bytes of a length-delimited field with a one-byte key (field numbers below 16).
fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// Key (one byte) and length of a length-delimited field.
fn put_head(out: &mut Vec<u8>, key: u8, len: usize) {
    out.push(key);
    put_varint(out, len as u64);
}

fn varint_len(value: u64) -> usize {
    // One byte per started group of 7 bits, at least one.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A plain string field: left out when empty (the proto3 default).
fn string_field_len(s: &str) -> usize {
    if s.is_empty() { 0 } else { field_len(s.len()) }
}

fn put_string_field(out: &mut Vec<u8>, key: u8, s: &str) {
    if !s.is_empty() {
        put_head(out, key, s.len());
        out.extend_from_slice(s.as_bytes());
    }
}

/// A fixed64 field: left out when 0.
fn fixed64_len(value: u64) -> usize {
    if value == 0 { 0 } else { 9 }
}

fn put_fixed64(out: &mut Vec<u8>, key: u8, value: u64) {
    if value != 0 {
        out.push(key);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

/// Nanoseconds since the epoch (0 for times before it, which OTLP reads as "unknown").
pub fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn resource_len(resource: &[(String, String)]) -> usize {
    resource
        .iter()
        .map(|(k, v)| field_len(string_kv_len(k, v)))
        .sum()
}

fn put_resource(out: &mut Vec<u8>, resource: &[(String, String)]) {
    for (k, v) in resource {
        put_head(out, RESOURCE_ATTRIBUTES, string_kv_len(k, v));
        put_string_kv(out, k, v);
    }
}

fn scope_len() -> usize {
    string_field_len(SCOPE_NAME) + string_field_len(SCOPE_VERSION)
}

fn put_scope(out: &mut Vec<u8>) {
    put_string_field(out, SCOPE_NAME_FIELD, SCOPE_NAME);
    put_string_field(out, SCOPE_VERSION_FIELD, SCOPE_VERSION);
}

/// `KeyValue { key, value: AnyValue { string_value } }`.
fn string_kv_len(key: &str, value: &str) -> usize {
    string_field_len(key) + field_len(field_len(value.len()))
}

fn put_string_kv(out: &mut Vec<u8>, key: &str, value: &str) {
    put_string_field(out, KV_KEY, key);
    put_head(out, KV_VALUE, field_len(value.len()));
    put_any_string(out, value);
}

/// The `string_value` of an `AnyValue` (a oneof: written even when empty).
fn put_any_string(out: &mut Vec<u8>, s: &str) {
    put_head(out, ANY_STRING, s.len());
    out.extend_from_slice(s.as_bytes());
}

fn record_len(record: &LogRecordData<'_>) -> usize {
    let severity = i64::from(record.severity.number()) as u64;
    let attributes: usize = record
        .attributes
        .iter()
        .map(|(key, value)| field_len(attribute_len(key, value)))
        .sum();
    fixed64_len(unix_nanos(record.timestamp))
        + if severity == 0 {
            0
        } else {
            1 + varint_len(severity)
        }
        + string_field_len(record.severity.text())
        + field_len(field_len(record.body.len()))
        + attributes
        + fixed64_len(unix_nanos(record.observed_timestamp))
        + string_field_len(record.event_name)
}

fn put_record(out: &mut Vec<u8>, record: &LogRecordData<'_>) {
    put_fixed64(out, LOG_TIME, unix_nanos(record.timestamp));
    let severity = i64::from(record.severity.number()) as u64;
    if severity != 0 {
        out.push(LOG_SEVERITY_NUMBER);
        put_varint(out, severity);
    }
    put_string_field(out, LOG_SEVERITY_TEXT, record.severity.text());
    put_head(out, LOG_BODY, field_len(record.body.len()));
    put_any_string(out, &record.body);
    for (key, value) in &record.attributes {
        put_head(out, LOG_ATTRIBUTES, attribute_len(key, value));
        put_string_field(out, KV_KEY, key);
        put_head(out, KV_VALUE, any_value_len(value));
        put_any_value(out, value);
    }
    put_fixed64(
        out,
        LOG_OBSERVED_TIME,
        unix_nanos(record.observed_timestamp),
    );
    put_string_field(out, LOG_EVENT_NAME, record.event_name);
}

/// `KeyValue { key, value }` of one attribute.
fn attribute_len(key: &str, value: &AttrValue<'_>) -> usize {
    string_field_len(key) + field_len(any_value_len(value))
}

fn any_value_len(value: &AttrValue<'_>) -> usize {
    match value {
        AttrValue::Str(s) => field_len(s.len()),
        AttrValue::Int(i) => 1 + varint_len(*i as u64),
        AttrValue::Double(_) => 9,
        AttrValue::Bool(_) => 2,
        AttrValue::StrArray(items) => field_len(array_len(items)),
    }
}

fn array_len(items: &[std::borrow::Cow<'_, str>]) -> usize {
    items.iter().map(|s| field_len(field_len(s.len()))).sum()
}

fn put_any_value(out: &mut Vec<u8>, value: &AttrValue<'_>) {
    match value {
        AttrValue::Str(s) => put_any_string(out, s),
        AttrValue::Int(i) => {
            out.push(ANY_INT);
            put_varint(out, *i as u64);
        }
        AttrValue::Double(d) => {
            out.push(ANY_DOUBLE);
            out.extend_from_slice(&d.to_bits().to_le_bytes());
        }
        AttrValue::Bool(b) => out.extend_from_slice(&[ANY_BOOL, u8::from(*b)]),
        AttrValue::StrArray(items) => {
            put_head(out, ANY_ARRAY, array_len(items));
            for item in items {
                put_head(out, ARRAY_VALUES, field_len(item.len()));
                put_any_string(out, item);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
#[path = "proto_tests.rs"]
mod tests;
