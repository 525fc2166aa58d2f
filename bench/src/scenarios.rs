//! The scenarios of issue 5, each measured direct and through a fresh llmtap child, and their targets.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use serde::Serialize;
use serde_json::Value;

use crate::client::{self, Target};
use crate::load::{self, Outcome, Spec};
use crate::otlp::{self, Counters, Snapshot};
use crate::procs::{self, Llmtap, LlmtapCmd, Mock};
use crate::{Opts, Res};

pub const ALL: &[&str] = &[
    "json_c1",
    "json_c32",
    "newconn_c8",
    "sse_c8",
    "big_5mb",
    "tunnel_c32",
    "streams_1000",
    "otlp_5k",
];

/// Scenarios run only when named in `--only` (or by their own subcommand).
pub const OPTIONAL: &[&str] = &["soak"];

/// llmtap's own figures during one proxied run.
#[derive(Debug, Default, Serialize, Clone)]
pub struct ProcStats {
    pub idle_rss_mib: f64,
    pub rss_before_mib: f64,
    pub peak_rss_mib: f64,
    pub rss_end_mib: f64,
    pub cpu_s: f64,
    /// CPU seconds per 1,000 requests (= CPU ms per request).
    pub cpu_s_per_1k: f64,
    /// Requests llmtap handled in this run (warmup included): the CPU and records denominators.
    pub calls: u64,
    pub threads: u64,
    pub mock_cpu_s: f64,
    pub export: Value,
    pub otlp: Snapshot,
    pub stop_s: f64,
}

#[derive(Debug, Serialize, Clone)]
pub struct Check {
    pub target: String,
    pub measured: f64,
    pub limit: String,
    pub unit: &'static str,
    pub pass: bool,
}

#[derive(Debug, Serialize, Clone, Default)]
pub struct ScenarioResult {
    pub name: String,
    pub what: String,
    pub direct: Option<Outcome>,
    pub llmtap: Option<Outcome>,
    pub proc: Option<ProcStats>,
    pub llm_calls: bool,
    pub checks: Vec<Check>,
    pub notes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soak: Option<Box<crate::soak::SoakReport>>,
}

pub struct Ctx {
    pub opts: Opts,
    pub(crate) rt: tokio::runtime::Runtime,
    mock: Mock,
    pub(crate) otlp: Arc<Counters>,
    pub(crate) cmd: LlmtapCmd,
    direct_tls: Arc<rustls::ClientConfig>,
    proxied_tls: Option<Arc<rustls::ClientConfig>>,
    pub out_dir: PathBuf,
}

