//! Capture memory and decode work stay bounded per exchange: the budget counts what buffers
//! allocate, stalled uploads and streams hold little beyond their bytes, and a decompression
//! bomb costs its own connection a bounded number of small slices, over real loopback sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use brotli::concat::{BroCatli, BroCatliResult};
use bytes::Bytes;
use common::upstream::{ANTHROPIC_JSON, Canned};
use common::{STEP, TestCa, TestProxy, Upstream};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use llmtap::capture::{CaptureBudget, CaptureBuf};
use llmtap::providers::{ApiShape, FREE_DECODED, MAX_RATIO, ParseStop, RequestParser};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::timeout;

const LLM_HOST: &str = "api.anthropic.com";
/// The bound of the issue: capture memory per exchange beyond the bytes it holds.
const SLACK: usize = 32 * 1024;

// ---- capture memory through the budget ----------------------------------------------------

/// `n` captures each fed `chunks` pieces of `size` bytes, as the proxy feeds them.
fn captures(n: usize, chunks: usize, size: usize) -> (Arc<CaptureBudget>, Vec<CaptureBuf>) {
    let budget = CaptureBudget::new(1 << 30);
    let mut bufs: Vec<CaptureBuf> = (0..n)
        .map(|_| CaptureBuf::new(1 << 20, Arc::clone(&budget)))
        .collect();
    // Slices of one big buffer, as hyper hands them out: copied, never pinned.
    let wire = Bytes::from(vec![b'x'; chunks * size]);
    for i in 0..chunks {
        let piece = wire.slice(i * size..(i + 1) * size);
        bufs.iter_mut().for_each(|b| b.push(&piece));
    }
    (budget, bufs)
}

#[test]
fn a_thousand_small_captures_cost_what_they_hold_plus_a_small_slack() {
    // Slow uploads (20 × 10 bytes) and small SSE streams (100 events of 100 bytes).
    for (chunks, size) in [(20, 10), (100, 100)] {
        let (budget, bufs) = captures(1000, chunks, size);
        let held = chunks * size;
        let used = budget.used();
        assert_eq!(used, bufs.iter().map(CaptureBuf::allocated).sum::<usize>());
        assert!(used >= 1000 * held);
        assert!(
            used <= 1000 * (held + SLACK),
            "{chunks} x {size}: {} bytes per capture for {held}",
            used / 1000
        );
        drop(bufs);
        assert_eq!(budget.used(), 0);
    }
    // The small uploads are far below the bound: one 256-byte block each.
    let (budget, _bufs) = captures(1000, 20, 10);
    assert!(budget.used() <= 1000 * 512, "{}", budget.used());
}

// ---- stalled uploads and streams over sockets -----------------------------------------------

/// An upstream that counts the request bytes it receives, answers an upload when its body ends,
/// and streams 10 KB of SSE then stalls for `?sse`.
struct Stalling {
    addr: SocketAddr,
    received: Arc<AtomicUsize>,
}

const SSE_EVENTS: usize = 100;
const SSE_EVENT: &[u8] = b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"0123456789abc\"}}\n\n";

async fn stalling_upstream(ca: &TestCa) -> Stalling {
    let tls = Arc::new(ca.server_config(&[LLM_HOST], &[b"http/1.1"]));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&received);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (tls, count) = (Arc::clone(&tls), Arc::clone(&count));
            tokio::spawn(async move {
                let Ok(stream) = tokio_rustls::TlsAcceptor::from(tls).accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req| stall(Arc::clone(&count), req));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Stalling { addr, received }
}

type TestBody = BoxBody<Bytes, Infallible>;

async fn stall(
    count: Arc<AtomicUsize>,
    req: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    let sse = req.uri().query() == Some("sse");
    let mut body = req.into_body();
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            count.fetch_add(data.len(), Ordering::SeqCst);
        }
    }
    let res = Response::builder().status(200);
    if !sse {
        let body = Full::new(Bytes::from_static(b"{}")).boxed();
        return Ok(res
            .header("content-type", "application/json")
            .body(body)
            .unwrap());
    }
    let event = || Ok::<_, Infallible>(Frame::data(Bytes::from_static(SSE_EVENT)));
    let events = futures::stream::iter((0..SSE_EVENTS).map(move |_| event()));
    let stalled = futures::StreamExt::chain(events, futures::stream::pending());
    let body = BodyExt::boxed(StreamBody::new(stalled));
    Ok(res
        .header("content-type", "text/event-stream")
        .body(body)
        .unwrap())
}

