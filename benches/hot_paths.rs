//! Criterion micro-benchmarks of llmtap's hot paths: SSE parsing, usage extraction (JSON),
//! request facts, redaction, record building (calls and egress decisions), OTLP encoding, and
//! the two together for one call (`export/build_and_encode_1kb`).
//!
//! `cargo bench --bench hot_paths` (add `-- --quick` for a short run).

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use llmtap::audit::{EgressDecision, EgressRecord};
use llmtap::capture::{CapturedBody, Exchange};
use llmtap::export::build_egress_record;
use llmtap::export::otlp::{encode_body, encode_request};
use llmtap::export::record::{RecordContext, build_record};
use llmtap::providers::{ApiShape, ResponseParser, parse_request};
use llmtap::redact::{RedactionConfig, Redactor};

const REQUEST: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"stream":false,"system":"You are a concise assistant.","messages":[{"role":"user","content":"Summarise the following benchmark note in one sentence. Summarise the following benchmark note in one sentence. Summarise the following benchmark note in one sentence. Summarise the following benchmark note in one sentence. Summarise the following benchmark note in one sentence. Summarise the following benchmark note in one sentence. Summarise the following benchmark note in one sentence."}]}"#;

fn json_response() -> String {
    let text = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor. "
        .repeat(8);
    format!(
        r#"{{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{{"type":"text","text":"{text}"}}],"stop_reason":"end_turn","stop_sequence":null,"usage":{{"input_tokens":125,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":160,"service_tier":"standard"}}}}"#
    )
}

/// An Anthropic stream: head events, `n` deltas, tail; one element per network chunk.
fn sse_chunks(n: usize) -> Vec<Vec<u8>> {
    let mut out = vec![concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":125,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\ndata: {\"type\":\"ping\"}\n\n"
    )
    .as_bytes()
    .to_vec()];
    for i in 0..n {
        out.push(format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"word{i} \"}}}}\n\n").into_bytes());
    }
    out.push(format!(
        "event: content_block_stop\ndata: {{\"type\":\"content_block_stop\",\"index\":0}}\n\nevent: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{}}}}}\n\nevent: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n",
        n + 1
    ).into_bytes());
    out
}

