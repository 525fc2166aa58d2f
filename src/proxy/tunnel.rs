//! CONNECT to a host that is not intercepted: a byte-for-byte tunnel llmtap never decrypts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Tunnel counters for `/healthz`.
#[derive(Debug, Default)]
pub struct TunnelStats {
    pub open: AtomicU64,
    pub total: AtomicU64,
}

/// Splices the client's upgraded connection and the upstream socket until either side closes.
pub fn spawn(
    on_upgrade: OnUpgrade,
    mut upstream: TcpStream,
    target: String,
    stats: Arc<TunnelStats>,
) {
    stats.total.fetch_add(1, Ordering::Relaxed);
    stats.open.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    Ok((up, down)) => {
                        tracing::debug!(%target, bytes_up = up, bytes_down = down, "tunnel closed")
                    }
                    Err(e) => tracing::debug!(%target, error = %e, "tunnel ended with error"),
                }
            }
            Err(e) => tracing::debug!(%target, error = %e, "CONNECT upgrade failed"),
        }
        stats.open.fetch_sub(1, Ordering::Relaxed);
    });
}

/// Splices two upgraded HTTP connections (WebSocket and other `Upgrade:` protocols).
pub fn spawn_upgrade(client: OnUpgrade, server: OnUpgrade, target: String) {
    tokio::spawn(async move {
        match tokio::try_join!(client, server) {
            Ok((client, server)) => {
                let mut client = TokioIo::new(client);
                let mut server = TokioIo::new(server);
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut server).await {
                    tracing::debug!(%target, error = %e, "upgraded connection ended with error");
                }
            }
            Err(e) => tracing::debug!(%target, error = %e, "protocol upgrade failed"),
        }
    });
}
