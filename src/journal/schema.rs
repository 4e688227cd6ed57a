//! The journal's schema: the version this build writes, the migrations
//! that take an older file there step by step (a newer one is refused),
//! the connection's settings (busy timeout, WAL, `synchronous=NORMAL`,
//! foreign keys), and how change kinds are stored.
//!
//! Layer: adapter (part of [`crate::journal`]).

#![forbid(unsafe_code)]

use super::{immediate, sqlite_err, Journal, JournalError, BUSY_TIMEOUT};
use crate::vocab::ChangeKind;

/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 3;

pub(super) const KIND_ENTRY: i64 = 1;
pub(super) const KIND_DIR_ATTRIB: i64 = 2;
pub(super) const KIND_DIR_TREE: i64 = 3;
pub(super) const KIND_FULL_CHECK: i64 = 4;

pub(super) fn kind_code(kind: ChangeKind) -> i64 {
    match kind {
        ChangeKind::Entry => KIND_ENTRY,
        ChangeKind::DirAttrib => KIND_DIR_ATTRIB,
        ChangeKind::DirTree => KIND_DIR_TREE,
    }
}

pub(super) fn code_kind(code: i64) -> Option<ChangeKind> {
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
    // 2 -> 3: a fourth kind of request (a deep check). The tables are
    // copied, pending requests included.
    "CREATE TABLE requests_new (
        id   INTEGER PRIMARY KEY AUTOINCREMENT,
        kind INTEGER NOT NULL CHECK (kind BETWEEN 1 AND 4)
    );
    CREATE TABLE request_paths_new (
        request_id INTEGER NOT NULL REFERENCES requests_new (id) ON DELETE CASCADE,
        seq        INTEGER NOT NULL,
        path       BLOB NOT NULL,
        PRIMARY KEY (request_id, seq)
    );
    INSERT INTO requests_new (id, kind) SELECT id, kind FROM requests;
    INSERT INTO request_paths_new SELECT request_id, seq, path FROM request_paths;
    DROP TABLE request_paths;
    DROP TABLE requests;
    ALTER TABLE requests_new RENAME TO requests;
    ALTER TABLE request_paths_new RENAME TO request_paths;",
];

impl Journal {
    pub(super) fn setup(&mut self) -> Result<(), JournalError> {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Request;
    use std::path::PathBuf;

    #[test]
    fn a_version_2_journal_keeps_its_pending_requests_and_takes_deep_ones() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(crate::journal::FILE_NAME);
        {
            let conn = rusqlite::Connection::open(&file).unwrap();
            conn.execute_batch("PRAGMA journal_mode = WAL;").unwrap();
            for m in &MIGRATIONS[..2] {
                conn.execute_batch(m).unwrap();
            }
            conn.execute_batch(
                "PRAGMA user_version = 2;
                 INSERT INTO requests (id, kind) VALUES (7, 1);
                 INSERT INTO request_paths VALUES (7, 0, CAST('/srv/a' AS BLOB));
                 INSERT INTO requests (id, kind) VALUES (8, 2);",
            )
            .unwrap();
        }
        let mut j = Journal::open(dir.path()).unwrap();
        j.push_request(&Request::Deep).unwrap();
        assert_eq!(
            j.take_requests().unwrap(),
            vec![
                Request::Paths(vec![PathBuf::from("/srv/a")]),
                Request::Full,
                Request::Deep
            ]
        );
        // Deleting a request still deletes its paths.
        let left: i64 = j
            .conn
            .query_row("SELECT count(*) FROM request_paths", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 0);
    }
}
