//! The stat cache: for every synced path, the state csync2 last recorded
//! for it as far as the daemon knows (pure: callers pass the stats in).
//!
//! An entry is written only from the daemon's own csync2 results, never
//! from raw events: a path whose lstat did not change across a
//! `csync2 -c` is *known* (csync2 recorded exactly that state, and marked
//! it dirty if the peers need it); a path that changed during the check is
//! *unknown* (csync2 recorded something in between); a file the local
//! csync2 server received is known as received. The first fill comes from
//! csync2's own database (`csync2 -L`). The daemon persists the cache in
//! its journal, so a crash between an event and its check leaves the
//! entry as it was: the disk differs from it, and the next reconcile
//! finds the change.
//!
//! [`StatCache::decide`] says what a path needs, for a batch and for a
//! reconcile alike:
//!
//! * **Skip**: the disk holds exactly the known state (same inode, same
//!   ctime: nothing can set ctime back).
//! * **Check**: `csync2 -c` sees the difference (its check text differs:
//!   mtime second, size, mode, owner, type), or the path is new or gone.
//! * **CheckAndMark**: csync2's check text cannot see it, so `csync2 -c`
//!   is followed by `csync2 -m`: a same-size rewrite within the second of
//!   the last check (same inode, new ctime), a replacement that keeps
//!   size, mode and mtime (`cp -p` of another version: a new inode or
//!   ctime), and any file whose recorded state is unknown.
//!
//! csync2's check text keeps mtime in whole seconds, so a file that
//! changed while a deep `csync2 -cr` ran may have been recorded in an
//! intermediate state the cache never saw: such a file (ctime at or after
//! the run's start, mtime second not after its end) is marked too.
//!
//! Forcing a file dirty that a peer pushed here would push it back to
//! where it came from, maybe over newer content there. So activity of the
//! local server that cannot be pinned to a file ("unattributed") turns a
//! would-be mark that rests on older knowledge into a plain check.
//!
//! Layer: core. Imports nothing from the crate.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

    /// Stands for "csync2 recorded something, but not what" in the
    /// journal (no file has mode 0).
    pub const UNKNOWN: Snapshot = Snapshot {
        dev: 0,
        ino: 0,
        mode: 0,
        uid: 0,
        gid: 0,
        size: 0,
        rdev: 0,
        mtime_sec: 0,
        mtime_nsec: 0,
        ctime_sec: 0,
        ctime_nsec: 0,
    };

    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }

    /// Does the disk (`self`) hold exactly the state `known`? The same
    /// inode, unchanged: for files, devices and links every stat field,
    /// ctime included (nothing can set ctime back, so `touch -d` to an old
    /// mtime or `cp -p` over the file shows); for directories only what
    /// csync2 syncs of them (their times move with every entry added or
    /// removed).
    pub fn same_state(&self, known: &Snapshot) -> bool {
        let common = self.dev == known.dev
            && self.ino == known.ino
            && self.mode == known.mode
            && self.uid == known.uid
            && self.gid == known.gid;
        if self.is_dir() {
            return common;
        }
        common
            && self.size == known.size
            && self.rdev == known.rdev
            && self.mtime_sec == known.mtime_sec
            && self.mtime_nsec == known.mtime_nsec
            && self.ctime_sec == known.ctime_sec
            && self.ctime_nsec == known.ctime_nsec
    }

    /// Same inode, and nothing about it changed (ctime moves on every
    /// change, including ones that keep mtime, size and mode).
    pub fn unchanged_since(&self, other: &Snapshot) -> bool {
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

/// What a path needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// csync2 already recorded exactly this state.
    Skip,
    /// `csync2 -c` sees the change.
    Check,
    /// `csync2 -c`, then `csync2 -m`: the change may be invisible to -c.
    CheckAndMark,
}

/// A deep check (`csync2 -cr`) as the cache sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Wall clock when it started (before anything was lstat'ed).
    pub start: SystemTime,
    /// Wall-clock second in which it ended.
    pub end_sec: i64,
}

