//! The watcher's output: an insertion-ordered set of changed paths
//! (deduplicated by path, kinds merged) plus pending full checks, shared
//! between the reader thread (which adds under a short lock) and the
//! consumer (which drains). The reader wakes the consumer through a
//! bounded(1) channel with `try_send`, so it never blocks on it.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use crossbeam_channel::{Sender, TrySendError};

use crate::vocab::{Change, ChangeKind, FullCheck, FullCheckReason};

/// What [`super::Watcher::drain`] hands over: every change since the last
/// drain, in the order each path first changed, and the full checks
/// needed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Drained {
    pub changes: Vec<Change>,
    pub full_checks: Vec<FullCheck>,
}

impl Drained {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.full_checks.is_empty()
    }
}

/// Merge two kinds reported for one path: a directory tree covers
/// everything; a path that was seen both as a directory and as something
/// else changed type, which only a recursive check covers.
pub(super) fn merge(a: ChangeKind, b: ChangeKind) -> ChangeKind {
    if a == b {
        a
    } else {
        ChangeKind::DirTree
    }
}

/// The coalescing set.
#[derive(Debug)]
pub(super) struct Pending {
    /// path -> (first-insertion sequence number, kind)
    paths: HashMap<PathBuf, (u64, ChangeKind)>,
    seq: u64,
    full: Vec<FullCheck>,
    /// The set overflowed its bound: a full check of everything is pending
    /// and further paths are dropped until the next drain.
    saturated: bool,
    max: usize,
}

impl Pending {
    pub fn new(max: usize) -> Pending {
        Pending {
            paths: HashMap::new(),
            seq: 0,
            full: Vec::new(),
            saturated: false,
            max: max.max(1),
        }
    }

    pub fn add(&mut self, change: Change) {
        if self.saturated {
            return;
        }
        let seq = self.seq;
        match self.paths.entry(change.path) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                let v = e.get_mut();
                v.1 = merge(v.1, change.kind);
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert((seq, change.kind));
                self.seq += 1;
            }
        }
        if self.paths.len() > self.max {
            tracing::warn!(
                "more than {} changed paths waiting: replacing them with one full check",
                self.max
            );
            self.paths = HashMap::new();
            self.saturated = true;
            self.add_full(FullCheck {
                scope: None,
                reason: FullCheckReason::TooManyChanges,
            });
        }
    }

    pub fn add_full(&mut self, fc: FullCheck) {
        if !self.full.contains(&fc) {
            self.full.push(fc);
        }
    }

    pub fn drain(&mut self) -> Drained {
        let mut changes: Vec<(u64, Change)> = std::mem::take(&mut self.paths)
            .into_iter()
            .map(|(path, (seq, kind))| (seq, Change { path, kind }))
            .collect();
        changes.sort_unstable_by_key(|(seq, _)| *seq);
        self.saturated = false;
        Drained {
            changes: changes.into_iter().map(|(_, c)| c).collect(),
            full_checks: std::mem::take(&mut self.full),
        }
    }
}

/// Wake the consumer without ever blocking: a full channel already holds
/// a wake-up, a disconnected one has no consumer left.
pub(super) fn wake(tx: &Sender<()>) {
    match tx.try_send(()) {
        Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(p: &str, kind: ChangeKind) -> Change {
        Change {
            path: PathBuf::from(p),
            kind,
        }
    }

    #[test]
    fn keeps_first_insertion_order_and_merges_kinds() {
        let mut p = Pending::new(100);
        p.add(ch("/b", ChangeKind::Entry));
        p.add(ch("/a", ChangeKind::DirAttrib));
        p.add(ch("/b", ChangeKind::Entry));
        p.add(ch("/a", ChangeKind::DirTree));
        p.add(ch("/c", ChangeKind::Entry));
        p.add(ch("/c", ChangeKind::DirAttrib));
        let d = p.drain();
        assert_eq!(
            d.changes,
            vec![
                ch("/b", ChangeKind::Entry),
                ch("/a", ChangeKind::DirTree),
                ch("/c", ChangeKind::DirTree)
            ]
        );
        assert!(p.drain().is_empty());
    }

    #[test]
    fn too_many_changes_become_one_full_check_until_drained() {
        let mut p = Pending::new(3);
        for i in 0..10 {
            p.add(ch(&format!("/f{i}"), ChangeKind::Entry));
        }
        let d = p.drain();
        assert!(d.changes.is_empty());
        assert_eq!(
            d.full_checks,
            vec![FullCheck {
                scope: None,
                reason: FullCheckReason::TooManyChanges
            }]
        );
        p.add(ch("/after", ChangeKind::Entry));
        assert_eq!(p.drain().changes, vec![ch("/after", ChangeKind::Entry)]);
    }
}
