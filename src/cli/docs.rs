//! The man pages and shell completions, generated from the sources the
//! program itself uses, so that they cannot drift: `csync2-watch(8)` from
//! the clap command line (every subcommand and option, with its help
//! text) plus the signals the daemon handles, and `csync2-watch.toml(5)`
//! from [`crate::settings::SETTINGS`]. The hidden `csync2-watch generate
//! man|completions DIR` ([`generate`]) writes them at packaging time
//! (`scripts/package.sh`).
//!
//! Layer: command line (it documents [`super::Cli`], so it lives beside
//! it). Imports the command line and [`crate::settings`].

#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::CommandFactory as _;

use crate::exit;
use crate::settings::SETTINGS;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The whole command line, as clap sees it (built: `--help` and
/// `--version` included).
pub fn command() -> clap::Command {
    let mut cmd = super::Cli::command();
    cmd.build();
    cmd
}

/// A signal the daemon acts on, and what it does.
pub struct SignalDoc {
    pub name: &'static str,
    pub doc: &'static str,
}

/// Every signal `csync2-watch run` handles (a test compares this with the
/// daemon's signal set).
pub const SIGNALS: &[SignalDoc] = &[
    SignalDoc {
        name: "SIGHUP",
        doc: "Re-read csync2.cfg and the settings file (with the same --config and --set), then \
              run a full check. A broken file is logged and the old one kept. `systemctl reload` \
              and `csync2-watch reload` send it.",
    },
    SignalDoc {
        name: "SIGTERM",
        doc: "Finish the batch in hand, push it to the peers that answer, stop the managed \
              csync2 server and exit 0. What is still queued stays in the journal and is forced \
              dirty after the next start. `systemctl stop` sends it.",
    },
    SignalDoc {
        name: "SIGINT",
        doc: "As SIGTERM.",
    },
    SignalDoc {
        name: "SIGUSR1",
        doc: "Take the requests `csync2-watch sync` left in the journal; with none, run a full \
              sync.",
    },
];

/// Escape text for roff: backslashes, hyphens (so that options stay
/// minus signs), and a leading `.` or `'` that would read as a request.
pub fn roff_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split('\n') {
        if !out.is_empty() {
            out.push('\n');
        }
        if line.starts_with('.') || line.starts_with('\'') {
            out.push_str("\\&");
        }
        for c in line.chars() {
            match c {
                '\\' => out.push_str("\\e"),
                '-' => out.push_str("\\-"),
                _ => out.push(c),
            }
        }
    }
    out
}

/// Paragraphs of plain text as roff: blank lines start new paragraphs,
/// `` `code` `` is set in bold.
fn paragraphs(out: &mut String, text: &str) {
    for para in text.split("\n\n") {
        let para = para.split_whitespace().collect::<Vec<_>>().join(" ");
        if para.is_empty() {
            continue;
        }
        out.push_str(".PP\n");
        out.push_str(&inline(&para));
        out.push('\n');
    }
}

/// `` `code` `` in bold, the rest escaped.
fn inline(text: &str) -> String {
    let mut out = String::new();
    for (i, part) in text.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "\\fB{}\\fR", roff_escape(part));
        } else {
            out.push_str(&roff_escape(part));
        }
    }
    out
}

fn arg_is_shown(a: &clap::Arg) -> bool {
    !a.is_hide_set()
}

/// `-C NAME`, `--state-dir DIR`, `PATH...` in roff.
fn arg_spec(a: &clap::Arg) -> String {
    let names: Vec<String> = a
        .get_value_names()
        .map(|v| v.iter().map(|n| n.to_string()).collect())
        .unwrap_or_else(|| vec![a.get_id().as_str().to_uppercase()]);
    let takes_value = a.get_action().takes_values();
    let value = if takes_value {
        let many = matches!(a.get_num_args(), Some(r) if r.max_values() > 1);
        format!(
            " \\fI{}\\fR{}",
            roff_escape(&names.join(" ")),
            if many { "..." } else { "" }
        )
    } else {
        String::new()
    };
    if a.is_positional() {
        let many = matches!(a.get_num_args(), Some(r) if r.max_values() > 1);
        return format!(
            "\\fI{}\\fR{}",
            roff_escape(&names.join(" ")),
            if many { "..." } else { "" }
        );
    }
    let mut flags = Vec::new();
    if let Some(s) = a.get_short() {
        flags.push(format!("\\fB\\-{}\\fR{value}", roff_escape(&s.to_string())));
    }
    if let Some(l) = a.get_long() {
        flags.push(format!("\\fB\\-\\-{}\\fR{value}", roff_escape(l)));
    }
    flags.join(", ")
}