pub fn run_all(opts: Opts) -> Res<()> {
    let t_start = Instant::now();
    let root = crate::workspace_root();
    let out_dir = opts
        .out
        .clone()
        .unwrap_or_else(|| root.join("bench-results"));
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let run_dir = out_dir.join("run").join(stamp.to_string());
    std::fs::create_dir_all(&run_dir)?;
    let bin = match &opts.llmtap_bin {
        Some(b) => b.clone(),
        None => {
            if !opts.no_build {
                build_llmtap(&root)?;
            }
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target"));
            target.join("release").join("llmtap")
        }
    };
    match rlimit::increase_nofile_limit(65536) {
        Ok(n) => eprintln!("bench: RLIMIT_NOFILE = {n}"),
        Err(e) => eprintln!("bench: cannot raise RLIMIT_NOFILE: {e}"),
    }
    let mock = Mock::start(&run_dir.join("mock"), opts.mock_threads)?;
    let (otlp_addr, otlp) = otlp::start()?;
    eprintln!(
        "bench: mock on {}, OTLP receiver on {otlp_addr}, llmtap = {}",
        mock.addr,
        bin.display()
    );
    let cmd = LlmtapCmd {
        bin,
        ca_dir: run_dir.join("llmtap-ca"),
        llm_host: opts.llm_host.clone(),
        tunnel_host: opts.tunnel_host.clone(),
        mock: mock.addr,
        mock_ca: mock.ca.clone(),
        otlp: (opts.export == "otlp").then_some(otlp_addr),
        max_body_size: opts.max_body_size,
        log_dir: run_dir.clone(),
        extra_args: opts.llmtap_args.clone(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.loadgen_threads.max(1))
        .enable_all()
        .build()?;
    let direct_tls = crate::certs::client_config(&[&mock.ca])?;
    let mut ctx = Ctx {
        opts: opts.clone(),
        rt,
        mock,
        otlp,
        cmd,
        direct_tls,
        proxied_tls: None,
        out_dir: out_dir.clone(),
    };
    let selected: Vec<&str> = if opts.only.is_empty() {
        ALL.to_vec()
    } else {
        for o in &opts.only {
            if !ALL.contains(&o.as_str()) && !OPTIONAL.contains(&o.as_str()) {
                eprintln!("bench: --only: no scenario {o:?}");
            }
        }
        ALL.iter()
            .chain(OPTIONAL)
            .copied()
            .filter(|s| opts.only.iter().any(|o| o == s))
            .collect()
    };
    let mut results = Vec::new();
    for name in selected {
        eprintln!("bench: --- {name}");
        let r = match name {
            "json_c1" => ctx.pair(
                name,
                "1 KB JSON, 1 keep-alive client",
                &ctx.opts.llm_host.clone(),
                "/v1/messages",
                false,
                ctx.duration_spec(1, false),
            ),
            "json_c32" => ctx.pair(
                name,
                "1 KB JSON, 32 keep-alive clients",
                &ctx.opts.llm_host.clone(),
                "/v1/messages",
                false,
                ctx.duration_spec(32, false),
            ),
            "newconn_c8" => ctx.pair(
                name,
                "1 KB JSON, new TCP+CONNECT+TLS per request, 8 clients",
                &ctx.opts.llm_host.clone(),
                "/v1/messages",
                false,
                ctx.duration_spec(8, true),
            ),
            "sse_c8" => {
                let path = format!(
                    "/v1/messages?events={}&delay_ms={}",
                    ctx.opts.sse_events, ctx.opts.sse_delay_ms
                );
                let what = format!(
                    "SSE, {} events {} ms apart, 8 clients",
                    ctx.opts.sse_events, ctx.opts.sse_delay_ms
                );
                ctx.pair(
                    name,
                    &what,
                    &ctx.opts.llm_host.clone(),
                    &path,
                    true,
                    ctx.duration_spec(8, false),
                )
            }
            "big_5mb" => ctx.big(name),
            "tunnel_c32" => ctx.pair(
                name,
                "1 KB JSON to a non-LLM host (tunnel), 32 clients",
                &ctx.opts.tunnel_host.clone(),
                "/v1/messages",
                false,
                ctx.duration_spec(32, false),
            ),
            "streams_1000" => ctx.streams(name),
            "otlp_5k" => ctx.otlp_sustained(name),
            "soak" => crate::soak::run(&mut ctx, name),
            _ => continue,
        };
        let mut r = match r {
            Ok(r) => r,
            Err(e) => {
                eprintln!("bench: {name} failed: {e}");
                ScenarioResult {
                    name: name.into(),
                    notes: vec![format!("scenario failed: {e}")],
                    ..Default::default()
                }
            }
        };
        r.llm_calls = name != "tunnel_c32";
        crate::report::add_checks(&mut r, &ctx.opts);
        results.push(r);
    }
    let env = environment(&ctx, t_start.elapsed());
    crate::report::write(&results, &env, &ctx.out_dir, stamp)?;
    Ok(())
}

fn build_llmtap(root: &Path) -> Res<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("bench: cargo build --release -p llmtap --bin llmtap");
    let st = Command::new(cargo)
        .args(["build", "--release", "-p", "llmtap", "--bin", "llmtap"])
        .current_dir(root)
        .status()?;
    if !st.success() {
        return Err("building llmtap failed".into());
    }
    Ok(())
}

fn environment(ctx: &Ctx, took: Duration) -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let mem_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().next().and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            })
        })
        .unwrap_or(0);
    serde_json::json!({
        "cpu": cpu, "cores": cores, "kernel": kernel, "mem_gib": (mem_kb as f64 / 1048576.0 * 10.0).round() / 10.0,
        "llmtap_bin": ctx.cmd.bin.display().to_string(),
        "export": ctx.opts.export, "duration_s": ctx.opts.duration.as_secs_f64(), "warmup_s": ctx.opts.warmup.as_secs_f64(),
        "otlp_duration_s": ctx.opts.otlp_duration.as_secs_f64(), "otlp_rate": ctx.opts.otlp_rate,
        "soak_duration_s": ctx.opts.soak_duration.as_secs_f64(), "soak_flap_s": ctx.opts.soak_flap.as_secs_f64(),
        "soak_rate": ctx.opts.soak_rate, "soak_mix": ctx.opts.soak_mix, "soak_down": ctx.opts.soak_down,
        "loadgen_threads": ctx.opts.loadgen_threads, "mock_threads": ctx.opts.mock_threads,
        "max_body_size": ctx.opts.max_body_size, "took_s": took.as_secs_f64().round(),
    })
}

