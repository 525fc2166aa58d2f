//! Export settings from the standard `OTEL_*` environment variables plus llmtap's own flags.

use rand::RngCore;
use std::sync::Arc;
use std::time::Duration;

use crate::redact::percent_decode;

/// `OTEL_SERVICE_NAME` when unset.
pub const DEFAULT_SERVICE_NAME: &str = "llmtap";
/// `--max-record-bytes` default: Loki's default `max_line_size` (256 KB).
pub const DEFAULT_MAX_RECORD_BYTES: usize = 256 * 1024;
/// Smallest accepted `--max-record-bytes`: attributes alone may take a few tens of KiB.
pub const MIN_MAX_RECORD_BYTES: usize = 64 * 1024;
/// Exchanges waiting for the exporter; each holds up to two capped bodies.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;

const SERVICE_NAME: &str = "service.name";
const SERVICE_VERSION: &str = "service.version";
const SERVICE_INSTANCE_ID: &str = "service.instance.id";

/// Where records go.
#[derive(Debug, Clone, PartialEq)]
pub enum Destination {
    /// OTLP/HTTP protobuf to this full URL (`.../v1/logs`), with these extra headers,
    /// gzip-compressed when `OTEL_EXPORTER_OTLP_COMPRESSION=gzip`.
    Otlp {
        endpoint: String,
        headers: Vec<(String, String)>,
        gzip: bool,
    },
    /// One JSON object per line on stdout (no endpoint configured).
    Stdout,
}

/// How records are grouped into export requests.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchConfig {
    /// Most records per request.
    pub max_records: usize,
    /// Rough upper bound of one request's size (estimated from captured body sizes).
    pub max_bytes: usize,
    /// Longest a record waits for others before its batch is sent.
    pub max_delay: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_records: 512,
            max_bytes: 4 * 1024 * 1024,
            max_delay: Duration::from_secs(1),
        }
    }
}

/// Retries of one export request.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Attempts in total, the first included.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Longest wait a server's `Retry-After` may impose.
    pub max_retry_after: Duration,
    /// Per attempt, until the response body is read.
    pub request_timeout: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// llmtap's own export flags (CLI with env fallbacks, parsed by `config`).
#[derive(Debug, Clone, PartialEq)]
pub struct ExportFlags {
    /// `--max-record-bytes`: body + attributes of one record.
    pub max_record_bytes: usize,
    /// Exchanges the export queue holds before dropping.
    pub queue_capacity: usize,
}

impl Default for ExportFlags {
    fn default() -> Self {
        ExportFlags {
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
        }
    }
}

/// Validated export settings.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    pub destination: Destination,
    /// Resource attributes: service.name, service.version, service.instance.id and `OTEL_RESOURCE_ATTRIBUTES`.
    pub resource: Vec<(String, String)>,
    pub queue_capacity: usize,
    pub batch: BatchConfig,
    pub retry: RetryConfig,
    pub max_record_bytes: usize,
    /// Most bytes decoded per body: a little more than fits in a record, since redaction can shrink text.
    pub body_decode_limit: usize,
    /// TLS for an `https` endpoint; `None` = webpki and system roots.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// `--spool-dir`: records the endpoint does not take wait on disk (OTLP only).
    pub spool: Option<crate::export::SpoolSettings>,
}

/// Every problem found in the export settings, not only the first.
#[derive(Debug, thiserror::Error)]
#[error("invalid export configuration: {}", .problems.join("; "))]
pub struct ExportConfigError {
    pub problems: Vec<String>,
}

