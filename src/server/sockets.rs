//! The socket table: inbound TCP connections to csync2's port that are
//! still being served, in the caller's network namespace.
//!
//! First choice is netlink sock_diag (what `ss` uses): a dump of only the
//! TCP sockets in a serving state, as binary records. Where that is not
//! available (no `tcp_diag`, a restricted sandbox) `/proc/net/tcp` and
//! `/proc/net/tcp6` are parsed. Both walk the kernel's whole established
//! hash table, so a look costs milliseconds even on an idle machine
//! (measured on a 2-vCPU VM: sock_diag 1.7 ms of CPU with 4 sockets, 4.3
//! ms with 4,000; /proc/net/tcp 11 ms and 20 ms). [`Gate`] avoids most
//! looks: `Tcp: PassiveOpens` in `/proc/net/snmp` (a cheap, fixed-size
//! file) counts every inbound connection ever established in the
//! namespace, so while it has not moved since a look that found nothing,
//! nothing new can be found.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::gate::canonical;

/// TCP states of an inbound connection still being served:
/// ESTABLISHED, SYN_RECV, CLOSE_WAIT.
const SERVING_STATES: [u8; 3] = [0x01, 0x03, 0x08];
/// TCP_LISTEN.
const LISTEN_STATE: u8 = 0x0A;

/// Is something listening on `port` (on one of `bind`, the wildcard
/// address, or anything when `bind` is empty)?
pub(crate) fn listening(port: u16, bind: &[IpAddr]) -> io::Result<bool> {
    let bind: Vec<IpAddr> = bind.iter().copied().map(canonical).collect();
    let n = match table_netlink(port, &bind, true) {
        Ok(n) => n,
        Err(_) => table_proc(port, &bind, true)?,
    };
    Ok(n > 0)
}

/// Inbound connections to `port` (on one of `bind`, or any address when
/// empty) in a serving state: sock_diag, else `/proc/net/tcp[6]`. Always
/// looks (no `Gate` in front).
pub fn inbound_connections(port: u16, bind: &[IpAddr]) -> std::io::Result<usize> {
    let bind: Vec<IpAddr> = bind.iter().copied().map(canonical).collect();
    match table_netlink(port, &bind, false) {
        Ok(n) => Ok(n),
        Err(e) => {
            tracing::trace!("sock_diag unavailable ({e}); reading /proc/net/tcp");
            table_proc(port, &bind, false)
        }
    }
}

/// The same from `/proc/net/tcp` and `/proc/net/tcp6`.
fn table_proc(port: u16, bind: &[IpAddr], listen: bool) -> std::io::Result<usize> {
    let mut n = 0;
    let mut any_ok = false;
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        match std::fs::read(file) {
            Ok(text) => {
                any_ok = true;
                n += count_table(&text, v6, port, bind, listen);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    if any_ok {
        Ok(n)
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "neither /proc/net/tcp nor /proc/net/tcp6 exists",
        ))
    }
}

/// Count matching lines of one `/proc/net/tcp[6]` text.
fn count_table(text: &[u8], v6: bool, port: u16, bind: &[IpAddr], listen: bool) -> usize {
    let mut n = 0;
    for line in text.split(|&c| c == b'\n').skip(1) {
        let mut fields = line.split(|&c| c == b' ').filter(|f| !f.is_empty());
        let (Some(_sl), Some(local), Some(_remote), Some(state)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Some(state) = hex_u32(state) else {
            continue;
        };
        let wanted = if listen {
            state == LISTEN_STATE as u32
        } else {
            state <= 0xff && SERVING_STATES.contains(&(state as u8))
        };
        if !wanted {
            continue;
        }
        let Some(colon) = local.iter().position(|&c| c == b':') else {
            continue;
        };
        if hex_u32(&local[colon + 1..]) != Some(port as u32) {
            continue;
        }
        if !bind.is_empty() {
            let Some(addr) = parse_proc_addr(&local[..colon], v6) else {
                continue;
            };
            let addr = canonical(addr);
            if !(bind.contains(&addr) || (listen && addr.is_unspecified())) {
                continue;
            }
        }
        n += 1;
    }
    n
}

fn hex_u32(s: &[u8]) -> Option<u32> {
    u32::from_str_radix(std::str::from_utf8(s).ok()?, 16).ok()
}

/// The kernel prints each 32-bit word of the address as a host-order
/// number in hex: its native bytes are the address bytes.
fn parse_proc_addr(hex: &[u8], v6: bool) -> Option<IpAddr> {
    if !v6 {
        if hex.len() != 8 {
            return None;
        }
        return Some(IpAddr::V4(Ipv4Addr::from(hex_u32(hex)?.to_ne_bytes())));
    }
    if hex.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for i in 0..4 {
        let w = hex_u32(&hex[i * 8..i * 8 + 8])?;
        bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
    }
    Some(IpAddr::V6(Ipv6Addr::from(bytes)))
}

/// sock_diag state bits: ESTABLISHED, SYN_RECV, CLOSE_WAIT, NEW_SYN_RECV
/// (request sockets, reported as SYN_RECV).
const DIAG_STATES: u32 = (1 << 1) | (1 << 3) | (1 << 8) | (1 << 12);
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
/// `struct inet_diag_req_v2`.
const REQ_LEN: usize = 56;

/// Inbound connections via netlink sock_diag.
fn table_netlink(port: u16, bind: &[IpAddr], listen: bool) -> io::Result<usize> {
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut n = 0;
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        n += dump_family(&fd, family, port, bind, listen)?;
    }
    Ok(n)
}

