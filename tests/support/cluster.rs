//! The test cluster's [`WatchedCluster`] (csync2-watch on every node) with
//! test conveniences: panics with the daemons' logs on failure, and keeps
//! their whole logs when a test fails.

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::time::Duration;

use csync2_watch_testbed::{Testbed, TestbedOptions, WatchedCluster, QUICK_SETTINGS};

pub use super::BIN;
pub const TEST_SETTINGS: &str = QUICK_SETTINGS;

pub struct Cluster(WatchedCluster);

impl Deref for Cluster {
    type Target = WatchedCluster;
    fn deref(&self) -> &WatchedCluster {
        &self.0
    }
}

impl DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut WatchedCluster {
        &mut self.0
    }
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
        Cluster(
            WatchedCluster::start(
                tb,
                Path::new(BIN),
                settings,
                "csync2_watch=trace",
                Duration::from_secs(60),
            )
            .unwrap_or_else(|e| panic!("{e}")),
        )
    }

    /// Host path of `rel` inside node `i`'s data.
    pub fn path(&self, i: usize, rel: impl AsRef<Path>) -> PathBuf {
        self.tb.node(i).host_path(rel)
    }

    pub fn start_daemon(&mut self, i: usize) {
        self.0.start_daemon(i).unwrap_or_else(|e| panic!("{e}"));
    }

    pub fn wait_ready(&self, i: usize) {
        self.0
            .wait_ready(i, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Every node's tree identical to node 1's, and nothing dirty anywhere.
    pub fn wait_converged(&self, timeout: Duration) {
        if let Err(e) = self.0.wait_converged(timeout) {
            panic!("{e}\n{}", self.logs_tail());
        }
    }

    pub fn logs_tail(&self) -> String {
        self.0.logs_tail(40)
    }
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
        for i in 0..self.len() {
            let path = dir.join(format!("{}-{}.log", self.tb.id(), self.node(i).name()));
            if std::fs::write(&path, self.log(i)).is_ok() {
                eprintln!("daemon log kept: {}", path.display());
            }
        }
    }
}
