//! The one export task: batches queued calls and decisions, builds records off the async
//! threads, ships them.

use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::capture::Exchange;
use crate::export::config::{BatchConfig, RetryConfig};
use crate::export::egress::build_egress_record;
use crate::export::otlp::{Attempt, Backoff, Delivery, OtlpClient, encode_body};
use crate::export::record::{LogRecordData, RecordContext, build_record};
use crate::export::stdout::{SharedWriter, write_lines};
use crate::export::{Counters, Record};
use crate::redact::Redactor;

/// Added to the captured body sizes when estimating a record's size for batching.
const RECORD_OVERHEAD_ESTIMATE: usize = 4 * 1024;
/// Estimated size of an egress record: a dozen short attributes and a one-line body.
const EGRESS_RECORD_ESTIMATE: usize = 1024;

/// Where built records go.
pub(crate) enum Sink {
    Otlp(Box<OtlpClient>),
    Stdout(SharedWriter),
}

/// Everything needed to turn queued items into records; shared with blocking tasks.
pub(crate) struct RecordBuilder {
    pub redactor: Arc<Redactor>,
    pub max_record_bytes: usize,
    pub body_decode_limit: usize,
    pub resource: Vec<(String, String)>,
}

impl RecordBuilder {
    pub(crate) fn build<'a>(&self, items: &'a [Record]) -> Vec<LogRecordData<'a>> {
        let ctx = RecordContext {
            redactor: &self.redactor,
            max_record_bytes: self.max_record_bytes,
            body_decode_limit: self.body_decode_limit,
        };
        items
            .iter()
            .map(|item| match item {
                Record::Call(exchange) => build_record(exchange, &ctx),
                Record::Egress(record) => build_egress_record(record),
            })
            .collect()
    }

    /// Rough size of the record an item will become, for batch limits.
    pub(crate) fn estimate(&self, item: &Record) -> usize {
        match item {
            Record::Call(exchange) => self.estimate_call(exchange),
            Record::Egress(_) => EGRESS_RECORD_ESTIMATE,
        }
    }

    fn estimate_call(&self, exchange: &Exchange) -> usize {
        let sizes = [&exchange.request_body, &exchange.response_body].map(|body| {
            match body.content_encoding.as_deref() {
                // A compressed body may decode to anything up to the record limit.
                Some(encoding) if !encoding.eq_ignore_ascii_case("identity") => {
                    self.max_record_bytes
                }
                _ => body.bytes.len(),
            }
        });
        (sizes[0] + sizes[1]).min(self.max_record_bytes) + RECORD_OVERHEAD_ESTIMATE
    }
}

pub(crate) struct Worker {
    pub rx: mpsc::Receiver<Record>,
    /// `Some(deadline)` once shutdown was asked for.
    pub shutdown: watch::Receiver<Option<Instant>>,
    pub builder: Arc<RecordBuilder>,
    pub sink: Sink,
    pub batch: BatchConfig,
    pub retry: RetryConfig,
    pub counters: Arc<Counters>,
}

impl Worker {
    pub(crate) fn new(
        rx: mpsc::Receiver<Record>,
        shutdown: watch::Receiver<Option<Instant>>,
        builder: Arc<RecordBuilder>,
        sink: Sink,
        batch: BatchConfig,
        retry: RetryConfig,
        counters: Arc<Counters>,
    ) -> Worker {
        Worker {
            rx,
            shutdown,
            builder,
            sink,
            batch,
            retry,
            counters,
        }
    }

    pub(crate) async fn run(mut self) {
        while let Some(batch) = self.next_batch().await {
            self.ship(batch).await;
        }
        self.drain().await;
    }

    /// Waits for a first item, then gathers more until a batch limit or the delay is hit.
    /// `None` when shutdown was asked for or every sender is gone.
    async fn next_batch(&mut self) -> Option<Vec<Record>> {
        let mut shutdown = self.shutdown.clone();
        let first = tokio::select! {
            biased;
            () = shutdown_requested(&mut shutdown) => return None,
            item = self.rx.recv() => item?,
        };
        let flush_at = Instant::now() + self.batch.max_delay;
        let mut bytes = self.builder.estimate(&first);
        let mut batch = vec![first];
        while batch.len() < self.batch.max_records && bytes < self.batch.max_bytes {
            tokio::select! {
                biased;
                () = shutdown_requested(&mut shutdown) => break,
                item = self.rx.recv() => match item {
                    Some(item) => {
                        bytes += self.builder.estimate(&item);
                        batch.push(item);
                    }
                    None => break,
                },
                () = tokio::time::sleep_until(flush_at) => break,
            }
        }
        Some(batch)
    }