impl Ctx {
    fn duration_spec(&self, concurrency: usize, new_conn: bool) -> Spec {
        Spec {
            concurrency,
            warmup: self.opts.warmup,
            duration: Some(self.opts.duration),
            requests: 0,
            warmup_requests: 0,
            new_conn,
            rate: None,
        }
    }

    pub(crate) fn mock_pid(&self) -> u32 {
        self.mock.pid()
    }

    pub(crate) fn target(
        &self,
        host: &str,
        path: &str,
        stream: bool,
        proxy: Option<&Llmtap>,
    ) -> Target {
        Target {
            host: host.to_string(),
            port: self.mock.addr.port(),
            mock: self.mock.addr,
            proxy: proxy.map(|p| p.addr),
            tls: match (proxy, &self.proxied_tls) {
                (Some(_), Some(t)) => t.clone(),
                _ => self.direct_tls.clone(),
            },
            path: path.to_string(),
            stream,
        }
    }

    /// Starts llmtap; the first start creates its CA, which the proxied client then trusts.
    fn start_llmtap(&mut self, label: &str) -> Res<(Llmtap, f64)> {
        let cmd = self.cmd.clone();
        self.start_llmtap_with(&cmd, label)
    }

    /// [`Ctx::start_llmtap`] with another command line (the soak adds `--spool-dir`).
    pub(crate) fn start_llmtap_with(&mut self, cmd: &LlmtapCmd, label: &str) -> Res<(Llmtap, f64)> {
        let p = Llmtap::start(cmd, label)?;
        if self.proxied_tls.is_none() {
            let ca = cmd.ca_dir.join("ca.pem");
            self.proxied_tls = Some(crate::certs::client_config(&[&ca, &self.mock.ca])?);
        }
        std::thread::sleep(Duration::from_millis(300));
        let idle = procs::status_mib(p.pid(), "VmRSS").unwrap_or(0.0);
        Ok((p, idle))
    }

    /// Samples llmtap after a run, stops it (SIGINT: flush) and reads what the receiver got.
    fn finish_llmtap(
        &self,
        p: Llmtap,
        mut st: ProcStats,
        cpu0: f64,
        mock0: f64,
        requests: u64,
        otlp0: Snapshot,
    ) -> ProcStats {
        std::thread::sleep(Duration::from_millis(1000)); // let the exporter drain
        let pid = p.pid();
        st.cpu_s = procs::cpu_seconds(pid).unwrap_or(0.0) - cpu0;
        st.calls = requests;
        st.cpu_s_per_1k = if requests > 0 {
            st.cpu_s / requests as f64 * 1000.0
        } else {
            0.0
        };
        st.mock_cpu_s = procs::cpu_seconds(self.mock.pid()).unwrap_or(0.0) - mock0;
        st.peak_rss_mib = procs::status_mib(pid, "VmHWM").unwrap_or(0.0);
        st.rss_end_mib = procs::status_mib(pid, "VmRSS").unwrap_or(0.0);
        st.threads = procs::threads(pid).unwrap_or(0);
        st.export = procs::health(p.addr)
            .ok()
            .map(|h| h.get("export").cloned().unwrap_or(Value::Null))
            .unwrap_or(Value::Null);
        st.stop_s = p.stop(Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(300));
        st.otlp = self.otlp.snapshot().since(otlp0);
        st
    }