fn headers() -> Vec<(String, String)> {
    [
        ("host", "api.anthropic.com"),
        ("content-type", "application/json"),
        ("x-api-key", "sk-ant-api03-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA-AAAAAAAA"),
        ("anthropic-version", "2023-06-01"),
        ("user-agent", "Anthropic/JS 0.60.0"),
        ("accept", "application/json"),
        ("x-stainless-lang", "js"),
        ("x-stainless-runtime", "node"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn exchange(response: &str) -> Exchange {
    let mut parser = ResponseParser::new(
        ApiShape::AnthropicMessages,
        Some("application/json"),
        None,
        200,
    );
    parser.feed(response.as_bytes());
    let mut exchange = Exchange::sample();
    exchange.request_headers = headers();
    exchange
        .response_headers
        .push(("request-id".into(), "req_01".into()));
    exchange.request_body = CapturedBody::complete(REQUEST);
    exchange.response_body = CapturedBody::complete(response);
    exchange.time_to_first_byte = Some(Duration::from_millis(300));
    exchange.time_to_first_chunk = Some(Duration::from_millis(301));
    exchange.duration = Duration::from_millis(320);
    exchange.request_facts = Some(parse_request(
        ApiShape::AnthropicMessages,
        "/v1/messages",
        REQUEST.as_bytes(),
    ));
    exchange.response_facts = Some(parser.finish(true));
    exchange.client_name = Some("code-sandbox".into());
    exchange.client_profile = Some("code".into());
    exchange
}

fn egress() -> EgressRecord {
    EgressRecord {
        started_at: SystemTime::now(),
        decision: EgressDecision::Deny,
        reason: "code-sandbox (profile code): no rule allows example.com:443".into(),
        route: "tunnel",
        error_type: Some("policy".into()),
        client_name: Some("code-sandbox".into()),
        client_profile: Some("code".into()),
        client_addr: "172.30.2.5:40123"
            .parse()
            .unwrap_or_else(|_| unreachable!()),
        server_address: "example.com".into(),
        server_port: 443,
        peer_addr: None,
        bytes_sent: 0,
        bytes_received: 0,
        duration: Duration::from_millis(1),
    }
}

fn providers(c: &mut Criterion) {
    let chunks = sse_chunks(50);
    let total: usize = chunks.iter().map(Vec::len).sum();
    let mut g = c.benchmark_group("providers");
    g.throughput(Throughput::Bytes(total as u64));
    g.bench_function("anthropic_sse_50_events", |b| {
        b.iter(|| {
            let mut p = ResponseParser::new(
                ApiShape::AnthropicMessages,
                Some("text/event-stream; charset=utf-8"),
                None,
                200,
            );
            for ch in &chunks {
                p.feed(black_box(ch));
            }
            black_box(p.finish(true))
        })
    });
    let json = json_response();
    g.throughput(Throughput::Bytes(json.len() as u64));
    g.bench_function("anthropic_json_usage_1kb", |b| {
        b.iter(|| {
            let mut p = ResponseParser::new(
                ApiShape::AnthropicMessages,
                Some("application/json"),
                None,
                200,
            );
            p.feed(black_box(json.as_bytes()));
            black_box(p.finish(true))
        })
    });
    g.throughput(Throughput::Bytes(REQUEST.len() as u64));
    g.bench_function("request_facts", |b| {
        b.iter(|| {
            black_box(parse_request(
                ApiShape::AnthropicMessages,
                "/v1/messages",
                black_box(REQUEST.as_bytes()),
            ))
        })
    });
    g.finish();
}

fn redaction(c: &mut Criterion) {
    let redactor =
        Redactor::new(&RedactionConfig::default()).unwrap_or_else(|e| panic!("redactor: {e}"));
    let hs = headers();
    let clean = json_response();
    let dirty = format!("{clean} sk-ant-api03-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let mut g = c.benchmark_group("redact");
    g.bench_function("headers_8", |b| {
        b.iter(|| black_box(redactor.redact_headers(black_box(&hs))))
    });
    g.throughput(Throughput::Bytes(clean.len() as u64));
    g.bench_function("text_1kb_clean", |b| {
        b.iter(|| black_box(redactor.redact_text(black_box(&clean)).len()))
    });
    g.bench_function("text_1kb_with_key", |b| {
        b.iter(|| black_box(redactor.redact_text(black_box(&dirty)).len()))
    });
    g.bench_function("url", |b| {
        b.iter(|| black_box(redactor.redact_url(black_box("https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro:generateContent?key=AIzaSyA-secret&alt=sse")).len()))
    });
    g.finish();
}

fn export(c: &mut Criterion) {
    let redactor =
        Redactor::new(&RedactionConfig::default()).unwrap_or_else(|e| panic!("redactor: {e}"));
    let ctx = RecordContext {
        redactor: &redactor,
        max_record_bytes: 256 * 1024,
        body_decode_limit: 1024 * 1024,
    };
    let ex = exchange(&json_response());
    let mut g = c.benchmark_group("export");
    g.bench_function("build_record_1kb", |b| {
        b.iter(|| black_box(build_record(black_box(&ex), &ctx)))
    });
    let resource = vec![("service.name".to_string(), "llmtap".to_string())];
    // What the export worker does per call: the record, then its protobuf in the batch buffer.
    g.bench_function("build_and_encode_1kb", |b| {
        b.iter(|| {
            let record = build_record(black_box(&ex), &ctx);
            black_box(encode_request(&resource, std::slice::from_ref(&record)).len())
        })
    });
    let decision = egress();
    g.bench_function("build_egress_record", |b| {
        b.iter(|| black_box(build_egress_record(black_box(&decision))))
    });
    let records: Vec<_> = (0..512).map(|_| build_record(&ex, &ctx)).collect();
    g.throughput(Throughput::Elements(records.len() as u64));
    g.bench_function("encode_batch_512", |b| {
        b.iter(|| black_box(encode_request(&resource, black_box(&records)).len()))
    });
    g.bench_function("encode_batch_512_gzip", |b| {
        b.iter_batched(
            || (),
            |_| {
                black_box(
                    encode_body(&resource, &records, true)
                        .map(|b| b.len())
                        .unwrap_or(0),
                )
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, providers, redaction, export);
criterion_main!(benches);
