//! The control loop: what to do next, waiting, taking in changes, signals
//! and `sync` requests, and the gate that keeps local csync2 clients away
//! from a busy local server.

use super::*;

impl Daemon {
    pub(super) fn main_loop(&mut self) -> anyhow::Result<()> {
        self.ctl.request_full(None, "start-up");
        self.refresh_scope_timers(Instant::now());

        loop {
            self.heartbeat.beat();
            self.collect();
            if self.stopping {
                self.heartbeat.stopping();
                self.finish();
                return Ok(());
            }
            self.write_status(false);
            self.ctl
                .set_recovery(self.need_fill, !self.doubt.is_empty());
            match self.ctl.next(Instant::now()) {
                Next::Run(action) => {
                    // csync2 runs and server waits are legitimately long.
                    let _busy = self.heartbeat.busy(self.limits.stall_timeout);
                    let done = match action {
                        Action::Fill => self.run_fill(),
                        Action::Recover => self.run_recover(),
                        Action::Full => self.run_full(),
                        Action::Batch => self.run_batch(),
                        Action::Update => self.run_updates(),
                        Action::Verify => self.run_verify(),
                    };
                    if done.is_err() {
                        // Stopped while waiting for the server to be quiet.
                        continue;
                    }
                    self.ctl.run_ended(Instant::now());
                }
                Next::Wait(until) => self.wait(until)?,
            }
        }
    }

