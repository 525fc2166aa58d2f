//! End to end: client → llmtap → canned provider, and the OTLP record a real receiver decodes.
//!
//! Each test starts llmtap in-process with its real exporter pointed at an in-test OTLP/HTTP
//! receiver, sends calls through it to a fake HTTPS upstream serving real-shaped provider
//! fixtures, and asserts the decoded `LogRecord` (issue 3). Everything is loopback, ports come
//! from the OS, and every wait is bounded by `STEP`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/otlp_receiver.rs"]
mod otlp_receiver;

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::Parser;
use common::upstream::Canned;
use common::{STEP, TestCa, Upstream};
use llmtap::RunningProxy;
use llmtap::config::{Cli, Config};
use llmtap::export::attributes as key;
use llmtap::export::{ExportConfig, ExportFlags, ExportHandle};
use otlp_receiver::{OtlpReceiver, Received, Reply, Val};
use prost::Message;

// ---------------------------------------------------------------------------------------------
// Hosts, fixtures, secrets
// ---------------------------------------------------------------------------------------------

const ANTHROPIC: &str = "api.anthropic.com";
const OPENAI: &str = "api.openai.com";
const GEMINI: &str = "generativelanguage.googleapis.com";
const AZURE: &str = "x.openai.azure.com";
const BEDROCK: &str = "bedrock-runtime.us-east-1.amazonaws.com";
const LLM_HOSTS: &str = "api.anthropic.com,api.openai.com,generativelanguage.googleapis.com,*.openai.azure.com,bedrock-runtime.us-east-1.amazonaws.com";
const USER_AGENT: &str = "llmtap-e2e/1.0 (otlp_records)";

const ANTHROPIC_KEY: &str =
    "sk-ant-api03-Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2Rr1Qq0Pp_-Oo9Nn8Mm7Ll6Kk5Jj4Ii3Hh2Gg1Ff0EeDdCcBbAaAA";
const OPENAI_KEY: &str = "sk-proj-Ab12Cd34Ef56Gh78Ij90Kl12Mn34Op56Qr78St90Uv12Wx34Yz56_-AbCdEfGhIj";
const GOOGLE_KEY: &str = "AIzaSyB-1cD2eF3gH4iJ5kL6mN7oP8qR9sT0uVw";
const COOKIE_SECRET: &str = "c00k1e-s3cr3t-v4lue-9f8e7d6c5b4a";
const SET_COOKIE_SECRET: &str = "r3sp0nse-c00k1e-0a1b2c3d4e5f";
const PASSWORD: &str = "correct-horse-battery-staple-77";

macro_rules! fixture {
    ($path:literal) => {
        include_bytes!(concat!("fixtures/providers/", $path)).as_slice()
    };
}

macro_rules! request_fixture {
    ($path:literal) => {
        include_str!(concat!("fixtures/providers/requests/", $path))
    };
}

const JSON: &str = "application/json";
const SSE: &str = "text/event-stream";

// ---------------------------------------------------------------------------------------------
// Harness: llmtap with its real exporter, a canned upstream, an OTLP receiver
// ---------------------------------------------------------------------------------------------

/// llmtap running in-process with the OTLP exporter (not a channel sink).
struct Llmtap {
    proxy: Option<RunningProxy>,
    export: ExportHandle,
    addr: SocketAddr,
    ca_pem: String,
    _ca_dir: tempfile::TempDir,
}

