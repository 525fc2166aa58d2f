//! In-test OTLP/HTTP logs receiver: decodes `ExportLogsServiceRequest`, stores it, answers as told.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use prost::Message;
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// How the receiver answers a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// What Loki answers: 204 with an empty body. The records are stored.
    Accept,
    /// This status with a short text body; records are not stored unless it is 2xx.
    Status(u16),
    /// This status with a `Retry-After: <seconds>` header.
    RetryAfter(u16, u64),
    /// Hold the request without answering (until the client gives up).
    Stall,
}

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Hit {
    pub at: Instant,
    pub path: String,
    pub headers: http::HeaderMap,
    /// The protobuf bytes exactly as received.
    pub raw: Bytes,
    pub reply: Reply,
}

/// One log record with its resource and scope, from an accepted request.
#[derive(Debug, Clone)]
pub struct Received {
    pub resource: HashMap<String, Val>,
    pub scope_name: String,
    pub scope_version: String,
    pub record: LogRecord,
}

impl Received {
    pub fn attrs(&self) -> HashMap<String, Val> {
        attributes(&self.record)
    }

    pub fn body(&self) -> String {
        match self.record.body.as_ref().map(val) {
            Some(Val::Str(s)) => s,
            other => panic!("record body is not a string: {other:?}"),
        }
    }
}

/// An attribute value, simplified for assertions.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Str(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    Array(Vec<Val>),
    Other,
}

impl Val {
    pub fn str(&self) -> &str {
        match self {
            Val::Str(s) => s,
            other => panic!("not a string: {other:?}"),
        }
    }
}

pub fn val(value: &AnyValue) -> Val {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => Val::Str(s.clone()),
        Some(any_value::Value::IntValue(i)) => Val::Int(*i),
        Some(any_value::Value::DoubleValue(d)) => Val::Double(*d),
        Some(any_value::Value::BoolValue(b)) => Val::Bool(*b),
        Some(any_value::Value::ArrayValue(a)) => Val::Array(a.values.iter().map(val).collect()),
        _ => Val::Other,
    }
}

/// A record's attributes as a map (panics on a duplicate key: OTLP forbids them).
pub fn attributes(record: &LogRecord) -> HashMap<String, Val> {
    let mut map = HashMap::new();
    for kv in &record.attributes {
        let value = kv.value.as_ref().map(val).unwrap_or(Val::Other);
        assert!(
            map.insert(kv.key.clone(), value).is_none(),
            "duplicate attribute {}",
            kv.key
        );
    }
    map
}

#[derive(Default)]
struct State {
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Option<Reply>>,
    hits: Mutex<Vec<Hit>>,
    received: Mutex<Vec<Received>>,
    changed: Notify,
}

/// A running receiver on 127.0.0.1:<random port>; stops when dropped.
pub struct OtlpReceiver {
    pub addr: SocketAddr,
    state: Arc<State>,
    /// The accept loop (it owns the connections); `None` while down.
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().unwrap().take() {
            task.abort();
        }
    }
}

impl OtlpReceiver {
    pub async fn start() -> OtlpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&state)));
        OtlpReceiver {
            addr,
            state,
            task: Mutex::new(Some(task)),
        }
    }

    /// Closes the port and every open connection: clients get "connection refused".
    pub async fn down(&self) {
        let task = self.task.lock().unwrap().take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same port (after [`down`](Self::down)).
    pub async fn up(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("receiver: rebinding {}: {e}; retrying", self.addr);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("receiver: cannot listen on {} again: {e}", self.addr),
            }
        };
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&self.state)));
        *self.task.lock().unwrap() = Some(task);
    }

    /// The full logs URL, as for `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1/logs", self.addr)
    }

    /// Answer every request (after the scripted ones) like this; the default is `Accept`.
    pub fn set_default(&self, reply: Reply) {
        *self.state.default.lock().unwrap() = Some(reply);
    }

    /// Answer the next requests like these, in order.
    pub fn push_replies(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().unwrap().extend(replies);
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.state.hits.lock().unwrap().clone()
    }

    pub fn records(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Waits until `n` records were accepted (panics after `timeout`).
    pub async fn wait_for_records(&self, n: usize, timeout: Duration) -> Vec<Received> {
        self.wait(
            timeout,
            || self.records().len() >= n,
            &format!("{n} records"),
        )
        .await;
        self.records()
    }

    /// Waits until `n` requests arrived, whatever the answer (panics after `timeout`).
    pub async fn wait_for_hits(&self, n: usize, timeout: Duration) -> Vec<Hit> {
        self.wait(timeout, || self.hits().len() >= n, &format!("{n} requests"))
            .await;
        self.hits()
    }

    async fn wait(&self, timeout: Duration, done: impl Fn() -> bool, what: &str) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.state.changed.notified();
            tokio::pin!(notified);
            // Register before checking, so a notification between the check and the wait is not lost.
            notified.as_mut().enable();
            if done() {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "receiver: no {what} within {timeout:?} (hits: {})",
                    self.hits().len()
                );
            }
        }
    }
}

