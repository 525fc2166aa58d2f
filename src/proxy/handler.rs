//! The hudsucker handler: sequences route → tunnel or capture → forward, per request.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use http::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use hudsucker::{Body, HttpContext, HttpHandler, RequestOrResponse};

use super::Shared;
use super::errors::{UpstreamFailure, classify};
use crate::capture::{
    CaptureBuf, Exchange, ExchangeInProgress, Outcome, RequestTap, ResponseTap, TapBody,
};
use crate::health::HEALTH_PATH;
use crate::providers::{ApiShape, RequestParser, ResponseParser};

/// Cloned by hudsucker for every request: per-call state lives in the fields.
pub struct LlmtapHandler {
    shared: Arc<Shared>,
    exchange: Option<ExchangeInProgress>,
    shape: ApiShape,
    /// Inside an intercepted tunnel: the CONNECT target (host, port) every request must address.
    tunnel_target: Option<(String, u16)>,
}

impl Clone for LlmtapHandler {
    fn clone(&self) -> Self {
        // hudsucker clones the CONNECT's handler for each request inside the tunnel.
        LlmtapHandler {
            tunnel_target: self.tunnel_target.clone(),
            ..LlmtapHandler::new(Arc::clone(&self.shared))
        }
    }
}

impl LlmtapHandler {
    pub fn new(shared: Arc<Shared>) -> LlmtapHandler {
        LlmtapHandler {
            shared,
            exchange: None,
            shape: ApiShape::Unknown,
            tunnel_target: None,
        }
    }

    async fn on_connect(&mut self, mut req: Request<Body>) -> RequestOrResponse {
        let Some(authority) = req.uri().authority().cloned() else {
            return text_response(StatusCode::BAD_REQUEST, "CONNECT needs host:port").into();
        };
        let host = authority.host().to_string();
        let port = authority.port_u16().unwrap_or(443);
        if self.shared.config.llm_hosts.matches(&host) {
            // hudsucker terminates TLS with our leaf and calls back for each request inside.
            return req.into();
        }
        match super::upstream::connect_tcp(&host, port, &self.shared.pins).await {
            Ok(upstream) => {
                let on_upgrade = hyper::upgrade::on(&mut req);
                super::tunnel::spawn(
                    on_upgrade,
                    upstream,
                    authority.to_string(),
                    Arc::clone(&self.shared.tunnels),
                );
                Response::new(Body::empty()).into()
            }
            Err(e) => {
                tracing::info!(target = %authority, error = %e, "CONNECT refused");
                let mut res = error_response(StatusCode::BAD_GATEWAY, e.kind(), &e.to_string());
                // The client asked for a tunnel it will not get: nothing more to say on this connection.
                res.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
                res.into()
            }
        }
    }

    /// Origin-form requests are for llmtap itself.
    fn local(&self, req: &Request<Body>) -> Response<Body> {
        if req.uri().path() == HEALTH_PATH && matches!(*req.method(), Method::GET | Method::HEAD) {
            let body = self.shared.health().to_string();
            return Response::builder()
                .status(StatusCode::OK)
                .header(CONTENT_TYPE, "application/json")
                .body(Body::from(body))
                .unwrap_or_else(|_| Response::new(Body::empty()));
        }
        text_response(
            StatusCode::NOT_FOUND,
            "llmtap is a forward proxy: send absolute-form requests or CONNECT; GET /healthz for status",
        )
    }

