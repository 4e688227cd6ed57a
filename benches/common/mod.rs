//! What the cluster and reconcile benchmarks share (included by both with
//! `mod common;`): the run's clock and interrupt flag, knobs, the benchmark
//! tree, changed files and their arrival on the peers, bounded csync2 runs
//! with their rusage, CPU and memory from /proc, and number formatting.
//! Not every bench uses every item.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use csync2_watch::process;
use csync2_watch_testbed::{Node, BASE_DIR_ENV};

pub const DEFAULT_FILES: usize = 170_000;
/// The watch benchmark's tree: the root, 10 top, 100 mid and 16,900 leaf
/// directories.
pub const DEFAULT_DIRS: usize = 17_011;
pub const TOP: usize = 10;
pub const MID: usize = 10;
pub const FILES_PER_MID: usize = 10;
pub const DEFAULT_TREE: &str = "/var/tmp/csync2-watch-bench-tree";
pub const DEFAULT_TESTBED_DIR: &str = "/var/tmp/csync2-watch-bench-testbeds";

/// Whether the benchmark was asked for (`cargo bench` passes `--bench`;
/// `cargo test --all-targets` would run a bench target once without it).
pub fn asked_to_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Log the benchmark's own tracing (testbed) to stderr, filtered by
/// `CSYNC2_WATCH_BENCH_LOG` (default `warn`).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CSYNC2_WATCH_BENCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// The run's clock and its SIGINT/SIGTERM flag.
pub struct Bench {
    pub started: Instant,
    pub interrupted: Arc<AtomicBool>,
}

impl Bench {
    /// Start the clock and catch SIGINT and SIGTERM (the run then stops at
    /// its next check and tears its testbed down).
    pub fn new() -> Bench {
        let interrupted = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(sig, Arc::clone(&interrupted)).expect("signal handler");
        }
        Bench {
            started: Instant::now(),
            interrupted,
        }
    }

    pub fn say(&self, msg: impl AsRef<str>) {
        println!(
            "[{:>7.1}s] {}",
            self.started.elapsed().as_secs_f64(),
            msg.as_ref()
        );
    }

    pub fn check_interrupt(&self) -> Result<()> {
        if self.interrupted.load(Ordering::Relaxed) {
            bail!("interrupted (SIGINT/SIGTERM)");
        }
        Ok(())
    }

    /// Sleep `d`, waking early (with an error) when interrupted.
    pub fn nap(&self, d: Duration) -> Result<()> {
        let end = Instant::now() + d;
        loop {
            self.check_interrupt()?;
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            std::thread::sleep((end - now).min(Duration::from_millis(50)));
        }
    }
}

pub fn knob<T: FromStr>(name: &str, default: T) -> Result<T> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(v) if v.trim().is_empty() => Ok(default),
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| anyhow!("{name}={v:?}: not a number; unset it or give e.g. {name}=10")),
    }
}

