//! The csync2 process runner: builds argv from OsStrings (never through a
//! shell), passes csync2's own options (`-N -C -D -p`, `CSYNC2_SYSTEM_DIR`)
//! to every run, splits long path lists under ARG_MAX, kills a client that
//! stops making progress, and reads what csync2 says (files marked dirty,
//! peers that could not be reached, database busy, `csync2.lock`).
//!
//! Every client run is `PROGRAM [-N n] [-C c] [-D d] [-p p] CLIENT_ARGS
//! MODE... -- PATHS...` with stdin from /dev/null, in its own process
//! group, killed (SIGTERM) if the thread that started it dies. glibc's
//! getopt stops at `--`, so a path starting with `-` is a path. Check and
//! update runs add one `-v` so that csync2 names what it marks dirty and
//! which file stays dirty; see `runner/parse.rs` for every message read.
//!
//! Layer: adapter (runs csync2). Imports nothing from the crate; the local
//! server's supervisor ([`crate::server`]) imports it.

pub(crate) mod parse;
pub(crate) mod process;
// What csync2 -ii prints, for the local server's supervisor
// (crate::server), beside what the clients print (parse.rs).
pub(crate) mod server_parse;

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub use parse::KnownFile;
// Shared with the local server's supervisor, which shows and rates
// csync2's lines the way the runner does.
pub(crate) use parse::{display_line, looks_like_error};
use parse::{Kind, StderrParser, StdoutParser};

/// How to invoke csync2 for this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Csync2 {
    /// The binary.
    pub program: PathBuf,
    /// `-N NAME`.
    pub node: Option<String>,
    /// `-C NAME`.
    pub cfg_name: Option<String>,
    /// `-D DIR|URL`.
    pub database: Option<OsString>,
    /// `-p PORT`.
    pub port: Option<u16>,
    /// Extra arguments for client runs (not the server).
    pub client_args: Vec<OsString>,
    /// When set, `CSYNC2_SYSTEM_DIR` for every run; else inherited.
    pub system_dir: Option<PathBuf>,
}

/// Limits for one client run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Kill the run when it makes no I/O progress for this long. Keep it
    /// well above csync2's own wait for a busy database (`lock-timeout`,
    /// default 12, plus up to 6 seconds).
    pub stall_timeout: Duration,
}

/// What a check (`-c`, `-cr`) or mark (`-m`) run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckOutcome {
    /// Paths csync2 marked dirty (as csync2 names them: `%prefix%/...`
    /// where a prefix applies).
    pub marked: Vec<PathBuf>,
    /// Non-fatal error lines csync2 printed.
    pub errors: Vec<String>,
    /// Processes started (more than one when the paths were split).
    pub processes: usize,
    pub elapsed: Duration,
}

/// What an update (`-u`) run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateOutcome {
    /// Peers csync2 reported ``Connection to remote host `X' failed``.
    pub connect_failed: Vec<String>,
    /// Other error lines (conflicts, permission denied, ...).
    pub errors: Vec<String>,
    /// csync2's exit status was 0.
    pub exit_ok: bool,
    pub elapsed: Duration,
}

/// One line of `csync2 -M`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirtyEntry {
    pub forced: bool,
    pub myname: String,
    pub peer: String,
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    /// "Database backend is exceedingly busy": retry later.
    #[error("csync2's database was busy (another csync2 held the lock)")]
    Busy,
    /// Killed after making no progress for `after`.
    #[error("csync2 made no progress for {after:?} and was killed")]
    Stalled { after: Duration },
    /// `csync2.lock` exists in csync2's system directory: csync2 refuses
    /// every command (exit 1) until it is removed.
    #[error(
        "csync2 refuses to run while {} exists (an administrator's stop switch); \
         remove that file to let csync2 work again",
        lockfile.display()
    )]
    Locked { lockfile: PathBuf },
    #[error("csync2 failed ({status}): {stderr_tail}")]
    Failed { status: String, stderr_tail: String },
}

impl RunError {
    /// Worth retrying the same run later (busy, stalled, locked).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            RunError::Busy | RunError::Stalled { .. } | RunError::Locked { .. }
        )
    }
}

/// The kernel's limit on one argv string (MAX_ARG_STRLEN, 32 pages).
const MAX_ARG_STRLEN: usize = 32 * 4096;

/// Options of csync2's getopt string that take a value.
const VALUE_OPTS: &[&str] = &["-W", "-s", "-p", "-G", "-P", "-C", "-D", "-N"];

/// What one process printed and how it ended.
struct RawRun {
    stderr: StderrParser,
    stdout: StdoutParser,
    status: std::process::ExitStatus,
}

