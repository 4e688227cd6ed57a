//! `csync2-watch watch`: print the change stream the daemon acts on, the
//! inotifywait replacement that respects csync2.cfg.
//!
//! Output, on stdout, one record per line (`-0`: NUL-terminated):
//! * a changed path, byte-exact (always absolute, so it starts with `/`);
//! * a full-check marker `! full-check SCOPE REASON`, where SCOPE is the
//!   subtree whose events may be lost (`/` for every tree) and REASON is
//!   `overflow`, `watch-failed: WHY`, `too-many-changes` or
//!   `root-replaced`. It starts with `!`, so it is never a path.
//!
//! Records are flushed after each batch. Logs (start-up, limits, network
//! filesystems) go to stderr. SIGINT, SIGTERM or a closed stdout end it
//! with exit code 0.

use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use anyhow::Context;
use crossbeam_channel::{bounded, select};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::Csync2Opts;
use crate::exit;
use crate::plan::{LoadError, Plan};
use crate::watch::{Drained, FullCheck, WatchOptions, Watcher};

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub csync2: Csync2Opts,
    /// NUL-terminate records instead of newline-terminating them.
    #[arg(short = '0')]
    pub nul: bool,
}

pub fn run(args: WatchArgs) -> anyhow::Result<u8> {
    crate::logging::init("info");
    let plan = Plan::load(&args.csync2.load_options()).map_err(LoadError::into_exit)?;
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("cannot install signal handlers")?;
    let signals_handle = signals.handle();
    let (sig_tx, sig_rx) = bounded::<()>(1);
    let sig_thread = std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            let _ = sig_tx.send(());
        }
    });

    let watcher = Watcher::start(Arc::new(plan), WatchOptions::default())?;
    let mut out = BufWriter::new(io::stdout().lock());
    let result = loop {
        let d = watcher.drain();
        if !d.is_empty() {
            match write_drained(&mut out, &d, args.nul).and_then(|()| out.flush()) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => break Ok(exit::OK),
                Err(e) => break Err(anyhow::Error::new(e).context("cannot write to stdout")),
            }
        }
        select! {
            recv(watcher.wake()) -> r => {
                if r.is_err() {
                    break Err(anyhow::anyhow!("the inotify reader thread stopped"));
                }
            }
            recv(sig_rx) -> _ => break Ok(exit::OK),
        }
    };
    signals_handle.close();
    let _ = sig_thread.join();
    watcher.stop();
    result
}

/// Write one batch of records: full-check markers first, then the paths.
pub fn write_drained(out: &mut impl Write, d: &Drained, nul: bool) -> io::Result<()> {
    let end: &[u8] = if nul { b"\0" } else { b"\n" };
    for fc in &d.full_checks {
        write_full_check(out, fc)?;
        out.write_all(end)?;
    }
    for c in &d.changes {
        out.write_all(c.path.as_os_str().as_bytes())?;
        out.write_all(end)?;
    }
    Ok(())
}

/// `! full-check SCOPE REASON`.
fn write_full_check(out: &mut impl Write, fc: &FullCheck) -> io::Result<()> {
    out.write_all(b"! full-check ")?;
    match &fc.scope {
        Some(p) => out.write_all(p.as_os_str().as_bytes())?,
        None => out.write_all(b"/")?,
    }
    write!(out, " {}", fc.reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::{Change, ChangeKind, FullCheckReason};
    use std::ffi::OsStr;
    use std::path::PathBuf;

    #[test]
    fn records_are_byte_exact_and_markers_never_look_like_paths() {
        let weird = PathBuf::from(OsStr::from_bytes(b"/srv/a b\n-c\xff"));
        let d = Drained {
            changes: vec![
                Change {
                    path: weird.clone(),
                    kind: ChangeKind::Entry,
                },
                Change {
                    path: PathBuf::from("/srv/d"),
                    kind: ChangeKind::DirTree,
                },
            ],
            full_checks: vec![
                FullCheck {
                    scope: None,
                    reason: FullCheckReason::Overflow,
                },
                FullCheck {
                    scope: Some(PathBuf::from("/srv/x")),
                    reason: FullCheckReason::WatchFailed("inotify watch limit reached".into()),
                },
            ],
        };
        let mut nul = Vec::new();
        write_drained(&mut nul, &d, true).unwrap();
        let records: Vec<&[u8]> = nul.split(|&b| b == 0).collect();
        assert_eq!(
            records,
            vec![
                &b"! full-check / overflow"[..],
                b"! full-check /srv/x watch-failed: inotify watch limit reached",
                b"/srv/a b\n-c\xff",
                b"/srv/d",
                b"",
            ]
        );
        let mut nl = Vec::new();
        write_drained(&mut nl, &d, false).unwrap();
        assert!(nl.starts_with(b"! full-check / overflow\n"));
        assert!(nl.ends_with(b"/srv/d\n"));
    }
}
