//! Egress policy over real loopback sockets (issue 8): who is asking (credentials, source,
//! `default`), 407 and 403 answers, the private-address floor, report mode, the seed story run
//! with curl as the two sandboxes, audit records (in-process and decoded from OTLP), the holes
//! of the intercepted path, and `--connect-to`.
//!
//! Network rules: everything is loopback; every name a test uses is pinned with `--resolve` /
//! `--connect-to` (so nothing is ever looked up), and every wait is bounded by `STEP`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/otlp_receiver.rs"]
mod otlp_receiver;

use std::future::Future as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{STEP, TestCa, TestProxy, Upstream};
use llmtap::audit::{EgressDecision, EgressRecord};
use otlp_receiver::{OtlpReceiver, Received, Val};
use rustls_pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

const LLM_HOST: &str = "api.anthropic.com";
const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Another loopback source address: a client that matches no `sources = ["127.0.0.1/32"]`.
const OTHER_LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const ALICE_PASS: &str = "alice-s3cret-pass-9731";
const MESSAGES_BODY: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[]}"#;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn sha256_hex(s: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

fn policy_file(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// A loopback port where nothing listens.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// An HTTP/1.1 answer as read off the wire.
#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The whole answer, for "the password is never in it" checks.
    fn text(&self) -> String {
        format!("{}{}", self.head, self.body)
    }
}

