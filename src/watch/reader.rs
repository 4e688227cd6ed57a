//! The reader thread. It owns the inotify fd and the directory tree; it
//! `poll`s the inotify fd together with an eventfd (commands from the
//! [`super::Watcher`] handle, shutdown) and `/proc/self/mountinfo` (mounts
//! appearing over watched directories, which inotify does not report).
//! Here: the thread's loop, reading the fd, handing output to the
//! consumer, and adding and removing watches; the walks are in
//! `reader/scan.rs`, the handling of each event in `reader/dispatch.rs`.
//!
//! Invariants that make the stream gap-free:
//! * a directory's watch is added before it is listed, so anything created
//!   before the watch is found by the listing and anything after it
//!   produces an event;
//! * whenever a directory that is still in the tree loses its watch, it is
//!   re-watched and re-listed (reporting what it holds) before its events
//!   can be missed: a dropped watch (`IN_IGNORED`) triggers a re-check of
//!   the path, a directory moved out and back in is walked as new, and an
//!   overflow re-walks everything;
//! * events are processed strictly in kernel order; during long walks the
//!   inotify fd is drained into memory so the kernel queue cannot overflow
//!   while the reader is busy.
//!
//! Layer: adapter (part of [`crate::watch`]).

mod dispatch;
mod scan;

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::io::{self, IsTerminal};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use inotify::{EventMask, Inotify, WatchMask};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::EventFd;

use super::dirs::OpenDir;
use super::handle::{Cmd, Shared};
use super::mountinfo::Mounts;
use super::output::wake;
use super::settle::Settling;
use super::tree::{Id, Key, Tree, ROOT};
use super::{Change, ChangeKind, FullCheck, FullCheckReason, SharedFilter, WatchOptions};
use crate::sysctl::{count_watched_dirs, limit_message};
use scan::Mode;

/// The mask of every directory watch.
fn watch_mask() -> WatchMask {
    WatchMask::CLOSE_WRITE
        | WatchMask::MODIFY
        | WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::ATTRIB
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
        | WatchMask::DONT_FOLLOW
        | WatchMask::EXCL_UNLINK
}

/// Read buffer: many events per read(2).
const READ_BUF: usize = 256 * 1024;
/// Events held in memory before the reader stops draining the kernel
/// queue (then the kernel's own queue fills and overflows, which is
/// reported).
const MAX_QUEUED: usize = 1 << 20;
/// How long a directory's `IN_MOVED_FROM` waits for its `IN_MOVED_TO`
/// before it counts as moved out. Correctness does not depend on it (a
/// late `IN_MOVED_TO` is walked as a new directory), only the work done.
const MOVE_PAIR_WAIT: Duration = Duration::from_millis(50);
/// Visit this many directories between drains of the inotify fd during
/// a walk.
const DRAIN_EVERY: usize = 64;
/// Overflow warnings are logged at most this often.
const OVERFLOW_LOG_EVERY: Duration = Duration::from_secs(60);

/// One event read from the kernel, owned.
#[derive(Debug)]
pub(super) struct Ev {
    wd: i32,
    mask: EventMask,
    cookie: u32,
    name: Option<Box<OsStr>>,
}

struct PendingMove {
    cookie: u32,
    node: Key,
    deadline: Instant,
}

/// The inotify watch limit.
#[derive(Default)]
struct Limit {
    hit: bool,
    logged: bool,
    needed: Option<usize>,
}

pub(super) struct Reader {
    ino: Inotify,
    tree: Tree,
    filter: SharedFilter,
    opts: WatchOptions,
    shared: Arc<Shared>,
    wake_tx: Sender<()>,
    cmd_rx: Receiver<Cmd>,
    waker: Arc<EventFd>,
    mounts: Option<Mounts>,

    buf: Vec<u8>,
    queue: VecDeque<Ev>,
    paused: bool,
    /// wd -> IN_IGNORED still to come for watches this reader removed.
    removing: HashMap<i32, u32>,
    pending_moves: Vec<PendingMove>,
    /// Regular files written and not yet closed: (directory, name).
    settling: Settling<(Key, Box<OsStr>)>,
    next_retry: Option<Instant>,

    out: Vec<Change>,
    out_full: Vec<FullCheck>,

