//! Snapshots of directory trees and human-readable, byte-exact
//! differences between them, to check that csync2 made nodes identical.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::hash::Hasher;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Regular files up to this size keep their bytes in the snapshot, so a
/// difference can show them.
pub const INLINE_CONTENT: u64 = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

/// What a snapshot records about one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: EntryKind,
    /// Permission bits with setuid, setgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Regular files: their size; 0 for everything else (directory sizes
    /// depend on the file system's history, not on the content).
    pub size: u64,
    /// Modification time, whole seconds (csync2 transfers whole seconds).
    pub mtime: i64,
    /// Regular files: a 64-bit hash of the content.
    pub digest: Option<u64>,
    /// Regular files up to [`INLINE_CONTENT`] bytes: the content.
    pub content: Option<Vec<u8>>,
    /// Symlinks: the target, byte-exact.
    pub target: Option<PathBuf>,
    /// Devices: the device number.
    pub rdev: u64,
}

/// Relative path (byte-exact) to entry; the root itself is not included.
pub type Snapshot = BTreeMap<PathBuf, Entry>;

/// What [`diff_trees_with`] compares besides kind, mode, owner, content,
/// symlink target and device number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiffOptions {
    /// Also compare the modification time (whole seconds) of regular files.
    /// Not of directories: creating an entry changes its directory's mtime
    /// after csync2 set it.
    pub mtime: bool,
}

/// Snapshot the tree below `dir` (symlinks not followed). Entries that
/// vanish while the walk runs are left out, so a tree being synced can be
/// snapshotted; any other error fails.
pub fn tree_snapshot(dir: &Path) -> io::Result<Snapshot> {
    let mut out = Snapshot::new();
    let walk = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .min_depth(1)
        .sort_by_file_name();
    for item in walk {
        let item = match item {
            Ok(i) => i,
            Err(e) if vanished(e.io_error()) => continue,
            Err(e) => return Err(e.into()),
        };
        let rel = item
            .path()
            .strip_prefix(dir)
            .map_err(io::Error::other)?
            .to_path_buf();
        match entry_of(item.path()) {
            Ok(e) => {
                out.insert(rel, e);
            }
            Err(e) if vanished(Some(&e)) => continue,
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("{}: {e}", item.path().display()),
                ))
            }
        }
    }
    Ok(out)
}

fn vanished(e: Option<&io::Error>) -> bool {
    e.is_some_and(|e| e.kind() == io::ErrorKind::NotFound)
}

fn entry_of(path: &Path) -> io::Result<Entry> {
    let md = fs::symlink_metadata(path)?;
    let ft = md.file_type();
    let kind = if ft.is_file() {
        EntryKind::File
    } else if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_fifo() {
        EntryKind::Fifo
    } else if ft.is_socket() {
        EntryKind::Socket
    } else if ft.is_char_device() {
        EntryKind::CharDevice
    } else {
        EntryKind::BlockDevice
    };
    let mut e = Entry {
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        size: 0,
        mtime: md.mtime(),
        digest: None,
        content: None,
        target: None,
        rdev: 0,
    };
    match kind {
        EntryKind::File => {
            let (size, digest, content) = read_content(path)?;
            e.size = size;
            e.digest = Some(digest);
            e.content = content;
        }
        EntryKind::Symlink => e.target = Some(fs::read_link(path)?),
        EntryKind::CharDevice | EntryKind::BlockDevice => e.rdev = md.rdev(),
        _ => {}
    }
    Ok(e)
}

fn read_content(path: &Path) -> io::Result<(u64, u64, Option<Vec<u8>>)> {
    let mut f = File::open(path)?;
    let mut hasher = DefaultHasher::new();
    let mut head = Vec::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.write(&buf[..n]);
        if size < INLINE_CONTENT + 1 {
            head.extend_from_slice(&buf[..n.min((INLINE_CONTENT + 1 - size) as usize)]);
        }
        size += n as u64;
    }
    hasher.write_u64(size);
    let content = (size <= INLINE_CONTENT).then_some(head);
    Ok((size, hasher.finish(), content))
}

