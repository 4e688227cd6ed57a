//! The deduplicating batch queue (pure: no I/O, no clock of its own).
//!
//! Changed paths wait here until a csync2 check run takes them. A path
//! queued twice is one entry (kinds merged); a directory that appeared or
//! vanished (`DirTree`, checked with `csync2 -cr`) subsumes everything
//! queued below it; batches are taken oldest first and capped; and a queue
//! that grows past the full-check threshold collapses into one request for
//! a full check. Full-check requests for subtrees are kept here too, so the
//! daemon has one place to ask "what next?".
//!
//! Layer: core. Imports [`crate::vocab`] only.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::vocab::ChangeKind;

/// One queued path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    kind: ChangeKind,
    /// Newest journal transaction id behind this entry (including the ones
    /// of paths it subsumed).
    txid: u64,
    /// Insertion order, for oldest-first batches.
    seq: u64,
}

/// Paths taken from the queue for one check run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// Non-directories: `csync2 -c`.
    pub entries: Vec<PathBuf>,
    /// Directories whose own attributes changed: `csync2 -c`.
    pub dirs: Vec<PathBuf>,
    /// Directories that appeared or vanished: everything below them is
    /// compared with the stat cache.
    pub trees: Vec<PathBuf>,
    /// Highest transaction id covered by this batch.
    pub max_txid: u64,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.entries.len() + self.dirs.len() + self.trees.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A pending full check: a reconcile (every synced path in scope compared
/// with the stat cache), and for a deep one `csync2 -cr` too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullRequest {
    /// Subtrees to reconcile; `None` means every tree.
    pub scopes: Option<Vec<PathBuf>>,
    /// Also run csync2's own full check (`csync2 -cr`) of the scope.
    pub deep: bool,
    /// Why, for the log and the change feed.
    pub reasons: Vec<String>,
    /// Highest transaction id queued when the request was made: a full
    /// check that starts later covers every queued path up to it.
    pub max_txid: u64,
}

/// The queue.
#[derive(Debug, Default)]
pub struct BatchQueue {
    /// Ordered by path: a directory's descendants follow it contiguously
    /// (`Path`'s ordering compares components).
    by_path: BTreeMap<PathBuf, Entry>,
    /// Insertion order → path.
    by_seq: BTreeMap<u64, PathBuf>,
    next_seq: u64,
    full: Option<FullRequest>,
    max_txid: u64,
    /// Paths dropped because an ancestor `DirTree` (or a full check)
    /// covers them: the journal must forget them when the cover completes.
    subsumed: u64,
}

/// Is `path` strictly below `dir`?
fn is_below(path: &Path, dir: &Path) -> bool {
    path != dir && path.starts_with(dir)
}

/// The more demanding of two kinds for the same path.
fn merge(a: ChangeKind, b: ChangeKind) -> ChangeKind {
    use ChangeKind::*;
    match (a, b) {
        (DirTree, _) | (_, DirTree) => DirTree,
        // A path that was a file and is now a directory (or back) changed
        // type: only a recursive check sees both sides.
        (DirAttrib, Entry) | (Entry, DirAttrib) => DirTree,
        (DirAttrib, DirAttrib) => DirAttrib,
        (Entry, Entry) => Entry,
    }
}

