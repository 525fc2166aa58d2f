//! OTLP/HTTP protobuf export: encoding a batch, POSTing it, and retrying what is worth retrying.
//!
//! Why not `opentelemetry-otlp`'s `LogExporter`: its HTTP exporter (0.31–0.33) retries
//! inside `export()` and reports the final failure as an opaque
//! `OTelSdkError::InternalFailure(String)`, so our worker could neither count retries nor
//! tell "Loki rejected the batch (400)" from "gave up after 503s", and its backoff sleeps
//! ignore our shutdown deadline. Its records can only be created through an
//! `SdkLoggerProvider`, and its hyper client has no TLS, so we would be wrapping half of it
//! anyway. Instead we write the `ExportLogsServiceRequest` ourselves, straight from the
//! records (`proto.rs`: the bytes `prost` would write for the `opentelemetry-proto` types the
//! SDK uses), and POST it with the hyper-util client llmtap already links: one attempt at a
//! time, under our control.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use prost::Message;
use rand::Rng;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::export::config::RetryConfig;
use crate::export::record::LogRecordData;

pub use crate::export::proto::{
    SCOPE_NAME, encode_request, encode_resource, encode_scope, request_from_parts, unix_nanos,
};

const CONTENT_TYPE_PROTOBUF: &str = "application/x-protobuf";
/// A success response is tiny (partial-success message at most); more is read no further.
const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// The request body for a batch: protobuf, gzip-compressed when asked.
pub fn encode_body(
    resource: &[(String, String)],
    records: &[LogRecordData<'_>],
    gzip: bool,
) -> std::io::Result<Bytes> {
    compress(encode_request(resource, records), gzip)
}

/// `encoded` as it goes on the wire: unchanged, or gzip-compressed when asked.
pub fn compress(encoded: Vec<u8>, gzip: bool) -> std::io::Result<Bytes> {
    if !gzip {
        return Ok(Bytes::from(encoded));
    }
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut encoder, &encoded)?;
    Ok(Bytes::from(encoder.finish()?))
}

