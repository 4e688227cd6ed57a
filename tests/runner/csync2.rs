//! The runner against the real csync2 binary, in throwaway sandboxes.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use csync2_watch::runner::RunError;

use crate::support::sandbox::{self, limits, Sandbox};

const LONG: Duration = Duration::from_secs(60);

/// Awkward but legal names: space, newline, tab, leading dash, non-UTF-8,
/// 255 bytes.
fn awkward_names() -> Vec<OsString> {
    vec![
        OsString::from("plain"),
        OsString::from("with space"),
        OsString::from("new\nline"),
        OsString::from("tab\there"),
        OsString::from("-leading-dash"),
        OsString::from_vec(b"bytes\xff\xfe\x01".to_vec()),
        OsString::from("n".repeat(255)),
        OsString::from("Marking file as dirty: x"),
    ]
}

fn set(v: &[PathBuf]) -> BTreeSet<Vec<u8>> {
    v.iter()
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .collect()
}

#[test]
fn check_marks_new_files_and_names_them_byte_exact() {
    let sb = Sandbox::new("");
    let cs = sb.csync2();
    let paths: Vec<PathBuf> = awkward_names()
        .into_iter()
        .map(|n| sb.data.join(n))
        .collect();
    for p in &paths {
        std::fs::write(p, b"x").unwrap();
    }
    let out = cs.check(&paths, false, limits(LONG)).expect("check");
    assert_eq!(set(&out.marked), set(&paths), "marked: {:?}", out.marked);
    assert!(out.errors.is_empty(), "errors: {:?}", out.errors);
    assert_eq!(out.processes, 1);

    let dirty = cs.list_dirty(limits(LONG)).expect("-M");
    let dirty_paths: Vec<PathBuf> = dirty.iter().map(|d| d.path.clone()).collect();
    assert_eq!(set(&dirty_paths), set(&paths), "-M: {dirty:?}");
    assert!(dirty
        .iter()
        .all(|d| d.peer == sb.peer.to_string() && d.myname == sb.me.to_string() && !d.forced));

    // Nothing changed: nothing marked the second time.
    let again = cs.check(&paths, false, limits(LONG)).expect("check again");
    assert!(again.marked.is_empty(), "{:?}", again.marked);
}

#[test]
fn recursive_check_marks_a_new_tree_and_deletions() {
    let sb = Sandbox::new("");
    let cs = sb.csync2();
    let dir = sb.data.join("tree");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub/f"), b"1").unwrap();
    std::fs::write(dir.join("g"), b"2").unwrap();
    let out = cs
        .check(std::slice::from_ref(&dir), true, limits(LONG))
        .unwrap();
    let want: Vec<PathBuf> = vec![
        dir.clone(),
        dir.join("sub"),
        dir.join("sub/f"),
        dir.join("g"),
    ];
    assert_eq!(set(&out.marked), set(&want));

    // A non-recursive check of the directory does not see below it.
    std::fs::write(dir.join("h"), b"3").unwrap();
    let flat = cs
        .check(std::slice::from_ref(&dir), false, limits(LONG))
        .unwrap();
    assert!(flat.marked.is_empty(), "{:?}", flat.marked);

    // A vanished tree: every known entry is marked (for deletion).
    std::fs::remove_dir_all(&dir).unwrap();
    let gone = cs
        .check(std::slice::from_ref(&dir), true, limits(LONG))
        .unwrap();
    assert_eq!(set(&gone.marked), set(&want));
}

