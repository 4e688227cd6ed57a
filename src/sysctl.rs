//! inotify's kernel limits, the one place that reads them and counts the
//! directories csync2's trees need watched. For `csync2-watch sysctl`:
//! counts the directories the daemon will watch (walking from `/` exactly
//! where the watcher and `csync2 -cr /` go), measures what other programs
//! of the same user already hold, recommends `fs.inotify.*` values,
//! renders them as a sysctl.d file, writes that file atomically and
//! applies the values through `/proc/sys` without ever lowering one. For
//! the watcher ([`crate::watch`]): this process's limits
//! ([`InotifyLimits`]), the one clear message when the watch limit is
//! reached ([`limit_message`]), and the advice for an `inotify_init1`
//! failure ([`init_hint`]).
//!
//! Every filesystem location is injectable ([`SysctlPaths`], the walk's
//! start, the `/proc` root) so tests never touch the machine's limits.
//!
//! Layer: adapter (reads `/proc` and the trees, writes `/proc/sys` and
//! sysctl.d). Imports the core ([`crate::vocab`]) only.

#![forbid(unsafe_code)]

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::vocab::TreeFilter;

/// Where `--write` puts the sysctl.d drop-in.
pub const SYSCTL_D_FILE: &str = "/etc/sysctl.d/60-csync2-watch.conf";
/// The packaged default that [`SYSCTL_D_FILE`] replaces (same file name,
/// and /etc/sysctl.d wins over /usr/lib/sysctl.d).
pub const PACKAGED_SYSCTL_D_FILE: &str = "/usr/lib/sysctl.d/60-csync2-watch.conf";
/// Where the running kernel's inotify limits live.
pub const PROC_INOTIFY_DIR: &str = "/proc/sys/fs/inotify";
/// The watch limit of this process's user namespace.
pub const PROC_USERNS_WATCHES: &str = "/proc/sys/user/max_inotify_watches";

/// Lowest recommended `max_user_watches`.
pub const WATCHES_FLOOR: u64 = 65_536;
/// `max_user_watches` is rounded up to a multiple of this.
pub const WATCHES_STEP: u64 = 65_536;
/// Lowest recommended `max_user_instances`.
pub const INSTANCES_FLOOR: u64 = 512;
/// Lowest recommended `max_queued_events`.
pub const QUEUED_FLOOR: u64 = 65_536;
/// Highest `max_queued_events` recommended on account of tree size: a full
/// kernel queue of this many events costs tens of MiB of kernel memory.
pub const QUEUED_CEILING: u64 = 1_048_576;
/// Queued events recommended per watched directory, for bursts such as an
/// unpacked archive (create, modify, close-write per file).
pub const QUEUED_PER_DIR: u64 = 4;
/// The kernel stores these limits as C `int`s.
pub const KERNEL_MAX: u64 = i32::MAX as u64;

/// One of the three inotify limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    MaxUserWatches,
    MaxUserInstances,
    MaxQueuedEvents,
}

impl Limit {
    /// All three, in the order they are printed.
    pub const ALL: [Limit; 3] = [
        Limit::MaxUserWatches,
        Limit::MaxUserInstances,
        Limit::MaxQueuedEvents,
    ];

    /// File name under `/proc/sys/fs/inotify`.
    pub fn file_name(self) -> &'static str {
        match self {
            Limit::MaxUserWatches => "max_user_watches",
            Limit::MaxUserInstances => "max_user_instances",
            Limit::MaxQueuedEvents => "max_queued_events",
        }
    }

    /// sysctl key, e.g. `fs.inotify.max_user_watches`.
    pub fn key(self) -> &'static str {
        match self {
            Limit::MaxUserWatches => "fs.inotify.max_user_watches",
            Limit::MaxUserInstances => "fs.inotify.max_user_instances",
            Limit::MaxQueuedEvents => "fs.inotify.max_queued_events",
        }
    }
}

