//! The journal against a real SQLite file: byte-exact paths, queue
//! dedup/upsert, complete vs. requeue, pruning, requests, schema version,
//! and a second connection reading while another writes.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use csync2_watch::journal::{
    Event, EventKind, Journal, JournalError, QueuedPath, Request, FILE_NAME, SCHEMA_VERSION,
};
use csync2_watch::watch::ChangeKind;

fn p(bytes: &[u8]) -> PathBuf {
    PathBuf::from(OsString::from_vec(bytes.to_vec()))
}

/// Paths csync2 users really have: spaces, newlines, tabs, leading dashes,
/// non-UTF-8 bytes, a 255-byte name, backslashes and quotes.
fn awkward_paths() -> Vec<PathBuf> {
    let mut long = b"/srv/".to_vec();
    long.extend([b'x'; 255]);
    vec![
        p(b"/srv/with space"),
        p(b"/srv/new\nline"),
        p(b"/srv/tab\there"),
        p(b"/srv/-leading-dash"),
        p(b"/srv/latin1-\xe9t\xe9"),
        p(b"/srv/\xff\xfe\x80"),
        p(long.as_slice()),
        p(b"/srv/back\\slash \"quoted\" 'single'"),
        p("/srv/ünïcødé ✓".as_bytes()),
        p(b"/srv/trailing space "),
    ]
}

#[test]
fn awkward_paths_round_trip_byte_exact_through_feed_and_queue() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path()).unwrap();
    let paths = awkward_paths();
    let changes: Vec<_> = paths
        .iter()
        .map(|p| (p.clone(), ChangeKind::Entry))
        .collect();
    let txids = j.enqueue(&changes).unwrap();
    assert_eq!(txids.len(), paths.len());
    drop(j);

    // Reopen: what comes back is what went in, byte for byte.
    let j = Journal::open(dir.path()).unwrap();
    let events = j.events_since(0, usize::MAX).unwrap();
    let got: Vec<Vec<u8>> = events
        .iter()
        .map(|e| match &e.what {
            EventKind::Change { path, .. } => path.as_os_str().as_bytes().to_vec(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    let want: Vec<Vec<u8>> = paths
        .iter()
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .collect();
    assert_eq!(got, want);
    assert_eq!(events.iter().map(|e| e.txid).collect::<Vec<_>>(), txids);

    let pending: Vec<Vec<u8>> = j
        .pending()
        .unwrap()
        .iter()
        .map(|q| q.path.as_os_str().as_bytes().to_vec())
        .collect();
    assert_eq!(pending, want);
}

#[test]
fn paths_are_stored_as_blobs_not_text() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path()).unwrap();
    j.enqueue(&[(p(b"/srv/plain-ascii"), ChangeKind::Entry)])
        .unwrap();
    drop(j);
    let conn = rusqlite::Connection::open(dir.path().join(FILE_NAME)).unwrap();
    let feed: String = conn
        .query_row("SELECT typeof(path) FROM feed", [], |r| r.get(0))
        .unwrap();
    let queue: String = conn
        .query_row("SELECT typeof(path) FROM queue", [], |r| r.get(0))
        .unwrap();
    assert_eq!((feed.as_str(), queue.as_str()), ("blob", "blob"));
}

#[test]
fn state_dir_is_created_0700_with_wal_journal() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("a/b/state");
    let j = Journal::open(&state).unwrap();
    let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700);
    assert_eq!(j.path(), state.join(FILE_NAME));
    drop(j);
    let conn = rusqlite::Connection::open(state.join(FILE_NAME)).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn queue_dedups_and_merges_kinds_dir_tree_wins() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path()).unwrap();
    let a = p(b"/srv/a");
    let d = p(b"/srv/d");
    let t1 = j
        .enqueue(&[
            (a.clone(), ChangeKind::Entry),
            (d.clone(), ChangeKind::DirTree),
        ])
        .unwrap();
    // The same paths again, with weaker and stronger kinds.
    let t2 = j
        .enqueue(&[
            (d.clone(), ChangeKind::DirAttrib),
            (a.clone(), ChangeKind::Entry),
            (a.clone(), ChangeKind::DirAttrib),
        ])
        .unwrap();
    assert!(t2.iter().all(|t| *t > t1[1]));
    let pending = j.pending().unwrap();
    // One row per path; the newest event's txid; dir-tree is never
    // weakened, the strongest kind wins; oldest (by newest event) first.
    assert_eq!(
        pending,
        vec![
            QueuedPath {
                path: d.clone(),
                kind: ChangeKind::DirTree,
                txid: t2[0],
            },
            QueuedPath {
                path: a.clone(),
                kind: ChangeKind::DirAttrib,
                txid: t2[2],
            },
        ]
    );
    j.enqueue(&[(a.clone(), ChangeKind::DirTree)]).unwrap();
    let pending = j.pending().unwrap();
    assert_eq!(pending.len(), 2);
    assert_eq!(pending[1].kind, ChangeKind::DirTree);
    assert_eq!(j.pending_count().unwrap(), 2);
    // The feed keeps every event, in order.
    assert_eq!(j.events_since(0, usize::MAX).unwrap().len(), 6);
}

