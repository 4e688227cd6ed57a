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
//!   `request_paths(request_id, seq, path BLOB)`: requests from `sync`.
//! * `meta(key TEXT PRIMARY KEY, value TEXT)`.
//! * `runs(id, mode, started_ms)` and `run_scope(run_id, path BLOB,
//!   recursive)`: every csync2 client run that can change csync2's
//!   database (check, mark, update), written before it starts and removed
//!   when it has finished. What is left after a crash is what was
//!   interrupted (see [`runs`]).
//! * `confirmed(path BLOB PRIMARY KEY, dev, ino, mode, uid, gid, size,
//!   rdev, mtime_ns, ctime_ns)`: the stat each path had when the peers were
//!   last confirmed to hold it (see [`crate::confirm`]).

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::ValueRef;
use rusqlite::{
    params, Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior,
};

use crate::vocab::ChangeKind;

mod health;
mod runs;
pub use health::{HealthFlag, HEALTH_FILE};
pub use runs::{RunMode, RunRecord, ScopeEntry};

/// File name of the journal inside the state directory.
pub const FILE_NAME: &str = "journal.db";

/// Parent of the default state directories.
pub const STATE_ROOT: &str = "/var/lib/csync2-watch";

/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 2;

/// How long a statement waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Meta key holding the highest txid removed by [`Journal::prune`].
const META_PRUNED_THROUGH: &str = "feed.pruned_through";

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

/// A path waiting to be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedPath {
    pub path: PathBuf,
    pub kind: ChangeKind,
    /// Transaction id of the newest event that queued this path.
    pub txid: u64,
}

/// One entry of the change feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub txid: u64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: i64,
    pub what: EventKind,
}

/// What a feed entry records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// A path changed.
    Change { path: PathBuf, kind: ChangeKind },
    /// A full check was started (`scope` None: every tree).
    FullCheck {
        scope: Option<PathBuf>,
        reason: String,
    },
}

impl EventKind {
    /// The word `csync2-watch events` prints for this entry: `entry`,
    /// `dir-attrib`, `dir-tree` or `full-check`.
    pub fn word(&self) -> &'static str {
        match self {
            EventKind::Change { kind, .. } => kind_word(*kind),
            EventKind::FullCheck { .. } => "full-check",
        }
    }
}

/// The word for a change kind: `entry`, `dir-attrib` or `dir-tree`.
pub fn kind_word(kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::Entry => "entry",
        ChangeKind::DirAttrib => "dir-attrib",
        ChangeKind::DirTree => "dir-tree",
    }
}

/// A request left by `csync2-watch sync` for the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Check these paths now.
    Paths(Vec<PathBuf>),
    /// Run a full sync now.
    Full,
    /// Skip the batch delay and update every peer now.
    Flush,
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

const KIND_ENTRY: i64 = 1;
const KIND_DIR_ATTRIB: i64 = 2;
const KIND_DIR_TREE: i64 = 3;
const KIND_FULL_CHECK: i64 = 4;

const REQ_PATHS: i64 = 1;
const REQ_FULL: i64 = 2;
const REQ_FLUSH: i64 = 3;

fn kind_code(kind: ChangeKind) -> i64 {
    match kind {
        ChangeKind::Entry => KIND_ENTRY,
        ChangeKind::DirAttrib => KIND_DIR_ATTRIB,
        ChangeKind::DirTree => KIND_DIR_TREE,
    }
}

fn code_kind(code: i64) -> Option<ChangeKind> {
    match code {
        KIND_ENTRY => Some(ChangeKind::Entry),
        KIND_DIR_ATTRIB => Some(ChangeKind::DirAttrib),
        KIND_DIR_TREE => Some(ChangeKind::DirTree),
        _ => None,
    }
}