fn arg_help(a: &clap::Arg) -> String {
    let mut text = a
        .get_long_help()
        .or_else(|| a.get_help())
        .map(|h| h.to_string())
        .unwrap_or_default();
    let possible: Vec<String> = a
        .get_possible_values()
        .iter()
        .filter(|p| !p.is_hide_set())
        .map(|p| match p.get_help() {
            Some(h) => format!("`{}`: {h}", p.get_name()),
            None => format!("`{}`", p.get_name()),
        })
        .collect();
    if !possible.is_empty() && a.get_action().takes_values() {
        let _ = write!(text, " One of: {}.", possible.join("; "));
    }
    let defaults: Vec<String> = a
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    if !defaults.is_empty() && a.get_action().takes_values() {
        let _ = write!(text, " [default: {}]", defaults.join(" "));
    }
    text
}

/// The subcommands a user sees (not the hidden `generate`, nor `help`).
pub fn subcommands(cmd: &clap::Command) -> Vec<&clap::Command> {
    cmd.get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .collect()
}

/// `csync2-watch(8)`.
pub fn man_page() -> String {
    let cmd = command();
    let mut out = String::new();
    let _ = writeln!(
        out,
        ".TH CSYNC2\\-WATCH 8 \"\" \"csync2\\-watch {VERSION}\" \"System Administration\""
    );
    out.push_str(".SH NAME\ncsync2\\-watch \\- keep a csync2 cluster in sync within a second of any change\n");
    out.push_str(".SH SYNOPSIS\n");
    for sub in subcommands(&cmd) {
        let _ = writeln!(
            out,
            ".br\n\\fBcsync2\\-watch\\fR \\fB{}\\fR [\\fIOPTIONS\\fR]{}",
            roff_escape(sub.get_name()),
            sub.get_arguments()
                .filter(|a| a.is_positional() && arg_is_shown(a))
                .map(|a| format!(" [{}]", arg_spec(a)))
                .collect::<String>()
        );
    }
    out.push_str(".br\n\\fBcsync2\\-watch\\fR \\fB\\-\\-help\\fR | \\fB\\-\\-version\\fR\n");
    out.push_str(".SH DESCRIPTION\n");
    paragraphs(
        &mut out,
        "csync2-watch keeps a csync2(8) cluster identical within a second of any change. \
         Installed on every node and started at boot by systemd (`csync2-watch.service`, or \
         `csync2-watch@NAME.service` for /etc/csync2_NAME.cfg), it reads csync2.cfg exactly as \
         csync2 does, watches every synced tree with inotify, journals changed paths durably, \
         and drives the real csync2 binary: it checks the changed files, then updates the peers \
         that answer a probe, while it supervises the local `csync2 -ii` and keeps out of its \
         way.\n\n\
         A reconcile walks every synced tree, compares each path's lstat with the daemon's stat \
         cache (what csync2 last recorded, as the daemon knows it) and hands csync2 only what \
         appeared, vanished or differs: `csync2 -c`, then `csync2 -m` for a change csync2's own \
         check text cannot see (a same-size edit within the second, `touch -d` back to the old \
         time, a `cp -p` of another version). It runs at start-up, every \
         `full_sync_interval`, after an inotify overflow or a failed watch, and every \
         `blind_poll_interval` for trees on network and FUSE filesystems, where inotify cannot \
         see other machines' writes. csync2's own full check (`csync2 -cr /`) runs after a \
         reconcile every `deep_check_interval` and on `csync2-watch sync --full --deep`.\n\n\
         The options -C, -N, -D and -p mean what they mean to csync2. csync2-watch's own \
         settings are in csync2-watch.toml(5).",
    );
    out.push_str(".SH COMMANDS\n");
    for sub in subcommands(&cmd) {
        let _ = writeln!(
            out,
            ".SS \"csync2\\-watch {}\"",
            roff_escape(sub.get_name())
        );
        let about = sub
            .get_long_about()
            .or_else(|| sub.get_about())
            .map(|a| a.to_string())
            .unwrap_or_default();
        paragraphs(&mut out, &about);
        for a in sub.get_arguments().filter(|a| arg_is_shown(a)) {
            let _ = writeln!(out, ".TP\n{}\n{}", arg_spec(a), inline(&arg_help(a)));
        }
    }
    out.push_str(".SH OPTIONS\n");
    for a in cmd.get_arguments().filter(|a| arg_is_shown(a)) {
        let _ = writeln!(out, ".TP\n{}\n{}", arg_spec(a), inline(&arg_help(a)));
    }
    out.push_str(".SH SIGNALS\nThe daemon (\\fBcsync2\\-watch run\\fR) acts on these signals:\n");
    for s in SIGNALS {
        let _ = writeln!(out, ".TP\n\\fB{}\\fR\n{}", s.name, inline(s.doc));
    }
    out.push_str(".SH SYSTEMD\n");
    paragraphs(
        &mut out,
        "The units are `Type=notify`: the daemon reports ready once every watch is in place, \
         and its status line says what it does. `ExecReload` runs `csync2-watch reload --pid \
         $MAINPID`, so `systemctl reload` needs no other program.\n\n\
         `WatchdogSec=` is set: while its control loop is alive the daemon sends WATCHDOG=1 at \
         half that interval. It also keeps sending while it legitimately waits: for the local \
         csync2 server to be quiet, or on a csync2 client run that is making progress (the \
         run itself is killed after `stall_timeout` without progress). A daemon that is frozen \
         or whose control loop is stuck stops sending, and systemd kills and restarts it.\n\n\
         Nothing is lost by a kill: every change is journaled before csync2 sees it, the \
         start-up reconcile finds what changed while the daemon was down, and what was still \
         journaled is forced dirty.",
    );
    out.push_str(".SH ENVIRONMENT\n");
    for (name, doc) in [
        (
            "CSYNC2_SYSTEM_DIR",
            "Where csync2.cfg, the key files and csync2's certificate live (csync2's own \
             variable, default /etc); passed on to csync2.",
        ),
        (
            "CSYNC2_WATCH_LOG",
            "Log filter in tracing's EnvFilter syntax, e.g. `csync2_watch=debug`; default info.",
        ),
        (
            "CSYNC2_WATCH_OPTS",
            "Read by the units from /etc/default/csync2-watch (Debian) or \
             /etc/sysconfig/csync2-watch (RPM): extra options for `run`, such as `-N node1`.",
        ),
    ] {
        let _ = writeln!(out, ".TP\n\\fB{name}\\fR\n{}", inline(doc));
    }
    out.push_str(".SH FILES\n");
    for (path, doc) in [
        (
            "/etc/csync2.cfg, /etc/csync2_NAME.cfg",
            "csync2's configuration (`-C NAME`).",
        ),
        (
            "/etc/csync2-watch/csync2-watch.toml",
            "csync2-watch's settings; see csync2-watch.toml(5).",
        ),
        (
            "/var/lib/csync2-watch/NODE[_NAME]/",
            "State, root's alone (0700): the journal, `status.json` (what `status` prints) and \
             `metrics.prom` (Prometheus text format).",
        ),
        (
            "/usr/lib/sysctl.d/60-csync2-watch.conf",
            "The packaged inotify limits. `csync2-watch sysctl --write` writes \
             /etc/sysctl.d/60-csync2-watch.conf, which replaces it, sized for this node.",
        ),
    ] {
        let _ = writeln!(out, ".TP\n\\fI{}\\fR\n{}", roff_escape(path), inline(doc));
    }
    out.push_str(".SH \"EXIT STATUS\"\n");
    for (code, doc) in [
        ("0", "Success."),
        (
            "1",
            "A runtime error: I/O, csync2 failed, no running daemon.",
        ),
        ("2", "A bad command line."),
        (
            "3",
            "csync2.cfg or csync2-watch.toml is unusable; the units do not restart the daemon \
             for it (RestartPreventExitStatus=3).",
        ),
    ] {
        let _ = writeln!(out, ".TP\n\\fB{code}\\fR\n{}", inline(doc));
    }
    out.push_str(".SH \"SEE ALSO\"\n\\fBcsync2\\fR(8), \\fBcsync2\\-watch.toml\\fR(5), \\fBsystemctl\\fR(1), \\fBsysctl.d\\fR(5), /usr/share/doc/csync2\\-watch/README\\-install.md\n");
    out
}

