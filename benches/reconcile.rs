//! Benchmark (not a test): issue 11's table. The daemon's reconcile (walk
//! the synced trees, lstat every entry, compare with the persisted stat
//! cache, hand only what differs to csync2) against `csync2 -cr /` (a stat
//! and a database read per file), in one run on one csync2 testbed holding a
//! 170,000-file, 17,011-directory tree:
//!
//! 1. nothing changed: `find TREE` (the walk floor), `csync2 -cr /` on
//!    node1, and a reconcile asked of node1's running daemon with
//!    `csync2-watch sync --full` (it returns once the daemon took the
//!    request; the run then waits for `counters.reconciles` to move in
//!    status.json and takes the reconcile's own `millis` and
//!    `walk_millis`), first warm (after an unmeasured warm-up of each),
//!    then cold (`sync; echo 3 > /proc/sys/vm/drop_caches` before every
//!    measured run);
//! 2. 100 changed files (rewritten with new content and size, 2 s before
//!    what is measured starts), warm then cold, each repetition: a clean
//!    restart of the daemon with nothing changed (the start-up reconcile);
//!    SIGTERM, change 100 files, start it
//!    (the start-up reconcile finds them; `last_reconcile` whose reason
//!    says start-up), until every peer holds them; SIGTERM, change 100
//!    other files, `csync2 -cr /` then `csync2 -u`, until every peer holds
//!    them (then the daemon is started again, unmeasured, and catches up
//!    with what csync2 did behind its back);
//! 3. the daemon's VmRSS and VmHWM with the cache loaded (after phase 1),
//!    `cache_paths`, and the cache on disk: `journal.db` + `-wal` while
//!    running and after the final clean stop and a WAL checkpoint, next to
//!    csync2's own database;
//! 4. (`CSYNC2_WATCH_BENCH_FUSE=1`, the default) a blind tree: a bindfs
//!    (FUSE) mount at `DATA/bench-fuse` on node1, new files written through
//!    its backing directory (no inotify event reaches the daemon), the time
//!    until every peer holds each one with the daemon's default
//!    `blind_poll_interval`.
//!
//! Only node1 runs csync2-watch; its peers run only `csync2 -ii`, so that
//! nothing else on the 2 cores competes with what is measured. Wall time:
//! for csync2 and find from the start of the process to its reaping (wait
//! on a pidfd); for a reconcile its own `millis` (walk and compare alone:
//! `walk_millis`), with how long until status.json showed it as a detail
//! (status.json is written at most twice a second). CPU: for csync2 and
//! find their rusage from wait4; for the daemon the change in
//! utime+stime+cutime+cstime (/proc/PID/stat) of the daemon and its live
//! descendants, from just before the request until status.json showed the
//! reconcile (so it may include a `csync2 -u` the daemon ran right after;
//! the csync2 runs it made are listed); for a start-up reconcile the
//! daemon's CPU from exec until then (start-up included: journal, cache,
//! watches, its csync2 -ii). Every figure is printed next to its baseline
//! from the same run as a ratio: `csync2 -cr /` for reconciles, `find` for
//! the walk. Medians of several repetitions; the machine is shared.
//!
//! Without the reconcile (a binary from before issue 11: status.json never
//! gets `last_reconcile`), the same steps measure the daemon's full sync
//! (`csync2 -cr` driven by the daemon) instead, and say so.
//!
//! `cargo bench --bench reconcile` (or `scripts/bench-reconcile.sh
//! [--quick]`); root only; it does nothing without `--bench`. The daemon
//! binary is the one cargo builds for benchmarks
//! (`CARGO_BIN_EXE_csync2-watch`, i.e. `target/release/csync2-watch`).
//! Knobs (environment):
//! - `CSYNC2_WATCH_BENCH_FILES` / `CSYNC2_WATCH_BENCH_DIRS`: tree size
//!   (default 170000 / 17011, kept under `CSYNC2_WATCH_BENCH_TREE`, default
//!   `/var/tmp/csync2-watch-bench-tree`, shared with benches/cluster.rs;
//!   other sizes live beside it as `<tree>-<files>f-<dirs>d`);
//! - `CSYNC2_WATCH_BENCH_NODES` (3; 2 or more): node1 plus its peers;
//! - `CSYNC2_WATCH_BENCH_REPS` (5): repetitions of each nothing-changed
//!   figure per cache state; `CSYNC2_WATCH_BENCH_CHANGE_REPS` (3): of each
//!   changed-files figure; `CSYNC2_WATCH_BENCH_CHANGED` (100): files changed
//!   each time; `CSYNC2_WATCH_BENCH_CHANGE_AGE_MS` (2000): the pause
//!   between changing them and the measured start or `csync2 -cr /` (files
//!   changed in the current second are checked again once it is over, a
//!   wait of up to a second that a start long after the changes never
//!   sees; 0 measures it); `CSYNC2_WATCH_BENCH_COLD=0` skips the cold runs
//!   (they drop the whole machine's page cache);
//! - `CSYNC2_WATCH_BENCH_FUSE` (1), `CSYNC2_WATCH_BENCH_FUSE_SAMPLES` (3):
//!   the blind-tree scenario (needs bindfs); each sample waits up to twice
//!   the default `blind_poll_interval` (read from
//!   packaging/csync2-watch.toml; else `network_fs_interval`) plus a minute;
//! - `CSYNC2_WATCH_BENCH_TIMEOUT_S` (900): the longest any single step
//!   (a csync2 run, a reconcile, a start-up, an arrival) may take;
//!   `CSYNC2_WATCH_BENCH_DEADLINE_S` (7200): the whole run;
//! - `CSYNC2_WATCH_BENCH_SETTINGS`: the daemon's settings file text
//!   (default empty: the shipped defaults); `CSYNC2_WATCH_BENCH_DAEMON_LOG`
//!   (`csync2_watch=info`); `CSYNC2_WATCH_BIN`: another daemon binary;
//!   `CSYNC2_WATCH_BENCH_LOGS` (`/var/tmp/csync2-watch-bench-logs`): where
//!   the daemon's log is kept;
//! - `CSYNC2_WATCH_TESTBED_DIR` (default here
//!   `/var/tmp/csync2-watch-bench-testbeds`: copies of the tree need a
//!   disk, not a tmpfs).
//!
//! The testbed (namespaces, mounts, the bindfs process, every daemon and
//! csync2 server) is torn down on success, error, panic and SIGINT/SIGTERM;
//! every csync2, find and `csync2-watch sync` the benchmark starts itself is
//! bounded in time and killed by process group when the run is aborted.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use csync2_watch::status::Status;
use csync2_watch_testbed::{Node, ProcessHandle, Testbed, TestbedOptions};

use common::{
    change_content, copy_tree, ensure_tree, is_server, knob, last_line, list_tree, loadavg,
    machine_line, median, ms, proc_table, run_bounded, status_kib, thousands, tree_cpu, Bench,
    Finished, Targets,
};

/// The issue's target: a warm reconcile with nothing changed at least this
/// many times faster (wall) than `csync2 -cr /`.
const TARGET_SPEEDUP: f64 = 10.0;
/// The FUSE mount point below the data path.
const FUSE_DIR: &str = "bench-fuse";

