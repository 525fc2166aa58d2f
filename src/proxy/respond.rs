//! Answers llmtap makes itself: refusals, errors and `/healthz`.

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};

use super::ProxyBody;
use crate::policy::{Denial, DenyKind};

pub fn empty() -> ProxyBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn text(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let mut res = Response::new(full(format!("llmtap: {message}\n")));
    *res.status_mut() = status;
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// A proxy-made error answer: says why in the body and names the class in `x-llmtap-error`.
pub fn error(status: StatusCode, kind: &str, message: &str) -> Response<ProxyBody> {
    let mut res = text(status, message);
    if let Ok(v) = HeaderValue::from_str(kind) {
        res.headers_mut().insert("x-llmtap-error", v);
    }
    res
}

/// The same, ending the connection (HTTP/1.1; HTTP/2 has no `Connection` header).
pub fn error_closing(
    status: StatusCode,
    kind: &str,
    message: &str,
    http1: bool,
) -> Response<ProxyBody> {
    let mut res = error(status, kind, message);
    if http1 {
        res.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    res
}

/// What a refused client sees: the status of the denial, the reason, `x-llmtap-error`, and
/// `Proxy-Authenticate` for a 407.
pub fn denial(denial: &Denial, http1: bool) -> Response<ProxyBody> {
    let status = StatusCode::from_u16(denial.kind.status()).unwrap_or(StatusCode::FORBIDDEN);
    let mut res = error_closing(status, denial.kind.as_str(), &denial.reason, http1);
    if denial.kind == DenyKind::Auth {
        res.headers_mut().insert(
            http::header::PROXY_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"llmtap\""),
        );
    }
    res
}

/// The status for an upstream failure class: a timeout is 504, everything else 502.
pub fn upstream_status(kind: &str) -> StatusCode {
    match kind {
        "connect_timeout" | "timeout" => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// A JSON body that is already text.
pub fn json_text(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut res = Response::new(full(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

pub fn json(status: StatusCode, doc: &serde_json::Value) -> Response<ProxyBody> {
    let mut res = Response::new(full(doc.to_string()));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}
