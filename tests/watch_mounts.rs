//! Mounts: inotify says nothing when a filesystem is mounted over a watched
//! directory (the old watch keeps watching the covered directory), so the
//! watcher follows `/proc/self/mountinfo`. Runs in a private mount
//! namespace (`unshare -m`), so the machine's mounts are never touched and
//! the mounts vanish with the namespace even if the test fails.

mod watch_support;

use std::fs;
use std::process::Command;
use std::time::Duration;

use csync2_watch::watch::ChangeKind;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use watch_support::*;

const CHILD_ENV: &str = "CSYNC2_WATCH_TEST_MOUNT_CHILD";
const TEST_NAME: &str = "a_filesystem_mounted_over_a_watched_directory_is_walked_and_watched";

#[test]
fn a_filesystem_mounted_over_a_watched_directory_is_walked_and_watched() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return in_mount_namespace();
    }
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()
        .expect("unshare runs");
    assert!(
        out.status.success(),
        "the scenario failed in the mount namespace:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "the scenario did not run"
    );
}

fn in_mount_namespace() {
    let (_t, root) = tempdir();
    let mnt = root.join("mnt");
    fs::create_dir_all(mnt.join("under")).unwrap();
    let w = start(Filter::include(&root), Duration::from_secs(3600));
    let mut seen = Seen::default();

    // Mount a tmpfs holding a tree over the watched directory.
    mount(
        Some("tmpfs"),
        &mnt,
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
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
