//! `csync2-watch match`: record format (`+ GROUP<TAB>PATH`, `- <TAB>PATH`),
//! `-v` explanations, `--stdin` and `-z`, byte-exact awkward paths,
//! relative paths resolved as csync2 resolves them, the group csync2
//! itself would pick, and configuration errors.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Output, Stdio};

use crate::support::CfgDir;

/// A configuration directory with `cfg` as csync2.cfg (`@D@`: the base)
/// and the directories `data/x.tmp`.
fn env(cfg: &str) -> CfgDir {
    let e = CfgDir::new("c2w-match.", "k.key");
    e.mkdir("data/x.tmp");
    e.write(cfg);
    e
}

/// `csync2-watch match ARGS` on it, in `cwd`, fed `stdin`.
fn run(e: &CfgDir, args: &[&str], stdin: &[u8], cwd: &Path) -> Output {
    let mut child = e
        .csync2_watch("match")
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

const CFG: &str =
    "nossl * *;\ngroup www {\n host n1 n2;\n key k.key;\n include @D@/data;\n exclude *.tmp;\n}\n";

#[test]
fn verbose_records_name_the_deciding_pattern() {
    let e = env(CFG);
    let d = e.path("data");
    let d = d.display();
    let out = run(
        &e,
        &[
            "-N",
            "n1",
            "-v",
            &format!("{d}/x"),
            &format!("{d}/x.tmp/f"),
            "/srv/x",
            &format!("{d}/y.tmp"),
        ],
        b"",
        Path::new("/"),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = e.cfg().display().to_string();
    let want = format!(
        "+ www\t{c}:5:include {d}\t{d}/x\n\
         - \t{c}:6:exclude *.tmp (excludes parent {d}/x.tmp)\t{d}/x.tmp/f\n\
         - \tno include pattern matches\t/srv/x\n\
         - \t{c}:6:exclude *.tmp\t{d}/y.tmp\n"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
}

#[test]
fn plain_records_and_nul_terminated_stdin_keep_paths_byte_exact() {
    let e = env(CFG);
    let d = e.path("data");
    let mut input = Vec::new();
    let names: [&[u8]; 4] = [b"new\nline", b"tab\there", b"bad\xff", b"-dash"];
    for n in names {
        input.extend_from_slice(d.as_os_str().as_bytes());
        input.push(b'/');
        input.extend_from_slice(n);
        input.push(0);
    }
    let out = run(&e, &["-N", "n1", "--stdin", "-z"], &input, Path::new("/"));
    assert_eq!(out.status.code(), Some(0));
    let mut want = Vec::new();
    for n in names {
        want.extend_from_slice(b"+ www\t");
        want.extend_from_slice(d.as_os_str().as_bytes());
        want.push(b'/');
        want.extend_from_slice(n);
        want.push(0);
    }
    assert_eq!(out.stdout, want);
    // Newline-separated stdin, plus arguments first.
    let out = run(
        &e,
        &["-N", "n1", "--stdin", "/elsewhere"],
        b"data/a\n\ndata/b.tmp\n",
        &e.base(),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "- \t/elsewhere\n+ www\tdata/a\n- \tdata/b.tmp\n"
    );
}

#[test]
fn relative_paths_are_resolved_like_csync2_getrealfn() {
    let e = env(CFG);
    std::os::unix::fs::symlink(e.path("data"), e.path("via-link")).unwrap();
    std::fs::create_dir(e.path("other")).unwrap();
    // The directory part goes through the symlink; `..` is textual.
    let out = run(
        &e,
        &["-N", "n1", "via-link/f", "other/../data/./g", "via-link"],
        b"",
        &e.base(),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "+ www\tvia-link/f\n+ www\tother/../data/./g\n- \tvia-link\n"
    );
}

#[test]
fn the_group_reported_is_csync2s_first_match_in_reverse_file_order() {
    let e = env(
        "nossl * *;\ngroup first { host n1 n2; key k.key; include @D@/data; }\n\
         group second { host n1 n3; key k.key; include @D@/data/sub; }\n\
         group third { host n9 n1; key k.key; include @D@/data/sub/deeper; }\n\
         group inactive { host n8 n9; key k.key; include @D@; }\n",
    );
    let d = e.path("data");
    let d = d.display();
    let out = run(
        &e,
        &[
            "-N",
            "n1",
            &format!("{d}/sub/deeper/x"),
            &format!("{d}/sub/x"),
            &format!("{d}/x"),
            &format!("{}/etc", e.base().display()),
        ],
        b"",
        Path::new("/"),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "+ third\t{d}/sub/deeper/x\n+ second\t{d}/sub/x\n+ first\t{d}/x\n- \t{}/etc\n",
            e.base().display()
        )
    );
}

#[test]
fn config_errors_exit_3_with_positions() {
    let e = env("nossl * *;\ngroup www {\n host n1 n2;\n key k.key;\n include @D@/data\n}\n");
    let out = run(&e, &["-N", "n1", "/x"], b"", Path::new("/"));
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:5:", e.cfg().display())) && err.contains("missing `;`"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}
