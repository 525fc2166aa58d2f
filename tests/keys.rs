//! Real keys live only in llmtap (issue 10): the sentinel swap on intercepted requests and on
//! base-URL routes, the "never to another host" rule, foreign-key refusals and alarms, keys
//! bound to clients, rotation, and scans of everything llmtap emits for the real key.
//!
//! Network rules: loopback only; every name is pinned with `--connect-to` (nothing is looked
//! up), every wait is bounded by `STEP`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/otlp_receiver.rs"]
mod otlp_receiver;

use std::io::Read as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{STEP, TestCa, TestProxy, Upstream, llmtap_bin};
use llmtap::capture::{Exchange, Outcome};
use llmtap::export::record::Severity;
use otlp_receiver::{OtlpReceiver, payload};

const REAL_ANTHROPIC: &str = "sk-ant-api03-REAL-anthropic-key-0123456789abcdef";
const REAL_OPENAI: &str = "sk-proj-REAL-openai-key-0123456789abcdef";
const REAL_GEMINI: &str = "AIzaREALgeminiKEY0123456789abcdefghijk";
const SENTINEL: &str = "llmtap-managed";
/// A real-looking key the sandbox should not have.
const STOLEN: &str = "sk-ant-api03-stolen-sandbox-key-9876543210zyx";
const MESSAGES: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[]}"#;
const HOSTS: [&str; 5] = [
    "api.anthropic.com",
    "api.openai.com",
    "generativelanguage.googleapis.com",
    "other.test",
    "tunnel.test",
];

struct Setup {
    up: Upstream,
    ca: TestCa,
    _dir: tempfile::TempDir,
    keys_path: std::path::PathBuf,
    anthropic_key_file: std::path::PathBuf,
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// A keys file: anthropic (sentinel required; optionally only for `clients`), openai, gemini.
async fn setup(anthropic_clients: Option<&str>) -> Setup {
    let ca = TestCa::new("keys upstream CA");
    let up = Upstream::https(&ca, &HOSTS).await;
    let dir = tempfile::tempdir().unwrap();
    let anthropic_key_file = dir.path().join("anthropic_api_key");
    let openai = dir.path().join("openai_api_key");
    let gemini = dir.path().join("gemini_api_key");
    std::fs::write(&anthropic_key_file, format!("{REAL_ANTHROPIC}\n")).unwrap();
    std::fs::write(&openai, REAL_OPENAI).unwrap();
    std::fs::write(&gemini, REAL_GEMINI).unwrap();
    let clients = anthropic_clients
        .map(|c| format!("clients = [{c}]"))
        .unwrap_or_default();
    let keys_path = dir.path().join("keys.toml");
    std::fs::write(
        &keys_path,
        format!(
            r#"
[[key]]
host = "api.anthropic.com"
from_file = "{}"
require_sentinel = true
{clients}
[[key]]
host = "api.openai.com"
from_file = "{}"
[[key]]
host = "generativelanguage.googleapis.com"
from_file = "{}"
"#,
            path(&anthropic_key_file),
            path(&openai),
            path(&gemini)
        ),
    )
    .unwrap();
    Setup {
        up,
        ca,
        _dir: dir,
        keys_path,
        anthropic_key_file,
    }
}

impl Setup {
    fn flags(&self) -> Vec<String> {
        let mut flags = vec![
            "--keys".to_string(),
            path(&self.keys_path),
            "--upstream-ca".to_string(),
            path(self.ca.pem_path.path()),
            "--llm-hosts".to_string(),
            "api.anthropic.com,api.openai.com,generativelanguage.googleapis.com,other.test"
                .to_string(),
        ];
        for host in HOSTS {
            flags.push("--connect-to".to_string());
            flags.push(format!("{host}:443:127.0.0.1:{}", self.up.port()));
        }
        // Plain HTTP to a keyed host is refused before any connection; pinned all the same,
        // so that nothing is ever looked up.
        flags.push("--connect-to".to_string());
        flags.push(format!("api.anthropic.com:80:127.0.0.1:{}", self.up.port()));
        flags
    }

