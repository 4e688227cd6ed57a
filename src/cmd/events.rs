//! `csync2-watch events`: print the journal's change feed after `--since
//! TXID`, and with `-f` keep printing new entries (polling every 200 ms)
//! until SIGINT, SIGTERM or a closed pipe. A client resumes by passing the
//! last txid it printed. The journal is found in `--state-dir`, else in
//! [`default_state_dir`] from `-N`/`-C`; csync2.cfg and the settings file
//! (`--config`, accepted for symmetry with the other commands) are not
//! read, so `events` works even when they are broken. Reading from before
//! the oldest kept entry (see `journal_keep_events`) prints a warning on
//! stderr: those events are gone.
//!
//! Output formats (one record per journal entry):
//!
//! * text (default), fields separated by a TAB, records ended by `\n` (or
//!   NUL with `-0`):
//!   `TXID  TIME  KIND  PATH` for a change, where TIME is RFC 3339 UTC with
//!   milliseconds, KIND is `entry`, `dir-attrib` or `dir-tree`, and PATH
//!   is the path's exact bytes (it runs to the record's end and may itself
//!   contain TABs, and newlines too: use `-0` for such names);
//!   `TXID  TIME  full-check  SCOPE  REASON` for a full check, where SCOPE
//!   is the checked tree (`/` for every tree) and REASON is free text
//!   without TABs, newlines or NULs (so SCOPE is everything between the
//!   third and the last TAB).
//! * `--json`: one object a line with `txid`, `time` (as above), `time_ms`
//!   (milliseconds since the epoch) and `kind`; a change has `path`, a full
//!   check `scope` (`null` for every tree) and `reason`. A path (or scope)
//!   that is not valid UTF-8 is given as `path_b64` (or `scope_b64`)
//!   instead: standard base64 of its exact bytes.

use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use base64::Engine;

use super::{Csync2Opts, WatchOpts};
use crate::exit;
use crate::journal::{default_state_dir, Event, EventKind, Journal};

#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    #[command(flatten)]
    pub csync2: Csync2Opts,
    #[command(flatten)]
    pub watch: WatchOpts,
    /// Print only events with a transaction id greater than TXID.
    #[arg(long, value_name = "TXID", default_value_t = 0)]
    pub since: u64,
    /// Keep printing new events as they are journaled.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// NUL-terminate records instead of newline-terminating them.
    #[arg(short = '0')]
    pub nul: bool,
    /// One JSON object a line.
    #[arg(long, conflicts_with = "nul")]
    pub json: bool,
}

/// How often `--follow` looks for new entries.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);

/// Entries read from the journal at a time.
const PAGE: usize = 5000;

#[derive(Clone, Copy)]
enum Format {
    Text { terminator: u8 },
    Json,
}

pub fn run(args: EventsArgs) -> anyhow::Result<u8> {
    crate::logging::init("warn");
    let state_dir = args.watch.state_dir.clone().unwrap_or_else(|| {
        default_state_dir(args.csync2.node.as_deref(), args.csync2.cfg_name.as_deref())
    });
    let journal = Journal::open_existing(&state_dir)?;
    let pruned = journal.pruned_through()?;
    if args.since < pruned {
        tracing::warn!(
            "events up to txid {pruned} were pruned from {} (journal_keep_events); entries after \
             {} up to {pruned} are missing, so a client that needs every change should run a \
             full sync (`csync2-watch sync --full`)",
            journal.path().display(),
            args.since
        );
    }
    let format = if args.json {
        Format::Json
    } else {
        Format::Text {
            terminator: if args.nul { b'\0' } else { b'\n' },
        }
    };

    let stop = Arc::new(AtomicBool::new(false));
    if args.follow {
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(sig, stop.clone())
                .context("cannot install the SIGINT/SIGTERM handler")?;
        }
    }

    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut since = args.since;
    loop {
        let page = journal.events_since(since, PAGE)?;
        let full = page.len() == PAGE;
        for event in &page {
            if closed(write_record(&mut out, event, format))? {
                return Ok(exit::OK);
            }
            since = event.txid;
        }
        if closed(out.flush())? {
            return Ok(exit::OK);
        }
        if full {
            continue;
        }
        if !args.follow || stop.load(Ordering::Relaxed) {
            return Ok(exit::OK);
        }
        std::thread::sleep(FOLLOW_INTERVAL);
        if stop.load(Ordering::Relaxed) || reader_gone(&stdout) {
            return Ok(exit::OK);
        }
    }
}

