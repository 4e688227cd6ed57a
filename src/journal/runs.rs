//! The journal's record of csync2 runs in flight, and the stat cache.
//!
//! A csync2 client run that can change csync2's database (`-c`, `-cr`,
//! `-m`, `-u`) is written here with its scope before it starts and removed
//! when it has finished. csync2 commits its open transaction every 1,000
//! statements or 3 seconds, so a run killed half-way can leave a file that
//! csync2 recorded but never marked dirty: whatever this table still holds
//! at start-up is what csync2's database cannot be trusted about.
//!
//! `confirmed` holds the stat cache ([`crate::statcache`]): per path, the
//! stat csync2 last recorded through the daemon's own runs (a check across
//! which the lstat did not change, or a file the local server received).
//! A row with mode 0 ([`Snapshot::UNKNOWN`]) stands for "recorded, state
//! unknown". Reconciles and recovery compare the disk with it; see
//! [`crate::confirm`]. (The table keeps the name it had when it held only
//! what `csync2 -M` confirmed, so schema 2 needs no migration.)

use std::path::PathBuf;

use rusqlite::params;

use super::{blob, immediate, now_ms, path_bytes, sqlite_err, Journal, JournalError};
use crate::statcache::Snapshot;

/// Meta key: `1` once `confirmed` was filled from csync2's database.
const META_CONFIRMED_FILLED: &str = "confirmed.filled";
/// Meta key: the pid of the daemon that runs (cleared on a clean stop).
const META_RUNNING: &str = "daemon.running";
/// Meta key: wall-clock ms when the newest check or mark run started.
const META_LAST_RUN_STARTED: &str = "runs.last_started_ms";

/// What kind of csync2 run a record stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// `csync2 -c` / `-cr` on the scope (with `-m` of part of it).
    Check,
    /// `csync2 -m` on the scope.
    Mark,
    /// `csync2 -u` (the scope names no paths: csync2 keeps its own dirty
    /// rows until a peer has the file).
    Update,
    /// A full check (`csync2 -cr` of the scope, `/` for every tree).
    Full,
}

impl RunMode {
    pub fn word(self) -> &'static str {
        match self {
            RunMode::Check => "check",
            RunMode::Mark => "mark",
            RunMode::Update => "update",
            RunMode::Full => "full",
        }
    }

    fn from_word(w: &str) -> Option<RunMode> {
        Some(match w {
            "check" => RunMode::Check,
            "mark" => RunMode::Mark,
            "update" => RunMode::Update,
            "full" => RunMode::Full,
            _ => return None,
        })
    }
}

/// One path of a run's scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScopeEntry {
    pub path: PathBuf,
    /// The run covers everything below `path` too.
    pub recursive: bool,
}

impl ScopeEntry {
    /// `path` and everything below it.
    pub fn tree(path: PathBuf) -> ScopeEntry {
        ScopeEntry {
            path,
            recursive: true,
        }
    }

    /// `path` alone.
    pub fn exact(path: PathBuf) -> ScopeEntry {
        ScopeEntry {
            path,
            recursive: false,
        }
    }
}

/// A run that was journaled and has not been cleared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    pub id: u64,
    pub mode: RunMode,
    pub started_ms: i64,
    pub scope: Vec<ScopeEntry>,
}

fn ns(sec: i64, nsec: i64) -> i64 {
    sec.saturating_mul(1_000_000_000).saturating_add(nsec)
}

fn split_ns(v: i64) -> (i64, i64) {
    (v.div_euclid(1_000_000_000), v.rem_euclid(1_000_000_000))
}

