//! A testbed with `csync2-watch run` on every node: what the integration
//! tests, the demo and the cluster benchmark drive.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{escape_bytes, io_err, wait_until, Node, ProcessHandle, Testbed, TestbedError};
use csync2_watch::status::Status;

/// Settings for a test or demo cluster: quick retries and probes.
pub const QUICK_SETTINGS: &str = r#"
quiet_period = "100ms"
retry_initial = "200ms"
retry_max = "3s"
probe_timeout = "500ms"
stall_timeout = "30s"
"#;

/// A testbed whose nodes run csync2-watch (each with its managed
/// `csync2 -ii`).
pub struct WatchedCluster {
    pub tb: Testbed,
    daemons: Vec<Option<ProcessHandle>>,
    binary: PathBuf,
    settings: String,
    log_filter: String,
}

impl WatchedCluster {
    /// Start `csync2-watch run` (the binary at `binary`) on every node of
    /// `tb` with `settings` as its settings file, and wait until each has
    /// finished its start-up full sync. `log_filter` is the daemons'
    /// `CSYNC2_WATCH_LOG`.
    pub fn start(
        tb: Testbed,
        binary: &Path,
        settings: &str,
        log_filter: &str,
        ready_within: Duration,
    ) -> Result<WatchedCluster, TestbedError> {
        let n = tb.nodes().len();
        let mut c = WatchedCluster {
            daemons: (0..n).map(|_| None).collect(),
            tb,
            binary: binary.to_path_buf(),
            settings: settings.to_string(),
            log_filter: log_filter.to_string(),
        };
        for i in 0..n {
            c.start_daemon(i)?;
        }
        for i in 0..n {
            c.wait_ready(i, ready_within)?;
        }
        Ok(c)
    }

    pub fn node(&self, i: usize) -> &Node {
        self.tb.node(i)
    }

    pub fn len(&self) -> usize {
        self.daemons.len()
    }

    pub fn is_empty(&self) -> bool {
        self.daemons.is_empty()
    }

    /// The settings file of node `i`'s daemon.
    pub fn settings_file(&self, i: usize) -> PathBuf {
        self.tb.node(i).dir().join("csync2-watch.toml")
    }

    /// Start (or restart) the daemon on node `i`.
    pub fn start_daemon(&mut self, i: usize) -> Result<(), TestbedError> {
        let node = self.tb.node(i);
        let settings = self.settings_file(i);
        // Each node's metrics in its own directory (the default,
        // /run/csync2-watch, is shared by every testbed on the machine),
        // unless the test's settings chose a place.
        let mut text = self.settings.clone();
        if !text
            .lines()
            .any(|l| l.trim_start().starts_with("metrics_dir"))
        {
            text.push_str(&format!(
                "\nmetrics_dir = {:?}\n",
                node.dir().join("metrics").display().to_string()
            ));
        }
        fs::write(&settings, &text).map_err(io_err(format!("writing {}", settings.display())))?;
        let mut cmd = node.command(&self.binary);
        cmd.arg("run")
            .arg("-N")
            .arg(node.name())
            .arg("-D")
            .arg(node.db_dir())
            .arg("--config")
            .arg(&settings)
            .arg("--state-dir")
            .arg(node.state_dir())
            .env("CSYNC2_WATCH_LOG", &self.log_filter);
        let h = node.spawn_logged(cmd, "csync2-watch")?;
        self.daemons[i] = Some(h);
        Ok(())
    }

    /// The daemon's log so far.
    pub fn log(&self, i: usize) -> String {
        self.daemons[i]
            .as_ref()
            .map(|h| h.log_text())
            .unwrap_or_default()
    }

    /// Node `i`'s status file, if the daemon wrote one.
    pub fn status(&self, i: usize) -> Option<Status> {
        Status::read(self.tb.node(i).state_dir()).ok()
    }

    /// PID of node `i`'s daemon.
    pub fn daemon_pid(&self, i: usize) -> Option<u32> {
        self.daemons[i].as_ref().map(|h| h.pid())
    }

    pub fn daemon_alive(&self, i: usize) -> bool {
        self.daemons[i].as_ref().is_some_and(|h| h.is_running())
    }

    /// Wait until node `i`'s current daemon finished its start-up full sync.
    pub fn wait_ready(&self, i: usize, within: Duration) -> Result<(), TestbedError> {
        let pid = self.daemon_pid(i);
        let ok = wait_until(within, || {
            self.daemon_alive(i)
                && self
                    .status(i)
                    .is_some_and(|s| Some(s.pid) == pid && s.last_full_sync.is_some())
        });
        if ok {
            Ok(())
        } else {
            Err(TestbedError::Timeout {
                what: format!(
                    "csync2-watch on {} finishing its start-up sync; its log:\n{}",
                    self.node(i).name(),
                    self.log(i)
                ),
                after: within,
            })
        }
    }

    /// SIGKILL the daemon on node `i` (its csync2 -ii dies with it).
    pub fn kill_daemon(&mut self, i: usize) {
        if let Some(h) = self.daemons[i].take() {
            let _ = h.kill();
        }
    }

    /// SIGTERM the daemon on node `i` and wait for it to exit.
    pub fn stop_daemon(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        self.daemons[i]
            .take()
            .and_then(|h| h.terminate(Duration::from_secs(30)).ok())
    }

    /// Take node `i`'s daemon handle (the caller owns its fate).
    pub fn take_daemon(&mut self, i: usize) -> Option<ProcessHandle> {
        self.daemons[i].take()
    }

    /// What `csync2 -M` lists on any node, as `node: line`.
    pub fn dirty(&self) -> Result<Vec<String>, TestbedError> {
        let mut out = Vec::new();
        for n in self.tb.nodes() {
            for line in n.dirty()? {
                out.push(format!("{}: {}", n.name(), escape_bytes(&line)));
            }
        }
        Ok(out)
    }

    /// Wait until every node's tree is identical to node 1's and nothing
    /// is dirty anywhere.
    pub fn wait_converged(&self, timeout: Duration) -> Result<(), TestbedError> {
        let deadline = Instant::now() + timeout;
        self.tb.wait_identical(timeout)?;
        let mut dirty = Vec::new();
        let mut err = None;
        let clean = wait_until(deadline.saturating_duration_since(Instant::now()), || {
            match self.dirty() {
                Ok(d) => dirty = d,
                Err(e) => {
                    err = Some(e);
                    return true;
                }
            }
            dirty.is_empty()
        });
        if let Some(e) = err {
            return Err(e);
        }
        if clean {
            Ok(())
        } else {
            Err(TestbedError::Timeout {
                what: format!("csync2 -M to empty; still dirty:\n{}", dirty.join("\n")),
                after: timeout,
            })
        }
    }

    /// The last `lines` lines of every daemon's log.
    pub fn logs_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for i in 0..self.daemons.len() {
            let log = self.log(i);
            let all: Vec<&str> = log.lines().collect();
            let start = all.len().saturating_sub(lines);
            out.push_str(&format!(
                "---- {} ----\n{}\n",
                self.node(i).name(),
                all[start..].join("\n")
            ));
        }
        out
    }

    /// Sum of a counter over every node's status.
    pub fn counter(&self, f: impl Fn(&Status) -> u64) -> u64 {
        (0..self.daemons.len())
            .filter_map(|i| self.status(i))
            .map(|s| f(&s))
            .sum()
    }
}
