//! Updating peers: probes, `csync2 -u`, and `csync2 -M` to confirm.

use super::*;

impl Daemon {
    pub(super) fn on_probe(&mut self, r: ProbeResult) {
        match r.result {
            Ok(rtt) => {
                let was_down = matches!(
                    self.ctl.sched.peer(&r.peer).map(|p| p.reach),
                    Some(Reach::Down { .. })
                );
                self.ctl.sched.probe_ok(&r.peer);
                if was_down {
                    info!(peer = %r.peer, ?rtt, "peer is back: catching it up");
                }
            }
            Err(e) => {
                if self
                    .ctl
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

    pub(super) fn run_updates(&mut self) -> Result<(), Stop> {
        let due = self.ctl.sched.due(Instant::now());
        if due.is_empty() {
            return Ok(());
        }
        // Probe every due peer at once; a peer that does not answer within
        // the grace time is left to answer later and never holds up the
        // others.
        for peer in &due {
            self.ctl.sched.probe_started(peer);
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
        let journaled = self.begin_run(RunMode::Update, &[]);
        if self.settings.parallel_updates && up.len() > 1 {
            let csync2 = &self.csync2;
            let limits = self.limits;
            let span = tracing::Span::current();
            let results: Vec<(String, Result<UpdateOutcome, RunError>)> = std::thread::scope(|s| {
                let handles: Vec<_> = up
                    .iter()
                    .map(|p| {
                        let span = span.clone();
                        s.spawn(move || {
                            let _entered = span.entered();
                            (p.clone(), csync2.update(std::slice::from_ref(p), limits))
                        })
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
        self.end_run(journaled);
        self.set_state("idle");
        Ok(())
    }

    pub(super) fn apply_update(&mut self, peers: &[String], r: Result<UpdateOutcome, RunError>) {
        let now = Instant::now();
        self.status.counters.updates += 1;
        match r {
            Ok(o) => {
                for p in peers {
                    if o.connect_failed.iter().any(|f| f.eq_ignore_ascii_case(p)) {
                        if self
                            .ctl
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
                        self.ctl.sched.updated(p, errors);
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
                    self.ctl.sched.update_failed(p, now, e.to_string());
                }
            }
        }
        self.status_dirty = true;
    }

    pub(super) fn run_verify(&mut self) -> Result<(), Stop> {
        self.gate()?;
        self.set_state("verifying");
        self.status.counters.verifies += 1;
        match self.csync2.list_dirty(self.limits) {
            Ok(entries) => {
                let mut dirty: Vec<String> = entries.iter().map(|e| e.peer.clone()).collect();
                dirty.sort();
                dirty.dedup();
                if !dirty.is_empty() {
                    debug!(peers = %dirty.join(","), "csync2 -M: still dirty");
                }
                self.status.unsynced_count = entries.len() as u64;
                self.status.unsynced = entries
                    .iter()
                    .take(10)
                    .map(|e| {
                        let path = self.dirty_path(e).unwrap_or_else(|| e.path.clone());
                        format!("{} -> {}", display_bytes(&path), e.peer)
                    })
                    .collect();
                self.ctl.sched.verified(&dirty, Instant::now());
            }
            Err(e) => {
                warn!("csync2 -M failed: {e}");
                self.ctl.sched.verified(&[], Instant::now());
                self.ctl.sched.mark_all_dirty();
                self.note_failure(&e);
            }
        }
        self.set_state("idle");
        Ok(())
    }
}