impl Llmtap {
    /// Starts llmtap exporting to `endpoint`; `tune` adjusts the export config (retries, …).
    async fn start(endpoint: &str, flags: &[String], tune: impl FnOnce(&mut ExportConfig)) -> Self {
        common::init_crypto();
        let ca_dir = tempfile::tempdir().unwrap();
        let mut argv: Vec<String> = [
            "llmtap",
            "--listen",
            "127.0.0.1:0",
            "--ca-dir",
            &ca_dir.path().display().to_string(),
            "--addons-config",
            &common::addons_dir().display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        argv.extend(flags.iter().cloned());
        let cli = Cli::try_parse_from(argv).unwrap();
        let config = Config::from_args(&cli.run).unwrap();
        let export_flags = ExportFlags {
            max_record_bytes: config.max_record_bytes,
            queue_capacity: config.export_queue,
        };
        let env =
            |name: &str| (name == "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT").then(|| endpoint.into());
        let mut export_config = ExportConfig::from_env_and_flags(&env, &export_flags).unwrap();
        // Ship each record promptly; tests wait for records, not for batch timers.
        export_config.batch.max_delay = Duration::from_millis(10);
        tune(&mut export_config);
        let export = ExportHandle::start(export_config, Arc::clone(&config.redactor)).unwrap();
        let proxy = llmtap::start(config, Arc::new(export.clone()))
            .await
            .unwrap();
        let ca_pem = std::fs::read_to_string(ca_dir.path().join("ca.pem")).unwrap();
        Llmtap {
            addr: proxy.local_addr,
            proxy: Some(proxy),
            export,
            ca_pem,
            _ca_dir: ca_dir,
        }
    }

    /// A client through llmtap, trusting only llmtap's CA, with no response decompression
    /// (reqwest is built without its gzip/br/deflate/zstd features).
    fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .proxy(reqwest::Proxy::all(format!("http://{}", self.addr)).unwrap())
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap())
            .user_agent(USER_AGENT)
            .timeout(STEP)
            .build()
            .unwrap()
    }

    /// `GET /healthz` sent to llmtap itself.
    async fn health(&self) -> serde_json::Value {
        let res = reqwest::Client::builder()
            .no_proxy()
            .timeout(STEP)
            .build()
            .unwrap()
            .get(format!("http://{}/healthz", self.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }

    /// Polls `/healthz` until its `export` section satisfies `done` (panics after `STEP`).
    async fn wait_export(&self, what: &str, done: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + STEP;
        loop {
            let export = self.health().await["export"].clone();
            if done(&export) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/healthz export never showed {what}: {export}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(mut self) {
        self.proxy.take().unwrap().shutdown().await;
        self.export.shutdown(STEP).await;
    }
}

/// A canned HTTPS upstream answering for every provider host, llmtap pinned to it, a receiver.
struct Setup {
    _ca: TestCa,
    upstream: Upstream,
    receiver: OtlpReceiver,
    llmtap: Llmtap,
}

impl Setup {
    async fn start(flags: &[&str]) -> Setup {
        Self::start_tuned(flags, |_| {}).await
    }

    async fn start_tuned(flags: &[&str], tune: impl FnOnce(&mut ExportConfig)) -> Setup {
        let receiver = OtlpReceiver::start().await;
        let endpoint = receiver.endpoint();
        Self::start_to(receiver, &endpoint, flags, tune).await
    }

    /// Like `start_tuned`, exporting to `endpoint` (which may not be `receiver`'s).
    async fn start_to(
        receiver: OtlpReceiver,
        endpoint: &str,
        flags: &[&str],
        tune: impl FnOnce(&mut ExportConfig),
    ) -> Setup {
        let ca = TestCa::new("upstream test CA");
        let hosts = [ANTHROPIC, OPENAI, GEMINI, AZURE, BEDROCK];
        let upstream = Upstream::https(&ca, &hosts).await;
        let mut all: Vec<String> = vec![
            "--llm-hosts".into(),
            LLM_HOSTS.into(),
            "--upstream-ca".into(),
            ca.pem_path.path().display().to_string(),
        ];
        for host in hosts {
            all.push("--resolve".into());
            all.push(format!("{host}:{}:127.0.0.1", upstream.port()));
        }
        all.extend(flags.iter().map(|s| s.to_string()));
        let llmtap = Llmtap::start(endpoint, &all, tune).await;
        Setup {
            _ca: ca,
            upstream,
            receiver,
            llmtap,
        }
    }

    fn url(&self, host: &str, path_and_query: &str) -> String {
        format!("https://{host}:{}{path_and_query}", self.upstream.port())
    }

    /// Serve `canned` for the path of `path_and_query` (the query is not part of the key).
    fn can(&self, path_and_query: &str, canned: Canned) {
        self.upstream.state.can(path_only(path_and_query), canned);
    }

    /// Waits for the `n`th record (1-based) to reach the receiver and returns it.
    async fn record(&self, n: usize) -> Received {
        let records = self.receiver.wait_for_records(n, STEP).await;
        records[n - 1].clone()
    }
}

fn path_only(path_and_query: &str) -> &str {
    path_and_query.split('?').next().unwrap()
}

/// What the client saw, and the wall-clock window around the call.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Bytes,
    sent_at: SystemTime,
    done_at: SystemTime,
}

/// POSTs `body` as JSON through llmtap and reads the whole answer.
async fn post(
    client: &reqwest::Client,
    url: &str,
    body: impl Into<Vec<u8>>,
    headers: &[(&str, &str)],
) -> Answer {
    let mut req = client
        .post(url)
        .header("content-type", JSON)
        .body(body.into());
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let sent_at = SystemTime::now();
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.bytes().await.unwrap();
    Answer {
        status,
        headers,
        body,
        sent_at,
        done_at: SystemTime::now(),
    }
}

// ---------------------------------------------------------------------------------------------
// Assertions on records
// ---------------------------------------------------------------------------------------------

fn s(v: &str) -> Val {
    Val::Str(v.to_string())
}

fn strs(items: &[&str]) -> Val {
    Val::Array(items.iter().map(|i| s(i)).collect())
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// `key` has exactly `want`, or is absent when `want` is `None`.
fn expect(attrs: &HashMap<String, Val>, key: &str, want: Option<Val>, ctx: &str) {
    assert_eq!(attrs.get(key), want.as_ref(), "{ctx}: attribute {key}");
}

fn double(attrs: &HashMap<String, Val>, key: &str, ctx: &str) -> f64 {
    match attrs.get(key) {
        Some(Val::Double(d)) => *d,
        other => panic!("{ctx}: {key} is not a double: {other:?}"),
    }
}

fn int(attrs: &HashMap<String, Val>, key: &str, ctx: &str) -> i64 {
    match attrs.get(key) {
        Some(Val::Int(i)) => *i,
        other => panic!("{ctx}: {key} is not an int: {other:?}"),
    }
}

/// Headers JSON attribute as a map.
fn headers_attr(
    attrs: &HashMap<String, Val>,
    key: &str,
) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::from_str(attrs[key].str()).unwrap() {
        serde_json::Value::Object(map) => map,
        other => panic!("{key} is not a JSON object: {other}"),
    }
}

/// The record body (log line) as JSON.
fn body_doc(rec: &Received) -> serde_json::Value {
    serde_json::from_str(&rec.body()).expect("record body is JSON")
}

/// The five usage attributes, in the order input, output, cache read, cache creation, reasoning.
const USAGE_KEYS: [&str; 5] = [
    key::GEN_AI_USAGE_INPUT_TOKENS,
    key::GEN_AI_USAGE_OUTPUT_TOKENS,
    key::GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
    key::GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,
    key::GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
];

fn expect_usage(attrs: &HashMap<String, Val>, usage: [Option<i64>; 5], ctx: &str) {
    for (key, want) in USAGE_KEYS.iter().zip(usage) {
        expect(attrs, key, want.map(Val::Int), ctx);
    }
}

/// Checks every record must pass: known keys only, nothing empty, sane timings and timestamps.
fn check_invariants(rec: &Received, answer: &Answer, ctx: &str) {
    let attrs = rec.attrs();
    for (name, value) in &attrs {
        assert!(
            key::ALL.contains(&name.as_str()),
            "{ctx}: unknown attribute {name}"
        );
        match value {
            Val::Str(v) => assert!(!v.is_empty(), "{ctx}: {name} is \"\""),
            Val::Array(items) => assert!(!items.is_empty(), "{ctx}: {name} is []"),
            Val::Other => panic!("{ctx}: {name} has no value"),
            _ => {}
        }
    }
    // Timestamp = request start: inside the call's wall-clock window, before the observed time.
    let time = rec.record.time_unix_nano;
    let observed = rec.record.observed_time_unix_nano;
    assert!(
        nanos(answer.sent_at) <= time && time <= nanos(answer.done_at),
        "{ctx}: timestamp {time} outside the call [{}, {}]",
        nanos(answer.sent_at),
        nanos(answer.done_at)
    );
    assert!(time <= observed, "{ctx}: timestamp after observed time");
    assert!(
        observed <= nanos(SystemTime::now()),
        "{ctx}: observed in the future"
    );
    let duration = double(&attrs, key::LLMTAP_DURATION, ctx);
    assert!(duration > 0.0, "{ctx}: duration {duration}");
    let exchange_id = int(&attrs, key::LLMTAP_EXCHANGE_ID, ctx);
    assert!(exchange_id > 0, "{ctx}: exchange id {exchange_id}");
    if attrs.contains_key(key::HTTP_RESPONSE_STATUS_CODE) {
        let ttfb = double(&attrs, key::LLMTAP_TIME_TO_FIRST_BYTE, ctx);
        assert!(
            0.0 < ttfb && ttfb <= duration,
            "{ctx}: ttfb {ttfb} vs {duration}"
        );
        if attrs.contains_key(key::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK) {
            let ttfc = double(&attrs, key::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, ctx);
            assert!(ttfb <= ttfc && ttfc <= duration, "{ctx}: ttfc {ttfc}");
        }
    }
}

/// HTTP facts of a call that got an answer from the upstream.
fn check_http(rec: &Received, url: &str, host: &str, port: u16, answer: &Answer, ctx: &str) {
    let attrs = rec.attrs();
    let path = path_only(url.split_once(&format!(":{port}")).unwrap().1);
    expect(&attrs, key::HTTP_REQUEST_METHOD, Some(s("POST")), ctx);
    expect(&attrs, key::URL_FULL, Some(s(url)), ctx);
    expect(&attrs, key::URL_PATH, Some(s(path)), ctx);
    expect(&attrs, key::SERVER_ADDRESS, Some(s(host)), ctx);
    expect(&attrs, key::SERVER_PORT, Some(Val::Int(port.into())), ctx);
    expect(&attrs, key::CLIENT_ADDRESS, Some(s("127.0.0.1")), ctx);
    expect(&attrs, key::USER_AGENT_ORIGINAL, Some(s(USER_AGENT)), ctx);
    let version = attrs[key::NETWORK_PROTOCOL_VERSION].str();
    assert!(["1.1", "2"].contains(&version), "{ctx}: protocol {version}");
    let status = Val::Int(answer.status.into());
    expect(&attrs, key::HTTP_RESPONSE_STATUS_CODE, Some(status), ctx);
    expect(&attrs, key::LLMTAP_OUTCOME, Some(s("complete")), ctx);
    let size = Val::Int(answer.body.len() as i64);
    expect(&attrs, key::LLMTAP_RESPONSE_BODY_SIZE, Some(size), ctx);
    let request_headers = headers_attr(&attrs, key::LLMTAP_REQUEST_HEADERS);
    assert_eq!(request_headers["content-type"], JSON, "{ctx}");
    assert_eq!(request_headers["user-agent"], USER_AGENT, "{ctx}");
    let response_headers = headers_attr(&attrs, key::LLMTAP_RESPONSE_HEADERS);
    assert!(response_headers.contains_key("content-type"), "{ctx}");
}

// ---------------------------------------------------------------------------------------------
// 1. Provider × JSON/SSE
// ---------------------------------------------------------------------------------------------

/// One call through llmtap and the record it must give.
struct Case {
    name: &'static str,
    host: &'static str,
    path: &'static str,
    request: &'static str,
    response: &'static [u8],
    content_type: &'static str,
    provider: &'static str,
    operation: &'static str,
    request_model: Option<&'static str>,
    stream: bool,
    max_tokens: Option<i64>,
    response_model: &'static str,
    response_id: &'static str,
    finish: &'static [&'static str],
    /// input (cached included), output, cache read, cache creation, reasoning.
    usage: [Option<i64>; 5],
    source: &'static str,
}

const ANTHROPIC_JSON_REQUEST: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":"Hello, Claude"}]}"#;
const CHAT_JSON_REQUEST: &str = r#"{"model":"gpt-4.1","messages":[{"role":"user","content":"Say hello"}],"max_completion_tokens":300}"#;
const CHAT_STREAM_NO_USAGE_REQUEST: &str =
    r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Say hello"}]}"#;
const RESPONSES_STREAM_REQUEST: &str = r#"{"model":"gpt-4.1","stream":true,"input":"Say hello"}"#;
const GEMINI_JSON_REQUEST: &str = r#"{"contents":[{"role":"user","parts":[{"text":"Explain AI"}]}],"generationConfig":{"maxOutputTokens":500}}"#;
const AZURE_REQUEST: &str =
    r#"{"messages":[{"role":"user","content":"Say hello"}],"max_tokens":100}"#;

fn provider_cases() -> Vec<Case> {
    vec![
        Case {
            name: "anthropic messages json",
            host: ANTHROPIC,
            path: "/v1/messages",
            request: ANTHROPIC_JSON_REQUEST,
            response: fixture!("anthropic/message.json"),
            content_type: JSON,
            provider: "anthropic",
            operation: "chat",
            request_model: Some("claude-sonnet-4-5"),
            stream: false,
            max_tokens: Some(1024),
            response_model: "claude-sonnet-4-5-20250929",
            response_id: "msg_01XFDUDYJgAACzvnptvVoYEL",
            finish: &["end_turn"],
            // input_tokens + cache_read_input_tokens + cache_creation_input_tokens.
            usage: [
                Some(2095 + 1800 + 320),
                Some(503),
                Some(1800),
                Some(320),
                None,
            ],
            source: "response",
        },
        Case {
            name: "anthropic messages sse",
            host: ANTHROPIC,
            path: "/v1/messages",
            request: request_fixture!("anthropic.json"),
            response: fixture!("anthropic/stream.sse"),
            content_type: SSE,
            provider: "anthropic",
            operation: "chat",
            request_model: Some("claude-sonnet-4-5"),
            stream: true,
            max_tokens: Some(8192),
            response_model: "claude-sonnet-4-5-20250929",
            response_id: "msg_014p7gG3wDgGV9EUtLvnow3U",
            finish: &["end_turn"],
            usage: [Some(12 + 2048 + 310), Some(87), Some(2048), Some(310), None],
            source: "stream",
        },
        Case {
            name: "openai chat json",
            host: OPENAI,
            path: "/v1/chat/completions",
            request: CHAT_JSON_REQUEST,
            response: fixture!("openai_chat/completion.json"),
            content_type: JSON,
            provider: "openai",
            operation: "chat",
            request_model: Some("gpt-4.1"),
            stream: false,
            max_tokens: Some(300),
            response_model: "gpt-4.1-2025-04-14",
            response_id: "chatcmpl-CBxbjMxqTrDEqgYJwU9fG3aVZq8Fh",
            finish: &["stop"],
            usage: [Some(1544), Some(212), Some(1280), None, Some(0)],
            source: "response",
        },
        Case {
            name: "openai chat sse with include_usage",
            host: OPENAI,
            path: "/v1/chat/completions",
            request: request_fixture!("openai_chat.json"),
            response: fixture!("openai_chat/stream_usage.sse"),
            content_type: SSE,
            provider: "openai",
            operation: "chat",
            request_model: Some("gpt-4.1"),
            stream: true,
            max_tokens: Some(2048),
            response_model: "gpt-4o-mini-2024-07-18",
            response_id: "chatcmpl-CBy1Usage9d8f7a6s5d4f3g2h1j",
            finish: &["stop"],
            usage: [Some(19), Some(10), Some(0), None, Some(0)],
            source: "stream",
        },
        Case {
            name: "openai chat sse without include_usage",
            host: OPENAI,
            path: "/v1/chat/completions",
            request: CHAT_STREAM_NO_USAGE_REQUEST,
            response: fixture!("openai_chat/stream_no_usage.sse"),
            content_type: SSE,
            provider: "openai",
            operation: "chat",
            request_model: Some("gpt-4o-mini"),
            stream: true,
            max_tokens: None,
            response_model: "gpt-4o-mini-2024-07-18",
            response_id: "chatcmpl-CBy2NoUsage0a9s8d7f6g5h4j3k",
            finish: &["stop"],
            usage: [None; 5],
            source: "absent",
        },
        Case {
            name: "openai responses json",
            host: OPENAI,
            path: "/v1/responses",
            request: request_fixture!("openai_responses.json"),
            response: fixture!("openai_responses/response.json"),
            content_type: JSON,
            provider: "openai",
            operation: "chat",
            request_model: Some("gpt-5"),
            stream: false,
            max_tokens: Some(4096),
            response_model: "gpt-5-2025-08-07",
            response_id: "resp_68b1f0c3a2f08190a1d0b6c6e5a4f3e20b9d8c7b6a5f4e3d",
            finish: &["completed"],
            usage: [Some(3214), Some(845), Some(2944), None, Some(640)],
            source: "response",
        },
        Case {
            name: "openai responses sse",
            host: OPENAI,
            path: "/v1/responses",
            request: RESPONSES_STREAM_REQUEST,
            response: fixture!("openai_responses/stream.sse"),
            content_type: SSE,
            provider: "openai",
            operation: "chat",
            request_model: Some("gpt-4.1"),
            stream: true,
            max_tokens: None,
            response_model: "gpt-4.1-2025-04-14",
            response_id: "resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654",
            finish: &["completed"],
            usage: [Some(37), Some(11), Some(0), None, Some(0)],
            source: "stream",
        },
        Case {
            name: "gemini generateContent",
            host: GEMINI,
            path: "/v1beta/models/gemini-2.5-flash:generateContent",
            request: GEMINI_JSON_REQUEST,
            response: fixture!("gemini/generate.json"),
            content_type: "application/json; charset=UTF-8",
            provider: "gcp.gemini",
            operation: "generate_content",
            request_model: Some("gemini-2.5-flash"),
            stream: false,
            max_tokens: Some(500),
            response_model: "gemini-2.5-flash",
            response_id: "9JaxaOyzLc-mz7IPqdmN8Qk",
            finish: &["STOP"],
            usage: [Some(4200), Some(310), Some(4032), None, Some(987)],
            source: "response",
        },
        Case {
            name: "gemini streamGenerateContent alt=sse",
            host: GEMINI,
            path: "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
            request: request_fixture!("gemini.json"),
            response: fixture!("gemini/stream.sse"),
            content_type: SSE,
            provider: "gcp.gemini",
            operation: "generate_content",
            request_model: Some("gemini-2.5-pro"),
            stream: true,
            max_tokens: Some(1000),
            response_model: "gemini-2.5-pro",
            response_id: "kJexaPm1Dv2Sz7IP6bOd-Aw",
            finish: &["STOP"],
            usage: [Some(11), Some(54), None, None, Some(412)],
            source: "stream",
        },
        Case {
            name: "gemini streamGenerateContent json array",
            host: GEMINI,
            path: "/v1beta/models/gemini-2.0-flash:streamGenerateContent",
            request: request_fixture!("gemini.json"),
            response: fixture!("gemini/stream_array.json"),
            content_type: "application/json; charset=UTF-8",
            provider: "gcp.gemini",
            operation: "generate_content",
            request_model: Some("gemini-2.0-flash"),
            stream: true,
            max_tokens: Some(1000),
            response_model: "gemini-2.0-flash",
            response_id: "a1ZxaKbRJ8Wm1e8PxLuY0Qo",
            finish: &["MAX_TOKENS"],
            usage: [Some(9), Some(32), None, None, None],
            source: "stream",
        },
        Case {
            name: "azure openai chat (no model in the request)",
            host: AZURE,
            path: "/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21",
            request: AZURE_REQUEST,
            response: fixture!("openai_chat/completion.json"),
            content_type: JSON,
            provider: "azure.ai.openai",
            operation: "chat",
            request_model: None,
            stream: false,
            max_tokens: Some(100),
            response_model: "gpt-4.1-2025-04-14",
            response_id: "chatcmpl-CBxbjMxqTrDEqgYJwU9fG3aVZq8Fh",
            finish: &["stop"],
            usage: [Some(1544), Some(212), Some(1280), None, Some(0)],
            source: "response",
        },
    ]
}

fn provider_case(name: &str) -> Case {
    provider_cases()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no provider case {name:?}"))
}

fn check_case(rec: &Received, case: &Case, url: &str, port: u16, answer: &Answer) {
    let ctx = case.name;
    check_invariants(rec, answer, ctx);
    check_http(rec, url, case.host, port, answer, ctx);
    assert_eq!(rec.record.severity_number, 9, "{ctx}");
    assert_eq!(rec.record.severity_text, "INFO", "{ctx}");
    let attrs = rec.attrs();
    expect(&attrs, key::ERROR_TYPE, None, ctx);
    expect(&attrs, key::LLMTAP_ERROR_MESSAGE, None, ctx);
    expect(
        &attrs,
        key::GEN_AI_PROVIDER_NAME,
        Some(s(case.provider)),
        ctx,
    );
    expect(
        &attrs,
        key::GEN_AI_OPERATION_NAME,
        Some(s(case.operation)),
        ctx,
    );
    expect(
        &attrs,
        key::GEN_AI_REQUEST_MODEL,
        case.request_model.map(s),
        ctx,
    );
    expect(
        &attrs,
        key::GEN_AI_REQUEST_STREAM,
        Some(Val::Bool(case.stream)),
        ctx,
    );
    let max_tokens = case.max_tokens.map(Val::Int);
    expect(&attrs, key::GEN_AI_REQUEST_MAX_TOKENS, max_tokens, ctx);
    expect(
        &attrs,
        key::GEN_AI_RESPONSE_MODEL,
        Some(s(case.response_model)),
        ctx,
    );
    expect(
        &attrs,
        key::GEN_AI_RESPONSE_ID,
        Some(s(case.response_id)),
        ctx,
    );
    expect(
        &attrs,
        key::GEN_AI_RESPONSE_FINISH_REASONS,
        Some(strs(case.finish)),
        ctx,
    );
    expect_usage(&attrs, case.usage, ctx);
    expect(&attrs, key::LLMTAP_USAGE_SOURCE, Some(s(case.source)), ctx);
    if case.stream {
        let ttfc = double(&attrs, key::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, ctx);
        assert!(ttfc > 0.0, "{ctx}: ttfc {ttfc}");
    }
    let request_size = Val::Int(case.request.len() as i64);
    expect(
        &attrs,
        key::LLMTAP_REQUEST_BODY_SIZE,
        Some(request_size),
        ctx,
    );
    for flag in [
        key::LLMTAP_REQUEST_BODY_TRUNCATED,
        key::LLMTAP_RESPONSE_BODY_TRUNCATED,
        key::LLMTAP_RECORD_TRIMMED,
    ] {
        expect(&attrs, flag, Some(Val::Bool(false)), ctx);
    }
    // The log line carries both bodies whole.
    let doc = body_doc(rec);
    assert_eq!(doc["request"]["body"], case.request, "{ctx}");
    let response = std::str::from_utf8(case.response).unwrap();
    assert_eq!(doc["response"]["body"], response, "{ctx}");
    assert_eq!(doc["request"]["truncated"], false, "{ctx}");
    assert_eq!(doc["response"]["truncated"], false, "{ctx}");
}

#[tokio::test]
async fn each_provider_json_and_sse_gives_a_full_record() {
    let setup = Setup::start(&[]).await;
    let client = setup.llmtap.client();
    let port = setup.upstream.port();
    let cases = provider_cases();
    for (n, case) in cases.iter().enumerate() {
        let mut canned = Canned::new(200, case.content_type, case.response);
        if case.stream {
            // Cut at arbitrary bytes, not at event boundaries, and spaced out in time.
            canned = canned.in_chunks(5, Duration::from_millis(5));
        }
        setup.can(case.path, canned);
        let url = setup.url(case.host, case.path);
        let answer = post(&client, &url, case.request, &[]).await;
        assert_eq!(answer.status, 200, "{}", case.name);
        assert_eq!(
            &answer.body[..],
            case.response,
            "{}: client bytes",
            case.name
        );
        // The request reached the provider unchanged (llmtap never adds include_usage).
        let forwarded = setup
            .upstream
            .state
            .canned_request_body
            .lock()
            .unwrap()
            .clone();
        assert_eq!(&forwarded[..], case.request.as_bytes(), "{}", case.name);
        let rec = setup.record(n + 1).await;
        check_case(&rec, case, &url, port, &answer);
    }
    // Resource and scope, checked once.
    let rec = setup.record(1).await;
    assert_eq!(rec.resource["service.name"], s("llmtap"));
    assert_eq!(rec.scope_name, "llmtap");
    let all = cases.len() as u64;
    setup
        .llmtap
        .wait_export("every record exported", |e| e["exported"] == all)
        .await;
    setup.llmtap.stop().await;
}

/// Bedrock Converse: the model from the (percent-encoded) path, usage with the cache counts
/// added to the input, from a JSON body and from a binary AWS event stream cut anywhere.
#[tokio::test]
async fn bedrock_converse_json_and_event_stream_give_records() {
    let setup = Setup::start(&[]).await;
    let client = setup.llmtap.client();
    let model = "/model/us.anthropic.claude-3-5-sonnet-20240620-v1%3A0";
    let cases = [
        (
            "converse",
            JSON,
            fixture!("bedrock/converse.json"),
            [
                Some(14 + 2048 + 512),
                Some(181),
                Some(2048),
                Some(512),
                None,
            ],
            "response",
        ),
        (
            "converse-stream",
            "application/vnd.amazon.eventstream",
            fixture!("bedrock/converse_stream.bin"),
            [Some(22 + 1536), Some(48), Some(1536), Some(0), None],
            "stream",
        ),
    ];
    for (n, (operation, content_type, body, usage, source)) in cases.into_iter().enumerate() {
        let path = format!("{model}/{operation}");
        let streams = operation.ends_with("stream");
        let mut canned = Canned::new(200, content_type, body);
        if streams {
            canned = canned.in_chunks(5, Duration::from_millis(5));
        }
        setup.can(&path, canned);
        let url = setup.url(BEDROCK, &path);
        let answer = post(&client, &url, fixture!("bedrock/request.json"), &[]).await;
        assert_eq!(
            (answer.status, &answer.body[..]),
            (200, body),
            "{operation}"
        );
        let attrs = setup.record(n + 1).await.attrs();
        let ctx = operation;
        expect(
            &attrs,
            key::GEN_AI_PROVIDER_NAME,
            Some(s("aws.bedrock")),
            ctx,
        );
        expect(&attrs, key::GEN_AI_OPERATION_NAME, Some(s("chat")), ctx);
        let model_id = "us.anthropic.claude-3-5-sonnet-20240620-v1:0";
        expect(&attrs, key::GEN_AI_REQUEST_MODEL, Some(s(model_id)), ctx);
        expect(
            &attrs,
            key::GEN_AI_REQUEST_STREAM,
            Some(Val::Bool(streams)),
            ctx,
        );
        expect(
            &attrs,
            key::GEN_AI_REQUEST_MAX_TOKENS,
            Some(Val::Int(2048)),
            ctx,
        );
        expect(&attrs, key::GEN_AI_RESPONSE_MODEL, None, ctx);
        let finish = Some(strs(&["end_turn"]));
        expect(&attrs, key::GEN_AI_RESPONSE_FINISH_REASONS, finish, ctx);
        expect_usage(&attrs, usage, ctx);
        expect(&attrs, key::LLMTAP_USAGE_SOURCE, Some(s(source)), ctx);
    }
    setup.llmtap.stop().await;
}

/// The spec's exact attribute names, spelled out once (everything else uses the constants).
#[test]
fn attribute_names_are_the_specified_ones() {
    let spec = [
        "http.request.method",
        "url.full",
        "url.path",
        "server.address",
        "server.port",
        "client.address",
        "user_agent.original",
        "http.response.status_code",
        "error.type",
        "gen_ai.provider.name",
        "gen_ai.operation.name",
        "gen_ai.request.model",
        "gen_ai.response.model",
        "gen_ai.response.id",
        "gen_ai.response.finish_reasons",
        "gen_ai.request.stream",
        "gen_ai.request.max_tokens",
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.reasoning.output_tokens",
        "gen_ai.response.time_to_first_chunk",
        "network.peer.address",
        "network.peer.port",
    ];
    for name in spec {
        assert!(key::ALL.contains(&name), "{name} is not emitted");
    }
    let own: Vec<&str> = key::ALL
        .iter()
        .copied()
        .filter(|k| !spec.contains(k) && *k != key::NETWORK_PROTOCOL_VERSION)
        .collect();
    assert!(own.iter().all(|k| k.starts_with("llmtap.")), "{own:?}");
}

// ---------------------------------------------------------------------------------------------
// 2. Severities
// ---------------------------------------------------------------------------------------------

struct SeverityCase {
    name: &'static str,
    host: &'static str,
    path: &'static str,
    status: u16,
    response: &'static [u8],
    severity: (i32, &'static str),
    /// error.type and llmtap.error.message
    error: Option<(&'static str, &'static str)>,
}

#[tokio::test]
async fn severity_follows_the_status_and_errors_are_named() {
    let anthropic_429 = "This request would exceed the rate limit for your organization (a1b2c3) of 50,000 input tokens per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits.";
    let cases = [
        SeverityCase {
            name: "200",
            host: ANTHROPIC,
            path: "/v1/messages",
            status: 200,
            response: fixture!("anthropic/message.json"),
            severity: (9, "INFO"),
            error: None,
        },
        SeverityCase {
            name: "anthropic 429",
            host: ANTHROPIC,
            path: "/v1/messages",
            status: 429,
            response: fixture!("anthropic/error_429.json"),
            severity: (13, "WARN"),
            error: Some(("rate_limit_error", anthropic_429)),
        },
        SeverityCase {
            name: "gemini 429",
            host: GEMINI,
            path: "/v1beta/models/gemini-2.5-flash:generateContent",
            status: 429,
            response: fixture!("gemini/error_429.json"),
            severity: (13, "WARN"),
            error: Some((
                "RESOURCE_EXHAUSTED",
                "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.",
            )),
        },
        SeverityCase {
            name: "anthropic 500",
            host: ANTHROPIC,
            path: "/v1/messages",
            status: 500,
            response: fixture!("anthropic/error_500.json"),
            severity: (17, "ERROR"),
            error: Some(("api_error", "Internal server error")),
        },
        SeverityCase {
            name: "openai 500",
            host: OPENAI,
            path: "/v1/chat/completions",
            status: 500,
            response: fixture!("openai_chat/error_500.json"),
            severity: (17, "ERROR"),
            error: Some((
                "server_error",
                "The server had an error while processing your request. Sorry about that!",
            )),
        },
    ];
    let setup = Setup::start(&[]).await;
    let client = setup.llmtap.client();
    let port = setup.upstream.port();
    for (n, case) in cases.iter().enumerate() {
        let ctx = case.name;
        setup.can(case.path, Canned::new(case.status, JSON, case.response));
        let url = setup.url(case.host, case.path);
        let answer = post(&client, &url, ANTHROPIC_JSON_REQUEST, &[]).await;
        assert_eq!(answer.status, case.status, "{ctx}");
        assert_eq!(&answer.body[..], case.response, "{ctx}");
        let rec = setup.record(n + 1).await;
        check_invariants(&rec, &answer, ctx);
        check_http(&rec, &url, case.host, port, &answer, ctx);
        assert_eq!(rec.record.severity_number, case.severity.0, "{ctx}");
        assert_eq!(rec.record.severity_text, case.severity.1, "{ctx}");
        let attrs = rec.attrs();
        expect(&attrs, key::ERROR_TYPE, case.error.map(|e| s(e.0)), ctx);
        expect(
            &attrs,
            key::LLMTAP_ERROR_MESSAGE,
            case.error.map(|e| s(e.1)),
            ctx,
        );
        if case.error.is_some() {
            // An error body carries no usage: unknown, not zero.
            expect_usage(&attrs, [None; 5], ctx);
            expect(&attrs, key::LLMTAP_USAGE_SOURCE, Some(s("absent")), ctx);
            expect(&attrs, key::GEN_AI_RESPONSE_MODEL, None, ctx);
            expect(&attrs, key::GEN_AI_RESPONSE_FINISH_REASONS, None, ctx);
        }
    }
    setup.llmtap.stop().await;
}

#[tokio::test]
async fn unreachable_upstream_is_an_error_record() {
    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.endpoint();
    // A port nobody listens on, pinned for the LLM host.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let pin = format!("{ANTHROPIC}:{dead_port}:127.0.0.1");
    let flags: Vec<String> = vec!["--resolve".into(), pin];
    let llmtap = Llmtap::start(&endpoint, &flags, |_| {}).await;
    let url = format!("https://{ANTHROPIC}:{dead_port}/v1/messages");
    let answer = post(&llmtap.client(), &url, ANTHROPIC_JSON_REQUEST, &[]).await;
    assert_eq!(answer.status, 502);
    assert_eq!(answer.headers["x-llmtap-error"], "connect");
    let records = receiver.wait_for_records(1, STEP).await;
    let rec = &records[0];
    let ctx = "unreachable";
    check_invariants(rec, &answer, ctx);
    assert_eq!(rec.record.severity_number, 17);
    assert_eq!(rec.record.severity_text, "ERROR");
    let attrs = rec.attrs();
    expect(&attrs, key::ERROR_TYPE, Some(s("connect")), ctx);
    expect(&attrs, key::LLMTAP_OUTCOME, Some(s("upstream_error")), ctx);
    assert!(!attrs[key::LLMTAP_ERROR_MESSAGE].str().is_empty());
    expect(&attrs, key::URL_FULL, Some(s(&url)), ctx);
    expect(&attrs, key::GEN_AI_PROVIDER_NAME, Some(s("anthropic")), ctx);
    // No response: nothing about one is made up.
    for absent in [
        key::HTTP_RESPONSE_STATUS_CODE,
        key::LLMTAP_RESPONSE_BODY_SIZE,
        key::LLMTAP_RESPONSE_HEADERS,
        key::LLMTAP_TIME_TO_FIRST_BYTE,
        key::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
        key::GEN_AI_RESPONSE_MODEL,
        key::GEN_AI_RESPONSE_ID,
        key::LLMTAP_USAGE_SOURCE,
    ] {
        expect(&attrs, absent, None, ctx);
    }
    expect_usage(&attrs, [None; 5], ctx);
    llmtap.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. Redaction
// ---------------------------------------------------------------------------------------------

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn no_key_reaches_the_receiver() {
    let setup = Setup::start(&[]).await;
    let path = "/v1beta/models/gemini-2.5-flash:generateContent";
    // The provider echoes the key in its error message, and sets a cookie.
    let error = format!(
        r#"{{"error":{{"code":400,"message":"API key not valid: {GOOGLE_KEY}. Also seen: Bearer {OPENAI_KEY}","status":"INVALID_ARGUMENT"}}}}"#
    );
    let canned = Canned::new(400, JSON, error.clone())
        .header("set-cookie", &format!("sid={SET_COOKIE_SECRET}; Secure"))
        .header("x-request-id", "req_123");
    setup.can(path, canned);
    let url = setup.url(GEMINI, &format!("{path}?alt=json&key={GOOGLE_KEY}"));
    let request = format!(
        r#"{{"contents":[{{"role":"user","parts":[{{"text":"my keys are {OPENAI_KEY} and {ANTHROPIC_KEY}"}}]}}],"api_key":"{GOOGLE_KEY}","password":"{PASSWORD}"}}"#
    );
    let bearer = format!("Bearer {OPENAI_KEY}");
    let cookie = format!("session={COOKIE_SECRET}");
    let headers = [
        ("x-api-key", ANTHROPIC_KEY),
        ("authorization", bearer.as_str()),
        ("x-goog-api-key", GOOGLE_KEY),
        ("cookie", cookie.as_str()),
        ("anthropic-version", "2023-06-01"),
    ];
    let answer = post(&setup.llmtap.client(), &url, request.clone(), &headers).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.body, error.as_bytes());
    // The provider got the real request: redaction is for the record only.
    let forwarded = setup
        .upstream
        .state
        .canned_request_body
        .lock()
        .unwrap()
        .clone();
    assert_eq!(forwarded, request.as_bytes());

    let rec = setup.record(1).await;
    let secrets = [
        ANTHROPIC_KEY,
        OPENAI_KEY,
        GOOGLE_KEY,
        COOKIE_SECRET,
        SET_COOKIE_SECRET,
        PASSWORD,
        // Distinctive pieces, in case a key was only partly scrubbed.
        &ANTHROPIC_KEY[14..40],
        &OPENAI_KEY[9..35],
        &GOOGLE_KEY[4..24],
    ];
    let hits = setup.receiver.hits();
    assert!(!hits.is_empty());
    for hit in &hits {
        let bytes = otlp_receiver::payload(&hit.headers, &hit.raw);
        for secret in secrets {
            assert!(
                !contains(&bytes, secret.as_bytes()),
                "{secret} reached the receiver"
            );
        }
    }
    let attrs = rec.attrs();
    let ctx = "redaction";
    let redacted_url = setup.url(GEMINI, &format!("{path}?alt=json&key=[REDACTED]"));
    expect(&attrs, key::URL_FULL, Some(s(&redacted_url)), ctx);
    let request_headers = headers_attr(&attrs, key::LLMTAP_REQUEST_HEADERS);
    for name in ["x-api-key", "authorization", "x-goog-api-key", "cookie"] {
        assert_eq!(request_headers[name], "[REDACTED]", "{name}");
    }
    // Safe headers stay readable.
    assert_eq!(request_headers["anthropic-version"], "2023-06-01");
    let response_headers = headers_attr(&attrs, key::LLMTAP_RESPONSE_HEADERS);
    assert_eq!(response_headers["set-cookie"], "[REDACTED]");
    assert_eq!(response_headers["x-request-id"], "req_123");
    // The provider's error is still told, with the key scrubbed out of it.
    expect(&attrs, key::ERROR_TYPE, Some(s("INVALID_ARGUMENT")), ctx);
    let message = attrs[key::LLMTAP_ERROR_MESSAGE].str();
    assert!(
        message.starts_with("API key not valid: [REDACTED]"),
        "{message}"
    );
    let doc = body_doc(&rec);
    let logged_request = doc["request"]["body"].as_str().unwrap();
    assert!(
        logged_request.contains("my keys are [REDACTED] and [REDACTED]"),
        "{logged_request}"
    );
    assert!(logged_request.contains("\"contents\""), "{logged_request}");
    setup.llmtap.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4. Truncation and fitting Loki
// ---------------------------------------------------------------------------------------------

/// An OpenAI chat completion whose message is about `size` bytes of prose.
fn big_chat_completion(size: usize) -> String {
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(size / 45 + 1);
    format!(
        r#"{{"id":"chatcmpl-big","object":"chat.completion","created":1756989500,"model":"gpt-4.1-2025-04-14","choices":[{{"index":0,"message":{{"role":"assistant","content":"{text}"}},"finish_reason":"length"}}],"usage":{{"prompt_tokens":5,"completion_tokens":32768,"total_tokens":32773}}}}"#
    )
}

/// An Anthropic SSE stream with `deltas` text events; usage only in the final `message_delta`.
fn long_anthropic_stream(deltas: usize) -> String {
    let mut out = String::from(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_long\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\",\"content\":[],\"usage\":{\"input_tokens\":21,\"output_tokens\":1}}}\n\n",
    );
    for i in 0..deltas {
        out.push_str(&format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"sentence number {i} of a long answer. \"}}}}\n\n"
        ));
        if i % 100 == 0 {
            out.push_str("event: ping\ndata: {\"type\": \"ping\"}\n\n");
        }
    }
    out.push_str("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\"},\"usage\":{\"output_tokens\":4321}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    out
}

#[tokio::test]
async fn bodies_over_the_capture_cap_are_truncated_but_usage_is_found() {
    const CAP: usize = 4096;
    let setup = Setup::start(&["--max-body-size", "4096"]).await;
    let client = setup.llmtap.client();

    // A large JSON answer.
    let json = big_chat_completion(200_000);
    let path = "/v1/chat/completions";
    setup.can(
        path,
        Canned::new(200, JSON, json.clone()).in_chunks(8, Duration::ZERO),
    );
    let answer = post(&client, &setup.url(OPENAI, path), CHAT_JSON_REQUEST, &[]).await;
    assert_eq!(answer.body, json.as_bytes());
    let rec = setup.record(1).await;
    let ctx = "big json";
    check_invariants(&rec, &answer, ctx);
    let attrs = rec.attrs();
    expect(
        &attrs,
        key::LLMTAP_RESPONSE_BODY_TRUNCATED,
        Some(Val::Bool(true)),
        ctx,
    );
    expect(
        &attrs,
        key::LLMTAP_REQUEST_BODY_TRUNCATED,
        Some(Val::Bool(false)),
        ctx,
    );
    let size = Val::Int(json.len() as i64);
    expect(&attrs, key::LLMTAP_RESPONSE_BODY_SIZE, Some(size), ctx);
    // The usage sits past the cap: the incremental parser saw the whole body anyway.
    expect_usage(&attrs, [Some(5), Some(32768), None, None, None], ctx);
    expect(&attrs, key::LLMTAP_USAGE_SOURCE, Some(s("response")), ctx);
    expect(
        &attrs,
        key::GEN_AI_RESPONSE_FINISH_REASONS,
        Some(strs(&["length"])),
        ctx,
    );
    expect(
        &attrs,
        key::LLMTAP_RECORD_TRIMMED,
        Some(Val::Bool(false)),
        ctx,
    );
    let doc = body_doc(&rec);
    let logged = doc["response"]["body"].as_str().unwrap();
    assert!(
        logged.len() <= CAP && json.starts_with(logged),
        "{} bytes logged",
        logged.len()
    );
    assert_eq!(doc["response"]["truncated"], true);

    // A stream many times longer than the cap, usage only in its last events.
    let stream = long_anthropic_stream(3000);
    assert!(stream.len() > 25 * CAP);
    let path = "/v1/messages";
    setup.can(
        path,
        Canned::new(200, SSE, stream.clone()).in_chunks(40, Duration::ZERO),
    );
    let request = request_fixture!("anthropic.json");
    let answer = post(&client, &setup.url(ANTHROPIC, path), request, &[]).await;
    assert_eq!(answer.body, stream.as_bytes());
    let rec = setup.record(2).await;
    let ctx = "long stream";
    check_invariants(&rec, &answer, ctx);
    let attrs = rec.attrs();
    expect(
        &attrs,
        key::LLMTAP_RESPONSE_BODY_TRUNCATED,
        Some(Val::Bool(true)),
        ctx,
    );
    let size = Val::Int(stream.len() as i64);
    expect(&attrs, key::LLMTAP_RESPONSE_BODY_SIZE, Some(size), ctx);
    expect_usage(&attrs, [Some(21), Some(4321), None, None, None], ctx);
    expect(&attrs, key::LLMTAP_USAGE_SOURCE, Some(s("stream")), ctx);
    expect(
        &attrs,
        key::GEN_AI_RESPONSE_FINISH_REASONS,
        Some(strs(&["max_tokens"])),
        ctx,
    );
    expect(&attrs, key::GEN_AI_RESPONSE_ID, Some(s("msg_long")), ctx);
    let doc = body_doc(&rec);
    let logged = doc["response"]["body"].as_str().unwrap();
    assert!(
        logged.len() <= CAP && stream.starts_with(logged),
        "{} bytes logged",
        logged.len()
    );
    setup.llmtap.stop().await;
}

#[tokio::test]
async fn records_over_max_record_bytes_are_trimmed_not_dropped() {
    // The exporter's smallest accepted bound (ExportConfig rejects less).
    const MAX_RECORD: usize = 64 * 1024;
    let setup = Setup::start(&["--max-record-bytes", "64KiB"]).await;
    let client = setup.llmtap.client();
    let prompt = "Please summarise the following text. ".repeat(4000);
    let request = format!(
        r#"{{"model":"gpt-4.1","max_completion_tokens":32768,"messages":[{{"role":"user","content":"{prompt}"}}]}}"#
    );
    let response = big_chat_completion(300_000);
    let path = "/v1/chat/completions";
    setup.can(
        path,
        Canned::new(200, JSON, response.clone()).in_chunks(10, Duration::ZERO),
    );
    let answer = post(&client, &setup.url(OPENAI, path), request.clone(), &[]).await;
    assert_eq!(answer.body, response.as_bytes());
    let rec = setup.record(1).await;
    let ctx = "record bytes";
    check_invariants(&rec, &answer, ctx);
    let attrs = rec.attrs();
    expect(
        &attrs,
        key::LLMTAP_RECORD_TRIMMED,
        Some(Val::Bool(true)),
        ctx,
    );
    expect(
        &attrs,
        key::LLMTAP_REQUEST_BODY_TRUNCATED,
        Some(Val::Bool(true)),
        ctx,
    );
    expect(
        &attrs,
        key::LLMTAP_RESPONSE_BODY_TRUNCATED,
        Some(Val::Bool(true)),
        ctx,
    );
    // True sizes and the facts of the whole bodies survive the trimming.
    let size = Val::Int(request.len() as i64);
    expect(&attrs, key::LLMTAP_REQUEST_BODY_SIZE, Some(size), ctx);
    let size = Val::Int(response.len() as i64);
    expect(&attrs, key::LLMTAP_RESPONSE_BODY_SIZE, Some(size), ctx);
    expect(&attrs, key::GEN_AI_REQUEST_MODEL, Some(s("gpt-4.1")), ctx);
    expect(
        &attrs,
        key::GEN_AI_REQUEST_MAX_TOKENS,
        Some(Val::Int(32768)),
        ctx,
    );
    expect_usage(&attrs, [Some(5), Some(32768), None, None, None], ctx);
    // Within the bound: as Loki counts it (line + metadata) and as encoded on the wire.
    let metadata: usize = rec
        .record
        .attributes
        .iter()
        .map(|kv| kv.key.len() + kv.value.as_ref().map_or(0, |v| v.encoded_len()))
        .sum();
    let line = rec.body().len();
    assert!(
        line + metadata <= MAX_RECORD,
        "line {line} + metadata {metadata}"
    );
    let encoded = rec.record.encoded_len();
    assert!(encoded <= MAX_RECORD, "encoded record is {encoded} bytes");
    // Both bodies got a fair share, and the line is still a JSON document.
    let doc = body_doc(&rec);
    let logged_request = doc["request"]["body"].as_str().unwrap();
    let logged_response = doc["response"]["body"].as_str().unwrap();
    assert!(request.starts_with(logged_request) && logged_request.len() > 10_000);
    assert!(response.starts_with(logged_response) && logged_response.len() > 10_000);
    setup
        .llmtap
        .wait_export("the record exported", |e| {
            e["exported"] == 1 && e["dropped_export_failed"] == 0
        })
        .await;
    setup.llmtap.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 5. Compressed responses
// ---------------------------------------------------------------------------------------------

fn compress(encoding: &str, data: &[u8]) -> Vec<u8> {
    match encoding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "br" => {
            let mut out = Vec::new();
            let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            w.write_all(data).unwrap();
            drop(w);
            out
        }
        "zstd" => zstd::encode_all(data, 3).unwrap(),
        other => panic!("no encoder for {other}"),
    }
}

#[tokio::test]
async fn compressed_responses_pass_unchanged_and_are_decoded_for_the_record() {
    // Every supported encoding, on JSON and SSE answers.
    let table = [
        ("gzip", "openai chat json"),
        ("br", "anthropic messages sse"),
        ("deflate", "openai responses sse"),
        ("zstd", "gemini generateContent"),
    ];
    let setup = Setup::start(&[]).await;
    let client = setup.llmtap.client();
    for (n, (encoding, name)) in table.into_iter().enumerate() {
        let case = &provider_case(name);
        let ctx = format!("{} {encoding}", case.name);
        let packed = compress(encoding, case.response);
        let canned = Canned::new(200, case.content_type, packed.clone())
            .encoding(encoding)
            .in_chunks(4, Duration::from_millis(5));
        setup.can(case.path, canned);
        let url = setup.url(case.host, case.path);
        let answer = post(&client, &url, case.request, &[]).await;
        assert_eq!(answer.status, 200, "{ctx}");
        assert_eq!(answer.headers["content-encoding"], encoding, "{ctx}");
        assert!(answer.body == packed, "{ctx}: forwarded bytes changed");
        let rec = setup.record(n + 1).await;
        check_invariants(&rec, &answer, &ctx);
        let attrs = rec.attrs();
        // The true (compressed) size on the wire; decoded text in the log line.
        let size = Val::Int(packed.len() as i64);
        expect(&attrs, key::LLMTAP_RESPONSE_BODY_SIZE, Some(size), &ctx);
        expect(
            &attrs,
            key::LLMTAP_RESPONSE_BODY_TRUNCATED,
            Some(Val::Bool(false)),
            &ctx,
        );
        expect_usage(&attrs, case.usage, &ctx);
        expect(&attrs, key::LLMTAP_USAGE_SOURCE, Some(s(case.source)), &ctx);
        let model = Some(s(case.response_model));
        expect(&attrs, key::GEN_AI_RESPONSE_MODEL, model, &ctx);
        let doc = body_doc(&rec);
        let text = std::str::from_utf8(case.response).unwrap();
        assert_eq!(doc["response"]["body"], text, "{ctx}");
        let response_headers = headers_attr(&attrs, key::LLMTAP_RESPONSE_HEADERS);
        assert_eq!(response_headers["content-encoding"], encoding, "{ctx}");
    }
    setup.llmtap.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 6. A receiver that is down, slow or failing
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum ReceiverTrouble {
    Down,
    Stalls,
    Answers500,
}

/// Fast retries so the failures play out in well under a second.
fn quick_retries(config: &mut ExportConfig) {
    config.retry.max_attempts = 2;
    config.retry.initial_backoff = Duration::from_millis(10);
    config.retry.max_backoff = Duration::from_millis(20);
    config.retry.request_timeout = Duration::from_millis(300);
}

#[tokio::test]
async fn traffic_flows_and_drops_are_counted_when_the_receiver_fails() {
    const CALLS: u64 = 3;
    for trouble in [
        ReceiverTrouble::Down,
        ReceiverTrouble::Stalls,
        ReceiverTrouble::Answers500,
    ] {
        let receiver = OtlpReceiver::start().await;
        let endpoint = match trouble {
            ReceiverTrouble::Down => otlp_receiver::down_endpoint(),
            ReceiverTrouble::Stalls => {
                receiver.set_default(Reply::Stall);
                receiver.endpoint()
            }
            ReceiverTrouble::Answers500 => {
                receiver.set_default(Reply::Status(500));
                receiver.endpoint()
            }
        };
        let setup = Setup::start_to(receiver, &endpoint, &[], quick_retries).await;
        let client = setup.llmtap.client();
        let case = &provider_case("anthropic messages sse");
        setup.can(
            case.path,
            Canned::new(200, SSE, case.response).in_chunks(5, Duration::from_millis(2)),
        );
        let url = setup.url(case.host, case.path);
        for _ in 0..CALLS {
            let answer = post(&client, &url, case.request, &[]).await;
            assert_eq!(answer.status, 200, "{trouble:?}");
            assert_eq!(&answer.body[..], case.response, "{trouble:?}");
        }
        setup
            .llmtap
            .wait_export("every record dropped after retries", |e| {
                e["dropped_export_failed"] == CALLS && e["export_retries"].as_u64() >= Some(1)
            })
            .await;
        let export = setup.llmtap.health().await["export"].clone();
        assert_eq!(export["submitted"], CALLS, "{trouble:?}: {export}");
        assert_eq!(export["exported"], 0, "{trouble:?}: {export}");
        assert_eq!(export["dropped_queue_full"], 0, "{trouble:?}: {export}");
        // A receiver that comes back gets the next records.
        if !matches!(trouble, ReceiverTrouble::Down) {
            setup.receiver.set_default(Reply::Accept);
            let answer = post(&client, &url, case.request, &[]).await;
            assert_eq!(&answer.body[..], case.response, "{trouble:?}");
            let rec = setup.record(1).await;
            let usage = rec.attrs()[key::GEN_AI_USAGE_OUTPUT_TOKENS].clone();
            assert_eq!(usage, Val::Int(87), "{trouble:?}");
            setup
                .llmtap
                .wait_export("the export", |e| e["exported"] == 1)
                .await;
        }
        setup.llmtap.stop().await;
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Garbage from the provider
// ---------------------------------------------------------------------------------------------

/// A 200 whose body is not what the API speaks, and the usage source it must give.
struct GarbageCase {
    name: &'static str,
    host: &'static str,
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// `absent` unless the content type claimed a stream that never sent its final event.
    source: &'static str,
}

#[tokio::test]
async fn garbage_bodies_still_give_a_record_without_usage() {
    let gemini_path = "/v1beta/models/gemini-2.5-flash:generateContent";
    let cases = [
        GarbageCase {
            name: "html error page",
            host: OPENAI,
            path: "/v1/chat/completions",
            content_type: "text/html",
            body: fixture!("garbage/bad_gateway.html"),
            source: "absent",
        },
        GarbageCase {
            name: "half a json document",
            host: OPENAI,
            path: "/v1/chat/completions",
            content_type: JSON,
            body: fixture!("garbage/half_json.txt"),
            source: "absent",
        },
        GarbageCase {
            name: "binary labelled json",
            host: ANTHROPIC,
            path: "/v1/messages",
            content_type: JSON,
            body: fixture!("garbage/random.bin"),
            source: "absent",
        },
        GarbageCase {
            name: "binary labelled sse",
            host: ANTHROPIC,
            path: "/v1/messages",
            content_type: SSE,
            body: fixture!("garbage/random.bin"),
            source: "stream_cut_short",
        },
        GarbageCase {
            name: "binary, octet-stream",
            host: GEMINI,
            path: gemini_path,
            content_type: "application/octet-stream",
            body: fixture!("garbage/random.bin"),
            source: "absent",
        },
    ];
    let setup = Setup::start(&[]).await;
    let client = setup.llmtap.client();
    let port = setup.upstream.port();
    for (n, case) in cases.iter().enumerate() {
        let name = case.name;
        let canned = Canned::new(200, case.content_type, case.body);
        setup.can(case.path, canned.in_chunks(3, Duration::ZERO));
        let url = setup.url(case.host, case.path);
        let answer = post(&client, &url, ANTHROPIC_JSON_REQUEST, &[]).await;
        assert_eq!(answer.status, 200, "{name}");
        assert_eq!(&answer.body[..], case.body, "{name}: client bytes");
        let rec = setup.record(n + 1).await;
        check_invariants(&rec, &answer, name);
        check_http(&rec, &url, case.host, port, &answer, name);
        assert_eq!(rec.record.severity_number, 9, "{name}");
        let attrs = rec.attrs();
        expect_usage(&attrs, [None; 5], name);
        expect(&attrs, key::LLMTAP_USAGE_SOURCE, Some(s(case.source)), name);
        expect(&attrs, key::GEN_AI_RESPONSE_ID, None, name);
        expect(&attrs, key::GEN_AI_RESPONSE_FINISH_REASONS, None, name);
        expect(&attrs, key::ERROR_TYPE, None, name);
        // The request side is still understood.
        let model = Some(s("claude-sonnet-4-5"));
        if case.host == ANTHROPIC {
            expect(&attrs, key::GEN_AI_REQUEST_MODEL, model, name);
        }
        // The log line is still a JSON document carrying what could be shown.
        let doc = body_doc(&rec);
        assert!(doc["response"]["body"].is_string(), "{name}");
    }
    setup.llmtap.stop().await;
}

/// Loki's default `max_line_size` is `256KB`, which Loki parses as 256,000 bytes.
const LOKI_DEFAULT_MAX_LINE_SIZE: usize = 256_000;

#[tokio::test]
async fn default_limits_fit_a_default_loki() {
    let setup = Setup::start(&[]).await;
    let response = big_chat_completion(1_000_000);
    let path = "/v1/chat/completions";
    setup.can(path, Canned::new(200, JSON, response));
    let url = setup.url(OPENAI, path);
    post(&setup.llmtap.client(), &url, CHAT_JSON_REQUEST, &[]).await;
    let rec = setup.record(1).await;
    let line = rec.body().len();
    assert!(
        line <= LOKI_DEFAULT_MAX_LINE_SIZE,
        "a {line}-byte line is rejected by a default Loki"
    );
    setup.llmtap.stop().await;
}
