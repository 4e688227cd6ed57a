//! Kernel plumbing for testbed nodes: creating a node's persistent mount
//! and UTS namespaces, entering a node's namespaces in a child before
//! `exec`, and opening a socket inside a node's network namespace.
//!
//! Code that runs between `fork` and `exec` only makes system calls on
//! memory prepared before the fork: the parent may be multithreaded.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use nix::sched::CloneFlags;
use nix::unistd::{fork, pipe2, ForkResult};

/// Open descriptors of one node's namespaces. Kept by the node and by every
/// `Command` made for it, so the descriptors stay valid until the last
/// `Command` is gone.
pub(crate) struct NodeNs {
    pub(crate) net: OwnedFd,
    pub(crate) mnt: OwnedFd,
    pub(crate) uts: OwnedFd,
}

impl NodeNs {
    pub(crate) fn open(net: &Path, mnt: &Path, uts: &Path) -> io::Result<NodeNs> {
        Ok(NodeNs {
            net: File::open(net)?.into(),
            mnt: File::open(mnt)?.into(),
            uts: File::open(uts)?.into(),
        })
    }
}

pub(crate) fn cstring(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} contains a NUL byte", p.display()),
        )
    })
}

/// What a node's new mount and UTS namespaces get.
pub(crate) struct NsPlan {
    pub(crate) hostname: Vec<u8>,
    /// `(source, target)` bind mounts, in order.
    pub(crate) binds: Vec<(CString, CString)>,
}

/// Bind-mount `dir` onto itself with private propagation, so that
/// namespace files can be bind-mounted below it (a mount namespace file may
/// not be bound where the mount would propagate).
pub(crate) fn make_private_dir(dir: &Path) -> nix::Result<()> {
    mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>)?;
    mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    )
}

/// Create a mount namespace and a UTS namespace as `plan` says (every mount
/// a slave of the root namespace's, so nothing mounted in the node shows
/// outside it), and make them persistent by bind-mounting their namespace
/// files onto `mnt_file` and `uts_file` (existing files on a private mount).
pub(crate) fn create_mnt_uts(plan: &NsPlan, mnt_file: &Path, uts_file: &Path) -> io::Result<()> {
    let (ready_r, ready_w) = pipe2(OFlag::O_CLOEXEC)?;
    let (go_r, go_w) = pipe2(OFlag::O_CLOEXEC)?;
    // SAFETY: the child only makes system calls on memory prepared before
    // the fork, then _exits.
    match unsafe { fork() }? {
        ForkResult::Child => unsafe {
            // Our copies of the parent's ends: without closing them the
            // child would never see the parent close `go`.
            libc::close(go_w.as_raw_fd());
            libc::close(ready_r.as_raw_fd());
            ns_child(plan, ready_w.as_raw_fd(), go_r.as_raw_fd())
        },
        ForkResult::Parent { child } => {
            drop(ready_w);
            drop(go_r);
            let mut report = [0u8; 5];
            let mut ready = File::from(ready_r);
            let got = read_full(&mut ready, &mut report);
            let result = match got {
                Ok(5) if report[0] == 0 => bind_ns_files(child.as_raw(), mnt_file, uts_file),
                Ok(5) => {
                    let errno = i32::from_le_bytes([report[1], report[2], report[3], report[4]]);
                    let step = match report[0] {
                        1 => "unshare(CLONE_NEWNS|CLONE_NEWUTS)".to_string(),
                        2 => "making / a slave mount".to_string(),
                        3 => "sethostname".to_string(),
                        n => match usize::from(n)
                            .checked_sub(10)
                            .and_then(|i| plan.binds.get(i))
                        {
                            Some((src, dst)) => format!(
                                "bind-mounting {} over {}",
                                String::from_utf8_lossy(src.as_bytes()),
                                String::from_utf8_lossy(dst.as_bytes())
                            ),
                            None => format!("step {n}"),
                        },
                    };
                    Err(io::Error::new(
                        io::Error::from_raw_os_error(errno).kind(),
                        format!(
                            "in the new mount namespace, {step}: {}",
                            io::Error::from_raw_os_error(errno)
                        ),
                    ))
                }
                Ok(_) => Err(io::Error::other(
                    "the namespace helper child died before reporting",
                )),
                Err(e) => Err(e),
            };
            // Closing our end lets the child exit.
            drop(go_w);
            let _ = nix::sys::wait::waitpid(child, None);
            result
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn bind_ns_files(pid: i32, mnt_file: &Path, uts_file: &Path) -> io::Result<()> {
    for (kind, file) in [("mnt", mnt_file), ("uts", uts_file)] {
        let src = format!("/proc/{pid}/ns/{kind}");
        mount(
            Some(src.as_str()),
            file,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("bind-mounting {src} onto {}: {e}", file.display()),
            )
        })?;
    }
    Ok(())
}

/// The forked child: build the namespaces, report, wait for the parent to
/// have bound the namespace files, exit.
unsafe fn ns_child(plan: &NsPlan, ready: RawFd, go: RawFd) -> ! {
    let fail = |step: u8| child_fail(ready, step);
    if libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS) != 0 {
        fail(1);
    }
    if libc::mount(
        std::ptr::null(),
        c"/".as_ptr(),
        std::ptr::null(),
        libc::MS_REC | libc::MS_SLAVE,
        std::ptr::null(),
    ) != 0
    {
        fail(2);
    }
    if libc::sethostname(plan.hostname.as_ptr().cast(), plan.hostname.len()) != 0 {
        fail(3);
    }
    for (i, (src, dst)) in plan.binds.iter().enumerate() {
        if libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        ) != 0
        {
            fail(10 + i as u8);
        }
    }
    let ok = [0u8; 5];
    libc::write(ready, ok.as_ptr().cast(), ok.len());
    let mut b = [0u8; 1];
    while libc::read(go, b.as_mut_ptr().cast(), 1) < 0 && *libc::__errno_location() == libc::EINTR {
    }
    libc::_exit(0)
}

