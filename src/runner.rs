//! The csync2 process runner: builds argv from OsStrings (never through a
//! shell), passes csync2's own options (`-N -C -D -p`) to every run, splits
//! long path lists under ARG_MAX, kills a client that stops making
//! progress, and reads what csync2 says on stderr (files marked dirty,
//! peers that could not be reached, database busy).
//!
//! (API pinned; implementation being built.)

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

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
    /// Kill the run when it makes no I/O progress for this long.
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
    #[error("csync2 failed ({status}): {stderr_tail}")]
    Failed { status: String, stderr_tail: String },
}

impl Csync2 {
    /// `csync2 -ii` with this node's options, for the managed server.
    pub fn server_command(&self) -> Command {
        unimplemented!()
    }

    /// `csync2 -c` (`-cr` when `recursive`) on `paths`.
    pub fn check(
        &self,
        _paths: &[PathBuf],
        _recursive: bool,
        _limits: Limits,
    ) -> Result<CheckOutcome, RunError> {
        unimplemented!()
    }

    /// `csync2 -cr /`: check every tree.
    pub fn check_all(&self, _limits: Limits) -> Result<CheckOutcome, RunError> {
        unimplemented!()
    }

    /// `csync2 -m` on `paths`: mark dirty without comparing.
    pub fn mark(&self, _paths: &[PathBuf], _limits: Limits) -> Result<CheckOutcome, RunError> {
        unimplemented!()
    }

    /// `csync2 -u -P a,b,...` (all peers when `peers` is empty).
    pub fn update(&self, _peers: &[String], _limits: Limits) -> Result<UpdateOutcome, RunError> {
        unimplemented!()
    }

    /// `csync2 -M`: what is still dirty.
    pub fn list_dirty(&self, _limits: Limits) -> Result<Vec<DirtyEntry>, RunError> {
        unimplemented!()
    }
}
