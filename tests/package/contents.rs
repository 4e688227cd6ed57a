//! The built .deb and .rpm (from `scripts/package.sh`) hold exactly the
//! files the packaging promises, with the right metadata, conffiles,
//! dependencies and maintainer scripts; the packaged files are the ones
//! in this tree, the man pages and completions are what the program
//! generates now, and the binary is stripped. Read with the distributions'
//! own tools: `dpkg-deb` and `rpm`; `lintian` and `rpmlint` find no error
//! and no warning that is not overridden with a written reason
//! (packaging/debian/lintian-overrides, packaging/rpm/rpmlint.toml).
//!
//! Packages are looked for in `$CARGO_TARGET_DIR` (else `target/`). When
//! they are missing, or older than the files they package, each test says
//! so on stderr (past cargo's output capture) and passes, except under CI
//! (`CI` set), where it fails: run `scripts/package.sh` first
//! (`scripts/test.sh` does).

use std::collections::BTreeSet;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Files packaged from this tree: (source, Debian path, RPM path).
const PACKAGED: &[(&str, &str, &str)] = &[
    (
        "systemd/csync2-watch.service",
        "/lib/systemd/system/csync2-watch.service",
        "/usr/lib/systemd/system/csync2-watch.service",
    ),
    (
        "systemd/csync2-watch@.service",
        "/lib/systemd/system/csync2-watch@.service",
        "/usr/lib/systemd/system/csync2-watch@.service",
    ),
    (
        "packaging/csync2-watch.toml",
        "/etc/csync2-watch/csync2-watch.toml",
        "/etc/csync2-watch/csync2-watch.toml",
    ),
    (
        "packaging/csync2-watch.default",
        "/etc/default/csync2-watch",
        "/etc/sysconfig/csync2-watch",
    ),
    (
        "csync2.cfg.example",
        "/usr/share/doc/csync2-watch/csync2.cfg.example",
        "/usr/share/doc/csync2-watch/csync2.cfg.example",
    ),
    (
        "packaging/sysctl.d/60-csync2-watch.conf",
        "/usr/lib/sysctl.d/60-csync2-watch.conf",
        "/usr/lib/sysctl.d/60-csync2-watch.conf",
    ),
    (
        "packaging/README-install.md",
        "/usr/share/doc/csync2-watch/README-install.md",
        "/usr/share/doc/csync2-watch/README-install.md",
    ),
];
const BINARY: &str = "/usr/sbin/csync2-watch";

/// Generated at packaging time (`csync2-watch generate`): (what, Debian
/// path, RPM path). Man pages are gzipped.
const GENERATED: &[(&str, &str, &str)] = &[
    (
        "man:csync2-watch.8",
        "/usr/share/man/man8/csync2-watch.8.gz",
        "/usr/share/man/man8/csync2-watch.8.gz",
    ),
    (
        "man:csync2-watch.toml.5",
        "/usr/share/man/man5/csync2-watch.toml.5.gz",
        "/usr/share/man/man5/csync2-watch.toml.5.gz",
    ),
    (
        "bash",
        "/usr/share/bash-completion/completions/csync2-watch",
        "/usr/share/bash-completion/completions/csync2-watch",
    ),
    (
        "zsh",
        "/usr/share/zsh/vendor-completions/_csync2-watch",
        "/usr/share/zsh/site-functions/_csync2-watch",
    ),
    (
        "fish",
        "/usr/share/fish/vendor_completions.d/csync2-watch.fish",
        "/usr/share/fish/vendor_completions.d/csync2-watch.fish",
    ),
];

/// What a generated file must hold, from the library itself.
fn generated(what: &str) -> Vec<u8> {
    use csync2_watch::docs;
    match what {
        "man:csync2-watch.8" => docs::man_page().into_bytes(),
        "man:csync2-watch.toml.5" => docs::settings_man_page().into_bytes(),
        shell => {
            let shell = match shell {
                "bash" => clap_complete::Shell::Bash,
                "zsh" => clap_complete::Shell::Zsh,
                _ => clap_complete::Shell::Fish,
            };
            docs::completions(shell)
        }
    }
}

/// `path`'s bytes, gunzipped when it ends in .gz.
fn unpacked(path: &Path) -> Vec<u8> {
    if path.extension().is_some_and(|e| e == "gz") {
        let out = Command::new("gzip").arg("-dc").arg(path).output().unwrap();
        assert!(out.status.success(), "gunzip {}", path.display());
        out.stdout
    } else {
        fs::read(path).unwrap()
    }
}