/// `csync2-watch.toml(5)`.
pub fn settings_man_page() -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        ".TH CSYNC2\\-WATCH.TOML 5 \"\" \"csync2\\-watch {VERSION}\" \"File Formats\""
    );
    out.push_str(".SH NAME\ncsync2\\-watch.toml \\- settings of csync2\\-watch\n");
    out.push_str(".SH SYNOPSIS\n/etc/csync2\\-watch/csync2\\-watch.toml\n");
    out.push_str(".SH DESCRIPTION\n");
    paragraphs(
        &mut out,
        "csync2-watch(8) reads its settings from /etc/csync2-watch/csync2-watch.toml, or from \
         the file given with `--config FILE`; `run --set KEY=VALUE` overrides one setting. \
         csync2 itself is configured in csync2.cfg as always: this file only tunes \
         csync2-watch. A missing default file means every default.\n\n\
         The file is TOML: one `key = value` a line. Every setting is optional. Durations are \
         quoted with a unit: \"5ms\", \"250ms\", \"2s\", \"5m\", \"1h\". Unknown keys and bad \
         values are errors; `csync2-watch check-config` lists every problem with its line and \
         prints the effective settings. `systemctl reload csync2-watch` applies a changed \
         file; a broken one is logged and the old settings kept.",
    );
    out.push_str(".SH SETTINGS\n");
    for d in SETTINGS {
        let _ = writeln!(
            out,
            ".TP\n\\fB{}\\fR = {}\n{}",
            roff_escape(d.key),
            roff_escape(d.default),
            inline(d.doc)
        );
    }
    out.push_str(".SH EXAMPLE\n.nf\n");
    out.push_str(&roff_escape(
        "# Wait a little longer for bursts, and never update peers in parallel.\n\
         batch_delay = \"20ms\"\n\
         parallel_updates = false\n\
         # csync2's server runs from csync2.socket.\n\
         server = \"external\"\n",
    ));
    out.push_str("\n.fi\n");
    out.push_str(".SH \"SEE ALSO\"\n\\fBcsync2\\-watch\\fR(8), \\fBcsync2\\fR(8)\n");
    out
}

