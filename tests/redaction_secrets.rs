//! No secret reaches the exported bytes (issue 9, item 6).
//!
//! Exchanges whose request and response bodies (JSON, gzip-encoded JSON, SSE, a capture cut in
//! the middle of a key), headers and URL carry one real-shaped, made-up sample of every secret
//! family the shipped `addons-config/redaction.toml` knows are exported through a real OTLP/HTTP
//! receiver (plain and gzip) and through the stdout JSON-lines writer. The raw exported bytes —
//! the protobuf request bodies, gunzipped, and the stdout bytes — are scanned for every sample;
//! the non-secret parts (model names, usage numbers, a visible canary) must survive, and the
//! logged bodies must still be the JSON documents they were.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/exchange.rs"]
mod kit;
#[path = "common/otlp_receiver.rs"]
mod otlp_receiver;

use bytes::Bytes;
use kit::body;
use llmtap::capture::{CapturedBody, Exchange};
use llmtap::export::attributes as key;
use llmtap::export::stdout::SharedWriter;
use llmtap::export::{ExportConfig, ExportFlags, ExportHandle};
use llmtap::providers::{ApiShape, ResponseParser};
use llmtap::redact::{RedactionConfig, Redactor};
use otlp_receiver::{OtlpReceiver, Val, payload};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// Text that is no secret and must reach the export unchanged (proves the scan sees the text).
const CANARY: &str = "visible-canary-text-4242";
const MODEL: &str = "claude-sonnet-4-5";
const RESPONSE_MODEL: &str = "claude-sonnet-4-5-20250929";

/// One made-up sample per family, shaped like the real thing (none of these is a live key).
const SAMPLES: &[(&str, &str)] = &[
    ("github classic", "ghp_u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8d"),
    ("github oauth", "gho_KLzdocJ2isAjIhKtJ0RlgLKOmxgJTeKdNnFR"),
    (
        "github fine-grained",
        "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",
    ),
    ("gitlab", "glpat-UdjAWtGSU8po_799Nksn"),
    ("gitlab deploy", "gldt-Qm8Ld2Vr6Tp1Xs9Hn4Kw"),
    (
        "slack bot",
        "xoxb-313735379907-5116372651676-V8fUkkibjL5DZPjN0MEQ7wjJ",
    ),
    (
        "slack app",
        "xapp-1-A9IBAG7I1MN-0434839548620-bed440e50454f31af3176813e02ea68ef786e4d3cea27d26934b484e73cf575d",
    ),
    ("stripe secret", "sk_live_GzvAmwufUxbvJDCTbyvHNsG9"),
    ("stripe restricted", "rk_live_eh6Yo4gfqrc5XlrWi0B26R08"),
    ("aws access key id", "AKIATT7NS26LRWBQCAB6"),
    (
        "google oauth",
        "ya29.zFalHlsZfYcMMDktXP-tKsf2rcDkdfrUnW5gcF_Ha6ili8GjHEAD6-Wj9KfzjsQGMrb9h_ImB_LK777pzNk8cL6j5IXAAjlsHUqJ",
    ),
    ("google api key", "AIzaoUD-_Ydua_5ZMs1SWOpQaPRYpzbLGViYXjU"),
    (
        "jwt",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IlRlc3QgVXNlciIsImlhdCI6MTUxNjIzOTAyMn0.28_ajY75FnCttn6kfaqDeMqG3omjMyXHCabM6JOF8EF",
    ),
    (
        "anthropic",
        "sk-ant-api03-Qq1Ww2Ee3Rr4Tt5Yy6Uu7Ii8Oo9Pp0_-Aa1Ss2Dd3Ff4Gg5Hh6Jj7Kk8Ll9ZzXxCcVvBbNnMmQQ",
    ),
    (
        "openai",
        "sk-proj-Lm90Kn87Jo65Ip43Hq21Gr09Fs87Et65Du43Cv21Bw09Ax87_-ZyXwVuTsRq",
    ),
];

/// An AWS secret access key: secret only next to its name, so it is always written with one.
const AWS_SECRET: &str = "zrZSgqbjG3uhkWKFLf6xuI5aHUQPFeNBTxaQWk8J";

