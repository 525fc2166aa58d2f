//! A local OTLP/HTTP logs receiver: `POST /v1/logs` (protobuf or JSON, gzip or not), decodes
//! `ExportLogsServiceRequest` with opentelemetry-proto and counts requests, bytes and log records.

use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use prost::Message;
use serde::Serialize;
use tokio::net::TcpListener;

#[derive(Default, Debug)]
pub struct Counters {
    pub requests: AtomicU64,
    pub bytes: AtomicU64,
    pub records: AtomicU64,
    pub decode_errors: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Snapshot {
    pub requests: u64,
    pub bytes: u64,
    pub records: u64,
    pub decode_errors: u64,
}

impl Counters {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            requests: self.requests.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
            decode_errors: self.decode_errors.load(Ordering::Relaxed),
        }
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
    let counters = Arc::new(Counters::default());
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
                while let Ok((tcp, _)) = listener.accept().await {
                    let c = c.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| handle(req, c.clone()));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tcp), svc)
                            .await;
                    });
                }
            });
        })?;
    Ok((addr, counters))
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
    match count_records(&raw, json) {
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

fn count_records(raw: &[u8], json: bool) -> Option<u64> {
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
    Some(
        req.resource_logs
            .iter()
            .flat_map(|rl| rl.scope_logs.iter())
            .map(|sl| sl.log_records.len() as u64)
            .sum(),
    )
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