fn dump_family(
    fd: &OwnedFd,
    family: u8,
    port: u16,
    bind: &[IpAddr],
    listen: bool,
) -> io::Result<usize> {
    let mut req = [0u8; NLMSG_HDRLEN + REQ_LEN];
    let len = req.len() as u32;
    req[0..4].copy_from_slice(&len.to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    req[6..8].copy_from_slice(&flags.to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes()); // seq
    req[16] = family;
    req[17] = libc::IPPROTO_TCP as u8;
    let states = if listen {
        1u32 << LISTEN_STATE
    } else {
        DIAG_STATES
    };
    req[20..24].copy_from_slice(&states.to_ne_bytes());
    // SAFETY: a zeroed sockaddr_nl is valid (the kernel as peer).
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: valid buffer and address for the given lengths.
    let rc = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            req.as_ptr().cast(),
            req.len(),
            0,
            (&sa as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0;
    loop {
        // SAFETY: buf is valid for buf.len() bytes.
        let got = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if got < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if got == 0 {
            return Ok(n);
        }
        let data = &buf[..got as usize];
        let mut off = 0;
        while off + NLMSG_HDRLEN <= data.len() {
            let mlen = u32::from_ne_bytes(data[off..off + 4].try_into().unwrap()) as usize;
            let mtype = u16::from_ne_bytes(data[off + 4..off + 6].try_into().unwrap());
            if mlen < NLMSG_HDRLEN || off + mlen > data.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "bad netlink message",
                ));
            }
            let body = &data[off + NLMSG_HDRLEN..off + mlen];
            match mtype {
                NLMSG_DONE => return Ok(n),
                NLMSG_ERROR => {
                    let code = body
                        .get(0..4)
                        .map(|b| i32::from_ne_bytes(b.try_into().unwrap()))
                        .unwrap_or(-libc::EIO);
                    if code == 0 {
                        return Ok(n);
                    }
                    return Err(io::Error::from_raw_os_error(-code));
                }
                SOCK_DIAG_BY_FAMILY if diag_matches(body, port, bind, listen) => n += 1,
                _ => {}
            }
            off += (mlen + 3) & !3;
        }
    }
}

/// One `struct inet_diag_msg`: family, state, timer, retrans, then the
/// socket id (source port big-endian at 4, source address at 8).
fn diag_matches(m: &[u8], port: u16, bind: &[IpAddr], listen: bool) -> bool {
    if m.len() < 24 || u16::from_be_bytes([m[4], m[5]]) != port {
        return false;
    }
    if bind.is_empty() {
        return true;
    }
    let addr = if m[0] == libc::AF_INET as u8 {
        IpAddr::V4(Ipv4Addr::new(m[8], m[9], m[10], m[11]))
    } else {
        let b: [u8; 16] = m[8..24].try_into().unwrap();
        IpAddr::V6(Ipv6Addr::from(b))
    };
    let addr = canonical(addr);
    bind.contains(&addr) || (listen && addr.is_unspecified())
}

/// `Tcp: PassiveOpens` from `/proc/net/snmp`.
pub(crate) fn passive_opens() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let names = tcp.next()?;
    let values = tcp.next()?;
    let i = names.split_whitespace().position(|w| w == "PassiveOpens")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// Skips the socket table while nothing new can be in it.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    passive_opens: Option<u64>,
    last_count: usize,
    looks: u64,
    skips: u64,
}

impl Gate {
    /// Inbound connections, looking only when needed.
    pub(crate) fn count(&mut self, port: u16, bind: &[IpAddr]) -> io::Result<usize> {
        // Read before looking: a connection made during the look moves
        // the counter, so the next call looks again.
        let opens = passive_opens();
        if opens.is_some() && opens == self.passive_opens && self.last_count == 0 {
            self.skips += 1;
            return Ok(0);
        }
        let n = inbound_connections(port, bind)?;
        self.looks += 1;
        self.passive_opens = opens;
        self.last_count = n;
        Ok(n)
    }

