//! What the daemon tells the operator: `status.json` in the (private)
//! state directory, read by `csync2-watch status`, and a Prometheus
//! textfile for node_exporter's textfile collector in a directory of its
//! own (it holds no path names). Both are replaced atomically (write to a
//! temporary file, fsync-free rename).
//!
//! Layer: adapter (the state directory, the metrics directory). Imports
//! nothing from the crate.

#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// File name inside the state directory.
pub const STATUS_FILE: &str = "status.json";

/// The whole status document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    pub version: String,
    pub node: String,
    pub config_file: PathBuf,
    pub state_dir: PathBuf,
    /// Unix seconds.
    pub started: u64,
    /// Unix seconds of this document.
    pub updated: u64,
    /// starting, idle, waiting-for-server, checking, updating, full-check,
    /// stopping.
    pub state: String,
    pub watch: WatchStatus,
    pub queue: QueueStatus,
    pub peers: Vec<PeerStatus>,
    pub server: ServerInfo,
    pub counters: Counters,
    pub last_batch: Option<RunInfo>,
    pub last_full_sync: Option<RunInfo>,
    /// Seconds until the next periodic full sync.
    pub next_full_sync_in: Option<u64>,
    /// A full check runs in the background right now.
    #[serde(default)]
    pub full_check_running: bool,
    /// Id of the last `csync2-watch sync` request handled.
    pub last_request: u64,
    pub last_error: Option<String>,
    /// A journal write failed (full disk?): syncing goes on, and the next
    /// start rechecks every tree.
    #[serde(default)]
    pub journal_error: Option<String>,
    /// Paths or trees whose csync2 state is in doubt (an interrupted or
    /// failed csync2 run) until recovery forces them dirty.
    #[serde(default)]
    pub doubt_paths: u64,
    /// What the last `csync2 -M` still listed as dirty (paths csync2 has
    /// not got to a peer yet), and the first few of them as `PATH -> PEER`.
    #[serde(default)]
    pub unsynced_count: u64,
    #[serde(default)]
    pub unsynced: Vec<String>,
    /// The last reconcile (a walk of the trees compared with the stat
    /// cache), and the last deep check (`csync2 -cr`).
    #[serde(default)]
    pub last_reconcile: Option<ReconcileInfo>,
    #[serde(default)]
    pub last_deep_check: Option<RunInfo>,
    /// Paths in the stat cache (what csync2 recorded, as the daemon knows it).
    #[serde(default)]
    pub cache_paths: u64,
}

