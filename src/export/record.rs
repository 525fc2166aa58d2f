//! Pure mapping of one `Exchange` to one redacted log record that fits Loki's limits.
//!
//! The record's `event_name` is `gen_ai.client.inference.operation.details`. Provider and API
//! shape come from the exchange (decided once by the proxy), never re-derived here.
//!
//! The log body (Loki's log line) is a compact JSON document:
//!
//! ```json
//! {"request":{"body":"<redacted text>","truncated":false},
//!  "response":{"body":"<redacted text or raw SSE events>","truncated":true}}
//! ```
//!
//! `body` is the decoded (gzip/br/deflate/zstd undone), redacted body as text (invalid UTF-8
//! replaced by U+FFFD); it is left out, and `decode_error` says why, when the bytes could not
//! be decoded. `truncated` is true when the logged text is shorter than what was forwarded
//! (capture cap, decode limit, or trimming to `max_record_bytes`). Small facts live in
//! attributes (see `attributes.rs`), never in the body.

//!
//! A record borrows from the exchange it describes: an attribute value is a slice of the
//! exchange (or of the redactor's output, which borrows from it too) unless capping or
//! redaction had to change it. The OTLP encoder (`proto.rs`) writes it as it is.

mod body;
mod fit;
mod headers;
mod semconv;

use serde::Serialize;
use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use crate::capture::{Exchange, Outcome};
use crate::export::attributes as key;
use crate::providers::{self, RequestFacts};
use crate::redact::Redactor;
use body::LoggedBody;
use fit::{ATTRIBUTE_FRAMING, RECORD_FRAMING, fit_bodies};

/// Cap on one-line string facts (user agent, model names, ids, error type, client names).
pub(super) const MAX_SHORT_BYTES: usize = 1024;

/// Marker appended to a cut attribute value.
const ELLIPSIS: &str = "…";

/// Attributes a call record has at most (it has about 35): the list is allocated once.
const MAX_CALL_ATTRIBUTES: usize = 48;

/// One attribute value, mirroring the OTLP `AnyValue` kinds llmtap uses; strings are
/// borrowed where they can be.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum AttrValue<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Double(f64),
    Bool(bool),
    StrArray(Vec<Cow<'a, str>>),
}

impl AttrValue<'_> {
    /// The string, for a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            AttrValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Upper bound of the value's size once encoded (numbers as their longest text form).
    pub fn size_hint(&self) -> usize {
        match self {
            AttrValue::Str(s) => s.len(),
            AttrValue::Int(_) => 20,
            AttrValue::Double(_) => 24,
            AttrValue::Bool(_) => 5,
            AttrValue::StrArray(items) => 2 + items.iter().map(|s| s.len() + 3).sum::<usize>(),
        }
    }
}

/// OTel severity of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Info,
    Warn,
    Error,
}

impl Severity {
    /// 1xx–3xx INFO, 4xx WARN, 5xx / transport error / no response ERROR.
    pub fn for_exchange(status: Option<u16>, outcome: &Outcome) -> Severity {
        if matches!(
            outcome,
            Outcome::UpstreamError { .. } | Outcome::Timeout { .. } | Outcome::Shutdown
        ) {
            return Severity::Error;
        }
        match status {
            Some(s) if s < 400 => Severity::Info,
            Some(s) if s < 500 => Severity::Warn,
            _ => Severity::Error,
        }
    }

    /// As [`Severity::for_exchange`], and at least WARN when a foreign key was seen.
    pub fn for_record(exchange: &Exchange) -> Severity {
        let severity = Severity::for_exchange(exchange.status, &exchange.outcome);
        if exchange.key.foreign && severity == Severity::Info {
            return Severity::Warn;
        }
        severity
    }

    /// OTLP `SeverityNumber` (INFO = 9, WARN = 13, ERROR = 17).
    pub fn number(self) -> i32 {
        match self {
            Severity::Info => 9,
            Severity::Warn => 13,
            Severity::Error => 17,
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            Severity::Info => "INFO",
            Severity::Warn => "WARN",
            Severity::Error => "ERROR",
        }
    }
}

/// One finished log record, independent of the wire format (OTLP or stdout JSON), borrowing
/// from what it describes.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecordData<'a> {
    /// OTLP `event_name`: one of `attributes::EVENTS`.
    pub event_name: &'static str,
    /// When the request (or connection) started.
    pub timestamp: SystemTime,
    /// When the record was built.
    pub observed_timestamp: SystemTime,
    pub severity: Severity,
    /// The log line: the JSON document described in the module docs for a call, one short
    /// human line for an egress record.
    pub body: String,
    pub attributes: Vec<(&'static str, AttrValue<'a>)>,
}

impl<'a> LogRecordData<'a> {
    /// The value of an attribute, if the record has it.
    pub fn attribute(&self, name: &str) -> Option<&AttrValue<'a>> {
        self.attributes
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    /// Conservative size in bytes of what Loki sees: body plus attribute keys and values.
    pub fn size_hint(&self) -> usize {
        self.body.len() + attributes_size(&self.attributes)
    }
}

