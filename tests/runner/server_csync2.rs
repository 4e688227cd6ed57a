//! The local server supervisor against the real `csync2 -ii`.

use std::net::{IpAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use csync2_watch::server::{inbound_connections, LocalServer, ServerError};

use crate::support::sandbox::{self, limits, wait_for, Sandbox};
use crate::support::test_path;

const DEADLINE: Duration = Duration::from_secs(20);

fn alive(pid: u32) -> bool {
    // Not a zombie either: the state field of /proc/PID/stat.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z')
        }
        Err(_) => false,
    }
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Kills a pid on drop (for processes a test starts by hand).
struct KillOnDrop(u32);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.0 as i32, libc::SIGKILL);
        }
    }
}

/// Kills and reaps a child on drop.
struct ChildGuard(std::process::Child);
impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn managed(sb: &Sandbox) -> LocalServer {
    LocalServer::managed(&sb.csync2(), sb.port, vec![IpAddr::V4(sb.me)]).expect("server starts")
}

#[test]
fn managed_server_serves_a_held_connection_then_goes_quiet() {
    let sb = Sandbox::new("");
    let server = managed(&sb);
    let st = server.status();
    assert!(st.managed);
    let pid = st.pid.expect("running");
    assert!(cmdline(pid).contains("-ii"), "{}", cmdline(pid));
    assert!(!server.serving_now());

    let conn = TcpStream::connect((sb.me, sb.port)).expect("server listens");
    assert!(wait_for(DEADLINE, || server.serving_now()));
    assert!(server.status().connections >= 1);
    // wait_quiet does not return while the connection is open, and
    // returns only after `quiet` without activity.
    let handle = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(conn);
        Instant::now()
    });
    let quiet = Duration::from_millis(100);
    let start = Instant::now();
    let waited = server.wait_quiet(quiet);
    let returned = Instant::now();
    let closed = handle.join().unwrap();
    assert!(returned >= closed, "returned while the connection was open");
    assert!(waited <= returned - start);
    let last = server.last_active().expect("was active");
    assert!(
        last >= start && returned >= last + quiet,
        "{last:?} {returned:?}"
    );
    assert!(!server.serving_now());
    server.shutdown();
    assert!(wait_for(DEADLINE, || !alive(pid)));
}

#[test]
fn a_real_push_between_two_nodes_is_seen_without_polling() {
    let sb = Sandbox::new("");
    // The server is the peer node, with its own database; both nodes see
    // the same data directory, so the push has nothing to change on disk.
    let peer_db = sb.dir.path().join("peer-db");
    std::fs::create_dir(&peer_db).unwrap();
    let server = LocalServer::managed(
        &sb.peer_csync2(&peer_db),
        sb.port,
        vec![IpAddr::V4(sb.peer)],
    )
    .expect("peer server starts");
    assert_eq!(server.last_active(), None);
    let cs = sb.csync2();
    let f = sb.data.join("pushed file");
    std::fs::write(&f, b"x").unwrap();
    cs.check(std::slice::from_ref(&f), false, limits(DEADLINE))
        .unwrap();
    let before = Instant::now();
    let out = cs.update(&[], limits(DEADLINE)).expect("update");
    let after = Instant::now();
    assert!(out.exit_ok, "{out:?}");
    assert!(out.connect_failed.is_empty());
    assert!(cs.list_dirty(limits(DEADLINE)).unwrap().is_empty());
    // Once the connection and its child are gone, only the server's own
    // log (not a look at sockets or children) can have moved last_active.
    let pid = server.status().pid.unwrap();
    let peer = [IpAddr::V4(sb.peer)];
    assert!(wait_for(DEADLINE, || children(pid).is_empty()
        && inbound_connections(sb.port, &peer).unwrap() == 0));
    // (The child logs `Connection closed.` after the client is done, so
    // last_active may be later than `after`.)
    let last = server.last_active().expect("the push was seen");
    assert!(
        last >= before && last <= Instant::now(),
        "{last:?} {after:?}"
    );
}

#[test]
fn killed_server_is_restarted() {
    let sb = Sandbox::new("");
    let server = managed(&sb);
    let old = server.status().pid.unwrap();
    unsafe {
        libc::kill(old as i32, libc::SIGKILL);
    }
    assert!(wait_for(DEADLINE, || {
        let st = server.status();
        st.restarts >= 1 && st.pid.is_some() && st.pid != Some(old)
    }));
    let st = server.status();
    assert!(st.last_error.unwrap().contains("signal 9"));
    // The new one serves.
    assert!(wait_for(DEADLINE, || TcpStream::connect((sb.me, sb.port)).is_ok()));
    let new = server.status().pid.unwrap();
    server.shutdown();
    assert!(wait_for(DEADLINE, || !alive(new)));
}

#[test]
fn shutdown_ends_the_server_and_the_children_serving_connections() {
    let sb = Sandbox::new("");
    let server = managed(&sb);
    let pid = server.status().pid.unwrap();
    let _conn = TcpStream::connect((sb.me, sb.port)).unwrap();
    assert!(wait_for(DEADLINE, || !children(pid).is_empty()));
    let kids = children(pid);
    server.shutdown();
    assert!(!alive(pid));
    assert!(wait_for(DEADLINE, || kids.iter().all(|k| !alive(*k))));
    assert!(TcpStream::connect((sb.me, sb.port)).is_err());
}