/// A value for each of the three limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_user_watches: u64,
    pub max_user_instances: u64,
    pub max_queued_events: u64,
}

impl Limits {
    pub fn get(&self, limit: Limit) -> u64 {
        match limit {
            Limit::MaxUserWatches => self.max_user_watches,
            Limit::MaxUserInstances => self.max_user_instances,
            Limit::MaxQueuedEvents => self.max_queued_events,
        }
    }

    pub fn set(&mut self, limit: Limit, value: u64) {
        match limit {
            Limit::MaxUserWatches => self.max_user_watches = value,
            Limit::MaxUserInstances => self.max_user_instances = value,
            Limit::MaxQueuedEvents => self.max_queued_events = value,
        }
    }

    /// Each limit the larger of `self` and `other`.
    pub fn max(&self, other: &Limits) -> Limits {
        let mut out = *self;
        for limit in Limit::ALL {
            out.set(limit, self.get(limit).max(other.get(limit)));
        }
        out
    }
}

/// Where `--write` writes and applies; tests point both at temp dirs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysctlPaths {
    /// The sysctl.d drop-in ([`SYSCTL_D_FILE`]).
    pub conf_file: PathBuf,
    /// The directory holding `max_user_watches` etc. ([`PROC_INOTIFY_DIR`]).
    pub proc_inotify: PathBuf,
}

impl Default for SysctlPaths {
    fn default() -> Self {
        SysctlPaths {
            conf_file: PathBuf::from(SYSCTL_D_FILE),
            proc_inotify: PathBuf::from(PROC_INOTIFY_DIR),
        }
    }
}

/// What went wrong reading, writing or applying limits. Each message names
/// the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    #[error("cannot read {path}: {source} (is /proc mounted? inotify limits live in /proc/sys/fs/inotify)")]
    ReadLimit { path: PathBuf, source: io::Error },
    #[error("{path}: expected a number, found {text:?}")]
    ParseLimit { path: PathBuf, text: String },
    #[error("cannot write {path}: {source} ({hint})")]
    WriteConf {
        path: PathBuf,
        source: io::Error,
        hint: &'static str,
    },
    #[error("cannot set {key} through {path}: {source} ({hint})")]
    Apply {
        key: &'static str,
        path: PathBuf,
        source: io::Error,
        hint: &'static str,
    },
    #[error("{key}: wrote {wanted} to {path} but the kernel now reports {got} (it may be capped, e.g. inside a container; set it on the host)")]
    NotApplied {
        key: &'static str,
        path: PathBuf,
        wanted: u64,
        got: u64,
    },
}

fn write_hint(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => "run it as root",
        Some(libc::EROFS) => {
            "the filesystem is read-only; inside a container, set the limits on the host"
        }
        _ => "check the path and its permissions",
    }
}

// ---------------------------------------------------------------------------
// The walk

/// How many directories the daemon would watch, and where they are.
#[derive(Debug, Default)]
pub struct DirCount {
    /// Every directory counted: the watch roots, everything below them that
    /// is descended, and the ancestors of the roots (the watcher watches
    /// those too, to notice a root being created or replaced).
    pub total: u64,
    /// Per root given to [`count_watched_dirs`], in the same order: the
    /// directories at or below it.
    pub per_root: Vec<(PathBuf, u64)>,
    /// Counted directories under none of the roots (ancestors, mostly).
    pub outside_roots: u64,
    /// Directories that could not be listed (the daemon would fail there
    /// too). Vanished directories are not errors.
    pub errors: Vec<(PathBuf, io::Error)>,
}

