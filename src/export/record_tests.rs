use super::body::strip_trailing_token;
use super::fit::{cut_escaped, escaped_len, share};
use super::headers::headers_json;
use super::semconv::protocol_version;
use super::*;
use crate::capture::CapturedBody;
use crate::export::attributes::ALL;
use crate::providers::{ApiShape, ResponseFacts, Usage, UsageSource};
use crate::redact::RedactionConfig;
use bytes::Bytes;
use std::net::SocketAddr;
use std::time::UNIX_EPOCH;

const ANTHROPIC_KEY: &str =
    "sk-ant-api03-Qw3rTy9UiOpAsDfGhJkLzXcVbNm1234567890_-QwErTyUiOpAsDfGhJkLzXcVbNmAA";
const GOOGLE_KEY: &str = "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY";

fn redactor() -> Redactor {
    Redactor::new(&RedactionConfig::default()).unwrap()
}

fn body(text: &str) -> CapturedBody {
    CapturedBody::complete(text)
}

fn anthropic_exchange() -> Exchange {
    let facts = ResponseFacts {
        model: Some("claude-sonnet-4-5-20250929".into()),
        id: Some("msg_1".into()),
        finish_reasons: vec!["end_turn".into()],
        usage: Usage {
            input_tokens: Some(120),
            output_tokens: Some(0),
            cache_read_input_tokens: Some(100),
            cache_creation_input_tokens: Some(0),
            reasoning_output_tokens: None,
        },
        usage_source: UsageSource::Response,
        error_type: None,
        error_message: None,
        is_stream: false,
    };
    let mut exchange = Exchange::sample();
    exchange.id = 7;
    exchange.started_at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    exchange.client_addr = "10.1.2.3:5555".parse::<SocketAddr>().unwrap();
    exchange.request_headers.extend([
        ("x-api-key".into(), ANTHROPIC_KEY.into()),
        ("User-Agent".into(), "claude-cli/1.0".into()),
    ]);
    exchange.request_body =
        body(r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"stream":false,"messages":[]}"#);
    exchange.response_body =
        body(r#"{"id":"msg_1","model":"claude-sonnet-4-5-20250929","stop_reason":"end_turn"}"#);
    exchange.time_to_first_byte = Some(Duration::from_millis(300));
    exchange.time_to_first_chunk = Some(Duration::from_millis(350));
    exchange.duration = Duration::from_millis(1500);
    exchange.response_facts = Some(facts);
    exchange
}

fn build(exchange: &Exchange, max_record_bytes: usize) -> LogRecordData<'_> {
    let redactor = redactor();
    let ctx = RecordContext {
        redactor: &redactor,
        max_record_bytes,
        body_decode_limit: max_record_bytes * 2,
    };
    build_record(exchange, &ctx)
}

fn str_attr<'a>(record: &'a LogRecordData, key: &str) -> Option<&'a str> {
    record.attribute(key).and_then(AttrValue::as_str)
}

fn body_doc(record: &LogRecordData) -> serde_json::Value {
    serde_json::from_str(&record.body).unwrap()
}

#[test]
fn severity_table() {
    let upstream = Outcome::UpstreamError {
        kind: "connect".into(),
        message: "refused".into(),
    };
    let cases = [
        (Some(101), Outcome::Complete, Severity::Info),
        (Some(200), Outcome::Complete, Severity::Info),
        (Some(304), Outcome::Complete, Severity::Info),
        (Some(200), Outcome::ClientAborted, Severity::Info),
        (Some(400), Outcome::Complete, Severity::Warn),
        (Some(429), Outcome::Complete, Severity::Warn),
        (Some(499), Outcome::Complete, Severity::Warn),
        (Some(500), Outcome::Complete, Severity::Error),
        (Some(529), Outcome::Complete, Severity::Error),
        (Some(200), upstream.clone(), Severity::Error),
        (None, upstream, Severity::Error),
        (None, Outcome::ClientAborted, Severity::Error),
    ];
    for (status, outcome, want) in cases {
        assert_eq!(
            Severity::for_exchange(status, &outcome),
            want,
            "{status:?} {outcome:?}"
        );
    }
    assert_eq!(
        (
            Severity::Info.number(),
            Severity::Warn.number(),
            Severity::Error.number()
        ),
        (9, 13, 17)
    );
}

