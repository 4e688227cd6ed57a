//! Running one csync2 process: its own process group, stdin from
//! /dev/null, stdout and stderr read as they come (by one thread, with
//! poll(2) on the pipes and a pidfd), and a progress watchdog that kills
//! the group when the process has neither done I/O (`/proc/PID/io`
//! `rchar + wchar`, summed over its descendants) nor printed anything for
//! the stall timeout.

use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::parse::LineSplitter;
use super::RunError;
use crate::process::{kill_group, pidfd_open};

/// After SIGTERM, how long a stalled process gets before SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// How a finished process ended.
#[derive(Debug)]
pub(crate) struct Finished {
    pub status: ExitStatus,
}

/// Make `cmd` die with SIGTERM when the thread that spawned it dies (so no
/// csync2 outlives the daemon), and put it in its own process group.
pub(crate) fn own_group_and_pdeathsig(cmd: &mut Command) {
    let parent = std::process::id() as libc::pid_t;
    cmd.process_group(0);
    // SAFETY: only async-signal-safe calls (prctl, getppid) between fork
    // and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `rchar + wchar` of `pid` and all its descendants, or `None` once it is
/// gone. Any change counts as progress.
pub(crate) fn io_counter(pid: u32) -> Option<u64> {
    fn one(pid: u32, total: &mut u64, depth: usize) -> bool {
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/io")) else {
            return false;
        };
        for line in text.lines() {
            if let Some(v) = line
                .strip_prefix("rchar: ")
                .or_else(|| line.strip_prefix("wchar: "))
            {
                *total = total.wrapping_add(v.trim().parse::<u64>().unwrap_or(0));
            }
        }
        if depth < 8 {
            if let Ok(children) = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
                for c in children.split_whitespace() {
                    if let Ok(c) = c.parse::<u32>() {
                        // A child also adds its pid so that a child
                        // replaced by another one reads as a change.
                        *total = total.wrapping_add(c as u64);
                        one(c, total, depth + 1);
                    }
                }
            }
        }
        true
    }
    let mut total = 0u64;
    one(pid, &mut total, 0).then_some(total)
}

/// Wait up to `timeout` for `child` to exit (polling the pidfd when there
/// is one); returns its status if it did.
fn wait_timeout(
    child: &mut Child,
    pidfd: Option<&OwnedFd>,
    timeout: Duration,
) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(Some(st));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        let left = deadline - now;
        match pidfd {
            Some(fd) => {
                let mut p = libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut p, 1, left.as_millis().min(1000) as libc::c_int + 1) };
            }
            None => std::thread::sleep(left.min(Duration::from_millis(10))),
        }
    }
}

