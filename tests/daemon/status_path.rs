//! `csync2-watch status PATH...` on a real cluster: a synced path, a
//! pending change, an excluded path, a path outside every tree, a peer
//! that is down, a name with a newline, and the answer when the daemon
//! is not running. Each runs the command inside a node (its mount
//! namespace, its `CSYNC2_SYSTEM_DIR`), as an operator would there.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use csync2_watch_testbed::wait_until;

use crate::support::cluster::{Cluster, BIN, TEST_SETTINGS};

const SETTLE: Duration = Duration::from_secs(60);

/// What one `status PATH...` run printed.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The block whose first line is `first` (panics with the output
    /// when there is none).
    fn block(&self, first: &str) -> Vec<&str> {
        self.stdout
            .split("\n\n")
            .map(|b| b.lines().collect::<Vec<_>>())
            .find(|lines| lines.first() == Some(&first))
            .unwrap_or_else(|| panic!("no block for {first:?} in:\n{}", self.stdout))
    }

    fn json(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}\n{}", self.stdout))
            })
            .collect()
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// `csync2-watch status ARGS... PATHS...` inside node `i`, with the
/// daemon's own -N, --config and --state-dir.
fn status(c: &Cluster, i: usize, args: &[&str], paths: &[&Path]) -> Run {
    let node = c.node(i);
    let out = node
        .command(BIN)
        .arg("status")
        .arg("-N")
        .arg(node.name())
        .arg("--config")
        .arg(c.settings_file(i))
        .arg("--state-dir")
        .arg(node.state_dir())
        .args(args)
        .args(paths)
        .output()
        .expect("running csync2-watch status");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).expect("status prints UTF-8"),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `FILE:LINE:KEYWORD PATTERN` of the line of node `i`'s csync2.cfg that
/// holds `statement` (`include /srv/...`), as `match -v` prints it.
fn origin(c: &Cluster, i: usize, statement: &str) -> String {
    let cfg = c.node(i).etc_dir().join("csync2.cfg");
    let text = fs::read_to_string(&cfg).unwrap();
    let line = text
        .lines()
        .position(|l| l.trim() == format!("{statement};"))
        .unwrap_or_else(|| panic!("no `{statement};` in {}:\n{text}", cfg.display()))
        + 1;
    format!("{}:{line}:{statement}", cfg.display())
}

/// A path inside the nodes (the common data path) with `name` below it.
fn inside(c: &Cluster, name: &[u8]) -> PathBuf {
    c.node(0).path(OsStr::from_bytes(name))
}

/// The first line of a path's block: as is, or escaped when it holds a
/// control character.
fn first_line(p: &Path) -> String {
    p.as_os_str().as_bytes().escape_ascii().to_string()
}

