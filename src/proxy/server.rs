//! The accept loop and the serving of one client connection (HTTP/1.1 and HTTP/2, upgrades).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use super::Shared;

/// Pause after an accept error that a retry cannot fix at once (no file descriptors, no
/// memory): without it the loop spins at full CPU and floods the log.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one accept-error log line per this interval.
const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// Accepts until shutdown; each connection is served on its own task.
pub async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    let mut last_log: Option<Instant> = None;
    let mut suppressed: u64 = 0;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, client_addr)) => {
                    let shared = Arc::clone(&shared);
                    tokio::spawn(serve_client(tcp, client_addr, shared));
                }
                Err(e) => {
                    if last_log.is_none_or(|t| t.elapsed() >= ACCEPT_LOG_INTERVAL) {
                        tracing::warn!(error = %e, suppressed, "cannot accept a connection");
                        last_log = Some(Instant::now());
                        suppressed = 0;
                    } else {
                        suppressed += 1;
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

fn is_resource_exhaustion(e: &std::io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM on Linux.
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

async fn serve_client(tcp: TcpStream, client_addr: SocketAddr, shared: Arc<Shared>) {
    let builder = shared.server_builder();
    let mut shutdown = shared.shutdown.clone();
    let service = {
        let shared = Arc::clone(&shared);
        service_fn(move |req| super::handler::handle(Arc::clone(&shared), client_addr, req))
    };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = super::stopped(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(client = %client_addr, error = %e, "client connection ended with an error");
    }
}
