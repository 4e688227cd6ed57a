//! The testbed builds a real csync2 cluster: nodes with their own identity
//! and data at one common path, whose csync2 servers sync a change.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use crate::support::testbed::*;

fn stdout_of(node: &Node, program: &str, args: &[&std::ffi::OsStr]) -> Vec<u8> {
    let out = node.command(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} on {}: {}",
        node.name(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn a_change_pushed_with_csync2_x_arrives_identical_on_every_node() {
    let tb = Testbed::start(TestbedOptions::default()).unwrap();
    let _servers = tb.start_servers().unwrap();
    let n1 = tb.node(0);
    fs::create_dir(n1.host_path("dir")).unwrap();
    fs::write(n1.host_path("dir/file"), b"some content\n").unwrap();
    fs::set_permissions(n1.host_path("dir/file"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::set_permissions(n1.host_path("dir"), fs::Permissions::from_mode(0o750)).unwrap();
    symlink("dir/file", n1.host_path("link")).unwrap();
    assert_eq!(
        tb.differences().unwrap().len(),
        6,
        "before syncing, node2 and node3 each lack dir, dir/file and link"
    );

    let out = n1.run_csync2(["-x"]).unwrap();
    assert!(
        out.status.success(),
        "csync2 -x: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // csync2 -x returns after pushing: no waiting needed.
    assert_eq!(tb.differences().unwrap(), Vec::<String>::new());
    for node in &tb.nodes()[1..] {
        let f = node.host_path("dir/file");
        assert_eq!(fs::read(&f).unwrap(), b"some content\n");
        assert_eq!(
            fs::metadata(&f).unwrap().permissions().mode() & 0o7777,
            0o640
        );
        assert_eq!(
            fs::metadata(node.host_path("dir"))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777,
            0o750
        );
        assert_eq!(
            fs::read_link(node.host_path("link")).unwrap(),
            Path::new("dir/file")
        );
    }
    for node in tb.nodes() {
        assert_eq!(
            node.dirty().unwrap(),
            Vec::<Vec<u8>>::new(),
            "{} has dirty entries",
            node.name()
        );
    }
}

#[test]
fn each_node_has_its_own_identity_and_data_at_the_common_path() {
    let tb = Testbed::start(TestbedOptions::nodes(2)).unwrap();
    for node in tb.nodes() {
        fs::write(node.host_path("whoami"), node.name()).unwrap();
    }
    for node in tb.nodes() {
        let path = node.path("whoami");
        assert_eq!(
            stdout_of(node, "cat", &[path.as_os_str()]),
            node.name().as_bytes()
        );
        assert_eq!(
            stdout_of(node, "hostname", &[]),
            format!("{}\n", node.name()).as_bytes()
        );
        let hosts = String::from_utf8(stdout_of(node, "cat", &["/etc/hosts".as_ref()])).unwrap();
        for other in tb.nodes() {
            assert!(
                hosts.contains(&format!("{}\t{}\n", other.addr(), other.name())),
                "{} missing from {}'s hosts: {hosts}",
                other.name(),
                node.name()
            );
        }
        // The same node through nsenter, for code that can only prefix argv.
        for (cmd, want) in [
            (
                vec![std::ffi::OsString::from("hostname")],
                format!("{}\n", node.name()),
            ),
            (
                vec!["cat".into(), path.clone().into_os_string()],
                node.name().to_string(),
            ),
        ] {
            let mut argv = node.nsenter_args();
            argv.extend(cmd);
            let out = std::process::Command::new(&argv[0])
                .args(&argv[1..])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(out.stdout, want.as_bytes());
        }
        let env = String::from_utf8(stdout_of(node, "env", &[])).unwrap();
        assert!(env.contains(&format!("CSYNC2_SYSTEM_DIR={}\n", node.etc_dir().display())));
    }
    // The data path itself, in the root namespace, stays an empty mount point.
    assert_eq!(fs::read_dir(tb.data_path()).unwrap().count(), 0);
    // Every node has the same csync2.cfg.
    for node in tb.nodes() {
        assert_eq!(
            fs::read_to_string(node.etc_dir().join("csync2.cfg")).unwrap(),
            tb.config_text()
        );
    }
}

#[test]
fn seeded_files_are_known_to_every_database_so_an_edit_syncs_without_conflict() {
    let opts = TestbedOptions {
        files: vec![
            ("a/b/seeded.txt".into(), b"version 1\n".to_vec()),
            ("top.txt".into(), b"top\n".to_vec()),
        ],
        ..TestbedOptions::default()
    };
    let tb = Testbed::start(opts).unwrap();
    assert_eq!(tb.differences().unwrap(), Vec::<String>::new());
    for node in tb.nodes() {
        assert_eq!(node.dirty().unwrap(), Vec::<Vec<u8>>::new());
        // Seeding recorded the files: csync2 -L lists them.
        let out = node.run_csync2(["-L"]).unwrap();
        let listed = String::from_utf8_lossy(&out.stdout);
        assert!(
            listed.contains("a/b/seeded.txt"),
            "{}: {listed}",
            node.name()
        );
    }
    let _servers = tb.start_servers().unwrap();
    let n1 = tb.node(0);
    fs::write(n1.host_path("a/b/seeded.txt"), b"version 2, longer\n").unwrap();
    let out = n1.run_csync2(["-x"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tb.differences().unwrap(), Vec::<String>::new());
    for node in tb.nodes() {
        assert_eq!(
            node.dirty().unwrap(),
            Vec::<Vec<u8>>::new(),
            "{}",
            node.name()
        );
    }
}

#[test]
fn a_rewritten_config_applies_on_every_node() {
    let tb = Testbed::start(TestbedOptions::nodes(2)).unwrap();
    let _servers = tb.start_servers().unwrap();
    tb.set_config(&tb.config_with("exclude *.tmp;")).unwrap();
    assert!(tb.config_text().contains("\texclude *.tmp;\n"));
    let n1 = tb.node(0);
    fs::write(n1.host_path("keep"), b"k").unwrap();
    fs::write(n1.host_path("skip.tmp"), b"s").unwrap();
    let out = n1.run_csync2(["-x"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        tb.differences().unwrap(),
        ["\"skip.tmp\": only on node1"],
        "the excluded file stays on node1"
    );
}

#[test]
fn two_testbeds_at_once_stay_separate() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Testbed::start(TestbedOptions::nodes(2)).unwrap());
        let b = s.spawn(|| Testbed::start(TestbedOptions::nodes(2)).unwrap());
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_ne!(a.id(), b.id());
    assert_ne!(a.data_path(), b.data_path());
    // Same node names and addresses in both, each in its own namespaces.
    assert_eq!(a.node(1).addr(), b.node(1).addr());
    let _sa = a.start_servers().unwrap();
    let _sb = b.start_servers().unwrap();
    fs::write(a.node(0).host_path("only-in-a"), b"a").unwrap();
    let out = a.node(0).run_csync2(["-x"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(a.node(1).host_path("only-in-a").exists());
    assert!(!b.node(1).host_path("only-in-a").exists());
    assert!(!b.node(0).host_path("only-in-a").exists());
    assert_eq!(b.differences().unwrap(), Vec::<String>::new());
}

#[test]
fn seed_from_copies_a_tree_exactly_and_seeds_every_database() {
    let tb = Testbed::start(TestbedOptions::default()).unwrap();
    let n1 = tb.node(0);
    let names: [&[u8]; 3] = [b"plain", b"new\nline \xff", b"-dash"];
    for (i, name) in names.iter().enumerate() {
        let dir = n1.host_path(std::ffi::OsStr::from_bytes(name));
        fs::create_dir(&dir).unwrap();
        for j in 0..20 {
            fs::write(dir.join(format!("f{j}")), format!("{i}/{j}")).unwrap();
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o711)).unwrap();
    }
    symlink("plain/f1", n1.host_path("link")).unwrap();
    assert!(!tb.differences().unwrap().is_empty());

    tb.seed_from(0).unwrap();

    let snaps = tb.snapshots().unwrap();
    for (node, snap) in tb.nodes().iter().zip(&snaps).skip(1) {
        let d = diff_trees_with(
            ("node1", &snaps[0]),
            (node.name(), snap),
            DiffOptions { mtime: true },
        );
        assert_eq!(d, Vec::<String>::new());
    }
    for node in tb.nodes() {
        assert_eq!(
            node.dirty().unwrap(),
            Vec::<Vec<u8>>::new(),
            "{}",
            node.name()
        );
    }
    // The databases know the tree: an edit on node2 goes through.
    let _servers = tb.start_servers().unwrap();
    let n2 = tb.node(1);
    fs::write(n2.host_path("plain/f3"), b"edited on node2, longer").unwrap();
    let out = n2.run_csync2(["-x"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tb.differences().unwrap(), Vec::<String>::new());
}

#[test]
fn write_all_refuses_paths_outside_the_data() {
    let tb = Testbed::start(TestbedOptions::nodes(1)).unwrap();
    for bad in ["/etc/evil", "../escape", "a/../../b", ""] {
        match tb.write_all(bad, b"x") {
            Err(TestbedError::OutsideData(p)) => assert_eq!(p, Path::new(bad)),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    assert!(!tb.node(0).dir().join("escape").exists());
    tb.write_all("./ok/file", b"x").unwrap();
    assert_eq!(fs::read(tb.node(0).host_path("ok/file")).unwrap(), b"x");
}