impl Csync2 {
    /// csync2 at `program` with no options (csync2's defaults, the
    /// inherited `CSYNC2_SYSTEM_DIR`).
    pub fn new(program: impl Into<PathBuf>) -> Csync2 {
        Csync2 {
            program: program.into(),
            node: None,
            cfg_name: None,
            database: None,
            port: None,
            client_args: Vec::new(),
            system_dir: None,
        }
    }

    /// `PROGRAM` with `-N -C -D -p` and `CSYNC2_SYSTEM_DIR`.
    fn base_command(&self) -> Command {
        let mut c = Command::new(&self.program);
        if let Some(n) = &self.node {
            c.arg("-N").arg(n);
        }
        if let Some(n) = &self.cfg_name {
            c.arg("-C").arg(n);
        }
        if let Some(d) = &self.database {
            c.arg("-D").arg(d);
        }
        if let Some(p) = self.port {
            c.arg("-p").arg(p.to_string());
        }
        if let Some(s) = &self.system_dir {
            c.env("CSYNC2_SYSTEM_DIR", s);
        }
        c
    }

    /// `csync2 -ii` with this node's options, for the managed server. No
    /// client args; one `-v`, so that the server names each connection it
    /// accepts and closes (see [`crate::server`]).
    /// `-vv`: at level 2 every per-connection child prints the SQL it
    /// runs, so the daemon learns exactly which files the server recorded
    /// (see `crate::server`).
    pub fn server_command(&self) -> Command {
        let mut c = self.base_command();
        c.arg("-ii").arg("-vv");
        c
    }

