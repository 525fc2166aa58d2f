//! The soak scenario (issue 9, item 11): `--soak-duration` of paced mixed traffic (JSON, SSE,
//! tunnelled, uploads) through one llmtap child with `--spool-dir`, while the OTLP receiver goes
//! down and up every `--soak-flap`. Every intercepted call carries a unique `soak=<kind><n>` query
//! value, which llmtap records in `url.full`; the receiver counts records per id, so records lost
//! and duplicated are both known. At the end the receiver is up for good and the bench waits
//! (bounded by `--soak-drain`) until llmtap's `/healthz` says queue and spool are empty.
//!
//! Latency is compared with a direct run of the same mix (`--soak-direct`, client → mock) made
//! first; with `--soak-direct 0` it is compared with llmtap's own first window instead.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use crate::client::{self, Conn, Target};
use crate::load::{Outcome, Pct};
use crate::otlp::{Counters, MARK, Mode};
use crate::procs::{self, Llmtap};
use crate::scenarios::{Ctx, ProcStats, ScenarioResult};
use crate::{Opts, Res};

/// Calls of one kind in flight at most; beyond it the schedule waits (and the lag is reported).
const MAX_IN_FLIGHT: usize = 256;
/// A pooled client connection idle this long is dropped rather than reused (llmtap closes idle
/// client connections after `--idle-timeout`, 30 s by default).
const POOL_IDLE: Duration = Duration::from_secs(5);
/// Total sizes of the upload request bodies, used in turn.
const UPLOAD_KIB: [usize; 9] = [64, 96, 128, 192, 256, 384, 512, 768, 1024];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Json,
    Sse,
    Tunnel,
    Upload,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Json, Kind::Sse, Kind::Tunnel, Kind::Upload];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Json => "json",
            Kind::Sse => "sse",
            Kind::Tunnel => "tunnel",
            Kind::Upload => "upload",
        }
    }

    fn letter(self) -> char {
        match self {
            Kind::Json => 'j',
            Kind::Sse => 's',
            Kind::Tunnel => 't',
            Kind::Upload => 'u',
        }
    }

    /// Intercepted (and so recorded) by llmtap; the tunnel host is not in `--llm-hosts`.
    fn recorded(self) -> bool {
        self != Kind::Tunnel
    }
}

/// `json=50,sse=20,tunnel=25,upload=5` → each kind's share of `--soak-rate`.
pub fn parse_mix(s: &str) -> Res<Vec<(Kind, f64)>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, w) = part
            .split_once('=')
            .ok_or_else(|| format!("--soak-mix: {part:?} is not KIND=WEIGHT"))?;
        let kind = Kind::ALL
            .into_iter()
            .find(|x| x.name() == k.trim())
            .ok_or_else(|| format!("--soak-mix: unknown kind {k:?} (json, sse, tunnel, upload)"))?;
        let w: f64 = w
            .trim()
            .parse()
            .map_err(|_| format!("--soak-mix: bad weight {w:?}"))?;
        if !(w.is_finite() && w >= 0.0) {
            return Err(format!("--soak-mix: bad weight {w}").into());
        }
        out.push((kind, w));
    }
    let sum: f64 = out.iter().map(|x| x.1).sum();
    if sum <= 0.0 {
        return Err("--soak-mix: weights sum to 0".into());
    }
    Ok(out.into_iter().map(|(k, w)| (k, w / sum)).collect())
}

/// The receiver's down phases: `refuse`, `503`, or `alternate` (refuse, then 503, …).
fn down_modes(s: &str) -> Res<Vec<Mode>> {
    match s {
        "alternate" => Ok(vec![Mode::Refuse, Mode::Unavailable]),
        "refuse" => Ok(vec![Mode::Refuse]),
        "503" => Ok(vec![Mode::Unavailable]),
        _ => Err(format!("--soak-down: {s:?} is not alternate, refuse or 503").into()),
    }
}

/// What one kind sends.
#[derive(Clone)]
struct KindPlan {
    kind: Kind,
    rate: f64,
    stream: bool,
    /// Path and query before the `soak=` id.
    path: String,
    bodies: Arc<Vec<Bytes>>,
}

fn plans(o: &Opts) -> Res<Vec<KindPlan>> {
    let mix = parse_mix(&o.soak_mix)?;
    let small = Arc::new(vec![client::request_body(false)]);
    let mut out = Vec::new();
    for (kind, share) in mix {
        let (stream, path, bodies) = match kind {
            Kind::Json | Kind::Tunnel => (false, "/v1/messages".to_string(), small.clone()),
            Kind::Sse => (
                true,
                format!(
                    "/v1/messages?events={}&delay_ms={}",
                    o.sse_events, o.sse_delay_ms
                ),
                Arc::new(vec![client::request_body(true)]),
            ),
            Kind::Upload => (
                false,
                "/v1/messages".to_string(),
                Arc::new(UPLOAD_KIB.iter().map(|k| upload_body(k * 1024)).collect()),
            ),
        };
        out.push(KindPlan {
            kind,
            rate: o.soak_rate * share,
            stream,
            path,
            bodies,
        });
    }
    Ok(out)
}

