//! One module per subcommand. Each exposes `run(args) -> anyhow::Result<u8>`
//! returning the exit code; errors that need a specific code are returned
//! as [`crate::exit::Exit`].

pub mod check_config;
pub mod events;
pub mod generate;
pub mod matching;
pub mod reload;
pub mod run;
pub mod status;
pub mod sync;
pub mod sysctl;
pub mod watch;
