//! Issue 11: the reconcile (a walk of every tree compared with the stat
//! cache) finds what inotify never reported: changes made while the
//! daemon was stopped, changes csync2's own check text cannot see, and
//! writes on a FUSE mount's backing directory.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use csync2_watch::journal::{EventKind, Journal};
use csync2_watch_testbed::wait_until;

use crate::support::cluster::{Cluster, BIN, TEST_SETTINGS};

const SETTLE: Duration = Duration::from_secs(60);

/// Wait until the start-up reconcile of node `i`'s (re)started daemon is
/// done, and return what status.json says of it.
fn start_up_reconcile(c: &Cluster, i: usize) -> csync2_watch::status::ReconcileInfo {
    last_reconcile(c, i, "start-up")
}

/// The last reconcile of node `i`'s running daemon whose reason says
/// `why`, once there is one.
fn last_reconcile(c: &Cluster, i: usize, why: &str) -> csync2_watch::status::ReconcileInfo {
    let pid = c.daemon_pid(i).expect("daemon runs");
    let mut last = None;
    let done = wait_until(SETTLE, || {
        last = c
            .status(i)
            .filter(|s| s.pid == pid)
            .and_then(|s| s.last_reconcile)
            .filter(|r| r.reason.contains(why));
        last.is_some()
    });
    assert!(done, "no {why} reconcile\n{}", c.logs_tail());
    last.unwrap()
}

fn content(c: &Cluster, i: usize, rel: &str) -> Option<Vec<u8>> {
    fs::read(c.path(i, rel)).ok()
}

/// Every peer holds `want` at `rel`.
fn peers_hold(c: &Cluster, rel: &str, want: &[u8]) -> bool {
    (1..c.tb.nodes().len()).all(|i| content(c, i, rel).as_deref() == Some(want))
}

fn stop(c: &mut Cluster, i: usize) {
    assert!(c.stop_daemon(i).is_some_and(|s| s.success()));
}

#[test]
fn a_change_made_while_the_daemon_was_stopped_is_found_by_the_reconcile() {
    let mut c = Cluster::start("");
    fs::write(c.path(0, "kept"), b"old").unwrap();
    fs::create_dir_all(c.path(0, "d/e")).unwrap();
    fs::write(c.path(0, "d/e/deep"), b"old").unwrap();
    c.wait_converged(SETTLE);
    stop(&mut c, 0);
    fs::write(c.path(0, "kept"), b"new, longer").unwrap();
    fs::write(c.path(0, "d/e/deep"), b"NEW").unwrap();
    fs::write(c.path(0, "d/e/born"), b"born while stopped").unwrap();
    c.start_daemon(0);
    let r = start_up_reconcile(&c, 0);
    c.wait_converged(SETTLE);
    assert_eq!(content(&c, 1, "kept").unwrap(), b"new, longer");
    assert_eq!(content(&c, 2, "d/e/born").unwrap(), b"born while stopped");
    // It walked everything and sent csync2 only what differed: the three
    // files and the directory that gained one.
    assert!(r.walked >= 5, "{r:?}");
    assert!((3..=4).contains(&r.differing), "{r:?}");
}

