//! The systemd watchdog (`WatchdogSec=` in the units): a thread sends
//! `WATCHDOG=1` at half the interval systemd asked for, but only while the
//! daemon is demonstrably alive, so that a frozen daemon (SIGSTOP) or a
//! stuck control loop is killed and restarted by systemd.
//!
//! "Alive" means one of:
//!
//! * start-up has not reached the control loop yet (placing the watches on
//!   a big tree takes minutes; `TimeoutStartSec=` bounds it), or the
//!   daemon is stopping (`TimeoutStopSec=` bounds that);
//! * the control loop beat ([`Heartbeat::beat`]) within three quarters of
//!   the interval: it beats on every iteration, wakes at least every
//!   quarter interval when idle, and beats while it waits for the local
//!   csync2 server to be quiet;
//! * the loop is inside an action ([`Heartbeat::busy`]: a batch check, an
//!   update, a verify) and a child process of the daemon made progress
//!   (I/O, or a new csync2 process) within `stall_timeout` plus a margin.
//!   A csync2 client that makes no progress for `stall_timeout` is killed
//!   by the runner, and the loop then moves on; so a legitimately long
//!   csync2 run never trips the watchdog, and a runner that stopped
//!   supervising its child does;
//! * the loop is in a step whose worst case is known and long
//!   ([`Heartbeat::trust_for`]: a reload places watches on new trees).
//!
//! A frozen process sends nothing at all, whatever the state says.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

/// Extra silence allowed on top of `stall_timeout` while csync2 runs: the
/// runner's kill grace (2 s), reaping, and the loop getting to its next
/// beat. (Shorter when the watchdog interval is shorter, i.e. in tests.)
const STALL_MARGIN: Duration = Duration::from_secs(10);

/// How long a reload is trusted: it may place watches on new trees, which
/// on a big tree with a cold cache takes as long as start-up
/// (`TimeoutStartSec=15min` in the units).
pub const RELOAD_TRUST: Duration = Duration::from_secs(15 * 60);

struct Shared {
    epoch: Instant,
    /// Millis since `epoch` of the last beat; 0: no beat yet (start-up).
    beat: AtomicU64,
    /// While inside an action: the silence allowed, in millis (0: idle).
    busy_limit: AtomicU64,
    /// Millis since `epoch` until which the daemon is trusted (0: none).
    trust_until: AtomicU64,
    stopping: AtomicBool,
    /// See [`STALL_MARGIN`].
    margin: Duration,
}

impl Shared {
    fn now(&self) -> u64 {
        // Never 0, which means "never".
        self.epoch.elapsed().as_millis() as u64 + 1
    }
}

/// The control loop's side: cheap to clone and to call when the watchdog
/// is off (no systemd, or no `WatchdogSec=`).
#[derive(Clone)]
pub struct Heartbeat {
    shared: Arc<Shared>,
    interval: Option<Duration>,
}

/// Ends the busy or trusted state it was made for when dropped.
pub struct Guard {
    heartbeat: Heartbeat,
    trust: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let s = &self.heartbeat.shared;
        if self.trust {
            s.trust_until.store(0, Ordering::Relaxed);
        } else {
            s.busy_limit.store(0, Ordering::Relaxed);
        }
        self.heartbeat.beat();
    }
}

impl Heartbeat {
    /// The control loop is alive now.
    pub fn beat(&self) {
        self.shared.beat.store(self.shared.now(), Ordering::Relaxed);
    }

    /// The loop starts an action that runs csync2 clients, each killed by
    /// the runner after `stall_timeout` without progress. Until the guard
    /// is dropped, child processes' progress counts as life.
    pub fn busy(&self, stall_timeout: Duration) -> Guard {
        self.beat();
        let limit = stall_timeout + self.shared.margin;
        self.shared
            .busy_limit
            .store(limit.as_millis().max(1) as u64, Ordering::Relaxed);
        Guard {
            heartbeat: self.clone(),
            trust: false,
        }
    }

    /// Trust the daemon for `d` (or until the guard is dropped).
    pub fn trust_for(&self, d: Duration) -> Guard {
        self.beat();
        let until = self.shared.now() + d.as_millis() as u64;
        self.shared.trust_until.store(until, Ordering::Relaxed);
        Guard {
            heartbeat: self.clone(),
            trust: true,
        }
    }

    /// The daemon is stopping: keep pinging until it exits
    /// (`TimeoutStopSec=` bounds the stop).
    pub fn stopping(&self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
    }

    /// The longest the idle loop may sleep before it must beat again.
    pub fn max_sleep(&self) -> Duration {
        match self.interval {
            Some(i) => (i / 4).max(Duration::from_millis(50)),
            None => Duration::from_secs(60),
        }
    }
}

