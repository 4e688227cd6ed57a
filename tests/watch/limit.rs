//! The inotify watch limit: in a user namespace of its own (`unshare -U
//! -r`) with a small `user.max_inotify_watches`, the watcher logs one clear
//! line (what is watched, how many are needed, which sysctl, which
//! command), lists the unwatched subtrees as degraded with a full-check
//! signal each, keeps reporting in the watched part, and covers everything
//! once the limit is raised and it is reloaded.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use csync2_watch::watch::{FullCheckReason, WatchOptions, Watcher};

use crate::support::test_path;
use crate::support::watch::*;

const CHILD_ENV: &str = "CSYNC2_WATCH_TEST_LIMIT_CHILD";
const TEST_NAME: &str = "watch_limit_is_logged_once_and_uncovered_subtrees_degrade";

/// Run test `name` again as root of a new user namespace; returns its
/// stderr.
fn in_new_user_namespace(name: &str) -> String {
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user", "--"])
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
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the scenario failed in the user namespace:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("1 passed"), "the scenario did not run");
    stderr
}

#[test]
fn watch_limit_is_logged_once_and_uncovered_subtrees_degrade() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return in_user_namespace();
    }
    let stderr = in_new_user_namespace(TEST_NAME);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("inotify watch limit reached"))
        .collect();
    assert_eq!(lines.len(), 1, "expected one limit line:\n{stderr}");
    let line = lines[0];
    for needle in [
        "ERROR",
        "watching 8 directories, about 23 needed",
        "fs.inotify.max_user_watches (now ",
        "user.max_inotify_watches of this user namespace (now 8)",
        "`csync2-watch sysctl --write`",
        "reconciled every 5m",
    ] {
        assert!(line.contains(needle), "{needle:?} missing from {line:?}");
    }
}

/// Runs as root of a fresh user namespace, where the limit can be lowered
/// without touching the machine's.
fn in_user_namespace() {
    let (_t, root) = tempdir();
    for a in 0..4 {
        for b in 0..4 {
            fs::create_dir_all(root.join(format!("a{a}/b{b}"))).unwrap();
        }
    }
    // `/`, `/tmp` and the root itself, then 4 + 16 below: 23 needed; the
    // limit lets 5 of those below the root be watched.
    let ancestors = root.ancestors().count();
    assert_eq!(ancestors, 3, "the test expects its temp dir at /tmp/NAME");
    let limit = 8;
    set_limit(limit);
    csync2_watch::logging::init("info");

    let filter = Filter::include(&root);
    let opts = WatchOptions {
        retry_interval: Duration::from_millis(300),
        ..opts(Duration::from_secs(3600))
    };
    let w = Watcher::start(Arc::new(filter.clone()), opts).unwrap();
    let st = w.stats();
    assert!(st.limit_reached, "{st:?}");
    assert_eq!(st.dirs_watched, limit, "{st:?}");
    assert_eq!(watched_inodes(&w).len(), limit);
    assert_eq!(st.dirs_needed, Some(23), "{st:?}");
    assert!(!st.degraded.is_empty(), "{st:?}");
    let mut seen = Seen::default();
    seen.wait(&w, "a full-check signal for every degraded subtree", |s| {
        st.degraded.iter().all(|d| {
            s.full.iter().any(|fc| {
                fc.scope.as_deref() == Some(d.as_path())
                    && matches!(&fc.reason, FullCheckReason::WatchFailed(why) if why.contains("limit"))
            })
        })
    });
    // Every directory is either watched or inside a degraded subtree.
    let watched = watched_inodes(&w);
    for d in dirs_under(&root) {
        assert!(
            watched.contains(&ino(&d)) || st.degraded.iter().any(|g| d.starts_with(g)),
            "{} is neither watched nor degraded",
            d.display()
        );
    }
    // The watched part still reports.
    let covered = dirs_under(&root)
        .into_iter()
        .find(|d| d != &root && watched.contains(&ino(d)))
        .expect("some watched directory below the root");
    fs::write(covered.join("f"), b"x").unwrap();
    seen.wait(&w, "a write in a watched directory", |s| {
        s.has(&covered.join("f"))
    });

    // A reload does not lift the limit: still degraded, no new log line.
    w.reload(Arc::new(filter));
    assert_eq!(w.stats().degraded, st.degraded);

    // Limit raised: the periodic retry covers everything again, and says
    // so with a directory tree report for each formerly degraded subtree.
    set_limit(1000);
    seen.wait(&w, "the formerly degraded subtrees reported", |s| {
        st.degraded
            .iter()
            .all(|d| s.has_kind(d, csync2_watch::watch::ChangeKind::DirTree))
    });
    eventually("no degraded subtree left", || {
        let st = w.stats();
        st.degraded.is_empty() && !st.limit_reached && st.dirs_watched == 23
    });
    let degraded_dir = st.degraded.last().unwrap();
    assert!(is_watched(&w, degraded_dir));
    fs::write(degraded_dir.join("g"), b"x").unwrap();
    seen.wait(&w, "a write in a formerly degraded directory", |s| {
        s.has(&degraded_dir.join("g"))
    });
}

fn set_limit(n: usize) {
    let p = Path::new("/proc/sys/user/max_inotify_watches");
    fs::write(p, n.to_string()).expect("writable in our own user namespace");
}

#[test]
fn instance_limit_fails_start_with_the_sysctl_to_raise() {
    if std::env::var_os(CHILD_ENV).is_some() {
        fs::write("/proc/sys/user/max_inotify_instances", "0").unwrap();
        let (_t, root) = tempdir();
        let err = Watcher::start(Arc::new(Filter::include(&root)), WatchOptions::default())
            .expect_err("no inotify instance allowed");
        let msg = err.to_string();
        assert!(msg.contains("fs.inotify.max_user_instances"), "{msg}");
        assert!(msg.contains("csync2-watch sysctl --write"), "{msg}");
        return;
    }
    in_new_user_namespace("instance_limit_fails_start_with_the_sysctl_to_raise");
}
