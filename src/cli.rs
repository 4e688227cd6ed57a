//! The command line: clap definitions for every subcommand and the
//! dispatcher that turns a command's outcome into an exit code. Errors are
//! printed once, here, as `csync2-watch: {:#}`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::exit;

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
    Sync(SyncArgs),
    /// Print the journal's change feed with transaction ids (resumable with --since).
    Events(EventsArgs),
    /// Show what the running daemon is doing.
    Status(StatusArgs),
    /// Ask the running daemon to re-read csync2.cfg and its settings (SIGHUP).
    ///
    /// The daemon is found as `status` finds it (the same -C, -N and --state-dir),
    /// or given with --pid (the units' ExecReload passes systemd's $MAINPID). Either
    /// way the process must be a running `csync2-watch run`; otherwise nothing is
    /// signalled and the exit status is 1. Returns once the signal is sent; the
    /// daemon logs the reload (a broken file is logged and the old one kept) and
    /// then runs a full check.
    Reload(ReloadArgs),
    /// Size inotify's kernel limits for the configured trees.
    Sysctl(SysctlArgs),
    /// Write the man pages or the shell completions into DIR (for packaging).
    #[command(hide = true)]
    Generate(GenerateArgs),
}

/// The csync2 options that select the configuration and this node's
/// identity, spelled as csync2 spells them.
#[derive(Debug, Clone, Default, Args)]
pub struct Csync2Opts {
    /// Use csync2_NAME.cfg (and csync2's DB for that name), as `csync2 -C NAME`.
    #[arg(short = 'C', value_name = "NAME")]
    pub cfg_name: Option<String>,
    /// This node's name, as `csync2 -N NAME` (default: hostname, lowercased).
    #[arg(short = 'N', value_name = "NAME")]
    pub node: Option<String>,
}

/// csync2 options that only matter to commands that run csync2.
#[derive(Debug, Clone, Default, Args)]
pub struct Csync2RunOpts {
    /// csync2's database directory or URL, as `csync2 -D`.
    #[arg(short = 'D', value_name = "DIR|URL")]
    pub database: Option<OsString>,
    /// csync2's TCP port, as `csync2 -p`.
    #[arg(short = 'p', value_name = "PORT")]
    pub port: Option<u16>,
}

/// Where csync2-watch's own settings and state live.
#[derive(Debug, Clone, Default, Args)]
pub struct WatchOpts {
    /// csync2-watch settings file [default: /etc/csync2-watch/csync2-watch.toml].
    #[arg(long = "config", value_name = "FILE")]
    pub settings: Option<PathBuf>,
    /// Directory for the journal and status (private: 0700)
    /// [default: /var/lib/csync2-watch/NODE[_CFGNAME]].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub csync2: Csync2Opts,
    #[command(flatten)]
    pub csync2_run: Csync2RunOpts,
    #[command(flatten)]
    pub watch: WatchOpts,
    /// Override one setting of the settings file, e.g. `--set quiet_period=500ms`
    /// (repeatable; kept across SIGHUP reloads).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    #[command(flatten)]
    pub csync2: Csync2Opts,
    #[command(flatten)]
    pub watch: WatchOpts,
    /// Print the plan and the problems as JSON.
    #[arg(long)]
    pub json: bool,
    /// Validate the settings as `run --set KEY=VALUE` would see them.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

#[derive(Debug, Args)]
pub struct MatchArgs {
    #[command(flatten)]
    pub csync2: Csync2Opts,
    /// Also print the deciding pattern with its FILE:LINE.
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,
    /// Read the paths from standard input, one a record.
    #[arg(long)]
    pub stdin: bool,
    /// Input and output records are NUL-terminated instead of newline-terminated.
    #[arg(short = 'z')]
    pub nul: bool,
    /// Paths to decide.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub csync2: Csync2Opts,
    /// NUL-terminate records instead of newline-terminating them.
    #[arg(short = '0')]
    pub nul: bool,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    #[command(flatten)]
    pub csync2: Csync2Opts,
    #[command(flatten)]
    pub watch: WatchOpts,
    /// Run a full check of every tree and update every peer.
    #[arg(long)]
    pub full: bool,
    /// Paths to queue for checking (default: flush what is pending).
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    #[command(flatten)]
    pub csync2: Csync2Opts,
    #[command(flatten)]
    pub watch: WatchOpts,
    /// Print only events with a transaction id greater than TXID.
    #[arg(long, value_name = "TXID", default_value_t = 0)]
    pub since: u64,
    /// Keep printing new events as they are journaled.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// NUL-terminate records instead of newline-terminating them.
    #[arg(short = '0')]
    pub nul: bool,
    /// One JSON object a line.
    #[arg(long, conflicts_with = "nul")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub csync2: Csync2Opts,
    #[command(flatten)]
    pub watch: WatchOpts,
    /// Print the status as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReloadArgs {
    #[command(flatten)]
    pub csync2: Csync2Opts,
    #[command(flatten)]
    pub watch: WatchOpts,
    /// Signal this process (it must be a `csync2-watch run`) instead of the one
    /// named by the status file.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
}

/// What `generate` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GenerateWhat {
    /// csync2-watch.8 and csync2-watch.toml.5 (roff, uncompressed).
    Man,
    /// csync2-watch.bash, _csync2-watch (zsh) and csync2-watch.fish.
    Completions,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// What to write.
    #[arg(value_enum)]
    pub what: GenerateWhat,
    /// Directory to write into (created if missing).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct SysctlArgs {
    #[command(flatten)]
    pub csync2: Csync2Opts,
    /// Write /etc/sysctl.d/60-csync2-watch.conf sized for this node (it replaces
    /// the packaged default /usr/lib/sysctl.d/60-csync2-watch.conf) and apply it,
    /// never lowering a limit.
    #[arg(long)]
    pub write: bool,
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
        Command::Generate(args) => cmd::generate::run(args),
    }
}