/// A Messages request of exactly `total` bytes: one long user message of words drawn at random
/// (so it compresses about like prose, not like a repeated line).
fn upload_body(total: usize) -> Bytes {
    const WORDS: &[&str] = &[
        "the", "proxy", "records", "every", "call", "while", "receiver", "is", "down", "spool",
        "disk", "order", "batch", "retry", "stream", "token", "model", "usage", "latency", "bound",
        "memory", "flat", "soak", "upload", "tunnel", "event", "delta", "message", "stop", "json",
        "export", "queue", "limit", "timeout", "client", "server", "upstream", "request", "body",
        "header", "status", "minute", "second", "lost", "once", "exactly", "again", "restart",
        "signal", "flush", "drain", "append", "file", "cut", "short", "damage", "report", "crash",
        "never", "always", "with", "from", "into", "about",
    ];
    let head = r#"{"model":"claude-sonnet-4-5","max_tokens":256,"stream":false,"system":"Summarise the attached log.","messages":[{"role":"user","content":""#;
    let tail = r#""}]}"#;
    let want = total.saturating_sub(head.len() + tail.len());
    let mut s = String::with_capacity(total + 16);
    s.push_str(head);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ total as u64;
    while s.len() < head.len() + want {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        s.push_str(WORDS[(x >> 33) as usize % WORDS.len()]);
        s.push_str(if (x >> 20).is_multiple_of(13) {
            ". "
        } else {
            " "
        });
    }
    s.truncate(head.len() + want);
    s.push_str(tail);
    Bytes::from(s)
}

/// One call as the load generator saw it.
#[derive(Clone, Debug)]
struct CallRec {
    kind: Kind,
    id: u64,
    /// Seconds since the load began.
    at_s: f32,
    ok: bool,
    /// A response head came back (llmtap saw the exchange).
    answered: bool,
    total_us: u32,
    ttfb_us: u32,
    err: Option<String>,
}

#[derive(Default)]
struct Pool {
    idle: Mutex<Vec<(Conn, Instant)>>,
    opened: AtomicU64,
}

impl Pool {
    fn take(&self) -> Option<Conn> {
        let mut v = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        v.retain(|(c, t)| !c.is_closed() && now.duration_since(*t) < POOL_IDLE);
        v.pop().map(|x| x.0)
    }

    fn put(&self, c: Conn) {
        if !c.is_closed() {
            let mut v = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            v.push((c, Instant::now()));
        }
    }
}

struct LoadOut {
    calls: Vec<CallRec>,
    /// Connections opened (through llmtap: CONNECTs, each one `llmtap.egress` record).
    connects: BTreeMap<Kind, u64>,
    /// Longest a call started after its scheduled time.
    max_lag_ms: f64,
    window_s: f64,
}

async fn run_load(
    kinds: Vec<(KindPlan, Target)>,
    duration: Duration,
    ids: Arc<AtomicU64>,
) -> LoadOut {
    let t0 = Instant::now();
    let end = t0 + duration;
    let out = Arc::new(Mutex::new(Vec::new()));
    let n = kinds.len().max(1) as f64;
    let mut drivers = Vec::new();
    for (i, (kp, t)) in kinds.into_iter().enumerate() {
        // Spread the kinds' schedules apart within one tick.
        let offset = if kp.rate > 0.0 {
            Duration::from_secs_f64(i as f64 / n / kp.rate)
        } else {
            Duration::ZERO
        };
        let (ids, out) = (ids.clone(), out.clone());
        drivers.push(tokio::spawn(async move {
            let kind = kp.kind;
            (kind, drive(kp, t, t0 + offset, end, ids, out).await)
        }));
    }
    let mut connects = BTreeMap::new();
    let mut max_lag_ms = 0.0f64;
    for d in drivers {
        if let Ok((kind, (opened, lag))) = d.await {
            connects.insert(kind, opened);
            max_lag_ms = max_lag_ms.max(lag);
        }
    }
    let window_s = t0
        .elapsed()
        .as_secs_f64()
        .min(duration.as_secs_f64().max(1e-6));
    let calls = std::mem::take(&mut *out.lock().unwrap_or_else(|e| e.into_inner()));
    LoadOut {
        calls,
        connects,
        max_lag_ms,
        window_s,
    }
}

