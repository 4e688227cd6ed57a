//! What runs next (pure: every input carries its own `now`, and nothing
//! here touches a file, a process or a clock).
//!
//! The daemon's threads feed the controller what happened (changes, full
//! checks asked for, csync2 results, probe answers, server activity,
//! signals) and ask it for the next [`Action`]; they only carry actions
//! out. Owned here:
//!
//! * the order: fill the confirmed record, recover what is in doubt, full
//!   check, batch, update the peers, verify with `csync2 -M`. Until the
//!   record is filled and nothing is in doubt, only peers are updated;
//! * when a batch is due: `batch_delay` after changes stop arriving, at
//!   most `batch_delay_max` after the first change of a quiet spell, at
//!   once for changes that arrived while csync2 ran;
//! * retries: one [`Backoff`] policy (from `retry_initial` doubling up to
//!   `retry_max`) for checks, full checks and every peer;
//! * the periodic full sync (in [`Scheduler`]) and the timers for trees
//!   inotify cannot fully see;
//! * the quiet period: no local csync2 client while the local server
//!   serves, nor for `quiet_period` after.
//!
//! Layer: core. It imports only the core: the batch queue, the scheduler
//! and the change vocabulary.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::queue::{Batch, BatchQueue, FullRequest};
use crate::sched::{Backoff, Scheduler};
use crate::vocab::ChangeKind;

/// The reason of the periodic reconcile of every tree.
pub const PERIODIC: &str = "periodic full sync";

/// The settings the controller decides with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub batch_delay: Duration,
    pub batch_delay_max: Duration,
    pub max_batch: usize,
    pub full_check_threshold: usize,
    pub quiet_period: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Every how long a deep check (`csync2 -cr /`) runs; zero: never on
    /// its own.
    pub deep_check_interval: Duration,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Fill the record of what the peers hold from csync2's database.
    Fill,
    /// Force dirty what an interrupted or failed csync2 run left in doubt.
    Recover,
    /// Start the pending full check (in the background).
    Full,
    /// Check a batch of queued changes.
    Batch,
    /// Probe and update the peers that are due.
    Update,
    /// Ask `csync2 -M` what is still dirty.
    Verify,
}

/// The answer to "what now?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Run(Action),
    /// Nothing to do before this instant (`None`: until an input).
    Wait(Option<Instant>),
}

/// A tree inotify cannot fully see, checked every `every`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeTimer {
    pub path: PathBuf,
    pub every: Duration,
    pub due: Instant,
    pub reason: &'static str,
}

/// The controller.
#[derive(Debug)]
pub struct Controller {
    policy: Policy,
    pub queue: BatchQueue,
    pub sched: Scheduler,
    /// When the queued changes may go out.
    ready_at: Option<Instant>,
    /// When the first change of the current quiet spell arrived.
    spell_started: Option<Instant>,
    /// Checks (batches, the fill, recovery) that failed.
    checks: Backoff,
    /// Full checks that failed.
    fulls: Backoff,
    full_running: bool,
    need_fill: bool,
    in_doubt: bool,
    scope_timers: Vec<ScopeTimer>,
    /// The local server serves a connection now.
    serving: bool,
    /// When the local server last did something.
    server_active: Option<Instant>,
    /// When the next periodic deep check is due.
    deep_due: Option<Instant>,
    /// A check of every tree has ended since the start: until then a
    /// running one holds the peers' updates back.
    started: bool,
}

impl Controller {
    pub fn new(policy: Policy, sched: Scheduler) -> Controller {
        Controller {
            policy,
            queue: BatchQueue::new(),
            sched,
            ready_at: None,
            spell_started: None,
            checks: Backoff::new(policy.retry_initial, policy.retry_max),
            fulls: Backoff::new(policy.retry_initial, policy.retry_max),
            full_running: false,
            need_fill: false,
            in_doubt: false,
            scope_timers: Vec::new(),
            serving: false,
            server_active: None,
            deep_due: None,
            started: false,
        }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// New settings (a reload). Backoffs in progress keep their delay.
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
        self.checks
            .set_limits(policy.retry_initial, policy.retry_max);
        self.fulls
            .set_limits(policy.retry_initial, policy.retry_max);
    }

