//! Body tee: frames pass through untouched while the first `cap` bytes are copied aside.

use bytes::Bytes;
use http_body::Frame;
use http_body::{Body, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use super::exchange::ExchangeInProgress;
use super::record::{CapturedBody, Outcome};
use crate::providers::ResponseParser;

/// Process-wide bound on captured bytes held at once (in flight and queued for export).
#[derive(Debug)]
pub struct CaptureBudget {
    limit: usize,
    used: AtomicUsize,
    denied: AtomicU64,
}

impl CaptureBudget {
    pub fn new(limit: usize) -> Arc<CaptureBudget> {
        Arc::new(CaptureBudget {
            limit,
            used: AtomicUsize::new(0),
            denied: AtomicU64::new(0),
        })
    }

    fn try_reserve(&self, n: usize) -> bool {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let Some(next) = used.checked_add(n).filter(|next| *next <= self.limit) else {
                self.denied.fetch_add(1, Ordering::Relaxed);
                return false;
            };
            match self
                .used
                .compare_exchange_weak(used, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
    }

    fn release(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    /// Bytes currently held by captures.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// How many times a capture was cut short because the budget was spent.
    pub fn denied(&self) -> u64 {
        self.denied.load(Ordering::Relaxed)
    }
}

/// Captured bytes that give their budget back when the last reference goes.
struct BudgetedBytes {
    bytes: Vec<u8>,
    budget: Arc<CaptureBudget>,
}

impl AsRef<[u8]> for BudgetedBytes {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for BudgetedBytes {
    fn drop(&mut self) {
        self.budget.release(self.bytes.len());
    }
}

/// The side copy of one body: at most `cap` bytes, and the true length.
#[derive(Debug)]
pub struct CaptureBuf {
    bytes: Vec<u8>,
    cap: usize,
    total: u64,
    truncated: bool,
    budget: Arc<CaptureBudget>,
}

impl CaptureBuf {
    pub fn new(cap: usize, budget: Arc<CaptureBudget>) -> CaptureBuf {
        CaptureBuf {
            bytes: Vec::new(),
            cap,
            total: 0,
            truncated: false,
            budget,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        let room = self.cap.saturating_sub(self.bytes.len());
        let take = room.min(data.len());
        if take < data.len() {
            self.truncated = true;
        }
        if take == 0 {
            return;
        }
        if !self.budget.try_reserve(take) {
            self.truncated = true;
            // Stop capturing this body: later bytes must not fill holes out of order.
            self.cap = self.bytes.len();
            return;
        }
        // Grow to what is needed, never past the cap: doubling would hold up to 2× the cap.
        let want = (self.bytes.len() + take).max(self.bytes.capacity().saturating_mul(2));
        let target = want.min(self.cap);
        self.bytes
            .reserve_exact(target.saturating_sub(self.bytes.len()));
        self.bytes.extend_from_slice(&data[..take]);
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// Hands the captured bytes over (the budget lease moves with them).
    pub fn take(&mut self, content_encoding: Option<String>) -> CapturedBody {
        let mut bytes = std::mem::take(&mut self.bytes);
        bytes.shrink_to_fit();
        let truncated = self.truncated || (bytes.len() as u64) < self.total;
        let bytes = if bytes.is_empty() {
            Bytes::new()
        } else {
            Bytes::from_owner(BudgetedBytes {
                bytes,
                budget: Arc::clone(&self.budget),
            })
        };
        CapturedBody {
            bytes,
            total_len: self.total,
            truncated,
            content_encoding,
        }
    }
}

impl Drop for CaptureBuf {
    fn drop(&mut self) {
        self.budget.release(self.bytes.len());
    }
}

/// Shared state of a request body tap, read when the exchange ends.
#[derive(Debug)]
pub struct RequestTap {
    pub capture: CaptureBuf,
    /// Sees every request byte, so the model is found past the capture cap.
    pub parser: Option<sync_wrapper::SyncWrapper<crate::providers::RequestParser>>,
    /// The client's body broke off (the client went away mid-upload).
    pub client_error: bool,
}

/// Per-response state of a `TapBody`: capture, incremental parser, and the exchange to finish.
pub struct ResponseTap {
    pub capture: CaptureBuf,
    pub parser: Option<sync_wrapper::SyncWrapper<ResponseParser>>,
    pub exchange: ExchangeInProgress,
    pub content_encoding: Option<String>,
}

impl ResponseTap {
    fn on_data(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.exchange.mark_first_chunk(Instant::now());
        self.capture.push(data);
        if let Some(parser) = self.parser.as_mut() {
            parser.get_mut().feed(data);
        }
    }

    fn finish(mut self, outcome: Outcome) {
        let complete = outcome == Outcome::Complete;
        let facts = self.parser.take().map(|p| p.into_inner().finish(complete));
        let body = self.capture.take(self.content_encoding.take());
        self.exchange.finish(outcome, body, facts);
    }
}

enum Tap {
    Request(Arc<Mutex<RequestTap>>),
    Response(Box<ResponseTap>),
    Done,
}

pin_project_lite::pin_project! {
    /// Wraps a body; frames go through unchanged and in order, the tap sees a copy.
    /// Fires the exchange's end exactly once: end of stream, error, or drop (client gone).
    pub struct TapBody<B> {
        #[pin]
        inner: B,
        tap: Tap,
    }

    impl<B> PinnedDrop for TapBody<B> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before its end was seen: the client went away.
            end_tap(this.project().tap, Outcome::ClientAborted);
        }
    }
}

impl<B: Body<Data = Bytes>> TapBody<B> {
    pub fn request(inner: B, tap: Arc<Mutex<RequestTap>>) -> TapBody<B> {
        TapBody {
            inner,
            tap: Tap::Request(tap),
        }
    }

    pub fn response(inner: B, tap: ResponseTap) -> TapBody<B> {
        let mut tap = Tap::Response(Box::new(tap));
        // An empty body may never be polled (HEAD, 204, 304): it is complete already.
        if inner.is_end_stream() {
            end_tap(&mut tap, Outcome::Complete);
        }
        TapBody { inner, tap }
    }
}

fn end_tap(tap: &mut Tap, outcome: Outcome) {
    match std::mem::replace(tap, Tap::Done) {
        Tap::Response(t) => t.finish(outcome),
        Tap::Request(_) | Tap::Done => {}
    }
}

impl<B> Body for TapBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + 'static,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    on_data(this.tap, data);
                }
                // hyper stops polling once the body says it is at its end.
                if this.inner.is_end_stream() {
                    end_tap(this.tap, Outcome::Complete);
                }
            }
            Poll::Ready(Some(Err(e))) => on_error(this.tap, e),
            Poll::Ready(None) => end_tap(this.tap, Outcome::Complete),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn on_data(tap: &mut Tap, data: &Bytes) {
    match tap {
        Tap::Request(t) => {
            if let Ok(mut t) = t.lock() {
                t.capture.push(data);
                if let Some(p) = t.parser.as_mut() {
                    p.get_mut().feed(data);
                }
            }
        }
        Tap::Response(t) => t.on_data(data),
        Tap::Done => {}
    }
}

fn on_error(tap: &mut Tap, e: &(dyn std::error::Error + 'static)) {
    match tap {
        Tap::Request(t) => {
            if let Ok(mut t) = t.lock() {
                t.client_error = true;
            }
        }
        Tap::Response(_) if super::timeout::is_body_timeout(e) => end_tap(
            tap,
            Outcome::Timeout {
                side: "response_body",
            },
        ),
        Tap::Response(_) => end_tap(
            tap,
            Outcome::UpstreamError {
                kind: "upstream_body".into(),
                message: format!("upstream response body broke off: {}", error_chain(e)),
            },
        ),
        Tap::Done => {}
    }
}

/// `e` and its sources joined with `: `, most general first.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{Exchange, ExchangeInProgress, ExchangeSink, InFlight};
    use http_body_util::{BodyExt, StreamBody};

    #[derive(Default)]
    struct VecSink(Mutex<Vec<Exchange>>);
    impl ExchangeSink for VecSink {
        fn submit(&self, exchange: Exchange) {
            self.0.lock().unwrap().push(exchange);
        }
        fn submit_egress(&self, _record: crate::audit::EgressRecord) {}
    }

    fn blank() -> Exchange {
        Exchange {
            id: 0,
            started_at: std::time::SystemTime::now(),
            client_addr: "127.0.0.1:1".parse().unwrap(),
            method: "POST".into(),
            url: "https://h/p".into(),
            scheme: "https".into(),
            host: "h".into(),
            port: 443,
            path: "/p".into(),
            http_version: "1.1".into(),
            request_headers: vec![],
            response_headers: vec![],
            status: None,
            request_body: Default::default(),
            response_body: Default::default(),
            time_to_first_byte: None,
            time_to_first_chunk: None,
            duration: Default::default(),
            outcome: Outcome::Complete,
            request_facts: None,
            response_facts: None,
            client_name: None,
            client_profile: None,
            provider: None,
            shape: crate::providers::ApiShape::Unknown,
        }
    }

    fn tap(sink: &Arc<VecSink>, cap: usize, in_flight: &Arc<InFlight>) -> ResponseTap {
        let budget = CaptureBudget::new(1 << 20);
        let req = Arc::new(Mutex::new(RequestTap {
            capture: CaptureBuf::new(cap, Arc::clone(&budget)),
            parser: None,
            client_error: false,
        }));
        let sink_dyn: Arc<dyn ExchangeSink> = sink.clone();
        ResponseTap {
            capture: CaptureBuf::new(cap, budget),
            parser: None,
            exchange: ExchangeInProgress::start(
                blank(),
                req,
                None,
                sink_dyn,
                Arc::clone(in_flight),
            ),
            content_encoding: None,
        }
    }

    type Chunk = Result<Frame<Bytes>, std::io::Error>;

    fn body_of(chunks: Vec<Chunk>) -> StreamBody<futures::stream::Iter<std::vec::IntoIter<Chunk>>> {
        StreamBody::new(futures::stream::iter(chunks))
    }

    #[test]
    fn capture_keeps_the_first_cap_bytes_and_counts_all() {
        let budget = CaptureBudget::new(1 << 20);
        let mut buf = CaptureBuf::new(5, Arc::clone(&budget));
        buf.push(b"abc");
        buf.push(b"defgh");
        let body = buf.take(None);
        assert_eq!(&body.bytes[..], b"abcde");
        assert_eq!(body.total_len, 8);
        assert!(body.truncated);
        assert_eq!(budget.used(), 5);
        drop(body);
        assert_eq!(budget.used(), 0, "budget comes back when the bytes go");
    }

    #[test]
    fn an_exhausted_budget_truncates_instead_of_buffering() {
        let budget = CaptureBudget::new(4);
        let mut buf = CaptureBuf::new(100, Arc::clone(&budget));
        buf.push(b"ab");
        buf.push(b"cdef");
        buf.push(b"g");
        let body = buf.take(None);
        assert_eq!(&body.bytes[..], b"ab");
        assert_eq!(body.total_len, 7);
        assert!(body.truncated);
        assert!(budget.denied() >= 1);
    }

    #[tokio::test]
    async fn frames_pass_unchanged_and_the_end_fires_once() {
        let sink = Arc::new(VecSink::default());
        let in_flight = InFlight::new();
        let chunks = vec![
            Ok(Frame::data(Bytes::from("hello "))),
            Ok(Frame::data(Bytes::from("world"))),
        ];
        let body = TapBody::response(body_of(chunks), tap(&sink, 8, &in_flight));
        let out = body.collect().await.unwrap().to_bytes();
        assert_eq!(&out[..], b"hello world");
        let records = sink.0.lock().unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].outcome, Outcome::Complete);
        assert_eq!(&records[0].response_body.bytes[..], b"hello wo");
        assert_eq!(records[0].response_body.total_len, 11);
        assert_eq!(in_flight.current(), 0);
    }

    #[tokio::test]
    async fn an_upstream_error_and_a_drop_are_recorded_as_such() {
        let sink = Arc::new(VecSink::default());
        let in_flight = InFlight::new();
        let chunks = vec![
            Ok(Frame::data(Bytes::from("x"))),
            Err(std::io::Error::other("reset")),
        ];
        let body = TapBody::response(body_of(chunks), tap(&sink, 8, &in_flight));
        assert!(body.collect().await.is_err());

        let mut dropped = TapBody::response(
            body_of(vec![
                Ok(Frame::data(Bytes::from("a"))),
                Ok(Frame::data(Bytes::from("b"))),
            ]),
            tap(&sink, 8, &in_flight),
        );
        let _ = Pin::new(&mut dropped).frame().await;
        drop(dropped);

        let records = sink.0.lock().unwrap();
        assert_eq!(records.len(), 2);
        assert!(matches!(records[0].outcome, Outcome::UpstreamError { .. }));
        assert_eq!(records[1].outcome, Outcome::ClientAborted);
        assert_eq!(in_flight.current(), 0);
    }
}
