//! inotify's kernel limits as the watcher meets them: reading the sysctls,
//! the one clear message when the watch limit is reached, and counting how
//! many directories the configured trees need watched (for that message and
//! for `csync2-watch sysctl`).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::dirs::{is_vanished, OpenDir};
use crate::vocab::TreeFilter;

/// inotify limits of this process, from /proc/sys (`None`: unreadable).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InotifyLimits {
    /// `fs.inotify.max_user_watches` (the initial user namespace's limit).
    pub max_user_watches: Option<u64>,
    /// `user.max_inotify_watches` of this process's user namespace (equal
    /// to the above outside containers; may be lower inside one).
    pub userns_max_watches: Option<u64>,
    /// `fs.inotify.max_user_instances`.
    pub max_user_instances: Option<u64>,
    /// `fs.inotify.max_queued_events`.
    pub max_queued_events: Option<u64>,
}

fn read_u64(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl InotifyLimits {
    pub fn read() -> InotifyLimits {
        InotifyLimits {
            max_user_watches: read_u64("/proc/sys/fs/inotify/max_user_watches"),
            userns_max_watches: read_u64("/proc/sys/user/max_inotify_watches"),
            max_user_instances: read_u64("/proc/sys/fs/inotify/max_user_instances"),
            max_queued_events: read_u64("/proc/sys/fs/inotify/max_queued_events"),
        }
    }
}

/// The error-level line logged once when the watch limit is reached.
pub(super) fn limit_message(
    watched: usize,
    needed: usize,
    unwatched_subtrees: usize,
    interval: Duration,
) -> String {
    let limits = InotifyLimits::read();
    let now = match limits.max_user_watches {
        Some(v) => v.to_string(),
        None => "unknown".to_string(),
    };
    let userns = match (limits.userns_max_watches, limits.max_user_watches) {
        (Some(u), Some(g)) if u < g => {
            format!(" and user.max_inotify_watches of this user namespace (now {u})")
        }
        _ => String::new(),
    };
    format!(
        "inotify watch limit reached: watching {watched} directories, about {needed} needed; \
         raise fs.inotify.max_user_watches (now {now}){userns} with `csync2-watch sysctl --write`; \
         until then {unwatched_subtrees} unwatched subtree(s) get a full check every {}",
        humantime::format_duration(interval)
    )
}

/// Extra advice for an `inotify_init1` failure.
pub(super) fn init_hint(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(libc::EMFILE) => {
            let now = InotifyLimits::read()
                .max_user_instances
                .map_or_else(|| "unknown".to_string(), |v| v.to_string());
            format!(
                " (too many inotify instances for this user: raise fs.inotify.max_user_instances, \
                 now {now}, with `csync2-watch sysctl --write`, or stop other inotify users)"
            )
        }
        Some(libc::ENFILE) => " (the system is out of file descriptors)".to_string(),
        _ => String::new(),
    }
}

/// Count the directories below (and including) `start` that the watcher
/// would watch: real directories whose `descend` is true, reached through
/// descended directories only. `start` itself must already be known to
/// be descended. Unlistable directories count but are not entered.
pub(super) fn count_dirs(start: &Path, filter: &dyn TreeFilter) -> usize {
    let mut count = 0usize;
    let mut stack: Vec<PathBuf> = vec![start.to_path_buf()];
    let mut child = PathBuf::new();
    while let Some(dir) = stack.pop() {
        count += 1;
        let Ok(mut d) = OpenDir::open(&dir) else {
            continue;
        };
        let _ = d.for_each(|name, is_dir| {
            if is_dir {
                child.clone_from(&dir);
                child.push(name);
                if filter.descend(&child) {
                    stack.push(child.clone());
                }
            }
        });
    }
    count
}

/// How many directories (hence inotify watches) watching every tree of
/// `filter` takes right now, counting from `/` like the watcher.
pub fn dirs_to_watch(filter: &dyn TreeFilter) -> io::Result<usize> {
    let root = Path::new("/");
    if !filter.descend(root) {
        return Ok(0);
    }
    match OpenDir::open(root) {
        Ok(_) => Ok(count_dirs(root, filter)),
        Err(e) if is_vanished(&e) => Ok(0),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_message_names_the_sysctl_the_count_and_the_fix() {
        let m = limit_message(10, 1234, 3, Duration::from_secs(300));
        assert!(m.contains("fs.inotify.max_user_watches"), "{m}");
        assert!(m.contains("watching 10 directories"), "{m}");
        assert!(m.contains("about 1234 needed"), "{m}");
        assert!(m.contains("csync2-watch sysctl --write"), "{m}");
        assert!(m.contains("every 5m"), "{m}");
    }
}
