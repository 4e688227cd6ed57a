//! The reader thread and the [`Watcher`] handle. The thread owns the
//! inotify fd and the directory tree; it `poll`s the inotify fd together
//! with an eventfd (commands, shutdown) and `/proc/self/mountinfo` (mounts
//! appearing over watched directories, which inotify does not report).
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

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsStr;
use std::io::{self, IsTerminal, Read};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use inotify::{EventMask, Inotify, WatchMask};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::dirs::{is_vanished, OpenDir};
use super::output::{wake, Drained, Pending};
use super::tree::{Id, Key, Tree, NONE, ROOT};
use super::{
    Change, ChangeKind, FullCheck, FullCheckReason, SharedFilter, WatchError, WatchOptions,
    WatchStats,
};
use crate::sysctl::{count_watched_dirs, limit_message, InotifyLimits};

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
struct Ev {
    wd: i32,
    mask: EventMask,
    cookie: u32,
    name: Option<Box<OsStr>>,
}

enum Cmd {
    Stop,
    Reload(SharedFilter, Sender<()>),
    Pause(bool, Sender<()>),
}

struct Shared {
    pending: Mutex<Pending>,
    stats: Mutex<WatchStats>,
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
    /// [`ChangeKind::DirTree`]. Returns once done (or the thread is gone).
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

/// How a walk reports what it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The start-up walk: report nothing (the daemon's first full check
    /// covers it).
    Initial,
    /// A new directory (created, moved in, moved within): report every
    /// synced entry found.
    New,
    /// Catch up after lost events, a dropped watch, a mount change or a
    /// new filter: report directories that appeared, vanished or were
    /// replaced by another one.
    Rescan,
}

struct PendingMove {
    cookie: u32,
    node: Key,
    deadline: Instant,
}

/// A regular file modified or created and not yet closed for writing.
struct Settle {
    first: Instant,
    last: Instant,
}

/// The inotify watch limit.
#[derive(Default)]
struct Limit {
    hit: bool,
    logged: bool,
    needed: Option<usize>,
}

/// Mount table changes (`/proc/self/mountinfo` polls POLLPRI on change).
struct Mounts {
    file: std::fs::File,
    points: HashSet<Vec<u8>>,
}

impl Mounts {
    fn open() -> Option<Mounts> {
        let file = std::fs::File::open("/proc/self/mountinfo").ok()?;
        let mut m = Mounts {
            file,
            points: HashSet::new(),
        };
        m.points = m.read().ok()?;
        Some(m)
    }

    fn read(&mut self) -> io::Result<HashSet<Vec<u8>>> {
        use std::io::Seek;
        self.file.seek(io::SeekFrom::Start(0))?;
        let mut text = Vec::new();
        self.file.read_to_end(&mut text)?;
        Ok(text
            .split(|&b| b == b'\n')
            .filter_map(|line| line.split(|&b| b == b' ').nth(4))
            .map(unescape_mount_point)
            .collect())
    }