/// Schema migrations: `MIGRATIONS[v]` takes a version-`v` file to `v + 1`.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1: the first schema.
    "CREATE TABLE feed (
        txid    INTEGER PRIMARY KEY AUTOINCREMENT,
        time_ms INTEGER NOT NULL,
        kind    INTEGER NOT NULL CHECK (kind BETWEEN 1 AND 4),
        path    BLOB,
        reason  TEXT
    );
    CREATE TABLE queue (
        path BLOB PRIMARY KEY,
        kind INTEGER NOT NULL CHECK (kind BETWEEN 1 AND 3),
        txid INTEGER NOT NULL
    );
    CREATE INDEX queue_by_txid ON queue (txid);
    CREATE TABLE requests (
        id   INTEGER PRIMARY KEY AUTOINCREMENT,
        kind INTEGER NOT NULL CHECK (kind BETWEEN 1 AND 3)
    );
    CREATE TABLE request_paths (
        request_id INTEGER NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
        seq        INTEGER NOT NULL,
        path       BLOB NOT NULL,
        PRIMARY KEY (request_id, seq)
    );
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );",
    // 1 -> 2: csync2 runs in flight, and what the peers were confirmed to
    // hold. An upgraded journal starts with an empty `confirmed` table,
    // which the daemon fills from csync2's own database (see
    // `crate::confirm`).
    "CREATE TABLE runs (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        mode       TEXT NOT NULL,
        started_ms INTEGER NOT NULL
    );
    CREATE TABLE run_scope (
        run_id    INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        path      BLOB NOT NULL,
        recursive INTEGER NOT NULL,
        PRIMARY KEY (run_id, path)
    );
    CREATE TABLE confirmed (
        path     BLOB PRIMARY KEY,
        dev      INTEGER NOT NULL,
        ino      INTEGER NOT NULL,
        mode     INTEGER NOT NULL,
        uid      INTEGER NOT NULL,
        gid      INTEGER NOT NULL,
        size     INTEGER NOT NULL,
        rdev     INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        ctime_ns INTEGER NOT NULL
    ) WITHOUT ROWID;",
];

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

    fn setup(&mut self) -> Result<(), JournalError> {
        self.conn
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| self.err(e))?;
        // journal_mode is stored in the file; setting it again is a no-op.
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::NotADatabase) => {
                    self.corrupt("this is not an SQLite database")
                }
                _ => self.err(e),
            })?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(JournalError::Corrupt {
                path: self.path.clone(),
                message: format!("cannot switch to WAL mode (journal_mode is {mode})"),
            });
        }
        self.conn
            .execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
            .map_err(|e| self.err(e))?;
        self.migrate()
    }

    fn migrate(&mut self) -> Result<(), JournalError> {
        let err = sqlite_err(&self.path);
        let version: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(err)?;
        if version == SCHEMA_VERSION {
            return Ok(());
        }
        let tx = immediate(&mut self.conn, &self.path)?;
        // Read again under the write lock: another process may have
        // migrated meanwhile.
        let version: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(err)?;
        if version < 0 {
            return Err(JournalError::Corrupt {
                path: self.path.clone(),
                message: format!("schema version {version} is not one csync2-watch writes"),
            });
        }
        if version > SCHEMA_VERSION {
            return Err(JournalError::TooNew {
                path: self.path.clone(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        for step in version..SCHEMA_VERSION {
            tx.execute_batch(MIGRATIONS[step as usize]).map_err(err)?;
            tracing::debug!(journal = %self.path.display(), "journal schema migrated to version {}", step + 1);
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(err)?;
        tx.commit().map_err(err)
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Record changes: append them to the feed and upsert them into the
    /// queue, in one transaction. Returns the transaction id of each
    /// change, in order. A path already queued keeps the strongest kind
    /// (dir-tree > dir-attrib > entry) and takes the new txid.
    pub fn enqueue(&mut self, changes: &[(PathBuf, ChangeKind)]) -> Result<Vec<u64>, JournalError> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let err = sqlite_err(&self.path);
        let now = now_ms();
        let tx = immediate(&mut self.conn, &self.path)?;
        let mut txids = Vec::with_capacity(changes.len());
        {
            let mut feed = tx
                .prepare_cached("INSERT INTO feed (time_ms, kind, path) VALUES (?1, ?2, ?3)")
                .map_err(err)?;
            let mut queue = tx
                .prepare_cached(
                    "INSERT INTO queue (path, kind, txid) VALUES (?1, ?2, ?3)
                     ON CONFLICT (path) DO UPDATE
                     SET kind = max(kind, excluded.kind), txid = excluded.txid",
                )
                .map_err(err)?;
            for (p, kind) in changes {
                let code = kind_code(*kind);
                let bytes = path_bytes(p);
                feed.execute(params![now, code, bytes]).map_err(err)?;
                let txid = tx.last_insert_rowid();
                queue.execute(params![bytes, code, txid]).map_err(err)?;
                txids.push(txid as u64);
            }
        }
        tx.commit().map_err(err)?;
        Ok(txids)
    }

    /// Record the start of a full check in the feed; returns its txid.
    pub fn record_full_check(
        &mut self,
        scope: Option<&Path>,
        reason: &str,
    ) -> Result<u64, JournalError> {
        let scope = scope.map(path_bytes);
        self.conn
            .prepare_cached(
                "INSERT INTO feed (time_ms, kind, path, reason) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut st| st.execute(params![now_ms(), KIND_FULL_CHECK, scope, reason]))
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid() as u64)
    }

    /// Everything still queued (for replay after a restart), oldest first
    /// (by the txid of each path's newest event).
    pub fn pending(&self) -> Result<Vec<QueuedPath>, JournalError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT path, kind, txid FROM queue ORDER BY txid")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    blob(r.get_ref(0)?),
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (path, code, txid) = row.map_err(|e| self.err(e))?;
            let path = path.ok_or_else(|| self.corrupt("a queued path is not a blob"))?;
            let kind = code_kind(code)
                .ok_or_else(|| self.corrupt(&format!("queued kind {code} is unknown")))?;
            out.push(QueuedPath {
                path,
                kind,
                txid: txid as u64,
            });
        }
        Ok(out)
    }

    /// How many paths are queued.
    pub fn pending_count(&self) -> Result<u64, JournalError> {
        self.conn
            .query_row("SELECT count(*) FROM queue", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    /// Drop queued paths that were checked, unless they were queued again
    /// after `up_to_txid`.
    pub fn complete(&mut self, paths: &[PathBuf], up_to_txid: u64) -> Result<(), JournalError> {
        self.each_in_transaction(
            "DELETE FROM queue WHERE path = ?1 AND txid <= ?2",
            paths,
            |st, p| st.execute(params![path_bytes(p), up_to_txid as i64]),
        )
    }

    /// Drop queued paths at or below each of `dirs` (checked recursively
    /// with `csync2 -cr`), unless queued again after `up_to_txid`. Paths
    /// compare as bytes, so "below D" is the byte range `D/` .. `D0`
    /// (`0` follows `/`), the same trick csync2 uses on its own tables.
    pub fn complete_trees(
        &mut self,
        dirs: &[PathBuf],
        up_to_txid: u64,
    ) -> Result<(), JournalError> {
        self.each_in_transaction(
            "DELETE FROM queue WHERE txid <= ?1 AND (path = ?2 OR (path > ?3 AND path < ?4))",
            dirs,
            |st, d| {
                let mut base = path_bytes(d).to_vec();
                if base.len() > 1 && base.ends_with(b"/") {
                    base.pop();
                }
                let (low, high) = if base == b"/" {
                    (b"/".to_vec(), b"0".to_vec())
                } else {
                    ([&base[..], b"/"].concat(), [&base[..], b"0"].concat())
                };
                st.execute(params![up_to_txid as i64, base, low, high])
            },
        )
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

    /// Drop every queued path with txid ≤ `up_to_txid` (after a full check).
    pub fn complete_all(&mut self, up_to_txid: u64) -> Result<(), JournalError> {
        self.conn
            .execute(
                "DELETE FROM queue WHERE txid <= ?1",
                params![up_to_txid as i64],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Feed entries with txid > `since`, at most `limit`, oldest first.
    pub fn events_since(&self, since: u64, limit: usize) -> Result<Vec<Event>, JournalError> {
        let since = i64::try_from(since).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT txid, time_ms, kind, path, reason FROM feed
                 WHERE txid > ?1 ORDER BY txid LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![since, limit], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    blob(r.get_ref(3)?),
                    r.get::<_, Option<String>>(4)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (txid, time_ms, code, path, reason) = row.map_err(|e| self.err(e))?;
            let what = if code == KIND_FULL_CHECK {
                EventKind::FullCheck {
                    scope: path,
                    reason: reason.unwrap_or_default(),
                }
            } else {
                let kind = code_kind(code).ok_or_else(|| {
                    self.corrupt(&format!("feed entry {txid} has unknown kind {code}"))
                })?;
                let path =
                    path.ok_or_else(|| self.corrupt(&format!("feed entry {txid} has no path")))?;
                EventKind::Change { path, kind }
            };
            out.push(Event {
                txid: txid as u64,
                time_ms,
                what,
            });
        }
        Ok(out)
    }

    /// The highest txid ever handed out (0 for a new journal), including
    /// pruned entries.
    pub fn last_txid(&self) -> Result<u64, JournalError> {
        self.conn
            .query_row(
                "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'feed'), 0)",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    /// The highest txid [`Journal::prune`] has removed (0 if none): a
    /// client that last saw a txid below this has missed events.
    pub fn pruned_through(&self) -> Result<u64, JournalError> {
        Ok(self
            .get_meta(META_PRUNED_THROUGH)?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// Keep only the newest `keep` feed entries (queued paths stay).
    /// Pruned txids are never handed out again. Cost is proportional to
    /// the entries removed, so calling it after every batch is cheap.
    pub fn prune(&mut self, keep: u64) -> Result<(), JournalError> {
        let err = sqlite_err(&self.path);
        let tx = immediate(&mut self.conn, &self.path)?;
        // Txids in the feed are contiguous (AUTOINCREMENT hands them out in
        // order, a rolled-back insert gives its id back, and only this
        // removes rows, from the oldest end), so the newest entry to remove
        // is simply max - keep: no scan over the kept rows.
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let cut: Option<i64> = tx
            .query_row("SELECT max(txid) FROM feed", [], |r| {
                r.get::<_, Option<i64>>(0)
            })
            .map_err(err)?
            .map(|max| max.saturating_sub(keep))
            .filter(|cut| *cut > 0);
        if let Some(cut) = cut {
            let removed = tx
                .execute("DELETE FROM feed WHERE txid <= ?1", params![cut])
                .map_err(err)?;
            // Only a prune that removed something moves the mark, so it
            // never goes back when `keep` grows.
            if removed > 0 {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    params![META_PRUNED_THROUGH, cut.to_string()],
                )
                .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Leave a request for the daemon (used by `csync2-watch sync`).
    pub fn push_request(&mut self, request: &Request) -> Result<(), JournalError> {
        let err = sqlite_err(&self.path);
        let tx = immediate(&mut self.conn, &self.path)?;
        let kind = match request {
            Request::Paths(_) => REQ_PATHS,
            Request::Full => REQ_FULL,
            Request::Flush => REQ_FLUSH,
        };
        tx.execute("INSERT INTO requests (kind) VALUES (?1)", params![kind])
            .map_err(err)?;
        let id = tx.last_insert_rowid();
        if let Request::Paths(paths) = request {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO request_paths (request_id, seq, path) VALUES (?1, ?2, ?3)",
                )
                .map_err(err)?;
            for (seq, p) in paths.iter().enumerate() {
                st.execute(params![id, seq as i64, path_bytes(p)])
                    .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Take (and delete) every pending request, oldest first. Reading and
    /// deleting happen in one transaction, so no request is taken twice or
    /// lost when `sync` pushes one meanwhile.
    pub fn take_requests(&mut self) -> Result<Vec<Request>, JournalError> {
        let err = sqlite_err(&self.path);
        let tx = immediate(&mut self.conn, &self.path)?;
        let mut heads: Vec<(i64, i64)> = Vec::new();
        {
            let mut st = tx
                .prepare_cached("SELECT id, kind FROM requests ORDER BY id")
                .map_err(err)?;
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(err)?;
            for row in rows {
                heads.push(row.map_err(err)?);
            }
        }
        let mut out = Vec::with_capacity(heads.len());
        {
            let mut st = tx
                .prepare_cached("SELECT path FROM request_paths WHERE request_id = ?1 ORDER BY seq")
                .map_err(err)?;
            for (id, kind) in &heads {
                out.push(match *kind {
                    REQ_FULL => Request::Full,
                    REQ_FLUSH => Request::Flush,
                    REQ_PATHS => {
                        let rows = st
                            .query_map(params![id], |r| Ok(blob(r.get_ref(0)?)))
                            .map_err(err)?;
                        let mut paths = Vec::new();
                        for row in rows {
                            paths.push(row.map_err(err)?.ok_or_else(|| JournalError::Corrupt {
                                path: self.path.clone(),
                                message: format!("request {id} has a path that is not a blob"),
                            })?);
                        }
                        Request::Paths(paths)
                    }
                    other => {
                        return Err(JournalError::Corrupt {
                            path: self.path.clone(),
                            message: format!("request {id} has unknown kind {other}"),
                        })
                    }
                });
            }
        }
        if !heads.is_empty() {
            tx.execute_batch("DELETE FROM request_paths; DELETE FROM requests;")
                .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(out)
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

    #[test]
    fn kind_words() {
        assert_eq!(kind_word(ChangeKind::Entry), "entry");
        assert_eq!(kind_word(ChangeKind::DirAttrib), "dir-attrib");
        assert_eq!(kind_word(ChangeKind::DirTree), "dir-tree");
        let fc = EventKind::FullCheck {
            scope: None,
            reason: String::new(),
        };
        assert_eq!(fc.word(), "full-check");
    }
}
