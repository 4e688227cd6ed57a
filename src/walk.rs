//! Walking the synced trees as `csync2 -cr` walks them: from the roots,
//! entering only directories the configuration may sync something below,
//! never following a symlink, and reporting each path csync2 would record
//! with its lstat. Entries that vanish during the walk are left out (the
//! caller compares with what it knows, and a vanished path is simply
//! gone); directories that cannot be read are reported, so that nothing
//! below them is taken for gone.
//!
//! [`par_synced_under`] walks in several threads (a shared stack of
//! directories; each directory is opened with `O_NOFOLLOW` and each
//! entry's lstat is an `fstatat` on its descriptor, so nothing swapped for
//! a symlink meanwhile is followed). A warm walk is bound by the kernel's
//! dentry lookups and `statx`, a cold one by the disk's queue, and both
//! gain from parallel work. Entries cost no allocation: a directory's
//! synced entries come as one [`Listing`].
//!
//! Layer: adapter (reads the trees). Imports the core ([`crate::statcache`],
//! [`crate::vocab`]) only.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use crate::statcache::Snapshot;
use crate::vocab::TreeFilter;

/// The topmost directory above `path` that is a symlink, if any. csync2
/// counts a file below a directory that became a symlink as removed (its
/// `csync_check_pure`), though `lstat` still finds it through the link;
/// and `csync2 -c` of such a path checks the link's target instead (it
/// resolves the directories of a name), so only `csync2 -cr` of the link
/// marks what was below it removed.
pub fn symlinked_ancestor(path: &Path) -> Option<PathBuf> {
    path.ancestors()
        .skip(1)
        .take_while(|a| a.parent().is_some())
        .filter(|a| std::fs::symlink_metadata(a).is_ok_and(|m| m.file_type().is_symlink()))
        .last()
        .map(Path::to_path_buf)
}

/// Is the known path `path` still there, as csync2 would see it: it
/// exists, and no directory above it is a symlink?
pub fn still_there(path: &Path) -> bool {
    Snapshot::lstat(path).is_some() && symlinked_ancestor(path).is_none()
}

/// What a parallel walk covered.
#[derive(Debug, Default)]
pub struct Walked {
    /// Synced paths reported.
    pub paths: u64,
    /// Directories that could not be listed (nothing below them was
    /// reported).
    pub unreadable: Vec<PathBuf>,
    /// `go_on` said stop: the walk is incomplete.
    pub stopped: bool,
}

/// How many threads a walk uses: twice the CPUs (a cold walk waits on the
/// disk), at least 2, at most 8.
pub fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get() * 2)
        .unwrap_or(2)
        .clamp(2, 8)
}

/// The starting points of a walk of `scopes` over `roots`: each root
/// inside a scope, and each scope inside a root whose every directory
/// between the root and the scope is entered. Nested starts are dropped.
pub fn starts(filter: &dyn TreeFilter, roots: &[PathBuf], scopes: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for scope in scopes {
        for root in roots {
            let start = if root.starts_with(scope) {
                root.clone()
            } else if scope.starts_with(root) {
                let entered = scope
                    .ancestors()
                    .skip(1)
                    .take_while(|a| a.starts_with(root))
                    .all(|a| filter.descend(a));
                if !entered {
                    continue;
                }
                scope.clone()
            } else {
                continue;
            };
            out.push(start);
        }
    }
    out.sort();
    out.dedup();
    let mut kept: Vec<PathBuf> = Vec::with_capacity(out.len());
    for p in out {
        if !kept.iter().any(|k| p.starts_with(k)) {
            kept.push(p);
        }
    }
    kept
}

/// The synced entries of one directory with their lstat: full paths back
/// to back in one buffer.
#[derive(Debug, Default)]
pub struct Listing {
    bytes: Vec<u8>,
    items: Vec<(usize, usize, Snapshot)>,
}

impl Listing {
    fn push(&mut self, path: &[u8], snap: Snapshot) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(path);
        self.items.push((start, self.bytes.len(), snap));
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Path, &Snapshot)> {
        use std::os::unix::ffi::OsStrExt;
        self.items.iter().map(|(a, b, s)| {
            (
                Path::new(std::ffi::OsStr::from_bytes(&self.bytes[*a..*b])),
                s,
            )
        })
    }
}

/// What [`par_synced_under`] hands each directory's synced entries to.
pub type Visit<'a> = &'a (dyn Fn(&Listing) + Sync);

struct Work {
    stack: Vec<PathBuf>,
    /// Directories taken and not yet done.
    busy: usize,
    /// `go_on` said stop.
    stopped: bool,
}

