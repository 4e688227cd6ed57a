//! The local csync2 server: supervises `csync2 -ii` as a child (restarted
//! when it dies, killed when we die) or, for an externally managed server
//! (inetd, csync2.socket), only observes it; and tells the daemon whether
//! the server is serving a connection, so that no local csync2 client runs
//! while it does, nor for a quiet period after.
//!
//! How "serving" is seen (checked against csync2.c csync_server_loop and a
//! run of the Debian binary):
//!
//! * Managed: the server runs with `-v`, so csync2 prints `Listening on
//!   ADDR:PORT as NAME.` once bound, and each per-connection child prints
//!   `<PID> New connection from ADDR:PORT.` right after accept and `<PID>
//!   Connection closed.` after it closed its database. A reader thread
//!   turns these into events, so even a connection shorter than any poll
//!   interval moves `last_active`. `serving_now` looks at the server's
//!   children (`/proc/PID/task/PID/children`, about 10 µs): csync2 -ii
//!   forks one per connection and ignores SIGCHLD, so a child that exists
//!   is a connection still being handled, maybe after its socket closed.
//!   A connection that ends without `Connection closed.` (a peer's probe:
//!   the child exits at EOF before opening its database; or a fatal
//!   error, whose message is itself an event) leaves no child behind. No
//!   background thread polls and no socket table is read in this mode.
//! * External: the socket table (`server/sockets.rs`), looked at every
//!   [`POLL_INTERVAL`] by a background thread so that connections between
//!   the daemon's own checks still move `last_active` (one shorter than
//!   the interval can be missed); [`LocalServer::set_polling`] pauses it.
//!   An inbound connection counts while it is `ESTABLISHED`, `SYN_RECV`
//!   (not yet accepted) or `CLOSE_WAIT` (the peer is done, the server's
//!   process is not), on csync2's port and, when the server binds
//!   specific addresses (`-N`), on one of them (IPv4-mapped IPv6
//!   addresses count as their IPv4 address). The poll reads
//!   `/proc/net/snmp` (tens of µs) and walks the socket table only when
//!   an inbound connection was established since the last walk or the
//!   last walk found one.
//!
//! Receipts (managed only): the server runs with `-vv`, at which level
//! each per-connection child prints every SQL statement it runs. Whenever
//! it records a file, after writing it, chowning, chmodding or setting its
//! times, that is `SQL: INSERT INTO file (filename, checktxt) values
//! ('NAME', 'CHECKTXT')`, and `SQL: delete from file where filename =
//! 'NAME'` when it removed one; NAME is URL-encoded (csync2 encodes control
//! characters, space, quotes, `%$:|\\`), so the line is whole and exact
//! whatever the name. A [`Receipt`] says "csync2 recorded this file as it
//! was by this wall-clock time". The daemon uses receipts to tell files
//! peers pushed here from local edits (never pushing a received file
//! back, not even after a bare SETIME). `Marking file as dirty:` from a
//! child means the server itself found a local change (a conflict check)
//! and marked it dirty: [`LocalServer::take_marked`] reports that, so the
//! daemon updates the peers. A line that is not the server's own and does
//! not start with a child's `<PID>` (lines of concurrent children can
//! interleave) makes [`LocalServer::unattributed`] move on.
//!
//! The parts: supervising the managed server and reading its stderr
//! (here), the busy gate (`gate.rs`: serving now, last active, waiting
//! for quiet, the external server's poller) and the socket table
//! (`sockets.rs`). The lines themselves are parsed beside the runner's
//! own parsing, in `runner/server_parse.rs`.
//!
//! Layer: adapter. Imports [`crate::runner`] (how to run csync2, and
//! reading what it prints).

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

mod gate;
mod sockets;

pub use sockets::inbound_connections;

use crate::process::{kill_group, wait_exited};
use crate::runner::process::{describe, own_group_and_pdeathsig};
use crate::runner::server_parse::{find, find_quoted, split_pid, MARKING, SQL_FORGET, SQL_RECORD};
use crate::runner::{display_line, looks_like_error, Csync2};

