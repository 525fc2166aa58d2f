//! The mock LLM upstream: HTTPS (hyper 1 + tokio-rustls) on 127.0.0.1:0, Anthropic Messages shaped.
//!
//! Runs as `llmtap-bench mock --dir DIR` (a subprocess, so its CPU is its own): writes DIR/ca.pem,
//! prints `LISTEN 127.0.0.1:PORT` on stdout, and exits when its stdin closes.
//!
//! `POST /v1/messages[?events=N&delay_ms=D&size=BYTES]`
//! - request body with `"stream":true` → SSE: message_start + content_block_start + ping at once,
//!   N content_block_delta events D ms apart, then content_block_stop + message_delta (usage) + message_stop;
//! - otherwise JSON (~1 KB, or about BYTES with `size=`), usage in every response;
//! - every answer says `x-mock-request-bytes: <request body length>` (the soak's uploads are checked).

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::Res;

type Body = BoxBody<Bytes, Infallible>;

const LOREM: &str = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur. ";

#[derive(Default)]
struct Cache {
    json: Mutex<HashMap<usize, Bytes>>,
}

/// Entry point of the `mock` subcommand.
pub fn main(dir: &Path, threads: usize) -> Res<()> {
    let tls = crate::certs::mock_server_config(dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "LISTEN {addr}")?;
            out.flush()?;
        }
        // Exit when the parent goes away (our stdin closes).
        tokio::task::spawn_blocking(|| {
            let mut buf = String::new();
            while std::io::stdin()
                .read_line(&mut buf)
                .map(|n| n > 0)
                .unwrap_or(false)
            {
                buf.clear();
            }
            std::process::exit(0);
        });
        serve(listener, TlsAcceptor::from(tls)).await
    })
}

async fn serve(listener: TcpListener, acceptor: TlsAcceptor) -> Res<()> {
    let cache = Arc::new(Cache::default());
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(x) => x,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let cache = cache.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let svc = hyper::service::service_fn(move |req| handle(req, cache.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
}

fn query(req: &Request<Incoming>, key: &str) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        if k == key { v.parse().ok() } else { None }
    })
}

async fn handle(req: Request<Incoming>, cache: Arc<Cache>) -> Result<Response<Body>, Infallible> {
    if req.uri().path() != "/v1/messages" {
        return Ok(simple(
            StatusCode::NOT_FOUND,
            "application/json",
            r#"{"type":"error","error":{"type":"not_found_error","message":"not found"}}"#,
        ));
    }
    let events = query(&req, "events").unwrap_or(50) as usize;
    let delay = Duration::from_millis(query(&req, "delay_ms").unwrap_or(20));
    let size = query(&req, "size").unwrap_or(0) as usize;
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(simple(StatusCode::BAD_REQUEST, "application/json", "{}")),
    };
    let received = hyper::header::HeaderValue::from(body.len());
    let stream = memfind(&body, b"\"stream\":true") || memfind(&body, b"\"stream\": true");
    let input_tokens = 25 + body.len() / 4;
    if !stream {
        let bytes = {
            let mut map = cache.json.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(size)
                .or_insert_with(|| json_body(size, input_tokens))
                .clone()
        };
        let mut resp = simple(StatusCode::OK, "application/json", bytes);
        resp.headers_mut().insert(
            "request-id",
            "req_mock".parse().unwrap_or_else(|_| unreachable!()),
        );
        resp.headers_mut().insert("x-mock-request-bytes", received);
        return Ok(resp);
    }
    let frames = sse_frames(input_tokens, events);
    let s = futures_stream(frames, events, delay);
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(s)));
    let h = resp.headers_mut();
    h.insert("content-type", hv("text/event-stream; charset=utf-8"));
    h.insert("cache-control", hv("no-cache"));
    h.insert("x-mock-request-bytes", received);
    Ok(resp)
}

fn hv(s: &'static str) -> hyper::header::HeaderValue {
    hyper::header::HeaderValue::from_static(s)
}

fn memfind(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn simple(status: StatusCode, ct: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert("content-type", hv(ct));
    r
}

fn text_of_len(n: usize) -> String {
    let mut s = String::with_capacity(n + LOREM.len());
    while s.len() < n {
        s.push_str(LOREM);
    }
    s.truncate(n);
    s
}

/// A non-streamed Messages response of about `size` bytes (~1 KB when `size` is small).
fn json_body(size: usize, input_tokens: usize) -> Bytes {
    let text = if size > 700 {
        text_of_len(size - 400)
    } else {
        text_of_len(600)
    };
    let v = serde_json::json!({
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": input_tokens, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0, "output_tokens": text.len() / 4, "service_tier": "standard"}
    });
    Bytes::from(v.to_string())
}

fn sse(event: &str, data: serde_json::Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

/// Frame 0 = head events, frames 1..=n = one delta each, last = tail events.
fn sse_frames(input_tokens: usize, events: usize) -> Vec<Bytes> {
    use serde_json::json;
    let mut out = Vec::with_capacity(events + 2);
    let mut head = sse(
        "message_start",
        json!({"type":"message_start","message":{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":input_tokens,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}),
    );
    head.push_str(&sse(
        "content_block_start",
        json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
    ));
    head.push_str(&sse("ping", json!({"type":"ping"})));
    out.push(Bytes::from(head));
    let words: Vec<&str> = LOREM.split(' ').filter(|w| !w.is_empty()).collect();
    for i in 0..events {
        let w = format!("{} ", words[i % words.len()]);
        out.push(Bytes::from(sse(
            "content_block_delta",
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":w}}),
        )));
    }
    let mut tail = sse(
        "content_block_stop",
        json!({"type":"content_block_stop","index":0}),
    );
    tail.push_str(&sse("message_delta", json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens": events + 1}})));
    tail.push_str(&sse("message_stop", json!({"type":"message_stop"})));
    out.push(Bytes::from(tail));
    out
}

type FrameResult = Result<Frame<Bytes>, Infallible>;

fn futures_stream(
    frames: Vec<Bytes>,
    events: usize,
    delay: Duration,
) -> impl futures_core::Stream<Item = FrameResult> + Send + Sync + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<FrameResult>(2);
    tokio::spawn(async move {
        for (i, f) in frames.into_iter().enumerate() {
            if i >= 1 && i <= events && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if tx.send(Ok(Frame::data(f))).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream(rx)
}

struct ReceiverStream(tokio::sync::mpsc::Receiver<FrameResult>);

impl futures_core::Stream for ReceiverStream {
    type Item = FrameResult;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<FrameResult>> {
        self.0.poll_recv(cx)
    }
}
