//! `csync2-watch events` driven as a real process against a journal filled
//! through the library: resuming with --since, following new entries,
//! awkward names byte-exact with -0, the JSON shape, the missing-journal
//! error, and ending on SIGTERM/SIGINT or a closed pipe.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use csync2_watch::journal::{Journal, FILE_NAME};
use csync2_watch::watch::ChangeKind;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::BIN;

const DEADLINE: Duration = Duration::from_secs(60);

fn p(bytes: &[u8]) -> PathBuf {
    PathBuf::from(OsString::from_vec(bytes.to_vec()))
}

fn awkward_paths() -> Vec<PathBuf> {
    let mut long = b"/srv/".to_vec();
    long.extend([b'n'; 255]);
    vec![
        p(b"/srv/plain"),
        p(b"/srv/with space"),
        p(b"/srv/new\nline"),
        p(b"/srv/tab\there\tand\tthere"),
        p(b"/srv/-n"),
        p(b"/srv/\xff\xfe latin1 \xe9"),
        p(long.as_slice()),
        p("/srv/ünïcødé".as_bytes()),
        p(b"/srv/cr\rlf"),
    ]
}

fn events(state: &Path, extra: &[&str]) -> Output {
    Command::new(BIN)
        .arg("events")
        .arg("--state-dir")
        .arg(state)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A child process ended by PID when the test ends, however it ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn pid(&self) -> Pid {
        Pid::from_raw(self.0.id() as i32)
    }

    /// Wait for the exit, up to DEADLINE.
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(st) = self.0.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < end, "csync2-watch events did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn follow(state: &Path, extra: &[&str]) -> (Proc, ChildStdout) {
    let mut child = Command::new(BIN)
        .arg("events")
        .arg("--state-dir")
        .arg(state)
        .arg("--follow")
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    (Proc(child), out)
}

/// Reads records (split at `term`) from a child's stdout into a channel.
fn records(mut out: ChildStdout, term: u8) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match out.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(i) = buf.iter().position(|b| *b == term) {
                        let rec: Vec<u8> = buf.drain(..=i).collect();
                        if tx.send(rec[..rec.len() - 1].to_vec()).is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    rx
}

fn recv_n(rx: &mpsc::Receiver<Vec<u8>>, n: usize) -> Vec<Vec<u8>> {
    let end = Instant::now() + DEADLINE;
    let mut got = Vec::new();
    while got.len() < n {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(r) => got.push(r),
            Err(_) => panic!("got {} of {n} records: {got:?}", got.len()),
        }
    }
    got
}

/// Split a text record into (txid, time, kind, rest-after-third-tab).
fn fields(rec: &[u8]) -> (u64, String, String, Vec<u8>) {
    let mut parts = rec.splitn(4, |b| *b == b'\t');
    let txid = std::str::from_utf8(parts.next().unwrap())
        .unwrap()
        .parse()
        .unwrap();
    let time = String::from_utf8(parts.next().unwrap().to_vec()).unwrap();
    let kind = String::from_utf8(parts.next().unwrap().to_vec()).unwrap();
    let rest = parts.next().unwrap().to_vec();
    (txid, time, kind, rest)
}

fn assert_time_is_rfc3339_ms_utc(t: &str) {
    // 2024-05-01T12:00:00.123Z
    assert_eq!(t.len(), 24, "{t}");
    assert!(
        t.ends_with('Z') && t.as_bytes()[10] == b'T' && t.as_bytes()[19] == b'.',
        "{t}"
    );
    let parsed = humantime::parse_rfc3339(t).unwrap();
    let age = std::time::SystemTime::now()
        .duration_since(parsed)
        .unwrap_or_default();
    assert!(age < Duration::from_secs(3600), "{t} is not about now");
}