/// Everything besides the exchange that shapes a record.
#[derive(Debug, Clone, Copy)]
pub struct RecordContext<'a> {
    pub redactor: &'a Redactor,
    /// Upper bound for body + attributes (`--max-record-bytes`).
    pub max_record_bytes: usize,
    /// Most bytes decoded from each captured body.
    pub body_decode_limit: usize,
}

/// Builds the record for one exchange. Never fails: what cannot be known is left out.
pub fn build_record<'a>(exchange: &'a Exchange, ctx: &RecordContext<'_>) -> LogRecordData<'a> {
    let shape = exchange.shape;
    let request = LoggedBody::decode(&exchange.request_body, ctx);
    // The proxy parsed the whole request as it passed; the captured copy is the fallback.
    let parsed;
    let (request_facts, request_model) = match (&exchange.request_facts, &request.decoded) {
        (Some(facts), _) => (facts, facts.model.as_deref().map(Cow::Borrowed)),
        (None, decoded) => {
            parsed = decoded
                .as_deref()
                .map_or_else(RequestFacts::default, |bytes| {
                    providers::parse_request(shape, &exchange.path, bytes)
                });
            (&parsed, parsed.model.clone().map(Cow::Owned))
        }
    };
    let response = LoggedBody::decode(&exchange.response_body, ctx);
    let mut attrs = Attrs::with_capacity(MAX_CALL_ATTRIBUTES);
    semconv::http_attributes(&mut attrs, exchange, ctx.redactor);
    semconv::genai_attributes(&mut attrs, exchange, shape, request_facts, request_model);
    semconv::llmtap_attributes(&mut attrs, exchange, ctx.redactor);
    // The OTLP framing (tags, lengths, timestamps) of every attribute, the 3 flags included.
    let framing = RECORD_FRAMING + (attrs.0.len() + 3) * ATTRIBUTE_FRAMING;
    let fitted = fit_bodies(
        &request,
        &response,
        attributes_size(&attrs.0) + framing,
        ctx.max_record_bytes,
    );
    attrs.push(
        key::LLMTAP_REQUEST_BODY_TRUNCATED,
        AttrValue::Bool(fitted.request_truncated),
    );
    attrs.push(
        key::LLMTAP_RESPONSE_BODY_TRUNCATED,
        AttrValue::Bool(fitted.response_truncated),
    );
    attrs.push(key::LLMTAP_RECORD_TRIMMED, AttrValue::Bool(fitted.trimmed));
    LogRecordData {
        event_name: key::EVENT_INFERENCE_DETAILS,
        timestamp: exchange.started_at,
        observed_timestamp: SystemTime::now(),
        severity: Severity::for_record(exchange),
        body: fitted.body,
        attributes: attrs.0,
    }
}

/// Attribute list under construction; unknown values are skipped, never written as 0 or "".
#[derive(Default)]
pub(super) struct Attrs<'a>(pub(super) Vec<(&'static str, AttrValue<'a>)>);

impl<'a> Attrs<'a> {
    pub(super) fn with_capacity(capacity: usize) -> Attrs<'a> {
        Attrs(Vec::with_capacity(capacity))
    }

    pub(super) fn push(&mut self, name: &'static str, value: AttrValue<'a>) {
        self.0.push((name, value));
    }

    /// A string borrowed from the record's source, capped at `cap` bytes.
    pub(super) fn str(&mut self, name: &'static str, value: Option<&'a str>, cap: usize) {
        self.text(name, value.map(Cow::Borrowed), cap);
    }

    /// A string made for the record (redacted, formatted), capped at `cap` bytes.
    pub(super) fn text(&mut self, name: &'static str, value: Option<Cow<'a, str>>, cap: usize) {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            self.push(name, AttrValue::Str(cut_cow(value, cap)));
        }
    }

    /// A string capped at [`MAX_SHORT_BYTES`].
    pub(super) fn short(&mut self, name: &'static str, value: Option<&'a str>) {
        self.str(name, value, MAX_SHORT_BYTES);
    }

    pub(super) fn int(&mut self, name: &'static str, value: Option<i64>) {
        if let Some(value) = value {
            self.push(name, AttrValue::Int(value));
        }
    }

    pub(super) fn seconds(&mut self, name: &'static str, value: Option<Duration>) {
        if let Some(value) = value {
            self.push(name, AttrValue::Double(value.as_secs_f64()));
        }
    }
}

fn attributes_size(attrs: &[(&'static str, AttrValue<'_>)]) -> usize {
    attrs.iter().map(|(k, v)| k.len() + v.size_hint()).sum()
}

pub(super) fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// `s` cut on a char boundary to at most `max` bytes, with `…` marking the cut; borrowed
/// when it fits.
pub(super) fn cut_with_ellipsis(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let mut end = max.saturating_sub(ELLIPSIS.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}{ELLIPSIS}", &s[..end]))
}

/// [`cut_with_ellipsis`] of a value that may already be owned.
pub(super) fn cut_cow(value: Cow<'_, str>, max: usize) -> Cow<'_, str> {
    match value {
        Cow::Borrowed(s) => cut_with_ellipsis(s, max),
        Cow::Owned(s) if s.len() <= max => Cow::Owned(s),
        Cow::Owned(s) => Cow::Owned(cut_with_ellipsis(&s, max).into_owned()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
#[path = "record_tests.rs"]
mod tests;
