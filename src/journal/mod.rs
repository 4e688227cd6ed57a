//! The SQLite journal in the state directory (`<state_dir>/journal.db`):
//! the durable mirror of the daemon's batch queue (so a crash or a reboot
//! loses no change), the append-only change feed with transaction ids
//! behind `csync2-watch events` (a client resumes from the last txid it
//! saw), requests left by `csync2-watch sync`, and small key/value state.
//!
//! Durability: the journal runs in WAL mode with `synchronous=NORMAL`. A
//! transaction that has committed survives a crash of the process (it is in
//! the WAL, in the kernel's page cache); a power cut or kernel crash can
//! lose the last few transactions. That is acceptable because the daemon
//! runs a full sync at every start, which finds whatever those
//! transactions described. A busy timeout lets `events` and `sync` read
//! and write while the daemon runs.
//!
//! Paths are stored as BLOBs of their exact bytes, never as text, so
//! non-UTF-8 names, newlines and 255-byte names round-trip unchanged.
//!
//! Schema (version [`SCHEMA_VERSION`], kept in `PRAGMA user_version`;
//! [`Journal::open`] migrates older files step by step and refuses newer
//! ones):
//!
//! * `feed(txid INTEGER PRIMARY KEY AUTOINCREMENT, time_ms, kind, path
//!   BLOB, reason)`: one row per change or full check. `kind` is 1 entry,
//!   2 dir-attrib, 3 dir-tree, 4 full-check; for a full check `path` is
//!   its scope (NULL: every tree) and `reason` says why. AUTOINCREMENT
//!   means a txid is never handed out twice, even after pruning or a
//!   restart.
//! * `queue(path BLOB PRIMARY KEY, kind, txid)`: what still has to be
//!   checked; `txid` is that of the newest event that queued the path and
//!   `kind` the strongest kind queued (dir-tree > dir-attrib > entry).
//! * `requests(id INTEGER PRIMARY KEY AUTOINCREMENT, kind)` and
//!   `request_paths(request_id, seq, path BLOB)`: requests from `sync`
//!   (kind 1 paths, 2 full, 3 flush, 4 deep).
//! * `meta(key TEXT PRIMARY KEY, value TEXT)`.
//! * `runs(id, mode, started_ms)` and `run_scope(run_id, path BLOB,
//!   recursive)`: every csync2 client run that can change csync2's
//!   database (check, mark, update), written before it starts and removed
//!   when it has finished. What is left after a crash is what was
//!   interrupted (see `runs.rs`).
//! * `confirmed(path BLOB PRIMARY KEY, dev, ino, mode, uid, gid, size,
//!   rdev, mtime_ns, ctime_ns)`: the stat cache, the stat csync2 last
//!   recorded for each path through the daemon's own runs (mode 0: state
//!   unknown; see [`crate::statcache`]).
//!
//! The parts: opening the file, setting a damaged one aside, the small
//! key/value state and the helpers the others share (here); the schema,
//! its migrations and the connection's settings (`schema.rs`); the queue
//! (`queue.rs`); the change feed (`feed.rs`); `sync`'s requests
//! (`requests.rs`); csync2 runs in flight and what the peers were
//! confirmed to hold (`runs.rs`); the health flag beside the journal
//! (`health.rs`); questions about one path for `status PATH`
//! (`lookup.rs`).
//!
//! Layer: adapter (SQLite and the state directory). Imports the core
//! ([`crate::vocab`], [`crate::statcache`]) only.

#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::ValueRef;
use rusqlite::{
    params, Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior,
};

mod feed;
mod health;
mod lookup;
mod queue;
mod requests;
mod runs;
mod schema;
pub use feed::{kind_word, Event, EventKind};
pub use health::{HealthFlag, HEALTH_FILE};
pub use queue::QueuedPath;
pub use requests::Request;
pub use runs::{RunMode, RunRecord, ScopeEntry};
pub use schema::SCHEMA_VERSION;

/// File name of the journal inside the state directory.
pub const FILE_NAME: &str = "journal.db";

/// Parent of the default state directories.
pub const STATE_ROOT: &str = "/var/lib/csync2-watch";