    /// Runs the load, also measuring how much CPU processes outside the benchmark used meanwhile.
    fn measure(&self, t: &Target, spec: &Spec, llmtap: Option<u32>) -> Outcome {
        let ours = [std::process::id(), self.mock.pid(), llmtap.unwrap_or(0)];
        let (before, t0) = (procs::others_cpu_seconds(&ours), Instant::now());
        let mut o = self.rt.block_on(load::run(t, spec));
        let after = procs::others_cpu_seconds(&ours);
        o.other_cores = procs::others_cores(&before, &after, t0.elapsed().as_secs_f64());
        if std::env::var_os("LLMTAP_BENCH_DEBUG").is_some() {
            let mut top: Vec<(f64, u32)> = after
                .iter()
                .map(|(p, c)| (c - before.get(p).copied().unwrap_or(0.0), *p))
                .filter(|(d, _)| *d > 0.0)
                .collect();
            top.sort_by(|a, b| b.0.total_cmp(&a.0));
            for (d, p) in top.iter().take(5) {
                let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
                eprintln!("bench:     other pid {p} {} {d:.2}s", comm.trim());
            }
        }
        o
    }

    /// Direct run, then the same load through a fresh llmtap.
    fn pair(
        &mut self,
        name: &str,
        what: &str,
        host: &str,
        path: &str,
        stream: bool,
        spec: Spec,
    ) -> Res<ScenarioResult> {
        let direct = self
            .rt
            .block_on(load::run(&self.target(host, path, stream, None), &spec));
        log_outcome("direct", &direct);
        let (p, idle) = self.start_llmtap(name)?;
        let st = ProcStats {
            idle_rss_mib: idle,
            rss_before_mib: idle,
            ..Default::default()
        };
        let (cpu0, mock0, otlp0) = (
            procs::cpu_seconds(p.pid()).unwrap_or(0.0),
            procs::cpu_seconds(self.mock.pid()).unwrap_or(0.0),
            self.otlp.snapshot(),
        );
        let perf = self.start_perf(name, p.pid());
        let t = self.target(host, path, stream, Some(&p));
        let proxied = self.measure(&t, &spec, Some(p.pid()));
        stop_perf(perf);
        log_outcome("llmtap", &proxied);
        let st = self.finish_llmtap(p, st, cpu0, mock0, proxied.sent_total, otlp0);
        log_proc(&st);
        Ok(ScenarioResult {
            name: name.into(),
            what: what.into(),
            direct: Some(direct),
            llmtap: Some(proxied),
            proc: Some(st),
            ..Default::default()
        })
    }

    fn start_perf(&self, name: &str, pid: u32) -> Option<Child> {
        if self.opts.perf.as_deref() != Some(name) {
            return None;
        }
        // System-wide (`-a`): `perf record -p` misses threads started after it attaches, such as
        // tokio's blocking pool where the exporter builds records. Report with `--pid <llmtap pid>`.
        let file = self.out_dir.join(format!("perf-{name}.data"));
        let _ = std::fs::write(
            self.out_dir.join(format!("perf-{name}.pid")),
            pid.to_string(),
        );
        Command::new("perf")
            .args([
                "record",
                "-F",
                "499",
                "--call-graph",
                "dwarf,16384",
                "-a",
                "-o",
            ])
            .arg(&file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| eprintln!("bench: perf: {e}"))
            .ok()
    }

    /// One large response at a time; RSS growth measured from just before the measured requests.
    fn big(&mut self, name: &str) -> Res<ScenarioResult> {
        let path = format!("/v1/messages?size={}", self.opts.big_bytes);
        let host = self.opts.llm_host.clone();
        let warm = Spec {
            concurrency: 1,
            warmup: Duration::ZERO,
            duration: None,
            requests: 1,
            warmup_requests: 1,
            new_conn: false,
            rate: None,
        };
        let spec = Spec {
            requests: self.opts.big_requests,
            warmup_requests: 0,
            ..warm.clone()
        };
        let dt = self.target(&host, &path, false, None);
        self.rt.block_on(load::run(&dt, &warm));
        let direct = self.measure(&dt, &spec, None);
        log_outcome("direct", &direct);
        let (p, idle) = self.start_llmtap(name)?;
        let t = self.target(&host, &path, false, Some(&p));
        let (cpu0, mock0, otlp0) = (
            procs::cpu_seconds(p.pid()).unwrap_or(0.0),
            procs::cpu_seconds(self.mock.pid()).unwrap_or(0.0),
            self.otlp.snapshot(),
        );
        // One small call first (connection pools, TLS, leaf cert), then reset the peak.
        let small = self.target(&host, "/v1/messages", false, Some(&p));
        self.rt.block_on(load::run(&small, &warm));
        std::thread::sleep(Duration::from_millis(300));
        let _ = std::fs::write(format!("/proc/{}/clear_refs", p.pid()), "5");
        let before = procs::status_mib(p.pid(), "VmRSS").unwrap_or(0.0);
        let proxied = self.measure(&t, &spec, Some(p.pid()));
        log_outcome("llmtap", &proxied);
        let st = ProcStats {
            idle_rss_mib: idle,
            rss_before_mib: before,
            ..Default::default()
        };
        let st = self.finish_llmtap(p, st, cpu0, mock0, proxied.sent_total + 1, otlp0);
        log_proc(&st);
        Ok(ScenarioResult {
            name: name.into(),
            what: format!(
                "{} MiB JSON response, {} sequential requests on one connection",
                self.opts.big_bytes >> 20,
                self.opts.big_requests
            ),
            direct: Some(direct),
            llmtap: Some(proxied),
            proc: Some(st),
            ..Default::default()
        })
    }

