//! A fake HTTPS (and plain HTTP) upstream with a CA made at test time.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, watch};

type TestBody = BoxBody<Bytes, std::io::Error>;

/// A throw-away CA for the fake upstream.
pub struct TestCa {
    pub pem: String,
    pub pem_path: tempfile::NamedTempFile,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        super::init_crypto();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        let pem = cert.pem();
        let pem_path = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(pem_path.path(), &pem).unwrap();
        TestCa {
            pem,
            pem_path,
            issuer: Issuer::new(params, key),
        }
    }

    /// A server config for the given names (DNS or IP).
    pub fn server_config(&self, names: &[&str], alpn: &[&[u8]]) -> ServerConfig {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let params = CertificateParams::new(names).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let chain = vec![cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }

    pub fn cert_der(&self) -> CertificateDer<'static> {
        use rustls_pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(self.pem.as_bytes()).unwrap()
    }
}

/// What the upstream saw, for tests that check ordering rather than timing.
#[derive(Default)]
pub struct UpstreamState {
    /// SSE events written so far on the latest `/sse` call.
    pub sse_sent: watch::Sender<usize>,
    /// Released by the test to let a gated SSE stream continue past its first event.
    pub sse_gate: Notify,
    /// Request body frames received so far on `/upload`.
    pub upload_frames: watch::Sender<usize>,
    /// TCP connections accepted.
    pub connections: AtomicUsize,
    /// Requests served.
    pub requests: AtomicUsize,
    /// `Host` header / authority of the last request.
    pub last_host: std::sync::Mutex<String>,
    /// Canned answers by path (query excluded), consulted before the built-in routes.
    pub canned: std::sync::Mutex<HashMap<String, Canned>>,
    /// Body of the last request answered from `canned`, read in full before answering.
    pub canned_request_body: std::sync::Mutex<Bytes>,
    /// Path-and-query and headers of every request, as received.
    pub received: std::sync::Mutex<Vec<(String, http::HeaderMap)>>,
}

/// A canned response: these bytes, as these chunks, `chunk_delay` apart, untouched.
#[derive(Debug, Clone)]
pub struct Canned {
    pub status: u16,
    pub content_type: String,
    /// Sent as the `content-encoding` header; the chunks must already be encoded.
    pub content_encoding: Option<String>,
    /// Further response headers.
    pub headers: Vec<(String, String)>,
    /// One chunk is sent with a `content-length`; several are streamed (chunked / HTTP/2 frames).
    pub chunks: Vec<Bytes>,
    pub chunk_delay: Duration,
}

impl Canned {
    /// The whole body in one chunk.
    pub fn new(status: u16, content_type: &str, body: impl Into<Bytes>) -> Canned {
        Canned {
            status,
            content_type: content_type.to_string(),
            content_encoding: None,
            headers: Vec::new(),
            chunks: vec![body.into()],
            chunk_delay: Duration::ZERO,
        }
    }

    /// The body re-cut into `n` pieces of about equal size (at arbitrary byte positions),
    /// sent `delay` apart.
    pub fn in_chunks(mut self, n: usize, delay: Duration) -> Canned {
        let body = self.body();
        let size = body.len().div_ceil(n.max(1)).max(1);
        self.chunks = (0..body.len())
            .step_by(size)
            .map(|at| body.slice(at..(at + size).min(body.len())))
            .collect();
        self.chunk_delay = delay;
        self
    }

    pub fn encoding(mut self, encoding: &str) -> Canned {
        self.content_encoding = Some(encoding.to_string());
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Canned {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Every byte the upstream sends, in order.
    pub fn body(&self) -> Bytes {
        let all: Vec<u8> = self.chunks.iter().flat_map(|c| c.iter().copied()).collect();
        Bytes::from(all)
    }
}

impl UpstreamState {
    /// Answer requests for `path` with `canned` from now on.
    pub fn can(&self, path: &str, canned: Canned) {
        self.canned.lock().unwrap().insert(path.to_string(), canned);
    }
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub state: Arc<UpstreamState>,
}

impl Upstream {
    /// HTTPS upstream on 127.0.0.1:0 presenting a cert for `names`.
    pub async fn https(ca: &TestCa, names: &[&str]) -> Upstream {
        let config = Arc::new(ca.server_config(names, &[b"h2", b"http/1.1"]));
        Self::serve(Some(config)).await
    }

    /// Plain-HTTP upstream on 127.0.0.1:0.
    pub async fn http() -> Upstream {
        Self::serve(None).await
    }

    async fn serve(tls: Option<Arc<ServerConfig>>) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(UpstreamState::default());
        let st = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                st.connections.fetch_add(1, Ordering::SeqCst);
                let st = Arc::clone(&st);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req| route(Arc::clone(&st), req));
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        Some(cfg) => {
                            let Ok(stream) = tokio_rustls::TlsAcceptor::from(cfg).accept(tcp).await
                            else {
                                return;
                            };
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                .await;
                        }
                        None => {
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                                .await;
                        }
                    }
                });
            }
        });
        Upstream { addr, state }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

fn query_param(req: &Request<Incoming>, key: &str) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.parse().ok()).flatten()
    })
}

fn full(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<TestBody> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()).map_err(|e| match e {}).boxed())
        .unwrap()
}

