//! The change feed behind `csync2-watch events`: every change and full
//! check with a transaction id that is never handed out twice, read from
//! any txid on, and pruned from the oldest end (remembering how far, so a
//! client can tell it missed entries).
//!
//! Layer: adapter (part of [`crate::journal`]).

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use rusqlite::params;

use super::schema::{code_kind, KIND_FULL_CHECK};
use super::{blob, immediate, now_ms, path_bytes, sqlite_err, Journal, JournalError};
use crate::vocab::ChangeKind;

/// Meta key holding the highest txid removed by [`Journal::prune`].
const META_PRUNED_THROUGH: &str = "feed.pruned_through";

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

impl Journal {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
