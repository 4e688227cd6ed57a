//! The recursive watcher on real inotify: new directories and `mkdir -p`
//! storms, trees moved in, within and out, renames, `rm -rf`, excluded
//! subtrees, awkward names, and when regular files are reported.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use csync2_watch::watch::ChangeKind;

use crate::support::watch::*;

/// Long enough that no file is reported by the settle fallback during a
/// test that is not about it.
const NO_SETTLE: Duration = Duration::from_secs(3600);

#[test]
fn mkdir_p_storm_reports_every_file_at_every_level() {
    let (_t, root) = tempdir();
    let w = start(Filter::include(&root), NO_SETTLE);
    let mut seen = Seen::default();
    let mut files: Vec<PathBuf> = Vec::new();
    for i in 0..100 {
        let top = root.join(format!("storm{i}"));
        let mut levels: Vec<PathBuf> = Vec::new();
        let mut d = top.clone();
        for level in 0..20 {
            d = d.join(format!("d{level}"));
            levels.push(d.clone());
        }
        if i % 2 == 0 {
            // mkdir -p first, then a file at every level.
            fs::create_dir_all(levels.last().unwrap()).unwrap();
            for l in &levels {
                let f = l.join("f");
                fs::write(&f, b"data").unwrap();
                files.push(f);
            }
        } else {
            // Each directory gets its file the moment it exists.
            fs::create_dir(&top).unwrap();
            for l in &levels {
                fs::create_dir(l).unwrap();
                let f = l.join("f");
                fs::write(&f, b"data").unwrap();
                files.push(f);
            }
        }
    }
    seen.wait(&w, "every file of the mkdir -p storm", |s| {
        let p = s.paths();
        files.iter().all(|f| p.contains(f))
    });
    // Every directory of every chain is watched.
    let watched = watched_inodes(&w);
    for d in dirs_under(&root) {
        assert!(watched.contains(&ino(&d)), "{} not watched", d.display());
    }
    assert!(seen.full.is_empty(), "{:?}", seen.full);
}

#[test]
fn tree_moved_in_within_and_out() {
    let (_t, base) = tempdir();
    let root = base.join("root");
    let outside = base.join("outside");
    fs::create_dir_all(&root).unwrap();
    fs::create_dir_all(outside.join("tree/a/b/c")).unwrap();
    for rel in ["tree/top", "tree/a/fa", "tree/a/b/fb", "tree/a/b/c/fc"] {
        fs::write(outside.join(rel), rel).unwrap();
    }
    let w = start(Filter::include(&root), NO_SETTLE);
    let baseline = watched_inodes(&w).len();
    let mut seen = Seen::default();

    // Moved in from outside: the directory and everything in it.
    fs::rename(outside.join("tree"), root.join("tree")).unwrap();
    let expect_in: Vec<PathBuf> = [
        "tree",
        "tree/top",
        "tree/a",
        "tree/a/fa",
        "tree/a/b",
        "tree/a/b/fb",
        "tree/a/b/c",
        "tree/a/b/c/fc",
    ]
    .iter()
    .map(|r| root.join(r))
    .collect();
    seen.wait(&w, "the moved-in tree", |s| {
        expect_in.iter().all(|p| s.has(p))
    });
    assert!(seen.has_kind(&root.join("tree"), ChangeKind::DirTree));
    assert!(seen.has_kind(&root.join("tree/a/b/c/fc"), ChangeKind::Entry));
    eventually("4 new watches", || watched_inodes(&w).len() == baseline + 4);
    // The moved-in directories are watched: a write deep inside is seen.
    fs::write(root.join("tree/a/b/c/new"), b"x").unwrap();
    seen.wait(&w, "a write in the moved-in tree", |s| {
        s.has(&root.join("tree/a/b/c/new"))
    });

    // Moved within: old and new paths reported, descendants follow.
    seen.clear();
    fs::create_dir(root.join("other")).unwrap();
    fs::rename(root.join("tree/a"), root.join("other/moved")).unwrap();
    seen.wait(&w, "both paths of the move within", |s| {
        s.has_kind(&root.join("tree/a"), ChangeKind::DirTree)
            && s.has_kind(&root.join("other/moved"), ChangeKind::DirTree)
    });
    fs::write(root.join("other/moved/b/c/after"), b"x").unwrap();
    seen.wait(
        &w,
        "a write below the moved directory, at its new path",
        |s| s.has(&root.join("other/moved/b/c/after")),
    );
    assert!(
        !seen
            .paths()
            .iter()
            .any(|p| p.starts_with(root.join("tree/a/b"))),
        "stale paths reported: {:?}",
        seen.changes
    );

    // Moved out: reported once, and its watches go.
    seen.clear();
    fs::rename(root.join("other/moved"), outside.join("gone")).unwrap();
    seen.wait(&w, "the moved-out directory", |s| {
        s.has_kind(&root.join("other/moved"), ChangeKind::DirTree)
    });
    eventually("the moved-out watches to go", || {
        watched_inodes(&w).len() == baseline + 2 // tree, other
    });
    fs::write(outside.join("gone/b/c/ignored"), b"x").unwrap();
    seen.sync_point(&w, &root.join("sentinel"));
    assert!(
        !seen.paths().iter().any(|p| p.ends_with("ignored")),
        "{:?}",
        seen.changes
    );
}

