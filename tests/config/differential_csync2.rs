//! Differential test: for each config, the paths the real csync2 records
//! (`csync2 -cr /` into a fresh database, then read back from the `file`
//! table and cross-checked byte for byte against `csync2 -L`) are exactly
//! those `csync2-watch match` marks `+`, over a generated tree of awkward
//! names, and exactly those a watcher walking from `/` with the plan's
//! `TreeFilter` (`descend`/`syncs`) would report.
//!
//! Every csync2 run is sandboxed: its own `CSYNC2_SYSTEM_DIR`, `-C NAME`,
//! `-D DIR` and `-N n1` in a temporary directory removed on drop.
//!
//! To add a config: write a `#[test]` calling [`run_case`] with the config
//! text (`@ROOT@` stands for the tree's root, `@KEY@` for the key file)
//! and the prefixes it defines for node `n1` (to map `%name%` names back).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use csync2_watch::plan::{LoadOptions, Plan};
use csync2_watch::watch::TreeFilter;

use crate::support::{CfgDir, BIN};

const NODE: &str = "n1";

/// A temporary csync2 world: system dir (key `etc/test.key`), database
/// dir `db` and a tree `tree`.
fn sandbox() -> CfgDir {
    let s = CfgDir::new("c2w-diff.", "test.key");
    s.mkdir("db");
    s.mkdir("tree");
    s
}

fn p(root: &Path, rel: &[u8]) -> PathBuf {
    let mut v = root.as_os_str().as_bytes().to_vec();
    v.push(b'/');
    v.extend_from_slice(rel);
    PathBuf::from(OsString::from_vec(v))
}

