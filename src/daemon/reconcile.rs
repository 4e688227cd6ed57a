//! Reconciles: walking the synced trees in parallel, comparing every path
//! with the stat cache, and sending only what appeared, vanished or
//! differs to csync2 (`csync2 -c`, then `csync2 -m` for differences its
//! check text cannot see). A deep check runs `csync2 -cr` instead of the
//! explicit `-c`. Start-up, the periodic check, overflows, failed watches
//! and polled trees all come here, in the background: changes keep
//! flowing while a cold tree is walked.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::*;
use crate::status::ReconcileInfo;

/// The stat cache, shared with the reconcile thread.
pub(super) type SharedCache = Arc<RwLock<StatCache>>;

pub(super) fn read(cache: &RwLock<StatCache>) -> RwLockReadGuard<'_, StatCache> {
    cache.read().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn write(cache: &RwLock<StatCache>) -> RwLockWriteGuard<'_, StatCache> {
    cache.write().unwrap_or_else(|e| e.into_inner())
}

/// How a comparison judges one path: its entry in the cache and its lstat
/// now (`None`: gone).
pub(super) type Judge<'a> = &'a (dyn Fn(&StatCache, &Path, Option<&Snapshot>) -> Decision + Sync);

/// What a comparison of the disk with the cache found.
#[derive(Debug, Default)]
pub(super) struct Differences {
    /// Paths that need csync2, with their lstat at the walk (`None`:
    /// gone) and what they need, sorted by path.
    pub items: Vec<(PathBuf, Option<Snapshot>, Decision)>,
    /// Synced paths walked.
    pub walked: u64,
    /// Cache entries no longer synced (the configuration changed).
    pub forget: Vec<PathBuf>,
    pub elapsed: Duration,
    /// `go_on` stopped the walk: nothing is known of what it left out.
    pub stopped: bool,
    /// Directories that became symlinks while csync2 knew paths below
    /// them: only `csync2 -cr` of the link marks those removed.
    pub relinked: Vec<PathBuf>,
}

/// Walk `scopes` and judge every synced path, and every cached path in
/// scope that the walk no longer found.
pub(super) fn differences(
    cache: &RwLock<StatCache>,
    plan: &Plan,
    scopes: &[PathBuf],
    judge: Judge<'_>,
    go_on: &(dyn Fn() -> bool + Sync),
) -> Differences {
    let started = Instant::now();
    let walk = write(cache).begin_walk();
    let found = Mutex::new(Vec::new());
    let walked = crate::walk::par_synced_under(
        plan,
        plan.roots(),
        scopes,
        &|batch| {
            let c = read(cache);
            let mut mine = Vec::new();
            for (p, s) in batch.iter() {
                if let Some(e) = c.get(p) {
                    e.saw(walk);
                }
                let d = judge(&c, p, Some(s));
                if d != Decision::Skip {
                    mine.push((p.to_path_buf(), Some(*s), d));
                }
            }
            drop(c);
            if !mine.is_empty() {
                found.lock().unwrap_or_else(|e| e.into_inner()).extend(mine);
            }
        },
        go_on,
    );
    let mut items = found.into_inner().unwrap_or_else(|e| e.into_inner());
    if walked.stopped {
        return Differences {
            stopped: true,
            ..Differences::default()
        };
    }
    let unseen = read(cache).unseen_under(walk, scopes, &walked.unreadable);
    let mut forget = Vec::new();
    let mut relinked = Vec::new();
    for p in unseen {
        if !plan.decide(&p).synced {
            forget.push(p);
            continue;
        }
        // Still there: recorded after the walk passed its directory.
        // (Below a directory that became a symlink it is gone, as csync2
        // sees it, though lstat finds it through the link.)
        if !crate::walk::still_there(&p) {
            if let Some(link) = crate::walk::symlinked_ancestor(&p) {
                if !relinked.contains(&link) {
                    relinked.push(link);
                }
            }
            let d = judge(&read(cache), &p, None);
            if d != Decision::Skip {
                items.push((p, None, d));
            }
        }
    }
    items.sort_by(|a, b| a.0.cmp(&b.0));
    Differences {
        items,
        walked: walked.paths,
        forget,
        elapsed: started.elapsed(),
        stopped: false,
        relinked,
    }
}

/// What the reconcile thread did.
#[derive(Default)]
pub(super) struct Reconciled {
    pub walked: u64,
    pub walk: Duration,
    /// Checked paths: the lstat at the walk and after csync2 was done.
    pub results: Vec<(PathBuf, Option<Snapshot>, Option<Snapshot>)>,
    pub marked: usize,
    pub forget: Vec<PathBuf>,
    pub processes: usize,
    /// The deep check's run, for the cache's cover.
    pub deep: Option<Run>,
    /// Stopped during its walk (the daemon stops): no csync2 ran.
    pub stopped: bool,
}