/// Background poll interval for an external server.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// First restart delay; doubles up to [`RESTART_MAX`].
const RESTART_MIN: Duration = Duration::from_millis(200);
const RESTART_MAX: Duration = Duration::from_secs(30);
/// A server that ran this long before dying restarts at once.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// How long `managed` waits for the first server to listen.
const START_WAIT: Duration = Duration::from_secs(5);
/// SIGTERM to SIGKILL on shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Lines of the server's stderr kept for "why did it exit".
const TAIL_LINES: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot start the csync2 server: {0}")]
    Spawn(std::io::Error),
    /// The first `csync2 -ii` exited before it listened.
    #[error("the csync2 server ({command}) exited at once ({status}): {message}")]
    Start {
        command: String,
        status: String,
        message: String,
    },
}

/// A file the local server recorded in csync2's database (after writing
/// it for a peer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The name as csync2 stores it: a real path, or `%prefix%/rest`.
    pub name: Vec<u8>,
    /// By this wall-clock time csync2 had recorded it.
    pub done_at: SystemTime,
}

/// Most receipts kept for the daemon (older ones are dropped and counted
/// as unattributed activity).
const MAX_RECEIPTS: usize = 100_000;

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

#[derive(Debug, Default)]
struct State {
    /// The running (unreaped) `csync2 -ii`.
    pid: Option<u32>,
    /// Bumped for each new server process.
    generation: u64,
    listening: bool,
    restarts: u32,
    last_error: Option<String>,
    /// Per-connection children that said `New connection` but not yet
    /// `Connection closed.`.
    sessions: HashMap<u32, Instant>,
    last_active: Option<Instant>,
    /// Receipts not yet taken by the daemon.
    receipts: Vec<Receipt>,
    /// A child marked files dirty since the daemon last asked.
    marked: bool,
    /// Server activity that could not be pinned to a file.
    unattributed: Option<Instant>,
    /// The first server process exited before listening: its status and
    /// stderr.
    start_failure: Option<(String, String)>,
}

struct Inner {
    managed: bool,
    port: u16,
    bind: Vec<IpAddr>,
    state: Mutex<State>,
    changed: Condvar,
    stopping: AtomicBool,
    polling: AtomicBool,
    /// External mode's socket-table looks.
    gate: Mutex<sockets::Gate>,
    /// Held by the poller around each look, so that `set_polling(false)`
    /// returns only when no look is under way or about to start.
    poll_lock: Mutex<()>,
}

/// The local server, managed or external.
pub struct LocalServer {
    inner: Arc<Inner>,
    supervisor: Option<JoinHandle<()>>,
    poller: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for LocalServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalServer")
            .field("managed", &self.inner.managed)
            .field("port", &self.inner.port)
            .field("bind", &self.inner.bind)
            .finish()
    }
}

