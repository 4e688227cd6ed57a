//! `csync2-watch status [--json] PATH...`: each path's sync state on this
//! node. It owns the per-path answer (what csync2.cfg, the journal,
//! `status.json` and `csync2 -M` say about one path) and how it is
//! printed; `status` without paths stays in [`super::status`].
//!
//! For each PATH, resolved as `match` resolves it (csync2's `getrealfn`,
//! [`super::matching::realname`]):
//! * synced or not, with the group and the deciding `FILE:LINE:include
//!   PATTERN`, or why not, in the words of `match -v` (the same
//!   [`crate::paths::Decision`]); a path below no watched root is
//!   "outside every csync2 tree", an answer and not an error;
//! * the last change the daemon journaled for it (the path, or a tree
//!   above it), and whether a change is pending (queued in the journal:
//!   the path itself, or a tree above it);
//! * one line per peer the path is dirty towards after a change (every
//!   host of every group the name belongs to, as csync2 marks it), with
//!   its state: `down` (the daemon found the peer unreachable),
//!   `failing` (dirty towards it, and updating it failed), `dirty` (dirty
//!   towards it in `csync2 -M`, which reads every csync2 database
//!   backend), `in-sync`, or `unknown` when `csync2 -M` failed.
//!
//! Text output: a block per path, blocks separated by a blank line; the
//! block's first line is the path as given, printed as is when it is
//! UTF-8 without control characters or backslashes, else escaped as
//! `status` escapes names (`\n`, `\t`, `\\`, `\xNN`), so the block's
//! lines stay lines. `--json`: one object a line per path (fields in
//! [`Answer::to_json`]); a path that is not UTF-8 is given as `path_b64`,
//! as `events` does.
//!
//! Exit 0 when every path was answered and the daemon runs; 1 when the
//! daemon is not running (every answer is still printed, from the config,
//! the journal and `csync2 -M`); 3 when csync2.cfg or the settings are
//! unusable.

#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{json, Map, Value};

use super::events::{format_time, put_path};
use super::status::{ago_at, state_dir, StatusArgs};
use crate::exit;
use crate::journal::{Event, EventKind, Journal, JournalError, QueuedPath};
use crate::plan::{LoadError, Plan};
use crate::queue::display_bytes;
use crate::runner::{Csync2, DirtyEntry, Limits};
use crate::settings::{Settings, SettingsError};
use crate::status::Status;

/// A peer's state for one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerState {
    InSync,
    Dirty,
    Failing,
    Down,
    /// `csync2 -M` failed, so dirtiness is unknown.
    Unknown,
}

impl PeerState {
    pub fn word(&self) -> &'static str {
        match self {
            PeerState::InSync => "in-sync",
            PeerState::Dirty => "dirty",
            PeerState::Failing => "failing",
            PeerState::Down => "down",
            PeerState::Unknown => "unknown",
        }
    }
}

/// One peer's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAnswer {
    pub name: String,
    pub state: PeerState,
    /// The daemon's last error for the peer (for `down` and `failing`),
    /// or why the state is unknown.
    pub last_error: Option<String>,
}

/// Everything said about one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// As given, byte-exact.
    pub given: Vec<u8>,
    /// Resolved as csync2 resolves it.
    pub real: PathBuf,
    pub synced: bool,
    /// Below none of the roots csync2 syncs here.
    pub outside: bool,
    pub group: Option<String>,
    /// The deciding pattern: file, line, pattern as written.
    pub rule: Option<(PathBuf, u32, Vec<u8>)>,
    /// `match -v`'s explanation.
    pub reason: String,
    /// The newest journaled change covering the path; `Err` when the
    /// journal could not be read.
    pub last_change: Result<Option<Event>, String>,
    /// What queued covers the path; `Err` when the journal could not be
    /// read.
    pub pending: Result<Option<QueuedPath>, String>,
    /// `pending` or `running`, when the daemon has a full check in hand.
    pub full_check: Option<&'static str>,
    /// The daemon's count of paths in doubt after an interrupted csync2
    /// run (which ones, it does not say).
    pub doubt_paths: u64,
    pub peers: Vec<PeerAnswer>,
    pub daemon_running: bool,
}