#[test]
fn complete_keeps_a_path_queued_again_after_its_batch_was_taken() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path()).unwrap();
    let a = p(b"/srv/a");
    let b = p(b"/srv/b");
    let c = p(b"/srv/c");
    j.enqueue(&[
        (a.clone(), ChangeKind::Entry),
        (b.clone(), ChangeKind::Entry),
    ])
    .unwrap();
    // The daemon takes the batch {a, b} up to the newest txid it saw...
    let batch = j.pending().unwrap();
    let up_to = batch.iter().map(|q| q.txid).max().unwrap();
    // ...meanwhile a changes again and c appears...
    let again = j
        .enqueue(&[
            (a.clone(), ChangeKind::Entry),
            (c.clone(), ChangeKind::Entry),
        ])
        .unwrap();
    // ...and the batch completes.
    let done: Vec<PathBuf> = batch.into_iter().map(|q| q.path).collect();
    j.complete(&done, up_to).unwrap();
    let left = j.pending().unwrap();
    assert_eq!(
        left,
        vec![
            QueuedPath {
                path: a.clone(),
                kind: ChangeKind::Entry,
                txid: again[0],
            },
            QueuedPath {
                path: c.clone(),
                kind: ChangeKind::Entry,
                txid: again[1],
            },
        ]
    );
    // Completing a path that is not queued is harmless.
    j.complete(&[p(b"/srv/never")], u64::MAX).unwrap();
    assert_eq!(j.pending().unwrap().len(), 2);
}

#[test]
fn complete_all_drops_only_rows_up_to_the_full_check() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path()).unwrap();
    j.enqueue(&[
        (p(b"/srv/a"), ChangeKind::Entry),
        (p(b"/srv/b"), ChangeKind::DirTree),
    ])
    .unwrap();
    let fc = j.record_full_check(None, "overflow").unwrap();
    let later = j.enqueue(&[(p(b"/srv/c"), ChangeKind::Entry)]).unwrap();
    assert!(later[0] > fc);
    j.complete_all(fc).unwrap();
    let left = j.pending().unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].path, p(b"/srv/c"));
}

#[test]
fn complete_trees_drops_the_tree_and_what_is_below_it_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path()).unwrap();
    let names: [&[u8]; 6] = [
        b"/srv/t",
        b"/srv/t/a",
        b"/srv/t/deep/b\n\xff",
        b"/srv/t.tmp",
        b"/srv/t-x/c",
        b"/srv/u",
    ];
    let items: Vec<_> = names.iter().map(|n| (p(n), ChangeKind::Entry)).collect();
    let txids = j.enqueue(&items).unwrap();
    let requeued = j.enqueue(&[(p(b"/srv/t/new"), ChangeKind::Entry)]).unwrap();
    j.complete_trees(&[p(b"/srv/t")], *txids.last().unwrap())
        .unwrap();
    let mut left: Vec<PathBuf> = j.pending().unwrap().into_iter().map(|q| q.path).collect();
    left.sort();
    let mut want = vec![
        p(b"/srv/t-x/c"),
        p(b"/srv/t.tmp"),
        p(b"/srv/t/new"),
        p(b"/srv/u"),
    ];
    want.sort();
    assert_eq!(left, want);
    j.complete_trees(&[p(b"/")], requeued[0]).unwrap();
    assert!(j.pending().unwrap().is_empty());
}

