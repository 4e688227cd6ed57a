//! Operating a running csync2-watch: SIGHUP reloads, `sync`, `status`,
//! `events`, on a real 3-node cluster.

use std::fs;
use std::process::Command;
use std::time::Duration;

use csync2_watch_testbed::wait_until;

use crate::support::cluster::{Cluster, BIN};

const SETTLE: Duration = Duration::from_secs(60);

fn cli(c: &Cluster, node: usize, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .arg("-N")
        .arg(c.node(node).name())
        .arg("--state-dir")
        .arg(c.node(node).state_dir())
        .output()
        .unwrap()
}

#[test]
fn sighup_reloads_csync2_cfg() {
    let c = Cluster::start("");
    let text = c.tb.config_with("exclude *.skip;");
    c.tb.set_config(&text).unwrap();
    for i in 0..3 {
        let pid = c.status(i).unwrap().pid;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap();
    }
    // The reload ends with a full check; wait for it on node1.
    let before = c.status(0).unwrap().counters.full_syncs;
    assert!(wait_until(SETTLE, || c
        .status(0)
        .is_some_and(|s| s.counters.full_syncs > before)));
    fs::write(c.path(0, "scratch.skip"), b"local only").unwrap();
    fs::write(c.path(0, "zz-marker"), b"m").unwrap();
    assert!(wait_until(SETTLE, || c.path(1, "zz-marker").exists()));
    assert!(!c.path(1, "scratch.skip").exists(), "excluded after reload");
    assert!(c.log(0).contains("SIGHUP"), "{}", c.logs_tail());
}