    /// st_dev -> network filesystem name (None: local), checked once each.
    fs_seen: HashMap<u64, Option<&'static str>>,
    network: Vec<(PathBuf, &'static str)>,
    limit: Limit,
    in_initial: bool,
    degraded_dirty: bool,
    watch_failures: u64,
    overflows: u64,
    events: u64,
    last_overflow_log: Option<Instant>,
    overflows_unlogged: u64,
    /// Directories visited by walks (drain and progress cadence).
    visited: usize,
    progress: Option<Instant>,
}

impl Reader {
    pub(super) fn new(
        ino: Inotify,
        filter: SharedFilter,
        opts: WatchOptions,
        shared: Arc<Shared>,
        wake_tx: Sender<()>,
        cmd_rx: Receiver<Cmd>,
        waker: Arc<EventFd>,
    ) -> Reader {
        let settling = Settling::new(opts.settle, opts.settle_max);
        Reader {
            ino,
            tree: Tree::new(),
            filter,
            opts,
            shared,
            wake_tx,
            cmd_rx,
            waker,
            mounts: Mounts::open(),
            buf: vec![0u8; READ_BUF],
            queue: VecDeque::new(),
            paused: false,
            removing: HashMap::new(),
            pending_moves: Vec::new(),
            settling,
            next_retry: None,
            out: Vec::new(),
            out_full: Vec::new(),
            fs_seen: HashMap::new(),
            network: Vec::new(),
            limit: Limit::default(),
            in_initial: false,
            degraded_dirty: false,
            watch_failures: 0,
            overflows: 0,
            events: 0,
            last_overflow_log: None,
            overflows_unlogged: 0,
            visited: 0,
            progress: None,
        }
    }

    pub(super) fn run(&mut self, ready: Sender<()>) {
        let t0 = Instant::now();
        self.in_initial = true;
        if self.opts.progress && io::stderr().is_terminal() {
            self.progress = Some(t0);
        }
        if self.filter.descend(Path::new("/")) {
            self.reconcile(ROOT, Mode::Initial);
        }
        if self.progress.take().is_some() {
            eprint!("\r\x1b[K");
        }
        self.in_initial = false;
        let took = t0.elapsed();
        let roots = self.count_roots();
        tracing::info!(
            "watching {} directories under {} roots in {}",
            self.tree.watched(),
            roots,
            humantime::format_duration(round_ms(took))
        );
        self.log_limit();
        {
            let mut st = self.shared.stats.lock().unwrap();
            st.ready = true;
            st.initial_walk = Some(took);
        }
        self.publish_stats();
        self.flush();
        let _ = ready.send(());
        drop(ready);

        loop {
            self.process_queue();
            let now = Instant::now();
            self.expire(now);
            if self.tree.failed_count() == 0 {
                self.next_retry = None;
                if self.limit.hit {
                    tracing::info!("every directory is watched again ({})", self.tree.watched());
                    self.limit = Limit::default();
                }
            } else if self.next_retry.is_none() {
                self.next_retry = Some(now + self.opts.retry_interval);
            }
            self.log_limit();
            // Stats first: a consumer woken by a change sees stats at
            // least as new.
            self.publish_stats();
            self.flush();
            if !self.queue.is_empty() {
                continue;
            }
            let timeout = self
                .next_deadline()
                .map(|d| d.saturating_duration_since(Instant::now()));
            let (cmd_ready, ino_ready, mounts_changed) = match self.wait(timeout) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("inotify reader: poll failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            if cmd_ready && self.commands() {
                break;
            }
            if mounts_changed {
                self.mounts_changed();
            }
            if ino_ready {
                self.read_fd();
            }
        }
        self.flush();
    }