/// One kind's paced schedule: call k is due at `t0 + k / rate`, each call its own task.
async fn drive(
    kp: KindPlan,
    t: Target,
    t0: Instant,
    end: Instant,
    ids: Arc<AtomicU64>,
    out: Arc<Mutex<Vec<CallRec>>>,
) -> (u64, f64) {
    if kp.rate <= 0.0 {
        return (0, 0.0);
    }
    let (kp, t) = (Arc::new(kp), Arc::new(t));
    let pool = Arc::new(Pool::default());
    let gate = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut set = tokio::task::JoinSet::new();
    let mut max_lag = 0.0f64;
    for k in 0u64.. {
        let due = t0 + Duration::from_secs_f64(k as f64 / kp.rate);
        if due >= end {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let Ok(permit) = gate.clone().acquire_owned().await else {
            break;
        };
        max_lag = max_lag.max(due.elapsed().as_secs_f64() * 1000.0);
        while set.try_join_next().is_some() {}
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let (kp, t, pool, out) = (kp.clone(), t.clone(), pool.clone(), out.clone());
        let load_t0 = t0;
        set.spawn(async move {
            let rec = call(&kp, &t, &pool, id, load_t0).await;
            drop(permit);
            out.lock().unwrap_or_else(|e| e.into_inner()).push(rec);
        });
    }
    while set.join_next().await.is_some() {}
    let opened = pool.opened.load(Ordering::Relaxed);
    drop(pool); // closes the idle connections: llmtap writes their egress records
    (opened, max_lag)
}

async fn call(kp: &KindPlan, t: &Target, pool: &Pool, id: u64, t0: Instant) -> CallRec {
    let sep = if kp.path.contains('?') { '&' } else { '?' };
    let path = format!("{}{sep}{MARK}{}{id}", kp.path, kp.kind.letter());
    let body = &kp.bodies[id as usize % kp.bodies.len()];
    let start = Instant::now();
    let mut rec = CallRec {
        kind: kp.kind,
        id,
        at_s: start.duration_since(t0).as_secs_f32(),
        ok: false,
        answered: false,
        total_us: 0,
        ttfb_us: 0,
        err: None,
    };
    for attempt in 0..2 {
        let (mut conn, reused) = match pool.take() {
            Some(c) => (c, true),
            None => match client::connect(t).await {
                Ok(c) => {
                    pool.opened.fetch_add(1, Ordering::Relaxed);
                    (c, false)
                }
                Err(e) => {
                    rec.err = Some(e);
                    return rec;
                }
            },
        };
        match client::send(&mut conn, &t.host, &path, kp.stream, body, start).await {
            Ok(s) => {
                pool.put(conn);
                rec.ok = true;
                rec.answered = true;
                rec.total_us = s.total_us;
                rec.ttfb_us = s.first_us;
                return rec;
            }
            // A pooled connection that closed meanwhile: nothing was sent, try a fresh one.
            Err(e) if reused && attempt == 0 && !e.answered && e.what.starts_with("conn") => {}
            Err(e) => {
                rec.answered = e.answered;
                rec.err = Some(e.what);
                return rec;
            }
        }
    }
    rec
}

/// The receiver goes down at flap, 3·flap, …, and up again at 2·flap, 4·flap, …
async fn flap(
    c: Arc<Counters>,
    t0: Instant,
    end: Instant,
    every: Duration,
    downs: Vec<Mode>,
    log: Arc<Mutex<Vec<(f64, Mode)>>>,
) {
    let mut n_down = 0usize;
    for i in 1u32.. {
        let at = t0 + every * i;
        if at >= end {
            return;
        }
        tokio::time::sleep_until(at.into()).await;
        let m = if i % 2 == 1 {
            n_down += 1;
            downs[(n_down - 1) % downs.len()]
        } else {
            Mode::Up
        };
        c.set_mode(m);
        let t = (t0.elapsed().as_secs_f64() * 10.0).round() / 10.0;
        eprintln!("bench:   {t:>5.0}s receiver {m:?}");
        log.lock().unwrap_or_else(|e| e.into_inner()).push((t, m));
    }
}

/// One look at llmtap every `--soak-sample`.
#[derive(Debug, Clone, Serialize)]
pub struct SoakSample {
    pub t_s: f64,
    /// `load` while calls are made, `drain` after.
    pub phase: &'static str,
    pub rss_mib: f64,
    pub cpu_s: f64,
    pub receiver: Mode,
    /// Distinct call ids the receiver has.
    pub received: usize,
    pub queue_len: u64,
    pub spool_pending: u64,
    pub spool_bytes: u64,
    pub spooled: u64,
    pub exported: u64,
    pub submitted: u64,
}

fn num(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

/// Records not yet delivered nor given up on, from `/healthz`'s export document.
fn undelivered(e: &Value) -> u64 {
    let gone: u64 = [
        "exported",
        "dropped_queue_full",
        "dropped_export_failed",
        "dropped_shutdown",
        "dropped_spool_full",
        "dropped_spool_damaged",
    ]
    .iter()
    .map(|k| num(e, k))
    .sum();
    num(e, "submitted").saturating_sub(gone) + num(e, "queue_len") + num(e, "spool_pending")
}

struct Sampler {
    stop: Arc<AtomicBool>,
    phase: Arc<AtomicU8>,
    handle: std::thread::JoinHandle<Vec<SoakSample>>,
}

fn start_sampler(
    pid: u32,
    addr: std::net::SocketAddr,
    c: Arc<Counters>,
    every: Duration,
) -> Res<Sampler> {
    let stop = Arc::new(AtomicBool::new(false));
    let phase = Arc::new(AtomicU8::new(0));
    let (s, p) = (stop.clone(), phase.clone());
    let handle = std::thread::Builder::new()
        .name("soak-sampler".into())
        .spawn(move || {
            let t0 = Instant::now();
            let mut out = Vec::new();
            let mut next = t0 + every;
            while !s.load(Ordering::Relaxed) {
                if Instant::now() < next {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                next += every;
                let e = procs::health(addr)
                    .ok()
                    .and_then(|h| h.get("export").cloned())
                    .unwrap_or(Value::Null);
                let x = SoakSample {
                    t_s: (t0.elapsed().as_secs_f64() * 10.0).round() / 10.0,
                    phase: if p.load(Ordering::Relaxed) == 0 { "load" } else { "drain" },
                    rss_mib: procs::status_mib(pid, "VmRSS").unwrap_or(f64::NAN),
                    cpu_s: procs::cpu_seconds(pid).unwrap_or(f64::NAN),
                    receiver: c.mode(),
                    received: c.unique_marks(),
                    queue_len: num(&e, "queue_len"),
                    spool_pending: num(&e, "spool_pending"),
                    spool_bytes: num(&e, "spool_bytes"),
                    spooled: num(&e, "spooled"),
                    exported: num(&e, "exported"),
                    submitted: num(&e, "submitted"),
                };
                if out.len() % 6 == 5 || x.phase == "drain" {
                    eprintln!(
                        "bench:   {:>5.0}s rss={:.1} MiB cpu={:.1}s receiver={:?} received={} queue={} spool pending={} ({:.1} MiB) spooled={} exported={}",
                        x.t_s,
                        x.rss_mib,
                        x.cpu_s,
                        x.receiver,
                        x.received,
                        x.queue_len,
                        x.spool_pending,
                        x.spool_bytes as f64 / 1048576.0,
                        x.spooled,
                        x.exported
                    );
                }
                out.push(x);
            }
            out
        })?;
    Ok(Sampler {
        stop,
        phase,
        handle,
    })
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct KindStats {
    pub kind: &'static str,
    pub rate: f64,
    pub calls: u64,
    pub ok: u64,
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    /// Connections opened through llmtap (CONNECTs).
    pub connects: u64,
    pub llmtap_ms: Pct,
    pub llmtap_ttfb_ms: Pct,
    pub llmtap_first_window_ms: Pct,
    pub llmtap_last_window_ms: Pct,
    pub direct_ms: Option<Pct>,
    pub direct_ttfb_ms: Option<Pct>,
    /// llmtap p99 − baseline p99 (total time; for SSE also time to first event).
    pub p99_added_ms: f64,
    pub ttfb_p99_added_ms: f64,
    /// p99 (ms; first event for SSE) of the calls started in each `--soak-sample` interval.
    pub p99_ms_by_interval: Vec<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RecordStats {
    /// Intercepted calls that got a response head: each must give exactly one record.
    pub expected: u64,
    /// Of those, ids the receiver got at least once.
    pub received_unique: u64,
    pub lost: u64,
    /// Extra copies of any id (sum of count − 1).
    pub duplicated: u64,
    /// Intercepted calls that failed before a response head (llmtap may or may not have a record).
    pub unanswered: u64,
    /// Ids received that are not among the expected (records of unanswered calls).
    pub unexpected: u64,
    /// Up to 20 ids lost, for looking them up in llmtap's log.
    pub lost_sample: Vec<String>,
    /// Records without an id, by kind (`egress tunnel`, `egress intercept`, `other`).
    pub unmarked: BTreeMap<String, u64>,
    /// Connections opened through llmtap: each ought to give one `llmtap.egress` record (--audit all).
    pub connects: u64,
    pub egress_received: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RssStats {
    pub window_s: f64,
    /// Mean of the first window (from the start, warm-up from idle included).
    pub first_mean_mib: f64,
    /// Warm-up left out of the check's baseline: one receiver cycle (2 × --soak-flap), or 0 when
    /// the run is too short for it and a window after it.
    pub warmup_s: f64,
    /// Mean of the first window after the warm-up: the check's baseline.
    pub steady_first_mean_mib: f64,
    pub last_mean_mib: f64,
    pub max_mib: f64,
    pub hwm_mib: f64,
    /// Mean of each window in turn (the RSS curve).
    pub window_means_mib: Vec<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SoakReport {
    pub duration_s: f64,
    pub flap_s: f64,
    pub rate: f64,
    pub mix: String,
    pub down: String,
    pub spool_dir: Option<String>,
    /// What the added latency is measured against.
    pub baseline: String,
    pub max_lag_ms: f64,
    pub kinds: Vec<KindStats>,
    pub records: RecordStats,
    pub rss: RssStats,
    /// Receiver mode changes (seconds since the load began).
    pub receiver_changes: Vec<(f64, Mode)>,
    pub receiver_503: u64,
    pub receiver_connections: u64,
    /// Seconds from the end of the load until /healthz showed queue and spool empty.
    pub drain_s: f64,
    pub drained: bool,
    pub export_end: Value,
    pub samples: Vec<SoakSample>,
}

pub fn run(ctx: &mut Ctx, name: &str) -> Res<ScenarioResult> {
    let o = ctx.opts.clone();
    let kinds = plans(&o)?;
    let downs = down_modes(&o.soak_down)?;
    if ctx.cmd.otlp.is_none() {
        return Err("the soak needs --export otlp (the local receiver)".into());
    }
    let ids = Arc::new(AtomicU64::new(0));
    let targets = |ctx: &Ctx, proxy: Option<&Llmtap>| -> Vec<(KindPlan, Target)> {
        kinds
            .iter()
            .map(|kp| {
                let host = if kp.kind == Kind::Tunnel {
                    &ctx.opts.tunnel_host
                } else {
                    &ctx.opts.llm_host
                };
                (kp.clone(), ctx.target(host, &kp.path, kp.stream, proxy))
            })
            .collect()
    };

    // 1. The same mix direct (client → mock), for the latency baseline.
    let direct_for = o.soak_direct.min(o.soak_duration);
    let direct = if direct_for.is_zero() {
        None
    } else {
        eprintln!(
            "bench:   direct baseline: {:.0} s of the same mix",
            direct_for.as_secs_f64()
        );
        let d = ctx
            .rt
            .block_on(run_load(targets(ctx, None), direct_for, ids.clone()));
        let errs = d.calls.iter().filter(|c| !c.ok).count();
        eprintln!("bench:   direct  calls={} errors={errs}", d.calls.len());
        Some(d)
    };

    // 2. llmtap with a spool, the receiver flapping.
    let mut cmd = ctx.cmd.clone();
    let spool_dir = (!o.soak_no_spool).then(|| cmd.log_dir.join("spool"));
    if let Some(dir) = &spool_dir {
        cmd.extra_args.push("--spool-dir".into());
        cmd.extra_args.push(dir.display().to_string());
        if let Some(max) = &o.soak_spool_max_bytes {
            cmd.extra_args.push("--spool-max-bytes".into());
            cmd.extra_args.push(max.clone());
        }
    }
    ctx.otlp.set_mode(Mode::Up);
    ctx.otlp.reset_marks();
    let (p, idle) = ctx.start_llmtap_with(&cmd, name)?;
    let pid = p.pid();
    let (cpu0, mock0, otlp0) = (
        procs::cpu_seconds(pid).unwrap_or(0.0),
        procs::cpu_seconds(ctx.mock_pid()).unwrap_or(0.0),
        ctx.otlp.snapshot(),
    );
    let n503_0 = ctx.otlp.refused_503.load(Ordering::Relaxed);
    let conns0 = ctx.otlp.connections.load(Ordering::Relaxed);
    eprintln!(
        "bench:   soak: {:.0} s at {} calls/s ({}), receiver down every {:.0} s ({}), spool {}",
        o.soak_duration.as_secs_f64(),
        o.soak_rate,
        o.soak_mix,
        o.soak_flap.as_secs_f64(),
        o.soak_down,
        spool_dir
            .as_ref()
            .map_or("off".to_string(), |d| d.display().to_string())
    );
    let ours = [std::process::id(), ctx.mock_pid(), pid];
    let others0 = procs::others_cpu_seconds(&ours);
    let sample_every = o.soak_sample.max(Duration::from_secs(1));
    let sampler = start_sampler(pid, p.addr, ctx.otlp.clone(), sample_every)?;
    let changes = Arc::new(Mutex::new(Vec::new()));
    let t_load = Instant::now();
    let soaked = {
        let ts = targets(ctx, Some(&p));
        let (c, ch, flap_every) = (ctx.otlp.clone(), changes.clone(), o.soak_flap);
        let end = t_load + o.soak_duration;
        ctx.rt.block_on(async move {
            let f = tokio::spawn(flap(c, t_load, end, flap_every, downs, ch));
            let out = run_load(ts, o.soak_duration, ids).await;
            f.abort();
            out
        })
    };
    let load_s = t_load.elapsed().as_secs_f64();
    let others = procs::others_cores(&others0, &procs::others_cpu_seconds(&ours), load_s);

    // 3. Receiver up for good; wait until llmtap has delivered everything.
    ctx.otlp.set_mode(Mode::Up);
    sampler.phase.store(1, Ordering::Relaxed);
    let t_drain = Instant::now();
    let mut drained = false;
    let mut streak = 0;
    while t_drain.elapsed() < o.soak_drain {
        let e = procs::health(p.addr)
            .ok()
            .and_then(|h| h.get("export").cloned())
            .unwrap_or(Value::Null);
        if !e.is_null() && undelivered(&e) == 0 {
            streak += 1;
            if streak >= 3 {
                drained = true;
                break;
            }
        } else {
            streak = 0;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let drain_s = t_drain.elapsed().as_secs_f64();
    eprintln!(
        "bench:   {} after {drain_s:.1} s",
        if drained { "drained" } else { "NOT drained" }
    );
    sampler.stop.store(true, Ordering::Relaxed);
    let samples = sampler.handle.join().unwrap_or_default();

    // 4. llmtap's own figures, then stop it (SIGINT) and read what the receiver got.
    let mut st = ProcStats {
        idle_rss_mib: idle,
        rss_before_mib: idle,
        ..Default::default()
    };
    let calls_through = soaked.calls.len() as u64;
    st.cpu_s = procs::cpu_seconds(pid).unwrap_or(0.0) - cpu0;
    st.calls = calls_through;
    st.cpu_s_per_1k = if calls_through > 0 {
        st.cpu_s / calls_through as f64 * 1000.0
    } else {
        0.0
    };
    st.mock_cpu_s = procs::cpu_seconds(ctx.mock_pid()).unwrap_or(0.0) - mock0;
    st.peak_rss_mib = procs::status_mib(pid, "VmHWM").unwrap_or(0.0);
    st.rss_end_mib = procs::status_mib(pid, "VmRSS").unwrap_or(0.0);
    st.threads = procs::threads(pid).unwrap_or(0);
    st.export = procs::health(p.addr)
        .ok()
        .and_then(|h| h.get("export").cloned())
        .unwrap_or(Value::Null);
    st.stop_s = p.stop(Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    st.otlp = ctx.otlp.snapshot().since(otlp0);
    let marks = ctx.otlp.take_marks();

    // 5. The figures.
    let dur_s = o.soak_duration.as_secs_f64();
    let window = if dur_s >= 180.0 { 60.0 } else { dur_s / 3.0 };
    let mut kstats = Vec::new();
    for kp in &kinds {
        kstats.push(kind_stats(
            kp,
            &soaked,
            direct.as_ref(),
            window,
            dur_s,
            sample_every.as_secs_f64(),
        ));
    }

    let mut expected = HashSet::new();
    let mut unanswered = 0u64;
    for c in soaked.calls.iter().filter(|c| c.kind.recorded()) {
        let id = format!("{}{}", c.kind.letter(), c.id);
        if c.answered {
            expected.insert(id);
        } else {
            unanswered += 1;
        }
    }
    let mut lost: Vec<&String> = expected
        .iter()
        .filter(|id| !marks.ids.contains_key(*id))
        .collect();
    lost.sort();
    let duplicated: u64 = marks
        .ids
        .values()
        .map(|n| u64::from(n.saturating_sub(1)))
        .sum();
    let unexpected = marks
        .ids
        .keys()
        .filter(|id| !expected.contains(*id))
        .count() as u64;
    let egress_received: u64 = marks
        .unmarked
        .iter()
        .filter(|(k, _)| k.starts_with("egress"))
        .map(|(_, n)| n)
        .sum();
    let records = RecordStats {
        expected: expected.len() as u64,
        received_unique: (expected.len() - lost.len()) as u64,
        lost: lost.len() as u64,
        duplicated,
        unanswered,
        unexpected,
        lost_sample: lost.iter().take(20).map(|s| s.to_string()).collect(),
        unmarked: marks.unmarked.clone(),
        connects: soaked.connects.values().sum(),
        egress_received,
    };

    let load_samples: Vec<&SoakSample> = samples
        .iter()
        .filter(|s| s.phase == "load" && s.rss_mib.is_finite())
        .collect();
    let mean = |v: Vec<f64>| {
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let first = mean(
        load_samples
            .iter()
            .filter(|s| s.t_s <= window + 0.5)
            .map(|s| s.rss_mib)
            .collect(),
    );
    let cycle = 2.0 * o.soak_flap.as_secs_f64();
    let warmup = if dur_s >= cycle + window { cycle } else { 0.0 };
    let steady_first = mean(
        load_samples
            .iter()
            .filter(|s| s.t_s > warmup && s.t_s <= warmup + window + 0.5)
            .map(|s| s.rss_mib)
            .collect(),
    );
    let last = mean(
        load_samples
            .iter()
            .filter(|s| s.t_s >= dur_s - window - 0.5)
            .map(|s| s.rss_mib)
            .collect(),
    );
    let nwin = (dur_s / window).ceil().max(1.0) as usize;
    let window_means: Vec<f64> = (0..nwin)
        .map(|i| {
            let (a, b) = (i as f64 * window, (i + 1) as f64 * window);
            let m = mean(
                load_samples
                    .iter()
                    .filter(|s| s.t_s > a && s.t_s <= b + 0.5)
                    .map(|s| s.rss_mib)
                    .collect(),
            );
            (m * 10.0).round() / 10.0
        })
        .collect();
    let rss = RssStats {
        window_s: window,
        first_mean_mib: first,
        warmup_s: warmup,
        steady_first_mean_mib: steady_first,
        last_mean_mib: last,
        max_mib: samples
            .iter()
            .map(|s| s.rss_mib)
            .filter(|x| x.is_finite())
            .fold(0.0, f64::max),
        hwm_mib: st.peak_rss_mib,
        window_means_mib: window_means,
    };

    let mut outcome = Outcome {
        window_s: soaked.window_s,
        other_cores: others,
        ..Default::default()
    };
    for c in &soaked.calls {
        outcome.sent_total += 1;
        if c.ok {
            outcome.ok += 1;
        } else {
            outcome.errors += 1;
            let e: String = c.err.as_deref().unwrap_or("?").chars().take(80).collect();
            *outcome
                .error_kinds
                .entry(format!("{}: {e}", c.kind.name()))
                .or_default() += 1;
        }
    }
    outcome.ok_total = outcome.ok;
    outcome.rps = outcome.ok as f64 / outcome.window_s.max(1e-6);
    if let Some(j) = kstats.iter().find(|k| k.kind == "json") {
        outcome.latency_ms = j.llmtap_ms.clone();
        outcome.ttfb_ms = j.llmtap_ttfb_ms.clone();
    }
    let direct_outcome = direct.as_ref().map(|d| {
        let mut od = Outcome {
            window_s: d.window_s,
            sent_total: d.calls.len() as u64,
            ..Default::default()
        };
        od.ok = d.calls.iter().filter(|c| c.ok).count() as u64;
        od.ok_total = od.ok;
        od.errors = od.sent_total - od.ok;
        od.rps = od.ok as f64 / od.window_s.max(1e-6);
        if let Some(j) = kstats.iter().find(|k| k.kind == "json") {
            od.latency_ms = j.direct_ms.clone().unwrap_or_default();
            od.ttfb_ms = j.direct_ttfb_ms.clone().unwrap_or_default();
        }
        od
    });

    let baseline = match &direct {
        Some(d) => format!(
            "a direct run (client → mock) of the same mix, {:.0} s",
            d.window_s
        ),
        None => format!("llmtap's own first {window:.0} s (--soak-direct 0)"),
    };
    let changes = changes.lock().map(|v| v.clone()).unwrap_or_default();
    let report = SoakReport {
        duration_s: dur_s,
        flap_s: o.soak_flap.as_secs_f64(),
        rate: o.soak_rate,
        mix: o.soak_mix.clone(),
        down: o.soak_down.clone(),
        spool_dir: spool_dir.map(|d| d.display().to_string()),
        baseline,
        max_lag_ms: soaked.max_lag_ms,
        kinds: kstats,
        records,
        rss,
        receiver_changes: changes,
        receiver_503: ctx.otlp.refused_503.load(Ordering::Relaxed) - n503_0,
        receiver_connections: ctx.otlp.connections.load(Ordering::Relaxed) - conns0,
        drain_s,
        drained,
        export_end: st.export.clone(),
        samples,
    };
    log_report(&report);
    let mut notes = Vec::new();
    let added: Vec<String> = report
        .kinds
        .iter()
        .map(|k| {
            if k.kind == "sse" {
                format!(
                    "sse first event {:+.2} ms (total {:+.2})",
                    k.ttfb_p99_added_ms, k.p99_added_ms
                )
            } else {
                format!("{} {:+.2} ms", k.kind, k.p99_added_ms)
            }
        })
        .collect();
    notes.push(format!(
        "p99 added vs {}: {}",
        report.baseline,
        added.join(", ")
    ));
    if report.spool_dir.is_none() {
        notes.push("--soak-no-spool: records lost while the receiver is down are expected".into());
    }
    Ok(ScenarioResult {
        name: name.into(),
        what: format!(
            "{:.0} s mixed ({}) at {} calls/s, receiver down/up every {:.0} s ({}); row latency = JSON calls",
            dur_s,
            o.soak_mix,
            o.soak_rate,
            o.soak_flap.as_secs_f64(),
            o.soak_down
        ),
        direct: direct_outcome,
        llmtap: Some(outcome),
        proc: Some(st),
        soak: Some(Box::new(report)),
        notes,
        ..Default::default()
    })
}

fn kind_stats(
    kp: &KindPlan,
    soaked: &LoadOut,
    direct: Option<&LoadOut>,
    window: f64,
    dur_s: f64,
    interval: f64,
) -> KindStats {
    let of = |calls: &[CallRec], keep: &dyn Fn(&CallRec) -> bool, ttfb: bool| {
        let mut v: Vec<u32> = calls
            .iter()
            .filter(|c| c.kind == kp.kind && c.ok && keep(c))
            .map(|c| if ttfb { c.ttfb_us } else { c.total_us })
            .collect();
        Pct::of(&mut v)
    };
    let all = |_: &CallRec| true;
    let mine: Vec<&CallRec> = soaked.calls.iter().filter(|c| c.kind == kp.kind).collect();
    let mut error_kinds = BTreeMap::new();
    for c in mine.iter().filter(|c| !c.ok) {
        let e: String = c.err.as_deref().unwrap_or("?").chars().take(80).collect();
        *error_kinds.entry(e).or_default() += 1;
    }
    let llmtap_ms = of(&soaked.calls, &all, false);
    let llmtap_ttfb_ms = of(&soaked.calls, &all, true);
    let first = of(&soaked.calls, &|c| f64::from(c.at_s) <= window, false);
    let first_ttfb = of(&soaked.calls, &|c| f64::from(c.at_s) <= window, true);
    let last = of(
        &soaked.calls,
        &|c| f64::from(c.at_s) >= dur_s - window,
        false,
    );
    let direct_ms = direct.map(|d| of(&d.calls, &all, false));
    let direct_ttfb_ms = direct.map(|d| of(&d.calls, &all, true));
    let (base, base_ttfb) = match (&direct_ms, &direct_ttfb_ms) {
        (Some(a), Some(b)) => (a.p99, b.p99),
        _ => (first.p99, first_ttfb.p99),
    };
    let ok = mine.iter().filter(|c| c.ok).count() as u64;
    let intervals = (dur_s / interval).ceil().max(1.0) as usize;
    let mut buckets: Vec<Vec<u32>> = vec![Vec::new(); intervals];
    for c in mine.iter().filter(|c| c.ok) {
        let i = ((f64::from(c.at_s) / interval) as usize).min(intervals - 1);
        buckets[i].push(if kp.stream { c.ttfb_us } else { c.total_us });
    }
    let p99_ms_by_interval = buckets
        .iter_mut()
        .map(|b| (Pct::of(b).p99 * 1000.0).round() / 1000.0)
        .collect();
    KindStats {
        kind: kp.kind.name(),
        rate: kp.rate,
        calls: mine.len() as u64,
        ok,
        errors: mine.len() as u64 - ok,
        error_kinds,
        connects: soaked.connects.get(&kp.kind).copied().unwrap_or(0),
        p99_added_ms: llmtap_ms.p99 - base,
        ttfb_p99_added_ms: llmtap_ttfb_ms.p99 - base_ttfb,
        p99_ms_by_interval,
        llmtap_ms,
        llmtap_ttfb_ms,
        llmtap_first_window_ms: first,
        llmtap_last_window_ms: last,
        direct_ms,
        direct_ttfb_ms,
    }
}

fn log_report(r: &SoakReport) {
    for k in &r.kinds {
        eprintln!(
            "bench:   {:<7} calls={:<6} err={:<4} p50={:>8.3} p99={:>8.3} ms (direct p99 {}) added p99 {:+.3} ms, ttfb {:+.3} ms; first/last window p99 {:.3}/{:.3} ms {}",
            k.kind,
            k.calls,
            k.errors,
            k.llmtap_ms.p50,
            k.llmtap_ms.p99,
            k.direct_ms
                .as_ref()
                .map_or("–".to_string(), |d| format!("{:.3}", d.p99)),
            k.p99_added_ms,
            k.ttfb_p99_added_ms,
            k.llmtap_first_window_ms.p99,
            k.llmtap_last_window_ms.p99,
            if k.error_kinds.is_empty() {
                String::new()
            } else {
                format!("{:?}", k.error_kinds)
            }
        );
    }
    let x = &r.records;
    eprintln!(
        "bench:   records expected={} received={} lost={} duplicated={} unanswered={} unexpected={} egress={}/{} connects {:?}",
        x.expected,
        x.received_unique,
        x.lost,
        x.duplicated,
        x.unanswered,
        x.unexpected,
        x.egress_received,
        x.connects,
        x.unmarked
    );
    eprintln!(
        "bench:   rss first {:.0} s mean {:.1} MiB (after {:.0} s warm-up {:.1}), last {:.1} MiB, max {:.1} MiB (VmHWM {:.1}); per window {:?}",
        r.rss.window_s,
        r.rss.first_mean_mib,
        r.rss.warmup_s,
        r.rss.steady_first_mean_mib,
        r.rss.last_mean_mib,
        r.rss.max_mib,
        r.rss.hwm_mib,
        r.rss.window_means_mib
    );
}

/// The RSS rule: the last window's mean is at most the first (after warm-up) window's × 1.2 + 8 MiB.
pub fn rss_limit(first_mean: f64) -> f64 {
    first_mean * 1.2 + 8.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_bodies_have_their_size_and_are_json() {
        for k in UPLOAD_KIB {
            let b = upload_body(k * 1024);
            assert_eq!(b.len(), k * 1024);
            let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
            assert_eq!(v["stream"], Value::Bool(false));
        }
    }

    #[test]
    fn mix_parses_and_normalises() {
        let m = parse_mix("json=50,sse=20,tunnel=25,upload=5").unwrap_or_default();
        assert_eq!(m.len(), 4);
        assert!((m.iter().map(|x| x.1).sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(parse_mix("json=1,bogus=2").is_err());
    }

    #[test]
    fn marks_come_from_the_query() {
        assert_eq!(
            crate::otlp::mark_of("https://api.anthropic.com/v1/messages?events=5&soak=s12"),
            Some("s12")
        );
        assert_eq!(crate::otlp::mark_of("https://x/v1/messages"), None);
    }
}
