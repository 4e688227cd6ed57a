//! When to run what (pure: the caller passes the clock in).
//!
//! [`Backoff`] is the one retry policy of the daemon: checks, full checks
//! and peers all wait `retry_initial` after a first failure, twice as long
//! after each next one, up to `retry_max`.
//!
//! Tracks, per peer, whether csync2 may hold dirty entries for it, whether
//! it answered its last probe, and when it may be tried again (capped
//! exponential backoff, with a shorter cap for probing a peer that is down
//! so a returning peer is caught up quickly); whether `csync2 -M` should
//! confirm the last updates; and when the next periodic full sync is due
//! (jittered, so the nodes of a cluster do not all rescan at once).
//!
//! Layer: core. Imports nothing from the crate.

#![forbid(unsafe_code)]

use std::time::{Duration, Instant, SystemTime};

/// How a peer looks from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Not probed yet.
    Unknown,
    /// Answered its last probe or update.
    Up,
    /// Did not answer; `since` is when it was first seen down.
    Down { since: Instant },
}

/// One peer's schedule.
#[derive(Debug, Clone)]
pub struct PeerState {
    pub name: String,
    pub reach: Reach,
    /// csync2 may hold dirty entries for this peer.
    pub dirty: bool,
    /// A probe is running.
    pub probing: bool,
    /// Not before this instant (backoff).
    pub next_try: Option<Instant>,
    /// Consecutive failures.
    pub failures: u32,
    backoff: Backoff,
    pub last_ok: Option<SystemTime>,
    pub last_error: Option<String>,
}

/// Capped exponential backoff: the first failure waits `initial`, each
/// next one twice as long, up to `max` (never less than `initial`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
    next_try: Option<Instant>,
    failures: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            current: Duration::ZERO,
            next_try: None,
            failures: 0,
        }
    }

    /// New limits (a reload); a delay in progress stays.
    pub fn set_limits(&mut self, initial: Duration, max: Duration) {
        self.initial = initial;
        self.max = max;
    }

    /// One more failure at `now`: returns the delay before the next try.
    pub fn fail(&mut self, now: Instant) -> Duration {
        self.failures += 1;
        self.current = if self.current.is_zero() {
            self.initial
        } else {
            (self.current * 2).min(self.max)
        }
        .min(self.max.max(self.initial));
        self.next_try = Some(now + self.current);
        self.current
    }

    /// Success: the next failure starts from `initial` again.
    pub fn reset(&mut self) {
        self.current = Duration::ZERO;
        self.next_try = None;
        self.failures = 0;
    }

    /// May it be tried at `now`?
    pub fn ready(&self, now: Instant) -> bool {
        self.next_try.is_none_or(|t| t <= now)
    }

    /// Not before this instant (`None`: at once).
    pub fn next_try(&self) -> Option<Instant> {
        self.next_try
    }

    /// Consecutive failures.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// Backoff and timer settings.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Cap on the probe interval for a peer that is down.
    pub down_probe_max: Duration,
    pub full_sync_interval: Duration,
    pub full_sync_jitter: Duration,
}

/// The scheduler.
#[derive(Debug)]
pub struct Scheduler {
    peers: Vec<PeerState>,
    timing: Timing,
    next_full: Option<Instant>,
    verify_pending: bool,
    rng: u64,
}

impl Scheduler {
    /// Peers start dirty (the start-up full sync will update them).
    pub fn new(peers: &[String], timing: Timing, now: Instant, seed: u64) -> Scheduler {
        let mut s = Scheduler {
            peers: peers.iter().map(|n| PeerState::new(n)).collect(),
            timing,
            next_full: None,
            verify_pending: false,
            rng: splitmix64(seed) | 1,
        };
        s.schedule_full(now);
        s
    }

    pub fn peers(&self) -> &[PeerState] {
        &self.peers
    }

    pub fn peer(&self, name: &str) -> Option<&PeerState> {
        self.peers.iter().find(|p| p.name == name)
    }

    /// The peer list changed (config reload): keep the state of peers
    /// that stay, add new ones dirty.
    pub fn set_peers(&mut self, names: &[String]) {
        let mut old = std::mem::take(&mut self.peers);
        self.peers = names
            .iter()
            .map(|n| match old.iter().position(|p| &p.name == n) {
                Some(i) => old.swap_remove(i),
                None => PeerState::new(n),
            })
            .collect();
    }

    /// A check marked files dirty (for every peer).
    pub fn mark_all_dirty(&mut self) {
        for p in &mut self.peers {
            p.dirty = true;
        }
    }

    /// Operator asked for it: every peer is dirty and may be tried now.
    pub fn retry_now(&mut self) {
        for p in &mut self.peers {
            p.dirty = true;
            p.next_try = None;
        }
    }

    /// When the next periodic full sync is due.
    pub fn next_full(&self) -> Option<Instant> {
        self.next_full
    }

