//! Forwarding one request to the decided target and address: captured and recorded for LLM
//! hosts, passed through for plain HTTP to other hosts; upgrades spliced.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use http::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::conn_audit::{ConnAudit, CountedBody, Direction};
use super::errors::{Failure, FailureKind, classify};
use super::upstream::Protocols;
use super::{BoxError, ProxyBody, Shared, respond};
use crate::capture::timeout::IdleBody;
use crate::capture::{
    CaptureBuf, Exchange, ExchangeInProgress, Outcome, RequestSide, RequestTap, ResponseTap,
    TapBody,
};
use crate::keys::{self, KeyRefusal, Transport};
use crate::limits::answer::{self, ErrorShape};
use crate::limits::{Admission, LimitHit};
use crate::policy::Grant;
use crate::providers::{ApiShape, RequestParser, ResponseParser};
use crate::route::ProviderMap;

/// One allowed connection (an intercepted tunnel) or plain-HTTP request, as decided.
pub struct Call {
    pub shared: Arc<Shared>,
    pub grant: Grant,
    /// From the decision: `providers.toml`'s entry for the host, if any.
    pub provider: Option<Arc<str>>,
    pub client_addr: SocketAddr,
    pub audit: Arc<ConnAudit>,
}

/// Plain HTTP to a host that is not intercepted: forwarded to the decided address, audited.
pub async fn plain(
    shared: Arc<Shared>,
    grant: Grant,
    client_addr: SocketAddr,
    mut req: Request<Incoming>,
) -> Response<ProxyBody> {
    let call = per_request_call(shared, grant, None, client_addr);
    let upgrade = is_upgrade(&req);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    parts.uri = match upstream_uri("http", &call, &parts.uri) {
        Ok(uri) => uri,
        Err(res) => return *res,
    };
    prepare_upstream(&mut parts, upgrade);
    let stall = call.shared.config.limits.body_timeout;
    let body = CountedBody::new(
        IdleBody::new(body, stall),
        Arc::clone(&call.audit),
        Direction::Sent,
    );
    let req = Request::from_parts(parts, body.map_err(BoxError::from).boxed());
    match send_upstream(&call, req, client_upgrade).await {
        Ok(res) => {
            let audit = Arc::clone(&call.audit);
            res.map(|b| {
                CountedBody::new(IdleBody::new(b, stall), audit, Direction::Received)
                    .map_err(BoxError::from)
                    .boxed()
            })
        }
        Err(e) => {
            let failure = classify(&e);
            call.audit.failed(failure.kind, &failure.message);
            failure_response(&failure)
        }
    }
}

/// Sends to the decided address over the decision's pooled client; splices an upgrade the
/// upstream accepted.
async fn send_upstream(
    call: &Call,
    req: Request<ProxyBody>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
    let protocols = if client_upgrade.is_some() {
        Protocols::Http1Only
    } else {
        Protocols::Auto
    };
    let client = call
        .shared
        .pool
        .client(&call.grant.target, call.grant.addr, protocols);
    let mut res = client.request(req).await?;
    call.audit.connected(call.grant.addr);
    if let Some(client_upgrade) = client_upgrade
        && res.status() == StatusCode::SWITCHING_PROTOCOLS
    {
        let server_upgrade = hyper::upgrade::on(&mut res);
        super::tunnel::spawn_upgrade(
            client_upgrade,
            server_upgrade,
            Arc::clone(&call.audit),
            Arc::clone(&call.shared),
        );
    }
    Ok(res)
}

/// Plain HTTP to an LLM host: captured like an intercepted request, audited per request.
pub async fn plain_captured(
    shared: Arc<Shared>,
    grant: Grant,
    provider: Option<Arc<str>>,
    client_addr: SocketAddr,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let call = Arc::new(per_request_call(shared, grant, provider, client_addr));
    captured(call, req, "http").await
}

/// A base-URL route: the path after the route's prefix (and the query) goes to the route's
/// upstream, captured like an intercepted request, audited per request.
pub async fn reverse(
    shared: Arc<Shared>,
    grant: Grant,
    provider: Option<Arc<str>>,
    client_addr: SocketAddr,
    mut req: Request<Incoming>,
    upstream_path: String,
) -> Response<ProxyBody> {
    let pq = match req.uri().query() {
        Some(query) => format!("{upstream_path}?{query}"),
        None => upstream_path,
    };
    match pq.parse::<Uri>() {
        Ok(uri) => *req.uri_mut() = uri,
        Err(e) => {
            let why = format!("bad request path: {e}");
            return respond::error(FailureKind::BadRequest, &why);
        }
    }
    let call = Arc::new(per_request_call(shared, grant, provider, client_addr));
    captured(call, req, "https").await
}

