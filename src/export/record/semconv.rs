//! The semantic-convention attributes of a call record: HTTP, GenAI and llmtap's own, each
//! capped, redacted where it can carry a secret, and left out when unknown.

use std::borrow::Cow;

use crate::capture::{Exchange, Outcome};
use crate::export::attributes as key;
use crate::providers::{ApiShape, RequestFacts, ResponseFacts};
use crate::redact::Redactor;

use super::headers::headers_json;
use super::{AttrValue, Attrs, MAX_SHORT_BYTES, cut_with_ellipsis, saturating_i64};

/// Cap on `url.full`: long enough for any real API URL, short enough for structured metadata.
const MAX_URL_BYTES: usize = 4 * 1024;
/// Cap on the provider's error message.
const MAX_ERROR_MESSAGE_BYTES: usize = 4 * 1024;

pub(super) fn http_attributes<'a>(
    attrs: &mut Attrs<'a>,
    exchange: &'a Exchange,
    redactor: &Redactor,
) {
    attrs.short(key::HTTP_REQUEST_METHOD, Some(&exchange.method));
    let url = redactor.redact_url(&exchange.url);
    attrs.text(key::URL_FULL, Some(url), MAX_URL_BYTES);
    let path = redactor.redact_text(&exchange.path);
    attrs.text(key::URL_PATH, Some(path), MAX_URL_BYTES);
    attrs.short(key::SERVER_ADDRESS, Some(&exchange.host));
    attrs.int(key::SERVER_PORT, Some(i64::from(exchange.port)));
    let client = exchange.client_addr.ip().to_string();
    attrs.text(
        key::CLIENT_ADDRESS,
        Some(Cow::Owned(client)),
        MAX_SHORT_BYTES,
    );
    // Logged only while the allowlist says user-agent is safe, like the headers attribute.
    if redactor.is_safe_header("user-agent") {
        let agent = header(&exchange.request_headers, "user-agent");
        let agent = agent.map(|ua| redactor.redact_text(ua));
        attrs.text(key::USER_AGENT_ORIGINAL, agent, MAX_SHORT_BYTES);
    }
    let version = protocol_version(&exchange.http_version);
    attrs.short(key::NETWORK_PROTOCOL_VERSION, version);
    attrs.int(
        key::HTTP_RESPONSE_STATUS_CODE,
        exchange.status.map(i64::from),
    );
    let facts = exchange.response_facts.as_ref();
    attrs.text(
        key::ERROR_TYPE,
        error_type(exchange, facts),
        MAX_SHORT_BYTES,
    );
    let message = match &exchange.outcome {
        Outcome::UpstreamError { message, .. } | Outcome::Refused { message, .. } => {
            Some(message.as_str())
        }
        _ => facts.and_then(|f| f.error_message.as_deref()),
    };
    let message = message.map(|m| redactor.redact_text(m));
    let max = MAX_ERROR_MESSAGE_BYTES;
    attrs.text(key::LLMTAP_ERROR_MESSAGE, message, max);
}

/// `request` holds the request's facts; `model` is its model, borrowed when the facts are
/// the exchange's own.
pub(super) fn genai_attributes<'a>(
    attrs: &mut Attrs<'a>,
    exchange: &'a Exchange,
    shape: ApiShape,
    request: &RequestFacts,
    model: Option<Cow<'a, str>>,
) {
    attrs.short(key::GEN_AI_PROVIDER_NAME, exchange.provider.as_deref());
    attrs.short(key::GEN_AI_OPERATION_NAME, shape.operation_name());
    attrs.text(key::GEN_AI_REQUEST_MODEL, model, MAX_SHORT_BYTES);
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

fn response_attributes<'a>(attrs: &mut Attrs<'a>, facts: &'a ResponseFacts) {
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

pub(super) fn llmtap_attributes<'a>(
    attrs: &mut Attrs<'a>,
    exchange: &'a Exchange,
    redactor: &Redactor,
) {
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
    let request_headers = headers_json(redactor, &exchange.request_headers);
    attrs.push(
        key::LLMTAP_REQUEST_HEADERS,
        AttrValue::Str(request_headers.into()),
    );
    if exchange.status.is_some() {
        let response_headers = headers_json(redactor, &exchange.response_headers);
        attrs.push(
            key::LLMTAP_RESPONSE_HEADERS,
            AttrValue::Str(response_headers.into()),
        );
    }
}

/// `error.type`: the transport failure class, else the provider's error type, else the status.
fn error_type<'a>(
    exchange: &'a Exchange,
    facts: Option<&'a ResponseFacts>,
) -> Option<Cow<'a, str>> {
    match &exchange.outcome {
        Outcome::UpstreamError { kind, .. } => return Some(Cow::Borrowed(kind)),
        Outcome::Refused { kind, .. } => return Some(Cow::Borrowed(kind)),
        Outcome::Timeout { side } => return Some(Cow::Owned(format!("{side}_timeout"))),
        Outcome::Shutdown => return Some(Cow::Borrowed("shutdown")),
        _ => {}
    }
    if let Some(kind) = facts.and_then(|f| f.error_type.as_deref()) {
        return Some(Cow::Borrowed(kind));
    }
    match exchange.status {
        Some(status) if status >= 400 => Some(Cow::Owned(status.to_string())),
        Some(_) => None,
        None => Some(Cow::Borrowed(exchange.outcome.as_str())),
    }
}

/// `HTTP/1.1` → `1.1`, `HTTP/2` or `HTTP/2.0` → `2` (the semantic-convention spelling).
pub(super) fn protocol_version(version: &str) -> Option<&str> {
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
