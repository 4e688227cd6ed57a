//! Filesystem types, found with statfs(2): which mounts inotify can fully
//! see, and which are shared with other machines whose writes inotify on
//! this node never reports (NFS, AFS, CIFS/SMB, Ceph, Lustre, GlusterFS and
//! other FUSE filesystems).
//!
//! Layer: adapter (statfs). Imports nothing from the crate.

#![forbid(unsafe_code)]

use std::path::Path;

/// What statfs says about the filesystem holding a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsInfo {
    /// `f_type` magic number.
    pub magic: i64,
    /// Device number (`st_dev`) of the path, to tell mounts apart.
    pub dev: u64,
}

impl FsInfo {
    /// statfs + lstat of `path`.
    pub fn of(path: &Path) -> std::io::Result<FsInfo> {
        let st = nix::sys::statfs::statfs(path).map_err(std::io::Error::from)?;
        let meta = std::fs::symlink_metadata(path)?;
        Ok(FsInfo {
            magic: st.filesystem_type().0 as i64,
            dev: std::os::unix::fs::MetadataExt::dev(&meta),
        })
    }

    /// Name of a filesystem that other machines can write to behind this
    /// node's back (inotify cannot see their writes), or `None` for a local
    /// filesystem.
    pub fn network_name(&self) -> Option<&'static str> {
        network_fs_name(self.magic)
    }
}

/// `f_type` magic numbers of shared/network filesystems (linux/magic.h and
/// the filesystems' own sources).
const NETWORK_FS: &[(i64, &str)] = &[
    (0x6969, "nfs"),
    (0x5346_414f, "afs"),    // OpenAFS / kAFS "AFS"
    (0x6b41_4653, "afs"),    // kAFS "kAFS"
    (0xff53_4d42, "cifs"),   // CIFS_SUPER_MAGIC
    (0xfe53_4d42, "smb2"),   // SMB2_SUPER_MAGIC
    (0x517b, "smb"),         // SMB_SUPER_MAGIC
    (0x00c3_6400, "ceph"),   // CEPH_SUPER_MAGIC
    (0x0bd0_0bd0, "lustre"), // LL_SUPER_MAGIC
    (0x6573_5546, "fuse"),   // FUSE_SUPER_MAGIC: GlusterFS, sshfs, s3fs, ...
    (0x0102_1997, "9p"),     // V9FS_MAGIC
    (0x7461_636f, "ocfs2"),  // shared-disk cluster filesystem
    (0x0116_1970, "gfs2"),   // GFS2_MAGIC
    (0x47504653, "gpfs"),    // IBM Spectrum Scale
    (0x0000_564c, "ncp"),    // NCP_SUPER_MAGIC
];

/// See [`FsInfo::network_name`].
pub fn network_fs_name(magic: i64) -> Option<&'static str> {
    NETWORK_FS
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, name)| *name)
}

/// A name for a statfs magic number.
pub fn fs_type_name(magic: i64) -> String {
    if let Some(n) = network_fs_name(magic) {
        return n.to_string();
    }
    let name = match magic {
        0xEF53 => "ext2/3/4",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x0102_1994 => "tmpfs",
        0x794C_7630 => "overlayfs",
        0x2FC1_2FC1 => "zfs",
        0xF2F5_2010 => "f2fs",
        0x3153_464A => "jfs",
        0x5265_4973 => "reiserfs",
        0x4d44 => "vfat",
        0x2011_BAB0 => "exfat",
        0x5346_544e => "ntfs",
        0x6165_6673 => "bcachefs",
        0x858458f6 => "ramfs",
        _ => return format!("{magic:#x}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmp_is_not_reported_as_network_fs() {
        let dir = tempfile::tempdir().unwrap();
        let info = FsInfo::of(dir.path()).unwrap();
        assert_eq!(info.network_name(), None, "magic {:#x}", info.magic);
    }

    #[test]
    fn nfs_and_fuse_magics_are_network() {
        assert_eq!(network_fs_name(0x6969), Some("nfs"));
        assert_eq!(network_fs_name(0x6573_5546), Some("fuse"));
        assert_eq!(network_fs_name(0xEF53), None); // ext4
    }
}