    /// The `CSYNC2_SYSTEM_DIR` csync2 will see.
    pub fn effective_system_dir(&self) -> PathBuf {
        self.system_dir
            .clone()
            .or_else(|| std::env::var_os("CSYNC2_SYSTEM_DIR").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/etc"))
    }

    /// The client args raise csync2's debug level past our one `-v`.
    fn chatty(&self) -> bool {
        let mut prev_takes_value = false;
        for a in &self.client_args {
            let b = a.as_bytes();
            let is_flags =
                b.len() >= 2 && b[0] == b'-' && b[1..].iter().all(|c| c.is_ascii_alphabetic());
            if !prev_takes_value && is_flags && b.contains(&b'v') {
                return true;
            }
            prev_takes_value = VALUE_OPTS.iter().any(|o| o.as_bytes() == b);
        }
        false
    }

    /// Bytes available for paths in one argv: half of ARG_MAX, less the
    /// environment and the fixed arguments.
    fn path_budget(&self, fixed: &[&OsStr]) -> usize {
        // SAFETY: sysconf has no preconditions.
        let arg_max = unsafe { libc::sysconf(libc::_SC_ARG_MAX) };
        let arg_max = if arg_max <= 0 {
            128 * 1024
        } else {
            arg_max as usize
        };
        let ptr = std::mem::size_of::<usize>();
        let mut used: usize = std::env::vars_os()
            .map(|(k, v)| k.len() + v.len() + 2 + ptr)
            .sum();
        if let Some(s) = &self.system_dir {
            used += s.as_os_str().len() + "CSYNC2_SYSTEM_DIR=".len() + 1 + ptr;
        }
        used += self.program.as_os_str().len() + 1 + ptr;
        used += fixed.iter().map(|a| a.len() + 1 + ptr).sum::<usize>();
        (arg_max / 2).saturating_sub(used).max(16 * 1024)
    }

    fn client_command(&self, mode: &[&str]) -> Command {
        let mut c = self.base_command();
        c.args(&self.client_args);
        c.args(mode);
        c
    }

    fn fixed_args(&self, mode: &[&str]) -> Vec<OsString> {
        let c = self.client_command(mode);
        c.get_args().map(|a| a.to_os_string()).collect()
    }

    /// Run one process to its end.
    fn run_raw(
        &self,
        kind: Kind,
        mode: &[&str],
        paths: &[PathBuf],
        limits: Limits,
    ) -> Result<RawRun, RunError> {
        let mut cmd = self.client_command(mode);
        if !paths.is_empty() {
            cmd.arg("--");
            cmd.args(paths);
        }
        let mut stderr = StderrParser::new(kind, self.chatty());
        let mut stdout = StdoutParser::new(mode);
        let fin = process::run(
            cmd,
            limits.stall_timeout,
            &mut |l| stdout.line(l),
            &mut |l| stderr.line(l),
        )?;
        stderr.finish();
        Ok(RawRun {
            stderr,
            stdout,
            status: fin.status,
        })
    }

    /// Turn a run's exit into an error, or `Ok` when csync2 got to its end
    /// (exit 0, or exit 1 after `Finished with N errors.`: the errors
    /// were counted, not fatal).
    fn judge(raw: &RawRun) -> Result<(), RunError> {
        if raw.status.code() == Some(1) {
            if let Some(lockfile) = &raw.stdout.lockfile {
                return Err(RunError::Locked {
                    lockfile: lockfile.clone(),
                });
            }
        }
        if raw.stderr.busy {
            return Err(RunError::Busy);
        }
        if raw.status.success() {
            return Ok(());
        }
        if raw.status.code() == Some(1) && raw.stderr.finished_errors.unwrap_or(0) > 0 {
            return Ok(());
        }
        Err(Self::failed(raw))
    }

    fn failed(raw: &RawRun) -> RunError {
        let mut tail = raw.stderr.tail();
        if raw.stdout.other.iter().any(|l| l.starts_with("Usage: ")) {
            tail = "csync2 printed its usage: an option it does not accept \
                    (check csync2_args in csync2-watch.toml)"
                .to_string();
        } else if tail.is_empty() {
            let n = raw.stdout.other.len();
            tail = raw.stdout.other[n.saturating_sub(3)..].join(" | ");
        }
        if tail.is_empty() {
            tail = "no message".to_string();
        }
        RunError::Failed {
            status: process::describe(&raw.status),
            stderr_tail: tail,
        }
    }

    /// Check or mark `paths` in as many processes as ARG_MAX requires.
    fn check_like(
        &self,
        what: &'static str,
        mode: &[&str],
        paths: &[PathBuf],
        limits: Limits,
    ) -> Result<CheckOutcome, RunError> {
        let span = tracing::debug_span!("csync2", mode = what, peers = "", paths = paths.len());
        let _enter = span.enter();
        let start = Instant::now();
        let mut outcome = CheckOutcome::default();
        // A path the kernel cannot pass as one argument cannot be checked.
        let (usable, too_long): (Vec<&PathBuf>, Vec<&PathBuf>) = paths
            .iter()
            .partition(|p| p.as_os_str().len() < MAX_ARG_STRLEN);
        for p in too_long {
            outcome.errors.push(format!(
                "path of {} bytes is longer than one command-line argument may be; \
                 not checked: {}",
                p.as_os_str().len(),
                parse::display_line(p.as_os_str().as_bytes())
            ));
        }
        let fixed = self.fixed_args(mode);
        let fixed_ref: Vec<&OsStr> = fixed.iter().map(|a| a.as_os_str()).collect();
        let mut budget_fixed = fixed_ref.clone();
        let dashdash = OsStr::new("--");
        budget_fixed.push(dashdash);
        let budget = self.path_budget(&budget_fixed);
        let chunks = split_paths(&usable, budget);
        for chunk in &chunks {
            let chunk: Vec<PathBuf> = chunk.iter().map(|p| (*p).clone()).collect();
            let raw = match self.run_raw(Kind::Check, mode, &chunk, limits) {
                Ok(r) => r,
                Err(e) => return Err(self.log_err(e, start, what)),
            };
            outcome.processes += 1;
            if let Err(e) = Self::judge(&raw) {
                return Err(self.log_err(e, start, what));
            }
            let RawRun { stderr, .. } = raw;
            outcome.marked.extend(stderr.marked);
            outcome.errors.extend(stderr.errors);
            if stderr.errors_dropped > 0 {
                outcome.errors.push(format!(
                    "... and {} more error lines",
                    stderr.errors_dropped
                ));
            }
        }
        outcome.elapsed = start.elapsed();
        if outcome.errors.is_empty() {
            tracing::debug!(
                elapsed = ?outcome.elapsed,
                marked = outcome.marked.len(),
                processes = outcome.processes,
                "csync2 {what} done"
            );
        } else {
            tracing::warn!(
                elapsed = ?outcome.elapsed,
                marked = outcome.marked.len(),
                errors = ?outcome.errors,
                "csync2 {what} finished with errors"
            );
        }
        Ok(outcome)
    }

    fn log_err(&self, e: RunError, start: Instant, what: &str) -> RunError {
        match &e {
            RunError::Busy => {
                tracing::debug!(elapsed = ?start.elapsed(), "csync2 {what}: database busy")
            }
            _ => tracing::warn!(elapsed = ?start.elapsed(), "csync2 {what}: {e}"),
        }
        e
    }

    /// `csync2 -c` (`-cr` when `recursive`) on `paths`. An empty list does
    /// nothing (csync2 -c without paths would work through its hint table
    /// instead).
    pub fn check(
        &self,
        paths: &[PathBuf],
        recursive: bool,
        limits: Limits,
    ) -> Result<CheckOutcome, RunError> {
        if paths.is_empty() {
            return Ok(CheckOutcome::default());
        }
        if recursive {
            self.check_like("check -r", &["-v", "-c", "-r"], paths, limits)
        } else {
            self.check_like("check", &["-v", "-c"], paths, limits)
        }
    }

    /// `csync2 -cr /`: check every tree.
    pub fn check_all(&self, limits: Limits) -> Result<CheckOutcome, RunError> {
        self.check_like(
            "check all",
            &["-v", "-c", "-r"],
            &[PathBuf::from("/")],
            limits,
        )
    }

    /// `csync2 -m` on `paths`: mark dirty without comparing. An empty list
    /// does nothing.
    pub fn mark(&self, paths: &[PathBuf], limits: Limits) -> Result<CheckOutcome, RunError> {
        if paths.is_empty() {
            return Ok(CheckOutcome::default());
        }
        self.check_like("mark", &["-v", "-m"], paths, limits)
    }

    /// `csync2 -mr` on `paths`: mark each, and every file csync2 knows
    /// below it, dirty without comparing.
    pub fn mark_tree(&self, paths: &[PathBuf], limits: Limits) -> Result<CheckOutcome, RunError> {
        if paths.is_empty() {
            return Ok(CheckOutcome::default());
        }
        self.check_like("mark -r", &["-v", "-m", "-r"], paths, limits)
    }

    /// `csync2 -u -P a,b,...` (all peers when `peers` is empty).
    pub fn update(&self, peers: &[String], limits: Limits) -> Result<UpdateOutcome, RunError> {
        let joined = peers.join(",");
        let span = tracing::debug_span!("csync2", mode = "update", peers = %joined, paths = 0);
        let _enter = span.enter();
        let start = Instant::now();
        let mut mode = vec!["-v", "-u"];
        if !peers.is_empty() {
            mode.push("-P");
            mode.push(&joined);
        }
        let raw = self
            .run_raw(Kind::Update, &mode, &[], limits)
            .and_then(|raw| Self::judge(&raw).map(|()| raw))
            .map_err(|e| self.log_err(e, start, "update"))?;
        let mut errors = raw.stderr.errors;
        if raw.stderr.errors_dropped > 0 {
            errors.push(format!(
                "... and {} more error lines",
                raw.stderr.errors_dropped
            ));
        }
        let outcome = UpdateOutcome {
            connect_failed: raw.stderr.connect_failed,
            errors,
            exit_ok: raw.status.success(),
            elapsed: start.elapsed(),
        };
        if outcome.exit_ok && outcome.errors.is_empty() {
            tracing::debug!(elapsed = ?outcome.elapsed, "csync2 update done");
        } else {
            tracing::warn!(
                elapsed = ?outcome.elapsed,
                connect_failed = ?outcome.connect_failed,
                errors = ?outcome.errors,
                "csync2 update finished with errors"
            );
        }
        Ok(outcome)
    }

    /// `csync2 -M`: what is still dirty (csync2 exits 2 when nothing is:
    /// that is an empty list).
    pub fn list_dirty(&self, limits: Limits) -> Result<Vec<DirtyEntry>, RunError> {
        let span = tracing::debug_span!("csync2", mode = "list dirty", peers = "", paths = 0);
        let _enter = span.enter();
        let start = Instant::now();
        let raw = self
            .run_raw(Kind::Other, &["-M"], &[], limits)
            .map_err(|e| self.log_err(e, start, "list dirty"))?;
        if raw.status.code() == Some(2) && raw.stdout.entries.is_empty() && !raw.stderr.busy {
            tracing::debug!(elapsed = ?start.elapsed(), dirty = 0, "csync2 -M done");
            return Ok(Vec::new());
        }
        if !raw.status.success() {
            // judge() turns this into Locked, Busy or Failed.
            let e = Self::judge(&raw)
                .err()
                .unwrap_or_else(|| Self::failed(&raw));
            return Err(self.log_err(e, start, "list dirty"));
        }
        tracing::debug!(
            elapsed = ?start.elapsed(),
            dirty = raw.stdout.entries.len(),
            "csync2 -M done"
        );
        Ok(raw.stdout.entries)
    }
}

impl Csync2 {
    /// `csync2 -L`: every file csync2's database knows, with its check
    /// text (csync2 exits 2 when it knows none: that is an empty list).
    pub fn list_known(&self, limits: Limits) -> Result<Vec<KnownFile>, RunError> {
        let span = tracing::debug_span!("csync2", mode = "list known", peers = "", paths = 0);
        let _enter = span.enter();
        let start = Instant::now();
        let raw = self
            .run_raw(Kind::Other, &["-L"], &[], limits)
            .map_err(|e| self.log_err(e, start, "list known"))?;
        if raw.status.code() == Some(2) && raw.stdout.known.is_empty() && !raw.stderr.busy {
            return Ok(Vec::new());
        }
        if !raw.status.success() {
            let e = Self::judge(&raw)
                .err()
                .unwrap_or_else(|| Self::failed(&raw));
            return Err(self.log_err(e, start, "list known"));
        }
        tracing::debug!(elapsed = ?start.elapsed(), known = raw.stdout.known.len(), "csync2 -L done");
        Ok(raw.stdout.known)
    }
}

/// Split `paths` into runs whose argv cost (bytes + NUL + pointer each)
/// stays within `budget`; every run gets at least one path.
fn split_paths<'a>(paths: &[&'a PathBuf], budget: usize) -> Vec<Vec<&'a PathBuf>> {
    let ptr = std::mem::size_of::<usize>();
    let mut out: Vec<Vec<&PathBuf>> = Vec::new();
    let mut cur: Vec<&PathBuf> = Vec::new();
    let mut used = 0;
    for p in paths {
        let cost = p.as_os_str().len() + 1 + ptr;
        if !cur.is_empty() && used + cost > budget {
            out.push(std::mem::take(&mut cur));
            used = 0;
        }
        used += cost;
        cur.push(p);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// csync2's lock file (`$CSYNC2_SYSTEM_DIR/csync2.lock`) when it exists:
/// while it does, every csync2 command exits 1 doing nothing.
pub fn lockfile_present(csync2: &Csync2) -> Option<PathBuf> {
    let p = csync2.effective_system_dir().join("csync2.lock");
    Path::new(&p).exists().then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_respects_budget_and_order() {
        let paths: Vec<PathBuf> = (0..100)
            .map(|i| PathBuf::from(format!("/d/{i:03}")))
            .collect();
        let refs: Vec<&PathBuf> = paths.iter().collect();
        let cost = 6 + 1 + std::mem::size_of::<usize>();
        let chunks = split_paths(&refs, cost * 30);
        assert_eq!(chunks.len(), 4);
        assert!(chunks.iter().all(|c| c.len() <= 30));
        let flat: Vec<&PathBuf> = chunks.into_iter().flatten().collect();
        assert_eq!(flat, refs);
    }

    #[test]
    fn oversized_path_gets_its_own_chunk() {
        let big = PathBuf::from(format!("/{}", "x".repeat(1000)));
        let small = PathBuf::from("/a");
        let refs = vec![&small, &big, &small];
        let chunks = split_paths(&refs, 100);
        assert_eq!(chunks.len(), 3);
    }

    #[test]
    fn chatty_detects_extra_verbosity() {
        let mut c = Csync2::new("csync2");
        assert!(!c.chatty());
        c.client_args = vec!["-B".into(), "-A".into()];
        assert!(!c.chatty());
        c.client_args = vec!["-G".into(), "v".into()];
        assert!(!c.chatty());
        c.client_args = vec!["-Bv".into()];
        assert!(c.chatty());
    }

    #[test]
    fn argv_order_and_options() {
        let c = Csync2 {
            program: "/usr/sbin/csync2".into(),
            node: Some("n1".into()),
            cfg_name: Some("x".into()),
            database: Some("/db".into()),
            port: Some(4000),
            client_args: vec!["-B".into()],
            system_dir: Some("/etc/cs".into()),
        };
        let args: Vec<OsString> = c.fixed_args(&["-v", "-c"]);
        let want: Vec<OsString> = [
            "-N", "n1", "-C", "x", "-D", "/db", "-p", "4000", "-B", "-v", "-c",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        assert_eq!(args, want);
        let s = c.server_command();
        let sargs: Vec<&OsStr> = s.get_args().collect();
        assert_eq!(
            sargs,
            ["-N", "n1", "-C", "x", "-D", "/db", "-p", "4000", "-ii", "-vv"]
                .map(OsStr::new)
                .to_vec()
        );
        assert!(s
            .get_envs()
            .any(|(k, v)| k == "CSYNC2_SYSTEM_DIR" && v == Some(OsStr::new("/etc/cs"))));
    }
}
