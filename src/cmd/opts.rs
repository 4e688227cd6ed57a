//! The option groups several subcommands share (`-C`/`-N`, `-D`/`-p`,
//! `--config`/`--state-dir`), as clap `Args` to flatten into each
//! command's own arguments, and what they turn into for the layers below.
//!
//! Layer: commands. Imports the core ([`crate::plan`]) only.

#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::path::PathBuf;

use crate::plan::LoadOptions;

/// The csync2 options that select the configuration and this node's
/// identity, spelled as csync2 spells them.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Csync2Opts {
    /// Use csync2_NAME.cfg (and csync2's DB for that name), as `csync2 -C NAME`.
    #[arg(short = 'C', value_name = "NAME")]
    pub cfg_name: Option<String>,
    /// This node's name, as `csync2 -N NAME` (default: hostname, lowercased).
    #[arg(short = 'N', value_name = "NAME")]
    pub node: Option<String>,
}

/// csync2 options that only matter to commands that run csync2.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Csync2RunOpts {
    /// csync2's database directory or URL, as `csync2 -D`.
    #[arg(short = 'D', value_name = "DIR|URL")]
    pub database: Option<OsString>,
    /// csync2's TCP port, as `csync2 -p`.
    #[arg(short = 'p', value_name = "PORT")]
    pub port: Option<u16>,
}

/// Where csync2-watch's own settings and state live.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct WatchOpts {
    /// csync2-watch settings file [default: /etc/csync2-watch/csync2-watch.toml].
    #[arg(long = "config", value_name = "FILE")]
    pub settings: Option<PathBuf>,
    /// Directory for the journal and status (private: 0700)
    /// [default: /var/lib/csync2-watch/NODE[_CFGNAME]].
    // The text is clap's help, where the brackets are literal.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

impl Csync2Opts {
    /// Where to find csync2.cfg and who this node is, as csync2 would
    /// with these `-C`/`-N` (and `$CSYNC2_SYSTEM_DIR`).
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions::new(self.cfg_name.clone(), self.node.clone())
    }
}