impl BatchQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of queued paths (a pending full check not counted).
    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }

    /// Nothing queued and no full check pending.
    pub fn is_idle(&self) -> bool {
        self.by_path.is_empty() && self.full.is_none()
    }

    /// How many paths were folded into an ancestor since the queue was made.
    pub fn subsumed(&self) -> u64 {
        self.subsumed
    }

    /// Highest transaction id ever pushed.
    pub fn max_txid(&self) -> u64 {
        self.max_txid
    }

    /// Queue `path`. Returns false when an ancestor already queued as
    /// `DirTree` (or a pending full check of everything) covers it.
    pub fn push(&mut self, path: PathBuf, kind: ChangeKind, txid: u64) -> bool {
        self.max_txid = self.max_txid.max(txid);
        if let Some(full) = &mut self.full {
            if full.scopes.is_none() {
                full.max_txid = full.max_txid.max(txid);
                self.subsumed += 1;
                return false;
            }
        }
        if let Some(ancestor) = self.tree_ancestor(&path) {
            let entry = self.by_path.get_mut(&ancestor).expect("ancestor is queued");
            entry.txid = entry.txid.max(txid);
            self.subsumed += 1;
            return false;
        }
        let mut kind = kind;
        let mut txid = txid;
        if let Some(old) = self.by_path.get(&path).copied() {
            kind = merge(old.kind, kind);
            txid = txid.max(old.txid);
            self.by_seq.remove(&old.seq);
        }
        if kind == ChangeKind::DirTree {
            txid = txid.max(self.remove_below(&path));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_seq.insert(seq, path.clone());
        self.by_path.insert(path, Entry { kind, txid, seq });
        true
    }

    /// The nearest queued `DirTree` strictly above `path`, if any.
    fn tree_ancestor(&self, path: &Path) -> Option<PathBuf> {
        let mut cur = path.parent();
        while let Some(dir) = cur {
            if let Some(e) = self.by_path.get(dir) {
                if e.kind == ChangeKind::DirTree {
                    return Some(dir.to_path_buf());
                }
            }
            cur = dir.parent();
        }
        None
    }

    /// Drop every entry strictly below `dir`; returns their highest txid.
    fn remove_below(&mut self, dir: &Path) -> u64 {
        let below: Vec<PathBuf> = self
            .by_path
            .range::<Path, _>((std::ops::Bound::Excluded(dir), std::ops::Bound::Unbounded))
            .take_while(|(p, _)| is_below(p, dir))
            .map(|(p, _)| p.clone())
            .collect();
        let mut max = 0;
        for p in below {
            if let Some(e) = self.by_path.remove(&p) {
                self.by_seq.remove(&e.seq);
                max = max.max(e.txid);
                self.subsumed += 1;
            }
        }
        max
    }

    /// Ask for a full check of `scope` (`None`: everything). Queued paths
    /// inside the scope are dropped: the full check covers them.
    pub fn request_full(&mut self, scope: Option<PathBuf>, reason: impl Into<String>) {
        let reason = reason.into();
        let mut req = self.full.take().unwrap_or(FullRequest {
            scopes: Some(Vec::new()),
            deep: false,
            reasons: Vec::new(),
            max_txid: 0,
        });
        if !req.reasons.contains(&reason) {
            req.reasons.push(reason);
        }
        match (scope, &mut req.scopes) {
            (None, scopes) => {
                *scopes = None;
                let covered = std::mem::take(&mut self.by_path);
                self.by_seq.clear();
                self.subsumed += covered.len() as u64;
                for e in covered.values() {
                    req.max_txid = req.max_txid.max(e.txid);
                }
            }
            (Some(_), None) => {}
            (Some(dir), Some(scopes)) => {
                if !scopes.iter().any(|s| dir.starts_with(s)) {
                    scopes.retain(|s| !s.starts_with(&dir));
                    if let Some(e) = self.by_path.remove(&dir) {
                        self.by_seq.remove(&e.seq);
                        req.max_txid = req.max_txid.max(e.txid);
                        self.subsumed += 1;
                    }
                    let below = self.remove_below(&dir);
                    req.max_txid = req.max_txid.max(below);
                    scopes.push(dir);
                }
            }
        }
        self.full = Some(req);
    }

    /// Ask for a deep check of every tree: a reconcile, then `csync2 -cr /`.
    pub fn request_deep(&mut self, reason: impl Into<String>) {
        self.request_full(None, reason);
        if let Some(req) = &mut self.full {
            req.deep = true;
        }
    }

    /// The pending full check, if any.
    pub fn full_pending(&self) -> Option<&FullRequest> {
        self.full.as_ref()
    }

    /// Take the pending full check. Paths queued meanwhile stay queued.
    pub fn take_full(&mut self) -> Option<FullRequest> {
        self.full.take()
    }

    /// If more than `threshold` paths are queued, turn them into one full
    /// check of everything (a huge batch is cheaper as `csync2 -cr /`, and
    /// is the old script's safety net). Returns whether it did.
    pub fn collapse_if_over(&mut self, threshold: usize) -> bool {
        if self.by_path.len() > threshold {
            let n = self.by_path.len();
            self.request_full(None, format!("{n} changes queued (threshold {threshold})"));
            true
        } else {
            false
        }
    }

    /// Take up to `max` paths, oldest first.
    pub fn take_batch(&mut self, max: usize) -> Batch {
        let mut batch = Batch::default();
        let seqs: Vec<u64> = self.by_seq.keys().take(max).copied().collect();
        for seq in seqs {
            let path = self.by_seq.remove(&seq).expect("seq is indexed");
            let entry = self.by_path.remove(&path).expect("path is indexed");
            batch.max_txid = batch.max_txid.max(entry.txid);
            match entry.kind {
                ChangeKind::DirTree => batch.trees.push(path),
                ChangeKind::DirAttrib => batch.dirs.push(path),
                ChangeKind::Entry => batch.entries.push(path),
            }
        }
        batch
    }

    /// Put a batch back (its check failed), keeping what was queued since.
    pub fn requeue(&mut self, batch: Batch) {
        for p in batch.trees {
            self.push(p, ChangeKind::DirTree, batch.max_txid);
        }
        for p in batch.dirs {
            self.push(p, ChangeKind::DirAttrib, batch.max_txid);
        }
        for p in batch.entries {
            self.push(p, ChangeKind::Entry, batch.max_txid);
        }
    }
}

