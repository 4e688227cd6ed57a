//! `csync2-watch sysctl` reads other programs' inotify use from the real
//! /proc: an inotify instance and its watches made here show up, counted
//! by the kernel's own fdinfo. The test runs alone in a process of its
//! own ([`alone`]), so nothing else in that process adds or drops inotify
//! instances meanwhile.

use std::path::Path;

use csync2_watch::sysctl::{inotify_usage, Usage};
use inotify::{Inotify, WatchMask};

use crate::support::alone;

fn own_usage() -> Usage {
    let pid = std::process::id();
    let euid = nix::unistd::geteuid().as_raw();
    let all = inotify_usage(Path::new("/proc"), euid);
    Usage::sum(all.iter().filter(|p| p.pid == pid))
}

#[test]
fn usage_counts_this_process_instances_and_watches() {
    if !alone(
        module_path!(),
        "usage_counts_this_process_instances_and_watches",
    ) {
        return;
    }
    let before = own_usage();
    let tmp = tempfile::tempdir().unwrap();
    let a = Inotify::init().unwrap();
    let b = Inotify::init().unwrap();
    for i in 0..5 {
        let d = tmp.path().join(format!("d{i}"));
        std::fs::create_dir(&d).unwrap();
        a.watches().add(&d, WatchMask::CREATE).unwrap();
    }
    b.watches().add(tmp.path(), WatchMask::CREATE).unwrap();
    let during = own_usage();
    assert_eq!(during.instances, before.instances + 2);
    assert_eq!(during.watches, before.watches + 6);

    // The entry for this process carries its command line.
    let pid = std::process::id();
    let me = inotify_usage(Path::new("/proc"), nix::unistd::geteuid().as_raw())
        .into_iter()
        .find(|p| p.pid == pid)
        .expect("this process is listed");
    assert_eq!(
        me.cmdline.first().map(|s| s.as_os_str()),
        std::env::args_os().next().as_deref()
    );

    // Another uid sees none of it.
    let other = inotify_usage(
        Path::new("/proc"),
        nix::unistd::geteuid().as_raw().wrapping_add(12345),
    );
    assert!(other.iter().all(|p| p.pid != pid));

    drop(a);
    drop(b);
    assert_eq!(own_usage(), before);
}
