//! Mounts appearing or vanishing over watched directories, which inotify
//! does not report: `/proc/self/mountinfo` polls `POLLPRI` when the mount
//! table changes, and [`Mounts::changed`] says which mount points were
//! added or removed since the last look.
//!
//! Layer: adapter (part of [`crate::watch`]; reads `/proc`).

#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Mount table changes (`/proc/self/mountinfo` polls POLLPRI on change).
pub(super) struct Mounts {
    pub(super) file: std::fs::File,
    points: HashSet<Vec<u8>>,
}

impl Mounts {
    pub(super) fn open() -> Option<Mounts> {
        let file = std::fs::File::open("/proc/self/mountinfo").ok()?;
        let mut m = Mounts {
            file,
            points: HashSet::new(),
        };
        m.points = m.read().ok()?;
        Some(m)
    }

    fn read(&mut self) -> io::Result<HashSet<Vec<u8>>> {
        use std::io::Seek;
        self.file.seek(io::SeekFrom::Start(0))?;
        let mut text = Vec::new();
        self.file.read_to_end(&mut text)?;
        Ok(text
            .split(|&b| b == b'\n')
            .filter_map(|line| line.split(|&b| b == b' ').nth(4))
            .map(unescape_mount_point)
            .collect())
    }

    /// Mount points added or removed since the last call.
    pub(super) fn changed(&mut self) -> Vec<PathBuf> {
        let Ok(now) = self.read() else {
            return Vec::new();
        };
        let mut out: Vec<PathBuf> = now
            .symmetric_difference(&self.points)
            .map(|p| PathBuf::from(OsStr::from_bytes(p)))
            .collect();
        out.sort();
        self.points = now;
        out
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_point(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && i + 3 < field.len()
            && field[i + 1..i + 4]
                .iter()
                .all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (field[i + 1] - b'0') as u32 * 64
                + (field[i + 2] - b'0') as u32 * 8
                + (field[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(field[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(
            unescape_mount_point(br"/mnt/a\040b\012c"),
            b"/mnt/a b\nc".to_vec()
        );
        assert_eq!(unescape_mount_point(br"/mnt/a\134b"), b"/mnt/a\\b".to_vec());
        assert_eq!(unescape_mount_point(b"/plain"), b"/plain".to_vec());
    }
}
