//! Peer probes: csync2 has no connect timeout (a peer whose link is down
//! holds `csync2 -u` for over a minute), so before updating a peer the
//! daemon asks its csync2 server for one line, with a short timeout.
//!
//! The name is resolved as csync2 resolves it (getaddrinfo, here through
//! std's `ToSocketAddrs`, every address in order); each address is tried
//! with what is left of the timeout until one answers. A TCP connection
//! alone proves little: the kernel accepts it even when the peer's csync2
//! is frozen (stopped, swapping, hung on a disk), and then `csync2 -u`
//! would wait forever. So the probe sends one line that is not a csync2
//! command; the peer's per-connection child answers at once ("Expecting
//! SSL (optional) and CONFIG as first commands.", csync2.c) and exits,
//! before reading its configuration or touching its database.
//!
//! Layer: adapter (TCP). Imports nothing from the crate.

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
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

/// The line the probe sends: not a csync2 command, so the server answers
/// and hangs up without doing anything.
const PROBE_LINE: &[u8] = b"csync2-watch-probe\n";

/// Ask `host:port` (every resolved address, until one answers) for one
/// line within `timeout`; returns how long it took.
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
        match TcpStream::connect_timeout(addr, left).and_then(|s| ask(s, start, timeout)) {
            Ok(()) => {
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

/// Send [`PROBE_LINE`] and wait for any answer before `start + timeout`.
fn ask(mut stream: TcpStream, start: Instant, timeout: Duration) -> std::io::Result<()> {
    let left = |what: &str| {
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("connected, but the csync2 server did not {what} within {timeout:?} (frozen or overloaded?)"),
            ))
        } else {
            Ok(left)
        }
    };
    stream.set_write_timeout(Some(left("read the probe")?))?;
    stream.write_all(PROBE_LINE)?;
    stream.set_read_timeout(Some(left("answer")?))?;
    let mut buf = [0u8; 128];
    let n = match stream.read(&mut buf) {
        Ok(n) => n,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            return Err(left("answer").err().unwrap_or(e));
        }
        Err(e) => return Err(e),
    };
    let _ = stream.shutdown(Shutdown::Both);
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "connected, but the peer closed the connection without a word (not a csync2 server?)",
        ));
    }
    Ok(())
}
