//! A real csync2 cluster (the library's testbed) with `csync2-watch run`
//! on every node, for the daemon's integration tests.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use csync2_watch::status::Status;
use csync2_watch::testbed::{wait_until, Node, ProcessHandle, Testbed, TestbedOptions};

pub const BIN: &str = env!("CARGO_BIN_EXE_csync2-watch");

/// Settings that keep tests quick: short retries, quick probes.
pub const TEST_SETTINGS: &str = r#"
quiet_period = "100ms"
retry_initial = "200ms"
retry_max = "3s"
probe_timeout = "500ms"
stall_timeout = "30s"
"#;

pub struct Cluster {
    pub tb: Testbed,
    pub daemons: Vec<Option<ProcessHandle>>,
    settings: String,
}

impl Cluster {
    /// A 3-node cluster whose csync2.cfg group has `extra_config` added,
    /// with csync2-watch running on every node and its start-up full sync
    /// done.
    pub fn start(extra_config: &str) -> Cluster {
        Self::start_with(3, extra_config, TEST_SETTINGS)
    }

    pub fn start_with(nodes: usize, extra_config: &str, settings: &str) -> Cluster {
        let tb = Testbed::start(TestbedOptions {
            nodes,
            extra_config: extra_config.to_string(),
            ..TestbedOptions::default()
        })
        .expect("testbed");
        let mut c = Cluster {
            daemons: (0..nodes).map(|_| None).collect(),
            tb,
            settings: settings.to_string(),
        };
        for i in 0..nodes {
            c.start_daemon(i);
        }
        for i in 0..nodes {
            c.wait_ready(i);
        }
        c
    }

    pub fn node(&self, i: usize) -> &Node {
        self.tb.node(i)
    }

    /// Host path of `rel` inside node `i`'s data.
    pub fn path(&self, i: usize, rel: impl AsRef<Path>) -> PathBuf {
        self.tb.node(i).host_path(rel)
    }

    pub fn settings_file(&self, i: usize) -> PathBuf {
        self.tb.node(i).dir().join("csync2-watch.toml")
    }

    /// Start (or restart) the daemon on node `i`.
    pub fn start_daemon(&mut self, i: usize) {
        let node = self.tb.node(i);
        let settings = self.settings_file(i);
        std::fs::write(&settings, &self.settings).unwrap();
        let mut cmd = node.command(BIN);
        cmd.arg("run")
            .arg("-N")
            .arg(node.name())
            .arg("-D")
            .arg(node.db_dir())
            .arg("--config")
            .arg(&settings)
            .arg("--state-dir")
            .arg(node.state_dir())
            .env("CSYNC2_WATCH_LOG", "csync2_watch=trace");
        let h = node.spawn_logged(cmd, "csync2-watch").expect("daemon");
        self.daemons[i] = Some(h);
    }

    /// The daemon's log so far.
    pub fn log(&self, i: usize) -> String {
        self.daemons[i]
            .as_ref()
            .map(|h| h.log_text())
            .unwrap_or_default()
    }

    pub fn status(&self, i: usize) -> Option<Status> {
        Status::read(self.tb.node(i).state_dir()).ok()
    }

    /// Wait until node `i`'s daemon finished its start-up full sync.
    pub fn wait_ready(&self, i: usize) {
        let pid = self.daemons[i].as_ref().map(|h| h.pid());
        let ok = wait_until(Duration::from_secs(60), || {
            self.daemon_alive(i)
                && self
                    .status(i)
                    .is_some_and(|s| Some(s.pid) == pid && s.last_full_sync.is_some())
        });
        assert!(
            ok,
            "daemon on {} not ready; log:\n{}",
            self.node(i).name(),
            self.log(i)
        );
    }

    pub fn daemon_alive(&self, i: usize) -> bool {
        self.daemons[i].as_ref().is_some_and(|h| h.is_running())
    }

    /// SIGKILL the daemon on node `i` (its csync2 -ii dies with it).
    pub fn kill_daemon(&mut self, i: usize) {
        if let Some(h) = self.daemons[i].take() {
            h.kill().unwrap();
        }
    }

    /// SIGTERM the daemon and wait for it to exit.
    pub fn stop_daemon(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        self.daemons[i]
            .take()
            .and_then(|h| h.terminate(Duration::from_secs(30)).ok())
    }

    /// Every node's tree identical to node 1's, and nothing dirty anywhere.
    pub fn wait_converged(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        if let Err(e) = self.tb.wait_identical(timeout) {
            panic!("{e}\n{}", self.logs_tail());
        }
        let mut dirty = Vec::new();
        let clean = wait_until(deadline.saturating_duration_since(Instant::now()), || {
            dirty.clear();
            for n in self.tb.nodes() {
                for line in n.dirty().unwrap() {
                    dirty.push(format!(
                        "{}: {}",
                        n.name(),
                        csync2_watch::testbed::escape_bytes(&line)
                    ));
                }
            }
            dirty.is_empty()
        });
        assert!(
            clean,
            "csync2 -M not empty:\n{}\n{}",
            dirty.join("\n"),
            self.logs_tail()
        );
    }

    /// The last lines of every daemon's log, for failure messages.
    pub fn logs_tail(&self) -> String {
        let mut out = String::new();
        for i in 0..self.daemons.len() {
            let log = self.log(i);
            let lines: Vec<&str> = log.lines().collect();
            let start = lines.len().saturating_sub(40);
            out.push_str(&format!(
                "---- {} ----\n{}\n",
                self.node(i).name(),
                lines[start..].join("\n")
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

/// Run a command on the host (not in a node) and insist it succeeds.
pub fn sh(program: &str, args: &[&OsStr]) {
    let st = std::process::Command::new(program)
        .args(args)
        .status()
        .unwrap();
    assert!(st.success(), "{program} {args:?}: {st}");
}

impl Drop for Cluster {
    /// A failed test keeps every daemon's whole log for a post-mortem
    /// (the testbed's own directories go with it).
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let dir = std::env::temp_dir().join("csync2-watch-test-logs");
        let _ = std::fs::create_dir_all(&dir);
        for i in 0..self.daemons.len() {
            let path = dir.join(format!("{}-{}.log", self.tb.id(), self.node(i).name()));
            if std::fs::write(&path, self.log(i)).is_ok() {
                eprintln!("daemon log kept: {}", path.display());
            }
        }
    }
}
