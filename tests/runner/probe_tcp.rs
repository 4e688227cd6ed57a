//! Peer probes against real loopback sockets and a real csync2 server.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use csync2_watch::probe::{probe, ProbeError};

use crate::support::sandbox;

/// A peer that reads one line and answers with one (as csync2 -ii does
/// for a line that is not a command); returns what it read.
fn answering_peer(l: TcpListener) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let (conn, _) = l.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut line = Vec::new();
        BufReader::new(&conn).read_until(b'\n', &mut line).unwrap();
        (&conn)
            .write_all(b"Expecting SSL (optional) and CONFIG as first commands.\n")
            .unwrap();
        line
    })
}

#[test]
fn a_peer_that_answers_one_line_is_up() {
    let (ip, _) = sandbox::fresh_pair();
    let l = TcpListener::bind((ip, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let peer = answering_peer(l);
    let took = probe(&ip.to_string(), port, Duration::from_secs(5)).expect("answers");
    assert!(took < Duration::from_secs(5));
    assert_eq!(peer.join().unwrap(), b"csync2-watch-probe\n");
}

#[test]
fn a_server_that_accepts_but_never_answers_is_down() {
    // Regression: the kernel completes TCP handshakes for a frozen csync2
    // -ii, so a connect-only probe called it up and csync2 -u then hung.
    let (ip, _) = sandbox::fresh_pair();
    let l = TcpListener::bind((ip, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let timeout = Duration::from_millis(500);
    let err = probe(&ip.to_string(), port, timeout).unwrap_err();
    match &err {
        ProbeError::Connect { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::TimedOut, "{source}");
            assert!(source.to_string().contains("did not answer"), "{source}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_real_csync2_server_answers_until_it_is_frozen() {
    let sb = sandbox::Sandbox::new("");
    let mut server = sb
        .csync2()
        .server_command()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(server.id() as i32);
    let host = sb.me.to_string();
    let up = sandbox::wait_for(Duration::from_secs(10), || {
        probe(&host, sb.port, Duration::from_millis(500)).is_ok()
    });
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let frozen = probe(&host, sb.port, Duration::from_millis(500));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let thawed = probe(&host, sb.port, Duration::from_secs(5));
    let _ = server.kill();
    let _ = server.wait();
    assert!(up, "csync2 -ii never answered the probe");
    assert!(frozen.is_err(), "a frozen csync2 -ii looked up");
    thawed.expect("answers again once thawed");
}

#[test]
fn names_resolve_through_the_hosts_file() {
    let l = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let peer = answering_peer(l);
    probe("localhost", port, Duration::from_secs(5)).expect("localhost answers");
    peer.join().unwrap();
}

#[test]
fn closed_port_is_refused_with_host_and_port_named() {
    let (ip, _) = sandbox::fresh_pair();
    let port = sandbox::free_port(&[ip]);
    let err = probe(&ip.to_string(), port, Duration::from_secs(5)).unwrap_err();
    match &err {
        ProbeError::Connect {
            host,
            port: p,
            source,
        } => {
            assert_eq!(host, &ip.to_string());
            assert_eq!(*p, port);
            assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused);
        }
        other => panic!("{other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&ip.to_string()) && msg.contains(&port.to_string()),
        "{msg}"
    );
}

#[test]
fn peer_that_does_not_answer_times_out() {
    // A listener with a backlog of 0 whose queue is already full: the
    // kernel drops further SYNs, as for a peer whose link is down.
    use nix::sys::socket::{
        bind, connect, listen, socket, AddressFamily, Backlog, SockFlag, SockType, SockaddrIn,
    };
    let (ip, _) = sandbox::fresh_pair();
    let port = sandbox::free_port(&[ip]);
    let addr = SockaddrIn::from(std::net::SocketAddrV4::new(ip, port));
    let lfd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .unwrap();
    bind(lfd.as_raw_fd(), &addr).unwrap();
    listen(&lfd, Backlog::new(0).unwrap()).unwrap();
    // Fill the accept queue (never accepted).
    let mut fillers = Vec::new();
    for _ in 0..4 {
        let c = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK,
            None,
        )
        .unwrap();
        let _ = connect(c.as_raw_fd(), &addr);
        fillers.push(c);
    }
    std::thread::sleep(Duration::from_millis(200));
    let timeout = Duration::from_millis(500);
    let start = Instant::now();
    let err = probe(&ip.to_string(), port, timeout).unwrap_err();
    assert!(start.elapsed() >= timeout, "{err}");
    match err {
        ProbeError::Connect { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::TimedOut, "{source}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unresolvable_name_is_a_resolve_error() {
    // A NUL byte cannot be passed to getaddrinfo: fails without any DNS.
    let err = probe("bad\0name", 30865, Duration::from_secs(1)).unwrap_err();
    assert!(matches!(err, ProbeError::Resolve { .. }), "{err:?}");
    assert!(err.to_string().starts_with("cannot resolve bad"));
}
