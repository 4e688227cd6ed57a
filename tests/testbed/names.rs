//! Awkward file names survive a real csync2 round trip, and the testbed's
//! snapshots and diffs show them byte-exact.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::support::testbed::*;

fn awkward_names() -> Vec<PathBuf> {
    let mut names: Vec<Vec<u8>> = vec![
        b"with space".to_vec(),
        b"new\nline".to_vec(),
        b"-leading-dash".to_vec(),
        b"tab\there".to_vec(),
        b"not-utf8-\xff\xfe".to_vec(),
        b"percent%20and%".to_vec(),
        b"back\\slash".to_vec(),
        vec![b'x'; 255],
    ];
    // A directory with an awkward name holding an awkward name.
    names.push(b"dir with\nnewline/-inner \xff".to_vec());
    names
        .into_iter()
        .map(|n| PathBuf::from(OsStr::from_bytes(&n)))
        .collect()
}

#[test]
fn awkward_names_survive_a_csync2_round_trip_byte_exact() {
    let tb = Testbed::start(TestbedOptions::default()).unwrap();
    let _servers = tb.start_servers().unwrap();
    let n1 = tb.node(0);
    let names = awkward_names();
    for (i, name) in names.iter().enumerate() {
        let p = n1.host_path(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, format!("content {i}\n")).unwrap();
    }
    // A symlink whose target is awkward too.
    std::os::unix::fs::symlink(&names[1], n1.host_path("link\nto newline")).unwrap();

    let out = n1.run_csync2(["-x"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    assert_eq!(tb.differences().unwrap(), Vec::<String>::new());
    let snaps = tb.snapshots().unwrap();
    for (node, snap) in tb.nodes().iter().zip(&snaps) {
        for (i, name) in names.iter().enumerate() {
            let e = snap.get(name).unwrap_or_else(|| {
                panic!(
                    "{} lacks \"{}\"",
                    node.name(),
                    escape_bytes(name.as_os_str().as_bytes())
                )
            });
            assert_eq!(
                e.content.as_deref(),
                Some(format!("content {i}\n").as_bytes())
            );
        }
        let link = &snap[Path::new(OsStr::from_bytes(b"link\nto newline"))];
        assert_eq!(link.target.as_deref(), Some(names[1].as_path()));
        assert_eq!(
            node.dirty().unwrap(),
            Vec::<Vec<u8>>::new(),
            "{}",
            node.name()
        );
    }
}

#[test]
fn diff_trees_reports_a_deliberate_difference_byte_exact() {
    let tb = Testbed::start(TestbedOptions::nodes(2)).unwrap();
    let (n1, n2) = (tb.node(0), tb.node(1));
    let names = awkward_names();
    for node in tb.nodes() {
        for name in &names {
            let p = node.host_path(name);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, b"same").unwrap();
        }
    }
    assert_eq!(tb.differences().unwrap(), Vec::<String>::new());

    fs::write(n2.host_path(&names[1]), b"changed\n").unwrap();
    fs::remove_file(n2.host_path(&names[4])).unwrap();
    fs::write(n1.host_path(OsStr::from_bytes(b"-extra\t\x80")), b"").unwrap();

    let d = diff_trees_with(
        ("node1", &tree_snapshot(n1.host_data_dir()).unwrap()),
        ("node2", &tree_snapshot(n2.host_data_dir()).unwrap()),
        DiffOptions::default(),
    );
    assert_eq!(
        d,
        [
            r#""-extra\t\x80": only on node1"#,
            r#""new\nline": content "same" on node1, "changed\n" on node2"#,
            r#""not-utf8-\xff\xfe": only on node1"#,
        ]
    );
    assert_eq!(tb.differences().unwrap(), d);
}