#[test]
fn full_record_for_a_json_call() {
    let exchange = anthropic_exchange();
    let record = build(&exchange, 256 * 1024);
    assert_eq!(
        record.timestamp,
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    );
    assert_eq!(record.severity, Severity::Info);
    assert_eq!(
        record.event_name,
        "gen_ai.client.inference.operation.details"
    );
    let expect_str = [
        (key::HTTP_REQUEST_METHOD, "POST"),
        (key::URL_FULL, "https://api.anthropic.com/v1/messages"),
        (key::URL_PATH, "/v1/messages"),
        (key::SERVER_ADDRESS, "api.anthropic.com"),
        (key::CLIENT_ADDRESS, "10.1.2.3"),
        (key::USER_AGENT_ORIGINAL, "claude-cli/1.0"),
        (key::NETWORK_PROTOCOL_VERSION, "1.1"),
        (key::GEN_AI_PROVIDER_NAME, "anthropic"),
        (key::GEN_AI_OPERATION_NAME, "chat"),
        (key::GEN_AI_REQUEST_MODEL, "claude-sonnet-4-5"),
        (key::GEN_AI_RESPONSE_MODEL, "claude-sonnet-4-5-20250929"),
        (key::GEN_AI_RESPONSE_ID, "msg_1"),
        (key::LLMTAP_OUTCOME, "complete"),
        (key::LLMTAP_USAGE_SOURCE, "response"),
    ];
    for (k, v) in expect_str {
        assert_eq!(str_attr(&record, k), Some(v), "{k}");
    }
    let expect = [
        (key::SERVER_PORT, AttrValue::Int(443)),
        (key::HTTP_RESPONSE_STATUS_CODE, AttrValue::Int(200)),
        (key::GEN_AI_REQUEST_MAX_TOKENS, AttrValue::Int(1024)),
        (key::GEN_AI_REQUEST_STREAM, AttrValue::Bool(false)),
        (key::GEN_AI_USAGE_INPUT_TOKENS, AttrValue::Int(120)),
        // A known zero is written; only unknown values are left out.
        (key::GEN_AI_USAGE_OUTPUT_TOKENS, AttrValue::Int(0)),
        (
            key::GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
            AttrValue::Int(100),
        ),
        (
            key::GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,
            AttrValue::Int(0),
        ),
        (
            key::GEN_AI_RESPONSE_FINISH_REASONS,
            AttrValue::StrArray(vec!["end_turn".into()]),
        ),
        (key::LLMTAP_DURATION, AttrValue::Double(1.5)),
        (key::LLMTAP_TIME_TO_FIRST_BYTE, AttrValue::Double(0.3)),
        (key::LLMTAP_EXCHANGE_ID, AttrValue::Int(7)),
        (key::LLMTAP_REQUEST_BODY_TRUNCATED, AttrValue::Bool(false)),
        (key::LLMTAP_RESPONSE_BODY_TRUNCATED, AttrValue::Bool(false)),
        (key::LLMTAP_RECORD_TRIMMED, AttrValue::Bool(false)),
    ];
    for (k, v) in expect {
        assert_eq!(record.attribute(k), Some(&v), "{k}");
    }
    for absent in [
        key::GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
        key::ERROR_TYPE,
        key::LLMTAP_ERROR_MESSAGE,
        key::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
        // Not identified: left out, never "".
        key::LLMTAP_CLIENT_NAME,
        key::LLMTAP_CLIENT_PROFILE,
    ] {
        assert_eq!(record.attribute(absent), None, "{absent}");
    }
    let headers: serde_json::Value =
        serde_json::from_str(str_attr(&record, key::LLMTAP_REQUEST_HEADERS).unwrap()).unwrap();
    assert_eq!(headers["x-api-key"], "[REDACTED]");
    assert_eq!(headers["user-agent"], "claude-cli/1.0");
    let doc = body_doc(&record);
    assert_eq!(doc["request"]["truncated"], false);
    assert!(
        doc["request"]["body"]
            .as_str()
            .unwrap()
            .contains("claude-sonnet-4-5")
    );
    assert!(
        doc["response"]["body"]
            .as_str()
            .unwrap()
            .contains("end_turn")
    );
}

