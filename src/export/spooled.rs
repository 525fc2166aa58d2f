//! The export task when a spool is configured: what the endpoint does not take goes to disk,
//! and is sent from there, in order, when it does again.
//!
//! While the spool is empty a batch is sent straight away, once; if the endpoint does not
//! take it (down, timeout, 429, 5xx) it is appended to the spool. While the spool holds
//! anything, every new batch is appended behind it (so order is kept), and the oldest spooled
//! batch is sent with backoff; the queue keeps draining into the spool meanwhile, since the
//! send runs as its own task. A spooled batch leaves the spool only once the endpoint answered
//! 2xx (or refused it for good: 400 and the like, counted as failed). At shutdown whatever
//! could not be sent in time is spooled for the next start.

use bytes::Bytes;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::export::config::{BatchConfig, RetryConfig};
use crate::export::otlp::{
    Attempt, Backoff, OtlpClient, compress, encode_records, request_from_parts,
};
use crate::export::spool::{Origin, Spool};
use crate::export::worker::{RecordBuilder, shutdown_requested};
use crate::export::{Counters, Record};

/// Longest part of the shutdown deadline kept back for writing to the spool.
const SPOOL_RESERVE: std::time::Duration = std::time::Duration::from_millis(500);

pub(crate) struct SpoolWorker {
    pub rx: mpsc::Receiver<Record>,
    pub shutdown: watch::Receiver<Option<Instant>>,
    pub builder: Arc<RecordBuilder>,
    pub client: OtlpClient,
    pub batch: BatchConfig,
    pub retry: RetryConfig,
    pub counters: Arc<Counters>,
    pub spool: Arc<Mutex<Spool>>,
    /// This process's resource and scope, encoded.
    pub origin: Origin,
    /// `--spool-dir`, for the log.
    pub dir: String,
    pub state: State,
}

/// What the worker is doing between events.
pub(crate) struct State {
    gathered: Vec<Record>,
    gathered_bytes: usize,
    flush_at: Option<Instant>,
    sending: Option<Sending>,
    /// When the spool's oldest batch may be sent (next) while it holds anything.
    send_spooled_at: Option<Instant>,
    backoff: Backoff,
    /// The last attempt failed: the endpoint counts as away until one succeeds.
    failing: bool,
    /// The spool dropped records since it was last empty (warned once).
    overflowing: bool,
}

impl State {
    pub(crate) fn new(retry: &RetryConfig, waiting: bool) -> State {
        State {
            gathered: Vec::new(),
            gathered_bytes: 0,
            flush_at: None,
            sending: None,
            send_spooled_at: waiting.then(Instant::now),
            backoff: Backoff::new(retry),
            failing: false,
            overflowing: false,
        }
    }
}

/// One export request out on the wire.
struct Sending {
    task: JoinHandle<Attempt>,
    what: Sent,
}

enum Sent {
    /// Fresh records (encoded), spooled if the endpoint does not take them.
    Live(Vec<Vec<u8>>),
    /// The spool's oldest records, this many.
    Spooled(u64),
}

impl SpoolWorker {
    pub(crate) async fn run(mut self) {
        let mut shutdown = self.shutdown.clone();
        loop {
            let live = matches!(&self.state.sending, Some(s) if matches!(s.what, Sent::Live(_)));
            let room = !self.gathered_full();
            let flush_at = self.state.flush_at.filter(|_| !live);
            let send_at = self
                .state
                .send_spooled_at
                .filter(|_| self.state.sending.is_none());
            tokio::select! {
                biased;
                () = shutdown_requested(&mut shutdown) => break,
                joined = join(&mut self.state.sending) => self.settle(joined).await,
                item = self.rx.recv(), if !live && room => match item {
                    Some(item) => self.gather(item),
                    None => break,
                },
                () = sleep_until(flush_at) => self.flush().await,
                () = sleep_until(send_at) => self.send_spooled().await,
            }
            let live = matches!(&self.state.sending, Some(s) if matches!(s.what, Sent::Live(_)));
            if self.gathered_full() && !live {
                self.flush().await;
            }
        }
        self.finish().await;
    }