/// Render bytes unambiguously and reversibly: printable ASCII as is,
/// everything else escaped (`\n`, `\t`, `\xff`, `\\`, `\"`).
pub fn escape_bytes(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

fn quote(p: &Path) -> String {
    format!("\"{}\"", escape_bytes(p.as_os_str().as_bytes()))
}

/// Differences between two snapshots, one human-readable line each (names
/// quoted and escaped byte-exact), labelled `a` and `b`; empty when
/// identical. Modification times are not compared.
pub fn diff_trees(a: &Snapshot, b: &Snapshot) -> Vec<String> {
    diff_trees_with(("a", a), ("b", b), DiffOptions::default())
}

/// [`diff_trees`] with labels (e.g. node names) and options.
pub fn diff_trees_with(
    (la, a): (&str, &Snapshot),
    (lb, b): (&str, &Snapshot),
    opts: DiffOptions,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut ia = a.iter().peekable();
    let mut ib = b.iter().peekable();
    loop {
        match (ia.peek(), ib.peek()) {
            (None, None) => break,
            (Some((pa, _)), None) => {
                out.push(format!("{}: only on {la}", quote(pa)));
                ia.next();
            }
            (None, Some((pb, _))) => {
                out.push(format!("{}: only on {lb}", quote(pb)));
                ib.next();
            }
            (Some((pa, ea)), Some((pb, eb))) => match pa.cmp(pb) {
                std::cmp::Ordering::Less => {
                    out.push(format!("{}: only on {la}", quote(pa)));
                    ia.next();
                }
                std::cmp::Ordering::Greater => {
                    out.push(format!("{}: only on {lb}", quote(pb)));
                    ib.next();
                }
                std::cmp::Ordering::Equal => {
                    diff_entry(pa, (la, ea), (lb, eb), opts, &mut out);
                    ia.next();
                    ib.next();
                }
            },
        }
    }
    out
}

fn diff_entry(
    path: &Path,
    (la, a): (&str, &Entry),
    (lb, b): (&str, &Entry),
    opts: DiffOptions,
    out: &mut Vec<String>,
) {
    let name = quote(path);
    if a.kind != b.kind {
        out.push(format!(
            "{name}: {:?} on {la}, {:?} on {lb}",
            a.kind, b.kind
        ));
        return;
    }
    // csync2 does not chmod symlinks; their mode is always 0777 on Linux.
    if a.mode != b.mode && a.kind != EntryKind::Symlink {
        out.push(format!(
            "{name}: mode {:04o} on {la}, {:04o} on {lb}",
            a.mode, b.mode
        ));
    }
    if (a.uid, a.gid) != (b.uid, b.gid) {
        out.push(format!(
            "{name}: owner {}:{} on {la}, {}:{} on {lb}",
            a.uid, a.gid, b.uid, b.gid
        ));
    }
    if a.size != b.size || a.digest != b.digest {
        match (&a.content, &b.content) {
            (Some(ca), Some(cb)) => out.push(format!(
                "{name}: content \"{}\" on {la}, \"{}\" on {lb}",
                escape_bytes(ca),
                escape_bytes(cb)
            )),
            _ => out.push(format!(
                "{name}: content differs ({} bytes on {la}, {} bytes on {lb})",
                a.size, b.size
            )),
        }
    }
    if a.target != b.target {
        let t = |t: &Option<PathBuf>| t.as_deref().map(quote).unwrap_or_default();
        out.push(format!(
            "{name}: symlink to {} on {la}, to {} on {lb}",
            t(&a.target),
            t(&b.target)
        ));
    }
    if a.rdev != b.rdev {
        out.push(format!(
            "{name}: device {:#x} on {la}, {:#x} on {lb}",
            a.rdev, b.rdev
        ));
    }
    if opts.mtime && a.kind == EntryKind::File && a.mtime != b.mtime {
        out.push(format!(
            "{name}: mtime {} on {la}, {} on {lb}",
            a.mtime, b.mtime
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::fs::{symlink, PermissionsExt};

    #[test]
    fn escape_is_byte_exact_and_readable() {
        assert_eq!(escape_bytes(b"a b"), "a b");
        assert_eq!(escape_bytes(b"a\nb\t-\xff\\\""), "a\\nb\\t-\\xff\\\\\\\"");
    }

    #[test]
    fn snapshot_records_kinds_modes_content_and_targets() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        fs::create_dir(d.join("sub")).unwrap();
        fs::write(d.join("sub/f"), b"hello").unwrap();
        fs::set_permissions(d.join("sub/f"), fs::Permissions::from_mode(0o640)).unwrap();
        symlink("sub/f", d.join("l")).unwrap();
        nix::unistd::mkfifo(
            &d.join("p"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let big = vec![7u8; 100_000];
        fs::write(d.join("big"), &big).unwrap();

        let s = tree_snapshot(d).unwrap();
        let keys: Vec<&OsStr> = s.keys().map(|p| p.as_os_str()).collect();
        assert_eq!(keys, ["big", "l", "p", "sub", "sub/f"]);
        let f = &s[Path::new("sub/f")];
        assert_eq!(f.kind, EntryKind::File);
        assert_eq!(f.mode, 0o640);
        assert_eq!(f.size, 5);
        assert_eq!(f.content.as_deref(), Some(&b"hello"[..]));
        assert_eq!(
            s[Path::new("l")].target.as_deref(),
            Some(Path::new("sub/f"))
        );
        assert_eq!(s[Path::new("p")].kind, EntryKind::Fifo);
        assert_eq!(s[Path::new("big")].size, 100_000);
        assert_eq!(s[Path::new("big")].content, None);
        assert_eq!(s[Path::new("sub")].kind, EntryKind::Dir);
    }

    #[test]
    fn diff_reports_each_kind_of_difference() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for d in [a.path(), b.path()] {
            fs::write(d.join("same"), b"x").unwrap();
            fs::write(d.join("content"), b"one").unwrap();
            fs::write(d.join("mode"), b"m").unwrap();
        }
        fs::write(b.path().join("content"), b"two").unwrap();
        fs::set_permissions(b.path().join("mode"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(a.path().join("mode"), fs::Permissions::from_mode(0o644)).unwrap();
        symlink("t1", a.path().join("link")).unwrap();
        symlink("t2", b.path().join("link")).unwrap();
        fs::write(a.path().join("only-a"), b"").unwrap();
        fs::create_dir(b.path().join("kind")).unwrap();
        fs::write(a.path().join("kind"), b"").unwrap();
        let big_a = vec![1u8; 1000];
        let mut big_b = big_a.clone();
        big_b[999] = 2;
        fs::write(a.path().join("big"), &big_a).unwrap();
        fs::write(b.path().join("big"), &big_b).unwrap();

        let sa = tree_snapshot(a.path()).unwrap();
        let sb = tree_snapshot(b.path()).unwrap();
        let d = diff_trees_with(("n1", &sa), ("n2", &sb), DiffOptions::default());
        assert_eq!(
            d,
            [
                "\"big\": content differs (1000 bytes on n1, 1000 bytes on n2)",
                "\"content\": content \"one\" on n1, \"two\" on n2",
                "\"kind\": File on n1, Dir on n2",
                "\"link\": symlink to \"t1\" on n1, to \"t2\" on n2",
                "\"mode\": mode 0644 on n1, 0600 on n2",
                "\"only-a\": only on n1",
            ]
        );
        assert!(diff_trees(&sa, &sa).is_empty());
    }
}