#[test]
fn many_long_paths_are_split_into_several_runs_with_one_outcome() {
    let sb = Sandbox::new("");
    let cs = sb.csync2();
    // A deep directory whose paths are about 3 KB long.
    let mut deep = sb.data.clone();
    for i in 0..12 {
        deep.push(format!("{i:02}{}", "d".repeat(240)));
    }
    std::fs::create_dir_all(&deep).unwrap();
    let first = deep.join("first");
    let last = deep.join("last");
    std::fs::write(&first, b"1").unwrap();
    std::fs::write(&last, b"2").unwrap();
    // SAFETY: sysconf has no preconditions.
    let arg_max = unsafe { libc::sysconf(libc::_SC_ARG_MAX) }.max(128 * 1024) as usize;
    let per_path = deep.as_os_str().len() + 10;
    let n = arg_max / per_path + 10; // over ARG_MAX/2 twice
    let mut paths = vec![first.clone()];
    paths.extend((0..n).map(|i| deep.join(format!("missing{i:06}"))));
    paths.push(last.clone());
    let out = cs.check(&paths, false, limits(LONG)).expect("check");
    assert!(out.processes >= 2, "processes: {}", out.processes);
    assert_eq!(set(&out.marked), set(&[first, last]));
    assert!(out.errors.is_empty(), "{:?}", out.errors);
}

#[test]
fn mark_marks_without_comparing() {
    let sb = Sandbox::new("");
    let cs = sb.csync2();
    let f = sb.data.join("m\nark");
    std::fs::write(&f, b"x").unwrap();
    let out = cs.mark(std::slice::from_ref(&f), limits(LONG)).unwrap();
    assert_eq!(set(&out.marked), set(std::slice::from_ref(&f)));
    let dirty = cs.list_dirty(limits(LONG)).unwrap();
    assert_eq!(dirty.len(), 1, "{dirty:?}");
    assert_eq!(dirty[0].path, f);
    // Marking is unconditional: a second mark marks again.
    let again = cs.mark(std::slice::from_ref(&f), limits(LONG)).unwrap();
    assert_eq!(again.marked, vec![f]);
}

#[test]
fn list_dirty_exit_2_is_an_empty_list() {
    let sb = Sandbox::new("");
    let dirty = sb
        .csync2()
        .list_dirty(limits(LONG))
        .expect("-M on an empty db");
    assert!(dirty.is_empty());
}

#[test]
fn empty_path_lists_start_nothing() {
    let sb = Sandbox::new("");
    let cs = sb.csync2();
    // A hint that `csync2 -c` without paths would process.
    let f = sb.data.join("hinted");
    std::fs::write(&f, b"x").unwrap();
    let st = std::process::Command::new(&cs.program)
        .env("CSYNC2_SYSTEM_DIR", &sb.etc)
        .args(["-N", &sb.me.to_string(), "-D"])
        .arg(&sb.db)
        .arg("-h")
        .arg(&f)
        .status()
        .unwrap();
    assert!(st.success());
    let out = cs.check(&[], false, limits(LONG)).unwrap();
    assert_eq!(out.processes, 0);
    assert!(cs.list_dirty(limits(LONG)).unwrap().is_empty());
}

#[test]
fn update_to_a_peer_without_server_reports_connect_failed() {
    let sb = Sandbox::new("");
    let cs = sb.csync2();
    let f = sb.data.join("f");
    std::fs::write(&f, b"x").unwrap();
    cs.check(std::slice::from_ref(&f), false, limits(LONG))
        .unwrap();
    // Nothing listens on the peer's port (free_port checked it).
    let out = cs.update(&[], limits(LONG)).expect("update completes");
    assert_eq!(out.connect_failed, vec![sb.peer.to_string()]);
    assert!(!out.exit_ok);
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    // Still dirty.
    assert_eq!(cs.list_dirty(limits(LONG)).unwrap().len(), 1);

    // -P with that peer gives the same; -P with another name does nothing.
    let out = cs
        .update(&[sb.peer.to_string()], limits(LONG))
        .expect("update -P");
    assert_eq!(out.connect_failed, vec![sb.peer.to_string()]);
    let out = cs
        .update(&["127.9.9.9".to_string()], limits(LONG))
        .expect("update -P other");
    assert!(out.exit_ok && out.connect_failed.is_empty());
}

