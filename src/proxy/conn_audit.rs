//! The audit record of one allowed connection: bytes counted as they pass, submitted once at close.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::errors::FailureKind;
use crate::audit::{AuditLevel, EgressDecision, EgressRecord};
use crate::capture::ExchangeSink;
use crate::policy::{Denial, Grant, Verdict};

/// Held (behind `Arc`) by everything that serves an allowed connection; the last one dropped
/// submits the record, however the connection ended.
pub struct ConnAudit {
    record: Mutex<Option<EgressRecord>>,
    started: Instant,
    sent: AtomicU64,
    received: AtomicU64,
    sink: Arc<dyn ExchangeSink>,
    level: AuditLevel,
}

impl ConnAudit {
    pub fn new(
        grant: &Grant,
        client_addr: SocketAddr,
        sink: Arc<dyn ExchangeSink>,
        level: AuditLevel,
    ) -> Arc<ConnAudit> {
        let decision = match grant.verdict {
            Verdict::Allow => EgressDecision::Allow,
            Verdict::WouldDeny => EgressDecision::WouldDeny,
        };
        let record = EgressRecord {
            started_at: SystemTime::now(),
            decision,
            reason: grant.reason.clone(),
            route: grant.route.as_str(),
            error_type: None,
            client_name: Some(grant.client.name.to_string()),
            client_profile: Some(grant.client.profile.to_string()),
            client_addr,
            server_address: grant.target.host.clone(),
            server_port: grant.target.port,
            peer_addr: None,
            bytes_sent: 0,
            bytes_received: 0,
            duration: Default::default(),
        };
        Arc::new(ConnAudit {
            record: Mutex::new(Some(record)),
            started: Instant::now(),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            sink,
            level,
        })
    }

    /// The upstream address was connected to.
    pub fn connected(&self, addr: SocketAddr) {
        self.edit(|r| r.peer_addr = Some(addr));
    }

    /// The connection failed or was cut short: `error.type`, and the reason appended.
    pub fn failed(&self, kind: FailureKind, why: &str) {
        self.edit(|r| {
            r.error_type = Some(kind.as_str().to_string());
            r.reason = format!("{}; then {why}", r.reason);
        });
    }

    /// The intercepted connection broke a rule after the decision (not TLS, SNI mismatch):
    /// the record becomes a denial.
    pub fn refused(&self, kind: FailureKind, why: &str) {
        self.edit(|r| {
            r.decision = EgressDecision::Deny;
            r.error_type = Some(kind.as_str().to_string());
            r.reason = why.to_string();
        });
    }

    /// Bytes either way so far (to see whether a tunnel still moves).
    pub fn total_bytes(&self) -> u64 {
        self.sent
            .load(Ordering::Relaxed)
            .saturating_add(self.received.load(Ordering::Relaxed))
    }

    /// Resolves once no byte has moved either way for `timeout` (checked four times per period).
    pub async fn stalled_for(&self, timeout: std::time::Duration) {
        let step = (timeout / 4).max(std::time::Duration::from_millis(10));
        let mut last = self.total_bytes();
        let mut quiet_since = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(step).await;
            let now = self.total_bytes();
            if now != last {
                last = now;
                quiet_since = tokio::time::Instant::now();
            } else if quiet_since.elapsed() >= timeout {
                return;
            }
        }
    }

    pub fn add_sent(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_received(&self, n: u64) {
        self.received.fetch_add(n, Ordering::Relaxed);
    }

    fn edit(&self, f: impl FnOnce(&mut EgressRecord)) {
        if let Ok(mut guard) = self.record.lock()
            && let Some(record) = guard.as_mut()
        {
            f(record);
        }
    }
}

impl Drop for ConnAudit {
    fn drop(&mut self) {
        let Some(mut record) = self.record.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        if !self.level.keeps(record.decision) {
            return;
        }
        record.bytes_sent = self.sent.load(Ordering::Relaxed);
        record.bytes_received = self.received.load(Ordering::Relaxed);
        record.duration = self.started.elapsed();
        self.sink.submit_egress(record);
    }
}

/// The record of a refusal, submitted at once.
pub fn submit_denial(
    denial: &Denial,
    client_addr: SocketAddr,
    sink: &dyn ExchangeSink,
    level: AuditLevel,
) {
    if !level.keeps(EgressDecision::Deny) {
        return;
    }
    sink.submit_egress(EgressRecord {
        started_at: SystemTime::now(),
        decision: EgressDecision::Deny,
        reason: denial.reason.clone(),
        route: denial.route.as_str(),
        error_type: Some(FailureKind::from(denial.kind).as_str().to_string()),
        client_name: denial.client.as_ref().map(|c| c.name.to_string()),
        client_profile: denial.client.as_ref().map(|c| c.profile.to_string()),
        client_addr,
        server_address: denial.target.host.clone(),
        server_port: denial.target.port,
        peer_addr: None,
        bytes_sent: 0,
        bytes_received: 0,
        duration: Default::default(),
    });
}

pin_project_lite::pin_project! {
    /// An I/O stream that counts what the client sends (reads) and receives (writes).
    pub struct Counted<S> {
        #[pin]
        inner: S,
        audit: Arc<ConnAudit>,
    }
}

impl<S> Counted<S> {
    pub fn new(inner: S, audit: Arc<ConnAudit>) -> Counted<S> {
        Counted { inner, audit }
    }
}

impl<S: AsyncRead> AsyncRead for Counted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before);
        this.audit.add_sent(read as u64);
        polled
    }
}

impl<S: AsyncWrite> AsyncWrite for Counted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = &polled {
            this.audit.add_received(*n as u64);
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &polled {
            this.audit.add_received(*n as u64);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Which way a counted body flows.
#[derive(Debug, Clone, Copy)]
pub enum Direction {
    /// Client to upstream: `bytes_sent`.
    Sent,
    /// Upstream to client: `bytes_received`.
    Received,
}

pin_project_lite::pin_project! {
    /// A body that counts its data frames into the audit record it keeps alive.
    pub struct CountedBody<B> {
        #[pin]
        inner: B,
        audit: Arc<ConnAudit>,
        direction: Direction,
    }
}

impl<B> CountedBody<B> {
    pub fn new(inner: B, audit: Arc<ConnAudit>, direction: Direction) -> CountedBody<B> {
        CountedBody {
            inner,
            audit,
            direction,
        }
    }
}

impl<B: http_body::Body<Data = bytes::Bytes>> http_body::Body for CountedBody<B> {
    type Data = bytes::Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            match this.direction {
                Direction::Sent => this.audit.add_sent(data.len() as u64),
                Direction::Received => this.audit.add_received(data.len() as u64),
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
