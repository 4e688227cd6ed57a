//! Facts about the real csync2 that the daemon's design relies on, checked
//! on the testbed: what `csync2 -ii` shows of a connection, what a peer
//! whose database does not know its files does, what `csync2 -u` does when
//! one peer is unreachable.

use std::ffi::OsStr;
use std::fs;
use std::net::SocketAddr;
use std::process::Command;

use crate::support::testbed::*;

/// The child PIDs in `<pid> New connection from <addr>:` lines.
fn connection_pids(log: &str, from: &str) -> Vec<u32> {
    let needle = format!("> New connection from {from}:");
    log.lines()
        .filter(|l| l.contains(&needle))
        .filter_map(|l| l.strip_prefix('<')?.split('>').next()?.parse().ok())
        .collect()
}

#[test]
fn a_verbose_server_shows_each_connection_and_serves_it_in_a_visible_child() {
    let tb = Testbed::start(TestbedOptions::nodes(2)).unwrap();
    let (n1, n2) = (tb.node(0), tb.node(1));
    let server = n2.start_csync2_server_with(["-v"]).unwrap();
    let from = n1.addr().to_string();

    // A connection that says nothing: served by a child of the server for
    // as long as it is open.
    let conn = n1
        .connect(SocketAddr::new(n2.addr(), CSYNC2_PORT), SOON)
        .unwrap();
    assert!(
        wait_until(SOON, || connection_pids(&server.log_text(), &from).len()
            == 1),
        "log: {}",
        server.log_text()
    );
    let child = connection_pids(&server.log_text(), &from)[0];
    assert_eq!(children_of(server.pid()), [child]);
    drop(conn);
    assert!(
        wait_until(SOON, || children_of(server.pid()).is_empty()),
        "the child ends with the connection"
    );

    // A real update: its connection is logged from start to end.
    fs::write(n1.host_path("f"), b"x").unwrap();
    let out = n1.run_csync2(["-x"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pids = connection_pids(&server.log_text(), &from);
    assert_eq!(pids.len(), 2, "log: {}", server.log_text());
    let p = pids[1];
    for line in [
        format!("<{p}> Updated {}/f from node1.", tb.data_path().display()),
        format!("<{p}> Connection closed."),
        format!("<{p}> Finished with 0 errors."),
    ] {
        assert!(
            wait_until(SOON, || server.log_text().lines().any(|l| l == line)),
            "missing {line:?} in: {}",
            server.log_text()
        );
    }
}

#[test]
fn a_quiet_server_logs_nothing_per_connection() {
    let tb = Testbed::start(TestbedOptions::nodes(2)).unwrap();
    let servers = tb.start_servers().unwrap();
    let n1 = tb.node(0);
    fs::write(n1.host_path("f"), b"x").unwrap();
    let out = n1.run_csync2(["-x"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(tb.node(1).host_path("f").exists());
    assert_eq!(
        servers[1].log_text(),
        "Csync2 daemon running. Waiting for connections.\n"
    );
}

#[test]
fn a_peer_whose_database_does_not_know_its_files_reports_a_conflict() {
    let tb = Testbed::start(TestbedOptions::nodes(2)).unwrap();
    // The same file on both nodes, written after the databases were seeded.
    tb.write_all("f", b"version 1\n").unwrap();
    let _servers = tb.start_servers().unwrap();
    let (n1, n2) = (tb.node(0), tb.node(1));
    fs::write(n1.host_path("f"), b"version 2\n").unwrap();

    let out = n1.run_csync2(["-x"]).unwrap();

    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Finished with 1 errors."),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read(n2.host_path("f")).unwrap(), b"version 1\n");
    // Both sides now hold it dirty for each other.
    assert_eq!(n1.dirty().unwrap().len(), 1);
    assert_eq!(n2.dirty().unwrap().len(), 1);

    // Seeding (what Testbed::start does) makes the same edit go through.
    tb.write_all("f", b"version 1\n").unwrap();
    for n in [n1, n2] {
        let f = tb.data_path().join("f");
        // Forget the conflict: drop the dirty entries, re-record the file.
        let db = n.db_dir().join(format!("{}.db3", n.name()));
        let status = Command::new("sqlite3")
            .arg(&db)
            .arg("DELETE FROM dirty;")
            .status()
            .unwrap();
        assert!(status.success());
        let out = n.run_csync2([OsStr::new("-cI"), f.as_os_str()]).unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    fs::write(n1.host_path("f"), b"version 2, now known\n").unwrap();
    let out = n1.run_csync2(["-x"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::read(n2.host_path("f")).unwrap(),
        b"version 2, now known\n"
    );
}

#[test]
fn csync2_u_still_updates_the_other_peers_after_one_fails_to_connect() {
    let tb = Testbed::start(TestbedOptions::default()).unwrap();
    let _servers = tb.start_servers().unwrap();
    let (n1, n3) = (tb.node(0), tb.node(2));
    fs::write(n1.host_path("f"), b"x").unwrap();
    let f = tb.data_path().join("f");
    let out = n1.run_csync2([OsStr::new("-c"), f.as_os_str()]).unwrap();
    assert!(out.status.success());
    n3.link_down().unwrap();
    // With no ARP entry for node3, the connect fails after ARP gives up
    // (about 3 s) instead of hanging through TCP's SYN retries.
    let flush = Command::new("ip")
        .args(["-n", n1.netns(), "neigh", "flush", "all"])
        .status()
        .unwrap();
    assert!(flush.success());

    let out = n1.run_csync2(["-u"]).unwrap();

    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "ERROR: Connection to remote host `node3' failed.\nFinished with 1 errors.\n"
    );
    assert_eq!(fs::read(tb.node(1).host_path("f")).unwrap(), b"x");
    let dirty = n1.dirty().unwrap();
    assert_eq!(dirty.len(), 1, "{dirty:?}");
    assert!(
        dirty[0].starts_with(b"chary\tnode1\tnode3\t"),
        "{:?}",
        escape_bytes(&dirty[0])
    );
}
