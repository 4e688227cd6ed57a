//! Which paths recovery must force dirty, and how the stat cache is
//! first filled (pure: callers pass stats, records and times in).
//!
//! The record here is the stat cache ([`crate::statcache`]): per synced
//! path, the state csync2 last recorded through the daemon's own runs (a
//! check whose lstat did not change across it, or a file the local server
//! received). It is never written from raw events, so a crash between an
//! event and its check cannot make the record agree with a disk csync2
//! has not seen; and where the record holds a state, csync2 marked it
//! dirty if the peers needed it, so its dirty rows carry it to them.
//!
//! After a crash, csync2's own database cannot be trusted where a csync2
//! run was interrupted: csync2 commits every 1,000 statements or 3 s, so a
//! killed `csync2 -c` can leave a file recorded but not marked dirty, and
//! no later `csync2 -c` would ever mark it. Recovery therefore compares
//! the disk with this record and forces dirty ([`must_force`]):
//!
//! * inside the scope of an interrupted run, or of a change journaled but
//!   not yet checked: every path whose state differs from the record (or
//!   has none, or is gone);
//! * anywhere else, only a regular file that changed since the newest run
//!   the dead daemon started: an edit in the same second as a check, at
//!   the same size, is invisible to `csync2 -c`, and its event may have
//!   died with the daemon before it was journaled.
//!
//! Everything else is left to `csync2 -c` (the start-up full check), which
//! is right wherever csync2's database can be trusted. A path whose state
//! equals the record needs nothing: the peers hold exactly that. So a
//! crash never becomes a push of the whole tree.
//!
//! The record is first filled from csync2's own database (`csync2 -L`,
//! `-M`): a path whose current stat gives exactly the check text csync2
//! recorded, and that is dirty towards no peer, is what csync2 holds and
//! what the peers hold ([`checktxt`] rebuilds csync2's check text from a
//! stat).
//!
//! Layer: core. Imports [`crate::statcache`] only.

#![forbid(unsafe_code)]

use crate::statcache::Snapshot;

const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;
const S_IFDIR: u32 = 0o040000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;
const S_IFBLK: u32 = 0o060000;
const S_IFIFO: u32 = 0o010000;
const S_IFSOCK: u32 = 0o140000;

/// Where a path stands for recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing<'a> {
    /// Its lstat now (`None`: gone).
    pub disk: Option<&'a Snapshot>,
    /// What the peers were confirmed to hold (`None`: nothing recorded,
    /// or confirmed gone).
    pub confirmed: Option<&'a Snapshot>,
    /// Inside the scope of an interrupted run or of a journaled change.
    pub in_doubt: bool,
}

/// Must recovery force this path dirty? `recent_ms`: wall-clock ms when
/// the newest check or mark run of the dead daemon started, less a second
/// of margin (`None`: the last stop was clean).
pub fn must_force(s: Standing<'_>, recent_ms: Option<i64>) -> bool {
    let same = match (s.disk, s.confirmed) {
        (None, None) => true,
        (Some(d), Some(c)) => d.same_state(c),
        _ => false,
    };
    if same {
        return false;
    }
    if s.in_doubt {
        return true;
    }
    match (s.disk, recent_ms) {
        (Some(d), Some(cutoff)) => recent(d, cutoff),
        _ => false,
    }
}

/// A regular file whose inode changed at or after `cutoff_ms` (wall-clock
/// ms): one the dead daemon may have seen change without journaling it.
pub fn recent(s: &Snapshot, cutoff_ms: i64) -> bool {
    s.mode & S_IFMT == S_IFREG && ctime_ms(s) >= cutoff_ms
}

fn ctime_ms(s: &Snapshot) -> i64 {
    s.ctime_sec
        .saturating_mul(1000)
        .saturating_add(s.ctime_nsec / 1_000_000)
}

/// What csync2 ignores of a stat (`ignore uid|gid|mod;` in csync2.cfg).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ignores {
    pub uid: bool,
    pub gid: bool,
    pub mode: bool,
}

