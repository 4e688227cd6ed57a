//! The inotify tree: turns what happens in csync2's trees into a stream of
//! changed paths with no gap. Owns the inotify descriptor, the map from
//! watch descriptors to directories, the initial and catch-up walks, and
//! the coalescing set the daemon drains.
//!
//! [`Watcher::start`] spawns one reader thread that owns the inotify fd. It
//! starts at `/` and descends exactly where `csync2 -cr /` would (real
//! directories, never symlinks, where [`TreeFilter::descend`] is true),
//! adding each directory's watch *before* listing it, so that anything
//! created before the watch is found by the listing and anything after it
//! produces an event. Changes go into a coalescing set ([`Watcher::drain`]);
//! the reader never waits for its consumer.
//!
//! What is reported (only paths for which [`TreeFilter::syncs`] is true):
//! * a regular file once it is closed after writing (`IN_CLOSE_WRITE`); a
//!   file modified or created but never closed for writing (truncate,
//!   mmap, `mknod`, a writer that keeps it open) after
//!   [`WatchOptions::settle`] without further `IN_MODIFY`, and at least
//!   every [`WatchOptions::settle_max`] while it keeps changing;
//! * hard links, symlinks, devices, fifos and sockets when created; any
//!   delete, attribute change, and both paths of a rename, at once
//!   ([`ChangeKind::Entry`], [`ChangeKind::DirAttrib`] for directories);
//! * a directory that appears (created, moved in, moved within the tree):
//!   [`ChangeKind::DirTree`] for it, then every synced entry found by
//!   walking it; a directory that vanishes (deleted, moved out, or the old
//!   path of a move): [`ChangeKind::DirTree`] for it (or, for an ancestor
//!   that is not itself synced, for its synced subtrees that were known);
//! * [`FullCheck`]s where events may have been lost: queue overflow (the
//!   tree is then re-walked to catch up the watches), a directory that
//!   could not be watched (it is listed in [`WatchStats::degraded`] and
//!   retried every [`WatchOptions::retry_interval`]), or more than
//!   [`WatchOptions::max_changes`] undrained paths.
//!
//! Mounts made over watched directories (which inotify does not report)
//! are followed through `/proc/self/mountinfo`; mount points on network
//! or FUSE filesystems are logged and listed in [`WatchStats::network_fs`]
//! (inotify sees only this node's writes there). When the watch limit is
//! reached, one error line names `fs.inotify.max_user_watches`, how many
//! watches are needed, and `csync2-watch sysctl --write`.
//!
//! The parts: the [`Watcher`] handle (`handle.rs`); the reader thread
//! (`reader.rs`), with its walks (`reader/scan.rs`) and its handling of
//! each event (`reader/dispatch.rs`); files held until they close
//! (`settle.rs`, pure); mount table changes (`mountinfo.rs`); the
//! directory model (`tree.rs`); directory listing (`dirs.rs`); and the
//! coalescing set the consumer drains (`output.rs`). inotify's limits and
//! the count of directories to watch come from [`crate::sysctl`].
//!
//! Layer: adapter. Imports the core ([`crate::vocab`]) and the adapters
//! [`crate::sysctl`] and [`crate::fstype`].

mod dirs;
mod handle;
mod mountinfo;
mod output;
mod reader;
mod settle;
mod tree;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use handle::Watcher;
pub use output::Drained;
// The shared vocabulary, re-exported under the paths the watcher's users
// (and the integration tests) have always used.
pub use crate::vocab::{Change, ChangeKind, FullCheck, FullCheckReason, TreeFilter};
// inotify's limits are read, and the directories counted, in one place.
pub use crate::sysctl::{dirs_to_watch, InotifyLimits};

/// Tuning of a [`Watcher`].
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// A regular file modified (or created) without a following
    /// `IN_CLOSE_WRITE` is reported after this long without a further
    /// `IN_MODIFY`. Default 2s.
    pub settle: Duration,
    /// A file that keeps being modified without being closed is reported
    /// at least this often. Default 30s.
    pub settle_max: Duration,
    /// More undrained paths than this collapse into one
    /// `FullCheck { scope: None, reason: TooManyChanges }`. Default 1,000,000.
    pub max_changes: usize,
    /// Show a progress line on stderr during the initial walk when stderr
    /// is a terminal. Default true.
    pub progress: bool,
    /// Directories that could not be watched are retried this often (the
    /// limit may have been raised, a permission fixed). Default 60s.
    pub retry_interval: Duration,
    /// How often the daemon reconciles trees on network and FUSE
    /// filesystems (only quoted in the warning). Default 10s.
    pub blind_poll_interval: Duration,
    /// How often the daemon reconciles subtrees that could not be
    /// watched (only quoted in the log). Default 5m.
    pub degraded_interval: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            settle: Duration::from_secs(2),
            settle_max: Duration::from_secs(30),
            max_changes: 1_000_000,
            progress: true,
            retry_interval: Duration::from_secs(60),
            blind_poll_interval: Duration::from_secs(10),
            degraded_interval: Duration::from_secs(300),
        }
    }
}

/// What the watcher is doing; a snapshot from [`Watcher::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchStats {
    /// The initial watches are all in place.
    pub ready: bool,
    /// How long the initial walk took.
    pub initial_walk: Option<Duration>,
    /// Directories with an inotify watch now (including the ancestors of
    /// the included trees).
    pub dirs_watched: usize,
    /// Watches that could not be added, since start.
    pub watch_failures: u64,
    /// Kernel queue overflows (`IN_Q_OVERFLOW`), since start.
    pub overflows: u64,
    /// inotify events read, since start.
    pub events: u64,
    /// The inotify watch limit was hit.
    pub limit_reached: bool,
    /// When the limit was hit: about how many watches the trees need.
    pub dirs_needed: Option<usize>,
    /// Watched directories on filesystems where inotify cannot see other
    /// machines' writes: (mount point or first watched directory, fs name).
    pub network_fs: Vec<(PathBuf, &'static str)>,
    /// Topmost directories that could not be watched: their subtrees need
    /// periodic full checks.
    pub degraded: Vec<PathBuf>,
}

/// Why the watcher could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot create an inotify instance: {0}{hint}", hint = crate::sysctl::init_hint(.0))]
    Init(std::io::Error),
    #[error("cannot set up the watcher: {0}")]
    Setup(std::io::Error),
    #[error("the inotify reader thread died before the initial watches were in place")]
    ThreadDied,
}

/// A shared, swappable filter (for [`Watcher::reload`]).
pub type SharedFilter = Arc<dyn TreeFilter>;
