//! The inotify tree: turns what happens in csync2's trees into a stream of
//! changed paths with no gap. Owns the inotify descriptor, the map from
//! watch descriptors to directories, the initial and catch-up walks, and
//! the coalescing set the daemon drains.
//!
//! (Contract only; the implementation is being built.)

use std::path::{Path, PathBuf};

/// What the watcher asks of the configuration. Implemented by
/// [`crate::plan::Plan`]; tests may implement it directly.
///
/// The watcher starts at `/` and recurses exactly where csync2's own
/// recursive check (`csync2 -cr /`) would: into a real directory (never a
/// symlink) for which [`TreeFilter::descend`] is true.
pub trait TreeFilter: Send + Sync {
    /// May anything at or below directory `dir` be synced? True for a
    /// synced directory and for every ancestor of an include (csync2's
    /// `csync_step_into`), false for an excluded subtree. Decides which
    /// directories get a watch.
    fn descend(&self, dir: &Path) -> bool;

    /// Is `path` itself synced (csync2 would record it)? Events for other
    /// paths are not reported.
    fn syncs(&self, path: &Path) -> bool;
}

/// How a reported path changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// A non-directory was written and closed, created (symlink, hard
    /// link, device, fifo, socket), deleted, renamed, or had its attributes
    /// changed. `csync2 -c PATH` covers it.
    Entry,
    /// A directory's own attributes changed. `csync2 -c DIR` covers it.
    DirAttrib,
    /// A directory appeared (created or moved in) or vanished (deleted or
    /// moved out) with whatever is below it. `csync2 -cr DIR` covers it.
    DirTree,
}

/// One changed path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Change {
    pub path: PathBuf,
    pub kind: ChangeKind,
}

/// Why a full check is needed where events may have been lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FullCheckReason {
    /// The kernel queue overflowed (IN_Q_OVERFLOW): events anywhere may be lost.
    Overflow,
    /// A directory could not be watched (ENOSPC, EMFILE, EACCES, ...): its
    /// subtree is not covered by inotify.
    WatchFailed(String),
    /// The coalescing set grew beyond its bound.
    TooManyChanges,
    /// A watched root was deleted or moved away and came back.
    RootReplaced,
}

/// A request to check a whole subtree because events there may be lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullCheck {
    /// The subtree; `None` means every tree.
    pub scope: Option<PathBuf>,
    pub reason: FullCheckReason,
}
