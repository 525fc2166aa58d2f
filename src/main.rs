//! The `llmtap` binary: parse flags, then run the proxy or a subcommand.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use llmtap::config::{CaAction, Cli, Command, Config, PolicyAction};
use llmtap::export::{ExportConfig, ExportFlags, ExportHandle, SpoolSettings, process_env};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("llmtap: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("llmtap: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LLMTAP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("llmtap=info,hudsucker=warn,warn"));
    // stdout carries records; diagnostics go to stderr.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Some(Command::Ca { action }) => ca_command(&cli.run, action),
        Some(Command::Healthcheck { addr }) => healthcheck(&cli.run, addr).await,
        Some(Command::Policy { action }) => Ok(policy_command(&cli.run, action).await),
        None => run(&cli.run).await,
    }
}

fn ca_command(args: &llmtap::config::RunArgs, action: CaAction) -> anyhow::Result<ExitCode> {
    let dir = &args.ca_dir;
    match action {
        CaAction::Print => {
            let new = new_ca(args, false)?;
            let ca = llmtap::ca::CertAuthority::load_or_create_with(dir, &new)?;
            print!("{}", ca.cert_pem());
        }
        CaAction::Rotate { name_constrained } => {
            // Built before anything moves: bad --llm-hosts leave the current CA in place.
            let new = new_ca(args, name_constrained)?;
            let moved = llmtap::ca::rotate(dir, &new)?;
            for path in moved {
                eprintln!("llmtap: moved {}", path.display());
            }
            let ca = llmtap::ca::CertAuthority::load_or_create_with(dir, &new)?;
            eprintln!(
                "llmtap: new CA in {}; give clients the new ca.pem and restart them",
                dir.display()
            );
            if let Some(scope) = ca.name_scope() {
                eprintln!("llmtap: its name constraints: {scope}");
            }
            print!("{}", ca.cert_pem());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// How a CA made now is made: name-constrained to --llm-hosts when `name_constrained` or
/// --ca-name-constraints.
fn new_ca(
    args: &llmtap::config::RunArgs,
    name_constrained: bool,
) -> anyhow::Result<llmtap::ca::NewCa> {
    if !(name_constrained || args.ca_name_constraints) {
        return Ok(llmtap::ca::NewCa::default());
    }
    let hosts = llmtap::route::HostList::parse(&args.llm_hosts)
        .with_context(|| format!("--llm-hosts = {:?}", args.llm_hosts))?;
    Ok(llmtap::ca::NewCa::name_constrained(&hosts)?)
}

async fn healthcheck(
    args: &llmtap::config::RunArgs,
    addr: Option<String>,
) -> anyhow::Result<ExitCode> {
    let raw = addr.unwrap_or_else(|| args.listen.clone());
    let addr: std::net::SocketAddr = raw
        .parse()
        .with_context(|| format!("--addr {raw:?} is not IP:PORT"))?;
    match llmtap::health::check(llmtap::health::probe_addr(addr)).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("llmtap healthcheck: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// How long the exporter may take to flush after the proxy stopped.
const EXPORT_FLUSH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

async fn run(args: &llmtap::config::RunArgs) -> anyhow::Result<ExitCode> {
    let config = Config::from_args(args)?;
    let (exporter, destination) = start_exporter(&config)?;
    // Before the proxy starts: a SIGHUP or SIGTERM right after start must not kill the process.
    let mut signals = Signals::install();
    let proxy = llmtap::start(config, Arc::new(exporter.clone())).await?;
    announce(&proxy, &destination);
    signals.wait_for_stop(&proxy).await;
    tracing::info!(
        in_flight = proxy.shared.in_flight.current(),
        grace = ?proxy.shared.config.shutdown_grace,
        "shutting down: no new connections; waiting for in-flight exchanges"
    );
    let report = proxy.shutdown().await;
    if report.abandoned > 0 {
        tracing::warn!(
            abandoned = report.abandoned,
            "grace period over with exchanges still running"
        );
    }
    let stats = exporter.shutdown(EXPORT_FLUSH_DEADLINE).await;
    tracing::info!(
        exported = stats.exported,
        dropped_queue_full = stats.dropped_queue_full,
        dropped_export_failed = stats.dropped_export_failed,
        dropped_shutdown = stats.dropped_shutdown,
        "stopped"
    );
    Ok(ExitCode::SUCCESS)
}

fn start_exporter(config: &Config) -> anyhow::Result<(ExportHandle, String)> {
    let flags = ExportFlags {
        max_record_bytes: config.max_record_bytes,
        queue_capacity: config.export_queue,
    };
    let mut export_config = ExportConfig::from_env_and_flags(&process_env, &flags)?;
    // The same roots as upstream calls, so a private OTLP endpoint works with --upstream-ca.
    let tls = llmtap::proxy::upstream::client_tls_config(config.upstream_ca.as_deref())?;
    export_config.tls = Some(Arc::new(tls));
    export_config.spool = config.spool.as_ref().map(|s| SpoolSettings {
        dir: s.dir.clone(),
        max_bytes: s.max_bytes as u64,
    });
    let mut destination = describe(&export_config.destination);
    if let (Some(spool), llmtap::export::Destination::Otlp { .. }) =
        (&export_config.spool, &export_config.destination)
    {
        destination.push_str(&format!(
            ", spool {} (up to {} bytes)",
            spool.dir.display(),
            spool.max_bytes
        ));
    }
    let handle = ExportHandle::start(export_config, Arc::clone(&config.redactor))?;
    Ok((handle, destination))
}

/// Where records go, without credentials (an endpoint's user-info is left out).
fn describe(destination: &llmtap::export::Destination) -> String {
    match destination {
        llmtap::export::Destination::Stdout => "stdout (JSON lines)".to_string(),
        llmtap::export::Destination::Otlp { endpoint, .. } => match endpoint.parse::<http::Uri>() {
            Ok(uri) => format!(
                "OTLP {}://{}{}",
                uri.scheme_str().unwrap_or("http"),
                uri.host().unwrap_or_default(),
                uri.port().map(|p| format!(":{p}")).unwrap_or_default()
            ),
            Err(_) => "OTLP (endpoint unparsable)".to_string(),
        },
    }
}

/// What llmtap loaded, once, at start: what an operator checks first.
fn announce(proxy: &llmtap::RunningProxy, destination: &str) {
    let config = &proxy.shared.config;
    let policy = proxy.shared.rules().policy.summary();
    let name_constraints = proxy
        .shared
        .ca
        .name_scope()
        .map_or("none".to_string(), ToString::to_string);
    tracing::info!(
        listen = %proxy.local_addr,
        ca = %config.ca_dir.join("ca.pem").display(),
        ca_name_constraints = %name_constraints,
        intercept = %config.llm_hosts_text,
        %policy,
        keys = %proxy.shared.keys().summary(),
        prices = %proxy.shared.accounting.prices().summary(),
        limits_store = %proxy.shared.accounting.limiter.store_name(),
        reverse_listen = %proxy.reverse_addr.map_or("off".to_string(), |a| a.to_string()),
        records = %destination,
        audit = ?config.audit,
        "llmtap listening"
    );
}

/// SIGTERM, SIGHUP (and Ctrl-C), watched from before the proxy starts.
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate())
            .map_err(
                |e| tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops llmtap"),
            )
            .ok();
        let hup = signal(SignalKind::hangup())
            .map_err(|e| tracing::warn!(error = %e, "cannot watch SIGHUP; the policy cannot be reloaded"))
            .ok();
        Signals { term, hup }
    }

    /// Waits for SIGTERM or Ctrl-C; SIGHUP meanwhile re-reads the policy file.
    async fn wait_for_stop(&mut self, proxy: &llmtap::RunningProxy) {
        loop {
            tokio::select! {
                _ = recv_or_never(self.term.as_mut()) => return,
                _ = tokio::signal::ctrl_c() => return,
                _ = recv_or_never(self.hup.as_mut()) => reload(proxy),
            }
        }
    }
}

/// SIGHUP: the policy first (the keys are checked against it), then the keys; each keeps
/// its last good version when its new one is bad.
fn reload(proxy: &llmtap::RunningProxy) {
    let config = &proxy.shared.config;
    if config.policy_path.is_some() {
        match proxy.reload_policy() {
            Ok(summary) => {
                tracing::info!(policy = %summary, "policy reloaded; new connections use it")
            }
            Err(e) => tracing::error!(error = %e, "policy reload failed"),
        }
    }
    match proxy.reload_prices() {
        Ok(summary) => tracing::info!(prices = %summary, "prices reloaded"),
        Err(e) => tracing::error!(error = %e, "prices reload failed"),
    }
    match proxy.reload_keys() {
        Ok(Some(summary)) => {
            tracing::info!(keys = %summary, "keys reloaded; new requests use them")
        }
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "keys reload failed"),
    }
}

async fn recv_or_never(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            if s.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// `llmtap policy check`: 0 allowed, 1 denied, 2 bad configuration.
async fn policy_command(args: &llmtap::config::RunArgs, action: PolicyAction) -> ExitCode {
    let PolicyAction::Check {
        client,
        http,
        target,
    } = action;
    let config = match Config::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("llmtap: {e}");
            return ExitCode::from(2);
        }
    };
    match llmtap::policy_check::run(&config, client.as_deref(), http, &target).await {
        Ok((allowed, text)) => {
            println!("{text}");
            if allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("llmtap policy check: {e}");
            ExitCode::from(2)
        }
    }
}
