//! Directory listing for the walks: open a directory without following a
//! symlink in its last component, and list its entries with their type
//! from `d_type` (an `lstat` only where the filesystem does not fill it in),
//! never building a path per entry or stat'ing every file.

use std::ffi::OsStr;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::dir::{Dir, Type};
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag};

/// An open directory.
pub(super) struct OpenDir {
    dir: Dir,
}

impl OpenDir {
    /// Open `path` for listing; a symlink (`ELOOP`) or non-directory
    /// (`ENOTDIR`) fails.
    pub fn open(path: &Path) -> io::Result<OpenDir> {
        let dir = Dir::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io::Error::from)?;
        Ok(OpenDir { dir })
    }

    /// `st_dev` of the directory.
    pub fn dev(&self) -> io::Result<u64> {
        let st = nix::sys::stat::fstat(self.dir.as_raw_fd()).map_err(io::Error::from)?;
        Ok(st.st_dev)
    }

    /// statfs `f_type` of the directory's filesystem.
    pub fn fs_magic(&self) -> io::Result<i64> {
        // SAFETY: the descriptor is owned by `self.dir`, open for this call.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.dir.as_raw_fd()) };
        let st = nix::sys::statfs::fstatfs(fd).map_err(io::Error::from)?;
        Ok(st.filesystem_type().0 as i64)
    }

    /// Call `f(name, is_dir)` for every entry but `.` and `..`. `is_dir`
    /// means a real directory (never a symlink to one).
    pub fn for_each(&mut self, mut f: impl FnMut(&OsStr, bool)) -> io::Result<()> {
        let fd = self.dir.as_raw_fd();
        for entry in self.dir.iter() {
            let entry = entry.map_err(io::Error::from)?;
            let cname = entry.file_name();
            let name = cname.to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let is_dir = match entry.file_type() {
                Some(Type::Directory) => true,
                Some(_) => false,
                None => {
                    match nix::sys::stat::fstatat(Some(fd), cname, AtFlags::AT_SYMLINK_NOFOLLOW) {
                        Ok(st) => {
                            SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
                        }
                        Err(_) => false,
                    }
                }
            };
            f(OsStr::from_bytes(name), is_dir);
        }
        Ok(())
    }
}

/// Is this error a sign that the directory is gone or is no directory
/// (any more): the parent's events will tell what happened.
pub(super) fn is_vanished(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP)
    )
}
