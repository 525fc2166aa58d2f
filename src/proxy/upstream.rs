//! The way out: TCP connect to exactly the decided address, pooled clients per decision, verified TLS.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use lru::LruCache;
use rustls::ClientConfig;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use tokio::net::TcpStream;

use super::ProxyBody;
use crate::policy::Target;

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("cannot connect to {host}:{port} ({addr}): {reason}")]
    Connect {
        host: String,
        port: u16,
        addr: SocketAddr,
        reason: String,
    },
    #[error("connecting to {host}:{port} timed out after {secs}s")]
    Timeout { host: String, port: u16, secs: u64 },
    #[error("request URI {0}")]
    NoHost(String),
}

impl ConnectError {
    /// Short class for `error.type`.
    pub fn kind(&self) -> &'static str {
        match self {
            ConnectError::Resolve { .. } => "dns",
            ConnectError::Connect { .. } => "connect",
            ConnectError::Timeout { .. } => "connect_timeout",
            ConnectError::NoHost(_) => "bad_request",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read --upstream-ca {path}: {reason}")]
    UpstreamCa { path: String, reason: String },
    #[error("no trusted roots: the platform store is empty and no --upstream-ca was given")]
    NoRoots,
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Connects to exactly `addr`, the address the decision checked; never resolves.
pub async fn connect_addr(target: &Target, addr: SocketAddr) -> Result<TcpStream, ConnectError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(e)) => Err(ConnectError::Connect {
            host: target.host.clone(),
            port: target.port,
            addr,
            reason: e.to_string(),
        }),
        Err(_) => Err(ConnectError::Timeout {
            host: target.host.clone(),
            port: target.port,
            secs: CONNECT_TIMEOUT.as_secs(),
        }),
    }
}

/// hyper connector bound to one decided address: whatever the URI says, it connects there.
/// TLS (in the wrapping `HttpsConnector`) still verifies the URI's host name.
#[derive(Clone, Debug)]
pub struct DecidedConnector {
    target: Target,
    addr: SocketAddr,
}

type ConnectFuture = Pin<Box<dyn Future<Output = Result<TokioIo<TcpStream>, ConnectError>> + Send>>;

impl tower_service::Service<Uri> for DecidedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = ConnectError;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> ConnectFuture {
        let target = self.target.clone();
        let addr = self.addr;
        Box::pin(async move {
            // The pool is per decision; a URI for another host here is a bug upstream of us.
            let host = crate::route::normalize_host(uri.host().unwrap_or_default());
            if host != target.host {
                return Err(ConnectError::NoHost(format!(
                    "{uri} does not name the decided target {}",
                    target.authority()
                )));
            }
            connect_addr(&target, addr).await.map(TokioIo::new)
        })
    }
}

/// The client for one decided (target, address): its own connection pool.
pub type UpstreamClient = Client<HttpsConnector<DecidedConnector>, ProxyBody>;

/// Whether the upstream may speak HTTP/2 (ALPN) or must speak HTTP/1.1 (upgrades).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocols {
    Auto,
    Http1Only,
}

/// Clients by (target, address, protocols), so connections are pooled across the tunnels and
/// requests that share a decision, and never reused for another address.
pub struct UpstreamPool {
    tls: ClientConfig,
    clients: Mutex<LruCache<(Target, SocketAddr, Protocols), UpstreamClient>>,
}

const POOL_CLIENTS: usize = 512;

impl UpstreamPool {
    pub fn new(tls: ClientConfig) -> UpstreamPool {
        let cap = NonZeroUsize::new(POOL_CLIENTS).unwrap_or(NonZeroUsize::MIN);
        UpstreamPool {
            tls,
            clients: Mutex::new(LruCache::new(cap)),
        }
    }

    /// The client that connects only to `addr` for `target`.
    pub fn client(
        &self,
        target: &Target,
        addr: SocketAddr,
        protocols: Protocols,
    ) -> UpstreamClient {
        let key = (target.clone(), addr, protocols);
        if let Ok(mut clients) = self.clients.lock() {
            if let Some(client) = clients.get(&key) {
                return client.clone();
            }
            let client = self.build(target, addr, protocols);
            clients.put(key, client.clone());
            return client;
        }
        self.build(target, addr, protocols)
    }

    fn build(&self, target: &Target, addr: SocketAddr, protocols: Protocols) -> UpstreamClient {
        let connector = DecidedConnector {
            target: target.clone(),
            addr,
        };
        let builder = HttpsConnectorBuilder::new()
            .with_tls_config(self.tls.clone())
            .https_or_http()
            .enable_http1();
        let connector = match protocols {
            Protocols::Auto => builder.enable_http2().wrap_connector(connector),
            Protocols::Http1Only => builder.wrap_connector(connector),
        };
        let mut client = Client::builder(TokioExecutor::new());
        client
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60));
        client.build(connector)
    }
}

/// Client TLS: platform roots (webpki roots when the platform has none) plus `--upstream-ca`.
/// There is deliberately no way to turn verification off.
pub fn client_tls_config(upstream_ca: Option<&Path>) -> Result<ClientConfig, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(path) = upstream_ca {
        for cert in read_pem_certs(path)? {
            roots.add(cert).map_err(|e| TlsSetupError::UpstreamCa {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        }
    }
    if roots.is_empty() {
        return Err(TlsSetupError::NoRoots);
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    use rustls_pki_types::pem::PemObject;
    let err = |reason: String| TlsSetupError::UpstreamCa {
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no CERTIFICATE block found".into()));
    }
    Ok(certs)
}
