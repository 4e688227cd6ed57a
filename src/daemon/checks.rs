//! Checking: batches (`csync2 -c`/`-cr`, plus `-m` for changes csync2
//! cannot see), full checks, receipts from the local server, and forcing
//! dirty what a crash left journaled.

use super::*;

impl Daemon {
    /// Files the local server received: csync2 recorded them as it wrote
    /// them, so their own events need no check, and they must never be
    /// forced dirty (that would push them back). A receipt is only
    /// believed if the file has not changed since the server was done.
    pub(super) fn absorb_receipts(&mut self) {
        if self.server.take_marked() {
            debug!("the csync2 server marked files dirty: updating the peers");
            self.ctl.sched.mark_all_dirty();
        }
        let receipts = self.server.take_receipts();
        if receipts.is_empty() {
            return;
        }
        // ctime has the kernel's coarse clock (a few ms).
        let slack = Duration::from_millis(20);
        let (mut believed, mut changed_since) = (0usize, 0usize);
        let mut confirmed = Vec::new();
        for r in receipts {
            let Some(path) = self.real_path(&r.name) else {
                continue;
            };
            let snap = Snapshot::lstat(&path);
            let untouched_since = snap.as_ref().is_none_or(|s| s.ctime() <= r.done_at + slack);
            if untouched_since {
                believed += 1;
                // What the sender holds, as csync2 recorded it here.
                confirmed.push((path.clone(), snap));
                self.awaiting.remove(&path);
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
        if let Err(e) = self.journal.confirm(&confirmed) {
            self.journal_failed("recording received files", &e);
        }
        debug!(believed, changed_since, "receipts from the csync2 server");
    }

    /// The real path behind a name csync2 printed (`%prefix%/rest` or real).
    pub(super) fn real_path(&self, name: &[u8]) -> Option<PathBuf> {
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

    /// The real path of a `csync2 -M` entry.
    pub(super) fn dirty_path(&self, d: &crate::runner::DirtyEntry) -> Option<PathBuf> {
        use std::os::unix::ffi::OsStrExt;
        self.real_path(d.path.as_os_str().as_bytes())
    }

    /// Start the pending full check in the background: a full check of a
    /// large tree takes seconds, and changes keep flowing meanwhile (csync2
    /// serialises the database itself, and commits often for that reason).
    pub(super) fn run_full(&mut self) -> Result<(), Stop> {
        if self.full.is_some() {
            return Ok(());
        }
        let Some(req) = self.ctl.start_full() else {
            return Ok(());
        };
        if let Err(stop) = self.gate() {
            self.ctl.full_not_started(&req, Instant::now());
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
        let scope_entries: Vec<ScopeEntry> = req
            .scopes
            .clone()
            .unwrap_or_else(|| vec![PathBuf::from("/")])
            .into_iter()
            .map(|path| ScopeEntry {
                path,
                recursive: true,
            })
            .collect();
        let journaled = self.begin_run(RunMode::Full, &scope_entries);
        for ScopeEntry { path: scope, .. } in scope_entries {
            if let Err(e) = self.journal.record_full_check(
                (scope != Path::new("/")).then_some(scope.as_path()),
                &reasons,
            ) {
                self.journal_failed("recording a full check", &e);
            }
        }
        let span = info_span!("full_check", scope = %scope_desc);
        span.in_scope(|| info!("full check ({reasons})"));
        let (csync2, limits, scopes) = (self.csync2.clone(), self.limits, req.scopes.clone());
        let done = self.full_done_tx.clone();
        let run = Run::begin();
        let spawned = std::thread::Builder::new()
            .name("full-check".into())
            .spawn(move || {
                let _entered = span.entered();
                let result = match &scopes {
                    None => csync2.check_all(limits),
                    Some(dirs) => csync2.check(dirs, true, limits),
                };
                let _ = done.send(());
                result
            });
        match spawned {
            Ok(handle) => {
                self.full = Some(RunningFull {
                    req,
                    run,
                    journaled,
                    started: Instant::now(),
                    handle,
                });
                self.status.full_check_running = true;
                self.status_dirty = true;
            }
            Err(e) => {
                warn!("cannot start a thread for the full check: {e}");
                self.end_run(journaled);
                self.ctl.full_not_started(&req, Instant::now());
            }
        }
        Ok(())
    }

    /// The background full check ended: record what it established.
    pub(super) fn finish_full(&mut self) {
        let Some(full) = self.full.take() else {
            return;
        };
        let RunningFull {
            req,
            run,
            journaled,
            started,
            handle,
        } = full;
        let result = handle.join().unwrap_or_else(|_| {
            Err(RunError::Failed {
                status: "panicked".into(),
                stderr_tail: "the full-check thread panicked".into(),
            })
        });
        self.status.full_check_running = false;
        self.status_dirty = true;
        let run = run.ended();
        let millis = started.elapsed().as_millis() as u64;
        match result {
            Ok(outcome) => {
                self.status.counters.checks += outcome.processes as u64;
                match &req.scopes {
                    None => {
                        self.status.counters.full_syncs += 1;
                        self.cache.record_full(run);
                        if let Err(e) = self.journal.complete_all(req.max_txid) {
                            self.journal_failed("clearing checked changes", &e);
                        }
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
                            self.journal_failed("clearing checked changes", &e);
                        }
                    }
                }
                self.end_run(journaled);
                // Pushes to every peer, and plans the next periodic one.
                self.ctl.full_ended(&req, true, Instant::now());
                info!(
                    marked = outcome.marked.len(),
                    elapsed = ?started.elapsed(),
                    "full check done"
                );
            }
            Err(e) => {
                if matches!(e, RunError::Busy) {
                    self.status.counters.busy += 1;
                } else {
                    self.status.counters.csync2_failures += 1;
                }
                self.status.last_error = Some(e.to_string());
                let delay = self
                    .ctl
                    .full_ended(&req, false, Instant::now())
                    .unwrap_or_default();
                warn!("full check failed, retrying in {delay:?}: {e}");
                // It may have stopped between recording a file and marking
                // it dirty: what it covered is in doubt, and so is what was
                // checked while it ran (such a file looked unchanged).
                self.awaiting.clear();
                let scope = req
                    .scopes
                    .clone()
                    .unwrap_or_else(|| vec![PathBuf::from("/")])
                    .into_iter()
                    .map(|path| ScopeEntry {
                        path,
                        recursive: true,
                    })
                    .collect();
                self.in_doubt(journaled, scope);
            }
        }
    }

    pub(super) fn run_batch(&mut self) -> Result<(), Stop> {
        let batch = self.ctl.take_batch();
        if batch.is_empty() {
            return Ok(());
        }
        if let Err(stop) = self.gate() {
            self.ctl.queue.requeue(batch);
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
        let scope: Vec<ScopeEntry> = batch
            .entries
            .iter()
            .chain(&batch.dirs)
            .map(|p| ScopeEntry {
                path: p.clone(),
                recursive: false,
            })
            .chain(batch.trees.iter().map(|p| ScopeEntry {
                path: p.clone(),
                recursive: true,
            }))
            .collect();
        let journaled = if check.is_empty() && batch.trees.is_empty() {
            None
        } else {
            self.begin_run(RunMode::Check, &scope)
        };
        debug!(
            check = check.len(),
            trees = batch.trees.len(),
            mark = mark.len(),
            "batch: checking"
        );
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
                self.end_run(journaled);
                let checked: HashSet<&PathBuf> = check.iter().collect();
                for (p, pre) in pre {
                    if checked.contains(&p) {
                        let post = Snapshot::lstat(&p);
                        if pre == post {
                            // csync2 saw exactly this state.
                            self.await_confirmation(p.clone(), post);
                        }
                        self.cache.record(p, pre, post, run);
                    }
                }
                for t in &batch.trees {
                    self.cache.record_tree(t.clone(), run);
                }
                self.complete(&batch);
                if marked > 0 {
                    self.ctl.sched.mark_all_dirty();
                }
                self.ctl.check_ok();
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
                // csync2 may have stopped between recording a file and
                // marking it dirty: the batch is in doubt, and recovery
                // (csync2 -c, then -m of what the peers were not confirmed
                // to hold) takes it over, with backoff.
                warn!(
                    paths = batch.len(),
                    "csync2 check failed: recovering the batch, retrying: {e}"
                );
                self.note_failure(&e);
                self.in_doubt(journaled, scope);
                self.complete(&batch);
            }
        }
        self.set_state("idle");
        Ok(())
    }

    /// Forget a checked batch in the journal (for a tree, also what it
    /// subsumed below it).
    pub(super) fn complete(&mut self, batch: &Batch) {
        let paths: Vec<PathBuf> = batch.entries.iter().chain(&batch.dirs).cloned().collect();
        let done = self
            .journal
            .complete(&paths, batch.max_txid)
            .and_then(|()| self.journal.complete_trees(&batch.trees, batch.max_txid));
        if let Err(e) = done {
            self.journal_failed("clearing checked changes", &e);
        }
    }
}
