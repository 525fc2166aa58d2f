//! Timeouts, connection caps and shutdown records over real loopback sockets: every bound holds
//! against a client that goes silent, and none cuts a stream that keeps moving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::upstream::Canned;
use common::{STEP, TestCa, TestProxy, Upstream};
use llmtap::capture::Outcome;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const LLM_HOST: &str = "api.anthropic.com";

async fn setup(extra: &[&str]) -> (TestCa, Upstream, TestProxy) {
    let ca = TestCa::new("upstream test CA");
    let up = Upstream::https(&ca, &[LLM_HOST, "localhost"]).await;
    let pin = format!("{LLM_HOST}:{}:127.0.0.1", up.port());
    let ca_path = ca.pem_path.path().display().to_string();
    let mut args = vec![
        "--resolve",
        &pin,
        "--upstream-ca",
        &ca_path,
        "--allow-private",
        "127.0.0.0/8",
    ];
    args.extend_from_slice(extra);
    let proxy = TestProxy::start(&args).await;
    (ca, up, proxy)
}

/// Reads until the peer closes; panics if it does not within `STEP`.
async fn closed_by_peer(tcp: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match timeout(STEP, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("llmtap kept a silent connection open past the step timeout"),
        }
    }
}

async fn connect(proxy: &TestProxy, target: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = timeout(STEP, tcp.read(&mut byte)).await.unwrap().unwrap();
        assert!(n > 0, "closed before the CONNECT answer");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    tcp
}

#[tokio::test]
async fn a_connection_that_never_sends_a_byte_is_closed_after_the_idle_timeout() {
    let (_ca, _up, proxy) = setup(&["--idle-timeout", "300ms"]).await;
    let mut silent = TcpStream::connect(proxy.addr).await.unwrap();
    let got = closed_by_peer(&mut silent).await;
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    // Between keep-alive requests too.
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let got = closed_by_peer(&mut tcp).await;
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    let health = proxy.proxy.as_ref().unwrap().shared.health();
    assert!(
        health["connections"]["closed_idle"].as_u64().unwrap() >= 2,
        "{health}"
    );
}