    /// Changes arrived (with their journal txids). Returns whether the
    /// queue grew past `full_check_threshold` and became one full check.
    pub fn changes(
        &mut self,
        items: impl IntoIterator<Item = (PathBuf, ChangeKind, u64)>,
        now: Instant,
    ) -> bool {
        let was_empty = self.queue.is_empty();
        let mut any = false;
        for (path, kind, txid) in items {
            self.queue.push(path, kind, txid);
            any = true;
        }
        if any {
            self.settle(was_empty, now);
        }
        self.queue
            .collapse_if_over(self.policy.full_check_threshold)
    }

    /// A batch starts once changes stop arriving for `batch_delay`, but at
    /// most `batch_delay_max` after the first change of a quiet spell. A
    /// batch already due is not held back.
    fn settle(&mut self, was_empty: bool, now: Instant) {
        if was_empty || self.spell_started.is_none() {
            self.spell_started = Some(now);
            self.ready_at = Some(now + self.policy.batch_delay);
        } else if self.ready_at.is_some_and(|t| t > now) {
            let cap = self.spell_started.unwrap_or(now) + self.policy.batch_delay_max;
            self.ready_at = Some((now + self.policy.batch_delay).min(cap));
        }
    }

    /// Paths to check now, regardless of the batch delay (`sync PATH`).
    pub fn requested(
        &mut self,
        items: impl IntoIterator<Item = (PathBuf, ChangeKind, u64)>,
        now: Instant,
    ) {
        for (path, kind, txid) in items {
            self.queue.push(path, kind, txid);
        }
        self.ready_at = Some(now);
    }

    /// Skip the batch delay and every backoff (`sync` without paths).
    pub fn flush(&mut self, now: Instant) {
        self.ready_at = Some(now);
        self.checks.reset();
        self.sched.retry_now();
    }

    /// A full check is needed (`None`: every tree).
    pub fn request_full(&mut self, scope: Option<PathBuf>, reason: impl Into<String>) {
        self.queue.request_full(scope, reason);
    }

    /// A deep check of every tree is needed.
    pub fn request_deep(&mut self, reason: impl Into<String>) {
        self.queue.request_deep(reason);
    }

    /// Put a full check that could not start back.
    pub fn requeue_full(&mut self, req: &FullRequest) {
        let reason = req.reasons.join("; ");
        match &req.scopes {
            None if req.deep => self.queue.request_deep(reason),
            None => self.queue.request_full(None, reason),
            Some(dirs) => {
                for d in dirs {
                    self.queue.request_full(Some(d.clone()), reason.clone());
                }
            }
        }
    }

    /// What still has to be done before csync2's database is trusted.
    pub fn set_recovery(&mut self, need_fill: bool, in_doubt: bool) {
        self.need_fill = need_fill;
        self.in_doubt = in_doubt;
    }

