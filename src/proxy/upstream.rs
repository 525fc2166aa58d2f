//! The way out: TCP connect with `--resolve` pins and a timeout, and verified upstream TLS.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use tokio::net::TcpStream;

use crate::config::ResolvePins;

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
    #[error("request URI {0} has no host")]
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

/// Resolves (pins first) and connects, trying each address in turn.
pub async fn connect_tcp(
    host: &str,
    port: u16,
    pins: &ResolvePins,
) -> Result<TcpStream, ConnectError> {
    let host_n = crate::route::normalize_host(host);
    let addrs: Vec<SocketAddr> = match pins.get(&(host_n.clone(), port)) {
        Some(ip) => vec![SocketAddr::new(*ip, port)],
        None => match host_n.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => resolve(&host_n, port).await?,
        },
    };
    let mut last = None;
    for addr in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) => last = Some(connect_error(&host_n, port, addr, &e)),
            Err(_) => {
                last = Some(ConnectError::Timeout {
                    host: host_n.clone(),
                    port,
                    secs: CONNECT_TIMEOUT.as_secs(),
                })
            }
        }
    }
    Err(last.unwrap_or(ConnectError::Resolve {
        host: host_n,
        reason: "no addresses".into(),
    }))
}

async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, ConnectError> {
    let lookup = tokio::net::lookup_host((host, port));
    match tokio::time::timeout(CONNECT_TIMEOUT, lookup).await {
        Ok(Ok(addrs)) => Ok(addrs.collect()),
        Ok(Err(e)) => Err(ConnectError::Resolve {
            host: host.to_string(),
            reason: e.to_string(),
        }),
        Err(_) => Err(ConnectError::Resolve {
            host: host.to_string(),
            reason: "lookup timed out".into(),
        }),
    }
}

fn connect_error(host: &str, port: u16, addr: SocketAddr, e: &io::Error) -> ConnectError {
    ConnectError::Connect {
        host: host.to_string(),
        port,
        addr,
        reason: e.to_string(),
    }
}

/// hyper connector that honours the `--resolve` pins.
#[derive(Clone, Debug)]
pub struct PinnedConnector {
    pins: Arc<ResolvePins>,
}

impl PinnedConnector {
    pub fn new(pins: Arc<ResolvePins>) -> PinnedConnector {
        PinnedConnector { pins }
    }
}

type ConnectFuture = Pin<Box<dyn Future<Output = Result<TokioIo<TcpStream>, ConnectError>> + Send>>;

impl tower_service::Service<Uri> for PinnedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = ConnectError;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> ConnectFuture {
        let pins = Arc::clone(&self.pins);
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| ConnectError::NoHost(uri.to_string()))?;
            let default_port = if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            };
            let port = uri.port_u16().unwrap_or(default_port);
            connect_tcp(host, port, &pins).await.map(TokioIo::new)
        })
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