    /// (table looks, skipped looks) so far.
    #[cfg(test)]
    pub(crate) fn stats(&self) -> (u64, u64) {
        (self.looks, self.skips)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    const TCP: &[u8] = b"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0200037F:7891 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 17151 1 0000000012d1136f 100 0 0 10 0
   1: 0200037F:7891 0100037F:B1C1 01 00000000:00000000 00:00000000 00000000     0        0 17152 1 0000000012d1136f 100 0 0 10 0
   2: 0100037F:B1C1 0200037F:7891 01 00000000:00000000 00:00000000 00000000     0        0 17153 1 0000000012d1136f 100 0 0 10 0
   3: 0200037F:7891 0100037F:B1C2 06 00000000:00000000 00:00000000 00000000     0        0 0 1 0000000012d1136f 100 0 0 10 0
   4: 0300037F:7891 0100037F:B1C3 08 00000000:00000000 00:00000000 00000000     0        0 17154 1 0000000012d1136f 100 0 0 10 0
";

    #[test]
    fn counts_inbound_serving_connections_by_port_and_address() {
        let a: IpAddr = "127.3.0.2".parse().unwrap();
        let b: IpAddr = "127.3.0.3".parse().unwrap();
        // Any address: the ESTABLISHED one to .2 and the CLOSE_WAIT to .3;
        // not LISTEN, not TIME_WAIT, not the client side.
        assert_eq!(count_table(TCP, false, 30865, &[], false), 2);
        assert_eq!(count_table(TCP, false, 30865, &[a], false), 1);
        assert_eq!(count_table(TCP, false, 30865, &[b], false), 1);
        assert_eq!(count_table(TCP, false, 30866, &[], false), 0);
    }

    #[test]
    fn ipv6_and_mapped_addresses() {
        let text = b"header
   0: 0000000000000000FFFF00000200037F:7891 0000000000000000FFFF00000100037F:B1C1 01 0 0 0 0 0 0
   1: 00000000000000000000000001000000:7891 00000000000000000000000001000000:B1C1 01 0 0 0 0 0 0
";
        let v4: IpAddr = "127.3.0.2".parse().unwrap();
        let lo6: IpAddr = "::1".parse().unwrap();
        assert_eq!(count_table(text, true, 30865, &[v4], false), 1);
        assert_eq!(count_table(text, true, 30865, &[lo6], false), 1);
        assert_eq!(count_table(text, true, 30865, &[], false), 2);
    }

    #[test]
    fn netlink_and_proc_agree_on_a_live_connection() {
        let ip: IpAddr = "127.201.7.1".parse().unwrap();
        let l = TcpListener::bind((ip, 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        assert_eq!(table_proc(port, &[ip], false).unwrap(), 0);
        let _c = TcpStream::connect((ip, port)).unwrap();
        let (_s, _) = l.accept().unwrap();
        assert_eq!(table_proc(port, &[ip], false).unwrap(), 1);
        assert_eq!(table_proc(port, &[], false).unwrap(), 1);
        let other: IpAddr = "127.201.7.2".parse().unwrap();
        assert_eq!(table_proc(port, &[other], false).unwrap(), 0);
        match table_netlink(port, &[ip], false) {
            Ok(n) => {
                assert_eq!(n, 1);
                assert_eq!(table_netlink(port, &[other], false).unwrap(), 0);
            }
            Err(e) => eprintln!("sock_diag not available here: {e}"),
        }
        assert_eq!(inbound_connections(port, &[ip]).unwrap(), 1);
        // And both see the listener.
        assert_eq!(table_proc(port, &[ip], true).unwrap(), 1);
        assert_eq!(table_proc(port, &[other], true).unwrap(), 0);
        if let Ok(n) = table_netlink(port, &[ip], true) {
            assert_eq!(n, 1);
        }
        assert!(listening(port, &[ip]).unwrap());
        assert!(!listening(port, &[other]).unwrap());
    }

    #[test]
    fn wildcard_listener_counts_for_any_bind_address() {
        let l = TcpListener::bind(("0.0.0.0", 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        let ip: IpAddr = "127.201.9.1".parse().unwrap();
        assert!(listening(port, &[ip]).unwrap());
        assert!(listening(port, &[]).unwrap());
        drop(l);
        assert!(!listening(port, &[]).unwrap());
    }

    #[test]
    fn gate_looks_again_after_a_new_inbound_connection() {
        let ip: IpAddr = "127.201.8.1".parse().unwrap();
        let l = TcpListener::bind((ip, 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        let mut gate = Gate::default();
        assert_eq!(gate.count(port, &[ip]).unwrap(), 0);
        let _c = TcpStream::connect((ip, port)).unwrap();
        let (_s, _) = l.accept().unwrap();
        assert!(passive_opens().is_some());
        assert_eq!(gate.count(port, &[ip]).unwrap(), 1);
        // While something is served every call looks.
        let (looks, _) = gate.stats();
        assert_eq!(gate.count(port, &[ip]).unwrap(), 1);
        assert_eq!(gate.stats().0, looks + 1);
    }
}
