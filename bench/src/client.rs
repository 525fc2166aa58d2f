//! The load generator's client: TCP (direct or HTTP CONNECT through the proxy) + tokio-rustls + hyper 1 HTTP/1.1.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Where requests go and how.
#[derive(Clone)]
pub struct Target {
    /// Name in CONNECT, SNI and Host (e.g. api.anthropic.com).
    pub host: String,
    /// The mock's port (CONNECT host:port).
    pub port: u16,
    /// The mock's socket address (direct connections).
    pub mock: SocketAddr,
    /// The proxy (None = direct).
    pub proxy: Option<SocketAddr>,
    /// Trusts the mock CA (direct) or llmtap's CA (proxied).
    pub tls: Arc<ClientConfig>,
    /// Path and query, e.g. `/v1/messages?events=50&delay_ms=20`.
    pub path: String,
    pub stream: bool,
}

/// One request's timings (µs) and size.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub headers_us: u32,
    pub first_us: u32,
    pub total_us: u32,
    pub bytes: u64,
}

pub type Conn = SendRequest<Full<Bytes>>;

const IO_TIMEOUT: Duration = Duration::from_secs(30);

pub fn err<E: std::fmt::Display>(ctx: &'static str) -> impl FnOnce(E) -> String {
    move |e| format!("{ctx}: {e}")
}

/// Opens TCP (+ CONNECT) + TLS + HTTP/1.1 handshake.
pub async fn connect(t: &Target) -> Result<Conn, String> {
    let fut = async {
        let tcp = match t.proxy {
            None => TcpStream::connect(t.mock).await.map_err(err("connect"))?,
            Some(p) => connect_tunnel(p, &t.host, t.port).await?,
        };
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(t.host.clone()).map_err(err("server name"))?;
        let tls = TlsConnector::from(t.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(err("tls"))?;
        let (send, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(tls))
            .await
            .map_err(err("http handshake"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok::<_, String>(send)
    };
    tokio::time::timeout(IO_TIMEOUT, fut)
        .await
        .map_err(|_| "connect timeout".to_string())?
}

async fn connect_tunnel(proxy: SocketAddr, host: &str, port: u16) -> Result<TcpStream, String> {
    let mut tcp = TcpStream::connect(proxy)
        .await
        .map_err(err("connect proxy"))?;
    let _ = tcp.set_nodelay(true);
    let req = format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n");
    tcp.write_all(req.as_bytes())
        .await
        .map_err(err("CONNECT write"))?;
    // TLS is client-first, so nothing follows the proxy's answer head until we send ClientHello.
    let mut head = Vec::with_capacity(128);
    let mut buf = [0u8; 1024];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tcp.read(&mut buf).await.map_err(err("CONNECT read"))?;
        if n == 0 || head.len() > 8192 {
            return Err("CONNECT: proxy closed".into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    if !(head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200")) {
        let line = String::from_utf8_lossy(&head);
        return Err(format!(
            "CONNECT refused: {}",
            line.lines().next().unwrap_or("")
        ));
    }
    Ok(tcp)
}

/// The request body: an Anthropic Messages request of about 540 bytes.
pub fn request_body(stream: bool) -> Bytes {
    let prompt = "Summarise the following benchmark note in one sentence. ".repeat(8);
    let v = serde_json::json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "stream": stream,
        "system": "You are a concise assistant.",
        "messages": [{"role": "user", "content": &prompt[..400]}]
    });
    Bytes::from(v.to_string())
}

/// Sends one request on `conn` and reads the whole response.
/// `start` is when the caller began (before connecting, for a new connection per request).
pub async fn one(
    conn: &mut Conn,
    t: &Target,
    body: &Bytes,
    start: Instant,
) -> Result<Sample, String> {
    send(conn, &t.host, &t.path, t.stream, body, start)
        .await
        .map_err(|e| e.what)
}

/// Why a request failed, and whether a response head had arrived (the proxy saw the request).
#[derive(Debug, Clone)]
pub struct CallError {
    pub answered: bool,
    pub what: String,
}

fn before_head(what: String) -> CallError {
    CallError {
        answered: false,
        what,
    }
}

/// [`one`] with the path, the kind and the body given; the error says whether a head came back.
/// If the mock reports the request body's size (`x-mock-request-bytes`), it must match.
pub async fn send(
    conn: &mut Conn,
    host: &str,
    path: &str,
    stream: bool,
    body: &Bytes,
    start: Instant,
) -> Result<Sample, CallError> {
    let fut = async {
        conn.ready()
            .await
            .map_err(err("conn"))
            .map_err(before_head)?;
        let req = hyper::Request::post(path)
            .header("host", host)
            .header("content-type", "application/json")
            .header("x-api-key", "sk-ant-bench-0000000000000000000000000000")
            .header("anthropic-version", "2023-06-01")
            .header("user-agent", "llmtap-bench/0.1")
            .body(Full::new(body.clone()))
            .map_err(err("request"))
            .map_err(before_head)?;
        let resp = conn
            .send_request(req)
            .await
            .map_err(err("send"))
            .map_err(before_head)?;
        let failed = |what: String| CallError {
            answered: true,
            what,
        };
        let headers_us = us(start.elapsed());
        let status = resp.status();
        let echoed: Option<usize> = resp
            .headers()
            .get("x-mock-request-bytes")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let mut body_in = resp.into_body();
        let mut first_us = None;
        let mut bytes = 0u64;
        let mut tail: Vec<u8> = Vec::new();
        while let Some(frame) = body_in.frame().await {
            let frame = frame.map_err(err("body")).map_err(failed)?;
            if let Some(d) = frame.data_ref() {
                if first_us.is_none() && !d.is_empty() {
                    first_us = Some(us(start.elapsed()));
                }
                bytes += d.len() as u64;
                if stream {
                    tail.extend_from_slice(&d[d.len().saturating_sub(64)..]);
                    if tail.len() > 256 {
                        tail.drain(..tail.len() - 64);
                    }
                }
            }
        }
        let total_us = us(start.elapsed());
        if !status.is_success() {
            return Err(failed(format!("http {}", status.as_u16())));
        }
        if stream && !tail.windows(12).any(|w| w == b"message_stop") {
            return Err(failed("stream incomplete".into()));
        }
        if let Some(n) = echoed
            && n != body.len()
        {
            return Err(failed(format!(
                "upstream got {n} of {} body bytes",
                body.len()
            )));
        }
        Ok(Sample {
            headers_us,
            first_us: first_us.unwrap_or(total_us),
            total_us,
            bytes,
        })
    };
    tokio::time::timeout(IO_TIMEOUT, fut)
        .await
        .map_err(|_| CallError {
            answered: false,
            what: "request timeout".to_string(),
        })?
}

pub fn us(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}
