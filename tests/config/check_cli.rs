//! `csync2-watch check-config`: the human report, the JSON object, exit
//! codes, every problem as `FILE:LINE:COL: message`, and the filesystem
//! warnings (tempdir inside a synced tree or on another filesystem).

use std::process::Output;

use crate::support::CfgDir;

/// A configuration directory with `cfg` as csync2.cfg (`@D@`: the base)
/// and the directories `data/tmp`.
fn env(cfg: &str) -> CfgDir {
    let e = CfgDir::new("c2w-check.", "k.key");
    e.mkdir("data/tmp");
    e.write(cfg);
    e
}

/// `csync2-watch check-config ARGS` on it.
fn run(e: &CfgDir, args: &[&str]) -> Output {
    e.csync2_watch("check-config").args(args).output().unwrap()
}

const CFG: &str = "nossl * *;\ngroup www {\n host n1@me n2 (n3@Three);\n key k.key;\n include @D@/data;\n exclude *.tmp;\n}\n";

#[test]
fn human_report_lists_node_groups_peers_roots() {
    let e = env(CFG);
    let out = run(&e, &["-N", "N1"]);
    let so = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{so}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(so.contains("Node: n1 (from -N)"), "{so}");
    assert!(so.contains("www ["), "{so}");
    assert!(so.contains("as me"), "{so}");
    assert!(
        so.contains("peer three (host n3@Three) [slave: receives only]"),
        "{so}"
    );
    assert!(
        so.contains(&format!("{} (ext2/3/4", e.path("data").display()))
            || so.contains(&format!("{} (", e.path("data").display())),
        "{so}"
    );
    assert!(so.contains("*.tmp"), "{so}");
}

#[test]
fn json_has_the_documented_fields() {
    let e = env(CFG);
    let out = run(&e, &["-N", "n1", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["usable"], true);
    assert_eq!(v["node"], "n1");
    assert_eq!(v["node_source"], "flag");
    assert_eq!(v["groups"][0]["name"], "www");
    assert_eq!(v["groups"][0]["myname"], "me");
    assert_eq!(v["groups"][0]["patterns"][1]["kind"], "exclude");
    assert_eq!(v["peers"][1]["name"], "three");
    assert_eq!(v["peers"][1]["slave"], true);
    assert_eq!(v["roots"][0]["path"], e.path("data").to_str().unwrap());
    assert_eq!(v["roots"][0]["exists"], true);
    assert_eq!(v["roots"][0]["network_fs"], serde_json::Value::Null);
    assert_eq!(v["lock_timeout"], 12);
    assert!(v["errors"].as_array().unwrap().is_empty());
}

#[test]
fn errors_exit_3_and_are_listed_with_positions() {
    let e = env(
        "nossl * *;\ngroup www {\n host n1 n2;\n key nokey;\n includ @D@/data;\n include @D@/missing;\n}\n",
    );
    let out = run(&e, &["-N", "n1"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    let cfg = e.path("etc/csync2.cfg").display().to_string();
    assert!(
        err.contains(&format!("{cfg}:4:6: cannot read key file")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{cfg}:5:2: unknown keyword `includ`")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{cfg}:6:10: include root {} does not exist",
            e.path("missing").display()
        )),
        "{err}"
    );
    let json = run(&e, &["-N", "n1", "--json"]);
    assert_eq!(json.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["usable"], false);
    assert_eq!(v["errors"].as_array().unwrap().len(), 3);
    // A node in no group.
    e.write(CFG);
    let out = run(&e, &["-N", "stranger"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains(":3:7: this node (stranger, given with -N) is not a member"));
}

#[test]
fn tempdir_inside_a_synced_tree_is_a_warning() {
    let e = env(&format!("{CFG}tempdir @D@/data/tmp;\n"));
    let out = run(&e, &["-N", "n1"]);
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":8:9: warning: csync2's tempdir") && err.contains("inside a synced tree"),
        "{err}"
    );
    // Excluded from the tree: no warning.
    e.write(&format!("{CFG}tempdir @D@/data/x.tmp;\n"));
    std::fs::create_dir(e.path("data/x.tmp")).unwrap();
    let out = run(&e, &["-N", "n1"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("inside a synced tree"));
}

#[test]
fn tempdir_on_another_filesystem_is_a_warning() {
    let shm = std::path::Path::new("/dev/shm");
    let Ok(meta) = std::fs::metadata(shm) else {
        return;
    };
    let here = std::fs::metadata(std::env::temp_dir()).unwrap();
    use std::os::unix::fs::MetadataExt;
    if meta.dev() == here.dev() {
        return; // no second filesystem to test with on this machine
    }
    let e = env(&format!("{CFG}tempdir /dev/shm;\n"));
    let out = run(&e, &["-N", "n1"]);
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: csync2's tempdir /dev/shm is on another filesystem"),
        "{err}"
    );
}
