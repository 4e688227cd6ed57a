//! `csync2-watch reload`: finds the daemon as `status` does (or takes
//! `--pid`), signals only a live `csync2-watch run`, and says clearly when
//! there is none. The units' `ExecReload=` depends on it.

use std::process::Command;
use std::time::Duration;

use csync2_watch_testbed::wait_until;

use crate::support::cluster::{Cluster, BIN, TEST_SETTINGS};

fn reload(args: &[&str]) -> std::process::Output {
    Command::new(BIN).arg("reload").args(args).output().unwrap()
}

#[test]
fn no_daemon_is_an_error_that_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = reload(&["-N", "nonode", "--state-dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no running daemon to reload"), "{err}");
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
}

#[test]
fn a_pid_that_is_not_csync2_watch_run_is_never_signalled() {
    // This test process: alive, but not a csync2-watch daemon.
    let me = std::process::id().to_string();
    let out = reload(&["--pid", &me]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a csync2-watch daemon"), "{err}");

    // A status file naming a live process that is not the daemon.
    let dir = tempfile::tempdir().unwrap();
    let status = csync2_watch::status::Status {
        pid: std::process::id(),
        ..Default::default()
    };
    status.write(dir.path()).unwrap();
    let out = reload(&["-N", "x", "--state-dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a csync2-watch daemon"));

    let out = reload(&["--pid", "999999999"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

#[test]
fn reload_signals_the_running_daemon_by_state_dir_and_by_pid() {
    let c = Cluster::start_with(2, "", TEST_SETTINGS);
    let node = c.tb.node(0);
    let state_dir = node.state_dir();
    let out = reload(&[
        "-N",
        node.name(),
        "--state-dir",
        state_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}\n{}", c.logs_tail());
    let pid = c.status(0).unwrap().pid;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("pid {pid}")),
        "{out:?}"
    );
    assert!(
        wait_until(Duration::from_secs(30), || c
            .log(0)
            .matches("SIGHUP")
            .count()
            >= 1),
        "{}",
        c.logs_tail()
    );
    let out = reload(&["--pid", &pid.to_string()]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        wait_until(Duration::from_secs(30), || c
            .log(0)
            .matches("SIGHUP")
            .count()
            >= 2),
        "{}",
        c.logs_tail()
    );
    assert!(c.status(0).unwrap().pid == pid, "the daemon kept running");
}
