//! Exactness across crashes: journaling csync2 runs, the first fill of
//! the stat cache from csync2's database, and recovery where csync2's
//! database is in doubt (see [`crate::confirm`] for the rules).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use super::*;
use crate::confirm::{self, Standing};
use crate::journal::{JournalError, RunMode, ScopeEntry};

/// Where csync2's database cannot be trusted until recovery has run.
#[derive(Debug, Default)]
pub(super) struct Doubt {
    /// Paths of interrupted or failed runs, and of changes journaled but
    /// never checked.
    pub exact: HashSet<PathBuf>,
    /// The same, for scopes that cover everything below them.
    pub trees: HashSet<PathBuf>,
    /// Journaled runs that recovery resolves.
    pub runs: Vec<u64>,
    /// Queued journal entries up to this txid are resolved by recovery.
    pub queued_through: u64,
    /// The last stop was unclean: recent regular files anywhere are in
    /// doubt too (wall-clock ms cutoff).
    pub recent_ms: Option<i64>,
}

impl Doubt {
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty()
            && self.trees.is_empty()
            && self.runs.is_empty()
            && self.recent_ms.is_none()
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.trees.len()
    }

    pub fn add(&mut self, scope: impl IntoIterator<Item = ScopeEntry>) {
        for e in scope {
            if e.recursive {
                self.trees.insert(e.path);
            } else {
                self.exact.insert(e.path);
            }
        }
    }

    pub fn covers(&self, path: &Path) -> bool {
        self.exact.contains(path) || path.ancestors().any(|a| self.trees.contains(a))
    }

    fn everywhere(&self) -> bool {
        self.recent_ms.is_some() || self.trees.contains(Path::new("/"))
    }
}

impl Daemon {
    /// What the last run of the daemon left: interrupted csync2 runs, the
    /// queue, an unclean stop, a journal that missed writes.
    pub(super) fn take_over(&mut self, clean_stop: bool, journal_missed_writes: bool) {
        match self.journal.open_runs() {
            Ok(runs) => {
                for run in runs {
                    info!(
                        mode = run.mode.word(),
                        paths = run.scope.len(),
                        "a csync2 run was interrupted by the last stop: its scope is in doubt"
                    );
                    if run.mode != RunMode::Update {
                        self.doubt.add(run.scope);
                    }
                    // An interrupted `-u` leaves csync2's dirty rows in place
                    // for whatever a peer did not take: the start-up update
                    // sends them.
                    self.doubt.runs.push(run.id);
                }
            }
            Err(e) => {
                error!("cannot read the journal's interrupted runs ({e}): every tree is in doubt");
                self.doubt.add([everything()]);
            }
        }
        match self.journal.pending() {
            Ok(pending) => {
                if !pending.is_empty() {
                    info!(
                        paths = pending.len(),
                        "changes journaled before the last stop: in doubt until recovered"
                    );
                }
                for q in pending {
                    self.doubt.queued_through = self.doubt.queued_through.max(q.txid);
                    self.doubt.add([ScopeEntry {
                        recursive: q.kind == ChangeKind::DirTree,
                        path: q.path,
                    }]);
                }
            }
            Err(e) => {
                error!("cannot read the journal's queue ({e}): every tree is in doubt");
                self.doubt.add([everything()]);
            }
        }
        if journal_missed_writes {
            warn!("the journal missed writes before the last stop (full disk?): every tree is in doubt");
            self.doubt.add([everything()]);
        }
        if !clean_stop {
            let last = self.journal.last_run_started_ms().unwrap_or(0);
            // A second of margin: csync2's check text has whole seconds.
            self.doubt.recent_ms = Some(last.saturating_sub(1000));
            info!(
                "the last stop was not clean: files changed since its last csync2 run are in doubt"
            );
        }
        self.need_fill = match self.journal.confirmed_filled() {
            Ok(filled) => !filled,
            Err(e) => {
                self.journal_failed("reading the confirmed record", &e);
                true
            }
        };
        self.status.doubt_paths = self.doubt.len() as u64;
    }

    /// A journal read or write failed: keep syncing, say so, and make the
    /// next start treat every tree as in doubt.
    pub(super) fn journal_failed(&mut self, what: &str, e: &JournalError) {
        if self.status.journal_error.is_none() {
            error!("journal: {what} failed: {e}; syncing goes on, and the next start rechecks every tree");
        } else {
            debug!("journal: {what} failed: {e}");
        }
        if let Some(h) = &self.health {
            h.set();
        }
        self.status.journal_error = Some(format!("{what}: {e}"));
        self.status_dirty = true;
    }