#[test]
fn full_check_records_scope_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path()).unwrap();
    let t1 = j.record_full_check(None, "start").unwrap();
    let scope = p(b"/srv/\xffodd dir");
    let t2 = j
        .record_full_check(Some(&scope), "watch failed: ENOSPC")
        .unwrap();
    assert!(t2 > t1);
    let ev = j.events_since(0, 10).unwrap();
    assert_eq!(ev.len(), 2);
    assert_eq!(
        ev[0].what,
        EventKind::FullCheck {
            scope: None,
            reason: "start".into()
        }
    );
    assert_eq!(
        ev[1].what,
        EventKind::FullCheck {
            scope: Some(scope),
            reason: "watch failed: ENOSPC".into()
        }
    );
    // A full check is not a queued path.
    assert!(j.pending().unwrap().is_empty());
}

#[test]
fn events_since_resumes_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path()).unwrap();
    let changes: Vec<_> = (0..50)
        .map(|i| (p(format!("/srv/f{i}").as_bytes()), ChangeKind::Entry))
        .collect();
    let txids = j.enqueue(&changes).unwrap();
    let mut seen: Vec<Event> = Vec::new();
    let mut since = 0;
    loop {
        let page = j.events_since(since, 7).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 7);
        since = page.last().unwrap().txid;
        seen.extend(page);
    }
    assert_eq!(seen.iter().map(|e| e.txid).collect::<Vec<_>>(), txids);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(seen.iter().all(|e| (now - e.time_ms).abs() < 600_000));
    assert!(j.events_since(txids[49], 10).unwrap().is_empty());
    assert!(j.events_since(u64::MAX, 10).unwrap().is_empty());
}

#[test]
fn txids_strictly_increase_and_are_never_reused_after_prune_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path()).unwrap();
    let mut all = Vec::new();
    for round in 0..5 {
        let changes: Vec<_> = (0..20)
            .map(|i| {
                (
                    p(format!("/srv/r{round}/f{i}").as_bytes()),
                    ChangeKind::Entry,
                )
            })
            .collect();
        all.extend(j.enqueue(&changes).unwrap());
        j.prune(3).unwrap();
        let kept = j.events_since(0, usize::MAX).unwrap();
        assert_eq!(kept.len(), 3);
        assert_eq!(
            kept.iter().map(|e| e.txid).collect::<Vec<_>>(),
            all[all.len() - 3..].to_vec()
        );
        assert_eq!(j.pruned_through().unwrap(), all[all.len() - 4]);
    }
    // Prune everything, reopen: the next txid is still above all old ones.
    j.prune(0).unwrap();
    assert!(j.events_since(0, usize::MAX).unwrap().is_empty());
    let last = *all.last().unwrap();
    assert_eq!(j.last_txid().unwrap(), last);
    drop(j);
    let mut j = Journal::open(dir.path()).unwrap();
    let next = j.enqueue(&[(p(b"/srv/next"), ChangeKind::Entry)]).unwrap()[0];
    all.push(next);
    assert!(all.windows(2).all(|w| w[0] < w[1]), "{all:?}");
    // Pruning the feed leaves the queue alone.
    assert_eq!(j.pending().unwrap().len(), 101);
    // Pruning more than there is does nothing, and the mark stays.
    j.prune(1000).unwrap();
    assert_eq!(j.events_since(0, usize::MAX).unwrap().len(), 1);
    assert_eq!(j.pruned_through().unwrap(), last);
}

#[test]
fn enqueue_of_thousands_of_paths_is_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path()).unwrap();
    let changes: Vec<_> = (0..20_000)
        .map(|i| (p(format!("/srv/many/{i:05}").as_bytes()), ChangeKind::Entry))
        .collect();
    let txids = j.enqueue(&changes).unwrap();
    assert_eq!(txids.len(), 20_000);
    assert!(txids.windows(2).all(|w| w[1] == w[0] + 1));
    assert_eq!(j.pending_count().unwrap(), 20_000);
    // Every change of the call carries the same time stamp: one transaction.
    let ev = j.events_since(0, usize::MAX).unwrap();
    assert!(ev.iter().all(|e| e.time_ms == ev[0].time_ms));
}

#[test]
fn requests_round_trip_in_order_and_are_taken_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path()).unwrap();
    let reqs = vec![
        Request::Paths(awkward_paths()),
        Request::Flush,
        Request::Paths(vec![]),
        Request::Full,
    ];
    for r in &reqs {
        j.push_request(r).unwrap();
    }
    let mut other = Journal::open(dir.path()).unwrap();
    assert_eq!(other.take_requests().unwrap(), reqs);
    assert!(j.take_requests().unwrap().is_empty());
}

