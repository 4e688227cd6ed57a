//! Shared helpers of the watcher tests: a path-prefix/suffix filter (test
//! configuration, implementing the real `TreeFilter` contract), a
//! collector that drains a running watcher until a condition holds, and
//! the kernel's own list of watches from `/proc/self/fdinfo`.

use std::collections::HashSet;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use csync2_watch::watch::{Change, ChangeKind, FullCheck, TreeFilter, WatchOptions, Watcher};

/// How long any condition may take on a loaded machine.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// Include directories, minus excluded directories (by prefix) and any
/// path with a component (below its include) ending in one of the
/// suffixes: csync2-like path and basename decisions.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub include: Vec<PathBuf>,
    pub exclude: Vec<PathBuf>,
    pub exclude_suffix: Vec<OsString>,
}

impl Filter {
    pub fn include(root: &Path) -> Filter {
        Filter {
            include: vec![root.to_path_buf()],
            ..Filter::default()
        }
    }
}

impl TreeFilter for Filter {
    fn descend(&self, dir: &Path) -> bool {
        self.include.iter().any(|i| i.starts_with(dir)) || self.syncs(dir)
    }

    fn syncs(&self, path: &Path) -> bool {
        let Some(inc) = self.include.iter().find(|i| path.starts_with(i)) else {
            return false;
        };
        if self.exclude.iter().any(|e| path.starts_with(e)) {
            return false;
        }
        let rel = path.strip_prefix(inc).unwrap();
        !rel.components().any(|c| {
            let c = c.as_os_str().as_bytes();
            self.exclude_suffix
                .iter()
                .any(|s| c.ends_with(s.as_bytes()))
        })
    }
}

/// Options for tests: no progress line; `settle` as given.
pub fn opts(settle: Duration) -> WatchOptions {
    WatchOptions {
        settle,
        settle_max: settle * 4,
        progress: false,
        ..WatchOptions::default()
    }
}

pub fn start(filter: Filter, settle: Duration) -> Watcher {
    Watcher::start(Arc::new(filter), opts(settle)).expect("watcher starts")
}

/// Everything a watcher reported so far.
#[derive(Debug, Default)]
pub struct Seen {
    pub changes: Vec<Change>,
    pub full: Vec<FullCheck>,
}

impl Seen {
    pub fn has(&self, path: &Path) -> bool {
        self.changes.iter().any(|c| c.path == path)
    }

    pub fn has_kind(&self, path: &Path, kind: ChangeKind) -> bool {
        self.changes
            .iter()
            .any(|c| c.path == path && c.kind == kind)
    }

    pub fn paths(&self) -> HashSet<PathBuf> {
        self.changes.iter().map(|c| c.path.clone()).collect()
    }

    /// Forget what was seen (to look for fresh reports).
    pub fn clear(&mut self) {
        self.changes.clear();
        self.full.clear();
    }

    /// Drain `w` until `done(self)` holds; panics with `what` after
    /// [`DEADLINE`].
    pub fn wait(&mut self, w: &Watcher, what: &str, mut done: impl FnMut(&Seen) -> bool) {
        let end = Instant::now() + DEADLINE;
        loop {
            let d = w.drain();
            self.changes.extend(d.changes);
            self.full.extend(d.full_checks);
            if done(self) {
                return;
            }
            assert!(w.is_running(), "the reader thread died");
            let now = Instant::now();
            if now >= end {
                panic!(
                    "timed out waiting for {what}; seen {} changes, full checks {:?}",
                    self.changes.len(),
                    self.full
                );
            }
            let _ = w
                .wake()
                .recv_timeout((end - now).min(Duration::from_millis(200)));
        }
    }

    /// Write `sentinel` (a synced file) and wait until it is reported: every
    /// event queued before it has then been handled.
    pub fn sync_point(&mut self, w: &Watcher, sentinel: &Path) {
        std::fs::write(sentinel, b"x").unwrap();
        self.wait(w, &format!("sentinel {}", sentinel.display()), |s| {
            s.has(sentinel)
        });
    }
}

/// Inode numbers of every watch of `w`, from the kernel
/// (`/proc/self/fdinfo/<fd>`: one `inotify wd:N ino:HEX ...` line each).
pub fn watched_inodes(w: &Watcher) -> Vec<u64> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", w.inotify_fd())).unwrap();
    text.lines()
        .filter(|l| l.starts_with("inotify wd:"))
        .map(|l| {
            let ino = l
                .split_whitespace()
                .find_map(|f| f.strip_prefix("ino:"))
                .expect("ino field");
            u64::from_str_radix(ino, 16).unwrap()
        })
        .collect()
}

pub fn ino(path: &Path) -> u64 {
    std::fs::symlink_metadata(path).unwrap().ino()
}

/// Is the directory at `path` watched by `w` (per the kernel)?
pub fn is_watched(w: &Watcher, path: &Path) -> bool {
    watched_inodes(w).contains(&ino(path))
}

/// Every real directory at and below `root` (not following symlinks).
pub fn dirs_under(root: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_dir())
        .map(|e| e.into_path())
        .collect()
}

/// Poll `cond` until it holds (for kernel-side state such as watch
/// counts); panics with `what` after [`DEADLINE`].
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A temporary directory with a canonical path (what the watcher reports).
pub fn tempdir() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::Builder::new()
        .prefix("c2w-test.")
        .tempdir()
        .unwrap();
    let p = t.path().canonicalize().unwrap();
    (t, p)
}