/// `bytes` for a line of text: as is when UTF-8 without control
/// characters or backslashes (so an escape is never ambiguous), else
/// escaped as `status` escapes names.
pub fn display_name(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.chars().any(|c| c.is_control() || c == '\\') => Cow::Borrowed(s),
        _ => Cow::Owned(display_bytes(Path::new(OsStr::from_bytes(bytes)))),
    }
}

/// Free text on one line: control characters escaped.
fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

impl Answer {
    /// The text block (no blank line around it).
    pub fn to_text(&self, now: u64) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "{}", display_name(&self.given));
        if self.real.as_os_str().as_bytes() != self.given.as_slice() {
            let _ = writeln!(
                o,
                "  resolves to: {}",
                display_name(self.real.as_os_str().as_bytes())
            );
        }
        let reason = one_line(&self.reason);
        if self.synced {
            let _ = writeln!(
                o,
                "  synced: yes, group {}, {reason}",
                self.group.as_deref().unwrap_or("?")
            );
        } else if self.outside {
            let _ = writeln!(o, "  synced: no, outside every csync2 tree ({reason})");
        } else {
            let _ = writeln!(o, "  synced: no, {reason}");
        }
        match &self.last_change {
            Ok(Some(e)) => {
                let secs = (e.time_ms.max(0) / 1000) as u64;
                let mut line = format!(
                    "  last change here: {} ({})",
                    format_time(e.time_ms),
                    ago_at(secs, now)
                );
                if let EventKind::Change { path, .. } = &e.what {
                    if path != &self.real {
                        let _ = write!(
                            line,
                            ", as part of the tree {}",
                            display_name(path.as_os_str().as_bytes())
                        );
                    }
                }
                let _ = writeln!(o, "{line}");
            }
            Ok(None) => {
                let _ = writeln!(o, "  last change here: none in the journal");
            }
            Err(e) => {
                let _ = writeln!(o, "  last change here: unknown ({})", one_line(e));
            }
        }
        let full = self
            .full_check
            .map(|f| format!(" (a full check is {f})"))
            .unwrap_or_default();
        match &self.pending {
            Ok(Some(q)) if q.path == self.real => {
                let _ = writeln!(o, "  pending: yes, queued for a csync2 check");
            }
            Ok(Some(q)) => {
                let _ = writeln!(
                    o,
                    "  pending: yes, the tree {} is queued for a csync2 check",
                    display_name(q.path.as_os_str().as_bytes())
                );
            }
            Ok(None) => {
                let _ = writeln!(o, "  pending: no{full}");
            }
            Err(e) => {
                let _ = writeln!(o, "  pending: unknown ({})", one_line(e));
            }
        }
        if self.doubt_paths > 0 && self.synced {
            let _ = writeln!(
                o,
                "  note: {} path(s) or tree(s) are in doubt after an interrupted csync2 run \
                 (recovery forces them dirty); this one may be among them",
                self.doubt_paths
            );
        }
        if !self.synced {
            let _ = writeln!(o, "  peers: none (csync2 does not sync it)");
        } else if self.peers.is_empty() {
            let _ = writeln!(o, "  peers: none");
        }
        for p in &self.peers {
            let mut line = format!("  {} {}", p.name, p.state.word());
            if let Some(e) = &p.last_error {
                if p.state == PeerState::Unknown {
                    let _ = write!(line, " ({})", one_line(e));
                } else {
                    let _ = write!(line, ": {}", one_line(e));
                }
            }
            let _ = writeln!(o, "{line}");
        }
        o
    }

    /// The `--json` object: `path` (or `path_b64` when not UTF-8) as
    /// given, `real_path` (or `real_path_b64`), `synced`, `outside`,
    /// `group`, `file`, `line`, `pattern` (the deciding pattern, null when
    /// none), `reason` (`match -v`'s words), `last_changed` (Unix seconds
    /// or null), `last_changed_ms`, `last_change_tree` (the tree above
    /// whose change it was, or null; `last_change_tree_b64` when not UTF-8), `pending` (bool, null when the
    /// journal could not be read), `pending_tree` (the queued tree above
    /// it, or null; `pending_tree_b64` when not UTF-8), `full_check` (`"pending"`, `"running"` or null),
    /// `doubt_paths`, `journal_error` (string or null), `daemon_running`,
    /// `peers`: `[{name, state, last_error}]` with state `in-sync`,
    /// `dirty`, `failing`, `down` or `unknown`.
    pub fn to_json(&self) -> Value {
        let mut obj = Map::new();
        put_path(&mut obj, "path", Path::new(OsStr::from_bytes(&self.given)));
        put_path(&mut obj, "real_path", &self.real);
        obj.insert("synced".into(), self.synced.into());
        obj.insert("outside".into(), self.outside.into());
        obj.insert("group".into(), json!(self.group));
        match &self.rule {
            Some((file, line, pattern)) => {
                obj.insert("file".into(), file.to_string_lossy().into());
                obj.insert("line".into(), (*line).into());
                obj.insert(
                    "pattern".into(),
                    String::from_utf8_lossy(pattern).into_owned().into(),
                );
            }
            None => {
                for k in ["file", "line", "pattern"] {
                    obj.insert(k.into(), Value::Null);
                }
            }
        }
        obj.insert("reason".into(), self.reason.clone().into());
        let mut journal_error = None;
        let mut tree = None;
        let (changed, changed_ms) = match &self.last_change {
            Ok(Some(e)) => {
                if let EventKind::Change { path, .. } = &e.what {
                    tree = Some(path).filter(|p| **p != self.real);
                }
                (json!(e.time_ms.max(0) / 1000), json!(e.time_ms))
            }
            Ok(None) => (Value::Null, Value::Null),
            Err(e) => {
                journal_error = Some(e.clone());
                (Value::Null, Value::Null)
            }
        };
        obj.insert("last_changed".into(), changed);
        obj.insert("last_changed_ms".into(), changed_ms);
        put_optional_path(&mut obj, "last_change_tree", tree);
        let mut pending_tree = None;
        let pending = match &self.pending {
            Ok(Some(q)) => {
                pending_tree = Some(&q.path).filter(|p| **p != self.real);
                json!(true)
            }
            Ok(None) => json!(false),
            Err(e) => {
                journal_error.get_or_insert_with(|| e.clone());
                Value::Null
            }
        };
        obj.insert("pending".into(), pending);
        put_optional_path(&mut obj, "pending_tree", pending_tree);
        obj.insert("full_check".into(), json!(self.full_check));
        obj.insert("doubt_paths".into(), self.doubt_paths.into());
        obj.insert("journal_error".into(), json!(journal_error));
        obj.insert("daemon_running".into(), self.daemon_running.into());
        let peers: Vec<Value> = self
            .peers
            .iter()
            .map(|p| {
                json!({
                    "name": p.name,
                    "state": p.state.word(),
                    "last_error": p.last_error,
                })
            })
            .collect();
        obj.insert("peers".into(), peers.into());
        Value::Object(obj)
    }
}