#[test]
fn text_output_resumes_after_since() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path()).unwrap();
    let t1 = j
        .enqueue(&[
            (p(b"/srv/a"), ChangeKind::Entry),
            (p(b"/srv/d"), ChangeKind::DirAttrib),
            (p(b"/srv/t"), ChangeKind::DirTree),
        ])
        .unwrap();
    let fc = j
        .record_full_check(Some(Path::new("/srv")), "inotify queue overflow")
        .unwrap();
    let fc_all = j.record_full_check(None, "start").unwrap();

    let out = events(dir.path(), &[]);
    assert!(out.status.success(), "{out:?}");
    let recs: Vec<&[u8]> = out.stdout.split(|b| *b == b'\n').collect();
    assert_eq!(recs.len(), 6, "{:?}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(recs[5], b"");
    let want = [
        (t1[0], "entry", &b"/srv/a"[..]),
        (t1[1], "dir-attrib", b"/srv/d"),
        (t1[2], "dir-tree", b"/srv/t"),
        (fc, "full-check", b"/srv\tinotify queue overflow"),
        (fc_all, "full-check", b"/\tstart"),
    ];
    for (rec, (txid, kind, rest)) in recs.iter().zip(want) {
        let (t, time, k, r) = fields(rec);
        assert_eq!((t, k.as_str(), r.as_slice()), (txid, kind, rest));
        assert_time_is_rfc3339_ms_utc(&time);
    }

    // Resume after the second entry: exactly the later ones.
    let out = events(dir.path(), &["--since", &t1[1].to_string()]);
    assert!(out.status.success());
    let txids: Vec<u64> = out
        .stdout
        .split(|b| *b == b'\n')
        .filter(|r| !r.is_empty())
        .map(|r| fields(r).0)
        .collect();
    assert_eq!(txids, vec![t1[2], fc, fc_all]);

    // Nothing after the last: no output, success.
    let out = events(dir.path(), &["--since", &fc_all.to_string()]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
}

#[test]
fn nul_terminated_records_carry_awkward_names_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path()).unwrap();
    let paths = awkward_paths();
    let changes: Vec<_> = paths
        .iter()
        .map(|p| (p.clone(), ChangeKind::Entry))
        .collect();
    let txids = j.enqueue(&changes).unwrap();
    let scope = p(b"/srv/odd\tscope\n\xff");
    let fc = j.record_full_check(Some(&scope), "watch failed").unwrap();

    let out = events(dir.path(), &["-0"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout.last(), Some(&0u8));
    let recs: Vec<&[u8]> = out.stdout[..out.stdout.len() - 1]
        .split(|b| *b == 0)
        .collect();
    assert_eq!(recs.len(), paths.len() + 1);
    for ((rec, path), txid) in recs.iter().zip(&paths).zip(&txids) {
        let (t, _, kind, rest) = fields(rec);
        assert_eq!(t, *txid);
        assert_eq!(kind, "entry");
        assert_eq!(rest, path.as_os_str().as_bytes(), "{path:?}");
    }
    // Full check: the scope is everything up to the last TAB.
    let (t, _, kind, rest) = fields(recs[paths.len()]);
    assert_eq!((t, kind.as_str()), (fc, "full-check"));
    let last_tab = rest.iter().rposition(|b| *b == b'\t').unwrap();
    assert_eq!(&rest[..last_tab], scope.as_os_str().as_bytes());
    assert_eq!(&rest[last_tab + 1..], b"watch failed");
}

#[test]
fn json_lines_have_the_documented_shape() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path()).unwrap();
    let paths = awkward_paths();
    let changes: Vec<_> = paths
        .iter()
        .map(|p| (p.clone(), ChangeKind::DirTree))
        .collect();
    let txids = j.enqueue(&changes).unwrap();
    let fc = j.record_full_check(None, "overflow").unwrap();
    let fc2 = j
        .record_full_check(Some(&p(b"/srv/\xff")), "watch failed")
        .unwrap();

    let out = events(dir.path(), &["--json"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let objs: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objs.len(), paths.len() + 2);
    let b64 = base64::engine::general_purpose::STANDARD;
    for ((o, path), txid) in objs.iter().zip(&paths).zip(&txids) {
        assert_eq!(o["txid"], *txid);
        assert_eq!(o["kind"], "dir-tree");
        assert_time_is_rfc3339_ms_utc(o["time"].as_str().unwrap());
        assert!(o["time_ms"].as_i64().unwrap() > 1_600_000_000_000);
        let bytes = path.as_os_str().as_bytes();
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                assert_eq!(o["path"], s);
                assert!(o.get("path_b64").is_none());
            }
            Err(_) => {
                assert!(o.get("path").is_none());
                let decoded = b64.decode(o["path_b64"].as_str().unwrap()).unwrap();
                assert_eq!(decoded, bytes);
            }
        }
    }
    let o = &objs[paths.len()];
    assert_eq!(o["txid"], fc);
    assert_eq!(o["kind"], "full-check");
    assert!(o["scope"].is_null());
    assert_eq!(o["reason"], "overflow");
    let o = &objs[paths.len() + 1];
    assert_eq!(o["txid"], fc2);
    assert_eq!(
        b64.decode(o["scope_b64"].as_str().unwrap()).unwrap(),
        b"/srv/\xff"
    );
    assert_eq!(o["reason"], "watch failed");
}