    fn begin_exchange(&mut self, ctx: &HttpContext, req: Request<Body>) -> Request<Body> {
        let (parts, body) = req.into_parts();
        let record = request_record(ctx, &parts);
        self.shape = ApiShape::from_path(&record.path);
        let tap = Arc::new(Mutex::new(RequestTap {
            capture: CaptureBuf::new(
                self.shared.config.max_body_size,
                Arc::clone(&self.shared.budget),
            ),
            parser: (self.shape != ApiShape::Unknown).then(|| {
                sync_wrapper::SyncWrapper::new(RequestParser::new(
                    self.shape,
                    &record_path_and_query(&parts),
                    header_str(&parts.headers, CONTENT_ENCODING).as_deref(),
                ))
            }),
            client_error: false,
        }));
        self.exchange = Some(ExchangeInProgress::start(
            record,
            Arc::clone(&tap),
            header_str(&parts.headers, CONTENT_ENCODING),
            Arc::clone(&self.shared.sink),
            Arc::clone(&self.shared.in_flight),
        ));
        let body = Body::from(BoxBody::new(TapBody::request(body, tap)));
        Request::from_parts(parts, body)
    }

    async fn pass_upgrade(&mut self, ctx: &HttpContext, mut req: Request<Body>) -> Response<Body> {
        let client_upgrade = hyper::upgrade::on(&mut req);
        let target = req.uri().to_string();
        let host = req.uri().host().unwrap_or_default().to_string();
        if self.shared.config.llm_hosts.matches(&host) {
            req = self.begin_exchange(ctx, req);
        }
        *req.version_mut() = http::Version::HTTP_11;
        match self.shared.upgrade_client.request(req).await {
            Ok(mut res) => {
                if res.status() == StatusCode::SWITCHING_PROTOCOLS {
                    let server_upgrade = hyper::upgrade::on(&mut res);
                    super::tunnel::spawn_upgrade(client_upgrade, server_upgrade, target);
                }
                if let Some(mut ex) = self.exchange.take() {
                    ex.set_response_head(res.status().as_u16(), header_pairs(res.headers()));
                    ex.finish(Outcome::Complete, Default::default(), None);
                }
                res.map(Body::from)
            }
            Err(e) => self.upstream_failed(classify(&e)),
        }
    }

    /// An HTTP/2 request inside a tunnel names its own `:authority`: it must be the CONNECT
    /// target, or a client could reach any host through an LLM host's tunnel, unrecorded.
    fn misdirected(&self, req: &Request<Body>) -> Option<String> {
        let (host, port) = self.tunnel_target.as_ref()?;
        let uri = req.uri();
        let default_port = if uri.scheme_str() == Some("http") {
            80
        } else {
            443
        };
        let req_host = crate::route::normalize_host(uri.host().unwrap_or_default());
        let req_port = uri.port_u16().unwrap_or(default_port);
        (req_host != *host || req_port != *port)
            .then(|| format!("request for {req_host}:{req_port} inside a tunnel to {host}:{port}"))
    }

    fn upstream_failed(&mut self, failure: UpstreamFailure) -> Response<Body> {
        if let Some(mut ex) = self.exchange.take() {
            let outcome = if ex.client_body_failed() {
                Outcome::ClientAborted
            } else {
                Outcome::UpstreamError {
                    kind: failure.kind.to_string(),
                    message: failure.message.clone(),
                }
            };
            ex.finish(outcome, Default::default(), None);
        }
        tracing::info!(kind = failure.kind, error = %failure.message, "upstream request failed");
        error_response(StatusCode::BAD_GATEWAY, failure.kind, &failure.message)
    }
}

impl HttpHandler for LlmtapHandler {
    async fn handle_request(&mut self, ctx: &HttpContext, req: Request<Body>) -> RequestOrResponse {
        if req.method() == Method::CONNECT {
            return self.on_connect(req).await;
        }
        let Some(host) = req.uri().host().map(str::to_string) else {
            return self.local(&req).into();
        };
        if let Some(reason) = self.misdirected(&req) {
            return text_response(StatusCode::MISDIRECTED_REQUEST, &reason).into();
        }
        if hyper_tungstenite_like_upgrade(&req) {
            return self.pass_upgrade(ctx, req).await.into();
        }
        if !self.shared.config.llm_hosts.matches(&host) {
            return req.into();
        }
        self.begin_exchange(ctx, req).into()
    }