impl LocalServer {
    /// Start and supervise `csync2 -ii` for this node. `port` is csync2's
    /// port; `bind` the addresses it listens on (empty: any). Waits until
    /// the first server listens; fails if it cannot be started or exits at
    /// once (e.g. the port is taken by csync2.socket or inetd).
    pub fn managed(
        csync2: &Csync2,
        port: u16,
        bind: Vec<IpAddr>,
    ) -> Result<LocalServer, ServerError> {
        let inner = Arc::new(Inner::new(true, port, bind));
        let (tx, rx) = crossbeam_channel::bounded::<Result<(), std::io::Error>>(1);
        let sup_inner = Arc::clone(&inner);
        let csync2 = csync2.clone();
        let supervisor = std::thread::Builder::new()
            .name("csync2-server".into())
            .spawn(move || supervise(sup_inner, csync2, tx))
            .map_err(ServerError::Spawn)?;
        let mut server = LocalServer {
            inner,
            supervisor: Some(supervisor),
            poller: None,
        };
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                server.stop();
                return Err(ServerError::Spawn(e));
            }
            Err(_) => {
                server.stop();
                return Err(ServerError::Spawn(std::io::Error::other(
                    "the supervisor thread ended",
                )));
            }
        }
        // Wait for `Listening on ...` (printed after bind(), before
        // listen()) and a listening socket, or the first exit.
        let deadline = Instant::now() + START_WAIT;
        let mut st = server.inner.state.lock().unwrap();
        loop {
            if st.listening {
                drop(st);
                let bind = server.inner.bind.clone();
                while !sockets::listening(port, &bind).unwrap_or(true) && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                st = server.inner.state.lock().unwrap();
                break;
            }
            if let Some((status, message)) = st.start_failure.take() {
                drop(st);
                server.stop();
                return Err(ServerError::Start {
                    command: format!("csync2 -ii, port {port}"),
                    status,
                    message,
                });
            }
            let now = Instant::now();
            if now >= deadline {
                tracing::warn!(
                    port,
                    "csync2 -ii has not said it is listening after {START_WAIT:?}; going on"
                );
                break;
            }
            st = server
                .inner
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap()
                .0;
        }
        drop(st);
        Ok(server)
    }

    /// Only observe a server someone else runs on `port`.
    pub fn external(port: u16, bind: Vec<IpAddr>) -> LocalServer {
        let inner = Arc::new(Inner::new(false, port, bind));
        let poll_inner = Arc::clone(&inner);
        let poller = std::thread::Builder::new()
            .name("csync2-server-poll".into())
            .spawn(move || gate::poll_loop(poll_inner))
            .ok();
        if poller.is_none() {
            tracing::warn!("cannot start the server activity poller; checking only on demand");
        }
        LocalServer {
            inner,
            supervisor: None,
            poller,
        }
    }

    /// Files the server recorded since the last call (managed only).
    pub fn take_receipts(&self) -> Vec<Receipt> {
        std::mem::take(&mut self.inner.state.lock().unwrap().receipts)
    }

    /// Did the server mark files dirty itself since the last call? (It
    /// does when a peer's push finds a local change csync2 had not seen.)
    pub fn take_marked(&self) -> bool {
        std::mem::take(&mut self.inner.state.lock().unwrap().marked)
    }

    /// The last time the server did something that could not be pinned to
    /// a file: any activity at all for an external server (it is only seen
    /// through the socket table), a line that was not a readable receipt
    /// for a managed one.
    pub fn unattributed(&self) -> Option<Instant> {
        let st = self.inner.state.lock().unwrap();
        if self.inner.managed {
            st.unattributed
        } else {
            st.last_active
        }
    }

    pub fn status(&self) -> ServerStatus {
        let (_, connections) = self.inner.check();
        let st = self.inner.state.lock().unwrap();
        ServerStatus {
            managed: self.inner.managed,
            pid: st.pid,
            restarts: st.restarts,
            last_error: st.last_error.clone(),
            connections,
        }
    }

    /// Stop the managed server (no-op for an external one): SIGTERM to its
    /// process group (the server and the children serving connections),
    /// SIGKILL after a grace period, reaped.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        {
            let _st = self.inner.state.lock().unwrap();
            self.inner.stopping.store(true, Ordering::SeqCst);
            self.inner.changed.notify_all();
        }
        if let Some(h) = self.poller.take() {
            let _ = h.join();
        }
        let Some(sup) = self.supervisor.take() else {
            return;
        };
        {
            let st = self.inner.state.lock().unwrap();
            if let Some(pid) = st.pid {
                // Unreaped (the supervisor clears pid before reaping), so
                // the group id is still ours.
                let _ = kill_group(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        {
            let mut st = self.inner.state.lock().unwrap();
            while st.pid.is_some() && Instant::now() < deadline {
                st = self
                    .inner
                    .changed
                    .wait_timeout(st, Duration::from_millis(50))
                    .unwrap()
                    .0;
            }
            if let Some(pid) = st.pid {
                tracing::warn!(pid, "csync2 -ii ignored SIGTERM; killing it");
                let _ = kill_group(pid, libc::SIGKILL);
            }
        }
        let _ = sup.join();
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Inner {
    fn new(managed: bool, port: u16, bind: Vec<IpAddr>) -> Inner {
        Inner {
            managed,
            port,
            bind: bind.into_iter().map(gate::canonical).collect(),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            stopping: AtomicBool::new(false),
            polling: AtomicBool::new(true),
            gate: Mutex::new(sockets::Gate::default()),
            poll_lock: Mutex::new(()),
        }
    }

    /// The server's stderr, one line at a time.
    fn server_line(&self, generation: u64, line: &[u8], tail: &Mutex<VecDeque<String>>) {
        {
            let mut t = tail.lock().unwrap();
            if t.len() == TAIL_LINES {
                t.pop_front();
            }
            t.push_back(display_line(line));
        }
        let (child, text) = split_pid(line);
        let shown = display_line(text);
        let now = Instant::now();
        let mut st = self.state.lock().unwrap();
        match child {
            Some(pid) => {
                st.last_active = Some(now);
                if let Some(name) = find_quoted(text, SQL_RECORD) {
                    st.push_receipt(name);
                } else if let Some(name) = find_quoted(text, SQL_FORGET) {
                    st.push_receipt(name);
                } else if find(text, MARKING).is_some() {
                    st.marked = true;
                }
                if text.starts_with(b"New connection from ") {
                    st.sessions.insert(pid, now);
                    tracing::debug!(pid, "csync2 server: {shown}");
                } else if text == b"Connection closed." {
                    st.sessions.remove(&pid);
                    tracing::debug!(pid, "csync2 server: {shown}");
                } else if looks_like_error(text) && !text.starts_with(b"Finished with 0 ") {
                    tracing::warn!(pid, "csync2 server: {shown}");
                } else if text.starts_with(b"SQL") || text.starts_with(b"Match (") {
                    // -vv chatter: far too much even for trace.
                } else {
                    tracing::trace!(pid, "csync2 server: {shown}");
                }
            }
            None => {
                // Not a line a child starts: the rest of a line broken by
                // a newline in a file name, or the server's own message.
                // ("Listening on" is the server starting: it wrote nothing.)
                if text.starts_with(b"Listening on ") {
                    if st.generation == generation {
                        st.listening = true;
                    }
                    tracing::info!(port = self.port, "csync2 server: {shown}");
                } else {
                    st.unattributed = Some(now);
                    tracing::warn!(port = self.port, "csync2 server: {shown}");
                }
            }
        }
        drop(st);
        self.changed.notify_all();
    }
}

impl State {
    fn push_receipt(&mut self, name: Vec<u8>) {
        if self.receipts.len() >= MAX_RECEIPTS {
            self.receipts.clear();
            self.unattributed = Some(Instant::now());
        }
        self.receipts.push(Receipt {
            name,
            done_at: SystemTime::now(),
        });
    }
}

/// A started server: the child, its stderr tail, and a channel that
/// closes when its log reader has read everything.
type Started = (
    Child,
    Arc<Mutex<VecDeque<String>>>,
    crossbeam_channel::Receiver<()>,
);

fn start_server(inner: &Arc<Inner>, csync2: &Csync2) -> std::io::Result<Started> {
    let mut cmd = csync2.server_command();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    own_group_and_pdeathsig(&mut cmd);
    let mut child = cmd.spawn()?;
    let generation = {
        let mut st = inner.state.lock().unwrap();
        st.pid = Some(child.id());
        st.generation += 1;
        st.listening = false;
        st.generation
    };
    tracing::debug!(pid = child.id(), "started csync2 -ii");
    let stderr = child.stderr.take().expect("stderr is piped");
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let r_inner = Arc::clone(inner);
    let r_tail = Arc::clone(&tail);
    // The reader ends at EOF: when the server and every child serving a
    // connection (they inherit the pipe) have exited.
    std::thread::Builder::new()
        .name("csync2-server-log".into())
        .spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut line = Vec::new();
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if line.last() == Some(&b'\n') {
                            line.pop();
                        }
                        r_inner.server_line(generation, &line, &r_tail);
                    }
                }
            }
            let _ = done_tx.send(());
        })?;
    Ok((child, tail, done_rx))
}