    /// Journal a csync2 run before it starts (`None` if the journal
    /// cannot: the run goes ahead all the same).
    pub(super) fn begin_run(&mut self, mode: RunMode, scope: &[ScopeEntry]) -> Option<u64> {
        match self.journal.begin_run(mode, scope) {
            Ok(id) => Some(id),
            Err(e) => {
                self.journal_failed("recording a csync2 run", &e);
                None
            }
        }
    }

    /// The run finished: forget it.
    pub(super) fn end_run(&mut self, id: Option<u64>) {
        if let Some(id) = id {
            if let Err(e) = self.journal.end_run(id) {
                self.journal_failed("clearing a csync2 run", &e);
            }
        }
    }

    /// A run failed or was killed half-way: csync2's database is in doubt
    /// over its scope until recovery runs (the run stays journaled until
    /// then).
    pub(super) fn in_doubt(&mut self, run: Option<u64>, scope: Vec<ScopeEntry>) {
        self.doubt.add(scope);
        self.doubt.runs.extend(run);
        self.status.doubt_paths = self.doubt.len() as u64;
        self.status_dirty = true;
    }

    /// Fill the confirmed record from csync2's database, once: a path
    /// whose stat gives exactly the check text csync2 recorded, and that is
    /// dirty towards no peer, is what the peers hold. Paths in doubt are
    /// left out (recovery forces them). Changes nothing in csync2.
    pub(super) fn run_fill(&mut self) -> Result<(), Stop> {
        self.gate()?;
        let _span = info_span!("fill_confirmed").entered();
        self.set_state("recovering");
        let started = Instant::now();
        let listed = self
            .csync2
            .list_known(self.limits)
            .and_then(|known| Ok((known, self.csync2.list_dirty(self.limits)?)));
        let (known, dirty) = match listed {
            Ok(l) => l,
            Err(e) => {
                warn!("cannot read csync2's database to fill the confirmed record, retrying: {e}");
                self.note_failure(&e);
                return Ok(());
            }
        };
        let dirty: HashSet<PathBuf> = dirty
            .into_iter()
            .filter_map(|d| self.dirty_path(&d))
            .collect();
        let known: HashMap<PathBuf, Vec<u8>> = known
            .into_iter()
            .filter_map(|k| self.real_path(&k.name).map(|p| (p, k.checktxt)))
            .collect();
        let ignores = self.plan.ignores();
        let plan = self.plan.clone();
        let heartbeat = self.heartbeat.clone();
        let (doubt, recent_cut) = (&self.doubt, self.doubt.recent_ms);
        let items = Mutex::new(Vec::new());
        let walked = crate::walk::par_synced_under(
            plan.as_ref(),
            plan.roots(),
            &[PathBuf::from("/")],
            &|batch| {
                let mut mine = Vec::new();
                for (path, snap) in batch.iter() {
                    // What is in doubt is left to recovery, which forces
                    // what the cache does not hold.
                    let recent = recent_cut.is_some_and(|cut| confirm::recent(snap, cut));
                    if recent || doubt.covers(path) || dirty.contains(path) {
                        continue;
                    }
                    let Some(recorded) = known.get(path) else {
                        continue;
                    };
                    let target = (snap.mode & 0o170000 == 0o120000)
                        .then(|| std::fs::read_link(path).ok())
                        .flatten()
                        .map(|t| {
                            use std::os::unix::ffi::OsStrExt;
                            t.as_os_str().as_bytes().to_vec()
                        });
                    if confirm::checktxt(snap, target.as_deref(), ignores) == *recorded {
                        mine.push((path.to_path_buf(), *snap));
                    }
                }
                items.lock().unwrap_or_else(|e| e.into_inner()).extend(mine);
            },
            &|| {
                heartbeat.beat();
                true
            },
        );
        let walked = walked.paths;
        let known_count = known.len();
        drop(known);
        let items = items.into_inner().unwrap_or_else(|e| e.into_inner());
        let confirmed = items.len();
        if let Err(e) = self.journal.fill_confirmed(&items) {
            self.journal_failed("filling the stat cache", &e);
        }
        reconcile::write(&self.cache).fill(items);
        crate::process::release_free_memory();
        self.need_fill = false;
        self.ctl.check_ok();
        info!(
            confirmed,
            walked,
            known = known_count,
            elapsed = ?started.elapsed(),
            "filled the stat cache from csync2's database"
        );
        self.set_state("idle");
        Ok(())
    }

