//! `csync2-watch status`: what the running daemon last reported in its
//! state directory, and whether it is still alive. With PATHs, each
//! path's own state instead ([`super::status_path`]).

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::PathBuf;

use super::{Csync2Opts, WatchOpts};
use crate::exit;
use crate::queue::display_bytes;
use crate::status::{unix_now, Status};

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub csync2: Csync2Opts,
    #[command(flatten)]
    pub watch: WatchOpts,
    /// Print the status as JSON (with PATHs: one object a line per path).
    #[arg(long)]
    pub json: bool,
    /// With PATHs: csync2's database directory or URL for `csync2 -M`, as
    /// `csync2 -D` (give the daemon's own -D, if it has one).
    #[arg(short = 'D', value_name = "DIR|URL", requires = "paths")]
    pub database: Option<OsString>,
    /// Say for each PATH whether csync2 syncs it (group and deciding
    /// FILE:LINE, or why not), when it last changed here, whether a change
    /// is pending, and its state towards each peer (in-sync, dirty,
    /// failing, down).
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

/// The state directory the daemon for these options uses, without reading
/// csync2.cfg: `--state-dir`, else `/var/lib/csync2-watch/NODE[_CFG]` with
/// NODE from `-N` or the host name, lowercased as csync2 does.
pub fn state_dir(csync2: &Csync2Opts, watch: &WatchOpts) -> PathBuf {
    if let Some(dir) = &watch.state_dir {
        return dir.clone();
    }
    crate::journal::default_state_dir(csync2.node.as_deref(), csync2.cfg_name.as_deref())
}

/// Read the status, failing with a message that says what to check.
pub fn read(csync2: &Csync2Opts, watch: &WatchOpts) -> anyhow::Result<Status> {
    let dir = state_dir(csync2, watch);
    Status::read(&dir).map_err(|e| {
        anyhow::anyhow!(
            "{e}\nno status from a csync2-watch daemon in {}: is it running with the same -N/-C/--state-dir?",
            dir.display()
        )
    })
}

pub fn run(args: StatusArgs) -> anyhow::Result<u8> {
    if !args.paths.is_empty() {
        return super::status_path::run(args);
    }
    let status = read(&args.csync2, &args.watch)?;
    let alive = status.daemon_alive();
    if args.json {
        let mut v = serde_json::to_value(&status)?;
        v["running"] = serde_json::Value::Bool(alive);
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", render(&status, alive));
    }
    Ok(if alive { exit::OK } else { exit::ERROR })
}

fn ago(t: u64) -> String {
    ago_at(t, unix_now())
}

/// How long before `now` (Unix seconds) `t` was: `12s ago`, `5m ago`,
/// `3h ago`.
pub(super) fn ago_at(t: u64, now: u64) -> String {
    let d = now.saturating_sub(t);
    match d {
        0..=119 => format!("{d}s ago"),
        120..=7199 => format!("{}m ago", d / 60),
        _ => format!("{}h ago", d / 3600),
    }
}

