//! The proxy: listener and accept loop, one `Decision` per connection, tunnel or intercept,
//! graceful shutdown and policy reload.

pub mod activity;
pub mod conn_audit;
pub mod errors;
pub mod forward;
pub mod handler;
pub mod intercept;
pub mod respond;
pub mod reverse;
pub mod server;
pub mod tunnel;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto::Builder as ServerBuilder;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::ca::{CaError, CertAuthority};
use crate::capture::{CaptureBudget, ExchangeSink, InFlight};
use crate::config::{Config, FieldError};
use crate::keys::{KeyCounts, KeySet, KeysError};
use crate::policy::{EgressRules, PolicyFileError, PolicySet};
use tunnel::TunnelStats;
use upstream::{TlsSetupError, UpstreamPool};

/// Largest request head accepted from a client; larger heads get 431.
pub const MAX_REQUEST_HEAD: usize = 64 * 1024;
/// A client must finish sending its request head within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// After the last exchange ended, time for connections to write their final frames.
const FLUSH_PAUSE: Duration = Duration::from_millis(200);
/// After cutting at the end of the grace, how long exchanges get to hand in their records.
const CUT_WAIT: Duration = Duration::from_secs(2);
/// Bytes held by all captures at once; beyond it bodies are captured shorter, never buffered more.
pub const CAPTURE_BUDGET: usize = 256 * 1024 * 1024;