/// The awkward tree: spaces, newline, tab, leading dash, non-UTF-8, a
/// 255-byte name, glob characters and `%` in names, symlinks (to a file,
/// to a directory, dangling, a loop), a fifo, nested directories.
fn build_tree(root: &Path) {
    let mut long = b"long".to_vec();
    long.resize(255, b'x');
    let files: Vec<Vec<u8>> = vec![
        b"plain".to_vec(),
        b"with space".to_vec(),
        b"new\nline".to_vec(),
        b"tab\there".to_vec(),
        b"-leading".to_vec(),
        b"bad\xff\xfe".to_vec(),
        long,
        b"a*b".to_vec(),
        b"q?".to_vec(),
        b"[x]".to_vec(),
        b"x".to_vec(),
        b"{a,b}".to_vec(),
        b"a".to_vec(),
        b"c,d".to_vec(),
        b"back\\slash".to_vec(),
        b"%pct%".to_vec(),
        b"1digit".to_vec(),
        b"UPPER".to_vec(),
        b"file.txt".to_vec(),
        b"x.tmp/f".to_vec(),
        b"x.tmp/sub/g".to_vec(),
        b"d1/keep/k1".to_vec(),
        b"d1/keep/k2.tmp".to_vec(),
        b"d1/other".to_vec(),
        b"d1/a.log".to_vec(),
        b"d1/important.log".to_vec(),
        b"d1/deep/deeper/deepest".to_vec(),
        b"d1/deep/file.txt".to_vec(),
        b"d2/sub/x1".to_vec(),
        b"d2/sub/y1".to_vec(),
        b"d2/sub/nested/z".to_vec(),
        b"d2/s2".to_vec(),
        b"d2/sp ace/in side".to_vec(),
        b"d2/-dash/\n".to_vec(),
        b"d3/f3".to_vec(),
        b"d3/sub/f4.txt".to_vec(),
        b"n/n/n/n/n/leaf".to_vec(),
        b"dd/x".to_vec(),
        b"dd/xa/y".to_vec(),
        b"caf\xc3\xa9/men\xc3\xbc".to_vec(),
    ];
    for f in &files {
        let path = p(root, f);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"data").unwrap();
    }
    std::fs::create_dir_all(p(root, b"empty dir")).unwrap();
    std::os::unix::fs::symlink("plain", p(root, b"link-file")).unwrap();
    std::os::unix::fs::symlink("d1", p(root, b"link-dir")).unwrap();
    std::os::unix::fs::symlink("nowhere", p(root, b"dangling")).unwrap();
    std::os::unix::fs::symlink("..", p(root, b"d1/loop")).unwrap();
    nix::unistd::mkfifo(
        &p(root, b"d2/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
}

/// Every path in the tree (not following symlinks), the root itself and
/// its ancestors, and a few paths elsewhere.
fn candidates(root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = root.ancestors().map(Path::to_path_buf).collect();
    for e in walkdir::WalkDir::new(root).follow_links(false).min_depth(1) {
        out.push(e.unwrap().into_path());
    }
    out.push(PathBuf::from("/etc/passwd"));
    out.push(PathBuf::from("/nonexistent/x"));
    out.sort();
    out.dedup();
    out
}

fn url_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            let hex = std::str::from_utf8(&s[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

fn csync2(sb: &CfgDir, cfg: &str, args: &[&str]) -> std::process::Output {
    Command::new("csync2")
        .env("CSYNC2_SYSTEM_DIR", sb.etc())
        .args(["-N", NODE, "-C", cfg, "-D"])
        .arg(sb.path("db"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run csync2")
}

/// What csync2 records for `-cr /`: decoded names from the `file` table,
/// after checking that `csync2 -L` prints exactly those rows.
fn csync2_recorded(sb: &CfgDir, cfg: &str) -> Vec<Vec<u8>> {
    let out = csync2(sb, cfg, &["-cr", "/"]);
    assert!(
        out.status.success(),
        "csync2 -cr / failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db = sb.path("db").join(format!("{NODE}_{cfg}.db3"));
    let conn = rusqlite::Connection::open(&db).expect("open csync2's database");
    let mut stmt = conn
        .prepare("SELECT checktxt, filename FROM file ORDER BY filename")
        .unwrap();
    let rows: Vec<(Vec<u8>, Vec<u8>)> = stmt
        .query_map([], |r| {
            Ok((
                r.get_ref(0)?.as_bytes().unwrap().to_vec(),
                r.get_ref(1)?.as_bytes().unwrap().to_vec(),
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut expect_l = Vec::new();
    for (c, f) in &rows {
        expect_l.extend_from_slice(&url_decode(c));
        expect_l.push(b'\t');
        expect_l.extend_from_slice(&url_decode(f));
        expect_l.push(b'\n');
    }
    let l = csync2(sb, cfg, &["-L"]);
    assert_eq!(
        String::from_utf8_lossy(&l.stdout),
        String::from_utf8_lossy(&expect_l),
        "csync2 -L disagrees with its own database"
    );
    rows.into_iter().map(|(_, f)| url_decode(&f)).collect()
}

/// `csync2-watch match --stdin -z` over `paths`: the set marked `+`.
fn match_plus(sb: &CfgDir, cfg: &str, paths: &[PathBuf]) -> BTreeSet<Vec<u8>> {
    let mut child = Command::new(BIN)
        .env("CSYNC2_SYSTEM_DIR", sb.etc())
        .args(["match", "-N", NODE, "-C", cfg, "--stdin", "-z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run csync2-watch match");
    let mut input = Vec::new();
    for p in paths {
        input.extend_from_slice(p.as_os_str().as_bytes());
        input.push(0);
    }
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "match failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut plus = BTreeSet::new();
    let mut n = 0;
    for rec in out.stdout.split(|&c| c == 0).filter(|r| !r.is_empty()) {
        n += 1;
        let tab = rec.iter().position(|&c| c == b'\t').expect("a tab");
        let (head, path) = (&rec[..tab], &rec[tab + 1..]);
        match head.first() {
            Some(b'+') => {
                assert!(head.len() > 2, "`+` record without group");
                plus.insert(path.to_vec());
            }
            Some(b'-') => assert_eq!(head, b"- "),
            _ => panic!("bad record {:?}", String::from_utf8_lossy(rec)),
        }
    }
    assert_eq!(n, paths.len(), "one record per path");
    plus
}

/// A watcher's walk from `/` with the plan as `TreeFilter`: enter real
/// directories (never symlinks) where `descend` says so, report entries
/// where `syncs` says so.
fn watcher_walk(plan: &Plan) -> BTreeSet<Vec<u8>> {
    let mut found = BTreeSet::new();
    if plan.syncs(Path::new("/")) {
        found.insert(b"/".to_vec());
    }
    let mut stack = vec![PathBuf::from("/")];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let path = e.path();
            if plan.syncs(&path) {
                found.insert(path.as_os_str().as_bytes().to_vec());
            }
            let is_dir = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
            if is_dir && plan.descend(&path) {
                stack.push(path);
            }
        }
    }
    found
}

/// Run one config: `config` with `@ROOT@`/`@KEY@` placeholders; `prefixes`
/// maps prefix names to their path for `n1` (with `@ROOT@`).
fn run_case(name: &str, config: &str, prefixes: &[(&str, &str)]) {
    let sb = sandbox();
    let root = sb.path("tree");
    build_tree(&root);
    let root_s = root.to_str().expect("tempdir is UTF-8");
    let key = sb.etc().join("test.key");
    let text = config
        .replace("@ROOT@", root_s)
        .replace("@KEY@", key.to_str().unwrap());
    std::fs::write(sb.etc().join(format!("csync2_{name}.cfg")), &text).unwrap();

    let recorded = csync2_recorded(&sb, name);
    let mut real: BTreeSet<Vec<u8>> = BTreeSet::new();
    for r in recorded {
        if r.first() == Some(&b'%') {
            let end = r[1..].iter().position(|&c| c == b'%').unwrap() + 1;
            let pname = std::str::from_utf8(&r[1..end]).unwrap();
            let (_, ppath) = prefixes
                .iter()
                .find(|(n, _)| *n == pname)
                .unwrap_or_else(|| panic!("undeclared prefix {pname}"));
            let mut v = ppath.replace("@ROOT@", root_s).into_bytes();
            v.extend_from_slice(&r[end + 1..]);
            assert!(real.insert(v), "recorded twice");
        } else {
            real.insert(r);
        }
    }
    assert!(
        !real.is_empty(),
        "{name}: csync2 recorded nothing: a test that cannot fail"
    );

    let cands = candidates(&root);
    let cand_set: BTreeSet<Vec<u8>> = cands
        .iter()
        .map(|c| c.as_os_str().as_bytes().to_vec())
        .collect();
    let outside: Vec<String> = real
        .difference(&cand_set)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    assert!(
        outside.is_empty(),
        "{name}: csync2 recorded paths outside the tree: {outside:?}"
    );

    let plus = match_plus(&sb, name, &cands);
    let show = |s: &BTreeSet<Vec<u8>>| -> Vec<String> {
        s.iter()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect()
    };
    let missing: BTreeSet<Vec<u8>> = real.difference(&plus).cloned().collect();
    let extra: BTreeSet<Vec<u8>> = plus.difference(&real).cloned().collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{name}: match disagrees with csync2\n  csync2 records, match says `-`: {:?}\n  \
         match says `+`, csync2 does not record: {:?}\n config:\n{text}",
        show(&missing),
        show(&extra)
    );

    let plan = Plan::load(&LoadOptions {
        system_dir: sb.etc(),
        cfg_name: Some(name.to_string()),
        node: Some(NODE.to_string()),
    })
    .expect("plan loads");
    let walked = watcher_walk(&plan);
    let missing: BTreeSet<Vec<u8>> = real.difference(&walked).cloned().collect();
    let extra: BTreeSet<Vec<u8>> = walked.difference(&real).cloned().collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{name}: TreeFilter walk disagrees with csync2\n  missed: {:?}\n  extra: {:?}",
        show(&missing),
        show(&extra)
    );
}

const HEAD: &str = "nossl * *;\n";

#[test]
fn diff_include_root_with_basename_exclude_hides_subtree() {
    run_case(
        "basic",
        &format!("{HEAD}group g {{ host n1 n2; key @KEY@; include @ROOT@; exclude *.tmp; }}\n"),
        &[],
    );
}

#[test]
fn diff_included_child_under_excluded_parent() {
    run_case(
        "stepinto",
        &format!(
            "{HEAD}group g {{ host n1 n2; key @KEY@;\n include @ROOT@;\n exclude @ROOT@/d1;\n \
             include @ROOT@/d1/keep;\n exclude @ROOT@/d2/sub;\n include @ROOT@/d2/sub/nested/z;\n}}\n"
        ),
        &[],
    );
}

#[test]
fn diff_star_and_double_star() {
    run_case(
        "stars",
        &format!(
            "{HEAD}group g {{ host n1 n2; key @KEY@;\n include @ROOT@/*/s*;\n \
             include @ROOT@/d1/**/deep*;\n include @ROOT@/n/**;\n include @ROOT@/dd/x*;\n \
             include @ROOT@/d3/**.txt;\n}}\n"
        ),
        &[],
    );
}

#[test]
fn diff_brackets_classes_and_escapes() {
    run_case(
        "brackets",
        &format!(
            "{HEAD}group g {{ host n1 n2; key @KEY@;\n include @ROOT@;\n \
             exclude @ROOT@/[a-c]*;\n exclude [[:digit:]]*;\n exclude [[:upper:]]*;\n \
             include @ROOT@/[[]x];\n include @ROOT@/a\\*b;\n exclude *[!a-z0-9.]?;\n \
             include @ROOT@/q\\?;\n}}\n"
        ),
        &[],
    );
}

#[test]
fn diff_braces_and_commas_are_literal() {
    run_case(
        "braces",
        &format!(
            "{HEAD}group g {{ host n1 n2; key @KEY@;\n include @ROOT@/{{a,b}};\n \
             include @ROOT@/c,d;\n include \"@ROOT@/d2/sp ace\";\n include @ROOT@/%pct%;\n}}\n"
        ),
        &[],
    );
}

#[test]
fn diff_basename_versus_path_patterns() {
    run_case(
        "basename",
        &format!(
            "{HEAD}group g {{ host n1 n2; key @KEY@;\n include @ROOT@;\n \
             exclude \"with space\" -leading \"tab\there\";\n exclude \"in side\";\n \
             exclude other;\n exclude d3;\n}}\n"
        ),
        &[],
    );
}

#[test]
fn diff_last_match_wins_per_kind() {
    run_case(
        "lastmatch",
        &format!(
            "{HEAD}group g {{ host n1 n2; key @KEY@;\n include @ROOT@;\n exclude @ROOT@/d1;\n \
             include @ROOT@/d1;\n exclude *.log;\n include important.log;\n \
             exclude @ROOT@/d2;\n include @ROOT@/d2/sub;\n exclude *1;\n include x1;\n}}\n"
        ),
        &[],
    );
}

#[test]
fn diff_multiple_groups_and_an_inactive_group() {
    run_case(
        "groups",
        &format!(
            "{HEAD}group a {{ host n1 n2; key @KEY@; include @ROOT@/d1; exclude *.log; }}\n\
             group b {{ host n2 N1; key @KEY@; include @ROOT@/d1/a.log @ROOT@/d2; \
             exclude @ROOT@/d2/sub; }}\n\
             group c {{ host n9 n2; key @KEY@; include @ROOT@/d3 @ROOT@/plain; }}\n\
             group {{ host n1@other (n3); key @KEY@; include @ROOT@/x.tmp/sub; }}\n"
        ),
        &[],
    );
}

#[test]
fn diff_prefix_paths_are_recorded_encoded() {
    run_case(
        "prefix",
        &format!(
            "{HEAD}prefix p {{ on n9: /nowhere; on n*: @ROOT@/d2/; on n1: /ignored; }}\n\
             prefix q {{ on other: /x; }}\n\
             prefix r {{ on n1: @ROOT@/d1/deep; }}\n\
             group g {{ host n1 n2; key @KEY@;\n include %p%/sub;\n exclude %p%/sub/nested;\n \
             include %p%/s2;\n include %q%/x;\n include %r%;\n include @ROOT@/plain;\n}}\n"
        ),
        &[("p", "@ROOT@/d2"), ("r", "@ROOT@/d1/deep")],
    );
}

#[test]
fn diff_prefix_and_real_path_both_included() {
    run_case(
        "prefixboth",
        &format!(
            "{HEAD}prefix p {{ on n1: @ROOT@/d1; }}\n\
             group g {{ host n1 n2; key @KEY@;\n include @ROOT@/d1/keep;\n include %p%/other;\n \
             include %p%/deep/**;\n}}\n"
        ),
        &[("p", "@ROOT@/d1")],
    );
}

#[test]
fn diff_compare_quirk_makes_all_but_last_includes() {
    run_case(
        "compare",
        &format!(
            "{HEAD}group g {{ host n1 n2; key @KEY@;\n compare @ROOT@/d1 @ROOT@/d2 @ROOT@/d3;\n \
             include @ROOT@/plain;\n}}\n"
        ),
        &[],
    );
}

#[test]
fn diff_trailing_slashes_symlinks_and_odd_names() {
    run_case(
        "odd",
        &format!(
            "{HEAD}group g {{ host n1 n2; key @KEY@;\n include @ROOT@/d1///;\n \
             include @ROOT@/link-file @ROOT@/link-dir @ROOT@/dangling @ROOT@/-leading;\n \
             include \"@ROOT@/new\nline\" @ROOT@/long*;\n include @ROOT@/bad*;\n \
             include @ROOT@/caf?*;\n include @ROOT@/empty?dir;\n include @ROOT@/d2/fifo;\n \
             exclude @ROOT@/d1/deep/deeper/;\n}}\n"
        ),
        &[],
    );
}