/// The base64 lines of a PEM private key (made-up bytes).
const PEM_LINES: [&str; 3] = [
    "d0Nhcy/1kGD2VD/eR1UYzaLiA/zNyD7CHLn/xC+1hsYgBds1ghxY5OokvQyx7eNW",
    "VQ4vnakJkS1pAWTN3lg8zV5yPU8d0FZfWe7ihGyiRUIQfHOJMaidDn87XG3/q/xb",
    "MtEPO6UkzYuF0ie9Pu2njHkAm1/5wDr16EpLLJIVGHz4FxFEtKyPiYGFDm7ena8D",
];

/// JSON fields whose names mark their string values as secrets (values are not key-shaped).
const FIELDS: &[(&str, &str)] = &[
    ("anthropic_api_key", "field-value-anthropic-7Q2xLp"),
    ("refreshToken", "field-value-refresh-9Vb3Nm"),
    ("client_secret", "field-value-client-4Kd8Rt"),
    ("db_password", "field-value-password-2Hs6Wq"),
];

fn pem(label: &str, newline: &str) -> String {
    let mut out = format!("-----BEGIN {label}-----{newline}");
    for line in PEM_LINES {
        out.push_str(line);
        out.push_str(newline);
    }
    out.push_str(&format!("-----END {label}-----"));
    out
}

/// Every string that must not appear in any exported byte: each sample whole and its tail,
/// each PEM line, each field value, the AWS secret.
fn needles() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (family, sample) in SAMPLES {
        out.push(((*family).to_owned(), (*sample).to_owned()));
        out.push((
            format!("{family} (tail)"),
            sample[sample.len() - 16..].to_owned(),
        ));
    }
    for (i, line) in PEM_LINES.iter().enumerate() {
        out.push((format!("pem line {i}"), line[..16].to_owned()));
    }
    for (name, value) in FIELDS {
        out.push((format!("json field {name}"), (*value).to_owned()));
    }
    out.push(("aws secret access key".into(), AWS_SECRET[..20].to_owned()));
    out
}

/// Prose carrying every sample once, the way a prompt or an answer would, in pieces: one
/// line each, a PEM block whole.
fn prose_pieces() -> Vec<String> {
    let mut pieces = vec![format!("Here is what I found ({CANARY}):\n")];
    for (family, sample) in SAMPLES {
        pieces.push(format!("- {family}: {sample}\n"));
    }
    pieces.push("[default]\n".to_owned());
    pieces.push(format!("aws_secret_access_key = {AWS_SECRET}\n"));
    pieces.push(pem("RSA PRIVATE KEY", "\n"));
    pieces.push("\nand the same key as it sat in a JSON file: ".to_owned());
    // Literal backslash-n, as in a service-account file pasted as text.
    pieces.push(pem("PRIVATE KEY", r"\n"));
    pieces.push("\nDone.".to_owned());
    pieces
}

fn prose() -> String {
    prose_pieces().concat()
}

fn secret_fields() -> Value {
    let mut fields = serde_json::Map::new();
    for (name, value) in FIELDS {
        fields.insert((*name).to_owned(), Value::String((*value).to_owned()));
    }
    Value::Object(fields)
}

fn request_json() -> String {
    json!({
        "model": MODEL,
        "max_tokens": 64,
        "metadata": secret_fields(),
        "messages": [{"role": "user", "content": prose()}],
        "tools": [{"name": "deploy", "input_schema": {"type": "object"}}],
    })
    .to_string()
}

fn response_json() -> String {
    json!({
        "id": "msg_01XyZ",
        "type": "message",
        "role": "assistant",
        "model": RESPONSE_MODEL,
        "content": [
            {"type": "text", "text": prose()},
            {"type": "tool_use", "id": "toolu_01", "name": "deploy", "input": secret_fields()},
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 1234, "output_tokens": 567},
    })
    .to_string()
}

