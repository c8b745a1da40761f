//! Screen recordings of a domain's console (issue 10): each a durable row in
//! the store and two files, `<id>.mp4` (H.264 in fragmented MP4, see
//! `crate::record`) and `<id>.events.jsonl` (frames, lifecycle events, gaps),
//! each with the SHA-256 computed while writing.
//!
//! The dialects (Huawei Workspace first) call [`Recordings`]; it resolves and
//! scopes the domain as screenshots do, and keeps one recorder a running
//! recording. The implementation is filled in behind this API.

use std::str::FromStr;
use std::time::Duration;

use time::OffsetDateTime;

use super::{Caller, Domain, Error, Principal};

/// What a recording covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Continuously, at a frame rate (default 2 fps).
    Full,
    /// One frame every `interval`.
    Interval,
    /// Armed on a domain: the seconds before and after a lifecycle event.
    Operation,
    /// From the domain's start to its stop.
    Session,
}

/// Where a recording is in its life (see `machine` for the moves).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Recording,
    RecCompleted,
    Uploading,
    UploadCompleted,
    RecFailed,
    UploadFailed,
}

/// What starts an OPERATION recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trigger {
    Reboot,
    Crash,
    Panic,
    Watchdog,
    Shutdown,
}

/// A word that names no variant of a wire enum.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a known value")]
pub struct UnknownWord(pub String);

macro_rules! wire_words {
    ($ty:ident { $($variant:ident => $word:literal),+ $(,)? }) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The word on the wire.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $word),+ }
            }
        }

        impl FromStr for $ty {
            type Err = UnknownWord;
            fn from_str(s: &str) -> Result<Self, UnknownWord> {
                match s { $($word => Ok($ty::$variant),)+ _ => Err(UnknownWord(s.chars().take(64).collect())) }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_words!(Kind { Full => "FULL", Interval => "INTERVAL", Operation => "OPERATION", Session => "SESSION" });
wire_words!(Status {
    Recording => "RECORDING",
    RecCompleted => "REC_COMPLETED",
    Uploading => "UPLOADING",
    UploadCompleted => "UPLOAD_COMPLETED",
    RecFailed => "REC_FAILED",
    UploadFailed => "UPLOAD_FAILED",
});
wire_words!(Trigger { Reboot => "REBOOT", Crash => "CRASH", Panic => "PANIC", Watchdog => "WATCHDOG", Shutdown => "SHUTDOWN" });

/// A recording to start, as the dialect parsed it. `None` takes the
/// configured default.
#[derive(Debug, Clone)]
pub struct StartRecording {
    pub kind: Kind,
    /// FULL, OPERATION, SESSION: frames a second at most.
    pub fps: Option<f64>,
    /// INTERVAL: the time between frames.
    pub interval: Option<Duration>,
    /// The recording stops by itself after this long.
    pub max_duration: Option<Duration>,
    /// OPERATION: seconds kept before the event.
    pub before: Option<Duration>,
    /// OPERATION: seconds recorded after the event.
    pub after: Option<Duration>,
    /// OPERATION: the events that trigger it; empty: all of them.
    pub triggers: Vec<Trigger>,
    pub caller: Caller,
}

impl StartRecording {
    pub fn new(kind: Kind, caller: Caller) -> Self {
        Self {
            kind,
            fps: None,
            interval: None,
            max_duration: None,
            before: None,
            after: None,
            triggers: Vec::new(),
            caller,
        }
    }
}

/// One of a recording's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaFile {
    /// The file's name, without a directory (`<id>.mp4`).
    pub name: String,
    pub bytes: u64,
    /// Lowercase hex; set once the file is closed.
    pub sha256: Option<String>,
}

/// A recording as the store keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recording {
    /// A UUID (lowercase, with dashes).
    pub id: String,
    /// The domain as it was when the recording started (its `state` is
    /// `None`): a recording outlives its domain.
    pub domain: Domain,
    pub kind: Kind,
    pub status: Status,
    /// Why it failed, or how it ended if not by a stop (cut by a restart,
    /// its domain stopped, its budget ran out).
    pub reason: Option<String>,
    /// Who started it: the dialect, the principal's id and project.
    pub dialect: String,
    pub principal: String,
    pub project: Option<String>,
    pub request_id: String,
    pub start_time: OffsetDateTime,
    pub end_time: Option<OffsetDateTime>,
    pub updated_at: OffsetDateTime,
    /// Of what was recorded (for an OPERATION recording: of the video).
    pub duration: Duration,
    pub frames: u64,
    pub video: Option<MediaFile>,
    pub events: Option<MediaFile>,
    /// The upload that ships it, once the uploads service took it.
    pub upload_id: Option<String>,
}

