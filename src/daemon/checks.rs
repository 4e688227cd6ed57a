//! Checking batches (`csync2 -c`, plus `-m` for changes csync2 cannot
//! see; a directory that appeared is compared with the stat cache path by
//! path), and receipts from the local server.

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
        let mut cache = reconcile::write(&self.cache);
        for r in receipts {
            let Some(path) = self.real_path(&r.name) else {
                continue;
            };
            let snap = Snapshot::lstat(&path);
            let untouched_since = snap.as_ref().is_none_or(|s| s.ctime() <= r.done_at + slack);
            if untouched_since {
                believed += 1;
                // What the sender holds, as csync2 recorded it here.
                confirmed.push(cache.record_received(path, snap));
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
        drop(cache);
        self.persist(&confirmed);
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
        self.note_unattributed();
        let mut check = Vec::new();
        let mut mark = Vec::new();
        let mut pre = Vec::new();
        let mut skipped = 0u64;
        let mut gone_trees: Vec<PathBuf> = Vec::new();
        let mut take = |p: PathBuf, snap: Option<Snapshot>, d: Decision, cache: &StatCache| {
            match d {
                Decision::Skip => skipped += 1,
                Decision::Check => check.push(p.clone()),
                Decision::CheckAndMark => {
                    tracing::trace!(
                        path = %display_bytes(&p),
                        why = %cache.explain(&p, snap.as_ref()),
                        "at risk: will force dirty"
                    );
                    check.push(p.clone());
                    mark.push(p.clone());
                }
            }
            pre.push((p, snap));
        };
        {
            let cache = reconcile::read(&self.cache);
            for p in batch.entries.iter().chain(&batch.dirs) {
                let snap = Snapshot::lstat(p);
                let d = cache.decide(p, snap.as_ref());
                take(p.clone(), snap, d, &cache);
            }
        }
        if !batch.trees.is_empty() {
            // Directories that appeared or vanished: every path below them
            // that the cache does not hold as it is now.
            let heartbeat = self.heartbeat.clone();
            let diff = reconcile::differences(
                &self.cache,
                &self.plan,
                &batch.trees,
                &|c, p, s| c.decide(p, s),
                &|| {
                    heartbeat.beat();
                    true
                },
            );
            // Trees that vanished (or are no directory any more) also get
            // `csync2 -cr`: it marks deleted whatever csync2 recorded below
            // them, known to the cache or not.
            gone_trees = batch
                .trees
                .iter()
                .filter(|t| Snapshot::lstat(t).is_none_or(|s| !s.is_dir()))
                .cloned()
                .collect();
            for link in diff.relinked {
                if !gone_trees.contains(&link) {
                    gone_trees.push(link);
                }
            }
            let cache = reconcile::read(&self.cache);
            for (p, snap, d) in diff.items {
                take(p, snap, d, &cache);
            }
        }
        self.status.counters.skipped += skipped;

        let mut marked = 0usize;
        let scope: Vec<ScopeEntry> = batch
            .entries
            .iter()
            .chain(&batch.dirs)
            .map(|p| ScopeEntry::exact(p.clone()))
            .chain(batch.trees.iter().map(|p| ScopeEntry::tree(p.clone())))
            .collect();
        let journaled = if check.is_empty() && gone_trees.is_empty() {
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
        let result = (|| -> Result<(), RunError> {
            if !check.is_empty() {
                let o = self.csync2.check(&check, false, self.limits)?;
                self.status.counters.checks += o.processes as u64;
                marked += o.marked.len();
            }
            if !gone_trees.is_empty() {
                let o = self.csync2.check(&gone_trees, true, self.limits)?;
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
        match result {
            Ok(()) => {
                self.end_run(journaled);
                let checked: HashSet<&PathBuf> = check.iter().collect();
                let mut persist = Vec::new();
                {
                    let mut cache = reconcile::write(&self.cache);
                    for (p, pre) in pre {
                        if checked.contains(&p) {
                            let post = Snapshot::lstat(&p);
                            persist.push(cache.record(p, pre, post));
                        }
                    }
                }
                self.persist(&persist);
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