impl Run {
    /// A run that starts now; fill `end_sec` with [`Run::ended`].
    pub fn begin() -> Run {
        Run {
            start: SystemTime::now(),
            end_sec: i64::MAX,
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

    /// Is a regular file in state `now` at risk of a change csync2 did not
    /// see during (or since) this run?
    fn at_risk(&self, now: &Snapshot) -> bool {
        now.is_regular() && now.ctime() >= self.start && now.mtime_sec <= self.end_sec
    }
}

fn ns(sec: i64, nsec: i64) -> i64 {
    sec.saturating_mul(1_000_000_000).saturating_add(nsec)
}

fn is_device(mode: u32) -> bool {
    matches!(mode & S_IFMT, S_IFCHR | S_IFBLK)
}

/// What the cache holds for one path: a [`Snapshot`] packed into 64
/// bytes with the cache's own fields (against 104 unpacked): times in
/// nanoseconds, and the size and the device number in one field (a device
/// has no size; a file no device number). Mode 0 stands for "unknown":
/// csync2 recorded something, but the path changed while it looked.
#[derive(Debug)]
pub struct Entry {
    dev: u64,
    ino: u64,
    size_or_rdev: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    /// The cache's version when this was recorded (0: loaded at start).
    ver: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    /// The last walk that saw the path (see [`StatCache::begin_walk`]).
    walked: AtomicU32,
}

impl Entry {
    fn new(known: Option<Snapshot>, ver: u64) -> Entry {
        let s = known.unwrap_or(Snapshot::UNKNOWN);
        Entry {
            dev: s.dev,
            ino: s.ino,
            size_or_rdev: if is_device(s.mode) { s.rdev } else { s.size },
            mtime_ns: ns(s.mtime_sec, s.mtime_nsec),
            ctime_ns: ns(s.ctime_sec, s.ctime_nsec),
            ver,
            mode: s.mode,
            uid: s.uid,
            gid: s.gid,
            walked: AtomicU32::new(0),
        }
    }

    /// The state csync2 recorded (`None`: unknown).
    pub fn known(&self) -> Option<Snapshot> {
        if self.mode == 0 {
            return None;
        }
        let split = |v: i64| (v.div_euclid(1_000_000_000), v.rem_euclid(1_000_000_000));
        let (mtime_sec, mtime_nsec) = split(self.mtime_ns);
        let (ctime_sec, ctime_nsec) = split(self.ctime_ns);
        let device = is_device(self.mode);
        Some(Snapshot {
            dev: self.dev,
            ino: self.ino,
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            size: if device { 0 } else { self.size_or_rdev },
            rdev: if device { self.size_or_rdev } else { 0 },
            mtime_sec,
            mtime_nsec,
            ctime_sec,
            ctime_nsec,
        })
    }

    /// A walk saw the path.
    pub fn saw(&self, walk: u32) {
        self.walked.store(walk, Ordering::Relaxed);
    }
}

/// What a path needs, from its entry and its lstat alone (`None`: gone).
pub fn judge(entry: Option<&Entry>, now: Option<&Snapshot>) -> Decision {
    let known = match entry {
        Some(e) => e.known(),
        None => {
            // Never recorded through the daemon: csync2 sees a new file as
            // new, and a path it never knew as nothing.
            return Decision::Check;
        }
    };
    match (known, now) {
        (_, None) => Decision::Check,
        (None, Some(now)) if now.is_regular() => Decision::CheckAndMark,
        (None, Some(_)) => Decision::Check,
        (Some(known), Some(now)) => {
            if now.same_state(&known) {
                Decision::Skip
            } else if now.visible() != known.visible() {
                Decision::Check
            } else if now.is_regular() {
                // Same mtime second, size, mode and owner, yet changed: a
                // same-second rewrite, `touch -d` back to the old time, or
                // a replacement (`cp -p`) that only ctime or inode reveal.
                Decision::CheckAndMark
            } else if now.ino == known.ino {
                // A symlink's times: nothing csync2 records.
                Decision::Skip
            } else {
                // Another symlink or device that looks the same: its target
                // is in csync2's check text.
                Decision::Check
            }
        }
    }
}

/// A change to persist: the path and its new entry (`None`: no entry;
/// [`Snapshot::UNKNOWN`]: recorded, state unknown).
pub type Persist = (PathBuf, Option<Snapshot>);

/// The cache.
#[derive(Debug, Default)]
pub struct StatCache {
    map: HashMap<Box<Path>, Entry>,
    /// Bumped by every record.
    ver: u64,
    /// [`StatCache::ver`] at the last unattributed activity of the local
    /// server.
    unattributed: Option<u64>,
    /// The last deep check, and the version at its start.
    deep: Option<(Run, u64)>,
    /// The last walk's number.
    walk: u32,
}

impl StatCache {
    pub fn new() -> StatCache {
        StatCache::default()
    }

    /// Take one row the journal kept (at start-up, before any record).
    pub fn load_one(&mut self, path: PathBuf, snap: Snapshot) {
        let known = (snap != Snapshot::UNKNOWN).then_some(snap);
        self.map
            .insert(path.into_boxed_path(), Entry::new(known, 0));
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn get(&self, path: &Path) -> Option<&Entry> {
        self.map.get(path)
    }

    /// The known state of `path`, if any.
    pub fn known(&self, path: &Path) -> Option<Snapshot> {
        self.map.get(path).and_then(Entry::known)
    }

    /// The version now: results recorded later carry a higher one.
    pub fn version(&self) -> u64 {
        self.ver
    }

    /// Decide for `path`, whose current lstat is `now` (`None`: gone).
    pub fn decide(&self, path: &Path, now: Option<&Snapshot>) -> Decision {
        let entry = self.map.get(path);
        let mut decision = judge(entry, now);
        let mut basis = entry.map_or(0, |e| e.ver);
        if decision == Decision::Check {
            if let (Some((run, ver)), Some(now)) = (&self.deep, now) {
                if run.at_risk(now) {
                    decision = Decision::CheckAndMark;
                    basis = *ver;
                }
            }
        }
        match (decision, self.unattributed) {
            (Decision::CheckAndMark, Some(u)) if u >= basis => Decision::Check,
            _ => decision,
        }
    }

    /// Why [`StatCache::decide`] decided as it did, for the trace log.
    pub fn explain(&self, path: &Path, now: Option<&Snapshot>) -> String {
        let entry = self.map.get(path);
        format!(
            "now={now:?} known={:?} ver={:?} deep={:?} unattributed={:?}",
            entry.map(Entry::known),
            entry.map(|e| e.ver),
            self.deep,
            self.unattributed
        )
    }

    /// A check of `path` is over; `pre` and `post` are the lstats taken
    /// just before and just after it. Returns what to persist.
    pub fn record(
        &mut self,
        path: PathBuf,
        pre: Option<Snapshot>,
        post: Option<Snapshot>,
    ) -> Persist {
        let trusted = match (&pre, &post) {
            (None, None) => true,
            (Some(a), Some(b)) => b.unchanged_since(a),
            _ => false,
        };
        if trusted {
            self.set(path, post)
        } else {
            self.ver += 1;
            self.map
                .insert(path.clone().into_boxed_path(), Entry::new(None, self.ver));
            (path, Some(Snapshot::UNKNOWN))
        }
    }

    /// The local csync2 server wrote `path` (now `snap`; `None`: it
    /// deleted it) and recorded it in csync2's database as it did.
    pub fn record_received(&mut self, path: PathBuf, snap: Option<Snapshot>) -> Persist {
        self.set(path, snap)
    }

    /// Fill from csync2's database: `path` is known as `snap`.
    pub fn fill(&mut self, items: impl IntoIterator<Item = (PathBuf, Snapshot)>) {
        self.map.clear();
        for (p, s) in items {
            self.map
                .insert(p.into_boxed_path(), Entry::new(Some(s), self.ver));
        }
    }

    fn set(&mut self, path: PathBuf, snap: Option<Snapshot>) -> Persist {
        self.ver += 1;
        match snap {
            Some(s) => {
                self.map.insert(
                    path.clone().into_boxed_path(),
                    Entry::new(Some(s), self.ver),
                );
            }
            None => {
                self.map.remove(path.as_path());
            }
        }
        (path, snap)
    }

    /// Record what a reconcile that started at version `since` found,
    /// unless a newer result for the same path came meanwhile.
    pub fn record_since(
        &mut self,
        since: u64,
        path: PathBuf,
        pre: Option<Snapshot>,
        post: Option<Snapshot>,
    ) -> Option<Persist> {
        if self.map.get(path.as_path()).is_some_and(|e| e.ver > since) {
            return None;
        }
        Some(self.record(path, pre, post))
    }

    /// Forget `path` (no longer synced); returns what to persist.
    pub fn forget(&mut self, path: &Path) -> Option<Persist> {
        self.map.remove(path).map(|_| (path.to_path_buf(), None))
    }

    /// The local csync2 server did something no file can be pinned to.
    pub fn unattributed(&mut self) {
        self.unattributed = Some(self.ver);
    }

    /// A deep check (`csync2 -cr`) that started at version `ver` ended.
    pub fn deep_done(&mut self, run: Run, ver: u64) {
        self.deep = Some((run, ver));
    }

    /// Number a new walk: entries it sees are marked with it
    /// ([`Entry::saw`]), and [`StatCache::unseen_under`] lists the rest.
    pub fn begin_walk(&mut self) -> u32 {
        self.walk = self.walk.wrapping_add(1).max(1);
        self.walk
    }

    /// Entries at or below one of `scopes` that walk `walk` did not see,
    /// leaving out those at or below `skip` (directories it could not
    /// read).
    pub fn unseen_under(&self, walk: u32, scopes: &[PathBuf], skip: &[PathBuf]) -> Vec<PathBuf> {
        self.map
            .iter()
            .filter(|(p, e)| {
                e.walked.load(Ordering::Relaxed) != walk
                    && scopes.iter().any(|s| p.starts_with(s))
                    && !skip.iter().any(|s| p.starts_with(s))
            })
            .map(|(p, _)| p.to_path_buf())
            .collect()
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

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    /// A cache as loaded from these journal rows.
    fn loaded(rows: impl IntoIterator<Item = (PathBuf, Snapshot)>) -> StatCache {
        let mut c = StatCache::new();
        for (path, snap) in rows {
            c.load_one(path, snap);
        }
        c
    }

    fn known(at: &str, s: Snapshot) -> StatCache {
        let mut c = StatCache::new();
        c.record(p(at), Some(s), Some(s));
        c
    }

    #[test]
    fn an_entry_packs_a_snapshot_into_64_bytes_and_back() {
        assert!(std::mem::size_of::<Entry>() <= 64);
        let f = file(7, 10, (-5, 999_999_999), (1_700_000_000, 1));
        let dev = Snapshot {
            mode: S_IFCHR | 0o600,
            size: 0,
            rdev: 0x0103,
            ..f
        };
        for s in [f, dev] {
            assert_eq!(Entry::new(Some(s), 1).known(), Some(s));
        }
        assert_eq!(Entry::new(None, 1).known(), None);
    }

    #[test]
    fn the_known_state_is_skipped() {
        let f = file(7, 10, (100, 1), (100, 2));
        let c = known("/a", f);
        assert_eq!(c.decide(Path::new("/a"), Some(&f)), Decision::Skip);
    }

    #[test]
    fn same_second_same_size_rewrite_is_marked() {
        let f = file(7, 10, (100, 1), (100, 2));
        let c = known("/a", f);
        let again = file(7, 10, (100, 500), (100, 600));
        assert_eq!(
            c.decide(Path::new("/a"), Some(&again)),
            Decision::CheckAndMark
        );
    }

    #[test]
    fn touch_back_to_the_old_mtime_shows_in_ctime_and_is_marked() {
        let f = file(7, 10, (100, 0), (100, 0));
        let c = known("/a", f);
        // Rewritten at the same size, then `touch -d` back to the old
        // mtime: only ctime says so.
        let back = file(7, 10, (100, 0), (250, 3));
        assert_eq!(
            c.decide(Path::new("/a"), Some(&back)),
            Decision::CheckAndMark
        );
    }

    #[test]
    fn a_cp_p_replacement_is_marked() {
        let f = file(7, 10, (100, 0), (100, 0));
        let c = known("/a", f);
        // Another inode with the same size, mode and mtime.
        let other = file(8, 10, (100, 0), (300, 0));
        assert_eq!(
            c.decide(Path::new("/a"), Some(&other)),
            Decision::CheckAndMark
        );
    }

    #[test]
    fn a_visible_change_a_new_path_and_a_deletion_are_checked() {
        let f = file(7, 10, (100, 0), (100, 0));
        let c = known("/a", f);
        let grown = file(7, 11, (100, 0), (100, 5));
        assert_eq!(c.decide(Path::new("/a"), Some(&grown)), Decision::Check);
        let later = file(7, 10, (101, 0), (101, 0));
        assert_eq!(c.decide(Path::new("/a"), Some(&later)), Decision::Check);
        assert_eq!(c.decide(Path::new("/a"), None), Decision::Check);
        assert_eq!(c.decide(Path::new("/new"), Some(&f)), Decision::Check);
    }

    #[test]
    fn a_change_during_the_check_is_unknown_and_marked_next_time() {
        let mut c = StatCache::new();
        let pre = file(7, 10, (100, 0), (100, 0));
        let post = file(7, 10, (100, 9), (100, 9));
        assert_eq!(
            c.record(p("/a"), Some(pre), Some(post)),
            (p("/a"), Some(Snapshot::UNKNOWN))
        );
        assert_eq!(
            c.decide(Path::new("/a"), Some(&post)),
            Decision::CheckAndMark
        );
        // Loaded back from the journal, it is still unknown.
        let c = loaded([(p("/a"), Snapshot::UNKNOWN)]);
        assert_eq!(
            c.decide(Path::new("/a"), Some(&post)),
            Decision::CheckAndMark
        );
    }

    #[test]
    fn directories_and_symlinks_are_never_marked() {
        let dir = Snapshot {
            mode: S_IFDIR | 0o755,
            ..file(3, 4096, (100, 0), (100, 0))
        };
        let c = known("/d", dir);
        let touched = Snapshot {
            mtime_sec: 200,
            ctime_sec: 200,
            ..dir
        };
        assert_eq!(c.decide(Path::new("/d"), Some(&touched)), Decision::Skip);
        let link = Snapshot {
            mode: S_IFLNK | 0o777,
            ..file(4, 3, (100, 0), (100, 0))
        };
        let c = known("/l", link);
        let relinked = Snapshot { ino: 5, ..link };
        assert_eq!(c.decide(Path::new("/l"), Some(&relinked)), Decision::Check);
    }

    #[test]
    fn a_received_file_is_skipped_and_a_local_rewrite_after_it_marked() {
        let mut c = StatCache::new();
        let got = file(7, 10, (100, 0), (100, 0));
        c.record_received(p("/a"), Some(got));
        assert_eq!(c.decide(Path::new("/a"), Some(&got)), Decision::Skip);
        let local = file(7, 10, (100, 0), (100, 7));
        assert_eq!(
            c.decide(Path::new("/a"), Some(&local)),
            Decision::CheckAndMark
        );
    }

    #[test]
    fn unattributed_server_activity_never_lets_a_received_file_echo() {
        let mut c = StatCache::new();
        let old = file(7, 10, (100, 0), (100, 0));
        c.record(p("/a"), Some(old), Some(old));
        // The server then wrote /a, and could not say which file it was.
        c.unattributed();
        let written = file(7, 10, (100, 0), (100, 8));
        assert_eq!(c.decide(Path::new("/a"), Some(&written)), Decision::Check);
        // A record after the activity is trusted again.
        c.record(p("/a"), Some(written), Some(written));
        let local = file(7, 10, (100, 0), (100, 9));
        assert_eq!(
            c.decide(Path::new("/a"), Some(&local)),
            Decision::CheckAndMark
        );
    }

    #[test]
    fn a_file_that_changed_while_a_deep_check_ran_is_marked() {
        let mut c = StatCache::new();
        let run = Run {
            start: UNIX_EPOCH + Duration::from_secs(200),
            end_sec: 205,
        };
        c.deep_done(run, c.version());
        let during = file(9, 10, (204, 0), (204, 0));
        assert_eq!(
            c.decide(Path::new("/n"), Some(&during)),
            Decision::CheckAndMark
        );
        let before = file(9, 10, (150, 0), (150, 0));
        assert_eq!(c.decide(Path::new("/n"), Some(&before)), Decision::Check);
        let after = file(9, 10, (206, 0), (206, 0));
        assert_eq!(c.decide(Path::new("/n"), Some(&after)), Decision::Check);
    }

    #[test]
    fn a_reconcile_result_never_overwrites_a_newer_one() {
        let mut c = StatCache::new();
        let since = c.version();
        let newer = file(7, 11, (101, 0), (101, 0));
        c.record(p("/a"), Some(newer), Some(newer));
        let older = file(7, 10, (100, 0), (100, 0));
        assert_eq!(
            c.record_since(since, p("/a"), Some(older), Some(older)),
            None
        );
        assert_eq!(c.known(Path::new("/a")), Some(newer));
        assert!(c
            .record_since(c.version(), p("/a"), Some(older), Some(older))
            .is_some());
    }

    #[test]
    fn a_walk_lists_what_it_did_not_see() {
        let f = file(7, 10, (100, 0), (100, 0));
        let mut c = loaded([
            (p("/t/a"), f),
            (p("/t/b"), f),
            (p("/t/sub/c"), f),
            (p("/u/d"), f),
        ]);
        let w = c.begin_walk();
        c.get(Path::new("/t/a")).unwrap().saw(w);
        let mut unseen = c.unseen_under(w, &[p("/t")], &[p("/t/sub")]);
        unseen.sort();
        assert_eq!(unseen, vec![p("/t/b")]);
    }
}