    fn gather(&mut self, item: Record) {
        if self.state.gathered.is_empty() {
            self.state.flush_at = Some(Instant::now() + self.batch.max_delay);
        }
        self.state.gathered_bytes += self.builder.estimate(&item);
        self.state.gathered.push(item);
    }

    fn gathered_full(&self) -> bool {
        self.state.gathered.len() >= self.batch.max_records
            || self.state.gathered_bytes >= self.batch.max_bytes
    }

    fn take_gathered(&mut self) -> Vec<Record> {
        self.state.flush_at = None;
        self.state.gathered_bytes = 0;
        std::mem::take(&mut self.state.gathered)
    }

    /// Builds the gathered records; sends them if nothing is waiting before them, else spools.
    async fn flush(&mut self) {
        let items = self.take_gathered();
        if items.is_empty() {
            return;
        }
        let count = items.len() as u64;
        let Some(records) = self.build(items).await else {
            return self.failed(count, "records could not be built");
        };
        if self.state.sending.is_none() && self.pending() == 0 {
            self.send_live(records).await;
        } else {
            self.append(records).await;
        }
    }

    /// Builds and encodes records on the blocking pool, one encoded `LogRecord` each.
    async fn build(&self, items: Vec<Record>) -> Option<Vec<Vec<u8>>> {
        let builder = Arc::clone(&self.builder);
        tokio::task::spawn_blocking(move || encode_records(&builder.build(&items)))
            .await
            .ok()
    }

    async fn send_live(&mut self, records: Vec<Vec<u8>>) {
        let count = records.len() as u64;
        let origin = self.origin.clone();
        let gzip = self.client.gzip();
        let encoded = tokio::task::spawn_blocking(move || {
            let body = request_from_parts(&origin.resource, &origin.scope, &records);
            (compress(body, gzip), records)
        })
        .await;
        match encoded {
            Ok((Ok(body), records)) => self.start(body, Sent::Live(records)),
            Ok((Err(error), records)) => self.failed(records.len() as u64, &error.to_string()),
            Err(error) => self.failed(count, &error.to_string()),
        }
    }

    fn start(&mut self, body: Bytes, what: Sent) {
        if self.state.failing {
            self.counters.export_retries.fetch_add(1, Relaxed);
        }
        let client = self.client.clone();
        let task = tokio::spawn(async move { client.attempt(body).await });
        self.state.sending = Some(Sending { task, what });
    }

    /// Sends the spool's oldest batch, if any.
    async fn send_spooled(&mut self) {
        self.state.send_spooled_at = None;
        let spool = Arc::clone(&self.spool);
        let (max_records, max_bytes) = (self.batch.max_records, self.batch.max_bytes);
        let gzip = self.client.gzip();
        let taken = tokio::task::spawn_blocking(move || {
            let mut spool = lock(&spool);
            let (batch, lost) = spool.take(max_records, max_bytes);
            let body = batch.map(|b| {
                let body = request_from_parts(&b.origin.resource, &b.origin.scope, &b.records);
                (compress(body, gzip), b.records.len() as u64)
            });
            (body, lost, spool.pending(), spool.bytes())
        })
        .await;
        let Ok((body, lost, pending, bytes)) = taken else {
            return self.retry_later(None);
        };
        self.counters.dropped_spool_damaged.fetch_add(lost, Relaxed);
        self.gauges(pending, bytes);
        match body {
            Some((Ok(body), count)) => self.start(body, Sent::Spooled(count)),
            Some((Err(error), count)) => {
                // Cannot happen short of memory trouble: leave the batch where it is.
                tracing::warn!(%error, records = count, "cannot compress a spooled batch");
                self.release().await;
                self.retry_later(None);
            }
            None => {}
        }
    }

