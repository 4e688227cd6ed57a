//! `csync2-watch-demo`: a newcomer's first look, one command on a fresh
//! clone (`cargo run --release -p csync2-watch-demo`, as root). Installs
//! csync2 if it is missing, starts a real N-node csync2 cluster on this
//! machine (network and mount namespaces, see `csync2-watch-testbed`),
//! runs csync2-watch on every node, makes changes on node1 and shows them
//! arrive on the others with their latency, then cleans everything up (or,
//! with `--keep`, waits for Ctrl-C first).
//!
//! The daemon it runs is found as [`daemon_binary`] says: under cargo it
//! builds it first, from the same sources.

use std::ffi::OsString;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use csync2_watch_testbed::{Testbed, TestbedOptions, WatchedCluster, QUICK_SETTINGS};

/// How long one change may take before the demo gives up on it.
const PATIENCE: Duration = Duration::from_secs(30);

/// The daemon binary to run instead of building or finding one.
const BIN_ENV: &str = "CSYNC2_WATCH_BIN";

/// Start a csync2 cluster on this machine (network and mount namespaces),
/// run csync2-watch on every node, and show changes arrive. Needs root.
#[derive(Debug, Parser)]
#[command(name = "csync2-watch-demo", version, about, long_about = None)]
struct DemoArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// How many single-file changes to time.
    #[arg(long, default_value_t = 10)]
    changes: usize,
    /// Leave the cluster running until Ctrl-C instead of cleaning up at once.
    #[arg(long)]
    keep: bool,
}

fn main() -> ExitCode {
    match run(DemoArgs::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("csync2-watch-demo: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: DemoArgs) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!(
            "the demo builds network and mount namespaces and needs root: run it with sudo"
        );
    }
    if !(2..=9).contains(&args.nodes) {
        anyhow::bail!("--nodes takes 2 to 9 (got {})", args.nodes);
    }
    let exe = daemon_binary()?;
    ensure_csync2()?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("cannot install signal handlers")?;
    }

    say(&format!("The daemon: {}", exe.display()));
    say(&format!(
        "Starting a {}-node csync2 cluster (namespaces node1..node{}) ...",
        args.nodes, args.nodes
    ));
    let tb = Testbed::start(TestbedOptions::nodes(args.nodes))?;
    say(&format!(
        "  data path on every node: {}   (node1's copy: {})",
        tb.data_path().display(),
        tb.node(0).host_data_dir().display()
    ));
    say("Starting csync2-watch on every node (each supervises its own csync2 -ii) ...");
    let started = Instant::now();
    let cluster = WatchedCluster::start(
        tb,
        &exe,
        QUICK_SETTINGS,
        "csync2_watch=info",
        Duration::from_secs(60),
    )?;
    say(&format!(
        "  all {} daemons watching and synced in {:.1} s",
        cluster.len(),
        started.elapsed().as_secs_f64()
    ));

    let result = show(&cluster, &args, &stop);
    if result.is_ok() && args.keep && !stop.load(Ordering::Relaxed) {
        say("\n--keep: the cluster stays up. Try, in another shell:");
        say(&format!(
            "  echo hi > {}/hello   # then: cat {}/hello",
            cluster.node(0).host_data_dir().display(),
            cluster.node(1).host_data_dir().display()
        ));
        say(&format!(
            "  {} status --state-dir {} -N node1",
            exe.display(),
            cluster.node(0).state_dir().display()
        ));
        say("Press Ctrl-C to tear it down.");
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    say("Tearing the cluster down ...");
    drop(cluster);
    say("Done: no namespace, mount or process of the demo is left.");
    result
}

