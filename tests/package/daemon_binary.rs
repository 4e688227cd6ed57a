//! The daemon's binary carries no test-cluster or demo code: those are the
//! workspace crates csync2-watch-testbed and csync2-watch-demo. Until they
//! were split off, the shipped binary held the namespace, mount and
//! `apt-get` code of the `demo` subcommand.

use std::process::Command;

use crate::support::BIN;

/// Text that only the testbed's and the demo's code contains: its
/// namespace set-up, its sweep of stale testbeds, the demo's installer and
/// its last words.
const FOREIGN: &[&str] = &[
    "unshare(CLONE_NEWNS|CLONE_NEWUTS)",
    "removing a stale csync2 testbed",
    "no-install-recommends",
    "Tearing the cluster down",
];

#[test]
fn the_daemon_binary_has_no_demo_command_and_no_test_cluster_code() {
    let bytes = std::fs::read(BIN).unwrap();
    for text in FOREIGN {
        assert!(
            !bytes.windows(text.len()).any(|w| w == text.as_bytes()),
            "{BIN} contains {text:?}: test-cluster or demo code is linked into the daemon"
        );
    }
    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("check-config"), "{help}");
    assert!(!help.contains("demo"), "{help}");
    let demo = Command::new(BIN).arg("demo").output().unwrap();
    assert_eq!(demo.status.code(), Some(2), "{demo:?}");
}
