//! The daemon behind `csync2-watch run`: wires the watcher, the batch
//! queue, the stat cache, the scheduler, the csync2 runner, the local
//! server gate, the journal and the status files into one control loop.
//!
//! One control thread runs every local csync2 client, one at a time (or
//! one update per peer at a time with `parallel_updates`), and only while
//! the local csync2 server has been quiet for `quiet_period`; the one
//! exception is the reconcile, which walks and checks in a thread of its
//! own so that changes keep flowing. Everything else feeds the control
//! thread without ever blocking: the watcher coalesces changes, probes
//! report from their own threads, signals arrive on a channel.
//!
//! Start-up: lock the state directory, load csync2.cfg, the settings and
//! the stat cache, start (or observe) the local server, place every
//! watch, fill the cache from csync2's database the first time, recover
//! what the last stop left in doubt (interrupted csync2 runs, journaled
//! changes; see [`crate::confirm`]) and reconcile every tree, so no change
//! made while the daemon was down, or lost in a crash, is missed.
//!
//! Layer: daemon. Imports the adapters and the core (the decisions are
//! the [`crate::controller`]'s; this module carries them out).

use std::collections::HashSet;
use std::net::{IpAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use crossbeam_channel::{select, Receiver, Sender};
use tracing::{debug, error, info, info_span, warn};

use crate::controller::{Action, Controller, Next, Policy};
use crate::journal::{HealthFlag, Journal, Request};
use crate::journal::{RunMode, ScopeEntry};
use crate::plan::{LoadOptions, Plan};
use crate::probe;
use crate::queue::{display_bytes, Batch, FullRequest};
use crate::runner::{Csync2, Limits, RunError, UpdateOutcome};
use crate::sched::{Reach, Scheduler, Timing};
use crate::server::LocalServer;
use crate::settings::{ServerMode, Settings};
use crate::statcache::{Decision, Run, Snapshot, StatCache};
use crate::status::{self, Counters, PeerStatus, RunInfo, Status};
use crate::watch::{ChangeKind, FullCheckReason, TreeFilter, WatchOptions, WatchStats, Watcher};

/// csync2's default port.
pub const DEFAULT_PORT: u16 = 30865;

/// Everything `run` needs, resolved from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub load: LoadOptions,
    pub csync2: Csync2,
    pub settings: Settings,
    /// `--config FILE`, for reloads.
    pub settings_path: Option<PathBuf>,
    /// `--set KEY=VALUE` overrides, for reloads.
    pub overrides: Vec<String>,
    /// `--state-dir`; `None`: the default for this node.
    pub state_dir: Option<PathBuf>,
}

/// Why the control loop stopped what it was doing.
#[derive(Debug)]
struct Stop;

/// A full check running in its own thread.
struct RunningFull {
    req: FullRequest,
    /// Set to stop its walk (the daemon stops).
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// The cache's version when it started: newer results win.
    since: u64,
    /// Its journal record.
    journaled: Option<u64>,
    started: Instant,
    handle: std::thread::JoinHandle<Result<reconcile::Reconciled, RunError>>,
}

/// A probe's answer, from its own thread.
struct ProbeResult {
    peer: String,
    result: Result<Duration, probe::ProbeError>,
}

