//! The command line: the clap tree of subcommands (each command's own
//! arguments live with the command, in [`crate::cmd`]), the dispatcher
//! that turns a command's outcome into an exit code, and the man pages and
//! completions generated from the tree ([`docs`]). Errors are printed
//! once, here, as `csync2-watch: {:#}`.
//!
//! Layer: command line, the top. May import anything below; nothing below
//! imports it.

#![forbid(unsafe_code)]

pub mod docs;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::cmd::check_config::CheckConfigArgs;
use crate::cmd::events::EventsArgs;
use crate::cmd::matching::MatchArgs;
use crate::cmd::reload::ReloadArgs;
use crate::cmd::run::RunArgs;
use crate::cmd::status::StatusArgs;
use crate::cmd::sync::SyncArgs;
use crate::cmd::sysctl::SysctlArgs;
use crate::cmd::watch::WatchArgs;
use crate::exit;
use docs::GenerateArgs;

/// Keeps a csync2 cluster identical within a second of any change.
#[derive(Debug, Parser)]
#[command(name = "csync2-watch", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: watch, queue, check and update peers, supervise csync2 -ii.
    Run(RunArgs),
    /// Show this node's plan (groups, peers, watched roots) and every problem in csync2.cfg.
    CheckConfig(CheckConfigArgs),
    /// Say whether csync2 syncs each PATH, and (-v) which pattern decided.
    Match(MatchArgs),
    /// Print the change stream the daemon would act on, one path a line.
    ///
    /// Each record is a changed path, byte-exact, newline-terminated (NUL-terminated
    /// with -0). A record `! full-check SCOPE REASON` means events below SCOPE (`/`:
    /// every tree) may have been lost and a full check is needed; REASON is
    /// `overflow`, `watch-failed: WHY`, `too-many-changes` or `root-replaced`. Paths
    /// always start with `/`, so a marker never looks like one.
    Watch(WatchArgs),
    /// Ask the running daemon to sync now (PATHs, pending changes, or --full).
    ///
    /// `--full` asks for a reconcile of every tree: each synced path's lstat is compared
    /// with the daemon's stat cache, and only what appeared, vanished or differs goes to
    /// csync2. `--full --deep` also runs csync2's own full check (`csync2 -cr /`), which
    /// reads csync2's database for every file and finds what that database disagrees with.
    /// Returns once the daemon has taken the request.
    Sync(SyncArgs),
    /// Print the journal's change feed with transaction ids (resumable with --since).
    Events(EventsArgs),
    /// Show what the running daemon is doing, or with PATHs each path's sync state.
    ///
    /// Without PATH: the daemon's state, watches, queue, each peer (up or down, dirty,
    /// retries, last error), the csync2 server and counters; exit 1 when it is not running.
    ///
    /// With PATHs: a block per path, blocks separated by a blank line. Its first line is
    /// the path as given (escaped as `\n`, `\t`, `\\` or `\xNN` when it holds control
    /// characters, backslashes or bytes that are not UTF-8, so that it stays one line).
    /// Then: `synced: yes, group GROUP, FILE:LINE:include PATTERN`, or `synced: no,` and why,
    /// in the words of `match -v` (`outside every csync2 tree` for a path below no synced
    /// root); `last change here:` the last change the daemon journaled for the path or a
    /// tree above it; `pending:` whether a change of it (or of a tree above it) waits in
    /// the queue for its csync2 check; then one line per peer it is synced with, starting
    /// with the peer's name: `in-sync`, `dirty` (csync2 -M lists it for that peer),
    /// `failing` (dirty, and updating the peer failed) or `down` (the daemon finds the peer
    /// unreachable), followed by `: LAST ERROR` for `failing` and `down`, or `unknown
    /// (csync2 -M failed: ...)`. Peer states are csync2's: a pending change is dirty
    /// towards no peer until it has been checked. `csync2 -M` runs once, with -N, -C, -D
    /// and the settings' `csync2` and `csync2_args`, and works for every csync2 database
    /// backend.
    ///
    /// `--json` prints one object a line per path: `path` (or `path_b64`, standard base64,
    /// when not UTF-8, as `events` does), `real_path` (as csync2 resolves it), `synced`,
    /// `outside`, `group`, `file`, `line`, `pattern`, `reason` (`match -v`'s words),
    /// `last_changed` (Unix seconds or null), `pending`, `daemon_running` and `peers`
    /// (`[{name, state, last_error}]`).
    ///
    /// Exit 0 when every path was answered, 1 when the daemon is not running (every answer
    /// is still printed, from csync2.cfg, the journal and csync2 -M), 3 when csync2.cfg or
    /// the settings are unusable.
    Status(StatusArgs),
    /// Ask the running daemon to re-read csync2.cfg and its settings (SIGHUP).
    ///
    /// The daemon is found as `status` finds it (the same -C, -N and --state-dir),
    /// or given with --pid (the units' ExecReload passes systemd's $MAINPID). Either
    /// way the process must be a running `csync2-watch run`; otherwise nothing is
    /// signalled and the exit status is 1. Returns once the signal is sent; the
    /// daemon logs the reload (a broken file is logged and the old one kept) and
    /// then runs a reconcile of every tree.
    Reload(ReloadArgs),
    /// Size inotify's kernel limits for the configured trees.
    Sysctl(SysctlArgs),
    /// Write the man pages or the shell completions into DIR (for packaging).
    #[command(hide = true)]
    Generate(GenerateArgs),
}

/// Parse the command line, run the command, print an error once.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            let code = match err.downcast_ref::<exit::Exit>() {
                Some(e) => {
                    if !e.message.is_empty() {
                        eprint!("{}", e.message);
                        if !e.message.ends_with('\n') {
                            eprintln!();
                        }
                    }
                    e.code
                }
                None => {
                    eprintln!("csync2-watch: {err:#}");
                    exit::ERROR
                }
            };
            ExitCode::from(code)
        }
    }
}

/// Run one subcommand; `Ok` carries the exit code.
pub fn dispatch(command: Command) -> anyhow::Result<u8> {
    use crate::cmd;
    match command {
        Command::Run(args) => cmd::run::run(args),
        Command::CheckConfig(args) => cmd::check_config::run(args),
        Command::Match(args) => cmd::matching::run(args),
        Command::Watch(args) => cmd::watch::run(args),
        Command::Sync(args) => cmd::sync::run(args),
        Command::Events(args) => cmd::events::run(args),
        Command::Status(args) => cmd::status::run(args),
        Command::Reload(args) => cmd::reload::run(args),
        Command::Sysctl(args) => cmd::sysctl::run(args),
        Command::Generate(args) => docs::generate(args),
    }
}
