//! Exit codes shared by every subcommand, and the error type that carries
//! one out of a command.
//!
//! Layer: core. Imports nothing from the crate.

#![forbid(unsafe_code)]

/// Success.
pub const OK: u8 = 0;
/// A runtime error (I/O, csync2 failed, daemon not running, ...).
pub const ERROR: u8 = 1;
/// Bad command line (clap uses 2 as well).
pub const USAGE: u8 = 2;
/// csync2.cfg or csync2-watch.toml is unusable.
pub const CONFIG: u8 = 3;

/// An error that asks for a specific exit code. Commands return it wrapped
/// in `anyhow::Error`; `cli::main` downcasts to find the code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

impl Exit {
    /// A configuration error (exit code [`CONFIG`]). `message` is printed
    /// as-is, so it should already list every problem.
    pub fn config(message: impl Into<String>) -> Self {
        Exit {
            code: CONFIG,
            message: message.into(),
        }
    }

    /// Leave with `code` after having printed everything already
    /// (`message` may be empty).
    pub fn silent(code: u8) -> Self {
        Exit {
            code,
            message: String::new(),
        }
    }
}