/// Count the directories a watcher starting at `start` would watch: a real
/// directory (never a symlink) whose [`TreeFilter::descend`] is true, and
/// recursively the same inside it, just as `csync2 -cr` recurses. `start`
/// is `/` in production. Entries are typed from `readdir`'s `d_type`; files
/// are never stat'ed. `roots` only sorts the count into
/// [`DirCount::per_root`].
pub fn count_watched_dirs(filter: &dyn TreeFilter, start: &Path, roots: &[PathBuf]) -> DirCount {
    let mut count = DirCount {
        per_root: roots.iter().map(|r| (r.clone(), 0)).collect(),
        ..DirCount::default()
    };
    let walk = walkdir::WalkDir::new(start)
        .follow_links(false)
        .follow_root_links(false)
        .into_iter()
        .filter_entry(|e| e.file_type().is_dir() && filter.descend(e.path()));
    for entry in walk {
        match entry {
            Ok(entry) => {
                count.total += 1;
                let path = entry.path();
                match count
                    .per_root
                    .iter_mut()
                    .find(|(root, _)| path.starts_with(root))
                {
                    Some((_, n)) => *n += 1,
                    None => count.outside_roots += 1,
                }
            }
            Err(err) => {
                let path = err.path().map(Path::to_path_buf).unwrap_or_default();
                let io = err.into_io_error();
                match io {
                    Some(io) if io.kind() == io::ErrorKind::NotFound => {}
                    Some(io) => count.errors.push((path, io)),
                    None => count
                        .errors
                        .push((path, io::Error::other("filesystem loop"))),
                }
            }
        }
    }
    count
}

/// How many directories (hence inotify watches) watching every tree of
/// `filter` takes right now, counting from `/` like the watcher. Fails
/// only when `/` itself cannot be listed.
pub fn dirs_to_watch(filter: &dyn TreeFilter) -> io::Result<usize> {
    let root = Path::new("/");
    if !filter.descend(root) {
        return Ok(0);
    }
    let mut count = count_watched_dirs(filter, root, &[]);
    match count.errors.iter().position(|(p, _)| p == root) {
        Some(i) => Err(count.errors.swap_remove(i).1),
        None => Ok(count.total as usize),
    }
}

// ---------------------------------------------------------------------------
// What others hold

/// One process's inotify instances and watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessUsage {
    pub pid: u32,
    /// `/proc/PID/comm`.
    pub comm: OsString,
    /// `/proc/PID/cmdline`, split at NULs.
    pub cmdline: Vec<OsString>,
    /// Open inotify file descriptors.
    pub instances: u64,
    /// `inotify wd:` lines over those descriptors: the kernel's own count.
    pub watches: u64,
}

/// Instances and watches summed over some processes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub instances: u64,
    pub watches: u64,
}

impl Usage {
    pub fn sum<'a>(procs: impl IntoIterator<Item = &'a ProcessUsage>) -> Usage {
        procs.into_iter().fold(Usage::default(), |acc, p| Usage {
            instances: acc.instances + p.instances,
            watches: acc.watches + p.watches,
        })
    }
}

/// Every process under `proc_root` (normally `/proc`) whose effective uid
/// is `euid` and that holds an inotify instance. The kernel charges
/// instances and watches to the user that created the instance; the
/// effective uid now is the best available stand-in. A descriptor shared
/// by several processes is counted in each (an overestimate). Processes
/// that vanish or cannot be read are skipped.
pub fn inotify_usage(proc_root: &Path, euid: u32) -> Vec<ProcessUsage> {
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir(proc_root) else {
        return out;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = std::str::from_utf8(name.as_bytes())
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let pdir = entry.path();
        if process_euid(&pdir) != Some(euid) {
            continue;
        }
        let (instances, watches) = process_inotify(&pdir);
        if instances == 0 {
            continue;
        }
        let comm = fs::read(pdir.join("comm"))
            .map(|mut b| {
                if b.last() == Some(&b'\n') {
                    b.pop();
                }
                OsString::from(OsStr::from_bytes(&b))
            })
            .unwrap_or_default();
        let cmdline = fs::read(pdir.join("cmdline"))
            .map(|b| {
                b.split(|&c| c == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| OsStr::from_bytes(a).to_os_string())
                    .collect()
            })
            .unwrap_or_default();
        out.push(ProcessUsage {
            pid,
            comm,
            cmdline,
            instances,
            watches,
        });
    }
    out.sort_by_key(|p| p.pid);
    out
}

