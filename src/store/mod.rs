//! The durable store: what must outlive a restart or `kill -9` — capture
//! jobs (Oracle's screen capture requests), Nova's instance actions and their
//! events, replay nonces, per-guest throttle slots, screen recordings' rows
//! (their files are the recordings service's) and uploads to storage targets
//! with each acknowledged chunk — in one SQLite
//! database, with the images in a media directory beside it.
//!
//! Layout: `<path>` (the database, WAL mode: `<path>-wal`, `<path>-shm`),
//! `<path>.lock` (an exclusive `flock` held while a vmshot has it open, so a
//! second one fails at open instead of sharing it), and `media_dir` (one file
//! a job, named after the job's row id). Migrations are the ordered SQL files
//! under `migrations/`; `PRAGMA user_version` counts those applied.
//!
//! Durability: every write is one transaction, committed with
//! `synchronous=FULL` in WAL mode, so the WAL is fsynced before a call
//! returns; an acknowledged write survives `kill -9` and power loss alike.
//! Nonces and throttle slots, written on every request, skip the fsync and
//! survive `kill -9` only (see `limits`).
//! A media file is written under a temporary name, fsynced, renamed and the
//! directory fsynced *before* the row that names it is committed, and a row
//! is deleted before its file: a record never points at a missing file, and
//! a crash between the two leaves at most an orphan file that `retain` sweeps.
//!
//! All SQLite and file work runs on one thread that owns the connection
//! (`worker`), fed by a bounded channel; every call has a timeout.

mod actions;
mod jobs;
mod limits;
mod media;
mod open;
mod recordings;
mod retain;
mod uploads;
mod worker;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

use time::OffsetDateTime;

// Public for the store benchmark (benches/store), which fills and lists
// actions through the same calls the daemon makes.
pub use actions::{Action, ActionEvent, ActionPage, EventResult, NewAction};
pub(crate) use jobs::{CancellationState, Job, JobFilter, JobState, JobStatus, NewJob};
pub(crate) use limits::Slot;
pub(crate) use recordings::{FileColumns, RecordingQuery, RecordingRow};
pub(crate) use uploads::{
    ChunkRow, NewUpload, NewUploadTarget, TargetRow, TargetUpdate, UploadRow,
};
pub use worker::Store;

/// Where the store lives and how much it keeps.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// The SQLite database file.
    pub path: PathBuf,
    /// Where job media (JPEG/PNG files) are kept.
    pub media_dir: PathBuf,
    /// Finished jobs and actions older than this are removed by `retain`.
    pub max_age: Duration,
    /// Total bytes of media kept; the oldest finished jobs go first.
    pub max_media_bytes: u64,
    /// Instance actions kept at most (with their events); the oldest go
    /// first, so a busy host's database stays bounded within `max_age`.
    pub max_actions: u64,
    /// How long one call may wait for the store thread, queueing included.
    pub call_timeout: Duration,
    /// Calls that may wait for the store thread before callers wait to send.
    pub queue_depth: usize,
}

impl StoreSettings {
    /// Settings with the media directory beside the database
    /// (`<path>.media`) and defaults for the rest.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let mut media = path.clone().into_os_string();
        media.push(".media");
        Self {
            path,
            media_dir: media.into(),
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_media_bytes: 1 << 30,
            max_actions: 1_000_000,
            call_timeout: Duration::from_secs(10),
            queue_depth: 256,
        }
    }
}

/// Why a store call failed. The open errors name the file and the problem,
/// so the operator can act on them; the store never starts over silently.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: corrupt or not a database: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("store {path}: locked by another vmshot (lock file {lock} is held)")]
    Locked { path: PathBuf, lock: PathBuf },
    #[error("store {path}: read-only: {detail}")]
    ReadOnly { path: PathBuf, detail: String },
    #[error(
        "store {path}: newer schema: version {found}, this vmshot knows up to {known}; \
         run the newer vmshot or restore a backup"
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("store {path}: cannot open: {detail}")]
    Open { path: PathBuf, detail: String },
    #[error("store call timed out after {0:?}")]
    Timeout(Duration),
    #[error("store is closed")]
    Closed,
    #[error("no such {kind} '{key}'")]
    NotFound { kind: &'static str, key: String },
    #[error("{kind} '{key}' already exists")]
    Exists { kind: &'static str, key: String },
    /// A compare-and-set lost: the job is no longer in the state the caller
    /// expected (another writer moved it first).
    #[error("job '{name}' is {current}, not {expected}")]
    Conflict {
        name: String,
        expected: String,
        current: String,
    },
    /// The caller's rule refused the update (e.g. the state machine).
    #[error("refused: {0}")]
    Refused(String),
    #[error("marker '{0}' not found")]
    MarkerNotFound(String),
    #[error("media {path}: {source}")]
    Media {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

impl StoreError {
    /// Whether the call failed for want of space on the store's file system
    /// (SQLite's `SQLITE_FULL`, or `ENOSPC`/`EDQUOT` writing a media file).
    pub fn is_full(&self) -> bool {
        match self {
            Self::Sqlite(e) => e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull),
            Self::Media { source, .. } => {
                matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
            }
            _ => false,
        }
    }
}

/// Microseconds since the epoch: how times are kept in the database.
pub(crate) fn to_micros(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1000) as i64
}

pub(crate) fn from_micros(us: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(us as i128 * 1000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Now, at the precision the database keeps, so a time read back equals the
/// time written.
pub(crate) fn now() -> OffsetDateTime {
    from_micros(to_micros(OffsetDateTime::now_utc()))
}