/// An endpoint where nothing listens: connections are refused.
pub fn down_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/v1/logs")
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    // Connections live in the set: aborting this task closes them with the listener.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let state = Arc::clone(&state);
        connections.spawn(async move {
            let service = service_fn(move |request| handle(request, Arc::clone(&state)));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    request: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let headers = request.headers().clone();
    let raw = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let reply = {
        let scripted = state.script.lock().unwrap().pop_front();
        scripted.unwrap_or_else(|| {
            state
                .default
                .lock()
                .unwrap()
                .clone()
                .unwrap_or(Reply::Accept)
        })
    };
    let hit = Hit {
        at: Instant::now(),
        path,
        headers: headers.clone(),
        raw: raw.clone(),
        reply: reply.clone(),
    };
    state.hits.lock().unwrap().push(hit);
    let response = match reply {
        Reply::Accept => {
            store(&state, &headers, &raw);
            Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(Full::default())
        }
        Reply::Status(code) => {
            if (200..300).contains(&code) {
                store(&state, &headers, &raw);
            }
            Response::builder()
                .status(code)
                .body(Full::new(Bytes::from(format!("status {code} as told"))))
        }
        Reply::RetryAfter(code, seconds) => Response::builder()
            .status(code)
            .header("retry-after", seconds.to_string())
            .body(Full::new(Bytes::from_static(b"slow down"))),
        Reply::Stall => {
            state.changed.notify_waiters();
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(Full::default())
        }
    };
    state.changed.notify_waiters();
    Ok(response.unwrap())
}

/// The protobuf bytes of a request body, gunzipped when the client compressed it.
pub fn payload(headers: &http::HeaderMap, raw: &[u8]) -> Vec<u8> {
    let gzip = headers.get("content-encoding").is_some_and(|v| v == "gzip");
    if !gzip {
        return raw.to_vec();
    }
    let mut out = Vec::new();
    let mut decoder = flate2::read::GzDecoder::new(raw);
    std::io::Read::read_to_end(&mut decoder, &mut out).expect("valid gzip");
    out
}

fn store(state: &State, headers: &http::HeaderMap, raw: &[u8]) {
    let payload = payload(headers, raw);
    let request = ExportLogsServiceRequest::decode(payload.as_slice())
        .expect("body is an ExportLogsServiceRequest");
    let mut received = state.received.lock().unwrap();
    for resource_logs in request.resource_logs {
        let resource: HashMap<String, Val> = resource_logs
            .resource
            .map(|r| r.attributes)
            .unwrap_or_default()
            .iter()
            .map(|kv| {
                (
                    kv.key.clone(),
                    kv.value.as_ref().map(val).unwrap_or(Val::Other),
                )
            })
            .collect();
        for scope_logs in resource_logs.scope_logs {
            let scope = scope_logs.scope.unwrap_or_default();
            for record in scope_logs.log_records {
                received.push(Received {
                    resource: resource.clone(),
                    scope_name: scope.name.clone(),
                    scope_version: scope.version.clone(),
                    record,
                });
            }
        }
    }
}