/// One reconcile: what it walked, what differed, what it cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReconcileInfo {
    /// Unix seconds when it ended.
    pub at: u64,
    /// `/` or the trees it covered.
    pub scope: Vec<PathBuf>,
    /// Why it ran (start-up, periodic, overflow, watch failed, polled, ...).
    pub reason: String,
    /// Paths walked (every synced path in scope).
    pub walked: u64,
    /// Paths that appeared, vanished or differ from the cache.
    pub differing: u64,
    /// Of those, paths forced dirty with `csync2 -m` (changes csync2's
    /// check text cannot see).
    pub marked: u64,
    /// Wall time of the walk and compare alone, and of the whole reconcile
    /// (csync2 runs included).
    pub walk_millis: u64,
    pub millis: u64,
    pub ok: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WatchStatus {
    pub ready: bool,
    pub directories: u64,
    pub roots: Vec<PathBuf>,
    /// Trees inotify cannot fully see (network and FUSE filesystems),
    /// reconciled every `blind_poll_interval`, with the filesystem type.
    pub network_fs: Vec<(PathBuf, String)>,
    /// `blind_poll_interval` and `degraded_interval`, in seconds.
    #[serde(default)]
    pub poll_every_secs: u64,
    #[serde(default)]
    pub degraded_every_secs: u64,
    pub degraded: Vec<PathBuf>,
    pub overflows: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueStatus {
    pub pending: u64,
    pub full_check_pending: bool,
    /// Highest journal transaction id queued so far.
    pub last_txid: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub name: String,
    /// up, down, unknown.
    pub reach: String,
    pub dirty: bool,
    pub failures: u32,
    /// Unix seconds of the last time the peer was confirmed clean.
    pub last_ok: Option<u64>,
    pub last_error: Option<String>,
    /// Seconds until the next retry.
    pub next_try_in: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerInfo {
    pub managed: bool,
    pub pid: Option<u32>,
    pub restarts: u32,
    pub connections: usize,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    pub changes: u64,
    pub batches: u64,
    pub skipped: u64,
    pub checks: u64,
    pub marks: u64,
    pub updates: u64,
    pub verifies: u64,
    pub full_syncs: u64,
    pub csync2_failures: u64,
    pub busy: u64,
    pub overflows: u64,
    /// Paths recovery forced dirty.
    #[serde(default)]
    pub forced: u64,
    /// Reconciles run, and deep checks (`csync2 -cr`).
    #[serde(default)]
    pub reconciles: u64,
    #[serde(default)]
    pub deep_checks: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// Unix seconds when it ended.
    pub at: u64,
    pub paths: u64,
    pub millis: u64,
    pub marked: u64,
    pub ok: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a csync2-watch status file: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Replace `path` with `bytes` atomically.
fn replace(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StatusError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |source| StatusError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    // status.json names paths: root's alone (0600), as is the journal.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    // An existing temporary file keeps its mode: set it.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)
}

impl Status {
    /// Write `status.json` (0600) into `state_dir`.
    pub fn write(&self, state_dir: &Path) -> Result<(), StatusError> {
        let json = serde_json::to_vec_pretty(self).expect("status serialises");
        replace(&state_dir.join(STATUS_FILE), &json, 0o600)
    }

    /// Write the Prometheus textfile (0644) to `path`, making its
    /// directory (0755) if missing.
    pub fn write_metrics(&self, path: &Path) -> Result<(), StatusError> {
        if let Some(dir) = path.parent() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(|source| StatusError::Io {
                    path: dir.to_path_buf(),
                    source,
                })?;
        }
        replace(path, self.metrics().as_bytes(), 0o644)
    }

    /// Read `state_dir/status.json`.
    pub fn read(state_dir: &Path) -> Result<Status, StatusError> {
        let path = state_dir.join(STATUS_FILE);
        let bytes = std::fs::read(&path).map_err(|source| StatusError::Io {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| StatusError::Parse { path, source })
    }

    /// Is the process that wrote this status still alive?
    pub fn daemon_alive(&self) -> bool {
        let pid = nix::unistd::Pid::from_raw(self.pid as i32);
        self.pid != 0 && nix::sys::signal::kill(pid, None).is_ok()
    }

    /// Prometheus text exposition.
    pub fn metrics(&self) -> String {
        let mut m = String::new();
        let mut gauge = |name: &str, help: &str, value: f64| {
            let _ = writeln!(m, "# HELP csync2_watch_{name} {help}");
            let _ = writeln!(m, "# TYPE csync2_watch_{name} gauge");
            let _ = writeln!(m, "csync2_watch_{name} {value}");
        };
        gauge("up", "1 while the daemon runs.", 1.0);
        gauge(
            "watched_directories",
            "Directories under an inotify watch.",
            self.watch.directories as f64,
        );
        gauge(
            "queue_length",
            "Changed paths waiting for a csync2 check.",
            self.queue.pending as f64,
        );
        gauge(
            "full_check_pending",
            "1 when a full check is queued.",
            f64::from(u8::from(self.queue.full_check_pending)),
        );
        gauge(
            "full_check_running",
            "1 while a full check runs in the background.",
            f64::from(u8::from(self.full_check_running)),
        );
        gauge(
            "degraded_trees",
            "Trees inotify does not fully cover (periodic full checks instead).",
            (self.watch.degraded.len() + self.watch.network_fs.len()) as f64,
        );
        if let Some(full) = &self.last_full_sync {
            gauge(
                "last_full_sync_timestamp_seconds",
                "When the last full sync ended.",
                full.at as f64,
            );
        }
        if let Some(batch) = &self.last_batch {
            gauge(
                "last_batch_seconds",
                "Duration of the last batch (check and updates).",
                batch.millis as f64 / 1000.0,
            );
        }
        let _ = writeln!(
            m,
            "# HELP csync2_watch_peer_up 1 when the peer answered its last probe."
        );
        let _ = writeln!(m, "# TYPE csync2_watch_peer_up gauge");
        for p in &self.peers {
            let up = u8::from(p.reach == "up");
            let _ = writeln!(
                m,
                "csync2_watch_peer_up{{peer=\"{}\"}} {up}",
                label(&p.name)
            );
        }
        let _ = writeln!(
            m,
            "# HELP csync2_watch_peer_dirty 1 while csync2 may hold changes for the peer."
        );
        let _ = writeln!(m, "# TYPE csync2_watch_peer_dirty gauge");
        for p in &self.peers {
            let dirty = u8::from(p.dirty);
            let _ = writeln!(
                m,
                "csync2_watch_peer_dirty{{peer=\"{}\"}} {dirty}",
                label(&p.name)
            );
        }
        let c = &self.counters;
        for (name, help, value) in [
            (
                "changes_total",
                "Changed paths taken from inotify.",
                c.changes,
            ),
            ("batches_total", "Batches checked.", c.batches),
            (
                "skipped_total",
                "Changed paths csync2 had already recorded.",
                c.skipped,
            ),
            ("csync2_checks_total", "csync2 -c/-cr runs.", c.checks),
            (
                "csync2_marks_total",
                "csync2 -m runs (same-second edits).",
                c.marks,
            ),
            ("csync2_updates_total", "csync2 -u runs.", c.updates),
            ("csync2_verifies_total", "csync2 -M runs.", c.verifies),
            ("full_syncs_total", "Full syncs.", c.full_syncs),
            (
                "csync2_failures_total",
                "csync2 runs that failed.",
                c.csync2_failures,
            ),
            (
                "csync2_busy_total",
                "csync2 runs that found the database busy.",
                c.busy,
            ),
            ("overflows_total", "inotify queue overflows.", c.overflows),
            (
                "server_restarts_total",
                "Restarts of the managed csync2 -ii.",
                u64::from(self.server.restarts),
            ),
        ] {
            let _ = writeln!(m, "# HELP csync2_watch_{name} {help}");
            let _ = writeln!(m, "# TYPE csync2_watch_{name} counter");
            let _ = writeln!(m, "csync2_watch_{name} {value}");
        }
        m
    }
}

/// Escape a Prometheus label value.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Status {
            pid: std::process::id(),
            node: "node1".into(),
            state: "idle".into(),
            ..Status::default()
        };
        s.peers.push(PeerStatus {
            name: "node\"2".into(),
            reach: "up".into(),
            dirty: true,
            ..PeerStatus::default()
        });
        s.write(dir.path()).unwrap();
        let back = Status::read(dir.path()).unwrap();
        assert_eq!(back, s);
        assert!(back.daemon_alive());
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join(STATUS_FILE)), 0o600);
        let prom = dir.path().join("metrics/node1.prom");
        s.write_metrics(&prom).unwrap();
        assert_eq!(mode(&prom), 0o644);
        assert_eq!(mode(prom.parent().unwrap()), 0o755);
        let metrics = std::fs::read_to_string(&prom).unwrap();
        assert!(metrics.contains("csync2_watch_peer_up{peer=\"node\\\"2\"} 1"));
        assert!(metrics.contains("csync2_watch_peer_dirty{peer=\"node\\\"2\"} 1"));
    }

    #[test]
    fn a_dead_pid_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let s = Status {
            pid,
            ..Status::default()
        };
        assert!(!s.daemon_alive());
    }
}