/// The reconcile itself (in its own thread).
fn reconcile(
    cache: &RwLock<StatCache>,
    plan: &Plan,
    csync2: &Csync2,
    limits: Limits,
    scopes: &[PathBuf],
    deep: bool,
    stop: &AtomicBool,
) -> Result<Reconciled, RunError> {
    let diff = differences(cache, plan, scopes, &|c, p, s| c.decide(p, s), &|| {
        !stop.load(Ordering::Relaxed)
    });
    if diff.stopped {
        return Ok(Reconciled {
            walk: diff.elapsed,
            stopped: true,
            ..Reconciled::default()
        });
    }
    let check: Vec<PathBuf> = diff.items.iter().map(|(p, ..)| p.clone()).collect();
    let mark: Vec<PathBuf> = diff
        .items
        .iter()
        .filter(|(.., d)| *d == Decision::CheckAndMark)
        .map(|(p, ..)| p.clone())
        .collect();
    debug!(
        walked = diff.walked,
        differing = check.len(),
        mark = mark.len(),
        elapsed = ?diff.elapsed,
        "walked and compared with the stat cache"
    );
    let mut processes = 0;
    let mut deep_run = None;
    if deep {
        let run = Run::begin();
        let o = if scopes.iter().any(|s| s == Path::new("/")) {
            csync2.check_all(limits)?
        } else {
            csync2.check(scopes, true, limits)?
        };
        processes += o.processes;
        deep_run = Some(run.ended());
    } else if !check.is_empty() {
        processes += csync2.check(&check, false, limits)?.processes;
    }
    if !deep && !diff.relinked.is_empty() {
        processes += csync2.check(&diff.relinked, true, limits)?.processes;
    }
    if !mark.is_empty() {
        debug!(
            paths = mark.len(),
            "changes csync2's check text cannot see: forcing them dirty"
        );
        processes += csync2.mark(&mark, limits)?.processes;
    }
    let results = diff
        .items
        .into_iter()
        .map(|(p, pre, _)| {
            let post = Snapshot::lstat(&p);
            (p, pre, post)
        })
        .collect();
    Ok(Reconciled {
        walked: diff.walked,
        walk: diff.elapsed,
        results,
        marked: mark.len(),
        forget: diff.forget,
        processes,
        deep: deep_run,
        stopped: false,
    })
}

/// Only routine reasons asked for this (the periodic safety net, polls of
/// trees inotify cannot fully see), none that says events may have been
/// lost: the change feed hears of it only if it found something (every
/// few seconds or minutes would drown the feed).
fn is_routine(req: &FullRequest) -> bool {
    req.reasons
        .iter()
        .all(|r| r.starts_with(POLLED) || r == crate::controller::PERIODIC)
}

/// How the reason of every poll of a tree inotify cannot see starts.
pub(super) const POLLED: &str = "polled";

impl Daemon {
    /// Tell `events` readers that changes below `scopes` may not have been
    /// reported one by one.
    fn feed_full_check(&mut self, scopes: &[PathBuf], reasons: &str) {
        for scope in scopes {
            if let Err(e) = self.journal.record_full_check(
                (scope != Path::new("/")).then_some(scope.as_path()),
                reasons,
            ) {
                self.journal_failed("recording a full check", &e);
            }
        }
    }

    /// The local server did something no file can be pinned to since we
    /// last looked: tell the cache.
    pub(super) fn note_unattributed(&mut self) {
        let now = self.server.unattributed();
        if now.is_some() && now != self.last_unattributed {
            self.last_unattributed = now;
            write(&self.cache).unattributed();
        }
    }

    /// Persist what the cache learnt.
    pub(super) fn persist(&mut self, items: &[crate::statcache::Persist]) {
        if items.is_empty() {
            return;
        }
        if let Err(e) = self.journal.confirm(items) {
            self.journal_failed("recording the stat cache", &e);
        }
        self.status_dirty = true;
    }

