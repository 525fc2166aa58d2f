//! Limits and budgets per client (issue 11): 429 in each provider's shape before anything goes
//! upstream, budgets charged when usage is known (estimated when absent), concurrency, zero
//! limits, reload, and counters shared by two llmtap processes through a real Redis.
//!
//! Network rules: loopback only; every name is pinned (`--connect-to`); every wait bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::upstream::Canned;
use common::{STEP, TestCa, TestProxy, Upstream, llmtap_bin};
use llmtap::capture::Outcome;

const MESSAGES: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[]}"#;
const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[]}"#;
const HOSTS: [&str; 3] = [
    "api.anthropic.com",
    "api.openai.com",
    "generativelanguage.googleapis.com",
];

fn path(p: &Path) -> String {
    p.display().to_string()
}

struct Setup {
    up: Upstream,
    ca: TestCa,
    policy: tempfile::NamedTempFile,
}

async fn setup(limits: &str) -> Setup {
    let ca = TestCa::new("limits upstream CA");
    let up = Upstream::https(&ca, &HOSTS).await;
    let policy = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    write_policy(policy.path(), limits);
    Setup { up, ca, policy }
}

fn write_policy(file: &Path, limits: &str) {
    std::fs::write(
        file,
        format!(
            r#"
[[client]]
name = "code-sandbox"
profile = "code"
sources = ["127.0.0.1/32"]
[profile.code]
allow = ["api.anthropic.com", "api.openai.com", "generativelanguage.googleapis.com"]
[profile.code.limits]
{limits}
"#
        ),
    )
    .unwrap();
}

impl Setup {
    fn flags(&self) -> Vec<String> {
        let mut flags = vec![
            "--policy".to_string(),
            path(self.policy.path()),
            "--upstream-ca".to_string(),
            path(self.ca.pem_path.path()),
            "--llm-hosts".to_string(),
            HOSTS.join(","),
        ];
        for host in HOSTS {
            flags.push("--connect-to".to_string());
            flags.push(format!("{host}:443:127.0.0.1:{}", self.up.port()));
        }
        flags
    }

    fn requests(&self) -> usize {
        self.up.state.requests.load(Ordering::SeqCst)
    }
}

async fn start(setup: &Setup, extra: &[&str]) -> TestProxy {
    let mut flags = setup.flags();
    flags.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    TestProxy::start(&refs).await
}

fn client(proxy_addr: SocketAddr, ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{proxy_addr}")).unwrap())
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .timeout(STEP)
        .build()
        .unwrap()
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    body: &'static str,
) -> (u16, http::HeaderMap, String) {
    let res = http.post(url).body(body).send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, headers, res.text().await.unwrap())
}

