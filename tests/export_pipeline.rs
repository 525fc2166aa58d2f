//! The export pipeline against a real OTLP/HTTP receiver: batching, retries, drops, shutdown,
//! redaction, and egress (audit) records next to call records.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/exchange.rs"]
mod kit;
#[path = "common/otlp_receiver.rs"]
mod otlp_receiver;

use kit::{body, call as exchange};
use llmtap::audit::{EgressDecision, EgressRecord};
use llmtap::capture::{ExchangeSink, Outcome};
use llmtap::export::attributes as key;
use llmtap::export::stdout::SharedWriter;
use llmtap::export::{ExportConfig, ExportFlags, ExportHandle, ExportStats};
use llmtap::redact::{RedactionConfig, Redactor};
use otlp_receiver::{OtlpReceiver, Reply, Val, down_endpoint};
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

const WAIT: Duration = Duration::from_secs(10);
const ANTHROPIC_KEY: &str =
    "sk-ant-api03-Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2Rr1Qq0Pp_-Oo9Nn8Mm7Ll6Kk5Jj4Ii3Hh2Gg1Ff0EeDdCcBbAaAA";
const GOOGLE_KEY: &str = "AIzaSyB-1cD2eF3gH4iJ5kL6mN7oP8qR9sT0uVw";

fn config_for(endpoint: Option<&str>) -> ExportConfig {
    let vars: HashMap<&str, String> = endpoint
        .map(|e| ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", e.to_owned()))
        .into_iter()
        .chain([(
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=test".to_owned(),
        )])
        .collect();
    let mut config =
        ExportConfig::from_env_and_flags(&|name| vars.get(name).cloned(), &ExportFlags::default())
            .unwrap();
    // Fast timings so failures play out in milliseconds.
    config.batch.max_delay = Duration::from_millis(20);
    config.retry.initial_backoff = Duration::from_millis(20);
    config.retry.max_backoff = Duration::from_millis(80);
    config.retry.max_attempts = 4;
    config.retry.request_timeout = Duration::from_millis(500);
    config
}

fn start(config: ExportConfig) -> ExportHandle {
    let redactor = Arc::new(Redactor::new(&RedactionConfig::default()).unwrap());
    ExportHandle::start(config, redactor).unwrap()
}

/// A report-mode denial of a tunnel, as the proxy would submit it.
fn egress(port: u16) -> EgressRecord {
    EgressRecord {
        started_at: SystemTime::now(),
        decision: EgressDecision::WouldDeny,
        reason: "code-sandbox (profile code): no rule allows example.com:443".into(),
        route: "tunnel",
        error_type: Some("policy".into()),
        client_name: Some("code-sandbox".into()),
        client_profile: Some("code".into()),
        client_addr: "172.30.2.5:40123".parse().unwrap(),
        server_address: "example.com".into(),
        server_port: port,
        peer_addr: Some("93.184.215.14:443".parse().unwrap()),
        bytes_sent: 517,
        bytes_received: 4096,
        duration: Duration::from_millis(250),
    }
}

/// Polls the stats until `done` holds (panics after WAIT).
async fn wait_stats(handle: &ExportHandle, done: impl Fn(&ExportStats) -> bool) -> ExportStats {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = handle.stats();
        if done(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "stats never settled: {stats:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn records_arrive_with_resource_scope_and_attributes() {
    let receiver = OtlpReceiver::start().await;
    let handle = start(config_for(Some(&receiver.endpoint())));
    for id in 1..=3 {
        handle.submit(exchange(id));
    }
    let records = receiver.wait_for_records(3, WAIT).await;
    let first = &records[0];
    assert_eq!(first.resource["service.name"], Val::Str("llmtap".into()));
    assert_eq!(
        first.resource["deployment.environment.name"],
        Val::Str("test".into())
    );
    assert!(matches!(&first.resource["service.instance.id"], Val::Str(id) if id.len() == 36));
    assert!(first.resource.contains_key("service.version"));
    assert_eq!(first.scope_name, "llmtap");
    assert_eq!(first.record.severity_number, 9);
    let attrs = first.attrs();
    assert_eq!(
        attrs[key::GEN_AI_PROVIDER_NAME],
        Val::Str("anthropic".into())
    );
    assert_eq!(
        attrs[key::GEN_AI_REQUEST_MODEL],
        Val::Str("claude-sonnet-4-5".into())
    );
    assert_eq!(attrs[key::HTTP_RESPONSE_STATUS_CODE], Val::Int(200));
    let ids: Vec<Val> = records
        .iter()
        .map(|r| r.attrs()[key::LLMTAP_EXCHANGE_ID].clone())
        .collect();
    assert_eq!(ids, vec![Val::Int(1), Val::Int(2), Val::Int(3)]);
    let doc: serde_json::Value = serde_json::from_str(&first.body()).unwrap();
    assert!(
        doc["request"]["body"]
            .as_str()
            .unwrap()
            .contains("claude-sonnet-4-5")
    );
    let hit = &receiver.hits()[0];
    assert_eq!(hit.path, "/v1/logs");
    assert_eq!(hit.headers["content-type"], "application/x-protobuf");
    let stats = handle.shutdown(WAIT).await;
    assert_eq!(
        (stats.submitted, stats.exported, stats.export_retries),
        (3, 3, 0)
    );
}

#[tokio::test]
async fn batches_respect_the_record_limit() {
    let receiver = OtlpReceiver::start().await;
    let mut config = config_for(Some(&receiver.endpoint()));
    config.batch.max_records = 3;
    config.batch.max_delay = Duration::from_secs(60);
    let handle = start(config);
    for id in 0..10 {
        handle.submit(exchange(id));
    }
    // Three full batches go out at once; the last record waits for the shutdown flush.
    receiver.wait_for_records(9, WAIT).await;
    let stats = handle.shutdown(WAIT).await;
    assert_eq!(stats.exported, 10);
    assert_eq!(receiver.hits().len(), 4);
}

#[tokio::test]
async fn otlp_headers_are_sent() {
    let receiver = OtlpReceiver::start().await;
    let vars: HashMap<&str, String> = [
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{}", receiver.addr),
        ),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "X-Scope-OrgID=team%20a,authorization=Basic abc".to_owned(),
        ),
    ]
    .into_iter()
    .collect();
    let config =
        ExportConfig::from_env_and_flags(&|n| vars.get(n).cloned(), &ExportFlags::default())
            .unwrap();
    let handle = start(config);
    handle.submit(exchange(1));
    let hits = receiver.wait_for_hits(1, WAIT).await;
    assert_eq!(hits[0].path, "/v1/logs");
    assert_eq!(hits[0].headers["x-scope-orgid"], "team a");
    assert_eq!(hits[0].headers["authorization"], "Basic abc");
    handle.shutdown(WAIT).await;
}