/// The same answer as an Anthropic event stream; each sample sits whole in one delta (a
/// secret split across deltas is out of reach of text patterns: see the README).
fn response_sse() -> String {
    let mut events = vec![json!({
        "type": "message_start",
        "message": {"id": "msg_02", "type": "message", "role": "assistant", "model": RESPONSE_MODEL,
                    "content": [], "usage": {"input_tokens": 1234, "output_tokens": 1}},
    })];
    events.push(json!({"type": "content_block_start", "index": 0,
                       "content_block": {"type": "text", "text": ""}}));
    for line in prose_pieces() {
        events.push(json!({"type": "content_block_delta", "index": 0,
                           "delta": {"type": "text_delta", "text": line}}));
    }
    events.push(json!({"type": "content_block_stop", "index": 0}));
    events.push(json!({"type": "content_block_start", "index": 1,
                       "content_block": {"type": "tool_use", "id": "toolu_02", "name": "deploy", "input": {}}}));
    events.push(json!({"type": "content_block_delta", "index": 1,
                       "delta": {"type": "input_json_delta", "partial_json": secret_fields().to_string()}}));
    events.push(json!({"type": "content_block_stop", "index": 1}));
    events.push(
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                       "usage": {"output_tokens": 567}}),
    );
    events.push(json!({"type": "message_stop"}));
    let mut text = String::new();
    for event in events {
        let name = event["type"].as_str().unwrap().to_owned();
        text.push_str(&format!("event: {name}\ndata: {event}\n\n"));
    }
    text
}

fn gzip(text: &str) -> Bytes {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(text.as_bytes()).unwrap();
    Bytes::from(encoder.finish().unwrap())
}

/// Headers with every sample: allowlisted ones (scrubbed by the patterns) and others
/// (replaced whole).
fn headers(content_type: &str, side: &str) -> Vec<(String, String)> {
    let mut headers = vec![
        ("content-type".to_owned(), content_type.to_owned()),
        (
            "user-agent".to_owned(),
            format!("agent/1.0 ({CANARY}) {}", SAMPLES[0].1),
        ),
        (
            "authorization".to_owned(),
            format!("Bearer {}", SAMPLES[1].1),
        ),
        ("x-api-key".to_owned(), SAMPLES[13].1.to_owned()),
    ];
    // `x-stainless-*` (request) and `x-ratelimit-*` (response) are on the allowlist.
    let safe = if side == "request" {
        "x-stainless"
    } else {
        "x-ratelimit"
    };
    for (i, (_, sample)) in SAMPLES.iter().enumerate() {
        headers.push((format!("{safe}-sample-{i}"), format!("v={sample}")));
        headers.push((format!("x-custom-sample-{i}"), (*sample).to_owned()));
    }
    headers.push((
        format!("{safe}-aws"),
        format!("aws_secret_access_key={AWS_SECRET}"),
    ));
    headers.push((format!("{safe}-pem"), pem("EC PRIVATE KEY", r"\n")));
    headers
}

fn response_facts(
    shape: ApiShape,
    content_type: &str,
    text: &str,
) -> llmtap::providers::ResponseFacts {
    let mut parser = ResponseParser::new(shape, Some(content_type), None, 200);
    parser.feed(text.as_bytes());
    parser.finish(true)
}

fn exchange(id: u64) -> Exchange {
    let request = request_json();
    let url = format!(
        "https://api.anthropic.com/v1/messages?beta=true&note={}&key={}",
        SAMPLES[2].1, SAMPLES[11].1
    );
    let mut exchange = kit::call(id);
    exchange.url = url;
    exchange.request_headers = headers("application/json", "request");
    exchange.response_headers = headers("application/json", "response");
    exchange.request_body = body(&request);
    exchange.response_body = body(&response_json());
    exchange.client_name = Some("redaction-test".into());
    match id % 3 {
        // JSON in, JSON out.
        0 => {}
        // gzip-encoded request, SSE response.
        1 => {
            let sse = response_sse();
            exchange.request_body = CapturedBody {
                bytes: gzip(&request),
                total_len: request.len() as u64,
                truncated: false,
                content_encoding: Some("gzip".into()),
            };
            exchange.response_headers = headers("text/event-stream", "response");
            exchange.response_body = body(&sse);
        }
        // Both captures cut by the cap: inside the PEM block, inside a field value.
        _ => {
            let cut_at = request.find(&PEM_LINES[1][..8]).unwrap() + 8;
            exchange.request_body = CapturedBody {
                bytes: Bytes::copy_from_slice(&request.as_bytes()[..cut_at]),
                total_len: request.len() as u64,
                truncated: true,
                content_encoding: None,
            };
            let response = response_json();
            let cut_at = response.find("field-value-client").unwrap() + 14;
            exchange.response_body = CapturedBody {
                bytes: Bytes::copy_from_slice(&response.as_bytes()[..cut_at]),
                total_len: response.len() as u64,
                truncated: true,
                content_encoding: None,
            };
        }
    }
    // The proxy parses the whole request and response as they pass, whatever the capture kept.
    exchange.request_facts = Some(llmtap::providers::parse_request(
        exchange.shape,
        &exchange.path,
        request.as_bytes(),
    ));
    let content_type = if id % 3 == 1 {
        "text/event-stream"
    } else {
        "application/json"
    };
    let full_response = if id % 3 == 1 {
        response_sse()
    } else {
        response_json()
    };
    exchange.response_facts = Some(response_facts(exchange.shape, content_type, &full_response));
    exchange
}

