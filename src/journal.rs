//! The SQLite journal in the state directory: the durable copy of the
//! batch queue (so a crash or reboot loses no change), the append-only
//! change feed with transaction ids behind `csync2-watch events`, requests
//! from `csync2-watch sync`, and small key/value state.
//!
//! (API pinned; implementation being built.)

use std::path::{Path, PathBuf};

use crate::watch::ChangeKind;

/// File name of the journal inside the state directory.
pub const FILE_NAME: &str = "journal.db";

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
}

/// An open journal.
pub struct Journal {
    _private: (),
}

impl Journal {
    /// Open (creating if needed) `state_dir/journal.db` for the daemon.
    pub fn open(_state_dir: &Path) -> Result<Journal, JournalError> {
        unimplemented!("journal::Journal::open")
    }

    /// Record changes: append them to the feed and upsert them into the
    /// queue, in one transaction. Returns the transaction id of each
    /// change, in order.
    pub fn enqueue(
        &mut self,
        _changes: &[(PathBuf, ChangeKind)],
    ) -> Result<Vec<u64>, JournalError> {
        unimplemented!()
    }

    /// Record the start of a full check in the feed; returns its txid.
    pub fn record_full_check(
        &mut self,
        _scope: Option<&Path>,
        _reason: &str,
    ) -> Result<u64, JournalError> {
        unimplemented!()
    }

    /// Everything still queued (for replay after a restart), oldest first.
    pub fn pending(&self) -> Result<Vec<QueuedPath>, JournalError> {
        unimplemented!()
    }

    /// Drop queued paths that were checked, unless they were queued again
    /// after `up_to_txid`.
    pub fn complete(&mut self, _paths: &[PathBuf], _up_to_txid: u64) -> Result<(), JournalError> {
        unimplemented!()
    }

    /// Drop every queued path with txid ≤ `up_to_txid` (after a full check).
    pub fn complete_all(&mut self, _up_to_txid: u64) -> Result<(), JournalError> {
        unimplemented!()
    }

    /// Feed entries with txid > `since`, at most `limit`, oldest first.
    pub fn events_since(&self, _since: u64, _limit: usize) -> Result<Vec<Event>, JournalError> {
        unimplemented!()
    }

    /// Keep only the newest `keep` feed entries (queued paths stay).
    pub fn prune(&mut self, _keep: u64) -> Result<(), JournalError> {
        unimplemented!()
    }

    /// Leave a request for the daemon (used by `csync2-watch sync`).
    pub fn push_request(&mut self, _request: &Request) -> Result<(), JournalError> {
        unimplemented!()
    }

    /// Take (and delete) every pending request, oldest first.
    pub fn take_requests(&mut self) -> Result<Vec<Request>, JournalError> {
        unimplemented!()
    }

    /// Small persistent values (last full sync time, ...).
    pub fn get_meta(&self, _key: &str) -> Result<Option<String>, JournalError> {
        unimplemented!()
    }

    pub fn set_meta(&mut self, _key: &str, _value: &str) -> Result<(), JournalError> {
        unimplemented!()
    }
}