#[test]
fn renames_report_both_paths() {
    let (_t, root) = tempdir();
    fs::create_dir(root.join("d")).unwrap();
    fs::write(root.join("old"), b"x").unwrap();
    let w = start(Filter::include(&root), NO_SETTLE);
    let mut seen = Seen::default();
    fs::rename(root.join("old"), root.join("new")).unwrap();
    fs::rename(root.join("new"), root.join("d/newer")).unwrap();
    seen.wait(&w, "every path of the renames", |s| {
        s.has_kind(&root.join("old"), ChangeKind::Entry)
            && s.has_kind(&root.join("new"), ChangeKind::Entry)
            && s.has_kind(&root.join("d/newer"), ChangeKind::Entry)
    });
    // A directory renamed in place keeps its watch under the new name.
    fs::rename(root.join("d"), root.join("e")).unwrap();
    seen.wait(&w, "both names of the renamed directory", |s| {
        s.has_kind(&root.join("d"), ChangeKind::DirTree)
            && s.has_kind(&root.join("e"), ChangeKind::DirTree)
    });
    fs::write(root.join("e/inside"), b"x").unwrap();
    seen.wait(&w, "a write in the renamed directory", |s| {
        s.has(&root.join("e/inside"))
    });
}

#[test]
fn rm_rf_reports_the_tree_and_drops_its_watches() {
    let (_t, root) = tempdir();
    let w = start(Filter::include(&root), NO_SETTLE);
    let baseline = watched_inodes(&w).len();
    let mut seen = Seen::default();
    for i in 0..10 {
        fs::create_dir_all(root.join(format!("big/x{i}/y/z"))).unwrap();
        fs::write(root.join(format!("big/x{i}/y/z/f")), b"x").unwrap();
    }
    seen.wait(&w, "the new tree", |s| {
        (0..10).all(|i| s.has(&root.join(format!("big/x{i}/y/z/f"))))
    });
    eventually("31 new watches", || {
        watched_inodes(&w).len() == baseline + 31
    });
    seen.clear();
    fs::remove_dir_all(root.join("big")).unwrap();
    seen.wait(&w, "the removed tree", |s| {
        s.has_kind(&root.join("big"), ChangeKind::DirTree)
            && (0..10).all(|i| s.has(&root.join(format!("big/x{i}/y/z/f"))))
    });
    eventually("the removed tree's watches to go", || {
        watched_inodes(&w).len() == baseline
    });
    // Re-created at once: watched again.
    fs::create_dir_all(root.join("big/again")).unwrap();
    fs::write(root.join("big/again/f"), b"x").unwrap();
    seen.wait(&w, "the re-created tree", |s| {
        s.has(&root.join("big/again/f"))
    });
    eventually("2 watches for the re-created tree", || {
        watched_inodes(&w).len() == baseline + 2
    });
}

