//! csync2-watch on a real 3-node csync2 cluster: every kind of change made
//! on one node reaches the others, byte-identical, with nothing left dirty.

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::cluster::Cluster;

const SETTLE: Duration = Duration::from_secs(60);

/// A named change to make on node 1.
type Step<'a> = (&'static str, Box<dyn Fn() + 'a>);

fn write(path: &Path, content: &[u8]) {
    fs::write(path, content).unwrap();
}

#[test]
fn each_kind_of_change_reaches_every_node() {
    let c = Cluster::start("");
    let p = |rel: &str| c.path(0, rel);
    let steps: Vec<Step> = vec![
        ("create", Box::new(|| write(&p("a.txt"), b"hello\n"))),
        ("modify", Box::new(|| write(&p("a.txt"), b"HELLO\n"))),
        (
            "append",
            Box::new(|| {
                let mut f = fs::OpenOptions::new()
                    .append(true)
                    .open(p("a.txt"))
                    .unwrap();
                f.write_all(b"more\n").unwrap();
            }),
        ),
        (
            "truncate by open file",
            Box::new(|| {
                let f = fs::OpenOptions::new().write(true).open(p("a.txt")).unwrap();
                f.set_len(3).unwrap();
            }),
        ),
        (
            "truncate(2) by path, no close-write",
            Box::new(|| nix::unistd::truncate(&p("a.txt"), 1).unwrap()),
        ),
        (
            "chmod",
            Box::new(|| {
                fs::set_permissions(p("a.txt"), fs::Permissions::from_mode(0o600)).unwrap()
            }),
        ),
        (
            "symlink",
            Box::new(|| std::os::unix::fs::symlink("a.txt", p("link")).unwrap()),
        ),
        (
            "dangling symlink",
            Box::new(|| std::os::unix::fs::symlink("/nowhere/at/all", p("dangling")).unwrap()),
        ),
        (
            "hard link",
            Box::new(|| fs::hard_link(p("a.txt"), p("hard")).unwrap()),
        ),
        (
            "rename file",
            Box::new(|| fs::rename(p("a.txt"), p("b.txt")).unwrap()),
        ),
        (
            "directory with files",
            Box::new(|| {
                fs::create_dir(p("dir")).unwrap();
                for i in 0..5 {
                    write(&p(&format!("dir/f{i}")), format!("{i}\n").as_bytes());
                }
                fs::create_dir(p("dir/sub")).unwrap();
                write(&p("dir/sub/g"), b"g\n");
            }),
        ),
        (
            "rename directory",
            Box::new(|| fs::rename(p("dir"), p("dir2")).unwrap()),
        ),
        (
            "delete file",
            Box::new(|| fs::remove_file(p("b.txt")).unwrap()),
        ),
        (
            "delete tree",
            Box::new(|| fs::remove_dir_all(p("dir2")).unwrap()),
        ),
        (
            "mkdir -p 20 deep with a file at every level",
            Box::new(|| {
                let mut d = p("deep");
                for level in 0..20 {
                    d.push(format!("l{level}"));
                    fs::create_dir_all(&d).unwrap();
                    write(&d.join("f"), format!("{level}").as_bytes());
                }
            }),
        ),
        (
            "chmod a directory",
            Box::new(|| fs::set_permissions(p("deep"), fs::Permissions::from_mode(0o700)).unwrap()),
        ),
    ];
    for (what, step) in steps {
        step();
        c.wait_converged(SETTLE);
        eprintln!("converged after: {what}");
    }
}

/// Names that break shells, line-based tools and lossy UTF-8 conversions.
fn awkward_names() -> Vec<Vec<u8>> {
    vec![
        b"with space".to_vec(),
        b"new\nline".to_vec(),
        b"tab\there".to_vec(),
        b"-leading-dash".to_vec(),
        b"--".to_vec(),
        b"latin1-\xe9t\xe9".to_vec(),
        b"\xff\xfe-not-utf8".to_vec(),
        b"quote'\"and\\back".to_vec(),
        b"glob*?[x]{a,b}".to_vec(),
        b"percent%20%prefix%".to_vec(),
        vec![b'x'; 255],
    ]
}

