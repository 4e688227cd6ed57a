//! csync2-watch on a real 3-node cluster when things go wrong: a partitioned
//! peer, a dead peer, a crashed daemon; and that a settled cluster stays
//! quiet (no echo between nodes).

use std::fs;
use std::time::{Duration, Instant};

use csync2_watch_testbed::wait_until;

use crate::support::cluster::Cluster;

const SETTLE: Duration = Duration::from_secs(60);

/// How long a change may take to reach a healthy peer while another peer
/// is unreachable. csync2 alone would hang over a minute on the dead peer
/// (no connect timeout); this bound only says "not held up by it".
const NOT_HELD_UP: Duration = Duration::from_secs(20);

fn arrives(c: &Cluster, node: usize, rel: &str, content: &[u8], within: Duration) -> bool {
    let p = c.path(node, rel);
    wait_until(within, || fs::read(&p).ok().as_deref() == Some(content))
}

#[test]
fn a_partitioned_peer_does_not_hold_up_the_others_and_catches_up() {
    let c = Cluster::start("");
    c.node(2).link_down().unwrap();
    for i in 0..5 {
        let rel = format!("during-partition-{i}");
        let content = format!("change {i}");
        fs::write(c.path(0, &rel), &content).unwrap();
        let started = Instant::now();
        assert!(
            arrives(&c, 1, &rel, content.as_bytes(), NOT_HELD_UP),
            "node2 held up by the partitioned node3\n{}",
            c.logs_tail()
        );
        eprintln!("change {i} reached node2 in {:?}", started.elapsed());
    }
    assert!(!c.path(2, "during-partition-0").exists());
    c.node(2).link_up().unwrap();
    c.wait_converged(SETTLE);
}

#[test]
fn a_dead_peer_does_not_hold_up_the_others_and_catches_up_when_back() {
    let mut c = Cluster::start("");
    // The daemon and its managed csync2 -ii die together (PDEATHSIG).
    c.kill_daemon(2);
    let gone = wait_until(Duration::from_secs(10), || {
        !c.node(2)
            .listening(csync2_watch_testbed::CSYNC2_PORT)
            .unwrap_or(true)
    });
    assert!(gone, "node3's csync2 server outlived its daemon");
    for i in 0..5 {
        let rel = format!("while-node3-down-{i}");
        fs::write(c.path(0, &rel), b"x").unwrap();
        assert!(
            arrives(&c, 1, &rel, b"x", NOT_HELD_UP),
            "node2 held up by the dead node3\n{}",
            c.logs_tail()
        );
    }
    // Changes made on the dead node while it was down come back too.
    fs::write(c.path(2, "made-on-node3-while-down"), b"offline edit").unwrap();
    c.start_daemon(2);
    c.wait_ready(2);
    c.wait_converged(SETTLE);
    assert_eq!(
        fs::read(c.path(0, "made-on-node3-while-down")).unwrap(),
        b"offline edit"
    );
}

#[test]
fn a_stopped_peer_server_does_not_hold_up_the_others() {
    // A peer whose csync2 -ii is frozen still accepts TCP connections (the
    // kernel does): the probe must ask it something, or csync2 -u hangs.
    let c = Cluster::start("");
    let server = c
        .status(2)
        .and_then(|s| s.server.pid)
        .expect("node3's server pid");
    let server = nix::unistd::Pid::from_raw(server as i32);
    nix::sys::signal::kill(server, nix::sys::signal::Signal::SIGSTOP).unwrap();
    for i in 0..3 {
        let rel = format!("while-node3-frozen-{i}");
        fs::write(c.path(0, &rel), b"y").unwrap();
        let arrived = arrives(&c, 1, &rel, b"y", Duration::from_secs(60));
        if !arrived {
            let _ = nix::sys::signal::kill(server, nix::sys::signal::Signal::SIGCONT);
        }
        assert!(
            arrived,
            "node2 never got {rel} while node3's server was frozen\n{}",
            c.logs_tail()
        );
    }
    nix::sys::signal::kill(server, nix::sys::signal::Signal::SIGCONT).unwrap();
    c.wait_converged(Duration::from_secs(120));
}

