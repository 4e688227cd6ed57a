//! A testbed leaves nothing behind: not when dropped, not when its owner
//! died (sweep_stale), and a process handle ends its whole process group.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::testbed::*;
use crate::support::{test_path, this_test_binary};

/// Env var that makes `helper_hold_a_testbed_until_killed` do its job.
const HELPER_ENV: &str = "CSYNC2_WATCH_TESTBED_HELPER";

#[test]
fn dropping_a_testbed_leaves_no_namespace_mount_process_or_directory() {
    let tb = Testbed::start(TestbedOptions::default()).unwrap();
    let servers = tb.start_servers().unwrap();
    // A tracked process whose handle is leaked: the testbed must end it.
    let leaked = tb.node(0).spawn({
        let mut c = tb.node(0).command("sleep");
        c.arg("600");
        c
    });
    let leaked = leaked.unwrap();
    let leaked_pid = leaked.pid();
    std::mem::forget(leaked);
    // An untracked process (plain Command::spawn inside node2): found
    // through its namespaces.
    let mut untracked = tb.node(1).command("sleep").arg("600").spawn().unwrap();
    // A per-connection child of node3's server, kept busy by a connection
    // that says nothing.
    let _conn = tb
        .node(0)
        .connect(
            std::net::SocketAddr::new(tb.node(2).addr(), CSYNC2_PORT),
            SOON,
        )
        .unwrap();
    assert!(
        wait_until(SOON, || !children_of(servers[2].pid()).is_empty()),
        "csync2 -ii forks a child per connection"
    );
    let mut pids: Vec<u32> = servers.iter().map(|s| s.pid()).collect();
    pids.extend([leaked_pid, untracked.id()]);
    pids.extend(children_of(servers[2].pid()));
    let fp = Footprint::capture(&tb, &pids);

    drop(tb);

    fp.assert_gone();
    // The untracked child was killed, not left to finish.
    let status = untracked.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    // The server handles outlived the testbed: their processes are reaped.
    for s in &servers {
        assert!(!s.is_running());
    }
}

#[test]
fn explicit_teardown_reports_success() {
    let tb = Testbed::start(TestbedOptions::nodes(1)).unwrap();
    let server = tb.node(0).start_csync2_server().unwrap();
    let fp = Footprint::capture(&tb, &[server.pid()]);
    tb.teardown().unwrap();
    fp.assert_gone();
}

#[test]
fn sweep_removes_a_testbed_whose_owner_pid_is_dead() {
    let tb = Testbed::start(TestbedOptions::nodes(2)).unwrap();
    let servers = tb.start_servers().unwrap();
    let pids: Vec<u32> = servers.iter().map(|s| s.pid()).collect();
    let fp = Footprint::capture(&tb, &pids);
    // The owner file now names a process that has exited.
    let mut dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    std::fs::write(tb.run_dir().join("owner"), format!("{dead_pid} 1\n")).unwrap();

    let removed = sweep_stale().unwrap();

    // Another test process may have swept it first; either way it is gone.
    assert!(
        removed.iter().any(|id| id == tb.id()) || !tb.run_dir().exists(),
        "{removed:?}"
    );
    fp.assert_gone();
    // Dropping the swept testbed afterwards is harmless.
    tb.teardown().unwrap();
}

#[test]
fn sweep_leaves_live_testbeds_alone() {
    let tb = Testbed::start(TestbedOptions::nodes(1)).unwrap();
    let server = tb.node(0).start_csync2_server().unwrap();
    let removed = sweep_stale().unwrap();
    assert!(!removed.iter().any(|id| id == tb.id()));
    let fp = Footprint::capture(&tb, &[server.pid()]);
    fp.assert_present();
    assert!(server.is_running());
}

