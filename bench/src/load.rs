//! Closed-loop load: N workers, each with its own keep-alive connection (or a new one per request),
//! optionally paced to a global rate; percentiles of latency and time to first body byte.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::client::{self, Target};

#[derive(Clone, Debug)]
pub struct Spec {
    pub concurrency: usize,
    /// Requests started before `warmup` has passed are not measured (duration mode).
    pub warmup: Duration,
    /// Measured duration after warmup; None = count mode.
    pub duration: Option<Duration>,
    /// Count mode: total requests, of which the first `warmup_requests` are not measured.
    pub requests: u64,
    pub warmup_requests: u64,
    pub new_conn: bool,
    /// Global pacing, requests per second (open-loop-ish schedule, closed-loop workers).
    pub rate: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Pct {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
    pub n: usize,
}

impl Pct {
    /// Percentiles in milliseconds of µs samples.
    pub fn of(v: &mut [u32]) -> Pct {
        if v.is_empty() {
            return Pct::default();
        }
        v.sort_unstable();
        let at = |p: f64| {
            let idx = ((p / 100.0) * v.len() as f64).ceil() as usize;
            v[idx.clamp(1, v.len()) - 1] as f64 / 1000.0
        };
        let mean = v.iter().map(|x| *x as f64).sum::<f64>() / v.len() as f64 / 1000.0;
        Pct {
            p50: at(50.0),
            p90: at(90.0),
            p99: at(99.0),
            max: v[v.len() - 1] as f64 / 1000.0,
            mean,
            n: v.len(),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Outcome {
    /// Measured successful requests.
    pub ok: u64,
    /// Measured failed requests.
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    /// All requests sent, warmup included (what the proxy saw).
    pub sent_total: u64,
    pub ok_total: u64,
    pub window_s: f64,
    pub rps: f64,
    pub latency_ms: Pct,
    pub ttfb_ms: Pct,
    pub headers_ms: Pct,
    pub bytes_per_request: f64,
    /// Cores used by processes outside the benchmark during the run (other work on the machine).
    pub other_cores: f64,
}

struct Rec {
    measured: bool,
    sample: Result<client::Sample, String>,
}

/// Runs the load on the current runtime.
pub async fn run(target: &Target, spec: &Spec) -> Outcome {
    let body = client::request_body(target.stream);
    let t0 = Instant::now();
    let measure_from = t0 + spec.warmup;
    let deadline = spec.duration.map(|d| measure_from + d);
    let tickets = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for _ in 0..spec.concurrency {
        let (t, s, body, tickets) = (target.clone(), spec.clone(), body.clone(), tickets.clone());
        handles.push(tokio::spawn(async move {
            worker(&t, &s, &body, &tickets, t0, measure_from, deadline).await
        }));
    }
    let mut recs = Vec::new();
    for h in handles {
        if let Ok(r) = h.await {
            recs.extend(r);
        }
    }
    let end = Instant::now();
    summarize(
        recs,
        spec,
        measure_from,
        deadline.unwrap_or(end).min(end),
        t0,
    )
}

async fn worker(
    t: &Target,
    s: &Spec,
    body: &bytes::Bytes,
    tickets: &AtomicU64,
    t0: Instant,
    measure_from: Instant,
    deadline: Option<Instant>,
) -> Vec<Rec> {
    let mut out = Vec::new();
    let mut conn: Option<client::Conn> = None;
    loop {
        let k = tickets.fetch_add(1, Ordering::Relaxed);
        if let Some(rate) = s.rate {
            let due = t0 + Duration::from_secs_f64(k as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let start = Instant::now();
        match deadline {
            Some(dl) if start >= dl => break,
            None if k >= s.requests => break,
            _ => {}
        }
        let measured = match deadline {
            Some(_) => start >= measure_from,
            None => k >= s.warmup_requests,
        };
        let result = async {
            if conn.is_none() {
                conn = Some(client::connect(t).await?);
            }
            match conn.as_mut() {
                Some(c) => client::one(c, t, body, start).await,
                None => Err("no connection".to_string()),
            }
        }
        .await;
        if result.is_err() || s.new_conn {
            conn = None;
        }
        out.push(Rec {
            measured,
            sample: result,
        });
    }
    out
}

fn summarize(recs: Vec<Rec>, spec: &Spec, from: Instant, end: Instant, t0: Instant) -> Outcome {
    let mut o = Outcome {
        sent_total: recs.len() as u64,
        ..Outcome::default()
    };
    let (mut lat, mut ttfb, mut hdr) = (Vec::new(), Vec::new(), Vec::new());
    let mut bytes = 0u64;
    for r in &recs {
        match &r.sample {
            Ok(s) => {
                o.ok_total += 1;
                if r.measured {
                    o.ok += 1;
                    lat.push(s.total_us);
                    ttfb.push(s.first_us);
                    hdr.push(s.headers_us);
                    bytes += s.bytes;
                }
            }
            Err(e) => {
                if r.measured {
                    o.errors += 1;
                }
                let short: String = e.chars().take(80).collect();
                *o.error_kinds.entry(short).or_default() += 1;
            }
        }
    }
    o.window_s = if spec.duration.is_some() {
        end.saturating_duration_since(from).as_secs_f64().max(1e-6)
    } else {
        // Count mode: sum of measured latencies (requests are sequential per worker).
        (lat.iter().map(|x| *x as f64).sum::<f64>() / 1e6 / spec.concurrency as f64).max(1e-6)
    };
    let _ = t0;
    o.rps = o.ok as f64 / o.window_s;
    o.bytes_per_request = if o.ok > 0 {
        bytes as f64 / o.ok as f64
    } else {
        0.0
    };
    o.latency_ms = Pct::of(&mut lat);
    o.ttfb_ms = Pct::of(&mut ttfb);
    o.headers_ms = Pct::of(&mut hdr);
    o
}
