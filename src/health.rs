//! Liveness answer for `GET /healthz` and the `healthcheck` subcommand that asks for it.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const HEALTH_PATH: &str = "/healthz";
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// Asks a running proxy for `/healthz`; true only for a 200.
pub async fn check(addr: SocketAddr) -> Result<(), String> {
    match tokio::time::timeout(CHECK_TIMEOUT, ask(addr)).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "no answer from {addr} within {}s",
            CHECK_TIMEOUT.as_secs()
        )),
    }
}

async fn ask(addr: SocketAddr) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let request =
        format!("GET {HEALTH_PATH} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("cannot send to {addr}: {e}"))?;
    let mut head = [0u8; 64];
    let mut len = 0;
    while len < 12 {
        let n = stream
            .read(&mut head[len..])
            .await
            .map_err(|e| format!("cannot read from {addr}: {e}"))?;
        if n == 0 {
            break;
        }
        len += n;
    }
    let line = String::from_utf8_lossy(&head[..len]);
    if line.starts_with("HTTP/1.1 200") || line.starts_with("HTTP/1.0 200") {
        Ok(())
    } else {
        Err(format!(
            "unexpected answer from {addr}: {:?}",
            line.lines().next().unwrap_or("")
        ))
    }
}

/// The address to probe: `0.0.0.0`/`::` (listen on all) are asked on loopback.
pub fn probe_addr(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_listen_is_probed_on_loopback() {
        assert_eq!(
            probe_addr("0.0.0.0:8080".parse().unwrap()),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            probe_addr("[::]:1".parse().unwrap()),
            "[::1]:1".parse().unwrap()
        );
    }

    #[tokio::test]
    async fn closed_port_is_unhealthy() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        assert!(check(addr).await.is_err());
    }
}
