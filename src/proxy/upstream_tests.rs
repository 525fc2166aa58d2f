//! The way out over real loopback sockets: each failure is classified, with its status.

use std::time::Instant;

use http::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket};

use super::*;
use crate::proxy::errors::{FailureKind, classify};
use crate::proxy::respond;

const HOST: &str = "api.example.com";
const SHORT: Duration = Duration::from_millis(300);

fn pool(connect: Duration, tls_handshake: Duration) -> UpstreamPool {
    let tls = client_tls_config(None).unwrap();
    UpstreamPool::with_timeouts(
        tls,
        UpstreamTimeouts {
            connect,
            tls_handshake,
        },
    )
}

/// One request for `HOST` over `pool` to exactly `addr`; the error classified.
async fn fails(pool: &UpstreamPool, addr: SocketAddr) -> crate::proxy::errors::Failure {
    let target = Target::new(HOST, addr.port());
    let client = pool.client(&target, addr, Protocols::Auto);
    let uri = format!("https://{HOST}:{}/v1/messages", addr.port());
    let req = http::Request::post(uri).body(respond::empty()).unwrap();
    let bounded = tokio::time::timeout(Duration::from_secs(20), client.request(req));
    match bounded.await.expect("the request must end") {
        Ok(res) => panic!("expected a failure, got {}", res.status()),
        Err(e) => classify(&e),
    }
}

/// A listener whose connections are accepted and held, never answered.
async fn silent_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    addr
}

#[tokio::test]
async fn an_upstream_that_never_speaks_tls_is_a_504_tls_timeout() {
    let addr = silent_upstream().await;
    let started = Instant::now();
    let f = fails(&pool(CONNECT_TIMEOUT, SHORT), addr).await;
    assert_eq!(f.kind, FailureKind::TlsTimeout, "{}", f.message);
    assert_eq!(f.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(f.kind.as_str(), "upstream_tls_timeout");
    assert!(f.message.contains("TLS handshake"), "{}", f.message);
    assert!(started.elapsed() >= SHORT);
}

#[tokio::test]
async fn a_closed_port_is_a_502_connect() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let f = fails(&pool(CONNECT_TIMEOUT, SHORT), closed).await;
    assert_eq!(f.kind, FailureKind::Connect, "{}", f.message);
    assert_eq!(f.status(), StatusCode::BAD_GATEWAY);
    assert!(
        f.message.to_lowercase().contains("refused"),
        "{}",
        f.message
    );
}

#[tokio::test]
async fn an_upstream_that_hangs_up_or_answers_plain_http_is_a_502() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        // The first connection is closed at once, the second answers HTTP to the ClientHello.
        let (first, _) = listener.accept().await.unwrap();
        drop(first);
        let (mut second, _) = listener.accept().await.unwrap();
        let _ = second
            .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            .await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let pool = pool(CONNECT_TIMEOUT, Duration::from_secs(5));
    let f = fails(&pool, addr).await;
    assert_eq!(f.kind, FailureKind::Upstream, "{}", f.message);
    assert_eq!(f.status(), StatusCode::BAD_GATEWAY);
    let f = fails(&pool, addr).await;
    assert_eq!(f.kind, FailureKind::Tls, "{}", f.message);
    assert_eq!(f.status(), StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn a_connect_that_gets_no_answer_is_a_504_connect_timeout() {
    // A listener that never accepts, with its backlog full: further SYNs go unanswered.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    loop {
        let attempt = tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr));
        match attempt.await {
            Ok(Ok(tcp)) if queued.len() < 64 => queued.push(tcp),
            Ok(other) => panic!("the backlog never filled: {other:?}"),
            Err(_) => break,
        }
    }
    let f = fails(&pool(SHORT, SHORT), addr).await;
    assert_eq!(f.kind, FailureKind::ConnectTimeout, "{}", f.message);
    assert_eq!(f.status(), StatusCode::GATEWAY_TIMEOUT);
    drop(listener);
}