/// Every synced path at or below each of `scopes` (`/`: every tree), with
/// its lstat, walked by [`threads`] threads. `visit` gets the synced
/// entries of one directory at a time (from any thread). `go_on` is asked
/// after every directory (a long walk is work too: a caller beats its
/// watchdog there); once it says no, the walk stops early, and says so.
pub fn par_synced_under(
    filter: &dyn TreeFilter,
    roots: &[PathBuf],
    scopes: &[PathBuf],
    visit: Visit<'_>,
    go_on: &(dyn Fn() -> bool + Sync),
) -> Walked {
    use std::os::unix::ffi::OsStrExt;
    let mut firsts = Listing::default();
    let mut stack = Vec::new();
    for start in starts(filter, roots, scopes) {
        let Some(snap) = Snapshot::lstat(&start) else {
            continue;
        };
        if filter.syncs(&start) {
            firsts.push(start.as_os_str().as_bytes(), snap);
        }
        if snap.is_dir() && filter.descend(&start) {
            stack.push(start);
        }
    }
    visit(&firsts);
    let work = Mutex::new(Work {
        stack,
        busy: 0,
        stopped: false,
    });
    let wake = Condvar::new();
    let paths = std::sync::atomic::AtomicU64::new(firsts.len() as u64);
    let unreadable = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads() {
            s.spawn(|| loop {
                let dir = {
                    let mut w = work.lock().unwrap_or_else(|e| e.into_inner());
                    loop {
                        if let Some(d) = w.stack.pop() {
                            w.busy += 1;
                            break Some(d);
                        }
                        if w.busy == 0 {
                            break None;
                        }
                        w = wake.wait(w).unwrap_or_else(|e| e.into_inner());
                    }
                };
                let Some(dir) = dir else {
                    wake.notify_all();
                    return;
                };
                let (entries, subdirs) = match list(filter, &dir) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::debug!(dir = %dir.display(), "cannot list: {e}");
                        unreadable
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(dir);
                        (Listing::default(), Vec::new())
                    }
                };
                if !entries.is_empty() {
                    paths.fetch_add(entries.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    visit(&entries);
                }
                let go = go_on();
                let mut w = work.lock().unwrap_or_else(|e| e.into_inner());
                w.busy -= 1;
                if !go {
                    w.stopped = true;
                    w.stack.clear();
                }
                let more = !subdirs.is_empty() && !w.stopped;
                if more {
                    w.stack.extend(subdirs);
                }
                let done = w.busy == 0 && w.stack.is_empty();
                drop(w);
                if more || done {
                    wake.notify_all();
                }
            });
        }
    });
    let stopped = work.into_inner().unwrap_or_else(|e| e.into_inner()).stopped;
    Walked {
        stopped,
        paths: paths.into_inner(),
        unreadable: unreadable.into_inner().unwrap_or_else(|e| e.into_inner()),
    }
}

/// A directory's synced entries, and the subdirectories to enter.
type Listed = (Listing, Vec<PathBuf>);

/// The synced entries of `dir` with their lstat, and the subdirectories
/// to enter.
fn list(filter: &dyn TreeFilter, dir: &Path) -> nix::Result<Listed> {
    use nix::fcntl::{AtFlags, OFlag};
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let mut d = nix::dir::Dir::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    let fd = d.as_raw_fd();
    let mut listing = Listing::default();
    let mut subdirs = Vec::new();
    let mut path = dir.as_os_str().as_bytes().to_vec();
    if path.last() != Some(&b'/') {
        path.push(b'/');
    }
    let base = path.len();
    for entry in d.iter() {
        let entry = entry?;
        let name = entry.file_name();
        let bytes = name.to_bytes();
        if bytes == b"." || bytes == b".." {
            continue;
        }
        // Never follows: an entry that vanished meanwhile is left out.
        let Ok(st) = nix::sys::stat::fstatat(Some(fd), name, AtFlags::AT_SYMLINK_NOFOLLOW) else {
            continue;
        };
        path.truncate(base);
        path.extend_from_slice(bytes);
        let child = Path::new(std::ffi::OsStr::from_bytes(&path));
        let snap = snapshot_of(&st);
        if snap.is_dir() && filter.descend(child) {
            subdirs.push(child.to_path_buf());
        }
        if filter.syncs(child) {
            listing.push(&path, snap);
        }
    }
    Ok((listing, subdirs))
}

