//! The `llmtap` binary: parse flags, then run the proxy or a subcommand.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use llmtap::config::{CaAction, Cli, Command, Config};
use llmtap::export::{ExportConfig, ExportFlags, ExportHandle, process_env};

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
        None => run(&cli.run).await,
    }
}

fn ca_command(args: &llmtap::config::RunArgs, action: CaAction) -> anyhow::Result<ExitCode> {
    let dir = &args.ca_dir;
    match action {
        CaAction::Print => {
            let ca = llmtap::ca::CertAuthority::load_or_create(dir)?;
            print!("{}", ca.cert_pem());
        }
        CaAction::Rotate => {
            let moved = llmtap::ca::rotate(dir)?;
            for path in moved {
                eprintln!("llmtap: moved {}", path.display());
            }
            let ca = llmtap::ca::CertAuthority::load_or_create(dir)?;
            eprintln!(
                "llmtap: new CA in {}; give clients the new ca.pem and restart them",
                dir.display()
            );
            print!("{}", ca.cert_pem());
        }
    }
    Ok(ExitCode::SUCCESS)
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
    let exporter = start_exporter(&config)?;
    let proxy = llmtap::start(config, Arc::new(exporter.clone())).await?;
    tracing::info!(listen = %proxy.local_addr, "llmtap listening");
    wait_for_signal().await;
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

fn start_exporter(config: &Config) -> anyhow::Result<ExportHandle> {
    let flags = ExportFlags {
        max_record_bytes: config.max_record_bytes,
        queue_capacity: config.export_queue,
    };
    let mut export_config = ExportConfig::from_env_and_flags(&process_env, &flags)?;
    // The same roots as upstream calls, so a private OTLP endpoint works with --upstream-ca.
    let tls = llmtap::proxy::upstream::client_tls_config(config.upstream_ca.as_deref())?;
    export_config.tls = Some(Arc::new(tls));
    let lookup = llmtap::route::provider_lookup(config.providers.clone());
    Ok(ExportHandle::start(
        export_config,
        Arc::clone(&config.redactor),
        lookup,
    )?)
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops llmtap");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