#[test]
fn every_key_is_declared() {
    let mut exchange = anthropic_exchange();
    exchange.outcome = Outcome::UpstreamError {
        kind: "body".into(),
        message: "reset".into(),
    };
    if let Some(facts) = exchange.response_facts.as_mut() {
        facts.is_stream = true;
        facts.usage.reasoning_output_tokens = Some(5);
    }
    exchange.client_name = Some("code-sandbox".into());
    exchange.client_profile = Some("code".into());
    let record = build(&exchange, 256 * 1024);
    for (k, _) in &record.attributes {
        assert!(ALL.contains(k), "{k} missing from attributes::ALL");
    }
    let mut keys: Vec<_> = record.attributes.iter().map(|(k, _)| *k).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), record.attributes.len(), "duplicate keys");
    assert!(record.attributes.len() < 64);
}

#[test]
fn client_identity_is_recorded_and_capped() {
    let mut exchange = anthropic_exchange();
    exchange.client_name = Some("code-sandbox".into());
    exchange.client_profile = Some("code".into());
    let record = build(&exchange, 256 * 1024);
    assert_eq!(
        str_attr(&record, key::LLMTAP_CLIENT_NAME),
        Some("code-sandbox")
    );
    assert_eq!(str_attr(&record, key::LLMTAP_CLIENT_PROFILE), Some("code"));
    assert_eq!(record.event_name, key::EVENT_INFERENCE_DETAILS);
    // The user name of the proxy credentials is the client's to choose.
    exchange.client_name = Some("n".repeat(50_000));
    let record = build(&exchange, 256 * 1024);
    let name = str_attr(&record, key::LLMTAP_CLIENT_NAME).unwrap();
    assert!(name.len() <= MAX_SHORT_BYTES && name.ends_with('…'));
}