fn process_euid(pdir: &Path) -> Option<u32> {
    let status = fs::read(pdir.join("status")).ok()?;
    let line = status
        .split(|&c| c == b'\n')
        .find(|l| l.starts_with(b"Uid:"))?;
    let text = std::str::from_utf8(&line[4..]).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

fn process_inotify(pdir: &Path) -> (u64, u64) {
    let (mut instances, mut watches) = (0, 0);
    let Ok(fds) = fs::read_dir(pdir.join("fd")) else {
        return (0, 0);
    };
    for fd in fds.flatten() {
        let Ok(target) = fs::read_link(fd.path()) else {
            continue;
        };
        if target.as_os_str().as_bytes() != b"anon_inode:inotify" {
            continue;
        }
        instances += 1;
        if let Ok(info) = fs::read(pdir.join("fdinfo").join(fd.file_name())) {
            watches += info
                .split(|&c| c == b'\n')
                .filter(|l| l.starts_with(b"inotify wd:"))
                .count() as u64;
        }
    }
    (instances, watches)
}

/// Is `cmdline` a `csync2-watch run` for the configuration `cfg_name`
/// (`-C NAME`; `None`: the default csync2.cfg)? Such a process is the
/// daemon whose watches the count already covers.
pub fn is_daemon_for(cmdline: &[OsString], cfg_name: Option<&str>) -> bool {
    let Some((argv0, args)) = cmdline.split_first() else {
        return false;
    };
    let base = Path::new(argv0).file_name().map(OsStr::as_bytes);
    if base != Some(b"csync2-watch".as_slice()) {
        return false;
    }
    let mut subcommand = None;
    let mut cfg: Option<&[u8]> = None;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_bytes();
        if a == b"-C" {
            cfg = args.get(i + 1).map(|v| v.as_bytes());
            i += 2;
            continue;
        }
        if let Some(v) = a.strip_prefix(b"-C") {
            cfg = Some(v.strip_prefix(b"=").unwrap_or(v));
        } else if matches!(a, b"-N" | b"-D" | b"-p" | b"--config" | b"--state-dir") {
            i += 2;
            continue;
        } else if !a.starts_with(b"-") && subcommand.is_none() {
            subcommand = Some(a);
        }
        i += 1;
    }
    subcommand == Some(b"run".as_slice()) && cfg == cfg_name.map(str::as_bytes)
}

// ---------------------------------------------------------------------------
// The numbers

/// Read the three limits from `proc_inotify` (normally
/// [`PROC_INOTIFY_DIR`]).
pub fn read_limits(proc_inotify: &Path) -> Result<Limits, SysctlError> {
    let mut limits = Limits {
        max_user_watches: 0,
        max_user_instances: 0,
        max_queued_events: 0,
    };
    for limit in Limit::ALL {
        limits.set(limit, read_one(&proc_inotify.join(limit.file_name()))?);
    }
    Ok(limits)
}

fn read_one(path: &Path) -> Result<u64, SysctlError> {
    let text = fs::read_to_string(path).map_err(|source| SysctlError::ReadLimit {
        path: path.to_path_buf(),
        source,
    })?;
    let trimmed = text.trim();
    // The kernel prints an int; a negative one would be a misconfiguration
    // we treat as 0 (anything recommended is higher).
    match trimmed.parse::<i64>() {
        Ok(v) => Ok(v.max(0) as u64),
        Err(_) => Err(SysctlError::ParseLimit {
            path: path.to_path_buf(),
            text: trimmed.to_string(),
        }),
    }
}

// ---------------------------------------------------------------------------
// The watcher's view

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