/// A same-size rewrite set back to the old mtime (`touch -d`) gives
/// exactly the check text csync2 recorded: `csync2 -cr` never sees it.
/// Only ctime does.
#[test]
fn touch_d_back_to_the_old_mtime_at_the_same_size_is_found_through_ctime() {
    let mut c = Cluster::start("");
    fs::write(c.path(0, "same-size"), b"version 1").unwrap();
    c.wait_converged(SETTLE);
    stop(&mut c, 0);
    let path = c.path(0, "same-size");
    let before = fs::metadata(&path).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    fs::write(&path, b"version 2").unwrap();
    fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(before.modified().unwrap())
        .unwrap();
    let after = fs::metadata(&path).unwrap();
    assert_eq!(
        (after.mtime(), after.len(), after.ino()),
        (before.mtime(), before.len(), before.ino())
    );
    assert_ne!(
        (after.ctime(), after.ctime_nsec()),
        (before.ctime(), before.ctime_nsec())
    );
    // csync2 itself sees nothing.
    let out = c.node(0).run_csync2(["-cr", "/"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        c.node(0).dirty().unwrap().is_empty(),
        "csync2 -cr saw the change: the test proves nothing"
    );
    c.start_daemon(0);
    let r = start_up_reconcile(&c, 0);
    assert!(r.marked >= 1, "{r:?}");
    assert!(
        wait_until(SETTLE, || peers_hold(&c, "same-size", b"version 2")),
        "{}",
        c.logs_tail()
    );
}

/// `cp -p` of another version with the same size and mtime: over the file
/// (same inode, only ctime moves) and by rename (a new inode).
#[test]
fn a_cp_p_replacement_is_found() {
    let mut c = Cluster::start("");
    fs::write(c.path(0, "over"), b"AAAA").unwrap();
    fs::write(c.path(0, "renamed"), b"CCCC").unwrap();
    c.wait_converged(SETTLE);
    stop(&mut c, 0);
    let scratch = tempfile::tempdir().unwrap();
    for (name, bytes) in [("over", b"BBBB"), ("renamed", b"DDDD")] {
        let target = c.path(0, name);
        let other = scratch.path().join(name);
        fs::write(&other, bytes).unwrap();
        let old = fs::metadata(&target).unwrap();
        fs::File::options()
            .write(true)
            .open(&other)
            .unwrap()
            .set_modified(old.modified().unwrap())
            .unwrap();
        let dest = if name == "over" {
            target.clone()
        } else {
            c.path(0, ".renamed.tmp")
        };
        let cp = std::process::Command::new("cp")
            .arg("-p")
            .arg(&other)
            .arg(&dest)
            .status()
            .unwrap();
        assert!(cp.success());
        if dest != target {
            fs::rename(&dest, &target).unwrap();
        }
        let new = fs::metadata(&target).unwrap();
        assert_eq!((new.mtime(), new.len()), (old.mtime(), old.len()));
    }
    c.start_daemon(0);
    start_up_reconcile(&c, 0);
    assert!(
        wait_until(SETTLE, || peers_hold(&c, "over", b"BBBB")
            && peers_hold(&c, "renamed", b"DDDD")),
        "{}",
        c.logs_tail()
    );
    c.wait_converged(SETTLE);
}

#[test]
fn deletes_and_renames_are_found() {
    let mut c = Cluster::start("");
    fs::create_dir_all(c.path(0, "dir/sub")).unwrap();
    for f in ["gone", "moved", "dir/a", "dir/sub/b"] {
        fs::write(c.path(0, f), f.as_bytes()).unwrap();
    }
    c.wait_converged(SETTLE);
    stop(&mut c, 0);
    fs::remove_file(c.path(0, "gone")).unwrap();
    fs::rename(c.path(0, "moved"), c.path(0, "moved-to")).unwrap();
    fs::rename(c.path(0, "dir"), c.path(0, "dir2")).unwrap();
    c.start_daemon(0);
    start_up_reconcile(&c, 0);
    c.wait_converged(SETTLE);
    for i in 1..3 {
        assert!(!c.path(i, "gone").exists());
        assert!(!c.path(i, "moved").exists());
        assert!(!c.path(i, "dir").exists());
        assert_eq!(content(&c, i, "moved-to").unwrap(), b"moved");
        assert_eq!(content(&c, i, "dir2/sub/b").unwrap(), b"dir/sub/b");
    }
}

/// `mv d d-moved; ln -s d-moved d`: `lstat("d/f")` still finds the file
/// through the link, but csync2 counts it removed (no path through a
/// symlink is synced), and so must the reconcile, stopped or running.
#[test]
fn a_directory_replaced_by_a_symlink_is_found() {
    let mut c = Cluster::start("");
    for d in ["stopped", "running"] {
        fs::create_dir_all(c.path(0, format!("{d}/sub"))).unwrap();
        fs::write(c.path(0, format!("{d}/sub/f")), d.as_bytes()).unwrap();
    }
    c.wait_converged(SETTLE);
    stop(&mut c, 0);
    fs::rename(c.path(0, "stopped"), c.path(0, "stopped-moved")).unwrap();
    std::os::unix::fs::symlink("stopped-moved", c.path(0, "stopped")).unwrap();
    c.start_daemon(0);
    start_up_reconcile(&c, 0);
    c.wait_converged(SETTLE);
    fs::rename(c.path(0, "running"), c.path(0, "running-moved")).unwrap();
    std::os::unix::fs::symlink("running-moved", c.path(0, "running")).unwrap();
    c.wait_converged(SETTLE);
    for i in 1..3 {
        for d in ["stopped", "running"] {
            let m = fs::symlink_metadata(c.path(i, d)).unwrap();
            assert!(m.file_type().is_symlink(), "node{} {d}: {m:?}", i + 1);
            assert_eq!(
                fs::read(c.path(i, format!("{d}-moved/sub/f"))).unwrap(),
                d.as_bytes()
            );
        }
    }
}

#[test]
fn excluded_paths_are_never_touched() {
    let mut c = Cluster::start("exclude *.skip;\n\texclude private;");
    stop(&mut c, 0);
    fs::create_dir_all(c.path(0, "private/deeper")).unwrap();
    fs::write(c.path(0, "local.skip"), b"stays").unwrap();
    fs::write(c.path(0, "private/deeper/secret"), b"stays").unwrap();
    fs::write(c.path(0, "shared"), b"goes").unwrap();
    c.start_daemon(0);
    let r = start_up_reconcile(&c, 0);
    assert!(wait_until(SETTLE, || peers_hold(&c, "shared", b"goes")));
    // Only the one included file differed; nothing excluded was walked
    // into or handed to csync2.
    assert_eq!(r.differing, 1, "{r:?}");
    for i in 1..3 {
        assert!(!c.path(i, "local.skip").exists());
        assert!(!c.path(i, "private").exists());
    }
    // A periodic reconcile says the same.
    let before = c.status(0).unwrap().counters.reconciles;
    let out = std::process::Command::new(BIN)
        .args(["sync", "--full", "-N"])
        .arg(c.node(0).name())
        .arg("--state-dir")
        .arg(c.node(0).state_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(wait_until(SETTLE, || c
        .status(0)
        .is_some_and(|s| s.counters.reconciles > before)));
    let r = c.status(0).unwrap().last_reconcile.unwrap();
    assert_eq!(r.differing, 0, "{r:?}");
    assert!(!c.path(1, "local.skip").exists());
}

/// A bindfs mount of a directory outside the tree, inside node 1's
/// mount namespace; unmounted on drop, also when the test fails (which
/// ends the bindfs process too).
struct Bindfs {
    /// `nsenter ... --` into node 1.
    enter: Vec<std::ffi::OsString>,
    at: PathBuf,
}

impl Bindfs {
    fn mount(c: &Cluster, backing: &Path, at: PathBuf) -> Bindfs {
        let out = c
            .node(0)
            .command("bindfs")
            .arg(backing)
            .arg(&at)
            .output()
            .expect("bindfs runs (scripts/setup.sh installs it)");
        assert!(out.status.success(), "bindfs: {out:?}");
        Bindfs {
            enter: c.node(0).nsenter_args(),
            at,
        }
    }
}

impl Drop for Bindfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new(&self.enter[0])
            .args(&self.enter[1..])
            .arg("fusermount")
            .arg("-u")
            .arg(&self.at)
            .output();
    }
}

