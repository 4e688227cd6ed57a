//! Mounts: inotify says nothing when a filesystem is mounted over a watched
//! directory (the old watch keeps watching the covered directory), so the
//! watcher follows `/proc/self/mountinfo`; and a FUSE filesystem (bindfs)
//! is named as one where inotify cannot see other machines' writes. Each
//! scenario runs in a private mount namespace (`unshare -m`), so the
//! machine's mounts are never touched and the mounts vanish with the
//! namespace even if the test fails.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use csync2_watch::watch::ChangeKind;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::support::test_path;
use crate::support::watch::*;

const CHILD_ENV: &str = "CSYNC2_WATCH_TEST_MOUNT_CHILD";

/// Run test `name` again in a new private mount namespace; returns its
/// stderr.
fn in_new_mount_namespace(name: &str) -> String {
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([
            &test_path(module_path!(), name),
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .env("CSYNC2_WATCH_LOG", "info")
        .env_remove("JOURNAL_STREAM")
        .output()
        .expect("unshare runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "the scenario failed in the mount namespace:\n{}\n{stderr}",
        String::from_utf8_lossy(&out.stdout),
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "the scenario did not run"
    );
    stderr
}

#[test]
fn a_filesystem_mounted_over_a_watched_directory_is_walked_and_watched() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return mount_over();
    }
    in_new_mount_namespace("a_filesystem_mounted_over_a_watched_directory_is_walked_and_watched");
}

#[test]
fn fuse_filesystems_are_named_as_blind_to_other_machines() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return fuse();
    }
    let stderr = in_new_mount_namespace("fuse_filesystems_are_named_as_blind_to_other_machines");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("inotify cannot see writes made by other machines on fuse at "))
        .collect();
    // One for the mount found at start, one for the mount made later.
    assert_eq!(warnings.len(), 2, "{stderr}");
    assert!(
        warnings
            .iter()
            .all(|l| l.contains("WARN") && l.contains("reconciled every 10s")),
        "{stderr}"
    );
}

/// A mount that is detached on drop (also when the test fails), before
/// the temporary directory holding it is removed.
struct Mounted(PathBuf);

