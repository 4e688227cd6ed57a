//! Faults the testbed can inject: a node's link down (a partition), a
//! frozen (SIGSTOPped) server, a killed server.

use std::fs;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use crate::support::testbed::*;

fn csync2_port(node: &Node) -> SocketAddr {
    SocketAddr::new(node.addr(), CSYNC2_PORT)
}

#[test]
fn link_down_isolates_a_node_until_link_up() {
    let tb = Testbed::start(TestbedOptions::default()).unwrap();
    let _servers = tb.start_servers().unwrap();
    let (n1, n3) = (tb.node(0), tb.node(2));
    n1.connect(csync2_port(n3), SOON)
        .expect("node1 reaches node3's server while the link is up");

    fs::write(n1.host_path("f"), b"payload").unwrap();
    let f = tb.data_path().join("f");
    let out = n1
        .run_csync2([std::ffi::OsStr::new("-c"), f.as_os_str()])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(n1.dirty().unwrap().len(), 2, "dirty for node2 and node3");

    n3.link_down().unwrap();
    let out = n1.run_csync2(["-u", "-P", "node2"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read(tb.node(1).host_path("f")).unwrap(), b"payload");
    let dirty = n1.dirty().unwrap();
    assert_eq!(dirty.len(), 1, "only node3 left: {dirty:?}");
    assert!(String::from_utf8_lossy(&dirty[0]).contains("node3"));

    let err = n1
        .connect(csync2_port(n3), Duration::from_secs(1))
        .expect_err("node3 must be unreachable while its link is down");
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");

    n3.link_up().unwrap();
    assert!(
        wait_until(SOON, || n1
            .connect(csync2_port(n3), Duration::from_secs(1))
            .is_ok()),
        "node3 reachable again after link_up"
    );
    let out = n1.run_csync2(["-u"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tb.differences().unwrap(), Vec::<String>::new());
    assert_eq!(n1.dirty().unwrap(), Vec::<Vec<u8>>::new());
}

#[test]
fn a_stopped_server_holds_an_update_until_continued() {
    let tb = Testbed::start(TestbedOptions::nodes(2)).unwrap();
    let servers = tb.start_servers().unwrap();
    let (n1, n2) = (tb.node(0), tb.node(1));
    fs::write(n1.host_path("f"), b"x").unwrap();
    let f = tb.data_path().join("f");
    assert!(n1
        .run_csync2([std::ffi::OsStr::new("-c"), f.as_os_str()])
        .unwrap()
        .status
        .success());

    servers[1].stop().unwrap();
    let mut cmd = n1.csync2(["-u"]);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let update = n1.spawn(cmd).unwrap();
    // A frozen server accepts (the kernel does) but never answers.
    assert_eq!(update.wait_exit(Duration::from_secs(2)), None);
    assert!(!n2.host_path("f").exists());

    servers[1].cont().unwrap();
    let status = update
        .wait_exit(SOON)
        .expect("update finishes once the server runs");
    assert!(status.success(), "{status}");
    assert_eq!(fs::read(n2.host_path("f")).unwrap(), b"x");
}

#[test]
fn a_killed_server_refuses_connections_and_fails_the_update() {
    let tb = Testbed::start(TestbedOptions::nodes(2)).unwrap();
    let servers = tb.start_servers().unwrap();
    let (n1, n2) = (tb.node(0), tb.node(1));
    let status = servers[1].kill().unwrap();
    assert!(!status.success());
    assert!(!servers[1].is_running());
    assert!(!n2.listening(CSYNC2_PORT).unwrap());
    let err = n1
        .connect(csync2_port(n2), SOON)
        .expect_err("nothing listens");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");

    fs::write(n1.host_path("f"), b"x").unwrap();
    let out = n1.run_csync2(["-x"]).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ERROR: Connection to remote host `node2' failed."),
        "{stderr}"
    );
    assert_eq!(n1.dirty().unwrap().len(), 1, "still dirty for node2");

    let _again = n2.start_csync2_server().unwrap();
    let out = n1.run_csync2(["-u"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tb.differences().unwrap(), Vec::<String>::new());
}

#[test]
fn link_down_fails_the_isolated_nodes_own_connections_at_once() {
    let tb = Testbed::start(TestbedOptions::nodes(2)).unwrap();
    let _servers = tb.start_servers().unwrap();
    let (n1, n2) = (tb.node(0), tb.node(1));
    n2.link_down().unwrap();
    let err = n2
        .connect(csync2_port(n1), SOON)
        .expect_err("no route while the link is down");
    assert_eq!(err.kind(), std::io::ErrorKind::NetworkUnreachable, "{err}");
}

#[test]
fn switch_port_down_cuts_both_directions_until_up() {
    let tb = Testbed::start(TestbedOptions::nodes(2)).unwrap();
    let _servers = tb.start_servers().unwrap();
    let (n1, n2) = (tb.node(0), tb.node(1));
    n2.switch_port_down().unwrap();
    for (from, to) in [(n1, n2), (n2, n1)] {
        let err = from
            .connect(csync2_port(to), Duration::from_secs(1))
            .expect_err("the cut hangs both ways");
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::TimedOut,
            "{} to {}: {err}",
            from.name(),
            to.name()
        );
    }
    n2.switch_port_up().unwrap();
    assert!(wait_until(SOON, || n2
        .connect(csync2_port(n1), Duration::from_secs(1))
        .is_ok()));
    fs::write(n2.host_path("from-node2"), b"2").unwrap();
    let out = n2.run_csync2(["-x"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tb.differences().unwrap(), Vec::<String>::new());
}