/// Windows are fixed UTC minutes: start a per-minute test well inside one.
async fn away_from_the_minute_end() {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let left = 60 - secs % 60;
    if left < 10 {
        tokio::time::sleep(Duration::from_secs(left + 1)).await;
    }
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test]
async fn requests_per_minute_get_429_in_each_providers_own_shape_before_going_upstream() {
    let setup = setup("requests_per_minute = 2").await;
    setup.up.state.can(
        "/v1/chat/completions",
        Canned::new(200, "application/json", r#"{"id":"c","model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#),
    );
    away_from_the_minute_end().await;
    let proxy = start(&setup, &[]).await;
    let http = client(proxy.addr, &proxy.ca_pem);
    let anthropic = "https://api.anthropic.com/v1/messages";
    for _ in 0..2 {
        assert_eq!(post(&http, anthropic, MESSAGES).await.0, 200);
        assert_eq!(proxy.records.next().await.status, Some(200));
    }
    let before = setup.requests();
    let (status, headers, body) = post(&http, anthropic, MESSAGES).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(headers["x-llmtap-error"], "limit");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(headers["x-should-retry"], "true");
    let doc = json(&body);
    assert_eq!(doc["type"], "error");
    assert_eq!(doc["error"]["type"], "rate_limit_error");
    let message = doc["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("requests_per_minute") && message.contains("code-sandbox"),
        "{message}"
    );
    assert_eq!(setup.requests(), before, "nothing went upstream");
    let record = proxy.records.next().await;
    assert_eq!(record.status, Some(429));
    assert_eq!(record.limit, Some("requests_per_minute"));
    assert!(matches!(
        record.outcome,
        Outcome::Refused { kind: "limit", .. }
    ));

    // OpenAI's shape for an OpenAI call, Gemini's for a Gemini call.
    let (status, _, body) = post(&http, "https://api.openai.com/v1/chat/completions", CHAT).await;
    assert_eq!(status, 429);
    let doc = json(&body);
    assert_eq!(doc["error"]["type"], "rate_limit_exceeded");
    assert_eq!(doc["error"]["code"], "rate_limit_exceeded");
    let (status, _, body) = post(
        &http,
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent",
        "{}",
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(json(&body)["error"]["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(setup.requests(), before);
}

#[tokio::test]
async fn token_budgets_are_charged_when_the_usage_is_known_and_refuse_the_next_call() {
    // The mock's Anthropic answer says 12 input and 3 output tokens.
    let setup = setup("output_tokens_per_hour = 3\ninput_tokens_per_hour = 1000").await;
    let proxy = start(&setup, &[]).await;
    let http = client(proxy.addr, &proxy.ca_pem);
    let url = "https://api.anthropic.com/v1/messages";
    assert_eq!(post(&http, url, MESSAGES).await.0, 200);
    let record = proxy.records.next().await;
    assert!(!record.usage_estimated);
    let (status, headers, body) = post(&http, url, MESSAGES).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(
        headers["x-should-retry"], "false",
        "a used budget renews with its window"
    );
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry), "{retry}");
    assert!(body.contains("output_tokens_per_hour"), "{body}");
    assert_eq!(
        proxy.records.next().await.limit,
        Some("output_tokens_per_hour")
    );
    let health: serde_json::Value = json(
        &reqwest::get(format!("http://{}/healthz", proxy.addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    assert_eq!(health["limits"]["store"], "memory", "{health}");
}

#[tokio::test]
async fn a_stream_without_usage_is_charged_an_estimate_from_its_bytes() {
    let setup = setup("output_tokens_per_hour = 50").await;
    // An OpenAI stream without include_usage: no usage anywhere. About 600 bytes.
    let mut sse = String::new();
    for i in 0..12 {
        sse.push_str(&format!(
            "data: {{\"id\":\"c\",\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"word {i}\"}}}}]}}\n\n"
        ));
    }
    sse.push_str("data: [DONE]\n\n");
    setup.up.state.can(
        "/v1/chat/completions",
        Canned::new(200, "text/event-stream", sse),
    );
    let proxy = start(&setup, &[]).await;
    let http = client(proxy.addr, &proxy.ca_pem);
    let url = "https://api.openai.com/v1/chat/completions";
    let stream = r#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#;
    assert_eq!(post(&http, url, stream).await.0, 200);
    let record = proxy.records.next().await;
    assert!(record.usage_estimated, "absent usage is estimated");
    assert_eq!(
        record.response_facts.as_ref().unwrap().usage.output_tokens,
        None,
        "the record's usage stays what the provider said"
    );
    assert!(
        record.cost_usd.is_some_and(|c| c > 0.0),
        "{:?}",
        record.cost_usd
    );
    let (status, _, body) = post(&http, url, stream).await;
    assert_eq!(
        status, 429,
        "leaving usage out is no way around the budget: {body}"
    );
}

#[tokio::test]
async fn a_cost_budget_uses_the_price_table() {
    let setup = setup("cost_usd_per_day = 0.00001").await;
    let proxy = start(&setup, &[]).await;
    let http = client(proxy.addr, &proxy.ca_pem);
    let url = "https://api.anthropic.com/v1/messages";
    assert_eq!(post(&http, url, MESSAGES).await.0, 200);
    let record = proxy.records.next().await;
    // claude-sonnet-4-5: 12 input tokens at $3/M, 3 output at $15/M.
    let cost = record.cost_usd.unwrap();
    assert!((cost - 0.000081).abs() < 1e-9, "{cost}");
    let (status, _, body) = post(&http, url, MESSAGES).await;
    assert_eq!(status, 429);
    assert!(body.contains("cost_usd_per_day"), "{body}");
}

#[tokio::test]
async fn concurrent_calls_are_capped_and_a_call_in_flight_is_never_cut() {
    let setup = setup("concurrent_calls = 1").await;
    let proxy = start(&setup, &[]).await;
    let http = client(proxy.addr, &proxy.ca_pem);
    let mut stream = http
        .get("https://api.anthropic.com/sse?gate=1&n=3&delay_ms=0")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let first = tokio::time::timeout(STEP, stream.chunk())
        .await
        .unwrap()
        .unwrap();
    assert!(first.is_some());
    let (status, _, body) = post(&http, "https://api.anthropic.com/v1/messages", MESSAGES).await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("concurrent_calls"));
    setup.up.state.sse_gate.notify_one();
    while tokio::time::timeout(STEP, stream.chunk())
        .await
        .unwrap()
        .unwrap()
        .is_some()
    {}
    // The stream ran to its end; its place is free again.
    let deadline = Instant::now() + STEP;
    loop {
        let (status, _, _) = post(&http, "https://api.anthropic.com/v1/messages", MESSAGES).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the place never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_zero_limit_refuses_everything_and_a_reload_lifts_it() {
    let setup = setup("requests_per_minute = 0").await;
    let proxy = start(&setup, &[]).await;
    let http = client(proxy.addr, &proxy.ca_pem);
    let url = "https://api.anthropic.com/v1/messages";
    let (status, _, body) = post(&http, url, MESSAGES).await;
    assert_eq!(status, 429);
    assert!(body.contains("refuses every call"), "{body}");
    assert_eq!(setup.requests(), 0);
    write_policy(setup.policy.path(), "requests_per_minute = 100");
    let summary = proxy.proxy.as_ref().unwrap().reload_policy().unwrap();
    assert!(summary.contains("requests_per_minute = 100"), "{summary}");
    assert_eq!(post(&http, url, MESSAGES).await.0, 200);
}

#[test]
fn bad_limits_and_store_flags_stop_the_start_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    write_policy(
        &policy,
        "requests_per_minute = -1\ncost_usd_per_day = \"lots\"\ntokens_per_day = 5",
    );
    let out = Command::new(llmtap_bin())
        .args(["--listen", "127.0.0.1:0", "--ca-dir"])
        .arg(dir.path())
        .arg("--policy")
        .arg(&policy)
        .args(["--limits-store", "redis://:hunter2secret@127.0.0.1:1/x"])
        .args(["--limits-store-fail", "maybe"])
        .env("PROXY_ADDONS_CONFIG", common::addons_dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "profile.code.limits.requests_per_minute = \"-1\"",
        "profile.code.limits.cost_usd_per_day = \"lots\"",
        "profile.code.limits.tokens_per_day",
        "unknown limit",
        "--limits-store",
        "--limits-store-fail = \"maybe\": must be open or closed",
    ] {
        assert!(stderr.contains(needle), "{needle:?} in {stderr}");
    }
    assert!(!stderr.contains("hunter2secret"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// Redis: two llmtap processes, one budget.
// ---------------------------------------------------------------------------------------------

/// A `redis-server` on a loopback port of its own, ended (by PID) on drop.
struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Redis {
    fn start() -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is needed for the limits tests: apt-get install redis-server (scripts/test installs it)");
        let deadline = Instant::now() + STEP;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis {
            child,
            port,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.signal("CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An llmtap binary of its own.
struct Llmtap {
    child: Child,
    addr: SocketAddr,
    ca_pem: String,
    _ca_dir: tempfile::TempDir,
}

impl Llmtap {
    fn start(flags: &[String]) -> Llmtap {
        let ca_dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new(llmtap_bin())
            .args(["--listen", &addr.to_string(), "--ca-dir"])
            .arg(ca_dir.path())
            .args(flags)
            .env("PROXY_ADDONS_CONFIG", common::addons_dir())
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + STEP;
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "llmtap did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let ca_pem = std::fs::read_to_string(ca_dir.path().join("ca.pem")).unwrap();
        Llmtap {
            child,
            addr,
            ca_pem,
            _ca_dir: ca_dir,
        }
    }

    async fn health(&self) -> serde_json::Value {
        let text = reqwest::Client::builder()
            .no_proxy()
            .timeout(STEP)
            .build()
            .unwrap()
            .get(format!("http://{}/healthz", self.addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        json(&text)
    }

    /// Waits until the store connection is up (it is made in the background).
    async fn wait_store_connected(&self) {
        let deadline = Instant::now() + STEP;
        while self.health().await["limits"]["store_connected"] != true {
            assert!(Instant::now() < deadline, "never connected to the store");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Llmtap {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn two_llmtap_processes_stop_together_at_one_budget_in_redis() {
    let redis = Redis::start();
    let setup = setup("output_tokens_per_hour = 9\nrequests_per_minute = 1000").await;
    let mut flags = setup.flags();
    flags.extend(["--limits-store".to_string(), redis.url()]);
    let a = Llmtap::start(&flags);
    let b = Llmtap::start(&flags);
    a.wait_store_connected().await;
    b.wait_store_connected().await;
    let clients = [client(a.addr, &a.ca_pem), client(b.addr, &b.ca_pem)];
    let url = "https://api.anthropic.com/v1/messages";
    // Each answer costs 3 output tokens: together, three calls use up the budget of nine.
    let mut ok = 0;
    let mut refused_by = Vec::new();
    for i in 0..8 {
        let http = &clients[i % 2];
        // Charges reach Redis just after the answer; give each one its moment.
        let (status, _, body) = post(http, url, MESSAGES).await;
        match status {
            200 => ok += 1,
            429 => {
                assert!(body.contains("output_tokens_per_hour"), "{body}");
                refused_by.push(i % 2);
            }
            other => panic!("status {other}: {body}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ok, 3, "one budget across both processes");
    assert!(
        refused_by.contains(&0) && refused_by.contains(&1),
        "both refuse: {refused_by:?}"
    );
    // Alone, each would have allowed three calls.
    let alone = Llmtap::start(&setup.flags());
    let http = client(alone.addr, &alone.ca_pem);
    for _ in 0..3 {
        assert_eq!(post(&http, url, MESSAGES).await.0, 200);
    }
}

#[tokio::test]
async fn when_redis_is_down_or_stalled_fail_open_uses_local_counters_and_fail_closed_refuses() {
    let redis = Redis::start();
    let setup = setup("requests_per_minute = 1000").await;
    let mut open_flags = setup.flags();
    open_flags.extend(["--limits-store".to_string(), redis.url()]);
    let mut closed_flags = open_flags.clone();
    closed_flags.extend(["--limits-store-fail".to_string(), "closed".to_string()]);
    let open = Llmtap::start(&open_flags);
    let closed = Llmtap::start(&closed_flags);
    open.wait_store_connected().await;
    closed.wait_store_connected().await;
    let url = "https://api.anthropic.com/v1/messages";
    let open_http = client(open.addr, &open.ca_pem);
    let closed_http = client(closed.addr, &closed.ca_pem);
    assert_eq!(post(&open_http, url, MESSAGES).await.0, 200);
    assert_eq!(post(&closed_http, url, MESSAGES).await.0, 200);

    // A stalled Redis (stopped, so connections hang): traffic must not wait on it.
    redis.signal("STOP");
    let started = Instant::now();
    assert_eq!(post(&open_http, url, MESSAGES).await.0, 200);
    let (status, headers, body) = post(&closed_http, url, MESSAGES).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(headers["x-llmtap-error"], "limits_store");
    assert!(started.elapsed() < STEP);
    let health = open.health().await;
    assert!(
        health["limits"]["store_errors"].as_u64().unwrap() >= 1,
        "{health}"
    );
    assert_eq!(health["limits"]["store_fail"], "open");
    let metrics = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{}/metrics", open.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("llmtap_limits_store_errors_total"),
        "{metrics}"
    );

    // Killed outright: the same, and llmtap keeps serving.
    redis.signal("CONT");
    drop(redis);
    assert_eq!(post(&open_http, url, MESSAGES).await.0, 200);
    assert_eq!(post(&closed_http, url, MESSAGES).await.0, 503);
}