/// The human-readable status.
pub fn render(s: &Status, alive: bool) -> String {
    let mut o = String::new();
    let running = if alive {
        format!("running (pid {}), {}", s.pid, s.state)
    } else {
        format!(
            "NOT RUNNING (pid {} is gone; last report {})",
            s.pid,
            ago(s.updated)
        )
    };
    let _ = writeln!(o, "csync2-watch {} on {}: {running}", s.version, s.node);
    let _ = writeln!(o, "  config:    {}", s.config_file.display());
    let _ = writeln!(o, "  state dir: {}", s.state_dir.display());
    let _ = writeln!(
        o,
        "  watching:  {} directories under {} root(s){}",
        s.watch.directories,
        s.watch.roots.len(),
        if s.watch.overflows > 0 {
            format!(", {} queue overflow(s)", s.watch.overflows)
        } else {
            String::new()
        }
    );
    for (p, fs) in &s.watch.network_fs {
        let _ = writeln!(
            o,
            "  polled:    {} is on {fs}: inotify cannot see other machines' writes there; \
             reconciled every {}s (blind_poll_interval)",
            display_bytes(p),
            s.watch.poll_every_secs
        );
    }
    for p in &s.watch.degraded {
        let _ = writeln!(
            o,
            "  WARNING:   {} is not fully watched (see `csync2-watch sysctl`): reconciled every {}s",
            display_bytes(p),
            s.watch.degraded_every_secs
        );
    }
    if let Some(e) = &s.journal_error {
        let _ = writeln!(
            o,
            "  WARNING:   the journal cannot be written ({e}); changes are kept in memory and \
             the next start rechecks every tree"
        );
    }
    if s.doubt_paths > 0 {
        let _ = writeln!(
            o,
            "  WARNING:   {} path(s) or tree(s) in doubt after an interrupted or failed csync2 run: \
             recovery forces what changed dirty",
            s.doubt_paths
        );
    }
    let _ = writeln!(
        o,
        "  queue:     {} path(s){}{}",
        s.queue.pending,
        if s.full_check_running {
            ", reconcile running"
        } else {
            ""
        },
        if s.queue.full_check_pending {
            ", reconcile pending"
        } else {
            ""
        }
    );
    if let Some(b) = &s.last_batch {
        let _ = writeln!(
            o,
            "  last batch: {} path(s) in {} ms, {} marked dirty, {}",
            b.paths,
            b.millis,
            b.marked,
            ago(b.at)
        );
    }
    match &s.last_full_sync {
        Some(f) => {
            let _ = writeln!(
                o,
                "  last full sync: {} ({} ms){}",
                ago(f.at),
                f.millis,
                s.next_full_sync_in
                    .map(|n| format!(", next in {}m", n / 60))
                    .unwrap_or_default()
            );
        }
        None => {
            let _ = writeln!(o, "  last full sync: none yet");
        }
    }
    if let Some(r) = &s.last_reconcile {
        let _ = writeln!(
            o,
            "  last reconcile: {} ({}), {} path(s) walked in {} ms, {} differed, {} marked, {} ms in all",
            ago(r.at),
            r.reason,
            r.walked,
            r.walk_millis,
            r.differing,
            r.marked,
            r.millis
        );
    }
    if let Some(d) = &s.last_deep_check {
        let _ = writeln!(o, "  last deep check: {} ({} ms)", ago(d.at), d.millis);
    }
    let _ = writeln!(o, "  stat cache: {} path(s)", s.cache_paths);
    if s.unsynced_count > 0 {
        let _ = writeln!(
            o,
            "  unsynced:  {} path(s) still dirty towards a peer (csync2 -M){}",
            s.unsynced_count,
            if s.unsynced.is_empty() {
                String::new()
            } else {
                format!(": {}", s.unsynced.join(", "))
            }
        );
    }
    let _ = writeln!(o, "  peers:");
    for p in &s.peers {
        let mut line = format!("    {:<20} {:<8}", p.name, p.reach);
        line.push_str(if p.dirty { "dirty " } else { "clean " });
        if let Some(t) = p.last_ok {
            let _ = write!(line, " last clean {}", ago(t));
        }
        if p.failures > 0 {
            let _ = write!(line, " {} failure(s)", p.failures);
        }
        if let Some(n) = p.next_try_in {
            let _ = write!(line, " retry in {n}s");
        }
        if let Some(e) = &p.last_error {
            let _ = write!(line, " — {e}");
        }
        let _ = writeln!(o, "{}", line.trim_end());
    }
    let srv = &s.server;
    let _ = writeln!(
        o,
        "  csync2 server: {}{}, {} connection(s){}",
        if srv.managed { "managed" } else { "external" },
        srv.pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        srv.connections,
        if srv.restarts > 0 {
            format!(", {} restart(s)", srv.restarts)
        } else {
            String::new()
        }
    );
    let c = &s.counters;
    let _ = writeln!(
        o,
        "  counters:  {} changes, {} batches, {} checks, {} marks, {} updates, {} full syncs, {} failures, {} busy, {} forced by recovery",
        c.changes, c.batches, c.checks, c.marks, c.updates, c.full_syncs, c.csync2_failures, c.busy, c.forced
    );
    if let Some(e) = &s.last_error {
        let _ = writeln!(o, "  last error: {e}");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `events` and `status` looked in different directories when `-N`
    /// held `/` or `..`: both now ask the journal's one function.
    #[test]
    fn status_and_events_agree_on_the_state_dir_when_the_node_name_has_a_slash() {
        for node in ["a/../b", "..", "Node/X"] {
            let csync2 = Csync2Opts {
                node: Some(node.to_string()),
                cfg_name: Some("web".into()),
            };
            let watch = WatchOpts {
                settings: None,
                state_dir: None,
            };
            let dir = state_dir(&csync2, &watch);
            assert_eq!(
                dir,
                crate::journal::default_state_dir(Some(node), Some("web"))
            );
            assert_eq!(
                dir.parent(),
                Some(std::path::Path::new("/var/lib/csync2-watch"))
            );
        }
    }
}