    /// Mount points added or removed since the last call.
    fn changed(&mut self) -> Vec<PathBuf> {
        let Ok(now) = self.read() else {
            return Vec::new();
        };
        let mut out: Vec<PathBuf> = now
            .symmetric_difference(&self.points)
            .map(|p| PathBuf::from(OsStr::from_bytes(p)))
            .collect();
        out.sort();
        self.points = now;
        out
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_point(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && i + 3 < field.len()
            && field[i + 1..i + 4]
                .iter()
                .all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (field[i + 1] - b'0') as u32 * 64
                + (field[i + 2] - b'0') as u32 * 8
                + (field[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(field[i]);
            i += 1;
        }
    }
    out
}

struct Reader {
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
    settling: HashMap<(Key, Box<OsStr>), Settle>,
    next_settle: Option<Instant>,
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
    fn new(
        ino: Inotify,
        filter: SharedFilter,
        opts: WatchOptions,
        shared: Arc<Shared>,
        wake_tx: Sender<()>,
        cmd_rx: Receiver<Cmd>,
        waker: Arc<EventFd>,
    ) -> Reader {
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
            settling: HashMap::new(),
            next_settle: None,
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

    fn run(&mut self, ready: Sender<()>) {
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
        [moves, self.next_settle, self.next_retry]
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
                "cannot watch {}: {err}; its subtree gets a full check every {}",
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
                "inotify cannot see writes made by other machines on {fs} at {}; it gets a full check every {}",
                path.display(),
                humantime::format_duration(self.opts.network_fs_interval)
            );
            self.network.push((path.to_path_buf(), fs));
        }
    }

    // ---- walks ----------------------------------------------------------

    /// Make the subtree of `top` match the filesystem: watch (before
    /// listing) every directory that should be watched, drop nodes that
    /// vanished or are no longer wanted, and report per `mode`.
    fn reconcile(&mut self, top: Id, mode: Mode) {
        let mut stack: Vec<(Key, bool)> = vec![(self.tree.key(top), false)];
        let mut path = PathBuf::new();
        while let Some((key, covered)) = stack.pop() {
            let Some(id) = self.tree.get(key) else {
                continue;
            };
            if !self.tree.path_into(id, &mut path) {
                continue;
            }
            self.visit(id, &path, mode, covered, &mut stack);
            self.visited += 1;
            if self.visited % DRAIN_EVERY == 0 {
                self.read_fd();
                self.show_progress();
            }
        }
    }

    fn show_progress(&mut self) {
        if let Some(last) = self.progress {
            if last.elapsed() >= Duration::from_millis(250) {
                eprint!(
                    "\r\x1b[Kcsync2-watch: {} directories watched…",
                    self.tree.watched()
                );
                self.progress = Some(Instant::now());
            }
        }
    }

    fn visit(
        &mut self,
        id: Id,
        path: &Path,
        mode: Mode,
        mut covered: bool,
        stack: &mut Vec<(Key, bool)>,
    ) {
        let filter = self.filter.clone();
        let had_wd = self.tree.wd(id);
        // 1. The watch, before the listing.
        match self.add_watch(path) {
            Ok(wd) => {
                match self.tree.by_wd(wd) {
                    Some(o) if o == id => {}
                    Some(o) => {
                        if self.is_alias(o, path) {
                            let opath = self.tree.path(o).unwrap_or_default();
                            let err = io::Error::other(format!(
                                "it is the same directory as {} (a bind mount?); changes are reported under that path only",
                                opath.display()
                            ));
                            self.fail_node(id, path, &err);
                            return;
                        }
                        // `o` is a stale node of this very directory, which
                        // moved (its events are still queued): take its watch.
                        self.tree.clear_wd(o);
                        if let Some(old) = self.tree.set_wd(id, wd) {
                            self.unwatch(old);
                        }
                        self.degraded_dirty = true;
                    }
                    None => {
                        let was_failed = self.tree.is_failed(id);
                        if let Some(old) = self.tree.set_wd(id, wd) {
                            self.unwatch(old);
                        }
                        if was_failed {
                            self.degraded_dirty = true;
                        }
                    }
                }
                if mode == Mode::Rescan && !covered && had_wd != Some(wd) && filter.syncs(path) {
                    // A directory that appeared or was replaced.
                    self.out.push(Change {
                        path: path.to_path_buf(),
                        kind: ChangeKind::DirTree,
                    });
                    covered = true;
                }
            }
            Err(e) if is_vanished(&e) => {
                self.vanished(id, path, mode);
                return;
            }
            Err(e) => {
                // The limit (ENOSPC), a permission, ...: not covered.
                self.fail_node(id, path, &e);
                return;
            }
        }

        // 2. The listing.
        let mut dir = match OpenDir::open(path) {
            Ok(d) => d,
            Err(e) if is_vanished(&e) => {
                self.vanished(id, path, mode);
                return;
            }
            Err(e) => {
                self.fail_node(id, path, &e);
                return;
            }
        };
        let dev = dir.dev().unwrap_or(0);
        let parent = self.tree.parent(id);
        if parent == NONE || self.tree.dev(parent) != dev {
            self.check_fs(&dir, path, dev);
        }
        self.tree.set_dev(id, dev);

        let report_all = mode == Mode::New;
        let mut child: Vec<u8> = path.as_os_str().as_bytes().to_vec();
        if child.last() != Some(&b'/') {
            child.push(b'/');
        }
        let base = child.len();
        // Names of subdirectories to descend into, packed.
        let mut names: Vec<u8> = Vec::new();
        let mut ends: Vec<usize> = Vec::new();
        let out = &mut self.out;
        let listed = dir.for_each(|name, is_dir| {
            child.truncate(base);
            child.extend_from_slice(name.as_bytes());
            let cpath = Path::new(OsStr::from_bytes(&child));
            if is_dir && filter.descend(cpath) {
                names.extend_from_slice(name.as_bytes());
                ends.push(names.len());
            }
            if report_all && filter.syncs(cpath) {
                out.push(Change {
                    path: cpath.to_path_buf(),
                    kind: if is_dir {
                        ChangeKind::DirTree
                    } else {
                        ChangeKind::Entry
                    },
                });
            }
        });
        drop(dir);
        if let Err(e) = listed {
            // A partial listing: keep what was found, but the rest of the
            // directory is not known.
            tracing::warn!("cannot list {}: {e}", path.display());
            self.watch_failures += 1;
            self.full_check(
                Some(path.to_path_buf()),
                FullCheckReason::WatchFailed(format!("cannot list: {e}")),
            );
        }

        // 3. The children.
        let name_at = |i: usize| -> &OsStr {
            let start = if i == 0 { 0 } else { ends[i - 1] };
            OsStr::from_bytes(&names[start..ends[i]])
        };
        let existing: Vec<Id> = self.tree.children(id).to_vec();
        if existing.is_empty() {
            for i in 0..ends.len() {
                let c = self.tree.alloc(id, name_at(i));
                stack.push((self.tree.key(c), covered));
            }
            return;
        }
        let mut seen = vec![false; existing.len()];
        let index: HashMap<&[u8], usize> = existing
            .iter()
            .enumerate()
            .map(|(i, &c)| (self.tree.name(c).as_bytes(), i))
            .collect();
        let mut new_children: Vec<usize> = Vec::new();
        let mut keep: Vec<Id> = Vec::new();
        for i in 0..ends.len() {
            match index.get(name_at(i).as_bytes()) {
                Some(&j) => {
                    seen[j] = true;
                    keep.push(existing[j]);
                }
                None => new_children.push(i),
            }
        }
        drop(index);
        for (j, &c) in existing.iter().enumerate() {
            if !seen[j] {
                if mode != Mode::Initial {
                    if let Some(p) = self.tree.path(c) {
                        self.report_gone(c, &p);
                    }
                }
                self.remove_node(c);
            }
        }
        for c in keep {
            stack.push((self.tree.key(c), covered));
        }
        for i in new_children {
            let c = self.tree.alloc(id, name_at(i));
            stack.push((self.tree.key(c), covered));
        }
    }

    /// A directory vanished while being (re)watched: report it (unless this
    /// is the initial walk, which reports nothing) and forget it.
    fn vanished(&mut self, id: Id, path: &Path, mode: Mode) {
        if mode != Mode::Initial {
            self.report_gone(id, path);
        }
        self.remove_node(id);
    }

    /// Report a directory that vanished: itself if synced, else the synced
    /// subtrees known below it.
    fn report_gone(&mut self, id: Id, path: &Path) {
        let mut stack: Vec<(Id, PathBuf)> = vec![(id, path.to_path_buf())];
        while let Some((cur, p)) = stack.pop() {
            if self.filter.syncs(&p) {
                self.out.push(Change {
                    path: p,
                    kind: ChangeKind::DirTree,
                });
                continue;
            }
            for &c in self.tree.children(cur) {
                stack.push((c, p.join(self.tree.name(c))));
            }
        }
    }

    /// Topmost synced directories in the tree (for the start-up line).
    fn count_roots(&self) -> usize {
        let mut n = 0;
        let mut stack: Vec<(Id, PathBuf)> = vec![(ROOT, PathBuf::from("/"))];
        while let Some((cur, p)) = stack.pop() {
            if self.filter.syncs(&p) {
                n += 1;
                continue;
            }
            for &c in self.tree.children(cur) {
                stack.push((c, p.join(self.tree.name(c))));
            }
        }
        n
    }

    // ---- events ---------------------------------------------------------

    fn handle(&mut self, ev: Ev) {
        self.events += 1;
        let m = ev.mask;
        if m.contains(EventMask::Q_OVERFLOW) {
            self.on_overflow();
            return;
        }
        if m.contains(EventMask::IGNORED) {
            self.on_ignored(ev.wd);
            return;
        }
        let Some(id) = self.tree.by_wd(ev.wd) else {
            tracing::trace!("event {m:?} for unknown watch {}", ev.wd);
            return;
        };
        match ev.name {
            None => {
                if m.contains(EventMask::ATTRIB) {
                    if let Some(p) = self.tree.path(id) {
                        self.report(p, ChangeKind::DirAttrib);
                    }
                }
            }
            Some(name) => self.on_child(id, &name, m, ev.cookie),
        }
    }

    fn on_overflow(&mut self) {
        self.overflows += 1;
        self.overflows_unlogged += 1;
        let now = Instant::now();
        if self
            .last_overflow_log
            .is_none_or(|t| now.duration_since(t) >= OVERFLOW_LOG_EVERY)
        {
            let limit = InotifyLimits::read()
                .max_queued_events
                .map_or_else(|| "unknown".to_string(), |v| v.to_string());
            tracing::warn!(
                "inotify event queue overflowed {} time(s) (fs.inotify.max_queued_events = {limit}): \
                 events were lost; checking every tree in full and re-walking the watches",
                self.overflows_unlogged
            );
            self.last_overflow_log = Some(now);
            self.overflows_unlogged = 0;
        }
        self.full_check(None, FullCheckReason::Overflow);
        // IN_IGNORED of removed watches may have been lost: forget them
        // (a late one for a watch in use only causes a harmless re-check).
        self.removing.clear();
        self.publish_stats();
        self.flush();
        if self.filter.descend(Path::new("/")) {
            self.reconcile(ROOT, Mode::Rescan);
        }
    }

    fn on_ignored(&mut self, wd: i32) {
        if let Some(n) = self.removing.get_mut(&wd) {
            *n -= 1;
            if *n == 0 {
                self.removing.remove(&wd);
            }
            return;
        }
        let Some(id) = self.tree.by_wd(wd) else {
            return;
        };
        // The kernel dropped the watch: the directory was deleted, or its
        // filesystem unmounted (revealing the directory below). Look at
        // what is at the path now.
        self.tree.clear_wd(id);
        if self.tree.is_attached(id) {
            self.reconcile(id, Mode::Rescan);
        }
    }

    fn on_child(&mut self, parent: Id, name: &OsStr, m: EventMask, cookie: u32) {
        if m == EventMask::MODIFY {
            // The most frequent event (one per write(2)): settle
            // bookkeeping only, without building the path when the file is
            // known already.
            let key = (self.tree.key(parent), Box::from(name));
            if let Some(s) = self.settling.get_mut(&key) {
                s.last = Instant::now();
                return;
            }
        }
        let Some(mut path) = self.tree.path(parent) else {
            // Inside a directory whose move is not resolved yet: its new
            // place will be walked.
            return;
        };
        path.push(name);
        if m.contains(EventMask::ISDIR) {
            if m.contains(EventMask::CREATE) {
                self.new_dir(parent, name, path);
            } else if m.contains(EventMask::MOVED_TO) {
                self.moved_to_dir(parent, name, path, cookie);
            } else if m.contains(EventMask::MOVED_FROM) {
                self.moved_from_dir(parent, name, path, cookie);
            } else if m.contains(EventMask::DELETE) {
                match self.tree.child(parent, name) {
                    Some(c) => {
                        self.report_gone(c, &path);
                        self.remove_node(c);
                    }
                    None => self.report(path, ChangeKind::DirTree),
                }
            } else if m.contains(EventMask::ATTRIB) {
                self.report(path, ChangeKind::DirAttrib);
            }
            return;
        }
        let key = self.tree.key(parent);
        if m.contains(EventMask::CLOSE_WRITE) {
            self.settling.remove(&(key, Box::from(name)));
            self.report(path, ChangeKind::Entry);
        } else if m.contains(EventMask::MODIFY) {
            if self.filter.syncs(&path) {
                self.settle(key, name, Instant::now());
            }
        } else if m.contains(EventMask::CREATE) {
            if !self.filter.syncs(&path) {
                return;
            }
            match std::fs::symlink_metadata(&path) {
                // A new regular file: wait for it to be closed.
                Ok(md) if md.file_type().is_file() && md.nlink() == 1 => {
                    self.settle(key, name, Instant::now())
                }
                // A hard link, symlink, device, fifo, socket (or gone
                // already: its delete follows).
                _ => self.out.push(Change {
                    path,
                    kind: ChangeKind::Entry,
                }),
            }
        } else if m.intersects(EventMask::DELETE | EventMask::MOVED_FROM) {
            self.settling.remove(&(key, Box::from(name)));
            self.report(path, ChangeKind::Entry);
        } else if m.intersects(EventMask::MOVED_TO | EventMask::ATTRIB) {
            self.report(path, ChangeKind::Entry);
        }
    }

    fn settle(&mut self, dir: Key, name: &OsStr, now: Instant) {
        self.settling.insert(
            (dir, Box::from(name)),
            Settle {
                first: now,
                last: now,
            },
        );
        let due = now + self.opts.settle;
        self.next_settle = Some(self.next_settle.map_or(due, |d| d.min(due)));
    }

    /// Report files that settled without being closed, and resolve
    /// directory moves whose other half never came (moved out).
    fn expire(&mut self, now: Instant) {
        if self.next_settle.is_some_and(|d| d <= now) {
            let settle = self.opts.settle;
            let max = self.opts.settle_max;
            let mut due: Vec<(Key, Box<OsStr>)> = Vec::new();
            let mut next: Option<Instant> = None;
            for (k, s) in &self.settling {
                let at = (s.last + settle).min(s.first + max);
                if at <= now {
                    due.push(k.clone());
                } else {
                    next = Some(next.map_or(at, |n| n.min(at)));
                }
            }
            self.next_settle = next;
            for k in due {
                self.settling.remove(&k);
                let (dir, name) = k;
                if let Some(mut p) = self.tree.get(dir).and_then(|d| self.tree.path(d)) {
                    p.push(&*name);
                    tracing::debug!("{} settled without close-write", p.display());
                    self.report(p, ChangeKind::Entry);
                }
            }
        }
        if self.next_retry.is_some_and(|d| d <= now) {
            self.next_retry = None;
            for id in self.tree.failed_ids() {
                if self.tree.is_failed(id) && self.tree.is_attached(id) {
                    self.reconcile(id, Mode::Rescan);
                }
            }
        }
        if self.pending_moves.iter().any(|m| m.deadline <= now) {
            let mut i = 0;
            while i < self.pending_moves.len() {
                if self.pending_moves[i].deadline <= now {
                    let pm = self.pending_moves.swap_remove(i);
                    if let Some(node) = self.tree.get(pm.node) {
                        // Moved out of every watched tree (reported when
                        // the IN_MOVED_FROM came).
                        self.remove_node(node);
                    }
                } else {
                    i += 1;
                }
            }
        }
    }

    /// A directory appeared at `path` (created, or moved in from outside).
    fn new_dir(&mut self, parent: Id, name: &OsStr, path: PathBuf) {
        if !self.filter.descend(&path) {
            self.report(path, ChangeKind::DirTree);
            return;
        }
        self.report(path.clone(), ChangeKind::DirTree);
        let node = match self.tree.child(parent, name) {
            Some(c) => {
                // Already found by a walk (e.g. the parent's, after its
                // watch was added): if it is the same directory, it was
                // listed after its watch, so nothing can be missing.
                if let Some(wd) = self.tree.wd(c) {
                    if matches!(self.add_watch(&path), Ok(w) if w == wd) {
                        return;
                    }
                }
                c
            }
            None => self.tree.alloc(parent, name),
        };
        self.reconcile(node, Mode::New);
    }

    fn moved_from_dir(&mut self, parent: Id, name: &OsStr, path: PathBuf, cookie: u32) {
        match self.tree.child(parent, name) {
            Some(c) => {
                self.report_gone(c, &path);
                // Detach now, so that a new directory of the same name is
                // not confused with it; keep its watches until the other
                // half of the move says where it went.
                self.tree.detach(c);
                self.degraded_dirty |= self.tree.failed_count() > 0;
                self.pending_moves.push(PendingMove {
                    cookie,
                    node: self.tree.key(c),
                    deadline: Instant::now() + MOVE_PAIR_WAIT,
                });
            }
            None => self.report(path, ChangeKind::DirTree),
        }
    }

    fn moved_to_dir(&mut self, parent: Id, name: &OsStr, path: PathBuf, cookie: u32) {
        let node = self
            .pending_moves
            .iter()
            .position(|m| m.cookie == cookie)
            .map(|i| self.pending_moves.swap_remove(i))
            .and_then(|m| self.tree.get(m.node));
        let Some(node) = node else {
            return self.new_dir(parent, name, path);
        };
        if self.tree.is_attached(node) || self.tree.is_ancestor(node, parent) {
            // Cannot happen with events in kernel order; be safe.
            self.remove_node(node);
            return self.new_dir(parent, name, path);
        }
        if let Some(existing) = self.tree.child(parent, name) {
            // A walk got there first (same directory: it has the watch
            // now), or the move replaced an empty directory.
            if let Some(wd) = self.tree.wd(existing) {
                if matches!(self.add_watch(&path), Ok(w) if w == wd) {
                    self.remove_node(node);
                    self.report(path, ChangeKind::DirTree);
                    return;
                }
            }
            self.remove_node(existing);
        }
        self.tree.attach(node, parent, name);
        self.degraded_dirty |= self.tree.failed_count() > 0;
        if !self.filter.descend(&path) {
            // Moved under an excluded name: nothing to watch there.
            self.remove_node(node);
            self.report(path, ChangeKind::DirTree);
            return;
        }
        // Decisions may differ at the new place: re-evaluate the subtree,
        // reporting what it holds.
        self.report(path, ChangeKind::DirTree);
        self.reconcile(node, Mode::New);
    }

    // ---- mounts -----------------------------------------------------------

    /// A mount appeared or vanished: inotify says nothing about a mount
    /// over a watched directory, so re-check every changed mount point
    /// that is in the tree.
    fn mounts_changed(&mut self) {
        let Some(m) = self.mounts.as_mut() else {
            return;
        };
        let changed = m.changed();
        for point in changed {
            if let Some(id) = self.lookup(&point) {
                tracing::info!("mount table changed at {}: re-walking it", point.display());
                self.reconcile(id, Mode::Rescan);
            }
        }
    }

    /// The attached node at `path`, if any.
    fn lookup(&self, path: &Path) -> Option<Id> {
        let mut cur = ROOT;
        for comp in path.components() {
            match comp {
                std::path::Component::RootDir => cur = ROOT,
                std::path::Component::Normal(n) => cur = self.tree.child(cur, n)?,
                _ => return None,
            }
        }
        Some(cur)
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(
            unescape_mount_point(br"/mnt/a\040b\012c"),
            b"/mnt/a b\nc".to_vec()
        );
        assert_eq!(unescape_mount_point(br"/mnt/a\134b"), b"/mnt/a\\b".to_vec());
        assert_eq!(unescape_mount_point(b"/plain"), b"/plain".to_vec());
    }
}
