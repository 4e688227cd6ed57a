//! What csync2 can and cannot see (pure: callers pass the stats and the
//! clock in).
//!
//! csync2 records a file as `v1:mtime=S:mode:uid:gid:type=reg:size=N`, with
//! the mtime in whole seconds, so a file rewritten within the second of its
//! last check at the same size looks unchanged to `csync2 -c`. This cache
//! decides, for a path with a new event:
//!
//! * **Skip**: csync2 already recorded exactly this state.
//! * **Check**: `csync2 -c` sees the change.
//! * **CheckAndMark**: csync2 may not see it: check it (to refresh its
//!   record), then force it dirty with `csync2 -m`, so no edit is lost.
//!
//! What it knows:
//!
//! * A *record* per recently checked path: the lstat taken just before and
//!   just after the check run. It is trusted (csync2 saw exactly that
//!   state) only when the two agree. A file the local csync2 server
//!   received from a peer is recorded as trusted too: csync2 recorded it
//!   as it wrote it. So the server's own write is skipped, and a local
//!   rewrite after it is still caught.
//! * *Covers*: recursive and full checks, with their start (wall clock)
//!   and end (whole second). A regular file without a trusted record is at
//!   risk when it changed at or after the start of the latest check that
//!   covered it (ctime, which nothing can set back) and its mtime second is
//!   not later than that check's end.
//!
//! Forcing a file dirty that a peer pushed here would push it back to
//! where it came from, maybe over newer content there. So activity of the
//! local server that cannot be pinned to a file ("unattributed") turns a
//! would-be mark that rests on older knowledge into a plain check.
//!
//! Bounded: records evicted for room widen a global cover, which only ever
//! makes decisions more cautious.
//!
//! Layer: core. Imports nothing from the crate.

#![forbid(unsafe_code)]

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

/// A check run as the cache sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Wall clock when it started (before anything was lstat'ed).
    pub start: SystemTime,
    /// Monotonic clock when it started.
    pub started: Instant,
    /// Wall-clock second in which it ended.
    pub end_sec: i64,
}

impl Run {
    /// A run that starts now; fill `end_sec` with [`Run::ended`].
    pub fn begin() -> Run {
        Run {
            start: SystemTime::now(),
            started: Instant::now(),
            end_sec: i64::MIN,
        }
    }

    /// The same run, ended now.
    pub fn ended(self) -> Run {
        let end = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Run {
            end_sec: end,
            ..self
        }
    }

    /// The widest run covering both (for cautious merging).
    fn widen(self, other: Run) -> Run {
        Run {
            start: self.start.min(other.start),
            started: self.started.max(other.started),
            end_sec: self.end_sec.max(other.end_sec),
        }
    }

    /// Is a regular file in state `now` at risk of a change csync2 did not
    /// see during (or since) this run?
    fn at_risk(&self, now: &Snapshot) -> bool {
        now.is_regular() && now.ctime() >= self.start && now.mtime_sec <= self.end_sec
    }
}

#[derive(Debug, Clone, Copy)]
struct Record {
    /// The state csync2 saw, when trusted (pre == post).
    seen: Option<Option<Snapshot>>,
    /// The run that made the record.
    run: Run,
}

/// The cache.
#[derive(Debug)]
pub struct StatCache {
    records: HashMap<PathBuf, Record>,
    /// Recent recursive checks.
    trees: Vec<(PathBuf, Run)>,
    /// Covers every path: the last full check, widened by whatever was
    /// evicted for room.
    floor: Option<Run>,
    capacity: usize,
    tree_capacity: usize,
}

