//! Benchmark (not a test): issue 4's table. One run on one 3-node csync2
//! testbed holding a 170,000-file tree measures, in this order:
//!
//! 1. the floor: csync2 called directly on node1 for one changed file,
//!    `csync2 -c F; csync2 -u` (serial) alternating with `csync2 -c F;
//!    csync2 -u -P node2 & csync2 -u -P node3` (parallel), then a
//!    1,000-file burst as `csync2 -cr DIR; csync2 -u`; only the csync2
//!    servers run;
//! 2. the old way: `csync2 -x` back to back on node1 (on every node with
//!    `CSYNC2_WATCH_BENCH_X_ALL_NODES=1`), single changes, the loop's CPU
//!    and peak RSS;
//! 3. csync2-watch on every node (its own managed `csync2 -ii`): single
//!    changes, 1,000-file bursts, idle CPU, RSS, csync2 runs per change.
//!
//! Latency is always the same thing: from just before the write on node1
//! until node2 and node3 both hold the new bytes (their data read from the
//! host every millisecond; 5 ms for bursts). Every figure is shown next to
//! a baseline measured in the same run, as a ratio: the machine is shared
//! and noisy.
//!
//! `cargo bench --bench cluster` (or `scripts/bench-cluster.sh`); root
//! only; it does nothing without `--bench`. The daemon binary is the one
//! cargo builds for benchmarks (`CARGO_BIN_EXE_csync2-watch`, i.e.
//! `target/release/csync2-watch`). Knobs (environment):
//! - `CSYNC2_WATCH_BENCH_FILES` / `CSYNC2_WATCH_BENCH_DIRS`: tree size
//!   (default 170000 / 17011, the tree benches/watch.rs builds, kept under
//!   `CSYNC2_WATCH_BENCH_TREE`, default `/var/tmp/csync2-watch-bench-tree`;
//!   other sizes live beside it as `<tree>-<files>f-<dirs>d`);
//! - `CSYNC2_WATCH_BENCH_CHANGES` (50): single changes per floor and for
//!   csync2-watch; `CSYNC2_WATCH_BENCH_X_CHANGES` (10): for the -x loop;
//! - `CSYNC2_WATCH_BENCH_BURSTS` (3), `CSYNC2_WATCH_BENCH_BURST_FILES`
//!   (1000); `CSYNC2_WATCH_BENCH_SPACING_MS` (300); `CSYNC2_WATCH_BENCH_IDLE_S`
//!   (60); `CSYNC2_WATCH_BENCH_TIMEOUT_S` (60, per single change; bursts
//!   get three times that);
//! - `CSYNC2_WATCH_BENCH_SETTINGS`: the daemons' settings file text
//!   (default empty: the shipped defaults); `CSYNC2_WATCH_BIN`: another
//!   daemon binary; `CSYNC2_WATCH_BENCH_VERIFY=0` skips the final
//!   whole-tree comparison of the nodes;
//! - `CSYNC2_WATCH_TESTBED_DIR` (default here
//!   `/var/tmp/csync2-watch-bench-testbeds`: three copies of the tree need
//!   a disk, not a tmpfs).
//!
//! The testbed is torn down on success, error, panic and SIGINT/SIGTERM;
//! every csync2 the benchmark starts itself is bounded in time and killed
//! by process group when the run is aborted.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use csync2_watch::status::Status;
use csync2_watch_testbed::{Node, Testbed, TestbedOptions, WatchedCluster};

use common::{
    change_content, copy_tree, ensure_tree, is_server, knob, last_line, list_tree, loadavg,
    machine_line, median, ms, proc_table, ratio, run_bounded, status_kib, thousands, tree_cpu,
    wait_arrival, Bench, Targets, MS,
};

/// Idle CPU below this share of one core counts as "near zero".
const IDLE_CPU_TARGET: f64 = 0.01;

