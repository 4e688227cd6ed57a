//! Lost events are never silent: a real kernel queue overflow (the reader
//! stalled while more than `fs.inotify.max_queued_events` events queue up)
//! gives a full-check signal and the watches catch up with directories
//! created meanwhile; too many undrained changes collapse into one full
//! check.

use std::fs;
use std::sync::Arc;
use std::time::Duration;

use csync2_watch::watch::{FullCheck, FullCheckReason, WatchOptions, Watcher};

use crate::support::watch::*;

const NO_SETTLE: Duration = Duration::from_secs(3600);

#[test]
fn queue_overflow_gives_a_full_check_and_the_watches_catch_up() {
    let (_t, root) = tempdir();
    fs::create_dir(root.join("files")).unwrap();
    let w = start(Filter::include(&root), NO_SETTLE);
    let max: usize = fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    w.pause_reading(true);
    // Each empty file written gives IN_CREATE and IN_CLOSE_WRITE.
    for i in 0..max / 2 + 1000 {
        fs::write(root.join(format!("files/{i}")), b"").unwrap();
    }
    // Created while the queue is full: its IN_CREATE is lost.
    fs::create_dir_all(root.join("late/sub")).unwrap();
    fs::write(root.join("late/sub/f"), b"x").unwrap();
    w.pause_reading(false);

    let mut seen = Seen::default();
    let overflow = FullCheck {
        scope: None,
        reason: FullCheckReason::Overflow,
    };
    seen.wait(&w, "the overflow full check", |s| {
        s.full.contains(&overflow)
    });
    assert!(w.stats().overflows >= 1, "{:?}", w.stats());
    // The re-walk after the overflow watches what was created meanwhile.
    eventually(
        "the directory created during the overflow to be watched",
        || is_watched(&w, &root.join("late/sub")),
    );
    fs::write(root.join("late/sub/after"), b"x").unwrap();
    seen.wait(
        &w,
        "a write in the directory created during the overflow",
        |s| s.has(&root.join("late/sub/after")),
    );
}

#[test]
fn too_many_undrained_changes_become_one_full_check() {
    let (_t, root) = tempdir();
    let opts = WatchOptions {
        max_changes: 100,
        ..opts(NO_SETTLE)
    };
    let w = Watcher::start(Arc::new(Filter::include(&root)), opts).unwrap();
    for i in 0..300 {
        fs::write(root.join(format!("f{i}")), b"x").unwrap();
    }
    let mut seen = Seen::default();
    let too_many = FullCheck {
        scope: None,
        reason: FullCheckReason::TooManyChanges,
    };
    seen.wait(&w, "the too-many-changes full check", |s| {
        s.full.contains(&too_many)
    });
    // After the drain, changes are collected again.
    seen.clear();
    fs::write(root.join("later"), b"x").unwrap();
    seen.wait(&w, "a change after the drain", |s| {
        s.has(&root.join("later"))
    });
}