#[test]
fn awkward_names_arrive_byte_exact() {
    let c = Cluster::start("");
    let root = c.path(0, "");
    fs::create_dir(root.join("odd dir\n\u{e9}")).unwrap();
    for name in awkward_names() {
        let name = OsStr::from_bytes(&name);
        write(&root.join(name), name.as_bytes());
        write(&root.join("odd dir\n\u{e9}").join(name), b"inner");
    }
    c.wait_converged(SETTLE);
    // Renames and deletes of awkward names too.
    for name in awkward_names() {
        let name = OsStr::from_bytes(&name);
        let mut renamed = name.to_os_string();
        renamed.push(".renamed");
        if renamed.len() <= 255 {
            fs::rename(root.join(name), root.join(&renamed)).unwrap();
        } else {
            fs::remove_file(root.join(name)).unwrap();
        }
    }
    c.wait_converged(SETTLE);
}

#[test]
fn a_thousand_file_burst_converges() {
    let c = Cluster::start("");
    let root = c.path(0, "burst");
    fs::create_dir(&root).unwrap();
    for i in 0..1000 {
        let dir = root.join(format!("d{}", i % 10));
        fs::create_dir_all(&dir).unwrap();
        write(
            &dir.join(format!("file-{i}")),
            &vec![b'a' + (i % 26) as u8; 1024],
        );
    }
    c.wait_converged(Duration::from_secs(180));
    let rmdir: PathBuf = root.join("d3");
    fs::remove_dir_all(rmdir).unwrap();
    c.wait_converged(Duration::from_secs(120));
}

#[test]
fn same_second_rewrites_at_the_same_size_are_not_lost() {
    // csync2 records mtimes in whole seconds: a rewrite within the second
    // of its last check, at the same size, is invisible to `csync2 -c`.
    let c = Cluster::start("");
    let f = c.path(0, "same-second");
    for round in 0..20u8 {
        // Same length every time; several writes per second.
        write(&f, &[b'A' + round; 8]);
        std::thread::sleep(Duration::from_millis(150));
    }
    c.wait_converged(SETTLE);
    let peer = fs::read(c.path(1, "same-second")).unwrap();
    assert_eq!(peer, vec![b'A' + 19; 8]);
}

#[test]
fn changes_on_two_nodes_at_once_converge() {
    let c = Cluster::start("");
    let (a, b) = (c.path(0, ""), c.path(1, ""));
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..100 {
                write(&a.join(format!("from-node1-{i}")), b"1");
            }
        });
        s.spawn(|| {
            for i in 0..100 {
                write(&b.join(format!("from-node2-{i}")), b"2");
            }
        });
    });
    c.wait_converged(Duration::from_secs(120));
    for i in [0, 57, 99] {
        for node in 0..3 {
            assert!(c.path(node, format!("from-node1-{i}")).exists());
            assert!(c.path(node, format!("from-node2-{i}")).exists());
        }
    }
}

#[test]
fn excluded_files_stay_home() {
    let c = Cluster::start("exclude *.tmp;\n\texclude cache;");
    let root = c.path(0, "");
    write(&root.join("x.tmp"), b"scratch");
    fs::create_dir_all(root.join("sub/cache/deeper")).unwrap();
    write(&root.join("sub/cache/deeper/f"), b"cached");
    write(&root.join("sub/kept"), b"kept");
    // Written last: once it has arrived, so would have everything before it.
    write(&root.join("zz-marker"), b"m");
    for node in 1..3 {
        let marker = c.path(node, "zz-marker");
        assert!(
            csync2_watch_testbed::wait_until(SETTLE, || marker.exists()),
            "marker never reached node{}\n{}",
            node + 1,
            c.logs_tail()
        );
        assert_eq!(fs::read(c.path(node, "sub/kept")).unwrap(), b"kept");
        assert!(!c.path(node, "x.tmp").exists(), "excluded file synced");
        assert!(!c.path(node, "sub/cache").exists(), "excluded tree synced");
    }
}
