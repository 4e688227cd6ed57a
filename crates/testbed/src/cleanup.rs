//! Tearing a testbed down and sweeping up after dead ones.
//!
//! Teardown is driven by what exists, not by what the testbed remembers,
//! so the same code cleans a half-built testbed, a dropped one and the
//! leftovers of a test run that was SIGKILLed: it ends every process inside
//! the testbed's namespaces (found through `/proc/*/ns`, signalled through
//! a pidfd so a recycled PID is never hit), unmounts everything mounted
//! under its directories (lazily as a last resort), deletes its network
//! namespaces and removes its directories.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use nix::mount::{umount2, MntFlags};

use super::TestbedError;
use csync2_watch::process::{pidfd_open, pidfd_send_signal};

/// Where `ip netns` keeps its namespace files.
pub(crate) const NETNS_DIR: &str = "/run/netns";
/// Every testbed network namespace is named `csw-<id>-<what>`.
const NETNS_PREFIX: &str = "csw-";
/// Every testbed's common data path lives in `/srv/csw-<id>/data`.
pub(crate) const DATA_PARENT: &str = "/srv";
/// How long teardown keeps killing processes in a testbed's namespaces.
const KILL_DEADLINE: Duration = Duration::from_secs(15);

pub(crate) fn netns_name(id: &str, what: &str) -> String {
    format!("{NETNS_PREFIX}{id}-{what}")
}

pub(crate) fn data_root(id: &str) -> PathBuf {
    Path::new(DATA_PARENT).join(format!("{NETNS_PREFIX}{id}"))
}

/// The testbeds' base directory: `$CSYNC2_WATCH_TESTBED_DIR`, or
/// [`DEFAULT_BASE_DIR`](super::DEFAULT_BASE_DIR).
pub fn base_dir() -> PathBuf {
    std::env::var_os(super::BASE_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(super::DEFAULT_BASE_DIR))
}

/// Start time of `pid` in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`); with the PID it identifies a process for good.
pub(crate) fn process_start_time(pid: i32) -> Option<u64> {
    let stat = fs::read(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain anything; fields after it
    // start behind the last ')'.
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    // rest: " state ppid ..."; state is field 3, start time field 22.
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// The owner file's text for this process. Fails when its start time
/// cannot be read: without it, sweepers would take the testbed for stale.
pub(crate) fn owner_text() -> io::Result<String> {
    let pid = std::process::id() as i32;
    let start = process_start_time(pid).ok_or_else(|| {
        io::Error::other(format!(
            "cannot read the start time of process {pid} from /proc"
        ))
    })?;
    Ok(format!("{pid} {start}\n"))
}

/// Is the process that wrote `run_dir/owner` still alive?
fn owner_alive(run_dir: &Path) -> bool {
    let Ok(text) = fs::read_to_string(run_dir.join("owner")) else {
        return false;
    };
    let mut it = text.split_ascii_whitespace();
    let (Some(Ok(pid)), Some(Ok(start))) = (
        it.next().map(str::parse::<i32>),
        it.next().map(str::parse::<u64>),
    ) else {
        return false;
    };
    pid > 0 && process_start_time(pid) == Some(start)
}

/// The machine-wide lock that serialises creating testbeds with sweeping.
pub(crate) fn global_lock(base: &Path) -> Result<Flock<File>, TestbedError> {
    fs::create_dir_all(base).map_err(super::io_err(format!("creating {}", base.display())))?;
    let path = base.join(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(super::io_err(format!("opening {}", path.display())))?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| TestbedError::Io {
        what: format!("locking {}", path.display()),
        source: e.into(),
    })
}

/// Remove every testbed whose owner process is dead (its run directory,
/// network namespaces, mounts, processes, data path), and network
/// namespaces or data paths left without a run directory. Returns the ids
/// removed. Called by [`Testbed::start`](super::Testbed::start); safe to
/// call at any time, from any process: live testbeds are left alone.
pub fn sweep_stale() -> Result<Vec<String>, TestbedError> {
    let base = base_dir();
    let _lock = global_lock(&base)?;
    Ok(sweep_locked(&base))
}

pub(crate) fn sweep_locked(base: &Path) -> Vec<String> {
    let mut removed = Vec::new();
    let mut stale: Vec<String> = Vec::new();
    if let Ok(entries) = fs::read_dir(base) {
        for e in entries.flatten() {
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            if name.starts_with('.') || !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            if !owner_alive(&e.path()) {
                stale.push(name);
            }
        }
    }
    // Namespaces and data paths whose run directory is gone (only names of
    // exactly our shape: `csw-<pid>-<n>-br`, `csw-<pid>-<n>-n<i>`,
    // `/srv/csw-<pid>-<n>`).
    let mut orphans: Vec<String> = Vec::new();
    for name in dir_names(Path::new(NETNS_DIR)) {
        if let Some((id, what)) = name
            .strip_prefix(NETNS_PREFIX)
            .and_then(|rest| rest.rsplit_once('-'))
        {
            let node = what
                .strip_prefix('n')
                .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()));
            if is_id(id) && (what == "br" || node) {
                orphans.push(id.to_string());
            }
        }
    }
    for name in dir_names(Path::new(DATA_PARENT)) {
        if let Some(id) = name.strip_prefix(NETNS_PREFIX).filter(|id| is_id(id)) {
            orphans.push(id.to_string());
        }
    }
    for id in orphans {
        // Another base directory (CSYNC2_WATCH_TESTBED_DIR) may own it: an
        // id whose process still lives is never an orphan.
        if !base.join(&id).exists() && !stale.contains(&id) && !id_owner_alive(&id) {
            stale.push(id);
        }
    }
    for id in stale {
        tracing::info!(id = %id, "removing a stale csync2 testbed");
        for p in teardown(base, &id) {
            tracing::warn!(id = %id, "stale testbed: {p}");
        }
        removed.push(id);
    }
    removed
}

