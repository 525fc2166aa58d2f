//! CONNECT to an LLM host: llmtap answers it, reads the whole ClientHello, refuses anything
//! that is not TLS for the CONNECT host, terminates TLS with its own leaf, and serves each
//! request inside itself — to the decided target over verified TLS, or refused.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_rustls::LazyConfigAcceptor;

use super::activity::{Activity, Ended, drive};
use super::conn_audit::{ConnAudit, Counted};
use super::errors::FailureKind;
use super::forward::{self, Call};
use super::handler::authority_target;
use super::{ProxyBody, Shared, respond};
use crate::policy::Grant;

/// Answers `200` and serves the tunnel in the background. No upstream connection exists yet:
/// one is made only for a request that passed the checks below.
pub fn open(
    shared: Arc<Shared>,
    grant: Grant,
    provider: Option<Arc<str>>,
    client_addr: SocketAddr,
    mut req: Request<Incoming>,
) -> Response<ProxyBody> {
    let audit = ConnAudit::new(
        &grant,
        client_addr,
        Arc::clone(&shared.sink),
        shared.config.audit,
    );
    let on_upgrade = hyper::upgrade::on(&mut req);
    let call = Call {
        shared,
        grant,
        provider,
        client_addr,
        audit,
    };
    tokio::spawn(serve_tunnel(Arc::new(call), on_upgrade));
    Response::new(respond::empty())
}

async fn serve_tunnel(call: Arc<Call>, on_upgrade: OnUpgrade) {
    let upgraded = match on_upgrade.await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(error = %e, "CONNECT upgrade failed");
            return;
        }
    };
    // The whole ClientHello and the handshake must be done within --handshake-timeout.
    let limit = call.shared.config.limits.handshake_timeout;
    let deadline = tokio::time::Instant::now() + limit;
    let io = Counted::new(TokioIo::new(upgraded), Arc::clone(&call.audit));
    let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
    let start = match tokio::time::timeout_at(deadline, acceptor).await {
        Ok(Ok(start)) => start,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            call.audit
                .failed(FailureKind::ClientClosed, "the client closed before TLS");
            return;
        }
        Ok(Err(e)) => {
            return refuse(
                &call,
                FailureKind::NotTls,
                &format!("not TLS on an intercepted CONNECT: {e}"),
            );
        }
        Err(_) => {
            let why = format!(
                "no complete TLS ClientHello within {}s (--handshake-timeout)",
                limit.as_secs()
            );
            return refuse(&call, FailureKind::ClientTlsTimeout, &why);
        }
    };
    let target = &call.grant.target;
    if let Some(sni) = start.client_hello().server_name() {
        let sni = crate::route::normalize_host(sni);
        if sni != target.host {
            let why = format!(
                "TLS SNI {sni} does not match the CONNECT host {}",
                target.host
            );
            return refuse(&call, FailureKind::SniMismatch, &why);
        }
    }
    let config = match call.shared.ca.server_config_for(&target.host) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(host = %target.host, error = %e, "cannot issue a leaf certificate");
            call.audit.failed(
                FailureKind::LeafCertificate,
                "no leaf certificate could be issued",
            );
            return;
        }
    };
    let tls = match tokio::time::timeout_at(deadline, start.into_stream(config)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            return call.audit.failed(
                FailureKind::ClientTlsHandshake,
                &format!("TLS handshake with the client failed: {e}"),
            );
        }
        Err(_) => {
            return call.audit.failed(
                FailureKind::ClientTlsHandshake,
                "TLS handshake with the client timed out",
            );
        }
    };
    serve_requests(call, tls).await;
}

fn refuse(call: &Call, kind: FailureKind, why: &str) {
    tracing::info!(client = %call.client_addr, target = %call.grant.target.authority(), kind = kind.as_str(), why, "intercepted CONNECT refused");
    // The front counted this connection as allowed; it ends as a denial.
    let decisions = &call.shared.decisions;
    let counted = match call.grant.verdict {
        crate::policy::Verdict::Allow => &decisions.allow,
        crate::policy::Verdict::WouldDeny => &decisions.would_deny,
    };
    let _ = counted.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    decisions.deny.fetch_add(1, Ordering::Relaxed);
    call.audit.refused(kind, why);
}

async fn serve_requests<S>(call: Arc<Call>, tls: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let builder = call.shared.server_builder();
    let activity = Activity::new();
    let service = {
        let call = Arc::clone(&call);
        let activity = Arc::clone(&activity);
        service_fn(move |req| {
            let guard = activity.begin();
            let call = Arc::clone(&call);
            async move {
                let res = handle_inner(call, req).await;
                Ok::<_, Infallible>(super::server::guard_response(res, guard))
            }
        })
    };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
    let conn = std::pin::pin!(conn);
    let (ended, error) = drive(conn, |c| c.graceful_shutdown(), &call.shared, &activity).await;
    if ended == Ended::Idle {
        call.shared
            .connections
            .closed_idle
            .fetch_add(1, Ordering::Relaxed);
    }
    if let Some(e) = error {
        tracing::debug!(error = %e, "intercepted connection ended with an error");
    }
}

/// One request inside the tunnel: it must address the CONNECT target over `https`.
async fn handle_inner(call: Arc<Call>, req: Request<Incoming>) -> Response<ProxyBody> {
    if req.method() == Method::CONNECT {
        let why = format!(
            "CONNECT inside the intercepted tunnel to {}",
            call.grant.target.authority()
        );
        call.audit.failed(FailureKind::ConnectInTunnel, &why);
        return respond::error(FailureKind::ConnectInTunnel, &why);
    }
    if let Err(why) = check_addressed(&call, &req) {
        call.audit.failed(FailureKind::Misdirected, &why);
        return respond::error(FailureKind::Misdirected, &why);
    }
    forward::captured(call, req, "https").await
}

/// HTTP/2 names the target in `:authority`, HTTP/1.1 in `Host`: either must be the CONNECT
/// target, or a client could reach another host through an LLM host's tunnel.
fn check_addressed(call: &Call, req: &Request<Incoming>) -> Result<(), String> {
    let target = &call.grant.target;
    if let Some(scheme) = req.uri().scheme_str()
        && scheme != "https"
    {
        return Err(format!(
            "{scheme}:// request inside the TLS tunnel to {}",
            target.authority()
        ));
    }
    let host_header = req
        .headers()
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<http::uri::Authority>().ok());
    let authority = req.uri().authority().cloned().or(host_header);
    let Some(authority) = authority else {
        return Err(format!(
            "request without a Host inside the tunnel to {}",
            target.authority()
        ));
    };
    // No port means the default; the request goes to the decided target whatever it says,
    // so only a port that is named must agree.
    let asked = authority_target(&authority, Some(target.port))?;
    if asked != *target {
        return Err(format!(
            "request for {} inside the tunnel to {}",
            asked.authority(),
            target.authority()
        ));
    }
    Ok(())
}