#[test]
fn a_crashed_daemon_loses_nothing() {
    let mut c = Cluster::start("");
    // SIGKILL right after the changes: whatever was journaled or not, the
    // restart (journal replay + start-up full sync) must deliver them.
    for i in 0..50 {
        fs::write(c.path(0, format!("before-crash-{i}")), format!("{i}")).unwrap();
    }
    c.kill_daemon(0);
    for i in 0..20 {
        fs::write(c.path(0, format!("while-dead-{i}")), format!("{i}")).unwrap();
    }
    c.start_daemon(0);
    c.wait_ready(0);
    c.wait_converged(SETTLE);
}

#[test]
fn repeated_crashes_during_a_storm_lose_nothing() {
    // SIGKILL lands in the middle of csync2 runs: a check killed after
    // recording a file but before marking it dirty must not lose it.
    let mut c = Cluster::start("");
    let root = c.path(0, "");
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 400 {
                fs::write(root.join(format!("storm-{i}")), format!("{i}")).unwrap();
                i += 1;
                std::thread::sleep(Duration::from_millis(3));
            }
        });
        for round in 0..4u64 {
            std::thread::sleep(Duration::from_millis(150 + 70 * round));
            c.kill_daemon(0);
            c.start_daemon(0);
            c.wait_ready(0);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    c.wait_converged(Duration::from_secs(120));
}

#[test]
fn sigterm_finishes_cleanly_and_a_restart_resumes() {
    let mut c = Cluster::start("");
    fs::write(c.path(0, "before-stop"), b"1").unwrap();
    let status = c.stop_daemon(0).expect("daemon stops");
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        c.logs_tail()
    );
    fs::write(c.path(0, "while-stopped"), b"2").unwrap();
    c.start_daemon(0);
    c.wait_ready(0);
    c.wait_converged(SETTLE);
}

#[test]
fn a_settled_cluster_stays_quiet() {
    let c = Cluster::start("");
    for i in 0..20 {
        fs::write(c.path(i % 3, format!("f{i}")), format!("{i}")).unwrap();
    }
    fs::create_dir(c.path(1, "d")).unwrap();
    fs::write(c.path(1, "d/inner"), b"x").unwrap();
    c.wait_converged(SETTLE);
    // Let the last verifications finish, then watch for any further runs.
    std::thread::sleep(Duration::from_secs(3));
    let updates = c.counter(|s| s.counters.updates);
    let checks = c.counter(|s| s.counters.checks);
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(
        c.counter(|s| s.counters.updates),
        updates,
        "csync2 -u still running on a settled cluster (echo)\n{}",
        c.logs_tail()
    );
    assert_eq!(
        c.counter(|s| s.counters.checks),
        checks,
        "csync2 -c still running on a settled cluster\n{}",
        c.logs_tail()
    );
}

#[test]
fn parallel_updates_converge_and_a_partitioned_peer_does_not_hold_up_the_other() {
    // `parallel_updates = true`: one `csync2 -u -P peer` per peer at once,
    // contending for csync2's SQLite database.
    let settings = format!(
        "{}\nparallel_updates = true\n",
        crate::support::cluster::TEST_SETTINGS
    );
    let c = Cluster::start_with(3, "", &settings);
    for i in 0..20 {
        fs::write(c.path(i % 2, format!("parallel-{i}")), format!("{i}")).unwrap();
    }
    c.wait_converged(SETTLE);
    // While both peers were up, each had its own csync2 -u.
    let log = c.log(0);
    assert!(
        log.contains("mode=\"update\" peers=node2 paths")
            && log.contains("mode=\"update\" peers=node3 paths"),
        "no per-peer csync2 -u in node1's log:\n{}",
        c.logs_tail()
    );
    c.node(2).link_down().unwrap();
    for i in 0..3 {
        let rel = format!("parallel-partition-{i}");
        fs::write(c.path(0, &rel), b"p").unwrap();
        assert!(
            arrives(&c, 1, &rel, b"p", NOT_HELD_UP),
            "node2 held up by the partitioned node3\n{}",
            c.logs_tail()
        );
    }
    c.node(2).link_up().unwrap();
    c.wait_converged(SETTLE);
}