    /// Recovery: force dirty every path in doubt whose state the peers
    /// were not confirmed to hold (see [`crate::confirm::must_force`]),
    /// after a `csync2 -c` of them so that csync2's record is fresh. Then
    /// the doubt is lifted.
    pub(super) fn run_recover(&mut self) -> Result<(), Stop> {
        self.gate()?;
        let _span = info_span!("recover", scopes = self.doubt.len()).entered();
        self.set_state("recovering");
        self.absorb_receipts();
        let started = Instant::now();
        let (force, relinked) = self.paths_to_force();
        let paths: Vec<PathBuf> = force.iter().map(|(p, _)| p.clone()).collect();
        if !paths.is_empty() {
            let scope: Vec<ScopeEntry> =
                paths.iter().map(|p| ScopeEntry::exact(p.clone())).collect();
            let run = self.begin_run(RunMode::Check, &scope);
            let result = self
                .csync2
                .check(&paths, false, self.limits)
                .and_then(|_| match relinked.is_empty() {
                    true => Ok(()),
                    false => self.csync2.check(&relinked, true, self.limits).map(|_| ()),
                })
                .and_then(|_| self.csync2.mark(&paths, self.limits));
            self.end_run(run);
            if let Err(e) = result {
                warn!(
                    paths = paths.len(),
                    "cannot force the paths in doubt dirty, retrying: {e}"
                );
                self.note_failure(&e);
                self.set_state("idle");
                return Ok(());
            }
            self.status.counters.marks += 1;
            self.ctl.sched.mark_all_dirty();
            let mut persist = Vec::with_capacity(force.len());
            {
                let mut cache = reconcile::write(&self.cache);
                for (p, pre) in force {
                    let post = Snapshot::lstat(&p);
                    persist.push(cache.record(p, pre, post));
                }
            }
            self.persist(&persist);
        }
        let doubt = std::mem::take(&mut self.doubt);
        if let Err(e) = self.journal.end_runs(&doubt.runs) {
            self.journal_failed("clearing recovered runs", &e);
        }
        if doubt.queued_through > 0 {
            if let Err(e) = self.journal.complete_all(doubt.queued_through) {
                self.journal_failed("clearing recovered changes", &e);
            }
        }
        if self.status.journal_error.is_none() {
            if let Some(Err(e)) = self.health.as_ref().map(|h| h.clear()) {
                warn!("cannot clear the journal's health flag: {e}");
            }
        }
        self.ctl.check_ok();
        self.status.doubt_paths = 0;
        self.status.counters.forced += paths.len() as u64;
        info!(
            forced = paths.len(),
            elapsed = ?started.elapsed(),
            "recovered: paths in doubt that the peers were not confirmed to hold are dirty"
        );
        self.set_state("idle");
        Ok(())
    }

    /// Walk what is in doubt and pick what must be forced dirty, comparing
    /// with the stat cache; and the directories that became symlinks over
    /// paths the cache knew (see [`crate::walk::symlinked_ancestor`]).
    fn paths_to_force(&self) -> (Vec<(PathBuf, Option<Snapshot>)>, Vec<PathBuf>) {
        let plan = self.plan.clone();
        let recent = self.doubt.recent_ms;
        let doubt = &self.doubt;
        let judge = |c: &StatCache, path: &Path, disk: Option<&Snapshot>| {
            let known = c.known(path);
            let standing = Standing {
                disk,
                confirmed: known.as_ref(),
                in_doubt: doubt.covers(path),
            };
            if confirm::must_force(standing, recent) {
                Decision::CheckAndMark
            } else {
                Decision::Skip
            }
        };
        let scopes: Vec<PathBuf> = if self.doubt.everywhere() {
            vec![PathBuf::from("/")]
        } else {
            self.doubt.trees.iter().cloned().collect()
        };
        let heartbeat = self.heartbeat.clone();
        let mut out: Vec<(PathBuf, Option<Snapshot>)> = Vec::new();
        let mut relinked = Vec::new();
        if !scopes.is_empty() {
            let diff = reconcile::differences(&self.cache, &plan, &scopes, &judge, &|| {
                heartbeat.beat();
                true
            });
            relinked = diff.relinked;
            out.extend(diff.items.into_iter().map(|(p, s, _)| (p, s)));
        }
        let mut seen: HashSet<PathBuf> = out.iter().map(|(p, _)| p.clone()).collect();
        let cache = reconcile::read(&self.cache);
        for p in &self.doubt.exact {
            if scopes.iter().any(|s| p.starts_with(s)) || !seen.insert(p.clone()) {
                continue;
            }
            let disk = Snapshot::lstat(p);
            if judge(&cache, p, disk.as_ref()) != Decision::Skip && plan.decide(p).synced {
                out.push((p.clone(), disk));
            }
        }
        (out, relinked)
    }
}

fn everything() -> ScopeEntry {
    ScopeEntry::tree(PathBuf::from("/"))
}
