//! Benchmark (not a test): initial watch set-up time and memory of the
//! watcher against `inotifywait -r -m` on the same 170,000-file,
//! 17,011-directory tree, in the same run, warm and (as root) cold caches.
//!
//! `cargo bench --bench watch`. The tree is built once and kept under
//! `$CSYNC2_WATCH_BENCH_TREE` (default `/var/tmp/csync2-watch-bench-tree`);
//! `CSYNC2_WATCH_BENCH_RUNS` sets the runs per cell (default 3; cold runs
//! drop the page cache, which slows the whole machine for a moment; set
//! `CSYNC2_WATCH_BENCH_COLD=0` to skip them).
//!
//! Each measurement is a fresh process: ours is this binary re-executed as
//! `--child TREE` (it starts a `Watcher` including TREE and reports when
//! `Watcher::start` returns); inotifywait's time runs until it prints
//! "Watches established.". Peak RSS (VmHWM) is read from /proc while the
//! watches are in place.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use csync2_watch::watch::{TreeFilter, WatchOptions, Watcher};

const TOP: usize = 10;
const MID: usize = 10;
const LEAF: usize = 169;
const FILES_PER_LEAF: usize = 10;
const FILES_PER_MID: usize = 10;

/// Watches exactly `root` and what is below it (plus its ancestors).
struct Below(PathBuf);

