//! The front of every request: identify the client, make the one decision, hand it to the
//! stage that serves it (local, refusal, tunnel, interception, plain HTTP).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::uri::Authority;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::conn_audit::submit_denial;
use super::errors::FailureKind;
use super::{ProxyBody, Shared, respond};
use crate::health::HEALTH_PATH;
use crate::metrics::METRICS_PATH;
use crate::policy::{
    self, Decision, Denial, DenyKind, Route, SystemResolver, Target, Verdict, Via,
};

/// hyper's service for client connections: one request in, one response out.
pub async fn handle(
    shared: Arc<Shared>,
    client_addr: SocketAddr,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let http1 = req.version() < http::Version::HTTP_2;
    let via = if req.method() == Method::CONNECT {
        Via::Connect
    } else {
        Via::Http
    };
    let target = match requested_target(&req, via) {
        Ok(Some(target)) => target,
        Ok(None) => return local(&shared, &req),
        Err(why) => {
            return respond::error_closing(FailureKind::BadRequest, &why, http1);
        }
    };
    let decision = decide(&shared, client_addr, &req, &target, via).await;
    dispatch(shared, client_addr, req, decision, http1).await
}

/// Identify, then `policy::decide`: the only place a connection's decision is made.
async fn decide(
    shared: &Shared,
    client_addr: SocketAddr,
    req: &Request<Incoming>,
    target: &Target,
    via: Via,
) -> Decision {
    let rules = shared.rules();
    let credentials = req
        .headers()
        .get(http::header::PROXY_AUTHORIZATION)
        .map(|v| v.as_bytes());
    let decision = match policy::identify(&rules.policy, credentials, client_addr.ip()) {
        Ok(client) => policy::decide(&rules, &client, target, via, &SystemResolver).await,
        Err(failure) => Decision::Deny(Denial {
            client: None,
            target: target.clone(),
            route: policy::route_for(rules.llm_hosts.matches(&target.host), via),
            kind: DenyKind::Auth,
            reason: failure.reason,
        }),
    };
    count_decision(shared, &decision);
    decision
}

/// Counts a decision for `/healthz` and `/metrics` by its verdict.
pub(super) fn count_decision(shared: &Shared, decision: &Decision) {
    let d = &shared.decisions;
    let (counter, client, name) = match decision {
        Decision::Local => return,
        Decision::Deny(denial) => (&d.deny, denial.client.as_ref(), "deny"),
        Decision::Tunnel(g) | Decision::Intercept { grant: g, .. } => match g.verdict {
            Verdict::Allow => (&d.allow, Some(&g.client), "allow"),
            Verdict::WouldDeny => (&d.would_deny, Some(&g.client), "would_deny"),
        },
    };
    counter.fetch_add(1, Ordering::Relaxed);
    shared
        .metrics
        .observe_decision(client.map(|c| &*c.name), name);
}

async fn dispatch(
    shared: Arc<Shared>,
    client_addr: SocketAddr,
    req: Request<Incoming>,
    decision: Decision,
    http1: bool,
) -> Response<ProxyBody> {
    match decision {
        Decision::Local => local(&shared, &req),
        Decision::Deny(denial) => {
            tracing::info!(client = %client_addr, reason = %denial.reason, kind = denial.kind.as_str(), "refused");
            submit_denial(&denial, client_addr, &*shared.sink, shared.config.audit);
            respond::denial(&denial, http1)
        }
        Decision::Tunnel(grant) if grant.route == Route::Tunnel => {
            super::tunnel::open(shared, grant, client_addr, req, http1).await
        }
        Decision::Tunnel(grant) => super::forward::plain(shared, grant, client_addr, req).await,
        Decision::Intercept { grant, provider } if grant.route == Route::Intercept => {
            super::intercept::open(shared, grant, provider, client_addr, req)
        }
        Decision::Intercept { grant, provider } => {
            super::forward::plain_captured(shared, grant, provider, client_addr, req).await
        }
    }
}