    /// What became of the export request that was out.
    async fn settle(&mut self, joined: Result<Attempt, tokio::task::JoinError>) {
        let Some(sending) = self.state.sending.take() else {
            return;
        };
        let attempt = joined.unwrap_or_else(|error| Attempt::Retryable {
            reason: format!("export task failed: {error}"),
            retry_after: None,
        });
        match (sending.what, attempt) {
            (Sent::Live(records), Attempt::Accepted { rejected }) => {
                self.back();
                self.accepted(records.len() as u64, rejected);
            }
            (Sent::Live(records), Attempt::Fatal { reason }) => {
                self.failed(
                    records.len() as u64,
                    &format!("rejected, not retried: {reason}"),
                );
            }
            (
                Sent::Live(records),
                Attempt::Retryable {
                    reason,
                    retry_after,
                },
            ) => {
                self.away(&reason);
                self.append(records).await;
                self.retry_later(retry_after);
            }
            // Counted before the spool lets go of them: `spool_pending` never drops first.
            (Sent::Spooled(count), Attempt::Accepted { rejected }) => {
                self.back();
                self.accepted(count, rejected);
                self.advance().await;
            }
            (Sent::Spooled(count), Attempt::Fatal { reason }) => {
                self.failed(count, &format!("rejected, not retried: {reason}"));
                self.advance().await;
            }
            (
                Sent::Spooled(_),
                Attempt::Retryable {
                    reason,
                    retry_after,
                },
            ) => {
                self.away(&reason);
                self.release().await;
                self.retry_later(retry_after);
            }
        }
    }

    /// The endpoint did not take a batch.
    fn away(&mut self, reason: &str) {
        if !self.state.failing {
            self.state.failing = true;
            let dir = &self.dir;
            tracing::warn!(%reason, spool = %dir, "OTLP endpoint does not take records; spooling them until it does");
        } else {
            tracing::debug!(%reason, "OTLP endpoint still does not take records");
        }
    }

    /// The endpoint took a batch.
    fn back(&mut self) {
        if self.state.failing {
            self.state.failing = false;
            self.state.backoff = Backoff::new(&self.retry);
            tracing::info!(
                waiting = self.pending(),
                "OTLP endpoint takes records again; sending the spool"
            );
        }
    }

    fn retry_later(&mut self, retry_after: Option<std::time::Duration>) {
        let wait = self.state.backoff.next_wait(retry_after);
        self.state.send_spooled_at = Some(Instant::now() + wait);
    }

    /// Appends encoded records to the spool (on the blocking pool) and counts them.
    async fn append(&mut self, records: Vec<Vec<u8>>) {
        let count = records.len() as u64;
        let spool = Arc::clone(&self.spool);
        let appended = tokio::task::spawn_blocking(move || {
            let mut spool = lock(&spool);
            let appended = spool.append(&records);
            (appended, spool.pending(), spool.bytes())
        })
        .await;
        let Ok((appended, pending, bytes)) = appended else {
            self.counters.dropped_spool_full.fetch_add(count, Relaxed);
            return;
        };
        // Gauges first: a reader never sees a record both waiting and dropped.
        self.gauges(pending, bytes);
        self.counters.spooled.fetch_add(appended.written, Relaxed);
        if appended.dropped > 0 {
            self.counters
                .dropped_spool_full
                .fetch_add(appended.dropped, Relaxed);
            if !std::mem::replace(&mut self.state.overflowing, true) {
                tracing::warn!(
                    spool = %self.dir,
                    "spool full (--spool-max-bytes): dropping the oldest records until it drains; counted in dropped_spool_full"
                );
            }
        }
        if self.state.sending.is_none() && self.state.send_spooled_at.is_none() {
            self.state.send_spooled_at = Some(Instant::now());
        }
    }

    /// The spooled batch that was out was taken: it leaves the spool; the next one may go.
    async fn advance(&mut self) {
        self.spool_op(|spool| {
            spool.advance();
            0
        })
        .await;
        self.state.send_spooled_at = Some(Instant::now());
    }

    /// The spooled batch that was out was not taken: it stays, to be sent again.
    async fn release(&mut self) {
        let lost = self.spool_op(Spool::release).await;
        self.counters.dropped_spool_full.fetch_add(lost, Relaxed);
    }