#[test]
fn requests_pushed_concurrently_are_each_taken_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    drop(Journal::open(dir.path()).unwrap());
    const PUSHERS: usize = 3;
    const EACH: usize = 40;
    let barrier = Arc::new(Barrier::new(PUSHERS + 1));
    let mut handles = Vec::new();
    for t in 0..PUSHERS {
        let dir = dir.path().to_path_buf();
        let barrier = barrier.clone();
        handles.push(std::thread::spawn(move || {
            let mut j = Journal::open(&dir).unwrap();
            barrier.wait();
            for i in 0..EACH {
                let paths = (0..3)
                    .map(|k| p(format!("/srv/t{t}/r{i}/p{k}").as_bytes()))
                    .collect();
                j.push_request(&Request::Paths(paths)).unwrap();
            }
        }));
    }
    let mut taker = Journal::open(dir.path()).unwrap();
    barrier.wait();
    let mut taken = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while taken.len() < PUSHERS * EACH {
        assert!(Instant::now() < deadline, "only {} taken", taken.len());
        taken.extend(taker.take_requests().unwrap());
    }
    for h in handles {
        h.join().unwrap();
    }
    assert!(taker.take_requests().unwrap().is_empty());
    let mut keys: Vec<(usize, usize)> = Vec::new();
    let mut next = [0usize; PUSHERS];
    for r in taken {
        let Request::Paths(paths) = r else {
            panic!("unexpected {r:?}")
        };
        assert_eq!(paths.len(), 3);
        let s = paths[0].to_str().unwrap().to_string();
        let parts: Vec<&str> = s.split('/').collect();
        let t: usize = parts[2][1..].parse().unwrap();
        let i: usize = parts[3][1..].parse().unwrap();
        for (k, path) in paths.iter().enumerate() {
            assert_eq!(path, &p(format!("/srv/t{t}/r{i}/p{k}").as_bytes()));
        }
        // Each pusher's requests come out in the order it pushed them.
        assert_eq!(i, next[t]);
        next[t] += 1;
        keys.push((t, i));
    }
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), PUSHERS * EACH);
}

#[test]
fn a_second_connection_reads_the_feed_while_a_writer_appends() {
    let dir = tempfile::tempdir().unwrap();
    drop(Journal::open(dir.path()).unwrap());
    const BATCHES: usize = 60;
    const PER: usize = 25;
    let writer_dir = dir.path().to_path_buf();
    let writer = std::thread::spawn(move || {
        let mut j = Journal::open(&writer_dir).unwrap();
        let mut last = 0;
        for b in 0..BATCHES {
            let changes: Vec<_> = (0..PER)
                .map(|i| (p(format!("/srv/b{b}/f{i}").as_bytes()), ChangeKind::Entry))
                .collect();
            last = *j.enqueue(&changes).unwrap().last().unwrap();
            std::thread::yield_now();
        }
        last
    });
    let reader = Journal::open_existing(dir.path()).unwrap();
    let mut since = 0;
    let mut seen = 0usize;
    let mut partial_reads = 0usize;
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen < BATCHES * PER {
        assert!(Instant::now() < deadline, "reader saw only {seen}");
        let page = reader.events_since(since, 1000).unwrap();
        // A reader never sees half a transaction.
        if !page.is_empty() {
            assert_eq!(page.len() % PER, 0, "partial transaction visible");
            if seen + page.len() < BATCHES * PER {
                partial_reads += 1;
            }
        }
        for e in page {
            assert_eq!(e.txid, since + 1, "gap or reorder in the feed");
            since = e.txid;
            seen += 1;
        }
    }
    let last = writer.join().unwrap();
    assert_eq!(since, last);
    // Not a speed claim: just that reading did not need the writer to stop.
    eprintln!("reader caught up in {} reads", partial_reads + 1);
}

#[test]
fn meta_values_persist() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path()).unwrap();
    assert_eq!(j.get_meta("last_full_sync").unwrap(), None);
    j.set_meta("last_full_sync", "1700000000").unwrap();
    j.set_meta("last_full_sync", "1700000001").unwrap();
    drop(j);
    let j = Journal::open(dir.path()).unwrap();
    assert_eq!(
        j.get_meta("last_full_sync").unwrap().as_deref(),
        Some("1700000001")
    );
}