/// Reads one answer: the head byte by byte, then `content-length` bytes of body.
async fn read_reply<S: AsyncRead + Unpin>(s: &mut S) -> Reply {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = timeout(STEP, s.read(&mut byte))
            .await
            .expect("no answer within the step timeout")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {head:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map_or(0, |(_, v)| v.parse::<usize>().unwrap());
    let mut body = vec![0u8; len];
    timeout(STEP, s.read_exact(&mut body))
        .await
        .expect("body within the step timeout")
        .unwrap();
    Reply {
        status,
        head,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// A TCP connection to llmtap from the given loopback source address.
async fn dial(proxy: SocketAddr, from: IpAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let tcp = timeout(STEP, socket.connect(proxy)).await.unwrap().unwrap();
    tcp.set_nodelay(true).unwrap();
    tcp
}

/// `CONNECT authority` with an optional `Proxy-Authorization`, from `from`; the answer head
/// (and the body of a refusal).
async fn connect_from(
    proxy: SocketAddr,
    from: IpAddr,
    authority: &str,
    auth: Option<&str>,
) -> (TcpStream, Reply) {
    let mut tcp = dial(proxy, from).await;
    let auth = auth
        .map(|a| format!("Proxy-Authorization: {a}\r\n"))
        .unwrap_or_default();
    let req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{auth}\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let reply = read_reply(&mut tcp).await;
    (tcp, reply)
}

/// A CONNECT that must be answered `200`.
async fn connect_ok(proxy: SocketAddr, authority: &str, auth: Option<&str>) -> TcpStream {
    let (tcp, reply) = connect_from(proxy, LOCAL, authority, auth).await;
    assert_eq!(reply.status, 200, "CONNECT {authority}: {reply:?}");
    tcp
}

/// A request that must be refused: the answer, after checking llmtap closed the connection.
async fn refused_from(
    proxy: SocketAddr,
    from: IpAddr,
    authority: &str,
    auth: Option<&str>,
) -> Reply {
    let (mut tcp, reply) = connect_from(proxy, from, authority, auth).await;
    assert_ne!(reply.status, 200, "CONNECT {authority} was let through");
    expect_closed(&mut tcp).await;
    reply
}

async fn refused(proxy: SocketAddr, authority: &str, auth: Option<&str>) -> Reply {
    refused_from(proxy, LOCAL, authority, auth).await
}

/// An absolute-form plain-HTTP `GET` through llmtap.
async fn plain_get(proxy: SocketAddr, url: &str, host: &str, auth: Option<&str>) -> Reply {
    let mut tcp = dial(proxy, LOCAL).await;
    let auth = auth
        .map(|a| format!("Proxy-Authorization: {a}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {url} HTTP/1.1\r\nHost: {host}\r\n{auth}\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    read_reply(&mut tcp).await
}

/// The peer closed the connection (EOF or reset) within the step timeout, sending nothing
/// that looks like HTTP.
async fn expect_closed<S: AsyncRead + Unpin>(s: &mut S) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match timeout(STEP, s.read(&mut buf))
            .await
            .expect("connection still open after the step timeout")
        {
            Ok(0) | Err(_) => return got,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                assert!(
                    !String::from_utf8_lossy(&got).contains("HTTP/1."),
                    "an HTTP answer came back: {:?}",
                    String::from_utf8_lossy(&got)
                );
            }
        }
    }
}

fn client_config(pems: &[&str], alpn: &[&str]) -> Arc<rustls::ClientConfig> {
    common::init_crypto();
    let mut roots = rustls::RootCertStore::empty();
    for pem in pems {
        roots
            .add(rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap())
            .unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

/// A TLS handshake over `io` presenting `sni`, trusting only `pems`.
async fn handshake<S>(
    io: S,
    sni: &str,
    pems: &[&str],
    alpn: &[&str],
) -> io::Result<tokio_rustls::client::TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let connector = tokio_rustls::TlsConnector::from(client_config(pems, alpn));
    let name = ServerName::try_from(sni.to_string()).unwrap();
    timeout(STEP, connector.connect(name, io))
        .await
        .expect("TLS handshake within the step timeout")
}

/// `GET path` over an HTTP/1.1 connection (TLS or not), the answer read in full.
async fn get<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, host: &str, path: &str) -> Reply {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    read_reply(s).await
}

/// Through an open tunnel: TLS to the upstream (trusting `ca`), `GET /json`, `200`.
async fn tunnel_get(
    tcp: TcpStream,
    sni: &str,
    ca: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut tls = handshake(tcp, sni, &[ca], &["http/1.1"]).await.unwrap();
    let reply = get(&mut tls, sni, "/json").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    tls
}

async fn healthz(addr: SocketAddr) -> serde_json::Value {
    let res = reqwest::Client::builder()
        .no_proxy()
        .timeout(STEP)
        .build()
        .unwrap()
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// Polls `/healthz` until no tunnel is open (the audit record of a tunnel is submitted as
/// it closes).
async fn wait_tunnels_closed(addr: SocketAddr) {
    let deadline = Instant::now() + STEP;
    loop {
        let doc = healthz(addr).await;
        if doc["tunnels"]["open"] == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "tunnels still open: {doc}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A reqwest client through llmtap from `from`, with optional proxy credentials, trusting
/// only llmtap's CA.
fn client_as(proxy: &TestProxy, creds: Option<(&str, &str)>, from: IpAddr) -> reqwest::Client {
    let mut p = reqwest::Proxy::all(format!("http://{}", proxy.addr)).unwrap();
    if let Some((user, password)) = creds {
        p = p.basic_auth(user, password);
    }
    reqwest::Client::builder()
        .proxy(p)
        .local_address(from)
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(proxy.ca_pem.as_bytes()).unwrap())
        .timeout(STEP)
        .build()
        .unwrap()
}

fn assert_refusal(reply: &Reply, status: u16, kind: &str, ctx: &str) {
    assert_eq!(reply.status, status, "{ctx}: {reply:?}");
    assert_eq!(
        reply.header("x-llmtap-error"),
        Some(kind),
        "{ctx}: {reply:?}"
    );
    assert_eq!(
        reply
            .header("connection")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("close"),
        "{ctx}: {reply:?}"
    );
}

/// The body of a refusal says exactly `reason` (llmtap prefixes its answers with `llmtap: `).
fn assert_reason(reply: &Reply, reason: &str) {
    let body = reply.body.trim_end();
    assert!(
        body == reason || body == format!("llmtap: {reason}"),
        "body {body:?} is not {reason:?}"
    );
}

fn assert_denial_record(rec: &EgressRecord, host: &str, kind: &str, client: Option<(&str, &str)>) {
    assert_eq!(rec.decision, EgressDecision::Deny, "{rec:?}");
    assert_eq!(rec.server_address, host, "{rec:?}");
    assert_eq!(rec.error_type.as_deref(), Some(kind), "{rec:?}");
    assert_eq!(rec.client_name.as_deref(), client.map(|c| c.0), "{rec:?}");
    assert_eq!(
        rec.client_profile.as_deref(),
        client.map(|c| c.1),
        "{rec:?}"
    );
    assert_eq!(rec.peer_addr, None, "a denial connects nowhere: {rec:?}");
    assert_eq!((rec.bytes_sent, rec.bytes_received), (0, 0), "{rec:?}");
}

// ---------------------------------------------------------------------------------------------
// 1. Who is asking
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn clients_are_identified_by_credentials_then_source_then_default() {
    let ca = TestCa::new("upstream CA");
    let up = Upstream::https(&ca, &[LLM_HOST]).await;
    let plain = Upstream::http().await;
    let policy = policy_file(&format!(
        r#"
[[client]]
name = "alice"
token_sha256 = "{alice}"
sources = ["10.9.0.0/16"]
profile = "dev"
[[client]]
name = "bob"
profile = "ops"
[[client]]
name = "local"
sources = ["127.0.0.1/32"]
profile = "lab"
[profile.dev]
allow = ["{LLM_HOST}", "plain.test"]
[profile.ops]
allow = ["{LLM_HOST}"]
[profile.lab]
allow = ["{LLM_HOST}"]
[profile.default]
allow = ["{LLM_HOST}"]
"#,
        alice = sha256_hex(ALICE_PASS)
    ));
    let pin = format!("{LLM_HOST}:{}:127.0.0.1", up.port());
    let plain_pin = format!("plain.test:80:127.0.0.1:{}", plain.port());
    let proxy = TestProxy::start(&[
        "--policy",
        &path(policy.path()),
        "--resolve",
        &pin,
        "--connect-to",
        &plain_pin,
        "--upstream-ca",
        &path(ca.pem_path.path()),
    ])
    .await;
    let url = format!("https://{LLM_HOST}:{}/v1/messages", up.port());
    type Creds<'a> = Option<(&'a str, &'a str)>;
    let cases: [(Creds, IpAddr, &str, &str); 4] = [
        // Credentials win, although 127.0.0.1 is `local`'s source and not alice's own:
        // sources identify clients without credentials, they do not restrict this one.
        (Some(("alice", ALICE_PASS)), LOCAL, "alice", "dev"),
        // No token: the name alone identifies, whatever the password.
        (Some(("bob", "any-password")), LOCAL, "bob", "ops"),
        // No credentials: the source address.
        (None, LOCAL, "local", "lab"),
        // No credentials, no matching source: `default`.
        (None, OTHER_LOCAL, "default", "default"),
    ];
    for (creds, from, name, profile) in cases {
        let client = client_as(&proxy, creds, from);
        let res = client
            .post(&url)
            .header("content-type", "application/json")
            .body(MESSAGES_BODY)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{name}");
        res.text().await.unwrap();
        let ex = proxy.records.next().await;
        assert_eq!(ex.client_name.as_deref(), Some(name));
        assert_eq!(ex.client_profile.as_deref(), Some(profile));
        assert_eq!(ex.client_addr.ip(), from);
        drop(client);
        let rec = proxy.audit.next_for(LLM_HOST).await;
        assert_eq!(rec.decision, EgressDecision::Allow, "{rec:?}");
        assert_eq!(rec.route, "intercept");
        assert_eq!(rec.client_name.as_deref(), Some(name), "{rec:?}");
        assert_eq!(rec.client_profile.as_deref(), Some(profile), "{rec:?}");
        assert_eq!(rec.client_addr.ip(), from);
    }

    // Plain HTTP is identified the same way, and the credentials never go upstream.
    let res = client_as(&proxy, Some(("alice", ALICE_PASS)), LOCAL)
        .get("http://plain.test/echo-headers")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let seen = res.text().await.unwrap().to_ascii_lowercase();
    assert!(!seen.contains("proxy-authorization"), "{seen}");
    assert!(
        !seen.contains(
            &STANDARD
                .encode(format!("alice:{ALICE_PASS}"))
                .to_ascii_lowercase()
        )
    );
    let rec = proxy.audit.next_for("plain.test").await;
    assert_eq!(rec.route, "http");
    assert_eq!(rec.client_name.as_deref(), Some("alice"));
    assert_eq!(rec.client_profile.as_deref(), Some("dev"));

    // The refusal names the client and profile it was identified as.
    for (from, auth, who) in [
        (OTHER_LOCAL, None, "default (profile default)"),
        (LOCAL, None, "local (profile lab)"),
        (LOCAL, Some(basic("bob", "x")), "bob (profile ops)"),
    ] {
        let reply = refused_from(proxy.addr, from, "nowhere.test:443", auth.as_deref()).await;
        assert_refusal(&reply, 403, "policy", who);
        assert_reason(&reply, &format!("{who}: no rule allows nowhere.test:443"));
    }
}

// ---------------------------------------------------------------------------------------------
// 2. 407
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn bad_or_missing_credentials_get_407_and_never_see_their_password() {
    let ca = TestCa::new("upstream CA");
    let up = Upstream::https(&ca, &["auth.test"]).await;
    let policy = policy_file(&format!(
        r#"
[[client]]
name = "alice"
token_sha256 = "{alice}"
profile = "dev"
[[client]]
name = "local"
token_sha256 = "{local}"
sources = ["127.0.0.1/32"]
profile = "dev"
[profile.dev]
allow = ["*"]
"#,
        alice = sha256_hex(ALICE_PASS),
        local = sha256_hex("local-pass-4410"),
    ));
    // Both ports of auth.test pinned: nothing here may be looked up, whatever happens.
    let pin443 = format!("auth.test:443:127.0.0.1:{}", up.port());
    let pin80 = format!("auth.test:80:127.0.0.1:{}", closed_port());
    let proxy = TestProxy::start(&[
        "--policy",
        &path(policy.path()),
        "--connect-to",
        &pin443,
        "--connect-to",
        &pin80,
    ])
    .await;
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        (
            "wrong password",
            Some(basic("alice", "wrong-password-123")),
            "wrong-password-123",
        ),
        (
            "unknown user",
            Some(basic("mallory", "mallory-password-456")),
            "mallory-password-456",
        ),
        (
            "not base64",
            Some("Basic %%%not-base64-789%%%".into()),
            "not-base64-789",
        ),
        (
            "no colon",
            Some(format!("Basic {}", STANDARD.encode("alice-no-colon-321"))),
            "alice-no-colon-321",
        ),
        (
            "not Basic",
            Some("Bearer bearer-token-654".into()),
            "bearer-token-654",
        ),
        (
            "empty password for a client with a token",
            Some(basic("alice", "")),
            ALICE_PASS,
        ),
        // 127.0.0.1 is `local`'s source, and `local` has a token.
        ("missing credentials", None, "local-pass-4410"),
    ];
    for (what, auth, secret) in &cases {
        for route in ["tunnel", "http"] {
            let ctx = format!("{what} ({route})");
            let reply = match route {
                "tunnel" => refused(proxy.addr, "auth.test:443", auth.as_deref()).await,
                _ => {
                    plain_get(
                        proxy.addr,
                        "http://auth.test/",
                        "auth.test",
                        auth.as_deref(),
                    )
                    .await
                }
            };
            assert_refusal(&reply, 407, "proxy_auth", &ctx);
            assert_eq!(
                reply.header("proxy-authenticate"),
                Some("Basic realm=\"llmtap\""),
                "{ctx}"
            );
            let text = reply.text();
            assert!(
                !text.contains(secret),
                "{ctx}: the answer shows the password: {text}"
            );
            if let Some(auth) = auth {
                let encoded = auth.split_once(' ').map_or(auth.as_str(), |(_, e)| e);
                assert!(
                    !text.contains(encoded),
                    "{ctx}: the answer echoes the header: {text}"
                );
            }
            let rec = proxy.audit.next().await;
            assert_denial_record(&rec, "auth.test", "proxy_auth", None);
            assert_eq!(rec.route, route, "{ctx}");
            assert!(!rec.reason.contains(secret), "{ctx}: {rec:?}");
        }
    }
    assert_eq!(up.state.connections.load(Ordering::SeqCst), 0);

    // The right credentials get through (and are the only connections the upstream saw).
    for auth in [
        basic("alice", ALICE_PASS),
        basic("local", "local-pass-4410"),
    ] {
        let tcp = connect_ok(proxy.addr, "auth.test:443", Some(&auth)).await;
        drop(tunnel_get(tcp, "auth.test", &ca.pem).await);
    }
    assert_eq!(up.state.connections.load(Ordering::SeqCst), 2);
}

// ---------------------------------------------------------------------------------------------
// 3. 403: policy
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn policy_denials_are_403_with_the_reason_and_connect_nowhere() {
    let ca = TestCa::new("upstream CA");
    let up = Upstream::https(&ca, &["ok.example.org"]).await;
    let policy = policy_file(
        r#"
[[client]]
name = "code-sandbox"
profile = "code"
[profile.code]
allow = ["api.anthropic.com", "*.example.org"]
deny = ["blocked.example.org"]
[profile.default]
allow = []
"#,
    );
    // Every name pinned to the upstream: a denial that still connected would be seen there.
    let mut flags = vec!["--policy".to_string(), path(policy.path())];
    for target in [
        "example.com:443",
        "example.com:80",
        "blocked.example.org:443",
        "ok.example.org:443",
    ] {
        flags.push("--connect-to".into());
        flags.push(format!("{target}:127.0.0.1:{}", up.port()));
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let proxy = TestProxy::start(&flags).await;
    let code = basic("code-sandbox", "anything");
    let who = Some(("code-sandbox", "code"));

    let reply = refused(proxy.addr, "example.com:443", Some(&code)).await;
    assert_refusal(&reply, 403, "policy", "example.com");
    assert_reason(
        &reply,
        "code-sandbox (profile code): no rule allows example.com:443",
    );
    let rec = proxy.audit.next().await;
    assert_denial_record(&rec, "example.com", "policy", who);
    assert_eq!(rec.route, "tunnel");
    assert_eq!(
        rec.reason,
        "code-sandbox (profile code): no rule allows example.com:443"
    );

    // Deny wins over allow: `*.example.org` allows it, `blocked.example.org` denies it.
    let reply = refused(proxy.addr, "blocked.example.org:443", Some(&code)).await;
    assert_refusal(&reply, 403, "policy", "blocked.example.org");
    assert!(
        reply
            .body
            .contains("code-sandbox (profile code): deny rule blocked.example.org"),
        "{reply:?}"
    );
    assert_denial_record(
        &proxy.audit.next().await,
        "blocked.example.org",
        "policy",
        who,
    );

    // Plain HTTP: the same rule, the same answer.
    let reply = plain_get(
        proxy.addr,
        "http://example.com/",
        "example.com",
        Some(&code),
    )
    .await;
    assert_refusal(&reply, 403, "policy", "plain http");
    assert_reason(
        &reply,
        "code-sandbox (profile code): no rule allows example.com:80",
    );
    let rec = proxy.audit.next().await;
    assert_denial_record(&rec, "example.com", "policy", who);
    assert_eq!(rec.route, "http");

    // Nothing reached the upstream; an allowed tunnel does, and is its only connection.
    assert_eq!(up.state.connections.load(Ordering::SeqCst), 0);
    let tcp = connect_ok(proxy.addr, "ok.example.org:443", Some(&code)).await;
    drop(tunnel_get(tcp, "ok.example.org", &ca.pem).await);
    assert_eq!(up.state.connections.load(Ordering::SeqCst), 1);
    assert_eq!(up.state.requests.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------------------------
// 4. Private addresses
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn loopback_targets_are_refused_by_default_and_pinned_names_are_exempt() {
    let ca = TestCa::new("upstream CA");
    let up = Upstream::https(&ca, &["pinned.test", "localhost"]).await;
    let pin = format!("pinned.test:{}:127.0.0.1", up.port());
    let proxy = TestProxy::start(&["--resolve", &pin]).await;
    let target = format!("127.0.0.1:{}", up.port());

    let reply = refused(proxy.addr, &target, None).await;
    assert_refusal(&reply, 403, "private_address", "127.0.0.1");
    assert!(
        reply.body.contains("127.0.0.1 is a private address"),
        "{reply:?}"
    );
    assert_denial_record(
        &proxy.audit.next().await,
        "127.0.0.1",
        "private_address",
        Some(("default", "default")),
    );
    // IPv6 loopback and an IPv4-mapped form of 127.0.0.1, by CONNECT.
    for v6 in [
        format!("[::1]:{}", up.port()),
        format!("[::ffff:127.0.0.1]:{}", up.port()),
    ] {
        let reply = refused(proxy.addr, &v6, None).await;
        assert_refusal(&reply, 403, "private_address", &v6);
        proxy.audit.next().await;
    }
    // Plain HTTP too.
    let url = format!("http://127.0.0.1:{}/json", up.port());
    let reply = plain_get(proxy.addr, &url, &target, None).await;
    assert_refusal(&reply, 403, "private_address", "plain http");
    let rec = proxy.audit.next().await;
    assert_eq!(rec.route, "http");
    assert_eq!(rec.error_type.as_deref(), Some("private_address"));
    assert_eq!(up.state.connections.load(Ordering::SeqCst), 0);

    // A name the operator pinned to loopback is the operator's choice.
    let tcp = connect_ok(proxy.addr, &format!("pinned.test:{}", up.port()), None).await;
    drop(tunnel_get(tcp, "pinned.test", &ca.pem).await);
    assert_eq!(up.state.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn allow_private_opens_loopback_but_never_llmtap_itself() {
    let ca = TestCa::new("upstream CA");
    let up = Upstream::https(&ca, &["localhost"]).await;
    let proxy = TestProxy::start(&["--allow-private", "127.0.0.0/8"]).await;
    let tcp = connect_ok(proxy.addr, &format!("127.0.0.1:{}", up.port()), None).await;
    drop(tunnel_get(tcp, "localhost", &ca.pem).await);
    assert_eq!(up.state.connections.load(Ordering::SeqCst), 1);

    // llmtap's own listen address: a loop, refused whatever the allow list says.
    let own = proxy.addr.to_string();
    let reply = refused(proxy.addr, &own, None).await;
    assert_refusal(&reply, 403, "private_address", "own address");
    assert!(reply.body.contains("llmtap itself"), "{reply:?}");
    let url = format!("http://{own}/healthz");
    let reply = plain_get(proxy.addr, &url, &own, None).await;
    assert_refusal(&reply, 403, "private_address", "own address, plain http");
}

#[tokio::test]
async fn a_profile_allow_private_opens_loopback_for_that_profile_only() {
    let ca = TestCa::new("upstream CA");
    let up = Upstream::https(&ca, &["localhost"]).await;
    let policy = policy_file(
        r#"
[[client]]
name = "strict"
profile = "strict"
[profile.strict]
allow = ["127.0.0.1"]
[profile.default]
allow = ["127.0.0.1"]
allow_private = ["127.0.0.0/8"]
"#,
    );
    let proxy = TestProxy::start(&["--policy", &path(policy.path())]).await;
    let target = format!("127.0.0.1:{}", up.port());
    let tcp = connect_ok(proxy.addr, &target, None).await;
    drop(tunnel_get(tcp, "localhost", &ca.pem).await);

    let reply = refused(proxy.addr, &target, Some(&basic("strict", "x"))).await;
    assert_refusal(&reply, 403, "private_address", "strict profile");
    // And the profile's allow_private does not open llmtap itself.
    let reply = refused(proxy.addr, &proxy.addr.to_string(), None).await;
    assert_refusal(&reply, 403, "private_address", "own address");
    assert_eq!(up.state.connections.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------------------------
// 5. Report mode
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn report_mode_lets_policy_denials_through_as_would_deny_but_not_private_addresses() {
    let ca = TestCa::new("upstream CA");
    let up = Upstream::https(&ca, &["report.test", "localhost"]).await;
    let policy = policy_file("mode = \"report\"\n[profile.default]\nallow = []\n");
    let pin = format!("report.test:443:127.0.0.1:{}", up.port());
    // `--audit deny` keeps would-be denials too.
    let proxy = TestProxy::start(&[
        "--policy",
        &path(policy.path()),
        "--connect-to",
        &pin,
        "--audit",
        "deny",
    ])
    .await;

    let tcp = connect_ok(proxy.addr, "report.test:443", None).await;
    drop(tunnel_get(tcp, "report.test", &ca.pem).await);
    let rec = proxy.audit.next_for("report.test").await;
    assert_eq!(rec.decision, EgressDecision::WouldDeny, "{rec:?}");
    assert_eq!(rec.route, "tunnel");
    assert!(
        rec.reason
            .contains("default (profile default): no rule allows report.test:443"),
        "{rec:?}"
    );
    assert_eq!(rec.peer_addr, Some(SocketAddr::new(LOCAL, up.port())));

    // The private-address rule is a floor: enforced in report mode too.
    let reply = refused(proxy.addr, &format!("127.0.0.1:{}", up.port()), None).await;
    assert_refusal(&reply, 403, "private_address", "report mode");
    let rec = proxy.audit.next().await;
    assert_eq!(rec.decision, EgressDecision::Deny);
    assert_eq!(up.state.connections.load(Ordering::SeqCst), 1);

    let doc = healthz(proxy.addr).await;
    let decisions = &doc["policy"]["decisions"];
    assert_eq!(doc["policy"]["mode"], "report", "{doc}");
    assert_eq!(decisions["would_deny"], 1, "{doc}");
    assert_eq!(decisions["deny"], 1, "{doc}");
    assert_eq!(decisions["allow"], 0, "{doc}");
}

// ---------------------------------------------------------------------------------------------
// 6. The seed story, with curl as the two sandboxes
// ---------------------------------------------------------------------------------------------

/// What one curl run showed.
#[derive(Debug)]
struct Curl {
    exit: Option<i32>,
    http_code: u16,
    http_connect: u16,
    body: String,
    stderr: String,
}

/// Runs curl with a clean environment (no proxy variables, no curlrc) and `-v`.
async fn curl(args: &[&str]) -> Curl {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NO_PROXY", "")
        .env("no_proxy", "")
        .args(["-q", "-sS", "-v", "--max-time", "20"])
        .args(["-w", "\n%{http_code} %{http_connect}"])
        .args(args)
        .kill_on_drop(true);
    let out = timeout(STEP + Duration::from_secs(5), cmd.output())
        .await
        .expect("curl finished")
        .expect("curl runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, codes) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let mut codes = codes
        .split(' ')
        .map(|c| c.trim().parse::<u16>().unwrap_or(0));
    Curl {
        exit: out.status.code(),
        http_code: codes.next().unwrap_or(0),
        http_connect: codes.next().unwrap_or(0),
        body: body.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_ascii_lowercase(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_story_browser_and_code_sandboxes_with_curl() {
    let ca = TestCa::new("seed upstream CA");
    let web = Upstream::https(&ca, &["example.com", "pypi.org"]).await;
    let llm = Upstream::https(&ca, &[LLM_HOST]).await;
    let policy = common::addons_dir().join("policy.example.toml");
    let pins = [
        format!("example.com:443:127.0.0.1:{}", web.port()),
        format!("pypi.org:443:127.0.0.1:{}", web.port()),
        format!("{LLM_HOST}:443:127.0.0.1:{}", llm.port()),
        // Refused by its deny rule before any lookup; pinned anyway, so a bug cannot resolve it.
        format!("db.internal:443:127.0.0.1:{}", closed_port()),
    ];
    let mut flags = vec![
        "--policy".to_string(),
        path(&policy),
        "--upstream-ca".into(),
        path(ca.pem_path.path()),
    ];
    for pin in &pins {
        flags.push("--connect-to".into());
        flags.push(pin.clone());
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let proxy = TestProxy::start(&flags).await;
    let llmtap_ca = path(&proxy.ca_dir.path().join("ca.pem"));
    let upstream_ca = path(ca.pem_path.path());
    let browser = format!(
        "http://browser-sandbox:browser-example-token@{}",
        proxy.addr
    );
    let code = format!("http://code-sandbox:code-example-token@{}", proxy.addr);
    let loopback = format!("https://127.0.0.1:{}/json", web.port());
    let llm_call = |proxy_url: String| {
        let ca = llmtap_ca.clone();
        async move {
            curl(&[
                "-x",
                &proxy_url,
                "--cacert",
                &ca,
                "-H",
                "content-type: application/json",
                "--data",
                MESSAGES_BODY,
                "https://api.anthropic.com/v1/messages",
            ])
            .await
        }
    };

    // The browser sandbox browses (a tunnel: it sees the site's own certificate)...
    let out = curl(&[
        "-x",
        &browser,
        "--cacert",
        &upstream_ca,
        "https://example.com/json",
    ])
    .await;
    assert_eq!((out.exit, out.http_code), (Some(0), 200), "{out:?}");
    assert!(out.body.contains("msg_01"), "{out:?}");
    let rec = proxy.audit.next_for("example.com").await;
    assert_eq!(rec.decision, EgressDecision::Allow, "{rec:?}");
    assert_eq!(rec.route, "tunnel");
    assert_eq!(rec.client_name.as_deref(), Some("browser-sandbox"));
    assert_eq!(rec.client_profile.as_deref(), Some("browse"));
    assert_eq!(rec.peer_addr, Some(SocketAddr::new(LOCAL, web.port())));
    // ...and reaches the LLM API, intercepted and recorded as itself.
    let out = llm_call(browser.clone()).await;
    assert_eq!((out.exit, out.http_code), (Some(0), 200), "{out:?}");
    let ex = proxy.records.next().await;
    assert_eq!(ex.client_name.as_deref(), Some("browser-sandbox"));
    assert_eq!(ex.client_profile.as_deref(), Some("browse"));
    assert_eq!(ex.port, 443);
    let rec = proxy.audit.next_for(LLM_HOST).await;
    assert_eq!(rec.client_name.as_deref(), Some("browser-sandbox"));
    assert_eq!(rec.route, "intercept");
    // ...but not internal names.
    let out = curl(&[
        "-x",
        &browser,
        "--cacert",
        &upstream_ca,
        "https://db.internal/",
    ])
    .await;
    assert_ne!(out.exit, Some(0), "{out:?}");
    assert_eq!(out.http_connect, 403, "{out:?}");
    assert!(
        out.stderr.contains("x-llmtap-error: policy"),
        "{}",
        out.stderr
    );
    let rec = proxy.audit.next_for("db.internal").await;
    assert_denial_record(
        &rec,
        "db.internal",
        "policy",
        Some(("browser-sandbox", "browse")),
    );
    assert!(rec.reason.contains("deny rule *.internal"), "{rec:?}");
    // ...nor loopback.
    let out = curl(&["-x", &browser, "--cacert", &upstream_ca, &loopback]).await;
    assert_eq!(out.http_connect, 403, "{out:?}");
    assert!(
        out.stderr.contains("x-llmtap-error: private_address"),
        "{}",
        out.stderr
    );
    proxy.audit.next_for("127.0.0.1").await;

    // The code sandbox reaches the LLM API...
    let out = llm_call(code.clone()).await;
    assert_eq!((out.exit, out.http_code), (Some(0), 200), "{out:?}");
    assert!(out.body.contains("msg_01"), "{out:?}");
    let ex = proxy.records.next().await;
    assert_eq!(ex.client_name.as_deref(), Some("code-sandbox"));
    assert_eq!(ex.client_profile.as_deref(), Some("code"));
    let rec = proxy.audit.next_for(LLM_HOST).await;
    assert_eq!(rec.client_name.as_deref(), Some("code-sandbox"));
    assert_eq!(rec.route, "intercept");
    // ...and the package registry...
    let out = curl(&[
        "-x",
        &code,
        "--cacert",
        &upstream_ca,
        "https://pypi.org/json",
    ])
    .await;
    assert_eq!((out.exit, out.http_code), (Some(0), 200), "{out:?}");
    let rec = proxy.audit.next_for("pypi.org").await;
    assert_eq!(rec.decision, EgressDecision::Allow);
    assert_eq!(rec.client_name.as_deref(), Some("code-sandbox"));
    // ...and nothing else.
    let out = curl(&[
        "-x",
        &code,
        "--cacert",
        &upstream_ca,
        "https://example.com/json",
    ])
    .await;
    assert_ne!(out.exit, Some(0), "{out:?}");
    assert_eq!(out.http_connect, 403, "{out:?}");
    assert!(
        out.stderr.contains("x-llmtap-error: policy"),
        "{}",
        out.stderr
    );
    let reason = "code-sandbox (profile code): no rule allows example.com:443";
    let rec = proxy.audit.next_for("example.com").await;
    assert_eq!(rec.reason, reason);
    let reply = refused(
        proxy.addr,
        "example.com:443",
        Some(&basic("code-sandbox", "code-example-token")),
    )
    .await;
    assert_reason(&reply, reason);
    proxy.audit.next_for("example.com").await;
    let out = curl(&["-x", &code, "--cacert", &upstream_ca, &loopback]).await;
    assert_eq!(out.http_connect, 403, "{out:?}");
    // Not allowed by name already (the code profile lists no IP), so refused as `policy`.
    assert!(
        out.stderr.contains("x-llmtap-error: policy"),
        "{}",
        out.stderr
    );
    proxy.audit.next_for("127.0.0.1").await;

    // A wrong token is a 407; no credentials make the client `default`, which reaches nothing.
    let wrong = format!("http://browser-sandbox:not-the-token@{}", proxy.addr);
    let out = curl(&[
        "-x",
        &wrong,
        "--cacert",
        &upstream_ca,
        "https://example.com/json",
    ])
    .await;
    assert_eq!(out.http_connect, 407, "{out:?}");
    assert!(
        !out.stderr.contains("x-llmtap-error: policy"),
        "{}",
        out.stderr
    );
    let anonymous = format!("http://{}", proxy.addr);
    let out = curl(&[
        "-x",
        &anonymous,
        "--cacert",
        &upstream_ca,
        "https://example.com/json",
    ])
    .await;
    assert_eq!(out.http_connect, 403, "{out:?}");

    // Only the two allowed tunnels reached the web upstream, and the two calls the LLM one.
    assert_eq!(web.state.connections.load(Ordering::SeqCst), 2);
    assert_eq!(llm.state.requests.load(Ordering::SeqCst), 2);
}

// ---------------------------------------------------------------------------------------------
// 7. Audit records
// ---------------------------------------------------------------------------------------------

/// A tunnel upstream, an LLM upstream and a plain-HTTP upstream, each behind a pinned name.
struct AuditSetup {
    ca: TestCa,
    tunnel: Upstream,
    llm: Upstream,
    plain: Upstream,
    proxy: TestProxy,
}

impl AuditSetup {
    async fn start(extra: &[&str]) -> AuditSetup {
        let ca = TestCa::new("upstream CA");
        let tunnel = Upstream::https(&ca, &["tunnel.test"]).await;
        let llm = Upstream::https(&ca, &[LLM_HOST]).await;
        let plain = Upstream::http().await;
        let pins = [
            format!("tunnel.test:443:127.0.0.1:{}", tunnel.port()),
            format!("{LLM_HOST}:443:127.0.0.1:{}", llm.port()),
            format!("plain.test:80:127.0.0.1:{}", plain.port()),
        ];
        let mut flags = vec!["--upstream-ca".to_string(), path(ca.pem_path.path())];
        for pin in &pins {
            flags.push("--connect-to".into());
            flags.push(pin.clone());
        }
        flags.extend(extra.iter().map(|s| s.to_string()));
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let proxy = TestProxy::start(&flags).await;
        AuditSetup {
            ca,
            tunnel,
            llm,
            plain,
            proxy,
        }
    }

    /// A tunnel to tunnel.test: TLS, one `GET`, closed.
    async fn tunnel(&self) {
        let tcp = connect_ok(self.proxy.addr, "tunnel.test:443", None).await;
        let mut tls = tunnel_get(tcp, "tunnel.test", &self.ca.pem).await;
        tls.shutdown().await.ok();
    }

    /// An intercepted call on its own connection, closed.
    async fn intercepted(&self) {
        let tcp = connect_ok(self.proxy.addr, &format!("{LLM_HOST}:443"), None).await;
        let mut tls = handshake(tcp, LLM_HOST, &[&self.proxy.ca_pem], &["http/1.1"])
            .await
            .unwrap();
        let reply = get(&mut tls, LLM_HOST, "/json").await;
        assert_eq!(reply.status, 200, "{reply:?}");
        tls.shutdown().await.ok();
        self.proxy.records.next().await;
    }

    async fn plain(&self) {
        let reply = plain_get(
            self.proxy.addr,
            "http://plain.test/json",
            "plain.test",
            None,
        )
        .await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }

    /// A denial (loopback by IP literal).
    async fn denied(&self) {
        let reply = refused(
            self.proxy.addr,
            &format!("127.0.0.1:{}", self.plain.port()),
            None,
        )
        .await;
        assert_eq!(reply.status, 403);
    }
}

#[tokio::test]
async fn every_decision_gives_one_audit_record() {
    let s = AuditSetup::start(&[]).await;
    s.tunnel().await;
    let rec = s.proxy.audit.next_for("tunnel.test").await;
    assert_eq!(rec.decision, EgressDecision::Allow, "{rec:?}");
    assert_eq!(rec.route, "tunnel");
    assert_eq!(rec.reason, "allow rule *", "the built-in open policy");
    assert_eq!(
        (rec.client_name.as_deref(), rec.client_profile.as_deref()),
        (Some("default"), Some("default"))
    );
    assert_eq!(rec.server_port, 443);
    assert_eq!(rec.peer_addr, Some(SocketAddr::new(LOCAL, s.tunnel.port())));
    assert!(rec.bytes_sent > 0 && rec.bytes_received > 0, "{rec:?}");
    assert_eq!(rec.error_type, None, "{rec:?}");
    assert!(rec.duration > Duration::ZERO);
    assert!(rec.client_addr.ip().is_loopback());

    s.intercepted().await;
    let rec = s.proxy.audit.next_for(LLM_HOST).await;
    assert_eq!(rec.decision, EgressDecision::Allow, "{rec:?}");
    assert_eq!(rec.route, "intercept");
    assert_eq!(rec.server_port, 443);
    assert_eq!(rec.peer_addr, Some(SocketAddr::new(LOCAL, s.llm.port())));
    assert!(rec.bytes_sent > 0 && rec.bytes_received > 0, "{rec:?}");
    assert_eq!(rec.error_type, None, "{rec:?}");

    s.plain().await;
    let rec = s.proxy.audit.next_for("plain.test").await;
    assert_eq!(rec.decision, EgressDecision::Allow, "{rec:?}");
    assert_eq!(rec.route, "http");
    assert_eq!(rec.server_port, 80);
    assert_eq!(rec.peer_addr, Some(SocketAddr::new(LOCAL, s.plain.port())));
    assert!(rec.bytes_received > 0, "{rec:?}");

    // A denial is recorded at once: before its answer reaches the client.
    s.denied().await;
    let now = s.proxy.audit.drain();
    assert_eq!(now.len(), 1, "{now:?}");
    assert_denial_record(
        &now[0],
        "127.0.0.1",
        "private_address",
        Some(("default", "default")),
    );
    assert_eq!(now[0].route, "tunnel");

    // One record per decision: nothing else comes once every connection is closed.
    wait_tunnels_closed(s.proxy.addr).await;
    let doc = healthz(s.proxy.addr).await;
    assert_eq!(doc["policy"]["decisions"]["allow"], 3, "{doc}");
    assert_eq!(doc["policy"]["decisions"]["deny"], 1, "{doc}");
    assert!(s.proxy.audit.drain().is_empty());
}

#[tokio::test]
async fn audit_deny_keeps_only_denials_and_audit_off_keeps_none() {
    let s = AuditSetup::start(&["--audit", "deny"]).await;
    s.tunnel().await;
    s.intercepted().await;
    s.plain().await;
    wait_tunnels_closed(s.proxy.addr).await;
    s.denied().await;
    let rec = s.proxy.audit.next().await;
    assert_eq!(
        rec.decision,
        EgressDecision::Deny,
        "allow records are dropped: {rec:?}"
    );
    s.denied().await;
    assert_eq!(s.proxy.audit.next().await.decision, EgressDecision::Deny);
    assert!(s.proxy.audit.drain().is_empty());

    let s = AuditSetup::start(&["--audit", "off"]).await;
    s.tunnel().await;
    s.intercepted().await; // LLM-call records are not audit records: still there.
    s.plain().await;
    s.denied().await;
    wait_tunnels_closed(s.proxy.addr).await;
    assert!(s.proxy.audit.drain().is_empty());
}

/// The built binary exporting to an OTLP receiver.
struct Binary {
    child: std::process::Child,
    addr: SocketAddr,
    _ca_dir: tempfile::TempDir,
    ca_pem: String,
}

impl Binary {
    fn start(extra: &[&str], env: &[(&str, &str)]) -> Binary {
        let port = closed_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let ca_dir = tempfile::tempdir().unwrap();
        let mut cmd = std::process::Command::new(common::llmtap_bin());
        cmd.env_clear()
            .env("PROXY_ADDONS_CONFIG", common::addons_dir())
            .envs(env.iter().copied())
            .args(["--listen", &addr.to_string(), "--ca-dir"])
            .arg(ca_dir.path())
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit());
        let child = cmd.spawn().unwrap();
        let deadline = Instant::now() + STEP;
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "llmtap did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        let ca_pem = std::fs::read_to_string(ca_dir.path().join("ca.pem")).unwrap();
        Binary {
            child,
            addr,
            _ca_dir: ca_dir,
            ca_pem,
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn attr_str(rec: &Received, key: &str) -> String {
    match rec.attrs().get(key) {
        Some(Val::Str(s)) => s.clone(),
        other => panic!("{key} is {other:?} in {:?}", rec.attrs()),
    }
}

fn attr_int(rec: &Received, key: &str) -> i64 {
    match rec.attrs().get(key) {
        Some(Val::Int(i)) => *i,
        other => panic!("{key} is {other:?} in {:?}", rec.attrs()),
    }
}

fn attr_number(rec: &Received, key: &str) -> f64 {
    match rec.attrs().get(key) {
        Some(Val::Double(d)) => *d,
        Some(Val::Int(i)) => *i as f64,
        other => panic!("{key} is {other:?} in {:?}", rec.attrs()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_and_call_records_reach_otlp_from_the_binary() {
    let receiver = OtlpReceiver::start().await;
    let ca = TestCa::new("upstream CA");
    let llm = Upstream::https(&ca, &[LLM_HOST]).await;
    let policy = common::addons_dir()
        .parent()
        .unwrap()
        .join("tests/fixtures/policy/code-only.toml");
    let pin = format!("{LLM_HOST}:443:127.0.0.1:{}", llm.port());
    // example.com is denied by name before any lookup; pinned anyway.
    let deny_pin = format!("example.com:443:127.0.0.1:{}", closed_port());
    let endpoint = format!("http://{}", receiver.addr);
    let bin = Binary::start(
        &[
            "--policy",
            &path(&policy),
            "--connect-to",
            &pin,
            "--connect-to",
            &deny_pin,
            "--upstream-ca",
            &path(ca.pem_path.path()),
        ],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BLRP_SCHEDULE_DELAY", "10"),
        ],
    );
    let client = reqwest::Client::builder()
        .proxy(
            reqwest::Proxy::all(format!("http://{}", bin.addr))
                .unwrap()
                .basic_auth("code-sandbox", "whatever"),
        )
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(bin.ca_pem.as_bytes()).unwrap())
        .timeout(STEP)
        .build()
        .unwrap();
    let res = client
        .post(format!("https://{LLM_HOST}/v1/messages"))
        .header("content-type", "application/json")
        .body(MESSAGES_BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.text().await.unwrap();
    drop(client); // closes the intercepted connection: its audit record is due
    let reply = refused(
        bin.addr,
        "example.com:443",
        Some(&basic("code-sandbox", "x")),
    )
    .await;
    assert_eq!(reply.status, 403);

    let records = receiver.wait_for_records(3, STEP).await;
    let by_event = |name: &str| -> Vec<Received> {
        records
            .iter()
            .filter(|r| r.record.event_name == name)
            .cloned()
            .collect()
    };
    let calls = by_event("gen_ai.client.inference.operation.details");
    assert_eq!(calls.len(), 1, "{records:?}");
    assert_eq!(attr_str(&calls[0], "llmtap.client.name"), "code-sandbox");
    assert_eq!(attr_str(&calls[0], "llmtap.client.profile"), "code");
    let egress = by_event("llmtap.egress");
    assert_eq!(egress.len(), 2, "{records:?}");
    let find = |decision: &str| {
        egress
            .iter()
            .find(|r| attr_str(r, "llmtap.egress.decision") == decision)
            .unwrap_or_else(|| panic!("no {decision} record in {egress:?}"))
    };
    let allow = find("allow");
    assert_eq!(attr_str(allow, "llmtap.egress.route"), "intercept");
    assert_eq!(
        attr_str(allow, "llmtap.egress.reason"),
        "allow rule api.anthropic.com"
    );
    assert_eq!(attr_str(allow, "llmtap.client.name"), "code-sandbox");
    assert_eq!(attr_str(allow, "llmtap.client.profile"), "code");
    assert_eq!(attr_str(allow, "server.address"), LLM_HOST);
    assert_eq!(attr_int(allow, "server.port"), 443);
    assert_eq!(attr_str(allow, "network.peer.address"), "127.0.0.1");
    assert!(attr_int(allow, "llmtap.egress.bytes_sent") > 0);
    assert!(attr_int(allow, "llmtap.egress.bytes_received") > 0);
    assert!(attr_number(allow, "llmtap.duration") > 0.0);
    assert_eq!(allow.record.severity_number, 9, "INFO");

    let deny = find("deny");
    assert_eq!(attr_str(deny, "llmtap.egress.route"), "tunnel");
    assert_eq!(
        attr_str(deny, "llmtap.egress.reason"),
        "code-sandbox (profile code): no rule allows example.com:443"
    );
    assert_eq!(attr_str(deny, "llmtap.client.name"), "code-sandbox");
    assert_eq!(attr_str(deny, "server.address"), "example.com");
    assert_eq!(attr_int(deny, "server.port"), 443);
    assert_eq!(attr_int(deny, "llmtap.egress.bytes_sent"), 0);
    assert_eq!(attr_int(deny, "llmtap.egress.bytes_received"), 0);
    assert!(attr_number(deny, "llmtap.duration") >= 0.0);
    assert!(!deny.attrs().contains_key("network.peer.address"));
    assert_eq!(attr_str(deny, "error.type"), "policy");
    assert_eq!(deny.record.severity_number, 13, "WARN");
}

// ---------------------------------------------------------------------------------------------
// 8. Nothing walks around the decision (section 7 of the issue)
// ---------------------------------------------------------------------------------------------

/// llmtap intercepting `api.anthropic.com` (pinned to a fake upstream on loopback).
async fn intercept_setup() -> (TestCa, Upstream, TestProxy) {
    let ca = TestCa::new("upstream CA");
    let up = Upstream::https(&ca, &[LLM_HOST]).await;
    let pin = format!("{LLM_HOST}:{}:127.0.0.1", up.port());
    let proxy = TestProxy::start(&[
        "--resolve",
        &pin,
        "--upstream-ca",
        &path(ca.pem_path.path()),
    ])
    .await;
    (ca, up, proxy)
}

fn llm_authority(up: &Upstream) -> String {
    format!("{LLM_HOST}:{}", up.port())
}

/// Writes its first write's first byte alone, pauses, then passes everything through.
struct SplitFirstWrite<S> {
    inner: S,
    state: Split,
}

enum Split {
    First,
    Pausing(Pin<Box<tokio::time::Sleep>>),
    Through,
}

impl<S> SplitFirstWrite<S> {
    fn new(inner: S) -> Self {
        SplitFirstWrite {
            inner,
            state: Split::First,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SplitFirstWrite<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SplitFirstWrite<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                Split::First if !data.is_empty() => {
                    let n =
                        std::task::ready!(Pin::new(&mut this.inner).poll_write(cx, &data[..1]))?;
                    this.state =
                        Split::Pausing(Box::pin(tokio::time::sleep(Duration::from_millis(150))));
                    return Poll::Ready(Ok(n));
                }
                Split::Pausing(sleep) => {
                    std::task::ready!(sleep.as_mut().poll(cx));
                    this.state = Split::Through;
                }
                _ => return Pin::new(&mut this.inner).poll_write(cx, data),
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn a_client_hello_in_two_pieces_still_gets_llmtaps_leaf() {
    let (ca, up, proxy) = intercept_setup().await;
    // Trusting only llmtap's CA works: llmtap terminated TLS itself.
    let tcp = connect_ok(proxy.addr, &llm_authority(&up), None).await;
    let mut tls = handshake(
        SplitFirstWrite::new(tcp),
        LLM_HOST,
        &[&proxy.ca_pem],
        &["http/1.1"],
    )
    .await
    .expect("llmtap's leaf for a ClientHello sent in two pieces");
    assert!(
        matches!(tls.get_ref().0.state, Split::Through),
        "the ClientHello was not split"
    );
    let reply = get(&mut tls, LLM_HOST, "/json").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let ex = proxy.records.next().await;
    assert_eq!(ex.host, LLM_HOST);
    // Trusting only the upstream's CA fails: nobody tunnels the client past llmtap.
    let tcp = connect_ok(proxy.addr, &llm_authority(&up), None).await;
    let result = handshake(
        SplitFirstWrite::new(tcp),
        LLM_HOST,
        &[&ca.pem],
        &["http/1.1"],
    )
    .await;
    assert!(
        result.is_err(),
        "the client saw the upstream's own certificate"
    );
}

#[tokio::test]
async fn cleartext_on_an_intercepted_connect_is_closed_and_recorded_as_not_tls() {
    let (_ca, up, proxy) = intercept_setup().await;
    for bytes in [
        &b"GET / HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\n"[..],
        &b"POST /v1/messages HTTP/1.1\r\nHost: api.anthropic.com\r\nContent-Length: 2\r\n\r\n{}"[..],
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
    ] {
        let mut tcp = connect_ok(proxy.addr, &llm_authority(&up), None).await;
        tcp.write_all(bytes).await.unwrap();
        expect_closed(&mut tcp).await;
        let rec = proxy.audit.next_for(LLM_HOST).await;
        assert_eq!(rec.decision, EgressDecision::Deny, "{rec:?}");
        assert_eq!(rec.error_type.as_deref(), Some("not_tls"), "{rec:?}");
        assert_eq!(rec.route, "intercept");
        assert_eq!(rec.peer_addr, None, "{rec:?}");
    }
    assert!(proxy.records.drain().is_empty());
    // Only the control call below reaches the upstream.
    assert_eq!(up.state.connections.load(Ordering::SeqCst), 0);
    control_call(&proxy, &up).await;
    assert_eq!(up.state.connections.load(Ordering::SeqCst), 1);
}

/// One good intercepted call (after which the upstream has seen whatever came before it).
async fn control_call(proxy: &TestProxy, up: &Upstream) {
    let tcp = connect_ok(proxy.addr, &llm_authority(up), None).await;
    let mut tls = handshake(tcp, LLM_HOST, &[&proxy.ca_pem], &["http/1.1"])
        .await
        .unwrap();
    let reply = get(&mut tls, LLM_HOST, "/json").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    proxy.records.next().await;
}

#[tokio::test]
async fn eof_right_after_the_connect_makes_no_upstream_connection() {
    let (_ca, up, proxy) = intercept_setup().await;
    let mut tcp = connect_ok(proxy.addr, &llm_authority(&up), None).await;
    tcp.shutdown().await.unwrap();
    expect_closed(&mut tcp).await;
    let rec = proxy.audit.next_for(LLM_HOST).await;
    assert_eq!(rec.route, "intercept");
    assert!(rec.error_type.is_some(), "{rec:?}");
    assert_eq!(rec.peer_addr, None, "{rec:?}");
    assert_eq!(up.state.connections.load(Ordering::SeqCst), 0);
    control_call(&proxy, &up).await;
    assert_eq!(up.state.connections.load(Ordering::SeqCst), 1);
}

/// HTTP/2 over TLS (ALPN h2) inside an intercepted CONNECT.
async fn h2_inside(
    proxy: &TestProxy,
    up: &Upstream,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>> {
    let tcp = connect_ok(proxy.addr, &llm_authority(up), None).await;
    let tls = handshake(tcp, LLM_HOST, &[&proxy.ca_pem], &["h2"])
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    sender
}

#[tokio::test]
async fn http2_connect_inside_the_intercepted_tunnel_is_405() {
    let (_ca, up, proxy) = intercept_setup().await;
    let mut sender = h2_inside(&proxy, &up).await;
    for authority in [
        format!("127.0.0.1:{}", up.port()),
        "evil.test:443".to_string(),
    ] {
        let req = http::Request::builder()
            .method(http::Method::CONNECT)
            .uri(authority.as_str())
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let res = timeout(STEP, sender.send_request(req))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(res.status(), 405, "CONNECT {authority} inside the tunnel");
    }
    assert_eq!(up.state.connections.load(Ordering::SeqCst), 0);
    // The connection still serves requests for the CONNECT target.
    let req = http::Request::builder()
        .uri(format!("https://{}/json", llm_authority(&up)))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let res = timeout(STEP, sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(up.state.connections.load(Ordering::SeqCst), 1);
    assert_eq!(up.state.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn http2_scheme_http_inside_the_intercepted_tls_is_421_and_never_forwarded() {
    let (_ca, up, proxy) = intercept_setup().await;
    let mut sender = h2_inside(&proxy, &up).await;
    let send = |sender: &mut hyper::client::conn::http2::SendRequest<_>, uri: String| {
        let req = http::Request::builder()
            .uri(uri)
            .header("x-api-key", "sk-ant-cleartext-must-not-leave")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        sender.send_request(req)
    };
    let res = timeout(
        STEP,
        send(&mut sender, format!("http://{}/json", llm_authority(&up))),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(res.status(), 421);
    assert_eq!(up.state.requests.load(Ordering::SeqCst), 0);
    assert_eq!(up.state.connections.load(Ordering::SeqCst), 0);
    let res = timeout(
        STEP,
        send(&mut sender, format!("https://{}/json", llm_authority(&up))),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(up.state.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn http1_host_naming_another_host_is_421_and_a_host_without_port_is_fine() {
    let (_ca, up, proxy) = intercept_setup().await;
    let tcp = connect_ok(proxy.addr, &llm_authority(&up), None).await;
    let mut tls = handshake(tcp, LLM_HOST, &[&proxy.ca_pem], &["http/1.1"])
        .await
        .unwrap();
    for host in [
        "evil.test".to_string(),
        format!("127.0.0.1:{}", up.port()),
        format!("{LLM_HOST}:1"),
    ] {
        let reply = get(&mut tls, &host, "/json").await;
        assert_eq!(reply.status, 421, "Host: {host}: {reply:?}");
    }
    // Absolute-form request targets inside the tunnel: another host, or cleartext http://.
    for target in [
        "https://evil.test/json".to_string(),
        format!("http://{}/json", llm_authority(&up)),
        format!("http://{LLM_HOST}/json"),
    ] {
        let reply = get(&mut tls, LLM_HOST, &target).await;
        assert_eq!(reply.status, 421, "GET {target}: {reply:?}");
    }
    assert_eq!(up.state.requests.load(Ordering::SeqCst), 0);
    assert_eq!(up.state.connections.load(Ordering::SeqCst), 0);
    // The CONNECT host without a port, and with it, on the same connection.
    for host in [
        LLM_HOST.to_string(),
        llm_authority(&up),
        "API.Anthropic.COM".to_string(),
    ] {
        let reply = get(&mut tls, &host, "/json").await;
        assert_eq!(reply.status, 200, "Host: {host}: {reply:?}");
    }
    assert_eq!(up.state.requests.load(Ordering::SeqCst), 3);
    assert!(up.state.last_host.lock().unwrap().starts_with(LLM_HOST));
}

#[tokio::test]
async fn an_sni_that_is_not_the_connect_host_mints_nothing_and_is_denied() {
    let (_ca, up, proxy) = intercept_setup().await;
    let ca = &proxy.proxy.as_ref().unwrap().shared.ca;
    let before = ca.cached_leaves();
    let tcp = connect_ok(proxy.addr, &llm_authority(&up), None).await;
    let result = handshake(tcp, "evil.test", &[&proxy.ca_pem], &["http/1.1"]).await;
    assert!(
        result.is_err(),
        "a TLS session for another name through this CONNECT"
    );
    assert_eq!(ca.cached_leaves(), before, "a leaf was minted");
    let rec = proxy.audit.next_for(LLM_HOST).await;
    assert_eq!(rec.decision, EgressDecision::Deny, "{rec:?}");
    assert_eq!(rec.error_type.as_deref(), Some("sni_mismatch"), "{rec:?}");
    assert_eq!(rec.peer_addr, None);
    assert_eq!(up.state.connections.load(Ordering::SeqCst), 0);
    // The right name still works.
    control_call(&proxy, &up).await;
}

// ---------------------------------------------------------------------------------------------
// Found while testing: decision counts, the loop rule on 0.0.0.0, numeric host forms
// ---------------------------------------------------------------------------------------------

/// `/healthz` counts decisions by `llmtap.egress.decision`: an intercepted CONNECT that is
/// refused after its `200` (not TLS, SNI mismatch) is one denial, as its audit record says,
/// not an allow and a deny.
#[tokio::test]
async fn healthz_decision_counts_agree_with_the_audit_records() {
    let (_ca, up, proxy) = intercept_setup().await;
    let mut tcp = connect_ok(proxy.addr, &llm_authority(&up), None).await;
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\n")
        .await
        .unwrap();
    expect_closed(&mut tcp).await;
    let tcp = connect_ok(proxy.addr, &llm_authority(&up), None).await;
    assert!(
        handshake(tcp, "evil.test", &[&proxy.ca_pem], &["http/1.1"])
            .await
            .is_err()
    );
    let mut by_decision = [0u64; 3];
    for _ in 0..2 {
        let rec = proxy.audit.next_for(LLM_HOST).await;
        by_decision[match rec.decision {
            EgressDecision::Allow => 0,
            EgressDecision::Deny => 1,
            EgressDecision::WouldDeny => 2,
        }] += 1;
    }
    assert_eq!(by_decision, [0, 2, 0]);
    let doc = healthz(proxy.addr).await;
    let d = &doc["policy"]["decisions"];
    let counts = [
        d["allow"].as_u64().unwrap(),
        d["deny"].as_u64().unwrap(),
        d["would_deny"].as_u64().unwrap(),
    ];
    assert_eq!(
        counts, by_decision,
        "/healthz decisions (allow, deny, would_deny) disagree with the audit records: {doc}"
    );
}

/// `0.0.0.0:PORT` reaches the local host: on llmtap's own port it is llmtap itself, whatever
/// `--allow-private` says.
#[tokio::test]
async fn the_zero_address_on_llmtaps_port_is_llmtap_itself() {
    let proxy = TestProxy::start(&["--allow-private", "0.0.0.0/0,127.0.0.0/8"]).await;
    let target = format!("0.0.0.0:{}", proxy.addr.port());
    let (mut tcp, reply) = connect_from(proxy.addr, LOCAL, &target, None).await;
    assert_eq!(
        reply.status, 403,
        "CONNECT {target} made a tunnel from llmtap to itself: {reply:?}"
    );
    assert_refusal(&reply, 403, "private_address", &target);
    assert!(reply.body.contains("llmtap itself"), "{reply:?}");
    expect_closed(&mut tcp).await;
}

/// `2130706433`, `127.1`, `0x7f.1` and `017700000001` are 127.0.0.1 to the system resolver
/// (numeric forms, parsed without any lookup): an IP rule must not be walked around by
/// writing the address another way.
#[tokio::test]
async fn numeric_host_forms_do_not_walk_around_ip_rules() {
    let ca = TestCa::new("upstream CA");
    let up = Upstream::https(&ca, &["localhost"]).await;
    let policy = policy_file(
        r#"
[profile.default]
allow = ["*"]
deny = ["127.0.0.1"]
allow_private = ["127.0.0.0/8"]
"#,
    );
    let proxy = TestProxy::start(&["--policy", &path(policy.path())]).await;
    let reply = refused(proxy.addr, &format!("127.0.0.1:{}", up.port()), None).await;
    assert_refusal(&reply, 403, "policy", "127.0.0.1");
    for form in ["2130706433", "127.1", "0x7f.1", "017700000001"] {
        let target = format!("{form}:{}", up.port());
        let (_tcp, reply) = connect_from(proxy.addr, LOCAL, &target, None).await;
        assert_ne!(
            reply.status, 200,
            "CONNECT {target} reached 127.0.0.1 past `deny = [\"127.0.0.1\"]`"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 9. --connect-to
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn connect_to_puts_a_mock_behind_port_443_with_tls_verifying_the_name() {
    let ca = TestCa::new("upstream CA");
    // The mock's certificate names the LLM host only, not 127.0.0.1.
    let up = Upstream::https(&ca, &[LLM_HOST]).await;
    // A second mock whose certificate names 127.0.0.1 only: TLS must verify HOST, not HOST2.
    let wrong = Upstream::https(&ca, &["127.0.0.1"]).await;
    let pin = format!("{LLM_HOST}:443:127.0.0.1:{}", up.port());
    let wrong_pin = format!("api.openai.com:443:127.0.0.1:{}", wrong.port());
    let proxy = TestProxy::start(&[
        "--connect-to",
        &pin,
        "--connect-to",
        &wrong_pin,
        "--upstream-ca",
        &path(ca.pem_path.path()),
    ])
    .await;
    let client = proxy.client();
    let res = client
        .post(format!("https://{LLM_HOST}/v1/messages"))
        .header("content-type", "application/json")
        .body(MESSAGES_BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), common::upstream::ANTHROPIC_JSON);
    let ex = proxy.records.next().await;
    assert_eq!(ex.host, LLM_HOST);
    assert_eq!(ex.port, 443);
    assert_eq!(ex.url, format!("https://{LLM_HOST}/v1/messages"));
    assert!(up.state.last_host.lock().unwrap().starts_with(LLM_HOST));
    drop(client);
    let rec = proxy.audit.next_for(LLM_HOST).await;
    assert_eq!(rec.server_port, 443);
    assert_eq!(rec.peer_addr, Some(SocketAddr::new(LOCAL, up.port())));

    let res = proxy
        .client()
        .post("https://api.openai.com/v1/chat/completions")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 502, "TLS verified HOST2 instead of HOST");
    let ex = proxy.records.next().await;
    assert!(
        matches!(&ex.outcome, llmtap::capture::Outcome::UpstreamError { kind, .. } if kind == "tls"),
        "{:?}",
        ex.outcome
    );
    assert_eq!(wrong.state.requests.load(Ordering::SeqCst), 0);
}
