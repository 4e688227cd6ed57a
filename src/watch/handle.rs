//! The [`Watcher`] handle: starts the reader thread (see `reader.rs`) and
//! is the consumer's side of it: the wake-up channel, draining the
//! coalesced changes, the stats, and the commands (reload, stop, and a
//! test hook that pauses reading) it sends the thread through a channel
//! and an eventfd.
//!
//! Layer: adapter (part of [`crate::watch`]).

#![forbid(unsafe_code)]

use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use inotify::Inotify;
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::output::{Drained, Pending};
use super::reader::Reader;
use super::{SharedFilter, WatchError, WatchOptions, WatchStats};

/// What the handle asks of the reader thread.
pub(super) enum Cmd {
    Stop,
    Reload(SharedFilter, Sender<()>),
    Pause(bool, Sender<()>),
}

/// What the reader thread and the handle share.
pub(super) struct Shared {
    pub(super) pending: Mutex<Pending>,
    pub(super) stats: Mutex<WatchStats>,
}

/// A running watcher: one reader thread and the coalescing set it fills.
/// Dropping it stops the thread.
pub struct Watcher {
    shared: Arc<Shared>,
    wake_rx: Receiver<()>,
    cmd_tx: Sender<Cmd>,
    waker: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
    inotify_fd: std::os::fd::RawFd,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").finish_non_exhaustive()
    }
}

impl Watcher {
    /// Create the inotify instance, start the reader thread and return
    /// once the initial watches are all in place (the caller may start its
    /// first full check then).
    pub fn start(filter: SharedFilter, opts: WatchOptions) -> Result<Watcher, WatchError> {
        let ino = Inotify::init().map_err(WatchError::Init)?;
        let inotify_fd = ino.as_raw_fd();
        let waker = Arc::new(
            EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .map_err(|e| WatchError::Setup(e.into()))?,
        );
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::new(opts.max_changes)),
            stats: Mutex::new(WatchStats::default()),
        });
        let (wake_tx, wake_rx) = bounded(1);
        let (cmd_tx, cmd_rx) = unbounded();
        let (ready_tx, ready_rx) = bounded(1);
        let mut reader = Reader::new(
            ino,
            filter,
            opts,
            shared.clone(),
            wake_tx,
            cmd_rx,
            waker.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("inotify".into())
            .spawn(move || reader.run(ready_tx))
            .map_err(WatchError::Setup)?;
        let mut w = Watcher {
            shared,
            wake_rx,
            cmd_tx,
            waker,
            thread: Some(thread),
            inotify_fd,
        };
        match ready_rx.recv() {
            Ok(()) => Ok(w),
            Err(_) => {
                if let Some(t) = w.thread.take() {
                    let _ = t.join();
                }
                Err(WatchError::ThreadDied)
            }
        }
    }

    /// Receives `()` whenever changes were added since the last drain. At
    /// most one wake-up is ever pending. Disconnects when the reader thread
    /// has ended (it died: the caller should treat that as fatal).
    pub fn wake(&self) -> &Receiver<()> {
        &self.wake_rx
    }

    /// Take every change and full check collected so far.
    pub fn drain(&self) -> Drained {
        self.shared.pending.lock().unwrap().drain()
    }

    /// A snapshot of what the watcher is doing.
    pub fn stats(&self) -> WatchStats {
        self.shared.stats.lock().unwrap().clone()
    }

    /// Is the reader thread still running?
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Switch to a new filter (after the configuration changed): the whole
    /// tree is re-walked, watches no longer wanted are dropped, new ones
    /// added, and every directory that became watched is reported as
    /// [`crate::vocab::ChangeKind::DirTree`]. Returns once done (or the thread is gone).
    pub fn reload(&self, filter: SharedFilter) {
        let (tx, rx) = bounded(1);
        if self.command(Cmd::Reload(filter, tx)) {
            let _ = rx.recv();
        }
    }

    /// The inotify descriptor's number, for reading the kernel's own list
    /// of watches in `/proc/self/fdinfo/<fd>` (one `inotify wd:` line per
    /// watch). Valid while the watcher runs.
    #[doc(hidden)]
    pub fn inotify_fd(&self) -> std::os::fd::RawFd {
        self.inotify_fd
    }

    /// Test hook: stop (or resume) reading the inotify fd, as a reader
    /// stalled by a slow machine would, so that the kernel queue really
    /// overflows. Returns once the reader has taken note.
    #[doc(hidden)]
    pub fn pause_reading(&self, paused: bool) {
        let (tx, rx) = bounded(1);
        if self.command(Cmd::Pause(paused, tx)) {
            let _ = rx.recv();
        }
    }

    fn command(&self, cmd: Cmd) -> bool {
        if self.cmd_tx.send(cmd).is_err() {
            return false;
        }
        self.waker.write(1).is_ok()
    }

    /// Stop the reader thread and wait for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(t) = self.thread.take() {
            self.command(Cmd::Stop);
            let _ = t.join();
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.shutdown();
    }
}
