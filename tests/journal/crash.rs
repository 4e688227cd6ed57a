//! Crash durability: a child process enqueues batches and reports each
//! committed batch on stdout; the parent SIGKILLs it mid-stream, reopens
//! the journal and must find every batch the child reported (and the file
//! intact, and txids still increasing).
//!
//! The child is this test binary run again with `--ignored --exact
//! journal::crash::crash_child` and `JOURNAL_CRASH_CHILD=<state dir>`.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use csync2_watch::journal::{EventKind, Journal, FILE_NAME};
use csync2_watch::watch::ChangeKind;

use crate::support::test_path;

const CHILD_ENV: &str = "JOURNAL_CRASH_CHILD";
const PER_BATCH: usize = 50;

fn batch_path(batch: u64, i: usize) -> PathBuf {
    // Non-UTF-8 and a newline, so durability covers awkward names too.
    PathBuf::from(OsString::from_vec(
        format!("/srv/b{batch}/\u{1}f{i}\n")
            .into_bytes()
            .into_iter()
            .chain([0xff])
            .collect(),
    ))
}

/// Kills the child by PID if the test fails before it does.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Not a test on its own: the child process of
/// `a_sigkilled_writer_loses_nothing_it_committed`.
#[test]
#[ignore = "child process of a_sigkilled_writer_loses_nothing_it_committed"]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let mut j = Journal::open(&PathBuf::from(dir)).unwrap();
    for batch in 0u64.. {
        let changes: Vec<_> = (0..PER_BATCH)
            .map(|i| (batch_path(batch, i), ChangeKind::Entry))
            .collect();
        let txids = j.enqueue(&changes).unwrap();
        if batch % 7 == 0 {
            j.record_full_check(None, &format!("after batch {batch}"))
                .unwrap();
        }
        // Only now, after the commit, does the parent hear of it.
        println!("committed {batch} {}", txids.last().unwrap());
    }
}

#[test]
fn a_sigkilled_writer_loses_nothing_it_committed() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let child = Command::new(exe)
        .args([
            "--ignored",
            "--exact",
            &test_path(module_path!(), "crash_child"),
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<(u64, u64)>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let mut it = line.split_whitespace();
            if it.next() == Some("committed") {
                let b: u64 = it.next().unwrap().parse().unwrap();
                let t: u64 = it.next().unwrap().parse().unwrap();
                if tx.send((b, t)).is_err() {
                    break;
                }
            }
        }
    });

    // Let it commit a good number of batches, then kill it mid-stream.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = None;
    while last.is_none_or(|(b, _)| b < 40) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "child committed only {last:?}");
        if let Ok(x) = rx.recv_timeout(left) {
            last = Some(x);
        }
    }
    let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let status = child.0.wait().unwrap();
    assert!(!status.success());
    reader.join().unwrap();
    // Everything it reported before dying counts.
    while let Ok(x) = rx.try_recv() {
        last = Some(x);
    }
    let (last_batch, last_txid) = last.unwrap();

    // A leftover WAL is expected after a kill; reopening recovers it.
    let conn = rusqlite::Connection::open(dir.path().join(FILE_NAME)).unwrap();
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    drop(conn);

    let mut j = Journal::open(dir.path()).unwrap();
    let pending = j.pending().unwrap();
    let events = j.events_since(0, usize::MAX).unwrap();
    for batch in 0..=last_batch {
        for i in 0..PER_BATCH {
            let want = batch_path(batch, i);
            assert!(
                pending.iter().any(|q| q.path == want),
                "queued path {want:?} of batch {batch} lost"
            );
        }
    }
    let changes = events
        .iter()
        .filter(|e| matches!(e.what, EventKind::Change { .. }))
        .count();
    assert!(changes >= (last_batch as usize + 1) * PER_BATCH);
    assert!(events.iter().any(|e| e.txid == last_txid));
    // No batch is half there: the batch after the last reported one (if
    // its commit made it before the kill) is complete too.
    assert_eq!(pending.len() % PER_BATCH, 0);
    // Txids keep increasing across the crash.
    let next = j
        .enqueue(&[(PathBuf::from("/srv/after"), ChangeKind::Entry)])
        .unwrap()[0];
    assert!(next > events.last().unwrap().txid);
}