fn main() {
    if !common::asked_to_run() {
        // `cargo test --all-targets` would run a bench target once without
        // `--bench` (this one has `test = false`, but be safe).
        println!("cluster benchmark: run it with `cargo bench --bench cluster`");
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
        eprintln!("\ncluster benchmark failed: {e:#}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------- knobs

struct Knobs {
    tree: PathBuf,
    files: usize,
    dirs: usize,
    changes: usize,
    x_changes: usize,
    x_all: bool,
    bursts: usize,
    burst_files: usize,
    spacing: Duration,
    idle: Duration,
    timeout: Duration,
    settings: Option<String>,
    daemon_log: String,
    logs: PathBuf,
    binary: PathBuf,
    verify: bool,
}

impl Knobs {
    fn from_env() -> Result<Knobs> {
        let (tree, files, dirs) = common::tree_from_env()?;
        let changes = knob("CSYNC2_WATCH_BENCH_CHANGES", 50usize)?;
        let x_changes = knob("CSYNC2_WATCH_BENCH_X_CHANGES", 10usize)?;
        let bursts = knob("CSYNC2_WATCH_BENCH_BURSTS", 3usize)?;
        let burst_files = knob("CSYNC2_WATCH_BENCH_BURST_FILES", 1000usize)?;
        if changes == 0 || x_changes == 0 || bursts == 0 || burst_files == 0 {
            bail!(
                "CSYNC2_WATCH_BENCH_CHANGES, _X_CHANGES, _BURSTS and _BURST_FILES must be at least 1"
            );
        }
        Ok(Knobs {
            tree,
            files,
            dirs,
            changes,
            x_changes,
            x_all: knob("CSYNC2_WATCH_BENCH_X_ALL_NODES", 0u8)? != 0,
            bursts,
            burst_files,
            spacing: Duration::from_millis(knob("CSYNC2_WATCH_BENCH_SPACING_MS", 300u64)?),
            idle: Duration::from_secs(knob("CSYNC2_WATCH_BENCH_IDLE_S", 60u64)?),
            timeout: Duration::from_secs(knob("CSYNC2_WATCH_BENCH_TIMEOUT_S", 60u64)?.max(1)),
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
            verify: knob("CSYNC2_WATCH_BENCH_VERIFY", 1u8)? != 0,
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

// ---------------------------------------------------------------- the run

fn run(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let k = &ctx.knobs;
    if !nix::unistd::geteuid().is_root() {
        bail!("the cluster benchmark needs root (network and mount namespaces, csync2 -ii)");
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
    report.settings = match &k.settings {
        None => "the shipped defaults (empty settings file)".into(),
        Some(s) => format!("CSYNC2_WATCH_BENCH_SETTINGS: {}", s.replace('\n', "; ")),
    };
    ctx.say(format!("{}; binary {}", report.machine, k.binary.display()));

    let t = Instant::now();
    let built = ensure_tree(ctx, &k.tree, k.files, k.dirs)?;
    ctx.say(format!(
        "tree {}: {} in {:.1}s",
        k.tree.display(),
        if built { "built" } else { "reused" },
        t.elapsed().as_secs_f64()
    ));

    let t = Instant::now();
    let tb = Testbed::start(TestbedOptions::nodes(3)).context("starting the 3-node testbed")?;
    ctx.say(format!(
        "testbed {} under {} ready in {:.1}s",
        tb.id(),
        tb.run_dir().display(),
        t.elapsed().as_secs_f64()
    ));

    let t = Instant::now();
    let node1 = tb.node(0);
    copy_tree(&k.tree, node1.host_data_dir()).context("copying the tree to node1")?;
    let (dirs, files) = list_tree(node1.host_data_dir())?;
    report.tree = format!(
        "{} files, {} directories on every node (copied from {})",
        thousands(files.len()),
        thousands(dirs),
        k.tree.display()
    );
    ctx.say(format!(
        "node1 holds {} files in {} directories: copied in {:.1}s",
        thousands(files.len()),
        thousands(dirs),
        t.elapsed().as_secs_f64()
    ));
    let needed = 2 * k.changes + k.x_changes + k.changes;
    if files.len() < needed {
        bail!(
            "the tree has {} files but the run changes {needed} distinct ones: \
             raise CSYNC2_WATCH_BENCH_FILES or lower CSYNC2_WATCH_BENCH_CHANGES",
            files.len()
        );
    }
    let mut targets = Targets::new(files);

    let t = Instant::now();
    tb.seed_from(0)
        .context("copying the tree to node2 and node3 and seeding the csync2 databases")?;
    ctx.say(format!(
        "copied to node2, node3 and seeded all three csync2 databases (csync2 -cIr) in {:.1}s",
        t.elapsed().as_secs_f64()
    ));

    // 1. The floor: csync2 by hand, servers only.
    {
        let t = Instant::now();
        let servers = tb
            .start_servers()
            .context("starting csync2 -ii on every node")?;
        ctx.say(format!(
            "csync2 -ii running on every node ({:.1}s)",
            t.elapsed().as_secs_f64()
        ));
        floors(ctx, &tb, &mut targets, report)?;
        burst_floor(ctx, &tb, report)?;
        // 2. The csync2 -x loop.
        x_loop(ctx, &tb, servers[0].pid() as i32, &mut targets, report)?;
        let t = Instant::now();
        drop(servers);
        ctx.say(format!(
            "csync2 servers stopped ({:.1}s)",
            t.elapsed().as_secs_f64()
        ));
    }

    // 3. csync2-watch.
    let t = Instant::now();
    ctx.say("starting csync2-watch on every node (start-up full sync of the whole tree)...");
    let mut c = WatchedCluster::start(
        tb,
        &k.binary,
        k.settings.as_deref().unwrap_or(""),
        &k.daemon_log,
        Duration::from_secs(1800),
    )
    .context("starting csync2-watch on every node")?;
    ctx.say(format!(
        "csync2-watch ready on every node in {:.1}s",
        t.elapsed().as_secs_f64()
    ));
    let measured = watched(ctx, &c, &mut targets, report);
    if let Err(e) = &measured {
        eprintln!(
            "{e:#}\nlast lines of the daemons' logs:\n{}",
            c.logs_tail(30)
        );
    }
    keep_logs(ctx, &c, report);
    measured?;

    for i in 0..c.len() {
        let status = c.stop_daemon(i);
        if !status.is_some_and(|s| s.success()) {
            report.notes.push(format!(
                "csync2-watch on {} did not exit cleanly on SIGTERM: {status:?}",
                c.node(i).name()
            ));
        }
    }
    report.load_end = loadavg();
    let t = Instant::now();
    // WatchedCluster has no Drop of its own: take the testbed out of it to
    // tear it down and hear about anything left behind.
    let WatchedCluster { tb, .. } = c;
    if let Err(e) = tb.teardown() {
        report.notes.push(format!("testbed teardown: {e}"));
    }
    ctx.say(format!(
        "testbed torn down in {:.1}s",
        t.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Phase 1: ≥N single changes each way, serial and parallel alternating,
/// so that both see the same machine.
fn floors(ctx: &Ctx, tb: &Testbed, targets: &mut Targets, report: &mut Report) -> Result<()> {
    let k = &ctx.knobs;
    let (node1, peers) = (tb.node(0), [tb.node(1), tb.node(2)]);
    let mut serial = Series::new("single change: floor, csync2 -c F; -u");
    let mut parallel = Series::new("single change: floor, -c F; -u -P x2 parallel");
    let (mut serial_runs, mut parallel_runs) = (0usize, 0usize);
    ctx.say(format!(
        "floor: {} single changes each, serial and parallel alternating",
        k.changes
    ));
    for i in 0..2 * k.changes {
        let par = i % 2 == 1;
        ctx.nap(k.spacing)?;
        let rel = targets.next();
        let content = change_content(if par { "floor-par" } else { "floor-ser" }, i);
        let host = node1.host_path(&rel);
        let inside = node1.path(&rel);
        let abort = AtomicBool::new(false);
        let (lat, driven) = std::thread::scope(|s| {
            let t0 = Instant::now();
            if let Err(e) = fs::write(&host, &content) {
                return (
                    Err(anyhow!(e).context(format!("writing {}", host.display()))),
                    Ok(Driven::default()),
                );
            }
            let driver = s.spawn(|| drive_floor(ctx, node1, &["-c"], &inside, par, &abort));
            let lat = wait_arrival(ctx, &peers, &[(rel.clone(), content)], t0, k.timeout, MS);
            if lat.is_err() {
                abort.store(true, Ordering::Relaxed);
            }
            let driven = driver
                .join()
                .unwrap_or_else(|_| Err(anyhow!("the floor driver panicked")));
            (lat, driven)
        });
        // The arrival's error first: a driver stopped because of it only
        // says "aborted".
        let lat = lat.with_context(|| format!("floor change {i} ({})", rel.display()))?;
        let driven = driven?;
        let series = if par { &mut parallel } else { &mut serial };
        series.samples.push(lat);
        series.failures += driven.failures;
        series.failure_text.extend(driven.errors);
        if par {
            parallel_runs += driven.runs;
        } else {
            serial_runs += driven.runs;
        }
        if (i + 1) % 20 == 0 {
            ctx.say(format!("floor: {}/{} changes", i + 1, 2 * k.changes));
        }
    }
    serial.runs_per_change = Some(serial_runs as f64 / serial.samples.len() as f64);
    parallel.runs_per_change = Some(parallel_runs as f64 / parallel.samples.len() as f64);
    ctx.say(format!(
        "floor: serial p50 {} ms, parallel p50 {} ms",
        ms(serial.pct(0.5)),
        ms(parallel.pct(0.5))
    ));
    report.floor_serial = Some(serial);
    report.floor_parallel = Some(parallel);
    Ok(())
}

/// Phase 1, bursts: 1,000 new files in a new directory, `csync2 -cr DIR`
/// then `csync2 -u`.
fn burst_floor(ctx: &Ctx, tb: &Testbed, report: &mut Report) -> Result<()> {
    let k = &ctx.knobs;
    let (node1, peers) = (tb.node(0), [tb.node(1), tb.node(2)]);
    let mut series = Series::new("burst: floor, csync2 -cr DIR; -u");
    let mut runs = 0;
    for b in 0..k.bursts {
        ctx.nap(k.spacing)?;
        let dir = PathBuf::from(format!("bench-burst-floor-{b}"));
        let items = burst_items(&dir, k.burst_files, b);
        let inside = node1.path(&dir);
        let abort = AtomicBool::new(false);
        let t0 = Instant::now();
        write_burst(node1, &dir, &items)?;
        let (lat, driven) = std::thread::scope(|s| {
            let driver = s.spawn(|| drive_floor(ctx, node1, &["-cr"], &inside, false, &abort));
            let lat = wait_arrival(ctx, &peers, &items, t0, 3 * k.timeout, 5 * MS);
            if lat.is_err() {
                abort.store(true, Ordering::Relaxed);
            }
            let driven = driver
                .join()
                .unwrap_or_else(|_| Err(anyhow!("the floor driver panicked")));
            (lat, driven)
        });
        let lat = lat.with_context(|| format!("floor burst {b}"))?;
        let driven = driven?;
        ctx.say(format!(
            "floor burst {}/{}: {} files on both peers after {} ms",
            b + 1,
            k.bursts,
            k.burst_files,
            ms(lat)
        ));
        series.samples.push(lat);
        series.failures += driven.failures;
        series.failure_text.extend(driven.errors);
        runs += driven.runs;
    }
    series.runs_per_change = Some(runs as f64 / series.samples.len() as f64);
    report.burst_floor = Some(series);
    Ok(())
}

#[derive(Default)]
struct Driven {
    runs: usize,
    failures: usize,
    errors: Vec<String>,
}

/// `csync2 <check> PATH` on node1, then `csync2 -u` (or one `-u -P peer`
/// per peer at once). A failed update is run again (up to 3 times): the
/// file must arrive for the latency to exist; failures are counted.
fn drive_floor(
    ctx: &Ctx,
    node1: &Node,
    check: &[&str],
    path: &Path,
    parallel: bool,
    abort: &AtomicBool,
) -> Result<Driven> {
    let k = &ctx.knobs;
    let stop = || abort.load(Ordering::Relaxed) || ctx.interrupted.load(Ordering::Relaxed);
    let mut d = Driven::default();
    let mut cmd = node1.csync2(check);
    cmd.arg(path);
    let f = run_bounded(cmd, "csync2 -c on node1", 3 * k.timeout, &stop)?;
    d.runs += 1;
    if !f.status.success() {
        bail!(
            "csync2 {} {} on node1 failed ({}): {}",
            check.join(" "),
            path.display(),
            f.status,
            f.stderr.trim()
        );
    }
    let update = |peer: Option<&str>| -> Result<(usize, usize, Vec<String>)> {
        let (mut runs, mut failures, mut errors) = (0, 0, Vec::new());
        for _ in 0..3 {
            let mut cmd = node1.csync2(["-u"]);
            if let Some(p) = peer {
                cmd.arg("-P").arg(p);
            }
            let f = run_bounded(cmd, "csync2 -u on node1", 3 * k.timeout, &stop)?;
            runs += 1;
            if f.status.success() {
                break;
            }
            failures += 1;
            errors.push(format!(
                "csync2 -u{} ({}): {}",
                peer.map(|p| format!(" -P {p}")).unwrap_or_default(),
                f.status,
                last_line(&f.stderr)
            ));
        }
        Ok((runs, failures, errors))
    };
    let results = if parallel {
        std::thread::scope(|s| {
            let a = s.spawn(|| update(Some("node2")));
            let b = s.spawn(|| update(Some("node3")));
            [a.join(), b.join()]
                .into_iter()
                .map(|r| r.unwrap_or_else(|_| Err(anyhow!("an update thread panicked"))))
                .collect::<Vec<_>>()
        })
    } else {
        vec![update(None)]
    };
    for r in results {
        let (runs, failures, errors) = r?;
        d.runs += runs;
        d.failures += failures;
        d.errors.extend(errors);
    }
    Ok(d)
}

/// One finished `csync2 -x` pass.
struct Pass {
    node: usize,
    start: Instant,
    end: Instant,
    ok: bool,
    cpu: Duration,
    maxrss_kib: u64,
    error: String,
}

/// Sets `abort` when dropped, so that the loop threads stop (killing the
/// pass in hand) however the measuring code leaves.
struct AbortOnDrop<'a>(&'a AtomicBool);

impl Drop for AbortOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Phase 2: `csync2 -x` back to back, as a cron'd setup would run it.
fn x_loop(
    ctx: &Ctx,
    tb: &Testbed,
    server1: i32,
    targets: &mut Targets,
    report: &mut Report,
) -> Result<()> {
    let k = &ctx.knobs;
    let loop_nodes: Vec<usize> = if k.x_all { vec![0, 1, 2] } else { vec![0] };
    let node1 = tb.node(0);
    let peers = [tb.node(1), tb.node(2)];
    let passes: Mutex<Vec<Pass>> = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let abort = AtomicBool::new(false);
    ctx.say(format!(
        "csync2 -x loop on {}: waiting for its first (warm-up) pass...",
        if k.x_all { "every node" } else { "node1 only" }
    ));
    let mut series = Series::new("single change: csync2 -x loop");
    let outcome = std::thread::scope(|s| -> Result<(Instant, Instant, Duration)> {
        let _guard = AbortOnDrop(&abort);
        let threads: Vec<_> = loop_nodes
            .iter()
            .map(|&i| {
                let (node, passes, stop, abort) = (tb.node(i), &passes, &stop, &abort);
                s.spawn(move || -> Result<()> {
                    let halt = || abort.load(Ordering::Relaxed);
                    while !stop.load(Ordering::Relaxed) && !halt() {
                        let start = Instant::now();
                        let f = match run_bounded(
                            node.csync2(["-x"]),
                            "csync2 -x",
                            Duration::from_secs(1800),
                            &halt,
                        ) {
                            Ok(f) => f,
                            Err(_) if halt() => break,
                            Err(e) => return Err(e),
                        };
                        passes.lock().unwrap().push(Pass {
                            node: i,
                            start,
                            end: Instant::now(),
                            ok: f.status.success(),
                            cpu: f.cpu,
                            maxrss_kib: f.maxrss_kib,
                            error: last_line(&f.stderr),
                        });
                    }
                    Ok(())
                })
            })
            .collect();
        let node1_passes = || -> Vec<(Instant, Instant)> {
            passes
                .lock()
                .unwrap()
                .iter()
                .filter(|p| p.node == 0)
                .map(|p| (p.start, p.end))
                .collect()
        };
        let deadline = Instant::now() + Duration::from_secs(1800);
        while node1_passes().is_empty() {
            if threads.iter().any(|t| t.is_finished()) {
                break;
            }
            if Instant::now() > deadline {
                bail!("the first csync2 -x pass on node1 did not end within 30 min");
            }
            ctx.nap(Duration::from_millis(20))?;
        }
        let warm = node1_passes();
        let Some(first) = warm.first() else {
            bail!("the csync2 -x loop ended before its first pass");
        };
        let warm_up = first.1 - first.0;
        ctx.say(format!(
            "csync2 -x warm-up pass: {:.1}s; now {} single changes at spread-out phases of the loop",
            warm_up.as_secs_f64(),
            k.x_changes
        ));
        let window_start = Instant::now();
        let server_cpu0 = tree_cpu(&proc_table(), server1);
        for i in 0..k.x_changes {
            let durations: Vec<Duration> = node1_passes().iter().map(|p| p.1 - p.0).collect();
            let typical = median(&durations);
            let longest = durations.iter().max().copied().unwrap_or(warm_up);
            // Golden-ratio phases: the writes land all over the pass.
            let phase = (i as f64 * 0.618_034).fract();
            ctx.nap(k.spacing + typical.mul_f64(phase))?;
            let rel = targets.next();
            let content = change_content("x-loop", i);
            let t0 = Instant::now();
            fs::write(node1.host_path(&rel), &content)
                .with_context(|| format!("writing {}", node1.host_path(&rel).display()))?;
            let lat = wait_arrival(
                ctx,
                &peers,
                &[(rel.clone(), content)],
                t0,
                k.timeout + 3 * longest,
                MS,
            )
            .with_context(|| format!("-x loop change {i} ({})", rel.display()))?;
            ctx.say(format!(
                "-x loop change {}/{}: {} ms",
                i + 1,
                k.x_changes,
                ms(lat)
            ));
            series.samples.push(lat);
            if threads.iter().any(|t| t.is_finished()) {
                break;
            }
        }
        ctx.say("stopping the -x loop after its pass in hand...");
        stop.store(true, Ordering::Relaxed);
        let server_cpu1 = tree_cpu(&proc_table(), server1);
        for t in threads {
            t.join()
                .unwrap_or_else(|_| Err(anyhow!("a csync2 -x loop thread panicked")))?;
        }
        let server_cpu = server_cpu1.saturating_sub(server_cpu0);
        Ok((window_start, Instant::now(), server_cpu))
    });
    let (window_start, window_end, server_cpu) = outcome?;
    if series.samples.len() < k.x_changes {
        bail!("the csync2 -x loop stopped early");
    }
    let passes = passes.into_inner().unwrap();
    let n1: Vec<&Pass> = passes.iter().filter(|p| p.node == 0).collect();
    // The window: every node1 pass after the warm-up (passes are back to
    // back, so they cover it).
    let measured: Vec<&Pass> = n1.iter().skip(1).copied().collect();
    let (Some(first), Some(last)) = (measured.first(), measured.last()) else {
        bail!("no csync2 -x pass ran after the warm-up");
    };
    let wall = last.end - first.start;
    let pass_cpu: Duration = measured.iter().map(|p| p.cpu).sum();
    let durations: Vec<Duration> = n1.iter().map(|p| p.end - p.start).collect();
    let failed: Vec<&&Pass> = n1.iter().filter(|p| !p.ok).collect();
    series.runs_per_change = Some(measured.len() as f64 / series.samples.len() as f64);
    series.failures = failed.len();
    series.failure_text = failed
        .iter()
        .map(|p| format!("csync2 -x: {}", p.error))
        .collect();
    report.x_detail = format!(
        "csync2 -x loop on {}: {} node1 passes of {:.1}s median ({:.1}-{:.1}s); window {:.0}s \
         ({:.0}s by the clock incl. stopping)",
        if k.x_all {
            "all 3 nodes"
        } else {
            "node1 only (the peers ran only csync2 -ii)"
        },
        n1.len(),
        median(&durations).as_secs_f64(),
        durations.iter().min().unwrap().as_secs_f64(),
        durations.iter().max().unwrap().as_secs_f64(),
        wall.as_secs_f64(),
        (window_end - window_start).as_secs_f64(),
    );
    report.x_cpu = Some(CpuFigure {
        cpu: pass_cpu + server_cpu,
        wall,
    });
    report.x_rss_kib = n1.iter().map(|p| p.maxrss_kib).max();
    report.xloop = Some(series);
    Ok(())
}

/// Phase 3: csync2-watch on every node.
fn watched(
    ctx: &Ctx,
    c: &WatchedCluster,
    targets: &mut Targets,
    report: &mut Report,
) -> Result<()> {
    let k = &ctx.knobs;
    let node1 = c.node(0);
    let peers = [c.node(1), c.node(2)];
    settle(ctx, c, Duration::from_secs(600)).context("waiting for the daemons to settle")?;
    ctx.say(format!(
        "csync2-watch: {} single changes, {} ms apart once the daemons are quiet",
        k.changes,
        k.spacing.as_millis()
    ));
    let before = counters(c)?;
    let mut series = Series::new("single change: csync2-watch");
    for i in 0..k.changes {
        wait_quiet(ctx, c)?;
        ctx.nap(k.spacing)?;
        let rel = targets.next();
        let content = change_content("watch", i);
        let t0 = Instant::now();
        fs::write(node1.host_path(&rel), &content)
            .with_context(|| format!("writing {}", node1.host_path(&rel).display()))?;
        let lat = wait_arrival(ctx, &peers, &[(rel.clone(), content)], t0, k.timeout, MS)
            .with_context(|| format!("csync2-watch change {i} ({})", rel.display()))?;
        series.samples.push(lat);
        if (i + 1) % 10 == 0 {
            ctx.say(format!("csync2-watch: {}/{} changes", i + 1, k.changes));
        }
    }
    settle(ctx, c, Duration::from_secs(120))?;
    let after = counters(c)?;
    let d = after.minus(&before);
    series.runs_per_change = Some(d.runs_node1 as f64 / series.samples.len() as f64);
    series.failures = d.failures as usize;
    report.runs = d.describe("single change", "changes", series.samples.len());
    ctx.say(format!("csync2-watch: p50 {} ms", ms(series.pct(0.5))));
    report.watch = Some(series);

    let mut bursts = Series::new("burst: csync2-watch");
    let before = counters(c)?;
    for b in 0..k.bursts {
        settle(ctx, c, Duration::from_secs(300))?;
        ctx.nap(k.spacing)?;
        let dir = PathBuf::from(format!("bench-burst-watch-{b}"));
        let items = burst_items(&dir, k.burst_files, 100 + b);
        let t0 = Instant::now();
        write_burst(node1, &dir, &items)?;
        let written = t0.elapsed();
        let lat = wait_arrival(ctx, &peers, &items, t0, 3 * k.timeout, 5 * MS)
            .with_context(|| format!("csync2-watch burst {b}"))?;
        ctx.say(format!(
            "csync2-watch burst {}/{}: written in {} ms, on both peers after {} ms",
            b + 1,
            k.bursts,
            ms(written),
            ms(lat)
        ));
        bursts.samples.push(lat);
    }
    settle(ctx, c, Duration::from_secs(300))?;
    let d = counters(c)?.minus(&before);
    report.burst_runs = d.describe("burst", "bursts", bursts.samples.len());
    bursts.runs_per_change = Some(d.runs_node1 as f64 / bursts.samples.len() as f64);
    bursts.failures = d.failures as usize;
    report.burst_watch = Some(bursts);

    ctx.say(format!(
        "csync2-watch: idle for {}s, nothing changing...",
        k.idle.as_secs()
    ));
    let pids: Vec<i32> = (0..c.len())
        .map(|i| {
            c.daemon_pid(i)
                .map(|p| p as i32)
                .ok_or_else(|| anyhow!("no daemon on {}", c.node(i).name()))
        })
        .collect::<Result<_>>()?;
    let before = counters(c)?;
    let table = proc_table();
    let cpu0: Vec<Duration> = pids.iter().map(|&p| tree_cpu(&table, p)).collect();
    let t0 = Instant::now();
    ctx.nap(k.idle)?;
    let table = proc_table();
    let cpu1: Vec<Duration> = pids.iter().map(|&p| tree_cpu(&table, p)).collect();
    let wall = t0.elapsed();
    for i in 0..c.len() {
        if !c.daemon_alive(i) {
            bail!("csync2-watch on {} died while idle", c.node(i).name());
        }
        report.watch_idle.push((
            c.node(i).name().to_string(),
            CpuFigure {
                cpu: cpu1[i].saturating_sub(cpu0[i]),
                wall,
            },
        ));
        let (rss, hwm) = (status_kib(pids[i], "VmRSS:"), status_kib(pids[i], "VmHWM:"));
        report
            .daemon_rss
            .push((c.node(i).name().to_string(), rss, hwm));
        report
            .lifetime_cpu
            .push((c.node(i).name().to_string(), cpu1[i]));
    }
    let d = counters(c)?.minus(&before);
    report.idle_runs = d.runs_all;
    ctx.say(format!(
        "csync2-watch idle: node1 {:.3}% of a core, {} csync2 runs on all nodes",
        report.watch_idle[0].1.share() * 100.0,
        d.runs_all
    ));

    if k.verify {
        let t = Instant::now();
        c.wait_converged(Duration::from_secs(600))
            .context("the nodes differ at the end")?;
        ctx.say(format!(
            "all three trees identical and nothing dirty (checked in {:.1}s)",
            t.elapsed().as_secs_f64()
        ));
        report.verified = Some(true);
    }
    Ok(())
}

// ---------------------------------------------------------------- daemons

/// Copy every daemon's log (what it said so far) out of the testbed,
/// which is about to go.
fn keep_logs(ctx: &Ctx, c: &WatchedCluster, report: &mut Report) {
    let dir = &ctx.knobs.logs;
    if let Err(e) = fs::create_dir_all(dir) {
        report.notes.push(format!(
            "cannot keep the daemons' logs in {}: {e}",
            dir.display()
        ));
        return;
    }
    for i in 0..c.len() {
        let path = dir.join(format!("{}-{}.log", c.tb.id(), c.node(i).name()));
        match fs::write(&path, c.log(i)) {
            Ok(()) => report.logs.push(path),
            Err(e) => report
                .notes
                .push(format!("cannot write {}: {e}", path.display())),
        }
    }
}

/// Summed counters: csync2 runs on node1 and on all nodes.
struct Counts {
    runs_node1: u64,
    runs_all: u64,
    checks: u64,
    marks: u64,
    updates: u64,
    verifies: u64,
    failures: u64,
    busy: u64,
    full_syncs: u64,
}

impl Counts {
    /// One line: csync2 runs per `what` over `n` of them.
    fn describe(&self, what: &str, plural: &str, n: usize) -> String {
        let per = |runs: u64| runs as f64 / n.max(1) as f64;
        format!(
            "csync2 runs per {what}: {:.2} on node1 ({} checks, {} marks, {} updates, {} verifies \
             for {n} {plural}), {:.2} on all nodes; csync2 failures {}, busy {}, full syncs {}",
            per(self.runs_node1),
            self.checks,
            self.marks,
            self.updates,
            self.verifies,
            per(self.runs_all),
            self.failures,
            self.busy,
            self.full_syncs
        )
    }

    fn minus(&self, o: &Counts) -> Counts {
        Counts {
            runs_node1: self.runs_node1 - o.runs_node1,
            runs_all: self.runs_all - o.runs_all,
            checks: self.checks - o.checks,
            marks: self.marks - o.marks,
            updates: self.updates - o.updates,
            verifies: self.verifies - o.verifies,
            failures: self.failures - o.failures,
            busy: self.busy - o.busy,
            full_syncs: self.full_syncs - o.full_syncs,
        }
    }
}

fn runs_of(s: &Status) -> u64 {
    let c = &s.counters;
    c.checks + c.marks + c.updates + c.verifies
}

fn counters(c: &WatchedCluster) -> Result<Counts> {
    let statuses: Vec<Status> = (0..c.len())
        .map(|i| {
            c.status(i)
                .ok_or_else(|| anyhow!("no status.json from {}", c.node(i).name()))
        })
        .collect::<Result<_>>()?;
    let n1 = &statuses[0].counters;
    Ok(Counts {
        runs_node1: runs_of(&statuses[0]),
        runs_all: statuses.iter().map(runs_of).sum(),
        checks: n1.checks,
        marks: n1.marks,
        updates: n1.updates,
        verifies: n1.verifies,
        failures: statuses.iter().map(|s| s.counters.csync2_failures).sum(),
        busy: statuses.iter().map(|s| s.counters.busy).sum(),
        full_syncs: statuses.iter().map(|s| s.counters.full_syncs).sum(),
    })
}

/// Wait until every daemon says idle with nothing queued, runs no csync2
/// client, and its counters stayed put for 1.5 s (status.json is written
/// at most every 500 ms).
fn settle(ctx: &Ctx, c: &WatchedCluster, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    let mut last: Option<(Vec<u64>, Instant)> = None;
    loop {
        ctx.check_interrupt()?;
        for i in 0..c.len() {
            if !c.daemon_alive(i) {
                bail!(
                    "csync2-watch on {} died; its log ends:\n{}",
                    c.node(i).name(),
                    c.logs_tail(30)
                );
            }
        }
        let statuses: Vec<Option<Status>> = (0..c.len()).map(|i| c.status(i)).collect();
        let idle = statuses.iter().all(|s| {
            s.as_ref()
                .is_some_and(|s| s.state == "idle" && s.queue.pending == 0)
        }) && !clients_running(c);
        let sig: Vec<u64> = statuses
            .iter()
            .map(|s| s.as_ref().map_or(u64::MAX, runs_of))
            .collect();
        match &last {
            Some((prev, since)) if *prev == sig && idle => {
                if since.elapsed() >= Duration::from_millis(1500) {
                    return Ok(());
                }
            }
            _ => last = Some((sig, Instant::now())),
        }
        if !idle {
            last = None;
        }
        if Instant::now() > deadline {
            let states: Vec<String> = statuses
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    format!(
                        "{}: {}",
                        c.node(i).name(),
                        s.as_ref().map_or("no status".into(), |s| format!(
                            "{} ({} queued)",
                            s.state, s.queue.pending
                        ))
                    )
                })
                .collect();
            bail!(
                "the daemons did not settle within {within:?}: {}",
                states.join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Is any daemon running a csync2 client (a child that is not its
/// `csync2 -ii`)?
fn clients_running(c: &WatchedCluster) -> bool {
    let table = proc_table();
    (0..c.len()).filter_map(|i| c.daemon_pid(i)).any(|d| {
        table
            .iter()
            .any(|(&pid, info)| info.ppid == d as i32 && !is_server(pid))
    })
}

/// Before a change: wait (up to 30 s) until no daemon runs a csync2
/// client, so that changes never overlap.
fn wait_quiet(ctx: &Ctx, c: &WatchedCluster) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while clients_running(c) {
        ctx.check_interrupt()?;
        if Instant::now() > deadline {
            ctx.say("warning: a daemon kept running csync2 for 30 s; changing anyway");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// `n` 1 KiB files (distinct content) in the new directory `dir`.
fn burst_items(dir: &Path, n: usize, seed: usize) -> Vec<(PathBuf, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let mut content = format!("burst {seed} file {i}\n").into_bytes();
            content.resize(1024, b'a' + ((i + seed) % 26) as u8);
            (dir.join(format!("file-{i:05}")), content)
        })
        .collect()
}

fn write_burst(node: &Node, dir: &Path, items: &[(PathBuf, Vec<u8>)]) -> Result<()> {
    let d = node.host_path(dir);
    fs::create_dir(&d).with_context(|| format!("creating {}", d.display()))?;
    for (rel, content) in items {
        let p = node.host_path(rel);
        fs::write(&p, content).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

// ---------------------------------------------------------------- report

struct Series {
    label: &'static str,
    samples: Vec<Duration>,
    runs_per_change: Option<f64>,
    failures: usize,
    failure_text: Vec<String>,
}

impl Series {
    fn new(label: &'static str) -> Series {
        Series {
            label,
            samples: Vec::new(),
            runs_per_change: None,
            failures: 0,
            failure_text: Vec::new(),
        }
    }

    /// Nearest-rank percentile (`q` in 0..=1).
    fn pct(&self, q: f64) -> Duration {
        let mut v = self.samples.clone();
        v.sort();
        if v.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1]
    }

    fn max(&self) -> Duration {
        self.samples.iter().max().copied().unwrap_or_default()
    }
}

struct CpuFigure {
    cpu: Duration,
    wall: Duration,
}

impl CpuFigure {
    /// Share of one core.
    fn share(&self) -> f64 {
        self.cpu.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }
}

#[derive(Default)]
struct Report {
    machine: String,
    load_start: String,
    load_end: String,
    tree: String,
    settings: String,
    floor_serial: Option<Series>,
    floor_parallel: Option<Series>,
    xloop: Option<Series>,
    watch: Option<Series>,
    burst_floor: Option<Series>,
    burst_watch: Option<Series>,
    x_detail: String,
    x_cpu: Option<CpuFigure>,
    x_rss_kib: Option<u64>,
    watch_idle: Vec<(String, CpuFigure)>,
    idle_runs: u64,
    daemon_rss: Vec<(String, u64, u64)>,
    runs: String,
    burst_runs: String,
    verified: Option<bool>,
    lifetime_cpu: Vec<(String, Duration)>,
    logs: Vec<PathBuf>,
    notes: Vec<String>,
}

impl Report {
    fn print(&self) {
        println!();
        println!("== csync2-watch cluster benchmark ==");
        println!(
            "machine : {}; load average {} at start, {} at end",
            self.machine,
            self.load_start,
            if self.load_end.is_empty() {
                loadavg()
            } else {
                self.load_end.clone()
            }
        );
        println!("cluster : 3 csync2 nodes in network namespaces on this machine, one bridge");
        println!("tree    : {}", self.tree);
        println!("daemon  : {}", self.settings);
        println!(
            "latency : just before the write on node1 -> node2 and node3 both hold the new bytes \
             (peers' files polled every 1 ms, bursts every 5 ms); nearest-rank percentiles \
             (below 100 samples p99 is the maximum)"
        );
        println!();
        println!(
            "{:<48} {:>4} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>11}",
            "scenario",
            "n",
            "p50 ms",
            "p99 ms",
            "max ms",
            "runs/chg",
            "p50/floor",
            "p99/floor",
            "p50/par.fl"
        );
        let floor = self.floor_serial.as_ref();
        let par = self.floor_parallel.as_ref();
        let singles = [
            &self.floor_serial,
            &self.floor_parallel,
            &self.xloop,
            &self.watch,
        ];
        for s in singles.into_iter().flatten() {
            row(s, floor, par);
        }
        for s in [&self.burst_floor, &self.burst_watch].into_iter().flatten() {
            row(s, self.burst_floor.as_ref(), None);
        }
        for s in [&self.burst_floor, &self.burst_watch].into_iter().flatten() {
            let each: Vec<String> = s.samples.iter().map(|d| ms(*d)).collect();
            println!("  {}: each burst {} ms", s.label, each.join(", "));
        }
        println!("  (runs/chg: csync2 processes per change on node1; for the -x loop, passes per change)");
        for r in [&self.runs, &self.burst_runs] {
            if !r.is_empty() {
                println!("  {r}");
            }
        }
        if !self.x_detail.is_empty() {
            println!("  {}", self.x_detail);
        }
        for s in singles
            .into_iter()
            .chain([&self.burst_floor, &self.burst_watch])
            .flatten()
        {
            if s.failures > 0 {
                println!(
                    "  {}: {} failed csync2 run(s): {}",
                    s.label,
                    s.failures,
                    s.failure_text.join(" | ")
                );
            }
        }

        println!();
        println!(
            "{:<64} {:>18} {:>12}",
            "resource (node1 unless said)", "value", "x -x loop"
        );
        if let Some(x) = &self.x_cpu {
            println!(
                "{:<64} {:>18} {:>12}",
                format!(
                    "CPU, csync2 -x passes + csync2 -ii, over {:.0} s",
                    x.wall.as_secs_f64()
                ),
                format!("{:.2}% of a core", x.share() * 100.0),
                "1.00x"
            );
        }
        let x_share = self.x_cpu.as_ref().map(|x| x.share());
        for (node, f) in &self.watch_idle {
            println!(
                "{:<64} {:>18} {:>12}",
                format!(
                    "CPU, csync2-watch idle {:.0} s (daemon + children), {node}",
                    f.wall.as_secs_f64()
                ),
                format!("{:.3}% ({} ms)", f.share() * 100.0, f.cpu.as_millis()),
                x_share.map_or("-".into(), |x| format!("{:.4}x", f.share() / x))
            );
        }
        if let Some(x) = self.x_rss_kib {
            println!(
                "{:<64} {:>18} {:>12}",
                "RSS, csync2 -x pass peak (ru_maxrss)",
                format!("{:.1} MiB", x as f64 / 1024.0),
                "1.00x"
            );
        }
        for (node, rss, hwm) in &self.daemon_rss {
            let r = |v: u64| {
                self.x_rss_kib
                    .map_or("-".into(), |x| format!("{:.2}x", v as f64 / x as f64))
            };
            println!(
                "{:<64} {:>18} {:>12}",
                format!("RSS, csync2-watch daemon VmRSS, {node}"),
                format!("{:.1} MiB", *rss as f64 / 1024.0),
                r(*rss)
            );
            println!(
                "{:<64} {:>18} {:>12}",
                format!("RSS, csync2-watch daemon VmHWM (peak), {node}"),
                format!("{:.1} MiB", *hwm as f64 / 1024.0),
                r(*hwm)
            );
        }
        if !self.watch_idle.is_empty() {
            println!(
                "  CPU counted: utime+stime+cutime+cstime from /proc/PID/stat of the daemon and every \
                 descendant (its csync2 -ii, the -ii's per-connection children, any csync2 client); \
                 {} csync2 runs on all nodes while idle",
                self.idle_runs
            );
        }
        if !self.lifetime_cpu.is_empty() {
            let each: Vec<String> = self
                .lifetime_cpu
                .iter()
                .map(|(n, d)| format!("{n} {:.1} s", d.as_secs_f64()))
                .collect();
            println!(
                "  csync2-watch CPU over its whole life so far (start-up full sync, changes, bursts, idle), \
                 counted the same way: {}",
                each.join(", ")
            );
        }
        if self.x_cpu.is_some() {
            println!(
                "  -x loop CPU: each pass's own rusage from wait4 (csync2 -x on node1) plus node1's \
                 csync2 -ii (as counted for the daemon), over the passes after the warm-up"
            );
        }

        println!();
        println!("targets");
        if let (Some(w), Some(f)) = (&self.watch, floor) {
            let r = w.pct(0.5).as_secs_f64() / f.pct(0.5).as_secs_f64().max(1e-9);
            println!(
                "  single-change p50 within 1.5x of the serial floor: {r:.2}x ({} vs {} ms) -> {}",
                ms(w.pct(0.5)),
                ms(f.pct(0.5)),
                met(r <= 1.5)
            );
            println!(
                "  single-change p99 under 0.5 s: {} ms -> {}",
                ms(w.pct(0.99)),
                met(w.pct(0.99) < Duration::from_millis(500))
            );
        }
        if let Some((_, f)) = self.watch_idle.first() {
            println!(
                "  idle CPU near zero (under {:.0}% of a core): {:.3}% -> {}",
                IDLE_CPU_TARGET * 100.0,
                f.share() * 100.0,
                met(f.share() < IDLE_CPU_TARGET)
            );
        }
        if let Some(v) = self.verified {
            println!(
                "  at the end all three trees were {}",
                if v {
                    "identical, with nothing dirty"
                } else {
                    "NOT identical"
                }
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

fn met(ok: bool) -> &'static str {
    if ok {
        "MET"
    } else {
        "NOT MET"
    }
}

fn row(s: &Series, floor: Option<&Series>, par: Option<&Series>) {
    let (p50, p99) = (s.pct(0.5), s.pct(0.99));
    println!(
        "{:<48} {:>4} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>11}",
        s.label,
        s.samples.len(),
        ms(p50),
        ms(p99),
        ms(s.max()),
        s.runs_per_change.map_or("-".into(), |r| format!("{r:.2}")),
        floor.map_or("-".into(), |f| ratio(p50, f.pct(0.5))),
        floor.map_or("-".into(), |f| ratio(p99, f.pct(0.99))),
        par.map_or("-".into(), |f| ratio(p50, f.pct(0.5))),
    );
}
