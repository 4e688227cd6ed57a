//! Processes the testbed starts on its nodes: each leads its own process
//! group, is signalled and reaped only through its [`ProcessHandle`], and
//! is remembered (weakly) by the testbed, so that none outlives it.
//!
//! A PID is signalled only while its process is known not to be reaped
//! (the exit status is collected under the same lock), so a signal can never
//! reach an unrelated process that inherited a recycled PID.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, ExitStatus};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use csync2_watch::process::{has_exited, kill_group};

/// How long a process gets between SIGTERM and SIGKILL when a handle or
/// the testbed is dropped.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// One started process.
pub(crate) struct Proc {
    pid: u32,
    label: String,
    log: Option<PathBuf>,
    state: Mutex<State>,
}

struct State {
    child: Child,
    /// Set once the process has been reaped; from then on its PID is never
    /// signalled again.
    status: Option<ExitStatus>,
}

/// Every process a testbed started, so that dropping the testbed ends the
/// ones whose handles are still alive (leaked, or kept past the testbed).
#[derive(Default)]
pub(crate) struct Registry {
    procs: Mutex<Vec<Weak<Proc>>>,
}

impl Registry {
    pub(crate) fn register(
        &self,
        child: Child,
        label: String,
        log: Option<PathBuf>,
    ) -> ProcessHandle {
        let proc_ = Arc::new(Proc {
            pid: child.id(),
            label,
            log,
            state: Mutex::new(State {
                child,
                status: None,
            }),
        });
        let mut procs = lock(&self.procs);
        procs.retain(|w| w.strong_count() > 0);
        procs.push(Arc::downgrade(&proc_));
        ProcessHandle { proc_ }
    }

