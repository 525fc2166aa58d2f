//! The core proxy over real loopback sockets: interception, tunnels, streaming, protocols, capture.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use common::{STEP, TestCa, TestProxy, Upstream};
use futures::{SinkExt, StreamExt};
use llmtap::capture::Outcome;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const LLM_HOST: &str = "api.anthropic.com";

/// llmtap intercepting `api.anthropic.com`, pinned to a fake upstream that the test CA signed.
async fn llm_setup() -> (TestCa, Upstream, TestProxy) {
    let ca = TestCa::new("upstream test CA");
    let up = Upstream::https(&ca, &[LLM_HOST, "localhost", "127.0.0.1"]).await;
    let pin = format!("{LLM_HOST}:{}:127.0.0.1", up.port());
    let ca_path = ca.pem_path.path().display().to_string();
    // The fake upstream is on loopback: a private address llmtap refuses unless allowed.
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

fn llm_url(up: &Upstream, path: &str) -> String {
    format!("https://{LLM_HOST}:{}{path}", up.port())
}

#[tokio::test]
async fn intercepts_llm_host_and_records_the_exchange() {
    let (_ca, up, proxy) = llm_setup().await;
    let body = r#"{"model":"claude-sonnet-4-5","max_tokens":10,"messages":[]}"#;
    let res = proxy
        .client()
        .post(llm_url(&up, "/v1/messages"))
        .header("content-type", "application/json")
        .header("x-api-key", "sk-ant-test")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert_eq!(text, common::upstream::ANTHROPIC_JSON);

    let ex = proxy.records.next().await;
    assert_eq!(ex.method, "POST");
    assert_eq!(
        ex.url,
        format!("https://{LLM_HOST}:{}/v1/messages", up.port())
    );
    assert_eq!(ex.host, LLM_HOST);
    assert_eq!(ex.path, "/v1/messages");
    assert_eq!(ex.status, Some(200));
    assert_eq!(ex.outcome, Outcome::Complete);
    assert_eq!(&ex.request_body.bytes[..], body.as_bytes());
    assert_eq!(ex.request_body.total_len, body.len() as u64);
    assert!(!ex.request_body.truncated);
    assert_eq!(&ex.response_body.bytes[..], text.as_bytes());
    assert!(ex.time_to_first_byte.is_some());
    assert!(ex.time_to_first_chunk.is_some());
    assert!(ex.duration >= ex.time_to_first_byte.unwrap());
    assert!(ex.client_addr.ip().is_loopback());
    assert!(
        ex.request_headers
            .iter()
            .any(|(k, v)| k == "x-api-key" && v == "sk-ant-test")
    );
    assert!(ex.response_headers.iter().any(|(k, _)| k == "content-type"));
    // The incremental parser ran on the copy.
    let facts = ex.response_facts.as_ref().unwrap();
    assert_eq!(facts.model.as_deref(), Some("claude-sonnet-4-5"));
    assert_eq!(facts.usage.input_tokens, Some(12));
    assert_eq!(facts.usage.output_tokens, Some(3));
    // The upstream saw the original name (TLS verified it too).
    assert!(up.state.last_host.lock().unwrap().starts_with(LLM_HOST));
}

#[tokio::test]
async fn other_hosts_are_tunnelled_untouched() {
    let (ca, up, proxy) = llm_setup().await;
    // Trust only the upstream's own CA: this works only if llmtap did not decrypt.
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{}", proxy.addr)).unwrap())
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
        .timeout(STEP)
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/json", up.port());
    let res = client.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.text().await.unwrap();
    // And a client trusting only llmtap's CA fails for that host.
    assert!(proxy.client().get(&url).send().await.is_err());
    assert!(
        proxy.records.drain().is_empty(),
        "tunnels produce no exchange records"
    );
}

#[tokio::test]
async fn leaf_certificate_names_the_host_and_has_its_own_key() {
    let (_ca, up, proxy) = llm_setup().await;
    let certs = tls_through_connect(&proxy, LLM_HOST, up.port()).await;
    let (_, leaf) = x509_parser::parse_x509_certificate(&certs[0]).unwrap();
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    assert!(format!("{:?}", san.value).contains(LLM_HOST));
    let ca_pem = proxy.ca_pem.clone();
    let ca_der = {
        use rustls_pki_types::pem::PemObject;
        rustls_pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap()
    };
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    assert_ne!(
        leaf.public_key().subject_public_key.data,
        ca.public_key().subject_public_key.data,
        "leaf must not reuse the CA key"
    );
    // Issued once per host: a second connection gets the same certificate.
    let again = tls_through_connect(&proxy, LLM_HOST, up.port()).await;
    assert_eq!(certs[0], again[0]);
}

/// CONNECT + TLS handshake trusting llmtap's CA; returns the peer chain.
async fn tls_through_connect(
    proxy: &TestProxy,
    host: &str,
    port: u16,
) -> Vec<rustls_pki_types::CertificateDer<'static>> {
    let tls = connect_tls(proxy, host, port, &["http/1.1"]).await;
    tls.get_ref().1.peer_certificates().unwrap().to_vec()
}