#[test]
fn follow_prints_new_entries_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path()).unwrap();
    let first = j
        .enqueue(&[(p(b"/srv/before"), ChangeKind::Entry)])
        .unwrap();
    let (mut child, out) = follow(dir.path(), &["-0"]);
    let rx = records(out, 0);
    let got = recv_n(&rx, 1);
    assert_eq!(fields(&got[0]).0, first[0]);

    // Entries written while it follows arrive, in order, byte-exact.
    let paths = awkward_paths();
    let mut want = Vec::new();
    for path in &paths {
        let t = j.enqueue(&[(path.clone(), ChangeKind::Entry)]).unwrap()[0];
        want.push((t, path.as_os_str().as_bytes().to_vec()));
    }
    let got: Vec<(u64, Vec<u8>)> = recv_n(&rx, paths.len())
        .iter()
        .map(|r| {
            let (t, _, _, rest) = fields(r);
            (t, rest)
        })
        .collect();
    assert_eq!(got, want);

    kill(child.pid(), Signal::SIGTERM).unwrap();
    let st = child.wait_exit();
    assert!(st.success(), "{st:?}");
}

#[test]
fn follow_resumes_from_since_and_stops_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path()).unwrap();
    let t = j
        .enqueue(&[
            (p(b"/srv/1"), ChangeKind::Entry),
            (p(b"/srv/2"), ChangeKind::Entry),
        ])
        .unwrap();
    let (mut child, out) = follow(dir.path(), &["--since", &t[0].to_string(), "--json"]);
    let rx = records(out, b'\n');
    let got = recv_n(&rx, 1);
    let o: serde_json::Value = serde_json::from_slice(&got[0]).unwrap();
    assert_eq!(o["txid"], t[1]);
    let t3 = j.record_full_check(None, "periodic").unwrap();
    let got = recv_n(&rx, 1);
    let o: serde_json::Value = serde_json::from_slice(&got[0]).unwrap();
    assert_eq!(
        (o["txid"].as_u64(), o["kind"].as_str()),
        (Some(t3), Some("full-check"))
    );

    kill(child.pid(), Signal::SIGINT).unwrap();
    let st = child.wait_exit();
    assert!(st.success(), "{st:?}");
}

#[test]
fn follow_ends_quietly_when_the_reader_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path()).unwrap();
    j.enqueue(&[(p(b"/srv/x"), ChangeKind::Entry)]).unwrap();
    let mut child = Command::new(BIN)
        .arg("events")
        .arg("--state-dir")
        .arg(dir.path())
        .arg("--follow")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut child = Proc(child);
    // Read the first record, then close the pipe like `| head -1` does.
    let mut byte = [0u8; 1];
    loop {
        out.read_exact(&mut byte).unwrap();
        if byte[0] == b'\n' {
            break;
        }
    }
    drop(out);
    // It must end by itself, whether or not anything new is written.
    j.enqueue(&[(p(b"/srv/y"), ChangeKind::Entry)]).unwrap();
    let st = child.wait_exit();
    assert!(st.success(), "{st:?}");
    let mut err = String::new();
    stderr.read_to_string(&mut err).unwrap();
    assert!(err.is_empty(), "{err}");
}

#[test]
fn a_missing_journal_is_an_error_naming_the_path_and_whether_the_daemon_ran() {
    let dir = tempfile::tempdir().unwrap();
    let never = dir.path().join("never");
    let out = events(&never, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(&never.join(FILE_NAME).display().to_string()),
        "{err}"
    );
    assert!(err.contains("never run"), "{err}");
    assert!(!never.exists(), "events must not create the state dir");

    let out = events(dir.path(), &["--follow"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("has not written a journal"), "{err}");
    assert!(!dir.path().join(FILE_NAME).exists());
}

#[test]
fn default_state_dir_comes_from_node_and_config_name() {
    // A node that surely never ran here: the error names the default path
    // csync2-watch derived (node lowercased, `_` and the -C name).
    let node = format!("Events-Test-{}", std::process::id());
    let out = Command::new(BIN)
        .args(["events", "-N", &node, "-C", "web"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    let want = format!(
        "/var/lib/csync2-watch/{}_web/{FILE_NAME}",
        node.to_lowercase()
    );
    assert!(err.contains(&want), "{err}");
}

#[test]
fn reading_from_before_a_prune_warns_that_events_are_missing() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path()).unwrap();
    let changes: Vec<_> = (0..10)
        .map(|i| (p(format!("/srv/{i}").as_bytes()), ChangeKind::Entry))
        .collect();
    let t = j.enqueue(&changes).unwrap();
    j.prune(4).unwrap();
    let out = events(dir.path(), &["--since", "2"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pruned"), "{err}");
    let lines = out
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    assert_eq!(lines, 4);
    // A client that is up to date gets no warning.
    let out = events(dir.path(), &["--since", &t[5].to_string()]);
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
