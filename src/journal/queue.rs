//! The durable mirror of the daemon's batch queue: changes are recorded
//! (appended to the feed and upserted into the queue in one transaction),
//! replayed after a restart, and dropped once checked unless they were
//! queued again meanwhile.
//!
//! Layer: adapter (part of [`crate::journal`]).

#![forbid(unsafe_code)]

use std::path::PathBuf;

use rusqlite::params;

use super::schema::{code_kind, kind_code};
use super::{blob, immediate, now_ms, path_bytes, sqlite_err, Journal, JournalError};
use crate::vocab::ChangeKind;

/// A path waiting to be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedPath {
    pub path: PathBuf,
    pub kind: ChangeKind,
    /// Transaction id of the newest event that queued this path.
    pub txid: u64,
}

impl Journal {
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
}