    /// Block until `until` (or an input). Fails when the watcher died: a
    /// daemon that no longer sees changes must not pretend to run.
    pub(super) fn wait(&mut self, until: Option<Instant>) -> anyhow::Result<()> {
        let mut deadline = until;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                deadline = Some(deadline.map_or(t, |d| d.min(t)));
            }
        };
        if self.status_dirty {
            consider(self.status_written.map(|t| t + Duration::from_millis(500)));
        }
        let timeout = deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(60))
            .min(self.heartbeat.max_sleep());
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
            recv(self.full_done_rx) -> _ => self.finish_full(),
            recv(self.probe_rx) -> r => {
                if let Ok(r) = r {
                    self.on_probe(r);
                }
            }
            default(timeout) => {}
        }
        Ok(())
    }

    /// Take in everything that arrived: changes, signals, probe results,
    /// the end of a background full check.
    pub(super) fn collect(&mut self) {
        if self.full_done_rx.try_recv().is_ok() {
            self.finish_full();
        }
        self.absorb_receipts();
        while let Ok(sig) = self.signals.try_recv() {
            self.on_signal(sig);
        }
        while let Ok(r) = self.probe_rx.try_recv() {
            self.on_probe(r);
        }
        let drained = self.watcher.drain();
        if !drained.changes.is_empty() {
            let items: Vec<(PathBuf, ChangeKind)> = drained
                .changes
                .into_iter()
                .map(|c| (c.path, c.kind))
                .collect();
            self.status.counters.changes += items.len() as u64;
            let txids = match self.journal.enqueue(&items) {
                Ok(t) => t,
                Err(e) => {
                    // Keep going in memory; the health flag makes the next
                    // start recheck every tree.
                    self.journal_failed(&format!("queueing {} changes", items.len()), &e);
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
            let collapsed = self.ctl.changes(
                items
                    .into_iter()
                    .zip(txids)
                    .map(|((path, kind), txid)| (path, kind, txid)),
                Instant::now(),
            );
            if collapsed {
                info!(
                    threshold = self.settings.full_check_threshold,
                    "too many queued changes: one full check instead"
                );
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
            self.ctl.request_full(fc.scope, reason);
            self.status_dirty = true;
        }
    }

    pub(super) fn on_signal(&mut self, sig: i32) {
        match sig {
            signal_hook::consts::SIGTERM | signal_hook::consts::SIGINT => {
                if !self.stopping {
                    info!("stopping after the batch in hand");
                }
                self.stopping = true;
            }
            signal_hook::consts::SIGHUP => {
                let _trust = self.heartbeat.trust_for(watchdog::RELOAD_TRUST);
                self.reload()
            }
            signal_hook::consts::SIGUSR1 => self.take_requests(true),
            _ => {}
        }
    }

    /// Handle `csync2-watch sync` requests; a bare SIGUSR1 means a full sync.
    pub(super) fn take_requests(&mut self, from_signal: bool) {
        let requests = match self.journal.take_requests() {
            Ok(r) => r,
            Err(e) => {
                warn!("cannot read sync requests: {e}");
                Vec::new()
            }
        };
        if requests.is_empty() && from_signal {
            info!("SIGUSR1: full sync requested");
            self.ctl.request_full(None, "requested by SIGUSR1");
        }
        for req in requests {
            self.status.last_request += 1;
            match req {
                Request::Full => {
                    info!("full sync requested");
                    self.ctl
                        .request_full(None, "requested by csync2-watch sync");
                }
                Request::Deep => {
                    info!("deep check requested");
                    self.ctl
                        .request_deep("requested by csync2-watch sync --deep");
                }
                Request::Flush => {
                    info!("flush requested: updating every peer now");
                    self.ctl.flush(Instant::now());
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
                    let txids = match self.journal.enqueue(&items) {
                        Ok(t) => t,
                        Err(e) => {
                            self.journal_failed("queueing requested paths", &e);
                            vec![0; items.len()]
                        }
                    };
                    self.ctl.requested(
                        items.into_iter().zip(txids).map(|((p, k), t)| (p, k, t)),
                        Instant::now(),
                    );
                }
            }
        }
        self.status_dirty = true;
    }

    /// Wait until the local csync2 server has been quiet for
    /// `quiet_period`. Returns `Err(Stop)` when asked to stop meanwhile.
    pub(super) fn gate(&mut self) -> Result<(), Stop> {
        let mut announced = false;
        loop {
            self.ctl
                .server(self.server.serving_now(), self.server.last_active());
            if self.ctl.quiet_until(Instant::now()).is_none() {
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
            self.heartbeat.beat();
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Record a failed csync2 check (batch, fill, recovery): retried with
    /// the controller's backoff.
    pub(super) fn note_failure(&mut self, e: &RunError) -> Duration {
        if matches!(e, RunError::Busy) {
            self.status.counters.busy += 1;
        } else {
            self.status.counters.csync2_failures += 1;
        }
        self.status.last_error = Some(e.to_string());
        self.ctl.check_failed(Instant::now())
    }

    /// SIGTERM: the batch in hand was checked; push it to the peers that
    /// answer, then stop. What is still queued stays in the journal.
    pub(super) fn finish(&mut self) {
        self.set_state("stopping");
        if let Some(full) = &self.full {
            // A walk stops at once; csync2 runs already started finish.
            full.stop.store(true, std::sync::atomic::Ordering::Relaxed);
            info!("waiting for the reconcile in hand");
            let _ = self.full_done_rx.recv();
            self.finish_full();
        }
        if !self.ctl.sched.due(Instant::now()).is_empty() {
            self.stopping = false;
            let _ = self.run_updates();
            self.stopping = true;
        }
        let dirty_peers: Vec<String> = self
            .ctl
            .sched
            .peers()
            .iter()
            .filter(|p| p.dirty)
            .map(|p| p.name.clone())
            .collect();
        if !self.ctl.queue.is_empty() || !self.doubt.is_empty() || !dirty_peers.is_empty() {
            warn!(
                queued = self.ctl.queue.len(),
                in_doubt = self.doubt.len(),
                dirty_peers = %dirty_peers.join(","),
                "stopping before everything reached the peers: the journal and csync2's \
                 dirty table keep it, and the next start syncs it"
            );
        }
    }

    pub(super) fn reload(&mut self) {
        info!("SIGHUP: reloading csync2.cfg and settings");
        match Plan::load(&self.opts.load) {
            Ok(plan) => {
                let plan = Arc::new(plan);
                self.watcher.reload(plan.clone() as Arc<dyn TreeFilter>);
                let peers: Vec<String> = plan.peers().iter().map(|p| p.name.clone()).collect();
                self.ctl.sched.set_peers(&peers);
                self.plan = plan;
                self.ctl
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
        match crate::settings::Settings::load_with_overrides(
            self.opts.settings_path.as_deref(),
            &self.opts.overrides,
        ) {
            Ok(s) => {
                self.csync2.program = s.csync2.clone();
                self.csync2.client_args = s.csync2_args.clone();
                self.limits.stall_timeout = s.stall_timeout;
                self.ctl.set_policy(policy(&s));
                self.settings = s;
            }
            Err(e) => error!("keeping the old settings: {e:#}"),
        }
        self.status_dirty = true;
    }
}
