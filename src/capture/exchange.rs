//! One exchange in progress: filled in as the request and response pass, submitted exactly once.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::ExchangeSink;
use super::body::RequestTap;
use super::record::{CapturedBody, Exchange, Outcome};
use crate::providers::ResponseFacts;

/// Counts exchanges that have started but not ended, so shutdown can wait for them.
#[derive(Debug, Default)]
pub struct InFlight {
    count: AtomicUsize,
    /// Set when the shutdown grace ran out: exchanges cut from then on end as `shutdown`.
    cut: std::sync::atomic::AtomicBool,
    finished: AtomicU64,
    idle: Notify,
}

impl InFlight {
    pub fn new() -> Arc<InFlight> {
        Arc::new(InFlight::default())
    }

    pub fn current(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Exchanges handed to the sink since start.
    pub fn finished(&self) -> u64 {
        self.finished.load(Ordering::Relaxed)
    }

    /// The grace period is over: what is cut now was cut by the shutdown.
    pub fn cut_for_shutdown(&self) {
        self.cut.store(true, Ordering::Release);
    }

    pub fn is_cut_for_shutdown(&self) -> bool {
        self.cut.load(Ordering::Acquire)
    }

    /// Resolves when no exchange is in flight.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.current() == 0 {
                return;
            }
            notified.await;
        }
    }

    fn enter(&self) {
        self.count.fetch_add(1, Ordering::AcqRel);
    }

    fn leave(&self) {
        self.finished.fetch_add(1, Ordering::Relaxed);
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// What the body taps know at the end besides the record (for the accounting stage).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FinishFacts {
    /// Response bytes after content decoding, as the parser read them (none: not parsed).
    pub response_decoded_len: Option<u64>,
}

/// Runs once, on the finished record, just before it goes to the sink.
pub type OnFinish = Box<dyn FnOnce(&mut Exchange, FinishFacts) + Send + Sync>;

/// The exchange while it runs. Dropping it unfinished records a client abort.
pub struct ExchangeInProgress {
    record: Option<Exchange>,
    on_finish: Option<OnFinish>,
    facts: FinishFacts,
    started: Instant,
    request_tap: Arc<Mutex<RequestTap>>,
    request_encoding: Option<String>,
    sink: Arc<dyn ExchangeSink>,
    in_flight: Arc<InFlight>,
}

impl ExchangeInProgress {
    /// `record` holds the request side; its id, bodies and timings are filled in here.
    pub fn start(
        mut record: Exchange,
        request_tap: Arc<Mutex<RequestTap>>,
        request_encoding: Option<String>,
        sink: Arc<dyn ExchangeSink>,
        in_flight: Arc<InFlight>,
    ) -> ExchangeInProgress {
        record.id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        in_flight.enter();
        ExchangeInProgress {
            record: Some(record),
            on_finish: None,
            facts: FinishFacts::default(),
            started: Instant::now(),
            request_tap,
            request_encoding,
            sink,
            in_flight,
        }
    }

    /// `f` runs on the finished record before the sink gets it (cost, budgets, metrics).
    pub fn on_finish(&mut self, f: OnFinish) {
        self.on_finish = Some(f);
    }

    pub fn note_response_decoded_len(&mut self, len: u64) {
        self.facts.response_decoded_len = Some(len);
    }

    pub fn set_response_head(&mut self, status: u16, headers: Vec<(String, String)>) {
        let elapsed = self.started.elapsed();
        if let Some(r) = self.record.as_mut() {
            r.status = Some(status);
            r.response_headers = headers;
            r.time_to_first_byte = Some(elapsed);
        }
    }

    pub fn mark_first_chunk(&mut self, at: Instant) {
        if let Some(r) = self.record.as_mut()
            && r.time_to_first_chunk.is_none()
        {
            r.time_to_first_chunk = Some(at.saturating_duration_since(self.started));
        }
    }

    /// Whether the client's request body broke off (then a forwarding error is the client's doing).
    pub fn client_body_failed(&self) -> bool {
        self.request_tap
            .lock()
            .map(|t| t.client_error)
            .unwrap_or(false)
    }

    /// Ends the exchange and hands it to the sink; later calls and the drop do nothing.
    pub fn finish(
        &mut self,
        outcome: Outcome,
        response_body: CapturedBody,
        facts: Option<ResponseFacts>,
    ) {
        let Some(mut record) = self.record.take() else {
            return;
        };
        // A body dropped because the grace period ended is no client abort.
        let outcome = if outcome == Outcome::ClientAborted && self.in_flight.is_cut_for_shutdown() {
            Outcome::Shutdown
        } else {
            outcome
        };
        record.duration = self.started.elapsed();
        if let Ok(mut tap) = self.request_tap.lock() {
            record.request_body = tap.capture.take(self.request_encoding.take());
            record.request_facts = tap.parser.take().map(|p| p.into_inner().finish());
        }
        record.response_body = response_body;
        record.response_facts = facts;
        record.outcome = outcome;
        if let Some(on_finish) = self.on_finish.take() {
            on_finish(&mut record, self.facts);
        }
        self.sink.submit(record);
        self.in_flight.leave();
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for ExchangeInProgress {
    fn drop(&mut self) {
        self.finish(Outcome::ClientAborted, CapturedBody::default(), None);
    }
}
