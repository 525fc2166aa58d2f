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
use crate::providers::{MAX_DECODER_MEMORY, ParseStop, ResponseParser};

/// Process-wide bound on capture memory held at once (in flight and queued for export),
/// counted as allocated: what a buffer reserved, not only what was written into it.
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

    /// Memory that exists already (an allocator rounding up): counted even past the limit.
    fn charge(&self, n: usize) {
        self.used.fetch_add(n, Ordering::AcqRel);
    }

    fn release(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    fn deny(&self) {
        self.denied.fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes of capture memory currently allocated (capacity, not length).
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
    charged: usize,
    budget: Arc<CaptureBudget>,
}

impl AsRef<[u8]> for BudgetedBytes {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for BudgetedBytes {
    fn drop(&mut self) {
        self.budget.release(self.charged);
    }
}

/// A capture's first block; small bodies (a slow upload's few bytes) stay this small.
const MIN_BLOCK: usize = 256;
/// Largest block allocated ahead of need: a capture's unused capacity (its slack) never exceeds
/// this, whatever the body size or chunking.
pub const MAX_BLOCK_SLACK: usize = 16 * 1024;

/// The side copy of one body: at most `cap` bytes, and the true length.
///
/// Bytes are copied (never kept as slices of the forwarded `Bytes`, which would pin whole
/// upstream read buffers) into blocks that grow with the body: a new block is the size of the
/// data at hand, or the size held so far clamped to `MIN_BLOCK..=MAX_BLOCK_SLACK`, whichever is
/// larger. Blocks are never reallocated, so nothing is copied twice while the body runs, and the
/// budget is charged with every block's capacity (plus the block list itself).
#[derive(Debug)]
pub struct CaptureBuf {
    blocks: Vec<Vec<u8>>,
    len: usize,
    /// Bytes reserved in the budget: block capacities plus the block list's own allocation.
    charged: usize,
    cap: usize,
    total: u64,
    truncated: bool,
    budget: Arc<CaptureBudget>,
}

impl CaptureBuf {
    pub fn new(cap: usize, budget: Arc<CaptureBudget>) -> CaptureBuf {
        CaptureBuf {
            blocks: Vec::new(),
            len: 0,
            charged: 0,
            cap,
            total: 0,
            truncated: false,
            budget,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.total = self.total.saturating_add(data.len() as u64);
        let room = self.cap.saturating_sub(self.len);
        let take = room.min(data.len());
        if take < data.len() {
            self.truncated = true;
        }
        let mut rest = data.get(..take).unwrap_or_default();
        while !rest.is_empty() {
            let spare = self
                .blocks
                .last()
                .map_or(0, |b| b.capacity().saturating_sub(b.len()));
            if spare == 0 && !self.grow(rest.len()) {
                self.truncated = true;
                // Stop capturing this body: later bytes must not fill holes out of order.
                self.cap = self.len;
                return;
            }
            let Some(block) = self.blocks.last_mut() else {
                return;
            };
            let n = block.capacity().saturating_sub(block.len()).min(rest.len());
            let (now, later) = rest.split_at(n);
            block.extend_from_slice(now);
            self.len = self.len.saturating_add(n);
            rest = later;
        }
    }

    /// Adds a block for `need` more bytes (already within the cap); false when the budget says no.
    fn grow(&mut self, need: usize) -> bool {
        let room = self.cap.saturating_sub(self.len);
        let ahead = self.len.clamp(MIN_BLOCK, MAX_BLOCK_SLACK);
        // The block list doubles too (one entry for the common one-block capture).
        let list_extra = if self.blocks.len() == self.blocks.capacity() {
            self.blocks.capacity().max(1)
        } else {
            0
        };
        let list_bytes = list_extra.saturating_mul(std::mem::size_of::<Vec<u8>>());
        // The generous size first; near the end of the budget, exactly what is needed.
        let sizes = [need.max(ahead).min(room), need];
        let Some(size) = sizes
            .into_iter()
            .find(|s| self.budget.try_reserve(s.saturating_add(list_bytes)))
        else {
            self.budget.deny();
            return false;
        };
        let before = self.blocks.capacity();
        self.blocks.reserve_exact(list_extra);
        let block = Vec::with_capacity(size);
        let actual = block.capacity().saturating_add(
            (self.blocks.capacity().saturating_sub(before))
                .saturating_mul(std::mem::size_of::<Vec<u8>>()),
        );
        let reserved = size.saturating_add(list_bytes);
        // Count what the allocations really hold, should they differ from what was asked.
        match actual.checked_sub(reserved) {
            Some(more) => self.budget.charge(more),
            None => self.budget.release(reserved.saturating_sub(actual)),
        }
        self.charged = self.charged.saturating_add(actual);
        self.blocks.push(block);
        true
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// Capture memory this buffer holds (capacity, as charged to the budget).
    pub fn allocated(&self) -> usize {
        self.charged
    }

    /// The budget this capture is charged to (the parser's decoder is charged to it too).
    pub(crate) fn budget(&self) -> &Arc<CaptureBudget> {
        &self.budget
    }

    /// Hands the captured bytes over as one exact-size allocation (the budget lease moves with them).
    pub fn take(&mut self, content_encoding: Option<String>) -> CapturedBody {
        let truncated = self.truncated || (self.len as u64) < self.total;
        let blocks = std::mem::take(&mut self.blocks);
        let old = std::mem::take(&mut self.charged);
        self.len = 0;
        let bytes = match <[Vec<u8>; 1]>::try_from(blocks) {
            Ok([mut one]) => {
                one.shrink_to_fit();
                one
            }
            Err(blocks) => blocks.concat(),
        };
        // The exact copy replaces the blocks: charge it, then give the blocks' share back.
        let charged = bytes.capacity();
        self.budget.charge(charged);
        self.budget.release(old);
        let bytes = if bytes.is_empty() {
            self.budget.release(charged);
            Bytes::new()
        } else {
            Bytes::from_owner(BudgetedBytes {
                bytes,
                charged,
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
        self.budget.release(self.charged);
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
    /// Captures `data` and gives it to the parser with one slice of work; true while work is left.
    fn on_data(&mut self, data: &Bytes) -> bool {
        if data.is_empty() {
            return false;
        }
        self.exchange.mark_first_chunk(Instant::now());
        self.capture.push(data);
        self.parser.as_mut().is_some_and(|parser| {
            let parser = parser.get_mut();
            parser.offer(data.clone());
            parser.work()
        })
    }

    fn finish(mut self, outcome: Outcome) {
        // SDKs close as soon as they read the terminal event, often before the chunked
        // terminator arrives: that answer was complete, not aborted.
        let terminal_seen = self
            .parser
            .as_mut()
            .is_some_and(|p| p.get_mut().saw_terminal());
        let outcome = match outcome {
            Outcome::ClientAborted if terminal_seen => Outcome::Complete,
            other => other,
        };
        let complete = outcome == Outcome::Complete;
        if let Some(parser) = self.parser.as_mut() {
            let decoded = parser.get_mut().decoded_len();
            self.exchange.note_response_decoded_len(decoded);
        }
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
    ///
    /// Parsing the copy (decoding included) does at most one slice of work per poll: a frame
    /// whose copy needs more is held, the task yields between slices, and the frame goes on
    /// once its copy is parsed (or the parser stopped). So a decompression bomb costs its own
    /// connection a few slices and never holds a runtime worker for long.
    pub struct TapBody<B> {
        #[pin]
        inner: B,
        tap: Tap,
        // A frame whose copy the parser is still working through.
        held: Option<Frame<Bytes>>,
        // The capture budget's share for the parser's decoder.
        lease: DecoderLease,
    }

    impl<B> PinnedDrop for TapBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            end_input(this.tap);
            // Dropped before its end was seen: the client went away.
            end_tap(this.tap, Outcome::ClientAborted);
            this.lease.release();
        }
    }
}

impl<B: Body<Data = Bytes>> TapBody<B> {
    pub fn request(inner: B, tap: Arc<Mutex<RequestTap>>) -> TapBody<B> {
        TapBody {
            inner,
            tap: Tap::Request(tap),
            held: None,
            lease: DecoderLease::default(),
        }
    }

    pub fn response(inner: B, tap: ResponseTap) -> TapBody<B> {
        let mut tap = Tap::Response(Box::new(tap));
        // An empty body may never be polled (HEAD, 204, 304): it is complete already.
        if inner.is_end_stream() {
            end_tap(&mut tap, Outcome::Complete);
        }
        TapBody {
            inner,
            tap,
            held: None,
            lease: DecoderLease::default(),
        }
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
        // One slice of parse work per poll: on a new frame's copy, or on the held frame's.
        let (frame, more) = match this.held.take() {
            Some(frame) => (frame, work(this.tap, this.lease)),
            None => match this.inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let more = frame
                        .data_ref()
                        .is_some_and(|data| on_data(this.tap, data, this.lease));
                    (frame, more)
                }
                Poll::Ready(Some(Err(e))) => {
                    on_error(this.tap, &e);
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    finish_input(this.tap, this.lease);
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            },
        };
        if more {
            // Yield: other tasks run before the next slice; the frame goes on once it is done.
            *this.held = Some(frame);
            yield_to_runtime(cx);
            return Poll::Pending;
        }
        if this.inner.is_end_stream() {
            // hyper stops polling once the body says it is at its end: end it here.
            finish_input(this.tap, this.lease);
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let held = self
            .held
            .as_ref()
            .and_then(Frame::data_ref)
            .map_or(0, |d| d.len() as u64);
        if held == 0 {
            return inner;
        }
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(held));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(held));
        }
        hint
    }
}

/// Be polled again once the runtime has run the other ready tasks *and* polled its I/O driver:
/// a bare self-wake would keep a busy current-thread runtime from seeing socket readiness for
/// up to 61 task polls. (`yield_now` defers the wake-up until after the driver ran; outside a
/// runtime it wakes at once.)
fn yield_to_runtime(cx: &mut Context<'_>) {
    let mut yielding = std::pin::pin!(tokio::task::yield_now());
    if yielding.as_mut().poll(cx).is_ready() {
        cx.waker().wake_by_ref();
    }
}

/// The body is complete: the request parser's decoder goes, the response exchange ends.
fn finish_input(tap: &mut Tap, lease: &mut DecoderLease) {
    end_input(tap);
    end_tap(tap, Outcome::Complete);
    lease.release();
}

/// No more request bytes will come: free the parser's decoder now (the request's facts are
/// read when the exchange ends, maybe after a long response).
fn end_input(tap: &mut Tap) {
    if let Tap::Request(t) = tap
        && let Ok(mut t) = t.lock()
        && let Some(p) = t.parser.as_mut()
    {
        p.get_mut().end_input();
    }
}

/// Captures `data` and gives the parser one slice of work on it; true while work is left.
fn on_data(tap: &mut Tap, data: &Bytes, lease: &mut DecoderLease) -> bool {
    let more = match tap {
        Tap::Request(t) => {
            let Ok(mut t) = t.lock() else {
                return false;
            };
            t.capture.push(data);
            t.parser.as_mut().is_some_and(|p| {
                let p = p.get_mut();
                p.offer(data.clone());
                p.work()
            })
        }
        Tap::Response(t) => t.on_data(data),
        Tap::Done => false,
    };
    // Charged after every slice, finished or not: a window is allocated before any output.
    settle(tap, lease) && more
}

/// One more slice of parse work; true while work is left.
fn work(tap: &mut Tap, lease: &mut DecoderLease) -> bool {
    let more = match tap {
        Tap::Request(t) => t
            .lock()
            .ok()
            .and_then(|mut t| t.parser.as_mut().map(|p| p.get_mut().work()))
            .unwrap_or(false),
        Tap::Response(t) => t.parser.as_mut().is_some_and(|p| p.get_mut().work()),
        Tap::Done => false,
    };
    // Charged after every slice, finished or not: a window is allocated before any output.
    settle(tap, lease) && more
}

/// Charges the decoder's memory to the capture budget; a decoder that needs more than the
/// budget or `MAX_DECODER_MEMORY` allows is dropped and its parse stops. False when stopped.
fn settle(tap: &mut Tap, lease: &mut DecoderLease) -> bool {
    let mut charge = |budget: &Arc<CaptureBudget>, memory: usize| lease.hold(budget, memory);
    match tap {
        Tap::Request(t) => {
            let Ok(mut guard) = t.lock() else {
                return false;
            };
            let t = &mut *guard;
            let Some(p) = t.parser.as_mut().map(sync_wrapper::SyncWrapper::get_mut) else {
                return false;
            };
            if charge(t.capture.budget(), p.memory()) {
                return true;
            }
            p.give_up(ParseStop::MemoryLimit);
            false
        }
        Tap::Response(t) => {
            let t = &mut **t;
            let Some(p) = t.parser.as_mut().map(sync_wrapper::SyncWrapper::get_mut) else {
                return false;
            };
            if charge(t.capture.budget(), p.memory()) {
                return true;
            }
            p.give_up(ParseStop::MemoryLimit);
            false
        }
        Tap::Done => false,
    }
}

/// The capture budget's share for a parser's decoder: its window and state, which the stream
/// sizes (a 16 MiB brotli ring buffer from the first four bytes on).
#[derive(Debug, Default)]
struct DecoderLease {
    budget: Option<Arc<CaptureBudget>>,
    held: usize,
}

impl DecoderLease {
    /// Hold `want` bytes in all; false (and nothing held) past the budget or the per-body cap.
    fn hold(&mut self, budget: &Arc<CaptureBudget>, want: usize) -> bool {
        let budget = self.budget.get_or_insert_with(|| Arc::clone(budget));
        match want.checked_sub(self.held) {
            None => budget.release(self.held.saturating_sub(want)),
            Some(more) if want <= MAX_DECODER_MEMORY && budget.try_reserve(more) => {}
            Some(_) => {
                budget.deny();
                budget.release(self.held);
                self.held = 0;
                return false;
            }
        }
        self.held = want;
        true
    }

    fn release(&mut self) {
        if let Some(budget) = &self.budget {
            budget.release(self.held);
        }
        self.held = 0;
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

    fn tap(sink: &Arc<VecSink>, cap: usize, in_flight: &Arc<InFlight>) -> ResponseTap {
        tap_in(sink, cap, in_flight, CaptureBudget::new(1 << 20))
    }

    fn tap_in(
        sink: &Arc<VecSink>,
        cap: usize,
        in_flight: &Arc<InFlight>,
        budget: Arc<CaptureBudget>,
    ) -> ResponseTap {
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
                Exchange::sample(),
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
        // Room for two bytes and their block's entry in the block list, nothing more.
        let budget = CaptureBudget::new(2 + LIST_ENTRY);
        let mut buf = CaptureBuf::new(100, Arc::clone(&budget));
        buf.push(b"ab");
        buf.push(b"cdef");
        buf.push(b"g");
        assert!(budget.used() <= 2 + LIST_ENTRY);
        let body = buf.take(None);
        assert_eq!(&body.bytes[..], b"ab");
        assert_eq!(body.total_len, 7);
        assert!(body.truncated);
        assert!(budget.denied() >= 1);
        assert_eq!(budget.used(), 2);
    }

    const LIST_ENTRY: usize = std::mem::size_of::<Vec<u8>>();

    /// `n` buffers fed `chunks` pieces of `size` bytes: (bytes held, capture memory charged).
    fn fill(
        n: usize,
        chunks: usize,
        size: usize,
        cap: usize,
    ) -> (Arc<CaptureBudget>, Vec<CaptureBuf>) {
        let budget = CaptureBudget::new(1 << 30);
        let mut bufs: Vec<CaptureBuf> = (0..n)
            .map(|_| CaptureBuf::new(cap, Arc::clone(&budget)))
            .collect();
        let chunk = vec![b'x'; size];
        for _ in 0..chunks {
            bufs.iter_mut().for_each(|b| b.push(&chunk));
        }
        (budget, bufs)
    }

    #[test]
    fn the_budget_counts_capacity_and_the_slack_is_bounded() {
        // (buffers, chunks, chunk size): slow small uploads, small SSE streams, a big body.
        for (n, chunks, size) in [
            (1000, 20, 10),
            (1000, 100, 100),
            (1000, 10, 1000),
            (4, 700, 1500),
        ] {
            let (budget, bufs) = fill(n, chunks, size, 1 << 20);
            let held = chunks * size;
            let charged: usize = bufs.iter().map(CaptureBuf::allocated).sum();
            assert_eq!(budget.used(), charged, "{n} x {chunks} x {size}");
            for b in &bufs {
                let real: usize = b.blocks.iter().map(Vec::capacity).sum::<usize>()
                    + b.blocks.capacity() * LIST_ENTRY;
                assert_eq!(
                    b.allocated(),
                    real,
                    "the budget is charged what is allocated"
                );
                assert!(
                    b.allocated()
                        <= held + MAX_BLOCK_SLACK + b.blocks.len().max(2) * 2 * LIST_ENTRY,
                    "{n} x {chunks} x {size}: {} for {held}",
                    b.allocated()
                );
            }
            assert!(budget.used() <= n * (held + 32 * 1024));
        }
        // The slow upload: one small block each, nowhere near the 1 MiB cap.
        let (budget, _bufs) = fill(1000, 20, 10, 1 << 20);
        assert_eq!(budget.used(), 1000 * (MIN_BLOCK + LIST_ENTRY));
    }

    #[test]
    fn take_hands_over_one_exact_allocation() {
        let (budget, mut bufs) = fill(1, 300, 123, 1 << 20);
        let body = bufs[0].take(None);
        assert_eq!(body.bytes.len(), 300 * 123);
        assert!(body.bytes.iter().all(|b| *b == b'x'));
        assert_eq!(budget.used(), body.bytes.len());
        assert_eq!(bufs[0].allocated(), 0);
        drop(bufs);
        assert_eq!(
            budget.used(),
            body.bytes.len(),
            "the lease moved with the bytes"
        );
        drop(body);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_big_chunk_gets_an_exact_block_and_the_cap_still_holds() {
        let budget = CaptureBudget::new(1 << 30);
        let mut buf = CaptureBuf::new(100_000, Arc::clone(&budget));
        buf.push(&[b'a'; 64 * 1024]);
        assert_eq!(buf.allocated(), 64 * 1024 + LIST_ENTRY);
        buf.push(&[b'b'; 64 * 1024]);
        assert!(buf.allocated() <= 100_000 + 4 * LIST_ENTRY);
        let body = buf.take(None);
        assert_eq!(body.bytes.len(), 100_000);
        assert_eq!((body.total_len, body.truncated), (128 * 1024, true));
        assert_eq!(&body.bytes[65_535..65_537], b"ab");
    }

    /// Polls `body` to its end with a no-op waker: (bytes out, polls that returned `Pending`),
    /// checking after each poll that the parser did at most one slice of work.
    fn drain<B>(body: B, decoded: &dyn Fn() -> u64) -> (Vec<u8>, u64)
    where
        B: Body<Data = Bytes>,
        B::Error: std::fmt::Debug,
    {
        let mut body = std::pin::pin!(body);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let (mut out, mut pending, mut last) = (Vec::new(), 0u64, 0u64);
        loop {
            let polled = body.as_mut().poll_frame(&mut cx);
            let now = decoded();
            let slice = (crate::providers::WORK_SLICE + 32 * 1024) as u64;
            assert!(now - last <= slice, "{} decoded in one poll", now - last);
            last = now;
            match polled {
                Poll::Pending => {
                    pending += 1;
                    assert!(!body.is_end_stream(), "a held frame is still to come");
                }
                Poll::Ready(Some(frame)) => {
                    out.extend_from_slice(frame.unwrap().data_ref().unwrap());
                }
                Poll::Ready(None) => return (out, pending),
            }
            assert!(pending < 100_000);
        }
    }

    #[test]
    fn a_request_bomb_is_parsed_a_slice_per_poll_and_forwarded_whole() {
        use crate::providers::bomb_tests::{HEAD, TAIL, bomb};
        use crate::providers::{ApiShape, ParseStop, RequestParser};
        let packed = Bytes::from(bomb("br", HEAD, 3 << 30, TAIL));
        let parser = RequestParser::new(ApiShape::AnthropicMessages, "/v1/messages", Some("br"));
        let tap = Arc::new(Mutex::new(RequestTap {
            capture: CaptureBuf::new(1 << 20, CaptureBudget::new(64 << 20)),
            parser: Some(sync_wrapper::SyncWrapper::new(parser)),
            client_error: false,
        }));
        let body = TapBody::request(http_body_util::Full::new(packed.clone()), Arc::clone(&tap));
        let decoded = || {
            let mut t = tap.lock().unwrap();
            t.parser.as_mut().map_or(0, |p| p.get_mut().decoded_len())
        };
        let (out, pending) = drain(body, &decoded);
        assert_eq!(out, packed, "forwarded unchanged");
        let slice = (crate::providers::WORK_SLICE + 32 * 1024) as u64;
        assert!(
            pending >= decoded() / slice,
            "{pending} yields for {}",
            decoded()
        );
        let mut t = tap.lock().unwrap();
        let facts = t.parser.take().unwrap().into_inner().finish();
        assert_eq!(facts.stopped, Some(ParseStop::RatioLimit));
        assert_eq!(facts.model.as_deref(), Some("claude-bomb"));
        assert_eq!(t.capture.total(), packed.len() as u64);
    }

    #[test]
    fn a_response_bomb_ends_the_exchange_once_its_frame_went_on() {
        use crate::providers::bomb_tests::bomb;
        use crate::providers::{ApiShape, ResponseParser};
        let sink = Arc::new(VecSink::default());
        let in_flight = InFlight::new();
        let packed = Bytes::from(bomb("zstd", br#"{"model":"m","x":["#, 1 << 30, b"]}"));
        let mut t = tap_in(&sink, 1 << 20, &in_flight, CaptureBudget::new(64 << 20));
        let parser = ResponseParser::new(
            ApiShape::OpenAiChat,
            Some("application/json"),
            Some("zstd"),
            200,
        );
        t.parser = Some(sync_wrapper::SyncWrapper::new(parser));
        let body = TapBody::response(http_body_util::Full::new(packed.clone()), t);
        let (out, pending) = drain(body, &|| 0);
        assert_eq!(out, packed);
        assert!(pending > 10, "{pending}");
        let records = sink.0.lock().unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].outcome, Outcome::Complete);
        assert_eq!(
            records[0].response_facts.as_ref().unwrap().model.as_deref(),
            Some("m")
        );
        assert_eq!(in_flight.current(), 0);
    }

    type Polled<B> = Poll<Option<Result<Frame<<B as Body>::Data>, <B as Body>::Error>>>;

    fn poll_once<B: Body>(body: Pin<&mut B>) -> Polled<B> {
        body.poll_frame(&mut Context::from_waker(std::task::Waker::noop()))
    }

    #[test]
    fn a_stalled_upload_cannot_pin_a_large_decoder_window() {
        use crate::providers::bomb_tests::brotli_window;
        use crate::providers::{ApiShape, ParseStop, RequestParser};
        // The first 8 bytes of a brotli stream with a 16 MiB window, then the client stalls.
        let head = Bytes::copy_from_slice(&brotli_window(16 << 20, 24)[..8]);
        let budget = CaptureBudget::new(64 << 20);
        let parser = RequestParser::new(ApiShape::AnthropicMessages, "/v1/messages", Some("br"));
        let tap = Arc::new(Mutex::new(RequestTap {
            capture: CaptureBuf::new(1 << 20, Arc::clone(&budget)),
            parser: Some(sync_wrapper::SyncWrapper::new(parser)),
            client_error: false,
        }));
        let frames = futures::stream::iter([Ok::<_, std::io::Error>(Frame::data(head.clone()))]);
        let stalled = StreamBody::new(futures::StreamExt::chain(
            frames,
            futures::stream::pending(),
        ));
        let mut body = std::pin::pin!(TapBody::request(stalled, Arc::clone(&tap)));
        let first = poll_once(body.as_mut());
        assert!(matches!(first, Poll::Ready(Some(Ok(f))) if f.data_ref() == Some(&head)));
        assert!(poll_once(body.as_mut()).is_pending());
        {
            let mut t = tap.lock().unwrap();
            let p = t.parser.as_mut().unwrap().get_mut();
            assert_eq!((p.stopped(), p.memory()), (Some(ParseStop::MemoryLimit), 0));
            assert_eq!(
                budget.used(),
                t.capture.allocated(),
                "only the captured bytes"
            );
        }
        assert!(budget.denied() >= 1);
    }

    #[test]
    fn a_live_decoder_is_charged_while_it_runs_and_released_at_the_end() {
        use crate::providers::{ApiShape, ResponseParser};
        use std::io::Write;
        // zstd without a content size: the decoder holds the 8 MiB window its header names.
        let mut packed = Vec::new();
        let mut e = zstd::stream::write::Encoder::new(&mut packed, 3).unwrap();
        e.window_log(23).unwrap();
        e.include_contentsize(false).unwrap();
        e.write_all(br#"{"model":"m","usage":{"prompt_tokens":3}}"#)
            .unwrap();
        e.finish().unwrap();
        let (a, b) = packed.split_at(packed.len() / 2);
        let (a, b) = (Bytes::copy_from_slice(a), Bytes::copy_from_slice(b));
        let (sink, in_flight) = (Arc::new(VecSink::default()), InFlight::new());
        let budget = CaptureBudget::new(64 << 20);
        let mut t = tap_in(&sink, 1 << 20, &in_flight, Arc::clone(&budget));
        let parser = ResponseParser::new(
            ApiShape::OpenAiChat,
            Some("application/json"),
            Some("zstd"),
            200,
        );
        t.parser = Some(sync_wrapper::SyncWrapper::new(parser));
        let body = body_of(vec![Ok(Frame::data(a)), Ok(Frame::data(b))]);
        let mut body = std::pin::pin!(TapBody::response(body, t));
        assert!(poll_once(body.as_mut()).is_ready());
        assert!(
            budget.used() > 8 << 20,
            "the window is charged: {}",
            budget.used()
        );
        while let Poll::Ready(Some(_)) = poll_once(body.as_mut()) {}
        let records = sink.0.lock().unwrap();
        let facts = records[0].response_facts.as_ref().unwrap();
        assert_eq!(facts.model.as_deref(), Some("m"));
        assert_eq!(
            budget.used(),
            records[0].response_body.bytes.len(),
            "only the record's bytes"
        );
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

    #[tokio::test]
    async fn a_client_that_hangs_up_after_the_terminal_event_got_a_complete_answer() {
        let sink = Arc::new(VecSink::default());
        let in_flight = InFlight::new();
        let budget = CaptureBudget::new(64 << 20);
        let mut outcomes = Vec::new();
        for (last, expect) in [
            (&b"data: [DONE]\n\n"[..], Outcome::Complete),
            (&b"data: {\"choices\":[]}\n\n"[..], Outcome::ClientAborted),
        ] {
            let mut t = tap_in(&sink, 1 << 20, &in_flight, Arc::clone(&budget));
            let parser = ResponseParser::new(
                crate::providers::ApiShape::OpenAiChat,
                Some("text/event-stream"),
                None,
                200,
            );
            t.parser = Some(sync_wrapper::SyncWrapper::new(parser));
            // The chunked terminator never comes: the third frame is never polled.
            let mut body = TapBody::response(
                body_of(vec![
                    Ok(Frame::data(Bytes::from_static(
                        b"data: {\"model\":\"m\"}\n\n",
                    ))),
                    Ok(Frame::data(Bytes::from_static(last))),
                    Ok(Frame::data(Bytes::from_static(b"data: {}\n\n"))),
                ]),
                t,
            );
            for _ in 0..2 {
                let _ = Pin::new(&mut body).frame().await;
            }
            drop(body);
            outcomes.push(expect);
        }
        let records = sink.0.lock().unwrap();
        let got: Vec<_> = records.iter().map(|r| r.outcome.clone()).collect();
        assert_eq!(got, outcomes);
        assert_eq!(in_flight.current(), 0);
    }
}
