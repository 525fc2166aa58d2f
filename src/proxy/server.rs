//! The accept loop and the serving of one client connection (HTTP/1.1 and HTTP/2, upgrades).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use super::activity::{Activity, Ended, Guarded, drive};
use super::{ProxyBody, Shared};

/// Pause after an accept error that a retry cannot fix at once (no file descriptors, no
/// memory): without it the loop spins at full CPU and floods the log.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one accept-error log line per this interval.
const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// Which service a listener's connections get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    /// The forward proxy (`--listen`): CONNECT, absolute-form, and `/healthz`.
    Proxy,
    /// Base-URL routes (`--reverse-listen`).
    Reverse,
}

/// Accepts until shutdown; each connection is served on its own task.
pub async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, front: Front) {
    let mut shutdown = shared.shutdown.clone();
    let mut last_log: Option<Instant> = None;
    let mut suppressed: u64 = 0;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, client_addr)) => admit(&shared, tcp, client_addr, front),
                Err(e) => {
                    shared.connections.accept_errors.fetch_add(1, Ordering::Relaxed);
                    if last_log.is_none_or(|t| t.elapsed() >= ACCEPT_LOG_INTERVAL) {
                        tracing::warn!(error = %e, suppressed, "cannot accept a connection");
                        last_log = Some(Instant::now());
                        suppressed = 0;
                    } else {
                        suppressed = suppressed.saturating_add(1);
                    }
                    if is_resource_exhaustion(&e) {
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                }
            },
            _ = super::stopped(&mut shutdown) => break,
        }
    }
}

/// Serves the connection, or closes it at once when `--max-connections` are open.
fn admit(shared: &Arc<Shared>, tcp: TcpStream, client_addr: SocketAddr, front: Front) {
    let stats = &shared.connections;
    let open = stats.open.fetch_add(1, Ordering::AcqRel);
    if let Some(max) = shared.config.limits.max_connections
        && usize::try_from(open).is_ok_and(|open| open >= max)
    {
        stats.open.fetch_sub(1, Ordering::AcqRel);
        stats.refused_over_limit.fetch_add(1, Ordering::Relaxed);
        drop(tcp);
        return;
    }
    stats.total.fetch_add(1, Ordering::Relaxed);
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        serve_client(tcp, client_addr, &shared, front).await;
        shared.connections.open.fetch_sub(1, Ordering::AcqRel);
    });
}

fn is_resource_exhaustion(e: &std::io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM on Linux.
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

async fn serve_client(tcp: TcpStream, client_addr: SocketAddr, shared: &Arc<Shared>, front: Front) {
    let builder = shared.server_builder();
    let activity = Activity::new();
    let service = {
        let shared = Arc::clone(shared);
        let activity = Arc::clone(&activity);
        service_fn(move |req| {
            let guard = activity.begin();
            let shared = Arc::clone(&shared);
            async move {
                let res = match front {
                    Front::Proxy => super::handler::handle(shared, client_addr, req).await,
                    Front::Reverse => super::reverse::handle(shared, client_addr, req).await,
                };
                Ok::<_, std::convert::Infallible>(guard_response(res, guard))
            }
        })
    };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
    let conn = std::pin::pin!(conn);
    let (ended, error) = drive(conn, |c| c.graceful_shutdown(), shared, &activity).await;
    if ended == Ended::Idle {
        shared
            .connections
            .closed_idle
            .fetch_add(1, Ordering::Relaxed);
    }
    if let Some(e) = error {
        tracing::debug!(client = %client_addr, error = %e, "client connection ended with an error");
    }
}

/// The response keeps its request in progress (for the idle timeout) until its body ends.
pub fn guard_response(
    res: http::Response<ProxyBody>,
    guard: super::activity::ActivityGuard,
) -> http::Response<ProxyBody> {
    res.map(|body| Guarded::new(body, guard).boxed())
}
