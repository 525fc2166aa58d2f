//! The `Exchange`: everything llmtap observed about one intercepted request/response pair.

use bytes::Bytes;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use crate::providers::{ApiShape, RequestFacts, ResponseFacts};

/// How an exchange ended; exactly one per exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The response body reached its end and was handed to the client.
    Complete,
    /// The client went away before the response was complete.
    ClientAborted,
    /// A body moved no byte for `--body-timeout`: the exchange was cut (both sides released).
    Timeout {
        /// `request_body` or `response_body`: which body stalled.
        side: &'static str,
    },
    /// Still running when the shutdown grace period ran out: cut, and recorded before exit.
    Shutdown,
    /// Answered by llmtap itself before anything went upstream (a key refusal, a limit).
    Refused {
        /// `foreign_key`, `key_not_granted`, `key_cleartext`, ...: `error.type`.
        kind: &'static str,
        /// Why, for `llmtap.error.message`; never holds a secret.
        message: String,
    },
    /// The upstream could not be reached, failed TLS, or broke mid-body.
    UpstreamError {
        /// Short machine-readable class (`connect`, `tls`, `timeout`, `body`, ...), used as `error.type`.
        kind: String,
        /// Human-readable reason.
        message: String,
    },
}

impl Outcome {
    /// Stable name written to records (`complete`, `client_aborted`, `timeout`, `shutdown`,
    /// `upstream_error`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::ClientAborted => "client_aborted",
            Outcome::Timeout { .. } => "timeout",
            Outcome::Shutdown => "shutdown",
            Outcome::Refused { .. } => "refused",
            Outcome::UpstreamError { .. } => "upstream_error",
        }
    }
}

/// A body as captured on the side: the first `cap` bytes, plus the true length.
#[derive(Debug, Clone, Default)]
pub struct CapturedBody {
    /// At most `--max-body-size` bytes, exactly as forwarded (possibly compressed).
    pub bytes: Bytes,
    /// Number of bytes that went through, captured or not.
    pub total_len: u64,
    /// True when `total_len > bytes.len()`.
    pub truncated: bool,
    /// The `content-encoding` the bytes are in, if any.
    pub content_encoding: Option<String>,
}

/// One intercepted exchange. Headers are raw here: redaction happens in the export stage.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Process-unique, increasing id.
    pub id: u64,
    /// Wall-clock time the request arrived.
    pub started_at: SystemTime,
    pub client_addr: SocketAddr,
    pub method: String,
    /// Absolute URL as forwarded (`https://host/path?query`).
    pub url: String,
    pub scheme: String,
    pub host: String,
    pub port: u16,
    /// Path without the query.
    pub path: String,
    /// `HTTP/1.1` or `HTTP/2` as spoken by the client.
    pub http_version: String,
    pub request_headers: Vec<(String, String)>,
    pub response_headers: Vec<(String, String)>,
    /// Response status, when a response arrived.
    pub status: Option<u16>,
    pub request_body: CapturedBody,
    pub response_body: CapturedBody,
    /// Time from request start to the response head.
    pub time_to_first_byte: Option<Duration>,
    /// Time from request start to the first response body data frame.
    pub time_to_first_chunk: Option<Duration>,
    /// Time from request start to the end of the exchange.
    pub duration: Duration,
    pub outcome: Outcome,
    /// What the incremental request parser found over the whole request body (not only the captured part).
    pub request_facts: Option<RequestFacts>,
    /// What the incremental response parser found (the whole body, not only the captured part).
    pub response_facts: Option<ResponseFacts>,
    /// `llmtap.client.name` of the connection's decision.
    pub client_name: Option<String>,
    /// `llmtap.client.profile` of the connection's decision.
    pub client_profile: Option<String>,
    /// `gen_ai.provider.name`, from the decision (host map) or else the API shape, set once
    /// by the proxy; the exporter never re-derives it.
    pub provider: Option<String>,
    /// The API shape the proxy saw in the request path, set once by the proxy.
    pub shape: ApiShape,
    /// Whether a real key was injected, and whether a foreign one was seen.
    pub key: crate::keys::KeyUse,
    /// What the call's usage costs by `prices.toml` (`llmtap.cost.usd`); `None` when the
    /// model has no price or the usage is unknown, never 0 for "unknown".
    pub cost_usd: Option<f64>,
    /// The usage was estimated from the bytes (the response carried none):
    /// `llmtap.usage.estimated`.
    pub usage_estimated: bool,
    /// The limit that refused the call (`requests_per_minute`, ...): `llmtap.limit`.
    pub limit: Option<&'static str>,
}
