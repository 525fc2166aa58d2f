//! `GET /metrics` over real loopback sockets: the endpoint and its format, egress decisions by
//! client, the export counters read at scrape time, and a real call's record rendered.
//!
//! Network rules: everything is loopback; every name a test uses is pinned with `--resolve` /
//! `--connect-to` (so nothing is ever looked up), and every wait is bounded by `STEP`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/otlp_receiver.rs"]
mod otlp_receiver;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::Parser;
use common::upstream::Canned;
use common::{STEP, TestCa, TestProxy, Upstream};
use llmtap::RunningProxy;
use llmtap::audit::EgressRecord;
use llmtap::capture::{Exchange, ExchangeSink};
use llmtap::config::{Cli, Config};
use llmtap::export::{ExportConfig, ExportFlags, ExportHandle, ExportStats};
use llmtap::redact::{RedactionConfig, Redactor};
use otlp_receiver::OtlpReceiver;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const LLM_HOST: &str = "api.anthropic.com";
const MESSAGES_BODY: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[]}"#;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

struct Scrape {
    status: u16,
    content_type: String,
    body: String,
}

async fn scrape_with(addr: SocketAddr, method: reqwest::Method) -> Scrape {
    let res = reqwest::Client::builder()
        .no_proxy()
        .timeout(STEP)
        .build()
        .unwrap()
        .request(method, format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    let content_type = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    Scrape {
        status: res.status().as_u16(),
        content_type,
        body: res.text().await.unwrap(),
    }
}

/// `GET /metrics`, checked for status, content type and the shape of every line.
async fn scrape(addr: SocketAddr) -> String {
    let s = scrape_with(addr, reqwest::Method::GET).await;
    assert_eq!(s.status, 200, "{}", s.body);
    assert_eq!(s.content_type, "text/plain; version=0.0.4; charset=utf-8");
    if let Err(why) = check_exposition(&s.body) {
        panic!("/metrics is not Prometheus text: {why}\n{}", s.body);
    }
    s.body
}

/// The value of the sample `series` (name and labels exactly as written), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().unwrap())
    })
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