fn main() {
    if !common::asked_to_run() {
        // `cargo test --all-targets` would run a bench target once without
        // `--bench` (this one has `test = false`, but be safe).
        println!("reconcile benchmark: run it with `cargo bench --bench reconcile`");
        return;
    }
    common::init_tracing();
    let bench = Bench::new();
    let mut report = Report::default();
    let result = Knobs::from_env().and_then(|knobs| {
        let ctx = Ctx { knobs, bench };
        run(&ctx, &mut report)
    });
    report.print();
    if let Err(e) = result {
        eprintln!("\nreconcile benchmark failed: {e:#}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------- knobs

struct Knobs {
    tree: PathBuf,
    files: usize,
    dirs: usize,
    nodes: usize,
    reps: usize,
    change_reps: usize,
    changed: usize,
    change_age: Duration,
    cold: bool,
    fuse: bool,
    fuse_samples: usize,
    timeout: Duration,
    deadline: Duration,
    settings: Option<String>,
    daemon_log: String,
    logs: PathBuf,
    binary: PathBuf,
}

impl Knobs {
    fn from_env() -> Result<Knobs> {
        let (tree, files, dirs) = common::tree_from_env()?;
        let nodes = knob("CSYNC2_WATCH_BENCH_NODES", 3usize)?;
        if !(2..=9).contains(&nodes) {
            bail!("CSYNC2_WATCH_BENCH_NODES={nodes}: give 2 to 9 (node1 and its peers)");
        }
        let reps = knob("CSYNC2_WATCH_BENCH_REPS", 5usize)?;
        let change_reps = knob("CSYNC2_WATCH_BENCH_CHANGE_REPS", 3usize)?;
        let changed = knob("CSYNC2_WATCH_BENCH_CHANGED", 100usize)?;
        if reps == 0 || change_reps == 0 || changed == 0 {
            bail!("CSYNC2_WATCH_BENCH_REPS, _CHANGE_REPS and _CHANGED must be at least 1");
        }
        Ok(Knobs {
            tree,
            files,
            dirs,
            nodes,
            reps,
            change_reps,
            changed,
            change_age: Duration::from_millis(knob("CSYNC2_WATCH_BENCH_CHANGE_AGE_MS", 2000u64)?),
            cold: knob("CSYNC2_WATCH_BENCH_COLD", 1u8)? != 0,
            fuse: knob("CSYNC2_WATCH_BENCH_FUSE", 1u8)? != 0,
            fuse_samples: knob("CSYNC2_WATCH_BENCH_FUSE_SAMPLES", 3usize)?.max(1),
            timeout: Duration::from_secs(knob("CSYNC2_WATCH_BENCH_TIMEOUT_S", 900u64)?.max(10)),
            deadline: Duration::from_secs(knob("CSYNC2_WATCH_BENCH_DEADLINE_S", 7200u64)?.max(60)),
            settings: std::env::var("CSYNC2_WATCH_BENCH_SETTINGS").ok(),
            daemon_log: std::env::var("CSYNC2_WATCH_BENCH_DAEMON_LOG")
                .ok()
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| "csync2_watch=info".into()),
            logs: std::env::var_os("CSYNC2_WATCH_BENCH_LOGS")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/var/tmp/csync2-watch-bench-logs")),
            binary: std::env::var_os("CSYNC2_WATCH_BIN")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_csync2-watch"))),
        })
    }
}

/// The knobs, and the run's clock and interrupt flag (`ctx.say`,
/// `ctx.nap`, ... through `Deref`).
struct Ctx {
    knobs: Knobs,
    bench: Bench,
}

impl std::ops::Deref for Ctx {
    type Target = Bench;

    fn deref(&self) -> &Bench {
        &self.bench
    }
}

impl Ctx {
    /// Interrupted, or past the whole run's deadline?
    fn must_stop(&self) -> bool {
        self.interrupted.load(Ordering::Relaxed) || self.started.elapsed() > self.knobs.deadline
    }

    fn check(&self) -> Result<()> {
        self.check_interrupt()?;
        if self.started.elapsed() > self.knobs.deadline {
            bail!(
                "the run's deadline passed ({} s; CSYNC2_WATCH_BENCH_DEADLINE_S)",
                self.knobs.deadline.as_secs()
            );
        }
        Ok(())
    }

    /// Run `cmd` bounded by the step timeout, stopped when the run must stop.
    fn bounded(&self, cmd: std::process::Command, what: &str) -> Result<Finished> {
        run_bounded(cmd, what, self.knobs.timeout, &|| self.must_stop())
    }
}

// ---------------------------------------------------------------- figures

#[derive(Clone, Copy, PartialEq, Eq)]
enum Cache {
    Warm,
    Cold,
}

impl Cache {
    fn name(self) -> &'static str {
        match self {
            Cache::Warm => "warm",
            Cache::Cold => "cold",
        }
    }

    fn idx(self) -> usize {
        self as usize
    }
}

/// What the daemon does when asked for `sync --full`, and at start-up.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The reconcile (issue 11).
    Reconcile,
    /// A binary without it: its full sync (`csync2 -cr`) instead.
    FullSync,
}

impl Mode {
    fn what(self) -> &'static str {
        match self {
            Mode::Reconcile => "reconcile",
            Mode::FullSync => "full sync (no reconcile in this binary)",
        }
    }

    /// How many have ended since the daemon started.
    fn done(self, s: &Status) -> u64 {
        match self {
            Mode::Reconcile => s.counters.reconciles,
            Mode::FullSync => s.counters.full_syncs,
        }
    }
}

/// A process run to completion: find or csync2.
#[derive(Clone, Copy)]
struct Timed {
    wall: Duration,
    cpu: Duration,
    maxrss_kib: u64,
}

/// csync2 runs the daemon made (status counters).
#[derive(Clone, Copy, Default)]
struct Runs {
    checks: u64,
    marks: u64,
    updates: u64,
    verifies: u64,
    deep: u64,
}

impl Runs {
    fn of(s: &Status) -> Runs {
        let c = &s.counters;
        Runs {
            checks: c.checks,
            marks: c.marks,
            updates: c.updates,
            verifies: c.verifies,
            deep: c.deep_checks,
        }
    }

    fn minus(self, o: Runs) -> Runs {
        Runs {
            checks: self.checks.saturating_sub(o.checks),
            marks: self.marks.saturating_sub(o.marks),
            updates: self.updates.saturating_sub(o.updates),
            verifies: self.verifies.saturating_sub(o.verifies),
            deep: self.deep.saturating_sub(o.deep),
        }
    }

    fn describe(self) -> String {
        format!(
            "{} -c, {} -m, {} -u, {} verify, {} deep check",
            self.checks, self.marks, self.updates, self.verifies, self.deep
        )
    }
}

/// One reconcile (or full sync) of the daemon's.
#[derive(Clone)]
struct Sample {
    /// Its own `millis`.
    wall: Duration,
    /// Its own `walk_millis` (reconciles only).
    walk: Option<Duration>,
    /// From the request (or the exec) until status.json showed it.
    seen: Duration,
    /// Daemon and descendants over `seen`.
    cpu: Duration,
    /// Of which the daemon process itself (utime+stime).
    own_cpu: Duration,
    walked: u64,
    differing: u64,
    marked: u64,
    ok: bool,
    reason: String,
    /// csync2 runs over `seen` (for a start-up: since the exec).
    runs: Runs,
    /// From the change (start) until every peer held the changed files.
    arrival: Option<Duration>,
}

/// `csync2 -cr /` then `csync2 -u` after changing files with the daemon
/// stopped.
#[derive(Clone, Copy)]
struct Csync2Changed {
    cr: Timed,
    u: Timed,
    arrival: Duration,
}

#[derive(Default)]
struct Report {
    machine: String,
    load_start: String,
    load_end: String,
    tree: String,
    cluster: String,
    settings: String,
    mode: Option<Mode>,
    first_start: String,
    tree_entries: usize,
    find: [Vec<Timed>; 2],
    cr: [Vec<Timed>; 2],
    rec: [Vec<Sample>; 2],
    start_same: [Vec<Sample>; 2],
    start_changed: [Vec<Sample>; 2],
    cr_changed: [Vec<Csync2Changed>; 2],
    catch_up: Vec<String>,
    changed: usize,
    change_age: Duration,
    rss_kib: Option<(u64, u64)>,
    cache_paths: Option<u64>,
    journal_running: Option<(u64, u64)>,
    journal_stopped: Option<(u64, u64)>,
    journal_checkpointed: Option<(u64, u64)>,
    csync2_db: Option<u64>,
    fuse: Option<Fuse>,
    logs: Vec<PathBuf>,
    notes: Vec<String>,
}

struct Fuse {
    interval: String,
    network_fs: String,
    samples: Vec<Duration>,
    reasons: Vec<String>,
}

// ---------------------------------------------------------------- the daemon

/// csync2-watch on node1, started and stopped by the benchmark.
struct Daemon<'a> {
    node: &'a Node,
    binary: PathBuf,
    settings: PathBuf,
    log_filter: String,
    handle: Option<ProcessHandle>,
}

