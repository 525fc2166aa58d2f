//! Per-connection activity: requests in progress, the idle timeout, and driving a hyper
//! connection until it ends, goes idle, or shutdown asks it to stop.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::Shared;

/// Requests in progress on one client connection, and since when it has had none.
#[derive(Debug)]
pub struct Activity {
    in_progress: AtomicUsize,
    idle_since: Mutex<Instant>,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            in_progress: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        })
    }

    /// A request started; it is in progress until the guard (kept by its response body) drops.
    pub fn begin(self: &Arc<Self>) -> ActivityGuard {
        self.in_progress.fetch_add(1, Ordering::AcqRel);
        ActivityGuard(Arc::clone(self))
    }

    /// Resolves once the connection has had no request in progress for `timeout`.
    pub async fn idle_for(&self, timeout: Duration) {
        loop {
            let deadline = if self.in_progress.load(Ordering::Acquire) == 0 {
                let since = self
                    .idle_since
                    .lock()
                    .map(|s| *s)
                    .unwrap_or_else(|p| *p.into_inner());
                since + timeout
            } else {
                // Busy: look again later; a long request is never idle.
                Instant::now() + timeout
            };
            if Instant::now() >= deadline && self.in_progress.load(Ordering::Acquire) == 0 {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// Ends a request's time in progress when dropped.
#[derive(Debug)]
pub struct ActivityGuard(Arc<Activity>);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        let now = Instant::now();
        match self.0.idle_since.lock() {
            Ok(mut since) => *since = now,
            Err(p) => *p.into_inner() = now,
        }
        self.0.in_progress.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request in progress until it ends or is dropped.
    pub struct Guarded<B> {
        #[pin]
        inner: B,
        guard: Option<ActivityGuard>,
    }
}

impl<B> Guarded<B> {
    pub fn new(inner: B, guard: ActivityGuard) -> Guarded<B> {
        Guarded {
            inner,
            guard: Some(guard),
        }
    }
}

impl<B: Body<Data = Bytes>> Body for Guarded<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.guard.take();
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

/// Why `drive` stopped a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The connection ended by itself (or after a graceful shutdown).
    Done,
    /// No request for `--idle-timeout`.
    Idle,
    /// The shutdown grace ran out: dropped where it stood.
    Cut,
}

/// Drives `conn` to its end; on shutdown or idleness asks it to finish (`graceful`), and drops
/// it when the shutdown grace runs out.
pub async fn drive<F, E>(
    mut conn: Pin<&mut F>,
    graceful: impl Fn(Pin<&mut F>),
    shared: &Shared,
    activity: &Activity,
) -> (Ended, Option<E>)
where
    F: Future<Output = Result<(), E>>,
{
    let mut shutdown = shared.shutdown.clone();
    let mut cut = shared.cut.clone();
    let idle_timeout = shared.config.limits.idle_timeout;
    let ended = tokio::select! {
        result = conn.as_mut() => return (Ended::Done, result.err()),
        _ = super::stopped(&mut cut) => return (Ended::Cut, None),
        _ = super::stopped(&mut shutdown) => Ended::Done,
        _ = activity.idle_for(idle_timeout) => Ended::Idle,
    };
    graceful(conn.as_mut());
    tokio::select! {
        result = conn.as_mut() => (ended, result.err()),
        _ = super::stopped(&mut cut) => (Ended::Cut, None),
        // A peer that ignores the close: the idle timeout again, then drop.
        _ = tokio::time::sleep(idle_timeout) => (ended, None),
    }
}