    /// After shutdown: refuse new items and ship what is queued (the caller bounds the time).
    async fn drain(&mut self) {
        self.rx.close();
        loop {
            let mut batch = Vec::new();
            let mut bytes = 0;
            while batch.len() < self.batch.max_records && bytes < self.batch.max_bytes {
                let Ok(item) = self.rx.try_recv() else {
                    break;
                };
                bytes += self.builder.estimate(&item);
                batch.push(item);
            }
            if batch.is_empty() {
                return;
            }
            self.ship(batch).await;
        }
    }

    async fn ship(&self, batch: Vec<Record>) {
        match &self.sink {
            Sink::Stdout(writer) => self.ship_stdout(writer, batch).await,
            Sink::Otlp(client) => self.ship_otlp(client, batch).await,
        }
    }

    async fn ship_stdout(&self, writer: &SharedWriter, batch: Vec<Record>) {
        let count = batch.len() as u64;
        let builder = Arc::clone(&self.builder);
        let writer = Arc::clone(writer);
        // Building (decode, redact) and writing are CPU and blocking I/O: keep them off the reactor.
        let written = tokio::task::spawn_blocking(move || {
            let records = builder.build(&batch);
            write_lines(&writer, &builder.resource, &records)
        })
        .await;
        match written {
            Ok(Ok(())) => {
                self.counters.exported.fetch_add(count, Relaxed);
            }
            Ok(Err(error)) => self.failed(count, &error.to_string()),
            Err(error) => self.failed(count, &error.to_string()),
        }
    }

    async fn ship_otlp(&self, client: &OtlpClient, batch: Vec<Record>) {
        let count = batch.len() as u64;
        let builder = Arc::clone(&self.builder);
        let gzip = client.gzip();
        let encoded = tokio::task::spawn_blocking(move || {
            let records = builder.build(&batch);
            encode_body(&builder.resource, &records, gzip)
        })
        .await;
        let body = match encoded {
            Ok(Ok(body)) => body,
            Ok(Err(error)) => return self.failed(count, &error.to_string()),
            Err(error) => return self.failed(count, &error.to_string()),
        };
        let shutdown = self.shutdown.clone();
        let delivery = deliver(client, body, &self.retry, &self.counters, shutdown).await;
        self.account(count, delivery);
    }

    fn account(&self, count: u64, delivery: Delivery) {
        match delivery {
            Delivery::Accepted { rejected } => {
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
            Delivery::Rejected { reason } => {
                self.failed(count, &format!("rejected, not retried: {reason}"));
            }
            Delivery::GaveUp { reason } => {
                self.failed(count, &format!("gave up after retries: {reason}"));
            }
        }
    }

    fn failed(&self, count: u64, reason: &str) {
        tracing::warn!(records = count, %reason, "export failed; records dropped");
        self.counters
            .dropped_export_failed
            .fetch_add(count, Relaxed);
    }
}

/// Sends one encoded batch, retrying retryable failures with backoff; never past the shutdown deadline.
async fn deliver(
    client: &OtlpClient,
    body: Bytes,
    retry: &RetryConfig,
    counters: &Counters,
    mut shutdown: watch::Receiver<Option<Instant>>,
) -> Delivery {
    let mut backoff = Backoff::new(retry);
    let mut attempts = 1;
    loop {
        let (reason, retry_after) = match client.attempt(body.clone()).await {
            Attempt::Accepted { rejected } => return Delivery::Accepted { rejected },
            Attempt::Fatal { reason } => return Delivery::Rejected { reason },
            Attempt::Retryable {
                reason,
                retry_after,
            } => (reason, retry_after),
        };
        if attempts >= retry.max_attempts {
            return Delivery::GaveUp {
                reason: format!("{attempts} attempts, last: {reason}"),
            };
        }
        let wait = backoff.next_wait(retry_after);
        let deadline = *shutdown.borrow();
        if deadline.is_some_and(|deadline| Instant::now() + wait > deadline) {
            return Delivery::GaveUp {
                reason: format!("{reason}; no time left before the shutdown deadline"),
            };
        }
        counters.export_retries.fetch_add(1, Relaxed);
        tracing::debug!(attempt = attempts, ?wait, %reason, "OTLP export failed; retrying");
        if deadline.is_some() {
            tokio::time::sleep(wait).await;
        } else {
            // A shutdown cuts the wait short: one more attempt right away, then the deadline rules.
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = shutdown_requested(&mut shutdown) => {}
            }
        }
        attempts += 1;
    }
}

/// Resolves once shutdown has been asked for; never if the handle went away without asking
/// (then the closed queue ends the worker instead).
pub(crate) async fn shutdown_requested(shutdown: &mut watch::Receiver<Option<Instant>>) {
    if shutdown.wait_for(Option::is_some).await.is_err() {
        std::future::pending::<()>().await;
    }
}
