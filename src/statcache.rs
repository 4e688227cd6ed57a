//! What csync2 can and cannot see (pure: callers pass the stats in).
//!
//! csync2 records a file as `v1:mtime=S:mode:uid:gid:type=reg:size=N`, with
//! the mtime in whole seconds, so a file rewritten within the second of its
//! last check at the same size looks unchanged to `csync2 -c`. This cache
//! remembers, for recently checked paths, the stat taken just before and
//! just after the check run that covered them, and decides for a new event:
//!
//! * **Skip**: nothing changed since csync2 looked (same inode and ctime).
//! * **Check**: the change is visible to csync2 (`csync2 -c`).
//! * **CheckAndMark**: csync2 may not see it; check it (to refresh its
//!   record) and then force it dirty with `csync2 -m`, so no edit is lost.
//!
//! A check is only trusted when the pre- and post-stat agree (the path did
//! not change while csync2 ran). A file the local csync2 server received
//! from a peer is recorded as trusted too (csync2 recorded it as it wrote
//! it), so its own write is skipped and never pushed back. Server activity
//! that cannot be pinned to a file ("unattributed") turns a would-be
//! mark into a plain check: forcing a received file dirty would push it
//! back to where it came from, maybe over newer content there. Without a trusted record, a regular file
//! is at risk when its mtime second is not later than the end of the last
//! check run that covered it (a full check, a recursive check of an
//! ancestor, or a check of the path itself). Bounded: evicted records raise
//! a global floor, which only ever makes the decision more cautious.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The parts of a stat that matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub dev: u64,
    pub ino: u64,
    /// Full `st_mode`, type bits included (csync2 records it so).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub rdev: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: i64,
    pub ctime_sec: i64,
    pub ctime_nsec: i64,
}

const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;
const S_IFDIR: u32 = 0o040000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;
const S_IFBLK: u32 = 0o060000;

impl Snapshot {
    /// From an `lstat` result.
    pub fn of(meta: &std::fs::Metadata) -> Snapshot {
        Snapshot {
            dev: meta.dev(),
            ino: meta.ino(),
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            size: meta.size(),
            rdev: meta.rdev(),
            mtime_sec: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            ctime_sec: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
        }
    }

    /// `lstat(path)`, `None` when it does not exist (or cannot be read).
    pub fn lstat(path: &Path) -> Option<Snapshot> {
        std::fs::symlink_metadata(path)
            .ok()
            .map(|m| Snapshot::of(&m))
    }

    /// The inode's change time as wall-clock time.
    pub fn ctime(&self) -> SystemTime {
        let secs = Duration::from_secs(self.ctime_sec.max(0) as u64);
        UNIX_EPOCH + secs + Duration::from_nanos(self.ctime_nsec.max(0) as u64)
    }

    pub fn is_regular(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }

    /// Same inode, and nothing about it changed (ctime moves on every
    /// change, including ones that keep mtime, size and mode).
    fn unchanged_since(&self, other: &Snapshot) -> bool {
        self.dev == other.dev
            && self.ino == other.ino
            && self.ctime_sec == other.ctime_sec
            && self.ctime_nsec == other.ctime_nsec
    }

    /// What csync2's check text holds for this stat (checktxt.c): mode,
    /// uid, gid always; mtime in seconds except for directories and
    /// symlinks; size for regular files; the device number for devices.
    /// (A symlink's target is in the check text too, but it cannot change
    /// without a new inode.)
    fn visible(&self) -> (u32, u32, u32, Option<i64>, Option<u64>, Option<u64>) {
        let kind = self.mode & S_IFMT;
        let mtime = (kind != S_IFDIR && kind != S_IFLNK).then_some(self.mtime_sec);
        let size = (kind == S_IFREG).then_some(self.size);
        let rdev = (kind == S_IFCHR || kind == S_IFBLK).then_some(self.rdev);
        (self.mode, self.uid, self.gid, mtime, size, rdev)
    }
}

/// What to do with a changed path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// csync2 already recorded exactly this state.
    Skip,
    /// `csync2 -c` sees the change.
    Check,
    /// `csync2 -c`, then `csync2 -m`: the change may be invisible to -c.
    CheckAndMark,
}