/// Report which step failed, with errno, and exit the child.
unsafe fn child_fail(ready: RawFd, step: u8) -> ! {
    let errno = *libc::__errno_location();
    let e = errno.to_le_bytes();
    let msg = [step, e[0], e[1], e[2], e[3]];
    libc::write(ready, msg.as_ptr().cast(), msg.len());
    libc::_exit(1)
}

/// Make `cmd` run inside the node: before `exec`, the child joins the
/// node's network, UTS and mount namespaces, then returns to the working
/// directory it had (resolved again inside the node, so a directory under
/// the data path is the node's own), falling back to `/`.
pub(crate) fn enter_on_exec(cmd: &mut Command, ns: Arc<NodeNs>) {
    let hook = move || -> io::Result<()> {
        let mut cwd = [0u8; libc::PATH_MAX as usize + 1];
        // SAFETY: plain system calls on a stack buffer and open descriptors.
        unsafe {
            let have_cwd = !libc::getcwd(cwd.as_mut_ptr().cast(), cwd.len()).is_null();
            for (fd, kind) in [
                (ns.net.as_raw_fd(), libc::CLONE_NEWNET),
                (ns.uts.as_raw_fd(), libc::CLONE_NEWUTS),
                (ns.mnt.as_raw_fd(), libc::CLONE_NEWNS),
            ] {
                if libc::setns(fd, kind) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if !have_cwd || libc::chdir(cwd.as_ptr().cast()) != 0 {
                libc::chdir(c"/".as_ptr());
            }
        }
        Ok(())
    };
    // SAFETY: the hook only makes async-signal-safe system calls.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// Connect to `to` from inside the node's network namespace (a helper
/// thread joins it; the socket keeps the namespace it was made in).
pub(crate) fn connect_in(
    ns: &Arc<NodeNs>,
    to: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let ns = Arc::clone(ns);
    std::thread::spawn(move || {
        nix::sched::setns(&ns.net, CloneFlags::CLONE_NEWNET)?;
        TcpStream::connect_timeout(&to, timeout)
    })
    .join()
    .unwrap_or_else(|_| Err(io::Error::other("connect thread panicked")))
}

/// Is a TCP socket (IPv4 or IPv6) listening on `port` in the node's network
/// namespace? Reads `/proc/thread-self/net/tcp*` from a helper thread that
/// joined the namespace.
pub(crate) fn listening_in(ns: &Arc<NodeNs>, port: u16) -> io::Result<bool> {
    let ns = Arc::clone(ns);
    std::thread::spawn(move || -> io::Result<bool> {
        nix::sched::setns(&ns.net, CloneFlags::CLONE_NEWNET)?;
        let mut found = false;
        for table in ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"] {
            let text = match std::fs::read_to_string(table) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            found |= text.lines().skip(1).any(|line| listens_on(line, port));
        }
        Ok(found)
    })
    .join()
    .unwrap_or_else(|_| Err(io::Error::other("listening check thread panicked")))
}

/// Is this `/proc/net/tcp` line a socket in state LISTEN (0A) on `port`?
fn listens_on(line: &str, port: u16) -> bool {
    let mut fields = line.split_ascii_whitespace();
    let (Some(local), Some(state)) = (fields.nth(1), fields.nth(1)) else {
        return false;
    };
    state == "0A"
        && local
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
            == Some(port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_lines_are_parsed() {
        let listen = "   0: 0100E70A:7891 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 123 1 0 100 0 0 10 0";
        let established = "   1: 0100E70A:7891 0200E70A:D431 01 00000000:00000000 00:00000000 00000000     0        0 124 1 0 100 0 0 10 0";
        assert!(listens_on(listen, 30865));
        assert!(!listens_on(listen, 30866));
        assert!(!listens_on(established, 30865));
        assert!(!listens_on("  sl  local_address rem_address   st", 30865));
    }
}