/// `Ok(true)` when the write failed because the reader went away (EPIPE):
/// that ends the command quietly, like `events | head`.
fn closed(r: io::Result<()>) -> anyhow::Result<bool> {
    match r {
        Ok(()) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(true),
        Err(e) => Err(e).context("cannot write to standard output"),
    }
}

/// Whether standard output is a pipe whose reader has gone (poll reports
/// POLLERR on the write end), so `--follow` notices without waiting for
/// the next entry.
fn reader_gone(stdout: &io::Stdout) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::empty())];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(n) if n > 0 => fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP)),
        _ => false,
    }
}

/// RFC 3339, UTC, milliseconds: `2024-05-01T12:00:00.123Z`.
pub fn format_time(time_ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(time_ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Free text for the last text field: no TAB, newline, CR or NUL.
fn one_field(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' | '\0' => ' ',
            c => c,
        })
        .collect()
}

fn write_record(out: &mut impl Write, event: &Event, format: Format) -> io::Result<()> {
    match format {
        Format::Text { terminator } => {
            write!(
                out,
                "{}\t{}\t{}\t",
                event.txid,
                format_time(event.time_ms),
                event.what.word()
            )?;
            match &event.what {
                EventKind::Change { path, .. } => out.write_all(path.as_os_str().as_bytes())?,
                EventKind::FullCheck { scope, reason } => {
                    let scope = scope.as_deref().unwrap_or(Path::new("/"));
                    out.write_all(scope.as_os_str().as_bytes())?;
                    write!(out, "\t{}", one_field(reason))?;
                }
            }
            out.write_all(&[terminator])
        }
        Format::Json => {
            let mut obj = serde_json::Map::new();
            obj.insert("txid".into(), event.txid.into());
            obj.insert("time".into(), format_time(event.time_ms).into());
            obj.insert("time_ms".into(), event.time_ms.into());
            obj.insert("kind".into(), event.what.word().into());
            match &event.what {
                EventKind::Change { path, .. } => put_path(&mut obj, "path", path),
                EventKind::FullCheck { scope, reason } => {
                    match scope {
                        Some(scope) => put_path(&mut obj, "scope", scope),
                        None => {
                            obj.insert("scope".into(), serde_json::Value::Null);
                        }
                    }
                    obj.insert("reason".into(), reason.as_str().into());
                }
            }
            serde_json::to_writer(&mut *out, &obj)?;
            out.write_all(b"\n")
        }
    }
}

/// `key` as a string when the bytes are UTF-8, else `key_b64`.
pub(super) fn put_path(
    obj: &mut serde_json::Map<String, serde_json::Value>,
    key: &str,
    path: &Path,
) {
    let bytes = path.as_os_str().as_bytes();
    match std::str::from_utf8(bytes) {
        Ok(s) => {
            obj.insert(key.into(), s.into());
        }
        Err(_) => {
            let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
            obj.insert(format!("{key}_b64"), b64.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::ChangeKind;
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;
    use std::path::PathBuf;

    #[test]
    fn time_is_rfc3339_utc_with_milliseconds() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_time(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn full_check_reason_cannot_break_the_record() {
        let e = Event {
            txid: 9,
            time_ms: 0,
            what: EventKind::FullCheck {
                scope: Some(PathBuf::from("/srv/a\tb")),
                reason: "watch failed:\tENOSPC\nx\0y".into(),
            },
        };
        let mut out = Vec::new();
        write_record(&mut out, &e, Format::Text { terminator: 0 }).unwrap();
        assert_eq!(
            out,
            b"9\t1970-01-01T00:00:00.000Z\tfull-check\t/srv/a\tb\twatch failed: ENOSPC x y\0"
        );
    }

    #[test]
    fn json_uses_b64_only_for_non_utf8() {
        let mk = |bytes: &[u8]| Event {
            txid: 1,
            time_ms: 5,
            what: EventKind::Change {
                path: PathBuf::from(OsString::from_vec(bytes.to_vec())),
                kind: ChangeKind::DirTree,
            },
        };
        let mut out = Vec::new();
        write_record(&mut out, &mk(b"/a\nb"), Format::Json).unwrap();
        write_record(&mut out, &mk(b"/\xff"), Format::Json).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["path"], "/a\nb");
        assert!(lines[0].get("path_b64").is_none());
        assert_eq!(lines[0]["kind"], "dir-tree");
        assert_eq!(lines[1]["path_b64"], "L/8=");
        assert!(lines[1].get("path").is_none());
    }
}