/// Every body llmtap hands to hyper.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ProxyBody = BoxBody<Bytes, BoxError>;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("CA: {0}")]
    Ca(#[from] CaError),
    #[error("upstream TLS: {0}")]
    Tls(#[from] TlsSetupError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Decisions by `llmtap.egress.decision`, for `/healthz`.
#[derive(Debug, Default)]
pub struct DecisionCounts {
    pub allow: AtomicU64,
    pub deny: AtomicU64,
    pub would_deny: AtomicU64,
}

/// Client connections, for `/healthz`.
#[derive(Debug, Default)]
pub struct ConnStats {
    pub open: AtomicU64,
    pub total: AtomicU64,
    /// Closed at once because `--max-connections` were open.
    pub refused_over_limit: AtomicU64,
    /// Accept failures (file descriptors or memory exhausted, ...).
    pub accept_errors: AtomicU64,
    /// Connections closed after `--idle-timeout` without a request.
    pub closed_idle: AtomicU64,
}

/// The rules in force and where they came from; replaced whole on reload.
pub struct LoadedRules {
    pub rules: Arc<EgressRules>,
    pub loaded_at: SystemTime,
}

/// State shared by every connection.
pub struct Shared {
    pub config: Config,
    pub sink: Arc<dyn ExchangeSink>,
    pub in_flight: Arc<InFlight>,
    pub budget: Arc<CaptureBudget>,
    pub tunnels: Arc<TunnelStats>,
    pub ca: Arc<CertAuthority>,
    pub pool: UpstreamPool,
    pub decisions: DecisionCounts,
    pub connections: ConnStats,
    pub key_counts: KeyCounts,
    /// Cost, budgets and call metrics of finished calls; the limiter admits new ones.
    pub accounting: Arc<crate::accounting::Accounting>,
    /// What `GET /metrics` shows.
    pub metrics: Arc<crate::metrics::Metrics>,
    rules: RwLock<LoadedRules>,
    /// The keys in force; replaced whole on reload (a request keeps the set it started with).
    keys: RwLock<Arc<KeySet>>,
    /// True once shutdown began: connections finish their current requests and close.
    pub shutdown: watch::Receiver<bool>,
    /// True once the shutdown grace ran out: what still runs is cut (and recorded as such).
    pub cut: watch::Receiver<bool>,
    started: Instant,
}

impl Shared {
    /// The rules for a new decision (a snapshot: open connections keep the one they used).
    pub fn rules(&self) -> Arc<EgressRules> {
        match self.rules.read() {
            Ok(r) => Arc::clone(&r.rules),
            Err(poisoned) => Arc::clone(&poisoned.into_inner().rules),
        }
    }

    /// The keys for a new request.
    pub fn keys(&self) -> Arc<KeySet> {
        match self.keys.read() {
            Ok(k) => Arc::clone(&k),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn replace_keys(&self, keys: KeySet) {
        let keys = Arc::new(keys);
        match self.keys.write() {
            Ok(mut k) => *k = keys,
            Err(poisoned) => *poisoned.into_inner() = keys,
        }
    }

    fn replace_policy(&self, policy: PolicySet) {
        let mut rules = (*self.rules()).clone();
        rules.policy = Arc::new(policy);
        let loaded = LoadedRules {
            rules: Arc::new(rules),
            loaded_at: SystemTime::now(),
        };
        match self.rules.write() {
            Ok(mut r) => *r = loaded,
            Err(poisoned) => *poisoned.into_inner() = loaded,
        }
    }

    fn policy_loaded_at(&self) -> SystemTime {
        match self.rules.read() {
            Ok(r) => r.loaded_at,
            Err(poisoned) => poisoned.into_inner().loaded_at,
        }
    }

    /// The hyper server settings for client connections (outer and inside intercepted TLS).
    pub fn server_builder(&self) -> ServerBuilder<TokioExecutor> {
        let mut builder = ServerBuilder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(MAX_REQUEST_HEAD);
        builder.http2().timer(TokioTimer::new());
        builder
    }

    /// The `/healthz` document.
    pub fn health(&self) -> serde_json::Value {
        let rules = self.rules();
        let loaded_at = self
            .policy_loaded_at()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        serde_json::json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "exchanges": {
                "in_flight": self.in_flight.current(),
                "finished": self.in_flight.finished(),
            },
            "connections": {
                "open": self.connections.open.load(Ordering::Relaxed),
                "total": self.connections.total.load(Ordering::Relaxed),
                "max": self.config.limits.max_connections,
                "refused_over_limit": self.connections.refused_over_limit.load(Ordering::Relaxed),
                "accept_errors": self.connections.accept_errors.load(Ordering::Relaxed),
                "closed_idle": self.connections.closed_idle.load(Ordering::Relaxed),
            },
            "tunnels": {
                "open": self.tunnels.open.load(Ordering::Relaxed),
                "total": self.tunnels.total.load(Ordering::Relaxed),
            },
            "policy": {
                "source": rules.policy.source.as_ref().map(|p| p.display().to_string()),
                "mode": rules.policy.mode.as_str(),
                "loaded_at_unix": loaded_at,
                "decisions": {
                    "allow": self.decisions.allow.load(Ordering::Relaxed),
                    "deny": self.decisions.deny.load(Ordering::Relaxed),
                    "would_deny": self.decisions.would_deny.load(Ordering::Relaxed),
                },
            },
            "capture": {
                "bytes_held": self.budget.used(),
                "budget_bytes": CAPTURE_BUDGET,
                "budget_denials": self.budget.denied(),
            },
            "keys": self.key_counts.snapshot(),
            "limits": self.accounting.limiter.health(),
            "leaf_certificates_cached": self.ca.cached_leaves(),
            "export": self.sink.stats(),
        })
    }
}

/// A started proxy: its address, and the handle to stop it.
pub struct RunningProxy {
    pub local_addr: SocketAddr,
    /// Where the base-URL routes are served (`--reverse-listen`), if anywhere.
    pub reverse_addr: Option<SocketAddr>,
    pub shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    cut: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// What shutdown did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Exchanges still running when the grace period ran out.
    pub abandoned: usize,
}

/// What a policy reload did.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no --policy file to reload")]
    NoPolicyFile,
    #[error("{0}; the previous policy stays in force")]
    Invalid(#[from] PolicyFileError),
    #[error("{0}; the previous keys stay in force")]
    Keys(#[from] KeysError),
    #[error("{}; the previous keys stay in force", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    KeysMismatch(Vec<FieldError>),
    #[error("{}; the previous prices stay in force", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Prices(Vec<FieldError>),
}

impl RunningProxy {
    /// Re-reads `--policy`: a good file applies to new connections; a bad one changes nothing.
    pub fn reload_policy(&self) -> Result<String, ReloadError> {
        let path = self
            .shared
            .config
            .policy_path
            .as_ref()
            .ok_or(ReloadError::NoPolicyFile)?;
        let policy = PolicySet::load(path)?;
        let summary = policy.summary();
        self.shared.replace_policy(policy);
        Ok(summary)
    }

    /// Re-reads `prices.toml` of `--addons-config`: a good file applies to calls that finish
    /// from now on; a bad one keeps the last good prices.
    pub fn reload_prices(&self) -> Result<String, ReloadError> {
        let mut problems = Vec::new();
        match crate::config::load_prices(&mut problems, &self.shared.config.addons_config) {
            Some(prices) => {
                let summary = prices.summary();
                self.shared.accounting.replace_prices(prices);
                Ok(summary)
            }
            None => Err(ReloadError::Prices(problems)),
        }
    }

    /// Re-reads `--keys` and every key source it names: good keys apply to new requests; a
    /// bad file (or a source that is gone) changes nothing. `Ok(None)`: no `--keys`.
    pub fn reload_keys(&self) -> Result<Option<String>, ReloadError> {
        let Some(path) = self.shared.config.keys_path.as_ref() else {
            return Ok(None);
        };
        let keys = KeySet::load(path)?;
        let rules = self.shared.rules();
        let mut problems = Vec::new();
        crate::config::check_keys(
            &mut problems,
            &keys,
            &rules.policy,
            &rules.llm_hosts,
            &rules.providers,
        );
        if !problems.is_empty() {
            return Err(ReloadError::KeysMismatch(problems));
        }
        let summary = keys.summary();
        self.shared.replace_keys(keys);
        Ok(Some(summary))
    }

    /// Stops accepting, waits up to the grace period for in-flight exchanges, then returns.
    pub async fn shutdown(mut self) -> ShutdownReport {
        let _ = self.stop.send(true);
        let grace = self.shared.config.shutdown_grace;
        let in_flight = Arc::clone(&self.shared.in_flight);
        let drained = tokio::time::timeout(grace, async {
            let _ = (&mut self.task).await;
            in_flight.wait_idle().await;
            // An exchange ends when its last frame is handed to hyper; give the connection
            // a moment to write it out before the runtime goes away.
            tokio::time::sleep(FLUSH_PAUSE).await;
        })
        .await;
        let abandoned = in_flight.current();
        if drained.is_err() {
            self.task.abort();
            // Cut what still runs: each exchange ends as `shutdown` and hands in its record.
            in_flight.cut_for_shutdown();
            let _ = self.cut.send(true);
            let _ = tokio::time::timeout(CUT_WAIT, in_flight.wait_idle()).await;
        }
        ShutdownReport { abandoned }
    }
}

/// Loads the CA, binds the listener and starts serving in the background.
pub async fn start(
    config: Config,
    sink: Arc<dyn ExchangeSink>,
) -> Result<RunningProxy, ProxyError> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ca = Arc::new(CertAuthority::for_proxy(
        &config.ca_dir,
        &config.llm_hosts,
        config.ca_name_constraints,
    )?);
    let tls = upstream::client_tls_config(config.upstream_ca.as_deref())?;
    let listener = bind(config.listen).map_err(|source| ProxyError::Bind {
        addr: config.listen,
        source,
    })?;
    let local_addr = listener.local_addr().map_err(|source| ProxyError::Bind {
        addr: config.listen,
        source,
    })?;
    let reverse = match config.reverse_listen {
        Some(addr) => {
            let listener = bind(addr).map_err(|source| ProxyError::Bind { addr, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| ProxyError::Bind { addr, source })?;
            Some((listener, bound))
        }
        None => None,
    };
    let reverse_addr = reverse.as_ref().map(|(_, addr)| *addr);
    let mut own = own_addresses(local_addr);
    if let Some(addr) = reverse_addr {
        own.extend(own_addresses(addr));
    }
    let rules = config.egress_rules(own);
    let keys = Arc::clone(&config.keys);
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let on_store_error: crate::limits::StoreErrorHook = {
        let metrics = Arc::clone(&metrics);
        Arc::new(move || metrics.count_limits_store_error())
    };
    let limiter = Arc::new(crate::limits::Limiter::new(
        config.limits_store.clone(),
        config.limits_store_fail,
        on_store_error,
    ));
    limiter.connect_in_background();
    let accounting = Arc::new(crate::accounting::Accounting::new(
        config.prices.clone(),
        limiter,
        Arc::clone(&metrics),
    ));
    let (stop, stopped) = watch::channel(false);
    let (cut, cut_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        config,
        sink,
        in_flight: InFlight::new(),
        budget: CaptureBudget::new(CAPTURE_BUDGET),
        tunnels: Arc::new(TunnelStats::default()),
        ca,
        pool: UpstreamPool::new(tls),
        decisions: DecisionCounts::default(),
        connections: ConnStats::default(),
        key_counts: KeyCounts::default(),
        metrics,
        accounting,
        keys: RwLock::new(keys),
        rules: RwLock::new(LoadedRules {
            rules: Arc::new(rules),
            loaded_at: SystemTime::now(),
        }),
        shutdown: stopped,
        cut: cut_rx,
        started: Instant::now(),
    });
    let proxy_loop = server::accept_loop(listener, Arc::clone(&shared), server::Front::Proxy);
    let reverse_loop = reverse.map(|(listener, _)| {
        server::accept_loop(listener, Arc::clone(&shared), server::Front::Reverse)
    });
    let task = tokio::spawn(async move {
        match reverse_loop {
            Some(reverse_loop) => {
                tokio::join!(proxy_loop, reverse_loop);
            }
            None => proxy_loop.await,
        }
    });
    Ok(RunningProxy {
        local_addr,
        reverse_addr,
        shared,
        stop,
        cut,
        task,
    })
}

/// The addresses a connection to llmtap itself would use: the listen address, and when it
/// listens on every interface, each interface's address on that port (a loop through a
/// container's own IP is still a loop).
pub fn own_addresses(local_addr: SocketAddr) -> Vec<SocketAddr> {
    let mut own = vec![local_addr];
    if local_addr.ip().is_unspecified() {
        match if_addrs::get_if_addrs() {
            Ok(interfaces) => own.extend(
                interfaces
                    .iter()
                    .map(|i| SocketAddr::new(i.ip(), local_addr.port())),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list interface addresses; only loopback counts as llmtap itself")
            }
        }
    }
    own
}

/// Resolves once shutdown has begun.
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // An error means the sender is gone: the proxy is being dropped, which is a stop too.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Binds with TCP_NODELAY set on the listening socket: Linux hands it on to every accepted
/// socket. Without it Nagle + delayed ACK stall small writes (an SSE event, a TLS handshake
/// flight) by ~40 ms.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}
