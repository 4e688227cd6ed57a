//! Process plumbing shared by the daemon (its csync2 clients and the
//! managed `csync2 -ii`), the test cluster (`csync2-watch-testbed`) and the
//! benchmarks: pidfds, a look at a child's exit that leaves it to be
//! reaped, and signals to a whole process group; and handing freed heap
//! back to the system after a big one-time allocation.
//!
//! The rule that makes signalling by PID safe: a PID, or the process group
//! it leads, is signalled only while its process is known not to have been
//! reaped (its exit status not yet collected), so the PID cannot have been
//! given to an unrelated process. [`has_exited`] and [`wait_exited`] look
//! without reaping for exactly that reason. A pidfd pins its process, so a
//! signal sent through one ([`pidfd_send_signal`]) is safe at any time.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Give the heap memory this process has freed back to the system (glibc
/// keeps it for reuse otherwise): after loading or filling the stat cache,
/// whose transient copies are several times its size.
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim(3) only walks glibc's own heap under its lock;
    // it takes no pointer of ours.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A pidfd for `pid` (Linux 5.3+). It becomes readable (`POLLIN`) once the
/// process has exited, and a signal sent through it never reaches another
/// process that was given the same PID.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = pid_t(pid)?;
    // SAFETY: pidfd_open(2) takes a PID and flags (none) and touches no
    // memory of ours; it returns a new descriptor or -1 with errno set.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor the kernel just made for us; nothing
    // else owns it, so the OwnedFd is its only owner and closes it once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Send `sig` to the process `pidfd` refers to (Linux 5.1+). Fails with
/// ESRCH once that process has exited, never signalling another one.
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: pidfd_send_signal(2) gets a descriptor that is open for the
    // call's duration (borrowed), a signal number, a null siginfo (the
    // kernel fills one in as kill(2) would) and no flags; it writes to no
    // memory of ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Has child `pid` exited? Looks without reaping it (`waitid` with
/// `WNOWAIT`): the exit status stays for `Child::wait` or `wait4` to
/// collect, and the PID stays this process's until then. Fails (ECHILD)
/// when `pid` is not an unreaped child of this process.
pub fn has_exited(pid: u32) -> io::Result<bool> {
    waitid_nowait(pid, libc::WNOHANG)
}

/// Wait until child `pid` has exited, without reaping it (see
/// [`has_exited`]). An interrupted wait is resumed.
pub fn wait_exited(pid: u32) -> io::Result<()> {
    loop {
        match waitid_nowait(pid, 0) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// `waitid(P_PID, pid, WEXITED | WNOWAIT | flags)`: true when the child
/// has exited (with `WNOHANG`, false when it still runs).
fn waitid_nowait(pid: u32, flags: libc::c_int) -> io::Result<bool> {
    // waitid(2)'s id_t is unsigned; a PID above pid_t's range names no
    // process, and 0 would mean "any child" on some kernels.
    pid_t(pid)?;
    // SAFETY: siginfo_t is plain integers (and unions of them): all zeros
    // is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable siginfo_t that outlives the
    // call; WNOWAIT leaves the child unreaped.
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOWAIT | flags,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // With WNOHANG and a child still running, waitid returns 0 and leaves
    // si_pid as it was: zero.
    // SAFETY: reading si_pid from a siginfo_t that waitid filled for a
    // child (a SIGCHLD layout) or left all zeros.
    Ok(unsafe { info.si_pid() } != 0)
}

/// Send `sig` to the process group led by `pid` (`kill(-pid, sig)`). Only
/// while the leader is not reaped: see the module's rule. PIDs 0 and 1 are
/// refused (EINVAL): `kill(0)` and `kill(-1)` would reach this process's
/// own group and every process.
pub fn kill_group(pid: u32, sig: libc::c_int) -> io::Result<()> {
    let pid = pid_t(pid)?;
    if pid <= 1 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: kill(2) takes two integers and touches no memory of ours; a
    // negative PID names a process group.
    if unsafe { libc::kill(-pid, sig) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `pid` as a positive `pid_t`, or EINVAL.
fn pid_t(pid: u32) -> io::Result<libc::pid_t> {
    match libc::pid_t::try_from(pid) {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::os::fd::AsFd;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    fn readable(fd: BorrowedFd<'_>) -> bool {
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no waiting.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    #[test]
    fn exit_is_seen_without_reaping_and_the_pidfd_wakes() {
        // cat runs until its stdin closes.
        let mut child = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let fd = pidfd_open(pid).unwrap();
        assert!(!has_exited(pid).unwrap());
        assert!(!readable(fd.as_fd()));
        drop(child.stdin.take());
        wait_exited(pid).unwrap();
        assert!(has_exited(pid).unwrap());
        assert!(readable(fd.as_fd()));
        // Still unreaped: its status is there to collect, once.
        assert!(child.try_wait().unwrap().unwrap().success());
        assert_eq!(
            has_exited(pid).unwrap_err().raw_os_error(),
            Some(libc::ECHILD)
        );
    }

    #[test]
    fn kill_group_reaches_the_whole_group_and_refuses_0_and_1() {
        // sh leads its own group; its sleep is in the same group.
        let mut child = Command::new("sh")
            .args(["-c", "sleep 60 & echo $!; wait"])
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let sleep_pid: u32 = line.trim().parse().unwrap();
        kill_group(child.id(), libc::SIGKILL).unwrap();
        assert!(child.wait().unwrap().code().is_none());
        // The orphaned sleep dies too (and is reaped by init).
        let gone = || {
            std::fs::read_to_string(format!("/proc/{sleep_pid}/stat")).map_or(true, |s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !gone() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(gone(), "the group's sleep {sleep_pid} survived");
        for bad in [0, 1, u32::MAX] {
            assert_eq!(
                kill_group(bad, 0).unwrap_err().raw_os_error(),
                Some(libc::EINVAL),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_signal_through_a_pidfd_reaches_its_process_and_only_it() {
        let mut child = Command::new("sleep").arg("60").spawn().unwrap();
        let fd = pidfd_open(child.id()).unwrap();
        pidfd_send_signal(fd.as_fd(), libc::SIGKILL).unwrap();
        assert!(child.wait().unwrap().code().is_none());
        // Reaped: the pidfd still names the dead process, never a new one.
        assert_eq!(
            pidfd_send_signal(fd.as_fd(), libc::SIGKILL)
                .unwrap_err()
                .raw_os_error(),
            Some(libc::ESRCH)
        );
    }
}