/// Reads a variable from the process environment (empty counts as unset).
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl ExportConfig {
    /// Builds the config; `env` looks a variable up (pass [`process_env`] in production).
    pub fn from_env_and_flags(
        env: &dyn Fn(&str) -> Option<String>,
        flags: &ExportFlags,
    ) -> Result<ExportConfig, ExportConfigError> {
        let get = |name: &str| {
            env(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut problems = Vec::new();
        let destination = destination(&get, &mut problems);
        let resource = resource(&get, &mut problems);
        let retry = RetryConfig {
            request_timeout: timeout(&get, &mut problems),
            ..RetryConfig::default()
        };
        let batch = batch(&get, &mut problems);
        if flags.max_record_bytes < MIN_MAX_RECORD_BYTES {
            problems.push(format!(
                "--max-record-bytes {} is below the minimum {MIN_MAX_RECORD_BYTES}",
                flags.max_record_bytes
            ));
        }
        if flags.queue_capacity == 0 {
            problems.push("export queue capacity must be at least 1".to_owned());
        }
        if !problems.is_empty() {
            return Err(ExportConfigError { problems });
        }
        Ok(ExportConfig {
            destination,
            resource,
            queue_capacity: flags.queue_capacity,
            batch,
            retry,
            max_record_bytes: flags.max_record_bytes,
            body_decode_limit: flags.max_record_bytes + flags.max_record_bytes / 4,
            tls: None,
            spool: None,
        })
    }
}

/// The standard batch knobs: `OTEL_BLRP_SCHEDULE_DELAY` (ms) and `OTEL_BLRP_MAX_EXPORT_BATCH_SIZE`.
fn batch(get: &dyn Fn(&str) -> Option<String>, problems: &mut Vec<String>) -> BatchConfig {
    let mut batch = BatchConfig::default();
    if let Some(raw) = get("OTEL_BLRP_SCHEDULE_DELAY") {
        match raw.parse::<u64>() {
            Ok(ms) => batch.max_delay = Duration::from_millis(ms),
            Err(_) => problems.push(format!(
                "OTEL_BLRP_SCHEDULE_DELAY {raw:?} is not a number of milliseconds"
            )),
        }
    }
    if let Some(raw) = get("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE") {
        match raw.parse::<usize>() {
            Ok(n) if n > 0 => batch.max_records = n,
            _ => problems.push(format!(
                "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE {raw:?} is not a positive number"
            )),
        }
    }
    batch
}

fn destination(get: &dyn Fn(&str) -> Option<String>, problems: &mut Vec<String>) -> Destination {
    if let Some(protocol) =
        get("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL").or_else(|| get("OTEL_EXPORTER_OTLP_PROTOCOL"))
        && protocol != "http/protobuf"
    {
        problems.push(format!(
            "OTLP protocol {protocol:?} is not supported: use http/protobuf"
        ));
    }
    let endpoint = match (
        get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"),
        get("OTEL_EXPORTER_OTLP_ENDPOINT"),
    ) {
        (Some(logs), _) => logs,
        (None, Some(base)) => format!("{}/v1/logs", base.trim_end_matches('/')),
        (None, None) => return Destination::Stdout,
    };
    match endpoint.parse::<http::Uri>() {
        Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {}
        _ => problems.push(format!("OTLP endpoint {endpoint:?} is not an http(s) URL")),
    }
    let mut headers = parse_pairs("OTEL_EXPORTER_OTLP_HEADERS", get, problems);
    for (name, value) in parse_pairs("OTEL_EXPORTER_OTLP_LOGS_HEADERS", get, problems) {
        // The logs-specific variable wins over the general one.
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
        headers.push((name, value));
    }
    for (name, value) in &headers {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err()
            || http::HeaderValue::from_str(value).is_err()
        {
            problems.push(format!("OTLP header {name:?} is not a valid HTTP header"));
        }
    }
    let gzip = compression(get, problems);
    Destination::Otlp {
        endpoint,
        headers,
        gzip,
    }
}

fn compression(get: &dyn Fn(&str) -> Option<String>, problems: &mut Vec<String>) -> bool {
    let value = get("OTEL_EXPORTER_OTLP_LOGS_COMPRESSION")
        .or_else(|| get("OTEL_EXPORTER_OTLP_COMPRESSION"));
    match value.as_deref() {
        None | Some("none") => false,
        Some("gzip") => true,
        Some(other) => {
            problems.push(format!(
                "OTLP compression {other:?} is not supported: use gzip or none"
            ));
            false
        }
    }
}

fn resource(
    get: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> Vec<(String, String)> {
    let mut attrs = parse_pairs("OTEL_RESOURCE_ATTRIBUTES", get, problems);
    // OTEL_SERVICE_NAME takes precedence over service.name in OTEL_RESOURCE_ATTRIBUTES.
    let name = get("OTEL_SERVICE_NAME")
        .or_else(|| {
            attrs
                .iter()
                .find(|(k, _)| k == SERVICE_NAME)
                .map(|(_, v)| v.clone())
        })
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
    set_if(&mut attrs, SERVICE_NAME, name, true);
    set_if(
        &mut attrs,
        SERVICE_VERSION,
        env!("CARGO_PKG_VERSION").to_owned(),
        false,
    );
    set_if(&mut attrs, SERVICE_INSTANCE_ID, random_instance_id(), false);
    attrs
}

/// Sets `key` to `value`, replacing an existing entry only when `replace` is true.
fn set_if(attrs: &mut Vec<(String, String)>, key: &str, value: String, replace: bool) {
    match attrs.iter_mut().find(|(k, _)| k == key) {
        Some(entry) if replace => entry.1 = value,
        Some(_) => {}
        None => attrs.push((key.to_owned(), value)),
    }
}

fn timeout(get: &dyn Fn(&str) -> Option<String>, problems: &mut Vec<String>) -> Duration {
    let name = "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT";
    let (name, raw) = match get(name) {
        Some(raw) => (name, raw),
        None => match get("OTEL_EXPORTER_OTLP_TIMEOUT") {
            Some(raw) => ("OTEL_EXPORTER_OTLP_TIMEOUT", raw),
            None => return RetryConfig::default().request_timeout,
        },
    };
    match raw.parse::<u64>() {
        Ok(ms) if ms > 0 => Duration::from_millis(ms),
        _ => {
            problems.push(format!(
                "{name}={raw:?} is not a positive number of milliseconds"
            ));
            RetryConfig::default().request_timeout
        }
    }
}

/// Parses `k=v,k2=v2` (W3C-baggage style, percent-encoded) from the variable `name`.
fn parse_pairs(
    name: &str,
    get: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> Vec<(String, String)> {
    let Some(raw) = get(name) else {
        return Vec::new();
    };
    let mut pairs = Vec::new();
    for item in raw
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        match item.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => pairs.push((
                percent_decode(key.trim()).into_owned(),
                percent_decode(value.trim()).into_owned(),
            )),
            // Echo only the key part: a header value may be a credential.
            _ => problems.push(format!(
                "{name}: entry {:?} is not key=value",
                item.split('=').next().unwrap_or_default()
            )),
        }
    }
    pairs
}

/// A random UUID v4 string, new for every process.
fn random_instance_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<ExportConfig, ExportConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ExportConfig::from_env_and_flags(&|name| map.get(name).cloned(), &ExportFlags::default())
    }

    fn resource_value<'a>(config: &'a ExportConfig, key: &str) -> Option<&'a str> {
        config
            .resource
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn endpoint_resolution() {
        let cases: &[(&[(&str, &str)], Destination)] = &[
            (&[], Destination::Stdout),
            (&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")], Destination::Stdout),
            (
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://loki:3100/otlp")],
                Destination::Otlp {
                    endpoint: "http://loki:3100/otlp/v1/logs".into(),
                    headers: vec![],
                    gzip: false,
                },
            ),
            (
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")],
                Destination::Otlp {
                    endpoint: "http://collector:4318/v1/logs".into(),
                    headers: vec![],
                    gzip: false,
                },
            ),
            (
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:4318"),
                    (
                        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
                        "https://loki.example/otlp/v1/logs",
                    ),
                ],
                Destination::Otlp {
                    endpoint: "https://loki.example/otlp/v1/logs".into(),
                    headers: vec![],
                    gzip: false,
                },
            ),
            (
                &[(
                    "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
                    "http://loki:3100/custom",
                )],
                Destination::Otlp {
                    endpoint: "http://loki:3100/custom".into(),
                    headers: vec![],
                    gzip: false,
                },
            ),
        ];
        for (vars, want) in cases {
            assert_eq!(&config(vars).unwrap().destination, want, "{vars:?}");
        }
    }

    #[test]
    fn headers_are_parsed_and_decoded() {
        let c = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x:4318"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "Authorization=Basic%20dXNlcjpwYXNz, X-Scope-OrgID=tenant1",
            ),
            ("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "x-scope-orgid=tenant2"),
        ])
        .unwrap();
        let Destination::Otlp { headers, .. } = c.destination else {
            panic!("not otlp")
        };
        assert_eq!(
            headers,
            vec![
                ("Authorization".to_owned(), "Basic dXNlcjpwYXNz".to_owned()),
                ("x-scope-orgid".to_owned(), "tenant2".to_owned()),
            ]
        );
    }

    #[test]
    fn resource_attributes() {
        let c = config(&[]).unwrap();
        assert_eq!(resource_value(&c, "service.name"), Some("llmtap"));
        assert_eq!(
            resource_value(&c, "service.version"),
            Some(env!("CARGO_PKG_VERSION"))
        );
        let id = resource_value(&c, "service.instance.id").unwrap();
        assert_eq!(id.len(), 36);
        assert_ne!(
            id,
            resource_value(&config(&[]).unwrap(), "service.instance.id").unwrap()
        );

        let c = config(&[
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=fromattrs,deployment.environment.name=prod%20eu,service.instance.id=pod-1"),
        ])
        .unwrap();
        assert_eq!(resource_value(&c, "service.name"), Some("fromattrs"));
        assert_eq!(
            resource_value(&c, "deployment.environment.name"),
            Some("prod eu")
        );
        assert_eq!(resource_value(&c, "service.instance.id"), Some("pod-1"));

        let c = config(&[
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=a"),
            ("OTEL_SERVICE_NAME", "agent-proxy"),
        ])
        .unwrap();
        assert_eq!(resource_value(&c, "service.name"), Some("agent-proxy"));
        assert_eq!(
            c.resource
                .iter()
                .filter(|(k, _)| k == "service.name")
                .count(),
            1
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let map: HashMap<&str, &str> = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "loki:3100"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "novalue,x=ok"),
            ("OTEL_RESOURCE_ATTRIBUTES", "=nokey"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon"),
        ]
        .into_iter()
        .collect();
        let flags = ExportFlags {
            max_record_bytes: 1000,
            queue_capacity: 0,
        };
        let err =
            ExportConfig::from_env_and_flags(&|n| map.get(n).map(|v| (*v).to_owned()), &flags)
                .unwrap_err();
        assert_eq!(err.problems.len(), 7, "{err}");
    }

    #[test]
    fn timeout_from_env() {
        let c = config(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "2500")]).unwrap();
        assert_eq!(c.retry.request_timeout, Duration::from_millis(2500));
    }

    #[test]
    fn compression_from_env() {
        let gzip = |vars: &[(&str, &str)]| match config(vars).map(|c| c.destination) {
            Ok(Destination::Otlp { gzip, .. }) => Some(gzip),
            _ => None,
        };
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x:4318");
        assert_eq!(gzip(&[endpoint]), Some(false));
        assert_eq!(
            gzip(&[endpoint, ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")]),
            Some(true)
        );
        let both = [
            endpoint,
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_LOGS_COMPRESSION", "none"),
        ];
        assert_eq!(gzip(&both), Some(false));
        assert_eq!(
            gzip(&[endpoint, ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")]),
            None
        );
    }
}