    /// Dirty peers that may be tried now and are not being probed.
    pub fn due(&self, now: Instant) -> Vec<String> {
        self.peers
            .iter()
            .filter(|p| p.dirty && !p.probing && p.next_try.is_none_or(|t| t <= now))
            .map(|p| p.name.clone())
            .collect()
    }

    pub fn probe_started(&mut self, name: &str) {
        if let Some(p) = self.get(name) {
            p.probing = true;
        }
    }

    /// The probe answered.
    pub fn probe_ok(&mut self, name: &str) {
        if let Some(p) = self.get(name) {
            p.probing = false;
            if !matches!(p.reach, Reach::Up) {
                p.reach = Reach::Up;
            }
        }
    }

    /// The peer did not answer (probe failed, or csync2 could not connect).
    /// Returns true when the peer has just gone down.
    pub fn unreachable(&mut self, name: &str, now: Instant, error: String) -> bool {
        // A peer that is down is probed more often than retry_max allows,
        // so that it is caught up soon after it comes back.
        let cap = self.timing.down_probe_max.min(self.timing.retry_max);
        let initial = self.timing.retry_initial;
        let Some(p) = self.get(name) else {
            return false;
        };
        p.probing = false;
        let went_down = !matches!(p.reach, Reach::Down { .. });
        if went_down {
            p.reach = Reach::Down { since: now };
        }
        p.backoff.set_limits(initial, cap);
        p.fail(now, error);
        went_down
    }

    /// `csync2 -u` for this peer finished; `errors` when it reported any.
    /// The peer counts as clean until `csync2 -M` says otherwise (see
    /// [`Scheduler::verified`]) or a check marks files dirty again.
    pub fn updated(&mut self, name: &str, errors: Option<String>) {
        self.verify_pending = true;
        if let Some(p) = self.get(name) {
            p.reach = Reach::Up;
            p.dirty = false;
            if let Some(e) = errors {
                p.last_error = Some(e);
            }
        }
    }

    /// `csync2 -u` failed for a reason other than reachability (busy
    /// database, stalled, crashed): retry later.
    pub fn update_failed(&mut self, name: &str, now: Instant, error: String) {
        let (initial, max) = (self.timing.retry_initial, self.timing.retry_max);
        if let Some(p) = self.get(name) {
            p.backoff.set_limits(initial, max);
            p.fail(now, error);
        }
    }

    /// Should `csync2 -M` confirm the last updates?
    pub fn verify_pending(&self) -> bool {
        self.verify_pending
    }

    /// What `csync2 -M` said: the peers that still have dirty entries.
    /// Peers that are clean are done; the others are retried with backoff.
    pub fn verified(&mut self, still_dirty: &[String], now: Instant) {
        self.verify_pending = false;
        let (initial, max) = (self.timing.retry_initial, self.timing.retry_max);
        for p in &mut self.peers {
            if still_dirty.iter().any(|d| d.eq_ignore_ascii_case(&p.name)) {
                if !p.dirty || p.next_try.is_none_or(|t| t <= now) {
                    let reason = p
                        .last_error
                        .clone()
                        .unwrap_or_else(|| "csync2 -M still lists dirty files".into());
                    p.backoff.set_limits(initial, max);
                    p.fail(now, reason);
                }
                p.dirty = true;
            } else {
                p.dirty = false;
                if matches!(p.reach, Reach::Up) {
                    p.failures = 0;
                    p.backoff.reset();
                    p.next_try = None;
                    p.last_error = None;
                    p.last_ok = Some(SystemTime::now());
                }
            }
        }
    }

    /// Is a periodic full sync due?
    pub fn full_due(&self, now: Instant) -> bool {
        self.next_full.is_some_and(|t| t <= now)
    }

    /// A full sync just ran (or was requested and started): plan the next.
    /// (It pushes to the peers only if it found something: the caller
    /// says so with [`Scheduler::mark_all_dirty`].)
    pub fn full_started(&mut self, now: Instant) {
        self.schedule_full(now);
    }

    /// The earliest instant at which something becomes due.
    pub fn next_deadline(&self) -> Option<Instant> {
        let peers = self
            .peers
            .iter()
            .filter(|p| p.dirty && !p.probing)
            .filter_map(|p| p.next_try);
        peers.chain(self.next_full).min()
    }

    fn schedule_full(&mut self, now: Instant) {
        let interval = self.timing.full_sync_interval;
        self.next_full = if interval.is_zero() {
            None
        } else {
            let jitter = self.timing.full_sync_jitter.min(interval / 2);
            let offset = self.random_below(jitter.as_millis() as u64 * 2 + 1);
            let base = now + interval - jitter;
            Some(base + Duration::from_millis(offset))
        };
    }

    /// xorshift64*: enough to spread nodes apart, no crate needed.
    fn random_below(&mut self, n: u64) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }

    fn get(&mut self, name: &str) -> Option<&mut PeerState> {
        self.peers.iter_mut().find(|p| p.name == name)
    }
}