    /// Start the pending full check (a reconcile, maybe deep) in the
    /// background: changes keep flowing meanwhile (csync2 serialises its
    /// database itself).
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
        self.absorb_receipts();
        self.note_unattributed();
        let reasons = req.reasons.join("; ");
        let scopes: Vec<PathBuf> = req
            .scopes
            .clone()
            .unwrap_or_else(|| vec![PathBuf::from("/")]);
        let scope_desc = scopes
            .iter()
            .map(|p| display_bytes(p))
            .collect::<Vec<_>>()
            .join(" ");
        let scope_entries: Vec<ScopeEntry> = scopes
            .iter()
            .map(|path| ScopeEntry::tree(path.clone()))
            .collect();
        let journaled = self.begin_run(RunMode::Full, &scope_entries);
        if !is_routine(&req) {
            self.feed_full_check(&scopes, &reasons);
        }
        let span = info_span!("reconcile", scope = %scope_desc, deep = req.deep);
        span.in_scope(|| {
            if req.deep {
                info!("deep check ({reasons}): reconcile, then csync2 -cr");
            } else {
                debug!("reconcile ({reasons})");
            }
        });
        let since = read(&self.cache).version();
        let (csync2, limits, deep) = (self.csync2.clone(), self.limits, req.deep);
        let (cache, plan) = (self.cache.clone(), self.plan.clone());
        let done = self.full_done_tx.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_walk = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("reconcile".into())
            .spawn(move || {
                let _entered = span.entered();
                let result = reconcile(&cache, &plan, &csync2, limits, &scopes, deep, &stop_walk);
                let _ = done.send(());
                result
            });
        match spawned {
            Ok(handle) => {
                self.full = Some(RunningFull {
                    req,
                    stop,
                    since,
                    journaled,
                    started: Instant::now(),
                    handle,
                });
                self.status.full_check_running = true;
                self.status_dirty = true;
            }
            Err(e) => {
                warn!("cannot start a thread for the reconcile: {e}");
                self.end_run(journaled);
                self.ctl.full_not_started(&req, Instant::now());
            }
        }
        Ok(())
    }

    /// The background reconcile ended: record what it established.
    pub(super) fn finish_full(&mut self) {
        let Some(full) = self.full.take() else {
            return;
        };
        let RunningFull {
            req,
            stop: _,
            since,
            journaled,
            started,
            handle,
        } = full;
        let result = handle.join().unwrap_or_else(|_| {
            Err(RunError::Failed {
                status: "panicked".into(),
                stderr_tail: "the reconcile thread panicked".into(),
            })
        });
        self.status.full_check_running = false;
        self.status_dirty = true;
        let millis = started.elapsed().as_millis() as u64;
        let reasons = req.reasons.join("; ");
        let scopes = req
            .scopes
            .clone()
            .unwrap_or_else(|| vec![PathBuf::from("/")]);
        match result {
            Ok(r) if r.stopped => {
                // The daemon stops: nothing ran, and the next start's
                // reconcile covers the scope.
                info!(reason = %reasons, "reconcile stopped during its walk");
                self.end_run(journaled);
                self.ctl.full_ended(&req, true, false, Instant::now());
            }
            Ok(r) => {
                self.status.counters.checks += r.processes as u64;
                let differing = r.results.len();
                if differing > 0 && is_routine(&req) {
                    self.feed_full_check(&scopes, &reasons);
                }
                let mut persist = Vec::with_capacity(differing + r.forget.len());
                {
                    let mut cache = write(&self.cache);
                    for (p, pre, post) in r.results {
                        persist.extend(cache.record_since(since, p, pre, post));
                    }
                    for p in &r.forget {
                        persist.extend(cache.forget(p));
                    }
                    if let Some(run) = r.deep {
                        cache.deep_done(run, since);
                    }
                }
                self.persist(&persist);
                match &req.scopes {
                    None => {
                        self.status.counters.full_syncs += 1;
                        if let Err(e) = self.journal.complete_all(req.max_txid) {
                            self.journal_failed("clearing checked changes", &e);
                        }
                        self.status.last_full_sync = Some(RunInfo {
                            at: status::unix_now(),
                            paths: differing as u64,
                            millis,
                            marked: r.marked as u64,
                            ok: true,
                        });
                    }
                    Some(dirs) => {
                        if let Err(e) = self.journal.complete_trees(dirs, req.max_txid) {
                            self.journal_failed("clearing checked changes", &e);
                        }
                    }
                }
                self.status.counters.reconciles += 1;
                self.status.last_reconcile = Some(ReconcileInfo {
                    at: status::unix_now(),
                    scope: scopes,
                    reason: reasons.clone(),
                    walked: r.walked,
                    differing: differing as u64,
                    marked: r.marked as u64,
                    walk_millis: r.walk.as_millis() as u64,
                    millis,
                    ok: true,
                });
                if req.deep {
                    self.status.counters.deep_checks += 1;
                    self.status.last_deep_check = Some(RunInfo {
                        at: status::unix_now(),
                        paths: r.walked,
                        millis,
                        marked: r.marked as u64,
                        ok: true,
                    });
                }
                self.end_run(journaled);
                // Pushes to every peer if anything was checked, and plans
                // the next periodic one.
                self.ctl
                    .full_ended(&req, true, differing > 0, Instant::now());
                let quiet = differing == 0 && !req.deep;
                let (walked, marked) = (r.walked, r.marked);
                let walk = r.walk;
                let elapsed = started.elapsed();
                if quiet {
                    debug!(reason = %reasons, walked, ?walk, ?elapsed, "reconciled: nothing differed");
                } else {
                    info!(
                        reason = %reasons,
                        walked,
                        differing,
                        marked,
                        ?walk,
                        ?elapsed,
                        deep = req.deep,
                        "reconciled"
                    );
                }
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
                    .full_ended(&req, false, false, Instant::now())
                    .unwrap_or_default();
                warn!("reconcile ({reasons}) failed, retrying in {delay:?}: {e}");
                // csync2 may have stopped between recording a file and
                // marking it dirty: what the reconcile covered is in doubt.
                let scope = scopes.into_iter().map(ScopeEntry::tree).collect();
                self.in_doubt(journaled, scope);
            }
        }
    }
}