/// The tree's place and size from `CSYNC2_WATCH_BENCH_TREE`,
/// `CSYNC2_WATCH_BENCH_FILES` and `CSYNC2_WATCH_BENCH_DIRS`: the default
/// size lives at the base path, other sizes beside it as
/// `<tree>-<files>f-<dirs>d`.
pub fn tree_from_env() -> Result<(PathBuf, usize, usize)> {
    let base = std::env::var_os("CSYNC2_WATCH_BENCH_TREE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_TREE));
    let files = knob("CSYNC2_WATCH_BENCH_FILES", DEFAULT_FILES)?;
    let dirs = knob("CSYNC2_WATCH_BENCH_DIRS", DEFAULT_DIRS)?;
    if dirs < 1 + TOP + TOP * MID {
        bail!(
            "CSYNC2_WATCH_BENCH_DIRS={dirs}: the tree has at least {} directories \
             (root, {TOP} top, {} mid); give a larger number",
            1 + TOP + TOP * MID,
            TOP * MID
        );
    }
    let tree = if (files, dirs) == (DEFAULT_FILES, DEFAULT_DIRS) {
        base
    } else {
        let mut name = base.into_os_string();
        name.push(format!("-{files}f-{dirs}d"));
        PathBuf::from(name)
    };
    Ok((tree, files, dirs))
}

/// Testbeds go under `CSYNC2_WATCH_TESTBED_DIR`, by default here
/// [`DEFAULT_TESTBED_DIR`]: copies of the tree need a disk, not a tmpfs.
/// Call before any thread starts.
pub fn use_bench_testbed_dir() {
    if std::env::var_os(BASE_DIR_ENV).is_none_or(|v| v.is_empty()) {
        // SAFETY: set before any thread of ours starts.
        std::env::set_var(BASE_DIR_ENV, DEFAULT_TESTBED_DIR);
    }
}

/// `cp -a TREE/. DEST`, then drop the tree's `.complete` marker from the
/// copy.
pub fn copy_tree(tree: &Path, dest: &Path) -> Result<()> {
    let mut src = tree.to_path_buf().into_os_string();
    src.push("/.");
    let out = Command::new("cp")
        .arg("-a")
        .arg("--")
        .arg(&src)
        .arg(dest)
        .stdin(Stdio::null())
        .output()
        .context("running cp")?;
    if !out.status.success() {
        bail!(
            "copying {} to {}: {}",
            tree.display(),
            dest.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let _ = fs::remove_file(dest.join(".complete"));
    Ok(())
}

/// Is `pid` a `csync2 -ii` (a server, not a client run)?
pub fn is_server(pid: i32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| b.split(|&c| c == 0).any(|a| a == b"-ii"))
        .unwrap_or(false)
}

// ---------------------------------------------------------------- changes

pub const MS: Duration = Duration::from_millis(1);

/// The files to change: every regular file of the tree in a fixed
/// pseudo-random order, each used once (a file is never changed twice, so
/// csync2's whole-second mtimes never hide a change).
pub struct Targets {
    files: Vec<PathBuf>,
    next: usize,
}

impl Targets {
    pub fn new(mut files: Vec<PathBuf>) -> Targets {
        files.sort();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in (1..files.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            files.swap(i, (x % (i as u64 + 1)) as usize);
        }
        Targets { files, next: 0 }
    }

    pub fn next(&mut self) -> PathBuf {
        let p = self.files[self.next % self.files.len()].clone();
        self.next += 1;
        p
    }
}

pub fn change_content(label: &str, i: usize) -> Vec<u8> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("csync2-watch benchmark: {label} change {i} at {nanos}\n").into_bytes()
}

/// Poll the peers' copies (from the host) every `every` until each holds
/// its content; returns the time since `t0`.
pub fn wait_arrival(
    b: &Bench,
    peers: &[&Node],
    items: &[(PathBuf, Vec<u8>)],
    t0: Instant,
    timeout: Duration,
    every: Duration,
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
    let deadline = t0 + timeout;
    loop {
        missing.retain(|(p, i)| fs::read(p).map_or(true, |got| got != items[*i].1));
        if missing.is_empty() {
            return Ok(t0.elapsed());
        }
        b.check_interrupt()?;
        if Instant::now() > deadline {
            bail!(
                "{} of {total} copies still missing or different on the peers {:?} after the write, e.g. {}",
                missing.len(),
                timeout,
                missing[0].0.display()
            );
        }
        std::thread::sleep(every);
    }
}

// ---------------------------------------------------------------- processes

pub struct Finished {
    pub status: ExitStatus,
    pub stderr: String,
    /// utime + stime of the process and its reaped descendants.
    pub cpu: Duration,
    pub maxrss_kib: u64,
}

/// Run `cmd` (stdout discarded, stderr kept) in its own process group,
/// reaped with wait4 for its exact CPU time and peak RSS. Killed (the whole
/// group) when it outlives `timeout` or `abort` says so. Waits on a pidfd,
/// so the exit is seen at once (no polling delay in the latency).
pub fn run_bounded(
    mut cmd: Command,
    what: &str,
    timeout: Duration,
    abort: &dyn Fn() -> bool,
) -> Result<Finished> {
    let mut err = tempfile::tempfile().context("a temporary file for stderr")?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err.try_clone()?)
        .process_group(0);
    let started = Instant::now();
    let child = cmd.spawn().with_context(|| format!("starting {what}"))?;
    let pid = child.id();
    let pidfd = process::pidfd_open(pid).ok();
    let mut killed = None;
    loop {
        let elapsed = started.elapsed();
        if abort() {
            killed = Some("aborted");
        } else if elapsed >= timeout {
            killed = Some("timed out");
        }
        if killed.is_some() {
            // Not reaped yet (only we reap it): the group id is still its.
            let _ = process::kill_group(pid, libc::SIGKILL);
            break;
        }
        let slice = (timeout - elapsed).min(Duration::from_millis(100));
        match &pidfd {
            Some(fd) => {
                let mut pfd = libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                let n = unsafe { libc::poll(&mut pfd, 1, slice.as_millis().max(1) as i32) };
                if n > 0 {
                    break;
                }
            }
            None => {
                // No pidfd (old kernel): poll for the exit without reaping.
                if process::has_exited(pid).unwrap_or(true) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    let mut raw = 0;
    // SAFETY: zeroed rusage is a valid out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers; pid is our unreaped child.
        let rc = unsafe { libc::wait4(pid as libc::pid_t, &mut raw, 0, &mut ru) };
        if rc == pid as libc::pid_t {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(anyhow!(e).context(format!("waiting for {what}")));
        }
    }
    drop(child); // already reaped: dropping a Child neither waits nor kills
    if let Some(why) = killed {
        bail!("{what} {why} after {:.1}s", started.elapsed().as_secs_f64());
    }
    let mut stderr = String::new();
    err.seek(SeekFrom::Start(0))?;
    let mut bytes = Vec::new();
    err.read_to_end(&mut bytes)?;
    stderr.push_str(&String::from_utf8_lossy(&bytes));
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(Finished {
        status: ExitStatus::from_raw(raw),
        stderr,
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        maxrss_kib: ru.ru_maxrss as u64,
    })
}

pub fn last_line(s: &str) -> String {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

pub struct ProcInfo {
    pub ppid: i32,
    /// utime + stime + cutime + cstime, clock ticks.
    pub ticks: u64,
}

/// Every process's parent and CPU ticks, from /proc/*/stat (this kernel
/// has no /proc/PID/task/TID/children).
pub fn proc_table() -> HashMap<i32, ProcInfo> {
    let mut out = HashMap::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name, which may contain anything.
        let Some(close) = stat.iter().rposition(|&b| b == b')') else {
            continue;
        };
        let rest = String::from_utf8_lossy(&stat[close + 1..]).into_owned();
        let f: Vec<&str> = rest.split_whitespace().collect();
        // f[0] is field 3 (state): ppid 4, utime 14 .. cstime 17.
        if f.len() < 15 {
            continue;
        }
        let num = |i: usize| f[i].parse::<u64>().unwrap_or(0);
        out.insert(
            pid,
            ProcInfo {
                ppid: f[1].parse().unwrap_or(0),
                ticks: num(11) + num(12) + num(13) + num(14),
            },
        );
    }
    out
}

/// CPU time of `root` and all its descendants: live ones by their own
/// counters, reaped ones through their parents' cutime/cstime.
pub fn tree_cpu(table: &HashMap<i32, ProcInfo>, root: i32) -> Duration {
    let mut kids: HashMap<i32, Vec<i32>> = HashMap::new();
    for (&pid, info) in table {
        kids.entry(info.ppid).or_default().push(pid);
    }
    let mut ticks = 0;
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        if let Some(info) = table.get(&p) {
            ticks += info.ticks;
        }
        if let Some(k) = kids.get(&p) {
            stack.extend(k);
        }
    }
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    Duration::from_secs_f64(ticks as f64 / hz)
}

pub fn status_kib(pid: i32, field: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------- the tree

/// Make sure the tree exists (a `.complete` marker says it is whole);
/// returns whether it was built now. Its shape: 10 top directories of 10
/// mid directories (10 files each), the remaining directories as leaves
/// spread evenly under the mids, the remaining files spread evenly over
/// the leaves; at the defaults, exactly benches/watch.rs's tree.
pub fn ensure_tree(b: &Bench, tree: &Path, files: usize, dirs: usize) -> Result<bool> {
    if tree.join(".complete").exists() {
        return Ok(false);
    }
    b.say(format!(
        "building the benchmark tree at {} ({files} files, {dirs} directories; once)...",
        tree.display()
    ));
    if tree.exists() {
        fs::remove_dir_all(tree).with_context(|| format!("removing {}", tree.display()))?;
    }
    let mids = TOP * MID;
    let leaves = dirs - 1 - TOP - mids;
    let per_mid = if leaves == 0 {
        0
    } else {
        FILES_PER_MID.min(files / (mids + leaves))
    };
    let (mid_files, leaf_files) = if leaves == 0 {
        (files, 0)
    } else {
        (per_mid * mids, files - per_mid * mids)
    };
    let content = vec![b'x'; 100];
    let write =
        |p: PathBuf| fs::write(&p, &content).with_context(|| format!("writing {}", p.display()));
    let mut leaf = 0usize;
    for t in 0..TOP {
        for m in 0..MID {
            let j = t * MID + m;
            let mid = tree.join(format!("top{t}/mid{m}"));
            fs::create_dir_all(&mid).with_context(|| format!("creating {}", mid.display()))?;
            let n = mid_files / mids + usize::from(j < mid_files % mids);
            for f in 0..n {
                write(mid.join(format!("file{f}.txt")))?;
            }
            let leaves_here = leaves / mids + usize::from(j < leaves % mids);
            for l in 0..leaves_here {
                let d = mid.join(format!("leaf{l}"));
                fs::create_dir(&d).with_context(|| format!("creating {}", d.display()))?;
                let n = leaf_files / leaves + usize::from(leaf < leaf_files % leaves);
                for f in 0..n {
                    write(d.join(format!("file{f}.dat")))?;
                }
                leaf += 1;
            }
            b.check_interrupt()?;
        }
    }
    fs::write(tree.join(".complete"), b"")?;
    Ok(true)
}

/// Count directories (the root included) and list regular files
/// (relative paths) below `root`.
pub fn list_tree(root: &Path) -> Result<(usize, Vec<PathBuf>)> {
    let mut dirs = 0;
    let mut files = Vec::new();
    for e in walkdir::WalkDir::new(root) {
        let e = e.with_context(|| format!("walking {}", root.display()))?;
        if e.file_type().is_dir() {
            dirs += 1;
        } else if e.file_type().is_file() {
            files.push(e.path().strip_prefix(root)?.to_path_buf());
        }
    }
    Ok((dirs, files))
}

pub fn ms(d: Duration) -> String {
    let m = d.as_secs_f64() * 1000.0;
    if m >= 100.0 {
        format!("{m:.0}")
    } else {
        format!("{m:.1}")
    }
}

pub fn ratio(a: Duration, b: Duration) -> String {
    if b.is_zero() {
        return "-".into();
    }
    format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64())
}

pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

pub fn machine_line() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "?".into());
    let csync2 = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "csync2"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_else(|| "?".into());
    format!("{cpus} CPUs (nproc), Linux {kernel}, csync2 {csync2}")
}

pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