impl<'a> Daemon<'a> {
    fn new(node: &'a Node, k: &Knobs) -> Result<Daemon<'a>> {
        let settings = node.dir().join("csync2-watch.toml");
        let mut text = k.settings.clone().unwrap_or_default();
        // Its metrics in the node's directory, not the machine's
        // /run/csync2-watch (as the testbed's WatchedCluster does).
        if !text
            .lines()
            .any(|l| l.trim_start().starts_with("metrics_dir"))
        {
            text.push_str(&format!(
                "\nmetrics_dir = {:?}\n",
                node.dir().join("metrics").display().to_string()
            ));
        }
        fs::write(&settings, text).with_context(|| format!("writing {}", settings.display()))?;
        Ok(Daemon {
            node,
            binary: k.binary.clone(),
            settings,
            log_filter: k.daemon_log.clone(),
            handle: None,
        })
    }

    /// Start it (the caller waits for its start-up).
    fn spawn(&mut self) -> Result<()> {
        if self.handle.is_some() {
            bail!("csync2-watch is already running on {}", self.node.name());
        }
        let mut cmd = self.node.command(&self.binary);
        cmd.arg("run")
            .arg("-N")
            .arg(self.node.name())
            .arg("-D")
            .arg(self.node.db_dir())
            .arg("--config")
            .arg(&self.settings)
            .arg("--state-dir")
            .arg(self.node.state_dir())
            .env("CSYNC2_WATCH_LOG", &self.log_filter);
        self.handle = Some(
            self.node
                .spawn_logged(cmd, "csync2-watch")
                .context("starting csync2-watch on node1")?,
        );
        Ok(())
    }

    /// SIGTERM, and wait for the exit: a clean stop.
    fn stop(&mut self) -> Result<()> {
        let Some(h) = self.handle.take() else {
            return Ok(());
        };
        h.signal(nix::sys::signal::Signal::SIGTERM)
            .context("SIGTERM to csync2-watch")?;
        match h.wait_exit(Duration::from_secs(120)) {
            Some(s) if s.success() => Ok(()),
            Some(s) => bail!(
                "csync2-watch exited with {s} on SIGTERM; its log ends:\n{}",
                tail(&h.log_text(), 30)
            ),
            None => {
                let log = h.log_text();
                let _ = h.kill();
                bail!(
                    "csync2-watch did not exit within 120 s of SIGTERM; its log ends:\n{}",
                    tail(&log, 30)
                )
            }
        }
    }

    fn pid(&self) -> Option<i32> {
        self.handle.as_ref().map(|h| h.pid() as i32)
    }

    fn alive(&self) -> bool {
        self.handle.as_ref().is_some_and(|h| h.is_running())
    }

    fn exit_status(&self) -> Option<ExitStatus> {
        self.handle.as_ref().and_then(|h| h.try_wait())
    }

    /// Its status.json, once the running daemon wrote it.
    fn status(&self) -> Option<Status> {
        let pid = self.pid()?;
        Status::read(self.node.state_dir())
            .ok()
            .filter(|s| s.pid as i32 == pid)
    }

    fn log(&self) -> String {
        fs::read_to_string(self.node.log_dir().join("csync2-watch.log")).unwrap_or_default()
    }

    /// Bail when it died.
    fn check_alive(&self) -> Result<()> {
        if self.handle.is_some() && !self.alive() {
            bail!(
                "csync2-watch on node1 died ({:?}); its log ends:\n{}",
                self.exit_status(),
                tail(&self.log(), 40)
            );
        }
        Ok(())
    }

    /// CPU of the daemon and its live descendants (reaped ones through
    /// cutime/cstime), and of the daemon process alone.
    fn cpu(&self) -> (Duration, Duration) {
        let Some(pid) = self.pid() else {
            return (Duration::ZERO, Duration::ZERO);
        };
        (tree_cpu(&proc_table(), pid), own_cpu(pid))
    }

    /// Is it running a csync2 client (a child other than its `csync2 -ii`)?
    fn client_running(&self) -> bool {
        let Some(d) = self.pid() else {
            return false;
        };
        proc_table()
            .iter()
            .any(|(&pid, info)| info.ppid == d && !is_server(pid))
    }
}

/// utime + stime of `pid` itself.
fn own_cpu(pid: i32) -> Duration {
    let Ok(stat) = fs::read(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    let Some(close) = stat.iter().rposition(|&b| b == b')') else {
        return Duration::ZERO;
    };
    let rest = String::from_utf8_lossy(&stat[close + 1..]).into_owned();
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state); utime is field 14, stime 15.
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    Duration::from_secs_f64((num(11) + num(12)) as f64 / hz)
}

fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------- the run

fn run(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let k = &ctx.knobs;
    if !nix::unistd::geteuid().is_root() {
        bail!("the reconcile benchmark needs root (namespaces, csync2 -ii, drop_caches)");
    }
    if !k.binary.is_file() {
        bail!(
            "{}: no csync2-watch binary there; run `cargo build --release` or set CSYNC2_WATCH_BIN",
            k.binary.display()
        );
    }
    common::use_bench_testbed_dir();
    report.machine = machine_line();
    report.load_start = loadavg();
    report.changed = k.changed;
    report.change_age = k.change_age;
    report.settings = match &k.settings {
        None => "the shipped defaults (empty settings file)".into(),
        Some(s) => format!("CSYNC2_WATCH_BENCH_SETTINGS: {}", s.replace('\n', "; ")),
    };
    ctx.say(format!("{}; binary {}", report.machine, k.binary.display()));
    let fuse_enabled = k.fuse && fuse_available(report);

    let t = Instant::now();
    let built = ensure_tree(ctx, &k.tree, k.files, k.dirs)?;
    ctx.say(format!(
        "tree {}: {} in {:.1}s",
        k.tree.display(),
        if built { "built" } else { "reused" },
        t.elapsed().as_secs_f64()
    ));

    let t = Instant::now();
    let tb = Testbed::start(TestbedOptions::nodes(k.nodes))
        .with_context(|| format!("starting the {}-node testbed", k.nodes))?;
    ctx.say(format!(
        "testbed {} under {} ready in {:.1}s",
        tb.id(),
        tb.run_dir().display(),
        t.elapsed().as_secs_f64()
    ));
    let result = measure(ctx, &tb, fuse_enabled, report);
    report.load_end = loadavg();
    let t = Instant::now();
    if let Err(e) = tb.teardown() {
        report.notes.push(format!("testbed teardown: {e}"));
    }
    ctx.say(format!(
        "testbed torn down in {:.1}s",
        t.elapsed().as_secs_f64()
    ));
    result
}

/// Everything on the testbed; the daemon and the servers are gone when it
/// returns (error or not), before the testbed is torn down.
fn measure(ctx: &Ctx, tb: &Testbed, fuse_enabled: bool, report: &mut Report) -> Result<()> {
    let k = &ctx.knobs;
    let node1 = tb.node(0);
    let peers: Vec<&Node> = tb.nodes()[1..].iter().collect();

    let t = Instant::now();
    copy_tree(&k.tree, node1.host_data_dir()).context("copying the tree to node1")?;
    if fuse_enabled {
        // The FUSE mount point, known to csync2 on every node from the
        // start.
        fs::create_dir(node1.host_path(FUSE_DIR))?;
    }
    let (dirs, files) = list_tree(node1.host_data_dir())?;
    report.tree_entries = dirs + files.len();
    report.tree = format!(
        "{} files, {} directories on every node (copied from {})",
        thousands(files.len()),
        thousands(dirs),
        k.tree.display()
    );
    report.cluster = format!(
        "{} csync2 nodes in network namespaces on this machine; csync2-watch on node1 only, \
         its {} peer(s) run only csync2 -ii",
        k.nodes,
        k.nodes - 1
    );
    ctx.say(format!(
        "node1 holds {} files in {} directories: copied in {:.1}s",
        thousands(files.len()),
        thousands(dirs),
        t.elapsed().as_secs_f64()
    ));
    let needed = 2 * 2 * k.change_reps * k.changed;
    if files.len() < needed {
        bail!(
            "the tree has {} files but the run changes {needed} distinct ones: \
             raise CSYNC2_WATCH_BENCH_FILES or lower CSYNC2_WATCH_BENCH_CHANGED",
            files.len()
        );
    }
    let mut targets = Targets::new(files);

    let t = Instant::now();
    tb.seed_from(0)
        .context("copying the tree to the peers and seeding the csync2 databases")?;
    ctx.say(format!(
        "copied to the peers and seeded every csync2 database (csync2 -cIr) in {:.1}s",
        t.elapsed().as_secs_f64()
    ));

    let t = Instant::now();
    let _servers: Vec<ProcessHandle> = peers
        .iter()
        .map(|n| n.start_csync2_server())
        .collect::<Result<_, _>>()
        .context("starting csync2 -ii on the peers")?;
    ctx.say(format!(
        "csync2 -ii running on the peers ({:.1}s)",
        t.elapsed().as_secs_f64()
    ));

    let mut d = Daemon::new(node1, k)?;
    let result = measure_daemon(ctx, tb, &mut d, &peers, &mut targets, fuse_enabled, report);
    if let Err(e) = &result {
        eprintln!(
            "{e:#}\nlast lines of node1's daemon log:\n{}",
            tail(&d.log(), 30)
        );
    }
    if let Err(e) = d.stop() {
        report.notes.push(format!("final stop: {e:#}"));
    }
    keep_log(ctx, tb, &d, report);
    result
}

fn measure_daemon(
    ctx: &Ctx,
    tb: &Testbed,
    d: &mut Daemon,
    peers: &[&Node],
    targets: &mut Targets,
    fuse_enabled: bool,
    report: &mut Report,
) -> Result<()> {
    let k = &ctx.knobs;
    let node1 = tb.node(0);

    // First start: the daemon fills its cache from csync2's database
    // (csync2 -L / -M), then reconciles.
    let t = Instant::now();
    ctx.say("starting csync2-watch on node1 (first start: the cache from csync2's database, then a reconcile)...");
    d.spawn()?;
    let (first, mode) = wait_started(ctx, d, None)?;
    report.mode = Some(mode);
    report.first_start = match (mode, &first.last_reconcile) {
        (Mode::Reconcile, Some(r)) => format!(
            "first start (cache filled from csync2's database, then reconcile {:?}): ready after \
             {:.1}s, reconcile {} ms (walk {} ms), {} walked, {} differing; cache_paths {}",
            r.reason,
            t.elapsed().as_secs_f64(),
            r.millis,
            r.walk_millis,
            r.walked,
            r.differing,
            first.cache_paths
        ),
        _ => format!(
            "first start (no reconcile in this binary; start-up full sync): ready after {:.1}s",
            t.elapsed().as_secs_f64()
        ),
    };
    ctx.say(&report.first_start);
    if mode == Mode::FullSync {
        ctx.say(
            "NOTE: this binary never reports a reconcile; measuring its full sync (csync2 -cr) in its place",
        );
    }
    settle(ctx, d, k.timeout)?;

    // 1. Nothing changed.
    nothing_changed(ctx, d, mode, report)?;

    // 3. Memory and the cache, loaded.
    if let Some(pid) = d.pid() {
        report.rss_kib = Some((status_kib(pid, "VmRSS:"), status_kib(pid, "VmHWM:")));
    }
    report.cache_paths = d.status().map(|s| s.cache_paths);
    report.journal_running = Some(journal_size(node1.state_dir()));
    report.csync2_db = fs::metadata(node1.db_dir().join(format!("{}.db3", node1.name())))
        .ok()
        .map(|m| m.len());

    // 2. Changed files.
    changed_files(ctx, d, mode, peers, targets, report)?;

    // 3. The cache on disk after a clean stop, checkpointed.
    settle(ctx, d, k.timeout)?;
    d.stop()?;
    report.journal_stopped = Some(journal_size(node1.state_dir()));
    match checkpoint(node1.state_dir()) {
        Ok(()) => report.journal_checkpointed = Some(journal_size(node1.state_dir())),
        Err(e) => report.notes.push(format!("WAL checkpoint: {e:#}")),
    }
    ctx.say(format!(
        "cache on disk after a clean stop: {}",
        report
            .journal_checkpointed
            .or(report.journal_stopped)
            .map_or("-".into(), |(db, wal)| format!(
                "journal.db {}, -wal {}",
                mib(db),
                mib(wal)
            ))
    ));

    // 4. A blind (FUSE) tree.
    if fuse_enabled {
        match fuse_tree(ctx, tb, d, mode, peers, report) {
            Ok(f) => report.fuse = Some(f),
            Err(e) if ctx.must_stop() => return Err(e),
            Err(e) => {
                ctx.say(format!("FUSE scenario failed: {e:#}"));
                report
                    .notes
                    .push(format!("the FUSE scenario failed, left out: {e:#}"));
            }
        }
    }
    Ok(())
}

/// Phase 1: find, csync2 -cr / and a requested reconcile, nothing
/// changed; warm (after an unmeasured warm-up of each), then cold.
fn nothing_changed(ctx: &Ctx, d: &Daemon, mode: Mode, report: &mut Report) -> Result<()> {
    let k = &ctx.knobs;
    let node1 = d.node;
    ctx.say("nothing changed, warm: warming up (find, csync2 -cr /, one request)...");
    time_find(ctx, node1)?;
    time_cr(ctx, node1)?;
    request(ctx, d, mode)?;
    settle(ctx, d, k.timeout)?;
    for cache in caches(k) {
        for r in 0..k.reps {
            ctx.check()?;
            prepare(cache)?;
            let f = time_find(ctx, node1)?;
            prepare(cache)?;
            let c = time_cr(ctx, node1)?;
            prepare(cache)?;
            let s = request(ctx, d, mode)?;
            settle(ctx, d, k.timeout)?;
            ctx.say(format!(
                "nothing changed, {} {}/{}: find {} ms, csync2 -cr / {} ms ({} ms CPU), {} {} ms \
                 (walk {}, {} ms CPU, {} walked, {} differing)",
                cache.name(),
                r + 1,
                k.reps,
                ms(f.wall),
                ms(c.wall),
                ms(c.cpu),
                if mode == Mode::Reconcile {
                    "reconcile"
                } else {
                    "full sync"
                },
                ms(s.wall),
                s.walk.map_or("-".into(), ms),
                ms(s.cpu),
                s.walked,
                s.differing
            ));
            report.find[cache.idx()].push(f);
            report.cr[cache.idx()].push(c);
            report.rec[cache.idx()].push(s);
        }
    }
    Ok(())
}

/// Phase 2: for each repetition, a restart with nothing changed, a restart
/// after changing files, and csync2 -cr / + -u after changing others.
fn changed_files(
    ctx: &Ctx,
    d: &mut Daemon,
    mode: Mode,
    peers: &[&Node],
    targets: &mut Targets,
    report: &mut Report,
) -> Result<()> {
    let k = &ctx.knobs;
    let node1 = d.node;
    for cache in caches(k) {
        for r in 0..k.change_reps {
            ctx.check()?;
            let label = format!("{} {}/{}", cache.name(), r + 1, k.change_reps);

            // A clean restart, nothing changed.
            settle(ctx, d, k.timeout)?;
            d.stop()?;
            prepare(cache)?;
            let s = start_measured(ctx, d, mode, peers, &[])?;
            ctx.say(format!(
                "restart, nothing changed, {label}: start-up {} {} ms (walk {}), {} differing, \
                 {} ms CPU since exec",
                if mode == Mode::Reconcile {
                    "reconcile"
                } else {
                    "full sync"
                },
                ms(s.wall),
                s.walk.map_or("-".into(), ms),
                s.differing,
                ms(s.cpu)
            ));
            report.start_same[cache.idx()].push(s);

            // Stop, change, start.
            settle(ctx, d, k.timeout)?;
            d.stop()?;
            let items = change_files(node1, targets, k.changed, "daemon-stopped")?;
            ctx.nap(k.change_age)?;
            prepare(cache)?;
            let s = start_measured(ctx, d, mode, peers, &items)?;
            ctx.say(format!(
                "restart, {} changed, {label}: start-up {} ms (walk {}), {} differing, {} ms CPU \
                 since exec; on every peer {} ms after the exec",
                k.changed,
                ms(s.wall),
                s.walk.map_or("-".into(), ms),
                s.differing,
                ms(s.cpu),
                s.arrival.map_or("-".into(), ms)
            ));
            report.start_changed[cache.idx()].push(s);

            // Stop, change, csync2 -cr / and -u.
            settle(ctx, d, k.timeout)?;
            d.stop()?;
            let items = change_files(node1, targets, k.changed, "csync2-cr")?;
            ctx.nap(k.change_age)?;
            prepare(cache)?;
            let c = csync2_changed(ctx, node1, peers, &items)?;
            ctx.say(format!(
                "csync2, {} changed, {label}: csync2 -cr / {} ms ({} ms CPU), csync2 -u {} ms; \
                 on every peer after {} ms",
                k.changed,
                ms(c.cr.wall),
                ms(c.cr.cpu),
                ms(c.u.wall),
                ms(c.arrival)
            ));
            report.cr_changed[cache.idx()].push(c);

            // The daemon catches up with what csync2 did while it was
            // down (unmeasured).
            d.spawn()?;
            let (s, _) = wait_started(ctx, d, Some(mode))?;
            report.catch_up.push(match &s.last_reconcile {
                Some(r) if mode == Mode::Reconcile => format!(
                    "{label}: {} differing, {} marked, {} ms",
                    r.differing, r.marked, r.millis
                ),
                _ => format!("{label}: started"),
            });
        }
    }
    Ok(())
}

fn caches(k: &Knobs) -> Vec<Cache> {
    if k.cold {
        vec![Cache::Warm, Cache::Cold]
    } else {
        vec![Cache::Warm]
    }
}

/// Before a measured run: nothing when warm; flush and drop the page,
/// dentry and inode caches when cold.
fn prepare(cache: Cache) -> Result<()> {
    if cache == Cache::Cold {
        // SAFETY: sync(2) takes no arguments and cannot fail.
        unsafe { libc::sync() };
        fs::write("/proc/sys/vm/drop_caches", b"3")
            .context("writing 3 to /proc/sys/vm/drop_caches")?;
    }
    Ok(())
}

fn timed(f: &Finished, wall: Duration) -> Timed {
    Timed {
        wall,
        cpu: f.cpu,
        maxrss_kib: f.maxrss_kib,
    }
}

/// `find TREE > /dev/null` over node1's data, from the host.
fn time_find(ctx: &Ctx, node1: &Node) -> Result<Timed> {
    let mut cmd = std::process::Command::new("find");
    cmd.arg(node1.host_data_dir());
    let t = Instant::now();
    let f = ctx.bounded(cmd, "find")?;
    let wall = t.elapsed();
    if !f.status.success() {
        bail!(
            "find {} failed ({}): {}",
            node1.host_data_dir().display(),
            f.status,
            last_line(&f.stderr)
        );
    }
    Ok(timed(&f, wall))
}

/// `csync2 -cr /` on node1.
fn time_cr(ctx: &Ctx, node1: &Node) -> Result<Timed> {
    let t = Instant::now();
    let f = ctx.bounded(node1.csync2(["-cr", "/"]), "csync2 -cr / on node1")?;
    let wall = t.elapsed();
    if !f.status.success() {
        bail!(
            "csync2 -cr / on node1 failed ({}): {}",
            f.status,
            last_line(&f.stderr)
        );
    }
    Ok(timed(&f, wall))
}

/// Rewrite `n` files never changed before with new content (a new size,
/// so that even a same-second mtime shows in csync2's check text).
fn change_files(
    node1: &Node,
    targets: &mut Targets,
    n: usize,
    label: &str,
) -> Result<Vec<(PathBuf, Vec<u8>)>> {
    (0..n)
        .map(|i| {
            let rel = targets.next();
            let content = change_content(label, i);
            let p = node1.host_path(&rel);
            fs::write(&p, &content).with_context(|| format!("writing {}", p.display()))?;
            Ok((rel, content))
        })
        .collect()
}

/// Poll the peers' copies every 10 ms until each holds its content;
/// returns the time since `t0`. Each poll stops at the first copy still
/// missing, so polling costs little while nothing has arrived.
fn wait_all_arrived(
    ctx: &Ctx,
    peers: &[&Node],
    items: &[(PathBuf, Vec<u8>)],
    t0: Instant,
    timeout: Duration,
    abort: &AtomicBool,
) -> Result<Duration> {
    let mut missing: Vec<(PathBuf, usize)> = peers
        .iter()
        .flat_map(|n| {
            items
                .iter()
                .enumerate()
                .map(|(i, (rel, _))| (n.host_path(rel), i))
        })
        .collect();
    let total = missing.len();
    loop {
        while let Some((p, i)) = missing.last() {
            if fs::read(p).is_ok_and(|got| got == items[*i].1) {
                missing.pop();
            } else {
                break;
            }
        }
        if missing.is_empty() {
            return Ok(t0.elapsed());
        }
        ctx.check()?;
        if abort.load(Ordering::Relaxed) {
            bail!("aborted");
        }
        if t0.elapsed() > timeout {
            bail!(
                "{} of {total} copies still missing or different on the peers {:?} after the \
                 change, e.g. {}",
                missing.len(),
                timeout,
                missing[0].0.display()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Run `f` while a thread waits for `items` on the peers (from `t0`).
fn with_arrival<T>(
    ctx: &Ctx,
    peers: &[&Node],
    items: &[(PathBuf, Vec<u8>)],
    t0: Instant,
    f: impl FnOnce() -> Result<T>,
) -> Result<(T, Option<Duration>)> {
    if items.is_empty() {
        return Ok((f()?, None));
    }
    let abort = AtomicBool::new(false);
    std::thread::scope(|s| {
        let poller = s.spawn(|| wait_all_arrived(ctx, peers, items, t0, ctx.knobs.timeout, &abort));
        let out = f();
        if out.is_err() {
            abort.store(true, Ordering::Relaxed);
        }
        let arrival = poller
            .join()
            .unwrap_or_else(|_| Err(anyhow!("the arrival poller panicked")));
        let out = out?;
        Ok((
            out,
            Some(arrival.context("waiting for the changed files on the peers")?),
        ))
    })
}

/// `csync2 -cr /` then `csync2 -u` on node1 (the daemon stopped), until
/// every peer holds `items`.
fn csync2_changed(
    ctx: &Ctx,
    node1: &Node,
    peers: &[&Node],
    items: &[(PathBuf, Vec<u8>)],
) -> Result<Csync2Changed> {
    let t0 = Instant::now();
    let ((cr, u), arrival) = with_arrival(ctx, peers, items, t0, || {
        let cr = time_cr(ctx, node1)?;
        let t = Instant::now();
        let f = ctx.bounded(node1.csync2(["-u"]), "csync2 -u on node1")?;
        let wall = t.elapsed();
        if !f.status.success() {
            bail!(
                "csync2 -u on node1 failed ({}): {}",
                f.status,
                last_line(&f.stderr)
            );
        }
        Ok((cr, timed(&f, wall)))
    })?;
    Ok(Csync2Changed {
        cr,
        u,
        arrival: arrival.unwrap_or_default(),
    })
}

/// Wait until the daemon just spawned finished its start-up: a reconcile
/// whose reason says start-up, or (a binary without reconciles) its
/// start-up full sync. With `mode` unknown (the first start), a full sync
/// with no reconcile 3 s after it decides for [`Mode::FullSync`].
fn wait_started(ctx: &Ctx, d: &Daemon, mode: Option<Mode>) -> Result<(Status, Mode)> {
    let t0 = Instant::now();
    let mut full_sync_seen: Option<Instant> = None;
    loop {
        d.check_alive()?;
        if let Some(s) = d.status() {
            let startup = s.counters.reconciles >= 1
                && s.last_reconcile
                    .as_ref()
                    .is_some_and(|r| r.reason.to_lowercase().contains("start"));
            if startup && mode != Some(Mode::FullSync) {
                return Ok((s, Mode::Reconcile));
            }
            if s.last_full_sync.is_some() {
                match mode {
                    Some(Mode::FullSync) => return Ok((s, Mode::FullSync)),
                    Some(Mode::Reconcile) => {}
                    None => {
                        let seen = *full_sync_seen.get_or_insert_with(Instant::now);
                        if seen.elapsed() > Duration::from_secs(3) {
                            return Ok((s, Mode::FullSync));
                        }
                    }
                }
            }
        }
        ctx.check()?;
        if t0.elapsed() > ctx.knobs.timeout {
            bail!(
                "csync2-watch on node1 did not finish its start-up {} within {:?}; its log ends:\n{}",
                mode.map_or("reconcile or full sync", Mode::what),
                ctx.knobs.timeout,
                tail(&d.log(), 40)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn sample_of(s: &Status, mode: Mode) -> Sample {
    let mut out = Sample {
        wall: Duration::ZERO,
        walk: None,
        seen: Duration::ZERO,
        cpu: Duration::ZERO,
        own_cpu: Duration::ZERO,
        walked: 0,
        differing: 0,
        marked: 0,
        ok: false,
        reason: String::new(),
        runs: Runs::default(),
        arrival: None,
    };
    match mode {
        Mode::Reconcile => {
            if let Some(r) = &s.last_reconcile {
                out.wall = Duration::from_millis(r.millis);
                out.walk = Some(Duration::from_millis(r.walk_millis));
                out.walked = r.walked;
                out.differing = r.differing;
                out.marked = r.marked;
                out.ok = r.ok;
                out.reason = r.reason.clone();
            }
        }
        Mode::FullSync => {
            if let Some(r) = &s.last_full_sync {
                out.wall = Duration::from_millis(r.millis);
                out.walked = r.paths;
                out.marked = r.marked;
                out.ok = r.ok;
                out.reason = "full sync".into();
            }
        }
    }
    out
}

/// Start the (stopped) daemon and measure its start-up reconcile; with
/// `items`, also until every peer holds them.
fn start_measured(
    ctx: &Ctx,
    d: &mut Daemon,
    mode: Mode,
    peers: &[&Node],
    items: &[(PathBuf, Vec<u8>)],
) -> Result<Sample> {
    let t0 = Instant::now();
    d.spawn()?;
    let d: &Daemon = d;
    let ((s, seen, cpu), arrival) = with_arrival(ctx, peers, items, t0, || {
        let (s, _) = wait_started(ctx, d, Some(mode))?;
        let seen = t0.elapsed();
        Ok((s, seen, d.cpu()))
    })?;
    let mut out = sample_of(&s, mode);
    out.seen = seen;
    out.cpu = cpu.0;
    out.own_cpu = cpu.1;
    out.runs = Runs::of(&s);
    out.arrival = arrival;
    if mode == Mode::Reconcile && out.differing < items.len() as u64 {
        ctx.say(format!(
            "warning: the start-up reconcile found {} differing paths, fewer than the {} changed",
            out.differing,
            items.len()
        ));
    }
    Ok(out)
}

/// Ask the running daemon for a reconcile (`csync2-watch sync --full`) and
/// wait until status.json shows it ended.
fn request(ctx: &Ctx, d: &Daemon, mode: Mode) -> Result<Sample> {
    let node = d.node;
    let before = d
        .status()
        .ok_or_else(|| anyhow!("no status.json from node1's daemon"))?;
    let n0 = mode.done(&before);
    let runs0 = Runs::of(&before);
    let (cpu0, own0) = d.cpu();
    let t0 = Instant::now();
    let mut cmd = node.command(&d.binary);
    cmd.arg("sync")
        .arg("--full")
        .arg("-N")
        .arg(node.name())
        .arg("--state-dir")
        .arg(node.state_dir());
    let f = ctx.bounded(cmd, "csync2-watch sync --full")?;
    // It gives up after 10 s when the daemon is busy: the request stays
    // queued, so wait on regardless and mention it only if nothing comes.
    let sync_said = if f.status.success() {
        String::new()
    } else {
        format!(
            " (csync2-watch sync --full: {}: {})",
            f.status,
            last_line(&f.stderr)
        )
    };
    loop {
        d.check_alive()?;
        if let Some(s) = d.status().filter(|s| mode.done(s) > n0) {
            let seen = t0.elapsed();
            let (cpu1, own1) = d.cpu();
            let mut out = sample_of(&s, mode);
            out.seen = seen;
            out.cpu = cpu1.saturating_sub(cpu0);
            out.own_cpu = own1.saturating_sub(own0);
            out.runs = Runs::of(&s).minus(runs0);
            if mode.done(&s) > n0 + 1 {
                ctx.say(format!(
                    "warning: {} {}s ended during one request",
                    mode.done(&s) - n0,
                    mode.what()
                ));
            }
            return Ok(out);
        }
        ctx.check()?;
        if t0.elapsed() > ctx.knobs.timeout {
            bail!(
                "no {} ended within {:?} of csync2-watch sync --full{sync_said}",
                mode.what(),
                ctx.knobs.timeout
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Wait until the daemon is idle with nothing queued, runs no csync2
/// client and no full check, and its csync2 run counters stayed put for
/// 1.5 s (status.json is written at most every 500 ms).
fn settle(ctx: &Ctx, d: &Daemon, within: Duration) -> Result<()> {
    let t0 = Instant::now();
    let mut last: Option<(Vec<u64>, Instant)> = None;
    loop {
        ctx.check()?;
        d.check_alive()?;
        let status = d.status();
        let quiet = status
            .as_ref()
            .is_some_and(|s| s.state == "idle" && s.queue.pending == 0 && !s.full_check_running)
            && !d.client_running();
        let sig: Vec<u64> = status.as_ref().map_or(vec![u64::MAX], |s| {
            let c = &s.counters;
            vec![
                c.checks,
                c.marks,
                c.updates,
                c.verifies,
                c.full_syncs,
                c.reconciles,
                c.deep_checks,
            ]
        });
        match &last {
            Some((prev, since)) if quiet && *prev == sig => {
                if since.elapsed() >= Duration::from_millis(1500) {
                    return Ok(());
                }
            }
            _ => last = quiet.then(|| (sig, Instant::now())),
        }
        if t0.elapsed() > within {
            bail!(
                "csync2-watch on node1 did not settle within {within:?}: {}",
                status.map_or("no status".into(), |s| format!(
                    "{} ({} queued, full check running: {})",
                    s.state, s.queue.pending, s.full_check_running
                ))
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------- the journal

/// Sizes of `journal.db` and `journal.db-wal` (0 when absent).
fn journal_size(state_dir: &Path) -> (u64, u64) {
    let size = |name: &str| fs::metadata(state_dir.join(name)).map_or(0, |m| m.len());
    (size("journal.db"), size("journal.db-wal"))
}

/// Checkpoint the stopped daemon's journal into `journal.db` and truncate
/// its WAL.
fn checkpoint(state_dir: &Path) -> Result<()> {
    let path = state_dir.join("journal.db");
    let db =
        rusqlite::Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let (busy, _, _): (i64, i64, i64) = db
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .context("PRAGMA wal_checkpoint(TRUNCATE)")?;
    if busy != 0 {
        bail!("the checkpoint of {} was blocked", path.display());
    }
    Ok(())
}

// ---------------------------------------------------------------- FUSE

/// Is bindfs there? Says why not in the report.
fn fuse_available(report: &mut Report) -> bool {
    let ok = std::process::Command::new("bindfs")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        report
            .notes
            .push("the FUSE scenario was skipped: no bindfs (scripts/setup.sh installs it)".into());
    }
    ok
}

/// The default interval at which the daemon reconciles trees inotify cannot
/// see, from the shipped settings file: `blind_poll_interval`, else
/// (before issue 11) `network_fs_interval`.
fn default_blind_interval() -> (String, Duration) {
    let text = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/csync2-watch.toml"),
    )
    .unwrap_or_default();
    for key in ["blind_poll_interval", "network_fs_interval"] {
        let found = text.lines().find_map(|l| {
            let l = l.trim_start_matches(['#', ' ']);
            let v = l.strip_prefix(key)?.trim_start().strip_prefix('=')?;
            let v = v.trim().trim_matches('"');
            humantime::parse_duration(v)
                .ok()
                .map(|d| (v.to_string(), d))
        });
        if let Some((v, d)) = found {
            return (format!("{key} = {v}"), d);
        }
    }
    ("unknown (assumed 5m)".into(), Duration::from_secs(300))
}

/// Phase 4: bindfs over a backing directory at DATA/bench-fuse on node1
/// (in its mount namespace), the daemon restarted to see it, then new
/// files written through the backing directory, one at a time.
fn fuse_tree(
    ctx: &Ctx,
    tb: &Testbed,
    d: &mut Daemon,
    mode: Mode,
    peers: &[&Node],
    report: &mut Report,
) -> Result<Fuse> {
    let k = &ctx.knobs;
    let node1 = tb.node(0);
    let (interval_text, interval) = default_blind_interval();
    let backing = node1.dir().join("fuse-backing");
    fs::create_dir_all(&backing)?;
    let mount_point = node1.path(FUSE_DIR);
    ctx.say(format!(
        "FUSE: bindfs {} at {} on node1; the daemon's default {interval_text}",
        backing.display(),
        mount_point.display()
    ));
    // Foreground, so that the testbed owns (and ends) it.
    let mut cmd = node1.command("bindfs");
    cmd.arg("-f").arg(&backing).arg(&mount_point);
    let bindfs = node1
        .spawn_logged(cmd, "bindfs")
        .context("starting bindfs")?;
    let mounted = || {
        fs::read_to_string(format!("/proc/{}/mountinfo", bindfs.pid())).is_ok_and(|m| {
            m.lines()
                .any(|l| l.contains(" fuse") && l.contains(&*mount_point.to_string_lossy()))
        })
    };
    let t = Instant::now();
    while !mounted() {
        ctx.check()?;
        if !bindfs.is_running() || t.elapsed() > Duration::from_secs(30) {
            bail!(
                "bindfs did not mount within 30 s: {}",
                bindfs.log_text().trim()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let result = (|| -> Result<Fuse> {
        d.spawn()?;
        wait_started(ctx, d, Some(mode))?;
        settle(ctx, d, k.timeout)?;
        let network_fs = d
            .status()
            .map(|s| {
                s.watch
                    .network_fs
                    .iter()
                    .map(|(p, t)| format!("{} ({t})", p.display()))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        if network_fs.is_empty() {
            bail!("the daemon does not list the bindfs mount among its blind (network_fs) trees");
        }
        let per_sample = 2 * interval + Duration::from_secs(60);
        let mut samples = Vec::new();
        let mut reasons = Vec::new();
        for i in 0..k.fuse_samples {
            ctx.check()?;
            // Land the writes at different phases of the poll.
            ctx.nap(Duration::from_millis(500 + 1700 * i as u64 % 5000))?;
            let before = d.status().map(|s| s.counters.reconciles).unwrap_or(0);
            let name = format!("blind-{i}");
            let content = change_content("fuse", i);
            let rel = PathBuf::from(FUSE_DIR).join(&name);
            let t0 = Instant::now();
            fs::write(backing.join(&name), &content)?;
            let abort = AtomicBool::new(false);
            let lat = wait_all_arrived(ctx, peers, &[(rel, content)], t0, per_sample, &abort)
                .with_context(|| {
                    format!("FUSE sample {i} (written through the backing directory)")
                })?;
            ctx.say(format!(
                "FUSE {}/{}: on every peer {:.1} s after the write",
                i + 1,
                k.fuse_samples,
                lat.as_secs_f64()
            ));
            samples.push(lat);
            if let Some(s) = d.status() {
                if s.counters.reconciles > before {
                    if let Some(r) = &s.last_reconcile {
                        reasons.push(format!("{:?} ({} ms)", r.reason, r.millis));
                    }
                }
            }
            settle(ctx, d, k.timeout)?;
        }
        Ok(Fuse {
            interval: interval_text,
            network_fs,
            samples,
            reasons,
        })
    })();
    let stopped = d.stop();
    let _ = node1
        .command("fusermount")
        .arg("-u")
        .arg(&mount_point)
        .output();
    drop(bindfs);
    stopped?;
    if let Ok(f) = &result {
        report.notes.push(format!(
            "FUSE: the daemon listed as blind: {}",
            f.network_fs
        ));
    }
    result
}

// ---------------------------------------------------------------- logs

fn keep_log(ctx: &Ctx, tb: &Testbed, d: &Daemon, report: &mut Report) {
    let dir = &ctx.knobs.logs;
    if let Err(e) = fs::create_dir_all(dir) {
        report.notes.push(format!(
            "cannot keep the daemon's log in {}: {e}",
            dir.display()
        ));
        return;
    }
    let path = dir.join(format!("{}-node1-reconcile.log", tb.id()));
    match fs::write(&path, d.log()) {
        Ok(()) => report.logs.push(path),
        Err(e) => report
            .notes
            .push(format!("cannot write {}: {e}", path.display())),
    }
}

// ---------------------------------------------------------------- report

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn range(v: &[Duration]) -> String {
    match (v.iter().min(), v.iter().max()) {
        (Some(a), Some(b)) => format!("{}-{}", ms(*a), ms(*b)),
        _ => "-".into(),
    }
}

fn x(a: Duration, b: Duration) -> String {
    if b.is_zero() {
        return "-".into();
    }
    format!("{:.3}x", a.as_secs_f64() / b.as_secs_f64())
}

/// One row of the main table.
struct Row<'a> {
    what: String,
    cache: Cache,
    wall: Vec<Duration>,
    cpu: Option<Vec<Duration>>,
    /// The daemon process's own share of `cpu` (its threads: walk,
    /// compare, cache), without its csync2 children.
    own: Option<Vec<Duration>>,
    /// Baseline medians (wall, CPU) and its name.
    base: Option<(Duration, Option<Duration>, &'a str)>,
}

impl<'a> Row<'a> {
    /// A row of the daemon's own samples (wall, CPU, its own CPU).
    fn of_samples(
        what: String,
        cache: Cache,
        samples: &[Sample],
        base: Option<(Duration, Option<Duration>, &'a str)>,
    ) -> Row<'a> {
        Row {
            what,
            cache,
            wall: samples.iter().map(|s| s.wall).collect(),
            cpu: Some(samples.iter().map(|s| s.cpu).collect()),
            own: Some(samples.iter().map(|s| s.own_cpu).collect()),
            base,
        }
    }
}

impl Row<'_> {
    fn print(&self) {
        if self.wall.is_empty() {
            return;
        }
        let wall = median(&self.wall);
        let cpu = self.cpu.as_ref().map(|c| median(c));
        let (wr, cr, base) = match self.base {
            None => (
                "1.000x".into(),
                cpu.map_or("-".into(), |_| "1.000x".into()),
                "itself",
            ),
            Some((bw, bc, name)) => (
                x(wall, bw),
                match (cpu, bc) {
                    (Some(c), Some(b)) => x(c, b),
                    _ => "-".into(),
                },
                name,
            ),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            self.what,
            self.cache.name(),
            self.wall.len(),
            ms(wall),
            range(&self.wall),
            cpu.map_or("-".into(), ms),
            self.own.as_ref().map_or("-".into(), |o| ms(median(o))),
            wr,
            cr,
            base
        );
    }
}

impl Report {
    fn print(&self) {
        let mode = self.mode.unwrap_or(Mode::Reconcile);
        let rec_name = if mode == Mode::Reconcile {
            "reconcile"
        } else {
            "full sync (no reconcile in this binary)"
        };
        let n = self.changed;
        println!();
        println!("## csync2-watch reconcile benchmark");
        println!();
        println!(
            "- machine: {}; load average {} at start, {} at end",
            self.machine,
            self.load_start,
            if self.load_end.is_empty() {
                loadavg()
            } else {
                self.load_end.clone()
            }
        );
        println!("- cluster: {}", self.cluster);
        println!("- tree: {}", self.tree);
        println!("- daemon: {}", self.settings);
        if !self.first_start.is_empty() {
            println!("- {}", self.first_start);
        }
        println!(
            "- changed files: {n} files rewritten (new content and size) with the daemon stopped, \
             {} ms before the measured start or `csync2 -cr /`",
            self.change_age.as_millis()
        );
        if mode == Mode::FullSync {
            println!(
                "- NOTE: this binary never reported a reconcile (status.json has no last_reconcile): \
                 the csync2-watch rows measure its full sync (csync2 -cr driven by the daemon) instead"
            );
        }
        println!(
            "- medians; cold: `sync; echo 3 > /proc/sys/vm/drop_caches` before each measured run; \
             wall: find/csync2 until reaped, a reconcile's own `millis` (walk: `walk_millis`); \
             CPU: find/csync2 rusage (wait4), the daemon's utime+stime+cutime+cstime with its \
             descendants (/proc) across the request until status.json showed the reconcile (it is \
             written at most twice a second: a `csync2 -u` right after may be in it; start-up rows: \
             since exec, start-up included); of which daemon: the daemon process alone (its \
             threads), without its csync2 children"
        );
        println!();
        println!(
            "| what | cache | n | wall ms | min-max ms | CPU ms | of which daemon ms | wall vs baseline | CPU vs baseline | baseline |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for cache in [Cache::Warm, Cache::Cold] {
            let i = cache.idx();
            let find_wall: Vec<Duration> = self.find[i].iter().map(|t| t.wall).collect();
            let find_cpu: Vec<Duration> = self.find[i].iter().map(|t| t.cpu).collect();
            let cr_wall: Vec<Duration> = self.cr[i].iter().map(|t| t.wall).collect();
            let cr_cpu: Vec<Duration> = self.cr[i].iter().map(|t| t.cpu).collect();
            let cr_base = (!cr_wall.is_empty()).then(|| {
                (
                    median(&cr_wall),
                    Some(median(&cr_cpu)),
                    "csync2 -cr /, nothing changed",
                )
            });
            let find_base =
                (!find_wall.is_empty()).then(|| (median(&find_wall), None, "find TREE"));
            Row {
                what: "`find TREE` (the walk floor)".into(),
                cache,
                wall: find_wall.clone(),
                cpu: Some(find_cpu),
                own: None,
                base: None,
            }
            .print();
            Row {
                what: "`csync2 -cr /`, nothing changed".into(),
                cache,
                wall: cr_wall.clone(),
                cpu: Some(cr_cpu.clone()),
                own: None,
                base: None,
            }
            .print();
            Row::of_samples(
                format!("{rec_name} (`sync --full`), nothing changed"),
                cache,
                &self.rec[i],
                cr_base,
            )
            .print();
            if mode == Mode::Reconcile {
                Row {
                    what: "  its walk and compare (`walk_millis`)".into(),
                    cache,
                    wall: self.rec[i].iter().filter_map(|s| s.walk).collect(),
                    cpu: None,
                    own: None,
                    base: find_base,
                }
                .print();
            }
            let crc_wall: Vec<Duration> = self.cr_changed[i].iter().map(|c| c.cr.wall).collect();
            let crc_cpu: Vec<Duration> = self.cr_changed[i].iter().map(|c| c.cr.cpu).collect();
            let crc_base = (!crc_wall.is_empty()).then(|| {
                (
                    median(&crc_wall),
                    Some(median(&crc_cpu)),
                    "csync2 -cr /, files changed",
                )
            });
            Row {
                what: format!("`csync2 -cr /`, {n} changed"),
                cache,
                wall: crc_wall,
                cpu: Some(crc_cpu),
                own: None,
                base: None,
            }
            .print();
            Row::of_samples(
                format!("start-up {rec_name}, nothing changed (CPU since exec)"),
                cache,
                &self.start_same[i],
                cr_base,
            )
            .print();
            Row::of_samples(
                format!("start-up {rec_name}, {n} changed (CPU since exec)"),
                cache,
                &self.start_changed[i],
                crc_base,
            )
            .print();
            if mode == Mode::Reconcile {
                Row {
                    what: "  its walk and compare (`walk_millis`)".into(),
                    cache,
                    wall: self.start_changed[i]
                        .iter()
                        .filter_map(|s| s.walk)
                        .collect(),
                    cpu: None,
                    own: None,
                    base: find_base,
                }
                .print();
            }
        }

        if self.cr_changed.iter().any(|v| !v.is_empty()) {
            println!();
            println!("Until every peer holds the {n} changed files:");
            println!();
            println!("| what | cache | n | ms | min-max ms | vs baseline |");
            println!("|---|---|---|---|---|---|");
            for cache in [Cache::Warm, Cache::Cold] {
                let i = cache.idx();
                let base: Vec<Duration> = self.cr_changed[i].iter().map(|c| c.arrival).collect();
                if base.is_empty() {
                    continue;
                }
                println!(
                    "| `csync2 -cr /; csync2 -u` (from the start of -cr) | {} | {} | {} | {} | 1.000x |",
                    cache.name(),
                    base.len(),
                    ms(median(&base)),
                    range(&base)
                );
                let d: Vec<Duration> = self.start_changed[i]
                    .iter()
                    .filter_map(|s| s.arrival)
                    .collect();
                if !d.is_empty() {
                    println!(
                        "| csync2-watch started after the changes (from its exec) | {} | {} | {} | {} | {} |",
                        cache.name(),
                        d.len(),
                        ms(median(&d)),
                        range(&d),
                        x(median(&d), median(&base))
                    );
                }
            }
        }

        println!();
        println!("| resource | value | vs baseline | baseline |");
        println!("|---|---|---|---|");
        let cr_rss = self.cr[0]
            .iter()
            .chain(&self.cr[1])
            .map(|t| t.maxrss_kib)
            .max();
        if let Some((rss, hwm)) = self.rss_kib {
            let vs = |v: u64| cr_rss.map_or("-".into(), |c| format!("{:.2}x", v as f64 / c as f64));
            let base = cr_rss.map_or("-".into(), |c| {
                format!(
                    "csync2 -cr / peak RSS (ru_maxrss) {:.1} MiB",
                    c as f64 / 1024.0
                )
            });
            println!(
                "| daemon VmRSS, cache loaded | {:.1} MiB | {} | {base} |",
                rss as f64 / 1024.0,
                vs(rss)
            );
            println!(
                "| daemon VmHWM (peak) | {:.1} MiB | {} | {base} |",
                hwm as f64 / 1024.0,
                vs(hwm)
            );
        }
        if let Some(c) = self.cache_paths {
            println!(
                "| stat cache entries (`cache_paths`) | {} | {:.3}x | entries in the tree ({}) |",
                thousands(c as usize),
                c as f64 / self.tree_entries.max(1) as f64,
                thousands(self.tree_entries)
            );
        }
        let db = self.csync2_db;
        let vs_db = |v: u64| {
            db.map_or("-".into(), |d| {
                format!("{:.2}x", v as f64 / d.max(1) as f64)
            })
        };
        let db_name = db.map_or("-".into(), |d| format!("csync2's database {}", mib(d)));
        for (label, v) in [
            ("journal.db + -wal, daemon running", self.journal_running),
            (
                "journal.db + -wal, after a clean stop",
                self.journal_stopped,
            ),
            (
                "journal.db + -wal, then checkpointed",
                self.journal_checkpointed,
            ),
        ] {
            if let Some((a, b)) = v {
                println!(
                    "| {label} | {} ({} + {}) | {} | {db_name} |",
                    mib(a + b),
                    mib(a),
                    mib(b),
                    vs_db(a + b)
                );
            }
        }

        if let Some(f) = &self.fuse {
            println!();
            println!(
                "Blind tree (bindfs, written through its backing directory, no inotify event), \
                 default {}:",
                f.interval
            );
            println!();
            println!("| what | n | median s | min-max s |");
            println!("|---|---|---|---|");
            let s = |d: Duration| format!("{:.1}", d.as_secs_f64());
            println!(
                "| write -> on every peer | {} | {} | {}-{} |",
                f.samples.len(),
                s(median(&f.samples)),
                s(*f.samples.iter().min().unwrap_or(&Duration::ZERO)),
                s(*f.samples.iter().max().unwrap_or(&Duration::ZERO))
            );
            if !f.reasons.is_empty() {
                println!();
                println!("  reconciles that found them: {}", f.reasons.join(", "));
            }
        }

        println!();
        println!("Details:");
        for cache in [Cache::Warm, Cache::Cold] {
            let i = cache.idx();
            for (what, v) in [
                ("requested", &self.rec[i]),
                ("start-up, nothing changed", &self.start_same[i]),
                ("start-up, files changed", &self.start_changed[i]),
            ] {
                if v.is_empty() {
                    continue;
                }
                let each: Vec<String> = v
                    .iter()
                    .map(|s| {
                        format!(
                            "{} ms (seen {}, CPU {} of which daemon {}; {} walked, {} differing, {} marked{}; {})",
                            ms(s.wall),
                            ms(s.seen),
                            ms(s.cpu),
                            ms(s.own_cpu),
                            s.walked,
                            s.differing,
                            s.marked,
                            if s.ok { "" } else { ", NOT ok" },
                            s.runs.describe()
                        )
                    })
                    .collect();
                println!(
                    "- {rec_name}, {what}, {}: {}",
                    cache.name(),
                    each.join(" | ")
                );
                if let Some(r) = v.first().map(|s| &s.reason) {
                    println!("  reason: {r:?}");
                }
            }
            if !self.cr_changed[i].is_empty() {
                let each: Vec<String> = self.cr_changed[i]
                    .iter()
                    .map(|c| {
                        format!(
                            "-cr {} ms ({} CPU), -u {} ms ({} CPU), peers {} ms",
                            ms(c.cr.wall),
                            ms(c.cr.cpu),
                            ms(c.u.wall),
                            ms(c.u.cpu),
                            ms(c.arrival)
                        )
                    })
                    .collect();
                println!(
                    "- csync2, files changed, {}: {}",
                    cache.name(),
                    each.join(" | ")
                );
            }
        }
        if !self.catch_up.is_empty() {
            println!(
                "- the daemon's start after each csync2 run (unmeasured; it catches up with csync2's \
                 work): {}",
                self.catch_up.join("; ")
            );
        }
        println!("- start-up rows count the CPU since exec; the csync2 runs listed for them are since exec too");

        println!();
        println!("Targets:");
        let warm_cr: Vec<Duration> = self.cr[0].iter().map(|t| t.wall).collect();
        let warm_rec: Vec<Duration> = self.rec[0].iter().map(|s| s.wall).collect();
        if !warm_cr.is_empty() && !warm_rec.is_empty() {
            let speedup =
                median(&warm_cr).as_secs_f64() / median(&warm_rec).as_secs_f64().max(1e-4);
            let cpu_cr: Vec<Duration> = self.cr[0].iter().map(|t| t.cpu).collect();
            let cpu_rec: Vec<Duration> = self.rec[0].iter().map(|s| s.cpu).collect();
            let cpu_speedup =
                median(&cpu_cr).as_secs_f64() / median(&cpu_rec).as_secs_f64().max(1e-4);
            println!(
                "- warm {rec_name} with nothing changed at least {TARGET_SPEEDUP:.0}x faster than \
                 `csync2 -cr /` (wall): {speedup:.1}x ({} vs {} ms) -> {}; CPU {cpu_speedup:.1}x \
                 ({} vs {} ms)",
                ms(median(&warm_rec)),
                ms(median(&warm_cr)),
                if speedup >= TARGET_SPEEDUP {
                    "MET"
                } else {
                    "NOT MET"
                },
                ms(median(&cpu_rec)),
                ms(median(&cpu_cr))
            );
        }
        for l in &self.logs {
            println!("daemon log kept: {}", l.display());
        }
        for n in &self.notes {
            println!("note: {n}");
        }
    }
}