fn per_request_call(
    shared: Arc<Shared>,
    grant: Grant,
    provider: Option<Arc<str>>,
    client_addr: SocketAddr,
) -> Call {
    let audit = ConnAudit::new(
        &grant,
        client_addr,
        Arc::clone(&shared.sink),
        shared.config.audit,
    );
    Call {
        shared,
        grant,
        provider,
        client_addr,
        audit,
    }
}

/// A request to an LLM host: bodies teed into the exchange record, forwarded unchanged.
pub async fn captured(
    call: Arc<Call>,
    mut req: Request<Incoming>,
    scheme: &'static str,
) -> Response<ProxyBody> {
    let upgrade = is_upgrade(&req);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    parts.uri = match upstream_uri(scheme, &call, &parts.uri) {
        Ok(uri) => uri,
        Err(res) => return *res,
    };
    // The record is taken before the swap: it holds the sentinel, never the real key.
    let mut record = request_record(&call, &parts);
    // What the parser sees is the request as the client sent it, sentinel and all.
    let uri = parts.uri.clone();
    let transport = if scheme == "https" {
        Transport::Tls
    } else {
        Transport::Cleartext
    };
    let keys = call.shared.keys();
    let redactor = &call.shared.config.redactor;
    let looks_real = |value: &str| redactor.looks_secret(value);
    let host = &call.grant.target.host;
    let client = &call.grant.client.name;
    match keys::apply(&keys, host, client, transport, &mut parts, &looks_real) {
        Ok(used) => {
            call.shared.key_counts.count(&used);
            record.key = used;
        }
        Err(refusal) => return refuse_key(&call, record, refusal),
    }
    let limits = call
        .shared
        .rules()
        .policy
        .profile(&call.grant.client.profile)
        .map(|p| p.limits)
        .unwrap_or_default();
    let accounting = Arc::clone(&call.shared.accounting);
    let slot = match accounting.limiter.admit(client, &limits).await {
        Admission::Admitted(slot) => slot,
        Admission::Refused(hit) => return refuse_limit(&call, record, &hit),
        Admission::StoreUnavailable => return refuse_store_unavailable(&call, record),
    };
    let shape = record.shape;
    let tap = Arc::new(Mutex::new(RequestTap {
        capture: CaptureBuf::new(
            call.shared.config.max_body_size,
            Arc::clone(&call.shared.budget),
        ),
        parser: (shape != ApiShape::Unknown).then(|| {
            sync_wrapper::SyncWrapper::new(RequestParser::new(
                shape,
                &path_and_query(&uri),
                header_str(&parts.headers, CONTENT_ENCODING).as_deref(),
            ))
        }),
        client_error: false,
    }));
    let mut exchange = ExchangeInProgress::start(
        record,
        Arc::clone(&tap),
        header_str(&parts.headers, CONTENT_ENCODING),
        Arc::clone(&call.shared.sink),
        Arc::clone(&call.shared.in_flight),
    );
    // Budgets are charged when the usage is known: at the end of the body or the stream.
    exchange.on_finish(Box::new(move |record, facts| {
        accounting.account(record, facts);
        drop(slot);
    }));
    prepare_upstream(&mut parts, upgrade);
    let stall = call.shared.config.limits.body_timeout;
    let body = CountedBody::new(
        TapBody::request(IdleBody::new(body, stall), tap),
        Arc::clone(&call.audit),
        Direction::Sent,
    );
    let req = Request::from_parts(parts, body.map_err(BoxError::from).boxed());
    match send_upstream(&call, req, client_upgrade).await {
        Ok(res) => tap_response(&call, exchange, shape, res),
        Err(e) => {
            let mut failure = classify(&e);
            if failure.kind == FailureKind::Upstream && exchange.client_body_failed() {
                failure.kind = FailureKind::ClientAborted;
            }
            let outcome = match failure.kind {
                FailureKind::RequestBodyTimeout => Outcome::Timeout {
                    side: "request_body",
                },
                FailureKind::ClientAborted => Outcome::ClientAborted,
                kind => Outcome::UpstreamError {
                    kind: kind.as_str().to_string(),
                    message: failure.message.clone(),
                },
            };
            exchange.finish(outcome, Default::default(), None);
            call.audit.failed(failure.kind, &failure.message);
            failure_response(&failure)
        }
    }
}