    /// N concurrent open SSE streams; llmtap RSS while they are all open.
    fn streams(&mut self, name: &str) -> Res<ScenarioResult> {
        let n = self.opts.streams;
        let path = "/v1/messages?events=120&delay_ms=500".to_string();
        let host = self.opts.llm_host.clone();
        let dt = self.target(&host, &path, true, None);
        let (direct, _) = self.rt.block_on(hold_streams(dt, n, None));
        log_outcome("direct", &direct);
        let (p, idle) = self.start_llmtap(name)?;
        let (cpu0, mock0, otlp0) = (
            procs::cpu_seconds(p.pid()).unwrap_or(0.0),
            procs::cpu_seconds(self.mock.pid()).unwrap_or(0.0),
            self.otlp.snapshot(),
        );
        let t = self.target(&host, &path, true, Some(&p));
        let (proxied, open_rss) = self.rt.block_on(hold_streams(t, n, Some(p.pid())));
        log_outcome("llmtap", &proxied);
        let st = ProcStats {
            idle_rss_mib: idle,
            rss_before_mib: idle,
            ..Default::default()
        };
        let mut st = self.finish_llmtap(p, st, cpu0, mock0, n as u64, otlp0);
        log_proc(&st);
        let hwm = st.peak_rss_mib;
        st.peak_rss_mib = open_rss.max(0.0);
        Ok(ScenarioResult {
            name: name.into(),
            what: format!("{n} concurrent open SSE streams"),
            direct: Some(direct),
            llmtap: Some(proxied),
            proc: Some(st),
            notes: vec![format!(
                "RSS with all streams open {open_rss:.1} MiB (VmHWM over the run incl. handshakes {hwm:.1} MiB)"
            )],
            ..Default::default()
        })
    }

    /// Sustained paced load with export on; every call must reach the receiver.
    fn otlp_sustained(&mut self, name: &str) -> Res<ScenarioResult> {
        let spec = Spec {
            concurrency: self.opts.otlp_clients,
            warmup: self.opts.warmup,
            duration: Some(self.opts.otlp_duration),
            requests: 0,
            warmup_requests: 0,
            new_conn: false,
            rate: Some(self.opts.otlp_rate),
        };
        let what = format!(
            "{} calls/s for {} s, export to the local OTLP receiver",
            self.opts.otlp_rate,
            self.opts.otlp_duration.as_secs()
        );
        let host = self.opts.llm_host.clone();
        let mut r = self.pair(name, &what, &host, "/v1/messages", false, spec)?;
        if self.cmd.otlp.is_none() {
            r.notes
                .push("--export stdout: no OTLP export measured".into());
        }
        Ok(r)
    }
}

fn stop_perf(perf: Option<Child>) {
    if let Some(mut c) = perf {
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(c.id().to_string())
            .status();
        let _ = c.wait();
    }
}

fn log_outcome(side: &str, o: &Outcome) {
    eprintln!(
        "bench:   {side:<7} ok={:<7} err={:<4} rps={:>9.1} p50={:>8.3} p99={:>8.3} ms  ttfb p50={:>8.3} p99={:>8.3} ms  other={:.2} cores {}",
        o.ok,
        o.errors,
        o.rps,
        o.latency_ms.p50,
        o.latency_ms.p99,
        o.ttfb_ms.p50,
        o.ttfb_ms.p99,
        o.other_cores,
        if o.error_kinds.is_empty() {
            String::new()
        } else {
            format!("{:?}", o.error_kinds)
        }
    );
}