/// Each record as one encoded `LogRecord` (what the spool keeps per entry).
pub fn encode_records(records: &[LogRecordData<'_>]) -> Vec<Vec<u8>> {
    records
        .iter()
        .map(crate::export::proto::encode_record)
        .collect()
}

/// Why the exporter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OtlpSetupError {
    #[error("invalid OTLP endpoint {0:?}")]
    Endpoint(String),
    #[error("invalid OTLP header {0:?}")]
    Header(String),
    #[error("cannot set up TLS for the OTLP endpoint: {0}")]
    Tls(#[from] rustls::Error),
}

/// Result of one POST.
#[derive(Debug, PartialEq)]
pub enum Attempt {
    /// Accepted; `rejected` records were refused individually (partial success).
    Accepted { rejected: u64 },
    /// Worth trying again (429, 408, 5xx but 501/505, connection failures, timeouts).
    Retryable {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Trying again would fail the same way (400, 401, 403, 404, 413, ...).
    Fatal { reason: String },
}

/// What became of one batch after all attempts.
#[derive(Debug, PartialEq)]
pub enum Delivery {
    Accepted { rejected: u64 },
    Rejected { reason: String },
    GaveUp { reason: String },
}

/// The OTLP/HTTP client: endpoint, headers, connection pool.
#[derive(Clone)]
pub struct OtlpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    endpoint: Uri,
    headers: HeaderMap,
    timeout: Duration,
    gzip: bool,
}

impl OtlpClient {
    /// Builds a client; `tls` defaults to webpki plus system roots.
    pub fn new(
        endpoint: &str,
        headers: &[(String, String)],
        gzip: bool,
        timeout: Duration,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<OtlpClient, OtlpSetupError> {
        let endpoint: Uri = endpoint
            .parse()
            .map_err(|_| OtlpSetupError::Endpoint(endpoint.to_owned()))?;
        let mut header_map = HeaderMap::new();
        for (name, value) in headers {
            let parsed = HeaderName::from_bytes(name.as_bytes())
                .ok()
                .zip(HeaderValue::from_str(value).ok());
            let (name, mut value) = parsed.ok_or_else(|| OtlpSetupError::Header(name.clone()))?;
            value.set_sensitive(true);
            header_map.append(name, value);
        }
        let tls = match tls {
            Some(config) => (*config).clone(),
            None => default_tls()?,
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(OtlpClient {
            client,
            endpoint,
            headers: header_map,
            timeout,
            gzip,
        })
    }

    /// Whether bodies must be gzip-compressed (see [`encode_body`]).
    pub fn gzip(&self) -> bool {
        self.gzip
    }

    /// One POST of an encoded request, bounded by the request timeout.
    pub async fn attempt(&self, body: Bytes) -> Attempt {
        match tokio::time::timeout(self.timeout, self.post(body)).await {
            Ok(attempt) => attempt,
            Err(_) => Attempt::Retryable {
                reason: format!("no answer within {:?}", self.timeout),
                retry_after: None,
            },
        }
    }

    async fn post(&self, body: Bytes) -> Attempt {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.endpoint.clone();
        let headers = request.headers_mut();
        headers.extend(self.headers.clone());
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(CONTENT_TYPE_PROTOBUF),
        );
        if self.gzip {
            let gzip = HeaderValue::from_static("gzip");
            headers.insert(http::header::CONTENT_ENCODING, gzip);
        }
        let response = match self.client.request(request).await {
            Ok(response) => response,
            Err(error) => {
                return Attempt::Retryable {
                    reason: error_chain(&error),
                    retry_after: None,
                };
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(parse_retry_after);
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BODY)
            .collect()
            .await;
        let body = body.map(|b| b.to_bytes()).unwrap_or_default();
        classify(status, retry_after, &body)
    }
}

/// Maps a response to an [`Attempt`]. 500 is retried too (unlike the OTLP spec's list):
/// Loki answers 500 for transient ingester trouble.
pub fn classify(status: StatusCode, retry_after: Option<Duration>, body: &[u8]) -> Attempt {
    if status.is_success() {
        // Loki answers 204 with an empty body; a collector may send a partial-success message.
        let rejected = ExportLogsServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map_or(0, |p| u64::try_from(p.rejected_log_records).unwrap_or(0));
        return Attempt::Accepted { rejected };
    }
    let reason = format!("HTTP {status}: {}", response_snippet(body));
    let retryable = matches!(status.as_u16(), 408 | 429)
        || (status.is_server_error() && !matches!(status.as_u16(), 501 | 505));
    if retryable {
        Attempt::Retryable {
            reason,
            retry_after,
        }
    } else {
        Attempt::Fatal { reason }
    }
}

/// A printable start of an error answer (Loki explains a 400 in plain text).
fn response_snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    text.trim().replace(['\n', '\r'], " ")
}

/// `Retry-After` as delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

fn default_tls() -> Result<rustls::ClientConfig, rustls::Error> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    // System roots let a private CA installed on the host work; unreadable ones are skipped.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Exponential backoff with jitter, honouring `Retry-After` (bounded).
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    config: RetryConfig,
}

impl Backoff {
    pub fn new(config: &RetryConfig) -> Backoff {
        Backoff {
            next: config.initial_backoff,
            config: config.clone(),
        }
    }

    /// Wait before the next attempt: jittered backoff, or longer if the server asked.
    pub fn next_wait(&mut self, retry_after: Option<Duration>) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.config.max_backoff);
        // Jitter in [base/2, base] spreads retries of several llmtap instances apart.
        let half = base / 2;
        let jittered = half + rand::rng().random_range(Duration::ZERO..=half);
        match retry_after {
            Some(asked) => asked.min(self.config.max_retry_after).max(jittered),
            None => jittered,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let cases: &[(u16, bool, bool)] = &[
            // status, accepted, retryable
            (200, true, false),
            (204, true, false),
            (400, false, false),
            (401, false, false),
            (404, false, false),
            (413, false, false),
            (408, false, true),
            (429, false, true),
            (500, false, true),
            (501, false, false),
            (502, false, true),
            (503, false, true),
            (504, false, true),
        ];
        for (status, accepted, retryable) in cases {
            let attempt = classify(StatusCode::from_u16(*status).unwrap(), None, b"");
            match attempt {
                Attempt::Accepted { rejected } => assert!(*accepted && rejected == 0, "{status}"),
                Attempt::Retryable { .. } => assert!(*retryable, "{status}"),
                Attempt::Fatal { .. } => assert!(!accepted && !retryable, "{status}"),
            }
        }
    }

    #[test]
    fn partial_success_is_counted() {
        let response = ExportLogsServiceResponse {
            partial_success: Some(
                opentelemetry_proto::tonic::collector::logs::v1::ExportLogsPartialSuccess {
                    rejected_log_records: 3,
                    error_message: "too big".into(),
                },
            ),
        };
        let attempt = classify(StatusCode::OK, None, &response.encode_to_vec());
        assert_eq!(attempt, Attempt::Accepted { rejected: 3 });
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("7")),
            Some(Duration::from_secs(7))
        );
        let past = HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT");
        assert_eq!(parse_retry_after(&past), Some(Duration::ZERO));
        assert_eq!(parse_retry_after(&HeaderValue::from_static("soon")), None);
    }

    #[test]
    fn backoff_grows_and_honours_retry_after() {
        let config = RetryConfig {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(400),
            max_retry_after: Duration::from_secs(5),
            ..RetryConfig::default()
        };
        let mut backoff = Backoff::new(&config);
        let waits: Vec<Duration> = (0..4).map(|_| backoff.next_wait(None)).collect();
        for (wait, base) in waits.iter().zip([100u64, 200, 400, 400]) {
            assert!(
                *wait >= Duration::from_millis(base / 2) && *wait <= Duration::from_millis(base),
                "{waits:?}"
            );
        }
        assert_eq!(
            backoff.next_wait(Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(
            backoff.next_wait(Some(Duration::from_secs(60))),
            Duration::from_secs(5)
        );
    }
}