fn tap_response(
    call: &Call,
    mut exchange: ExchangeInProgress,
    shape: ApiShape,
    res: Response<Incoming>,
) -> Response<ProxyBody> {
    let status = res.status().as_u16();
    exchange.set_response_head(status, header_pairs(res.headers()));
    let content_type = header_str(res.headers(), CONTENT_TYPE);
    let content_encoding = header_str(res.headers(), CONTENT_ENCODING);
    let parser = (shape != ApiShape::Unknown).then(|| {
        ResponseParser::new(
            shape,
            content_type.as_deref(),
            content_encoding.as_deref(),
            status,
        )
    });
    let tap = ResponseTap {
        capture: CaptureBuf::new(
            call.shared.config.max_body_size,
            Arc::clone(&call.shared.budget),
        ),
        parser: parser.map(sync_wrapper::SyncWrapper::new),
        exchange,
        content_encoding,
    };
    let audit = Arc::clone(&call.audit);
    let stall = call.shared.config.limits.body_timeout;
    res.map(|body| {
        CountedBody::new(
            TapBody::response(IdleBody::new(body, stall), tap),
            audit,
            Direction::Received,
        )
        .map_err(BoxError::from)
        .boxed()
    })
}

fn failure_response(failure: &Failure) -> Response<ProxyBody> {
    let (kind, side) = (failure.kind.as_str(), failure.side().as_str());
    tracing::info!(kind, side, error = %failure.message, "forwarding failed");
    respond::failure(failure)
}

/// The URI sent upstream: always the decided target, whatever the request named.
fn upstream_uri(scheme: &str, call: &Call, uri: &Uri) -> Result<Uri, Box<Response<ProxyBody>>> {
    let target = &call.grant.target;
    let default_port = if scheme == "https" { 443 } else { 80 };
    let authority = if target.port == default_port {
        if target.host.contains(':') {
            format!("[{}]", target.host)
        } else {
            target.host.clone()
        }
    } else {
        target.authority()
    };
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    format!("{scheme}://{authority}{pq}")
        .parse::<Uri>()
        .map_err(|e| {
            Box::new(respond::error(
                FailureKind::BadRequest,
                &format!("bad request target: {e}"),
            ))
        })
}

/// Answers `403` for a request the keys say must not leave, and records it like a call.
fn refuse_key(call: &Call, mut record: Exchange, refusal: KeyRefusal) -> Response<ProxyBody> {
    let kind = FailureKind::from(refusal.kind);
    let counts = &call.shared.key_counts;
    counts.refused.fetch_add(1, Ordering::Relaxed);
    record.key.foreign = refusal.foreign;
    counts.count(&record.key);
    tracing::warn!(client = %call.grant.client.name, host = %call.grant.target.host, kind = kind.as_str(), reason = %refusal.reason, "request refused by the keys");
    call.audit.failed(kind, &refusal.reason);
    let res = respond::error(kind, &refusal.reason);
    let outcome = Outcome::Refused {
        kind: kind.as_str(),
        message: refusal.reason,
    };
    record_local_answer(call, record, res, outcome)
}

/// Answers `429` in the provider's own error shape, before anything goes upstream.
fn refuse_limit(call: &Call, mut record: Exchange, hit: &LimitHit) -> Response<ProxyBody> {
    tracing::info!(client = %call.grant.client.name, limit = hit.kind.as_str(), "call refused by a limit");
    let shape = ErrorShape::of(record.provider.as_deref(), record.shape);
    let body = answer::rate_limit_body(shape, &hit.message);
    let mut res = respond::json_error(FailureKind::Limit, body);
    let headers = res.headers_mut();
    headers.insert(http::header::RETRY_AFTER, hit.retry_after_secs.into());
    // A used-up budget renews with its window; retrying at once cannot help.
    let retry = if hit.kind.is_budget() {
        "false"
    } else {
        "true"
    };
    headers.insert("x-should-retry", http::HeaderValue::from_static(retry));
    record.limit = Some(hit.kind.as_str());
    let outcome = Outcome::Refused {
        kind: FailureKind::Limit.as_str(),
        message: hit.message.clone(),
    };
    record_local_answer(call, record, res, outcome)
}