/// Run the daemon until SIGTERM/SIGINT.
pub fn run(opts: Options) -> anyhow::Result<()> {
    let plan = Arc::new(load_plan(&opts.load)?);
    let state_dir = opts.state_dir.clone().unwrap_or_else(|| {
        crate::journal::default_state_dir(Some(plan.node()), opts.load.cfg_name.as_deref())
    });
    create_state_dir(&state_dir)?;
    let _lock = lock_state_dir(&state_dir)?;
    let (mut journal, set_aside) = Journal::open_or_set_aside(&state_dir)?;
    let (health, journal_missed_writes) = match HealthFlag::open(&state_dir) {
        Ok((h, missed)) => (Some(h), missed),
        Err(e) => {
            error!(
                "cannot open {}: {e}; treating every tree as in doubt",
                state_dir.join(crate::journal::HEALTH_FILE).display()
            );
            (None, true)
        }
    };
    let clean_stop = journal
        .mark_running(std::process::id())
        .unwrap_or_else(|e| {
            error!("cannot record in the journal that the daemon runs: {e}");
            false
        });

    let port = opts.csync2.port.unwrap_or(DEFAULT_PORT);
    let bind = bind_addresses(opts.load.node.as_deref(), port);
    let server = match opts.settings.server {
        ServerMode::Managed => LocalServer::managed(&opts.csync2, port, bind)?,
        ServerMode::External => LocalServer::external(port, bind),
    };

    let (sig_tx, sig_rx) = crossbeam_channel::unbounded();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGUSR1,
    ])
    .context("cannot install signal handlers")?;
    let sig_handle = signals.handle();
    let sig_thread = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig_tx.send(sig).is_err() {
                    break;
                }
            }
        })?;

    info!(node = plan.node(), config = %plan.config_file().display(), state_dir = %state_dir.display(), "starting");
    let watchdog = watchdog::Watchdog::start();
    let started = Instant::now();
    let watcher = Watcher::start(
        plan.clone() as Arc<dyn TreeFilter>,
        watch_options(&opts.settings),
    )
    .context("cannot watch the csync2 trees")?;
    let stats = watcher.stats();
    info!(
        directories = stats.dirs_watched,
        elapsed = ?started.elapsed(),
        "all watches in place"
    );
    let _ = sd_notify::notify(
        false,
        &[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&format!(
                "watching {} directories; start-up full sync",
                stats.dirs_watched
            )),
        ],
    );

    let loaded = Instant::now();
    let mut cache = StatCache::new();
    let (cache, cache_lost) = match journal.confirmed_each(&mut |p, s| cache.load_one(p, s)) {
        Ok(()) => (cache, false),
        Err(e) => {
            error!("cannot read the stat cache from the journal ({e}): filling it again from csync2's database");
            (StatCache::new(), true)
        }
    };
    crate::process::release_free_memory();
    info!(paths = cache.len(), elapsed = ?loaded.elapsed(), "stat cache loaded");
    let cache = Arc::new(std::sync::RwLock::new(cache));

    let (probe_tx, probe_rx) = crossbeam_channel::unbounded();
    let (full_done_tx, full_done_rx) = crossbeam_channel::bounded(1);
    let peers: Vec<String> = plan.peers().iter().map(|p| p.name.clone()).collect();
    let now = Instant::now();
    let seed = seed_for(plan.node());
    let mut daemon = Daemon {
        ctl: Controller::new(
            policy(&opts.settings),
            Scheduler::new(&peers, timing(&opts.settings), now, seed),
        ),
        limits: Limits {
            stall_timeout: opts.settings.stall_timeout,
        },
        csync2: opts.csync2.clone(),
        settings: opts.settings.clone(),
        opts,
        plan,
        state_dir,
        port,
        journal,
        cache,
        watcher,
        server,
        signals: sig_rx,
        probe_tx,
        probe_rx,
        stopping: false,
        full: None,
        full_done_tx,
        full_done_rx,
        doubt: recover::Doubt::default(),
        last_unattributed: None,
        health,
        need_fill: false,
        status: Status::default(),
        status_written: None,
        status_dirty: true,
        status_write_failed: false,
        heartbeat: watchdog.heartbeat(),
    };
    daemon.init_status();
    if let Some(old) = &set_aside {
        error!(
            moved_to = %old.display(),
            "the journal was damaged and moved aside. What it may have held that the \
             start-up full check cannot find again: changes seen but not yet checked that \
             csync2 cannot see (a same-size edit within the second of an earlier check), and \
             the files a csync2 run it recorded as interrupted had recorded without marking \
             them dirty. If in doubt, compare the nodes with `csync2 -T`."
        );
    }
    daemon.take_over(clean_stop, journal_missed_writes || set_aside.is_some());
    if cache_lost {
        daemon.need_fill = true;
    }
    let result = daemon.main_loop();
    if result.is_ok() {
        if let Err(e) = daemon.journal.mark_stopped() {
            daemon.journal_failed("recording a clean stop", &e);
        }
    }

    daemon.status.state = "stopped".into();
    daemon.write_status(true);
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    let Daemon {
        watcher, server, ..
    } = daemon;
    watcher.stop();
    server.shutdown();
    sig_handle.close();
    let _ = sig_thread.join();
    info!("stopped");
    result
}

/// Load csync2.cfg, turning problems into a configuration error.
pub fn load_plan(load: &LoadOptions) -> anyhow::Result<Plan> {
    Plan::load(load).map_err(|e| anyhow::Error::new(e.into_exit()))
}