#[test]
fn status_path_says_synced_pending_excluded_outside_and_escapes_a_newline() {
    // Changes wait 45 s for their batch unless flushed, so a change sits
    // in the queue while the test looks.
    let settings = format!("{TEST_SETTINGS}\nbatch_delay = \"45s\"\nbatch_delay_max = \"45s\"\n");
    let mut c = Cluster::start_with(2, "exclude *.skip;", &settings);
    let include = origin(
        &c,
        0,
        &format!("include {}", c.node(0).data_path().display()),
    );
    let exclude = origin(&c, 0, "exclude *.skip");

    // Pending: written, journaled, not yet checked.
    let file = inside(&c, b"pending.txt");
    fs::write(c.path(0, "pending.txt"), b"one").unwrap();
    let mut run = status(&c, 0, &[], &[&file]);
    let queued = wait_until(Duration::from_secs(20), || {
        run = status(&c, 0, &[], &[&file]);
        run.stdout.contains("  pending: yes")
    });
    assert!(queued, "the change never showed as pending\n{run}");
    assert_eq!(run.code, Some(0), "{run}");
    let block = run.block(&first_line(&file));
    assert_eq!(
        block[1],
        format!("  synced: yes, group testbed, {include}"),
        "{run}"
    );
    assert!(
        block[2].starts_with("  last change here: 20") && block[2].contains(" ago)"),
        "{run}"
    );
    assert_eq!(
        block[3], "  pending: yes, queued for a csync2 check",
        "{run}"
    );
    assert!(
        block[4].starts_with("  node2 "),
        "one line for the peer\n{run}"
    );
    let json = status(&c, 0, &["--json"], &[&file]).json();
    assert_eq!(json[0]["pending"], true, "{json:?}");
    assert_eq!(json[0]["daemon_running"], true, "{json:?}");

    // A name with a newline, and a name excluded by a pattern.
    let newline = inside(&c, b"new\nline");
    fs::write(c.path(0, OsStr::from_bytes(b"new\nline")), b"two").unwrap();
    fs::write(c.path(0, "scratch.skip"), b"local only").unwrap();
    // Flush: check and update now, instead of in 45 s.
    let out = c
        .node(0)
        .command(BIN)
        .args(["sync", "-N", "node1", "--state-dir"])
        .arg(c.node(0).state_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "sync: {out:?}");
    for (name, content) in [(&b"pending.txt"[..], &b"one"[..]), (b"new\nline", b"two")] {
        let there = c.path(1, OsStr::from_bytes(name));
        assert!(
            wait_until(SETTLE, || fs::read(&there).ok().as_deref() == Some(content)),
            "{} never reached node2\n{}",
            there.display(),
            c.logs_tail()
        );
    }
    assert!(!c.path(1, "scratch.skip").exists(), "excluded, yet synced");

    // Synced and in sync; excluded; outside every tree.
    let skip = inside(&c, b"scratch.skip");
    let outside = Path::new("/etc/hostname");
    let mut run = status(&c, 0, &[], &[&file, &newline, &skip, outside]);
    // The daemon drops the queue entry once csync2 has checked the file.
    let done = wait_until(SETTLE, || {
        run = status(&c, 0, &[], &[&file, &newline, &skip, outside]);
        run.stdout.matches("  pending: no\n").count() == 4
    });
    assert!(done, "still pending after the flush\n{run}");
    eprintln!("{run}");
    assert_eq!(run.code, Some(0), "{run}");
    for p in [&file, &newline] {
        let block = run.block(&first_line(p));
        assert_eq!(
            block[1],
            format!("  synced: yes, group testbed, {include}"),
            "{run}"
        );
        assert!(block[2].starts_with("  last change here: 20"), "{run}");
        assert_eq!(block[3], "  pending: no", "{run}");
        assert_eq!(block[4], "  node2 in-sync", "{run}");
        assert_eq!(block.len(), 5, "{run}");
    }
    // The newline is escaped: the block's first line is one line.
    assert!(
        run.stdout
            .lines()
            .any(|l| l == format!("{}/new\\nline", c.node(0).data_path().display())),
        "{run}"
    );
    let block = run.block(&first_line(&skip));
    assert_eq!(block[1], format!("  synced: no, {exclude}"), "{run}");
    assert_eq!(block[4], "  peers: none (csync2 does not sync it)", "{run}");
    let block = run.block("/etc/hostname");
    assert_eq!(
        block[1], "  synced: no, outside every csync2 tree (no include pattern matches)",
        "{run}"
    );
    assert_eq!(block[4], "  peers: none (csync2 does not sync it)", "{run}");

    // The same as JSON, one object a line; a name that is not UTF-8 comes
    // as path_b64.
    let not_utf8 = inside(&c, b"caf\xe9");
    let run = status(
        &c,
        0,
        &["--json"],
        &[&file, &newline, &skip, outside, &not_utf8],
    );
    assert_eq!(run.code, Some(0), "{run}");
    eprintln!("{run}");
    let json = run.json();
    assert_eq!(json.len(), 5, "{run}");
    let mut with_newline = c.node(0).data_path().as_os_str().to_owned();
    with_newline.push("/new\nline");
    assert_eq!(json[1]["path"], with_newline.to_str().unwrap(), "{run}");
    for j in &json[..2] {
        assert_eq!(j["synced"], true, "{run}");
        assert_eq!(j["group"], "testbed", "{run}");
        assert_eq!(
            j["line"],
            include.split(':').nth(1).unwrap().parse::<u64>().unwrap()
        );
        assert_eq!(j["pending"], false, "{run}");
        assert!(j["last_changed"].as_u64().is_some(), "{run}");
        assert_eq!(
            j["peers"],
            serde_json::json!([{"name": "node2", "state": "in-sync", "last_error": null}]),
            "{run}"
        );
    }
    assert_eq!(json[2]["synced"], false, "{run}");
    assert_eq!(json[2]["pattern"], "*.skip", "{run}");
    assert_eq!(json[2]["reason"], exclude, "{run}");
    assert_eq!(json[3]["outside"], true, "{run}");
    assert_eq!(json[3]["peers"], serde_json::json!([]), "{run}");
    assert!(json[4].get("path").is_none(), "{run}");
    let b64 = json[4]["path_b64"].as_str().expect("path_b64");
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert_eq!(bytes, not_utf8.as_os_str().as_bytes());
    assert_eq!(json[4]["synced"], true, "{run}");

    // The daemon gone: the config's answer and csync2 -M's still come,
    // with exit status 1.
    c.kill_daemon(0);
    let run = status(&c, 0, &[], &[&file]);
    assert_eq!(run.code, Some(1), "{run}");
    let block = run.block(&first_line(&file));
    assert_eq!(
        block[1],
        format!("  synced: yes, group testbed, {include}"),
        "{run}"
    );
    assert!(block.contains(&"  node2 in-sync"), "{run}");
    assert!(run.stderr.contains("the daemon is not running"), "{run}");
    let run = status(&c, 0, &["--json"], &[&file]);
    assert_eq!(run.code, Some(1), "{run}");
    assert_eq!(run.json()[0]["daemon_running"], false, "{run}");
}