fn log_proc(st: &ProcStats) {
    eprintln!(
        "bench:   llmtap  cpu={:.2}s ({:.3} s/1k req) idle={:.1} peak={:.1} end={:.1} MiB threads={} otlp records={} stop={:.1}s export={}",
        st.cpu_s,
        st.cpu_s_per_1k,
        st.idle_rss_mib,
        st.peak_rss_mib,
        st.rss_end_mib,
        st.threads,
        st.otlp.records,
        st.stop_s,
        st.export
    );
}

/// Opens `n` SSE streams (64 handshakes at a time), waits until all had their first event (or 60 s),
/// samples llmtap's RSS, then closes them. Latency = time to first event; rps = streams opened per second.
async fn hold_streams(t: Target, n: usize, pid: Option<u32>) -> (Outcome, f64) {
    let opened = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let (tx, rx) = tokio::sync::watch::channel(false);
    let body = client::request_body(true);
    let t0 = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for _ in 0..n {
        let (t, opened, failed, gate, mut rx, body) = (
            t.clone(),
            opened.clone(),
            failed.clone(),
            gate.clone(),
            rx.clone(),
            body.clone(),
        );
        handles.push(tokio::spawn(async move {
            let start = Instant::now();
            let permit = gate.acquire_owned().await;
            let first = open_one(&t, &body).await;
            drop(permit);
            match first {
                Ok((mut resp, _conn)) => {
                    let ttfb = client::us(start.elapsed());
                    opened.fetch_add(1, Ordering::Relaxed);
                    loop {
                        tokio::select! {
                            _ = rx.changed() => break,
                            f = resp.frame() => if !matches!(f, Some(Ok(_))) { break },
                        }
                    }
                    Ok(ttfb)
                }
                Err(e) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    Err(e)
                }
            }
        }));
    }
    let deadline = t0 + Duration::from_secs(90);
    while opened.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < n
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let open_time = t0.elapsed();
    let mut rss = 0.0f64;
    if let Some(pid) = pid {
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            rss = rss.max(procs::status_mib(pid, "VmRSS").unwrap_or(0.0));
        }
    }
    let _ = tx.send(true);
    let mut ttfb = Vec::new();
    let mut o = Outcome::default();
    for h in handles {
        match h.await {
            Ok(Ok(us)) => ttfb.push(us),
            Ok(Err(e)) => {
                *o.error_kinds
                    .entry(e.chars().take(80).collect())
                    .or_default() += 1
            }
            Err(_) => {}
        }
    }
    o.ok = ttfb.len() as u64;
    o.ok_total = o.ok;
    o.errors = (n - ttfb.len()) as u64;
    o.sent_total = n as u64;
    o.window_s = open_time.as_secs_f64();
    o.rps = o.ok as f64 / o.window_s.max(1e-6);
    o.ttfb_ms = load::Pct::of(&mut ttfb.clone());
    o.latency_ms = load::Pct::of(&mut ttfb);
    (o, rss)
}

type Resp = hyper::Response<hyper::body::Incoming>;

async fn open_one(
    t: &Target,
    body: &bytes::Bytes,
) -> Result<
    (
        http_body_util::combinators::BoxBody<bytes::Bytes, hyper::Error>,
        client::Conn,
    ),
    String,
> {
    let mut conn = client::connect(t).await?;
    let req = hyper::Request::post(&t.path)
        .header("host", &t.host)
        .header("content-type", "application/json")
        .header("x-api-key", "sk-ant-bench-0000000000000000000000000000")
        .header("anthropic-version", "2023-06-01")
        .body(Full::new(body.clone()))
        .map_err(client::err("request"))?;
    let fut = async {
        let resp: Resp = conn.send_request(req).await.map_err(client::err("send"))?;
        if !resp.status().is_success() {
            return Err(format!("http {}", resp.status().as_u16()));
        }
        let mut b = resp.into_body().boxed();
        match b.frame().await {
            Some(Ok(_)) => Ok(b),
            Some(Err(e)) => Err(format!("body: {e}")),
            None => Err("empty stream".into()),
        }
    };
    let b = tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .map_err(|_| "first event timeout".to_string())??;
    Ok((b, conn))
}
