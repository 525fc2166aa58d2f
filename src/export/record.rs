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

use serde::Serialize;
use std::time::{Duration, SystemTime};

use crate::capture::{CapturedBody, Exchange, Outcome};
use crate::export::attributes as key;
use crate::providers::decode::decode_body;
use crate::providers::{self, ApiShape, RequestFacts, ResponseFacts};
use crate::redact::Redactor;

/// Cap on `url.full`: long enough for any real API URL, short enough for structured metadata.
const MAX_URL_BYTES: usize = 4 * 1024;
/// Cap on one-line string facts (user agent, model names, ids, error type, client names).
pub(super) const MAX_SHORT_BYTES: usize = 1024;
/// Cap on the provider's error message.
const MAX_ERROR_MESSAGE_BYTES: usize = 4 * 1024;
/// Cap on each headers JSON attribute; two of them plus the rest stay far below Loki's 64 KB.
const MAX_HEADERS_JSON_BYTES: usize = 12 * 1024;
/// Cap on one header value inside the headers JSON.
const MAX_HEADER_VALUE_BYTES: usize = 1024;
/// Key used in the headers JSON when headers had to be left out to respect the cap.
const OMITTED_HEADERS_KEY: &str = "llmtap.omitted_headers";
/// Longest trailing token removed from a cut body, so a key split by the cut leaves no partial trace.
const MAX_TRAILING_TOKEN: usize = 512;
/// Marker appended to a cut attribute value.
const ELLIPSIS: &str = "…";

/// One attribute value, mirroring the OTLP `AnyValue` kinds llmtap uses.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    StrArray(Vec<String>),
}