    /// The request the upstream received last: path-and-query and headers.
    fn last_received(&self) -> (String, http::HeaderMap) {
        self.up
            .state
            .received
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap()
    }

    fn received_count(&self) -> usize {
        self.up.state.received.lock().unwrap().len()
    }
}

async fn start(setup: &Setup, extra: &[&str]) -> TestProxy {
    let mut flags = setup.flags();
    flags.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    TestProxy::start(&refs).await
}

/// A client through llmtap trusting llmtap's CA and the upstream's (for the tunnel case).
fn client(proxy: &TestProxy, setup: &Setup, creds: Option<(&str, &str)>) -> reqwest::Client {
    let mut p = reqwest::Proxy::all(format!("http://{}", proxy.addr)).unwrap();
    if let Some((user, password)) = creds {
        p = p.basic_auth(user, password);
    }
    reqwest::Client::builder()
        .proxy(p)
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(proxy.ca_pem.as_bytes()).unwrap())
        .add_root_certificate(reqwest::Certificate::from_pem(setup.ca.pem.as_bytes()).unwrap())
        .timeout(STEP)
        .build()
        .unwrap()
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> &'a str {
    headers.get(name).map_or("", |v| v.to_str().unwrap())
}

fn record_header<'a>(record: &'a Exchange, name: &str) -> Option<&'a str> {
    record
        .request_headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

