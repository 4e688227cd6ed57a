//! The daemon behind `csync2-watch run`: wires the watcher, the batch
//! queue, the stat cache, the scheduler, the csync2 runner, the local
//! server gate, the journal and the status files into one control loop.
//!
//! One control thread runs every local csync2 client, one at a time (or
//! one update per peer at a time with `parallel_updates`), and only while
//! the local csync2 server has been quiet for `quiet_period`. Everything
//! else feeds it without ever blocking: the watcher coalesces changes,
//! probes report from their own threads, signals arrive on a channel.
//!
//! Start-up: lock the state directory, load csync2.cfg and the settings,
//! start (or observe) the local server, place every watch, replay what the
//! journal still holds, then run a full sync before anything else, so no
//! change made while the daemon was down is missed.

use std::collections::HashSet;
use std::net::{IpAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use crossbeam_channel::{select, Receiver, Sender};
use tracing::{debug, error, info, info_span, warn};

use crate::journal::{Journal, Request};
use crate::plan::{LoadOptions, Plan};
use crate::probe;
use crate::queue::{display_bytes, Batch, BatchQueue, FullRequest};
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

/// A probe's answer, from its own thread.
struct ProbeResult {
    peer: String,
    result: Result<Duration, probe::ProbeError>,
}

/// The default state directory: `/var/lib/csync2-watch/NODE[_CFG]`, named
/// like csync2's own database.
pub fn default_state_dir(node: &str, cfg_name: Option<&str>) -> PathBuf {
    let mut name = node.to_string();
    if let Some(cfg) = cfg_name {
        name.push('_');
        name.push_str(cfg);
    }
    Path::new("/var/lib/csync2-watch").join(name)
}

/// Run the daemon until SIGTERM/SIGINT.
pub fn run(opts: Options) -> anyhow::Result<()> {
    let plan = Arc::new(load_plan(&opts.load)?);
    let state_dir = opts
        .state_dir
        .clone()
        .unwrap_or_else(|| default_state_dir(plan.node(), opts.load.cfg_name.as_deref()));
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("cannot create state directory {}", state_dir.display()))?;
    let _lock = lock_state_dir(&state_dir)?;
    let journal = Journal::open(&state_dir)?;

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

    let (probe_tx, probe_rx) = crossbeam_channel::unbounded();
    let peers: Vec<String> = plan.peers().iter().map(|p| p.name.clone()).collect();
    let now = Instant::now();
    let seed = seed_for(plan.node());
    let mut daemon = Daemon {
        sched: Scheduler::new(&peers, timing(&opts.settings), now, seed),
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
        queue: BatchQueue::new(),
        cache: StatCache::new(100_000),
        watcher,
        server,
        signals: sig_rx,
        probe_tx,
        probe_rx,
        stopping: false,
        ready_at: None,
        retry_at: None,
        batch_failures: 0,
        scope_timers: Vec::new(),
        replay: Vec::new(),
        replay_trees: Vec::new(),
        status: Status::default(),
        status_written: None,
        status_dirty: true,
    };
    daemon.init_status();
    let result = daemon.main_loop();

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
    Plan::load(load).map_err(|e| {
        let mut msg = String::new();
        for d in &e.diagnostics {
            msg.push_str(d);
            msg.push('\n');
        }
        anyhow::Error::new(crate::exit::Exit::config(msg))
    })
}

/// Hold an exclusive lock on `state_dir/lock` for the daemon's lifetime.
fn lock_state_dir(state_dir: &Path) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    let path = state_dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(lock),
        Err((_, errno)) => {
            let holder = Status::read(state_dir)
                .ok()
                .filter(|s| s.daemon_alive())
                .map(|s| format!(" (pid {})", s.pid))
                .unwrap_or_default();
            anyhow::bail!(
                "another csync2-watch{holder} already runs with state directory {} ({errno}); \
                 stop it, or give this one its own --state-dir",
                state_dir.display()
            )
        }
    }
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
        network_fs_interval: s.network_fs_interval,
        degraded_interval: s.degraded_interval,
        ..WatchOptions::default()
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
    queue: BatchQueue,
    cache: StatCache,
    sched: Scheduler,
    watcher: Watcher,
    server: LocalServer,
    signals: Receiver<i32>,
    probe_tx: Sender<ProbeResult>,
    probe_rx: Receiver<ProbeResult>,
    stopping: bool,
    /// When the queued changes may go out (batch_delay after a quiet spell).
    ready_at: Option<Instant>,
    /// A failed check is retried no earlier than this.
    retry_at: Option<Instant>,
    batch_failures: u32,
    /// Subtrees inotify cannot fully cover, with their next full check.
    scope_timers: Vec<(PathBuf, Duration, Instant)>,
    /// Journaled before the last stop, to force dirty after the start-up
    /// full check (entries, and trees with all below them).
    replay: Vec<PathBuf>,
    replay_trees: Vec<PathBuf>,
    status: Status,
    status_written: Option<Instant>,
    status_dirty: bool,
}