impl InotifyLimits {
    /// This machine's limits ([`PROC_INOTIFY_DIR`], [`PROC_USERNS_WATCHES`]).
    pub fn read() -> InotifyLimits {
        let inotify = Path::new(PROC_INOTIFY_DIR);
        let one = |limit: Limit| read_one(&inotify.join(limit.file_name())).ok();
        InotifyLimits {
            max_user_watches: one(Limit::MaxUserWatches),
            userns_max_watches: read_one(Path::new(PROC_USERNS_WATCHES)).ok(),
            max_user_instances: one(Limit::MaxUserInstances),
            max_queued_events: one(Limit::MaxQueuedEvents),
        }
    }
}

/// The error-level line the watcher logs once when the watch limit is
/// reached: how many directories it watches, about how many it needs, the
/// sysctl to raise and the command that does it.
pub fn limit_message(
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
         until then {unwatched_subtrees} unwatched subtree(s) are reconciled every {}",
        humantime::format_duration(interval)
    )
}

/// Extra advice for an `inotify_init1` failure.
pub fn init_hint(err: &io::Error) -> String {
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

/// Round `n` up to a multiple of `step`.
fn round_up(n: u64, step: u64) -> u64 {
    n.div_ceil(step).saturating_mul(step)
}

/// What the limits should be for `dirs` watched directories, when other
/// programs of the same user already hold `others`:
///
/// * watches: twice the directories (room for the tree to grow, and for a
///   `csync2-watch watch` run beside the daemon, which needs as many
///   again) plus what the others hold, at least [`WATCHES_FLOOR`], rounded
///   up to a multiple of [`WATCHES_STEP`];
/// * instances: twice what the others hold plus the daemon's and a
///   `watch`'s, rounded up to a power of two, at least [`INSTANCES_FLOOR`];
/// * queued events (per instance): [`QUEUED_PER_DIR`] per directory,
///   rounded up to a power of two, between [`QUEUED_FLOOR`] and
///   [`QUEUED_CEILING`].
///
/// Every value is capped at [`KERNEL_MAX`].
pub fn recommend(dirs: u64, others: Usage) -> Limits {
    let watches = dirs
        .saturating_mul(2)
        .saturating_add(others.watches)
        .max(WATCHES_FLOOR);
    let instances = others
        .instances
        .saturating_add(2)
        .saturating_mul(2)
        .checked_next_power_of_two()
        .unwrap_or(KERNEL_MAX)
        .max(INSTANCES_FLOOR);
    let queued = dirs
        .saturating_mul(QUEUED_PER_DIR)
        .checked_next_power_of_two()
        .unwrap_or(QUEUED_CEILING)
        .clamp(QUEUED_FLOOR, QUEUED_CEILING);
    Limits {
        max_user_watches: round_up(watches, WATCHES_STEP).min(KERNEL_MAX),
        max_user_instances: instances.min(KERNEL_MAX),
        max_queued_events: queued.min(KERNEL_MAX),
    }
}

// ---------------------------------------------------------------------------
// The report

/// Everything `csync2-watch sysctl` prints.
#[derive(Debug)]
pub struct Report {
    /// Who the count is for, e.g. `node node1, /etc/csync2.cfg`.
    pub subject: String,
    pub dirs: DirCount,
    /// Inotify use by the daemon's user, apart from the daemon itself.
    pub others: Usage,
    pub current: Limits,
    pub recommended: Limits,
}

impl Report {
    pub fn new(subject: String, dirs: DirCount, others: Usage, current: Limits) -> Report {
        let recommended = recommend(dirs.total, others);
        Report {
            subject,
            dirs,
            others,
            current,
            recommended,
        }
    }

    /// What the drop-in sets: the recommendation, but never below what the
    /// kernel has now (a later sysctl.d file wins at boot, so writing a
    /// lower value would lower it).
    pub fn target(&self) -> Limits {
        self.recommended.max(&self.current)
    }

    /// The sysctl.d file's text.
    pub fn conf_text(&self) -> String {
        let t = self.target();
        let mut s = String::new();
        let _ = writeln!(s, "# {SYSCTL_D_FILE}: written by `csync2-watch sysctl`.");
        let _ = writeln!(
            s,
            "# {} directories to watch ({}); root's other inotify users held",
            self.dirs.total, self.subject
        );
        let _ = writeln!(
            s,
            "# {} watches in {} instances when this was computed. inotify limits",
            self.others.watches, self.others.instances
        );
        let _ = writeln!(
            s,
            "# are per user: every program running as root shares them with csync2-watch."
        );
        let _ = writeln!(
            s,
            "# It replaces the packaged default {PACKAGED_SYSCTL_D_FILE} (same name)."
        );
        let _ = writeln!(s, "# Apply with `sysctl --system` (done at boot).");
        for limit in Limit::ALL {
            let _ = writeln!(s, "{} = {}", limit.key(), t.get(limit));
        }
        s
    }

    /// The human-readable report, ending with the drop-in's text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Directories csync2-watch would watch ({}): {}",
            self.subject, self.dirs.total
        );
        let width = self
            .dirs
            .per_root
            .iter()
            .map(|(_, n)| *n)
            .chain([self.dirs.outside_roots])
            .max()
            .unwrap_or(0)
            .to_string()
            .len();
        for (root, n) in &self.dirs.per_root {
            let _ = writeln!(s, "  {n:>width$}  {}", root.display());
        }
        if self.dirs.outside_roots > 0 {
            let _ = writeln!(
                s,
                "  {:>width$}  ancestors of the roots (watched to notice a root being replaced)",
                self.dirs.outside_roots
            );
        }
        if !self.dirs.errors.is_empty() {
            let _ = writeln!(
                s,
                "  {} directories could not be listed (not counted below them):",
                self.dirs.errors.len()
            );
            for (path, err) in self.dirs.errors.iter().take(10) {
                let _ = writeln!(s, "    {}: {err}", path.display());
            }
            if self.dirs.errors.len() > 10 {
                let _ = writeln!(s, "    ...");
            }
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "inotify limits are per user, and csync2-watch runs as root: every other program"
        );
        let _ = writeln!(
            s,
            "running as root that uses inotify (systemd, udev, other daemons, another"
        );
        let _ = writeln!(
            s,
            "csync2-watch instance) draws on the same limits. Right now those hold {} watches",
            self.others.watches
        );
        let _ = writeln!(
            s,
            "in {} inotify instances (not counting this configuration's daemon).",
            self.others.instances
        );
        let _ = writeln!(s);
        let _ = writeln!(s, "{:<31} {:>12} {:>12}", "", "current", "recommended");
        let target = self.target();
        for limit in Limit::ALL {
            let cur = self.current.get(limit);
            let rec = self.recommended.get(limit);
            let why = match limit {
                Limit::MaxUserWatches => format!(
                    "{} dirs x 2 + {} held by others",
                    self.dirs.total, self.others.watches
                ),
                Limit::MaxUserInstances => format!("{} held by others", self.others.instances),
                Limit::MaxQueuedEvents => "per instance, for bursts".to_string(),
            };
            let note = if target.get(limit) > rec {
                format!("{why}; current is higher, kept")
            } else {
                why
            };
            let _ = writeln!(s, "{:<31} {cur:>12} {rec:>12}  ({note})", limit.key());
        }
        let _ = writeln!(s);
        if target == self.current {
            let _ = writeln!(s, "The current limits are enough.");
        }
        let _ = writeln!(
            s,
            "`csync2-watch sysctl --write` writes this to {SYSCTL_D_FILE} and applies it now"
        );
        let _ = writeln!(
            s,
            "(it replaces the packaged default {PACKAGED_SYSCTL_D_FILE};"
        );
        let _ = writeln!(
            s,
            "a new max_queued_events reaches only inotify instances created afterwards:"
        );
        let _ = writeln!(s, "restart csync2-watch for it to take effect there):");
        let _ = writeln!(s);
        s.push_str(&self.conf_text());
        s
    }
}

