//! Issue 8: a change seen is a change synced, however often the daemon is
//! SIGKILLed, whatever csync2 run it was in the middle of.
//!
//! The kill storm mirrors how the loss was first seen: new files, a random
//! delay, SIGKILL to the daemon alone (its csync2 children die through
//! their parent-death signal), and an immediate restart, so that many
//! kills land inside the previous start's full check, batches or updates.
//! csync2 runs its first 50 statements, and 10 after every commit, in
//! autocommit mode (db.c), so a check killed there often leaves a file
//! recorded but not marked dirty.

use std::fs;
use std::time::{Duration, Instant};

use csync2_watch::journal::{Journal, RunMode, ScopeEntry};
use csync2_watch_testbed::wait_until;

use crate::support::cluster::Cluster;

/// A small xorshift generator: the test prints its seed, so a failing
/// sequence of delays can be replayed with `CSYNC2_WATCH_TEST_SEED`.
struct Rng(u64);

impl Rng {
    fn from_env_or_clock() -> Rng {
        let seed = std::env::var("CSYNC2_WATCH_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("seed: CSYNC2_WATCH_TEST_SEED={seed}");
        Rng(seed | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn kill_daemon_alone(c: &mut Cluster, i: usize) {
    if let Some(pid) = c.daemon_pid(i) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    // Reap it (and end whatever of its process group is left).
    c.kill_daemon(i);
}

#[test]
fn kill_9_during_start_up_loses_nothing() {
    let rounds: usize = std::env::var("CSYNC2_WATCH_KILL_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let mut rng = Rng::from_env_or_clock();
    let mut c = Cluster::start("");
    let started = Instant::now();
    for round in 0..rounds {
        let dir = c.path(0, format!("k9/r{round}"));
        fs::create_dir_all(&dir).unwrap();
        for k in 0..40 {
            fs::write(dir.join(format!("f{k}")), format!("round {round} file {k}")).unwrap();
        }
        std::thread::sleep(Duration::from_millis(rng.below(400)));
        kill_daemon_alone(&mut c, 0);
        c.start_daemon(0);
    }
    eprintln!("{rounds} kill rounds in {:?}", started.elapsed());
    c.wait_ready(0);
    c.wait_converged(Duration::from_secs(120));
    eprintln!("converged {:?} after the first kill", started.elapsed());
    let log = c.log(0);
    for line in log.lines() {
        if line.contains("recovered:") || line.contains("filled the stat cache") {
            eprintln!("{line}");
            // Only the storm's own files and directories are ever forced.
            let forced = logged_number(line, "recovered:", "forced").unwrap_or(0);
            assert!(
                forced <= (rounds as u64) * 41 + 10,
                "recovery forced {forced} paths\n{line}"
            );
        }
    }
}

/// The same storm, aimed: each round's files are written while the new
/// daemon is still starting (before its watches: no event is ever
/// journaled for them), and the kill lands a random 0-20 ms into its
/// start-up `csync2 -c` (recovery's or the start-up reconcile's), the run
/// that records them.
#[test]
fn kill_9_inside_the_start_up_checks_loses_nothing() {
    let mut rng = Rng::from_env_or_clock();
    let mut c = Cluster::start("");
    for round in 0..20 {
        kill_daemon_alone(&mut c, 0);
        c.start_daemon(0);
        let dir = c.path(0, format!("k9cr/r{round}"));
        fs::create_dir_all(&dir).unwrap();
        for k in 0..40 {
            fs::write(dir.join(format!("f{k}")), format!("round {round} file {k}")).unwrap();
        }
        let pause = Duration::from_millis(rng.below(20));
        kill_during(&mut c, 0, |a| crate::support::has_arg(a, "-c"), pause);
    }
    c.start_daemon(0);
    c.wait_ready(0);
    c.wait_converged(Duration::from_secs(120));
}

/// Wait until node `i`'s daemon runs a csync2 child whose arguments
/// satisfy `want`, wait `after`, then SIGKILL the daemon alone. Returns
/// the child's argv.
fn kill_during(
    c: &mut Cluster,
    i: usize,
    want: impl Fn(&[String]) -> bool,
    after: Duration,
) -> Vec<String> {
    let pid = c.daemon_pid(i).expect("daemon runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((_, args)) = crate::support::children_of(pid)
            .into_iter()
            .find(|(_, a)| want(a))
        {
            std::thread::sleep(after);
            kill_daemon_alone(c, i);
            return args;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon never ran the csync2 run to kill\n{}",
            c.logs_tail()
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// csync2's database of node `i` (`-D DIR`, sqlite: `NODE.db3`).
fn csync2_db(c: &Cluster, i: usize) -> std::path::PathBuf {
    let n = c.node(i);
    n.db_dir().join(format!("{}.db3", n.name()))
}

fn sqlite(db: &std::path::Path, sql: &str) {
    let out = std::process::Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("sqlite3 runs (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "sqlite3 {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// With node 1's daemon stopped: write `rel`, let csync2 record it, and
/// drop its dirty rows, which is the state a `csync2 -c` killed between
/// its `INSERT INTO file` and its `INSERT INTO dirty` leaves (csync2
/// commits every 1,000 statements or 3 s). Checks that csync2 itself will
/// now never mark it again, then journals an interrupted run of `mode`.
fn leave_recorded_but_not_dirty(c: &mut Cluster, rel: &str, mode: RunMode) {
    assert!(c.stop_daemon(0).is_some_and(|s| s.success()));
    let path = c.path(0, rel);
    fs::write(&path, b"recorded, never marked").unwrap();
    let real = c.node(0).path(rel);
    let out = c
        .node(0)
        .run_csync2(["-c".as_ref(), real.as_os_str()])
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!c.node(0).dirty().unwrap().is_empty(), "csync2 -c marks it");
    sqlite(&csync2_db(c, 0), "DELETE FROM dirty");
    let out = c.node(0).run_csync2(["-cr", "/"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        c.node(0).dirty().unwrap().is_empty(),
        "csync2 -cr marks a file it already recorded: the hazard is gone?"
    );
    let mut j = Journal::open(c.node(0).state_dir()).unwrap();
    j.begin_run(
        mode,
        &[ScopeEntry {
            path: real,
            recursive: false,
        }],
    )
    .unwrap();
}

#[test]
fn a_check_killed_between_recording_and_marking_is_recovered() {
    let mut c = Cluster::start("");
    leave_recorded_but_not_dirty(&mut c, "interrupted-check", RunMode::Check);
    c.start_daemon(0);
    c.wait_ready(0);
    c.wait_converged(Duration::from_secs(60));
    assert_eq!(
        fs::read(c.path(1, "interrupted-check")).unwrap(),
        b"recorded, never marked"
    );
}

#[test]
fn an_interrupted_mark_is_recovered() {
    let mut c = Cluster::start("");
    leave_recorded_but_not_dirty(&mut c, "interrupted-mark", RunMode::Mark);
    c.start_daemon(0);
    c.wait_ready(0);
    c.wait_converged(Duration::from_secs(60));
    assert!(c.path(2, "interrupted-mark").exists());
}

/// Journal a full check of every tree as interrupted (node 1's daemon is
/// not running), start the daemon, let it converge, and return how many
/// paths its recovery forced dirty.
fn restart_after_an_interrupted_full_check(c: &mut Cluster) -> u64 {
    let mut j = Journal::open(c.node(0).state_dir()).unwrap();
    j.begin_run(
        RunMode::Full,
        &[ScopeEntry {
            path: "/".into(),
            recursive: true,
        }],
    )
    .unwrap();
    drop(j);
    c.start_daemon(0);
    c.wait_ready(0);
    c.wait_converged(Duration::from_secs(60));
    c.status(0).unwrap().counters.forced
}

#[test]
fn a_recovery_pushes_only_what_changed_never_the_whole_tree() {
    let mut c = Cluster::start("");
    for i in 0..200 {
        fs::write(c.path(0, format!("settled-{i}")), format!("{i}")).unwrap();
    }
    c.wait_converged(Duration::from_secs(60));
    // Let csync2 -M confirm what the peers hold.
    std::thread::sleep(Duration::from_secs(2));
    leave_recorded_but_not_dirty(&mut c, "the-one-change", RunMode::Full);
    // The journal now says a full check of every tree was interrupted.
    let forced = restart_after_an_interrupted_full_check(&mut c);
    assert!(
        (1..50).contains(&forced),
        "recovery forced {forced} paths dirty: it must force the change, and not the 200 settled files\n{}",
        c.logs_tail()
    );
}

#[test]
fn an_update_killed_mid_transfer_is_resent() {
    let mut c = Cluster::start("");
    let big: Vec<u8> = (0..48u32 << 20)
        .map(|i| i.wrapping_mul(2_654_435_761) as u8)
        .collect();
    fs::write(c.path(0, "big"), &big).unwrap();
    let args = kill_during(
        &mut c,
        0,
        |a| crate::support::has_arg(a, "-u"),
        Duration::ZERO,
    );
    eprintln!("killed during {args:?}");
    c.start_daemon(0);
    c.wait_ready(0);
    c.wait_converged(Duration::from_secs(120));
    assert!(fs::read(c.path(2, "big")).unwrap() == big);
}

#[test]
fn the_daemon_killed_during_its_start_up_reconcile_loses_nothing() {
    let mut c = Cluster::start("");
    assert!(c.stop_daemon(0).is_some_and(|s| s.success()));
    for d in 0..20 {
        let dir = c.path(0, format!("many/d{d}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            fs::write(dir.join(format!("f{f}")), format!("{d}/{f}")).unwrap();
        }
    }
    c.start_daemon(0);
    // The reconcile's `csync2 -c` of the 2,000 new files.
    let args = kill_during(
        &mut c,
        0,
        |a| crate::support::has_arg(a, "-c"),
        Duration::ZERO,
    );
    eprintln!("killed during {args:?}");
    c.start_daemon(0);
    c.wait_ready(0);
    c.wait_converged(Duration::from_secs(120));
    // The same, in a deep check's `csync2 -cr /`.
    fs::write(c.path(0, "many/d0/f0"), b"changed while stopped").unwrap();
    // (`sync` returns once the status file says the request was taken,
    // which may be after the `csync2 -cr /` ended: look meanwhile.)
    let mut sync = std::process::Command::new(crate::support::BIN)
        .args(["sync", "--full", "--deep", "-N"])
        .arg(c.node(0).name())
        .arg("--state-dir")
        .arg(c.node(0).state_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let args = kill_during(
        &mut c,
        0,
        |a| crate::support::has_arg(a, "-c") && crate::support::has_arg(a, "-r"),
        Duration::ZERO,
    );
    eprintln!("killed during {args:?}");
    let _ = sync.wait();
    c.start_daemon(0);
    c.wait_ready(0);
    c.wait_converged(Duration::from_secs(120));
}

#[test]
fn a_corrupt_journal_is_moved_aside_and_what_changed_meanwhile_is_synced() {
    let mut c = Cluster::start("");
    fs::write(c.path(0, "before"), b"1").unwrap();
    c.wait_converged(Duration::from_secs(60));
    assert!(c.stop_daemon(0).is_some_and(|s| s.success()));
    let state = c.node(0).state_dir().to_path_buf();
    let journal = state.join(csync2_watch::journal::FILE_NAME);
    let _ = fs::remove_file(state.join("journal.db-wal"));
    let _ = fs::remove_file(state.join("journal.db-shm"));
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new().write(true).open(&journal).unwrap();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let junk: Vec<u8> = (0..200).map(|_| rng.below(256) as u8).collect();
        f.write_all_at(&junk, 0).unwrap();
    }
    fs::write(c.path(0, "while-stopped"), b"2").unwrap();
    c.start_daemon(0);
    c.wait_ready(0);
    c.wait_converged(Duration::from_secs(60));
    assert!(c.daemon_alive(0), "{}", c.logs_tail());
    let aside: Vec<_> = fs::read_dir(&state)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("journal.db.corrupt-")
        })
        .collect();
    assert!(
        !aside.is_empty(),
        "the damaged journal was kept for the admin"
    );
    let log = c.log(0);
    assert!(
        log.contains("moved it aside") && log.contains("journal.db.corrupt-"),
        "{log}"
    );
    // The new journal works: later changes flow as usual.
    fs::write(c.path(0, "after"), b"3").unwrap();
    c.wait_converged(Duration::from_secs(60));
}

#[test]
fn state_is_root_s_alone() {
    use std::os::unix::fs::PermissionsExt;
    let c = Cluster::start("");
    let state = c.node(0).state_dir();
    let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(state), 0o700);
    for f in [
        "journal.db",
        "journal.db-wal",
        "status.json",
        "lock",
        "journal.health",
    ] {
        let p = state.join(f);
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
}

/// `csync2-watch status --json` run inside node `i` (which sees its own
/// mounts), parsed.
fn status_inside(c: &Cluster, i: usize) -> serde_json::Value {
    let out = c
        .node(i)
        .command(crate::support::cluster::BIN)
        .arg("status")
        .arg("--json")
        .arg("--state-dir")
        .arg(c.node(i).state_dir())
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

#[test]
fn a_full_disk_under_the_state_directory_keeps_changes_flowing() {
    let mut c = Cluster::start("");
    assert!(c.stop_daemon(0).is_some_and(|s| s.success()));
    let state = c.node(0).state_dir().to_path_buf();
    // A small filesystem of its own, inside node 1's mount namespace.
    let out = c
        .node(0)
        .command("mount")
        .args(["-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(out.status.success(), "mount: {out:?}");
    c.start_daemon(0);
    c.wait_converged(Duration::from_secs(60));
    let filler = state.join("filler");
    let fill = c
        .node(0)
        .command("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", filler.display()))
        .arg("bs=4k")
        .output()
        .unwrap();
    assert!(!fill.status.success(), "dd filled the disk");
    // SQLite reuses the pages its WAL already has, so the first few
    // changes may still be journaled; change files until the journal
    // needs room it cannot get.
    let mut written = 0;
    let failed = |c: &Cluster| c.log(0).contains("syncing goes on");
    while written < 5000 && !failed(&c) {
        for _ in 0..100 {
            fs::write(
                c.path(0, format!("disk-full-{written}")),
                format!("{written}"),
            )
            .unwrap();
            written += 1;
        }
        wait_until(Duration::from_secs(2), || failed(&c));
    }
    assert!(
        failed(&c),
        "the journal never ran out of room\n{}",
        c.logs_tail()
    );
    eprintln!("the journal failed after {written} changed files");
    // Changes keep flowing while the journal cannot be written.
    fs::write(c.path(0, "while-full"), b"still synced").unwrap();
    c.wait_converged(Duration::from_secs(120));
    // Room again: the status file can say what happened.
    let rm = c.node(0).command("rm").arg(&filler).output().unwrap();
    assert!(rm.status.success());
    let said = wait_until(Duration::from_secs(20), || {
        status_inside(&c, 0)["journal_error"].is_string()
    });
    assert!(
        said,
        "status never named the journal error\n{}",
        c.logs_tail()
    );
    // The next start rechecks every tree.
    assert!(c.stop_daemon(0).is_some_and(|s| s.success()));
    c.start_daemon(0);
    // (Its status file is on the tmpfs, which only node 1's mount
    // namespace sees: read the log.)
    let said = wait_until(Duration::from_secs(30), || {
        let log = c.log(0);
        log.rfind("starting node")
            .is_some_and(|at| log[at..].contains("missed writes"))
    });
    assert!(said, "the restart did not recheck every tree\n{}", c.log(0));
    c.wait_converged(Duration::from_secs(60));
}

/// The number in `KEY=N` of the last log line containing `what`.
fn logged_number(log: &str, what: &str, key: &str) -> Option<u64> {
    let line = log.lines().rev().find(|l| l.contains(what))?;
    let at = line.find(&format!("{key}="))? + key.len() + 1;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[test]
fn filling_the_record_over_existing_data_pushes_nothing() {
    let mut c = Cluster::start("");
    for d in 0..5 {
        fs::create_dir_all(c.path(0, format!("old/d{d}"))).unwrap();
        for f in 0..20 {
            fs::write(c.path(0, format!("old/d{d}/f{f}")), format!("{d}{f}")).unwrap();
        }
    }
    std::os::unix::fs::symlink("old/d0/f0", c.path(0, "a link: with%odd\tbytes")).unwrap();
    c.wait_converged(Duration::from_secs(60));
    // An upgrade over existing data, or a journal moved aside: no record.
    assert!(c.stop_daemon(0).is_some_and(|s| s.success()));
    let state = c.node(0).state_dir().to_path_buf();
    for f in ["journal.db", "journal.db-wal", "journal.db-shm"] {
        let _ = fs::remove_file(state.join(f));
    }
    c.start_daemon(0);
    c.wait_ready(0);
    c.wait_converged(Duration::from_secs(60));
    let log = c.log(0);
    let confirmed = logged_number(&log, "filled the stat cache", "confirmed").unwrap();
    let walked = logged_number(&log, "filled the stat cache", "walked").unwrap();
    assert!(
        confirmed >= 107 && confirmed == walked,
        "every settled path (100 files, 6 directories, the root, the link) is what the \
         peers hold: confirmed {confirmed} of {walked}\n{log}"
    );
    assert_eq!(c.status(0).unwrap().counters.forced, 0);
    // A crash in a full check of every tree now forces nothing settled.
    fs::write(c.path(0, "fresh"), b"new").unwrap();
    c.wait_converged(Duration::from_secs(60));
    kill_daemon_alone(&mut c, 0);
    let forced = restart_after_an_interrupted_full_check(&mut c);
    assert!(forced <= 3, "forced {forced}\n{}", c.log(0));
}