/// The pinging thread; dropping it stops the thread.
pub struct Watchdog {
    heartbeat: Heartbeat,
    quit: Option<Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    /// Start pinging if systemd asked for a watchdog (`WATCHDOG_USEC` for
    /// this pid); otherwise a heartbeat that nobody reads.
    pub fn start() -> Watchdog {
        let mut usec = 0;
        let interval = sd_notify::watchdog_enabled(false, &mut usec)
            .then(|| Duration::from_micros(usec))
            .filter(|d| !d.is_zero());
        Self::start_with(interval, |_why| {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
        })
    }

    /// [`Watchdog::start`] with the interval and the ping injectable.
    fn start_with(interval: Option<Duration>, ping: impl Fn(&str) + Send + 'static) -> Watchdog {
        let heartbeat = Heartbeat {
            shared: Arc::new(Shared {
                epoch: Instant::now(),
                beat: AtomicU64::new(0),
                busy_limit: AtomicU64::new(0),
                trust_until: AtomicU64::new(0),
                stopping: AtomicBool::new(false),
                margin: interval.map_or(STALL_MARGIN, |i| i.min(STALL_MARGIN)),
            }),
            interval,
        };
        let Some(interval) = interval else {
            return Watchdog {
                heartbeat,
                quit: None,
                thread: None,
            };
        };
        let (quit_tx, quit_rx) = crossbeam_channel::bounded(1);
        let shared = heartbeat.shared.clone();
        let thread = std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || pinger(&shared, interval, &quit_rx, &ping))
            .ok();
        if thread.is_none() {
            tracing::warn!("cannot start the watchdog thread: systemd will restart csync2-watch");
        } else {
            tracing::info!(interval = ?interval, "systemd watchdog on");
        }
        Watchdog {
            heartbeat,
            quit: Some(quit_tx),
            thread,
        }
    }

    pub fn heartbeat(&self) -> Heartbeat {
        self.heartbeat.clone()
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.quit.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn pinger(shared: &Shared, interval: Duration, quit: &Receiver<()>, ping: &dyn Fn(&str)) {
    let period = (interval / 2).max(Duration::from_millis(10));
    let allowed_silence = (interval * 3 / 4).as_millis() as u64;
    let mut children = ChildProgress::default();
    let mut silent_logged = false;
    loop {
        let now = shared.now();
        let beat = shared.beat.load(Ordering::Relaxed);
        let busy_limit = shared.busy_limit.load(Ordering::Relaxed);
        let progress_at = if busy_limit > 0 {
            children.sample(now)
        } else {
            children.reset();
            0
        };
        let verdict = judge(
            now,
            beat,
            busy_limit,
            progress_at,
            shared.trust_until.load(Ordering::Relaxed),
            shared.stopping.load(Ordering::Relaxed),
            allowed_silence,
        );
        match verdict {
            Ok(why) => {
                ping(why);
                silent_logged = false;
            }
            Err(why) => {
                if !silent_logged {
                    tracing::error!(
                        "watchdog: {why}; no longer telling systemd that csync2-watch is alive"
                    );
                    silent_logged = true;
                }
            }
        }
        match quit.recv_timeout(period) {
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
    }
}

/// Is the daemon alive? `Ok` says why, `Err` why not. All times are
/// millis since the epoch (0: never).
fn judge(
    now: u64,
    beat: u64,
    busy_limit: u64,
    progress_at: u64,
    trust_until: u64,
    stopping: bool,
    allowed_silence: u64,
) -> Result<&'static str, String> {
    if stopping {
        return Ok("stopping");
    }
    if beat == 0 {
        return Ok("starting");
    }
    if trust_until > now {
        return Ok("trusted step");
    }
    let since_beat = now.saturating_sub(beat);
    if since_beat < allowed_silence {
        return Ok("control loop alive");
    }
    if busy_limit > 0 {
        let last = progress_at.max(beat);
        let since = now.saturating_sub(last);
        if since < busy_limit {
            return Ok("csync2 making progress");
        }
        return Err(format!(
            "the control loop has been in one action for {}s and no csync2 process made progress for {}s",
            since_beat / 1000,
            since / 1000
        ));
    }
    Err(format!(
        "the control loop has not come round for {}s",
        since_beat / 1000
    ))
}

/// Progress of the daemon's child processes (csync2 clients, the managed
/// server and their children): `rchar + wchar` and pids, summed.
#[derive(Default)]
struct ChildProgress {
    last: Option<u64>,
    at: u64,
}

impl ChildProgress {
    fn reset(&mut self) {
        self.last = None;
        self.at = 0;
    }

    /// When the children last changed (millis), sampling them now.
    fn sample(&mut self, now: u64) -> u64 {
        let current = children_counter();
        if self.last != Some(current) {
            self.last = Some(current);
            self.at = now;
        }
        self.at
    }
}

fn children_counter() -> u64 {
    let mut total = 0u64;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    for task in tasks.flatten() {
        let Ok(children) = std::fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        for c in children.split_whitespace() {
            if let Ok(pid) = c.parse::<u32>() {
                total = total.wrapping_add(u64::from(pid));
                if let Some(io) = crate::runner::process::io_counter(pid) {
                    total = total.wrapping_add(io);
                }
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1000;

    #[test]
    fn judge_start_stop_and_trust() {
        assert!(
            judge(100 * S, 0, 0, 0, 0, false, 22 * S).is_ok(),
            "starting"
        );
        assert!(judge(100 * S, 1, 0, 0, 0, true, 22 * S).is_ok(), "stopping");
        assert!(
            judge(100 * S, 1, 0, 0, 200 * S, false, 22 * S).is_ok(),
            "trusted"
        );
        assert!(
            judge(100 * S, 1, 0, 0, 50 * S, false, 22 * S).is_err(),
            "trust over"
        );
    }

    #[test]
    fn judge_idle_loop_must_beat() {
        assert!(judge(100 * S, 90 * S, 0, 0, 0, false, 22 * S).is_ok());
        let e = judge(100 * S, 70 * S, 0, 0, 0, false, 22 * S).unwrap_err();
        assert!(e.contains("30s"), "{e}");
    }

    #[test]
    fn judge_busy_trusts_progressing_children_only() {
        // In a csync2 run for 10 minutes, children progressed 5 s ago.
        assert!(judge(700 * S, 100 * S, 70 * S, 695 * S, 0, false, 22 * S).is_ok());
        // No child progress for 80 s with a 70 s limit: stuck.
        let e = judge(700 * S, 100 * S, 70 * S, 620 * S, 0, false, 22 * S).unwrap_err();
        assert!(e.contains("80s"), "{e}");
        // Busy and recently beaten (a gate wait beats): fine without progress.
        assert!(judge(700 * S, 690 * S, 70 * S, 0, 0, false, 22 * S).is_ok());
    }

    #[test]
    fn guards_end_their_state() {
        let w = Watchdog::start_with(None, |_| {});
        let h = w.heartbeat();
        {
            let _g = h.busy(Duration::from_secs(60));
            assert_eq!(h.shared.busy_limit.load(Ordering::Relaxed), 70_000);
        }
        assert_eq!(h.shared.busy_limit.load(Ordering::Relaxed), 0);
        {
            let _g = h.trust_for(Duration::from_secs(5));
            assert!(h.shared.trust_until.load(Ordering::Relaxed) > 0);
        }
        assert_eq!(h.shared.trust_until.load(Ordering::Relaxed), 0);
        assert_eq!(
            h.max_sleep(),
            Duration::from_secs(60),
            "off: no extra wake-ups"
        );
    }

    #[test]
    fn pings_while_alive_and_stops_when_the_loop_stops() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let w = Watchdog::start_with(Some(Duration::from_millis(200)), move |why| {
            let _ = tx.send(why.to_string());
        });
        let h = w.heartbeat();
        assert_eq!(h.max_sleep(), Duration::from_millis(50));
        // Start-up: pings without beats.
        assert_eq!(rx.recv_timeout(Duration::from_secs(2)).unwrap(), "starting");
        // A beating loop: pings.
        for _ in 0..6 {
            h.beat();
            std::thread::sleep(Duration::from_millis(50));
        }
        while let Ok(why) = rx.try_recv() {
            assert_eq!(why, "control loop alive");
        }
        // The loop stops beating: within a few periods the pings stop.
        std::thread::sleep(Duration::from_millis(400));
        while rx.try_recv().is_ok() {}
        assert!(
            rx.recv_timeout(Duration::from_millis(400)).is_err(),
            "still pinging"
        );
        // A long csync2 run whose child keeps doing I/O: pings go on
        // (busy limit 100 ms + 200 ms margin, far less than the run).
        let busy = h.busy(Duration::from_millis(100));
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 30 ]; do echo x > /dev/null; i=$((i+1)); sleep 0.05; done",
            ])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1200));
        let pings: Vec<String> = rx.try_iter().collect();
        let _ = child.wait();
        assert!(
            pings
                .iter()
                .filter(|w| *w == "csync2 making progress")
                .count()
                >= 3,
            "{pings:?}"
        );
        drop(busy);
        drop(w);
    }
}
