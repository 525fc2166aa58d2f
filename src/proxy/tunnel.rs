//! CONNECT to a host that is not intercepted: a byte-for-byte tunnel to the decided address,
//! never decrypted, audited at close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::conn_audit::{ConnAudit, Counted};
use super::errors::{Failure, FailureKind};
use super::upstream::connect_addr;
use super::{ProxyBody, Shared, respond};
use crate::policy::Grant;

/// Tunnel counters for `/healthz`.
#[derive(Debug, Default)]
pub struct TunnelStats {
    pub open: AtomicU64,
    pub total: AtomicU64,
}

/// Connects to the decided address first: the client gets `200` only for a tunnel that exists.
pub async fn open(
    shared: Arc<Shared>,
    grant: Grant,
    client_addr: SocketAddr,
    mut req: Request<Incoming>,
    http1: bool,
) -> Response<ProxyBody> {
    let audit = ConnAudit::new(
        &grant,
        client_addr,
        Arc::clone(&shared.sink),
        shared.config.audit,
    );
    match connect_addr(&grant.target, grant.addr).await {
        Ok(upstream) => {
            audit.connected(grant.addr);
            let on_upgrade = hyper::upgrade::on(&mut req);
            spawn_splice(on_upgrade, upstream, audit, shared);
            Response::new(respond::empty())
        }
        Err(e) => {
            tracing::info!(target = %grant.target.authority(), error = %e, "CONNECT failed");
            let failure = Failure::from(&e);
            audit.failed(failure.kind, &failure.message);
            respond::error_closing(failure.kind, &failure.message, http1)
        }
    }
}

/// Splices the client's upgraded connection and the upstream socket until either side closes,
/// no byte moves for `--body-timeout`, or the shutdown grace runs out.
fn spawn_splice(
    on_upgrade: OnUpgrade,
    mut upstream: TcpStream,
    audit: Arc<ConnAudit>,
    shared: Arc<Shared>,
) {
    let stats = Arc::clone(&shared.tunnels);
    stats.total.fetch_add(1, Ordering::Relaxed);
    stats.open.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let mut client = Counted::new(TokioIo::new(upgraded), Arc::clone(&audit));
                let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
                splice_until_done(copy, &audit, &shared).await;
            }
            Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
        }
        stats.open.fetch_sub(1, Ordering::Relaxed);
        drop(audit);
    });
}

/// Splices two upgraded HTTP connections (WebSocket and other `Upgrade:` protocols).
pub fn spawn_upgrade(
    client: OnUpgrade,
    server: OnUpgrade,
    audit: Arc<ConnAudit>,
    shared: Arc<Shared>,
) {
    tokio::spawn(async move {
        match tokio::try_join!(client, server) {
            Ok((client, server)) => {
                let mut client = Counted::new(TokioIo::new(client), Arc::clone(&audit));
                let mut server = TokioIo::new(server);
                let copy = tokio::io::copy_bidirectional(&mut client, &mut server);
                splice_until_done(copy, &audit, &shared).await;
            }
            Err(e) => tracing::debug!(error = %e, "protocol upgrade failed"),
        }
        drop(audit);
    });
}

async fn splice_until_done<F>(copy: F, audit: &ConnAudit, shared: &Shared)
where
    F: std::future::Future<Output = std::io::Result<(u64, u64)>>,
{
    let mut cut = shared.cut.clone();
    let stall = shared.config.limits.body_timeout;
    tokio::select! {
        result = copy => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "tunnel ended with an error");
            }
        }
        _ = audit.stalled_for(stall) => {
            audit.failed(FailureKind::TunnelIdle, &format!("no byte either way for {}s (--body-timeout)", stall.as_secs()));
        }
        _ = super::stopped(&mut cut) => audit.failed(FailureKind::Shutdown, "cut at the end of the shutdown grace"),
    }
}