fn user_version(path: &Path) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn schema_version_is_set_and_an_empty_file_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    drop(Journal::open(dir.path()).unwrap());
    let file = dir.path().join(FILE_NAME);
    assert_eq!(user_version(&file), SCHEMA_VERSION);

    // A version-0 file (e.g. created by `sqlite3 journal.db ''`) is
    // brought up to the current schema.
    let dir2 = tempfile::tempdir().unwrap();
    let file2 = dir2.path().join(FILE_NAME);
    rusqlite::Connection::open(&file2)
        .unwrap()
        .execute_batch("PRAGMA user_version = 0;")
        .unwrap();
    assert_eq!(user_version(&file2), 0);
    let mut j = Journal::open_existing(dir2.path()).unwrap();
    assert_eq!(user_version(&file2), SCHEMA_VERSION);
    j.enqueue(&[(p(b"/x"), ChangeKind::Entry)]).unwrap();
}

#[test]
fn a_journal_from_a_newer_version_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path()).unwrap();
    j.enqueue(&[(p(b"/x"), ChangeKind::Entry)]).unwrap();
    drop(j);
    let file = dir.path().join(FILE_NAME);
    rusqlite::Connection::open(&file)
        .unwrap()
        .execute_batch(&format!("PRAGMA user_version = {};", SCHEMA_VERSION + 1))
        .unwrap();
    let err = Journal::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, JournalError::TooNew { found, .. } if found == SCHEMA_VERSION + 1),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&file.display().to_string()), "{msg}");
    assert!(msg.contains("newer"), "{msg}");
    assert_eq!(user_version(&file), SCHEMA_VERSION + 1);
}

#[test]
fn open_existing_says_whether_the_daemon_ever_ran_there() {
    let dir = tempfile::tempdir().unwrap();
    let never = dir.path().join("never");
    let err = Journal::open_existing(&never).unwrap_err();
    assert!(
        matches!(
            err,
            JournalError::NotFound {
                state_dir_exists: false,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&never.join(FILE_NAME).display().to_string()));
    assert!(msg.contains("never run"), "{msg}");
    assert!(!never.exists(), "open_existing must not create anything");

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = Journal::open_existing(&empty).unwrap_err();
    assert!(
        matches!(
            err,
            JournalError::NotFound {
                state_dir_exists: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!empty.join(FILE_NAME).exists());
}

#[test]
fn a_file_that_is_not_a_database_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(FILE_NAME);
    std::fs::write(&file, vec![b'x'; 4096]).unwrap();
    let err = Journal::open(dir.path()).unwrap_err();
    assert!(matches!(err, JournalError::Corrupt { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&file.display().to_string()), "{msg}");
    assert!(msg.contains("move the file away"), "{msg}");
    assert_eq!(std::fs::read(&file).unwrap(), vec![b'x'; 4096]);
}

proptest::proptest! {
    #![proptest_config(crate::support::beside_source(proptest::prelude::ProptestConfig::with_cases(48)))]

    /// Any name a Unix path can hold (every byte but NUL, up to 255 bytes
    /// a component) comes back byte for byte from the feed, the queue and
    /// a request.
    #[test]
    fn any_path_bytes_round_trip(
        names in proptest::collection::vec(
            proptest::collection::vec(1u8..=255, 1..=255),
            1..6,
        )
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        let paths: Vec<PathBuf> = names
            .iter()
            .map(|n| {
                let mut b = b"/srv/".to_vec();
                b.extend(n.iter().map(|c| if *c == b'/' { b'_' } else { *c }));
                p(&b)
            })
            .collect();
        let changes: Vec<_> = paths.iter().map(|x| (x.clone(), ChangeKind::Entry)).collect();
        j.enqueue(&changes).unwrap();
        j.push_request(&Request::Paths(paths.clone())).unwrap();
        let fed: Vec<PathBuf> = j
            .events_since(0, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|e| match e.what {
                EventKind::Change { path, .. } => path,
                other => panic!("{other:?}"),
            })
            .collect();
        proptest::prop_assert_eq!(&fed, &paths);
        let mut queued: Vec<PathBuf> = j.pending().unwrap().into_iter().map(|q| q.path).collect();
        let mut want = paths.clone();
        queued.sort();
        want.sort();
        want.dedup();
        proptest::prop_assert_eq!(queued, want);
        proptest::prop_assert_eq!(j.take_requests().unwrap(), vec![Request::Paths(paths)]);
    }
}