/// What the control loop does next.
enum Action {
    Full,
    Batch,
    Updates,
    Verify,
}

impl Daemon {
    fn main_loop(&mut self) -> anyhow::Result<()> {
        match self.journal.pending() {
            Ok(pending) => {
                if !pending.is_empty() {
                    info!(
                        paths = pending.len(),
                        "changes journaled before the last stop: forcing them dirty after the start-up check"
                    );
                }
                // A csync2 check killed half-way (with us) may have recorded
                // a file without marking it dirty: csync2 would never push
                // it. So whatever was still journaled is forced dirty.
                for q in pending {
                    match q.kind {
                        ChangeKind::DirTree => self.replay_trees.push(q.path),
                        _ => self.replay.push(q.path),
                    }
                }
            }
            Err(e) => warn!("cannot read the journal's queue: {e}"),
        }
        self.queue.request_full(None, "start-up");
        self.refresh_scope_timers(Instant::now());

        loop {
            self.collect();
            if self.stopping {
                self.finish();
                return Ok(());
            }
            self.write_status(false);
            match self.next_action(Instant::now()) {
                Some(action) => {
                    let done = match action {
                        Action::Full => self.run_full(),
                        Action::Batch => self.run_batch(),
                        Action::Updates => self.run_updates(),
                        Action::Verify => self.run_verify(),
                    };
                    if done.is_err() {
                        // Stopped while waiting for the server to be quiet.
                        continue;
                    }
                    if !self.queue.is_empty() && self.retry_at.is_none() {
                        // Changes that arrived while csync2 ran form the
                        // next batch at once.
                        self.ready_at = Some(Instant::now());
                    }
                }
                None => self.wait()?,
            }
        }
    }

    /// Pick the next action, most urgent first.
    fn next_action(&mut self, now: Instant) -> Option<Action> {
        if self.sched.full_due(now) && self.queue.full_pending().is_none() {
            self.queue.request_full(None, "periodic full sync");
            self.sched.full_started(now);
        }
        for (scope, every, due) in &mut self.scope_timers {
            if *due <= now {
                *due = now + *every;
                self.queue
                    .request_full(Some(scope.clone()), "tree inotify cannot fully see");
            }
        }
        let retry_ok = self.retry_at.is_none_or(|t| t <= now);
        if self.queue.full_pending().is_some() && retry_ok {
            return Some(Action::Full);
        }
        if !self.queue.is_empty() && retry_ok && self.ready_at.is_none_or(|t| t <= now) {
            return Some(Action::Batch);
        }
        if !self.sched.due(now).is_empty() {
            return Some(Action::Updates);
        }
        if self.sched.verify_pending() && self.queue.is_idle() {
            return Some(Action::Verify);
        }
        None
    }