#[tokio::test]
async fn gzip_when_asked() {
    let receiver = OtlpReceiver::start().await;
    let vars: HashMap<&str, String> = [
        ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", receiver.endpoint()),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip".to_owned()),
    ]
    .into_iter()
    .collect();
    let config =
        ExportConfig::from_env_and_flags(&|n| vars.get(n).cloned(), &ExportFlags::default())
            .unwrap();
    let handle = start(config);
    let mut call = exchange(1);
    call.request_body = body(&format!(
        r#"{{"model":"m","prompt":"{}"}}"#,
        "hello ".repeat(5000)
    ));
    handle.submit(call);
    let records = receiver.wait_for_records(1, WAIT).await;
    let hit = &receiver.hits()[0];
    assert_eq!(hit.headers["content-encoding"], "gzip");
    assert!(
        hit.raw.len() < 5000,
        "not compressed: {} bytes",
        hit.raw.len()
    );
    assert!(records[0].body().contains("hello hello"));
    handle.shutdown(WAIT).await;
}

#[tokio::test]
async fn server_errors_are_retried_until_success() {
    let receiver = OtlpReceiver::start().await;
    receiver.push_replies([Reply::Status(500), Reply::Status(503)]);
    let handle = start(config_for(Some(&receiver.endpoint())));
    handle.submit(exchange(1));
    receiver.wait_for_records(1, WAIT).await;
    let stats = wait_stats(&handle, |s| s.exported == 1).await;
    assert_eq!(stats.export_retries, 2);
    assert_eq!(stats.dropped_export_failed, 0);
    assert_eq!(receiver.hits().len(), 3);
    handle.shutdown(WAIT).await;
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let receiver = OtlpReceiver::start().await;
    receiver.push_replies([Reply::RetryAfter(429, 1)]);
    let handle = start(config_for(Some(&receiver.endpoint())));
    handle.submit(exchange(1));
    let hits = receiver.wait_for_hits(2, WAIT).await;
    let gap = hits[1].at.duration_since(hits[0].at);
    assert!(
        gap >= Duration::from_millis(950),
        "retried after {gap:?}, asked for 1s"
    );
    receiver.wait_for_records(1, WAIT).await;
    handle.shutdown(WAIT).await;
}