/// How long a statement waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The default state directory for a node:
/// `/var/lib/csync2-watch/<node>[_<cfg_name>]`, where `node` is `-N`
/// (else the host name), lowercased as csync2 lowercases its own name,
/// and `cfg_name` is `-C`. This mirrors how csync2 names its database
/// (`<node>[_<cfg>].db3`), so one node running two configurations gets two
/// state directories. A `/` in either name (which would leave the state
/// root) is replaced by `_`. csync2.cfg is not read.
pub fn default_state_dir(node: Option<&str>, cfg_name: Option<&str>) -> PathBuf {
    let mut name: Vec<u8> = match node {
        Some(n) => n.as_bytes().to_vec(),
        None => nix::unistd::gethostname()
            .map(|h| h.into_vec())
            .unwrap_or_else(|_| b"localhost".to_vec()),
    };
    name.make_ascii_lowercase();
    if let Some(cfg) = cfg_name {
        name.push(b'_');
        name.extend_from_slice(cfg.as_bytes());
    }
    for b in name.iter_mut() {
        if *b == b'/' {
            *b = b'_';
        }
    }
    if name.is_empty() || name == b"." || name == b".." {
        name.insert(0, b'_');
    }
    Path::new(STATE_ROOT).join(OsString::from_vec(name))
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("journal {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// [`Journal::open_existing`] found no journal.
    #[error("{}", not_found_message(path, *state_dir_exists))]
    NotFound {
        path: PathBuf,
        /// Whether the state directory itself exists (then the daemon ran
        /// with it, but never wrote a journal there).
        state_dir_exists: bool,
    },
    /// The file was written by a newer csync2-watch.
    #[error(
        "journal {path}: schema version {found} is newer than this csync2-watch understands \
         (version {supported}); run the csync2-watch that wrote it, or move the file away \
         (the daemon runs a full sync at start, so nothing is lost but the event history)"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    /// A row the code cannot read (edited by hand, or damaged).
    #[error("journal {path}: {message}; move the file away to start a new journal")]
    Corrupt { path: PathBuf, message: String },
}

impl JournalError {
    /// The file is damaged (as opposed to unreachable or too new).
    pub fn is_corruption(&self) -> bool {
        match self {
            JournalError::Corrupt { .. } => true,
            JournalError::Sqlite { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
            ),
            _ => false,
        }
    }
}

/// The journal holds every changed path name: root's alone. Creates it
/// (empty, which SQLite takes for a new database) with mode 0600, or
/// tightens an existing one and its WAL. SQLite gives the WAL and the
/// shared-memory file the mode of the database file.
fn restrict(path: &Path) -> Result<(), JournalError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    };
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        match std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
    }
    Ok(())
}

fn not_found_message(path: &Path, state_dir_exists: bool) -> String {
    let dir = path.parent().unwrap_or(Path::new("/"));
    if state_dir_exists {
        format!(
            "no journal at {}: the state directory {} exists but the daemon has not written a \
             journal there yet (is `csync2-watch run` running with this state directory?)",
            path.display(),
            dir.display()
        )
    } else {
        format!(
            "no journal at {}: the daemon has never run with state directory {} (start \
             `csync2-watch run`, or pass the -N/-C/--state-dir the daemon uses)",
            path.display(),
            dir.display()
        )
    }
}

/// An open journal (one SQLite connection). Several may be open on the same
/// file at once, in one process or several.
pub struct Journal {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish()
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Wraps a SQLite error with the journal's path (for closures that run
/// while the connection is mutably borrowed).
pub(crate) fn sqlite_err(path: &Path) -> impl Fn(rusqlite::Error) -> JournalError + Copy + '_ {
    move |source| JournalError::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

/// Begin a transaction that takes the write lock at once (no upgrade
/// from a read lock that could fail half-way).
pub(crate) fn immediate<'c>(
    conn: &'c mut Connection,
    path: &Path,
) -> Result<Transaction<'c>, JournalError> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_err(path))
}

pub(crate) fn path_bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