    async fn spool_op(&mut self, op: impl FnOnce(&mut Spool) -> u64 + Send + 'static) -> u64 {
        let spool = Arc::clone(&self.spool);
        let done = tokio::task::spawn_blocking(move || {
            let mut spool = lock(&spool);
            let value = op(&mut spool);
            (value, spool.pending(), spool.bytes())
        })
        .await;
        match done {
            Ok((value, pending, bytes)) => {
                self.gauges(pending, bytes);
                value
            }
            Err(_) => 0,
        }
    }

    fn pending(&self) -> u64 {
        self.counters.spool_pending.load(Relaxed)
    }

    fn gauges(&mut self, pending: u64, bytes: u64) {
        if pending == 0 {
            self.state.overflowing = false;
        }
        self.counters.spool_pending.store(pending, Relaxed);
        self.counters.spool_bytes.store(bytes, Relaxed);
    }

    fn accepted(&self, count: u64, rejected: u64) {
        let rejected = rejected.min(count);
        self.counters.exported.fetch_add(count - rejected, Relaxed);
        if rejected > 0 {
            self.counters
                .dropped_export_failed
                .fetch_add(rejected, Relaxed);
            tracing::warn!(
                rejected,
                "OTLP endpoint accepted a batch but rejected some records"
            );
        }
    }

    fn failed(&self, count: u64, reason: &str) {
        tracing::warn!(records = count, %reason, "export failed; records dropped");
        self.counters
            .dropped_export_failed
            .fetch_add(count, Relaxed);
    }

    /// After shutdown (or once every handle is gone): settle what is out, then send or spool
    /// what is still queued, all before the deadline.
    async fn finish(&mut self) {
        self.rx.close();
        let deadline = *self.shutdown.borrow();
        let until = deadline.map(|d| {
            let left = d.saturating_duration_since(Instant::now());
            d - (left / 4).min(SPOOL_RESERVE)
        });
        if let Some(mut sending) = self.state.sending.take() {
            let joined = match until {
                Some(until) => tokio::time::timeout_at(until, &mut sending.task).await.ok(),
                None => Some((&mut sending.task).await),
            };
            match joined {
                Some(joined) => {
                    self.state.sending = Some(sending);
                    self.settle(joined).await;
                }
                None => self.abandon(sending).await,
            }
        }
        while let Ok(item) = self.rx.try_recv() {
            self.gather(item);
            if self.gathered_full() {
                self.flush_last(until).await;
            }
        }
        self.flush_last(until).await;
        let pending = self.pending();
        if pending > 0 {
            tracing::info!(
                records = pending,
                "records wait in the spool for the next start"
            );
        }
    }

    /// An export request still out at the deadline: its records stay (or go) in the spool.
    async fn abandon(&mut self, sending: Sending) {
        sending.task.abort();
        match sending.what {
            Sent::Live(records) => self.append(records).await,
            Sent::Spooled(_) => self.release().await,
        }
    }

    /// Sends the gathered records with one attempt before `until` if nothing waits before
    /// them, and spools them otherwise or when that attempt fails.
    async fn flush_last(&mut self, until: Option<Instant>) {
        let items = self.take_gathered();
        if items.is_empty() {
            return;
        }
        let count = items.len() as u64;
        let Some(records) = self.build(items).await else {
            return self.failed(count, "records could not be built");
        };
        if self.pending() > 0 || self.state.failing {
            return self.append(records).await;
        }
        self.send_live(records).await;
        let Some(mut sending) = self.state.sending.take() else {
            return;
        };
        let joined = match until {
            Some(until) => tokio::time::timeout_at(until, &mut sending.task).await.ok(),
            None => Some((&mut sending.task).await),
        };
        match joined {
            Some(joined) => {
                self.state.sending = Some(sending);
                self.settle(joined).await;
            }
            None => self.abandon(sending).await,
        }
    }
}

/// The spool, even if a blocking task panicked while holding it (its state stays usable).
fn lock(spool: &Mutex<Spool>) -> std::sync::MutexGuard<'_, Spool> {
    spool
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Waits for the request out, if any; pending forever when there is none.
async fn join(sending: &mut Option<Sending>) -> Result<Attempt, tokio::task::JoinError> {
    match sending {
        Some(sending) => (&mut sending.task).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