impl AttrValue {
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

/// One finished log record, independent of the wire format (OTLP or stdout JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecordData {
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
    pub attributes: Vec<(&'static str, AttrValue)>,
}

impl LogRecordData {
    /// The value of an attribute, if the record has it.
    pub fn attribute(&self, name: &str) -> Option<&AttrValue> {
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
pub fn build_record(exchange: &Exchange, ctx: &RecordContext<'_>) -> LogRecordData {
    let shape = exchange.shape;
    let request = LoggedBody::decode(&exchange.request_body, ctx);
    // The proxy parsed the whole request as it passed; the captured copy is the fallback.
    let request_facts = match (&exchange.request_facts, &request.decoded) {
        (Some(facts), _) => facts.clone(),
        (None, Some(bytes)) => providers::parse_request(shape, &exchange.path, bytes),
        (None, None) => RequestFacts::default(),
    };
    let response = LoggedBody::decode(&exchange.response_body, ctx);
    let mut attrs = Attrs::default();
    http_attributes(&mut attrs, exchange, ctx.redactor);
    genai_attributes(&mut attrs, exchange, shape, &request_facts);
    llmtap_attributes(&mut attrs, exchange, ctx.redactor);
    // The OTLP framing (tags, lengths, timestamps) of every attribute, the 3 flags included.
    let framing = RECORD_FRAMING + (attrs.0.len() + 3) * ATTRIBUTE_FRAMING;
    let fitted = fit_bodies(
        request,
        response,
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
pub(super) struct Attrs(pub(super) Vec<(&'static str, AttrValue)>);

impl Attrs {
    pub(super) fn push(&mut self, name: &'static str, value: AttrValue) {
        self.0.push((name, value));
    }

    pub(super) fn str(&mut self, name: &'static str, value: Option<&str>, cap: usize) {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            self.push(name, AttrValue::Str(cut_with_ellipsis(value, cap)));
        }
    }

    /// A string capped at [`MAX_SHORT_BYTES`].
    pub(super) fn short(&mut self, name: &'static str, value: Option<&str>) {
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

fn http_attributes(attrs: &mut Attrs, exchange: &Exchange, redactor: &Redactor) {
    attrs.short(key::HTTP_REQUEST_METHOD, Some(&exchange.method));
    let url = redactor.redact_url(&exchange.url);
    attrs.str(key::URL_FULL, Some(&url), MAX_URL_BYTES);
    let path = redactor.redact_text(&exchange.path);
    attrs.str(key::URL_PATH, Some(&path), MAX_URL_BYTES);
    attrs.short(key::SERVER_ADDRESS, Some(&exchange.host));
    attrs.int(key::SERVER_PORT, Some(i64::from(exchange.port)));
    let client = exchange.client_addr.ip().to_string();
    attrs.short(key::CLIENT_ADDRESS, Some(&client));
    // Logged only while the allowlist says user-agent is safe, like the headers attribute.
    if redactor.is_safe_header("user-agent") {
        let agent = header(&exchange.request_headers, "user-agent");
        let agent = agent.map(|ua| redactor.redact_text(ua));
        attrs.short(key::USER_AGENT_ORIGINAL, agent.as_deref());
    }
    let version = protocol_version(&exchange.http_version);
    attrs.short(key::NETWORK_PROTOCOL_VERSION, version);
    attrs.int(
        key::HTTP_RESPONSE_STATUS_CODE,
        exchange.status.map(i64::from),
    );
    let facts = exchange.response_facts.as_ref();
    attrs.short(key::ERROR_TYPE, error_type(exchange, facts).as_deref());
    let message = match &exchange.outcome {
        Outcome::UpstreamError { message, .. } | Outcome::Refused { message, .. } => {
            Some(message.as_str())
        }
        _ => facts.and_then(|f| f.error_message.as_deref()),
    };
    let message = message.map(|m| redactor.redact_text(m));
    let max = MAX_ERROR_MESSAGE_BYTES;
    attrs.str(key::LLMTAP_ERROR_MESSAGE, message.as_deref(), max);
}

fn genai_attributes(
    attrs: &mut Attrs,
    exchange: &Exchange,
    shape: ApiShape,
    request: &RequestFacts,
) {
    attrs.short(key::GEN_AI_PROVIDER_NAME, exchange.provider.as_deref());
    attrs.short(key::GEN_AI_OPERATION_NAME, shape.operation_name());
    attrs.short(key::GEN_AI_REQUEST_MODEL, request.model.as_deref());
    if let Some(stream) = request.stream {
        attrs.push(key::GEN_AI_REQUEST_STREAM, AttrValue::Bool(stream));
    }
    attrs.int(key::GEN_AI_REQUEST_MAX_TOKENS, request.max_tokens);
    let Some(facts) = exchange.response_facts.as_ref() else {
        return;
    };
    response_attributes(attrs, facts);
    // Time to first chunk is a streaming notion; for a single JSON answer TTFB says it all.
    if facts.is_stream || request.stream == Some(true) {
        let ttfc = exchange.time_to_first_chunk;
        attrs.seconds(key::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, ttfc);
    }
}

fn response_attributes(attrs: &mut Attrs, facts: &ResponseFacts) {
    attrs.short(key::GEN_AI_RESPONSE_MODEL, facts.model.as_deref());
    attrs.short(key::GEN_AI_RESPONSE_ID, facts.id.as_deref());
    if !facts.finish_reasons.is_empty() {
        let reasons = facts.finish_reasons.iter();
        let reasons = reasons
            .map(|r| cut_with_ellipsis(r, MAX_SHORT_BYTES))
            .collect();
        attrs.push(
            key::GEN_AI_RESPONSE_FINISH_REASONS,
            AttrValue::StrArray(reasons),
        );
    }
    let usage = &facts.usage;
    attrs.int(key::GEN_AI_USAGE_INPUT_TOKENS, usage.input_tokens);
    attrs.int(key::GEN_AI_USAGE_OUTPUT_TOKENS, usage.output_tokens);
    let cache_read = usage.cache_read_input_tokens;
    attrs.int(key::GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, cache_read);
    let cache_creation = usage.cache_creation_input_tokens;
    attrs.int(
        key::GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,
        cache_creation,
    );
    let reasoning = usage.reasoning_output_tokens;
    attrs.int(key::GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, reasoning);
    attrs.short(key::LLMTAP_USAGE_SOURCE, Some(facts.usage_source.as_str()));
}

fn llmtap_attributes(attrs: &mut Attrs, exchange: &Exchange, redactor: &Redactor) {
    attrs.int(key::LLMTAP_EXCHANGE_ID, Some(saturating_i64(exchange.id)));
    let stopped = exchange.request_facts.as_ref().and_then(|f| f.stopped);
    attrs.short(
        key::LLMTAP_REQUEST_BODY_PARSE_STOPPED,
        stopped.map(|s| s.as_str()),
    );
    attrs.short(key::LLMTAP_CLIENT_NAME, exchange.client_name.as_deref());
    attrs.short(
        key::LLMTAP_CLIENT_PROFILE,
        exchange.client_profile.as_deref(),
    );
    if exchange.key.injected {
        attrs.push(key::LLMTAP_KEY_INJECTED, AttrValue::Bool(true));
    }
    if exchange.key.foreign {
        attrs.push(key::LLMTAP_KEY_FOREIGN, AttrValue::Bool(true));
    }
    if let Some(cost) = exchange.cost_usd.filter(|c| c.is_finite()) {
        attrs.push(key::LLMTAP_COST_USD, AttrValue::Double(cost));
    }
    if exchange.usage_estimated {
        attrs.push(key::LLMTAP_USAGE_ESTIMATED, AttrValue::Bool(true));
    }
    attrs.short(key::LLMTAP_LIMIT, exchange.limit);
    attrs.str(
        key::LLMTAP_OUTCOME,
        Some(exchange.outcome.as_str()),
        MAX_SHORT_BYTES,
    );
    attrs.seconds(key::LLMTAP_DURATION, Some(exchange.duration));
    attrs.seconds(key::LLMTAP_TIME_TO_FIRST_BYTE, exchange.time_to_first_byte);
    let request_size = saturating_i64(exchange.request_body.total_len);
    attrs.int(key::LLMTAP_REQUEST_BODY_SIZE, Some(request_size));
    // No response head means no response body size to speak of.
    if exchange.status.is_some() {
        let response_size = saturating_i64(exchange.response_body.total_len);
        attrs.int(key::LLMTAP_RESPONSE_BODY_SIZE, Some(response_size));
    }
    let request_headers = headers_json(&redactor.redact_headers(&exchange.request_headers));
    attrs.push(key::LLMTAP_REQUEST_HEADERS, AttrValue::Str(request_headers));
    if exchange.status.is_some() {
        let response_headers = headers_json(&redactor.redact_headers(&exchange.response_headers));
        attrs.push(
            key::LLMTAP_RESPONSE_HEADERS,
            AttrValue::Str(response_headers),
        );
    }
}

/// `error.type`: the transport failure class, else the provider's error type, else the status.
fn error_type(exchange: &Exchange, facts: Option<&ResponseFacts>) -> Option<String> {
    match &exchange.outcome {
        Outcome::UpstreamError { kind, .. } => return Some(kind.clone()),
        Outcome::Refused { kind, .. } => return Some((*kind).to_string()),
        Outcome::Timeout { side } => return Some(format!("{side}_timeout")),
        Outcome::Shutdown => return Some("shutdown".to_string()),
        _ => {}
    }
    if let Some(kind) = facts.and_then(|f| f.error_type.clone()) {
        return Some(kind);
    }
    match exchange.status {
        Some(status) if status >= 400 => Some(status.to_string()),
        Some(_) => None,
        None => Some(exchange.outcome.as_str().to_owned()),
    }
}

/// `HTTP/1.1` → `1.1`, `HTTP/2` or `HTTP/2.0` → `2` (the semantic-convention spelling).
fn protocol_version(version: &str) -> Option<&str> {
    let bare = version.strip_prefix("HTTP/").unwrap_or(version);
    let bare = match bare {
        "2.0" => "2",
        "3.0" => "3",
        other => other,
    };
    (!bare.is_empty()).then_some(bare)
}

fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Redacted headers as a JSON object string (lower-case names, repeated headers joined by ", ").
fn headers_json(headers: &[(String, String)]) -> String {
    let mut map = serde_json::Map::new();
    let mut size = 2;
    let mut omitted = 0usize;
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        let value = cut_with_ellipsis(value, MAX_HEADER_VALUE_BYTES);
        let cost = escaped_len(&name) + escaped_len(&value) + 6;
        if size + cost > MAX_HEADERS_JSON_BYTES - 64 {
            omitted += 1;
            continue;
        }
        size += cost;
        match map.get_mut(&name) {
            Some(serde_json::Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            _ => {
                map.insert(name, serde_json::Value::String(value));
            }
        }
    }
    if omitted > 0 {
        map.insert(
            OMITTED_HEADERS_KEY.to_owned(),
            serde_json::Value::from(omitted),
        );
    }
    serde_json::Value::Object(map).to_string()
}

fn attributes_size(attrs: &[(&'static str, AttrValue)]) -> usize {
    attrs.iter().map(|(k, v)| k.len() + v.size_hint()).sum()
}

pub(super) fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A body as it will be logged: decoded, redacted text (before fitting to the record size).
#[derive(Debug)]
struct LoggedBody {
    /// Decoded bytes, kept for the request parser.
    decoded: Option<Vec<u8>>,
    text: String,
    truncated: bool,
    decode_error: Option<String>,
}

impl LoggedBody {
    fn decode(body: &CapturedBody, ctx: &RecordContext<'_>) -> LoggedBody {
        let encoding = body.content_encoding.as_deref();
        match decode_body(encoding, &body.bytes, ctx.body_decode_limit) {
            Ok((decoded, cut)) => {
                let truncated = body.truncated || cut;
                let lossy = String::from_utf8_lossy(&decoded);
                // Drop the partial token at a cut first: a key split there would escape the patterns.
                let whole = if truncated {
                    strip_trailing_token(&lossy)
                } else {
                    &lossy
                };
                let text = ctx.redactor.redact_text(whole).into_owned();
                LoggedBody {
                    decoded: Some(decoded),
                    text,
                    truncated,
                    decode_error: None,
                }
            }
            Err(error) => LoggedBody {
                decoded: None,
                text: String::new(),
                truncated: true,
                decode_error: Some(error.to_string()),
            },
        }
    }
}

/// Serialized shape of the log body.
#[derive(Serialize)]
struct BodyDoc<'a> {
    request: BodyPart<'a>,
    response: BodyPart<'a>,
}

#[derive(Serialize)]
struct BodyPart<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
    truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    decode_error: Option<&'a str>,
}

impl<'a> BodyPart<'a> {
    fn new(logged: &'a LoggedBody, text: &'a str, trimmed: bool) -> BodyPart<'a> {
        BodyPart {
            body: logged.decode_error.is_none().then_some(text),
            truncated: logged.truncated || trimmed,
            decode_error: logged.decode_error.as_deref(),
        }
    }
}

/// The final log body and the flags it implies.
struct Fitted {
    body: String,
    request_truncated: bool,
    response_truncated: bool,
    trimmed: bool,
}

/// Protobuf bytes around one attribute's key and value (KeyValue, AnyValue: tags and lengths).
const ATTRIBUTE_FRAMING: usize = 16;
/// Protobuf bytes of a record besides attributes and body text: timestamps, severity, body framing.
const RECORD_FRAMING: usize = 64;

/// Boolean attributes still to be added after fitting (truncated ×2, trimmed), counted up front.
const FLAG_ATTRS_SIZE: usize = key::LLMTAP_REQUEST_BODY_TRUNCATED.len()
    + key::LLMTAP_RESPONSE_BODY_TRUNCATED.len()
    + key::LLMTAP_RECORD_TRIMMED.len()
    + 3 * 5;

/// Serializes the bodies, trimming them (fairly) so body + attributes ≤ `max_record_bytes`
/// and the body (the Loki line) ≤ `max_record_bytes` × 1000/1024.
fn fit_bodies(
    request: LoggedBody,
    response: LoggedBody,
    attrs_size: usize,
    max_record_bytes: usize,
) -> Fitted {
    let skeleton = render(&request, "", false, &response, "", false);
    let record_room = max_record_bytes.saturating_sub(attrs_size + FLAG_ATTRS_SIZE);
    // Loki reads `max_line_size: 256KB` as 256,000 bytes: the line alone stays within
    // 1000/1024 of the record bound, so equal numbers on both sides (KiB here, KB there) fit.
    let line_room = max_record_bytes / 1024 * 1000;
    let budget = record_room.min(line_room).saturating_sub(skeleton.len());
    let request_len = escaped_len(&request.text);
    let response_len = escaped_len(&response.text);
    let (request_budget, response_budget) = share(budget, request_len, response_len);
    let request_text = cut_fitting(&request.text, request_len, request_budget);
    let response_text = cut_fitting(&response.text, response_len, response_budget);
    let request_trimmed = request_text.len() < request.text.len();
    let response_trimmed = response_text.len() < response.text.len();
    let body = render(
        &request,
        request_text,
        request_trimmed,
        &response,
        response_text,
        response_trimmed,
    );
    Fitted {
        body,
        request_truncated: request.truncated || request_trimmed,
        response_truncated: response.truncated || response_trimmed,
        trimmed: request_trimmed || response_trimmed,
    }
}

fn render(
    request: &LoggedBody,
    request_text: &str,
    request_trimmed: bool,
    response: &LoggedBody,
    response_text: &str,
    response_trimmed: bool,
) -> String {
    let doc = BodyDoc {
        request: BodyPart::new(request, request_text, request_trimmed),
        response: BodyPart::new(response, response_text, response_trimmed),
    };
    // Serializing plain strings and bools cannot fail; an empty object is still valid JSON.
    serde_json::to_string(&doc).unwrap_or_else(|_| "{}".to_owned())
}

/// `s` whole when its escaped length (already known) fits, else cut to the budget.
fn cut_fitting(s: &str, escaped: usize, budget: usize) -> &str {
    if escaped <= budget {
        s
    } else {
        cut_escaped(s, budget)
    }
}

/// Splits `budget` between two lengths: each gets half, and what one leaves unused goes to the other.
fn share(budget: usize, a: usize, b: usize) -> (usize, usize) {
    if a + b <= budget {
        return (a, b);
    }
    let half = budget / 2;
    if a <= half {
        (a, budget - a)
    } else if b <= half {
        (budget - b, b)
    } else {
        (budget - half, half)
    }
}

/// Bytes `s` takes inside a JSON string, exactly as serde_json escapes it.
/// Byte-wise: only ASCII bytes are ever escaped, and a UTF-8 sequence counts its own length.
fn escaped_len(s: &str) -> usize {
    s.bytes().map(escaped_byte_len).sum()
}

fn escaped_byte_len(b: u8) -> usize {
    match b {
        b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
        b if b < 0x20 => 6,
        _ => 1,
    }
}

fn escaped_char_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{08}' | '\u{0c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// Longest prefix of `s`, cut on a char boundary, whose JSON-escaped size is ≤ `budget`.
fn cut_escaped(s: &str, budget: usize) -> &str {
    // Escaping never shrinks text: a body no longer than the budget in escaped form needs no walk.
    if s.len() <= budget && escaped_len(s) <= budget {
        return s;
    }
    let mut used = 0;
    for (at, c) in s.char_indices() {
        used += escaped_char_len(c);
        if used > budget {
            return &s[..at];
        }
    }
    s
}

/// `s` cut on a char boundary to at most `max` bytes, with `…` marking the cut.
pub(super) fn cut_with_ellipsis(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub(ELLIPSIS.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ELLIPSIS}", &s[..end])
}

/// `s` without a trailing run of token characters (bounded), i.e. whatever the cut split.
fn strip_trailing_token(s: &str) -> &str {
    let is_token = |c: char| c.is_ascii_alphanumeric() || "-_+/=.~".contains(c);
    let mut end = s.len();
    for (at, c) in s.char_indices().rev().take(MAX_TRAILING_TOKEN) {
        if !is_token(c) {
            break;
        }
        end = at;
    }
    &s[..end]
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
#[path = "record_tests.rs"]
mod tests;
