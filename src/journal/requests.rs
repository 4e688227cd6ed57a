//! Requests left by `csync2-watch sync` for the daemon (check these
//! paths, flush, or a full sync), taken oldest first in the transaction
//! that deletes them, so none is taken twice or lost.
//!
//! Layer: adapter (part of [`crate::journal`]).

#![forbid(unsafe_code)]

use std::path::PathBuf;

use rusqlite::params;

use super::{blob, immediate, path_bytes, sqlite_err, Journal, JournalError};

/// A request left by `csync2-watch sync` for the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Check these paths now.
    Paths(Vec<PathBuf>),
    /// Run a full sync now.
    Full,
    /// Skip the batch delay and update every peer now.
    Flush,
    /// A deep check now: a reconcile, then `csync2 -cr` of every tree.
    Deep,
}

const REQ_PATHS: i64 = 1;
const REQ_FULL: i64 = 2;
const REQ_FLUSH: i64 = 3;
const REQ_DEEP: i64 = 4;

impl Journal {
    /// Leave a request for the daemon (used by `csync2-watch sync`).
    pub fn push_request(&mut self, request: &Request) -> Result<(), JournalError> {
        let err = sqlite_err(&self.path);
        let tx = immediate(&mut self.conn, &self.path)?;
        let kind = match request {
            Request::Paths(_) => REQ_PATHS,
            Request::Full => REQ_FULL,
            Request::Flush => REQ_FLUSH,
            Request::Deep => REQ_DEEP,
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
                    REQ_DEEP => Request::Deep,
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
}