/// The csync2-watch daemon to run on every node:
///
/// 1. `$CSYNC2_WATCH_BIN`, when set;
/// 2. when cargo runs the demo (`cargo run -p csync2-watch-demo` sets
///    `$CARGO`) from this source tree: `cargo build -p csync2-watch` with
///    the demo's own profile and target directory, so that the daemon is
///    built from the same sources as the demo (a no-op when it is up to
///    date), then the binary it made, next to the demo's own;
/// 3. otherwise `csync2-watch` next to the demo's own executable (one
///    `cargo build --release` at the workspace root makes both).
fn daemon_binary() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os(BIN_ENV).filter(|v| !v.is_empty()) {
        let bin = PathBuf::from(bin);
        anyhow::ensure!(
            bin.is_file(),
            "${BIN_ENV} is {}, which is no file",
            bin.display()
        );
        return Ok(bin);
    }
    let me = std::env::current_exe().context("cannot find the demo's own executable")?;
    let dir = me
        .parent()
        .context("the demo's executable has no directory")?
        .to_path_buf();
    let sibling = dir.join("csync2-watch");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    if let (Some(cargo), true) = (std::env::var_os("CARGO"), manifest.is_file()) {
        build_daemon(&cargo, &manifest, &dir)?;
        anyhow::ensure!(
            sibling.is_file(),
            "cargo built csync2-watch, but not as {}",
            sibling.display()
        );
        return Ok(sibling);
    }
    anyhow::ensure!(
        sibling.is_file(),
        "no csync2-watch daemon next to {}: run the demo with `cargo run --release -p csync2-watch-demo`, \
         build both with `cargo build --release`, or set ${BIN_ENV}",
        me.display()
    );
    Ok(sibling)
}

/// `cargo build -p csync2-watch --bin csync2-watch` into the target
/// directory and profile whose output directory is `out_dir` (the demo's
/// own: `<target>/release`, `<target>/debug`, ...).
fn build_daemon(cargo: &OsString, manifest: &Path, out_dir: &Path) -> anyhow::Result<()> {
    let profile = match out_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(name) => name,
        None => "release",
    };
    let target_dir = out_dir
        .parent()
        .context("the demo's executable lies in no target directory")?;
    say(&format!(
        "Building the daemon first (cargo build --profile {profile} -p csync2-watch) ..."
    ));
    let status = Command::new(cargo)
        .arg("build")
        .arg("--manifest-path")
        .arg(manifest)
        .args([
            "--profile",
            profile,
            "-p",
            "csync2-watch",
            "--bin",
            "csync2-watch",
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .status()
        .context("cannot run cargo")?;
    anyhow::ensure!(
        status.success(),
        "cargo could not build csync2-watch ({status})"
    );
    Ok(())
}

fn say(line: &str) {
    println!("{line}");
    let _ = std::io::stdout().flush();
}

/// Install Debian's csync2 if it is missing (without recommends: those
/// would put `csync2 -i -l` in inetd on csync2's port).
fn ensure_csync2() -> anyhow::Result<()> {
    let in_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("csync2").is_file()));
    if in_path || Path::new("/usr/sbin/csync2").exists() {
        return Ok(());
    }
    say("csync2 is not installed: apt-get install -y --no-install-recommends csync2 ...");
    let status = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", "csync2"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("cannot run apt-get")?;
    if !status.success() {
        anyhow::bail!(
            "apt-get could not install csync2 ({status}); install it and run the demo again"
        );
    }
    Ok(())
}