    /// poll the eventfd, the inotify fd (unless paused) and mountinfo.
    fn wait(&mut self, timeout: Option<Duration>) -> nix::Result<(bool, bool, bool)> {
        let timeout = match timeout {
            None => PollTimeout::NONE,
            Some(d) => {
                // Round up so that a deadline is never polled for 0 ms early.
                let ms = d.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
        let ino_fd = self.ino.as_fd();
        let mut fds = vec![PollFd::new(self.waker.as_fd(), PollFlags::POLLIN)];
        let ino_idx = (!self.paused).then(|| {
            fds.push(PollFd::new(ino_fd, PollFlags::POLLIN));
            fds.len() - 1
        });
        let mnt_idx = self.mounts.as_ref().map(|m| {
            fds.push(PollFd::new(m.file.as_fd(), PollFlags::POLLPRI));
            fds.len() - 1
        });
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => return Ok((false, false, false)),
            Err(e) => return Err(e),
        }
        let ready = |i: usize| fds[i].revents().is_some_and(|r| !r.is_empty());
        Ok((
            ready(0),
            ino_idx.is_some_and(ready),
            mnt_idx.is_some_and(|i| {
                fds[i]
                    .revents()
                    .is_some_and(|r| r.intersects(PollFlags::POLLPRI | PollFlags::POLLERR))
            }),
        ))
    }

    /// Handle queued commands; true means stop.
    fn commands(&mut self) -> bool {
        let _ = self.waker.read();
        while let Ok(cmd) = self.cmd_rx.try_recv() {
            match cmd {
                Cmd::Stop => return true,
                Cmd::Reload(filter, ack) => {
                    self.filter = filter;
                    // Events already read were produced under the old
                    // filter's watches: handle them first.
                    self.process_queue();
                    if self.filter.descend(Path::new("/")) {
                        self.reconcile(ROOT, Mode::Rescan);
                    } else {
                        let children = self.tree.children(ROOT).to_vec();
                        for c in children {
                            self.remove_node(c);
                        }
                        if let Some(wd) = self.tree.clear_wd(ROOT) {
                            self.unwatch(wd);
                        }
                    }
                    self.degraded_dirty = true;
                    tracing::info!(
                        "configuration reloaded: watching {} directories",
                        self.tree.watched()
                    );
                    self.flush();
                    self.publish_stats();
                    let _ = ack.send(());
                }
                Cmd::Pause(paused, ack) => {
                    self.paused = paused;
                    let _ = ack.send(());
                }
            }
        }
        false
    }

    /// Read what the kernel has queued (non-blocking) into the in-memory
    /// queue.
    fn read_fd(&mut self) {
        if self.paused {
            return;
        }
        // Bounded number of reads per call so that processing keeps up.
        for _ in 0..16 {
            if self.queue.len() >= MAX_QUEUED {
                return;
            }
            match self.ino.read_events(&mut self.buf) {
                Ok(events) => {
                    for e in events {
                        self.queue.push_back(Ev {
                            wd: e.wd.get_watch_descriptor_id(),
                            mask: e.mask,
                            cookie: e.cookie,
                            name: e.name.map(Box::from),
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!("reading inotify events failed: {e}");
                    return;
                }
            }
        }
    }

    fn process_queue(&mut self) {
        let mut n = 0usize;
        while let Some(ev) = self.queue.pop_front() {
            self.handle(ev);
            n += 1;
            if n % 4096 == 0 {
                self.flush();
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let moves = self.pending_moves.iter().map(|m| m.deadline).min();
        [moves, self.settling.next_due(), self.next_retry]
            .into_iter()
            .flatten()
            .min()
    }

    // ---- output ---------------------------------------------------------

    fn report(&mut self, path: PathBuf, kind: ChangeKind) {
        if self.filter.syncs(&path) {
            self.out.push(Change { path, kind });
        }
    }

    fn full_check(&mut self, scope: Option<PathBuf>, reason: FullCheckReason) {
        self.out_full.push(FullCheck { scope, reason });
    }

    /// Hand what was collected to the consumer.
    fn flush(&mut self) {
        if self.out.is_empty() && self.out_full.is_empty() {
            return;
        }
        {
            let mut p = self.shared.pending.lock().unwrap();
            for fc in self.out_full.drain(..) {
                p.add_full(fc);
            }
            for c in self.out.drain(..) {
                p.add(c);
            }
        }
        wake(&self.wake_tx);
    }

    fn publish_stats(&mut self) {
        let degraded = if self.degraded_dirty {
            self.degraded_dirty = false;
            Some(self.tree.failed_paths())
        } else {
            None
        };
        let mut st = self.shared.stats.lock().unwrap();
        st.dirs_watched = self.tree.watched();
        st.watch_failures = self.watch_failures;
        st.overflows = self.overflows;
        st.events = self.events;
        st.limit_reached = self.limit.hit;
        st.dirs_needed = self.limit.needed;
        if st.network_fs.len() != self.network.len() {
            st.network_fs = self.network.clone();
        }
        if let Some(d) = degraded {
            st.degraded = d;
        }
    }

    // ---- watches --------------------------------------------------------

    fn add_watch(&mut self, path: &Path) -> io::Result<i32> {
        self.ino
            .watches()
            .add(path, watch_mask())
            .map(|wd| wd.get_watch_descriptor_id())
    }

    /// Remove a watch this reader recorded (already unmapped from its
    /// node). Its IN_IGNORED is still to come either way: if the kernel had
    /// dropped it already (EINVAL), the IN_IGNORED is queued, since the
    /// mapping is only cleared on reading it.
    fn unwatch(&mut self, wd: i32) {
        // The crate's `Watches::remove` needs the `WatchDescriptor` value
        // the kernel handed out; we only keep its number.
        // SAFETY: plain syscall on an fd we own.
        unsafe {
            libc::inotify_rm_watch(self.ino.as_raw_fd(), wd);
        }
        *self.removing.entry(wd).or_insert(0) += 1;
    }

    /// Free a node and its subtree, removing their watches.
    fn remove_node(&mut self, id: Id) {
        let mut wds = Vec::new();
        let had_failed = self.tree.failed_count();
        self.tree.remove_subtree(id, |wd| wds.push(wd));
        if self.tree.failed_count() != had_failed {
            self.degraded_dirty = true;
        }
        for wd in wds {
            self.unwatch(wd);
        }
    }

    /// The watch of `id` could not be added (or the directory not listed):
    /// its subtree is not covered by inotify.
    fn fail_node(&mut self, id: Id, path: &Path, err: &io::Error) {
        self.watch_failures += 1;
        if let Some(wd) = self.tree.clear_wd(id) {
            self.unwatch(wd);
        }
        let children = self.tree.children(id).to_vec();
        for c in children {
            self.remove_node(c);
        }
        let first = !self.tree.is_failed(id);
        self.tree.set_failed(id, true);
        self.degraded_dirty = true;
        let enospc = err.raw_os_error() == Some(libc::ENOSPC);
        let why = if enospc {
            "inotify watch limit reached".to_string()
        } else {
            err.to_string()
        };
        if enospc {
            self.limit.hit = true;
            tracing::debug!("cannot watch {}: {err}", path.display());
        } else if first {
            tracing::warn!(
                "cannot watch {}: {err}; its subtree is reconciled every {}",
                path.display(),
                humantime::format_duration(self.opts.degraded_interval)
            );
        }
        if first {
            // Retries of a degraded directory stay quiet: it is listed in
            // the stats until it can be watched.
            self.full_check(Some(path.to_path_buf()), FullCheckReason::WatchFailed(why));
        }
    }

    /// Log the watch limit once, with how many watches are needed.
    fn log_limit(&mut self) {
        if !self.limit.hit || self.limit.logged || self.in_initial {
            return;
        }
        self.limit.logged = true;
        let filter = self.filter.clone();
        let failed = self.tree.failed_paths();
        let unwatched: usize = failed
            .iter()
            .map(|p| count_watched_dirs(&*filter, p, &[]).total as usize)
            .sum();
        let needed = self.tree.watched() + unwatched;
        self.limit.needed = Some(needed);
        tracing::error!(
            "{}",
            limit_message(
                self.tree.watched(),
                needed,
                failed.len(),
                self.opts.degraded_interval
            )
        );
    }

    /// Is `other`, which holds the watch `path` just returned, the same
    /// directory reachable under two paths (a bind mount) rather than a
    /// stale node of a directory that moved?
    fn is_alias(&self, other: Id, path: &Path) -> bool {
        let Some(opath) = self.tree.path(other) else {
            return false;
        };
        match (
            std::fs::symlink_metadata(&opath),
            std::fs::symlink_metadata(path),
        ) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }

    /// Note the filesystem of a directory that starts a new device (a mount
    /// point, or `/`), warning once for a network filesystem.
    fn check_fs(&mut self, dir: &OpenDir, path: &Path, dev: u64) {
        if self.fs_seen.contains_key(&dev) {
            return;
        }
        let name = dir.fs_magic().ok().and_then(crate::fstype::network_fs_name);
        self.fs_seen.insert(dev, name);
        if let Some(fs) = name {
            tracing::warn!(
                "inotify cannot see writes made by other machines on {fs} at {}; it is \
                 reconciled every {} (blind_poll_interval), and this node's own changes \
                 still come from inotify",
                path.display(),
                humantime::format_duration(self.opts.blind_poll_interval)
            );
            self.network.push((path.to_path_buf(), fs));
        }
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}
