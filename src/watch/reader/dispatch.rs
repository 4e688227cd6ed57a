//! The reader's event dispatch: each inotify event, in kernel order, turned
//! into reported changes, walks of new or moved directories, re-checks of
//! dropped watches, a full re-walk after an overflow; files held until they
//! close (`watch/settle.rs`) reported when due; directory moves
//! paired by cookie; and mount table changes.
//!
//! Layer: adapter (part of [`crate::watch`]).

#![forbid(unsafe_code)]

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use inotify::EventMask;

use super::scan::Mode;
use super::{Ev, PendingMove, Reader, MOVE_PAIR_WAIT, OVERFLOW_LOG_EVERY};
use crate::sysctl::InotifyLimits;
use crate::watch::tree::{Id, Key, ROOT};
use crate::watch::{Change, ChangeKind, FullCheckReason};

impl Reader {
    pub(super) fn handle(&mut self, ev: Ev) {
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
            if self.settling.touch(&key, Instant::now()) {
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
            self.settling.release(&(key, Box::from(name)));
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
            self.settling.release(&(key, Box::from(name)));
            self.report(path, ChangeKind::Entry);
        } else if m.intersects(EventMask::MOVED_TO | EventMask::ATTRIB) {
            self.report(path, ChangeKind::Entry);
        }
    }

    fn settle(&mut self, dir: Key, name: &OsStr, now: Instant) {
        self.settling.hold((dir, Box::from(name)), now);
    }

    /// Report files that settled without being closed, and resolve
    /// directory moves whose other half never came (moved out).
    pub(super) fn expire(&mut self, now: Instant) {
        for (dir, name) in self.settling.take_due(now) {
            if let Some(mut p) = self.tree.get(dir).and_then(|d| self.tree.path(d)) {
                p.push(&*name);
                tracing::debug!("{} settled without close-write", p.display());
                self.report(p, ChangeKind::Entry);
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
    pub(super) fn mounts_changed(&mut self) {
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