#[test]
fn a_write_to_a_fuse_mounts_backing_directory_reaches_the_peers_without_an_inotify_event() {
    // The default blind_poll_interval (10s).
    let mut c = Cluster::start_with(3, "", TEST_SETTINGS);
    fs::create_dir_all(c.path(0, "fuse")).unwrap();
    c.wait_converged(SETTLE);
    stop(&mut c, 0);
    let backing = c.node(0).dir().join("fuse-backing");
    fs::create_dir_all(&backing).unwrap();
    let mount = Bindfs::mount(&c, &backing, c.node(0).path("fuse"));
    c.start_daemon(0);
    start_up_reconcile(&c, 0);
    let polled = wait_until(SETTLE, || {
        c.status(0)
            .is_some_and(|s| s.watch.network_fs.iter().any(|(_, fs)| fs == "fuse"))
    });
    assert!(
        polled,
        "status does not name the FUSE tree\n{}",
        c.logs_tail()
    );
    assert!(
        c.log(0)
            .contains("inotify cannot see writes made by other machines on fuse at "),
        "{}",
        c.logs_tail()
    );

    // Written behind the mount's back: no inotify event on the mount.
    let written = Instant::now();
    fs::write(
        backing.join("from-elsewhere"),
        b"written under the backing dir",
    )
    .unwrap();
    let arrived = wait_until(Duration::from_secs(90), || {
        peers_hold(&c, "fuse/from-elsewhere", b"written under the backing dir")
    });
    assert!(
        arrived,
        "the write never reached the peers\n{}",
        c.logs_tail()
    );
    eprintln!(
        "a write under the backing directory reached both peers in {:?}",
        written.elapsed()
    );
    // No event was ever journaled for it: the reconcile found it.
    let j = Journal::open_existing(c.node(0).state_dir()).unwrap();
    let name = c.node(0).path("fuse/from-elsewhere");
    let events = j.events_since(0, 1_000_000).unwrap();
    assert!(
        !events
            .iter()
            .any(|e| matches!(&e.what, EventKind::Change { path, .. } if *path == name)),
        "an event was journaled for it: {events:?}"
    );
    let r = last_reconcile(&c, 0, "polled");
    assert_eq!(r.scope, vec![c.node(0).path("fuse")], "{r:?}");
    drop(mount);
}
