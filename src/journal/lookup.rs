//! Questions about one path, for `csync2-watch status PATH`: the newest
//! change the feed holds for it, and what in the queue covers it. Read
//! only.
//!
//! The queue is looked up by its primary key (the path and each of its
//! ancestors). The feed has no index on paths: the newest matching entry
//! is found by walking the feed from its newest end, which stops at the
//! first match, so a recently changed path costs little and a path with
//! no entry costs one pass over the kept entries (`journal_keep_events`).
//!
//! Layer: adapter (part of [`crate::journal`]).

#![forbid(unsafe_code)]

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rusqlite::types::Value;

use super::schema::{code_kind, KIND_DIR_TREE, KIND_FULL_CHECK};
use super::{blob, Event, EventKind, Journal, JournalError, QueuedPath};

/// `path` (absolute) and every directory above it, `/` last, as bytes.
fn self_and_ancestors(path: &Path) -> Vec<Vec<u8>> {
    let bytes = path.as_os_str().as_bytes();
    let mut out = vec![bytes.to_vec()];
    let mut end = bytes.len();
    while let Some(i) = bytes[..end].iter().rposition(|&c| c == b'/') {
        let dir = if i == 0 { &b"/"[..] } else { &bytes[..i] };
        if out.last().map(Vec::as_slice) != Some(dir) {
            out.push(dir.to_vec());
        }
        if i == 0 {
            break;
        }
        end = i;
    }
    out
}