impl TreeFilter for Below {
    fn descend(&self, dir: &Path) -> bool {
        self.0.starts_with(dir) || dir.starts_with(&self.0)
    }
    fn syncs(&self, path: &Path) -> bool {
        path.starts_with(&self.0)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "--child" {
        return child(Path::new(&args[2]));
    }
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test --all-targets` runs bench targets once without
        // `--bench`: do nothing then.
        println!("watch benchmark: run it with `cargo bench --bench watch`");
        return;
    }
    let tree = std::env::var_os("CSYNC2_WATCH_BENCH_TREE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/csync2-watch-bench-tree"));
    let runs: usize = std::env::var("CSYNC2_WATCH_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let cold = std::env::var("CSYNC2_WATCH_BENCH_COLD").map_or(true, |v| v != "0")
        && Path::new("/proc/sys/vm/drop_caches")
            .metadata()
            .is_ok_and(|_| nix::unistd::geteuid().is_root());
    let (dirs, files) = ensure_tree(&tree);
    println!(
        "tree {}: {dirs} directories, {files} files; {runs} run(s) per cell",
        tree.display()
    );

    let mut rows: Vec<(&str, &str, Vec<Sample>)> = Vec::new();
    let caches: &[&str] = if cold { &["cold", "warm"] } else { &["warm"] };
    for &cache in caches {
        if cache == "warm" {
            // Warm the cache once.
            let _ = run_inotifywait(&tree);
        }
        let mut theirs = Vec::new();
        let mut ours = Vec::new();
        for i in 0..runs {
            // Alternate who goes first.
            for who in if i % 2 == 0 { [0, 1] } else { [1, 0] } {
                if cache == "cold" {
                    drop_caches();
                }
                if who == 0 {
                    theirs.push(run_inotifywait(&tree));
                } else {
                    ours.push(run_ours(&tree));
                }
            }
        }
        rows.push((cache, "inotifywait -r", theirs));
        rows.push((cache, "csync2-watch", ours));
    }

    println!();
    println!(
        "{:<6} {:<15} {:>10} {:>14} {:>10} {:>14} {:>9}",
        "cache", "tool", "setup s", "(min-max)", "peak MiB", "(min-max)", "watches"
    );
    let mut base: Option<(f64, f64)> = None;
    for (cache, tool, samples) in &rows {
        let t = stats(samples.iter().map(|s| s.setup.as_secs_f64()));
        let m = stats(samples.iter().map(|s| s.hwm_kib as f64 / 1024.0));
        let watches = samples.first().map_or(0, |s| s.watches);
        let ratio = match base {
            Some((bt, bm)) if *tool == "csync2-watch" => {
                format!("   x{:.2} time, x{:.2} memory", t.0 / bt, m.0 / bm)
            }
            _ => String::new(),
        };
        println!(
            "{:<6} {:<15} {:>10.2} {:>14} {:>10.1} {:>14} {:>9}{ratio}",
            cache,
            tool,
            t.0,
            format!("({:.2}-{:.2})", t.1, t.2),
            m.0,
            format!("({:.1}-{:.1})", m.1, m.2),
            watches
        );
        if *tool == "inotifywait -r" {
            base = Some((t.0, m.0));
        }
    }
}

struct Sample {
    setup: Duration,
    hwm_kib: u64,
    watches: usize,
}

/// (median, min, max)
fn stats(v: impl Iterator<Item = f64>) -> (f64, f64, f64) {
    let mut v: Vec<f64> = v.collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn drop_caches() {
    nix::unistd::sync();
    std::fs::write("/proc/sys/vm/drop_caches", "3").expect("drop caches");
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn watches_of(pid: u32) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return 0;
    };
    fds.filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .map(|t| t.lines().filter(|l| l.starts_with("inotify wd:")).count())
        .sum()
}

fn run_inotifywait(tree: &Path) -> Sample {
    let t0 = Instant::now();
    let mut child = Command::new("inotifywait")
        .args([
            "-r",
            "-m",
            "-e",
            "move,delete,attrib,create,close_write,modify",
        ])
        .arg(tree)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("inotifywait (inotify-tools) is installed");
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        if err.read_line(&mut line).unwrap() == 0 {
            panic!("inotifywait ended before establishing its watches");
        }
        if line.contains("Watches established") {
            break;
        }
    }
    let setup = t0.elapsed();
    let pid = child.id();
    let sample = Sample {
        setup,
        hwm_kib: status_kib(pid, "VmHWM:"),
        watches: watches_of(pid),
    };
    let _ = child.kill();
    let _ = child.wait();
    sample
}

fn run_ours(tree: &Path) -> Sample {
    let t0 = Instant::now();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("--child")
        .arg(tree)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .env("CSYNC2_WATCH_LOG", "warn")
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let setup = t0.elapsed();
    assert!(line.starts_with("ready"), "child said {line:?}");
    let pid = child.id();
    let sample = Sample {
        setup,
        hwm_kib: status_kib(pid, "VmHWM:"),
        watches: watches_of(pid),
    };
    // Closing stdin ends the child.
    drop(child.stdin.take());
    let _ = child.wait();
    sample
}

/// The measured process: watch `tree`, say so, wait for stdin to close.
fn child(tree: &Path) {
    let opts = WatchOptions {
        progress: false,
        ..WatchOptions::default()
    };
    let w = Watcher::start(Arc::new(Below(tree.to_path_buf())), opts).expect("watcher starts");
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready {}", w.stats().dirs_watched).unwrap();
    out.flush().unwrap();
    drop(out);
    let mut sink = String::new();
    let _ = std::io::stdin().read_line(&mut sink);
    w.stop();
}

/// Build the tree once (a `.complete` marker says it is whole).
fn ensure_tree(tree: &Path) -> (usize, usize) {
    let dirs = 1 + TOP + TOP * MID + TOP * MID * LEAF;
    let files = TOP * MID * FILES_PER_MID + TOP * MID * LEAF * FILES_PER_LEAF;
    let marker = tree.join(".complete");
    if marker.exists() {
        return (dirs, files);
    }
    println!(
        "building the benchmark tree at {} (once)...",
        tree.display()
    );
    if tree.exists() {
        std::fs::remove_dir_all(tree).unwrap();
    }
    let content = vec![b'x'; 100];
    for t in 0..TOP {
        for m in 0..MID {
            let mid = tree.join(format!("top{t}/mid{m}"));
            std::fs::create_dir_all(&mid).unwrap();
            for f in 0..FILES_PER_MID {
                std::fs::write(mid.join(format!("file{f}.txt")), &content).unwrap();
            }
            for l in 0..LEAF {
                let leaf = mid.join(format!("leaf{l}"));
                std::fs::create_dir(&leaf).unwrap();
                for f in 0..FILES_PER_LEAF {
                    std::fs::write(leaf.join(format!("file{f}.dat")), &content).unwrap();
                }
            }
        }
    }
    std::fs::write(&marker, b"").unwrap();
    (dirs, files)
}
