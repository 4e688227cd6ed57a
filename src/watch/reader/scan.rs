//! The reader's walks: making a subtree of the directory model match the
//! filesystem (watch each directory before listing it, drop what
//! vanished or is no longer wanted), reporting what a walk finds according
//! to why it walks ([`Mode`]).
//!
//! Layer: adapter (part of [`crate::watch`]).

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Reader, DRAIN_EVERY};
use crate::watch::dirs::{is_vanished, OpenDir};
use crate::watch::tree::{Id, Key, NONE, ROOT};
use crate::watch::{Change, ChangeKind, FullCheckReason};

/// How a walk reports what it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
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

impl Reader {
    /// Make the subtree of `top` match the filesystem: watch (before
    /// listing) every directory that should be watched, drop nodes that
    /// vanished or are no longer wanted, and report per `mode`.
    pub(super) fn reconcile(&mut self, top: Id, mode: Mode) {
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
    pub(super) fn report_gone(&mut self, id: Id, path: &Path) {
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
    pub(super) fn count_roots(&self) -> usize {
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
}
