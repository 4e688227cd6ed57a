//! Log set-up: `tracing` to the journal when systemd started us (the
//! `JOURNAL_STREAM` variable says stderr is the journal), else to stderr.
//! The level comes from `CSYNC2_WATCH_LOG` (an `EnvFilter` directive),
//! default `info`.
//!
//! Layer: adapter (stderr, the systemd journal). Imports nothing from the
//! crate.

#![forbid(unsafe_code)]

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Environment variable holding the log filter.
pub const LOG_ENV: &str = "CSYNC2_WATCH_LOG";

/// Install the global subscriber. Safe to call more than once (later calls
/// do nothing).
pub fn init(default_level: &str) {
    let filter = EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new(default_level));
    let registry = tracing_subscriber::registry().with(filter);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(journald) = tracing_journald::layer() {
            let _ = registry.with(journald).try_init();
            return;
        }
    }
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = registry.with(fmt).try_init();
}
