//! `csync2-watch reload`: ask the running daemon to re-read csync2.cfg and
//! its settings (SIGHUP). It finds the daemon as `status` does (the status
//! file in the state directory chosen by `-C`, `-N` and `--state-dir`
//! names its pid), or takes `--pid PID` (systemd's `$MAINPID` in the
//! units' `ExecReload=`). Either way the pid must be alive and really be a
//! `csync2-watch run`, so that a stale status file or a reused pid never
//! gets a signal meant for the daemon.
//!
//! Like `kill -HUP`, it returns once the signal is sent; the daemon
//! reloads when its control loop next looks at its signals (at once when
//! idle, after the csync2 run in hand otherwise) and logs the outcome.
//! The units use it instead of `/bin/kill`, which a minimal system does
//! not have (procps is not installed there).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::Context as _;

use super::{Csync2Opts, WatchOpts};
use crate::exit::{self, Exit};

#[derive(Debug, clap::Args)]
pub struct ReloadArgs {
    #[command(flatten)]
    pub csync2: Csync2Opts,
    #[command(flatten)]
    pub watch: WatchOpts,
    /// Signal this process (it must be a `csync2-watch run`) instead of the one
    /// named by the status file.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
}

pub fn run(args: ReloadArgs) -> anyhow::Result<u8> {
    let pid = match args.pid {
        Some(pid) => {
            check_daemon(pid, None).map_err(|why| not_running(format!("pid {pid}: {why}")))?;
            pid
        }
        None => {
            let dir = super::status::state_dir(&args.csync2, &args.watch);
            let status = crate::status::Status::read(&dir).map_err(|e| {
                not_running(format!(
                    "no status from a csync2-watch daemon in {} ({e}); is it running with the same -C/-N/--state-dir?",
                    dir.display()
                ))
            })?;
            check_daemon(status.pid, Some(args.csync2.cfg_name.as_deref())).map_err(|why| {
                not_running(format!(
                    "pid {} from {}: {why}",
                    status.pid,
                    dir.join(crate::status::STATUS_FILE).display()
                ))
            })?;
            status.pid
        }
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .with_context(|| format!("cannot signal csync2-watch (pid {pid})"))?;
    println!("reload requested (SIGHUP to csync2-watch pid {pid}); the daemon logs the outcome");
    Ok(exit::OK)
}

fn not_running(why: String) -> anyhow::Error {
    Exit {
        code: exit::ERROR,
        message: format!("csync2-watch: no running daemon to reload: {why}"),
    }
    .into()
}

/// Is `pid` a live `csync2-watch run` (for configuration `cfg`, when
/// `Some`: `Some(None)` is the default csync2.cfg)? `Err` says why not.
pub fn check_daemon(pid: u32, cfg: Option<Option<&str>>) -> Result<(), String> {
    check_daemon_in(Path::new("/proc"), pid, cfg)
}

/// [`check_daemon`] with the `/proc` root injectable, for tests.
pub fn check_daemon_in(
    proc_root: &Path,
    pid: u32,
    cfg: Option<Option<&str>>,
) -> Result<(), String> {
    if pid <= 1 || pid > i32::MAX as u32 {
        return Err("not a daemon's pid".into());
    }
    let raw = std::fs::read(proc_root.join(pid.to_string()).join("cmdline"))
        .map_err(|_| "no such process (the daemon is not running)".to_string())?;
    let cmdline: Vec<OsString> = raw
        .split(|&c| c == 0)
        .filter(|a| !a.is_empty())
        .map(|a| OsStr::from_bytes(a).to_os_string())
        .collect();
    let shown = || {
        cmdline
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let is_run = match cfg {
        Some(cfg) => crate::sysctl::is_daemon_for(&cmdline, cfg),
        None => {
            crate::sysctl::is_daemon_for(&cmdline, None)
                || cmdline_cfg(&cmdline)
                    .is_some_and(|c| crate::sysctl::is_daemon_for(&cmdline, Some(&c)))
        }
    };
    if is_run {
        Ok(())
    } else if cmdline.is_empty() {
        Err("not a csync2-watch daemon (a kernel thread or a zombie)".into())
    } else {
        Err(format!(
            "not a csync2-watch daemon for this configuration (it runs `{}`)",
            shown()
        ))
    }
}

/// The `-C NAME` of a command line, if any.
fn cmdline_cfg(cmdline: &[OsString]) -> Option<String> {
    let mut it = cmdline.iter().skip(1);
    while let Some(a) = it.next() {
        let a = a.as_bytes();
        if a == b"-C" {
            return it.next().map(|v| v.to_string_lossy().into_owned());
        }
        if let Some(v) = a.strip_prefix(b"-C") {
            return Some(String::from_utf8_lossy(v.strip_prefix(b"=").unwrap_or(v)).into_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_proc(pid: u32, argv: &[&str]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join(pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let mut raw = Vec::new();
        for a in argv {
            raw.extend_from_slice(a.as_bytes());
            raw.push(0);
        }
        std::fs::write(dir.join("cmdline"), raw).unwrap();
        root
    }

    #[test]
    fn only_a_csync2_watch_run_is_a_daemon() {
        let p = fake_proc(4242, &["/usr/sbin/csync2-watch", "run", "-N", "node1"]);
        assert!(check_daemon_in(p.path(), 4242, None).is_ok());
        assert!(check_daemon_in(p.path(), 4242, Some(None)).is_ok());
        assert!(check_daemon_in(p.path(), 4242, Some(Some("web"))).is_err());

        let p = fake_proc(4243, &["/usr/sbin/csync2-watch", "run", "-C", "web"]);
        assert!(
            check_daemon_in(p.path(), 4243, None).is_ok(),
            "--pid: any configuration"
        );
        assert!(check_daemon_in(p.path(), 4243, Some(Some("web"))).is_ok());
        assert!(check_daemon_in(p.path(), 4243, Some(None)).is_err());

        let p = fake_proc(4244, &["/usr/sbin/csync2-watch", "status"]);
        let err = check_daemon_in(p.path(), 4244, None).unwrap_err();
        assert!(err.contains("csync2-watch status"), "{err}");

        let p = fake_proc(4245, &["sleep", "100"]);
        assert!(check_daemon_in(p.path(), 4245, None).is_err());
        assert!(check_daemon_in(p.path(), 999_999, None)
            .unwrap_err()
            .contains("not running"));
        assert!(check_daemon_in(p.path(), 1, None).is_err(), "never init");
        assert!(check_daemon_in(p.path(), 0, None).is_err());
    }
}
