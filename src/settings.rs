//! csync2-watch's own settings: `/etc/csync2-watch/csync2-watch.toml`
//! (or `--config FILE`), every field optional with a sysadmin-friendly
//! default, durations in humantime (`"250ms"`, `"1h"`).
//!
//! (API pinned; implementation being built.)

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default settings path.
pub const DEFAULT_PATH: &str = "/etc/csync2-watch/csync2-watch.toml";

/// Who runs the local csync2 server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerMode {
    /// csync2-watch starts `csync2 -ii` as a supervised child.
    Managed,
    /// inetd, csync2.socket or an init script runs it; csync2-watch only
    /// watches its connections.
    External,
}

/// All settings, with defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The csync2 binary. Default `csync2` looked up in PATH, falling back
    /// to `/usr/sbin/csync2`.
    pub csync2: PathBuf,
    /// Extra arguments for every csync2 client run (not the server), e.g.
    /// `["-B", "-A"]`. Default empty.
    pub csync2_args: Vec<OsString>,
    /// Wait this long after the first change of a quiet spell before
    /// starting a batch, to catch its siblings. Default 5ms.
    pub batch_delay: Duration,
    /// Most paths handed to one csync2 check run. Default 2000.
    pub max_batch: usize,
    /// A batch with more paths than this becomes one full check (the old
    /// script's num_batched_changes_threshold). Default 15000.
    pub full_check_threshold: usize,
    /// Time between full syncs; zero disables them. Default 1h.
    pub full_sync_interval: Duration,
    /// Each full sync is moved by a random amount up to this. Default 5m.
    pub full_sync_jitter: Duration,
    /// No local csync2 client starts while the local server serves a
    /// connection, nor for this long after. Default 250ms.
    pub quiet_period: Duration,
    /// Run `csync2 -u -P peer` for all peers at once instead of one
    /// `csync2 -u -P a,b,...`. Default false (see the benchmark).
    pub parallel_updates: bool,
    /// TCP connect timeout when probing a peer before updating it.
    /// Default 1s.
    pub probe_timeout: Duration,
    /// First retry delay for a peer that failed or is still dirty.
    /// Doubles up to `retry_max`. Default 1s.
    pub retry_initial: Duration,
    /// Default 5m.
    pub retry_max: Duration,
    /// A csync2 client that makes no I/O progress for this long is killed
    /// (csync2 has no network timeouts). Default 60s.
    pub stall_timeout: Duration,
    /// Managed or external local server. Default managed.
    pub server: ServerMode,
    /// Full-check interval for trees on network filesystems, where inotify
    /// cannot see other machines' writes. Default 5m.
    pub network_fs_interval: Duration,
    /// Full-check interval for trees that could not be watched completely
    /// (watch limit reached). Default 5m.
    pub degraded_interval: Duration,
    /// How many journaled change events to keep for `events`. Default
    /// 1_000_000.
    pub journal_keep_events: u64,
    /// Where the settings came from (`None`: defaults, no file).
    pub source: Option<PathBuf>,
}

/// A settings file problem, printable as `FILE:LINE:COL: message`.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl Default for Settings {
    fn default() -> Self {
        unimplemented!("settings::Settings::default")
    }
}

impl Settings {
    /// Load `path`, or [`DEFAULT_PATH`] when `None` (a missing default file
    /// means defaults; a missing explicit file is an error).
    pub fn load(_path: Option<&Path>) -> Result<Settings, SettingsError> {
        unimplemented!("settings::Settings::load")
    }
}
