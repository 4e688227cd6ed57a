//! The busy gate: is the local csync2 server serving a connection now,
//! when was it last seen serving, and waiting until it has been quiet for
//! a while, so that no local csync2 client runs while it serves (see the
//! module documentation of [`crate::server`] for how serving is seen in
//! each mode). A managed server is looked at through its children, an
//! external one through the socket table (`sockets.rs`), polled in the
//! background by [`poll_loop`].
//!
//! Layer: adapter (part of [`crate::server`]).

#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{sleep_unless_stopping, Inner, LocalServer, POLL_INTERVAL};

/// How often `wait_quiet` looks while it waits.
const WAIT_STEP: Duration = Duration::from_millis(20);

impl LocalServer {
    /// Is a connection being served right now?
    pub fn serving_now(&self) -> bool {
        self.inner.check().0
    }

    /// When the server was last seen serving.
    pub fn last_active(&self) -> Option<Instant> {
        self.inner.check();
        self.inner.state.lock().unwrap().last_active
    }

    /// Block until the server has not served anything for `quiet`; returns
    /// how long it waited.
    pub fn wait_quiet(&self, quiet: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let (serving, _) = self.inner.check();
            let now = Instant::now();
            let last = self.inner.state.lock().unwrap().last_active;
            let quiet_since = match last {
                Some(t) if !serving => now.saturating_duration_since(t),
                Some(_) => Duration::ZERO,
                None => Duration::MAX,
            };
            if !serving && quiet_since >= quiet {
                let waited = start.elapsed();
                if waited > WAIT_STEP {
                    tracing::debug!(?waited, "waited for the local csync2 server to be quiet");
                }
                return waited;
            }
            let step = if serving {
                WAIT_STEP
            } else {
                (quiet - quiet_since).min(WAIT_STEP)
            };
            std::thread::sleep(step.max(Duration::from_millis(1)));
        }
    }

    /// Pause (`false`) or resume the background poll of an external
    /// server (a managed one has none). While paused, connections that
    /// begin and end between two of the daemon's own checks go unseen.
    pub fn set_polling(&self, on: bool) {
        {
            let _poll = self.inner.poll_lock.lock().unwrap();
            self.inner.polling.store(on, Ordering::SeqCst);
        }
        // Under the state lock, so that the poller cannot miss the wakeup.
        let _st = self.inner.state.lock().unwrap();
        self.inner.changed.notify_all();
    }
}

impl Inner {
    /// Look now: (serving, connections). Moves `last_active` when serving.
    pub(super) fn check(&self) -> (bool, usize) {
        if self.managed {
            let mut st = self.state.lock().unwrap();
            let mut children = st.pid.map(child_count).unwrap_or(0);
            // Sessions whose child is gone ended without a word.
            st.sessions
                .retain(|pid, _| std::path::Path::new(&format!("/proc/{pid}")).exists());

            children = children.max(st.sessions.len());
            if children > 0 {
                st.last_active = Some(Instant::now());
            }
            return (children > 0, children);
        }
        let sockets = match self.gate.lock().unwrap().count(self.port, &self.bind) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!("cannot read the socket table: {e}");
                0
            }
        };
        if sockets > 0 {
            self.state.lock().unwrap().last_active = Some(Instant::now());
        }
        (sockets > 0, sockets)
    }
}

fn child_count(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|s| s.split_whitespace().count())
        .unwrap_or(0)
}

pub(super) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

pub(super) fn poll_loop(inner: Arc<Inner>) {
    while !inner.stopping.load(Ordering::SeqCst) {
        let polled = {
            let _poll = inner.poll_lock.lock().unwrap();
            let on = inner.polling.load(Ordering::SeqCst);
            if on {
                inner.check();
            }
            on
        };
        if polled {
            if sleep_unless_stopping(&inner, POLL_INTERVAL) {
                return;
            }
        } else {
            // Paused: sleep until resumed or stopped.
            let st = inner.state.lock().unwrap();
            let _unused = inner
                .changed
                .wait_while(st, |_| {
                    !inner.polling.load(Ordering::SeqCst) && !inner.stopping.load(Ordering::SeqCst)
                })
                .unwrap();
        }
    }
}