    /// Block until something may be due. Fails when the watcher died: a
    /// daemon that no longer sees changes must not pretend to run.
    fn wait(&mut self) -> anyhow::Result<()> {
        let mut deadline = self.sched.next_deadline();
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                deadline = Some(deadline.map_or(t, |d| d.min(t)));
            }
        };
        if !self.queue.is_empty() {
            consider(self.ready_at);
        }
        if !self.queue.is_idle() {
            consider(self.retry_at);
        }
        for (_, _, due) in &self.scope_timers {
            consider(Some(*due));
        }
        if self.status_dirty {
            consider(self.status_written.map(|t| t + Duration::from_millis(500)));
        }
        let timeout = deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(60));
        let wake = self.watcher.wake().clone();
        select! {
            recv(wake) -> w => {
                if w.is_err() || !self.watcher.is_running() {
                    anyhow::bail!("the inotify reader stopped; exiting so that systemd restarts csync2-watch");
                }
            }
            recv(self.signals) -> sig => {
                if let Ok(sig) = sig {
                    self.on_signal(sig);
                }
            }
            recv(self.probe_rx) -> r => {
                if let Ok(r) = r {
                    self.on_probe(r);
                }
            }
            default(timeout) => {}
        }
        Ok(())
    }

    /// Files the local server received: csync2 recorded them as it wrote
    /// them, so their own events need no check, and they must never be
    /// forced dirty (that would push them back). A receipt is only
    /// believed if the file has not changed since the server was done.
    fn absorb_receipts(&mut self) {
        if self.server.take_marked() {
            debug!("the csync2 server marked files dirty: updating the peers");
            self.sched.mark_all_dirty();
        }
        let receipts = self.server.take_receipts();
        if receipts.is_empty() {
            return;
        }
        // ctime has the kernel's coarse clock (a few ms).
        let slack = Duration::from_millis(20);
        let (mut believed, mut changed_since) = (0usize, 0usize);
        for r in receipts {
            let Some(path) = self.real_path(&r.name) else {
                continue;
            };
            let snap = Snapshot::lstat(&path);
            let untouched_since = snap.as_ref().is_none_or(|s| s.ctime() <= r.done_at + slack);
            if untouched_since {
                believed += 1;
                self.cache.record_received(path, snap, r.done_at);
            } else {
                changed_since += 1;
                debug!(
                    path = %display_bytes(&path),
                    ctime = ?snap.map(|s| s.ctime()),
                    done_at = ?r.done_at,
                    "received file changed since the server was done with it"
                );
            }
        }
        debug!(believed, changed_since, "receipts from the csync2 server");
    }

    /// The real path behind a name csync2 printed (`%prefix%/rest` or real).
    fn real_path(&self, name: &[u8]) -> Option<PathBuf> {
        use std::os::unix::ffi::OsStrExt;
        if name.first() == Some(&b'%') {
            let real = self
                .plan
                .rules()
                .prefixes()
                .iter()
                .find_map(|p| p.decode(name))?;
            Some(PathBuf::from(std::ffi::OsStr::from_bytes(&real)))
        } else {
            Some(PathBuf::from(std::ffi::OsStr::from_bytes(name)))
        }
    }

    /// Take in everything that arrived: changes, signals, probe results.
    fn collect(&mut self) {
        self.absorb_receipts();
        while let Ok(sig) = self.signals.try_recv() {
            self.on_signal(sig);
        }
        while let Ok(r) = self.probe_rx.try_recv() {
            self.on_probe(r);
        }
        let drained = self.watcher.drain();
        if !drained.changes.is_empty() {
            let was_empty = self.queue.is_empty();
            let items: Vec<(PathBuf, ChangeKind)> = drained
                .changes
                .into_iter()
                .map(|c| (c.path, c.kind))
                .collect();
            self.status.counters.changes += items.len() as u64;
            let txids = match self.journal.enqueue(&items) {
                Ok(t) => t,
                Err(e) => {
                    // Keep going in memory: the start-up full sync after a
                    // crash covers what the journal could not hold.
                    error!("cannot journal {} changes: {e}", items.len());
                    vec![0; items.len()]
                }
            };
            if let Some(&last) = txids.last() {
                // Keep the feed bounded; pruning costs what it removes.
                if last % 1024 < items.len() as u64 {
                    if let Err(e) = self.journal.prune(self.settings.journal_keep_events) {
                        warn!("cannot prune the journal's change feed: {e}");
                    }
                }
            }
            for ((path, kind), txid) in items.into_iter().zip(txids) {
                self.queue.push(path, kind, txid);
            }
            if was_empty {
                self.ready_at = Some(Instant::now() + self.settings.batch_delay);
            }
            self.status_dirty = true;
        }
        for fc in drained.full_checks {
            let reason = match &fc.reason {
                FullCheckReason::Overflow => {
                    self.status.counters.overflows += 1;
                    "inotify queue overflow".to_string()
                }
                FullCheckReason::WatchFailed(why) => format!("watch failed: {why}"),
                FullCheckReason::TooManyChanges => "too many changes".to_string(),
                FullCheckReason::RootReplaced => "a watched root was replaced".to_string(),
            };
            warn!(scope = ?fc.scope, "full check needed: {reason}");
            self.queue.request_full(fc.scope, reason);
            self.status_dirty = true;
        }
        if self
            .queue
            .collapse_if_over(self.settings.full_check_threshold)
        {
            info!(
                threshold = self.settings.full_check_threshold,
                "too many queued changes: one full check instead"
            );
        }
    }

    fn on_signal(&mut self, sig: i32) {
        match sig {
            signal_hook::consts::SIGTERM | signal_hook::consts::SIGINT => {
                if !self.stopping {
                    info!("stopping after the batch in hand");
                }
                self.stopping = true;
            }
            signal_hook::consts::SIGHUP => self.reload(),
            signal_hook::consts::SIGUSR1 => self.take_requests(true),
            _ => {}
        }
    }

    /// Handle `csync2-watch sync` requests; a bare SIGUSR1 means a full sync.
    fn take_requests(&mut self, from_signal: bool) {
        let requests = match self.journal.take_requests() {
            Ok(r) => r,
            Err(e) => {
                warn!("cannot read sync requests: {e}");
                Vec::new()
            }
        };
        if requests.is_empty() && from_signal {
            info!("SIGUSR1: full sync requested");
            self.queue.request_full(None, "requested by SIGUSR1");
        }
        for req in requests {
            self.status.last_request += 1;
            match req {
                Request::Full => {
                    info!("full sync requested");
                    self.queue
                        .request_full(None, "requested by csync2-watch sync");
                }
                Request::Flush => {
                    info!("flush requested: updating every peer now");
                    self.ready_at = Some(Instant::now());
                    self.retry_at = None;
                    self.sched.retry_now();
                }
                Request::Paths(paths) => {
                    let items: Vec<(PathBuf, ChangeKind)> = paths
                        .into_iter()
                        .map(|p| {
                            let kind = if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                                ChangeKind::DirTree
                            } else {
                                ChangeKind::Entry
                            };
                            (p, kind)
                        })
                        .collect();
                    let txids = self
                        .journal
                        .enqueue(&items)
                        .unwrap_or_else(|_| vec![0; items.len()]);
                    for ((p, k), t) in items.into_iter().zip(txids) {
                        self.queue.push(p, k, t);
                    }
                    self.ready_at = Some(Instant::now());
                }
            }
        }
        self.status_dirty = true;
    }

    fn on_probe(&mut self, r: ProbeResult) {
        match r.result {
            Ok(rtt) => {
                let was_down = matches!(
                    self.sched.peer(&r.peer).map(|p| p.reach),
                    Some(Reach::Down { .. })
                );
                self.sched.probe_ok(&r.peer);
                if was_down {
                    info!(peer = %r.peer, ?rtt, "peer is back: catching it up");
                }
            }
            Err(e) => {
                if self
                    .sched
                    .unreachable(&r.peer, Instant::now(), e.to_string())
                {
                    warn!(peer = %r.peer, "peer unreachable, retrying with backoff: {e}");
                } else {
                    debug!(peer = %r.peer, "still unreachable: {e}");
                }
            }
        }
        self.status_dirty = true;
    }

    /// Wait until the local csync2 server has been quiet for
    /// `quiet_period`. Returns `Err(Stop)` when asked to stop meanwhile.
    fn gate(&mut self) -> Result<(), Stop> {
        let quiet = self.settings.quiet_period;
        let mut announced = false;
        loop {
            let serving = self.server.serving_now();
            let recent = self
                .server
                .last_active()
                .is_some_and(|t| t.elapsed() < quiet);
            if !serving && !recent {
                return Ok(());
            }
            if !announced {
                debug!("local csync2 server busy: waiting");
                self.set_state("waiting-for-server");
                announced = true;
            }
            while let Ok(sig) = self.signals.try_recv() {
                self.on_signal(sig);
            }
            if self.stopping {
                return Err(Stop);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn run_full(&mut self) -> Result<(), Stop> {
        let Some(req) = self.queue.take_full() else {
            return Ok(());
        };
        if let Err(stop) = self.gate() {
            self.requeue_full(&req);
            return Err(stop);
        }
        let reasons = req.reasons.join("; ");
        let scope_desc = match &req.scopes {
            None => "/".to_string(),
            Some(s) => s
                .iter()
                .map(|p| display_bytes(p))
                .collect::<Vec<_>>()
                .join(" "),
        };
        let _span = info_span!("full_check", scope = %scope_desc).entered();
        for scope in req
            .scopes
            .clone()
            .unwrap_or_else(|| vec![PathBuf::from("/")])
        {
            if let Err(e) = self.journal.record_full_check(
                (scope != Path::new("/")).then_some(scope.as_path()),
                &reasons,
            ) {
                warn!("cannot journal the full check: {e}");
            }
        }
        self.set_state("full-check");
        info!("full check ({reasons})");
        let started = Instant::now();
        let run = Run::begin();
        let result = match &req.scopes {
            None => self.csync2.check_all(self.limits),
            Some(dirs) => self.csync2.check(dirs, true, self.limits),
        };
        let run = run.ended();
        let millis = started.elapsed().as_millis() as u64;
        match result {
            Ok(outcome) => {
                self.status.counters.checks += outcome.processes as u64;
                match &req.scopes {
                    None => {
                        self.status.counters.full_syncs += 1;
                        self.cache.record_full(run);
                        self.sched.full_started(Instant::now());
                        if let Err(e) = self.journal.complete_all(req.max_txid) {
                            warn!("cannot update the journal: {e}");
                        }
                        self.force_replayed();
                        self.status.last_full_sync = Some(RunInfo {
                            at: status::unix_now(),
                            paths: 0,
                            millis,
                            marked: outcome.marked.len() as u64,
                            ok: true,
                        });
                    }
                    Some(dirs) => {
                        for d in dirs {
                            self.cache.record_tree(d.clone(), run);
                        }
                        if let Err(e) = self.journal.complete_trees(dirs, req.max_txid) {
                            warn!("cannot update the journal: {e}");
                        }
                    }
                }
                // A full sync pushes to every peer, whatever -v reported.
                self.sched.mark_all_dirty();
                self.batch_failures = 0;
                self.retry_at = None;
                info!(
                    marked = outcome.marked.len(),
                    elapsed = ?started.elapsed(),
                    "full check done"
                );
            }
            Err(e) => {
                self.note_failure(&e);
                self.requeue_full(&req);
                warn!("full check failed, retrying: {e}");
            }
        }
        self.set_state("idle");
        Ok(())
    }

    /// Force dirty what was journaled before the last stop (see
    /// `main_loop`). Failures keep the lists for the next full check.
    fn force_replayed(&mut self) {
        if self.replay.is_empty() && self.replay_trees.is_empty() {
            return;
        }
        let done = self
            .csync2
            .mark(&self.replay, self.limits)
            .and_then(|_| self.csync2.mark_tree(&self.replay_trees, self.limits));
        match done {
            Ok(_) => {
                info!(
                    paths = self.replay.len() + self.replay_trees.len(),
                    "changes from before the last stop forced dirty"
                );
                self.replay.clear();
                self.replay_trees.clear();
                self.status.counters.marks += 1;
            }
            Err(e) => warn!("cannot force the replayed changes dirty, retrying later: {e}"),
        }
    }

    fn requeue_full(&mut self, req: &FullRequest) {
        let reason = req.reasons.join("; ");
        match &req.scopes {
            None => self.queue.request_full(None, reason),
            Some(dirs) => {
                for d in dirs {
                    self.queue.request_full(Some(d.clone()), reason.clone());
                }
            }
        }
    }

    /// Record a failed csync2 run and set the retry delay.
    fn note_failure(&mut self, e: &RunError) {
        if matches!(e, RunError::Busy) {
            self.status.counters.busy += 1;
        } else {
            self.status.counters.csync2_failures += 1;
        }
        self.status.last_error = Some(e.to_string());
        self.batch_failures += 1;
        let delay = Duration::from_millis(250 * (1u64 << self.batch_failures.min(8)))
            .min(self.settings.retry_max);
        self.retry_at = Some(Instant::now() + delay);
    }

    fn run_batch(&mut self) -> Result<(), Stop> {
        let batch = self.queue.take_batch(self.settings.max_batch);
        if batch.is_empty() {
            return Ok(());
        }
        if let Err(stop) = self.gate() {
            self.queue.requeue(batch);
            return Err(stop);
        }
        let _span = info_span!("batch", paths = batch.len()).entered();
        self.set_state("checking");
        let started = Instant::now();

        self.absorb_receipts();
        let unattributed = self.server.unattributed();
        let mut check = Vec::new();
        let mut mark = Vec::new();
        let mut pre = Vec::new();
        let mut skipped = 0u64;
        for p in batch.entries.iter().chain(&batch.dirs) {
            let snap = Snapshot::lstat(p);
            match self.cache.classify(p, snap.as_ref(), unattributed) {
                Decision::Skip => skipped += 1,
                Decision::Check => check.push(p.clone()),
                Decision::CheckAndMark => {
                    tracing::trace!(
                        path = %display_bytes(p),
                        why = %self.cache.explain(p, snap.as_ref()),
                        "at risk: will force dirty"
                    );
                    check.push(p.clone());
                    mark.push(p.clone());
                }
            }
            pre.push((p.clone(), snap));
        }
        self.status.counters.skipped += skipped;

        let mut marked = 0usize;
        let run = Run::begin();
        let result = (|| -> Result<(), RunError> {
            if !check.is_empty() {
                let o = self.csync2.check(&check, false, self.limits)?;
                self.status.counters.checks += o.processes as u64;
                marked += o.marked.len();
            }
            if !batch.trees.is_empty() {
                let o = self.csync2.check(&batch.trees, true, self.limits)?;
                self.status.counters.checks += o.processes as u64;
                marked += o.marked.len();
            }
            if !mark.is_empty() {
                debug!(paths = mark.len(), "same-second edits: forcing them dirty");
                let o = self.csync2.mark(&mark, self.limits)?;
                self.status.counters.marks += o.processes as u64;
                marked += mark.len();
            }
            Ok(())
        })();
        let run = run.ended();
        match result {
            Ok(()) => {
                let checked: HashSet<&PathBuf> = check.iter().collect();
                for (p, pre) in pre {
                    if checked.contains(&p) {
                        let post = Snapshot::lstat(&p);
                        self.cache.record(p, pre, post, run);
                    }
                }
                for t in &batch.trees {
                    self.cache.record_tree(t.clone(), run);
                }
                self.complete(&batch);
                if marked > 0 {
                    self.sched.mark_all_dirty();
                }
                self.batch_failures = 0;
                self.retry_at = None;
                self.status.counters.batches += 1;
                self.status.last_batch = Some(RunInfo {
                    at: status::unix_now(),
                    paths: batch.len() as u64,
                    millis: started.elapsed().as_millis() as u64,
                    marked: marked as u64,
                    ok: true,
                });
                debug!(marked, skipped, elapsed = ?started.elapsed(), "batch checked");
            }
            Err(e) => {
                warn!(paths = batch.len(), "csync2 check failed, retrying: {e}");
                self.note_failure(&e);
                if self.batch_failures >= 5 {
                    error!(
                        failures = self.batch_failures,
                        "checks keep failing: falling back to a full check"
                    );
                    self.complete(&batch);
                    self.queue
                        .request_full(None, "repeated check failures".to_string());
                } else {
                    self.queue.requeue(batch);
                }
            }
        }
        self.set_state("idle");
        Ok(())
    }

    /// Forget a checked batch in the journal (for a tree, also what it
    /// subsumed below it).
    fn complete(&mut self, batch: &Batch) {
        let paths: Vec<PathBuf> = batch.entries.iter().chain(&batch.dirs).cloned().collect();
        let done = self
            .journal
            .complete(&paths, batch.max_txid)
            .and_then(|()| self.journal.complete_trees(&batch.trees, batch.max_txid));
        if let Err(e) = done {
            warn!("cannot update the journal: {e}");
        }
    }

    fn run_updates(&mut self) -> Result<(), Stop> {
        let due = self.sched.due(Instant::now());
        if due.is_empty() {
            return Ok(());
        }
        // Probe every due peer at once; a peer that does not answer within
        // the grace time is left to answer later and never holds up the
        // others.
        for peer in &due {
            self.sched.probe_started(peer);
            let tx = self.probe_tx.clone();
            let (peer, port, timeout) = (peer.clone(), self.port, self.settings.probe_timeout);
            std::thread::spawn(move || {
                let result = probe::probe(&peer, port, timeout);
                let _ = tx.send(ProbeResult { peer, result });
            });
        }
        let grace = self.settings.probe_timeout.min(Duration::from_millis(300));
        let deadline = Instant::now() + grace;
        let mut waiting: HashSet<String> = due.iter().cloned().collect();
        let mut up = Vec::new();
        while !waiting.is_empty() {
            let Ok(r) = self.probe_rx.recv_deadline(deadline) else {
                break;
            };
            if waiting.remove(&r.peer) && r.result.is_ok() {
                up.push(r.peer.clone());
            }
            self.on_probe(r);
        }
        if up.is_empty() {
            return Ok(());
        }
        self.gate()?;
        let _span = info_span!("update", peers = %up.join(",")).entered();
        self.set_state("updating");
        if self.settings.parallel_updates && up.len() > 1 {
            let csync2 = &self.csync2;
            let limits = self.limits;
            let results: Vec<(String, Result<UpdateOutcome, RunError>)> = std::thread::scope(|s| {
                let handles: Vec<_> = up
                    .iter()
                    .map(|p| {
                        s.spawn(move || (p.clone(), csync2.update(std::slice::from_ref(p), limits)))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("update thread"))
                    .collect()
            });
            for (peer, r) in results {
                self.apply_update(&[peer], r);
            }
        } else {
            let r = self.csync2.update(&up, self.limits);
            self.apply_update(&up, r);
        }
        self.set_state("idle");
        Ok(())
    }

    fn apply_update(&mut self, peers: &[String], r: Result<UpdateOutcome, RunError>) {
        let now = Instant::now();
        self.status.counters.updates += 1;
        match r {
            Ok(o) => {
                for p in peers {
                    if o.connect_failed.iter().any(|f| f.eq_ignore_ascii_case(p)) {
                        if self
                            .sched
                            .unreachable(p, now, "csync2 could not connect".into())
                        {
                            warn!(peer = %p, "csync2 could not connect: retrying with backoff");
                        }
                    } else {
                        let errors = (!o.errors.is_empty()).then(|| o.errors.join("; "));
                        if let Some(e) = &errors {
                            warn!(peer = %p, "csync2 -u reported: {e}");
                        }
                        self.sched.updated(p, errors);
                    }
                }
                debug!(elapsed = ?o.elapsed, ok = o.exit_ok, "updated");
            }
            Err(e) => {
                warn!(peers = %peers.join(","), "csync2 -u failed: {e}");
                if matches!(e, RunError::Busy) {
                    self.status.counters.busy += 1;
                } else {
                    self.status.counters.csync2_failures += 1;
                }
                for p in peers {
                    self.sched.update_failed(p, now, e.to_string());
                }
            }
        }
        self.status_dirty = true;
    }

    fn run_verify(&mut self) -> Result<(), Stop> {
        self.gate()?;
        self.set_state("verifying");
        self.status.counters.verifies += 1;
        match self.csync2.list_dirty(self.limits) {
            Ok(entries) => {
                let mut dirty: Vec<String> = entries.into_iter().map(|e| e.peer).collect();
                dirty.sort();
                dirty.dedup();
                if !dirty.is_empty() {
                    debug!(peers = %dirty.join(","), "csync2 -M: still dirty");
                }
                self.sched.verified(&dirty, Instant::now());
            }
            Err(e) => {
                warn!("csync2 -M failed: {e}");
                self.sched.verified(&[], Instant::now());
                self.sched.mark_all_dirty();
                self.note_failure(&e);
            }
        }
        self.set_state("idle");
        Ok(())
    }

    /// SIGTERM: the batch in hand was checked; push it to the peers that
    /// answer, then stop. What is still queued stays in the journal.
    fn finish(&mut self) {
        self.set_state("stopping");
        if !self.sched.due(Instant::now()).is_empty() {
            self.stopping = false;
            let _ = self.run_updates();
            self.stopping = true;
        }
    }

    fn reload(&mut self) {
        info!("SIGHUP: reloading csync2.cfg and settings");
        match Plan::load(&self.opts.load) {
            Ok(plan) => {
                let plan = Arc::new(plan);
                self.watcher.reload(plan.clone() as Arc<dyn TreeFilter>);
                let peers: Vec<String> = plan.peers().iter().map(|p| p.name.clone()).collect();
                self.sched.set_peers(&peers);
                self.plan = plan;
                self.queue
                    .request_full(None, "configuration reloaded".to_string());
                self.refresh_scope_timers(Instant::now());
            }
            Err(e) => {
                error!(
                    "keeping the old configuration: {}",
                    e.diagnostics.join("; ")
                );
            }
        }
        match crate::cmd::run::load_settings(
            self.opts.settings_path.as_deref(),
            &self.opts.overrides,
        ) {
            Ok(s) => {
                self.csync2.program = s.csync2.clone();
                self.csync2.client_args = s.csync2_args.clone();
                self.limits.stall_timeout = s.stall_timeout;
                self.settings = s;
            }
            Err(e) => error!("keeping the old settings: {e:#}"),
        }
        self.status_dirty = true;
    }

    /// Periodic full checks for trees inotify cannot fully see.
    fn refresh_scope_timers(&mut self, now: Instant) {
        let stats = self.watcher.stats();
        self.set_scope_timers(&stats, now);
    }

    /// Keep one timer per network-filesystem or degraded tree; a tree that
    /// stays keeps its due time.
    fn set_scope_timers(&mut self, stats: &WatchStats, now: Instant) {
        let wanted: Vec<&PathBuf> = stats
            .network_fs
            .iter()
            .map(|(p, _)| p)
            .chain(&stats.degraded)
            .collect();
        if wanted.len() == self.scope_timers.len()
            && wanted
                .iter()
                .zip(&self.scope_timers)
                .all(|(w, (p, _, _))| *w == p)
        {
            return;
        }
        let old = std::mem::take(&mut self.scope_timers);
        let known = |path: &Path| old.iter().any(|(p, _, _)| p == path);
        let keep = |path: &Path, every: Duration| {
            old.iter()
                .find(|(p, _, _)| p == path)
                .map(|(_, _, due)| *due)
                .unwrap_or(now + every)
        };
        let mut timers = Vec::new();
        for (path, fs) in &stats.network_fs {
            if known(path) {
                let every = self.settings.network_fs_interval;
                timers.push((path.clone(), every, keep(path, every)));
                continue;
            }
            warn!(
                path = %display_bytes(path),
                fs,
                every = ?self.settings.network_fs_interval,
                "inotify cannot see writes made by other machines here: periodic full checks"
            );
            let every = self.settings.network_fs_interval;
            timers.push((path.clone(), every, keep(path, every)));
        }
        for path in &stats.degraded {
            let every = self.settings.degraded_interval;
            timers.push((path.clone(), every, keep(path, every)));
        }
        self.scope_timers = timers;
    }

    fn set_state(&mut self, state: &str) {
        if self.status.state != state {
            self.status.state = state.to_string();
            self.status_dirty = true;
        }
    }

    fn init_status(&mut self) {
        self.status = Status {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            node: self.plan.node().to_string(),
            config_file: self.plan.config_file().to_path_buf(),
            state_dir: self.state_dir.clone(),
            started: status::unix_now(),
            state: "starting".into(),
            counters: Counters::default(),
            ..Status::default()
        };
        self.write_status(true);
    }

    /// Refresh and write the status files (at most twice a second unless
    /// `force`).
    fn write_status(&mut self, force: bool) {
        if self
            .status_written
            .is_some_and(|t| t.elapsed() < Duration::from_millis(500))
            && !force
        {
            return;
        }
        if !self.status_dirty && !force {
            return;
        }
        let now = Instant::now();
        let stats = self.watcher.stats();
        self.set_scope_timers(&stats, now);
        self.status.updated = status::unix_now();
        self.status.watch.ready = true;
        self.status.watch.directories = stats.dirs_watched as u64;
        self.status.watch.roots = self.plan.roots().to_vec();
        self.status.watch.network_fs = stats
            .network_fs
            .iter()
            .map(|(p, fs)| (p.clone(), fs.to_string()))
            .collect();
        self.status.watch.degraded = stats.degraded.clone();
        self.status.watch.overflows = self.status.counters.overflows;
        self.status.queue.pending = self.queue.len() as u64;
        self.status.queue.full_check_pending = self.queue.full_pending().is_some();
        self.status.queue.last_txid = self.queue.max_txid();
        self.status.next_full_sync_in = self
            .sched
            .next_full()
            .map(|t| t.saturating_duration_since(now).as_secs());
        self.status.peers = self
            .sched
            .peers()
            .iter()
            .map(|p| PeerStatus {
                name: p.name.clone(),
                reach: match p.reach {
                    Reach::Unknown => "unknown",
                    Reach::Up => "up",
                    Reach::Down { .. } => "down",
                }
                .to_string(),
                dirty: p.dirty,
                failures: p.failures,
                last_ok: p.last_ok.and_then(|t| {
                    t.duration_since(std::time::UNIX_EPOCH)
                        .ok()
                        .map(|d| d.as_secs())
                }),
                last_error: p.last_error.clone(),
                next_try_in: p
                    .next_try
                    .map(|t| t.saturating_duration_since(now).as_secs()),
            })
            .collect();
        let server = self.server.status();
        self.status.server.managed = server.managed;
        self.status.server.pid = server.pid;
        self.status.server.restarts = server.restarts;
        self.status.server.connections = server.connections;
        self.status.server.last_error = server.last_error;
        if let Err(e) = self.status.write(&self.state_dir) {
            warn!("cannot write status: {e}");
        }
        let up = self
            .status
            .peers
            .iter()
            .filter(|p| p.reach != "down")
            .count();
        let _ = sd_notify::notify(
            false,
            &[sd_notify::NotifyState::Status(&format!(
                "{}; {} directories watched; {} queued; peers {}/{} reachable",
                self.status.state,
                self.status.watch.directories,
                self.status.queue.pending,
                up,
                self.status.peers.len()
            ))],
        );
        self.status_written = Some(now);
        self.status_dirty = false;
    }
}