/// Why the server exited, for the log: its status and the end of its
/// stderr, with the fix for a port that is taken.
fn exit_reason(port: u16, status: &ExitStatus, tail: &str) -> String {
    let mut msg = format!(
        "{}: {}",
        describe(status),
        if tail.is_empty() { "no message" } else { tail }
    );
    if tail.contains("Address already in use") {
        msg.push_str(&format!(
            " (port {port} is taken: stop csync2.socket or the inetd entry for csync2, \
             or set server = \"external\" in csync2-watch.toml)"
        ));
    }
    msg
}

fn supervise(
    inner: Arc<Inner>,
    csync2: Csync2,
    first: crossbeam_channel::Sender<Result<(), std::io::Error>>,
) {
    let mut first = Some(first);
    let mut delay = RESTART_MIN;
    loop {
        if inner.stopping.load(Ordering::SeqCst) {
            return;
        }
        let (mut child, tail, done) = match start_server(&inner, &csync2) {
            Ok(x) => {
                if let Some(tx) = first.take() {
                    let _ = tx.send(Ok(()));
                }
                x
            }
            Err(e) => {
                if let Some(tx) = first.take() {
                    let _ = tx.send(Err(e));
                    return;
                }
                let msg = format!("cannot start {}: {e}", csync2.program.display());
                tracing::error!("{msg}; retrying in {delay:?}");
                inner.state.lock().unwrap().last_error = Some(msg);
                if sleep_unless_stopping(&inner, delay) {
                    return;
                }
                delay = (delay * 2).min(RESTART_MAX);
                continue;
            }
        };
        let pid = child.id();
        let started = Instant::now();
        let _ = wait_exited(pid);
        // Clear the pid before reaping, so nobody signals a reused pid.
        let listened = {
            let mut st = inner.state.lock().unwrap();
            st.pid = None;
            st.listening
        };
        inner.changed.notify_all();
        let status = child.wait();
        // Give the log reader a moment to take the last words.
        let _ = done.recv_timeout(Duration::from_millis(300));
        let tail = tail
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join(" | ");
        let stopping = inner.stopping.load(Ordering::SeqCst);
        let reason = match &status {
            Ok(s) => exit_reason(inner.port, s, &tail),
            Err(e) => format!("cannot wait for it: {e}"),
        };
        if stopping {
            tracing::debug!(pid, "csync2 -ii stopped: {reason}");
            return;
        }
        {
            let mut st = inner.state.lock().unwrap();
            st.last_error = Some(reason.clone());
            if st.restarts == 0 && !listened && st.generation == 1 {
                // The very first server never listened: let `managed`
                // report it (it stops us).
                st.start_failure = Some((
                    status.as_ref().map(describe).unwrap_or_default(),
                    reason.clone(),
                ));
                drop(st);
                inner.changed.notify_all();
                if sleep_unless_stopping(&inner, START_WAIT) {
                    return;
                }
            }
        }
        if started.elapsed() >= STABLE_AFTER {
            delay = RESTART_MIN;
        }
        tracing::error!(pid, "csync2 -ii exited ({reason}); restarting in {delay:?}");
        if sleep_unless_stopping(&inner, delay) {
            return;
        }
        delay = (delay * 2).min(RESTART_MAX);
        inner.state.lock().unwrap().restarts += 1;
    }
}

/// Sleep `d` unless asked to stop first; true when stopping.
fn sleep_unless_stopping(inner: &Inner, d: Duration) -> bool {
    let deadline = Instant::now() + d;
    let mut st = inner.state.lock().unwrap();
    loop {
        if inner.stopping.load(Ordering::SeqCst) {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        st = inner.changed.wait_timeout(st, deadline - now).unwrap().0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_in_use_names_port_and_fix() {
        let st = <ExitStatus as std::os::unix::process::ExitStatusExt>::from_raw(1 << 8);
        let m = exit_reason(30865, &st, "Server error: Address already in use");
        assert!(
            m.contains("30865") && m.contains("csync2.socket") && m.contains("external"),
            "{m}"
        );
    }
}