/// Wait until `rel` has `content` and node1's permissions (or is gone,
/// for `None`) on every node but node1; returns each node's latency.
fn arrival(
    c: &WatchedCluster,
    rel: &Path,
    content: Option<&[u8]>,
    since: Instant,
    stop: &AtomicBool,
) -> anyhow::Result<Vec<Duration>> {
    let mode = fs::symlink_metadata(c.node(0).host_path(rel))
        .map(|m| m.permissions().mode())
        .ok();
    let mut got: Vec<Option<Duration>> = vec![None; c.len()];
    got[0] = Some(Duration::ZERO);
    while got.iter().any(Option::is_none) {
        if stop.load(Ordering::Relaxed) {
            anyhow::bail!("interrupted");
        }
        if since.elapsed() > PATIENCE {
            anyhow::bail!(
                "{} did not reach every node within {PATIENCE:?}; the daemons' logs:\n{}",
                rel.display(),
                c.logs_tail(30)
            );
        }
        for (i, slot) in got.iter_mut().enumerate().skip(1) {
            if slot.is_none() {
                let p = c.node(i).host_path(rel);
                let done = match content {
                    Some(want) => {
                        fs::read(&p).ok().as_deref() == Some(want)
                            && fs::symlink_metadata(&p)
                                .map(|m| m.permissions().mode())
                                .ok()
                                == mode
                    }
                    None => fs::symlink_metadata(&p).is_err(),
                };
                if done {
                    *slot = Some(since.elapsed());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(got.into_iter().skip(1).flatten().collect())
}

fn ms(d: Duration) -> String {
    format!("{:>7.1} ms", d.as_secs_f64() * 1000.0)
}

fn row(what: &str, lat: &[Duration]) {
    let cells: Vec<String> = lat.iter().map(|d| ms(*d)).collect();
    say(&format!("  {what:<44} {}", cells.join("  ")));
}

fn show(c: &WatchedCluster, args: &DemoArgs, stop: &AtomicBool) -> anyhow::Result<()> {
    let root: PathBuf = c.node(0).host_data_dir().to_path_buf();
    let peers: Vec<String> = (1..c.len())
        .map(|i| format!("{:>10}", c.node(i).name()))
        .collect();
    say(&format!(
        "\nChanges made on node1, time until each peer has them:\n  {:<44} {}",
        "change",
        peers.join(" ")
    ));
    let mut singles = Vec::new();
    for i in 0..args.changes {
        let rel = PathBuf::from(format!("file-{i}.txt"));
        let content = format!("change number {i}\n");
        let t = Instant::now();
        fs::write(root.join(&rel), &content)?;
        let lat = arrival(c, &rel, Some(content.as_bytes()), t, stop)?;
        row(&format!("write {}", rel.display()), &lat);
        singles.extend(lat);
        std::thread::sleep(Duration::from_millis(200));
    }

    let rel = PathBuf::from("file-0.txt");
    let t = Instant::now();
    fs::set_permissions(root.join(&rel), fs::Permissions::from_mode(0o600))?;
    let want = fs::read(root.join(&rel))?;
    let lat = arrival(c, &rel, Some(&want), t, stop)?;
    row("chmod 600 file-0.txt", &lat);

    let odd = PathBuf::from("name with spaces,\nnewline and \u{e9}");
    let t = Instant::now();
    fs::write(root.join(&odd), b"awkward names too\n")?;
    let lat = arrival(c, &odd, Some(b"awkward names too\n"), t, stop)?;
    row("write 'name with spaces,\\nnewline and \u{e9}'", &lat);

    let t = Instant::now();
    fs::create_dir(root.join("burst"))?;
    for i in 0..200 {
        fs::write(root.join(format!("burst/f{i:03}")), vec![b'x'; 1024])?;
    }
    let lat = arrival(c, Path::new("burst/f199"), Some(&[b'x'; 1024]), t, stop)?;
    row("mkdir burst + 200 files of 1 KiB", &lat);

    let t = Instant::now();
    fs::rename(root.join("burst"), root.join("burst-renamed"))?;
    let lat = arrival(c, Path::new("burst"), None, t, stop)?;
    row("mv burst burst-renamed (old name gone)", &lat);

    let t = Instant::now();
    fs::remove_dir_all(root.join("burst-renamed"))?;
    let lat = arrival(c, Path::new("burst-renamed"), None, t, stop)?;
    row("rm -rf burst-renamed", &lat);

    c.wait_converged(PATIENCE)?;
    singles.sort();
    if !singles.is_empty() {
        let p50 = singles[singles.len() / 2];
        let max = *singles.last().unwrap();
        say(&format!(
            "\nSingle-file changes: median {}, slowest {} (over {} arrivals).",
            ms(p50).trim(),
            ms(max).trim(),
            singles.len()
        ));
    }
    say("Every node's tree is byte-identical, and `csync2 -M` is empty everywhere.");
    let s = c.status(0);
    if let Some(s) = s {
        let k = &s.counters;
        say(&format!(
            "node1's daemon: {} changes seen, {} batches, {} csync2 checks, {} updates, {} full syncs.",
            k.changes, k.batches, k.checks, k.updates, k.full_syncs
        ));
    }
    Ok(())
}
