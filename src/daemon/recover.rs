//! Exactness across crashes: journaling csync2 runs, the record of what
//! the peers were confirmed to hold (filling it, and confirming from
//! `csync2 -M`), and recovery where csync2's database is in doubt (see
//! [`crate::confirm`] for the rules).

use std::collections::{HashMap, HashSet};

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

    fn covers(&self, path: &Path) -> bool {
        self.exact.contains(path) || path.ancestors().any(|a| self.trees.contains(a))
    }

    fn everywhere(&self) -> bool {
        self.recent_ms.is_some() || self.trees.contains(Path::new("/"))
    }
}

/// Most checked paths kept waiting for `csync2 -M` (a peer down for long
/// keeps them waiting). Past this they are forgotten: that only costs a
/// re-push of those paths if a crash puts them in doubt.
const MAX_AWAITING: usize = 200_000;

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
        let mut items = Vec::new();
        let mut walked = 0u64;
        let plan = self.plan.clone();
        let heartbeat = self.heartbeat.clone();
        crate::walk::synced_under(
            plan.as_ref(),
            plan.roots(),
            Path::new("/"),
            &mut |path, snap| {
                walked += 1;
                if walked % 4096 == 0 {
                    // A walk of a big, cold tree is work too.
                    heartbeat.beat();
                }
                // What is in doubt is left to recovery, which forces what
                // the record does not hold.
                let recent = self
                    .doubt
                    .recent_ms
                    .is_some_and(|cut| confirm::recent(&snap, cut));
                if recent || self.doubt.covers(&path) || dirty.contains(&path) {
                    return;
                }
                let Some(recorded) = known.get(&path) else {
                    return;
                };
                let target = (snap.mode & 0o170000 == 0o120000)
                    .then(|| std::fs::read_link(&path).ok())
                    .flatten()
                    .map(|t| {
                        use std::os::unix::ffi::OsStrExt;
                        t.as_os_str().as_bytes().to_vec()
                    });
                if confirm::checktxt(&snap, target.as_deref(), ignores) == *recorded {
                    items.push((path, snap));
                }
            },
        );
        if let Err(e) = self.journal.fill_confirmed(&items) {
            self.journal_failed("filling the confirmed record", &e);
        }
        self.need_fill = false;
        self.ctl.check_ok();
        info!(
            confirmed = items.len(),
            walked,
            known = known.len(),
            elapsed = ?started.elapsed(),
            "filled the record of what the peers hold from csync2's database"
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
        let force = match self.paths_to_force(true) {
            Ok(f) => f,
            Err(e) => {
                self.journal_failed("reading the confirmed record", &e);
                // Without the record, everything in doubt is forced.
                self.paths_to_force(false).unwrap_or_default()
            }
        };
        let paths: Vec<PathBuf> = force.iter().map(|(p, _)| p.clone()).collect();
        if !paths.is_empty() {
            let scope: Vec<ScopeEntry> = paths
                .iter()
                .map(|p| ScopeEntry {
                    path: p.clone(),
                    recursive: false,
                })
                .collect();
            let run = self.begin_run(RunMode::Check, &scope);
            let result = self
                .csync2
                .check(&paths, false, self.limits)
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
            for (p, snap) in force {
                self.await_confirmation(p, snap);
            }
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
    /// with the record (`use_record` false: as if it were empty, when it
    /// cannot be read).
    fn paths_to_force(
        &self,
        use_record: bool,
    ) -> Result<Vec<(PathBuf, Option<Snapshot>)>, JournalError> {
        let record_under = |dir: &Path| {
            if use_record {
                self.journal.confirmed_under(dir)
            } else {
                Ok(HashMap::new())
            }
        };
        let record_of = |path: &Path| {
            if use_record {
                self.journal.confirmed(path)
            } else {
                Ok(None)
            }
        };
        let mut out = Vec::new();
        let plan = self.plan.clone();
        let recent = self.doubt.recent_ms;
        let mut judged = 0u64;
        let mut judge = |path: PathBuf,
                         disk: Option<Snapshot>,
                         confirmed: Option<&Snapshot>,
                         out: &mut Vec<(PathBuf, Option<Snapshot>)>| {
            judged += 1;
            if judged % 4096 == 0 {
                // A walk of a big, cold tree is work too.
                self.heartbeat.beat();
            }
            let standing = Standing {
                disk: disk.as_ref(),
                confirmed,
                in_doubt: self.doubt.covers(&path),
            };
            if confirm::must_force(standing, recent) && plan.decide(&path).synced {
                out.push((path, disk));
            }
        };
        if self.doubt.everywhere() {
            let mut confirmed = record_under(Path::new("/"))?;
            crate::walk::synced_under(plan.as_ref(), plan.roots(), Path::new("/"), &mut |p, s| {
                let c = confirmed.remove(&p);
                judge(p, Some(s), c.as_ref(), &mut out);
            });
            // Confirmed, and gone.
            for (p, c) in confirmed {
                judge(p, None, Some(&c), &mut out);
            }
        } else {
            let mut seen = HashSet::new();
            for dir in &self.doubt.trees {
                let mut confirmed = record_under(dir)?;
                crate::walk::synced_under(plan.as_ref(), plan.roots(), dir, &mut |p, s| {
                    let c = confirmed.remove(&p);
                    if seen.insert(p.clone()) {
                        judge(p, Some(s), c.as_ref(), &mut out);
                    }
                });
                for (p, c) in confirmed {
                    if seen.insert(p.clone()) {
                        judge(p, None, Some(&c), &mut out);
                    }
                }
            }
            for p in &self.doubt.exact {
                if seen.insert(p.clone()) {
                    let c = record_of(p)?;
                    judge(p.clone(), Snapshot::lstat(p), c.as_ref(), &mut out);
                }
            }
        }
        Ok(out)
    }

    /// A checked path waits for `csync2 -M` to say no peer needs it.
    pub(super) fn await_confirmation(&mut self, path: PathBuf, snap: Option<Snapshot>) {
        if self.awaiting.len() >= MAX_AWAITING && !self.awaiting.contains_key(&path) {
            debug!(
                max = MAX_AWAITING,
                "too many paths wait for confirmation: forgetting them (a crash would re-push them)"
            );
            self.awaiting.clear();
        }
        self.awaiting.insert(path, snap);
    }

    /// `csync2 -M` listed what is still dirty: every waiting path it does
    /// not list is held by every peer as it was checked.
    pub(super) fn confirm_clean(&mut self, dirty: &[crate::runner::DirtyEntry]) {
        if self.awaiting.is_empty() {
            return;
        }
        let still: HashSet<PathBuf> = dirty.iter().filter_map(|d| self.dirty_path(d)).collect();
        let mut done = Vec::new();
        self.awaiting.retain(|p, snap| {
            if still.contains(p) {
                true
            } else {
                done.push((p.clone(), *snap));
                false
            }
        });
        if let Err(e) = self.journal.confirm(&done) {
            self.journal_failed("recording confirmed paths", &e);
        }
        debug!(
            confirmed = done.len(),
            waiting = self.awaiting.len(),
            "peers confirmed"
        );
    }
}

fn everything() -> ScopeEntry {
    ScopeEntry {
        path: PathBuf::from("/"),
        recursive: true,
    }
}