impl Mounted {
    fn tmpfs(at: &Path) -> Mounted {
        mount(
            Some("tmpfs"),
            at,
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        Mounted(at.to_path_buf())
    }

    fn bind(from: &Path, at: &Path) -> Mounted {
        mount(Some(from), at, None::<&str>, MsFlags::MS_BIND, None::<&str>).unwrap();
        Mounted(at.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = umount2(&self.0, MntFlags::MNT_DETACH);
    }
}

fn mount_over() {
    let (_t, root) = tempdir();
    let mnt = root.join("mnt");
    fs::create_dir_all(mnt.join("under")).unwrap();
    let w = start(Filter::include(&root), Duration::from_secs(3600));
    let mut seen = Seen::default();

    // Mount a tmpfs holding a tree over the watched directory.
    let tmpfs = Mounted::tmpfs(&mnt);
    seen.wait(&w, "the mount point reported as a new tree", |s| {
        s.has_kind(&mnt, ChangeKind::DirTree)
    });
    eventually("the mounted root to be watched", || is_watched(&w, &mnt));
    fs::create_dir(mnt.join("new")).unwrap();
    fs::write(mnt.join("new/f"), b"x").unwrap();
    seen.wait(&w, "writes on the mounted filesystem", |s| {
        s.has(&mnt.join("new/f"))
    });

    // Unmounted: the covered directory is back, watched and reported.
    seen.clear();
    umount2(&mnt, MntFlags::empty()).unwrap();
    std::mem::forget(tmpfs);
    seen.wait(&w, "the mount point reported again", |s| {
        s.has_kind(&mnt, ChangeKind::DirTree)
    });
    eventually("the uncovered directories to be watched", || {
        is_watched(&w, &mnt) && is_watched(&w, &mnt.join("under"))
    });
    fs::write(mnt.join("under/g"), b"x").unwrap();
    seen.wait(&w, "writes in the uncovered directory", |s| {
        s.has(&mnt.join("under/g"))
    });
}

/// A bindfs (FUSE) mount, ended by PID and unmounted on drop.
struct Bindfs {
    child: Child,
    at: PathBuf,
}

impl Bindfs {
    fn mount(from: &Path, at: &Path) -> Bindfs {
        let child = Command::new("bindfs")
            .arg("-f")
            .arg(from)
            .arg(at)
            .spawn()
            .expect("bindfs is installed (scripts/setup.sh)");
        let guard = Bindfs {
            child,
            at: at.to_path_buf(),
        };
        eventually("the FUSE mount", || {
            csync2_watch::fstype::FsInfo::of(at).is_ok_and(|i| i.network_name() == Some("fuse"))
        });
        guard
    }
}

impl Drop for Bindfs {
    fn drop(&mut self) {
        let _ = umount2(&self.at, MntFlags::MNT_DETACH);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fuse() {
    let (_t, root) = tempdir();
    let backing = root.join("backing");
    for d in ["inc/early", "inc/late", "backing/sub"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    let early = root.join("inc/early");
    let late = root.join("inc/late");
    let _m1 = Bindfs::mount(&backing, &early);
    csync2_watch::logging::init("info");
    let w = start(
        Filter::include(&root.join("inc")),
        Duration::from_secs(3600),
    );
    assert_eq!(w.stats().network_fs, vec![(early.clone(), "fuse")]);
    assert!(is_watched(&w, &early.join("sub")));
    // Mounted after start: found through the mount table.
    let _m2 = Bindfs::mount(&backing, &late);
    eventually("the later FUSE mount to be noted", || {
        w.stats().network_fs.len() == 2
    });
    assert_eq!(w.stats().network_fs[1], (late.clone(), "fuse"));
    // Local writes through FUSE are still seen.
    let mut seen = Seen::default();
    fs::write(late.join("sub/f"), b"x").unwrap();
    seen.wait(&w, "a local write on the FUSE mount", |s| {
        s.has(&late.join("sub/f"))
    });
}

#[test]
fn bind_mounts_and_bind_loops_are_watched_once_and_degrade_the_alias() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return bind_alias();
    }
    in_new_mount_namespace("bind_mounts_and_bind_loops_are_watched_once_and_degrade_the_alias");
}

fn bind_alias() {
    let (_t, root) = tempdir();
    for d in ["a/sub", "b", "c/loop"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    // b shows the same directory as a; c/loop shows c itself (a cycle).
    let _b = Mounted::bind(&root.join("a"), &root.join("b"));
    let _loop = Mounted::bind(&root.join("c"), &root.join("c/loop"));
    let w = start(Filter::include(&root), Duration::from_secs(3600));
    let st = w.stats();
    // The walk ended (no cycle), and each directory has one watch.
    let a_or_b: Vec<bool> = ["a", "b"]
        .iter()
        .map(|d| st.degraded.contains(&root.join(d)))
        .collect();
    assert_eq!(a_or_b.iter().filter(|&&d| d).count(), 1, "{st:?}");
    assert!(st.degraded.contains(&root.join("c/loop")), "{st:?}");
    assert_eq!(st.degraded.len(), 2, "{st:?}");
    // root, a (or b), a/sub (or b/sub), c, and the ancestors.
    assert_eq!(st.dirs_watched, root.ancestors().count() + 3, "{st:?}");
    // Changes through the watched path are still reported.
    let watched = if a_or_b[0] {
        root.join("b")
    } else {
        root.join("a")
    };
    let mut seen = Seen::default();
    fs::write(watched.join("sub/f"), b"x").unwrap();
    seen.wait(&w, "a write below the watched one of the two paths", |s| {
        s.has(&watched.join("sub/f"))
    });
}