#[tokio::test]
async fn an_intercepted_connect_followed_by_silence_or_half_a_client_hello_is_closed() {
    let (_ca, up, proxy) = setup(&["--handshake-timeout", "300ms"]).await;
    let target = format!("{LLM_HOST}:{}", up.port());
    let mut silent = connect(&proxy, &target).await;
    closed_by_peer(&mut silent).await;
    let audit = proxy.audit.next_for(LLM_HOST).await;
    assert_eq!(audit.decision.as_str(), "deny");
    assert_eq!(audit.error_type.as_deref(), Some("tls_timeout"));
    // A ClientHello cut after 40 bytes.
    let mut cut = connect(&proxy, &target).await;
    let mut hello = vec![
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    hello.resize(40, 0x42);
    cut.write_all(&hello).await.unwrap();
    closed_by_peer(&mut cut).await;
    let audit = proxy.audit.next_for(LLM_HOST).await;
    assert_eq!(audit.error_type.as_deref(), Some("tls_timeout"));
    assert_eq!(up.state.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_stalled_upload_is_cut_and_recorded_as_a_timeout() {
    let up = Upstream::http().await;
    let pin = format!("{LLM_HOST}:{}:127.0.0.1", up.port());
    let proxy = TestProxy::start(&["--resolve", &pin, "--body-timeout", "300ms"]).await;
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "POST http://{LLM_HOST}:{}/upload HTTP/1.1\r\nHost: {LLM_HOST}\r\ncontent-length: 1000\r\n\r\n0123456789",
        up.port()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    // The client keeps its socket open and sends nothing more.
    let ex = proxy.records.next().await;
    assert_eq!(
        ex.outcome,
        Outcome::Timeout {
            side: "request_body"
        }
    );
    assert_eq!(ex.request_body.total_len, 10);
    // The client's side stalled: 408 (if it still listens), not a gateway error.
    let answer = closed_by_peer(&mut tcp).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty()
            || (answer.starts_with("HTTP/1.1 408")
                && answer.contains("x-llmtap-error: request_body_timeout")),
        "{answer}"
    );
}

#[tokio::test]
async fn a_stalled_response_is_cut_and_recorded_but_a_stream_with_pings_lives() {
    let (_ca, up, proxy) = setup(&["--body-timeout", "500ms"]).await;
    // Head and a first chunk, then an hour of silence.
    up.state.can(
        "/stall",
        Canned::new(
            200,
            "text/event-stream",
            "data: {\"a\":1}\n\ndata: {\"b\":2}\n\n",
        )
        .in_chunks(2, Duration::from_secs(3600)),
    );
    let mut res = proxy
        .client()
        .get(format!("https://{LLM_HOST}:{}/stall", up.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let first = timeout(STEP, res.chunk()).await.unwrap().unwrap();
    assert!(first.is_some());
    assert!(
        timeout(STEP, res.chunk()).await.unwrap().is_err(),
        "the stalled body must end in error"
    );
    let ex = proxy.records.next().await;
    assert_eq!(
        ex.outcome,
        Outcome::Timeout {
            side: "response_body"
        }
    );

    // An SSE stream with an event every 100 ms runs 20 events (about 4 body timeouts long).
    let res = proxy
        .client()
        .get(format!(
            "https://{LLM_HOST}:{}/sse?n=20&delay_ms=100",
            up.port()
        ))
        .send()
        .await
        .unwrap();
    let text = timeout(STEP, res.text()).await.unwrap().unwrap();
    assert_eq!(text.matches("event: message").count(), 20);
    assert_eq!(proxy.records.next().await.outcome, Outcome::Complete);
}

#[tokio::test]
async fn a_silent_tunnel_is_closed_after_the_body_timeout() {
    let plain = Upstream::http().await;
    let proxy =
        TestProxy::start(&["--allow-private", "127.0.0.0/8", "--body-timeout", "300ms"]).await;
    let mut tunnel = connect(&proxy, &format!("127.0.0.1:{}", plain.port())).await;
    closed_by_peer(&mut tunnel).await;
    let audit = proxy.audit.next_for("127.0.0.1").await;
    assert_eq!(audit.decision.as_str(), "allow");
    assert_eq!(audit.error_type.as_deref(), Some("timeout"));
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once_and_counted() {
    let (_ca, _up, proxy) = setup(&["--max-connections", "2"]).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
        // A request in progress keeps the connection counted (its head is not finished).
        tcp.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        held.push(tcp);
    }
    let shared = std::sync::Arc::clone(&proxy.proxy.as_ref().unwrap().shared);
    let deadline = tokio::time::Instant::now() + STEP;
    while shared.connections.open.load(Ordering::SeqCst) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "connections not counted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut over = TcpStream::connect(proxy.addr).await.unwrap();
    let _ = over
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let got = closed_by_peer(&mut over).await;
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    assert_eq!(
        shared.connections.refused_over_limit.load(Ordering::SeqCst),
        1
    );
    drop(held);
    let health = shared.health();
    assert_eq!(health["connections"]["max"], 2);
}

#[tokio::test]
async fn streams_cut_at_the_end_of_the_grace_still_get_their_records() {
    let (_ca, up, mut proxy) = setup(&["--shutdown-grace", "300ms"]).await;
    let client = proxy.client();
    let mut streams = Vec::new();
    for _ in 0..20 {
        // Gated: each stream sends its first event, then waits (up to 20 s) for the test.
        let mut res = client
            .get(format!("https://{LLM_HOST}:{}/sse?n=5&gate=1", up.port()))
            .send()
            .await
            .unwrap();
        timeout(STEP, res.chunk()).await.unwrap().unwrap().unwrap();
        streams.push(res);
    }
    let report = proxy.shutdown().await;
    assert_eq!(report.abandoned, 20);
    for _ in 0..20 {
        let ex = proxy.records.next().await;
        assert_eq!(ex.outcome, Outcome::Shutdown);
        assert!(ex.response_body.total_len > 0);
    }
    drop(streams);
}