#[tokio::test]
async fn bad_request_is_dropped_without_retry() {
    let receiver = OtlpReceiver::start().await;
    receiver.set_default(Reply::Status(400));
    let handle = start(config_for(Some(&receiver.endpoint())));
    handle.submit(exchange(1));
    handle.submit(exchange(2));
    let stats = wait_stats(&handle, |s| s.dropped_export_failed == 2).await;
    assert_eq!((stats.exported, stats.export_retries), (0, 0));
    // Both went in one batch (or two, if the batch timer split them): never retried.
    let hits = receiver.hits().len();
    assert!((1..=2).contains(&hits), "{hits} requests");
    handle.shutdown(WAIT).await;
}

#[tokio::test]
async fn empty_204_is_success() {
    let receiver = OtlpReceiver::start().await;
    receiver.set_default(Reply::Accept);
    let handle = start(config_for(Some(&receiver.endpoint())));
    handle.submit(exchange(1));
    let stats = wait_stats(&handle, |s| s.exported == 1).await;
    assert_eq!((stats.dropped_export_failed, stats.export_retries), (0, 0));
    handle.shutdown(WAIT).await;
}

#[tokio::test]
async fn receiver_down_costs_the_submitter_nothing() {
    let handle = start(config_for(Some(&down_endpoint())));
    let started = Instant::now();
    for id in 0..100 {
        handle.submit(exchange(id));
    }
    let submit_time = started.elapsed();
    assert!(
        submit_time < Duration::from_millis(200),
        "submitting took {submit_time:?}"
    );
    let stats = wait_stats(&handle, |s| s.dropped_export_failed == 100).await;
    assert_eq!(stats.exported, 0);
    // 4 attempts per batch: 3 retries each.
    assert!(
        stats.export_retries >= 3 && stats.export_retries % 3 == 0,
        "{stats:?}"
    );
    handle.shutdown(WAIT).await;
}

#[tokio::test]
async fn slow_receiver_times_out_then_recovers() {
    let receiver = OtlpReceiver::start().await;
    receiver.set_default(Reply::Stall);
    let mut config = config_for(Some(&receiver.endpoint()));
    config.retry.request_timeout = Duration::from_millis(150);
    config.retry.max_attempts = 2;
    let handle = start(config);
    handle.submit(exchange(1));
    let stats = wait_stats(&handle, |s| s.dropped_export_failed == 1).await;
    assert_eq!(stats.export_retries, 1);
    receiver.set_default(Reply::Accept);
    handle.submit(exchange(2));
    let records = receiver.wait_for_records(1, WAIT).await;
    assert_eq!(records[0].attrs()[key::LLMTAP_EXCHANGE_ID], Val::Int(2));
    handle.shutdown(WAIT).await;
}