/// `--limits-store-fail closed` and the store did not answer: `503`, retry soon.
fn refuse_store_unavailable(call: &Call, record: Exchange) -> Response<ProxyBody> {
    let message = "llmtap: the limits store is unavailable and --limits-store-fail is closed";
    let shape = ErrorShape::of(record.provider.as_deref(), record.shape);
    let kind = FailureKind::LimitsStore;
    let mut res = respond::json_error(kind, answer::unavailable_body(shape, message));
    res.headers_mut()
        .insert(http::header::RETRY_AFTER, 1.into());
    let outcome = Outcome::Refused {
        kind: kind.as_str(),
        message: message.to_string(),
    };
    record_local_answer(call, record, res, outcome)
}

/// A request llmtap answered itself gets its record like any call.
fn record_local_answer(
    call: &Call,
    record: Exchange,
    mut res: Response<ProxyBody>,
    outcome: Outcome,
) -> Response<ProxyBody> {
    // The request body was never read, so HTTP/1 cannot reuse the connection: say so, or a
    // client that keeps connections alive sends its next request into a closed socket.
    if !matches!(record.http_version.as_str(), "2" | "3") {
        res.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    let tap = Arc::new(Mutex::new(RequestTap {
        capture: CaptureBuf::new(0, Arc::clone(&call.shared.budget)),
        parser: None,
        client_error: false,
    }));
    let mut exchange = ExchangeInProgress::start(
        record,
        tap,
        None,
        Arc::clone(&call.shared.sink),
        Arc::clone(&call.shared.in_flight),
    );
    let accounting = Arc::clone(&call.shared.accounting);
    exchange.on_finish(Box::new(move |record, facts| {
        accounting.account(record, facts)
    }));
    exchange.set_response_head(res.status().as_u16(), header_pairs(res.headers()));
    exchange.finish(outcome, Default::default(), None);
    res
}

/// Hop-by-hop headers never go upstream; neither do the proxy credentials.
fn prepare_upstream(parts: &mut http::request::Parts, upgrade: bool) {
    let listed: Vec<HeaderName> = parts
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    let headers = &mut parts.headers;
    for name in [
        "proxy-authorization",
        "proxy-connection",
        "host",
        "keep-alive",
    ] {
        headers.remove(name);
    }
    if !upgrade {
        for name in listed {
            headers.remove(name);
        }
        for name in [
            "connection",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
        ] {
            headers.remove(name);
        }
    }
    // The pooled upstream connection speaks what ALPN chose; hyper wants HTTP/1.1 here.
    parts.version = http::Version::HTTP_11;
}

/// `Connection: upgrade` with an `Upgrade:` header (WebSocket and friends).
fn is_upgrade(req: &Request<Incoming>) -> bool {
    let has_upgrade_token = req
        .headers()
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    has_upgrade_token && req.headers().contains_key(http::header::UPGRADE)
}

/// The request side of the exchange record, with what the decision says about it.
fn request_record(call: &Call, parts: &http::request::Parts) -> Exchange {
    let uri = &parts.uri;
    let target = &call.grant.target;
    let shape = ApiShape::from_path(uri.path());
    let provider = call
        .provider
        .as_deref()
        .map(str::to_string)
        .or_else(|| shape_default_provider(shape));
    let mut headers = header_pairs(&parts.headers);
    headers.retain(|(k, _)| k != "proxy-authorization");
    Exchange::new(RequestSide {
        client_addr: call.client_addr,
        method: parts.method.as_str(),
        url: &uri.to_string(),
        scheme: uri.scheme_str().unwrap_or("https"),
        host: &target.host,
        port: target.port,
        path: uri.path(),
        http_version: version_name(parts.version),
        headers,
        client_name: Some(&call.grant.client.name),
        client_profile: Some(&call.grant.client.profile),
        provider: provider.as_deref(),
        shape,
    })
}

/// A host with no `providers.toml` entry is named by the API its path speaks.
fn shape_default_provider(shape: ApiShape) -> Option<String> {
    ProviderMap::default()
        .provider_for("", shape)
        .map(str::to_string)
}

fn path_and_query(uri: &Uri) -> String {
    uri.path_and_query()
        .map_or_else(|| uri.path().to_string(), |p| p.as_str().to_string())
}

fn version_name(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn header_str(headers: &HeaderMap, name: http::header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty())
}