#[derive(Debug, Clone, Copy)]
struct Record {
    /// The state csync2 saw, when the check run was trusted (pre == post).
    seen: Option<Option<Snapshot>>,
    /// Wall-clock second in which the covering check run ended.
    end_sec: i64,
    /// When the record was made.
    at: Instant,
}

/// The cache.
#[derive(Debug)]
pub struct StatCache {
    records: HashMap<PathBuf, Record>,
    /// Recent recursive checks: (directory, end second, when).
    trees: Vec<(PathBuf, i64, Instant)>,
    /// Every path was covered by a check ending no earlier than this
    /// second (a full check), or a forgotten record ended then.
    floor_sec: i64,
    floor_at: Option<Instant>,
    capacity: usize,
    tree_capacity: usize,
}

impl StatCache {
    /// A cache holding at most `capacity` path records.
    pub fn new(capacity: usize) -> StatCache {
        StatCache {
            records: HashMap::new(),
            trees: Vec::new(),
            floor_sec: i64::MIN,
            floor_at: None,
            capacity: capacity.max(1),
            tree_capacity: 256,
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Decide for `path`, whose current lstat is `now` (`None`: gone).
    /// `unattributed` is the last time the local csync2 server did
    /// something that could not be pinned to a file: a mark based on
    /// records older than that becomes a plain check.
    pub fn classify(
        &self,
        path: &Path,
        now: Option<&Snapshot>,
        unattributed: Option<Instant>,
    ) -> Decision {
        let (decision, basis) = self.classify_inner(path, now);
        match (decision, basis, unattributed) {
            (Decision::CheckAndMark, Some(basis), Some(u)) if u >= basis => Decision::Check,
            (Decision::CheckAndMark, None, Some(_)) => Decision::Check,
            _ => decision,
        }
    }

    /// The decision, and when the records it rests on were made.
    fn classify_inner(&self, path: &Path, now: Option<&Snapshot>) -> (Decision, Option<Instant>) {
        let record = self.records.get(path);
        if let Some(Record {
            seen: Some(seen),
            at,
            ..
        }) = record
        {
            let d = match (seen, now) {
                (None, None) => Decision::Skip,
                (Some(seen), Some(now)) if now.unchanged_since(seen) => Decision::Skip,
                (Some(seen), Some(now)) if now.visible() == seen.visible() => {
                    if now.is_regular() && seen.is_regular() && now.ino == seen.ino {
                        // Same mtime second, size and mode, yet changed:
                        // the same-second rewrite csync2 cannot see.
                        Decision::CheckAndMark
                    } else if now.ino == seen.ino {
                        // A directory's entries or a symlink's times:
                        // nothing csync2 records.
                        Decision::Skip
                    } else {
                        // Replaced by another inode that looks the same.
                        Self::cautious(now)
                    }
                }
                _ => Decision::Check,
            };
            return (d, Some(*at));
        }
        let Some(now) = now else {
            return (Decision::Check, None);
        };
        let mut cover = self.floor_sec;
        let mut basis = self.floor_at;
        let mut later = |sec: i64, at: Instant| {
            cover = cover.max(sec);
            basis = Some(basis.map_or(at, |b| b.max(at)));
        };
        if let Some(r) = record {
            later(r.end_sec, r.at);
        }
        for (dir, end, at) in &self.trees {
            if path.starts_with(dir) {
                later(*end, *at);
            }
        }
        if now.is_regular() && now.mtime_sec <= cover {
            (Decision::CheckAndMark, basis)
        } else {
            (Decision::Check, basis)
        }
    }

    fn cautious(now: &Snapshot) -> Decision {
        if now.is_regular() {
            Decision::CheckAndMark
        } else {
            Decision::Check
        }
    }

    /// A check run that covered `path` ended in second `end_sec`; `pre`
    /// and `post` are the lstats taken just before and after it.
    pub fn record(
        &mut self,
        path: PathBuf,
        pre: Option<Snapshot>,
        post: Option<Snapshot>,
        end_sec: i64,
    ) {
        let trusted = match (&pre, &post) {
            (None, None) => true,
            (Some(a), Some(b)) => b.unchanged_since(a),
            _ => false,
        };
        if self.records.len() >= self.capacity && !self.records.contains_key(&path) {
            self.evict_all();
        }
        self.records.insert(
            path,
            Record {
                seen: trusted.then_some(post),
                end_sec,
                at: Instant::now(),
            },
        );
    }

    /// The local csync2 server wrote `path` (now `snap`; `None`: it
    /// deleted it) and recorded it in csync2's database.
    pub fn record_received(&mut self, path: PathBuf, snap: Option<Snapshot>, now_sec: i64) {
        self.record(path, snap, snap, now_sec);
    }

    /// A recursive check of `dir` ended in second `end_sec`: every path
    /// below it was (re)checked, so per-path records there are stale.
    pub fn record_tree(&mut self, dir: PathBuf, end_sec: i64) {
        self.records.retain(|p, _| !p.starts_with(&dir));
        if self.trees.len() >= self.tree_capacity {
            let evicted = self.trees.remove(0);
            self.raise_floor(evicted.1, evicted.2);
        }
        self.trees.push((dir, end_sec, Instant::now()));
    }

    /// A full check (`csync2 -cr /`) ended in second `end_sec`.
    pub fn record_full(&mut self, end_sec: i64) {
        self.records.clear();
        self.trees.clear();
        self.raise_floor(end_sec, Instant::now());
    }

    fn raise_floor(&mut self, sec: i64, at: Instant) {
        self.floor_sec = self.floor_sec.max(sec);
        self.floor_at = Some(self.floor_at.map_or(at, |f| f.max(at)));
    }

    fn evict_all(&mut self) {
        let evicted: Vec<(i64, Instant)> = self.records.values().map(|r| (r.end_sec, r.at)).collect();
        for (sec, at) in evicted {
            self.raise_floor(sec, at);
        }
        self.records.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(ino: u64, size: u64, mtime: (i64, i64), ctime: (i64, i64)) -> Snapshot {
        Snapshot {
            dev: 1,
            ino,
            mode: S_IFREG | 0o644,
            uid: 0,
            gid: 0,
            size,
            rdev: 0,
            mtime_sec: mtime.0,
            mtime_nsec: mtime.1,
            ctime_sec: ctime.0,
            ctime_nsec: ctime.1,
        }
    }

    #[test]
    fn same_second_same_size_rewrite_is_marked() {
        let mut c = StatCache::new(10);
        let seen = file(7, 5, (100, 100), (100, 100));
        c.record("/d/f".into(), Some(seen), Some(seen), 100);
        let rewritten = file(7, 5, (100, 700), (100, 700));
        assert_eq!(
            c.classify(Path::new("/d/f"), Some(&rewritten), None),
            Decision::CheckAndMark
        );
    }

    #[test]
    fn unchanged_since_the_check_is_skipped() {
        let mut c = StatCache::new(10);
        let seen = file(7, 5, (100, 1), (100, 1));
        c.record("/d/f".into(), Some(seen), Some(seen), 101);
        assert_eq!(c.classify(Path::new("/d/f"), Some(&seen), None), Decision::Skip);
    }

    #[test]
    fn a_visible_change_is_checked() {
        let mut c = StatCache::new(10);
        let seen = file(7, 5, (100, 1), (100, 1));
        c.record("/d/f".into(), Some(seen), Some(seen), 100);
        let grown = file(7, 6, (100, 9), (100, 9));
        assert_eq!(c.classify(Path::new("/d/f"), Some(&grown), None), Decision::Check);
        let later = file(7, 5, (101, 0), (101, 0));
        assert_eq!(c.classify(Path::new("/d/f"), Some(&later), None), Decision::Check);
    }

    #[test]
    fn a_change_during_the_check_is_not_trusted() {
        let mut c = StatCache::new(10);
        let pre = file(7, 5, (100, 1), (100, 1));
        let post = file(7, 5, (100, 5), (100, 5));
        c.record("/d/f".into(), Some(pre), Some(post), 100);
        // csync2 may have seen either; the current state has the same
        // mtime second as the check's end: at risk.
        assert_eq!(
            c.classify(Path::new("/d/f"), Some(&post), None),
            Decision::CheckAndMark
        );
        let next_second = file(7, 5, (101, 0), (101, 0));
        assert_eq!(
            c.classify(Path::new("/d/f"), Some(&next_second), None),
            Decision::Check
        );
    }

    #[test]
    fn unknown_paths_are_judged_against_the_covering_check() {
        let mut c = StatCache::new(10);
        c.record_full(100);
        let old = file(7, 5, (50, 0), (120, 0)); // chmod of an old file
        let fresh = file(8, 5, (130, 0), (130, 0));
        assert_eq!(
            c.classify(Path::new("/d/old"), Some(&old), None),
            Decision::CheckAndMark
        );
        assert_eq!(
            c.classify(Path::new("/d/new"), Some(&fresh), None),
            Decision::Check
        );
        c.record_tree("/d".into(), 130);
        assert_eq!(
            c.classify(Path::new("/d/new"), Some(&fresh), None),
            Decision::CheckAndMark
        );
        assert_eq!(
            c.classify(Path::new("/e/new"), Some(&fresh), None),
            Decision::Check
        );
    }

    #[test]
    fn deletions_are_checked_once() {
        let mut c = StatCache::new(10);
        assert_eq!(c.classify(Path::new("/d/gone"), None, None), Decision::Check);
        c.record("/d/gone".into(), None, None, 100);
        assert_eq!(c.classify(Path::new("/d/gone"), None, None), Decision::Skip);
        let back = file(9, 1, (100, 0), (100, 0));
        assert_eq!(
            c.classify(Path::new("/d/gone"), Some(&back), None),
            Decision::Check
        );
    }

    #[test]
    fn directories_and_symlinks_are_never_marked() {
        let mut c = StatCache::new(10);
        c.record_full(100);
        let mut dir = file(3, 4096, (50, 0), (150, 0));
        dir.mode = S_IFDIR | 0o755;
        assert_eq!(c.classify(Path::new("/d"), Some(&dir), None), Decision::Check);
        c.record("/d".into(), Some(dir), Some(dir), 150);
        let mut touched = dir;
        touched.ctime_sec = 160;
        touched.mtime_sec = 160;
        assert_eq!(c.classify(Path::new("/d"), Some(&touched), None), Decision::Skip);
        touched.mode = S_IFDIR | 0o700;
        assert_eq!(c.classify(Path::new("/d"), Some(&touched), None), Decision::Check);
    }

    #[test]
    fn a_received_file_is_skipped_and_a_local_rewrite_after_it_marked() {
        let mut c = StatCache::new(10);
        let received = file(7, 5, (100, 100), (100, 200));
        c.record_received("/d/f".into(), Some(received), 100);
        assert_eq!(c.classify(Path::new("/d/f"), Some(&received), None), Decision::Skip);
        let local = file(7, 5, (100, 900), (100, 900));
        assert_eq!(
            c.classify(Path::new("/d/f"), Some(&local), None),
            Decision::CheckAndMark
        );
    }

    #[test]
    fn unattributed_server_activity_never_lets_a_received_file_echo() {
        // Regression: a file a peer pushed here, rewritten there within the
        // same second at the same size, was forced dirty here and pushed
        // back over the peer's newer content.
        let mut c = StatCache::new(10);
        let seen = file(7, 5, (100, 100), (100, 100));
        c.record("/d/f".into(), Some(seen), Some(seen), 100);
        let pushed_here = file(7, 5, (100, 600), (100, 650));
        let before = Instant::now();
        assert_eq!(
            c.classify(Path::new("/d/f"), Some(&pushed_here), Some(before)),
            Decision::Check
        );
        c.record_full(100);
        let old = file(8, 5, (50, 0), (120, 0));
        assert_eq!(
            c.classify(Path::new("/d/g"), Some(&old), Some(Instant::now())),
            Decision::Check
        );
        assert_eq!(
            c.classify(Path::new("/d/g"), Some(&old), None),
            Decision::CheckAndMark
        );
    }

    #[test]
    fn eviction_only_makes_decisions_more_cautious() {
        let mut c = StatCache::new(2);
        let a = file(1, 1, (100, 0), (100, 0));
        c.record("/a".into(), Some(a), Some(a), 100);
        c.record("/b".into(), Some(a), Some(a), 100);
        c.record("/c".into(), Some(a), Some(a), 100); // evicts /a and /b
        assert_eq!(c.len(), 1);
        assert_eq!(
            c.classify(Path::new("/a"), Some(&a), None),
            Decision::CheckAndMark
        );
    }
}
