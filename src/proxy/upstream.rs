//! The way out: TCP connect to exactly the decided address, verified TLS, both bounded in time;
//! pooled clients per decision.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use hyper_rustls::{DefaultServerNameResolver, MaybeHttpsStream, ResolveServerName};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use lru::LruCache;
use rustls::ClientConfig;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::ProxyBody;
use super::errors::{FailureKind, tls_error};
use crate::policy::Target;

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// From the upstream's TCP connection to a finished TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long each step of the way out may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    pub connect: Duration,
    pub tls_handshake: Duration,
}

impl Default for UpstreamTimeouts {
    fn default() -> UpstreamTimeouts {
        UpstreamTimeouts {
            connect: CONNECT_TIMEOUT,
            tls_handshake: TLS_HANDSHAKE_TIMEOUT,
        }
    }
}

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
    #[error("connecting to {host}:{port} timed out after {after:?}")]
    Timeout {
        host: String,
        port: u16,
        after: Duration,
    },
    #[error("upstream TLS failed: {source}")]
    Tls {
        host: String,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS handshake with {host}:{port} not finished after {after:?}")]
    TlsTimeout {
        host: String,
        port: u16,
        after: Duration,
    },
    /// The pool is per decision: a URI for another host or scheme is a bug upstream of us.
    #[error("request URI {0}")]
    WrongUri(String),
}

impl ConnectError {
    /// The failure class: side, status and `error.type`.
    pub fn kind(&self) -> FailureKind {
        match self {
            ConnectError::Resolve { .. } => FailureKind::Dns,
            ConnectError::Connect { .. } => FailureKind::Connect,
            ConnectError::Timeout { .. } => FailureKind::ConnectTimeout,
            ConnectError::Tls { source, .. } if tls_error(source).is_some() => FailureKind::Tls,
            // Closed or reset in the middle of the handshake: a broken connection, as before.
            ConnectError::Tls { .. } => FailureKind::Upstream,
            ConnectError::TlsTimeout { .. } => FailureKind::TlsTimeout,
            ConnectError::WrongUri(_) => FailureKind::Internal,
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
    connect_within(target, addr, CONNECT_TIMEOUT).await
}

async fn connect_within(
    target: &Target,
    addr: SocketAddr,
    limit: Duration,
) -> Result<TcpStream, ConnectError> {
    match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
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
            after: limit,
        }),
    }
}

/// hyper connector bound to one decided address: whatever the URI says, it connects there,
/// then (for `https`) does TLS verifying the URI's host name. Each step is bounded.
#[derive(Clone, Debug)]
pub struct DecidedConnector {
    target: Target,
    addr: SocketAddr,
    /// With the ALPN protocols the pool allows.
    tls: Arc<ClientConfig>,
    timeouts: UpstreamTimeouts,
}

/// A connection to the decided address, in TLS for `https`.
pub type UpstreamStream = MaybeHttpsStream<TokioIo<TcpStream>>;

type ConnectFuture = Pin<Box<dyn Future<Output = Result<UpstreamStream, ConnectError>> + Send>>;

impl tower_service::Service<Uri> for DecidedConnector {
    type Response = UpstreamStream;
    type Error = ConnectError;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> ConnectFuture {
        let connector = self.clone();
        Box::pin(async move { connector.connect(uri).await })
    }
}

impl DecidedConnector {
    async fn connect(self, uri: Uri) -> Result<UpstreamStream, ConnectError> {
        let target = &self.target;
        let host = crate::route::normalize_host(uri.host().unwrap_or_default());
        if host != target.host {
            return Err(ConnectError::WrongUri(format!(
                "{uri} does not name the decided target {}",
                target.authority()
            )));
        }
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(ConnectError::WrongUri(format!("{uri}: not http or https"))),
        };
        let tcp = connect_within(target, self.addr, self.timeouts.connect).await?;
        let tcp = TokioIo::new(tcp);
        if !https {
            return Ok(MaybeHttpsStream::Http(tcp));
        }
        self.handshake(&uri, tcp).await
    }

    /// TLS over the connected socket for the URI's host name (as hyper-rustls names it).
    async fn handshake(
        &self,
        uri: &Uri,
        tcp: TokioIo<TcpStream>,
    ) -> Result<UpstreamStream, ConnectError> {
        let failed = |source| ConnectError::Tls {
            host: self.target.host.clone(),
            port: self.target.port,
            source,
        };
        let name = DefaultServerNameResolver::default()
            .resolve(uri)
            .map_err(|e| failed(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
        let connector = TlsConnector::from(Arc::clone(&self.tls));
        let handshake = connector.connect(name, TokioIo::new(tcp));
        match tokio::time::timeout(self.timeouts.tls_handshake, handshake).await {
            Ok(Ok(tls)) => Ok(MaybeHttpsStream::Https(TokioIo::new(tls))),
            Ok(Err(e)) => Err(failed(e)),
            Err(_) => Err(ConnectError::TlsTimeout {
                host: self.target.host.clone(),
                port: self.target.port,
                after: self.timeouts.tls_handshake,
            }),
        }
    }
}

/// The client for one decided (target, address): its own connection pool.
pub type UpstreamClient = Client<DecidedConnector, ProxyBody>;

/// Whether the upstream may speak HTTP/2 (ALPN) or must speak HTTP/1.1 (upgrades).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocols {
    Auto,
    Http1Only,
}

/// Clients by (target, address, protocols), so connections are pooled across the tunnels and
/// requests that share a decision, and never reused for another address.
pub struct UpstreamPool {
    /// ALPN `h2` and `http/1.1`.
    tls_auto: Arc<ClientConfig>,
    /// No ALPN: HTTP/1.1.
    tls_http1: Arc<ClientConfig>,
    timeouts: UpstreamTimeouts,
    clients: Mutex<LruCache<(Target, SocketAddr, Protocols), UpstreamClient>>,
}

const POOL_CLIENTS: usize = 512;

impl UpstreamPool {
    pub fn new(tls: ClientConfig) -> UpstreamPool {
        UpstreamPool::with_timeouts(tls, UpstreamTimeouts::default())
    }

    pub fn with_timeouts(tls: ClientConfig, timeouts: UpstreamTimeouts) -> UpstreamPool {
        let cap = NonZeroUsize::new(POOL_CLIENTS).unwrap_or(NonZeroUsize::MIN);
        let mut auto = tls.clone();
        auto.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        UpstreamPool {
            tls_auto: Arc::new(auto),
            tls_http1: Arc::new(tls),
            timeouts,
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
        let tls = match protocols {
            Protocols::Auto => &self.tls_auto,
            Protocols::Http1Only => &self.tls_http1,
        };
        let connector = DecidedConnector {
            target: target.clone(),
            addr,
            tls: Arc::clone(tls),
            timeouts: self.timeouts,
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

#[cfg(test)]
#[path = "upstream_tests.rs"]
mod tests;