fn sha256_hex(s: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn policy_file(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

/// `CONNECT authority` with optional proxy credentials: the answer's status.
async fn connect_status(proxy: SocketAddr, authority: &str, auth: Option<&str>) -> u16 {
    let mut tcp = timeout(STEP, TcpStream::connect(proxy))
        .await
        .unwrap()
        .unwrap();
    let auth = auth
        .map(|a| format!("Proxy-Authorization: {a}\r\n"))
        .unwrap_or_default();
    let req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{auth}\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = timeout(STEP, tcp.read(&mut byte)).await.unwrap().unwrap();
        assert_ne!(n, 0, "closed before the answer head: {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    head.split(' ').nth(1).unwrap().parse().unwrap()
}

// ---------------------------------------------------------------------------------------------
// A strict check of the Prometheus text format (0.0.4)
// ---------------------------------------------------------------------------------------------

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `(name, value)` pairs, values unescaped.
type Labels = Vec<(String, String)>;

/// Parses `{k="v",...}` from the start of `s`: the label set as written and the rest.
fn label_set(s: &str) -> Result<(Labels, &str), String> {
    let mut rest = s.strip_prefix('{').ok_or("no '{'")?;
    let mut labels = Vec::new();
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (key, after) = rest.split_once("=\"").ok_or("label without =\"")?;
        if !is_label_name(key) {
            return Err(format!("bad label name {key:?}"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("dangling backslash")?.1 {
                    c @ ('\\' | '"') => value.push(c),
                    'n' => value.push('\n'),
                    c => return Err(format!("bad escape \\{c}")),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.to_string(), value));
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

fn is_value(s: &str) -> bool {
    matches!(s, "+Inf" | "-Inf" | "NaN") || s.parse::<f64>().is_ok()
}

/// Every line is a `# HELP`, a `# TYPE` or a sample of a declared family, each series once.
fn check_exposition(text: &str) -> Result<(), String> {
    if !text.ends_with('\n') {
        return Err("does not end with a newline".into());
    }
    let mut types: Vec<(String, String)> = Vec::new();
    let mut series = HashSet::new();
    for line in text.lines() {
        if let Some(help) = line.strip_prefix("# HELP ") {
            let name = help.split(' ').next().unwrap_or_default();
            if !is_metric_name(name) {
                return Err(format!("bad HELP line {line:?}"));
            }
        } else if let Some(ty) = line.strip_prefix("# TYPE ") {
            let (name, kind) = ty.split_once(' ').ok_or("TYPE without a type")?;
            let known = ["counter", "gauge", "histogram", "summary", "untyped"];
            if !is_metric_name(name) || !known.contains(&kind) {
                return Err(format!("bad TYPE line {line:?}"));
            }
            if types.iter().any(|(n, _)| n == name) {
                return Err(format!("{name} declared twice"));
            }
            types.push((name.to_string(), kind.to_string()));
        } else {
            check_sample(line, &types, &mut series)?;
        }
    }
    Ok(())
}

fn check_sample(
    line: &str,
    types: &[(String, String)],
    series: &mut HashSet<String>,
) -> Result<(), String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or(format!("bad sample {line:?}"))?;
    let name = &line[..name_end];
    let (labels, rest) = if line[name_end..].starts_with('{') {
        label_set(&line[name_end..]).map_err(|e| format!("{e} in {line:?}"))?
    } else {
        (Vec::new(), &line[name_end..])
    };
    let value = rest
        .strip_prefix(' ')
        .ok_or(format!("no value in {line:?}"))?;
    if !is_metric_name(name) || !is_value(value) {
        return Err(format!("bad sample {line:?}"));
    }
    let (family, kind) = types.last().ok_or(format!("{line:?} before any TYPE"))?;
    let ok = match kind.as_str() {
        "histogram" => ["_bucket", "_sum", "_count"]
            .iter()
            .any(|s| name.strip_suffix(s) == Some(family)),
        _ => name == family,
    };
    if !ok {
        return Err(format!(
            "{name} is not of the family {family} declared before it"
        ));
    }
    if kind == "histogram" && name.ends_with("_bucket") && !labels.iter().any(|(k, _)| k == "le") {
        return Err(format!("bucket without le: {line:?}"));
    }
    if !series.insert(format!("{name}{labels:?}")) {
        return Err(format!("series twice: {line:?}"));
    }
    Ok(())
}

#[test]
fn the_format_check_refuses_broken_lines() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{k=\"q\\\"\\\\\\n\"} 1\n";
    assert_eq!(check_exposition(good), Ok(()));
    for bad in [
        "# TYPE a_total counter\na_total{k=\"x\"y\"} 1\n",
        "# TYPE a_total counter\na_total{k=\"x} 1\n",
        "# TYPE a_total counter\na_total{k=\"\\t\"} 1\n",
        "# TYPE a_total counter\na_total 1\na_total 2\n",
        "# TYPE a_total counter\nb_total 1\n",
        "# TYPE a_total counter\na_total one\n",
        "a_total 1\n",
        "# TYPE a_total counter\na_total 1",
    ] {
        assert!(check_exposition(bad).is_err(), "accepted {bad:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// The endpoint
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn metrics_is_served_as_prometheus_text_on_the_proxy_port() {
    let proxy = TestProxy::start(&[]).await;
    let text = scrape(proxy.addr).await;
    // A labelled family shows once it has a series (as Prometheus' own clients do); the
    // counter without labels is always there.
    assert!(
        text.lines()
            .any(|l| l == "# TYPE llmtap_limits_store_errors_total counter"),
        "{text}"
    );
    assert!(!text.contains("llmtap_calls_total"), "{text}");
    assert_eq!(sample(&text, "llmtap_limits_store_errors_total"), Some(0.0));
    // The test sink keeps no export counters: none are shown.
    assert!(!text.contains("llmtap_export_"), "{text}");

    let head = scrape_with(proxy.addr, reqwest::Method::HEAD).await;
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    assert!(head.content_type.starts_with("text/plain; version=0.0.4"));
    let post = scrape_with(proxy.addr, reqwest::Method::POST).await;
    assert_eq!(post.status, 404, "{}", post.body);
}

// ---------------------------------------------------------------------------------------------
// Egress decisions
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn egress_decisions_are_counted_by_client_and_decision() {
    let ca = TestCa::new("upstream CA");
    let up = Upstream::https(&ca, &["ok.example.org"]).await;
    let policy = policy_file(&format!(
        r#"
[[client]]
name = "code-sandbox"
profile = "code"
[[client]]
name = "alice"
token_sha256 = "{}"
profile = "code"
[profile.code]
allow = ["ok.example.org"]
[profile.default]
allow = []
"#,
        sha256_hex("alice-pass-7731")
    ));
    let mut flags = vec!["--policy".to_string(), policy.path().display().to_string()];
    for target in ["ok.example.org:443", "denied.example.org:443"] {
        flags.push("--connect-to".into());
        flags.push(format!("{target}:127.0.0.1:{}", up.port()));
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let proxy = TestProxy::start(&flags).await;
    let code = basic("code-sandbox", "anything");

    assert_eq!(
        connect_status(proxy.addr, "ok.example.org:443", Some(&code)).await,
        200
    );
    for _ in 0..2 {
        let status = connect_status(proxy.addr, "denied.example.org:443", Some(&code)).await;
        assert_eq!(status, 403);
    }
    // Bad credentials: the client is not known.
    let wrong = basic("alice", "wrong-password");
    assert_eq!(
        connect_status(proxy.addr, "ok.example.org:443", Some(&wrong)).await,
        407
    );

    let text = scrape(proxy.addr).await;
    let counted = |client: &str, decision: &str| {
        let series =
            format!(r#"llmtap_egress_decisions_total{{client="{client}",decision="{decision}"}}"#);
        sample(&text, &series)
    };
    assert_eq!(counted("code-sandbox", "allow"), Some(1.0), "{text}");
    assert_eq!(counted("code-sandbox", "deny"), Some(2.0), "{text}");
    assert_eq!(counted("unknown", "deny"), Some(1.0), "{text}");
    assert_eq!(counted("alice", "deny"), None, "{text}");
    assert!(text.contains("\n# TYPE llmtap_egress_decisions_total counter\n"));
    assert!(!text.contains("wrong-password") && !text.contains("anything"));
}

#[tokio::test]
async fn report_mode_decisions_are_would_deny() {
    let ca = TestCa::new("upstream CA");
    let up = Upstream::https(&ca, &["report.test"]).await;
    let policy = policy_file("mode = \"report\"\n[profile.default]\nallow = []\n");
    let pin = format!("report.test:443:127.0.0.1:{}", up.port());
    let policy_path = policy.path().display().to_string();
    let proxy = TestProxy::start(&["--policy", &policy_path, "--connect-to", &pin]).await;
    assert_eq!(
        connect_status(proxy.addr, "report.test:443", None).await,
        200
    );
    let text = scrape(proxy.addr).await;
    let series = r#"llmtap_egress_decisions_total{client="default",decision="would_deny"}"#;
    assert_eq!(sample(&text, series), Some(1.0), "{text}");
}

// ---------------------------------------------------------------------------------------------
// Export counters, read at scrape time
// ---------------------------------------------------------------------------------------------

/// A sink whose counters the test sets.
struct FixedStatsSink(ExportStats);

impl ExchangeSink for FixedStatsSink {
    fn submit(&self, _exchange: Exchange) {}
    fn submit_egress(&self, _record: EgressRecord) {}
    fn stats(&self) -> serde_json::Value {
        serde_json::to_value(self.0).unwrap()
    }
}

/// llmtap in-process on 127.0.0.1:0 with `sink`; the CA dir lives as long as the proxy.
async fn start_with_sink(
    sink: Arc<dyn ExchangeSink>,
    flags: &[&str],
) -> (RunningProxy, tempfile::TempDir) {
    common::init_crypto();
    let ca_dir = tempfile::tempdir().unwrap();
    let ca = ca_dir.path().display().to_string();
    let addons = common::addons_dir().display().to_string();
    let mut argv = vec![
        "llmtap",
        "--listen",
        "127.0.0.1:0",
        "--ca-dir",
        &ca,
        "--addons-config",
        &addons,
    ];
    argv.extend_from_slice(flags);
    let cli = Cli::try_parse_from(argv).unwrap();
    let config = Config::from_args(&cli.run).unwrap();
    (llmtap::start(config, sink).await.unwrap(), ca_dir)
}

#[tokio::test]
async fn export_counters_are_the_sinks_numbers_at_scrape_time() {
    let stats = ExportStats {
        submitted: 12,
        exported: 9,
        dropped_queue_full: 2,
        dropped_export_failed: 1,
        queue_capacity: 4096,
        queue_len: 5,
        spool_pending: 3,
        ..Default::default()
    };
    let (proxy, _ca_dir) = start_with_sink(Arc::new(FixedStatsSink(stats)), &[]).await;
    let text = scrape(proxy.local_addr).await;
    for (series, want) in [
        ("llmtap_export_queue_length", 5.0),
        ("llmtap_export_queue_capacity", 4096.0),
        ("llmtap_export_spool_pending", 3.0),
        ("llmtap_export_records_submitted_total", 12.0),
        ("llmtap_export_records_exported_total", 9.0),
        (
            r#"llmtap_export_records_dropped_total{reason="queue_full"}"#,
            2.0,
        ),
        (
            r#"llmtap_export_records_dropped_total{reason="export_failed"}"#,
            1.0,
        ),
        (
            r#"llmtap_export_records_dropped_total{reason="shutdown"}"#,
            0.0,
        ),
    ] {
        assert_eq!(sample(&text, series), Some(want), "{series}:\n{text}");
    }
    // Scraping again reads the numbers again (they are not added up).
    let again = scrape(proxy.local_addr).await;
    assert_eq!(
        sample(&again, "llmtap_export_records_exported_total"),
        Some(9.0)
    );
    proxy.shutdown().await;
}

/// llmtap intercepting `api.anthropic.com` (pinned to a fake upstream) with `sink`.
async fn intercepting(
    sink: Arc<dyn ExchangeSink>,
    ca: &TestCa,
    up: &Upstream,
) -> (RunningProxy, tempfile::TempDir) {
    let pin = format!("{LLM_HOST}:{}:127.0.0.1", up.port());
    let ca_path = ca.pem_path.path().display().to_string();
    let flags = [
        "--resolve",
        &pin,
        "--upstream-ca",
        &ca_path,
        "--allow-private",
        "127.0.0.0/8,::1",
    ];
    start_with_sink(sink, &flags).await
}

/// A client through `proxy` that trusts only llmtap's CA (in `ca_dir`).
fn client_through(proxy: &RunningProxy, ca_dir: &tempfile::TempDir) -> reqwest::Client {
    let ca_pem = std::fs::read_to_string(ca_dir.path().join("ca.pem")).unwrap();
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{}", proxy.local_addr)).unwrap())
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .timeout(STEP)
        .build()
        .unwrap()
}

#[tokio::test]
async fn export_counters_follow_the_real_pipeline() {
    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.endpoint();
    let env = |name: &str| (name == "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT").then(|| endpoint.clone());
    let flags = ExportFlags {
        max_record_bytes: 1 << 20,
        queue_capacity: 64,
    };
    let mut export_config = ExportConfig::from_env_and_flags(&env, &flags).unwrap();
    export_config.batch.max_delay = Duration::from_millis(10);
    let redactor = Arc::new(Redactor::new(&RedactionConfig::default()).unwrap());
    let export = ExportHandle::start(export_config, redactor).unwrap();
    let ca = TestCa::new("upstream CA");
    let up = Upstream::https(&ca, &[LLM_HOST]).await;
    let (proxy, ca_dir) = intercepting(Arc::new(export.clone()), &ca, &up).await;

    let res = client_through(&proxy, &ca_dir)
        .post(format!("https://{LLM_HOST}:{}/v1/messages", up.port()))
        .header("content-type", "application/json")
        .body(MESSAGES_BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.text().await.unwrap();
    receiver.wait_for_records(1, STEP).await;

    let deadline = Instant::now() + STEP;
    let text = loop {
        let text = scrape(proxy.local_addr).await;
        let exported = sample(&text, "llmtap_export_records_exported_total").unwrap();
        if exported >= 1.0 {
            break text;
        }
        assert!(Instant::now() < deadline, "nothing exported:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(sample(&text, "llmtap_export_queue_capacity"), Some(64.0));
    assert!(sample(&text, "llmtap_export_queue_length").is_some());
    let dropped = r#"llmtap_export_records_dropped_total{reason="queue_full"}"#;
    assert_eq!(sample(&text, dropped), Some(0.0), "{text}");
    proxy.shutdown().await;
    export.shutdown(STEP).await;
}

// ---------------------------------------------------------------------------------------------
// A real call's record
// ---------------------------------------------------------------------------------------------

/// A real call through llmtap shows in `/metrics` with its labels, the tokens the parser
/// found and its timings (counted by the accounting stage as the call's record is handed in).
/// llmtap intercepting `api.anthropic.com`, pinned to a fake upstream the test CA signed.
async fn llm_proxy() -> (TestCa, Upstream, TestProxy) {
    let ca = TestCa::new("upstream CA");
    let up = Upstream::https(&ca, &[LLM_HOST, "localhost", "127.0.0.1"]).await;
    let pin = format!("{LLM_HOST}:{}:127.0.0.1", up.port());
    let ca_path = ca.pem_path.path().display().to_string();
    let proxy = TestProxy::start(&[
        "--resolve",
        &pin,
        "--upstream-ca",
        &ca_path,
        "--allow-private",
        "127.0.0.0/8,::1",
    ])
    .await;
    (ca, up, proxy)
}

/// `POST /v1/messages` through llmtap, read to its end.
async fn call(proxy: &TestProxy, up: &Upstream) {
    let res = proxy
        .client()
        .post(format!("https://{LLM_HOST}:{}/v1/messages", up.port()))
        .header("content-type", "application/json")
        .body(MESSAGES_BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.text().await.unwrap();
}

#[tokio::test]
async fn a_real_calls_record_shows_with_its_labels_and_tokens() {
    let (_ca, up, proxy) = llm_proxy().await;
    let res = proxy
        .client()
        .post(format!("https://{LLM_HOST}:{}/v1/messages", up.port()))
        .header("content-type", "application/json")
        .header("x-api-key", "sk-ant-metrics-secret")
        .body(MESSAGES_BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.text().await.unwrap();
    let ex = proxy.records.next().await;

    let text = scrape(proxy.addr).await;
    let client = ex.client_name.as_deref().unwrap_or("unknown");
    let labels = format!(r#"client="{client}",provider="anthropic",model="claude-sonnet-4-5""#);
    let calls = format!(r#"llmtap_calls_total{{{labels},status_class="2xx"}}"#);
    assert_eq!(sample(&text, &calls), Some(1.0), "{text}");
    let tokens = |kind: &str| {
        let series = format!(
            r#"llmtap_tokens_total{{client="{client}",model="claude-sonnet-4-5",kind="{kind}"}}"#
        );
        sample(&text, &series)
    };
    // The canned answer says 12 input and 3 output tokens.
    assert_eq!(tokens("input"), Some(12.0), "{text}");
    assert_eq!(tokens("output"), Some(3.0), "{text}");
    let count = r#"llmtap_call_duration_seconds_count{provider="anthropic"}"#;
    assert_eq!(sample(&text, count), Some(1.0), "{text}");
    let first = r#"llmtap_time_to_first_chunk_seconds_count{provider="anthropic"}"#;
    assert_eq!(sample(&text, first), Some(1.0), "{text}");
    for family in [
        "# TYPE llmtap_calls_total counter",
        "# TYPE llmtap_tokens_total counter",
        "# TYPE llmtap_call_duration_seconds histogram",
        "# TYPE llmtap_time_to_first_chunk_seconds histogram",
    ] {
        assert!(
            text.lines().any(|l| l == family),
            "{family} missing:\n{text}"
        );
    }
    assert!(!text.contains("sk-ant-metrics-secret"));
}

/// A hostile upstream names the model: the value is cut, cleaned and escaped, and the
/// exposition stays valid.
#[tokio::test]
async fn a_hostile_model_name_cannot_break_the_exposition() {
    let (_ca, up, proxy) = llm_proxy().await;
    let model = format!(
        "evil\\\"}} 1\\nllmtap_calls_total{{x=\\\"y\\\\{}",
        "m".repeat(300)
    );
    let answer = format!(
        r#"{{"id":"msg_1","type":"message","model":"{model}","content":[],"usage":{{"input_tokens":1,"output_tokens":1}}}}"#
    );
    up.state
        .can("/v1/messages", Canned::new(200, "application/json", answer));
    call(&proxy, &up).await;
    proxy.records.next().await;
    let text = scrape(proxy.addr).await;
    let line = text
        .lines()
        .find(|l| l.starts_with("llmtap_calls_total{"))
        .unwrap_or_else(|| panic!("no call counted:\n{text}"));
    let (labels, _) = label_set(&line["llmtap_calls_total".len()..]).unwrap();
    let model = &labels.iter().find(|(k, _)| k == "model").unwrap().1;
    assert!(
        model.starts_with("evil\"} 1_llmtap_calls_total{x=\"y\\m"),
        "{model:?}"
    );
    assert!(model.len() <= 128, "{} bytes", model.len());
}