impl Journal {
    /// Open (creating if needed) `state_dir/journal.db` for the daemon.
    /// A missing state directory is created with mode 0700.
    pub fn open(state_dir: &Path) -> Result<Journal, JournalError> {
        if !state_dir.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(state_dir)
                .map_err(|source| JournalError::Io {
                    path: state_dir.to_path_buf(),
                    source,
                })?;
        }
        let path = state_dir.join(FILE_NAME);
        restrict(&path)?;
        Self::open_file(path, OpenFlags::SQLITE_OPEN_CREATE)
    }

    /// [`Journal::open`] for the daemon, which must not stop syncing for
    /// a damaged journal: a journal SQLite calls corrupt (or that fails
    /// `PRAGMA quick_check`) is moved aside, with its WAL, to
    /// `journal.db.corrupt-UNIXTIME` (kept for the administrator) and a new
    /// one is started. Returns where the old one went, if it was moved.
    pub fn open_or_set_aside(state_dir: &Path) -> Result<(Journal, Option<PathBuf>), JournalError> {
        let first = Self::open(state_dir).and_then(|mut j| j.quick_check().map(|()| j));
        match first {
            Ok(j) => Ok((j, None)),
            Err(e) if e.is_corruption() => {
                let path = state_dir.join(FILE_NAME);
                let stamp = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let mut aside = path.as_os_str().to_owned();
                aside.push(format!(".corrupt-{stamp}"));
                let aside = PathBuf::from(aside);
                for suffix in ["", "-wal", "-shm"] {
                    let mut from = path.as_os_str().to_owned();
                    from.push(suffix);
                    let mut to = aside.as_os_str().to_owned();
                    to.push(suffix);
                    match std::fs::rename(&from, &to) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(source) => {
                            return Err(JournalError::Io {
                                path: PathBuf::from(from),
                                source,
                            })
                        }
                    }
                }
                tracing::error!(
                    journal = %path.display(),
                    moved_to = %aside.display(),
                    "the journal cannot be read ({e}); moved it aside and starting a new one"
                );
                let j = Self::open(state_dir)?;
                Ok((j, Some(aside)))
            }
            Err(e) => Err(e),
        }
    }

    /// `PRAGMA quick_check`: fails with [`JournalError::Corrupt`] unless
    /// SQLite finds the file sound.
    pub fn quick_check(&mut self) -> Result<(), JournalError> {
        let verdict: String = self
            .conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if verdict == "ok" {
            Ok(())
        } else {
            Err(self.corrupt(&format!("PRAGMA quick_check: {verdict}")))
        }
    }

    /// Open an existing `state_dir/journal.db` (for `events` and `sync`,
    /// which must not create one where no daemon runs). Fails with
    /// [`JournalError::NotFound`] when there is none.
    pub fn open_existing(state_dir: &Path) -> Result<Journal, JournalError> {
        let path = state_dir.join(FILE_NAME);
        match std::fs::metadata(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(JournalError::NotFound {
                    state_dir_exists: state_dir.is_dir(),
                    path,
                })
            }
            Err(source) => return Err(JournalError::Io { path, source }),
        }
        Self::open_file(path, OpenFlags::empty())
    }

    fn open_file(path: PathBuf, extra: OpenFlags) -> Result<Journal, JournalError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | extra;
        let conn =
            Connection::open_with_flags(&path, flags).map_err(|source| JournalError::Sqlite {
                path: path.clone(),
                source,
            })?;
        let mut journal = Journal { conn, path };
        journal.setup()?;
        Ok(journal)
    }

    pub(crate) fn err(&self, source: rusqlite::Error) -> JournalError {
        JournalError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Run one prepared statement per item, all in one immediate
    /// transaction.
    fn each_in_transaction<T>(
        &mut self,
        sql: &str,
        items: &[T],
        mut run: impl FnMut(&mut rusqlite::CachedStatement<'_>, &T) -> rusqlite::Result<usize>,
    ) -> Result<(), JournalError> {
        if items.is_empty() {
            return Ok(());
        }
        let err = sqlite_err(&self.path);
        let tx = immediate(&mut self.conn, &self.path)?;
        {
            let mut st = tx.prepare_cached(sql).map_err(err)?;
            for item in items {
                run(&mut st, item).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Small persistent values (last full sync time, ...).
    pub fn get_meta(&self, key: &str) -> Result<Option<String>, JournalError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))
    }

    pub fn set_meta(&mut self, key: &str, value: &str) -> Result<(), JournalError> {
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    pub(crate) fn corrupt(&self, message: &str) -> JournalError {
        JournalError::Corrupt {
            path: self.path.clone(),
            message: message.to_string(),
        }
    }
}

/// A BLOB (or, from a hand-edited file, TEXT) column as a path; NULL is None.
pub(crate) fn blob(v: ValueRef<'_>) -> Option<PathBuf> {
    match v {
        ValueRef::Blob(b) | ValueRef::Text(b) => {
            Some(PathBuf::from(OsString::from_vec(b.to_vec())))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_state_dir_lowercases_node_and_appends_cfg_name() {
        assert_eq!(
            default_state_dir(Some("NodeA"), None),
            Path::new("/var/lib/csync2-watch/nodea")
        );
        assert_eq!(
            default_state_dir(Some("NodeA"), Some("web")),
            Path::new("/var/lib/csync2-watch/nodea_web")
        );
        assert_eq!(
            default_state_dir(Some("a/../b"), None),
            Path::new("/var/lib/csync2-watch/a_.._b")
        );
        assert_eq!(
            default_state_dir(Some(".."), None),
            Path::new("/var/lib/csync2-watch/_..")
        );
    }

    #[test]
    fn default_state_dir_uses_lowercased_hostname() {
        let mut host = nix::unistd::gethostname().unwrap().into_vec();
        host.make_ascii_lowercase();
        let want = Path::new(STATE_ROOT).join(OsString::from_vec(host));
        assert_eq!(default_state_dir(None, None), want);
    }
}