#[test]
fn sweep_cleans_up_after_a_sigkilled_test_process() {
    let mut helper = Command::new(this_test_binary())
        .args([
            "--ignored",
            "--exact",
            &test_path(module_path!(), "helper_hold_a_testbed_until_killed"),
            "--nocapture",
        ])
        .env(HELPER_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut out = BufReader::new(helper.stdout.take().unwrap());
    let footprint = loop {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            let _ = helper.kill();
            panic!("helper exited without reporting its testbed");
        }
        if let Some(rest) = line.strip_prefix("TESTBED ") {
            break rest.trim().to_string();
        }
    };
    // "<id> <run dir> <data root> <netns,...> <pid,...>"
    let f: Vec<&str> = footprint.split(' ').collect();
    let fp = Footprint {
        id: f[0].to_string(),
        run_dir: f[1].into(),
        data_root: f[2].into(),
        netns: f[3].split(',').map(str::to_string).collect(),
        processes: f[4]
            .split(',')
            .map(|p| {
                let p: u32 = p.parse().unwrap();
                (p, start_time(p).expect("helper's server runs"))
            })
            .collect(),
    };
    fp.assert_present();

    helper.kill().unwrap(); // SIGKILL: no destructor runs.
    helper.wait().unwrap();
    // The servers it started survive their owner...
    assert!(
        fp.processes.iter().all(|&(p, t)| start_time(p) == Some(t))
        // ...unless a concurrent test process swept already.
        || !fp.run_dir.exists()
    );

    sweep_stale().unwrap();
    fp.assert_gone();
}

/// Run by `sweep_cleans_up_after_a_sigkilled_test_process` in a child
/// process: build a testbed with running servers, report it, wait to be
/// killed.
#[test]
#[ignore = "helper: runs in a child process of sweep_cleans_up_after_a_sigkilled_test_process"]
fn helper_hold_a_testbed_until_killed() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    let tb = Testbed::start(TestbedOptions::nodes(2)).unwrap();
    let servers = tb.start_servers().unwrap();
    println!(
        "TESTBED {} {} {} {} {}",
        tb.id(),
        tb.run_dir().display(),
        tb.data_root().display(),
        tb.netns_names().join(","),
        servers
            .iter()
            .map(|s| s.pid().to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    // Killed long before this; if the parent died, clean up eventually.
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn dropping_a_handle_ends_its_whole_process_group() {
    let tb = Testbed::start(TestbedOptions::nodes(1)).unwrap();
    let node = tb.node(0);
    let mut cmd = node.command("sh");
    // A background grandchild in the same process group.
    cmd.args(["-c", "sleep 600 & exec sleep 601"]);
    let h = node.spawn(cmd).unwrap();
    assert!(wait_until(SOON, || !children_of(h.pid()).is_empty()));
    let grandchild = children_of(h.pid())[0];
    let t = start_time(grandchild).unwrap();
    let leader_t = start_time(h.pid()).unwrap();
    let leader = h.pid();

    drop(h);

    assert_ne!(start_time(leader), Some(leader_t));
    assert!(
        wait_until(SOON, || start_time(grandchild) != Some(t)),
        "grandchild {grandchild} survived"
    );
}

#[test]
fn stop_and_cont_freeze_and_thaw_a_process() {
    let tb = Testbed::start(TestbedOptions::nodes(1)).unwrap();
    let node = tb.node(0);
    let mut cmd = node.command("sleep");
    cmd.arg("600");
    let h = node.spawn(cmd).unwrap();
    let state = |pid: u32| -> char {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        stat[stat.rfind(')').unwrap() + 2..].chars().next().unwrap()
    };
    h.stop().unwrap();
    assert!(wait_until(SOON, || state(h.pid()) == 'T'));
    assert!(h.is_running());
    h.cont().unwrap();
    assert!(wait_until(SOON, || state(h.pid()) == 'S'));
    // A stopped process still ends on terminate (SIGTERM + SIGCONT).
    h.stop().unwrap();
    let status = h.terminate(SOON).unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(15)
    );
}
