//! Peer probes against real loopback sockets.

#[path = "runner_sandbox.rs"]
mod sandbox;

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use csync2_watch::probe::{probe, ProbeError};

#[test]
fn listening_peer_answers_and_sees_a_closed_connection() {
    let (ip, _) = sandbox::fresh_pair();
    let l = TcpListener::bind((ip, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let took = probe(&ip.to_string(), port, Duration::from_secs(5)).expect("answers");
    assert!(took < Duration::from_secs(5));
    // The probe connected and closed at once: the server reads EOF.
    let (mut conn, _) = l.accept().unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(std::io::Read::read(&mut conn, &mut buf).unwrap(), 0);
}

#[test]
fn names_resolve_through_the_hosts_file() {
    let l = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    probe("localhost", port, Duration::from_secs(5)).expect("localhost answers");
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