/// csync2's check text for a stat (checktxt.c, version 1): what `csync2
/// -L` prints for a path csync2 recorded in this state. `link_target` is
/// the symlink's target, for symlinks.
pub fn checktxt(s: &Snapshot, link_target: Option<&[u8]>, ignore: Ignores) -> Vec<u8> {
    let kind = s.mode & S_IFMT;
    let mut out = b"v1".to_vec();
    if kind != S_IFLNK && kind != S_IFDIR {
        out.extend_from_slice(format!(":mtime={}", s.mtime_sec).as_bytes());
    }
    if !ignore.mode {
        out.extend_from_slice(format!(":mode={}", s.mode as i32).as_bytes());
    }
    if !ignore.uid {
        out.extend_from_slice(format!(":uid={}", s.uid as i32).as_bytes());
    }
    if !ignore.gid {
        out.extend_from_slice(format!(":gid={}", s.gid as i32).as_bytes());
    }
    match kind {
        S_IFREG => out.extend_from_slice(format!(":type=reg:size={}", s.size).as_bytes()),
        S_IFDIR => out.extend_from_slice(b":type=dir"),
        S_IFCHR => out.extend_from_slice(format!(":type=chr:dev={}", s.rdev as i32).as_bytes()),
        S_IFBLK => out.extend_from_slice(format!(":type=blk:dev={}", s.rdev as i32).as_bytes()),
        S_IFIFO => out.extend_from_slice(b":type=fifo"),
        S_IFLNK => {
            out.extend_from_slice(b":type=lnk:target=");
            out.extend_from_slice(&url_encode(link_target.unwrap_or_default()));
        }
        S_IFSOCK => out.extend_from_slice(b":type=sock"),
        _ => {}
    }
    out
}

/// csync2's `url_encode`: control characters, space, DEL and `"'%$:|\`
/// become `%XX`.
pub fn url_encode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for &b in bytes {
        if b <= 0x20 || b == 0x7f || b"\"'%$:|\\".contains(&b) {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.push(b);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Snapshot {
        Snapshot {
            dev: 1,
            ino: 7,
            mode: 0o100644,
            uid: 0,
            gid: 0,
            size: 5,
            rdev: 0,
            mtime_sec: 1_700_000_000,
            mtime_nsec: 500,
            ctime_sec: 1_700_000_000,
            ctime_nsec: 600,
        }
    }

    fn standing<'a>(
        disk: Option<&'a Snapshot>,
        confirmed: Option<&'a Snapshot>,
        in_doubt: bool,
    ) -> Standing<'a> {
        Standing {
            disk,
            confirmed,
            in_doubt,
        }
    }

    #[test]
    fn a_path_the_peers_hold_is_never_forced() {
        let f = file();
        assert!(!must_force(standing(Some(&f), Some(&f), true), Some(0)));
        assert!(!must_force(standing(None, None, true), Some(0)));
    }

    #[test]
    fn in_doubt_anything_that_differs_is_forced() {
        let f = file();
        let mut touched = f;
        touched.ctime_nsec += 1; // touch -d back to the old mtime
        assert!(must_force(standing(Some(&touched), Some(&f), true), None));
        assert!(must_force(standing(Some(&f), None, true), None), "new");
        assert!(must_force(standing(None, Some(&f), true), None), "deleted");
        let mut replaced = f;
        replaced.ino += 1; // cp -p of another version
        assert!(must_force(standing(Some(&replaced), Some(&f), true), None));
    }

    #[test]
    fn outside_doubt_only_recent_regular_files_are_forced_after_a_crash() {
        let old = file();
        let mut new = old;
        new.ctime_sec += 10;
        let cutoff = (old.ctime_sec + 5) * 1000;
        assert!(must_force(
            standing(Some(&new), Some(&old), false),
            Some(cutoff)
        ));
        assert!(
            !must_force(standing(Some(&new), Some(&old), false), None),
            "clean stop: csync2 -c decides"
        );
        let mut stale = old;
        stale.ctime_sec -= 10;
        assert!(!must_force(
            standing(Some(&stale), Some(&old), false),
            Some(cutoff)
        ));
        assert!(!must_force(standing(None, Some(&old), false), Some(cutoff)));
    }

    #[test]
    fn directories_compare_without_times_and_size() {
        let mut d = file();
        d.mode = 0o040755;
        let mut grown = d;
        grown.size += 4096;
        grown.ctime_sec += 1;
        grown.mtime_sec += 1;
        assert!(grown.same_state(&d));
        grown.mode = 0o040700;
        assert!(!grown.same_state(&d));
    }

    #[test]
    fn checktxt_matches_csync2s_format() {
        let f = file();
        assert_eq!(
            checktxt(&f, None, Ignores::default()),
            b"v1:mtime=1700000000:mode=33188:uid=0:gid=0:type=reg:size=5".to_vec()
        );
        let mut d = f;
        d.mode = 0o040755;
        assert_eq!(
            checktxt(
                &d,
                None,
                Ignores {
                    uid: true,
                    gid: true,
                    mode: false
                }
            ),
            b"v1:mode=16877:type=dir".to_vec()
        );
        let mut l = f;
        l.mode = 0o120777;
        assert_eq!(
            checktxt(&l, Some(b"a b:%"), Ignores::default()),
            b"v1:mode=41471:uid=0:gid=0:type=lnk:target=a%20b%3A%25".to_vec()
        );
    }
}
