//! Peer probes: csync2 has no connect timeout (a peer whose link is down
//! holds `csync2 -u` for over a minute), so before updating a peer the
//! daemon opens and closes a TCP connection to its csync2 port with a short
//! timeout.
//!
//! The name is resolved as csync2 resolves it (getaddrinfo, here through
//! std's `ToSocketAddrs`, every address in order); each address is tried
//! with what is left of the timeout until one accepts. The connection is
//! closed at once: the peer's `csync2 -ii` forks a child that reads EOF
//! and exits without touching its database.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        source: std::io::Error,
    },
    #[error("{host} port {port}: {source}")]
    Connect {
        host: String,
        port: u16,
        source: std::io::Error,
    },
}

/// Connect to `host:port` (every resolved address, until one answers)
/// within `timeout`; returns how long it took.
pub fn probe(host: &str, port: u16, timeout: Duration) -> Result<Duration, ProbeError> {
    let start = Instant::now();
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|source| ProbeError::Resolve {
            host: host.to_string(),
            source,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(ProbeError::Resolve {
            host: host.to_string(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
        });
    }
    let mut last_err = None;
    for addr in &addrs {
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(addr, left) {
            Ok(stream) => {
                drop(stream);
                let took = start.elapsed();
                tracing::debug!(host, port, %addr, ?took, "probe answered");
                return Ok(took);
            }
            Err(e) => {
                tracing::debug!(host, port, %addr, error = %e, "probe failed");
                last_err = Some(std::io::Error::new(e.kind(), format!("{addr}: {e}")));
            }
        }
    }
    Err(ProbeError::Connect {
        host: host.to_string(),
        port,
        source: last_err.unwrap_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {timeout:?}"),
            )
        }),
    })
}