async fn healthz(addr: SocketAddr) -> serde_json::Value {
    let text = reqwest::Client::builder()
        .no_proxy()
        .timeout(STEP)
        .build()
        .unwrap()
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn the_sentinel_becomes_the_real_key_only_on_its_own_host_over_tls() {
    let setup = setup(None).await;
    let proxy = start(&setup, &[]).await;
    let http = client(&proxy, &setup, None);

    // x-api-key, Anthropic.
    let res = http
        .post("https://api.anthropic.com/v1/messages")
        .header("x-api-key", SENTINEL)
        .header("anthropic-version", "2023-06-01")
        .body(MESSAGES)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let _ = res.bytes().await.unwrap();
    let (pq, headers) = setup.last_received();
    assert_eq!(pq, "/v1/messages");
    assert_eq!(header(&headers, "x-api-key"), REAL_ANTHROPIC);
    assert_eq!(header(&headers, "anthropic-version"), "2023-06-01");
    let record = proxy.records.next().await;
    assert!(
        record.key.injected && !record.key.foreign,
        "{:?}",
        record.key
    );
    assert_eq!(record_header(&record, "x-api-key"), Some(SENTINEL));
    assert_eq!(record.outcome, Outcome::Complete);

    // Bearer, OpenAI: same place, same scheme.
    let res = http
        .post("https://api.openai.com/json")
        .header("authorization", format!("Bearer {SENTINEL}"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let _ = res.bytes().await;
    assert_eq!(
        header(&setup.last_received().1, "authorization"),
        format!("Bearer {REAL_OPENAI}")
    );
    assert!(proxy.records.next().await.key.injected);

    // `key` query parameter, Gemini; the recorded URL keeps the sentinel.
    let res = http
        .get(format!(
            "https://generativelanguage.googleapis.com/json?alt=sse&key={SENTINEL}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let _ = res.bytes().await;
    assert_eq!(
        setup.last_received().0,
        format!("/json?alt=sse&key={REAL_GEMINI}")
    );
    let record = proxy.records.next().await;
    assert!(record.key.injected);
    assert!(record.url.contains(SENTINEL) && !record.url.contains(REAL_GEMINI));

    // Another intercepted host holding every kind of sentinel: out unchanged.
    let res = http
        .get(format!("https://other.test/json?key={SENTINEL}"))
        .header("x-api-key", SENTINEL)
        .header("authorization", format!("Bearer {SENTINEL}"))
        .header("x-goog-api-key", SENTINEL)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let _ = res.bytes().await;
    let (pq, headers) = setup.last_received();
    assert_eq!(pq, format!("/json?key={SENTINEL}"));
    assert_eq!(header(&headers, "x-api-key"), SENTINEL);
    assert_eq!(
        header(&headers, "authorization"),
        format!("Bearer {SENTINEL}")
    );
    assert_eq!(header(&headers, "x-goog-api-key"), SENTINEL);
    assert!(!proxy.records.next().await.key.injected);

    // A tunnel (not intercepted): llmtap never sees inside, the sentinel arrives as sent.
    let res = http
        .get("https://tunnel.test/json")
        .header("x-api-key", SENTINEL)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let _ = res.bytes().await;
    assert_eq!(header(&setup.last_received().1, "x-api-key"), SENTINEL);

    // Plain HTTP to a keyed host with the sentinel: refused, nothing leaves.
    let before = setup.received_count();
    let res = http
        .post("http://api.anthropic.com/v1/messages")
        .header("x-api-key", SENTINEL)
        .body(MESSAGES)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403, "{:?}", res.headers());
    assert_eq!(res.headers()["x-llmtap-error"], "key_cleartext");
    assert_eq!(setup.received_count(), before);
    let record = proxy.records.next().await;
    assert_eq!(record.status, Some(403));
    assert!(matches!(
        record.outcome,
        Outcome::Refused {
            kind: "key_cleartext",
            ..
        }
    ));

    let health = healthz(proxy.addr).await;
    assert_eq!(health["keys"]["injected"], 3, "{health}");
    assert_eq!(health["keys"]["refused"], 1, "{health}");
}

#[tokio::test]
async fn foreign_keys_are_refused_where_the_sentinel_is_required_and_flagged_elsewhere() {
    let setup = setup(None).await;
    let proxy = start(&setup, &[]).await;
    let http = client(&proxy, &setup, None);

    for place in ["x-api-key", "authorization"] {
        let value = if place == "authorization" {
            format!("Bearer {STOLEN}")
        } else {
            STOLEN.to_string()
        };
        let before = setup.received_count();
        let res = http
            .post("https://api.anthropic.com/v1/messages")
            .header(place, value)
            .body(MESSAGES)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "{place}");
        assert_eq!(res.headers()["x-llmtap-error"], "foreign_key");
        let body = res.text().await.unwrap();
        assert!(!body.contains(STOLEN), "{body}");
        assert_eq!(setup.received_count(), before, "nothing went upstream");
        let record = proxy.records.next().await;
        assert!(record.key.foreign && !record.key.injected);
        assert_eq!(record.status, Some(403));
        assert!(matches!(
            record.outcome,
            Outcome::Refused {
                kind: "foreign_key",
                ..
            }
        ));
        assert_eq!(Severity::for_record(&record), Severity::Warn);
    }

    // A credential that is no sentinel, even a harmless-looking one, is refused there too.
    let res = http
        .post("https://api.anthropic.com/v1/messages")
        .header("x-api-key", "not-a-key")
        .body(MESSAGES)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert!(!proxy.records.next().await.key.foreign);

    // Without require_sentinel the call goes on, flagged and WARN.
    let res = http
        .post("https://api.openai.com/json")
        .header("authorization", format!("Bearer {STOLEN}"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let _ = res.bytes().await;
    assert_eq!(
        header(&setup.last_received().1, "authorization"),
        format!("Bearer {STOLEN}")
    );
    let record = proxy.records.next().await;
    assert!(record.key.foreign && !record.key.injected);
    assert_eq!(record.status, Some(200));
    assert_eq!(Severity::for_record(&record), Severity::Warn);

    // On an intercepted host that has no key entry at all, too.
    let res = http
        .get("https://other.test/json")
        .header("x-api-key", STOLEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let _ = res.bytes().await;
    assert!(proxy.records.next().await.key.foreign);

    let health = healthz(proxy.addr).await;
    assert_eq!(health["keys"]["foreign"], 4, "{health}");
    assert_eq!(health["keys"]["refused"], 3, "{health}");
    assert_eq!(health["keys"]["injected"], 0, "{health}");
}

#[tokio::test]
async fn a_key_bound_to_clients_is_refused_to_the_others() {
    let setup = setup(Some("\"code\"")).await;
    let policy = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    let token = "browser-token-0123";
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(
        policy.path(),
        format!(
            r#"
[[client]]
name = "code"
profile = "p"
sources = ["127.0.0.1/32"]
[[client]]
name = "browser"
profile = "p"
token_sha256 = "{hex}"
[profile.p]
allow = ["*"]
"#
        ),
    )
    .unwrap();
    let proxy = start(&setup, &["--policy", &path(policy.path())]).await;
    let code = client(&proxy, &setup, None);
    let res = code
        .post("https://api.anthropic.com/v1/messages")
        .header("x-api-key", SENTINEL)
        .body(MESSAGES)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let _ = res.bytes().await;
    assert_eq!(
        header(&setup.last_received().1, "x-api-key"),
        REAL_ANTHROPIC
    );
    assert_eq!(
        proxy.records.next().await.client_name.as_deref(),
        Some("code")
    );

    let browser = client(&proxy, &setup, Some(("browser", token)));
    let before = setup.received_count();
    let res = browser
        .post("https://api.anthropic.com/v1/messages")
        .header("x-api-key", SENTINEL)
        .body(MESSAGES)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(res.headers()["x-llmtap-error"], "key_not_granted");
    assert_eq!(setup.received_count(), before);
    let record = proxy.records.next().await;
    assert_eq!(record.client_name.as_deref(), Some("browser"));
    assert!(matches!(
        record.outcome,
        Outcome::Refused {
            kind: "key_not_granted",
            ..
        }
    ));
}

#[tokio::test]
async fn a_rotated_key_applies_to_new_requests_and_a_bad_file_keeps_the_old_keys() {
    let setup = setup(None).await;
    let mut proxy = start(&setup, &[]).await;
    let http = client(&proxy, &setup, None);
    let call = || async {
        let res = http
            .post("https://api.anthropic.com/v1/messages")
            .header("x-api-key", SENTINEL)
            .body(MESSAGES)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let _ = res.bytes().await;
        header(&setup.last_received().1, "x-api-key").to_string()
    };
    assert_eq!(call().await, REAL_ANTHROPIC);
    let rotated = "sk-ant-api03-ROTATED-key-aaaaaaaaaaaaaaaa";
    std::fs::write(&setup.anthropic_key_file, rotated).unwrap();
    let running = proxy.proxy.as_ref().unwrap();
    let summary = running.reload_keys().unwrap().unwrap();
    assert!(!summary.contains(rotated), "{summary}");
    assert_eq!(call().await, rotated);

    // The key source is gone: the reload fails, naming the entry, and the keys stay.
    std::fs::remove_file(&setup.anthropic_key_file).unwrap();
    let err = running.reload_keys().unwrap_err().to_string();
    assert!(err.contains("key[0] (api.anthropic.com)"), "{err}");
    assert!(err.contains("previous keys stay"), "{err}");
    assert_eq!(call().await, rotated);
    // A broken file: the same.
    std::fs::write(&setup.keys_path, "[[key]]\nhost = \n").unwrap();
    assert!(running.reload_keys().is_err());
    assert_eq!(call().await, rotated);
    drop(http);
    proxy.shutdown().await;
}

/// A client that talks to the base-URL port directly, from `from`.
fn direct(from: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(from)
        .timeout(STEP)
        .build()
        .unwrap()
}

#[tokio::test]
async fn base_url_routes_swap_the_key_check_the_policy_and_record_the_upstream_url() {
    let setup = setup(None).await;
    let policy = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(
        policy.path(),
        r#"
[[client]]
name = "code-sandbox"
profile = "code"
sources = ["127.0.0.1/32"]
[profile.code]
allow = ["api.anthropic.com", "generativelanguage.googleapis.com"]
"#,
    )
    .unwrap();
    let proxy = start(
        &setup,
        &[
            "--reverse-listen",
            "127.0.0.1:0",
            "--policy",
            &path(policy.path()),
        ],
    )
    .await;
    let reverse = proxy.proxy.as_ref().unwrap().reverse_addr.unwrap();
    let http = direct(IpAddr::V4(Ipv4Addr::LOCALHOST));

    let res = http
        .post(format!("http://{reverse}/anthropic/v1/messages"))
        .header("x-api-key", SENTINEL)
        .body(MESSAGES)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("msg_01"));
    let (pq, headers) = setup.last_received();
    assert_eq!(pq, "/v1/messages");
    assert_eq!(header(&headers, "x-api-key"), REAL_ANTHROPIC);
    assert_eq!(
        *setup.up.state.last_host.lock().unwrap(),
        "api.anthropic.com"
    );
    let record = proxy.records.next().await;
    assert_eq!(record.url, "https://api.anthropic.com/v1/messages");
    assert_eq!(record.client_name.as_deref(), Some("code-sandbox"));
    assert_eq!(record.provider.as_deref(), Some("anthropic"));
    assert!(record.key.injected);
    let audit = proxy.audit.next_for("api.anthropic.com").await;
    assert_eq!(audit.route, "reverse");

    let res = http
        .get(format!("http://{reverse}/gemini/json?key={SENTINEL}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let _ = res.bytes().await;
    assert_eq!(setup.last_received().0, format!("/json?key={REAL_GEMINI}"));

    // The profile does not allow the route's upstream: refused by the policy.
    let before = setup.received_count();
    let res = http
        .post(format!("http://{reverse}/openai/v1/chat/completions"))
        .header("authorization", format!("Bearer {SENTINEL}"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(res.headers()["x-llmtap-error"], "policy");
    assert_eq!(setup.received_count(), before);

    // A foreign key on a route is refused like on the intercepted path.
    let res = http
        .post(format!("http://{reverse}/anthropic/v1/messages"))
        .header("x-api-key", STOLEN)
        .body(MESSAGES)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(res.headers()["x-llmtap-error"], "foreign_key");
    assert_eq!(setup.received_count(), before);

    // Any other path: 404, and the connection is closed.
    for other in ["/", "/healthz", "/anthropicx/v1/messages", "/v1/messages"] {
        let res = http
            .get(format!("http://{reverse}{other}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{other}");
        assert_eq!(res.headers()["connection"], "close", "{other}");
    }
    // This port is no proxy: CONNECT and absolute-form get 404 too.
    let mut tcp = tokio::net::TcpStream::connect(reverse).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(b"CONNECT api.anthropic.com:443 HTTP/1.1\r\nHost: api.anthropic.com:443\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(STEP, tcp.read_to_end(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert!(
        reply.starts_with(b"HTTP/1.1 404"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert_eq!(setup.received_count(), before);
}

#[tokio::test]
async fn streams_stay_live_through_a_base_url_route() {
    let setup = setup(None).await;
    let proxy = start(&setup, &["--reverse-listen", "127.0.0.1:0"]).await;
    let reverse = proxy.proxy.as_ref().unwrap().reverse_addr.unwrap();
    let http = direct(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut res = http
        .get(format!(
            "http://{reverse}/anthropic/sse?gate=1&n=3&delay_ms=0"
        ))
        .header("x-api-key", SENTINEL)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // The first event arrives while the upstream still holds the rest back.
    let first = tokio::time::timeout(STEP, res.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("\"i\":0"));
    assert_eq!(*setup.up.state.sse_sent.borrow(), 1);
    setup.up.state.sse_gate.notify_one();
    let mut rest = Vec::new();
    while let Some(chunk) = tokio::time::timeout(STEP, res.chunk())
        .await
        .unwrap()
        .unwrap()
    {
        rest.extend_from_slice(&chunk);
    }
    assert!(String::from_utf8_lossy(&rest).contains("\"i\":2"));
    assert_eq!(
        header(&setup.last_received().1, "x-api-key"),
        REAL_ANTHROPIC
    );
    let record = proxy.records.next().await;
    assert_eq!(record.outcome, Outcome::Complete);
    assert!(record.key.injected);
}

fn llmtap() -> Command {
    let mut cmd = Command::new(llmtap_bin());
    for var in [
        "PROXY_LISTEN",
        "PROXY_CA_DIR",
        "PROXY_LLM_HOSTS",
        "PROXY_KEYS",
        "PROXY_REVERSE_LISTEN",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("PROXY_ADDONS_CONFIG", common::addons_dir());
    cmd
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn a_missing_or_empty_key_source_stops_the_start_naming_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let keys = dir.path().join("keys.toml");
    std::fs::write(
        &keys,
        format!(
            "[[key]]\nhost = \"api.anthropic.com\"\nfrom_env = \"LLMTAP_TEST_KEY_UNSET\"\n[[key]]\nhost = \"api.openai.com\"\nfrom_file = \"{}\"\n[[key]]\nhost = \"api.openai.com\"\nfrom_env = \"LLMTAP_TEST_KEY_SET\"\nclients = [\"nobody\"]\n[[key]]\nhost = \"example.com\"\nfrom_env = \"LLMTAP_TEST_KEY_SET\"\n",
            path(&empty)
        ),
    )
    .unwrap();
    let ca = tempfile::tempdir().unwrap();
    let out = llmtap()
        .args(["--listen", "127.0.0.1:0", "--ca-dir"])
        .arg(ca.path())
        .arg("--keys")
        .arg(&keys)
        .env_remove("LLMTAP_TEST_KEY_UNSET")
        .env("LLMTAP_TEST_KEY_SET", REAL_OPENAI)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "key[0] (api.anthropic.com): from_env LLMTAP_TEST_KEY_UNSET: is not set",
        "key[1] (api.openai.com): from_file",
        "is empty",
    ] {
        assert!(stderr.contains(needle), "{needle:?} in {stderr}");
    }
    assert!(!stderr.contains(REAL_OPENAI), "{stderr}");

    // The sources are fine, but one entry names an unknown client and one a host llmtap
    // never decrypts.
    std::fs::write(
        &keys,
        "[[key]]\nhost = \"api.openai.com\"\nfrom_env = \"LLMTAP_TEST_KEY_SET\"\nclients = [\"nobody\"]\n[[key]]\nhost = \"example.com\"\nfrom_env = \"LLMTAP_TEST_KEY_SET\"\n",
    )
    .unwrap();
    let out = llmtap()
        .args(["--listen", "127.0.0.1:0", "--ca-dir"])
        .arg(ca.path())
        .arg("--keys")
        .arg(&keys)
        .env("LLMTAP_TEST_KEY_SET", REAL_OPENAI)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\"nobody\", which is no [[client]]"),
        "{stderr}"
    );
    assert!(
        stderr.contains("key[1] (example.com): example.com is neither intercepted"),
        "{stderr}"
    );
    assert!(!stderr.contains(REAL_OPENAI), "{stderr}");
}

/// The binary with an OTLP receiver: the real key must not be in the exported bytes, the log
/// lines or `/healthz`, and SIGHUP rotates it.
#[tokio::test]
async fn no_real_key_reaches_the_exported_bytes_the_logs_or_healthz_and_sighup_rotates() {
    let setup = setup(None).await;
    let receiver = OtlpReceiver::start().await;
    let port = free_port();
    let reverse_port = free_port();
    let ca_dir = tempfile::tempdir().unwrap();
    let mut child = llmtap()
        .args(["--listen", &format!("127.0.0.1:{port}"), "--ca-dir"])
        .arg(ca_dir.path())
        .args(setup.flags())
        .args(["--reverse-listen", &format!("127.0.0.1:{reverse_port}")])
        .env("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", receiver.endpoint())
        .env("OTEL_BLRP_SCHEDULE_DELAY", "50")
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + STEP;
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "llmtap did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ca_pem = std::fs::read_to_string(ca_dir.path().join("ca.pem")).unwrap();
    let http = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{addr}")).unwrap())
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .timeout(STEP)
        .build()
        .unwrap();
    let direct = direct(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut calls = 0;
    for (client, url) in [
        (&http, "https://api.anthropic.com/v1/messages".to_string()),
        (
            &direct,
            format!("http://127.0.0.1:{reverse_port}/anthropic/v1/messages"),
        ),
    ] {
        let res = client
            .post(url)
            .header("x-api-key", SENTINEL)
            .body(MESSAGES)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let _ = res.bytes().await;
        calls += 1;
        assert_eq!(
            header(&setup.last_received().1, "x-api-key"),
            REAL_ANTHROPIC
        );
    }
    // A refused one, and a Gemini call whose key rides in the URL.
    let res = http
        .post("http://api.anthropic.com/v1/messages")
        .header("x-api-key", SENTINEL)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    calls += 1;
    let res = http
        .get(format!(
            "https://generativelanguage.googleapis.com/json?key={SENTINEL}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let _ = res.bytes().await;
    calls += 1;

    // SIGHUP with a rotated key file.
    let rotated = "sk-ant-api03-ROTATED-by-sighup-bbbbbbbbbbbb";
    std::fs::write(&setup.anthropic_key_file, rotated).unwrap();
    let ok = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let deadline = Instant::now() + STEP;
    loop {
        let res = http
            .post("https://api.anthropic.com/v1/messages")
            .header("x-api-key", SENTINEL)
            .body(MESSAGES)
            .send()
            .await
            .unwrap();
        let _ = res.bytes().await;
        calls += 1;
        if header(&setup.last_received().1, "x-api-key") == rotated {
            break;
        }
        assert!(Instant::now() < deadline, "the rotated key was never used");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let health = healthz(addr).await.to_string();
    let _ = receiver.wait_for_records(calls, STEP).await;
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let status = tokio::task::spawn_blocking(move || {
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        (status, stderr)
    })
    .await
    .unwrap();
    let (status, stderr) = status;
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("keys reloaded"), "{stderr}");

    let mut exported = Vec::new();
    for hit in receiver.hits() {
        exported.extend(payload(&hit.headers, &hit.raw));
    }
    assert!(
        receiver.records().len() >= calls,
        "every call has its record"
    );
    for secret in [REAL_ANTHROPIC, REAL_OPENAI, REAL_GEMINI, rotated] {
        let needle = secret.as_bytes();
        for (what, bytes) in [
            ("exported OTLP bytes", exported.as_slice()),
            ("stderr log", stderr.as_bytes()),
            ("/healthz", health.as_bytes()),
        ] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{secret} found in the {what}"
            );
        }
    }
    assert!(
        exported
            .windows(SENTINEL.len())
            .any(|w| w == SENTINEL.as_bytes())
            || stderr.contains("keys"),
        "the scan looked at real bytes"
    );
    let _ = setup.up.state.requests.load(Ordering::SeqCst);
}

#[tokio::test]
async fn a_redirect_never_carries_the_real_key() {
    let setup = setup(None).await;
    setup.up.state.can(
        "/v1/redirect",
        common::upstream::Canned::new(307, "text/plain", "moved")
            .header("location", "https://other.test/json"),
    );
    let proxy = start(&setup, &[]).await;
    // reqwest follows redirects (and keeps x-api-key across hosts): the worst case.
    let http = client(&proxy, &setup, None);
    let res = http
        .post("https://api.anthropic.com/v1/redirect")
        .header("x-api-key", SENTINEL)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.url().as_str(), "https://other.test/json");
    let received = setup.up.state.received.lock().unwrap().clone();
    let with_real: Vec<&String> = received
        .iter()
        .filter(|(_, h)| header(h, "x-api-key") == REAL_ANTHROPIC)
        .map(|(pq, _)| pq)
        .collect();
    assert_eq!(
        with_real,
        ["/v1/redirect"],
        "the real key went once, to its host"
    );
    let (pq, headers) = received.last().unwrap();
    assert_eq!(pq, "/json");
    assert_eq!(header(headers, "x-api-key"), SENTINEL);
}
