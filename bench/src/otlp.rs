//! A local OTLP/HTTP logs receiver: `POST /v1/logs` (protobuf or JSON, gzip or not), decodes
//! `ExportLogsServiceRequest` with opentelemetry-proto and counts requests, bytes and log records.
//!
//! For the soak it also reads each record's `url.full` attribute: a call's unique `soak=ID` query
//! value is counted per ID (so both loss and duplicates show), `llmtap.egress` records by route.
//! It can be taken down and brought back ([`Mode`]): `Refuse` closes the listener (new connections
//! are refused; open ones finish the request in hand, then close), `Unavailable` keeps accepting
//! but answers every export 503 without counting it. A record is counted only when answered 200.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Whether the receiver takes exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Up,
    /// Listener closed: connections refused.
    Refuse,
    /// Listening, every export answered 503.
    #[serde(rename = "503")]
    Unavailable,
}

/// The query key that carries a call's unique id in `url.full`.
pub const MARK: &str = "soak=";

#[derive(Debug, Default)]
pub struct Marks {
    /// Times each `soak=` id arrived in an accepted export.
    pub ids: HashMap<String, u32>,
    /// Records of other kinds: `llmtap.egress` by route, anything else as `other`.
    pub unmarked: BTreeMap<String, u64>,
}

#[derive(Debug)]
pub struct Counters {
    pub requests: AtomicU64,
    pub bytes: AtomicU64,
    pub records: AtomicU64,
    pub decode_errors: AtomicU64,
    /// Exports answered 503 while `Unavailable`, and connections accepted.
    pub refused_503: AtomicU64,
    pub connections: AtomicU64,
    pub marks: Mutex<Marks>,
    mode: watch::Sender<Mode>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Snapshot {
    pub requests: u64,
    pub bytes: u64,
    pub records: u64,
    pub decode_errors: u64,
}

impl Counters {
    fn new() -> Counters {
        Counters {
            requests: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            records: AtomicU64::new(0),
            decode_errors: AtomicU64::new(0),
            refused_503: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            marks: Mutex::new(Marks::default()),
            mode: watch::Sender::new(Mode::Up),
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            requests: self.requests.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
            decode_errors: self.decode_errors.load(Ordering::Relaxed),
        }
    }

    pub fn set_mode(&self, m: Mode) {
        self.mode.send_replace(m);
    }

    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// Distinct `soak=` ids received so far.
    pub fn unique_marks(&self) -> usize {
        self.marks.lock().map(|m| m.ids.len()).unwrap_or(0)
    }

    /// Forgets the ids and unmarked counts (start of a soak).
    pub fn reset_marks(&self) {
        if let Ok(mut m) = self.marks.lock() {
            *m = Marks::default();
        }
    }

    pub fn take_marks(&self) -> Marks {
        self.marks
            .lock()
            .map(|mut m| std::mem::take(&mut *m))
            .unwrap_or_default()
    }
}

impl Snapshot {
    pub fn since(self, before: Snapshot) -> Snapshot {
        Snapshot {
            requests: self.requests - before.requests,
            bytes: self.bytes - before.bytes,
            records: self.records - before.records,
            decode_errors: self.decode_errors - before.decode_errors,
        }
    }
}

/// Starts the receiver on its own thread and single-threaded runtime; returns its address.
pub fn start() -> crate::Res<(SocketAddr, Arc<Counters>)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let counters = Arc::new(Counters::new());
    let c = counters.clone();
    std::thread::Builder::new()
        .name("otlp-receiver".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(listener) = TcpListener::from_std(listener) else {
                    return;
                };
                accept_loop(listener, addr, c).await;
            });
        })?;
    Ok((addr, counters))
}