/// The completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut cmd = super::Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "csync2-watch", &mut buf);
    buf
}

/// File names `generate completions` writes, per shell.
pub const COMPLETIONS: &[(clap_complete::Shell, &str)] = &[
    (clap_complete::Shell::Bash, "csync2-watch.bash"),
    (clap_complete::Shell::Zsh, "_csync2-watch"),
    (clap_complete::Shell::Fish, "csync2-watch.fish"),
];

/// What `generate` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GenerateWhat {
    /// csync2-watch.8 and csync2-watch.toml.5 (roff, uncompressed).
    Man,
    /// csync2-watch.bash, _csync2-watch (zsh) and csync2-watch.fish.
    Completions,
}

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// What to write.
    #[arg(value_enum)]
    pub what: GenerateWhat,
    /// Directory to write into (created if missing).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// `csync2-watch generate man|completions DIR`: write the man pages or
/// the shell completions into DIR, naming each file written.
pub fn generate(args: GenerateArgs) -> anyhow::Result<u8> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let files: Vec<(String, Vec<u8>)> = match args.what {
        GenerateWhat::Man => vec![
            ("csync2-watch.8".into(), man_page().into_bytes()),
            (
                "csync2-watch.toml.5".into(),
                settings_man_page().into_bytes(),
            ),
        ],
        GenerateWhat::Completions => COMPLETIONS
            .iter()
            .map(|(shell, name)| (name.to_string(), completions(*shell)))
            .collect(),
    };
    for (name, bytes) in files {
        let path = args.dir.join(&name);
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_roff_requests_out() {
        assert_eq!(roff_escape(".x -a \\b"), "\\&.x \\-a \\eb");
        assert_eq!(roff_escape("'q"), "\\&'q");
        assert_eq!(inline("run `csync2 -x` now"), "run \\fBcsync2 \\-x\\fR now");
    }

    #[test]
    fn every_subcommand_and_option_is_in_the_man_page() {
        let page = man_page();
        let cmd = command();
        for sub in subcommands(&cmd) {
            let name = roff_escape(sub.get_name());
            assert!(
                page.contains(&format!(".SS \"csync2\\-watch {name}\"")),
                "{name} has no section"
            );
            for a in sub.get_arguments().filter(|a| arg_is_shown(a)) {
                if let Some(l) = a.get_long() {
                    assert!(
                        page.contains(&format!("\\-\\-{}", roff_escape(l))),
                        "{name} --{l}"
                    );
                }
            }
        }
        assert!(
            !page.contains("csync2\\-watch generate\""),
            "generate is hidden"
        );
        for s in SIGNALS {
            assert!(page.contains(&format!("\\fB{}\\fR", s.name)), "{}", s.name);
        }
    }

    #[test]
    fn the_status_section_documents_status_path() {
        let page = man_page();
        assert!(
            page.contains(
                "\\fBcsync2\\-watch\\fR \\fBstatus\\fR [\\fIOPTIONS\\fR] [\\fIPATH\\fR...]"
            ),
            "no `status [PATH...]` in the synopsis"
        );
        let start = page
            .find(".SS \"csync2\\-watch status\"")
            .expect("status section");
        let end = start + page[start + 1..].find(".SS ").expect("a section after it");
        let section = &page[start..end];
        for words in [
            "\\fIPATH\\fR...",
            "\\fB\\-D\\fR \\fIDIR|URL\\fR",
            "in\\-sync",
            "outside every csync2 tree",
            "path_b64",
        ] {
            assert!(section.contains(words), "{words} missing:\n{section}");
        }
    }

    #[test]
    fn every_setting_is_in_the_settings_page() {
        let page = settings_man_page();
        for key in crate::settings::KEYS {
            assert!(
                page.contains(&format!(".TP\n\\fB{}\\fR = ", roff_escape(key))),
                "{key} is missing from csync2-watch.toml(5)"
            );
        }
    }
}
