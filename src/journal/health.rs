//! A one-byte flag beside the journal that says "the journal missed
//! writes": set when a journal write fails (a full disk), cleared once a
//! start-up has recovered everything. Its block is allocated when the
//! daemon starts, so setting the flag is an overwrite in place that a full
//! disk cannot refuse. A start that finds it set treats every tree as in
//! doubt (see [`crate::confirm`]).

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// File name inside the state directory.
pub const HEALTH_FILE: &str = "journal.health";

const SIZE: usize = 4096;
const MISSED: u8 = b'M';

/// The flag file, open for the daemon's lifetime.
#[derive(Debug)]
pub struct HealthFlag {
    file: File,
    path: PathBuf,
}

impl HealthFlag {
    /// Open (creating and allocating) the flag in `state_dir`; returns it
    /// and whether it was set.
    pub fn open(state_dir: &Path) -> std::io::Result<(HealthFlag, bool)> {
        let path = state_dir.join(HEALTH_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)?;
        let mut first = [0u8; 1];
        let n = file.read_at(&mut first, 0)?;
        let was_set = n == 1 && first[0] == MISSED;
        if file.metadata()?.len() < SIZE as u64 {
            let mut block = vec![0u8; SIZE];
            block[0] = if was_set { MISSED } else { 0 };
            file.write_all(&block)?;
            file.sync_all()?;
        }
        Ok((HealthFlag { file, path }, was_set))
    }

    /// The journal missed a write: say so for the next start.
    pub fn set(&self) {
        if let Err(e) = self
            .file
            .write_all_at(&[MISSED], 0)
            .and_then(|()| self.file.sync_data())
        {
            tracing::error!(
                "cannot set {}: {e}; the next start may not know the journal missed writes",
                self.path.display()
            );
        }
    }

    /// Everything the journal missed was recovered.
    pub fn clear(&self) -> std::io::Result<()> {
        self.file.write_all_at(&[0], 0)?;
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_survives_a_reopen_until_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let (f, was) = HealthFlag::open(dir.path()).unwrap();
        assert!(!was);
        f.set();
        drop(f);
        let (f, was) = HealthFlag::open(dir.path()).unwrap();
        assert!(was);
        f.clear().unwrap();
        drop(f);
        let (_, was) = HealthFlag::open(dir.path()).unwrap();
        assert!(!was);
        let meta = std::fs::metadata(dir.path().join(HEALTH_FILE)).unwrap();
        assert_eq!(meta.len(), SIZE as u64);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
}
