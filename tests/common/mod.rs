//! Test harness: a test CA, a fake HTTPS upstream, llmtap started in-process, and clients through it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

use clap::Parser;
use llmtap::RunningProxy;
use llmtap::audit::EgressRecord;
use llmtap::capture::{Exchange, ExchangeSink};
use llmtap::config::{Cli, Config};
use tokio::sync::mpsc;

pub use upstream::{TestCa, Upstream};

/// Every test step is bounded by this; generous for slow, loaded machines.
pub const STEP: Duration = Duration::from_secs(20);

/// Both ring and aws-lc are linked (test clients bring ring): pick one for the process.
pub fn init_crypto() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A sink that hands exchanges to the test.
#[derive(Clone)]
pub struct ChannelSink {
    tx: mpsc::UnboundedSender<Exchange>,
    audit_tx: mpsc::UnboundedSender<EgressRecord>,
}

impl ExchangeSink for ChannelSink {
    fn submit(&self, exchange: Exchange) {
        let _ = self.tx.send(exchange);
    }

    fn submit_egress(&self, record: EgressRecord) {
        let _ = self.audit_tx.send(record);
    }
}

/// The audit records (`llmtap.egress`) the proxy submitted.
pub struct AuditRecords {
    rx: Mutex<mpsc::UnboundedReceiver<EgressRecord>>,
}

impl AuditRecords {
    /// The next audit record, or a panic after `STEP`.
    pub async fn next(&self) -> EgressRecord {
        let mut rx = self.rx.lock().await;
        tokio::time::timeout(STEP, rx.recv())
            .await
            .expect("no audit record within the step timeout")
            .expect("sink closed")
    }

    /// The next audit record for `host`, skipping others.
    pub async fn next_for(&self, host: &str) -> EgressRecord {
        loop {
            let r = self.next().await;
            if r.server_address == host {
                return r;
            }
        }
    }

    /// Whatever has arrived so far, without waiting.
    pub fn drain(&self) -> Vec<EgressRecord> {
        let mut rx = self
            .rx
            .try_lock()
            .expect("audit records read from one task at a time");
        let mut out = Vec::new();
        while let Ok(e) = rx.try_recv() {
            out.push(e);
        }
        out
    }
}

pub struct Records {
    rx: Mutex<mpsc::UnboundedReceiver<Exchange>>,
}

impl Records {
    /// The next exchange, or a panic after `STEP`.
    pub async fn next(&self) -> Exchange {
        let mut rx = self.rx.lock().await;
        tokio::time::timeout(STEP, rx.recv())
            .await
            .expect("no exchange record within the step timeout")
            .expect("sink closed")
    }

    /// Whatever has arrived so far, without waiting.
    pub fn drain(&self) -> Vec<Exchange> {
        let mut rx = self
            .rx
            .try_lock()
            .expect("records read from one task at a time");
        let mut out = Vec::new();
        while let Ok(e) = rx.try_recv() {
            out.push(e);
        }
        out
    }
}

/// llmtap running in this process on 127.0.0.1:0.
pub struct TestProxy {
    pub proxy: Option<RunningProxy>,
    pub addr: SocketAddr,
    pub records: Records,
    pub audit: AuditRecords,
    pub ca_dir: tempfile::TempDir,
    pub ca_pem: String,
}

impl TestProxy {
    /// Starts llmtap with extra flags (the listen address and CA dir are set here).
    pub async fn start(extra: &[&str]) -> TestProxy {
        init_crypto();
        let ca_dir = tempfile::tempdir().unwrap();
        let mut argv: Vec<String> = vec![
            "llmtap".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--ca-dir".into(),
            ca_dir.path().display().to_string(),
            "--addons-config".into(),
            addons_dir().display().to_string(),
        ];
        argv.extend(extra.iter().map(|s| s.to_string()));
        let cli = Cli::try_parse_from(argv).unwrap();
        let config = Config::from_args(&cli.run).unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let (audit_tx, audit_rx) = mpsc::unbounded_channel();
        let proxy = llmtap::start(config, Arc::new(ChannelSink { tx, audit_tx }))
            .await
            .unwrap();
        let ca_pem = std::fs::read_to_string(ca_dir.path().join("ca.pem")).unwrap();
        TestProxy {
            addr: proxy.local_addr,
            proxy: Some(proxy),
            records: Records { rx: Mutex::new(rx) },
            audit: AuditRecords {
                rx: Mutex::new(audit_rx),
            },
            ca_dir,
            ca_pem,
        }
    }

    /// A reqwest client that goes through llmtap and trusts only llmtap's CA.
    pub fn client(&self) -> reqwest::Client {
        self.client_builder().build().unwrap()
    }

    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .proxy(reqwest::Proxy::all(format!("http://{}", self.addr)).unwrap())
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap())
            .timeout(STEP)
    }

    pub async fn shutdown(&mut self) -> llmtap::ShutdownReport {
        self.proxy.take().unwrap().shutdown().await
    }
}

pub fn addons_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("addons-config")
}

/// Path of the built `llmtap` binary (integration tests get it from cargo).
pub fn llmtap_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_llmtap"))
}