/// The binary has no symbol table and no debug info.
fn assert_stripped(binary: &Path) {
    let sections = run("readelf", &["-S", "-W", binary.to_str().unwrap()]);
    for bad in [".symtab", ".debug_info", ".debug_line"] {
        assert!(
            !sections.contains(bad),
            "{} is not stripped: it has {bad}",
            binary.display()
        );
    }
}

fn skip(test: &str, why: &str) {
    // CI builds the packages first (scripts/test.sh): there, a missing or
    // stale package is a failure, not a reason to skip.
    if std::env::var_os("CI").is_some() {
        panic!("{test}: {why}");
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| option_env!("CARGO_TARGET_DIR").map(PathBuf::from))
        .unwrap_or_else(|| Path::new(ROOT).join("target"))
}

/// The newest modification time among the non-binary packaged sources.
fn newest_source() -> SystemTime {
    let mut paths: Vec<PathBuf> = PACKAGED.iter().map(|p| Path::new(ROOT).join(p.0)).collect();
    for extra in [
        "Cargo.toml",
        "packaging/debian",
        "packaging/rpm",
        "packaging/copyright",
    ] {
        let p = Path::new(ROOT).join(extra);
        if p.is_dir() {
            paths.extend(fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            paths.push(p);
        }
    }
    paths
        .iter()
        .filter_map(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
        .max()
        .unwrap()
}

/// The package at `path` if it exists and is newer than what it packages.
fn fresh_package(test: &str, path: PathBuf) -> Option<PathBuf> {
    if let Some(missing) = PACKAGED
        .iter()
        .map(|p| Path::new(ROOT).join(p.0))
        .find(|p| !p.exists())
    {
        skip(
            test,
            &format!("{} is missing: nothing to compare with", missing.display()),
        );
        return None;
    }
    let Ok(meta) = fs::metadata(&path) else {
        skip(
            test,
            &format!("{} not built (run scripts/package.sh)", path.display()),
        );
        return None;
    };
    if meta.modified().unwrap() < newest_source() {
        skip(
            test,
            &format!(
                "{} is older than the files it packages (run scripts/package.sh)",
                path.display()
            ),
        );
        return None;
    }
    Some(path)
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn sha256(path: &Path) -> String {
    run("sha256sum", &[path.to_str().unwrap()])
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A maintainer script: valid sh, no enabling or starting of the daemon.
fn check_script(name: &str, body: &str) {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    fs::write(tmp.path(), body).unwrap();
    run("sh", &["-n", tmp.path().to_str().unwrap()]);
    for word in body.split_whitespace().collect::<Vec<_>>().windows(2) {
        if word[0] == "systemctl" {
            assert!(
                !matches!(
                    word[1],
                    "enable" | "start" | "restart" | "reload-or-restart"
                ),
                "{name} runs `systemctl {}`:\n{body}",
                word[1]
            );
        }
    }
}

#[test]
fn deb_holds_the_promised_files_and_metadata() {
    const T: &str = "package::contents::deb";
    let dir = target_dir().join("debian");
    let arch = run("dpkg", &["--print-architecture"]);
    let deb = dir.join(format!("csync2-watch_{VERSION}-1_{}.deb", arch.trim()));
    let Some(deb) = fresh_package(T, deb) else {
        return;
    };
    let deb_s = deb.to_str().unwrap();

    // Control fields.
    let field = |f: &str| run("dpkg-deb", &["-f", deb_s, f]).trim().to_string();
    assert_eq!(field("Package"), "csync2-watch");
    assert_eq!(field("Version"), format!("{VERSION}-1"));
    assert_eq!(field("Architecture"), arch.trim());
    assert_eq!(field("Section"), "admin");
    let depends = field("Depends");
    let names: Vec<&str> = depends
        .split(',')
        .map(|d| d.split_whitespace().next().unwrap_or(""))
        .collect();
    assert!(names.contains(&"csync2"), "Depends: {depends}");
    // csync2 loads libsqlite3.so.0 at run time but only recommends it.
    assert!(names.contains(&"libsqlite3-0"), "Depends: {depends}");
    assert!(
        !field("Maintainer").contains("localhost") && !field("Maintainer").contains("root@"),
        "Maintainer: {}",
        field("Maintainer")
    );

    // The file list: exactly the promised files, plus the generated
    // copyright; the binary root-owned and executable.
    let listing = run("dpkg-deb", &["-c", deb_s]);
    let mut files = BTreeSet::new();
    for line in listing.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (mode, owner, path) = (cols[0], cols[1], cols[5]);
        assert_eq!(owner, "0/0", "{line}");
        if mode.starts_with('-') {
            let path = path.trim_start_matches('.');
            if path == BINARY {
                assert_eq!(mode, "-rwxr-xr-x", "{line}");
            } else {
                assert_eq!(mode, "-rw-r--r--", "{line}");
            }
            files.insert(path.to_string());
        }
    }
    let mut expected: BTreeSet<String> = PACKAGED.iter().map(|p| p.1.to_string()).collect();
    expected.extend(GENERATED.iter().map(|g| g.1.to_string()));
    expected.insert(BINARY.to_string());
    expected.insert("/usr/share/doc/csync2-watch/copyright".to_string());
    expected.insert("/usr/share/doc/csync2-watch/changelog.Debian.gz".to_string());
    expected.insert("/usr/share/lintian/overrides/csync2-watch".to_string());
    assert_eq!(files, expected);

    // Unpacked: the packaged files are this tree's, the binary runs.
    let tmp = tempfile::tempdir().unwrap();
    run("dpkg-deb", &["-x", deb_s, tmp.path().to_str().unwrap()]);
    for (src, dest, _) in PACKAGED {
        let packaged = tmp.path().join(&dest[1..]);
        assert_eq!(
            fs::read(&packaged).unwrap(),
            fs::read(Path::new(ROOT).join(src)).unwrap(),
            "{dest} differs from {src}"
        );
    }
    for (what, dest, _) in GENERATED {
        assert!(
            unpacked(&tmp.path().join(&dest[1..])) == generated(what),
            "{dest} is not what `csync2-watch generate` makes now (run scripts/package.sh)"
        );
    }
    let version = run(
        tmp.path().join(&BINARY[1..]).to_str().unwrap(),
        &["--version"],
    );
    assert_eq!(version.trim(), format!("csync2-watch {VERSION}"));
    assert_stripped(&tmp.path().join(&BINARY[1..]));
    let changelog = String::from_utf8(unpacked(
        &tmp.path()
            .join("usr/share/doc/csync2-watch/changelog.Debian.gz"),
    ))
    .unwrap();
    assert!(
        changelog.starts_with(&format!("csync2-watch ({VERSION}-1) ")),
        "{changelog}"
    );

    // Conffiles and maintainer scripts.
    let control = tempfile::tempdir().unwrap();
    run("dpkg-deb", &["-e", deb_s, control.path().to_str().unwrap()]);
    let conffiles: BTreeSet<String> = fs::read_to_string(control.path().join("conffiles"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        conffiles,
        BTreeSet::from([
            "/etc/csync2-watch/csync2-watch.toml".to_string(),
            "/etc/default/csync2-watch".to_string()
        ])
    );
    for name in ["postinst", "prerm", "postrm"] {
        let path = control.path().join(name);
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "{name} is not executable");
        check_script(name, &fs::read_to_string(&path).unwrap());
    }
    let postinst = fs::read_to_string(control.path().join("postinst")).unwrap();
    assert!(postinst.contains("systemctl daemon-reload"));
    assert!(postinst.contains("install -d -m 0700 /var/lib/csync2-watch"));
    assert!(postinst.contains("chmod 0700 /var/lib/csync2-watch"));

    // lintian: no error, no warning that lacks a written override.
    if Command::new("lintian").arg("--version").output().is_err() {
        panic!("lintian is not installed (scripts/setup.sh installs it)");
    }
    let out = Command::new("lintian")
        .args(["--fail-on", "error,warning", "--pedantic", "-I"])
        .arg(deb_s)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("lintian {}:\n{report}", deb.display());
    assert!(
        out.status.success(),
        "lintian found errors or warnings:\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !report
            .lines()
            .any(|l| l.starts_with("E:") || l.starts_with("W:")),
        "{report}"
    );
}

#[test]
fn rpm_holds_the_promised_files_and_metadata() {
    const T: &str = "package::contents::rpm";
    let arch = std::env::consts::ARCH;
    let rpm = target_dir()
        .join("generate-rpm")
        .join(format!("csync2-watch-{VERSION}-1.{arch}.rpm"));
    let Some(rpm) = fresh_package(T, rpm) else {
        return;
    };
    if Command::new("rpm").arg("--version").output().is_err() {
        skip(
            T,
            "the rpm tool is not installed (scripts/setup.sh installs it)",
        );
        return;
    }
    let rpm_s = rpm.to_str().unwrap();
    let q = |args: &[&str]| {
        let mut a = vec!["-qp"];
        a.extend_from_slice(args);
        a.push(rpm_s);
        run("rpm", &a)
    };

    assert_eq!(
        q(&["--qf", "%{NAME} %{VERSION} %{RELEASE} %{ARCH}"]),
        format!("csync2-watch {VERSION} 1 {arch}")
    );
    let requires = q(&["--requires"]);
    assert!(
        requires
            .lines()
            .any(|l| l.split_whitespace().next() == Some("csync2")),
        "Requires:\n{requires}"
    );
    assert!(
        requires.lines().any(|l| l.starts_with("libsqlite3.so.0()")),
        "Requires:\n{requires}"
    );

    let files: BTreeSet<String> = q(&["-l"]).lines().map(str::to_string).collect();
    let mut expected: BTreeSet<String> = PACKAGED.iter().map(|p| p.2.to_string()).collect();
    expected.extend(GENERATED.iter().map(|g| g.2.to_string()));
    expected.insert(BINARY.to_string());
    expected.insert("/usr/share/doc/csync2-watch/changelog".to_string());
    expected.insert("/usr/share/licenses/csync2-watch/copyright".to_string());
    assert_eq!(files, expected);

    // Config files are %config(noreplace) ("cn"), docs and man pages are
    // %doc ("d").
    for line in q(&["--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]"]).lines() {
        let (path, flags) = line.split_once(' ').unwrap();
        let want = if path.starts_with("/etc/") {
            "cn"
        } else if path.starts_with("/usr/share/doc/")
            || path.starts_with("/usr/share/man/")
            || path.starts_with("/usr/share/licenses/")
        {
            "d"
        } else {
            ""
        };
        assert_eq!(flags, want, "{path}");
    }

    // Payload digests and modes match this tree's files.
    for line in q(&["--dump"]).lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (path, digest, mode, owner) = (cols[0], cols[3], cols[4], cols[5]);
        assert_eq!(owner, "root", "{path}");
        if path == BINARY {
            assert_eq!(mode, "0100755");
            continue;
        }
        assert_eq!(mode, "0100644", "{path}");
        if let Some((what, _, _)) = GENERATED.iter().find(|g| g.2 == path) {
            // Compared below, after unpacking.
            let _ = what;
            continue;
        }
        let src = match path {
            "/usr/share/doc/csync2-watch/changelog" => "packaging/debian/changelog",
            "/usr/share/licenses/csync2-watch/copyright" => "packaging/copyright",
            _ => PACKAGED.iter().find(|p| p.2 == path).unwrap().0,
        };
        assert_eq!(
            digest,
            sha256(&Path::new(ROOT).join(src)),
            "{path} differs from {src}"
        );
    }

    // Scriptlets: valid sh, no enable/start; %post reloads systemd and
    // makes the state directory; %preun stops only on erase.
    let post = q(&["--qf", "%{POSTIN}"]);
    let preun = q(&["--qf", "%{PREUN}"]);
    let postun = q(&["--qf", "%{POSTUN}"]);
    for (name, body) in [("%post", &post), ("%preun", &preun), ("%postun", &postun)] {
        assert!(
            !body.trim().is_empty() && body.trim() != "(none)",
            "{name} missing"
        );
        check_script(name, body);
    }
    assert!(post.contains("systemctl daemon-reload"));
    assert!(post.contains("install -d -m 0700 /var/lib/csync2-watch"));
    assert!(post.contains("chmod 0700 /var/lib/csync2-watch"));
    assert!(preun.contains("\"$1\" -eq 0"));

    // The payload: generated files are current, the binary is stripped.
    let tmp = tempfile::tempdir().unwrap();
    let cpio = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "rpm2cpio '{rpm_s}' | (cd '{}' && cpio -idm --quiet)",
            tmp.path().display()
        ))
        .status()
        .unwrap();
    assert!(cpio.success(), "rpm2cpio | cpio failed");
    for (what, _, dest) in GENERATED {
        assert!(
            unpacked(&tmp.path().join(&dest[1..])) == generated(what),
            "{dest} is not what `csync2-watch generate` makes now (run scripts/package.sh)"
        );
    }
    assert_stripped(&tmp.path().join(&BINARY[1..]));

    // rpmlint: every finding fixed, or filtered with a written reason.
    let out = Command::new("rpmlint")
        .arg("-c")
        .arg(Path::new(ROOT).join("packaging/rpm/rpmlint.toml"))
        .arg(rpm_s)
        .output()
        .unwrap_or_else(|e| panic!("rpmlint: {e} (scripts/setup.sh installs it)"));
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("rpmlint {}:\n{report}", rpm.display());
    assert!(
        out.status.success() && report.contains(" 0 errors, 0 warnings"),
        "rpmlint:\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