/// `path` as bytes, for logs that must not be lossy about odd names.
pub fn display_bytes(path: &Path) -> String {
    let bytes = OsStr::as_bytes(path.as_os_str());
    bytes.escape_ascii().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ChangeKind::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn a_path_queued_twice_is_one_entry() {
        let mut q = BatchQueue::new();
        assert!(q.push(p("/d/a"), Entry, 1));
        assert!(q.push(p("/d/a"), Entry, 2));
        assert_eq!(q.len(), 1);
        let b = q.take_batch(10);
        assert_eq!(b.entries, vec![p("/d/a")]);
        assert_eq!(b.max_txid, 2);
    }

    #[test]
    fn a_vanished_directory_subsumes_its_children() {
        let mut q = BatchQueue::new();
        q.push(p("/d/x/1"), Entry, 1);
        q.push(p("/d/x/y/2"), Entry, 2);
        q.push(p("/d/x-sibling"), Entry, 3);
        q.push(p("/d/x"), DirTree, 4);
        assert!(!q.push(p("/d/x/y/3"), Entry, 5), "covered by the tree");
        let b = q.take_batch(10);
        assert_eq!(b.trees, vec![p("/d/x")]);
        assert_eq!(b.entries, vec![p("/d/x-sibling")]);
        assert_eq!(b.max_txid, 5);
        assert_eq!(q.subsumed(), 3);
    }

    #[test]
    fn components_not_bytes_decide_what_is_below() {
        // "/d/x.tmp" sorts between "/d/x" and "/d/x/..." bytewise, but is
        // not below "/d/x".
        let mut q = BatchQueue::new();
        q.push(p("/d/x.tmp"), Entry, 1);
        q.push(p("/d/x/in"), Entry, 2);
        q.push(p("/d/x"), DirTree, 3);
        let b = q.take_batch(10);
        assert_eq!(b.entries, vec![p("/d/x.tmp")]);
        assert_eq!(b.trees, vec![p("/d/x")]);
    }

    #[test]
    fn batches_are_oldest_first_and_capped() {
        let mut q = BatchQueue::new();
        for (i, name) in ["/z", "/a", "/m"].iter().enumerate() {
            q.push(p(name), Entry, i as u64 + 1);
        }
        let b = q.take_batch(2);
        assert_eq!(b.entries, vec![p("/z"), p("/a")]);
        assert_eq!(q.len(), 1);
        let b = q.take_batch(2);
        assert_eq!(b.entries, vec![p("/m")]);
        assert!(q.is_idle());
    }

    #[test]
    fn a_requeued_path_is_not_older_than_new_ones() {
        let mut q = BatchQueue::new();
        q.push(p("/a"), Entry, 1);
        q.push(p("/b"), Entry, 2);
        q.push(p("/a"), Entry, 3);
        assert_eq!(q.take_batch(1).entries, vec![p("/b")]);
    }

    #[test]
    fn type_change_becomes_a_tree_check() {
        let mut q = BatchQueue::new();
        q.push(p("/d/n"), Entry, 1);
        q.push(p("/d/n"), DirAttrib, 2);
        assert_eq!(q.take_batch(5).trees, vec![p("/d/n")]);
    }

    #[test]
    fn over_the_threshold_becomes_one_full_check() {
        let mut q = BatchQueue::new();
        for i in 0..11 {
            q.push(PathBuf::from(format!("/d/{i}")), Entry, i + 1);
        }
        assert!(!q.collapse_if_over(11));
        q.push(p("/d/11"), Entry, 12);
        assert!(q.collapse_if_over(11));
        assert!(q.is_empty());
        let full = q.take_full().unwrap();
        assert_eq!(full.scopes, None);
        assert_eq!(full.max_txid, 12);
    }

    #[test]
    fn a_full_check_of_everything_swallows_later_pushes() {
        let mut q = BatchQueue::new();
        q.request_full(None, "overflow");
        assert!(!q.push(p("/x"), Entry, 7));
        assert_eq!(q.full_pending().unwrap().max_txid, 7);
        q.take_full();
        assert!(q.push(p("/x"), Entry, 8));
    }

    #[test]
    fn scoped_full_checks_merge_and_cover_their_paths() {
        let mut q = BatchQueue::new();
        q.push(p("/a/b/f"), Entry, 1);
        q.push(p("/c/f"), Entry, 2);
        q.request_full(Some(p("/a/b")), "watch failed");
        q.request_full(Some(p("/a")), "watch failed");
        q.request_full(Some(p("/a/b/c")), "watch failed");
        let full = q.full_pending().unwrap().clone();
        assert_eq!(full.scopes, Some(vec![p("/a")]));
        assert_eq!(full.reasons, vec!["watch failed".to_string()]);
        assert_eq!(full.max_txid, 1);
        assert_eq!(q.take_batch(10).entries, vec![p("/c/f")]);
    }

    #[test]
    fn requeue_keeps_the_batch() {
        let mut q = BatchQueue::new();
        q.push(p("/t"), DirTree, 1);
        q.push(p("/f"), Entry, 2);
        let b = q.take_batch(10);
        q.push(p("/t/new"), Entry, 3);
        q.requeue(b);
        let again = q.take_batch(10);
        assert_eq!(again.trees, vec![p("/t")]);
        assert_eq!(again.entries, vec![p("/f")]);
        assert_eq!(again.max_txid, 3);
    }

    #[test]
    fn odd_names_display_escaped() {
        use std::os::unix::ffi::OsStrExt;
        let path = Path::new(OsStr::from_bytes(b"/d/a\nb\xff"));
        assert_eq!(display_bytes(path), "/d/a\\nb\\xff");
    }
}