/// `key` (or `key_b64`) for a path, or `key: null`.
fn put_optional_path(obj: &mut Map<String, Value>, key: &str, path: Option<&PathBuf>) {
    match path {
        Some(p) => put_path(obj, key, p),
        None => {
            obj.insert(key.into(), Value::Null);
        }
    }
}

/// What is known for every path of one invocation.
struct Lookup<'a> {
    plan: &'a Plan,
    cwd: PathBuf,
    /// The daemon's status, only when it runs.
    status: Option<Status>,
    journal: Result<Journal, String>,
    /// `csync2 -M`, run once (lazily: not for paths that are not synced).
    dirty: Option<Result<Vec<DirtyEntry>, String>>,
    csync2: Csync2,
    limits: Limits,
}

impl Lookup<'_> {
    fn dirty(&mut self) -> &Result<Vec<DirtyEntry>, String> {
        let (csync2, limits) = (&self.csync2, self.limits);
        self.dirty
            .get_or_insert_with(|| csync2.list_dirty(limits).map_err(|e| e.to_string()))
    }

    fn answer(&mut self, given: &[u8]) -> Answer {
        let real = super::matching::realname(given, &self.cwd);
        let d = self.plan.decide(&real);
        let outside = !d.synced && !self.plan.in_a_tree(&real);
        let (last_change, pending) = match &self.journal {
            Ok(j) => (
                j.last_change_of(&real).map_err(|e| e.to_string()),
                j.queued_covering(&real).map_err(|e| e.to_string()),
            ),
            Err(e) => (Err(e.clone()), Err(e.clone())),
        };
        let peer_names: Vec<String> = self
            .plan
            .peers_of(&d)
            .iter()
            .map(|p| p.name.clone())
            .collect();
        let peers = if peer_names.is_empty() {
            Vec::new()
        } else {
            let recorded = d.recorded_as.clone().unwrap_or_default();
            let plan = self.plan;
            let dirty: Result<Vec<String>, String> = match self.dirty() {
                Ok(entries) => Ok(entries
                    .iter()
                    .filter(|e| {
                        let name = e.path.as_os_str().as_bytes();
                        name == recorded.as_slice()
                            || plan.real_name(name).as_deref() == Some(real.as_path())
                    })
                    .map(|e| e.peer.to_ascii_lowercase())
                    .collect()),
                Err(e) => Err(e.clone()),
            };
            peer_names
                .into_iter()
                .map(|name| peer_state(name, &dirty, self.status.as_ref()))
                .collect()
        };
        let full_check = self.status.as_ref().and_then(|s| {
            if s.full_check_running {
                Some("running")
            } else if s.queue.full_check_pending {
                Some("pending")
            } else {
                None
            }
        });
        Answer {
            given: given.to_vec(),
            real,
            synced: d.synced,
            outside,
            group: d.group.clone(),
            rule: d
                .rule
                .as_ref()
                .map(|r| (r.file.clone(), r.line, r.written.clone())),
            reason: d.to_string(),
            last_change,
            pending,
            full_check: full_check.filter(|_| d.synced),
            doubt_paths: self.status.as_ref().map_or(0, |s| s.doubt_paths),
            peers,
            daemon_running: self.status.is_some(),
        }
    }
}