#[tokio::test]
async fn full_queue_drops_and_counts() {
    let receiver = OtlpReceiver::start().await;
    receiver.set_default(Reply::Stall);
    let mut config = config_for(Some(&receiver.endpoint()));
    config.queue_capacity = 2;
    config.retry.request_timeout = Duration::from_secs(30);
    let handle = start(config);
    handle.submit(exchange(0));
    // The worker is now stuck in a stalled export: the queue fills behind it.
    receiver.wait_for_hits(1, WAIT).await;
    let sink: Arc<dyn ExchangeSink> = Arc::new(handle.clone());
    for id in 1..=50 {
        sink.submit(exchange(id));
    }
    assert_eq!(sink.stats()["dropped_queue_full"], 48);
    let stats = handle.stats();
    assert_eq!(stats.submitted, 51);
    assert_eq!(stats.dropped_queue_full, 48);
    assert_eq!((stats.queue_capacity, stats.queue_len), (2, 2));
    // Shutdown gives up at the deadline; what never got out is counted, nothing vanishes.
    let started = Instant::now();
    let stats = handle.shutdown(Duration::from_millis(300)).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert_eq!(
        stats.exported
            + stats.dropped_queue_full
            + stats.dropped_export_failed
            + stats.dropped_shutdown,
        51
    );
    assert_eq!(stats.dropped_shutdown, 3);
}

#[tokio::test]
async fn egress_and_call_records_share_the_pipeline() {
    let receiver = OtlpReceiver::start().await;
    let handle = start(config_for(Some(&receiver.endpoint())));
    let sink: Arc<dyn ExchangeSink> = Arc::new(handle.clone());
    let mut call = exchange(1);
    call.client_name = Some("code-sandbox".into());
    call.client_profile = Some("code".into());
    sink.submit_egress(egress(443));
    sink.submit(call);
    let records = receiver.wait_for_records(2, WAIT).await;
    let audit = records
        .iter()
        .find(|r| r.record.event_name == key::EVENT_EGRESS)
        .expect("an llmtap.egress record");
    let call = records
        .iter()
        .find(|r| r.record.event_name == key::EVENT_INFERENCE_DETAILS)
        .expect("a gen_ai.client.inference.operation.details record");

    assert_eq!(audit.record.event_name, "llmtap.egress");
    assert_eq!(
        (
            audit.record.severity_number,
            audit.record.severity_text.as_str()
        ),
        (13, "WARN")
    );
    assert_eq!(audit.resource["service.name"], Val::Str("llmtap".into()));
    let attrs = audit.attrs();
    let expect = [
        (key::LLMTAP_EGRESS_DECISION, Val::Str("would_deny".into())),
        (
            key::LLMTAP_EGRESS_REASON,
            Val::Str("code-sandbox (profile code): no rule allows example.com:443".into()),
        ),
        (key::LLMTAP_EGRESS_ROUTE, Val::Str("tunnel".into())),
        (key::LLMTAP_CLIENT_NAME, Val::Str("code-sandbox".into())),
        (key::LLMTAP_CLIENT_PROFILE, Val::Str("code".into())),
        (key::CLIENT_ADDRESS, Val::Str("172.30.2.5".into())),
        (key::SERVER_ADDRESS, Val::Str("example.com".into())),
        (key::SERVER_PORT, Val::Int(443)),
        (key::NETWORK_PEER_ADDRESS, Val::Str("93.184.215.14".into())),
        (key::NETWORK_PEER_PORT, Val::Int(443)),
        (key::LLMTAP_EGRESS_BYTES_SENT, Val::Int(517)),
        (key::LLMTAP_EGRESS_BYTES_RECEIVED, Val::Int(4096)),
        (key::LLMTAP_DURATION, Val::Double(0.25)),
        (key::ERROR_TYPE, Val::Str("policy".into())),
    ];
    for (k, v) in &expect {
        assert_eq!(attrs.get(*k), Some(v), "{k}");
    }
    assert_eq!(attrs.len(), expect.len(), "{attrs:?}");
    assert!(
        audit
            .body()
            .starts_with("would_deny tunnel code-sandbox -> example.com:443: "),
        "{}",
        audit.body()
    );

    assert_eq!(call.record.severity_number, 9);
    let attrs = call.attrs();
    assert_eq!(
        attrs[key::LLMTAP_CLIENT_NAME],
        Val::Str("code-sandbox".into())
    );
    assert_eq!(attrs[key::LLMTAP_CLIENT_PROFILE], Val::Str("code".into()));
    assert_eq!(
        attrs[key::GEN_AI_PROVIDER_NAME],
        Val::Str("anthropic".into())
    );
    assert!(!attrs.contains_key(key::LLMTAP_EGRESS_DECISION));

    let stats = handle.shutdown(WAIT).await;
    assert_eq!((stats.submitted, stats.exported), (2, 2));
}