#[test]
fn sync_full_and_sigusr1_run_a_full_sync() {
    let c = Cluster::start("");
    let full_syncs = |c: &Cluster| c.status(0).unwrap().counters.full_syncs;
    let before = full_syncs(&c);
    let out = cli(&c, 0, &["sync", "--full"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("full sync"));
    assert!(wait_until(SETTLE, || full_syncs(&c) > before));

    let before = full_syncs(&c);
    let pid = c.status(0).unwrap().pid;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    assert!(wait_until(SETTLE, || full_syncs(&c) > before));
}

#[test]
fn sync_paths_checks_them_even_without_an_event() {
    let c = Cluster::start("");
    // Written while node1's daemon is stopped: no event will ever come.
    let mut c = c;
    c.stop_daemon(0);
    fs::write(c.path(0, "no-event"), b"quiet").unwrap();
    c.start_daemon(0);
    c.wait_ready(0);
    // (The start-up full sync finds it anyway; `sync PATH` must also work.)
    let out = cli(
        &c,
        0,
        &["sync", c.node(0).path("no-event").to_str().unwrap()],
    );
    assert!(out.status.success(), "{out:?}");
    c.wait_converged(SETTLE);
}

#[test]
fn status_tells_what_the_daemon_does() {
    let mut c = Cluster::start("");
    let out = cli(&c, 0, &["status", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["running"], true);
    assert_eq!(v["node"], "node1");
    assert!(v["watch"]["directories"].as_u64().unwrap() >= 1);
    let peers: Vec<&str> = v["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(peers.len(), 2, "{peers:?}");
    assert!(peers.contains(&"node2") && peers.contains(&"node3"));

    // node3 goes away; a change makes node1 try it and report it down.
    c.kill_daemon(2);
    fs::write(c.path(0, "while-node3-is-gone"), b"x").unwrap();
    assert!(wait_until(SETTLE, || {
        let out = cli(&c, 0, &["status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["peers"].as_array().is_some_and(|ps| {
            ps.iter()
                .any(|p| p["name"] == "node3" && p["reach"] == "down")
        })
    }));
    let human = cli(&c, 0, &["status"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("node3") && text.contains("down"), "{text}");

    // A stopped daemon: status says so and exits non-zero.
    c.stop_daemon(0);
    let out = cli(&c, 0, &["status"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("NOT RUNNING"));
}

#[test]
fn events_feed_lists_changes_with_transaction_ids() {
    let c = Cluster::start("");
    fs::write(c.path(0, "feed-me"), b"x").unwrap();
    let want = c.node(0).path("feed-me");
    assert!(wait_until(SETTLE, || {
        let out = cli(&c, 0, &["events"]);
        String::from_utf8_lossy(&out.stdout).contains(want.to_str().unwrap())
    }));
    let out = cli(&c, 0, &["events", "--json"]);
    let last: serde_json::Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap();
    let txid = last["txid"].as_u64().unwrap();
    let out = cli(&c, 0, &["events", "--since", &txid.to_string()]);
    assert!(out.stdout.is_empty(), "nothing after the last txid");
}

#[test]
fn an_external_csync2_server_works_too() {
    // inetd or csync2.socket runs the server: csync2-watch only watches
    // its connections (socket table) and never starts one.
    let tb = csync2_watch_testbed::Testbed::start(csync2_watch_testbed::TestbedOptions::nodes(3))
        .unwrap();
    let servers = tb.start_servers().unwrap();
    let settings = format!(
        "{}\nserver = \"external\"\n",
        crate::support::cluster::TEST_SETTINGS
    );
    let c = csync2_watch_testbed::WatchedCluster::start(
        tb,
        std::path::Path::new(BIN),
        &settings,
        "csync2_watch=debug",
        SETTLE,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for i in 0..3 {
        let s = c.status(i).unwrap();
        assert!(!s.server.managed, "node{} manages a server", i + 1);
    }
    fs::write(c.node(0).host_path("via-external"), b"e").unwrap();
    fs::write(c.node(1).host_path("other-way"), b"o").unwrap();
    if let Err(e) = c.wait_converged(SETTLE) {
        panic!("{e}\n{}", c.logs_tail(40));
    }
    drop(c);
    drop(servers);
}

#[test]
fn changes_keep_flowing_while_a_deep_check_runs() {
    // Enough files that `csync2 -cr /` takes a while.
    let files: Vec<(std::path::PathBuf, Vec<u8>)> = (0..30_000)
        .map(|i| (format!("bulk/d{}/f{i}", i % 300).into(), vec![b'b'; 16]))
        .collect();
    let tb = csync2_watch_testbed::Testbed::start(csync2_watch_testbed::TestbedOptions {
        files,
        ..csync2_watch_testbed::TestbedOptions::nodes(3)
    })
    .unwrap();
    let c = csync2_watch_testbed::WatchedCluster::start(
        tb,
        std::path::Path::new(BIN),
        crate::support::cluster::TEST_SETTINGS,
        "csync2_watch=debug",
        Duration::from_secs(300),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // The change is made while the deep check's `csync2 -cr /` runs: the
    // test sees that process. (Writing it after `sync` returned, as this
    // test once did, often came after a 0.3 s check had ended: `sync`
    // waits for a status file written at most twice a second.)
    let pid = c.daemon_pid(0).expect("daemon runs");
    // `sync` returns once the status file says the request was taken,
    // which may be after a short `csync2 -cr /` ended: look meanwhile.
    let mut deep = Command::new(BIN)
        .args(["sync", "--full", "--deep", "-N"])
        .arg(c.node(0).name())
        .arg("--state-dir")
        .arg(c.node(0).state_dir())
        .spawn()
        .unwrap();
    let running = wait_until(Duration::from_secs(30), || {
        crate::support::children_of(pid).iter().any(|(_, a)| {
            crate::support::has_arg(a, "-c")
                && crate::support::has_arg(a, "-r")
                && crate::support::has_arg(a, "/")
        })
    });
    assert!(
        running,
        "no deep check ran after sync --full --deep\n{}",
        c.logs_tail(40)
    );
    fs::write(c.node(0).host_path("during-full"), b"f").unwrap();
    assert!(deep.wait().unwrap().success());
    assert!(wait_until(SETTLE, || c
        .node(1)
        .host_path("during-full")
        .exists()));
    // The change went out while the deep check was still running: its
    // batch began between the deep check's start and end in the log.
    let log = c.log(0);
    let started = log
        .rfind("deep check (requested")
        .expect("deep check started");
    let batch = log[started..].find("batch: checking").map(|i| i + started);
    let done = log[started..].find("reconciled").map(|i| i + started);
    match (batch, done) {
        (Some(b), Some(d)) => assert!(
            b < d,
            "the change waited for the full check:\n{}",
            &log[started..]
        ),
        (Some(_), None) => {} // still running: even better
        _ => panic!(
            "no batch after the full check started:\n{}",
            &log[started..]
        ),
    }
}
