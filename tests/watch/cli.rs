//! `csync2-watch watch` end to end: a real csync2.cfg, real inotify, the
//! real binary; records are byte-exact and respect csync2's decisions.

use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::{CfgDir, BIN};

/// A configuration directory (key `etc/csync2.key`) whose group includes
/// its `data` directory, with `patterns` added to the group.
fn sandbox(patterns: &str) -> CfgDir {
    let sb = CfgDir::new(".tmp", "csync2.key");
    sb.mkdir("data");
    sb.write(&format!(
        "nossl * *;\ngroup g {{\n host n1 n2;\n key @ETC@/csync2.key;\n include @D@/data;\n {patterns}\n}}\n"
    ));
    sb
}

struct Watching {
    child: Child,
    records: mpsc::Receiver<Vec<u8>>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `watch -0` and wait until its watches are in place (it logs that).
fn watch(sb: &CfgDir) -> Watching {
    let mut child = Command::new(BIN)
        .args(["watch", "-N", "n1", "-0"])
        .env("CSYNC2_SYSTEM_DIR", sb.etc())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut chunk) {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            while let Some(pos) = buf.iter().position(|&b| b == 0) {
                let rec: Vec<u8> = buf.drain(..=pos).take(pos).collect();
                if tx.send(rec).is_err() {
                    return;
                }
            }
        }
    });
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut log = Vec::new();
        let mut chunk = [0u8; 1024];
        let mut told = false;
        while let Ok(n) = stderr.read(&mut chunk) {
            if n == 0 {
                break;
            }
            log.extend_from_slice(&chunk[..n]);
            if !told && String::from_utf8_lossy(&log).contains("watching") {
                told = true;
                let _ = ready_tx.send(());
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("watch reports its watches in place");
    Watching { child, records: rx }
}

impl Watching {
    /// Collect records until `want` have all been seen (or time runs out).
    fn expect(&self, want: &[PathBuf]) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen: Vec<Vec<u8>> = Vec::new();
        while Instant::now() < deadline {
            if want
                .iter()
                .all(|w| seen.iter().any(|s| s == w.as_os_str().as_bytes()))
            {
                break;
            }
            if let Ok(r) = self.records.recv_timeout(Duration::from_millis(100)) {
                seen.push(r);
            }
        }
        // Whatever else arrives shortly after.
        while let Ok(r) = self.records.recv_timeout(Duration::from_millis(300)) {
            seen.push(r);
        }
        for w in want {
            assert!(
                seen.iter().any(|s| s == w.as_os_str().as_bytes()),
                "{} not reported; got {:?}",
                w.display(),
                seen.iter()
                    .map(|s| s.escape_ascii().to_string())
                    .collect::<Vec<_>>()
            );
        }
        seen
    }
}

fn p(dir: &Path, name: &[u8]) -> PathBuf {
    dir.join(std::ffi::OsStr::from_bytes(name))
}

#[test]
fn watch_prints_changed_paths_byte_exact_and_respects_excludes() {
    let sb = sandbox("exclude *.tmp;");
    let data = sb.path("data");
    let w = watch(&sb);
    let names: [&[u8]; 5] = [b"plain", b"new\nline", b"-dash", b"\xff\xfe", b"sp ace"];
    let mut want = Vec::new();
    for n in names {
        let path = p(&data, n);
        std::fs::write(&path, b"x").unwrap();
        want.push(path);
    }
    std::fs::write(data.join("skip.tmp"), b"x").unwrap();
    std::fs::create_dir(data.join("dir.tmp")).unwrap();
    std::fs::write(data.join("dir.tmp/inside"), b"x").unwrap();
    let seen = w.expect(&want);
    let base = data.as_os_str().as_bytes();
    for s in &seen {
        let rel = s.strip_prefix(base).unwrap_or(s);
        assert!(
            !rel.windows(4).any(|x| x == b".tmp"),
            "excluded path reported: {}",
            s.escape_ascii()
        );
    }
}

#[test]
fn watch_reports_a_new_tree_and_its_deletion() {
    let sb = sandbox("");
    let data = sb.path("data");
    let w = watch(&sb);
    let deep = data.join("a/b/c");
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("f"), b"x").unwrap();
    w.expect(&[data.join("a"), deep.join("f")]);
    std::fs::remove_dir_all(data.join("a")).unwrap();
    w.expect(&[data.join("a")]);
}

#[test]
fn watch_with_a_broken_config_exits_3() {
    let sb = sandbox("incldue /nowhere;");
    let out = Command::new(BIN)
        .args(["watch", "-N", "n1"])
        .env("CSYNC2_SYSTEM_DIR", sb.etc())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("csync2.cfg:6:2: unknown keyword `incldue`"),
        "{err}"
    );
}