async fn proxy_for(ca: &TestCa, upstream: SocketAddr) -> TestProxy {
    let pin = format!("{LLM_HOST}:{}:127.0.0.1", upstream.port());
    let ca_path = ca.pem_path.path().display().to_string();
    TestProxy::start(&[
        "--resolve",
        &pin,
        "--upstream-ca",
        &ca_path,
        "--allow-private",
        "127.0.0.0/8,::1",
    ])
    .await
}

async fn healthz(addr: SocketAddr) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("http://{addr}/healthz"))
        .timeout(STEP)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn bytes_held(addr: SocketAddr) -> usize {
    healthz(addr).await["capture"]["bytes_held"]
        .as_u64()
        .unwrap() as usize
}

/// Resident set size of this process (for the figures printed, never asserted).
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

const STALLED: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_uploads_and_streams_hold_their_bytes_plus_a_small_slack() {
    let ca = TestCa::new("capture bounds CA");
    let up = stalling_upstream(&ca).await;
    let proxy = proxy_for(&ca, up.addr).await;
    // One connection per exchange, as separate clients would open.
    let client = proxy.client_builder().http1_only().build().unwrap();
    let url = format!("https://{LLM_HOST}:{}/v1/messages", up.addr.port());
    let rss_before = rss();

    // 200 chunked uploads that send 20 × 10 bytes, then stall.
    let mut senders = Vec::new();
    let mut replies = Vec::new();
    for _ in 0..STALLED {
        let (tx, rx) = mpsc::channel::<Result<Vec<u8>, std::io::Error>>(32);
        let body = reqwest::Body::wrap_stream(futures::stream::poll_fn({
            let mut rx = rx;
            move |cx| rx.poll_recv(cx)
        }));
        replies.push(tokio::spawn(client.post(&url).body(body).send()));
        senders.push(tx);
    }
    for _ in 0..20 {
        for tx in &senders {
            tx.send(Ok(b"0123456789".to_vec())).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The proxy captures a frame before it forwards it: all bytes upstream = all captured.
    let want = STALLED * 200;
    timeout(STEP, async {
        while up.received.load(Ordering::SeqCst) < want {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("uploads reached the upstream");
    let doc = healthz(proxy.addr).await;
    let held = doc["capture"]["bytes_held"].as_u64().unwrap() as usize;
    assert_eq!(doc["exchanges"]["in_flight"], STALLED);
    println!(
        "{STALLED} stalled uploads of 200 bytes: capture bytes_held {held} ({} per exchange), RSS +{} KiB",
        held / STALLED,
        rss().saturating_sub(rss_before) / 1024
    );
    assert!(held >= want);
    assert!(held <= STALLED * (200 + SLACK), "{held}");

    // The uploads end: each record holds exactly its bytes, and the budget exactly those.
    drop(senders);
    for reply in replies {
        let res = timeout(STEP, reply).await.unwrap().unwrap().unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.text().await.unwrap(), "{}");
    }
    let mut records = Vec::new();
    for _ in 0..STALLED {
        let ex = proxy.records.next().await;
        assert_eq!(ex.request_body.bytes.len(), 200);
        records.push(ex);
    }
    assert_eq!(bytes_held(proxy.addr).await, STALLED * (200 + 2));
    drop(records);
    assert_eq!(bytes_held(proxy.addr).await, 0);

    // 200 SSE streams that send 100 events (about 10 KB), then stall.
    let request = r#"{"model":"claude-sonnet-4-5","stream":true}"#;
    let sse_url = format!("{url}?sse");
    let mut streams = Vec::new();
    for _ in 0..STALLED {
        let client = client.clone();
        let sse_url = sse_url.clone();
        streams.push(tokio::spawn(async move {
            let mut res = client.post(&sse_url).body(request).send().await.unwrap();
            let mut got = 0;
            while got < SSE_EVENTS * SSE_EVENT.len() {
                got += res.chunk().await.unwrap().unwrap().len();
            }
            res
        }));
    }
    let mut open = Vec::new();
    for stream in streams {
        open.push(timeout(STEP, stream).await.unwrap().unwrap());
    }
    let per = request.len() + SSE_EVENTS * SSE_EVENT.len();
    let held = bytes_held(proxy.addr).await;
    println!(
        "{STALLED} stalled SSE streams of {per} bytes: capture bytes_held {held} ({} per exchange), RSS +{} KiB",
        held / STALLED,
        rss().saturating_sub(rss_before) / 1024
    );
    assert!(held >= STALLED * per);
    assert!(held <= STALLED * (per + SLACK), "{held}");
    drop(open);
}

/// Stalled uploads that declare a 16 MiB brotli window in their first bytes: the decoder's
/// window would be charged to the capture budget, so it is refused and nothing stays pinned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_brotli_uploads_cannot_pin_decoder_windows() {
    let ca = TestCa::new("capture bounds CA");
    let up = stalling_upstream(&ca).await;
    let proxy = proxy_for(&ca, up.addr).await;
    let client = proxy.client_builder().http1_only().build().unwrap();
    let url = format!("https://{LLM_HOST}:{}/v1/messages", up.addr.port());
    let mut packed = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut packed, 4096, 5, 24);
        std::io::Write::write_all(&mut w, &vec![b' '; 16 << 20]).unwrap();
    }
    let head = packed[..8].to_vec();
    const N: usize = 50;
    let mut senders = Vec::new();
    let mut replies = Vec::new();
    for _ in 0..N {
        let (tx, rx) = mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
        let body = reqwest::Body::wrap_stream(futures::stream::poll_fn({
            let mut rx = rx;
            move |cx| rx.poll_recv(cx)
        }));
        let req = client
            .post(&url)
            .header("content-encoding", "br")
            .body(body);
        replies.push(tokio::spawn(req.send()));
        tx.send(Ok(head.clone())).await.unwrap();
        senders.push(tx);
    }
    timeout(STEP, async {
        while up.received.load(Ordering::SeqCst) < N * head.len() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the heads reached the upstream");
    let doc = healthz(proxy.addr).await;
    let held = doc["capture"]["bytes_held"].as_u64().unwrap() as usize;
    println!("{N} stalled brotli uploads (16 MiB windows): capture bytes_held {held}");
    assert!(held <= N * SLACK, "{held}");
    assert!(doc["capture"]["budget_denials"].as_u64().unwrap() >= N as u64);
    drop(senders);
    for reply in replies {
        timeout(STEP, reply).await.unwrap().unwrap().unwrap();
    }
    for _ in 0..N {
        let ex = proxy.records.next().await;
        assert_eq!(
            ex.request_facts.unwrap().stopped,
            Some(ParseStop::MemoryLimit)
        );
        assert_eq!(
            &ex.request_body.bytes[..],
            &head[..],
            "the capture is whole"
        );
    }
}

// ---- decompression bombs --------------------------------------------------------------------

/// One brotli stream that `BroCatli` can join to others (the first opens the joined stream).
fn brotli_part(data: &[u8], first: bool) -> Vec<u8> {
    let params = brotli::enc::BrotliEncoderParams {
        quality: 5,
        lgwin: 23,
        appendable: true,
        catable: !first,
        use_dictionary: false,
        ..Default::default()
    };
    let mut out = Vec::new();
    brotli::BrotliCompress(&mut &data[..], &mut out, &params).unwrap();
    out
}

const HEAD: &[u8] = br#"{"model":"claude-bomb","max_tokens":7,"messages":["#;
const TAIL: &[u8] = br#"],"stream":true}"#;

/// A JSON request whose `messages` hold about `expanded` bytes of spaces, brotli-encoded into
/// a few kilobytes: 16 MiB parts compressed once and joined.
fn brotli_bomb(expanded: u64) -> Vec<u8> {
    let part = brotli_part(&vec![b' '; 16 << 20], false);
    let copies = usize::try_from(expanded >> 24).unwrap().max(1);
    let (head, tail) = (brotli_part(HEAD, true), brotli_part(TAIL, false));
    let mut parts: Vec<&[u8]> = vec![&head];
    parts.extend(std::iter::repeat_n(part.as_slice(), copies));
    parts.push(&tail);
    let mut cat = BroCatli::new();
    let mut out = vec![0u8; parts.iter().map(|p| p.len()).sum::<usize>() + 64];
    let mut at = 0;
    for part in parts {
        cat.new_brotli_file();
        let mut read = 0;
        let result = cat.stream(part, &mut read, &mut out, &mut at);
        assert_eq!((result, read), (BroCatliResult::NeedsMoreInput, part.len()));
    }
    assert_eq!(cat.finish(&mut out, &mut at), BroCatliResult::Success);
    out.truncate(at);
    out
}

#[test]
fn a_brotli_request_bomb_stops_at_the_ratio() {
    let bomb = brotli_bomb(3 << 30);
    assert!(bomb.len() < 5000, "{}", bomb.len());
    let mut p = RequestParser::new(ApiShape::AnthropicMessages, "/v1/messages", Some("br"));
    p.feed(&bomb);
    assert_eq!(p.stopped(), Some(ParseStop::RatioLimit));
    let allowed = (bomb.len() as u64 * MAX_RATIO).max(FREE_DECODED);
    assert!(
        p.decoded_len() <= allowed,
        "{} > {allowed}",
        p.decoded_len()
    );
    let facts = p.finish();
    assert_eq!(facts.model.as_deref(), Some("claude-bomb"));
    assert_eq!(facts.stopped, Some(ParseStop::RatioLimit));
}

/// The figures of the report: decoded bytes and CPU time of the 3 GB bomb on one thread.
/// `cargo test --release --test capture_bounds -- --ignored --nocapture`
#[test]
#[ignore]
fn measure_the_bomb() {
    let bomb = brotli_bomb(3 << 30);
    let mut p = RequestParser::new(ApiShape::AnthropicMessages, "/v1/messages", Some("br"));
    let started = Instant::now();
    for piece in bomb.chunks(1024) {
        p.feed(piece);
    }
    let took = started.elapsed();
    println!(
        "brotli bomb of {} bytes (3 GiB decoded): {} bytes decoded, {:?}, {:?}",
        bomb.len(),
        p.decoded_len(),
        p.stopped(),
        took
    );
    let mut p = RequestParser::new(ApiShape::AnthropicMessages, "/v1/messages", Some("br"));
    let started = Instant::now();
    p.offer(Bytes::from(bomb));
    let mut slices = 0;
    while p.work() {
        slices += 1;
    }
    println!(
        "as one frame, worked in slices: {} bytes decoded in {} slices of at most {} bytes, {:?} in all",
        p.decoded_len(),
        slices + 1,
        llmtap::providers::WORK_SLICE,
        started.elapsed()
    );
    let (budget, _bufs) = captures(1000, 20, 10);
    println!(
        "1000 captures of 20 x 10 bytes: {} bytes of capture memory",
        budget.used()
    );
    let (budget, _bufs) = captures(1000, 100, 100);
    println!(
        "1000 captures of 100 x 100 bytes: {} bytes of capture memory",
        budget.used()
    );
}

/// Through the proxy on one thread: the bomb is forwarded unchanged, its record says the decode
/// stopped, and requests on another connection are answered while the proxy works on it.
#[tokio::test(flavor = "current_thread")]
async fn a_bomb_upload_is_forwarded_whole_while_other_clients_are_served() {
    let ca = TestCa::new("upstream test CA");
    let up = Upstream::https(&ca, &[LLM_HOST, "localhost", "127.0.0.1"]).await;
    up.state.can(
        "/v1/messages",
        Canned::new(200, "application/json", ANTHROPIC_JSON),
    );
    let proxy = proxy_for(&ca, up.addr).await;
    let control = proxy.client();
    let json_url = format!("https://{LLM_HOST}:{}/json", up.port());
    // A warm connection: the control requests below reuse it.
    let res = control.get(&json_url).send().await.unwrap();
    assert_eq!(res.text().await.unwrap(), ANTHROPIC_JSON);
    let _ = proxy.records.next().await;

    let bomb = Bytes::from(brotli_bomb(10 << 30));
    let before = up.state.requests.load(Ordering::SeqCst);
    let bomber = proxy.client_builder().http1_only().build().unwrap();
    let upload = tokio::spawn(
        bomber
            .post(format!("https://{LLM_HOST}:{}/v1/messages", up.port()))
            .header("content-type", "application/json")
            .header("content-encoding", "br")
            .body(bomb.clone())
            .send(),
    );
    // The bomb's head reached the upstream: the proxy now forwards (and parses) its body.
    timeout(STEP, async {
        while up.state.requests.load(Ordering::SeqCst) == before {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    let mut answered_meanwhile = 0;
    while !upload.is_finished() {
        let res = timeout(STEP, control.get(&json_url).send())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(res.text().await.unwrap(), ANTHROPIC_JSON);
        // The upstream sets this once it has the whole bomb body.
        if up.state.canned_request_body.lock().unwrap().is_empty() {
            answered_meanwhile += 1;
        }
    }
    let res = upload.await.unwrap().unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), ANTHROPIC_JSON);
    assert_eq!(
        *up.state.canned_request_body.lock().unwrap(),
        bomb,
        "forwarded unchanged"
    );
    assert!(
        answered_meanwhile >= 1,
        "no request answered while the bomb was parsed"
    );

    let ex = loop {
        let ex = proxy.records.next().await;
        if ex.path == "/v1/messages" {
            break ex;
        }
    };
    let facts = ex.request_facts.unwrap();
    assert_eq!(facts.stopped, Some(ParseStop::RatioLimit));
    assert_eq!(facts.model.as_deref(), Some("claude-bomb"));
    assert_eq!(ex.request_body.total_len, bomb.len() as u64);
    assert_eq!(ex.request_body.bytes, bomb);
    println!("{answered_meanwhile} control requests answered while the bomb was parsed");
}
