//! The filesystem checks behind `check-config`, kept apart from the pure
//! reading of the configuration: include roots that are missing or are
//! symlinks, roots on network filesystems (whose remote writes inotify
//! never sees), and csync2's `tempdir` inside a watched tree or on another
//! filesystem than the synced files (csync2 renames its temporary files
//! into place, which only works within one filesystem).
//!
//! Layer: adapter (it stats the filesystem). Imports the core
//! ([`crate::plan`]) and [`crate::fstype`].

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use crate::fstype::{fs_type_name, FsInfo};
use crate::plan::Plan;

/// What the filesystem says about one root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootCheck {
    pub path: PathBuf,
    /// `FILE:LINE:COL` of the pattern behind the root.
    pub origin: String,
    pub exists: bool,
    /// A symlink (csync2 syncs the link, never walks through it).
    pub symlink: bool,
    /// A filesystem type name, when known.
    pub fs_type: Option<String>,
    /// The network filesystem the root is on, if any.
    pub network: Option<&'static str>,
    pub dev: Option<u64>,
}

/// The outcome of the checks.
#[derive(Debug, Clone, Default)]
pub struct Checks {
    pub roots: Vec<RootCheck>,
    /// `FILE:LINE:COL: message`.
    pub errors: Vec<String>,
    /// `FILE:LINE:COL: warning: message`.
    pub warnings: Vec<String>,
}

/// Look at the filesystem under `plan`'s roots and tempdir.
pub fn run(plan: &Plan) -> Checks {
    let mut out = Checks::default();
    for (root, origin) in plan.roots().iter().zip(plan.root_origins()) {
        let meta = std::fs::symlink_metadata(root);
        let exists = meta.is_ok();
        let symlink = meta.as_ref().is_ok_and(|m| m.file_type().is_symlink());
        let info = if exists { FsInfo::of(root).ok() } else { None };
        let rc = RootCheck {
            path: root.clone(),
            origin: origin.clone(),
            exists,
            symlink,
            fs_type: info.map(|i| fs_type_name(i.magic)),
            network: info.and_then(|i| i.network_name()),
            dev: info.map(|i| i.dev),
        };
        if !exists {
            out.errors.push(format!(
                "{origin}: include root {} does not exist; create it or fix the pattern",
                root.display()
            ));
        } else if symlink {
            out.warnings.push(format!(
                "{origin}: warning: include root {} is a symlink: csync2 syncs the link itself \
                 and never walks into it; include the real directory instead",
                root.display()
            ));
        }
        if let Some(net) = rc.network {
            out.warnings.push(format!(
                "{origin}: warning: include root {} is on a network filesystem ({net}): changes \
                 made by other machines are invisible to inotify on this node",
                root.display()
            ));
        }
        out.roots.push(rc);
    }
    if let Some(tmp) = plan.tempdir() {
        check_tempdir(plan, tmp, &mut out);
    }
    out
}

fn check_tempdir(plan: &Plan, tmp: &Path, out: &mut Checks) {
    let loc = plan.tempdir_location().unwrap_or("?").to_string();
    let Ok(tinfo) = FsInfo::of(tmp) else {
        out.warnings.push(format!(
            "{loc}: warning: csync2's tempdir {} does not exist; csync2 cannot receive files \
             until it does",
            tmp.display()
        ));
        return;
    };
    use std::os::unix::ffi::OsStrExt;
    let t = tmp.as_os_str().as_bytes();
    let inside: Vec<&RootCheck> = out
        .roots
        .iter()
        .filter(|r| {
            let rb = r.path.as_os_str().as_bytes();
            rb == b"/" || t == rb || (t.starts_with(rb) && t.get(rb.len()) == Some(&b'/'))
        })
        .collect();
    if inside.iter().any(|_| plan.rules().descend_exact(t)) {
        out.warnings.push(format!(
            "{loc}: warning: csync2's tempdir {} is inside a synced tree: every transfer \
             writes temporary files there that trigger changes; move it out (same filesystem) \
             or exclude it",
            tmp.display()
        ));
    }
    let other: Vec<String> = out
        .roots
        .iter()
        .filter(|r| r.dev.is_some_and(|d| d != tinfo.dev))
        .map(|r| r.path.display().to_string())
        .collect();
    if !other.is_empty() {
        out.warnings.push(format!(
            "{loc}: warning: csync2's tempdir {} is on another filesystem than {}: csync2 moves \
             received files into place from there, which is no longer an atomic rename; put \
             the tempdir on the same filesystem",
            tmp.display(),
            other.join(", ")
        ));
    }
}
