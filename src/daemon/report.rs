//! Telling the operator: status.json, metrics, sd_notify STATUS lines, and
//! the timers for trees inotify cannot fully see.

use super::*;

impl Daemon {
    /// Periodic reconciles for trees inotify cannot fully see.
    pub(super) fn refresh_scope_timers(&mut self, now: Instant) {
        let stats = self.watcher.stats();
        self.set_scope_timers(&stats, now);
    }

    /// Keep one timer per network-filesystem, FUSE or degraded tree; a
    /// tree that stays keeps its due time. (The watcher says once, at
    /// WARN, why each such tree is polled.)
    pub(super) fn set_scope_timers(&mut self, stats: &WatchStats, now: Instant) {
        let wanted: Vec<(PathBuf, Duration, &'static str)> = stats
            .network_fs
            .iter()
            .map(|(p, _)| {
                (
                    p.clone(),
                    self.settings.blind_poll_interval,
                    "polled: inotify cannot see other machines' writes here",
                )
            })
            .chain(stats.degraded.iter().map(|p| {
                (
                    p.clone(),
                    self.settings.degraded_interval,
                    "polled: inotify could not watch all of this tree",
                )
            }))
            .collect();
        self.ctl.set_scope_timers(wanted, now);
    }

    /// The Prometheus textfile: `metrics_dir/NODE[_CFG].prom`, named like
    /// the default state directory; `None` when `metrics_dir` is empty.
    pub(super) fn metrics_file(&self) -> Option<PathBuf> {
        if self.settings.metrics_dir.as_os_str().is_empty() {
            return None;
        }
        let name = crate::journal::default_state_dir(
            Some(self.plan.node()),
            self.opts.load.cfg_name.as_deref(),
        );
        let mut file = name.file_name()?.to_owned();
        file.push(".prom");
        Some(self.settings.metrics_dir.join(file))
    }

    pub(super) fn set_state(&mut self, state: &str) {
        if self.status.state != state {
            self.status.state = state.to_string();
            self.status_dirty = true;
        }
    }

    pub(super) fn init_status(&mut self) {
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
    pub(super) fn write_status(&mut self, force: bool) {
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
        self.status.watch.poll_every_secs = self.settings.blind_poll_interval.as_secs();
        self.status.watch.degraded_every_secs = self.settings.degraded_interval.as_secs();
        self.status.cache_paths = reconcile::read(&self.cache).len() as u64;
        self.status.watch.overflows = self.status.counters.overflows;
        self.status.queue.pending = self.ctl.queue.len() as u64;
        self.status.queue.full_check_pending = self.ctl.queue.full_pending().is_some();
        self.status.queue.last_txid = self.ctl.queue.max_txid();
        self.status.next_full_sync_in = self
            .ctl
            .sched
            .next_full()
            .map(|t| t.saturating_duration_since(now).as_secs());
        self.status.peers = self
            .ctl
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
        let written = self.status.write(&self.state_dir);
        match &written {
            // Said once until it works again (a full disk would repeat it
            // twice a second).
            Err(e) if !self.status_write_failed => {
                warn!("cannot write status: {e}");
                self.status_write_failed = true;
            }
            Err(e) => debug!("cannot write status: {e}"),
            Ok(()) => self.status_write_failed = false,
        }
        if let Some(path) = self.metrics_file() {
            if let Err(e) = self.status.write_metrics(&path) {
                warn!("cannot write metrics: {e}");
            }
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
        // A status that could not be written (a full disk) is tried again:
        // it may be what tells the operator about the disk.
        self.status_dirty = written.is_err();
    }
}
