//! llmtap-bench: end-to-end benchmark of llmtap against a direct connection, loopback only.
//!
//! `cargo run --release -p llmtap-bench -- all` builds llmtap (release), starts a TLS mock LLM
//! upstream (subprocess), a local OTLP/HTTP receiver, and for every scenario measures the load
//! direct (client → mock) and through a fresh llmtap child (client → CONNECT → llmtap → mock).
//! Prints a Markdown table and writes JSON to `bench-results/` in the workspace root.
//! `soak` (only when asked) runs mixed traffic through one llmtap with a spool while the OTLP
//! receiver goes down and up, and reports records lost and duplicated, RSS over time and latency.

mod certs;
mod client;
mod load;
mod mock;
mod otlp;
mod procs;
mod report;
mod scenarios;
mod soak;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

pub type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Parser)]
#[command(
    name = "llmtap-bench",
    about = "Benchmark llmtap against a direct connection (loopback only)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every scenario (or those in --only), direct and through llmtap; print the table, write JSON.
    All(Box<Opts>),
    /// The soak alone: the same as `all --only soak` (mixed traffic, the OTLP receiver flapping).
    Soak(Box<Opts>),
    /// Serve the mock LLM upstream (used as a subprocess by `all`).
    Mock {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
}

#[derive(Args, Clone, Debug)]
pub struct Opts {
    /// Measured time per duration-based run (direct and llmtap each).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Unmeasured load before each measured run.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Sustained-export run length (the target is 30 s).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub otlp_duration: Duration,
    /// Calls per second offered in the OTLP export scenario.
    #[arg(long, default_value_t = 5000.0)]
    pub otlp_rate: f64,
    /// Concurrent connections in the OTLP export scenario.
    #[arg(long, default_value_t = 64)]
    pub otlp_clients: usize,
    /// Open SSE streams in the many-streams scenario.
    #[arg(long, default_value_t = 1000)]
    pub streams: usize,
    /// Size of the large response.
    #[arg(long, default_value_t = 5 * 1024 * 1024)]
    pub big_bytes: usize,
    /// Measured large responses (one more is sent first, unmeasured).
    #[arg(long, default_value_t = 5)]
    pub big_requests: u64,
    /// SSE events per stream and their spacing.
    #[arg(long, default_value_t = 50)]
    pub sse_events: usize,
    #[arg(long, default_value_t = 20)]
    pub sse_delay_ms: u64,
    /// Soak: how long the mixed traffic runs (through one llmtap with --spool-dir).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub soak_duration: Duration,
    /// Soak: the OTLP receiver goes down after this long, comes back after as long again, and so on.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub soak_flap: Duration,
    /// Soak: what "down" means: refuse (listener closed), 503 (every export answered 503), or
    /// alternate (refuse, then 503, then refuse, …).
    #[arg(long, default_value = "alternate")]
    pub soak_down: String,
    /// Soak: calls per second, all kinds together (paced, open loop).
    #[arg(long, default_value_t = 200.0)]
    pub soak_rate: f64,
    /// Soak: share of each kind of call (weights): json, sse (--sse-events/--sse-delay-ms), tunnel
    /// (to --tunnel-host, not recorded), upload (POST bodies of 64 KiB to 1 MiB).
    #[arg(long, default_value = "json=50,sse=20,tunnel=25,upload=5")]
    pub soak_mix: String,
    /// Soak: length of the direct run of the same mix first (the latency baseline); 0 = none, and
    /// the added latency is measured against llmtap's own first window.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub soak_direct: Duration,
    /// Soak: after the traffic, how long to wait for llmtap's queue and spool to drain.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub soak_drain: Duration,
    /// Soak: how often llmtap's RSS and /healthz are sampled.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub soak_sample: Duration,
    /// Soak: run llmtap without --spool-dir (records are then expected to be lost).
    #[arg(long)]
    pub soak_no_spool: bool,
    /// Soak: llmtap --spool-max-bytes (default: llmtap's own).
    #[arg(long)]
    pub soak_spool_max_bytes: Option<String>,
    /// Scenarios to run (comma list): json_c1,json_c32,newconn_c8,sse_c8,big_5mb,tunnel_c32,streams_1000,otlp_5k,
    /// and soak (only when named: it is not part of the default list).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// The llmtap binary; default: build it (cargo build --release -p llmtap) and use target/release/llmtap.
    #[arg(long)]
    pub llmtap_bin: Option<PathBuf>,
    /// Do not run cargo build for llmtap first.
    #[arg(long)]
    pub no_build: bool,
    /// Name intercepted by llmtap (--llm-hosts), pinned to the mock with --resolve.
    #[arg(long, default_value = "api.anthropic.com")]
    pub llm_host: String,
    /// A name NOT in --llm-hosts, for the tunnel scenario (also pinned to the mock).
    #[arg(long, default_value = "localhost")]
    pub tunnel_host: String,
    /// llmtap --max-body-size (the capture cap).
    #[arg(long, default_value_t = 1024 * 1024)]
    pub max_body_size: usize,
    /// Where llmtap's records go during the runs: otlp (the local receiver) or stdout (/dev/null).
    #[arg(long, default_value = "otlp")]
    pub export: String,
    /// Extra arguments for llmtap (repeatable).
    #[arg(long = "llmtap-arg", allow_hyphen_values = true)]
    pub llmtap_args: Vec<String>,
    /// Tokio worker threads of the load generator and of the mock.
    #[arg(long, default_value_t = 1)]
    pub loadgen_threads: usize,
    #[arg(long, default_value_t = 1)]
    pub mock_threads: usize,
    /// Record `perf record -g` of llmtap during this scenario's measured run (e.g. json_c32).
    #[arg(long)]
    pub perf: Option<String>,
    /// Output directory (default: bench-results/ in the workspace root).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Mock { dir, threads } => mock::main(&dir, threads),
        Cmd::All(opts) => scenarios::run_all(*opts),
        Cmd::Soak(mut opts) => {
            opts.only = vec!["soak".into()];
            scenarios::run_all(*opts)
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("llmtap-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}
