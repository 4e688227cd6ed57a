//! The shipped `csync2.cfg.example` is a working csync2 configuration and
//! its comments tell the truth: the real csync2 parses it for each of the
//! three nodes, and, moved under a temporary root, syncs exactly the files
//! the comments say (path vs basename patterns, `*` vs `**`, last match
//! wins, literal braces, the slave-only group).

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/csync2.cfg.example");

fn csync2(etc: &Path, db: &Path, node: &str, args: &[&str]) -> Output {
    Command::new("csync2")
        .env("CSYNC2_SYSTEM_DIR", etc)
        .args(["-N", node, "-D"])
        .arg(db)
        .args(args)
        .output()
        .expect("csync2 is installed (scripts/setup.sh)")
}

/// A sandbox system dir holding `cfg` as csync2.cfg and a fresh key.
fn sandbox(cfg: &str) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let etc = tmp.path().join("etc");
    let db = tmp.path().join("db");
    fs::create_dir(&etc).unwrap();
    fs::create_dir(&db).unwrap();
    fs::write(etc.join("csync2.cfg"), cfg).unwrap();
    let st = Command::new("csync2")
        .arg("-k")
        .arg(etc.join("csync2.key"))
        .status()
        .unwrap();
    assert!(st.success());
    (tmp, etc, db)
}

#[test]
fn example_parses_for_every_node() {
    let cfg = fs::read_to_string(EXAMPLE).unwrap();
    let (_tmp, etc, db) = sandbox(&cfg);
    for node in ["node1", "node2", "node3"] {
        let out = csync2(&etc, &db, node, &["-L"]);
        // -L exits 2 when it lists nothing (an empty database).
        assert_eq!(
            out.status.code(),
            Some(2),
            "{node}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A node not in the example is rejected: the file really was read.
    let out = csync2(&etc, &db, "node4", &["-L"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a member"));
}

#[test]
fn example_syncs_what_its_comments_say() {
    let tmp_root = tempfile::tempdir().unwrap();
    let root = tmp_root.path().to_str().unwrap().to_string();
    let cfg = fs::read_to_string(EXAMPLE)
        .unwrap()
        .replace("/srv/", &format!("{root}/srv/"))
        .replace("/var/backups/", &format!("{root}/var/backups/"));
    let (_tmp, etc, db) = sandbox(&cfg);

    let dirs = [
        "srv/csync2-tmp",
        "srv/www/site1/cache/x",
        "srv/www/site1/sub/cache",
        "srv/www/site1/conf",
        "srv/www/site1/node_modules/m",
        "srv/www/deep/er/node_modules",
        "srv/www/a/b/c/upload-tmp",
        "srv/www/upload-tmp",
        "srv/uploads/u",
        "srv/other",
    ];
    for d in dirs {
        fs::create_dir_all(Path::new(&root).join(d)).unwrap();
    }
    let files = [
        "srv/www/site1/index.html",
        "srv/www/site1/cache/x/c.html",
        "srv/www/site1/sub/cache/ok",
        "srv/www/site1/conf/a.conf",
        "srv/www/site1/node_modules/m/i.js",
        "srv/www/site1/x~",
        "srv/www/site1/a.swp",
        "srv/www/site1/p.tmp",
        "srv/www/site1/.htaccess",
        "srv/www/site1/.hidden",
        "srv/www/site1/{a,b}",
        "srv/www/site1/a",
        "srv/www/a/b/c/upload-tmp/f",
        "srv/www/a/b/c/keep",
        "srv/www/upload-tmp/top",
        "srv/uploads/u/f",
        "srv/uploads/u/f.part",
        "srv/other/no",
    ];
    for f in files {
        fs::write(Path::new(&root).join(f), b"x").unwrap();
    }

    let out = csync2(&etc, &db, "node1", &["-cr", "/"]);
    assert!(
        out.status.success(),
        "csync2 -cr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = csync2(&etc, &db, "node1", &["-L"]);
    assert!(out.status.success());
    // `-L` prints CHECKTXT<TAB>PATH; these test names have no tab/newline.
    let recorded: BTreeSet<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(_, p)| p.strip_prefix(&root).unwrap().to_string())
        .collect();
    let expected: BTreeSet<String> = [
        "/srv/uploads",
        "/srv/uploads/u",
        "/srv/uploads/u/f",
        "/srv/www",
        "/srv/www/a",
        "/srv/www/a/b",
        "/srv/www/a/b/c",
        "/srv/www/a/b/c/keep",
        "/srv/www/deep",
        "/srv/www/deep/er",
        "/srv/www/site1",
        "/srv/www/site1/.htaccess",
        "/srv/www/site1/a",
        "/srv/www/site1/conf",
        "/srv/www/site1/conf/a.conf",
        "/srv/www/site1/index.html",
        "/srv/www/site1/sub",
        "/srv/www/site1/sub/cache",
        "/srv/www/site1/sub/cache/ok",
        "/srv/www/site1/{a,b}",
        "/srv/www/upload-tmp",
        "/srv/www/upload-tmp/top",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(recorded, expected);
}