const CALLS: u64 = 3;

fn config_for(vars: &[(&str, String)]) -> ExportConfig {
    let vars: HashMap<&str, String> = vars.iter().cloned().collect();
    let mut config =
        ExportConfig::from_env_and_flags(&|name| vars.get(name).cloned(), &ExportFlags::default())
            .unwrap();
    config.batch.max_delay = Duration::from_millis(20);
    config
}

fn redactor() -> Arc<Redactor> {
    Arc::new(Redactor::new(&RedactionConfig::default()).unwrap())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Fails on the first secret found in `bytes`, naming the family and where it was.
fn assert_no_secret(bytes: &[u8], what: &str) {
    assert!(
        contains(bytes, CANARY.as_bytes()),
        "{what}: the canary is missing, so the scan proves nothing"
    );
    let mut leaks = Vec::new();
    for (family, needle) in needles() {
        if contains(bytes, needle.as_bytes()) {
            leaks.push(format!("{family} ({needle})"));
        }
    }
    assert!(leaks.is_empty(), "{what}: secrets survived: {leaks:#?}");
    assert!(
        contains(bytes, b"[REDACTED]"),
        "{what}: nothing was redacted"
    );
}

/// The logged request body of a complete JSON call must still parse, with the names kept.
fn check_logged_request(doc: &Value) {
    let text = doc["request"]["body"].as_str().expect("request body text");
    let request: Value = serde_json::from_str(text).expect("the redacted request is still JSON");
    assert_eq!(request["model"], MODEL);
    assert_eq!(request["max_tokens"], 64);
    for (name, _) in FIELDS {
        assert_eq!(request["metadata"][name], "[REDACTED]", "{name}");
    }
    let content = request["messages"][0]["content"].as_str().unwrap();
    assert!(content.contains(CANARY), "{content}");
    assert!(
        content.contains("aws_secret_access_key = [REDACTED]"),
        "{content}"
    );
}

fn check_logged_response(doc: &Value) {
    let text = doc["response"]["body"]
        .as_str()
        .expect("response body text");
    let response: Value = serde_json::from_str(text).expect("the redacted response is still JSON");
    assert_eq!(response["model"], RESPONSE_MODEL);
    assert_eq!(response["usage"]["input_tokens"], 1234);
    assert_eq!(response["usage"]["output_tokens"], 567);
    assert_eq!(response["content"][1]["input"]["db_password"], "[REDACTED]");
}

fn check_logged_sse(doc: &Value) {
    let text = doc["response"]["body"]
        .as_str()
        .expect("response body text");
    for data in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        let event: Value = serde_json::from_str(data).expect("each redacted event is still JSON");
        if event["type"] == "message_delta" {
            assert_eq!(event["usage"]["output_tokens"], 567);
        }
        if let Some(partial) = event["delta"]["partial_json"].as_str() {
            let input: Value = serde_json::from_str(partial).unwrap();
            assert_eq!(input["anthropic_api_key"], "[REDACTED]");
        }
    }
}