#[test]
fn provider_and_shape_come_from_the_exchange() {
    // The exporter reads what the proxy decided; host and path are not looked at again.
    let mut exchange = anthropic_exchange();
    exchange.provider = Some("azure.ai.openai".into());
    exchange.shape = ApiShape::OpenAiChat;
    exchange.request_body = body(r#"{"model":"gpt-5","messages":[]}"#);
    let record = build(&exchange, 256 * 1024);
    assert_eq!(
        str_attr(&record, key::GEN_AI_PROVIDER_NAME),
        Some("azure.ai.openai")
    );
    assert_eq!(str_attr(&record, key::GEN_AI_OPERATION_NAME), Some("chat"));
    assert_eq!(str_attr(&record, key::GEN_AI_REQUEST_MODEL), Some("gpt-5"));
}

#[test]
fn stream_gets_time_to_first_chunk() {
    let mut exchange = anthropic_exchange();
    exchange.request_body = body(r#"{"model":"m","stream":true}"#);
    exchange.provider = None;
    let record = build(&exchange, 256 * 1024);
    assert_eq!(
        record.attribute(key::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK),
        Some(&AttrValue::Double(0.35))
    );
    assert_eq!(record.attribute(key::GEN_AI_PROVIDER_NAME), None);
}

#[test]
fn transport_error_leaves_unknowns_out() {
    let mut exchange = anthropic_exchange();
    exchange.status = None;
    exchange.response_headers.clear();
    exchange.response_body = CapturedBody::default();
    exchange.response_facts = None;
    exchange.time_to_first_byte = None;
    exchange.outcome = Outcome::UpstreamError {
        kind: "connect".into(),
        message: "connection refused".into(),
    };
    let record = build(&exchange, 256 * 1024);
    assert_eq!(record.severity, Severity::Error);
    assert_eq!(str_attr(&record, key::ERROR_TYPE), Some("connect"));
    assert_eq!(
        str_attr(&record, key::LLMTAP_ERROR_MESSAGE),
        Some("connection refused")
    );
    for absent in [
        key::HTTP_RESPONSE_STATUS_CODE,
        key::GEN_AI_RESPONSE_MODEL,
        key::GEN_AI_RESPONSE_ID,
        key::GEN_AI_RESPONSE_FINISH_REASONS,
        key::GEN_AI_USAGE_INPUT_TOKENS,
        key::GEN_AI_USAGE_OUTPUT_TOKENS,
        key::LLMTAP_USAGE_SOURCE,
        key::LLMTAP_TIME_TO_FIRST_BYTE,
        key::LLMTAP_RESPONSE_HEADERS,
        key::LLMTAP_RESPONSE_BODY_SIZE,
    ] {
        assert_eq!(record.attribute(absent), None, "{absent}");
    }
    for (k, v) in &record.attributes {
        assert_ne!(v, &AttrValue::Str("".into()), "{k} is empty");
    }
}

#[test]
fn error_type_precedence() {
    let mut exchange = anthropic_exchange();
    exchange.status = Some(429);
    if let Some(facts) = exchange.response_facts.as_mut() {
        facts.error_type = Some("rate_limit_error".into());
        facts.error_message = Some(format!("slow down, key {ANTHROPIC_KEY}"));
    }
    let record = build(&exchange, 256 * 1024);
    assert_eq!(record.severity, Severity::Warn);
    assert_eq!(str_attr(&record, key::ERROR_TYPE), Some("rate_limit_error"));
    assert_eq!(
        str_attr(&record, key::LLMTAP_ERROR_MESSAGE),
        Some("slow down, key [REDACTED]")
    );

    exchange.status = Some(502);
    exchange.response_facts = None;
    let record = build(&exchange, 256 * 1024);
    assert_eq!(str_attr(&record, key::ERROR_TYPE), Some("502"));

    exchange.status = None;
    exchange.outcome = Outcome::ClientAborted;
    let record = build(&exchange, 256 * 1024);
    assert_eq!(str_attr(&record, key::ERROR_TYPE), Some("client_aborted"));
}

#[test]
fn unknown_shape_has_http_facts_only() {
    let mut exchange = anthropic_exchange();
    exchange.path = "/v1/models".into();
    exchange.url = "https://api.anthropic.com/v1/models".into();
    exchange.shape = ApiShape::Unknown;
    exchange.response_facts = None;
    let record = build(&exchange, 256 * 1024);
    assert_eq!(record.attribute(key::GEN_AI_OPERATION_NAME), None);
    assert_eq!(record.attribute(key::GEN_AI_REQUEST_MODEL), None);
    assert_eq!(
        str_attr(&record, key::GEN_AI_PROVIDER_NAME),
        Some("anthropic")
    );
}

#[test]
fn keys_leave_no_trace() {
    let mut exchange = anthropic_exchange();
    exchange.url = format!(
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent?key={GOOGLE_KEY}"
    );
    exchange
        .request_headers
        .push(("authorization".into(), format!("Bearer {ANTHROPIC_KEY}")));
    exchange
        .request_headers
        .push(("x-goog-api-key".into(), GOOGLE_KEY.into()));
    exchange
        .request_headers
        .push(("user-agent".into(), format!("agent key={ANTHROPIC_KEY}")));
    exchange.request_body = body(&format!(
        r#"{{"model":"m","api_key":"{ANTHROPIC_KEY}","note":"{GOOGLE_KEY}"}}"#
    ));
    exchange.response_body = body(&format!(
        "data: {{\"echo\":\"Bearer {ANTHROPIC_KEY}\"}}\n\n"
    ));
    exchange
        .response_headers
        .push(("set-cookie".into(), format!("k={GOOGLE_KEY}")));
    let record = build(&exchange, 256 * 1024);
    let mut everything = record.body.clone();
    for (_, value) in &record.attributes {
        everything.push_str(&format!("{value:?}"));
    }
    for secret in [
        ANTHROPIC_KEY,
        GOOGLE_KEY,
        &ANTHROPIC_KEY[..24],
        &GOOGLE_KEY[4..20],
    ] {
        assert!(
            !everything.contains(secret),
            "{secret} leaked: {everything}"
        );
    }
    assert!(
        str_attr(&record, key::URL_FULL)
            .unwrap()
            .ends_with("?key=[REDACTED]")
    );
}

#[test]
fn key_split_by_the_capture_cap_leaves_no_fragment() {
    let mut exchange = anthropic_exchange();
    let text = format!(r#"{{"model":"m","prompt":"here: {ANTHROPIC_KEY}"}}"#);
    let cut = text.find("sk-ant-").unwrap() + 11; // "sk-ant-api0" — too short for the pattern
    exchange.request_body = CapturedBody {
        bytes: Bytes::copy_from_slice(&text.as_bytes()[..cut]),
        total_len: text.len() as u64,
        truncated: true,
        content_encoding: None,
    };
    let record = build(&exchange, 256 * 1024);
    let doc = body_doc(&record);
    let logged = doc["request"]["body"].as_str().unwrap();
    assert!(logged.ends_with("here: "), "{logged}");
    assert_eq!(doc["request"]["truncated"], true);
    assert_eq!(
        record.attribute(key::LLMTAP_REQUEST_BODY_TRUNCATED),
        Some(&AttrValue::Bool(true))
    );
    assert_eq!(
        record.attribute(key::LLMTAP_RECORD_TRIMMED),
        Some(&AttrValue::Bool(false))
    );
}

#[test]
fn undecodable_body_is_explained() {
    let mut exchange = anthropic_exchange();
    exchange.response_body.content_encoding = Some("x-unknown".into());
    let record = build(&exchange, 256 * 1024);
    let doc = body_doc(&record);
    assert!(doc["response"].get("body").is_none());
    assert!(
        doc["response"]["decode_error"]
            .as_str()
            .unwrap()
            .contains("x-unknown")
    );
    assert_eq!(doc["response"]["truncated"], true);
}

fn assert_fits(record: &LogRecordData, max: usize) {
    assert!(
        record.size_hint() <= max,
        "record {} > {max}",
        record.size_hint()
    );
}

#[test]
fn big_bodies_are_trimmed_to_fit() {
    for (request_len, response_len) in [
        (1_000_000, 1_000_000),
        (10, 2_000_000),
        (900_000, 50),
        (140_000, 140_000),
    ] {
        let mut exchange = anthropic_exchange();
        exchange.request_body = body(&"a".repeat(request_len));
        exchange.response_body = body(&"b".repeat(response_len));
        let max = 256 * 1024;
        let record = build(&exchange, max);
        assert_fits(&record, max);
        assert_eq!(
            record.attribute(key::LLMTAP_RECORD_TRIMMED),
            Some(&AttrValue::Bool(true))
        );
        let doc = body_doc(&record);
        let logged_request = doc["request"]["body"].as_str().unwrap().len();
        let logged_response = doc["response"]["body"].as_str().unwrap().len();
        // Fair split: a small body is kept whole, the rest of the room goes to the other.
        if request_len < 1000 {
            assert_eq!(logged_request, request_len);
        }
        if response_len < 1000 {
            assert_eq!(logged_response, response_len);
        }
        assert!(
            logged_request + logged_response > max - 16 * 1024,
            "room wasted"
        );
        let request_trimmed = logged_request < request_len;
        let response_trimmed = logged_response < response_len;
        assert_eq!(
            record.attribute(key::LLMTAP_REQUEST_BODY_TRUNCATED),
            Some(&AttrValue::Bool(request_trimmed))
        );
        assert_eq!(
            record.attribute(key::LLMTAP_RESPONSE_BODY_TRUNCATED),
            Some(&AttrValue::Bool(response_trimmed))
        );
        assert_eq!(doc["request"]["truncated"], request_trimmed);
    }
}

#[test]
fn escaping_and_multibyte_text_still_fits() {
    let nasty = "\"\\\n\u{1}é😀漢".repeat(60_000);
    let mut exchange = anthropic_exchange();
    exchange.request_body = body(&nasty);
    exchange.response_body = body(&nasty);
    for max in [64 * 1024, 100_003, 256 * 1024] {
        let record = build(&exchange, max);
        assert_fits(&record, max);
        let doc = body_doc(&record);
        let logged = doc["request"]["body"].as_str().unwrap();
        assert!(nasty.starts_with(logged));
        assert!(logged.len() > 1000);
    }
}

#[test]
fn attributes_stay_small() {
    let mut exchange = anthropic_exchange();
    exchange.url = format!(
        "https://api.anthropic.com/v1/messages?q={}",
        "x".repeat(100_000)
    );
    for i in 0..500 {
        exchange
            .request_headers
            .push((format!("x-stainless-h{i}"), "v".repeat(2000)));
    }
    if let Some(facts) = exchange.response_facts.as_mut() {
        facts.error_message = Some("e".repeat(100_000));
        facts.finish_reasons = vec!["r".repeat(5000); 3];
    }
    let record = build(&exchange, 256 * 1024);
    let attributes_size: usize = record
        .attributes
        .iter()
        .map(|(k, v)| k.len() + v.size_hint())
        .sum();
    assert!(attributes_size < 48 * 1024, "{attributes_size}");
    let headers: serde_json::Value =
        serde_json::from_str(str_attr(&record, key::LLMTAP_REQUEST_HEADERS).unwrap()).unwrap();
    assert!(headers["llmtap.omitted_headers"].as_u64().unwrap() > 400);
    assert!(str_attr(&record, key::URL_FULL).unwrap().ends_with('…'));
}

#[test]
fn headers_json_joins_repeats() {
    let json = headers_json(
        &redactor(),
        &[
            ("Accept".into(), "a".into()),
            ("accept".into(), "b".into()),
            ("X-Request-Id".into(), "r1".into()),
        ],
    );
    assert_eq!(json, r#"{"accept":"a, b","x-request-id":"r1"}"#);
}

#[test]
fn helpers() {
    assert_eq!(share(100, 10, 500), (10, 90));
    assert_eq!(share(100, 500, 10), (90, 10));
    assert_eq!(share(100, 500, 500), (50, 50));
    assert_eq!(share(101, 500, 500), (51, 50));
    assert_eq!(share(100, 30, 40), (30, 40));
    assert_eq!(cut_escaped("a\"b", 2), "a");
    assert_eq!(cut_escaped("a\"b", 3), "a\"");
    assert_eq!(cut_escaped("é", 1), "");
    assert_eq!(cut_with_ellipsis("ééé", 5), "é…");
    assert_eq!(strip_trailing_token("see sk-ant-ap"), "see ");
    assert_eq!(strip_trailing_token("abc"), "");
    assert_eq!(escaped_len("\u{1}\t😀"), 6 + 2 + 4);
    for (raw, want) in [
        ("HTTP/1.1", Some("1.1")),
        ("HTTP/2", Some("2")),
        ("HTTP/2.0", Some("2")),
        ("", None),
    ] {
        assert_eq!(protocol_version(raw), want);
    }
}

#[test]
fn a_request_parse_that_stopped_says_why() {
    let mut exchange = anthropic_exchange();
    assert!(
        build(&exchange, 256 * 1024)
            .attribute(key::LLMTAP_REQUEST_BODY_PARSE_STOPPED)
            .is_none()
    );
    exchange.request_facts = Some(RequestFacts {
        stopped: Some(crate::providers::ParseStop::RatioLimit),
        ..Default::default()
    });
    let r = build(&exchange, 256 * 1024);
    assert_eq!(
        str_attr(&r, key::LLMTAP_REQUEST_BODY_PARSE_STOPPED),
        Some("ratio_limit")
    );
}

/// The headers JSON as it was written before it was written in one pass: redacted pairs put
/// in a serde_json map.
fn reference_headers_json(redactor: &Redactor, headers: &[(String, String)]) -> String {
    let mut map = serde_json::Map::new();
    let mut size = 2;
    let mut omitted = 0usize;
    for (name, value) in redactor.redact_headers(headers) {
        let name = name.to_ascii_lowercase();
        let value = cut_with_ellipsis(&value, 1024).into_owned();
        let cost = escaped_len(&name) + escaped_len(&value) + 6;
        if size + cost > 12 * 1024 - 64 {
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
        let count = serde_json::Value::from(omitted);
        map.insert("llmtap.omitted_headers".to_owned(), count);
    }
    serde_json::Value::Object(map).to_string()
}

/// The body document as serde_json wrote it before, from these structs.
fn reference_body<'a>(parts: [(&'a LoggedBody<'a>, &'a str, bool); 2]) -> String {
    #[derive(serde::Serialize)]
    struct BodyDoc<'a> {
        request: BodyPart<'a>,
        response: BodyPart<'a>,
    }
    #[derive(serde::Serialize)]
    struct BodyPart<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        body: Option<&'a str>,
        truncated: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        decode_error: Option<&'a str>,
    }
    let part = |(logged, text, trimmed): (&'a LoggedBody, &'a str, bool)| BodyPart {
        body: logged.decode_error.is_none().then_some(text),
        truncated: logged.truncated || trimmed,
        decode_error: logged.decode_error.as_deref(),
    };
    serde_json::to_string(&BodyDoc {
        request: part(parts[0]),
        response: part(parts[1]),
    })
    .unwrap()
}