/// The state directory holds every changed path name: root's alone
/// (0700), created if missing, tightened if it exists.
fn create_state_dir(state_dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .with_context(|| format!("cannot create state directory {}", state_dir.display()))?;
    std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(0o700)).with_context(|| {
        format!(
            "cannot make state directory {} private",
            state_dir.display()
        )
    })
}

/// Hold an exclusive lock on `state_dir/lock` for the daemon's lifetime.
fn lock_state_dir(state_dir: &Path) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = state_dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // A daemon that was just SIGKILLed can leave its lock behind for a
    // moment: a child it was forking holds a copy of the descriptor until
    // it execs csync2 (close-on-exec). So a busy lock is tried for a few
    // seconds before it is taken for a daemon that runs.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut file = file;
    loop {
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((f, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                file = f;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err((_, errno)) => break Err(errno),
        }
    }
    .map_err(|errno| {
        let holder = Status::read(state_dir)
            .ok()
            .filter(|s| s.daemon_alive())
            .map(|s| format!(" (pid {})", s.pid))
            .unwrap_or_default();
        anyhow::anyhow!(
            "another csync2-watch{holder} already runs with state directory {} ({errno}); \
                 stop it, or give this one its own --state-dir",
            state_dir.display()
        )
    })
}

/// The addresses csync2 -ii binds with `-N NAME` (none: all addresses).
fn bind_addresses(node: Option<&str>, port: u16) -> Vec<IpAddr> {
    let Some(node) = node else {
        return Vec::new();
    };
    match (node, port).to_socket_addrs() {
        Ok(addrs) => {
            let mut v: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
            v.dedup();
            v
        }
        Err(e) => {
            warn!("cannot resolve this node's name {node}: {e}; watching all addresses for csync2 connections");
            Vec::new()
        }
    }
}

fn watch_options(s: &Settings) -> WatchOptions {
    WatchOptions {
        blind_poll_interval: s.blind_poll_interval,
        degraded_interval: s.degraded_interval,
        ..WatchOptions::default()
    }
}

fn policy(s: &Settings) -> Policy {
    Policy {
        batch_delay: s.batch_delay,
        batch_delay_max: s.batch_delay_max,
        max_batch: s.max_batch,
        full_check_threshold: s.full_check_threshold,
        quiet_period: s.quiet_period,
        retry_initial: s.retry_initial,
        retry_max: s.retry_max,
        deep_check_interval: s.deep_check_interval,
    }
}

fn timing(s: &Settings) -> Timing {
    Timing {
        retry_initial: s.retry_initial,
        retry_max: s.retry_max,
        down_probe_max: Duration::from_secs(10),
        full_sync_interval: s.full_sync_interval,
        full_sync_jitter: s.full_sync_jitter,
    }
}

fn seed_for(node: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h ^ u64::from(std::process::id()) ^ status::unix_now()
}

struct Daemon {
    opts: Options,
    plan: Arc<Plan>,
    settings: Settings,
    csync2: Csync2,
    limits: Limits,
    state_dir: PathBuf,
    port: u16,
    journal: Journal,
    /// The stat cache (shared with the reconcile thread).
    cache: reconcile::SharedCache,
    /// What runs next: the batch queue, the peers' schedule, timers and
    /// backoffs.
    ctl: Controller,
    watcher: Watcher,
    server: LocalServer,
    signals: Receiver<i32>,
    probe_tx: Sender<ProbeResult>,
    probe_rx: Receiver<ProbeResult>,
    stopping: bool,
    /// The full check running in the background, if any.
    full: Option<RunningFull>,
    full_done_tx: Sender<()>,
    full_done_rx: Receiver<()>,
    /// Where csync2's database is in doubt until recovery runs.
    doubt: recover::Doubt,
    /// The local server's last unattributed activity the cache was told.
    last_unattributed: Option<Instant>,
    /// The flag that tells the next start the journal missed writes.
    health: Option<HealthFlag>,
    /// The confirmed record was never filled from csync2's database.
    need_fill: bool,
    status: Status,
    status_written: Option<Instant>,
    status_dirty: bool,
    /// The last status write failed (said once).
    status_write_failed: bool,
    /// Tells the systemd watchdog that the control loop is alive.
    heartbeat: watchdog::Heartbeat,
}

mod checks;
mod control;
mod peers;
mod reconcile;
mod recover;
mod report;
mod watchdog;