#[test]
fn two_servers_on_different_addresses_side_by_side() {
    let a = Sandbox::new("");
    let (ip1, ip2) = sandbox::fresh_pair();
    let b = Sandbox::with(ip1, ip2, a.port, "");
    let sa = managed(&a);
    let sbv = managed(&b);
    assert_ne!(sa.status().pid, sbv.status().pid);
    // A connection to one is seen by that one only.
    let conn = TcpStream::connect((b.me, b.port)).unwrap();
    assert!(wait_for(DEADLINE, || sbv.serving_now()));
    assert!(!sa.serving_now());
    drop(conn);
    assert!(wait_for(DEADLINE, || !sbv.serving_now()));
}

#[test]
fn taken_port_is_a_start_error_naming_port_and_fix() {
    let sb = Sandbox::new("");
    let _taken = TcpListener::bind((sb.me, sb.port)).unwrap();
    let err = LocalServer::managed(&sb.csync2(), sb.port, vec![IpAddr::V4(sb.me)]).unwrap_err();
    assert!(matches!(err, ServerError::Start { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("Address already in use"), "{msg}");
    assert!(
        msg.contains(&sb.port.to_string()) && msg.contains("external"),
        "{msg}"
    );
}

#[test]
fn missing_binary_is_a_spawn_error() {
    let sb = Sandbox::new("");
    let mut cs = sb.csync2();
    cs.program = sb.dir.path().join("no-csync2-here");
    let err = LocalServer::managed(&cs, sb.port, vec![]).unwrap_err();
    assert!(matches!(err, ServerError::Spawn(_)), "{err:?}");
}

#[test]
fn external_server_connections_are_seen_by_the_background_poll() {
    let sb = Sandbox::new("");
    // The "external" server: csync2 -ii started by hand.
    let mut ext = sb.csync2().server_command();
    ext.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let child = ChildGuard(ext.spawn().unwrap());
    let ext_pid = child.0.id();
    assert!(wait_for(DEADLINE, || TcpStream::connect((sb.me, sb.port)).is_ok()));

    let server = LocalServer::external(sb.port, vec![IpAddr::V4(sb.me)]);
    assert_eq!(server.status().pid, None);
    assert!(!server.status().managed);
    // Let the probe connections above drain.
    assert!(wait_for(DEADLINE, || !server.serving_now()));

    // Paused: a connection held for a while is not noticed by anyone.
    server.set_polling(false);
    let t0 = Instant::now();
    let conn = TcpStream::connect((sb.me, sb.port)).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    drop(conn);
    let me = [IpAddr::V4(sb.me)];
    assert!(wait_for(DEADLINE, || inbound_connections(sb.port, &me)
        .unwrap()
        == 0));
    let seen = server.last_active();
    assert!(seen.is_none_or(|t| t < t0), "seen while paused");

    // Polling: the same connection is noticed though nobody asks.
    server.set_polling(true);
    assert!(wait_for(DEADLINE, || !server.serving_now()));
    let t1 = Instant::now();
    let conn = TcpStream::connect((sb.me, sb.port)).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    drop(conn);
    assert!(wait_for(DEADLINE, || inbound_connections(sb.port, &me)
        .unwrap()
        == 0));
    let seen = server.last_active().expect("seen by the poll");
    assert!(seen >= t1, "{seen:?} {t1:?}");
    server.shutdown();
    // shutdown of an external server leaves it running.
    assert!(alive(ext_pid));
}

const HELPER_ENV: &str = "CSYNC2_WATCH_SERVER_TEST_HELPER";

/// Not a test on its own: re-run by
/// `server_dies_with_its_owner_when_the_owner_is_sigkilled`, it starts a
/// managed server from the sandbox described in the environment, writes
/// the server's pid to a file and sleeps until killed.
#[test]
fn helper_owner_process() {
    let Some(spec) = std::env::var_os(HELPER_ENV) else {
        return;
    };
    let spec = spec.into_string().unwrap();
    let parts: Vec<&str> = spec.split('\t').collect();
    let (etc, db, me, port, out) = (parts[0], parts[1], parts[2], parts[3], parts[4]);
    let cs = csync2_watch::runner::Csync2 {
        program: sandbox::csync2_program(),
        node: Some(me.to_string()),
        cfg_name: None,
        database: Some(db.into()),
        port: Some(port.parse().unwrap()),
        client_args: vec![],
        system_dir: Some(etc.into()),
    };
    let server = LocalServer::managed(&cs, port.parse().unwrap(), vec![me.parse().unwrap()])
        .expect("helper server starts");
    let pid = server.status().pid.unwrap();
    std::fs::write(out, pid.to_string()).unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[test]
fn server_dies_with_its_owner_when_the_owner_is_sigkilled() {
    let sb = Sandbox::new("");
    let pidfile = sb.dir.path().join("server.pid");
    let spec = format!(
        "{}\t{}\t{}\t{}\t{}",
        sb.etc.display(),
        sb.db.display(),
        sb.me,
        sb.port,
        pidfile.display()
    );
    let mut owner = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &test_path(module_path!(), "helper_owner_process"),
            "--test-threads=1",
            "-q",
        ])
        .env(HELPER_ENV, spec)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _kill = KillOnDrop(owner.id());
    assert!(wait_for(DEADLINE, || Path::new(&pidfile).exists()
        && !std::fs::read_to_string(&pidfile).unwrap().is_empty()));
    let server_pid: u32 = std::fs::read_to_string(&pidfile).unwrap().parse().unwrap();
    let _kill_server = KillOnDrop(server_pid);
    assert!(alive(server_pid));
    owner.kill().unwrap(); // SIGKILL: no destructor runs in the owner
    owner.wait().unwrap();
    assert!(
        wait_for(DEADLINE, || !alive(server_pid)),
        "csync2 -ii outlived its owner"
    );
}