    async fn handle_response(&mut self, _ctx: &HttpContext, res: Response<Body>) -> Response<Body> {
        let Some(mut exchange) = self.exchange.take() else {
            return res;
        };
        let status = res.status().as_u16();
        exchange.set_response_head(status, header_pairs(res.headers()));
        let content_type = header_str(res.headers(), CONTENT_TYPE);
        let content_encoding = header_str(res.headers(), CONTENT_ENCODING);
        let parser = (self.shape != ApiShape::Unknown).then(|| {
            ResponseParser::new(
                self.shape,
                content_type.as_deref(),
                content_encoding.as_deref(),
                status,
            )
        });
        let tap = ResponseTap {
            capture: CaptureBuf::new(
                self.shared.config.max_body_size,
                Arc::clone(&self.shared.budget),
            ),
            parser: parser.map(sync_wrapper::SyncWrapper::new),
            exchange,
            content_encoding,
        };
        res.map(|body| Body::from(BoxBody::new(TapBody::response(body, tap))))
    }

    async fn handle_error(
        &mut self,
        _ctx: &HttpContext,
        err: hyper_util::client::legacy::Error,
    ) -> Response<Body> {
        self.upstream_failed(classify(&err))
    }

    async fn should_intercept_connect(&mut self, _ctx: &HttpContext, req: &Request<Body>) -> bool {
        // Only LLM-host CONNECTs reach hudsucker; all others were tunnelled in handle_request.
        self.tunnel_target = req.uri().authority().map(|a| {
            (
                crate::route::normalize_host(a.host()),
                a.port_u16().unwrap_or(443),
            )
        });
        true
    }
}

/// `Connection: upgrade` with an `Upgrade:` header (WebSocket and friends).
fn hyper_tungstenite_like_upgrade(req: &Request<Body>) -> bool {
    let has_upgrade_token = req
        .headers()
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    has_upgrade_token && req.headers().contains_key(http::header::UPGRADE)
}

fn request_record(ctx: &HttpContext, parts: &http::request::Parts) -> Exchange {
    let uri = &parts.uri;
    let scheme = uri.scheme_str().unwrap_or("http").to_string();
    let default_port = if scheme == "https" { 443 } else { 80 };
    let host = crate::route::normalize_host(uri.host().unwrap_or_default());
    let port = uri.port_u16().unwrap_or(default_port);
    let host_part = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    let authority = if port == default_port {
        host_part
    } else {
        format!("{host_part}:{port}")
    };
    let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    Exchange {
        id: 0,
        started_at: SystemTime::now(),
        client_addr: ctx.client_addr,
        method: parts.method.to_string(),
        url: format!("{scheme}://{authority}{path_and_query}"),
        scheme,
        host,
        port,
        path: uri.path().to_string(),
        http_version: version_name(parts.version).to_string(),
        request_headers: header_pairs(&parts.headers),
        response_headers: Vec::new(),
        status: None,
        request_body: Default::default(),
        response_body: Default::default(),
        time_to_first_byte: None,
        time_to_first_chunk: None,
        duration: Default::default(),
        outcome: Outcome::Complete,
        request_facts: None,
        response_facts: None,
        client_name: None,
        client_profile: None,
        provider: None,
        shape: ApiShape::Unknown,
    }
}

fn record_path_and_query(parts: &http::request::Parts) -> String {
    parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_string(), |p| p.as_str().to_string())
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

fn text_response(status: StatusCode, text: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(format!("llmtap: {text}\n")))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// A proxy-made error answer: says why in the body and names the class in `x-llmtap-error`.
fn error_response(status: StatusCode, kind: &str, message: &str) -> Response<Body> {
    let mut res = text_response(status, message);
    if let Ok(v) = http::HeaderValue::from_str(kind) {
        res.headers_mut().insert("x-llmtap-error", v);
    }
    res
}