/// The target a request asks for: `None` for origin-form requests (to llmtap itself).
fn requested_target(req: &Request<Incoming>, via: Via) -> Result<Option<Target>, String> {
    let uri = req.uri();
    if via == Via::Connect {
        let authority = uri
            .authority()
            .ok_or_else(|| "CONNECT needs host:port".to_string())?;
        return authority_target(authority, None).map(Some);
    }
    let Some(authority) = uri.authority() else {
        return Ok(None);
    };
    match uri.scheme_str() {
        Some("http") | None => authority_target(authority, Some(80)).map(Some),
        Some(other) => Err(format!(
            "absolute-form {other}:// requests are not proxied; use CONNECT for TLS"
        )),
    }
}

/// `host:port` of an authority; `default_port` when it names none (CONNECT must name one).
/// The port is read from the text itself: `Authority::port` forgets one that is not a `u16`.
pub fn authority_target(
    authority: &Authority,
    default_port: Option<u16>,
) -> Result<Target, String> {
    let raw = authority.as_str();
    let raw = raw.rsplit('@').next().unwrap_or(raw);
    let host_end = match raw.rfind(']') {
        Some(close) if raw.starts_with('[') => close + 1,
        _ => raw.rfind(':').unwrap_or(raw.len()),
    };
    let written_port = raw.get(host_end..).and_then(|rest| rest.strip_prefix(':'));
    let port = match (written_port, default_port) {
        (Some(p), _) => crate::route::parse_port(p)
            .ok_or_else(|| format!("bad port in {authority}: must be 1-65535"))?,
        (None, Some(default)) => default,
        (None, None) => return Err(format!("CONNECT target {authority} names no port")),
    };
    let target = Target::new(authority.host(), port);
    if target.host.is_empty() {
        return Err(format!("no host in {authority}"));
    }
    Ok(target)
}

/// Origin-form requests are for llmtap itself.
fn local(shared: &Shared, req: &Request<Incoming>) -> Response<ProxyBody> {
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    match req.uri().path() {
        HEALTH_PATH if read => return respond::json(StatusCode::OK, &shared.health()),
        METRICS_PATH if read => return metrics_answer(shared),
        _ => {}
    }
    respond::text(
        StatusCode::NOT_FOUND,
        "llmtap is a forward proxy: send absolute-form requests or CONNECT; GET /healthz for status, GET /metrics for Prometheus",
    )
}

/// `GET /metrics`: the Prometheus text exposition, export counters read now.
fn metrics_answer(shared: &Shared) -> Response<ProxyBody> {
    let text = shared.metrics.render(&shared.sink.stats());
    let mut res = Response::new(respond::full(text));
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_targets_need_a_valid_port() {
        let parse = |s: &str, d| authority_target(&s.parse::<Authority>().unwrap(), d);
        assert_eq!(
            parse("API.x.com:443", None).unwrap(),
            Target::new("api.x.com", 443)
        );
        assert_eq!(parse("[::1]:8080", None).unwrap(), Target::new("::1", 8080));
        assert_eq!(parse("x.com", Some(80)).unwrap(), Target::new("x.com", 80));
        assert!(parse("x.com", None).is_err());
        assert!(parse("x.com:0", None).is_err());
        assert!(parse("x.com:99999", None).is_err());
        assert!(parse("x.com:99999", Some(80)).is_err());
        assert!(parse("x.com:65536", Some(80)).is_err());
        assert!(parse("x.com:+443", None).is_err());
        assert!(parse(".:443", None).is_err());
        assert!(parse("[::1]", Some(80)).is_ok());
        assert_eq!(
            parse("u:p@x.com:8080", None).unwrap(),
            Target::new("x.com", 8080)
        );
        assert_eq!(
            parse("u:p@x.com", Some(80)).unwrap(),
            Target::new("x.com", 80)
        );
        assert_eq!(parse("u:p@[::1]:81", None).unwrap(), Target::new("::1", 81));
    }
}