    /// Replace the timers for trees inotify cannot fully see; a tree that
    /// stays keeps its due time, a new one is due `every` from now.
    pub fn set_scope_timers(
        &mut self,
        wanted: impl IntoIterator<Item = (PathBuf, Duration, &'static str)>,
        now: Instant,
    ) {
        let old = std::mem::take(&mut self.scope_timers);
        self.scope_timers = wanted
            .into_iter()
            .map(|(path, every, reason)| {
                let due = old
                    .iter()
                    .find(|t| t.path == path)
                    .map(|t| t.due)
                    .unwrap_or(now + every);
                ScopeTimer {
                    path,
                    every,
                    due,
                    reason,
                }
            })
            .collect();
    }

    pub fn scope_timers(&self) -> &[ScopeTimer] {
        &self.scope_timers
    }

    /// What the local csync2 server is doing.
    pub fn server(&mut self, serving: bool, last_active: Option<Instant>) {
        self.serving = serving;
        self.server_active = last_active;
    }

    /// May a local csync2 client start now? `None`: yes; else not before
    /// the instant given (or, while the server serves, until it stops:
    /// ask again soon).
    pub fn quiet_until(&self, now: Instant) -> Option<Instant> {
        if self.serving {
            return Some(now + Duration::from_millis(20));
        }
        self.server_active
            .map(|t| t + self.policy.quiet_period)
            .filter(|t| *t > now)
    }

    /// The next action, most urgent first, or how long to wait.
    pub fn next(&mut self, now: Instant) -> Next {
        if self.sched.full_due(now) && self.queue.full_pending().is_none() {
            self.queue.request_full(None, PERIODIC);
            self.sched.full_started(now);
        }
        let deep_every = self.policy.deep_check_interval;
        if !deep_every.is_zero() {
            let due = *self.deep_due.get_or_insert(now + deep_every);
            if due <= now {
                self.deep_due = Some(now + deep_every);
                self.queue.request_deep("periodic deep check");
            }
        }
        for t in &mut self.scope_timers {
            if t.due <= now {
                t.due = now + t.every;
                self.queue.request_full(Some(t.path.clone()), t.reason);
            }
        }
        let checks_ok = self.checks.ready(now);
        let updates_due = !self.sched.due(now).is_empty();
        // Until csync2's database is trusted again (the record filled,
        // what is in doubt recovered), nothing else checks: a check of a
        // path in doubt would find it "unchanged", and a confirmation
        // would make that stick. Peers may still be updated.
        if self.need_fill || self.in_doubt {
            if checks_ok && !self.full_running {
                return Next::Run(if self.need_fill {
                    Action::Fill
                } else {
                    Action::Recover
                });
            }
            if updates_due {
                return Next::Run(Action::Update);
            }
            return Next::Wait(self.earliest(now));
        }
        if self.queue.full_pending().is_some() && !self.full_running && self.fulls.ready(now) {
            return Next::Run(Action::Full);
        }
        if !self.queue.is_empty() && checks_ok && self.ready_at.is_none_or(|t| t <= now) {
            return Next::Run(Action::Batch);
        }
        if updates_due && !self.holding_updates() {
            return Next::Run(Action::Update);
        }
        if self.sched.verify_pending() && self.queue.is_idle() {
            return Next::Run(Action::Verify);
        }
        Next::Wait(self.earliest(now))
    }

    /// The start-up reconcile runs: the peers are updated once it has
    /// checked what changed while the daemon was down, in one `csync2 -u`
    /// (an update beside its `csync2 -c` would make one of them sleep a
    /// second on csync2's busy database).
    fn holding_updates(&self) -> bool {
        !self.started && self.full_running && !self.need_fill && !self.in_doubt
    }

    /// The earliest instant at which something may become due.
    fn earliest(&self, now: Instant) -> Option<Instant> {
        // While updates are held, the reconcile's end wakes the daemon.
        let mut deadline = if self.holding_updates() {
            None
        } else {
            self.sched.next_deadline()
        };
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                deadline = Some(deadline.map_or(t, |d: Instant| d.min(t)));
            }
        };
        if self.need_fill || self.in_doubt {
            consider(self.checks.next_try());
        } else if !self.queue.is_empty() {
            // A batch needs both: the burst settled, and no backoff.
            consider(match (self.ready_at, self.checks.next_try()) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            });
        }
        if self.queue.full_pending().is_some() && !self.full_running {
            consider(self.fulls.next_try());
        }
        for t in &self.scope_timers {
            consider(Some(t.due));
        }
        consider(self.deep_due);
        deadline.map(|d| d.max(now))
    }

    /// Take the next batch (at most `max_batch` paths).
    pub fn take_batch(&mut self) -> Batch {
        self.queue.take_batch(self.policy.max_batch)
    }

    /// A check (batch, fill or recovery) succeeded.
    pub fn check_ok(&mut self) {
        self.checks.reset();
    }

    /// A check failed: retried with backoff. Returns the delay.
    pub fn check_failed(&mut self, now: Instant) -> Duration {
        self.checks.fail(now)
    }

    /// A csync2 run ended: changes that arrived meanwhile form the next
    /// batch at once (unless checks are backing off).
    pub fn run_ended(&mut self, now: Instant) {
        if !self.queue.is_empty() && self.checks.ready(now) {
            self.ready_at = Some(now);
        }
    }

    /// The pending full check, taken to start it.
    pub fn start_full(&mut self) -> Option<FullRequest> {
        let req = self.queue.take_full()?;
        self.full_running = true;
        Some(req)
    }

    pub fn full_running(&self) -> bool {
        self.full_running
    }

    /// The full check ended. On success a full check of every tree also
    /// restarts the periodic timer (a deep one the deep timer), and the
    /// peers are updated if it checked anything (`changed`). On failure it
    /// is retried with backoff: returns the delay.
    pub fn full_ended(
        &mut self,
        req: &FullRequest,
        ok: bool,
        changed: bool,
        now: Instant,
    ) -> Option<Duration> {
        self.full_running = false;
        if req.scopes.is_none() {
            self.started = true;
        }
        if ok {
            if changed || req.deep {
                // A deep check pushes to every peer, whatever csync2 -v
                // said.
                self.sched.mark_all_dirty();
            }
            self.fulls.reset();
            if req.scopes.is_none() {
                self.sched.full_started(now);
            }
            if req.deep && !self.policy.deep_check_interval.is_zero() {
                self.deep_due = Some(now + self.policy.deep_check_interval);
            }
            None
        } else {
            self.requeue_full(req);
            Some(self.fulls.fail(now))
        }
    }

    /// The full check could not start (no thread, or asked to stop).
    pub fn full_not_started(&mut self, req: &FullRequest, now: Instant) {
        self.full_running = false;
        self.requeue_full(req);
        self.fulls.fail(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::Timing;

    const MS: Duration = Duration::from_millis(1);

    fn policy() -> Policy {
        Policy {
            batch_delay: 5 * MS,
            batch_delay_max: 100 * MS,
            max_batch: 2,
            full_check_threshold: 1000,
            quiet_period: 250 * MS,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(8),
            deep_check_interval: Duration::ZERO,
        }
    }

    /// The scheduler's timing in these tests: a periodic full sync every
    /// `full` (zero: none), no jitter.
    fn timing(full: Duration) -> Timing {
        Timing {
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(8),
            down_probe_max: Duration::from_secs(10),
            full_sync_interval: full,
            full_sync_jitter: Duration::ZERO,
        }
    }

    /// A controller at `t0` whose start-up full check is done and whose
    /// peers are clean, with no periodic full sync.
    fn settled(t0: Instant) -> Controller {
        let timing = timing(Duration::ZERO);
        let names = vec!["a".to_string(), "b".to_string()];
        let mut c = Controller::new(policy(), Scheduler::new(&names, timing, t0, 7));
        c.sched.updated("a", None);
        c.sched.updated("b", None);
        c.sched.verified(&[], t0);
        c
    }

    fn change(name: &str, txid: u64) -> (PathBuf, ChangeKind, u64) {
        (
            PathBuf::from(format!("/srv/{name}")),
            ChangeKind::Entry,
            txid,
        )
    }

    #[test]
    fn recovery_comes_first_and_holds_back_every_check_but_not_updates() {
        let t0 = Instant::now();
        let mut c = settled(t0);
        c.set_recovery(true, true);
        c.request_full(None, "start-up");
        c.changes([change("x", 1)], t0);
        assert_eq!(c.next(t0 + MS * 10), Next::Run(Action::Fill));
        c.set_recovery(false, true);
        assert_eq!(c.next(t0 + MS * 10), Next::Run(Action::Recover));
        // Recovery fails: backoff, and meanwhile only updates may run.
        assert_eq!(c.check_failed(t0), Duration::from_secs(1));
        assert_eq!(
            c.next(t0 + MS * 10),
            Next::Wait(Some(t0 + Duration::from_secs(1)))
        );
        c.sched.mark_all_dirty();
        assert_eq!(c.next(t0 + MS * 10), Next::Run(Action::Update));
        c.set_recovery(false, false);
        c.check_ok();
        assert_eq!(c.next(t0 + MS * 10), Next::Run(Action::Full));
        let req = c.start_full().unwrap();
        assert_eq!(req.scopes, None);
        // The full check covers what was queued; the next change batches.
        c.changes([change("y", 2)], t0 + MS * 20);
        assert_eq!(c.next(t0 + MS * 26), Next::Run(Action::Batch));
        assert!(c.full_ended(&req, true, true, t0 + MS * 30).is_none());
    }

    #[test]
    fn a_batch_waits_for_the_burst_to_settle_but_not_past_the_cap() {
        let t0 = Instant::now();
        let mut c = settled(t0);
        c.changes([change("a", 1)], t0);
        assert_eq!(c.next(t0 + MS * 4), Next::Wait(Some(t0 + MS * 5)));
        // A change every 4 ms keeps pushing the batch back...
        let mut t = t0;
        for i in 0..30 {
            t = t0 + MS * (4 * i + 4);
            c.changes([change(&format!("b{i}"), u64::from(i) + 2)], t);
            if t < t0 + MS * 100 {
                assert!(matches!(c.next(t), Next::Wait(_)), "at {:?}", t - t0);
            }
        }
        // ... but never later than batch_delay_max after the first.
        assert!(t > t0 + MS * 100);
        assert_eq!(c.next(t0 + MS * 100), Next::Run(Action::Batch));
        assert_eq!(c.take_batch().len(), 2, "max_batch");
    }

    #[test]
    fn changes_that_arrive_while_csync2_runs_go_out_at_once() {
        let t0 = Instant::now();
        let mut c = settled(t0);
        c.changes([change("a", 1)], t0);
        assert_eq!(c.next(t0 + MS * 5), Next::Run(Action::Batch));
        let _ = c.take_batch();
        c.changes([change("b", 2)], t0 + MS * 6);
        c.run_ended(t0 + MS * 7);
        assert_eq!(c.next(t0 + MS * 7), Next::Run(Action::Batch));
    }

    #[test]
    fn failed_checks_back_off_doubling_up_to_retry_max_and_reset_on_success() {
        let t0 = Instant::now();
        let mut c = settled(t0);
        let delays: Vec<u64> = (0..6).map(|_| c.check_failed(t0).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 8, 8]);
        c.changes([change("a", 1)], t0);
        assert_eq!(
            c.next(t0 + MS * 10),
            Next::Wait(Some(t0 + Duration::from_secs(8)))
        );
        c.check_ok();
        assert_eq!(c.next(t0 + MS * 10), Next::Run(Action::Batch));
    }

    #[test]
    fn a_failed_full_check_is_retried_with_the_same_backoff() {
        let t0 = Instant::now();
        let mut c = settled(t0);
        c.request_full(Some("/srv/nfs".into()), "tree inotify cannot fully see");
        assert_eq!(c.next(t0), Next::Run(Action::Full));
        let req = c.start_full().unwrap();
        assert_eq!(c.next(t0), Next::Wait(None), "one full check at a time");
        assert_eq!(
            c.full_ended(&req, false, false, t0),
            Some(Duration::from_secs(1))
        );
        assert_eq!(c.next(t0), Next::Wait(Some(t0 + Duration::from_secs(1))));
        assert_eq!(c.next(t0 + Duration::from_secs(1)), Next::Run(Action::Full));
        let req = c.start_full().unwrap();
        assert_eq!(req.scopes, Some(vec![PathBuf::from("/srv/nfs")]));
    }

    #[test]
    fn a_huge_queue_becomes_one_full_check() {
        let t0 = Instant::now();
        let mut c = settled(t0);
        c.set_policy(Policy {
            full_check_threshold: 10,
            ..policy()
        });
        let collapsed = c.changes((0..11).map(|i| change(&format!("f{i}"), i)), t0);
        assert!(collapsed);
        assert!(c.queue.is_empty());
        assert_eq!(c.next(t0), Next::Run(Action::Full));
    }

    #[test]
    fn updates_come_after_batches_and_verify_after_updates() {
        let t0 = Instant::now();
        let mut c = settled(t0);
        c.changes([change("a", 1)], t0);
        c.sched.mark_all_dirty();
        assert_eq!(c.next(t0 + MS * 5), Next::Run(Action::Batch));
        let _ = c.take_batch();
        assert_eq!(c.next(t0 + MS * 6), Next::Run(Action::Update));
        c.sched.updated("a", None);
        c.sched.updated("b", None);
        assert_eq!(c.next(t0 + MS * 7), Next::Run(Action::Verify));
        c.sched.verified(&["b".to_string()], t0 + MS * 8);
        // b stays dirty and is retried after retry_initial.
        assert_eq!(
            c.next(t0 + MS * 9),
            Next::Wait(Some(t0 + MS * 8 + Duration::from_secs(1)))
        );
        assert_eq!(
            c.next(t0 + MS * 8 + Duration::from_secs(1)),
            Next::Run(Action::Update)
        );
    }

    #[test]
    fn no_local_client_while_the_server_serves_nor_for_the_quiet_period_after() {
        let t0 = Instant::now();
        let mut c = settled(t0);
        assert_eq!(c.quiet_until(t0), None);
        c.server(true, Some(t0));
        assert!(c.quiet_until(t0).is_some());
        c.server(false, Some(t0 + MS * 10));
        assert_eq!(c.quiet_until(t0 + MS * 20), Some(t0 + MS * 260));
        assert_eq!(c.quiet_until(t0 + MS * 260), None);
    }

    #[test]
    fn trees_inotify_cannot_see_are_checked_on_their_own_timer() {
        let t0 = Instant::now();
        let mut c = settled(t0);
        let every = Duration::from_secs(300);
        c.set_scope_timers(
            [(PathBuf::from("/srv/nfs"), every, "network filesystem")],
            t0,
        );
        assert_eq!(c.next(t0), Next::Wait(Some(t0 + every)));
        // A reload that keeps the tree keeps its due time.
        c.set_scope_timers(
            [(PathBuf::from("/srv/nfs"), every, "network filesystem")],
            t0 + every / 2,
        );
        assert_eq!(c.next(t0 + every), Next::Run(Action::Full));
        let req = c.start_full().unwrap();
        assert_eq!(req.scopes, Some(vec![PathBuf::from("/srv/nfs")]));
        c.full_ended(&req, true, true, t0 + every);
        assert_eq!(
            c.next(t0 + every),
            Next::Run(Action::Update),
            "a full sync pushes"
        );
        c.sched.updated("a", None);
        c.sched.updated("b", None);
        c.sched.verified(&[], t0 + every);
        assert_eq!(c.next(t0 + every), Next::Wait(Some(t0 + every * 2)));
    }

    #[test]
    fn the_periodic_full_sync_comes_due_and_is_rescheduled() {
        let t0 = Instant::now();
        let timing = timing(Duration::from_secs(3600));
        let mut c = Controller::new(policy(), Scheduler::new(&[], timing, t0, 1));
        let hour = Duration::from_secs(3600);
        assert_eq!(c.next(t0), Next::Wait(Some(t0 + hour)));
        assert_eq!(c.next(t0 + hour), Next::Run(Action::Full));
        let req = c.start_full().unwrap();
        c.full_ended(&req, true, true, t0 + hour);
        assert_eq!(c.next(t0 + hour), Next::Wait(Some(t0 + hour * 2)));
    }

    #[test]
    fn a_deep_check_comes_on_its_own_long_timer_and_a_quiet_reconcile_pushes_nothing() {
        let t0 = Instant::now();
        let day = Duration::from_secs(86_400);
        let mut c = settled(t0);
        c.set_policy(Policy {
            deep_check_interval: day,
            ..policy()
        });
        assert_eq!(c.next(t0), Next::Wait(Some(t0 + day)));
        assert_eq!(c.next(t0 + day), Next::Run(Action::Full));
        let req = c.start_full().unwrap();
        assert!(req.deep && req.scopes.is_none(), "{req:?}");
        c.full_ended(&req, true, false, t0 + day);
        // A deep check pushes to every peer.
        assert_eq!(c.next(t0 + day), Next::Run(Action::Update));

        // A reconcile that found nothing pushes nothing.
        let mut c = settled(t0);
        c.request_full(None, "periodic");
        assert_eq!(c.next(t0), Next::Run(Action::Full));
        let req = c.start_full().unwrap();
        assert!(!req.deep);
        c.full_ended(&req, true, false, t0);
        assert_eq!(c.next(t0), Next::Wait(None));
    }

    #[test]
    fn the_start_up_reconcile_holds_updates_back_and_later_ones_do_not() {
        let t0 = Instant::now();
        let timing = timing(Duration::ZERO);
        let names = vec!["a".to_string()];
        // A new scheduler: its peers are due at once.
        let mut c = Controller::new(policy(), Scheduler::new(&names, timing, t0, 3));
        c.request_full(None, "start-up");
        assert_eq!(c.next(t0), Next::Run(Action::Full));
        let req = c.start_full().unwrap();
        assert_eq!(c.next(t0), Next::Wait(None), "no update beside it");
        c.full_ended(&req, true, true, t0 + MS);
        assert_eq!(c.next(t0 + MS), Next::Run(Action::Update));

        // A later reconcile lets updates run beside it.
        c.request_full(None, "periodic");
        assert_eq!(c.next(t0 + MS), Next::Run(Action::Full));
        c.start_full().unwrap();
        c.sched.mark_all_dirty();
        assert_eq!(c.next(t0 + MS), Next::Run(Action::Update));
    }
}
