//! Base-URL routes (`--reverse-listen`): plain HTTP from the sandbox, the route's upstream over
//! verified TLS, with the same one decision, key swap, streaming and record as an
//! intercepted call. Any path that is no route gets `404` and the connection is closed.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::conn_audit::submit_denial;
use super::errors::FailureKind;
use super::{ProxyBody, Shared, respond};
use crate::policy::{self, Decision, Denial, DenyKind, Route, SystemResolver, Target, Via};

/// hyper's service for connections to `--reverse-listen`.
pub async fn handle(
    shared: Arc<Shared>,
    client_addr: SocketAddr,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let http1 = req.version() < http::Version::HTTP_2;
    let rules = shared.rules();
    // Only origin-form requests name a route; this port is no proxy.
    let route = (req.method() != Method::CONNECT && req.uri().authority().is_none())
        .then(|| rules.providers.routes.resolve(req.uri().path()))
        .flatten();
    let Some((route, upstream_path)) = route else {
        let prefixes: Vec<String> = rules
            .providers
            .routes
            .routes()
            .iter()
            .map(|r| format!("/{}/", r.prefix))
            .collect();
        let why = format!("no base-URL route here; routes: {}", prefixes.join(", "));
        return respond::error_closing(FailureKind::NoRoute, &why, http1);
    };
    let target = Target::new(&route.host, route.port);
    // A base URL carries no proxy credentials: the client is its source address.
    let decision = match policy::identify(&rules.policy, None, client_addr.ip()) {
        Ok(client) => policy::decide(&rules, &client, &target, Via::Reverse, &SystemResolver).await,
        Err(failure) => Decision::Deny(Denial {
            client: None,
            target: target.clone(),
            route: Route::Reverse,
            kind: DenyKind::Auth,
            reason: failure.reason,
        }),
    };
    super::handler::count_decision(&shared, &decision);
    match decision {
        Decision::Intercept { grant, provider } => {
            super::forward::reverse(shared, grant, provider, client_addr, req, upstream_path).await
        }
        Decision::Deny(denial) => {
            tracing::info!(client = %client_addr, reason = %denial.reason, kind = denial.kind.as_str(), "base-URL route refused");
            submit_denial(&denial, client_addr, &*shared.sink, shared.config.audit);
            let mut res = respond::error_closing(denial.kind.into(), &denial.reason, http1);
            // 407 asks for proxy credentials, which a base URL cannot send: 403 here.
            if denial.kind == DenyKind::Auth {
                *res.status_mut() = StatusCode::FORBIDDEN;
            }
            res
        }
        Decision::Tunnel(_) | Decision::Local => {
            // `decide` intercepts every Via::Reverse request; anything else is a bug, refused.
            tracing::error!(route = %route.prefix, "a base-URL route was not decided as intercepted");
            respond::error_closing(
                FailureKind::Internal,
                "the route could not be decided",
                http1,
            )
        }
    }
}