#[tokio::test]
async fn full_queue_drops_and_counts_egress_records() {
    let receiver = OtlpReceiver::start().await;
    receiver.set_default(Reply::Stall);
    let mut config = config_for(Some(&receiver.endpoint()));
    config.queue_capacity = 2;
    config.retry.request_timeout = Duration::from_secs(30);
    let handle = start(config);
    handle.submit_egress(egress(1));
    // The worker is now stuck in a stalled export: the queue fills behind it.
    receiver.wait_for_hits(1, WAIT).await;
    let sink: Arc<dyn ExchangeSink> = Arc::new(handle.clone());
    let started = Instant::now();
    for port in 2..=40 {
        sink.submit_egress(egress(port));
    }
    sink.submit(exchange(41));
    assert!(started.elapsed() < Duration::from_millis(200));
    let stats = handle.stats();
    assert_eq!(stats.submitted, 41);
    assert_eq!(stats.dropped_queue_full, 38);
    assert_eq!(sink.stats()["dropped_queue_full"], 38);
    assert_eq!((stats.queue_capacity, stats.queue_len), (2, 2));
    // Shutdown gives up at the deadline; every egress record is accounted for.
    let stats = handle.shutdown(Duration::from_millis(300)).await;
    assert_eq!(
        stats.exported
            + stats.dropped_queue_full
            + stats.dropped_export_failed
            + stats.dropped_shutdown,
        41,
        "{stats:?}"
    );
}

#[tokio::test]
async fn shutdown_flushes_the_queue() {
    let receiver = OtlpReceiver::start().await;
    let mut config = config_for(Some(&receiver.endpoint()));
    // Records would sit in the batch for a minute: only the shutdown flush sends them.
    config.batch.max_delay = Duration::from_secs(60);
    let handle = start(config);
    for id in 0..20 {
        handle.submit(exchange(id));
    }
    let stats = handle.clone().shutdown(Duration::from_secs(5)).await;
    assert_eq!(stats.exported, 20, "{stats:?}");
    assert_eq!(receiver.records().len(), 20);
    // Later submissions are refused and counted; a second shutdown only reports.
    handle.submit(exchange(99));
    let stats = handle.shutdown(Duration::from_secs(1)).await;
    assert_eq!(stats.dropped_shutdown, 1);
}

