//! Peer probes: csync2 has no connect timeout (a peer whose link is down
//! holds `csync2 -u` for over a minute), so before updating a peer the
//! daemon opens and closes a TCP connection to its csync2 port with a short
//! timeout.
//!
//! (API pinned; implementation being built.)

use std::time::Duration;

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
pub fn probe(_host: &str, _port: u16, _timeout: Duration) -> Result<Duration, ProbeError> {
    unimplemented!()
}
