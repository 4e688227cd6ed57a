//! What the integration tests share: the daemon binary under test, a
//! temporary csync2 configuration directory, running a test of this binary
//! again as a child process, and proptest's regression files; and, by
//! topic, the test cluster ([`testbed`], [`cluster`]), the csync2 node
//! sandbox of the runner and server tests ([`sandbox`]) and the watcher
//! tests' helpers ([`watch`]).

#![allow(dead_code)]

pub mod cluster;
pub mod sandbox;
pub mod testbed;
pub mod watch;

use std::path::PathBuf;
use std::process::Command;

/// The csync2-watch binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_csync2-watch");

/// This test binary (to run one of its tests again as a child process).
pub fn this_test_binary() -> PathBuf {
    std::env::current_exe().expect("current_exe")
}

/// The name libtest knows test `name` by, when it is defined in module
/// `module` (pass `module_path!()`): `main::journal::crash` and
/// `crash_child` make `journal::crash::crash_child`. Panics unless exactly
/// one test of this binary has that name: `--exact` with a name that
/// matches nothing runs nothing and passes, which would let a test whose
/// child process tests nothing pass.
pub fn test_path(module: &str, name: &str) -> String {
    let path = path_in_binary(module, name);
    let out = Command::new(this_test_binary())
        .args(["--list", "--exact", &path])
        .output()
        .expect("listing this binary's tests");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let found = stdout.lines().filter(|l| l.ends_with(": test")).count();
    assert!(
        out.status.success() && found == 1,
        "{path} matches {found} tests of this binary, not 1 (matches no test when the name lacks its module path):\n{stdout}"
    );
    path
}

fn path_in_binary(module: &str, name: &str) -> String {
    // module_path!() starts with the crate's name (`main`), which test
    // names leave out.
    match module.split_once("::") {
        Some((_, rest)) => format!("{rest}::{name}"),
        None => name.to_string(),
    }
}

/// Set in a process that [`alone`] started, to the test it runs.
const ALONE_ENV: &str = "CSYNC2_WATCH_TEST_ALONE";

/// For a test that must have its process to itself, because it looks at
/// what the whole process holds (its inotify instances, its testbeds):
/// start the test like this, with its own name,
///
/// ```ignore
/// if !alone(module_path!(), "the_test") {
///     return;
/// }
/// ```
///
/// Run among the others, `alone` runs the test again in a new process of
/// this binary, alone there, asserts that it passed, and returns false (the
/// test is done). In that new process it returns true: the test goes on.
pub fn alone(module: &str, name: &str) -> bool {
    if std::env::var(ALONE_ENV).is_ok_and(|t| t == path_in_binary(module, name)) {
        return true;
    }
    let path = test_path(module, name);
    let out = Command::new(this_test_binary())
        .args(["--exact", &path, "--nocapture", "--test-threads=1"])
        .env(ALONE_ENV, &path)
        .output()
        .expect("running this test binary again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{path}, run alone in a new process, failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("1 passed"),
        "{path} did not run in its new process:\n{stdout}\n{stderr}"
    );
    false
}

/// `config` with failing cases saved beside the test's source file
/// (`tests/config/fnmatch_libc.proptest-regressions` for
/// `tests/config/fnmatch_libc.rs`), where they are kept in git. proptest's
/// default looks for the nearest directory holding a `main.rs` (here
/// `tests/`) and would use `proptest-regressions/config/fnmatch_libc.txt`
/// at the top of the tree instead, which git ignores.
pub fn beside_source(config: proptest::test_runner::Config) -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..config
    }
}

/// A csync2 system directory in a temporary directory (removed on drop):
/// `etc/` (the `CSYNC2_SYSTEM_DIR`) with a group key made by `csync2 -k`,
/// and whatever a test puts beside it. Paths are canonical, as csync2 and
/// csync2-watch print them.
pub struct CfgDir {
    dir: tempfile::TempDir,
    base: PathBuf,
}

impl CfgDir {
    /// In a new temporary directory named `<prefix>XXXXXX`, with the key
    /// `etc/<key>`.
    pub fn new(prefix: &str, key: &str) -> CfgDir {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("tempdir");
        let base = std::fs::canonicalize(dir.path()).unwrap();
        let e = CfgDir { dir, base };
        std::fs::create_dir(e.etc()).unwrap();
        let st = Command::new("csync2")
            .arg("-k")
            .arg(e.etc().join(key))
            .status()
            .expect("run csync2 -k");
        assert!(st.success(), "csync2 -k failed");
        e
    }

    /// The temporary directory, canonical.
    pub fn base(&self) -> PathBuf {
        self.base.clone()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.base.join(rel)
    }

    /// Make `rel` (and its parents) below the base.
    pub fn mkdir(&self, rel: &str) {
        std::fs::create_dir_all(self.path(rel)).unwrap();
    }

    /// The `CSYNC2_SYSTEM_DIR`.
    pub fn etc(&self) -> PathBuf {
        self.path("etc")
    }

    /// `etc/csync2.cfg`.
    pub fn cfg(&self) -> PathBuf {
        self.etc().join("csync2.cfg")
    }

    /// `text` with `@ETC@` replaced by [`etc`](Self::etc) and `@D@` by
    /// [`base`](Self::base).
    pub fn expand(&self, text: &str) -> String {
        text.replace("@ETC@", self.etc().to_str().unwrap())
            .replace("@D@", self.base.to_str().unwrap())
    }

    /// Write csync2.cfg: `text`, [expanded](Self::expand).
    pub fn write(&self, text: &str) {
        std::fs::write(self.cfg(), self.expand(text)).unwrap();
    }

    /// `csync2-watch SUBCOMMAND` with this `CSYNC2_SYSTEM_DIR`.
    pub fn csync2_watch(&self, subcommand: &str) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.env("CSYNC2_SYSTEM_DIR", self.etc()).arg(subcommand);
        cmd
    }
}

#[test]
#[should_panic(expected = "matches 0 tests of this binary")]
fn a_child_test_named_without_its_module_path_is_refused() {
    // What `journal::crash` asked for before the tests shared one binary.
    test_path("main", "crash_child");
}

#[test]
fn a_child_test_named_with_its_module_path_is_found() {
    assert_eq!(
        test_path("main::journal::crash", "crash_child"),
        "journal::crash::crash_child"
    );
}

/// The command lines of `pid`'s children (from /proc), to catch a
/// daemon in the middle of a given csync2 run.
pub fn children_of(pid: u32) -> Vec<(i32, Vec<String>)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(child) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces and parentheses.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let ppid: u32 = after
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if ppid != pid {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{child}/cmdline")).unwrap_or_default();
        let args = cmdline
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        out.push((child, args));
    }
    out
}

/// Does `args` hold exactly `flag`?
pub fn has_arg(args: &[String], flag: &str) -> bool {
    args.iter().any(|a| a == flag)
}