/// Does the process whose PID starts testbed id `<pid>-<n>` still run?
fn id_owner_alive(id: &str) -> bool {
    id.split_once('-')
        .is_some_and(|(pid, _)| Path::new("/proc").join(pid).exists())
}

/// Is `s` a testbed id, `<pid>-<n>`?
pub(crate) fn is_id(s: &str) -> bool {
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    s.split_once('-')
        .is_some_and(|(pid, n)| digits(pid) && digits(n))
}

fn dir_names(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|it| {
            it.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The network namespaces of testbed `id`.
pub(crate) fn netns_of(id: &str) -> Vec<String> {
    let prefix = format!("{NETNS_PREFIX}{id}-");
    let mut v: Vec<String> = dir_names(Path::new(NETNS_DIR))
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    v.sort();
    v
}

/// Tear testbed `id` down completely. Returns the problems met (empty when
/// everything is gone).
pub(crate) fn teardown(base: &Path, id: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let run_dir = base.join(id);
    let data_root = data_root(id);
    let owned = run_dir.is_dir();

    // 1. Every process inside one of its namespaces.
    let mut ns_files: Vec<PathBuf> = netns_of(id)
        .iter()
        .map(|n| Path::new(NETNS_DIR).join(n))
        .collect();
    if let Ok(entries) = fs::read_dir(run_dir.join("ns")) {
        ns_files.extend(entries.flatten().map(|e| e.path()));
    }
    let inums = namespace_inums(&ns_files);
    if !inums.is_empty() {
        if let Err(p) = kill_namespace_members(&inums, KILL_DEADLINE) {
            // Keep the names that let a later sweep find these processes.
            problems.push(format!("{p}; leaving the testbed for a later sweep"));
            return problems;
        }
    }

    // 2. Everything mounted under its directories.
    problems.extend(unmount_under(&[&run_dir, &data_root]));

    // 3. Its network namespaces.
    for name in netns_of(id) {
        let path = Path::new(NETNS_DIR).join(&name);
        let _ = umount2(&path, MntFlags::MNT_DETACH);
        if let Err(e) = fs::remove_file(&path) {
            if e.kind() != io::ErrorKind::NotFound {
                problems.push(format!("cannot delete network namespace {name}: {e}"));
            }
        }
    }

    // 4. Its directories, unless something is still mounted there.
    let still = mounts_under(&[&run_dir, &data_root]);
    if !still.is_empty() {
        problems.push(format!(
            "not removing {} and {}: still mounted: {}",
            run_dir.display(),
            data_root.display(),
            still
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        return problems;
    }
    if owned {
        for dir in [&run_dir, &data_root] {
            if let Err(e) = fs::remove_dir_all(dir) {
                if e.kind() != io::ErrorKind::NotFound {
                    problems.push(format!("cannot remove {}: {e}", dir.display()));
                }
            }
        }
    } else {
        // No run directory proves the data path was ours: only remove it
        // when it holds nothing but the empty mount point.
        let _ = fs::remove_dir(data_root.join("data"));
        if let Err(e) = fs::remove_dir(&data_root) {
            if e.kind() != io::ErrorKind::NotFound {
                problems.push(format!(
                    "leaving {}: {e} (not a testbed's empty data path?)",
                    data_root.display()
                ));
            }
        }
    }
    problems
}

/// Inode numbers of the namespaces bound at `files` (files that are not
/// namespace bind mounts are skipped).
fn namespace_inums(files: &[PathBuf]) -> HashSet<u64> {
    let Ok(nsfs) = fs::metadata("/proc/self/ns/net") else {
        return HashSet::new();
    };
    files
        .iter()
        .filter_map(|f| fs::metadata(f).ok())
        .filter(|m| m.dev() == nsfs.dev())
        .map(|m| m.ino())
        .collect()
}

/// The namespace inode number `/proc/<pid>/ns/<kind>` links to.
fn ns_inum(pid: i32, kind: &str) -> Option<u64> {
    let link = fs::read_link(format!("/proc/{pid}/ns/{kind}")).ok()?;
    let s = link.to_str()?;
    s.rsplit_once('[')?.1.strip_suffix(']')?.parse().ok()
}

fn in_namespaces(pid: i32, inums: &HashSet<u64>) -> bool {
    ["net", "mnt", "uts"]
        .iter()
        .any(|k| ns_inum(pid, k).is_some_and(|i| inums.contains(&i)))
}

/// PIDs of the processes inside any of the namespaces `inums` (never this
/// process).
pub(crate) fn namespace_members(inums: &HashSet<u64>) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me && in_namespaces(pid, inums))
        .collect()
}

/// SIGKILL every process inside `inums` until none is left.
fn kill_namespace_members(inums: &HashSet<u64>, deadline: Duration) -> Result<(), String> {
    let until = Instant::now() + deadline;
    loop {
        let pids = namespace_members(inums);
        if pids.is_empty() {
            return Ok(());
        }
        if Instant::now() > until {
            return Err(format!(
                "processes still inside the testbed's namespaces after {deadline:?}: {pids:?}"
            ));
        }
        for pid in pids {
            kill_checked(pid, inums);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILL `pid` through a pidfd, after checking (through the pidfd's
/// pinned PID) that it is still inside `inums`.
fn kill_checked(pid: i32, inums: &HashSet<u64>) {
    let Ok(fd) = u32::try_from(pid)
        .map_err(|_| ())
        .and_then(|p| pidfd_open(p).map_err(drop))
    else {
        return;
    };
    if in_namespaces(pid, inums) {
        let _ = pidfd_send_signal(fd.as_fd(), libc::SIGKILL);
    }
}

/// Decode a mountinfo field (`\040` for space, `\011` tab, `\012` newline,
/// `\134` backslash).
fn unescape_mountinfo(field: &[u8]) -> PathBuf {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 4 <= field.len() {
            let oct = &field[i + 1..i + 4];
            if oct.iter().all(|b| (b'0'..=b'7').contains(b)) {
                out.push((oct[0] - b'0') * 64 + (oct[1] - b'0') * 8 + (oct[2] - b'0'));
                i += 4;
                continue;
            }
        }
        out.push(field[i]);
        i += 1;
    }
    PathBuf::from(OsString::from_vec(out))
}

/// Mount points of this mount namespace at or below any of `roots`.
pub(crate) fn mounts_under(roots: &[&Path]) -> Vec<PathBuf> {
    let Ok(info) = fs::read("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|m| roots.iter().any(|r| m.starts_with(r)))
        .collect()
}

/// Unmount everything at or below `roots`, deepest first, lazily when a
/// plain unmount fails.
fn unmount_under(roots: &[&Path]) -> Vec<String> {
    let mut problems = Vec::new();
    for _round in 0..8 {
        let mut mounts = mounts_under(roots);
        if mounts.is_empty() {
            return problems;
        }
        mounts.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().as_bytes().len()));
        for m in mounts {
            if umount2(&m, MntFlags::empty()).is_err() {
                if let Err(e) = umount2(&m, MntFlags::MNT_DETACH) {
                    problems.push(format!("cannot unmount {}: {e}", m.display()));
                }
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_decode_to_the_exact_bytes() {
        assert_eq!(
            unescape_mountinfo(br"/a\040b\011c\012d\134e"),
            PathBuf::from(OsString::from_vec(b"/a b\tc\nd\\e".to_vec()))
        );
        // A backslash not followed by three octal digits stays.
        assert_eq!(unescape_mountinfo(br"/x\9"), PathBuf::from(r"/x\9"));
        assert_eq!(unescape_mountinfo(br"/x\04"), PathBuf::from(r"/x\04"));
    }

    #[test]
    fn only_names_of_our_shape_are_testbed_ids() {
        assert!(is_id("123-4"));
        for s in ["", "123", "123-", "-4", "a-1", "1-2-3", "12 -3"] {
            assert!(!is_id(s), "{s:?}");
        }
    }

    #[test]
    fn own_start_time_is_read_and_stable() {
        let me = std::process::id() as i32;
        let a = process_start_time(me).expect("own /proc/<pid>/stat");
        assert_eq!(process_start_time(me), Some(a));
        assert_eq!(process_start_time(-1), None);
    }
}