/// A [`Snapshot`] from a raw `stat`.
fn snapshot_of(st: &nix::sys::stat::FileStat) -> Snapshot {
    Snapshot {
        dev: st.st_dev,
        ino: st.st_ino,
        mode: st.st_mode,
        uid: st.st_uid,
        gid: st.st_gid,
        size: st.st_size as u64,
        rdev: st.st_rdev,
        mtime_sec: st.st_mtime,
        mtime_nsec: st.st_mtime_nsec,
        ctime_sec: st.st_ctime,
        ctime_nsec: st.st_ctime_nsec,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Syncs everything but paths containing `skip`.
    struct Skip;

    impl TreeFilter for Skip {
        fn descend(&self, dir: &Path) -> bool {
            !dir.to_string_lossy().contains("skip")
        }
        fn syncs(&self, path: &Path) -> bool {
            !path.to_string_lossy().contains("skip")
        }
    }

    /// Every synced path at or below `scopes`, sorted, with its lstat.
    fn walked(root: &Path, scopes: &[PathBuf]) -> Vec<(PathBuf, Snapshot)> {
        let all = Mutex::new(Vec::<(PathBuf, Snapshot)>::new());
        let w = par_synced_under(
            &Skip,
            &[root.to_path_buf()],
            scopes,
            &|batch| {
                all.lock()
                    .unwrap()
                    .extend(batch.iter().map(|(p, s)| (p.to_path_buf(), *s)))
            },
            &|| true,
        );
        let mut all = all.into_inner().unwrap();
        assert_eq!(w.paths as usize, all.len());
        assert!(w.unreadable.is_empty() && !w.stopped);
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    #[test]
    fn walks_synced_paths_only_and_never_follows_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(root.join("skip/c")).unwrap();
        std::fs::write(root.join("a/b/f"), b"x").unwrap();
        std::fs::write(root.join("skip/c/g"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("a/link")).unwrap();
        let seen: Vec<PathBuf> = walked(&root, &[PathBuf::from("/")])
            .into_iter()
            .map(|(p, _)| p.strip_prefix(&root).unwrap().to_path_buf())
            .collect();
        let want: Vec<PathBuf> = ["", "a", "a/b", "a/b/f", "a/link"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(seen, want);

        let below: Vec<PathBuf> = walked(&root, &[root.join("a/b")])
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(below, vec![root.join("a/b"), root.join("a/b/f")]);
    }

    #[test]
    fn the_parallel_walk_sees_what_walkdir_sees() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        for i in 0..20 {
            let d = root.join(format!("d{i}/e{}", i % 3));
            std::fs::create_dir_all(&d).unwrap();
            for j in 0..5 {
                std::fs::write(d.join(format!("f{j}")), b"x").unwrap();
            }
        }
        std::fs::create_dir_all(root.join("skip/deep")).unwrap();
        std::fs::write(root.join("skip/deep/g"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("link")).unwrap();
        // An independent walk: walkdir, never following links, pruning the
        // skipped subtree.
        let mut want: Vec<(PathBuf, Snapshot)> = walkdir::WalkDir::new(&root)
            .follow_links(false)
            .into_iter()
            .filter_entry(|e| Skip.syncs(e.path()))
            .map(|e| {
                let p = e.unwrap().into_path();
                let s = Snapshot::lstat(&p).unwrap();
                (p, s)
            })
            .collect();
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(walked(&root, &[PathBuf::from("/")]), want);

        // A scope below the root, and one inside an excluded subtree.
        let below = Mutex::new(Vec::<PathBuf>::new());
        par_synced_under(
            &Skip,
            std::slice::from_ref(&root),
            &[root.join("d1"), root.join("skip/deep")],
            &|batch| {
                below
                    .lock()
                    .unwrap()
                    .extend(batch.iter().map(|(p, _)| p.to_path_buf()))
            },
            &|| true,
        );
        let mut below = below.into_inner().unwrap();
        below.sort();
        assert_eq!(below.len(), 1 + 1 + 5, "{below:?}");
        assert!(below.iter().all(|p| p.starts_with(root.join("d1"))));
    }

    #[test]
    fn a_walk_stops_when_asked_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        for i in 0..50 {
            std::fs::create_dir_all(root.join(format!("d{i}"))).unwrap();
            std::fs::write(root.join(format!("d{i}/f")), b"x").unwrap();
        }
        let asked = std::sync::atomic::AtomicUsize::new(0);
        let walked = par_synced_under(
            &Skip,
            std::slice::from_ref(&root),
            &[PathBuf::from("/")],
            &|_| {},
            &|| asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 3,
        );
        assert!(walked.stopped);
        assert!(walked.paths < 101, "{}", walked.paths);
        let all = par_synced_under(
            &Skip,
            std::slice::from_ref(&root),
            &[PathBuf::from("/")],
            &|_| {},
            &|| true,
        );
        assert!(!all.stopped);
        assert_eq!(all.paths, 101);
    }

    #[test]
    fn a_path_below_a_directory_that_became_a_symlink_is_not_there() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(root.join("d/f"), b"x").unwrap();
        assert!(still_there(&root.join("d/f")));
        // `mv d elsewhere; ln -s elsewhere d`: lstat still finds d/f.
        std::fs::rename(root.join("d"), dir.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), root.join("d")).unwrap();
        assert!(Snapshot::lstat(&root.join("d/f")).is_some());
        assert!(!still_there(&root.join("d/f")));
        assert!(still_there(&root.join("d")), "the link itself is there");
        std::fs::remove_file(root.join("d")).unwrap();
        assert!(!still_there(&root.join("d/f")));
    }
}