async fn connect_raw(proxy: &TestProxy, host: &str, port: u16) -> TcpStream {
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let req = format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let head = read_head(&mut tcp).await;
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "CONNECT answered {head:?}"
    );
    tcp
}

async fn read_head(tcp: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = timeout(STEP, tcp.read(&mut byte)).await.unwrap().unwrap();
        if n == 0 {
            break;
        }
        buf.push(byte[0]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

async fn connect_tls(
    proxy: &TestProxy,
    host: &str,
    port: u16,
    alpn: &[&str],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = connect_raw(proxy, host, port).await;
    let mut roots = rustls::RootCertStore::empty();
    use rustls_pki_types::pem::PemObject;
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_slice(proxy.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(host.to_string()).unwrap();
    connector.connect(name, tcp).await.unwrap()
}

#[tokio::test]
async fn sse_reaches_the_client_event_by_event() {
    let (_ca, up, proxy) = llm_setup().await;
    let mut res = proxy
        .client()
        .get(llm_url(&up, "/sse?n=20&delay_ms=50&gate=1"))
        .send()
        .await
        .unwrap();
    let first = timeout(STEP, res.chunk()).await.unwrap().unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("\"i\":0"));
    // The upstream is held after its first event until we release it: a proxy that
    // buffered would never have delivered the event above.
    assert_eq!(*up.state.sse_sent.borrow(), 1);
    up.state.sse_gate.notify_one();
    let mut rest = Vec::new();
    while let Some(chunk) = timeout(STEP, res.chunk()).await.unwrap().unwrap() {
        rest.extend_from_slice(&chunk);
    }
    assert!(String::from_utf8_lossy(&rest).contains("\"i\":19"));
    let ex = proxy.records.next().await;
    assert_eq!(ex.outcome, Outcome::Complete);
    assert!(ex.time_to_first_chunk.unwrap() < ex.duration);
}

#[tokio::test]
async fn slow_upload_streams_to_the_upstream() {
    let (_ca, up, proxy) = llm_setup().await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(futures::stream::poll_fn({
        let mut rx = rx;
        move |cx| rx.poll_recv(cx)
    }));
    let client = proxy.client();
    let send = tokio::spawn(client.post(llm_url(&up, "/upload")).body(body).send());
    tx.send(Ok(vec![b'a'; 1000])).await.unwrap();
    // The upstream must see the first part while the client still holds the rest.
    let mut frames = up.state.upload_frames.subscribe();
    timeout(STEP, frames.wait_for(|n| *n >= 1))
        .await
        .unwrap()
        .unwrap();
    tx.send(Ok(vec![b'b'; 1000])).await.unwrap();
    drop(tx);
    let res = timeout(STEP, send).await.unwrap().unwrap().unwrap();
    assert_eq!(res.text().await.unwrap(), "received 2000");
    let ex = proxy.records.next().await;
    assert_eq!(ex.request_body.total_len, 2000);
}

#[tokio::test]
async fn plain_http_absolute_form_is_forwarded_and_captured_for_llm_hosts() {
    let up = Upstream::http().await;
    let pin = format!("{LLM_HOST}:{}:127.0.0.1", up.port());
    let proxy = TestProxy::start(&["--resolve", &pin, "--allow-private", "127.0.0.0/8"]).await;
    let client = proxy.client();
    let res = client
        .get(format!("http://{LLM_HOST}:{}/json", up.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.text().await.unwrap();
    let ex = proxy.records.next().await;
    assert_eq!(ex.scheme, "http");
    assert_eq!(ex.status, Some(200));
    // A non-LLM host over plain HTTP is forwarded without a record.
    let res = client
        .get(format!("http://127.0.0.1:{}/json", up.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.text().await.unwrap();
    assert!(proxy.records.drain().is_empty());
}

#[tokio::test]
async fn http2_towards_the_client_via_alpn() {
    let (_ca, up, proxy) = llm_setup().await;
    let res = proxy
        .client()
        .get(llm_url(&up, "/json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_2);
    assert_eq!(res.status(), 200);
    res.text().await.unwrap();
    let ex = proxy.records.next().await;
    assert_eq!(ex.http_version, "2");
}

#[tokio::test]
async fn keep_alive_serves_several_requests_on_one_tls_connection() {
    let (_ca, up, proxy) = llm_setup().await;
    let mut tls = connect_tls(&proxy, LLM_HOST, up.port(), &["http/1.1"]).await;
    for _ in 0..3 {
        let req = format!("GET /json HTTP/1.1\r\nHost: {LLM_HOST}\r\n\r\n");
        tls.write_all(req.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).contains("\"output_tokens\":3}}") {
            let n = timeout(STEP, tls.read(&mut buf)).await.unwrap().unwrap();
            assert!(n > 0, "connection closed early");
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200"));
    }
    for _ in 0..3 {
        proxy.records.next().await;
    }
}

#[tokio::test]
async fn websocket_upgrade_is_passed_through_intercepted_and_tunnelled() {
    let (_ca, up, proxy) = llm_setup().await;
    // Intercepted host: TLS with llmtap's leaf, then a WebSocket handshake inside.
    let tls = connect_tls(&proxy, LLM_HOST, up.port(), &["http/1.1"]).await;
    let url = format!("wss://{LLM_HOST}:{}/ws", up.port());
    let (mut ws, resp) = tokio_tungstenite::client_async(url, tls).await.unwrap();
    assert_eq!(resp.status(), 101);
    ws.send("hello".into()).await.unwrap();
    let echoed = timeout(STEP, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), "hello");
    let ex = proxy.records.next().await;
    assert_eq!(ex.status, Some(101));

    // Plain ws:// through the proxy in absolute form to a non-LLM host.
    let plain = Upstream::http().await;
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let handshake = format!(
        "GET http://127.0.0.1:{port}/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        port = plain.port()
    );
    tcp.write_all(handshake.as_bytes()).await.unwrap();
    let head = read_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        tcp,
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    ws.send("again".into()).await.unwrap();
    let echoed = timeout(STEP, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), "again");
}

#[tokio::test]
async fn response_capture_is_capped_but_counts_every_byte() {
    let (_ca, up, proxy) = llm_setup().await;
    let size: usize = 50 * 1024 * 1024;
    let mut res = proxy
        .client()
        .get(llm_url(&up, &format!("/big?bytes={size}")))
        .send()
        .await
        .unwrap();
    let mut got = 0usize;
    while let Some(chunk) = res.chunk().await.unwrap() {
        got += chunk.len();
    }
    assert_eq!(got, size);
    let ex = proxy.records.next().await;
    assert_eq!(ex.response_body.total_len, size as u64);
    assert_eq!(ex.response_body.bytes.len(), 1024 * 1024);
    assert!(ex.response_body.truncated);
}

#[tokio::test]
async fn client_going_away_mid_stream_is_recorded_as_aborted() {
    let (_ca, up, proxy) = llm_setup().await;
    let mut res = proxy
        .client()
        .get(llm_url(&up, "/sse?n=200&delay_ms=20"))
        .send()
        .await
        .unwrap();
    timeout(STEP, res.chunk()).await.unwrap().unwrap();
    drop(res);
    let ex = proxy.records.next().await;
    assert_eq!(ex.outcome, Outcome::ClientAborted);
}

#[tokio::test]
async fn upstream_reset_mid_stream_ends_the_client_stream_in_error() {
    let (_ca, up, proxy) = llm_setup().await;
    let mut res = proxy
        .client()
        .get(llm_url(&up, "/reset"))
        .send()
        .await
        .unwrap();
    let mut failed = false;
    loop {
        match timeout(STEP, res.chunk()).await.unwrap() {
            Ok(Some(_)) => continue,
            Ok(None) => break,
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(
        failed,
        "the client must see the stream end in error, not a clean end"
    );
    let ex = proxy.records.next().await;
    assert!(
        matches!(ex.outcome, Outcome::UpstreamError { .. }),
        "{:?}",
        ex.outcome
    );
}

#[tokio::test]
async fn bad_upstream_certificate_gets_502_saying_why() {
    let (_ca, up, _) = llm_setup().await;
    // A proxy that was not given the upstream's CA.
    let pin = format!("{LLM_HOST}:{}:127.0.0.1", up.port());
    let proxy = TestProxy::start(&["--resolve", &pin]).await;
    let res = proxy
        .client()
        .get(llm_url(&up, "/json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 502);
    let text = res.text().await.unwrap().to_lowercase();
    assert!(
        text.contains("tls") && text.contains("certificate"),
        "{text}"
    );
    let ex = proxy.records.next().await;
    assert!(matches!(ex.outcome, Outcome::UpstreamError { ref kind, .. } if kind == "tls"));
}

#[tokio::test]
async fn connect_to_closed_port_is_502_with_reason() {
    // A name that does not resolve is tested through `policy::decide` with a stub resolver:
    // a real lookup would send a packet to the system's DNS server.
    let proxy = TestProxy::start(&["--allow-private", "127.0.0.0/8"]).await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    for (target, needle) in [(format!("127.0.0.1:{closed}"), "refused")] {
        let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
        let req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut text = String::new();
        timeout(STEP, tcp.read_to_string(&mut text))
            .await
            .unwrap()
            .ok();
        assert!(text.starts_with("HTTP/1.1 502"), "{target}: {text}");
        assert!(text.to_lowercase().contains(needle), "{target}: {text}");
    }
}

#[tokio::test]
async fn an_upstream_that_accepts_tcp_but_never_speaks_tls_is_a_504() {
    // Connections are accepted and held; no TLS byte ever comes back. llmtap bounds the
    // upstream handshake (10 s), so this test takes that long.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let pin = format!("{LLM_HOST}:{port}:127.0.0.1");
    let proxy = TestProxy::start(&["--resolve", &pin, "--allow-private", "127.0.0.0/8"]).await;
    let started = std::time::Instant::now();
    let res = proxy
        .client()
        .post(format!("https://{LLM_HOST}:{port}/v1/messages"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 504);
    assert_eq!(res.headers()["x-llmtap-error"], "upstream_tls_timeout");
    assert!(started.elapsed() >= std::time::Duration::from_secs(9));
    let text = res.text().await.unwrap();
    assert!(text.contains("TLS handshake"), "{text}");
    let ex = proxy.records.next().await;
    assert!(
        matches!(&ex.outcome, Outcome::UpstreamError { kind, .. } if kind == "upstream_tls_timeout"),
        "{:?}",
        ex.outcome
    );
}

#[tokio::test]
async fn garbage_bytes_and_distrusting_clients_do_not_disturb_others() {
    let (_ca, up, proxy) = llm_setup().await;
    // Bytes that are not HTTP.
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"\x00\x01\x02garbage\r\n\r\n").await.unwrap();
    let mut text = String::new();
    timeout(STEP, tcp.read_to_string(&mut text))
        .await
        .unwrap()
        .ok();
    assert!(text.starts_with("HTTP/1.1 400"), "{text:?}");

    // A client that does not trust llmtap's CA: its handshake fails, nothing else does.
    let distrusting = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{}", proxy.addr)).unwrap())
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(TestCa::new("other").pem.as_bytes()).unwrap(),
        )
        .timeout(STEP)
        .build()
        .unwrap();
    assert!(distrusting.get(llm_url(&up, "/json")).send().await.is_err());

    let res = proxy
        .client()
        .get(llm_url(&up, "/json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let proxy = TestProxy::start(&[]).await;
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let big = "a".repeat(llmtap::proxy::MAX_REQUEST_HEAD + 1024);
    let req = format!("GET http://127.0.0.1:1/ HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    let _ = tcp.write_all(req.as_bytes()).await;
    let mut text = String::new();
    timeout(STEP, tcp.read_to_string(&mut text))
        .await
        .unwrap()
        .ok();
    assert!(
        text.starts_with("HTTP/1.1 431"),
        "{:?}",
        &text[..text.len().min(80)]
    );
}

#[tokio::test]
async fn healthz_answers_on_the_proxy_itself() {
    let proxy = TestProxy::start(&[]).await;
    let body = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{}/healthz", proxy.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(body.status(), 200);
    let json: serde_json::Value = body.json().await.unwrap();
    assert_eq!(json["status"], "ok");
    assert!(json["exchanges"]["in_flight"].is_number());
    assert!(llmtap::health::check(proxy.addr).await.is_ok());
}

#[tokio::test]
async fn shutdown_lets_in_flight_exchanges_finish() {
    let (_ca, up, mut proxy) = llm_setup().await;
    let client = proxy.client();
    let mut res = client
        .get(llm_url(&up, "/sse?n=10&delay_ms=30"))
        .send()
        .await
        .unwrap();
    timeout(STEP, res.chunk()).await.unwrap().unwrap();
    let reader = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Ok(Some(c)) = res.chunk().await {
            all.extend_from_slice(&c);
        }
        all
    });
    let report = proxy.shutdown().await;
    assert_eq!(report.abandoned, 0);
    let rest = timeout(STEP, reader).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&rest).contains("\"i\":9"));
    let ex = proxy.records.next().await;
    assert_eq!(ex.outcome, Outcome::Complete);
    // New connections are refused once stopped.
    assert!(TcpStream::connect(proxy.addr).await.is_err());
    let _ = up.state.requests.load(Ordering::SeqCst);
}

#[tokio::test]
async fn request_facts_come_from_the_whole_body_not_the_captured_part() {
    let (_ca, up, proxy) = llm_setup().await;
    let prompt = "p".repeat(2 * 1024 * 1024);
    let body = format!(
        r#"{{"max_tokens":5,"messages":[{{"role":"user","content":"{prompt}"}}],"model":"claude-haiku-4-5"}}"#
    );
    let res = proxy
        .client()
        .post(llm_url(&up, "/v1/messages"))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.text().await.unwrap();
    let ex = proxy.records.next().await;
    assert!(ex.request_body.truncated);
    assert_eq!(ex.request_body.total_len, body.len() as u64);
    let facts = ex.request_facts.unwrap();
    assert_eq!(facts.model.as_deref(), Some("claude-haiku-4-5"));
    assert_eq!(facts.max_tokens, Some(5));
}

#[tokio::test]
async fn http2_requests_must_address_the_connect_target() {
    let (_ca, up, proxy) = llm_setup().await;
    let tls = connect_tls(&proxy, LLM_HOST, up.port(), &["h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut send = |authority: String| {
        let req = http::Request::builder()
            .uri(format!("https://{authority}/json"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        sender.send_request(req)
    };
    // Another host through this tunnel's connection: refused, never forwarded.
    let res = timeout(STEP, send(format!("127.0.0.1:{}", up.port())))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(res.status(), 421);
    let before = up.state.requests.load(Ordering::SeqCst);
    assert_eq!(before, 0, "the upstream must not see a misdirected request");
    // The CONNECT target itself works on the same connection.
    let res = timeout(STEP, send(format!("{LLM_HOST}:{}", up.port())))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(res.status(), 200);
    proxy.records.next().await;
}