#[test]
fn dirs_to_watch_counts_what_the_watcher_watches() {
    let (_t, root) = tempdir();
    let mut filter = Filter::include(&root);
    filter.exclude_suffix.push("tmp".into());
    for d in ["a/b/c", "a/d", "e", "x.tmp/y", "a/z.tmp"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    std::os::unix::fs::symlink(root.join("a"), root.join("link")).unwrap();
    let counted = csync2_watch::watch::dirs_to_watch(&filter).unwrap();
    let w = start(filter, NO_SETTLE);
    assert_eq!(counted, w.stats().dirs_watched);
    assert_eq!(counted, watched_inodes(&w).len());
    // `/`, `/tmp`, the root, a, a/b, a/b/c, a/d, e; not the symlink.
    assert_eq!(counted, 8);
}

#[test]
fn excluded_subtrees_get_no_watch_and_no_reports() {
    let (_t, root) = tempdir();
    let mut filter = Filter::include(&root.join("inc"));
    filter.exclude.push(root.join("inc/cache"));
    filter.exclude_suffix.push("tmp".into());
    for d in [
        "inc/keep/deep",
        "inc/cache/deep/deeper",
        "inc/x.tmp/sub",
        "notinc/sub",
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    let w = start(filter, NO_SETTLE);
    let watched = watched_inodes(&w);
    for d in ["inc", "inc/keep", "inc/keep/deep"] {
        assert!(watched.contains(&ino(&root.join(d))), "{d} not watched");
    }
    // The ancestors of the include are watched too (non-recursively)...
    assert!(watched.contains(&ino(&root)));
    assert!(watched.contains(&ino(Path::new("/"))));
    // ...but nothing in which nothing can be synced.
    for d in [
        "inc/cache",
        "inc/cache/deep",
        "inc/cache/deep/deeper",
        "inc/x.tmp",
        "inc/x.tmp/sub",
        "notinc",
        "notinc/sub",
    ] {
        assert!(!watched.contains(&ino(&root.join(d))), "{d} is watched");
    }
    let mut seen = Seen::default();
    fs::write(root.join("inc/cache/deep/f"), b"x").unwrap();
    fs::write(root.join("inc/x.tmp/f"), b"x").unwrap();
    fs::write(root.join("inc/y.tmp"), b"x").unwrap();
    fs::write(root.join("notinc/f"), b"x").unwrap();
    fs::create_dir(root.join("inc/new.tmp")).unwrap();
    fs::create_dir(root.join("inc/cache/newdir")).unwrap();
    fs::write(root.join("inc/keep/f"), b"x").unwrap();
    seen.sync_point(&w, &root.join("inc/keep/sentinel"));
    assert!(seen.has(&root.join("inc/keep/f")));
    for c in &seen.changes {
        let rel = c
            .path
            .strip_prefix(root.join("inc"))
            .expect("inside the include");
        assert!(
            !rel.starts_with("cache")
                && !rel
                    .components()
                    .any(|p| p.as_os_str().as_bytes().ends_with(b"tmp")),
            "excluded path reported: {c:?}"
        );
    }
    assert!(!is_watched(&w, &root.join("inc/new.tmp")));
    assert!(!is_watched(&w, &root.join("inc/cache/newdir")));

    // Renamed to an excluded name: its watches go; renamed back: walked.
    seen.clear();
    fs::rename(root.join("inc/keep"), root.join("inc/keep.tmp")).unwrap();
    seen.wait(&w, "the directory renamed away", |s| {
        s.has_kind(&root.join("inc/keep"), ChangeKind::DirTree)
    });
    eventually("the excluded directory's watches to go", || {
        !is_watched(&w, &root.join("inc/keep.tmp"))
            && !is_watched(&w, &root.join("inc/keep.tmp/deep"))
    });
    fs::rename(root.join("inc/x.tmp"), root.join("inc/x")).unwrap();
    seen.wait(
        &w,
        "the directory renamed into view, with its contents",
        |s| {
            s.has_kind(&root.join("inc/x"), ChangeKind::DirTree)
                && s.has(&root.join("inc/x/f"))
                && s.has(&root.join("inc/x/sub"))
        },
    );
    eventually("the renamed-in directory to be watched", || {
        is_watched(&w, &root.join("inc/x")) && is_watched(&w, &root.join("inc/x/sub"))
    });
}

#[test]
fn awkward_names_come_through_byte_exact() {
    let (_t, root) = tempdir();
    let w = start(Filter::include(&root), NO_SETTLE);
    let mut seen = Seen::default();
    let long = vec![b'L'; 255];
    let names: Vec<&[u8]> = vec![
        b"with space",
        b"new\nline",
        b"tab\there",
        b"-leading-dash",
        b"--",
        &long,
        b"bad\xff\xfeutf8",
        b"\\back\\slash",
        b"trailing space ",
    ];
    let mut expect: Vec<PathBuf> = Vec::new();
    for n in &names {
        let name = OsStr::from_bytes(n);
        // As a file in the root, and as a directory holding a file.
        let f = root.join(name);
        fs::write(&f, b"x").unwrap();
        expect.push(f);
        let d = root.join(format!("dir{}", expect.len()));
        fs::create_dir(&d).unwrap();
        let sub = d.join(name);
        fs::create_dir(&sub).unwrap();
        let inner = sub.join(name);
        fs::write(&inner, b"x").unwrap();
        expect.push(sub);
        expect.push(inner);
    }
    seen.wait(&w, "every awkward name", |s| {
        expect.iter().all(|p| s.has(p))
    });
    for c in &seen.changes {
        assert!(c.path.starts_with(&root), "{:?}", c.path);
        assert!(
            fs::symlink_metadata(&c.path).is_ok(),
            "reported a path that does not exist: {:?}",
            c.path
        );
    }
}

#[test]
fn regular_files_are_reported_on_close_write_not_on_modify() {
    let (_t, root) = tempdir();
    let w = start(Filter::include(&root), NO_SETTLE);
    let mut seen = Seen::default();
    let f = root.join("slow");
    let mut file = fs::File::create(&f).unwrap();
    std::io::Write::write_all(&mut file, b"half").unwrap();
    std::io::Write::flush(&mut file).unwrap();
    seen.sync_point(&w, &root.join("sentinel1"));
    assert!(
        !seen.has(&f),
        "reported before it was closed: {:?}",
        seen.changes
    );
    std::io::Write::write_all(&mut file, b" written").unwrap();
    drop(file);
    seen.wait(&w, "the file once closed", |s| {
        s.has_kind(&f, ChangeKind::Entry)
    });
}

#[test]
fn links_and_special_files_are_reported_at_once() {
    let (_t, root) = tempdir();
    fs::write(root.join("target"), b"x").unwrap();
    let w = start(Filter::include(&root), NO_SETTLE);
    let mut seen = Seen::default();
    std::os::unix::fs::symlink("target", root.join("sym")).unwrap();
    fs::hard_link(root.join("target"), root.join("hard")).unwrap();
    nix::unistd::mkfifo(
        &root.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    // With the settle fallback an hour away, only "at once" can pass.
    seen.wait(&w, "symlink, hard link and fifo", |s| {
        s.has(&root.join("sym")) && s.has(&root.join("hard")) && s.has(&root.join("fifo"))
    });
}

#[test]
fn attribute_changes_and_deletes_are_reported() {
    use std::os::unix::fs::PermissionsExt;
    let (_t, root) = tempdir();
    fs::write(root.join("f"), b"x").unwrap();
    fs::create_dir(root.join("d")).unwrap();
    let w = start(Filter::include(&root), NO_SETTLE);
    let mut seen = Seen::default();
    fs::set_permissions(root.join("f"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(root.join("d"), fs::Permissions::from_mode(0o700)).unwrap();
    seen.wait(&w, "the attribute changes", |s| {
        s.has_kind(&root.join("f"), ChangeKind::Entry)
            && s.has_kind(&root.join("d"), ChangeKind::DirAttrib)
    });
    seen.clear();
    fs::remove_file(root.join("f")).unwrap();
    fs::remove_dir(root.join("d")).unwrap();
    seen.wait(&w, "the deletes", |s| {
        s.has_kind(&root.join("f"), ChangeKind::Entry)
            && s.has_kind(&root.join("d"), ChangeKind::DirTree)
    });
}

#[test]
fn files_never_closed_for_writing_are_reported_after_settling() {
    let (_t, root) = tempdir();
    fs::write(root.join("big"), b"0123456789").unwrap();
    let w = start(Filter::include(&root), Duration::from_millis(300));
    let mut seen = Seen::default();
    // truncate(2) by path: IN_MODIFY without IN_CLOSE_WRITE.
    nix::unistd::truncate(&root.join("big"), 3).unwrap();
    // mknod of a regular file: IN_CREATE, never written.
    nix::sys::stat::mknod(
        &root.join("made"),
        nix::sys::stat::SFlag::S_IFREG,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        0,
    )
    .unwrap();
    seen.wait(&w, "the truncated and the mknod'ed file", |s| {
        s.has(&root.join("big")) && s.has(&root.join("made"))
    });
}

#[test]
fn the_root_deleted_and_recreated_is_watched_again() {
    let (_t, base) = tempdir();
    let root = base.join("root");
    fs::create_dir_all(root.join("sub")).unwrap();
    let w = start(Filter::include(&root), NO_SETTLE);
    let mut seen = Seen::default();
    fs::remove_dir_all(&root).unwrap();
    seen.wait(&w, "the deleted root", |s| {
        s.has_kind(&root, ChangeKind::DirTree)
    });
    fs::create_dir_all(root.join("sub2")).unwrap();
    fs::write(root.join("sub2/f"), b"x").unwrap();
    seen.wait(&w, "the re-created root's file", |s| {
        s.has(&root.join("sub2/f"))
    });
    eventually("the re-created root to be watched", || {
        is_watched(&w, &root) && is_watched(&w, &root.join("sub2"))
    });
    // Created after start, in a directory that did not exist: picked up too.
    let late = base.join("late");
    let w2 = start(Filter::include(&late), NO_SETTLE);
    let mut seen2 = Seen::default();
    fs::create_dir_all(late.join("x")).unwrap();
    fs::write(late.join("x/f"), b"x").unwrap();
    seen2.wait(&w2, "the root created after start", |s| {
        s.has(&late.join("x/f"))
    });
}

#[test]
fn reload_with_a_new_filter_drops_and_adds_watches() {
    let (_t, root) = tempdir();
    fs::create_dir_all(root.join("a/deep")).unwrap();
    fs::create_dir_all(root.join("b/deep")).unwrap();
    let mut before = Filter::include(&root);
    before.exclude.push(root.join("b"));
    let w = start(before, NO_SETTLE);
    assert!(is_watched(&w, &root.join("a/deep")));
    assert!(!is_watched(&w, &root.join("b")));
    let mut after = Filter::include(&root);
    after.exclude.push(root.join("a"));
    w.reload(std::sync::Arc::new(after));
    // Done when reload returns.
    assert!(is_watched(&w, &root.join("b")) && is_watched(&w, &root.join("b/deep")));
    assert!(!is_watched(&w, &root.join("a")) && !is_watched(&w, &root.join("a/deep")));
    let mut seen = Seen::default();
    seen.wait(&w, "the newly included tree", |s| {
        s.has_kind(&root.join("b"), ChangeKind::DirTree)
    });
    fs::write(root.join("a/deep/f"), b"x").unwrap();
    fs::write(root.join("b/deep/f"), b"x").unwrap();
    seen.sync_point(&w, &root.join("sentinel"));
    assert!(seen.has(&root.join("b/deep/f")));
    assert!(
        !seen.paths().iter().any(|p| p.starts_with(root.join("a"))),
        "{:?}",
        seen.changes
    );
}
