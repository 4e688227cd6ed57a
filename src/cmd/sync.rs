//! `csync2-watch sync`: leave a request in the running daemon's journal
//! (check these paths, flush and update every peer now, or a full sync) and
//! wake it with SIGUSR1.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::{Csync2Opts, WatchOpts};
use crate::exit;
use crate::journal::{Journal, Request};

#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    #[command(flatten)]
    pub csync2: Csync2Opts,
    #[command(flatten)]
    pub watch: WatchOpts,
    /// Reconcile every tree (walk it and compare with the stat cache),
    /// then update every peer.
    #[arg(long)]
    pub full: bool,
    /// With --full: also run csync2's own full check (`csync2 -cr`) of
    /// every tree, which reads csync2's database for every file.
    #[arg(long, requires = "full")]
    pub deep: bool,
    /// Paths to queue for checking (default: flush what is pending).
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

pub fn run(args: SyncArgs) -> anyhow::Result<u8> {
    let status = super::status::read(&args.csync2, &args.watch)?;
    if !status.daemon_alive() {
        anyhow::bail!(
            "csync2-watch is not running (pid {} from {} is gone); start it, or run csync2 -x yourself",
            status.pid,
            status.state_dir.display()
        );
    }
    let request = if args.deep {
        Request::Deep
    } else if args.full {
        Request::Full
    } else if !args.paths.is_empty() {
        let cwd = std::env::current_dir().context("cannot read the current directory")?;
        Request::Paths(
            args.paths
                .iter()
                .map(|p| {
                    if p.is_absolute() {
                        p.clone()
                    } else {
                        cwd.join(p)
                    }
                })
                .collect::<Vec<PathBuf>>(),
        )
    } else {
        Request::Flush
    };
    let mut journal = Journal::open(&status.state_dir)?;
    journal.push_request(&request)?;
    let before = status.last_request;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(status.pid as i32),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .with_context(|| format!("cannot signal csync2-watch (pid {})", status.pid))?;

    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let now = super::status::read(&args.csync2, &args.watch)?;
        if now.last_request > before {
            println!(
                "{} (csync2-watch pid {})",
                match request {
                    Request::Full => "full sync started",
                    Request::Deep => "deep check started",
                    Request::Paths(_) => "paths queued",
                    Request::Flush => "updating every peer now",
                },
                status.pid
            );
            return Ok(exit::OK);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "csync2-watch: request left for pid {}, which has not taken it yet (busy with a long csync2 run?)",
        status.pid
    );
    Ok(exit::ERROR)
}
