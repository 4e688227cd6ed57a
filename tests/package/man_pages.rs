//! The man pages and completions that `csync2-watch generate` writes (and
//! the packages ship): `man -l` renders both pages without a warning, the
//! rendered text names every subcommand, every setting and every signal
//! the daemon handles, and the completion scripts are valid and know every
//! subcommand. Generated from the program itself, they cannot drift; this
//! test fails when something is left out of them.

use std::path::Path;
use std::process::Command;

use csync2_watch::docs;
use csync2_watch::settings::KEYS;

use crate::support::BIN;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn generate(what: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["generate", what])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "generate {what}: {out:?}");
    dir
}

/// `man -l PAGE` as plain text; fails on any warning groff or man prints.
fn render(page: &Path) -> String {
    let out = Command::new("man")
        .args(["--warnings", "-E", "UTF-8", "-l"])
        .arg(page)
        .env("MANWIDTH", "100")
        .env("MAN_KEEP_FORMATTING", "0")
        .env("LC_ALL", "C.UTF-8")
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .output()
        .unwrap_or_else(|e| panic!("man: {e} (scripts/setup.sh installs man-db)"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "man -l {}: {stderr}", page.display());
    assert!(
        stderr.trim().is_empty(),
        "man -l {} warns:\n{stderr}",
        page.display()
    );
    // Plain text: drop overstriking (bold, underline).
    let raw = String::from_utf8(out.stdout).unwrap();
    let mut text = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if chars.peek() == Some(&'\u{8}') {
            chars.next();
            continue;
        }
        text.push(c);
    }
    text
}

#[test]
fn csync2_watch_8_renders_every_subcommand_and_signal() {
    let dir = generate("man");
    let text = render(&dir.path().join("csync2-watch.8"));
    let cmd = docs::command();
    let subs = docs::subcommands(&cmd);
    assert!(subs.len() >= 9, "{} subcommands", subs.len());
    for sub in subs {
        let heading = format!("csync2-watch {}\n", sub.get_name());
        assert!(
            text.contains(&heading),
            "`{}` is missing from csync2-watch(8):\n{text}",
            sub.get_name()
        );
    }
    for name in ["reload", "sysctl", "--pid", "--write", "--state-dir"] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    for section in [
        "SIGNALS",
        "SYSTEMD",
        "FILES",
        "EXIT STATUS",
        "SEE ALSO",
        "WatchdogSec",
    ] {
        assert!(text.contains(section), "{section} missing:\n{text}");
    }
    // Every signal the daemon installs a handler for is documented.
    let daemon = std::fs::read_to_string(Path::new(ROOT).join("src/daemon/mod.rs")).unwrap();
    let mut handled = Vec::new();
    for part in daemon.split("signal_hook::consts::").skip(1) {
        let name: String = part
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        handled.push(name);
    }
    assert!(handled.contains(&"SIGHUP".to_string()), "{handled:?}");
    for sig in &handled {
        assert!(
            docs::SIGNALS.iter().any(|s| s.name == sig),
            "the daemon handles {sig}, docs::SIGNALS does not say what it does"
        );
        assert!(text.contains(sig.as_str()), "{sig} missing:\n{text}");
    }
}

#[test]
fn csync2_watch_toml_5_renders_every_setting() {
    let dir = generate("man");
    let text = render(&dir.path().join("csync2-watch.toml.5"));
    for key in KEYS {
        assert!(
            text.contains(&format!("\n       {key} = ")),
            "setting {key} is missing from csync2-watch.toml(5):\n{text}"
        );
    }
}

#[test]
fn completions_are_valid_and_know_every_subcommand() {
    let dir = generate("completions");
    let cmd = docs::command();
    for (_, name) in docs::COMPLETIONS {
        let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
        for sub in docs::subcommands(&cmd) {
            assert!(
                text.contains(sub.get_name()),
                "{name} does not complete {}",
                sub.get_name()
            );
        }
    }
    let bash = Command::new("bash")
        .arg("-n")
        .arg(dir.path().join("csync2-watch.bash"))
        .status()
        .unwrap();
    assert!(bash.success(), "the bash completion does not parse");
}