/// Spawn `cmd` (stdin /dev/null, stdout and stderr captured) and run it to
/// the end, handing each output line to the callbacks. Kills the process
/// group when it makes no progress for `stall_timeout`.
pub(crate) fn run(
    mut cmd: Command,
    stall_timeout: Duration,
    on_stdout: &mut dyn FnMut(&[u8]),
    on_stderr: &mut dyn FnMut(&[u8]),
) -> Result<Finished, RunError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    own_group_and_pdeathsig(&mut cmd);
    let program = std::path::PathBuf::from(cmd.get_program());
    let mut child = cmd.spawn().map_err(|source| RunError::Spawn {
        program: program.clone(),
        source,
    })?;
    let pid = child.id();
    let pidfd = pidfd_open(pid).ok();
    let mut out = child.stdout.take().expect("stdout is piped");
    let mut err = child.stderr.take().expect("stderr is piped");
    let spawn_err = |source| RunError::Spawn {
        program: program.clone(),
        source,
    };
    set_nonblocking(out.as_raw_fd()).map_err(spawn_err)?;
    set_nonblocking(err.as_raw_fd()).map_err(spawn_err)?;

    // Check progress this often (and at least every second).
    let tick = (stall_timeout / 8).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut out_lines = LineSplitter::default();
    let mut err_lines = LineSplitter::default();
    let mut out_open = true;
    let mut err_open = true;
    let mut last_io = io_counter(pid);
    let mut last_progress = Instant::now();
    let mut next_check = Instant::now() + tick;
    let mut buf = vec![0u8; 64 * 1024];

    // Read what is there; returns false at EOF.
    let mut drain = |r: &mut dyn Read,
                     lines: &mut LineSplitter,
                     f: &mut dyn FnMut(&[u8]),
                     progressed: &mut bool|
     -> bool {
        loop {
            match r.read(&mut buf) {
                Ok(0) => {
                    lines.finish(&mut *f);
                    return false;
                }
                Ok(n) => {
                    *progressed = true;
                    lines.feed(&buf[..n], &mut *f);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(_) => {
                    lines.finish(&mut *f);
                    return false;
                }
            }
        }
    };

    loop {
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(3);
        if out_open {
            fds.push(libc::pollfd {
                fd: out.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        if err_open {
            fds.push(libc::pollfd {
                fd: err.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        if let Some(p) = &pidfd {
            fds.push(libc::pollfd {
                fd: p.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let now = Instant::now();
        let mut wait = next_check.saturating_duration_since(now);
        if pidfd.is_none() {
            // Without a pidfd only the pipes wake us: look at the child
            // often, so that a quick run is not held up.
            wait = wait.min(Duration::from_millis(5));
        }
        // SAFETY: fds is a valid array of pollfd.
        let rc = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                wait.as_millis() as libc::c_int + 1,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(RunError::Spawn { program, source: e });
            }
        }
        let mut progressed = false;
        if out_open {
            out_open = drain(&mut out, &mut out_lines, on_stdout, &mut progressed);
        }
        if err_open {
            err_open = drain(&mut err, &mut err_lines, on_stderr, &mut progressed);
        }
        if let Some(status) = child.try_wait().map_err(|source| RunError::Spawn {
            program: program.clone(),
            source,
        })? {
            // A descendant may still hold the pipes: read what is there
            // now and stop.
            let mut p = false;
            if out_open && drain(&mut out, &mut out_lines, on_stdout, &mut p) {
                out_lines.finish(&mut *on_stdout);
            }
            if err_open && drain(&mut err, &mut err_lines, on_stderr, &mut p) {
                err_lines.finish(&mut *on_stderr);
            }
            return Ok(Finished { status });
        }
        let now = Instant::now();
        if progressed {
            last_progress = now;
        }
        if now >= next_check {
            next_check = now + tick;
            let io = io_counter(pid);
            if io != last_io {
                last_io = io;
                last_progress = now;
            }
            if now.duration_since(last_progress) >= stall_timeout {
                tracing::warn!(
                    pid,
                    stalled_for = ?now.duration_since(last_progress),
                    "csync2 made no progress; killing its process group"
                );
                let _ = kill_group(pid, libc::SIGTERM);
                let st = wait_timeout(&mut child, pidfd.as_ref(), KILL_GRACE)
                    .ok()
                    .flatten();
                if st.is_none() {
                    // Still unreaped, so the group id cannot be reused yet.
                    let _ = kill_group(pid, libc::SIGKILL);
                    let _ = child.wait();
                }
                return Err(RunError::Stalled {
                    after: stall_timeout,
                });
            }
        }
    }
}

/// Human form of an exit status: `exit status 1`, `killed by signal 9`.
pub(crate) fn describe(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => status.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELPER_ENV: &str = "CSYNC2_WATCH_PROCESS_TEST_HELPER";

    /// Not a test on its own: when re-run by `busy_but_silent_process_is_not_killed`
    /// it reads /dev/zero a little at a time for about 1.5 s, printing
    /// nothing, like csync2 sending a big file.
    #[test]
    fn helper_slow_reader() {
        if std::env::var_os(HELPER_ENV).is_none() {
            return;
        }
        let mut f = fs::File::open("/dev/zero").unwrap();
        let mut buf = [0u8; 4096];
        for _ in 0..30 {
            f.read_exact(&mut buf).unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
        std::process::exit(0);
    }

    #[test]
    fn busy_but_silent_process_is_not_killed() {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "runner::process::tests::helper_slow_reader",
            "--test-threads=1",
            "-q",
        ])
        .env(HELPER_ENV, "1");
        let stall = Duration::from_millis(400);
        let start = Instant::now();
        let fin = run(cmd, stall, &mut |_| {}, &mut |_| {}).expect("not stalled");
        assert!(fin.status.success());
        // It ran longer than the stall timeout without being killed.
        assert!(start.elapsed() > stall);
    }

    #[test]
    fn idle_process_is_killed_with_its_group() {
        // sh waits for a sleep child: neither does any I/O.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 30; echo never"]);
        let mut lines = Vec::new();
        let start = Instant::now();
        let err = run(
            cmd,
            Duration::from_millis(300),
            &mut |l| lines.push(l.to_vec()),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(matches!(err, RunError::Stalled { .. }), "{err:?}");
        assert!(start.elapsed() < Duration::from_secs(30));
        assert!(lines.is_empty());
    }

    #[test]
    fn output_lines_reach_the_callbacks_in_order() {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "printf 'a\\nb\\n'; printf 'e1\\n' >&2; printf c; exit 3",
        ]);
        let mut out = Vec::new();
        let mut err = Vec::new();
        let fin = run(
            cmd,
            Duration::from_secs(30),
            &mut |l| out.push(l.to_vec()),
            &mut |l| err.push(l.to_vec()),
        )
        .unwrap();
        assert_eq!(fin.status.code(), Some(3));
        assert_eq!(describe(&fin.status), "exit status 3");
        assert_eq!(out, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(err, vec![b"e1".to_vec()]);
    }
}