/// One peer's state from what `csync2 -M` says (`dirty`: the peers the
/// path is dirty towards, lowercased) and the running daemon's status.
fn peer_state(
    name: String,
    dirty: &Result<Vec<String>, String>,
    status: Option<&Status>,
) -> PeerAnswer {
    let known = status.and_then(|s| s.peers.iter().find(|p| p.name.eq_ignore_ascii_case(&name)));
    let down = known.is_some_and(|p| p.reach == "down" || p.reach == "unreachable");
    let failed = known.is_some_and(|p| p.failures > 0 || p.last_error.is_some());
    let last_error = known.and_then(|p| p.last_error.clone());
    let lower = name.to_ascii_lowercase();
    let (state, last_error) = match dirty {
        _ if down => (PeerState::Down, last_error),
        Err(e) => (PeerState::Unknown, Some(format!("csync2 -M failed: {e}"))),
        Ok(d) if d.contains(&lower) && failed => (PeerState::Failing, last_error),
        Ok(d) if d.contains(&lower) => (PeerState::Dirty, None),
        Ok(_) => (PeerState::InSync, None),
    };
    PeerAnswer {
        name,
        state,
        last_error,
    }
}

pub fn run(args: StatusArgs) -> anyhow::Result<u8> {
    // csync2's failures are in the answers; the log would say them twice.
    crate::logging::init("error");
    let plan = Plan::load(&args.csync2.load_options()).map_err(LoadError::into_exit)?;
    let settings =
        Settings::load(args.watch.settings.as_deref()).map_err(SettingsError::into_exit)?;
    let cwd = std::env::current_dir().context("cannot find the current directory")?;
    let dir = state_dir(&args.csync2, &args.watch);
    // The daemon's status, or why there is none that counts.
    let (status, not_running) = match Status::read(&dir) {
        Ok(s) if s.daemon_alive() => (Some(s), None),
        Ok(s) => (
            None,
            Some(format!("pid {} from {} is gone", s.pid, dir.display())),
        ),
        Err(e) => (None, Some(format!("no status: {e}"))),
    };
    let csync2 = Csync2 {
        program: settings.csync2.clone(),
        node: args.csync2.node.clone(),
        cfg_name: args.csync2.cfg_name.clone(),
        database: args.database.clone(),
        port: None,
        client_args: settings.csync2_args.clone(),
        system_dir: None,
    };
    let mut ctx = Lookup {
        plan: &plan,
        cwd,
        status,
        journal: Journal::open_existing(&dir).map_err(|e| match e {
            // Said once per path: the short form.
            JournalError::NotFound { path, .. } => format!("no journal at {}", path.display()),
            e => e.to_string(),
        }),
        dirty: None,
        csync2,
        limits: Limits {
            stall_timeout: settings.stall_timeout,
        },
    };
    let now = crate::status::unix_now();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for (i, p) in args.paths.iter().enumerate() {
        let answer = ctx.answer(p.as_os_str().as_bytes());
        let mut record = if args.json {
            serde_json::to_string(&answer.to_json())?
        } else {
            answer.to_text(now)
        };
        if args.json {
            record.push('\n');
        } else if i > 0 {
            record.insert(0, '\n');
        }
        out.write_all(record.as_bytes())
            .context("cannot write to standard output")?;
    }
    out.flush().context("cannot write to standard output")?;
    match not_running {
        None => Ok(exit::OK),
        Some(why) => {
            eprintln!(
                "csync2-watch: the daemon is not running ({why}); the answers come from \
                 csync2.cfg, the journal and csync2 -M alone (is it running with the same \
                 -N/-C/--state-dir?)"
            );
            Ok(exit::ERROR)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::ChangeKind;

    fn answer(given: &[u8]) -> Answer {
        Answer {
            given: given.to_vec(),
            real: PathBuf::from(OsStr::from_bytes(given)),
            synced: true,
            outside: false,
            group: Some("web".into()),
            rule: Some(("/etc/csync2.cfg".into(), 4, b"/srv/www".to_vec())),
            reason: "/etc/csync2.cfg:4:include /srv/www".into(),
            last_change: Ok(Some(Event {
                txid: 7,
                time_ms: 1_700_000_000_123,
                what: EventKind::Change {
                    path: PathBuf::from(OsStr::from_bytes(given)),
                    kind: ChangeKind::Entry,
                },
            })),
            pending: Ok(None),
            full_check: None,
            doubt_paths: 0,
            peers: vec![
                PeerAnswer {
                    name: "node2".into(),
                    state: PeerState::InSync,
                    last_error: None,
                },
                PeerAnswer {
                    name: "node3".into(),
                    state: PeerState::Down,
                    last_error: Some("Connection to remote host `node3' failed.".into()),
                },
            ],
            daemon_running: true,
        }
    }

    #[test]
    fn a_block_starts_with_the_path_and_has_a_line_per_peer() {
        let text = answer(b"/srv/www/index.html").to_text(1_700_000_010);
        assert_eq!(
            text,
            "/srv/www/index.html\n\
             \x20 synced: yes, group web, /etc/csync2.cfg:4:include /srv/www\n\
             \x20 last change here: 2023-11-14T22:13:20.123Z (10s ago)\n\
             \x20 pending: no\n\
             \x20 node2 in-sync\n\
             \x20 node3 down: Connection to remote host `node3' failed.\n"
        );
    }

    #[test]
    fn odd_names_stay_on_the_first_line_escaped() {
        assert_eq!(display_name(b"/srv/caf\xc3\xa9"), "/srv/café");
        assert_eq!(display_name(b"/srv/a\nb"), "/srv/a\\nb");
        assert_eq!(display_name(b"/srv/a\\nb"), "/srv/a\\\\nb");
        assert_eq!(display_name(b"/srv/\xff\tx"), "/srv/\\xff\\tx");
        let mut a = answer(b"/srv/www/a\nb");
        a.reason = "/etc/csync2.cfg:4:exclude /srv/www/a\nb".into();
        a.synced = false;
        a.peers.clear();
        let text = a.to_text(1_700_000_010);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "/srv/www/a\\nb");
        assert_eq!(
            lines[1],
            "  synced: no, /etc/csync2.cfg:4:exclude /srv/www/a\\nb"
        );
        assert_eq!(
            lines.last(),
            Some(&"  peers: none (csync2 does not sync it)")
        );
        assert_eq!(lines.len(), 5, "{text}");
    }

    #[test]
    fn json_gives_b64_only_for_non_utf8_and_says_every_peer() {
        let v = answer(b"/srv/www/a\nb").to_json();
        assert_eq!(v["path"], "/srv/www/a\nb");
        assert!(v.get("path_b64").is_none());
        assert_eq!(v["synced"], true);
        assert_eq!(v["group"], "web");
        assert_eq!(v["file"], "/etc/csync2.cfg");
        assert_eq!(v["line"], 4);
        assert_eq!(v["pattern"], "/srv/www");
        assert_eq!(v["last_changed"], 1_700_000_000u64);
        assert_eq!(v["pending"], false);
        assert_eq!(v["peers"][1]["name"], "node3");
        assert_eq!(v["peers"][1]["state"], "down");
        assert_eq!(
            v["peers"][1]["last_error"],
            "Connection to remote host `node3' failed."
        );
        assert_eq!(v["peers"][0]["last_error"], Value::Null);
        let line = serde_json::to_string(&v).unwrap();
        assert!(!line.contains('\n'), "one line: {line}");

        let mut odd = answer(b"/srv/\xff");
        odd.pending = Err("journal: gone".into());
        let v = odd.to_json();
        assert_eq!(v["path_b64"], "L3Nydi//");
        assert!(v.get("path").is_none());
        assert_eq!(v["pending"], Value::Null);
        assert_eq!(v["journal_error"], "journal: gone");
    }

    #[test]
    fn peer_states_follow_csync2_m_and_the_daemon() {
        let mut s = Status::default();
        s.peers.push(crate::status::PeerStatus {
            name: "node2".into(),
            reach: "up".into(),
            failures: 2,
            last_error: Some("csync2 failed".into()),
            ..Default::default()
        });
        s.peers.push(crate::status::PeerStatus {
            name: "node3".into(),
            reach: "down".into(),
            last_error: Some("no route".into()),
            ..Default::default()
        });
        let dirty: Result<Vec<String>, String> = Ok(vec!["node2".into()]);
        let st = |n: &str, d: &Result<Vec<String>, String>, s: Option<&Status>| {
            let a = peer_state(n.into(), d, s);
            (a.state, a.last_error)
        };
        assert_eq!(
            st("node2", &dirty, Some(&s)),
            (PeerState::Failing, Some("csync2 failed".into()))
        );
        assert_eq!(st("node2", &dirty, None), (PeerState::Dirty, None));
        assert_eq!(
            st("node3", &dirty, Some(&s)),
            (PeerState::Down, Some("no route".into()))
        );
        assert_eq!(st("node4", &dirty, Some(&s)), (PeerState::InSync, None));
        let failed: Result<Vec<String>, String> = Err("busy".into());
        assert_eq!(
            st("node2", &failed, Some(&s)),
            (PeerState::Unknown, Some("csync2 -M failed: busy".into()))
        );
        assert_eq!(st("node3", &failed, Some(&s)).0, PeerState::Down);
        let text = answer(b"/x").to_text(0);
        assert!(text.contains("  node2 in-sync\n"));
        let mut a = answer(b"/x");
        a.peers[0] = peer_state("node2".into(), &failed, None);
        assert!(a
            .to_text(0)
            .contains("  node2 unknown (csync2 -M failed: busy)\n"));
    }
}
