//! Walking the synced trees as `csync2 -cr` walks them: from the roots,
//! entering only directories the configuration may sync something below,
//! never following a symlink, and reporting each path csync2 would record
//! with its lstat. Entries that vanish or cannot be read during the walk
//! are left out (the caller compares with what it knows, and a vanished
//! path is simply gone).
//!
//! Layer: adapter (reads the trees). Imports the core ([`crate::statcache`],
//! [`crate::vocab`]) only.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use crate::statcache::Snapshot;
use crate::vocab::TreeFilter;

/// Every synced path at or below `scope` (`/`: every tree), with its
/// lstat, handed to `each`. `roots` are the watched roots of the plan.
pub fn synced_under(
    filter: &dyn TreeFilter,
    roots: &[PathBuf],
    scope: &Path,
    each: &mut dyn FnMut(PathBuf, Snapshot),
) {
    for root in roots {
        let start = if root.starts_with(scope) {
            root.as_path()
        } else if scope.starts_with(root) {
            scope
        } else {
            continue;
        };
        let Some(snap) = Snapshot::lstat(start) else {
            continue;
        };
        walk(filter, start.to_path_buf(), snap, each);
    }
}

fn walk(
    filter: &dyn TreeFilter,
    path: PathBuf,
    snap: Snapshot,
    each: &mut dyn FnMut(PathBuf, Snapshot),
) {
    let is_dir = snap.mode & 0o170000 == 0o040000;
    if !is_dir {
        if filter.syncs(&path) {
            each(path, snap);
        }
        return;
    }
    if !filter.descend(&path) {
        return;
    }
    let entries = match std::fs::read_dir(&path) {
        Ok(e) => e,
        Err(e) => {
            tracing::debug!(dir = %path.display(), "cannot list: {e}");
            if filter.syncs(&path) {
                each(path, snap);
            }
            return;
        }
    };
    let mut children: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    children.sort();
    if filter.syncs(&path) {
        each(path, snap);
    }
    for child in children {
        if let Some(s) = Snapshot::lstat(&child) {
            walk(filter, child, s, each);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Syncs everything but paths containing `skip`.
    struct Skip;

    impl TreeFilter for Skip {
        fn descend(&self, dir: &Path) -> bool {
            !dir.to_string_lossy().contains("skip")
        }
        fn syncs(&self, path: &Path) -> bool {
            !path.to_string_lossy().contains("skip")
        }
    }

    #[test]
    fn walks_synced_paths_only_and_never_follows_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(root.join("skip/c")).unwrap();
        std::fs::write(root.join("a/b/f"), b"x").unwrap();
        std::fs::write(root.join("skip/c/g"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("a/link")).unwrap();
        let mut seen = Vec::new();
        synced_under(
            &Skip,
            std::slice::from_ref(&root),
            Path::new("/"),
            &mut |p, _| seen.push(p.strip_prefix(&root).unwrap().to_path_buf()),
        );
        let want: Vec<PathBuf> = ["", "a", "a/b", "a/b/f", "a/link"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(seen, want);

        let mut below = Vec::new();
        synced_under(
            &Skip,
            std::slice::from_ref(&root),
            &root.join("a/b"),
            &mut |p, _| below.push(p),
        );
        assert_eq!(below, vec![root.join("a/b"), root.join("a/b/f")]);
    }
}