/// Spread a small seed over all 64 bits (SplitMix64's finaliser).
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl PeerState {
    fn new(name: &str) -> PeerState {
        PeerState {
            name: name.to_string(),
            reach: Reach::Unknown,
            dirty: true,
            probing: false,
            next_try: None,
            failures: 0,
            backoff: Backoff::new(Duration::ZERO, Duration::ZERO),
            last_ok: None,
            last_error: None,
        }
    }

    /// A failure: back off (limits set by the caller).
    fn fail(&mut self, now: Instant, error: String) {
        self.backoff.fail(now);
        self.failures = self.backoff.failures();
        self.next_try = self.backoff.next_try();
        self.last_error = Some(error);
        self.dirty = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> Timing {
        Timing {
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            down_probe_max: Duration::from_secs(10),
            full_sync_interval: Duration::from_secs(3600),
            full_sync_jitter: Duration::from_secs(300),
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn peers_start_dirty_and_become_clean_once_verified() {
        let now = Instant::now();
        let mut s = Scheduler::new(&names(&["a", "b"]), timing(), now, 1);
        assert_eq!(s.due(now), names(&["a", "b"]));
        s.updated("a", None);
        s.updated("b", None);
        assert!(s.verify_pending());
        s.verified(&[], now);
        assert!(s.due(now).is_empty());
        s.mark_all_dirty();
        assert_eq!(s.due(now), names(&["a", "b"]));
    }

    #[test]
    fn an_updated_peer_is_not_due_again_before_verification() {
        // Regression: peers stayed due after `csync2 -u`, so the daemon
        // ran updates in a tight loop and never verified.
        let now = Instant::now();
        let mut s = Scheduler::new(&names(&["a"]), timing(), now, 1);
        s.updated("a", None);
        assert!(s.due(now).is_empty());
        assert!(s.verify_pending());
        s.mark_all_dirty();
        assert_eq!(s.due(now), names(&["a"]));
    }

    #[test]
    fn a_down_peer_backs_off_but_is_probed_at_least_every_cap() {
        let now = Instant::now();
        let mut s = Scheduler::new(&names(&["a", "b"]), timing(), now, 1);
        assert!(s.unreachable("b", now, "timeout".into()));
        assert!(!s.unreachable("b", now, "timeout".into()));
        assert_eq!(s.due(now), names(&["a"]), "a is not held up by b");
        let mut t = now;
        let mut gaps = vec![];
        for _ in 0..8 {
            let next = s.peer("b").unwrap().next_try.unwrap();
            gaps.push((next - t).as_secs());
            t = next;
            assert!(s.due(t).contains(&"b".to_string()));
            s.unreachable("b", t, "timeout".into());
        }
        assert_eq!(gaps, vec![2, 4, 8, 10, 10, 10, 10, 10]);
    }

    #[test]
    fn still_dirty_after_update_is_retried_with_capped_backoff() {
        let now = Instant::now();
        let mut s = Scheduler::new(&names(&["a"]), timing(), now, 1);
        let mut t = now;
        let mut gaps = vec![];
        for _ in 0..12 {
            s.updated("a", None);
            s.verified(&names(&["A"]), t);
            let next = s.peer("a").unwrap().next_try.unwrap();
            gaps.push((next - t).as_secs());
            assert!(s.due(t).is_empty());
            t = next;
        }
        assert_eq!(gaps[..4], [1, 2, 4, 8]);
        assert_eq!(*gaps.last().unwrap(), 300);
        s.updated("a", None);
        s.verified(&[], t);
        assert_eq!(s.peer("a").unwrap().failures, 0);
        assert!(s.peer("a").unwrap().last_ok.is_some());
    }

    #[test]
    fn full_sync_is_jittered_around_the_interval() {
        let now = Instant::now();
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..20 {
            let s = Scheduler::new(&[], timing(), now, seed);
            let d = s.next_deadline().unwrap() - now;
            assert!(d >= Duration::from_secs(3300) && d <= Duration::from_secs(3900));
            seen.insert(d.as_millis());
            assert!(!s.full_due(now));
            assert!(s.full_due(now + Duration::from_secs(3900)));
        }
        assert!(seen.len() > 10, "jitter spreads nodes apart");
    }

    #[test]
    fn zero_interval_disables_full_syncs() {
        let mut t = timing();
        t.full_sync_interval = Duration::ZERO;
        let s = Scheduler::new(&[], t, Instant::now(), 1);
        assert_eq!(s.next_deadline(), None);
    }

    #[test]
    fn reload_keeps_known_peers() {
        let now = Instant::now();
        let mut s = Scheduler::new(&names(&["a", "b"]), timing(), now, 1);
        s.unreachable("b", now, "x".into());
        s.set_peers(&names(&["b", "c"]));
        assert!(matches!(s.peer("b").unwrap().reach, Reach::Down { .. }));
        assert!(s.peer("c").unwrap().dirty);
        assert!(s.peer("a").is_none());
    }
}
