//! The shared vocabulary: the words the watcher, the queue, the journal,
//! the plan and the daemon all speak, kept out of any one of them so that
//! none has to import another for a type. Owns [`TreeFilter`] (what the
//! configuration decides about a path: descend into it? sync it?),
//! [`ChangeKind`] and [`Change`] (a changed path and how it changed), and
//! [`FullCheck`] with its [`FullCheckReason`] (a subtree whose events may
//! have been lost).
//!
//! Layer: core. Pure types; imports nothing from the crate.

#![forbid(unsafe_code)]

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
    /// A watched root was deleted or moved away and came back. (Not
    /// emitted by this watcher: it watches the roots' ancestors too, so a
    /// root that comes back is walked and reported as a new
    /// [`ChangeKind::DirTree`].)
    RootReplaced,
}

/// A request to check a whole subtree because events there may be lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullCheck {
    /// The subtree; `None` means every tree.
    pub scope: Option<PathBuf>,
    pub reason: FullCheckReason,
}

impl std::fmt::Display for FullCheckReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FullCheckReason::Overflow => f.write_str("overflow"),
            FullCheckReason::WatchFailed(why) => write!(f, "watch-failed: {why}"),
            FullCheckReason::TooManyChanges => f.write_str("too-many-changes"),
            FullCheckReason::RootReplaced => f.write_str("root-replaced"),
        }
    }
}