/// Accepts while the mode is not `Refuse`; drops the listener while it is and binds the same
/// address again when it is not.
async fn accept_loop(first: TcpListener, addr: SocketAddr, c: Arc<Counters>) {
    let mut mode = c.mode.subscribe();
    let mut listener = Some(first);
    loop {
        let m = *mode.borrow_and_update();
        if m == Mode::Refuse {
            listener = None;
        } else if listener.is_none() {
            match TcpListener::bind(addr).await {
                Ok(l) => listener = Some(l),
                Err(e) => {
                    eprintln!("bench: OTLP receiver cannot bind {addr} again: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let Some(l) = &listener else {
            if mode.changed().await.is_err() {
                return;
            }
            continue;
        };
        tokio::select! {
            r = l.accept() => match r {
                Ok((tcp, _)) => {
                    c.connections.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(serve_conn(tcp, c.clone()));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
            r = mode.changed() => if r.is_err() { return },
        }
    }
}

/// One connection; when the receiver goes to `Refuse` it finishes the request in hand and closes.
async fn serve_conn(tcp: tokio::net::TcpStream, c: Arc<Counters>) {
    let mut mode = c.mode.subscribe();
    let c2 = c.clone();
    let svc = hyper::service::service_fn(move |req| handle(req, c2.clone()));
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc);
    tokio::pin!(conn);
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            r = mode.changed() => {
                if r.is_err() || *mode.borrow_and_update() == Mode::Refuse {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(15), conn.as_mut()).await;
                    return;
                }
            }
        }
    }
}

async fn handle(
    req: Request<Incoming>,
    c: Arc<Counters>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let gzip = req
        .headers()
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let json = req
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(answer(StatusCode::BAD_REQUEST)),
    };
    if c.mode() != Mode::Up {
        c.refused_503.fetch_add(1, Ordering::Relaxed);
        return Ok(answer(StatusCode::SERVICE_UNAVAILABLE));
    }
    c.requests.fetch_add(1, Ordering::Relaxed);
    c.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    let raw = if gzip {
        let mut out = Vec::new();
        match flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut out) {
            Ok(_) => Bytes::from(out),
            Err(_) => {
                c.decode_errors.fetch_add(1, Ordering::Relaxed);
                return Ok(answer(StatusCode::BAD_REQUEST));
            }
        }
    } else {
        body
    };
    match count_records(&raw, json, &c) {
        Some(n) => {
            c.records.fetch_add(n, Ordering::Relaxed);
            Ok(answer(StatusCode::OK))
        }
        None => {
            c.decode_errors.fetch_add(1, Ordering::Relaxed);
            Ok(answer(StatusCode::BAD_REQUEST))
        }
    }
}

fn count_records(raw: &[u8], json: bool, c: &Counters) -> Option<u64> {
    if json {
        let v: serde_json::Value = serde_json::from_slice(raw).ok()?;
        let mut n = 0u64;
        for rl in v.get("resourceLogs")?.as_array()? {
            for sl in rl
                .get("scopeLogs")
                .and_then(|x| x.as_array())
                .into_iter()
                .flatten()
            {
                n += sl
                    .get("logRecords")
                    .and_then(|x| x.as_array())
                    .map_or(0, |a| a.len() as u64);
            }
        }
        return Some(n);
    }
    let req = ExportLogsServiceRequest::decode(raw).ok()?;
    let mut n = 0u64;
    let mut marks = c.marks.lock().unwrap_or_else(|e| e.into_inner());
    for lr in req
        .resource_logs
        .iter()
        .flat_map(|rl| rl.scope_logs.iter())
        .flat_map(|sl| sl.log_records.iter())
    {
        n += 1;
        let attr = |name: &str| {
            lr.attributes
                .iter()
                .find(|kv| kv.key == name)
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(any_value::Value::StringValue(s)) => Some(s.as_str()),
                    _ => None,
                })
        };
        if let Some(id) = attr("url.full").and_then(mark_of) {
            *marks.ids.entry(id.to_string()).or_default() += 1;
            continue;
        }
        let kind = if lr.event_name == "llmtap.egress" {
            format!("egress {}", attr("llmtap.egress.route").unwrap_or("?"))
        } else {
            "other".to_string()
        };
        *marks.unmarked.entry(kind).or_default() += 1;
    }
    Some(n)
}

/// The value of `soak=` in a URL's query.
pub fn mark_of(url: &str) -> Option<&str> {
    let q = url.split_once('?')?.1;
    q.split('&').find_map(|kv| kv.strip_prefix(MARK))
}

fn answer(status: StatusCode) -> Response<Full<Bytes>> {
    // An empty ExportLogsServiceResponse is zero bytes of protobuf.
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/x-protobuf"),
    );
    r
}