#[test]
fn stalled_client_is_killed() {
    let sb = Sandbox::new("");
    let cs = sb.csync2();
    let f = sb.data.join("f");
    std::fs::write(&f, b"x").unwrap();
    cs.check(std::slice::from_ref(&f), false, limits(LONG))
        .unwrap();
    // A "peer" that accepts and never answers.
    let listener = TcpListener::bind((sb.peer, sb.port)).unwrap();
    let acceptor = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        // Read until the client goes away: EOF (or a reset) proves it died.
        let mut buf = [0u8; 1024];
        loop {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {}
            }
        }
    });
    let stall = Duration::from_millis(800);
    let start = Instant::now();
    let err = cs.update(&[], limits(stall)).expect_err("must stall");
    assert!(
        matches!(err, RunError::Stalled { after } if after == stall),
        "{err:?}"
    );
    assert!(start.elapsed() >= stall);
    // The client's end of the connection is closed: it is dead.
    let closed_at = acceptor.join().unwrap();
    assert!(closed_at >= start);
    // Still dirty.
    assert_eq!(cs.list_dirty(limits(LONG)).unwrap().len(), 1);
}

#[test]
fn busy_database_is_classified_busy() {
    // lock-timeout 0: csync2 gives up after 1 + pid%7 seconds.
    let sb = Sandbox::new("lock-timeout 0;");
    let cs = sb.csync2();
    cs.list_dirty(limits(LONG)).unwrap(); // creates the database
    let f = sb.data.join("f");
    std::fs::write(&f, b"x").unwrap();
    let db = rusqlite::Connection::open(sb.db_file()).unwrap();
    db.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let err = cs
        .check(std::slice::from_ref(&f), false, limits(LONG))
        .expect_err("busy");
    assert!(matches!(err, RunError::Busy), "{err:?}");
    assert!(err.is_transient());
    db.execute_batch("COMMIT").unwrap();
    drop(db);
    // Once the lock is gone the same run works.
    let out = cs
        .check(std::slice::from_ref(&f), false, limits(LONG))
        .unwrap();
    assert_eq!(out.marked, vec![f]);
}