#[tokio::test]
async fn no_key_reaches_the_wire() {
    let receiver = OtlpReceiver::start().await;
    let handle = start(config_for(Some(&receiver.endpoint())));
    let mut call = exchange(1);
    call.url = format!(
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro:generateContent?key={GOOGLE_KEY}"
    );
    call.host = "generativelanguage.googleapis.com".into();
    call.path = "/v1beta/models/gemini-2.5-pro:generateContent".into();
    call.provider = Some("gcp.gemini".into());
    call.shape = llmtap::providers::ApiShape::GeminiGenerate;
    call.request_headers.extend([
        (
            "authorization".to_owned(),
            format!("Bearer {ANTHROPIC_KEY}"),
        ),
        ("x-api-key".to_owned(), ANTHROPIC_KEY.to_owned()),
        ("x-goog-api-key".to_owned(), GOOGLE_KEY.to_owned()),
        ("cookie".to_owned(), format!("k={GOOGLE_KEY}")),
        (
            "user-agent".to_owned(),
            format!("tool/1.0 ({ANTHROPIC_KEY})"),
        ),
    ]);
    call.request_body = body(&format!(
        r#"{{"contents":[],"api_key":"{ANTHROPIC_KEY}","text":"use {GOOGLE_KEY}"}}"#
    ));
    call.response_body = body(&format!(
        "data: {{\"echo\":\"Bearer {ANTHROPIC_KEY}\"}}\n\n"
    ));
    call.status = Some(401);
    call.outcome = Outcome::UpstreamError {
        kind: "body".into(),
        message: format!("bad key {ANTHROPIC_KEY}"),
    };
    handle.submit(call);
    let records = receiver.wait_for_records(1, WAIT).await;
    let raw: Vec<u8> = receiver
        .hits()
        .iter()
        .flat_map(|h| h.raw.to_vec())
        .collect();
    for secret in [
        ANTHROPIC_KEY,
        GOOGLE_KEY,
        &ANTHROPIC_KEY[7..30],
        &GOOGLE_KEY[4..24],
    ] {
        assert!(
            !contains(&raw, secret.as_bytes()),
            "{secret} reached the wire"
        );
    }
    let attrs = records[0].attrs();
    assert!(attrs[key::URL_FULL].str().ends_with("?key=[REDACTED]"));
    assert!(
        attrs[key::LLMTAP_REQUEST_HEADERS]
            .str()
            .contains(r#""x-api-key":"[REDACTED]""#)
    );
    assert_eq!(records[0].record.severity_number, 17);
    handle.shutdown(WAIT).await;
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
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
async fn without_an_endpoint_there_is_no_spool() {
    let buffer = Buffer::default();
    let writer: SharedWriter = Arc::new(Mutex::new(Box::new(buffer.clone())));
    let redactor = Arc::new(Redactor::new(&RedactionConfig::default()).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let mut config = config_for(None);
    config.spool = Some(llmtap::export::SpoolSettings {
        dir: spool.clone(),
        max_bytes: 1 << 20,
    });
    let handle = ExportHandle::start_with_writer(config, redactor, writer).unwrap();
    handle.submit(exchange(1));
    let stats = handle.shutdown(WAIT).await;
    assert_eq!((stats.exported, stats.spooled), (1, 0));
    assert_eq!(
        buffer
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|b| **b == b'\n')
            .count(),
        1
    );
    assert!(!spool.exists(), "stdout records never touch the disk");
}

#[tokio::test]
async fn stdout_json_lines_without_endpoint() {
    let buffer = Buffer::default();
    let writer: SharedWriter = Arc::new(Mutex::new(Box::new(buffer.clone())));
    let redactor = Arc::new(Redactor::new(&RedactionConfig::default()).unwrap());
    let config = config_for(None);
    let handle = ExportHandle::start_with_writer(config, redactor, writer).unwrap();
    let mut call = exchange(1);
    call.request_headers
        .push(("x-api-key".into(), ANTHROPIC_KEY.into()));
    handle.submit(call);
    handle.submit(exchange(2));
    let stats = handle.shutdown(WAIT).await;
    assert_eq!(stats.exported, 2);
    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    assert!(!text.contains(ANTHROPIC_KEY));
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["severity_text"], "INFO");
    assert_eq!(
        lines[0]["attributes"][key::GEN_AI_REQUEST_MODEL],
        "claude-sonnet-4-5"
    );
    assert_eq!(lines[0]["resource"]["service.name"], "llmtap");
    assert!(
        lines[0]["body"]["request"]["body"]
            .as_str()
            .unwrap()
            .contains("max_tokens")
    );
}