    /// SIGTERM (and SIGCONT) every live process group at once, give them
    /// `grace` to exit, then SIGKILL what is left and reap everything.
    pub(crate) fn terminate_all(&self, grace: Duration) {
        let procs: Vec<Arc<Proc>> = lock(&self.procs)
            .drain(..)
            .filter_map(|w| w.upgrade())
            .collect();
        if procs.is_empty() {
            return;
        }
        for p in &procs {
            p.signal_group(Signal::SIGTERM);
            p.signal_group(Signal::SIGCONT);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && !procs.iter().all(|p| p.exited()) {
            std::thread::sleep(Duration::from_millis(20));
        }
        for p in &procs {
            if let Err(e) = p.kill_and_reap() {
                tracing::warn!(pid = p.pid, label = %p.label, "cannot reap: {e}");
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Proc {
    /// Signal the process group while the leader is not reaped (its PID, and
    /// so the group id, cannot have been recycled). Returns false when it was
    /// already reaped.
    fn signal_group(&self, sig: Signal) -> bool {
        let st = lock(&self.state);
        if st.status.is_some() {
            return false;
        }
        let _ = kill_group(self.pid, sig as libc::c_int);
        // The leader may have moved to another group (setsid keeps it, but
        // setpgid would not): reach it directly too.
        let _ = kill(Pid::from_raw(self.pid as i32), sig);
        true
    }

    fn signal_leader(&self, sig: Signal) -> io::Result<()> {
        let st = lock(&self.state);
        if st.status.is_some() {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        kill(Pid::from_raw(self.pid as i32), sig).map_err(io::Error::from)
    }

    fn signal_group_checked(&self, sig: Signal) -> io::Result<()> {
        let st = lock(&self.state);
        if st.status.is_some() {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        kill_group(self.pid, sig as libc::c_int)
    }

    /// Has the leader exited? Does not reap it.
    fn exited(&self) -> bool {
        let st = lock(&self.state);
        if st.status.is_some() {
            return true;
        }
        // Not reaped (that happens under this lock): its PID is still
        // ours to ask about. An error means it is no child of ours to wait
        // for any more.
        has_exited(self.pid).unwrap_or(true)
    }

    /// Reap the leader if it has exited on its own.
    fn try_wait(&self) -> Option<ExitStatus> {
        let mut st = lock(&self.state);
        if let Some(s) = st.status {
            return Some(s);
        }
        match st.child.try_wait() {
            Ok(Some(s)) => {
                st.status = Some(s);
                Some(s)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(pid = self.pid, "waitpid: {e}");
                None
            }
        }
    }

    /// SIGKILL the group (stragglers included) and reap the leader.
    fn kill_and_reap(&self) -> io::Result<ExitStatus> {
        let mut st = lock(&self.state);
        if let Some(s) = st.status {
            return Ok(s);
        }
        let _ = kill_group(self.pid, libc::SIGKILL);
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        let s = st.child.wait()?;
        st.status = Some(s);
        Ok(s)
    }

    fn terminate(&self, grace: Duration) -> io::Result<ExitStatus> {
        if !self.exited() {
            self.signal_group(Signal::SIGTERM);
            self.signal_group(Signal::SIGCONT);
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline && !self.exited() {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.kill_and_reap()
    }
}

/// A process running on a node. It leads its own process group; dropping
/// the handle ends the whole group (SIGTERM, then SIGKILL after
/// [`KILL_GRACE`]) and reaps it.
pub struct ProcessHandle {
    proc_: Arc<Proc>,
}

impl std::fmt::Debug for ProcessHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessHandle")
            .field("pid", &self.proc_.pid)
            .field("label", &self.proc_.label)
            .finish()
    }
}

impl ProcessHandle {
    pub fn pid(&self) -> u32 {
        self.proc_.pid
    }

    /// What was started (program and node), for messages.
    pub fn label(&self) -> &str {
        &self.proc_.label
    }

    /// The file its stdout and stderr go to, when started with
    /// [`Node::spawn_logged`](super::Node::spawn_logged).
    pub fn log_path(&self) -> Option<&Path> {
        self.proc_.log.as_deref()
    }

    /// The log's content so far (empty when there is no log).
    pub fn log_text(&self) -> String {
        self.proc_
            .log
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Freeze the process and everything in its group (SIGSTOP).
    pub fn stop(&self) -> io::Result<()> {
        self.proc_.signal_group_checked(Signal::SIGSTOP)
    }

    /// Thaw what [`stop`](Self::stop) froze (SIGCONT).
    pub fn cont(&self) -> io::Result<()> {
        self.proc_.signal_group_checked(Signal::SIGCONT)
    }

    /// Send `sig` to the process only. Fails with ESRCH once it is reaped.
    pub fn signal(&self, sig: Signal) -> io::Result<()> {
        self.proc_.signal_leader(sig)
    }

    /// Send `sig` to its whole process group.
    pub fn signal_group(&self, sig: Signal) -> io::Result<()> {
        self.proc_.signal_group_checked(sig)
    }

    /// SIGKILL the group at once and reap the process.
    pub fn kill(&self) -> io::Result<ExitStatus> {
        self.proc_.kill_and_reap()
    }

    /// SIGTERM (and SIGCONT) the group, wait up to `grace` for the process to
    /// exit, then SIGKILL the group; reaps the process.
    pub fn terminate(&self, grace: Duration) -> io::Result<ExitStatus> {
        self.proc_.terminate(grace)
    }

    /// The exit status if it has exited (reaps it).
    pub fn try_wait(&self) -> Option<ExitStatus> {
        self.proc_.try_wait()
    }

    /// Wait up to `timeout` for it to exit on its own.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(2);
        loop {
            if let Some(s) = self.proc_.try_wait() {
                return Some(s);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Not exited yet (a stopped process is running).
    pub fn is_running(&self) -> bool {
        !self.proc_.exited()
    }

    /// Its stdin, when the command asked for `Stdio::piped()`.
    pub fn take_stdin(&self) -> Option<ChildStdin> {
        lock(&self.proc_.state).child.stdin.take()
    }

    /// Its stdout, when the command asked for `Stdio::piped()`.
    pub fn take_stdout(&self) -> Option<ChildStdout> {
        lock(&self.proc_.state).child.stdout.take()
    }

    /// Its stderr, when the command asked for `Stdio::piped()`.
    pub fn take_stderr(&self) -> Option<ChildStderr> {
        lock(&self.proc_.state).child.stderr.take()
    }
}

impl Drop for ProcessHandle {
    fn drop(&mut self) {
        if let Err(e) = self.proc_.terminate(KILL_GRACE) {
            tracing::warn!(pid = self.proc_.pid, label = %self.proc_.label, "cannot reap: {e}");
        }
    }
}