/// `?1, ?2, ... ?n` for `n` parameters after the first `skip`.
fn placeholders(skip: usize, n: usize) -> String {
    (skip + 1..=skip + n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One row of a lookup: (path, kind code, txid, time_ms).
type Found = (Option<std::path::PathBuf>, i64, i64, i64);

impl Journal {
    /// The first row of `select` (columns path, kind, txid, time_ms; `?1`
    /// is `path`, `{ANCESTORS}` the placeholders of its ancestors).
    fn first_covering(&self, select: &str, path: &Path) -> Result<Option<Found>, JournalError> {
        let all = self_and_ancestors(path);
        let sql = select.replace("{ANCESTORS}", &placeholders(1, all.len() - 1));
        let params: Vec<Value> = all.into_iter().map(Value::Blob).collect();
        let mut st = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
        let mut rows = st
            .query(rusqlite::params_from_iter(params))
            .map_err(|e| self.err(e))?;
        let Some(row) = rows.next().map_err(|e| self.err(e))? else {
            return Ok(None);
        };
        let read = || -> rusqlite::Result<Found> {
            Ok((blob(row.get_ref(0)?), row.get(1)?, row.get(2)?, row.get(3)?))
        };
        read().map(Some).map_err(|e| self.err(e))
    }

    /// The newest feed entry that changed `path`: a change of `path`
    /// itself (any kind), or a dir-tree change of a directory above it
    /// (everything below it changed). `None` when the feed holds none
    /// (never changed while watched, or pruned).
    pub fn last_change_of(&self, path: &Path) -> Result<Option<Event>, JournalError> {
        let select = format!(
            "SELECT path, kind, txid, time_ms FROM feed
             WHERE kind != {KIND_FULL_CHECK}
               AND (path = ?1 OR (kind = {KIND_DIR_TREE} AND path IN ({{ANCESTORS}})))
             ORDER BY txid DESC LIMIT 1"
        );
        let Some((found, code, txid, time_ms)) = self.first_covering(&select, path)? else {
            return Ok(None);
        };
        let kind = code_kind(code)
            .ok_or_else(|| self.corrupt(&format!("feed entry {txid} has unknown kind {code}")))?;
        let found = found.ok_or_else(|| self.corrupt(&format!("feed entry {txid} has no path")))?;
        Ok(Some(Event {
            txid: txid as u64,
            time_ms,
            what: EventKind::Change { path: found, kind },
        }))
    }

    /// What in the queue covers `path`: `path` itself (any kind), else
    /// the nearest queued dir-tree above it. `None` when nothing queued
    /// covers it.
    pub fn queued_covering(&self, path: &Path) -> Result<Option<QueuedPath>, JournalError> {
        let select = format!(
            "SELECT path, kind, txid, 0 FROM queue
             WHERE path = ?1 OR (kind = {KIND_DIR_TREE} AND path IN ({{ANCESTORS}}))
             ORDER BY length(path) DESC LIMIT 1"
        );
        let Some((found, code, txid, _)) = self.first_covering(&select, path)? else {
            return Ok(None);
        };
        let found = found.ok_or_else(|| self.corrupt("a queued path is not a blob"))?;
        let kind = code_kind(code)
            .ok_or_else(|| self.corrupt(&format!("queued kind {code} is unknown")))?;
        Ok(Some(QueuedPath {
            path: found,
            kind,
            txid: txid as u64,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::ChangeKind;
    use std::ffi::OsStr;
    use std::path::PathBuf;

    #[test]
    fn ancestors_run_up_to_the_root() {
        let v = |p: &str| -> Vec<String> {
            self_and_ancestors(Path::new(p))
                .into_iter()
                .map(|b| String::from_utf8(b).unwrap())
                .collect()
        };
        assert_eq!(v("/a/b/c"), ["/a/b/c", "/a/b", "/a", "/"]);
        assert_eq!(v("/a"), ["/a", "/"]);
        assert_eq!(v("/"), ["/"]);
        assert_eq!(placeholders(1, 3), "?2, ?3, ?4");
        assert_eq!(placeholders(1, 0), "");
    }

    #[test]
    fn the_newest_change_and_the_queue_entry_that_cover_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        let odd = PathBuf::from(OsStr::from_bytes(b"/d/sub/a\nb\xff"));
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(j.last_change_of(&odd).unwrap(), None);
        assert_eq!(j.queued_covering(&odd).unwrap(), None);

        let t = j
            .enqueue(&[
                (odd.clone(), ChangeKind::Entry),
                (p("/d/sub/a"), ChangeKind::Entry),
                (p("/d/sub"), ChangeKind::DirAttrib),
            ])
            .unwrap();
        let last = j.last_change_of(&odd).unwrap().unwrap();
        assert_eq!(last.txid, t[0]);
        assert_eq!(
            last.what,
            EventKind::Change {
                path: odd.clone(),
                kind: ChangeKind::Entry
            }
        );
        // A dir-attrib change of the parent is not a change of the child.
        assert_eq!(j.queued_covering(&odd).unwrap().unwrap().path, odd);

        // Checked: no longer queued, still the last change.
        j.complete(std::slice::from_ref(&odd), t[0]).unwrap();
        assert_eq!(j.queued_covering(&odd).unwrap(), None);
        assert_eq!(j.last_change_of(&odd).unwrap().unwrap().txid, t[0]);

        // A tree above it changed: that covers it, in the feed and the queue.
        let t2 = j.enqueue(&[(p("/d"), ChangeKind::DirTree)]).unwrap();
        let last = j.last_change_of(&odd).unwrap().unwrap();
        assert_eq!(last.txid, t2[0]);
        let q = j.queued_covering(&odd).unwrap().unwrap();
        assert_eq!((q.path, q.kind), (p("/d"), ChangeKind::DirTree));
        // The path itself queued again wins over the tree above it.
        j.enqueue(&[(odd.clone(), ChangeKind::Entry)]).unwrap();
        assert_eq!(j.queued_covering(&odd).unwrap().unwrap().path, odd);
        // A full check is not a change of anything.
        j.record_full_check(Some(Path::new("/d")), "test").unwrap();
        assert_eq!(
            j.last_change_of(Path::new("/d/other"))
                .unwrap()
                .unwrap()
                .txid,
            t2[0]
        );
        assert_eq!(j.last_change_of(Path::new("/elsewhere")).unwrap(), None);
    }
}
