//! Turning exchanges and connection decisions into OTLP log records and shipping them through
//! a bounded queue.
//!
//! The proxy calls [`ExportHandle::submit`] for each LLM call and
//! [`ExportHandle::submit_egress`] for each connection decision; both only `try_send` into the
//! same bounded queue: when it is full the record is dropped and counted, and a warning is
//! logged once per burst of drops. One worker task drains the queue in batches (count, size,
//! delay), builds the records on the blocking pool (`record` for calls, `egress` for
//! decisions), and ships them over OTLP/HTTP (see `otlp`) or to stdout as JSON lines when no
//! endpoint is configured (see `stdout`). With `--spool-dir`, what the endpoint does not take
//! waits on disk and is sent, in order, when it does again (see `spool` and `spooled`).

pub mod attributes;
pub mod config;
pub mod egress;
pub mod otlp;
pub mod proto;
pub mod record;
pub mod spool;
mod spooled;
pub mod stdout;
mod worker;

pub use config::{
    BatchConfig, Destination, ExportConfig, ExportConfigError, ExportFlags, RetryConfig,
    process_env,
};
pub use egress::build_egress_record;
pub use record::{AttrValue, LogRecordData, RecordContext, Severity, build_record};
pub use spool::{SpoolError, SpoolSettings};

use serde::Serialize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::audit::EgressRecord;
use crate::capture::{Exchange, ExchangeSink};
use crate::redact::Redactor;
use otlp::{OtlpClient, OtlpSetupError};
use spool::{Origin, Recovery, Spool};
use spooled::SpoolWorker;
use stdout::SharedWriter;
use worker::{RecordBuilder, Sink, Worker};

/// One item of the export queue (boxed: the queue moves pointers, not ~800-byte structs).
#[derive(Debug)]
pub(crate) enum Record {
    /// One LLM call (`gen_ai.client.inference.operation.details`).
    Call(Box<Exchange>),
    /// One connection decision (`llmtap.egress`).
    Egress(Box<EgressRecord>),
}

/// Why the export pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the export pipeline must be started inside a Tokio runtime")]
    NoRuntime,
    #[error(transparent)]
    Setup(#[from] OtlpSetupError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// Export counters as shown on `/healthz` and in the proxy's log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ExportStats {
    /// Records handed to `submit` or `submit_egress`.
    pub submitted: u64,
    /// Records the destination accepted.
    pub exported: u64,
    /// Records dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Records dropped because the destination refused them or retries ran out.
    pub dropped_export_failed: u64,
    /// Records submitted after shutdown began, or still queued when its deadline passed.
    pub dropped_shutdown: u64,
    /// Export attempts that were retries.
    pub export_retries: u64,
    pub queue_capacity: usize,
    pub queue_len: usize,
    /// Records written to the spool (`--spool-dir`) because the endpoint did not take them.
    pub spooled: u64,
    /// Records in the spool not yet delivered, those left by an earlier run included.
    pub spool_pending: u64,
    /// Bytes the spool's files take (at most `--spool-max-bytes`).
    pub spool_bytes: u64,
    /// Records found in the spool at start, left by an earlier run.
    pub spool_recovered: u64,
    /// Oldest spooled records dropped to stay within `--spool-max-bytes` (or that the disk refused).
    pub dropped_spool_full: u64,
    /// Spooled records lost to a spool file found damaged while sending it.
    pub dropped_spool_damaged: u64,
    /// Spool files found cut short or corrupt at start (each read up to the damage).
    pub spool_damaged: u64,
}

/// Shared between the handle and the worker.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub submitted: AtomicU64,
    pub exported: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub dropped_export_failed: AtomicU64,
    pub dropped_shutdown: AtomicU64,
    pub export_retries: AtomicU64,
    pub spooled: AtomicU64,
    pub spool_pending: AtomicU64,
    pub spool_bytes: AtomicU64,
    pub spool_recovered: AtomicU64,
    pub dropped_spool_full: AtomicU64,
    pub dropped_spool_damaged: AtomicU64,
    pub spool_damaged: AtomicU64,
    /// True while the queue is refusing records: the warning is logged once per burst.
    dropping: AtomicBool,
    burst_drops: AtomicU64,
}

/// The submitting side of the export pipeline; cheap to clone.
#[derive(Clone)]
pub struct ExportHandle {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::Sender<Record>,
    counters: Arc<Counters>,
    control: Mutex<Option<Control>>,
}

struct Control {
    shutdown: watch::Sender<Option<Instant>>,
    worker: JoinHandle<()>,
}