/// Which recordings a list returns.
#[derive(Debug, Clone)]
pub struct ListFilter {
    pub domain_uuid: Option<String>,
    /// Any of these domain names; empty: any.
    pub domain_names: Vec<String>,
    /// The domain's user (Nova owner) or the principal that started it.
    pub username: Option<String>,
    pub status: Option<Status>,
    pub kind: Option<Kind>,
    /// Recordings that started in `[from, to]`.
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
    /// By start time, oldest first if set.
    pub ascending: bool,
    pub offset: u64,
    pub limit: u64,
}

/// One page of a list, and how many match in all.
#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<Recording>,
    pub total: u64,
}

/// Which of a recording's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Video,
    Events,
}

impl FileKind {
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Video => "video/mp4",
            Self::Events => "application/x-ndjson",
        }
    }
}

/// A recording's file, open for reading.
#[derive(Debug)]
pub struct OpenFile {
    pub file: tokio::fs::File,
    pub name: String,
    pub len: u64,
    /// `None` while the recording is still writing it.
    pub sha256: Option<String>,
    pub content_type: &'static str,
}

/// How recordings are made and bounded: the daemon's `[recordings]`.
#[derive(Debug, Clone)]
pub struct RecordingSettings {
    /// Where the files go.
    pub dir: std::path::PathBuf,
    /// FULL/SESSION/OPERATION frames a second when the caller gives none.
    pub fps: f64,
    /// INTERVAL's period when the caller gives none.
    pub interval: Duration,
    /// OPERATION's seconds before and after the event, by default.
    pub before: Duration,
    pub after: Duration,
    /// A recording stops by itself after this long.
    pub max_duration: Duration,
    /// Recordings running at once (OPERATION watchers included).
    pub max_concurrent: usize,
    /// Bytes of recording files on disk, all together and one recording.
    pub max_disk_bytes: u64,
    pub max_recording_bytes: u64,
    /// Threads of the encoder pool: the CPU share of all recordings.
    pub encoder_threads: usize,
}

impl RecordingSettings {
    /// Defaults, files in `dir`.
    pub fn new(dir: impl Into<std::path::PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            fps: 2.0,
            interval: Duration::from_secs(10),
            before: Duration::from_secs(10),
            after: Duration::from_secs(20),
            max_duration: Duration::from_secs(4 * 3600),
            max_concurrent: 32,
            max_disk_bytes: 10 << 30,
            max_recording_bytes: 1 << 30,
            encoder_threads: 1,
        }
    }
}

/// The recordings service; cheap to clone. See `Screenshots::recordings`.
#[derive(Clone)]
pub struct Recordings {
    inner: std::sync::Arc<Inner>,
}

struct Inner {
    #[allow(dead_code)]
    store: crate::store::Store,
    #[allow(dead_code)]
    settings: RecordingSettings,
}

impl Recordings {
    pub(crate) fn new(store: crate::store::Store, settings: RecordingSettings) -> Self {
        Self {
            inner: std::sync::Arc::new(Inner { store, settings }),
        }
    }

    pub fn settings(&self) -> &RecordingSettings {
        &self.inner.settings
    }
}

impl Recordings {
    /// Starts a recording of `instance` (a reference as `find_instance`
    /// takes it). The row is committed `RECORDING` before this returns.
    pub async fn start(
        &self,
        _who: &Principal,
        _instance: &str,
        _req: StartRecording,
    ) -> Result<Recording, Error> {
        Err(not_yet())
    }

    /// Stops a running recording; its files are closed and digested before
    /// this returns `REC_COMPLETED`.
    pub async fn stop(&self, _who: &Principal, _id: &str) -> Result<Recording, Error> {
        Err(not_yet())
    }

    pub async fn get(&self, _who: &Principal, _id: &str) -> Result<Recording, Error> {
        Err(not_yet())
    }

    pub async fn list(&self, _who: &Principal, _filter: &ListFilter) -> Result<Page, Error> {
        Err(not_yet())
    }

    /// Deletes up to `MAX_DELETE` recordings, rows and files; every id must
    /// name a recording `who` sees. Returns the deletion's job id.
    pub async fn delete(&self, _who: &Principal, _ids: &[String]) -> Result<String, Error> {
        Err(not_yet())
    }

    pub async fn open(
        &self,
        _who: &Principal,
        _id: &str,
        _file: FileKind,
    ) -> Result<OpenFile, Error> {
        Err(not_yet())
    }
}

/// Recordings one `delete` takes at most.
pub const MAX_DELETE: usize = 10;

fn not_yet() -> Error {
    Error::Unavailable {
        what: "recordings",
        detail: "not implemented yet".into(),
    }
}
