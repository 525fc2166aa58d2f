//! Answers llmtap makes itself: refusals, errors and `/healthz`.

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};

use super::ProxyBody;
use super::errors::{Failure, FailureKind};
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

/// A proxy-made error answer: the kind's status, why in the body, the kind in `x-llmtap-error`.
pub fn error(kind: FailureKind, message: &str) -> Response<ProxyBody> {
    mark(text(kind.status(), message), kind)
}

/// [`error`] for a [`Failure`].
pub fn failure(failure: &Failure) -> Response<ProxyBody> {
    error(failure.kind, &failure.message)
}

/// The same, ending the connection (HTTP/1.1; HTTP/2 has no `Connection` header).
pub fn error_closing(kind: FailureKind, message: &str, http1: bool) -> Response<ProxyBody> {
    let mut res = error(kind, message);
    if http1 {
        res.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    res
}

/// What a refused client sees: the status of the denial, the reason, `x-llmtap-error`, and
/// `Proxy-Authenticate` for a 407.
pub fn denial(denial: &Denial, http1: bool) -> Response<ProxyBody> {
    let mut res = error_closing(denial.kind.into(), &denial.reason, http1);
    if denial.kind == DenyKind::Auth {
        res.headers_mut().insert(
            http::header::PROXY_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"llmtap\""),
        );
    }
    res
}

/// A refusal in the provider's JSON error shape: the kind's status and `x-llmtap-error`.
pub fn json_error(kind: FailureKind, body: String) -> Response<ProxyBody> {
    mark(json_text(kind.status(), body), kind)
}

fn mark(mut res: Response<ProxyBody>, kind: FailureKind) -> Response<ProxyBody> {
    res.headers_mut()
        .insert("x-llmtap-error", HeaderValue::from_static(kind.as_str()));
    res
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