impl StatCache {
    /// A cache holding at most `capacity` path records.
    pub fn new(capacity: usize) -> StatCache {
        StatCache {
            records: HashMap::new(),
            trees: Vec::new(),
            floor: None,
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
    /// something that could not be pinned to a file: a mark that rests on
    /// knowledge older than that becomes a plain check.
    pub fn classify(
        &self,
        path: &Path,
        now: Option<&Snapshot>,
        unattributed: Option<Instant>,
    ) -> Decision {
        let (decision, basis) = self.classify_inner(path, now);
        match (decision, unattributed) {
            (Decision::CheckAndMark, Some(u)) if basis.is_none_or(|b| u >= b) => Decision::Check,
            _ => decision,
        }
    }

    /// Why [`StatCache::classify`] decided as it did, for the debug log.
    pub fn explain(&self, path: &Path, now: Option<&Snapshot>) -> String {
        let rec = self.records.get(path);
        let trees: Vec<&Run> = self
            .trees
            .iter()
            .filter(|(d, _)| path.starts_with(d))
            .map(|(_, r)| r)
            .collect();
        format!(
            "now={now:?} record={rec:?} covering_trees={trees:?} floor={:?}",
            self.floor
        )
    }

    /// The decision, and when the knowledge it rests on was gathered.
    fn classify_inner(&self, path: &Path, now: Option<&Snapshot>) -> (Decision, Option<Instant>) {
        let record = self.records.get(path);
        if let Some(Record {
            seen: Some(seen),
            run,
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
                    } else if now.is_regular() {
                        // Replaced by another inode that looks the same.
                        Decision::CheckAndMark
                    } else {
                        Decision::Check
                    }
                }
                _ => Decision::Check,
            };
            return (d, Some(run.started));
        }
        let Some(now) = now else {
            return (Decision::Check, None);
        };
        // The latest check that covered the path recorded its state as of
        // that check: only a change since its start can have slipped by.
        let mut cover = self.floor;
        let mut later = |r: Run| {
            if cover.is_none_or(|c| r.started > c.started) {
                cover = Some(r);
            }
        };
        if let Some(r) = record {
            later(r.run);
        }
        for (dir, r) in &self.trees {
            if path.starts_with(dir) {
                later(*r);
            }
        }
        match cover {
            Some(c) if c.at_risk(now) => (Decision::CheckAndMark, Some(c.started)),
            Some(c) => (Decision::Check, Some(c.started)),
            None => (Decision::Check, None),
        }
    }

