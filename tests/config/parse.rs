//! csync2.cfg reading: every construct, every error with its
//! `FILE:LINE:COL`, and (where cheap) the real csync2 accepting or
//! rejecting the same file (`csync2 -N n1 -L` in a sandbox: exit 1 means
//! rejected, 0 or 2 accepted).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use csync2_watch::config::PatternKind;
use csync2_watch::plan::{Analysis, LoadOptions, Plan};

use crate::support::{CfgDir, BIN};

/// A configuration directory (key `etc/k.key`) with a database directory
/// `db` for the real csync2.
fn env() -> CfgDir {
    let e = CfgDir::new("c2w-cfg.", "k.key");
    e.mkdir("db");
    e
}

fn analyze(e: &CfgDir, node: &str) -> Analysis {
    Plan::analyze(&LoadOptions {
        system_dir: e.etc(),
        cfg_name: None,
        node: Some(node.into()),
    })
}

/// Does the real csync2 accept the config for node `n1`?
fn csync2_accepts(e: &CfgDir) -> (bool, String) {
    let out = Command::new("csync2")
        .env("CSYNC2_SYSTEM_DIR", e.etc())
        .args(["-N", "n1", "-D"])
        .arg(e.path("db"))
        .arg("-L")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let code = out.status.code().unwrap_or(-1);
    (
        code == 0 || code == 2,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const G: &str = "nossl * *;\ngroup g {\n host n1 n2;\n key k.key;\n include /data;\n}\n";

/// Errors for `text`, which the real csync2 must reject too.
fn errors_of(text: &str) -> (CfgDir, Vec<String>) {
    let e = env();
    e.write(text);
    let a = analyze(&e, "n1");
    let (ok, stderr) = csync2_accepts(&e);
    assert!(!ok, "csync2 accepts what we reject:\n{text}");
    assert!(
        !a.errors.is_empty(),
        "no error for:\n{text}\ncsync2 said: {stderr}"
    );
    (e, a.errors)
}

/// Assert one error at `line:col` containing `needle`.
fn assert_error(text: &str, line: u32, col: u32, needle: &str) {
    let (e, errs) = errors_of(text);
    let want = format!("{}:{line}:{col}: ", e.cfg().display());
    assert!(
        errs.iter()
            .any(|m| m.starts_with(&want) && m.contains(needle)),
        "expected `{want}...{needle}...` in {errs:#?}"
    );
}

fn accepted(text: &str) -> (CfgDir, Analysis) {
    let e = env();
    e.write(text);
    let a = analyze(&e, "n1");
    let (ok, stderr) = csync2_accepts(&e);
    assert!(ok, "csync2 rejects:\n{text}\n{stderr}");
    assert!(
        a.errors.is_empty(),
        "we reject what csync2 accepts: {:#?}",
        a.errors
    );
    (e, a)
}

#[test]
fn every_construct_is_read() {
    let (e, a) = accepted(
        "# comment\nnossl * *; # trailing comment\n\
         database /var/lib/first;\ndatabase /var/lib/second;\n\
         tempdir /tmp/one;\ntempdir \"/tmp/two\";\n\
         ignore uid gid;\nignore mod;\nlock-timeout 30;\n\
         prefix www { on n9: /nope; on n*: /srv/www/; on n1: /late; }\n\
         group web {\n host n1@Me N2 (n3 n4@Four) n5;\n key k.key;\n\
          include /data \"/with space\" %www%/html;\n exclude *.tmp /data/cache/;\n\
          compare /c1 /c2 /c3;\n auto younger;\n backup-directory /var/backup;\n\
          backup-generations 5;\n action {\n  pattern /data/*.conf;\n  exec \"systemctl reload x\";\n\
          logfile /var/log/x;\n  do-local;\n  do-local-only;\n }\n}\n\
         group { host n1 n6; key @ETC@/k.key; include /other; }\n\
         group { host n7 n8; key k.key; }\n",
    );
    let plan = &a.plan;
    assert_eq!(plan.node(), "n1");
    let names: Vec<&str> = plan.groups().iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["web", "group_1", "group_2"]);
    let web = &plan.groups()[0];
    assert_eq!(web.myname.as_deref(), Some("me"));
    assert!(web.active && !plan.groups()[2].active);
    let hosts: Vec<(&str, bool)> = web.hosts.iter().map(|(n, _, s)| (n.as_str(), *s)).collect();
    assert_eq!(
        hosts,
        [("n2", false), ("n3", true), ("four", true), ("n5", false)]
    );
    let peers: Vec<(&str, bool)> = plan
        .peers()
        .iter()
        .map(|p| (p.name.as_str(), p.slave))
        .collect();
    assert_eq!(
        peers,
        [
            ("n2", false),
            ("n3", true),
            ("four", true),
            ("n5", false),
            ("n6", false)
        ]
    );
    assert_eq!(web.auto, "younger");
    assert_eq!(
        web.key_file.as_deref(),
        Some(e.etc().join("k.key").as_path())
    );
    let kinds: Vec<(PatternKind, String)> = web
        .patterns
        .iter()
        .map(|p| (p.kind, String::from_utf8_lossy(&p.pattern).into_owned()))
        .collect();
    use PatternKind::*;
    assert_eq!(
        kinds,
        [
            (Include, "/data".into()),
            (Include, "/with space".into()),
            (Include, "%www%/html".into()),
            (Exclude, "*.tmp".into()),
            (Exclude, "/data/cache/".into()),
            (CompareInclude, "/c1".into()),
            (CompareInclude, "/c2".into()),
            (Compare, "/c3".into()),
        ]
    );
    assert_eq!(
        plan.database().map(|d| d.to_str().unwrap()),
        Some("/var/lib/first")
    );
    assert_eq!(plan.tempdir(), Some(Path::new("/tmp/two")));
    assert_eq!(plan.lock_timeout(), 30);
    assert_eq!(
        plan.prefixes()[0].path.as_deref(),
        Some(Path::new("/srv/www"))
    );
    let roots: Vec<&Path> = plan.roots().iter().map(PathBuf::as_path).collect();
    assert_eq!(
        roots,
        [
            Path::new("/c1"),
            Path::new("/c2"),
            Path::new("/data"),
            Path::new("/other"),
            Path::new("/srv/www/html"),
            Path::new("/with space"),
        ]
    );
    // The compare quirk and the ignored second database are warned about.
    assert!(plan
        .warnings()
        .iter()
        .any(|w| w.contains("compare") && w.contains(":16:")));
    assert!(plan
        .warnings()
        .iter()
        .any(|w| w.contains(":4:") && w.contains("database")));
}

#[test]
fn strings_span_lines_and_line_numbers_follow() {
    let (e, errs) = errors_of(
        "nossl * *;\ngroup g {\n host n1 n2;\n key k.key;\n include \"/a\nb\n\";\n includ /x;\n}\n",
    );
    let want = format!("{}:8:2: unknown keyword `includ`", e.cfg().display());
    assert!(
        errs.iter()
            .any(|m| m.starts_with(&want) && m.contains("did you mean `include`?")),
        "{errs:#?}"
    );
    let (_, a) =
        accepted("nossl * *;\ngroup g {\n host n1 n2;\n key k.key;\n include \"/a\nb\";\n}\n");
    assert_eq!(a.plan.groups()[0].patterns[0].pattern, b"/a\nb");
}

#[test]
fn error_unknown_keyword_with_suggestion() {
    assert_error(
        "nossl * *;\ngroup g {\n host n1 n2;\n key k.key;\n inclde /data;\n}\n",
        5,
        2,
        "did you mean `include`?",
    );
    assert_error(
        "nossl * *;\ngrup g { host n1; key k.key; }\n",
        2,
        1,
        "did you mean `group`?",
    );
}

#[test]
fn error_unterminated_string() {
    assert_error(
        "nossl * *;\ngroup g {\n host n1 n2;\n key k.key;\n include \"/data;\n}\n",
        5,
        10,
        "unterminated string",
    );
}

#[test]
fn error_missing_semicolon_is_reported_after_the_statement() {
    assert_error(
        "nossl * *;\ngroup g {\n host n1 n2;\n key k.key;\n include /data\n exclude /x;\n}\n",
        5,
        15,
        "missing `;`",
    );
    // Recovery: the statement after the missing `;` is still read.
    let (_, errs) = errors_of(
        "nossl * *;\ngroup g {\n host n1 n2\n key k.key;\n include /data;\n includ /x;\n}\n",
    );
    assert_eq!(errs.len(), 2, "{errs:#?}");
}

#[test]
fn error_key_file_missing_short_bad_second_and_absent() {
    assert_error(
        "nossl * *;\ngroup g {\n host n1 n2;\n key nokey;\n include /data;\n}\n",
        4,
        6,
        "csync2 -k",
    );
    let (e, errs) = {
        let e = env();
        std::fs::write(e.etc().join("short.key"), "abc\n").unwrap();
        std::fs::write(e.etc().join("bad.key"), format!("{}-x\n", "a".repeat(40))).unwrap();
        e.write(
            "nossl * *;\ngroup g {\n host n1 n2;\n key short.key;\n include /data;\n}\n\
             group h {\n host n1 n2;\n key bad.key;\n key k.key;\n}\ngroup i { host n1; }\n",
        );
        let (ok, _) = csync2_accepts(&e);
        assert!(!ok);
        let a = analyze(&e, "n1");
        (e, a.errors)
    };
    let f = e.cfg().display().to_string();
    for (pos, needle) in [
        ("4:6", "too short"),
        ("9:6", "does not allow"),
        ("10:6", "second `key`"),
        ("12:1", "no `key`"),
    ] {
        assert!(
            errs.iter()
                .any(|m| m.starts_with(&format!("{f}:{pos}: ")) && m.contains(needle)),
            "{pos} {needle}: {errs:#?}"
        );
    }
}

#[test]
fn error_node_in_no_group() {
    let e = env();
    e.write(G);
    let a = analyze(&e, "stranger");
    assert!(
        a.errors
            .iter()
            .any(|m| m.contains(":3:7: ") && m.contains("not a member of any group")),
        "{:#?}",
        a.errors
    );
}

#[test]
fn error_semantic_checks_csync2_dies_on() {
    assert_error(
        &G.replace("include", "auto foo;\n include"),
        5,
        7,
        "unknown auto method",
    );
    assert_error(
        &G.replace("include", "auto none;\n auto left;\n include"),
        6,
        7,
        "second `auto`",
    );
    assert_error(
        &format!("{G}ignore uid foo;\n"),
        7,
        12,
        "unknown `ignore` property",
    );
    assert_error(
        &format!("{G}prefix p {{ on n9: relative; }}\n"),
        7,
        19,
        "not absolute",
    );
    assert_error(&format!("{G}no-cygwin-lowercase;\n"), 7, 1, "cygwin");
}

#[test]
fn error_syntax_traps() {
    // `g{` is one word.
    assert_error(
        "nossl * *;\ngroup g{\n host n1;\n key k.key;\n}\n",
        3,
        2,
        "expected `{`",
    );
    // `""` is no token at all.
    assert_error(
        &G.replace("key k.key", "key \"\""),
        4,
        8,
        "expected a key file name",
    );
    // `host1:/p` is one word.
    assert_error(
        &format!("{G}prefix p {{ on n1:/p; }}\n"),
        7,
        15,
        "put a space after the `:`",
    );
    // No `;` after an action block.
    assert_error(
        &G.replace("include /data;", "action { exec x; };"),
        5,
        20,
        "no `;` after an `action",
    );
    // Group statements at the top level.
    assert_error(&format!("{G}include /x;\n"), 7, 1, "belongs inside `group");
    // A keyword where a word is expected must be quoted.
    assert_error(&G.replace("/data", "include"), 5, 10, "must be quoted");
}

#[test]
fn keyword_ties_go_to_keywords_only_at_equal_length() {
    let (_, a) = accepted(
        "nossl * *;\ngroup groups {\n host n1 hosts;\n key k.key;\n include /data/include groupx \"include\";\n}\n",
    );
    let g = &a.plan.groups()[0];
    assert_eq!(g.name, "groups");
    let pats: Vec<&[u8]> = g.patterns.iter().map(|p| p.pattern.as_slice()).collect();
    assert_eq!(pats, [&b"/data/include"[..], b"groupx", b"include"]);
    assert_eq!(a.plan.peers()[0].name, "hosts");
}

#[test]
fn prefix_first_matching_on_wins() {
    let (_, a) = accepted(&format!(
        "{G}prefix p {{ on x*: /x; on [mn]?: /first//; on n1: /second; }}\nprefix q {{ on nomatch: /q; }}\n"
    ));
    assert_eq!(
        a.plan.prefixes()[0].path.as_deref(),
        Some(Path::new("/first"))
    );
    assert_eq!(a.plan.prefixes()[1].path, None);
}

#[test]
fn host_a_at_b_and_case() {
    let (_, a) = accepted(
        "nossl * *;\ngroup g {\n host N1@Alpha (B@Beta) c;\n key k.key;\n include /d;\n}\n",
    );
    let g = &a.plan.groups()[0];
    assert_eq!(g.myname.as_deref(), Some("alpha"));
    let peers: Vec<(&str, bool)> = a
        .plan
        .peers()
        .iter()
        .map(|p| (p.name.as_str(), p.slave))
        .collect();
    assert_eq!(peers, [("beta", true), ("c", false)]);
    // `-N` is lowercased like csync2 does.
    let e = env();
    e.write("nossl * *;\ngroup g {\n host n1@Alpha b;\n key k.key;\n include /d;\n}\n");
    assert_eq!(analyze(&e, "N1").plan.node(), "n1");
    assert!(analyze(&e, "N1").errors.is_empty());
}

#[test]
fn config_includes_nest_and_report_their_own_file() {
    let e = env();
    let inc1 = e.path("inc1.cfg");
    let inc2 = e.path("inc2.cfg");
    std::fs::write(
        &inc1,
        format!(
            "group g {{\n host n1 n2;\n config {};\n include /data;\n}}\n",
            inc2.display()
        ),
    )
    .unwrap();
    std::fs::write(&inc2, "key k.key;\n includ /x;\n").unwrap();
    e.write(&format!("nossl * *;\nconfig {};\n", inc1.display()));
    let a = analyze(&e, "n1");
    let want = format!("{}:2:2: unknown keyword `includ`", inc2.display());
    assert!(
        a.errors.iter().any(|m| m.starts_with(&want)),
        "{:#?}",
        a.errors
    );
    assert_eq!(a.plan.files().len(), 3);
    let (ok, _) = csync2_accepts(&e);
    assert!(!ok);
    // Fixed, it is accepted by both; `config a b;` reads both files.
    std::fs::write(&inc2, "key k.key;\n").unwrap();
    let extra = e.path("extra.cfg");
    std::fs::write(&extra, "tempdir /tmp/x;\n").unwrap();
    e.write(&format!(
        "nossl * *;\nconfig {} {};\n",
        inc1.display(),
        extra.display()
    ));
    let a = analyze(&e, "n1");
    assert!(a.errors.is_empty(), "{:#?}", a.errors);
    assert_eq!(a.plan.tempdir(), Some(Path::new("/tmp/x")));
    assert!(csync2_accepts(&e).0);
}

#[test]
fn config_include_missing_and_nested_too_deeply() {
    assert_error(
        &format!("{G}config /nonexistent/x.cfg;\n"),
        7,
        8,
        "cannot open included config file",
    );
    let e = env();
    // f0 includes f1 ... f10 includes f11: 11 levels, one too many.
    for i in 0..=11 {
        let next = if i < 11 {
            format!("config {};\n", e.path(&format!("f{}.cfg", i + 1)).display())
        } else {
            String::new()
        };
        std::fs::write(e.path(&format!("f{i}.cfg")), next).unwrap();
    }
    e.write(&format!("{G}config {};\n", e.path("f0.cfg").display()));
    let a = analyze(&e, "n1");
    assert!(
        a.errors.iter().any(|m| m.contains("more than 10 deep")),
        "{:#?}",
        a.errors
    );
    assert!(!csync2_accepts(&e).0);
    // Ten levels are fine.
    std::fs::write(e.path("f9.cfg"), "").unwrap();
    let a = analyze(&e, "n1");
    assert!(a.errors.is_empty(), "{:#?}", a.errors);
    assert!(csync2_accepts(&e).0);
}

#[test]
fn relative_config_includes_follow_the_working_directory() {
    // Run the binary from a directory holding `inc.cfg`: csync2 opens
    // `config` paths relative to its working directory, not the file's.
    let e = env();
    std::fs::write(
        e.path("inc.cfg"),
        e.expand("group g { host n1 n2; key k.key; include @D@; }\n"),
    )
    .unwrap();
    e.write("nossl * *;\nconfig inc.cfg;\n");
    let run = |cwd: &Path| {
        Command::new(BIN)
            .env("CSYNC2_SYSTEM_DIR", e.etc())
            .args(["check-config", "-N", "n1"])
            .current_dir(cwd)
            .output()
            .unwrap()
    };
    let ok = run(&e.path(""));
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        String::from_utf8_lossy(&ok.stderr).contains("relative to the directory csync2 runs in")
    );
    let bad = run(&e.etc());
    assert_eq!(bad.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cannot open included config file"));
}

#[test]
fn cfg_name_and_system_dir_select_the_file() {
    let e = env();
    std::fs::write(
        e.etc().join("csync2_web2.cfg"),
        e.expand(&G.replace("/data", "@D@")),
    )
    .unwrap();
    let run = |args: &[&str], sysdir: &Path| {
        Command::new(BIN)
            .env("CSYNC2_SYSTEM_DIR", sysdir)
            .args(args)
            .output()
            .unwrap()
    };
    let ok = run(
        &["check-config", "-N", "n1", "-C", "web2", "--json"],
        &e.etc(),
    );
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(
        v["config_files"][0],
        e.etc().join("csync2_web2.cfg").to_str().unwrap()
    );
    assert_eq!(v["cfg_name"], "web2");
    assert_eq!(
        v["database_default"],
        "sqlite3:///var/lib/csync2/n1_web2.db3"
    );
    let bad = run(&["check-config", "-N", "n1", "-C", "Web2"], &e.etc());
    assert_eq!(bad.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("[a-z0-9]+"));
    // No csync2.cfg in this system dir.
    let missing = run(&["check-config", "-N", "n1"], &e.etc());
    assert_eq!(missing.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("csync2.cfg:1:1: cannot open"));
}

#[test]
fn config_directive_with_only_a_semicolon_is_a_no_op() {
    // `include config; /data;`: `config` swallows the `;`, leaving
    // `include /data;` for both csync2 and us.
    let (_, a) =
        accepted("nossl * *;\ngroup g {\n host n1 n2;\n key k.key;\n include config; /data;\n}\n");
    assert_eq!(a.plan.groups()[0].patterns[0].pattern, b"/data");
}
