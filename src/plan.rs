//! This node's plan, computed from csync2.cfg exactly as csync2 computes
//! it: the node's identity (`-N`, else gethostname lowercased), the groups
//! active on it, each group's peers with the identity csync2 uses for them,
//! `%prefix%` paths for this host, the roots to watch, and the path
//! decisions ([`crate::paths`]) behind [`crate::watch::TreeFilter`].
//!
//! (API pinned; implementation being built.)

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::watch::TreeFilter;

/// Where to find csync2.cfg and who this node is: the same inputs csync2
/// itself takes (`CSYNC2_SYSTEM_DIR`, `-C`, `-N`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// `$CSYNC2_SYSTEM_DIR`, default `/etc`.
    pub system_dir: PathBuf,
    /// `-C NAME`: read `csync2_NAME.cfg` instead of `csync2.cfg`.
    pub cfg_name: Option<String>,
    /// `-N NAME`; `None` means gethostname().
    pub node: Option<String>,
}

impl LoadOptions {
    /// From the command line's `-C`/`-N` and the environment.
    pub fn from_cli(opts: &crate::cli::Csync2Opts) -> LoadOptions {
        LoadOptions {
            system_dir: std::env::var_os("CSYNC2_SYSTEM_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/etc")),
            cfg_name: opts.cfg_name.clone(),
            node: opts.node.clone(),
        }
    }
}

/// A peer this node pushes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The identity csync2 uses for the peer: `B` of `host A@B`, else the
    /// host name; lowercased. What `-P` matches, what the dirty table
    /// stores, and the name csync2 connects to.
    pub name: String,
    /// Listed in parentheses in at least one shared group (receive only).
    pub slave: bool,
    /// Groups (active on this node) that list the peer.
    pub groups: Vec<String>,
}

/// Why loading failed: every problem found, each printable as
/// `FILE:LINE:COL: message`.
#[derive(Debug, thiserror::Error)]
#[error("csync2 configuration is unusable")]
pub struct LoadError {
    pub diagnostics: Vec<String>,
}

/// What this node syncs, and with whom.
#[derive(Debug)]
pub struct Plan {
    _private: (),
}

impl Plan {
    /// Read and check csync2's configuration for this node.
    pub fn load(_opts: &LoadOptions) -> Result<Plan, LoadError> {
        unimplemented!("plan::Plan::load")
    }

    /// This node's name as csync2 computes it (lowercased).
    pub fn node(&self) -> &str {
        unimplemented!()
    }

    /// The main configuration file that was read.
    pub fn config_file(&self) -> &Path {
        unimplemented!()
    }

    /// Every peer of every group active on this node, deduplicated by name,
    /// in a stable order.
    pub fn peers(&self) -> &[Peer] {
        unimplemented!()
    }

    /// The directories to watch recursively: for each include path pattern
    /// (after `%prefix%` substitution), its longest wildcard-free directory
    /// prefix; deduplicated, none below another.
    pub fn roots(&self) -> &[PathBuf] {
        unimplemented!()
    }

    /// csync2's `tempdir` setting, if any.
    pub fn tempdir(&self) -> Option<&Path> {
        unimplemented!()
    }

    /// csync2's `database` setting from the config, if any (`-D` wins).
    pub fn database(&self) -> Option<&OsString> {
        unimplemented!()
    }
}

impl TreeFilter for Plan {
    fn descend(&self, _dir: &Path) -> bool {
        unimplemented!()
    }

    fn syncs(&self, _path: &Path) -> bool {
        unimplemented!()
    }
}
