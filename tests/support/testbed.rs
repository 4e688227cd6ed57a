//! The test cluster (`csync2-watch-testbed`, all of it), plus what tests
//! need to check that a testbed left nothing behind.

pub use csync2_watch_testbed::*;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Generous deadline for anything that should happen "soon" on a loaded
/// 2-core machine.
pub const SOON: Duration = Duration::from_secs(30);

/// `ip netns list`, one name a line.
pub fn netns_list() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Lines of this process's `/proc/self/mountinfo` that mention `needle`.
pub fn mounts_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// A process's start time (field 22 of /proc/<pid>/stat): with the PID it
/// names one process for good. `None` once it is gone (or a zombie that
/// has been reaped).
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// The children of `pid` (its main thread's).
pub fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Everything a testbed had on the machine, to check after teardown.
#[derive(Debug)]
pub struct Footprint {
    pub id: String,
    pub netns: Vec<String>,
    pub run_dir: PathBuf,
    pub data_root: PathBuf,
    /// `(pid, start time)` of processes that must be gone.
    pub processes: Vec<(u32, u64)>,
}

impl Footprint {
    /// Record `tb`'s namespaces and directories and the processes `pids`,
    /// checking that they all exist now.
    pub fn capture(tb: &Testbed, pids: &[u32]) -> Footprint {
        let fp = Footprint {
            id: tb.id().to_string(),
            netns: tb.netns_names(),
            run_dir: tb.run_dir().to_path_buf(),
            data_root: tb.data_root(),
            processes: pids
                .iter()
                .map(|&p| {
                    (
                        p,
                        start_time(p).unwrap_or_else(|| panic!("process {p} not running")),
                    )
                })
                .collect(),
        };
        fp.assert_present();
        fp
    }

    pub fn assert_present(&self) {
        let listed = netns_list();
        assert!(!self.netns.is_empty(), "testbed {} has no netns", self.id);
        for ns in &self.netns {
            assert!(listed.contains(ns), "netns {ns} missing from {listed:?}");
        }
        assert!(!mounts_mentioning(&self.run_dir.to_string_lossy()).is_empty());
        assert!(self.run_dir.is_dir());
        assert!(self.data_root.is_dir());
    }

    /// Assert that nothing of it is left (processes get `SOON` to vanish:
    /// grandchildren are reaped by init).
    pub fn assert_gone(&self) {
        let listed = netns_list();
        for ns in &self.netns {
            assert!(!listed.contains(ns), "netns {ns} still there: {listed:?}");
        }
        let prefix = format!("csw-{}-", self.id);
        assert!(
            !listed.iter().any(|n| n.starts_with(&prefix)),
            "a netns of {} is still there: {listed:?}",
            self.id
        );
        for needle in [&self.run_dir, &self.data_root] {
            let m = mounts_mentioning(&needle.to_string_lossy());
            assert!(m.is_empty(), "still mounted: {m:#?}");
        }
        assert!(
            !self.run_dir.exists(),
            "{} still exists",
            self.run_dir.display()
        );
        assert!(
            !self.data_root.exists(),
            "{} still exists",
            self.data_root.display()
        );
        let alive = || -> Vec<u32> {
            self.processes
                .iter()
                .filter(|&&(p, t)| start_time(p) == Some(t))
                .map(|&(p, _)| p)
                .collect()
        };
        assert!(
            wait_until(SOON, || alive().is_empty()),
            "processes still running: {:?}",
            alive()
        );
    }
}