fn header_strategy() -> impl proptest::strategy::Strategy<Value = Vec<(String, String)>> {
    use proptest::prelude::*;
    let name = prop_oneof![
        proptest::sample::select(
            &[
                "Accept",
                "accept",
                "user-agent",
                "User-Agent",
                "x-api-key",
                "llmtap.omitted_headers",
                "llmtap.a",
                "llmtap.z",
                "a",
                "z",
                "x-ratelimit-limit",
                "X-Stainless-Os",
                "cookie",
            ][..]
        )
        .prop_map(str::to_owned),
        "[A-Za-z0-9.-]{1,12}",
    ];
    let value = prop_oneof![
        ".{0,30}",
        Just(format!("tool/1 key={ANTHROPIC_KEY}")),
        Just("\"quoted\\\u{1}\n\t".to_owned()),
        (0usize..3000).prop_map(|n| "v".repeat(n)),
        (0usize..600).prop_map(|n| "é".repeat(n)),
    ];
    let one = (name, value);
    prop_oneof![
        proptest::collection::vec(one.clone(), 0..12),
        proptest::collection::vec(one, 20..120),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

    #[test]
    fn headers_json_is_what_the_map_gave(headers in header_strategy()) {
        let redactor = redactor();
        proptest::prop_assert_eq!(
            headers_json(&redactor, &headers),
            reference_headers_json(&redactor, &headers)
        );
    }

    #[test]
    fn body_document_is_what_serde_gave(
        texts in proptest::collection::vec(".{0,40}|[\u{0}-\u{7f}]{0,40}", 2),
        flags in proptest::collection::vec(proptest::prelude::any::<bool>(), 4),
        errors in proptest::collection::vec(proptest::option::of(".{0,20}"), 2),
    ) {
        let logged: Vec<LoggedBody> = (0..2)
            .map(|i| LoggedBody {
                decoded: None,
                text: std::borrow::Cow::Borrowed(""),
                truncated: flags[i],
                decode_error: errors[i].clone(),
            })
            .collect();
        let parts = [0, 1].map(|i| (&logged[i], texts[i].as_str(), flags[i + 2]));
        proptest::prop_assert_eq!(super::body::render(parts[0], parts[1], 0), reference_body(parts));
    }

    #[test]
    fn escaping_is_serde_json_escaping(text in ".{0,64}|[\u{0}-\u{7f}]{0,64}") {
        let mut ours = String::new();
        super::fit::push_json_str(&mut ours, &text);
        proptest::prop_assert_eq!(&ours, &serde_json::to_string(&text).unwrap());
        proptest::prop_assert_eq!(ours.len(), escaped_len(&text) + 2);
    }
}

#[test]
fn every_ascii_byte_escapes_as_serde_json_does() {
    for byte in 0u8..=0x7f {
        let text = char::from(byte).to_string();
        let mut ours = String::new();
        super::fit::push_json_str(&mut ours, &text);
        assert_eq!(ours, serde_json::to_string(&text).unwrap(), "{byte:#x}");
    }
}

#[test]
fn an_unencoded_body_is_borrowed_not_copied() {
    let exchange = anthropic_exchange();
    let redactor = redactor();
    let ctx = RecordContext {
        redactor: &redactor,
        max_record_bytes: 256 * 1024,
        body_decode_limit: 1024,
    };
    let logged = LoggedBody::decode(&exchange.response_body, &ctx);
    assert!(matches!(logged.text, std::borrow::Cow::Borrowed(_)));
    assert!(matches!(
        logged.decoded,
        Some(std::borrow::Cow::Borrowed(_))
    ));
    let record = build_record(&exchange, &ctx);
    let url = record.attribute(key::URL_FULL).unwrap();
    assert!(matches!(url, AttrValue::Str(std::borrow::Cow::Borrowed(_))));
    // The decode limit cuts a borrowed body as the identity decoder cut it.
    let short = RecordContext {
        body_decode_limit: 5,
        ..ctx
    };
    let cut = LoggedBody::decode(&exchange.response_body, &short);
    let (decoded, limited) =
        crate::providers::decode::decode_body(None, &exchange.response_body.bytes, 5).unwrap();
    assert_eq!(cut.decoded.as_deref(), Some(decoded.as_slice()));
    assert!(limited && cut.truncated);
}