#[test]
fn status_path_says_which_peer_is_down() {
    let c = Cluster::start("");
    c.node(2).link_down().unwrap();
    let file = inside(&c, b"while-node3-is-away");
    fs::write(c.path(0, "while-node3-is-away"), b"x").unwrap();
    // -D as the daemon was given it (the node also has it at csync2's
    // default place).
    let db = c.node(0).db_dir().as_os_str().to_owned();
    let args: Vec<&str> = vec!["-D", db.to_str().unwrap()];
    let mut run = status(&c, 0, &args, &[&file]);
    let seen = wait_until(SETTLE, || {
        run = status(&c, 0, &args, &[&file]);
        run.stdout.contains("  node2 in-sync\n") && run.stdout.contains("  node3 down")
    });
    let node3_link_up = |c: &Cluster| c.node(2).link_up().unwrap();
    if !seen {
        node3_link_up(&c);
        panic!("node3 never showed as down\n{run}\n{}", c.logs_tail());
    }
    assert_eq!(run.code, Some(0), "{run}");
    eprintln!("{run}");
    let block = run.block(&first_line(&file));
    let node3 = block
        .iter()
        .find(|l| l.starts_with("  node3 "))
        .unwrap_or_else(|| panic!("{run}"));
    let error = node3
        .strip_prefix("  node3 down: ")
        .unwrap_or_else(|| panic!("no last error for node3\n{run}"));
    assert!(!error.trim().is_empty(), "{run}");
    // csync2 itself still holds the file dirty towards node3.
    let dirty = c.node(0).dirty().unwrap();
    assert!(
        dirty.iter().any(
            |l| l.ends_with(file.as_os_str().as_bytes()) && l.windows(5).any(|w| w == b"node3")
        ),
        "{dirty:?}"
    );
    let run = status(&c, 0, &["--json", "-D", db.to_str().unwrap()], &[&file]);
    let json = run.json();
    let peers = json[0]["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 2, "{run}");
    assert_eq!(peers[0]["name"], "node2", "{run}");
    assert_eq!(peers[0]["state"], "in-sync", "{run}");
    assert_eq!(peers[1]["name"], "node3", "{run}");
    assert_eq!(peers[1]["state"], "down", "{run}");
    assert!(
        peers[1]["last_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{run}"
    );

    node3_link_up(&c);
    c.wait_converged(SETTLE);
    let mut run = status(&c, 0, &[], &[&file]);
    let back = wait_until(SETTLE, || {
        run = status(&c, 0, &[], &[&file]);
        run.stdout.contains("  node3 in-sync\n")
    });
    assert!(back, "node3 is back and caught up, but not in-sync\n{run}");
}