#[tokio::test]
async fn no_secret_reaches_the_otlp_bytes() {
    for compression in ["none", "gzip"] {
        let receiver = OtlpReceiver::start().await;
        let config = config_for(&[
            ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", receiver.endpoint()),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", compression.to_owned()),
        ]);
        let handle = ExportHandle::start(config, redactor()).unwrap();
        for id in 0..CALLS {
            handle.submit(exchange(id));
        }
        let records = receiver.wait_for_records(CALLS as usize, WAIT).await;
        let stats = handle.shutdown(WAIT).await;
        assert_eq!(stats.exported, CALLS, "{stats:?}");
        let hits = receiver.hits();
        if compression == "gzip" {
            assert!(hits.iter().all(|h| h.headers["content-encoding"] == "gzip"));
        }
        let mut all = Vec::new();
        for hit in &hits {
            all.extend(payload(&hit.headers, &hit.raw));
        }
        assert_no_secret(&all, &format!("OTLP protobuf ({compression})"));

        for received in &records {
            let attrs = received.attrs();
            let id = match attrs[key::LLMTAP_EXCHANGE_ID] {
                Val::Int(id) => id,
                ref other => panic!("exchange id {other:?}"),
            };
            assert_eq!(attrs[key::GEN_AI_REQUEST_MODEL], Val::Str(MODEL.into()));
            assert_eq!(
                attrs[key::GEN_AI_RESPONSE_MODEL],
                Val::Str(RESPONSE_MODEL.into())
            );
            assert_eq!(attrs[key::GEN_AI_REQUEST_MAX_TOKENS], Val::Int(64));
            assert_eq!(attrs[key::GEN_AI_USAGE_INPUT_TOKENS], Val::Int(1234));
            assert_eq!(attrs[key::GEN_AI_USAGE_OUTPUT_TOKENS], Val::Int(567));
            let doc: Value = serde_json::from_str(&received.body()).unwrap();
            match id % 3 {
                0 => {
                    check_logged_request(&doc);
                    check_logged_response(&doc);
                }
                1 => {
                    check_logged_request(&doc);
                    check_logged_sse(&doc);
                }
                _ => assert_eq!(doc["request"]["truncated"], true),
            }
        }
    }
}

/// A `Write` that keeps everything, for the stdout sink.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_secret_reaches_the_stdout_lines() {
    let buffer = Buffer::default();
    let writer: SharedWriter = Arc::new(Mutex::new(Box::new(buffer.clone())));
    let handle = ExportHandle::start_with_writer(config_for(&[]), redactor(), writer).unwrap();
    for id in 0..CALLS {
        handle.submit(exchange(id));
    }
    let stats = handle.shutdown(WAIT).await;
    assert_eq!(stats.exported, CALLS, "{stats:?}");
    let bytes = buffer.0.lock().unwrap().clone();
    assert_no_secret(&bytes, "stdout JSON lines");

    let text = String::from_utf8(bytes).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), CALLS as usize);
    for line in &lines {
        let attrs = &line["attributes"];
        assert_eq!(attrs[key::GEN_AI_REQUEST_MODEL], MODEL);
        assert_eq!(attrs[key::GEN_AI_USAGE_INPUT_TOKENS], 1234);
        assert_eq!(attrs[key::GEN_AI_USAGE_OUTPUT_TOKENS], 567);
        let headers: Value =
            serde_json::from_str(attrs[key::LLMTAP_REQUEST_HEADERS].as_str().unwrap()).unwrap();
        assert_eq!(headers["x-custom-sample-0"], "[REDACTED]");
        assert_eq!(headers["x-stainless-sample-0"], "v=[REDACTED]");
        assert!(headers["user-agent"].as_str().unwrap().contains(CANARY));
        let id = attrs[key::LLMTAP_EXCHANGE_ID].as_i64().unwrap();
        let doc = &line["body"];
        match id % 3 {
            0 => {
                check_logged_request(doc);
                check_logged_response(doc);
            }
            1 => {
                check_logged_request(doc);
                check_logged_sse(doc);
            }
            _ => {
                assert_eq!(doc["request"]["truncated"], true);
                assert_eq!(doc["response"]["truncated"], true);
            }
        }
    }
}
