//! The local csync2 server: supervises `csync2 -ii` as a child (restarted
//! when it dies, killed when we die) or, for an externally managed server
//! (inetd, csync2.socket), only observes it; and tells the daemon whether
//! the server is serving a connection, so that no local csync2 client runs
//! while it does, nor for a quiet period after.
//!
//! (API pinned; implementation being built.)

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::runner::Csync2;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot start the csync2 server: {0}")]
    Spawn(std::io::Error),
}

/// What `status` shows about the server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerStatus {
    pub managed: bool,
    /// PID of the managed `csync2 -ii`, when running.
    pub pid: Option<u32>,
    pub restarts: u32,
    pub last_error: Option<String>,
    /// Connections being served right now.
    pub connections: usize,
}

/// The local server, managed or external.
pub struct LocalServer {
    _private: (),
}

impl LocalServer {
    /// Start and supervise `csync2 -ii` for this node. `port` is csync2's
    /// port; `bind` the addresses it listens on (empty: any).
    pub fn managed(
        _csync2: &Csync2,
        _port: u16,
        _bind: Vec<IpAddr>,
    ) -> Result<LocalServer, ServerError> {
        unimplemented!()
    }

    /// Only observe a server someone else runs on `port`.
    pub fn external(_port: u16, _bind: Vec<IpAddr>) -> LocalServer {
        unimplemented!()
    }

    /// Is a connection being served right now?
    pub fn serving_now(&self) -> bool {
        unimplemented!()
    }

    /// When the server was last seen serving.
    pub fn last_active(&self) -> Option<Instant> {
        unimplemented!()
    }

    /// Block until the server has not served anything for `quiet`; returns
    /// how long it waited.
    pub fn wait_quiet(&self, _quiet: Duration) -> Duration {
        unimplemented!()
    }

    pub fn status(&self) -> ServerStatus {
        unimplemented!()
    }

    /// Stop the managed server (no-op for an external one).
    pub fn shutdown(self) {}
}
