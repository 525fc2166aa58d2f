//! hudsucker wiring: listener, leaf issuing, upstream client, graceful shutdown.

pub mod errors;
pub mod handler;
pub mod tunnel;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::uri::Authority;
use hudsucker::Proxy;
use hudsucker::certificate_authority::CertificateAuthority;
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto::Builder as ServerBuilder;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::ca::{CaError, CertAuthority};
use crate::capture::{CaptureBudget, ExchangeSink, InFlight};
use crate::config::{Config, ResolvePins};
use handler::LlmtapHandler;
use tunnel::TunnelStats;
use upstream::{PinnedConnector, TlsSetupError};

/// Largest request head accepted from a client; larger heads get 431.
pub const MAX_REQUEST_HEAD: usize = 64 * 1024;
/// A client must finish sending its request head within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// After the last exchange ended, time for connections to write their final frames.
const FLUSH_PAUSE: Duration = Duration::from_millis(200);
/// Bytes held by all captures at once; beyond it bodies are captured shorter, never buffered more.
pub const CAPTURE_BUDGET: usize = 256 * 1024 * 1024;

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
    #[error("proxy: {0}")]
    Hudsucker(#[from] hudsucker::Error),
}

type UpstreamClient = Client<hyper_rustls::HttpsConnector<PinnedConnector>, hudsucker::Body>;

/// State shared by every request.
pub struct Shared {
    pub config: Config,
    pub sink: Arc<dyn ExchangeSink>,
    pub in_flight: Arc<InFlight>,
    pub budget: Arc<CaptureBudget>,
    pub pins: Arc<ResolvePins>,
    pub tunnels: Arc<TunnelStats>,
    pub ca: Arc<CertAuthority>,
    upgrade_client: UpstreamClient,
    started: Instant,
}

impl Shared {
    /// The `/healthz` document.
    pub fn health(&self) -> serde_json::Value {
        serde_json::json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "exchanges": {
                "in_flight": self.in_flight.current(),
                "finished": self.in_flight.finished(),
            },
            "tunnels": {
                "open": self.tunnels.open.load(Ordering::Relaxed),
                "total": self.tunnels.total.load(Ordering::Relaxed),
            },
            "capture": {
                "bytes_held": self.budget.used(),
                "budget_bytes": CAPTURE_BUDGET,
                "budget_denials": self.budget.denied(),
            },
            "leaf_certificates_cached": self.ca.cached_leaves(),
            "export": self.sink.stats(),
        })
    }
}

/// Leaf issuing for hudsucker, backed by our CA and its cache.
struct LeafIssuer(Arc<CertAuthority>);

impl CertificateAuthority for LeafIssuer {
    async fn gen_server_config(&self, authority: &Authority) -> Arc<ServerConfig> {
        match self.0.server_config_for(authority.host()) {
            Ok(config) => config,
            Err(e) => {
                tracing::warn!(host = authority.host(), error = %e, "cannot issue a leaf certificate");
                no_certificate_config()
            }
        }
    }
}

/// A config whose handshakes fail cleanly ("no certificate"), for names we cannot issue for.
fn no_certificate_config() -> Arc<ServerConfig> {
    #[derive(Debug)]
    struct NoCert;
    impl rustls::server::ResolvesServerCert for NoCert {
        fn resolve(
            &self,
            _hello: rustls::server::ClientHello<'_>,
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            None
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.with_no_client_auth().with_cert_resolver(Arc::new(NoCert)));
    match config {
        Ok(c) => Arc::new(c),
        // Only reachable if aws-lc offers no TLS version at all.
        Err(_) => Arc::new(
            ServerConfig::builder()
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(NoCert)),
        ),
    }
}

/// A started proxy: its address, and the handle to stop it.
pub struct RunningProxy {
    pub local_addr: SocketAddr,
    pub shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), hudsucker::Error>>,
}

/// What shutdown did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Exchanges still running when the grace period ran out.
    pub abandoned: usize,
}

impl RunningProxy {
    /// Stops accepting, waits up to the grace period for in-flight exchanges, then returns.
    pub async fn shutdown(mut self) -> ShutdownReport {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
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
        if drained.is_err() {
            self.task.abort();
        }
        ShutdownReport {
            abandoned: in_flight.current(),
        }
    }
}

/// Loads the CA, binds the listener and starts serving in the background.
pub async fn start(
    config: Config,
    sink: Arc<dyn ExchangeSink>,
) -> Result<RunningProxy, ProxyError> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ca = Arc::new(CertAuthority::load_or_create(&config.ca_dir)?);
    let tls = upstream::client_tls_config(config.upstream_ca.as_deref())?;
    let pins = Arc::new(config.resolve.clone());
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(tls.clone())
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(PinnedConnector::new(Arc::clone(&pins)));
    // Upgrades (WebSocket) need HTTP/1.1 upstream whatever the upstream offers.
    let upgrade_connector = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(PinnedConnector::new(Arc::clone(&pins)));
    let listener = bind(config.listen).map_err(|source| ProxyError::Bind {
        addr: config.listen,
        source,
    })?;
    let local_addr = listener.local_addr().map_err(|source| ProxyError::Bind {
        addr: config.listen,
        source,
    })?;
    let shared = Arc::new(Shared {
        config,
        sink,
        in_flight: InFlight::new(),
        budget: CaptureBudget::new(CAPTURE_BUDGET),
        pins,
        tunnels: Arc::new(TunnelStats::default()),
        ca: Arc::clone(&ca),
        upgrade_client: client_builder().build(upgrade_connector),
        started: Instant::now(),
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let proxy = Proxy::builder()
        .with_listener(listener)
        .with_ca(LeafIssuer(ca))
        .with_http_connector(connector)
        .with_http_handler(LlmtapHandler::new(Arc::clone(&shared)))
        .with_client(client_builder())
        .with_server(server_builder())
        .with_graceful_shutdown(async move {
            let _ = stopped.await;
        })
        .build()?;
    let task = tokio::spawn(proxy.start());
    Ok(RunningProxy {
        local_addr,
        shared,
        stop: Some(stop),
        task,
    })
}

/// Binds with TCP_NODELAY set on the listening socket: Linux hands it on to every accepted
/// socket, and hudsucker's accept loop does not set it. Without it Nagle + delayed ACK stall
/// small writes (an SSE event, a TLS handshake flight) by ~40 ms.
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

fn client_builder() -> hyper_util::client::legacy::Builder {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60));
    builder
}

fn server_builder() -> ServerBuilder<TokioExecutor> {
    let mut builder = ServerBuilder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEAD);
    builder.http2().timer(TokioTimer::new());
    builder
}
