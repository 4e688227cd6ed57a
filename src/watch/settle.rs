//! Files held until they close. A regular file that is created or
//! modified is not reported at once: its writer is most likely still at
//! it, and `IN_CLOSE_WRITE` will say when it is done. Some writers never
//! close for writing (truncate, mmap, a writer that keeps the file open),
//! so a held file is also reported once it has had no `IN_MODIFY` for the
//! settle time, and at least every `settle_max` while it keeps changing.
//!
//! Pure: no I/O and no clock of its own (callers pass `now`); the keys are
//! the caller's (the reader uses its directory node and the file's name).
//!
//! Layer: adapter ([`crate::watch`]'s own bookkeeping). Imports nothing
//! from the crate.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// When a held file was first and last written.
#[derive(Debug, Clone, Copy)]
struct Held {
    first: Instant,
    last: Instant,
}

/// The files held, and when the first of them is due.
#[derive(Debug)]
pub(super) struct Settling<K> {
    files: HashMap<K, Held>,
    /// No held file is due before this (`None`: nothing held since the
    /// last [`Settling::take_due`]). May be early, never late.
    next: Option<Instant>,
    settle: Duration,
    settle_max: Duration,
}

impl<K: Hash + Eq + Clone> Settling<K> {
    /// A file is due `settle` after its last write, and no later than
    /// `settle_max` after its first.
    pub(super) fn new(settle: Duration, settle_max: Duration) -> Self {
        Settling {
            files: HashMap::new(),
            next: None,
            settle,
            settle_max,
        }
    }

    /// Another write to `key`: true if it is held (its settle time starts
    /// again), false if it is not (the caller decides whether to hold it).
    pub(super) fn touch(&mut self, key: &K, now: Instant) -> bool {
        match self.files.get_mut(key) {
            Some(held) => {
                held.last = now;
                true
            }
            None => false,
        }
    }

    /// Hold `key` from `now` (a file held already starts over).
    pub(super) fn hold(&mut self, key: K, now: Instant) {
        self.files.insert(
            key,
            Held {
                first: now,
                last: now,
            },
        );
        let due = now + self.settle;
        self.next = Some(self.next.map_or(due, |d| d.min(due)));
    }

    /// Stop holding `key` (it was closed after writing, deleted or moved
    /// away, and is reported as such).
    pub(super) fn release(&mut self, key: &K) {
        self.files.remove(key);
    }

    /// When to call [`Settling::take_due`] next.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.next
    }

    /// The files due by `now`, no longer held.
    pub(super) fn take_due(&mut self, now: Instant) -> Vec<K> {
        if self.next.is_none_or(|d| d > now) {
            return Vec::new();
        }
        let mut due: Vec<K> = Vec::new();
        let mut next: Option<Instant> = None;
        for (k, s) in &self.files {
            let at = (s.last + self.settle).min(s.first + self.settle_max);
            if at <= now {
                due.push(k.clone());
            } else {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        self.next = next;
        for k in &due {
            self.files.remove(k);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTLE: Duration = Duration::from_secs(2);
    const MAX: Duration = Duration::from_secs(30);

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn a_file_is_due_the_settle_time_after_its_last_write() {
        let t0 = Instant::now();
        let mut s = Settling::new(SETTLE, MAX);
        s.hold("a", t0);
        assert_eq!(s.next_due(), Some(secs(t0, 2)));
        assert!(s.touch(&"a", secs(t0, 1)));
        // The first estimate was early: nothing is due, and the next look
        // is at the real time.
        assert!(s.take_due(secs(t0, 2)).is_empty());
        assert_eq!(s.next_due(), Some(secs(t0, 3)));
        assert_eq!(s.take_due(secs(t0, 3)), vec!["a"]);
        assert_eq!(s.next_due(), None);
        // No longer held.
        assert!(!s.touch(&"a", secs(t0, 4)));
        assert!(s.take_due(secs(t0, 100)).is_empty());
    }

    #[test]
    fn a_file_that_keeps_changing_is_due_at_the_latest_settle_max_after_its_first_write() {
        let t0 = Instant::now();
        let mut s = Settling::new(SETTLE, MAX);
        s.hold(1, t0);
        for t in 1..30 {
            assert!(s.touch(&1, secs(t0, t)));
            assert!(s.take_due(secs(t0, t)).is_empty(), "due at {t}s");
        }
        assert_eq!(s.take_due(secs(t0, 30)), vec![1]);
    }

    #[test]
    fn a_released_file_is_never_due() {
        let t0 = Instant::now();
        let mut s = Settling::new(SETTLE, MAX);
        s.hold("closed", t0);
        s.hold("open", t0);
        s.release(&"closed");
        assert_eq!(s.take_due(secs(t0, 2)), vec!["open"]);
        assert!(!s.touch(&"closed", secs(t0, 3)));
    }

    #[test]
    fn holding_again_starts_over() {
        let t0 = Instant::now();
        let mut s = Settling::new(SETTLE, MAX);
        s.hold("a", t0);
        s.hold("a", secs(t0, 29));
        // Its first write is now at 29 s: not due at 30 s (settle_max from
        // the old first write), but at 31 s.
        assert!(s.take_due(secs(t0, 30)).is_empty());
        assert_eq!(s.take_due(secs(t0, 31)), vec!["a"]);
    }

    #[test]
    fn only_the_due_files_are_taken_and_the_next_time_is_the_earliest_left() {
        let t0 = Instant::now();
        let mut s = Settling::new(SETTLE, MAX);
        s.hold("early", t0);
        s.hold("late", secs(t0, 5));
        assert_eq!(s.next_due(), Some(secs(t0, 2)));
        assert_eq!(s.take_due(secs(t0, 2)), vec!["early"]);
        assert_eq!(s.next_due(), Some(secs(t0, 7)));
        assert!(s.take_due(secs(t0, 6)).is_empty());
        assert_eq!(s.take_due(secs(t0, 7)), vec!["late"]);
    }
}