impl ExportHandle {
    /// Starts the worker for `config.destination` (stdout = the process's stdout).
    pub fn start(
        config: ExportConfig,
        redactor: Arc<Redactor>,
    ) -> Result<ExportHandle, ExportError> {
        Self::start_with_writer(config, redactor, stdout::stdout_writer())
    }

    /// Like [`start`](Self::start), with JSON lines going to `writer` when there is no endpoint.
    pub fn start_with_writer(
        config: ExportConfig,
        redactor: Arc<Redactor>,
        writer: SharedWriter,
    ) -> Result<ExportHandle, ExportError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ExportError::NoRuntime)?;
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let (shutdown_tx, shutdown_rx) = watch::channel(None);
        let counters = Arc::new(Counters::default());
        let builder = Arc::new(RecordBuilder {
            redactor,
            max_record_bytes: config.max_record_bytes,
            body_decode_limit: config.body_decode_limit,
            resource: config.resource.clone(),
        });
        let channels = Channels {
            rx,
            shutdown: shutdown_rx,
            counters: Arc::clone(&counters),
        };
        let worker = spawn_worker(&runtime, config, builder, channels, writer)?;
        let control = Control {
            shutdown: shutdown_tx,
            worker,
        };
        Ok(ExportHandle {
            inner: Arc::new(Inner {
                tx,
                counters,
                control: Mutex::new(Some(control)),
            }),
        })
    }

    /// Queues an exchange for export; never blocks, never awaits. A full queue drops it (counted).
    pub fn submit(&self, exchange: Exchange) {
        self.enqueue(Record::Call(Box::new(exchange)));
    }

    /// Queues a connection decision (`llmtap.egress`), exactly like [`submit`](Self::submit):
    /// same queue, same counters, same drop warning.
    pub fn submit_egress(&self, record: EgressRecord) {
        self.enqueue(Record::Egress(Box::new(record)));
    }

    fn enqueue(&self, record: Record) {
        let counters = &self.inner.counters;
        counters.submitted.fetch_add(1, Relaxed);
        match self.inner.tx.try_send(record) {
            Ok(()) => {
                if counters.dropping.swap(false, Relaxed) {
                    let dropped = counters.burst_drops.swap(0, Relaxed);
                    tracing::info!(dropped, "export queue accepts records again");
                }
            }
            Err(TrySendError::Full(_)) => {
                counters.dropped_queue_full.fetch_add(1, Relaxed);
                counters.burst_drops.fetch_add(1, Relaxed);
                if !counters.dropping.swap(true, Relaxed) {
                    let capacity = self.inner.tx.max_capacity();
                    tracing::warn!(
                        capacity,
                        "export queue full: dropping records until it drains"
                    );
                }
            }
            Err(TrySendError::Closed(_)) => {
                counters.dropped_shutdown.fetch_add(1, Relaxed);
            }
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ExportStats {
        let c = &self.inner.counters;
        let tx = &self.inner.tx;
        ExportStats {
            submitted: c.submitted.load(Relaxed),
            exported: c.exported.load(Relaxed),
            dropped_queue_full: c.dropped_queue_full.load(Relaxed),
            dropped_export_failed: c.dropped_export_failed.load(Relaxed),
            dropped_shutdown: c.dropped_shutdown.load(Relaxed),
            export_retries: c.export_retries.load(Relaxed),
            queue_capacity: tx.max_capacity(),
            queue_len: tx.max_capacity() - tx.capacity(),
            spooled: c.spooled.load(Relaxed),
            spool_pending: c.spool_pending.load(Relaxed),
            spool_bytes: c.spool_bytes.load(Relaxed),
            spool_recovered: c.spool_recovered.load(Relaxed),
            dropped_spool_full: c.dropped_spool_full.load(Relaxed),
            dropped_spool_damaged: c.dropped_spool_damaged.load(Relaxed),
            spool_damaged: c.spool_damaged.load(Relaxed),
        }
    }

    /// Stops accepting records and flushes the queue, giving up after `deadline`.
    /// With a spool, what the endpoint does not take by then is spooled for the next start;
    /// what is still neither exported nor spooled is counted in `dropped_shutdown`. Later
    /// calls only report.
    pub async fn shutdown(self, deadline: Duration) -> ExportStats {
        let control = self
            .inner
            .control
            .lock()
            .ok()
            .and_then(|mut control| control.take());
        let Some(Control {
            shutdown,
            mut worker,
        }) = control
        else {
            return self.stats();
        };
        let until = Instant::now() + deadline;
        shutdown.send_replace(Some(until));
        if tokio::time::timeout_at(until, &mut worker).await.is_err() {
            worker.abort();
            // Wait for the abort to land so no counter moves after the tally below.
            let _ = worker.await;
            tracing::warn!(
                ?deadline,
                "export queue not flushed before the shutdown deadline"
            );
        }
        let stats = self.stats();
        // Every record submitted (or found in the spool at start) was exported, dropped and
        // counted, or waits in the spool; what is left was lost with the aborted worker.
        let settled = stats.exported
            + stats.dropped_queue_full
            + stats.dropped_export_failed
            + stats.dropped_shutdown
            + stats.dropped_spool_full
            + stats.dropped_spool_damaged
            + stats.spool_pending;
        let lost = (stats.submitted + stats.spool_recovered).saturating_sub(settled);
        self.inner
            .counters
            .dropped_shutdown
            .fetch_add(lost, Relaxed);
        self.stats()
    }
}

impl ExchangeSink for ExportHandle {
    fn submit(&self, exchange: Exchange) {
        ExportHandle::submit(self, exchange);
    }

    fn submit_egress(&self, record: EgressRecord) {
        ExportHandle::submit_egress(self, record);
    }

    fn stats(&self) -> serde_json::Value {
        serde_json::to_value(ExportHandle::stats(self)).unwrap_or(serde_json::Value::Null)
    }
}

/// The worker's ends of the queue, the shutdown signal and the counters.
struct Channels {
    rx: mpsc::Receiver<Record>,
    shutdown: watch::Receiver<Option<Instant>>,
    counters: Arc<Counters>,
}

/// Starts the worker for the destination: OTLP with or without a spool, or stdout.
fn spawn_worker(
    runtime: &tokio::runtime::Handle,
    config: ExportConfig,
    builder: Arc<RecordBuilder>,
    channels: Channels,
    writer: SharedWriter,
) -> Result<JoinHandle<()>, ExportError> {
    let Channels {
        rx,
        shutdown,
        counters,
    } = channels;
    let sink = match &config.destination {
        Destination::Otlp {
            endpoint,
            headers,
            gzip,
        } => {
            let timeout = config.retry.request_timeout;
            let tls = config.tls.clone();
            OtlpClient::new(endpoint, headers, *gzip, timeout, tls)?
        }
        Destination::Stdout => {
            if let Some(settings) = &config.spool {
                tracing::warn!(
                    spool = %settings.dir.display(),
                    "--spool-dir is ignored: records go to stdout (no OTLP endpoint)"
                );
            }
            let (batch, retry) = (config.batch, config.retry);
            let sink = Sink::Stdout(writer);
            let worker = Worker::new(rx, shutdown, builder, sink, batch, retry, counters);
            return Ok(runtime.spawn(worker.run()));
        }
    };
    let Some(settings) = &config.spool else {
        let (batch, retry) = (config.batch, config.retry);
        let sink = Sink::Otlp(Box::new(sink));
        let worker = Worker::new(rx, shutdown, builder, sink, batch, retry, counters);
        return Ok(runtime.spawn(worker.run()));
    };
    let spool = open_spool(settings, &config.resource, &counters)?;
    let worker = SpoolWorker {
        rx,
        shutdown,
        builder,
        client: sink,
        state: spooled::State::new(&config.retry, spool.pending() > 0),
        batch: config.batch,
        retry: config.retry,
        counters,
        origin: origin(&config.resource),
        dir: settings.dir.display().to_string(),
        spool: Arc::new(Mutex::new(spool)),
    };
    Ok(runtime.spawn(worker.run()))
}

/// This process's resource and scope, encoded, as a spool segment keeps them.
fn origin(resource: &[(String, String)]) -> Origin {
    Origin {
        resource: otlp::encode_resource(resource).into(),
        scope: otlp::encode_scope().into(),
    }
}

/// Opens the spool and reports what an earlier run left in it.
fn open_spool(
    settings: &SpoolSettings,
    resource: &[(String, String)],
    counters: &Counters,
) -> Result<Spool, SpoolError> {
    let (spool, Recovery { records, damaged }) = Spool::open(settings, origin(resource))?;
    counters.spool_recovered.store(records, Relaxed);
    counters.spool_pending.store(spool.pending(), Relaxed);
    counters.spool_bytes.store(spool.bytes(), Relaxed);
    counters.spool_damaged.store(damaged, Relaxed);
    if records > 0 || damaged > 0 {
        tracing::info!(
            dir = %settings.dir.display(),
            records,
            bytes = spool.bytes(),
            damaged_files = damaged,
            "spool holds records from an earlier run; they are sent first"
        );
    }
    Ok(spool)
}
