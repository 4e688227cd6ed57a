//! One module per subcommand. Each owns its clap arguments (`XArgs`,
//! flattening the shared option groups of [`Csync2Opts`], [`Csync2RunOpts`]
//! and [`WatchOpts`]) and exposes `run(args) -> anyhow::Result<u8>`
//! returning the exit code; errors that need a specific code are returned
//! as [`crate::exit::Exit`].
//!
//! Layer: commands. May import the daemon, the adapters and the core;
//! never [`crate::cli`], which imports the commands.

#![forbid(unsafe_code)]

pub mod check_config;
pub mod events;
pub mod matching;
mod opts;
pub mod reload;
pub mod run;
pub mod status;
pub mod status_path;
pub mod sync;
pub mod sysctl;
pub mod watch;

pub use opts::{Csync2Opts, Csync2RunOpts, WatchOpts};