// ---------------------------------------------------------------------------
// Writing and applying

/// Write `text` to `path` atomically (temp file in the same directory,
/// fsync, rename, fsync the directory) with mode 0644, creating the
/// directory if it is missing.
pub fn write_conf(path: &Path, text: &str) -> Result<(), SysctlError> {
    let err = |source: io::Error| SysctlError::WriteConf {
        path: path.to_path_buf(),
        hint: write_hint(&source),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).map_err(err)?;
    let mut tmp_name = OsString::from(".");
    tmp_name.push(path.file_name().unwrap_or(OsStr::new("sysctl.conf")));
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(0o644))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// One limit after [`apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub limit: Limit,
    pub before: u64,
    pub after: u64,
}

impl Applied {
    pub fn changed(&self) -> bool {
        self.before != self.after
    }
}

/// Raise each limit under `proc_inotify` to `target` where it is lower;
/// never lower one. Reads each value back to confirm.
pub fn apply(proc_inotify: &Path, target: &Limits) -> Result<Vec<Applied>, SysctlError> {
    let mut out = Vec::new();
    for limit in Limit::ALL {
        let path = proc_inotify.join(limit.file_name());
        let before = read_one(&path)?;
        let wanted = target.get(limit);
        if wanted <= before {
            out.push(Applied {
                limit,
                before,
                after: before,
            });
            continue;
        }
        let write = fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .and_then(|mut f| f.write_all(format!("{wanted}\n").as_bytes()));
        if let Err(source) = write {
            return Err(SysctlError::Apply {
                key: limit.key(),
                path,
                hint: write_hint(&source),
                source,
            });
        }
        let after = read_one(&path)?;
        if after < wanted {
            return Err(SysctlError::NotApplied {
                key: limit.key(),
                path,
                wanted,
                got: after,
            });
        }
        out.push(Applied {
            limit,
            before,
            after,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn daemon_cmdline_matches_only_run_with_same_cfg() {
        assert!(is_daemon_for(
            &args(&["/usr/sbin/csync2-watch", "run"]),
            None
        ));
        assert!(is_daemon_for(
            &args(&["csync2-watch", "run", "-N", "n1", "-C", "web"]),
            Some("web")
        ));
        assert!(is_daemon_for(
            &args(&["csync2-watch", "run", "-Cweb"]),
            Some("web")
        ));
        assert!(is_daemon_for(
            &args(&["csync2-watch", "-C=web", "run"]),
            Some("web")
        ));
        assert!(!is_daemon_for(
            &args(&["csync2-watch", "run", "-C", "web"]),
            None
        ));
        assert!(!is_daemon_for(&args(&["csync2-watch", "run"]), Some("web")));
        assert!(!is_daemon_for(&args(&["csync2-watch", "watch"]), None));
        // A -N value that happens to be "run" is not the subcommand.
        assert!(!is_daemon_for(
            &args(&["csync2-watch", "watch", "-N", "run"]),
            None
        ));
        assert!(!is_daemon_for(&args(&["inotifywait", "run"]), None));
        assert!(!is_daemon_for(&[], None));
    }

    #[test]
    fn limit_message_names_the_sysctl_the_count_and_the_fix() {
        let m = limit_message(10, 1234, 3, Duration::from_secs(300));
        assert!(m.contains("fs.inotify.max_user_watches"), "{m}");
        assert!(m.contains("watching 10 directories"), "{m}");
        assert!(m.contains("about 1234 needed"), "{m}");
        assert!(m.contains("csync2-watch sysctl --write"), "{m}");
        assert!(m.contains("every 5m"), "{m}");
    }

    #[test]
    fn round_up_to_step() {
        assert_eq!(round_up(1, 65_536), 65_536);
        assert_eq!(round_up(65_536, 65_536), 65_536);
        assert_eq!(round_up(65_537, 65_536), 131_072);
        assert_eq!(round_up(0, 65_536), 0);
    }
}