fn streamed(
    content_type: &str,
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> Response<TestBody> {
    let stream = tokio_stream_from(rx).map(|r| r.map(Frame::data));
    Response::builder()
        .status(200)
        .header("content-type", content_type)
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap()
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

pub const ANTHROPIC_JSON: &str = r#"{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"Hello"}],"stop_reason":"end_turn","usage":{"input_tokens":12,"output_tokens":3}}"#;

async fn route(
    st: Arc<UpstreamState>,
    req: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    st.requests.fetch_add(1, Ordering::SeqCst);
    let pq = req
        .uri()
        .path_and_query()
        .map_or_else(String::new, |p| p.to_string());
    st.received
        .lock()
        .unwrap()
        .push((pq, req.headers().clone()));
    let host = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            req.headers()
                .get("host")
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    *st.last_host.lock().unwrap() = host;
    let path = req.uri().path().to_string();
    let canned = st.canned.lock().unwrap().get(&path).cloned();
    if let Some(canned) = canned {
        return Ok(serve_canned(&st, req, canned).await);
    }
    let res = match path.as_str() {
        "/v1/messages" | "/json" => {
            // Like a real provider: read the whole request before answering.
            let _ = req.into_body().collect().await;
            full(200, "application/json", ANTHROPIC_JSON)
        }
        "/sse" => sse(&st, &req),
        "/big" => big(query_param(&req, "bytes").unwrap_or(1 << 20)),
        "/upload" => return Ok(upload(st, req).await),
        "/reset" => reset(),
        "/ws" => return Ok(websocket(req)),
        "/status" => full(
            query_param(&req, "code").unwrap_or(200) as u16,
            "text/plain",
            "status",
        ),
        "/echo-headers" => {
            let text = format!("{:?}", req.headers());
            full(200, "text/plain", text)
        }
        _ => full(404, "text/plain", "no such route"),
    };
    Ok(res)
}

/// Reads the request body in full (so it is forwarded whole), then sends the canned chunks.
async fn serve_canned(
    st: &Arc<UpstreamState>,
    req: Request<Incoming>,
    canned: Canned,
) -> Response<TestBody> {
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    *st.canned_request_body.lock().unwrap() = body;
    let mut res = if canned.chunks.len() <= 1 {
        full(canned.status, &canned.content_type, canned.body())
    } else {
        let (tx, rx) = mpsc::channel(1);
        let chunks = canned.chunks.clone();
        let delay = canned.chunk_delay;
        tokio::spawn(async move {
            for (i, chunk) in chunks.into_iter().enumerate() {
                if i > 0 && !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
        });
        let mut res = streamed(&canned.content_type, rx);
        *res.status_mut() = hyper::StatusCode::from_u16(canned.status).unwrap();
        res
    };
    if let Some(encoding) = &canned.content_encoding {
        res.headers_mut()
            .insert("content-encoding", encoding.parse().unwrap());
    }
    for (name, value) in &canned.headers {
        res.headers_mut().append(
            hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    res
}

/// `n` events `delay_ms` apart; with `gate=1` the stream waits after its first event for the test.
fn sse(st: &Arc<UpstreamState>, req: &Request<Incoming>) -> Response<TestBody> {
    let n = query_param(req, "n").unwrap_or(20) as usize;
    let delay = Duration::from_millis(query_param(req, "delay_ms").unwrap_or(50));
    let gated = query_param(req, "gate") == Some(1);
    let (tx, rx) = mpsc::channel(4);
    let st = Arc::clone(st);
    st.sse_sent.send_replace(0);
    tokio::spawn(async move {
        for i in 0..n {
            let event = format!("event: message\ndata: {{\"i\":{i}}}\n\n");
            if tx.send(Ok(Bytes::from(event))).await.is_err() {
                return;
            }
            st.sse_sent.send_replace(i + 1);
            if i == 0 && gated {
                let _ = tokio::time::timeout(Duration::from_secs(20), st.sse_gate.notified()).await;
            }
            tokio::time::sleep(delay).await;
        }
    });
    streamed("text/event-stream", rx)
}

fn big(bytes: u64) -> Response<TestBody> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let mut left = bytes as usize;
        while left > 0 {
            let n = left.min(chunk.len());
            if tx.send(Ok(chunk.slice(..n))).await.is_err() {
                return;
            }
            left -= n;
        }
    });
    let mut res = streamed("application/octet-stream", rx);
    res.headers_mut().insert("content-length", bytes.into());
    res
}

async fn upload(st: Arc<UpstreamState>, req: Request<Incoming>) -> Response<TestBody> {
    let mut body = req.into_body();
    let mut total = 0usize;
    let mut frames = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Some(data) = frame.data_ref() {
            total += data.len();
            frames += 1;
            st.upload_frames.send_replace(frames);
        }
    }
    full(200, "text/plain", format!("received {total}"))
}

/// Some events, then the body fails: hyper aborts the connection mid-stream.
fn reset() -> Response<TestBody> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let _ = tx
            .send(Ok(Bytes::from_static(b"data: {\"i\":0}\n\n")))
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = tx
            .send(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "boom",
            )))
            .await;
    });
    streamed("text/event-stream", rx)
}

fn websocket(mut req: Request<Incoming>) -> Response<TestBody> {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return full(400, "text/plain", "not a websocket request");
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        let (mut sink, mut stream) = ws.split();
        while let Some(Ok(msg)) = stream.next().await {
            if (msg.is_text() || msg.is_binary()) && sink.send(msg).await.is_err() {
                return;
            }
        }
    });
    Response::builder()
        .status(101)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", accept)
        .body(Full::new(Bytes::new()).map_err(|e| match e {}).boxed())
        .unwrap()
}