    /// A check run that covered `path` is over; `pre` and `post` are the
    /// lstats taken just before and after it.
    pub fn record(
        &mut self,
        path: PathBuf,
        pre: Option<Snapshot>,
        post: Option<Snapshot>,
        run: Run,
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
                run,
            },
        );
    }

    /// The local csync2 server wrote `path` (now `snap`; `None`: it
    /// deleted it) and recorded it in csync2's database by `done_at`.
    pub fn record_received(&mut self, path: PathBuf, snap: Option<Snapshot>, done_at: SystemTime) {
        let run = Run {
            start: done_at,
            started: Instant::now(),
            end_sec: done_at
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
        };
        self.record(path, snap, snap, run);
    }

    /// A recursive check of `dir` is over: records below it made before
    /// the run started are superseded by it.
    pub fn record_tree(&mut self, dir: PathBuf, run: Run) {
        self.records
            .retain(|p, r| !p.starts_with(&dir) || r.run.started > run.started);
        if self.trees.len() >= self.tree_capacity {
            let (_, evicted) = self.trees.remove(0);
            self.widen_floor(evicted);
        }
        self.trees.push((dir, run));
    }

    /// A full check (`csync2 -cr /`) is over.
    pub fn record_full(&mut self, run: Run) {
        self.records.retain(|_, r| r.run.started > run.started);
        self.trees.retain(|(_, r)| r.started > run.started);
        // The full check supersedes older covers.
        self.floor = Some(run);
    }

    fn widen_floor(&mut self, run: Run) {
        self.floor = Some(self.floor.map_or(run, |f| f.widen(run)));
    }

    fn evict_all(&mut self) {
        let runs: Vec<Run> = self.records.values().map(|r| r.run).collect();
        for r in runs {
            self.widen_floor(r);
        }
        self.records.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(sec: i64, nsec: i64) -> SystemTime {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    }

    fn run(start: (i64, i64), end_sec: i64) -> Run {
        Run {
            start: at(start.0, start.1),
            started: Instant::now(),
            end_sec,
        }
    }

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

    fn path(p: &str) -> &Path {
        Path::new(p)
    }

    #[test]
    fn same_second_same_size_rewrite_is_marked() {
        let mut c = StatCache::new(10);
        let seen = file(7, 5, (100, 100), (100, 100));
        c.record("/d/f".into(), Some(seen), Some(seen), run((100, 150), 100));
        let rewritten = file(7, 5, (100, 700), (100, 700));
        assert_eq!(
            c.classify(path("/d/f"), Some(&rewritten), None),
            Decision::CheckAndMark
        );
    }

    #[test]
    fn unchanged_since_the_check_is_skipped() {
        let mut c = StatCache::new(10);
        let seen = file(7, 5, (100, 1), (100, 1));
        c.record("/d/f".into(), Some(seen), Some(seen), run((101, 0), 101));
        assert_eq!(c.classify(path("/d/f"), Some(&seen), None), Decision::Skip);
    }

    #[test]
    fn a_visible_change_is_checked() {
        let mut c = StatCache::new(10);
        let seen = file(7, 5, (100, 1), (100, 1));
        c.record("/d/f".into(), Some(seen), Some(seen), run((100, 2), 100));
        let grown = file(7, 6, (100, 9), (100, 9));
        assert_eq!(
            c.classify(path("/d/f"), Some(&grown), None),
            Decision::Check
        );
        let later = file(7, 5, (101, 0), (101, 0));
        assert_eq!(
            c.classify(path("/d/f"), Some(&later), None),
            Decision::Check
        );
    }

    #[test]
    fn a_change_during_the_check_is_not_trusted() {
        let mut c = StatCache::new(10);
        let pre = file(7, 5, (100, 1), (100, 1));
        let post = file(7, 5, (100, 5), (100, 5));
        c.record("/d/f".into(), Some(pre), Some(post), run((100, 2), 100));
        // csync2 may have seen either state; the current one changed after
        // the run started, in its last second: at risk.
        assert_eq!(
            c.classify(path("/d/f"), Some(&post), None),
            Decision::CheckAndMark
        );
        let next_second = file(7, 5, (101, 0), (101, 0));
        assert_eq!(
            c.classify(path("/d/f"), Some(&next_second), None),
            Decision::Check
        );
    }

    #[test]
    fn unknown_paths_are_judged_by_ctime_against_the_covering_check() {
        let mut c = StatCache::new(10);
        c.record_full(run((90, 0), 100));
        // Changed before the full check started: csync2 saw it.
        let before = file(7, 5, (50, 0), (80, 0));
        assert_eq!(
            c.classify(path("/d/old"), Some(&before), None),
            Decision::Check
        );
        // chmod of an old file after the check: csync2's record may match.
        let chmodded = file(7, 5, (50, 0), (120, 0));
        assert_eq!(
            c.classify(path("/d/old"), Some(&chmodded), None),
            Decision::CheckAndMark
        );
        let fresh = file(8, 5, (130, 0), (130, 0));
        assert_eq!(
            c.classify(path("/d/new"), Some(&fresh), None),
            Decision::Check
        );
        c.record_tree("/d".into(), run((129, 0), 130));
        assert_eq!(
            c.classify(path("/d/new"), Some(&fresh), None),
            Decision::CheckAndMark
        );
        assert_eq!(
            c.classify(path("/e/new"), Some(&fresh), None),
            Decision::Check
        );
    }

    #[test]
    fn deletions_are_checked_once() {
        let mut c = StatCache::new(10);
        assert_eq!(c.classify(path("/d/gone"), None, None), Decision::Check);
        c.record("/d/gone".into(), None, None, run((100, 0), 100));
        assert_eq!(c.classify(path("/d/gone"), None, None), Decision::Skip);
        let back = file(9, 1, (100, 0), (100, 0));
        assert_eq!(
            c.classify(path("/d/gone"), Some(&back), None),
            Decision::Check
        );
    }

    #[test]
    fn directories_and_symlinks_are_never_marked() {
        let mut c = StatCache::new(10);
        c.record_full(run((90, 0), 100));
        let mut dir = file(3, 4096, (50, 0), (150, 0));
        dir.mode = S_IFDIR | 0o755;
        assert_eq!(c.classify(path("/d"), Some(&dir), None), Decision::Check);
        c.record("/d".into(), Some(dir), Some(dir), run((150, 1), 150));
        let mut touched = dir;
        touched.ctime_sec = 160;
        touched.mtime_sec = 160;
        assert_eq!(c.classify(path("/d"), Some(&touched), None), Decision::Skip);
        touched.mode = S_IFDIR | 0o700;
        assert_eq!(
            c.classify(path("/d"), Some(&touched), None),
            Decision::Check
        );
    }

    #[test]
    fn a_received_file_is_skipped_and_a_local_rewrite_after_it_marked() {
        let mut c = StatCache::new(10);
        let received = file(7, 5, (100, 100), (100, 200));
        c.record_received("/d/f".into(), Some(received), at(100, 210));
        assert_eq!(
            c.classify(path("/d/f"), Some(&received), None),
            Decision::Skip
        );
        let local = file(7, 5, (100, 900), (100, 900));
        assert_eq!(
            c.classify(path("/d/f"), Some(&local), None),
            Decision::CheckAndMark
        );
    }

    #[test]
    fn a_receipt_survives_a_recursive_check_that_started_before_it() {
        // Regression: a recursive check of a directory the server had just
        // created wiped the receipts of the files it received there; their
        // later events were then forced dirty and pushed back (echo).
        let mut c = StatCache::new(10);
        let tree_run = run((99, 0), 100);
        let received = file(7, 5, (95, 0), (100, 200));
        c.record_received("/d/f".into(), Some(received), at(100, 210));
        c.record_tree("/d".into(), tree_run);
        assert_eq!(
            c.classify(path("/d/f"), Some(&received), None),
            Decision::Skip
        );
    }

    #[test]
    fn a_file_received_before_a_covering_check_is_only_checked() {
        let mut c = StatCache::new(10);
        // The server wrote it (ctime 100) before the tree check started
        // (no check runs while the server serves); its mtime is the
        // origin's.
        let received = file(7, 5, (99, 0), (100, 0));
        c.record_tree("/d".into(), run((101, 0), 101));
        assert_eq!(
            c.classify(path("/d/f"), Some(&received), None),
            Decision::Check
        );
    }

    #[test]
    fn unattributed_server_activity_never_lets_a_received_file_echo() {
        // Regression: a file a peer pushed here, rewritten there within the
        // same second at the same size, was forced dirty here and pushed
        // back over the peer's newer content.
        let mut c = StatCache::new(10);
        let seen = file(7, 5, (100, 100), (100, 100));
        c.record("/d/f".into(), Some(seen), Some(seen), run((100, 150), 100));
        let pushed_here = file(7, 5, (100, 600), (100, 650));
        let after = Instant::now();
        assert_eq!(
            c.classify(path("/d/f"), Some(&pushed_here), Some(after)),
            Decision::Check
        );
        c.record_full(run((110, 0), 120));
        let old = file(8, 5, (50, 0), (130, 0));
        assert_eq!(
            c.classify(path("/d/g"), Some(&old), Some(Instant::now())),
            Decision::Check
        );
        assert_eq!(
            c.classify(path("/d/g"), Some(&old), None),
            Decision::CheckAndMark
        );
    }

    #[test]
    fn the_latest_covering_check_decides_not_the_oldest() {
        // Regression: covers were merged (earliest start, latest end), so a
        // file a peer pushed before a recursive check, with the peer's older
        // mtime, counted as at risk under the start-up full check and was
        // forced dirty: an echo storm.
        let mut c = StatCache::new(10);
        let older = Run {
            start: at(82, 0),
            started: Instant::now(),
            end_sec: 82,
        };
        c.record_full(older);
        let newer = Run {
            start: at(90, 159_000_000),
            started: Instant::now() + Duration::from_millis(1),
            end_sec: 90,
        };
        c.record_tree("/d".into(), newer);
        let pushed = file(7, 2, (89, 0), (90, 3_950_125));
        assert_eq!(
            c.classify(path("/d/f0"), Some(&pushed), None),
            Decision::Check
        );
    }

    #[test]
    fn eviction_only_makes_decisions_more_cautious() {
        let mut c = StatCache::new(2);
        let a = file(1, 1, (100, 0), (100, 0));
        c.record("/a".into(), Some(a), Some(a), run((99, 0), 100));
        c.record("/b".into(), Some(a), Some(a), run((99, 0), 100));
        c.record("/c".into(), Some(a), Some(a), run((99, 0), 100)); // evicts /a and /b
        assert_eq!(c.len(), 1);
        assert_eq!(
            c.classify(path("/a"), Some(&a), None),
            Decision::CheckAndMark
        );
    }
}