fn snapshot_row(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Snapshot> {
    let (mtime_sec, mtime_nsec) = split_ns(r.get(first + 7)?);
    let (ctime_sec, ctime_nsec) = split_ns(r.get(first + 8)?);
    Ok(Snapshot {
        dev: r.get::<_, i64>(first)? as u64,
        ino: r.get::<_, i64>(first + 1)? as u64,
        mode: r.get::<_, i64>(first + 2)? as u32,
        uid: r.get::<_, i64>(first + 3)? as u32,
        gid: r.get::<_, i64>(first + 4)? as u32,
        size: r.get::<_, i64>(first + 5)? as u64,
        rdev: r.get::<_, i64>(first + 6)? as u64,
        mtime_sec,
        mtime_nsec,
        ctime_sec,
        ctime_nsec,
    })
}

const SNAPSHOT_COLUMNS: &str = "dev, ino, mode, uid, gid, size, rdev, mtime_ns, ctime_ns";

/// Run an `INSERT ... (path, SNAPSHOT_COLUMNS) VALUES (?1, ..., ?10)`.
fn insert_snapshot(
    st: &mut rusqlite::CachedStatement<'_>,
    path: &[u8],
    s: &Snapshot,
) -> rusqlite::Result<usize> {
    st.execute(params![
        path,
        s.dev as i64,
        s.ino as i64,
        s.mode as i64,
        s.uid as i64,
        s.gid as i64,
        s.size as i64,
        s.rdev as i64,
        ns(s.mtime_sec, s.mtime_nsec),
        ns(s.ctime_sec, s.ctime_nsec),
    ])
}

impl Journal {
    /// Journal a csync2 run before it starts; returns its id for
    /// [`Journal::end_run`].
    pub fn begin_run(&mut self, mode: RunMode, scope: &[ScopeEntry]) -> Result<u64, JournalError> {
        let err = sqlite_err(&self.path);
        let now = now_ms();
        let tx = immediate(&mut self.conn, &self.path)?;
        tx.execute(
            "INSERT INTO runs (mode, started_ms) VALUES (?1, ?2)",
            params![mode.word(), now],
        )
        .map_err(err)?;
        let id = tx.last_insert_rowid();
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO run_scope (run_id, path, recursive) VALUES (?1, ?2, ?3)",
                )
                .map_err(err)?;
            for e in scope {
                st.execute(params![id, path_bytes(&e.path), e.recursive as i64])
                    .map_err(err)?;
            }
        }
        if mode != RunMode::Update {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![META_LAST_RUN_STARTED, now.to_string()],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(id as u64)
    }

    /// The run finished (whatever its outcome, csync2 exited): forget it.
    pub fn end_run(&mut self, id: u64) -> Result<(), JournalError> {
        self.end_runs(&[id])
    }

    /// Forget several runs at once.
    pub fn end_runs(&mut self, ids: &[u64]) -> Result<(), JournalError> {
        self.each_in_transaction("DELETE FROM runs WHERE id = ?1", ids, |st, id| {
            st.execute(params![*id as i64])
        })
    }

    /// Every run still journaled (interrupted ones, after a crash), oldest
    /// first, with its scope.
    pub fn open_runs(&self) -> Result<Vec<RunRecord>, JournalError> {
        let mut out = Vec::new();
        {
            let mut st = self
                .conn
                .prepare_cached("SELECT id, mode, started_ms FROM runs ORDER BY id")
                .map_err(|e| self.err(e))?;
            let rows = st
                .query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .map_err(|e| self.err(e))?;
            for row in rows {
                let (id, mode, started_ms) = row.map_err(|e| self.err(e))?;
                let mode = RunMode::from_word(&mode)
                    .ok_or_else(|| self.corrupt(&format!("run {id} has unknown mode {mode:?}")))?;
                out.push(RunRecord {
                    id: id as u64,
                    mode,
                    started_ms,
                    scope: Vec::new(),
                });
            }
        }
        let mut st = self
            .conn
            .prepare_cached("SELECT path, recursive FROM run_scope WHERE run_id = ?1")
            .map_err(|e| self.err(e))?;
        for run in &mut out {
            let rows = st
                .query_map(params![run.id as i64], |r| {
                    Ok((blob(r.get_ref(0)?), r.get::<_, i64>(1)? != 0))
                })
                .map_err(|e| self.err(e))?;
            for row in rows {
                let (path, recursive) = row.map_err(|e| self.err(e))?;
                let path = path.ok_or_else(|| self.corrupt("a run's scope path is not a blob"))?;
                run.scope.push(ScopeEntry { path, recursive });
            }
        }
        Ok(out)
    }

    /// Wall-clock ms when the newest check or mark run started (0: none).
    pub fn last_run_started_ms(&self) -> Result<i64, JournalError> {
        Ok(self
            .get_meta(META_LAST_RUN_STARTED)?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// Record that the peers hold these paths as stat'ed (`None`: the path
    /// is gone everywhere), in one transaction.
    pub fn confirm(&mut self, items: &[(PathBuf, Option<Snapshot>)]) -> Result<(), JournalError> {
        if items.is_empty() {
            return Ok(());
        }
        let err = sqlite_err(&self.path);
        let tx = immediate(&mut self.conn, &self.path)?;
        {
            let mut upsert = tx
                .prepare_cached(&format!(
                    "INSERT OR REPLACE INTO confirmed (path, {SNAPSHOT_COLUMNS})
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
                ))
                .map_err(err)?;
            let mut delete = tx
                .prepare_cached("DELETE FROM confirmed WHERE path = ?1")
                .map_err(err)?;
            for (p, snap) in items {
                let bytes = path_bytes(p);
                match snap {
                    Some(s) => insert_snapshot(&mut upsert, bytes, s),
                    None => delete.execute(params![bytes]),
                }
                .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Every row, handed to `each` (the stat cache as last persisted,
    /// streamed: no copy of the whole table is held).
    pub fn confirmed_each(
        &self,
        each: &mut dyn FnMut(PathBuf, Snapshot),
    ) -> Result<(), JournalError> {
        let mut st = self
            .conn
            .prepare(&format!("SELECT path, {SNAPSHOT_COLUMNS} FROM confirmed"))
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| Ok((blob(r.get_ref(0)?), snapshot_row(r, 1)?)))
            .map_err(|e| self.err(e))?;
        for row in rows {
            let (path, snap) = row.map_err(|e| self.err(e))?;
            let path = path.ok_or_else(|| self.corrupt("a stat cache path is not a blob"))?;
            each(path, snap);
        }
        Ok(())
    }

    /// Was `confirmed` filled from csync2's database yet?
    pub fn confirmed_filled(&self) -> Result<bool, JournalError> {
        Ok(self.get_meta(META_CONFIRMED_FILLED)?.as_deref() == Some("1"))
    }

    /// Fill `confirmed` (replacing what it held) and mark it filled, in
    /// one transaction.
    pub fn fill_confirmed(&mut self, items: &[(PathBuf, Snapshot)]) -> Result<(), JournalError> {
        let err = sqlite_err(&self.path);
        let tx = immediate(&mut self.conn, &self.path)?;
        tx.execute("DELETE FROM confirmed", []).map_err(err)?;
        {
            let mut st = tx
                .prepare_cached(&format!(
                    "INSERT OR REPLACE INTO confirmed (path, {SNAPSHOT_COLUMNS})
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
                ))
                .map_err(err)?;
            for (p, s) in items {
                insert_snapshot(&mut st, path_bytes(p), s).map_err(err)?;
            }
        }
        tx.execute(
            "INSERT INTO meta (key, value) VALUES (?1, '1')
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![META_CONFIRMED_FILLED],
        )
        .map_err(err)?;
        tx.commit().map_err(err)
    }

    /// Note that a daemon runs (`pid`); returns whether the previous one
    /// stopped cleanly (a new journal counts as clean).
    pub fn mark_running(&mut self, pid: u32) -> Result<bool, JournalError> {
        let previous = self.get_meta(META_RUNNING)?;
        self.set_meta(META_RUNNING, &pid.to_string())?;
        Ok(previous.is_none_or(|v| v.is_empty()))
    }

    /// Note a clean stop.
    pub fn mark_stopped(&mut self) -> Result<(), JournalError> {
        self.set_meta(META_RUNNING, "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::path::Path;

    fn snap(ino: u64, size: u64) -> Snapshot {
        Snapshot {
            dev: 1,
            ino,
            mode: 0o100644,
            uid: 0,
            gid: 0,
            size,
            rdev: 0,
            mtime_sec: 1_700_000_000,
            mtime_nsec: 123_456_789,
            ctime_sec: 1_700_000_001,
            ctime_nsec: 987_654_321,
        }
    }

    #[test]
    fn runs_stay_until_ended_and_keep_their_scope() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        let scope = vec![
            ScopeEntry {
                path: PathBuf::from("/srv/a"),
                recursive: false,
            },
            ScopeEntry {
                path: PathBuf::from("/srv/tree"),
                recursive: true,
            },
        ];
        let a = j.begin_run(RunMode::Check, &scope).unwrap();
        let b = j.begin_run(RunMode::Update, &[]).unwrap();
        assert!(j.last_run_started_ms().unwrap() > 0);
        drop(j);
        let mut j = Journal::open(dir.path()).unwrap();
        let open = j.open_runs().unwrap();
        assert_eq!(open.len(), 2);
        assert_eq!(open[0].id, a);
        assert_eq!(open[0].mode, RunMode::Check);
        let mut got = open[0].scope.clone();
        got.sort_by(|x, y| x.path.cmp(&y.path));
        assert_eq!(got, scope);
        assert_eq!(open[1].mode, RunMode::Update);
        j.end_run(a).unwrap();
        j.end_run(b).unwrap();
        assert!(j.open_runs().unwrap().is_empty());
    }

    #[test]
    fn confirmed_round_trips_nanoseconds_and_odd_names() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        assert!(!j.confirmed_filled().unwrap());
        j.fill_confirmed(&[(PathBuf::from("/srv/x"), snap(1, 1))])
            .unwrap();
        assert!(j.confirmed_filled().unwrap());
        j.confirm(&[
            (PathBuf::from("/srv/d/a"), Some(snap(2, 10))),
            (PathBuf::from("/srv/d/b\n\u{1}"), Some(snap(3, 20))),
            (PathBuf::from("/srv/d0"), Some(snap(4, 30))),
            (PathBuf::from("/srv/x"), None),
        ])
        .unwrap();
        let mut all = HashMap::new();
        j.confirmed_each(&mut |p, s| {
            all.insert(p, s);
        })
        .unwrap();
        assert_eq!(all.get(Path::new("/srv/x")), None);
        assert_eq!(all.get(Path::new("/srv/d/a")), Some(&snap(2, 10)));
        assert_eq!(all.get(Path::new("/srv/d/b\n\u{1}")), Some(&snap(3, 20)));
        assert_eq!(all.len(), 3, "{all:?}");
    }

    #[test]
    fn a_journal_never_stopped_cleanly_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        assert!(j.mark_running(1).unwrap(), "a new journal is clean");
        assert!(!j.mark_running(2).unwrap(), "never stopped");
        j.mark_stopped().unwrap();
        assert!(j.mark_running(3).unwrap());
    }
}
