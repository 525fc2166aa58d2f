//! The `Exchange`: everything llmtap observed about one intercepted request/response pair.

use bytes::Bytes;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use crate::keys::KeyUse;
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

impl CapturedBody {
    /// A body that went through whole: not truncated, no content-encoding (tests, benchmarks).
    #[doc(hidden)]
    pub fn complete(bytes: impl AsRef<[u8]>) -> CapturedBody {
        let bytes = Bytes::copy_from_slice(bytes.as_ref());
        CapturedBody {
            total_len: bytes.len() as u64,
            bytes,
            truncated: false,
            content_encoding: None,
        }
    }
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
    pub key: KeyUse,
    /// What the call's usage costs by `prices.toml` (`llmtap.cost.usd`); `None` when the
    /// model has no price or the usage is unknown, never 0 for "unknown".
    pub cost_usd: Option<f64>,
    /// The usage was estimated from the bytes (the response carried none):
    /// `llmtap.usage.estimated`.
    pub usage_estimated: bool,
    /// The limit that refused the call (`requests_per_minute`, ...): `llmtap.limit`.
    pub limit: Option<&'static str>,
}

/// The request side of an exchange: what the proxy knows when a request head arrives, and what
/// the connection's decision says about it. Borrowed: [`Exchange::new`] keeps its own copies.
#[derive(Debug, Clone)]
pub struct RequestSide<'a> {
    pub client_addr: SocketAddr,
    pub method: &'a str,
    /// Absolute URL as forwarded.
    pub url: &'a str,
    pub scheme: &'a str,
    pub host: &'a str,
    pub port: u16,
    /// Path without the query.
    pub path: &'a str,
    pub http_version: &'a str,
    /// Raw request headers (redaction happens in the export stage).
    pub headers: Vec<(String, String)>,
    pub client_name: Option<&'a str>,
    pub client_profile: Option<&'a str>,
    pub provider: Option<&'a str>,
    pub shape: ApiShape,
}

impl Exchange {
    /// An exchange with only its request side known: started now, id 0 (the sink's exchange
    /// in progress numbers it), no response yet, outcome `complete` until told otherwise,
    /// nothing parsed, no key used, no cost, no limit.
    pub fn new(request: RequestSide<'_>) -> Exchange {
        Exchange {
            id: 0,
            started_at: SystemTime::now(),
            client_addr: request.client_addr,
            method: request.method.to_owned(),
            url: request.url.to_owned(),
            scheme: request.scheme.to_owned(),
            host: request.host.to_owned(),
            port: request.port,
            path: request.path.to_owned(),
            http_version: request.http_version.to_owned(),
            request_headers: request.headers,
            response_headers: Vec::new(),
            status: None,
            request_body: CapturedBody::default(),
            response_body: CapturedBody::default(),
            time_to_first_byte: None,
            time_to_first_chunk: None,
            duration: Duration::ZERO,
            outcome: Outcome::Complete,
            request_facts: None,
            response_facts: None,
            client_name: request.client_name.map(str::to_owned),
            client_profile: request.client_profile.map(str::to_owned),
            provider: request.provider.map(str::to_owned),
            shape: request.shape,
            key: KeyUse::default(),
            cost_usd: None,
            usage_estimated: false,
            limit: None,
        }
    }

    /// Test and benchmark fixture, never used by the proxy: a finished 200 JSON call to
    /// Anthropic's Messages API (`POST https://api.anthropic.com/v1/messages`, HTTP/1.1, from
    /// 127.0.0.1:40000, no client name), JSON content types both ways, small bodies, id 1,
    /// nothing parsed. Tests change the fields they are about.
    #[doc(hidden)]
    pub fn sample() -> Exchange {
        let json = || vec![("content-type".to_owned(), "application/json".to_owned())];
        let mut exchange = Exchange::new(RequestSide {
            client_addr: SocketAddr::from(([127, 0, 0, 1], 40000)),
            method: "POST",
            url: "https://api.anthropic.com/v1/messages",
            scheme: "https",
            host: "api.anthropic.com",
            port: 443,
            path: "/v1/messages",
            http_version: "HTTP/1.1",
            headers: json(),
            client_name: None,
            client_profile: None,
            provider: Some("anthropic"),
            shape: ApiShape::AnthropicMessages,
        });
        exchange.id = 1;
        exchange.response_headers = json();
        exchange.status = Some(200);
        exchange.request_body = CapturedBody::complete(
            r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[]}"#,
        );
        exchange.response_body = CapturedBody::complete(r#"{"id":"msg_01","type":"message"}"#);
        exchange.time_to_first_byte = Some(Duration::from_millis(200));
        exchange.time_to_first_chunk = Some(Duration::from_millis(210));
        exchange.duration = Duration::from_millis(900);
        exchange
    }
}