#[test]
fn lock_file_makes_every_command_fail_with_a_clear_error() {
    let sb = Sandbox::new("");
    let cs = sb.csync2();
    let lock = sb.etc.join("csync2.lock");
    std::fs::write(&lock, b"").unwrap();
    let f = sb.data.join("f");
    std::fs::write(&f, b"x").unwrap();
    for err in [
        cs.check(std::slice::from_ref(&f), false, limits(LONG))
            .unwrap_err(),
        cs.list_dirty(limits(LONG)).unwrap_err(),
        cs.update(&[], limits(LONG)).unwrap_err(),
    ] {
        match &err {
            RunError::Locked { lockfile } => assert_eq!(lockfile, &lock),
            other => panic!("expected Locked, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(&lock.display().to_string()) && msg.contains("remove"));
    }
    std::fs::remove_file(&lock).unwrap();
    assert!(cs.list_dirty(limits(LONG)).unwrap().is_empty());
}

#[test]
fn fatal_errors_are_failed_with_the_message() {
    let sb = Sandbox::new("");
    let mut cs = sb.csync2();
    cs.node = Some("127.254.254.254".into());
    let err = cs.list_dirty(limits(LONG)).unwrap_err();
    match err {
        RunError::Failed {
            status,
            stderr_tail,
        } => {
            assert_eq!(status, "exit status 1");
            assert!(
                stderr_tail.contains("is not a member of any configured group"),
                "{stderr_tail}"
            );
        }
        other => panic!("{other:?}"),
    }
    // An option csync2 does not know: it prints its usage.
    let mut cs = sb.csync2();
    cs.client_args = vec!["-Q".into()];
    let err = cs.list_dirty(limits(LONG)).unwrap_err();
    assert!(err.to_string().contains("usage"), "{err}");
}

#[test]
fn missing_binary_is_a_spawn_error_naming_it() {
    let sb = Sandbox::new("");
    let mut cs = sb.csync2();
    cs.program = sb.dir.path().join("no-such-csync2");
    let err = cs.list_dirty(limits(LONG)).unwrap_err();
    assert!(matches!(err, RunError::Spawn { .. }));
    assert!(err.to_string().contains("no-such-csync2"));
}

/// Run `cmd` in a new mount namespace where `src` is bind-mounted over
/// `dst`: the peer node's own data at the same absolute path.
fn with_data_over(cmd: &mut std::process::Command, src: &std::path::Path, dst: &std::path::Path) {
    use std::ffi::CString;
    use std::os::unix::process::CommandExt;
    let src = CString::new(src.as_os_str().as_bytes()).unwrap();
    let dst = CString::new(dst.as_os_str().as_bytes()).unwrap();
    let root = CString::new("/").unwrap();
    // SAFETY: only syscalls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWNS) != 0
                || libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                || libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Kills and reaps a child on drop.
struct ChildGuard(std::process::Child);
impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn push_to_a_real_peer_and_a_conflict_that_stays_dirty() {
    let sb = Sandbox::new("");
    let cs = sb.csync2();
    let peer_data = sb.dir.path().join("peer-data");
    let peer_db = sb.dir.path().join("peer-db");
    std::fs::create_dir(&peer_data).unwrap();
    std::fs::create_dir(&peer_db).unwrap();
    let peer = sb.peer_csync2(&peer_db);

    // The peer has its own version of `both`, known to its database, so
    // it is dirty there too: a conflict.
    std::fs::write(peer_data.join("both"), b"peer's").unwrap();
    let mut peer_check = std::process::Command::new(&peer.program);
    peer_check
        .env("CSYNC2_SYSTEM_DIR", &sb.etc)
        .args(["-N", &sb.peer.to_string(), "-D"])
        .arg(&peer_db)
        .arg("-c")
        .arg(sb.data.join("both"));
    with_data_over(&mut peer_check, &peer_data, &sb.data);
    assert!(peer_check.status().unwrap().success());

    let mut server = peer.server_command();
    server
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    with_data_over(&mut server, &peer_data, &sb.data);
    let _server = ChildGuard(server.spawn().unwrap());
    assert!(sandbox::wait_for(Duration::from_secs(20), || {
        std::net::TcpStream::connect((sb.peer, sb.port)).is_ok()
    }));

    let new = sb.data.join("new file\nwith newline");
    std::fs::write(&new, b"pushed").unwrap();
    std::fs::write(sb.data.join("both"), b"mine").unwrap();
    let out = cs
        .check(&[new.clone(), sb.data.join("both")], false, limits(LONG))
        .unwrap();
    assert_eq!(out.marked.len(), 2, "{:?}", out.marked);

    let up = cs.update(&[], limits(LONG)).expect("update completes");
    assert!(!up.exit_ok);
    assert!(up.connect_failed.is_empty());
    // The new file arrived on the peer; the conflict is named.
    let peer_copy = peer_data.join("new file\nwith newline");
    assert_eq!(std::fs::read(&peer_copy).unwrap(), b"pushed");
    let both = sb.data.join("both");
    assert_eq!(up.errors.len(), 1, "{:?}", up.errors);
    assert!(
        up.errors[0].contains(&both.display().to_string()) && up.errors[0].contains("still dirty"),
        "{:?}",
        up.errors
    );
    let dirty = cs.list_dirty(limits(LONG)).unwrap();
    assert_eq!(dirty.len(), 1, "{dirty:?}");
    assert_eq!(dirty[0].path, both);
}

#[test]
fn check_all_checks_every_tree() {
    let sb = Sandbox::new("");
    let cs = sb.csync2();
    let f = sb.data.join("deep/er");
    std::fs::create_dir_all(&f).unwrap();
    std::fs::write(f.join("file"), b"x").unwrap();
    let out = cs.check_all(limits(LONG)).unwrap();
    let want = vec![
        sb.data.clone(),
        sb.data.join("deep"),
        f.clone(),
        f.join("file"),
    ];
    assert_eq!(set(&out.marked), set(&want));
}
