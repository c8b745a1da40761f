//! Screen recordings of a domain's console (issue 10): each a durable row in
//! the store and two files, `<id>.mp4` (H.264 in fragmented MP4, see
//! `crate::record`) and `<id>.events.jsonl` (frames, lifecycle events, gaps),
//! each with the SHA-256 computed while writing.
//!
//! The dialects (Huawei Workspace first) call [`Recordings`]; it resolves and
//! scopes the domain as screenshots do (a principal sees a recording if it
//! may see the domain as it was when recorded: a recording outlives its
//! domain), and keeps one recorder task a running recording (`recorder`),
//! whose frames are encoded on a bounded pool of threads (`pool`).
//!
//! One owner per piece of state: the row's status moves only through
//! `machine`, written by the recorder's `finish` (or by `recover` at start,
//! or by `ship`, which follows the uploads for the upload moves: the
//! uploads service owns the uploads, `ship` only waits for them); the
//! `active` map holds the running recordings, each inserted by `start` and
//! removed by its own recorder once its end is stored; `shipping` holds the
//! recordings a `ship` task follows (not deletable meanwhile).
//!
//! Durability: a started recording's row is committed before `start`
//! answers. The files are written a frame (a line) at a time, so `kill -9`
//! leaves whole fragments and lines plus at most one torn one; at the next
//! start `recover` trims them, recomputes the digests from the files and
//! closes the row `REC_COMPLETED`, saying it was cut.
//!
//! Budget (`[recordings]`): at most `max_concurrent` recordings (OPERATION
//! watchers included) and `max_disk_bytes` of files, refused with
//! `OverBudget`; a recording stops by itself at `max_recording_bytes` or
//! `max_duration`; all encoding shares `encoder_threads` threads, and a
//! frame that finds its thread busy is dropped and written as a gap.
//! Recordings without a mirror share `MAX_GRABS` libvirt screenshots in flight.
//!
//! The events file, one JSON object a line, each with `t` (RFC 3339, UTC),
//! `ms` (since the recording started; for OPERATION, since it was armed)
//! and `type`: `start` (kind, domain, period), `frame` (width, height, the
//! bytes the video grew by), `lifecycle` (the guest event and libvirt's
//! detail), `trigger` (OPERATION), `resize` (the screen's new size, scaled
//! to the recording's), `gap` (a reason; `frames_dropped` when the encoders
//! were busy) and `end` (the reason, `null` for a stop).
//!
//! Not yet: retention by age (recordings go by `delete` only), and a sweep
//! of files whose row is gone (a crash between `delete`'s row and file
//! removal leaves an orphan file); a second try of an `UPLOAD_FAILED`
//! recording's upload (the machine allows it, no call makes it); removing
//! the local files once uploaded.

mod machine;
mod pool;
mod recorder;
mod recover;
mod ship;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::watch;

use super::uploads::{TargetStatus, Uploads};
use super::{Caller, Domain, Error, Principal};
use crate::capture::Capturer;
use crate::store::{FileColumns, RecordingQuery, RecordingRow, Store, StoreError};
pub use machine::{Event, Refusal};
use pool::{Pool, Progress};
use recorder::{Plan, Recorder};

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

impl ListFilter {
    /// The newest `limit` recordings of one domain, whatever their kind or
    /// status (the live page's list of a domain).
    pub fn of_domain(uuid: &str, limit: u64) -> Self {
        Self {
            domain_uuid: Some(uuid.to_owned()),
            domain_names: Vec::new(),
            username: None,
            status: None,
            kind: None,
            from: OffsetDateTime::UNIX_EPOCH,
            to: OffsetDateTime::now_utc() + time::Duration::days(1),
            ascending: false,
            offset: 0,
            limit,
        }
    }
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
    inner: Arc<Inner>,
}

/// A running recording, as its owner (the recorder task) publishes it.
struct Active {
    stop: watch::Sender<bool>,
    /// True once the recorder has written the row's end.
    finished: watch::Receiver<bool>,
    /// The row as that end wrote it (before an upload moves it on), for
    /// `stop` to answer.
    ended: Arc<OnceLock<Recording>>,
    progress: Arc<Progress>,
}

pub(super) struct Inner {
    store: Store,
    settings: RecordingSettings,
    capturer: Capturer,
    pool: Pool,
    /// The running recordings, by id; their recorder tasks own them.
    active: Mutex<HashMap<String, Active>>,
    /// Bytes of the closed recordings' files (the store's sum, kept current).
    closed_bytes: AtomicU64,
    /// Screenshots recordings without a mirror may have in flight at once.
    grabs: Arc<tokio::sync::Semaphore>,
    /// With `[uploads]`: where finished recordings are shipped (set once,
    /// by `Screenshots::with_uploads`).
    uploads: OnceLock<Uploads>,
    /// Recordings whose upload task runs (`ship`), or is about to: not to
    /// be deleted under it.
    shipping: Mutex<HashSet<String>>,
}

impl Inner {
    fn active(&self) -> std::sync::MutexGuard<'_, HashMap<String, Active>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn shipping(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.shipping.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes on disk: closed recordings and what the running ones wrote.
    fn disk_used(&self) -> u64 {
        let live: u64 = self.active().values().map(|a| a.progress.bytes()).sum();
        self.closed_bytes.load(Ordering::Relaxed) + live
    }

    /// An OPERATION recording's start is its ring's first frame.
    async fn mark_triggered(&self, id: &str, start: OffsetDateTime) {
        let start = crate::store::from_micros(crate::store::to_micros(start));
        if let Err(e) = self
            .store
            .update_recording(id, move |row| {
                row.start_time = start;
                Ok(())
            })
            .await
        {
            tracing::warn!(recording = id, error = %e, "could not record the trigger time");
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.settings.dir.join(name)
    }
}

/// The stored parameters of a recording.
#[derive(serde::Serialize)]
struct Params<'a> {
    period_ms: u64,
    max_duration_s: u64,
    before_s: u64,
    after_s: u64,
    triggers: Vec<&'a str>,
}

impl Recordings {
    pub(crate) fn new(
        store: Store,
        settings: RecordingSettings,
        capturer: Capturer,
    ) -> Option<Self> {
        if let Err(e) = std::fs::create_dir_all(&settings.dir) {
            tracing::error!(error = %e, "cannot create the recordings directory; recordings off");
            return None;
        }
        let pool = match Pool::new(settings.encoder_threads) {
            Ok(pool) => pool,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the encoder threads; recordings off");
                return None;
            }
        };
        // SESSION and OPERATION follow the inventory's guest events.
        capturer.hypervisor().start_inventory();
        Some(Self {
            inner: Arc::new(Inner {
                store,
                settings,
                capturer,
                pool,
                active: Mutex::new(HashMap::new()),
                closed_bytes: AtomicU64::new(0),
                grabs: Arc::new(tokio::sync::Semaphore::new(MAX_GRABS)),
                uploads: OnceLock::new(),
                shipping: Mutex::new(HashSet::new()),
            }),
        })
    }

    pub fn settings(&self) -> &RecordingSettings {
        &self.inner.settings
    }

    /// Recordings running now (OPERATION watchers included).
    pub fn running(&self) -> usize {
        self.inner.active().len()
    }

    fn plan(&self, req: &StartRecording) -> Result<Plan, Error> {
        let s = &self.inner.settings;
        let invalid = |reason: String| Err(Error::Invalid { reason });
        let fps = req.fps.unwrap_or(s.fps);
        if !(fps.is_finite() && (0.01..=MAX_FPS).contains(&fps)) {
            return invalid(format!("fps must be between 0.01 and {MAX_FPS}"));
        }
        let period = match req.kind {
            Kind::Interval => req.interval.unwrap_or(s.interval),
            _ => Duration::from_secs_f64(1.0 / fps),
        };
        if !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&period) {
            return invalid("the interval must be between 0.1 and 3600 seconds".into());
        }
        let max_duration = req.max_duration.unwrap_or(s.max_duration);
        if max_duration.is_zero() || max_duration > s.max_duration {
            return invalid(format!(
                "the maximum duration must be between 1 and {} seconds",
                s.max_duration.as_secs()
            ));
        }
        let (before, after) = (req.before.unwrap_or(s.before), req.after.unwrap_or(s.after));
        if before > MAX_AROUND || after > MAX_AROUND {
            return invalid(format!(
                "before and after must be at most {} seconds",
                MAX_AROUND.as_secs()
            ));
        }
        if req.triggers.len() > Trigger::ALL.len() {
            return invalid("too many triggers".into());
        }
        let mut triggers = req.triggers.clone();
        triggers.sort_by_key(|t| t.as_str());
        triggers.dedup();
        Ok(Plan {
            kind: req.kind,
            period,
            max_duration,
            before,
            after,
            triggers,
        })
    }

    /// Starts a recording of `instance` (a reference as `find_instance`
    /// takes it: instance id, name or UUID). The row is committed `RECORDING`
    /// before this returns, and its recorder is running.
    pub async fn start(
        &self,
        who: &Principal,
        instance: &str,
        req: StartRecording,
    ) -> Result<Recording, Error> {
        self.start_in(who, instance, &BTreeMap::new(), req).await
    }

    /// `start`, with the dialect's own instance id → domain table, as
    /// `Screenshots::find_instance` takes it.
    pub async fn start_in(
        &self,
        who: &Principal,
        instance: &str,
        table: &BTreeMap<String, String>,
        req: StartRecording,
    ) -> Result<Recording, Error> {
        let plan = self.plan(&req)?;
        if req.caller.request_id.len() > MAX_TEXT || req.caller.user.len() > MAX_TEXT {
            return Err(Error::Invalid {
                reason: "the request id or user is too long".into(),
            });
        }
        let hv = self.inner.capturer.hypervisor();
        let domain = super::find_instance(hv, who, instance, table).await?;
        let running = domain.state.is_none_or(|s| s.has_console());
        if !running && plan.kind != Kind::Session {
            return Err(Error::NotRunning {
                domain: domain.name.clone(),
                state: domain.state.expect("not running means known"),
            });
        }
        let s = &self.inner.settings;
        if self.inner.disk_used() >= s.max_disk_bytes {
            return Err(Error::OverBudget {
                what: format!(
                    "the recordings use their disk budget ({} MB)",
                    s.max_disk_bytes >> 20
                ),
            });
        }
        let id = uuid::Uuid::new_v4().to_string();
        let (stop, stop_rx) = watch::channel(false);
        let (finished_tx, finished) = watch::channel(false);
        let ended = Arc::new(OnceLock::new());
        let progress = Arc::new(Progress::default());
        {
            // The slot is taken before the row exists, so two starts cannot
            // both pass the cap.
            let mut active = self.inner.active();
            if active.len() >= s.max_concurrent {
                return Err(Error::OverBudget {
                    what: format!(
                        "{} recordings are running, the most this host allows",
                        active.len()
                    ),
                });
            }
            active.insert(
                id.clone(),
                Active {
                    stop,
                    finished,
                    ended: ended.clone(),
                    progress: progress.clone(),
                },
            );
        }
        let release = |inner: &Inner, id: &str| {
            inner.active().remove(id);
        };
        let (video, events) = (format!("{id}.mp4"), format!("{id}.events.jsonl"));
        let params = serde_json::to_string(&Params {
            period_ms: plan.period.as_millis() as u64,
            max_duration_s: plan.max_duration.as_secs(),
            before_s: plan.before.as_secs(),
            after_s: plan.after.as_secs(),
            triggers: plan.triggers.iter().map(|t| t.as_str()).collect(),
        })
        .unwrap_or_default();
        // Subscribed before the row exists: no event after the answer is missed.
        let domain_events = hv.inventory().map(|i| i.events());
        let seat = match self
            .inner
            .pool
            .open(
                &id,
                self.inner.path(&video),
                self.inner.path(&events),
                progress.clone(),
            )
            .await
        {
            Ok(seat) => seat,
            Err(e) => {
                release(&self.inner, &id);
                return Err(Error::Failed {
                    reason: "the recording's files could not be created".into(),
                    detail: e.to_string(),
                });
            }
        };
        let file = |name: String| {
            Some(FileColumns {
                name,
                bytes: 0,
                sha256: None,
            })
        };
        let row = RecordingRow {
            id: id.clone(),
            domain_uuid: domain.uuid.clone(),
            domain_name: domain.name.clone(),
            instance_id: domain.instance_id.clone(),
            domain_project: domain.project.clone(),
            domain_user: domain.user.clone(),
            kind: plan.kind.as_str().to_owned(),
            status: Status::Recording.as_str().to_owned(),
            reason: None,
            dialect: who.dialect.to_owned(),
            principal: who.id.clone(),
            project: who.project.clone(),
            request_id: req.caller.request_id.clone(),
            params,
            start_time: crate::store::now(),
            end_time: None,
            updated_at: crate::store::now(),
            duration_ms: 0,
            frames: 0,
            video: file(video),
            events: file(events),
            upload_id: None,
        };
        let row = match self.inner.store.create_recording(row).await {
            Ok(row) => row,
            Err(e) => {
                let _ = seat.close(Duration::ZERO).await;
                release(&self.inner, &id);
                return Err(Error::from(e));
            }
        };
        let recorder = Recorder {
            inner: self.inner.clone(),
            id: id.clone(),
            uuid: domain.uuid.clone(),
            plan,
            seat,
            progress,
            running,
            events: domain_events,
            stop: stop_rx,
        };
        tokio::spawn(finish(self.inner.clone(), recorder, finished_tx, ended));
        tracing::info!(recording = %id, domain = %domain.name, kind = %row.kind, "recording started");
        Ok(to_recording(row))
    }

    /// Stops a running recording; its files are closed and digested before
    /// this returns it `REC_COMPLETED` (as its end wrote it: with uploads,
    /// the row may be `UPLOADING` by then). A recording that has ended is
    /// a `Conflict`.
    pub async fn stop(&self, who: &Principal, id: &str) -> Result<Recording, Error> {
        let rec = self.get(who, id).await?;
        let finished = {
            let active = self.inner.active();
            match active.get(&rec.id) {
                Some(a) => {
                    a.stop.send_replace(true);
                    Some((a.finished.clone(), a.ended.clone()))
                }
                None => None,
            }
        };
        let Some((mut finished, ended)) = finished else {
            if rec.status == Status::Recording {
                // Its recorder is closing it now.
                return self.get(who, id).await;
            }
            return Err(Error::Conflict {
                reason: format!("the recording is {}: it is not recording", rec.status),
            });
        };
        // Closing flushes the last frame and fsyncs: bounded by the disk.
        let _ = tokio::time::timeout(STOP_WITHIN, finished.wait_for(|f| *f)).await;
        match ended.get() {
            Some(rec) => Ok(rec.clone()),
            None => self.get(who, id).await,
        }
    }

    /// The recording `id` if `who` may see its domain (an admin sees all); one
    /// out of scope is not found, in the same words as one that does not exist.
    pub async fn get(&self, who: &Principal, id: &str) -> Result<Recording, Error> {
        let not_found = || Error::NoSuchRecording {
            id: id.chars().take(64).collect(),
        };
        if id.len() > MAX_TEXT {
            return Err(not_found());
        }
        let row = self
            .inner
            .store
            .get_recording(id)
            .await
            .map_err(Error::from)?
            .ok_or_else(not_found)?;
        let rec = self.with_progress(to_recording(row));
        if !who.may_see(&rec.domain, &BTreeMap::new()) {
            return Err(not_found());
        }
        Ok(rec)
    }

    /// A running recording's sizes as written so far. Only while the row
    /// says RECORDING: a row already closed holds the final sizes, and its
    /// recorder may not have left `active` yet.
    fn with_progress(&self, mut rec: Recording) -> Recording {
        if rec.status != Status::Recording {
            return rec;
        }
        if let Some(a) = self.inner.active().get(&rec.id) {
            let p = &a.progress;
            if let Some(v) = &mut rec.video {
                v.bytes = p.video_bytes.load(Ordering::Relaxed);
            }
            if let Some(e) = &mut rec.events {
                e.bytes = p.events_bytes.load(Ordering::Relaxed);
            }
            rec.frames = p.frames.load(Ordering::Relaxed);
            rec.duration = (OffsetDateTime::now_utc() - rec.start_time)
                .try_into()
                .unwrap_or_default();
        }
        rec
    }

    /// The recordings `who` may see that match `filter`, a page of them.
    pub async fn list(&self, who: &Principal, filter: &ListFilter) -> Result<Page, Error> {
        if filter.domain_names.len() > MAX_NAMES
            || filter.domain_names.iter().any(|n| n.len() > MAX_TEXT)
            || filter.username.as_ref().is_some_and(|u| u.len() > MAX_TEXT)
            || filter
                .domain_uuid
                .as_ref()
                .is_some_and(|u| u.len() > MAX_TEXT)
        {
            return Err(Error::Invalid {
                reason: format!("at most {MAX_NAMES} names of at most {MAX_TEXT} bytes"),
            });
        }
        let mut query = RecordingQuery {
            domain_uuid: filter.domain_uuid.clone(),
            domain_names: filter.domain_names.clone(),
            username: filter.username.clone(),
            status: filter.status.map(|s| s.as_str().to_owned()),
            kind: filter.kind.map(|k| k.as_str().to_owned()),
            from: Some(filter.from),
            to: Some(filter.to),
            ascending: filter.ascending,
            offset: filter.offset,
            limit: filter.limit.min(MAX_PAGE),
            ..RecordingQuery::default()
        };
        if !who.is_admin() {
            query.domain_project = who.project.clone();
            if who.allow.is_some() {
                // An allow list names instances several ways: the rows are
                // checked one by one below, over every match.
                query.offset = 0;
                query.limit = u64::MAX >> 1;
            }
        }
        let (rows, total) = self
            .inner
            .store
            .list_recordings(query)
            .await
            .map_err(Error::from)?;
        let mut items: Vec<Recording> = rows.into_iter().map(to_recording).collect();
        let mut total = total;
        if !who.is_admin() && who.allow.is_some() {
            items.retain(|r| who.may_see(&r.domain, &BTreeMap::new()));
            total = items.len() as u64;
            items = items
                .into_iter()
                .skip(filter.offset.try_into().unwrap_or(usize::MAX))
                .take(filter.limit.min(MAX_PAGE) as usize)
                .collect();
        }
        let items = items.into_iter().map(|r| self.with_progress(r)).collect();
        Ok(Page { items, total })
    }

    /// Deletes up to `MAX_DELETE` recordings, rows then files; every id must
    /// name a finished recording `who` sees, else nothing is deleted.
    /// Returns the deletion's job id; the deletion is done when it returns.
    pub async fn delete(&self, who: &Principal, ids: &[String]) -> Result<String, Error> {
        if ids.is_empty() || ids.len() > MAX_DELETE {
            return Err(Error::Invalid {
                reason: format!("between 1 and {MAX_DELETE} recordings a call"),
            });
        }
        let mut doomed = Vec::new();
        for id in ids {
            let rec = self.get(who, id).await?;
            if rec.status == Status::Uploading || self.inner.shipping().contains(&rec.id) {
                // Its files are read by the upload until it ends; refused
                // rather than cancelled, so that an upload the store
                // acknowledged always ends in its own words.
                return Err(Error::Conflict {
                    reason: format!(
                        "recording '{}' is being uploaded: delete it once its upload ended",
                        rec.id
                    ),
                });
            }
            if !machine::deletable(rec.status) {
                return Err(Error::Conflict {
                    reason: format!("recording '{}' is {}: stop it first", rec.id, rec.status),
                });
            }
            doomed.push(rec);
        }
        let ids: Vec<String> = doomed.iter().map(|r| r.id.clone()).collect();
        self.inner
            .store
            .delete_recordings(ids)
            .await
            .map_err(Error::from)?;
        for rec in &doomed {
            for f in [&rec.video, &rec.events].into_iter().flatten() {
                match tokio::fs::remove_file(self.inner.path(&f.name)).await {
                    Ok(()) => {
                        let _ = self.inner.closed_bytes.fetch_update(
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                            |b| Some(b.saturating_sub(f.bytes)),
                        );
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(recording = %rec.id, error = %e, "could not remove a recording's file")
                    }
                }
            }
        }
        Ok(uuid::Uuid::new_v4().to_string())
    }

    /// One of the recording's files, open for reading. A running
    /// recording's file is readable as written so far (no digest yet).
    pub async fn open(&self, who: &Principal, id: &str, file: FileKind) -> Result<OpenFile, Error> {
        let rec = self.get(who, id).await?;
        let media = match file {
            FileKind::Video => rec.video,
            FileKind::Events => rec.events,
        };
        let not_found = || Error::NoSuchRecording { id: rec.id.clone() };
        let media = media.ok_or_else(not_found)?;
        let opened = tokio::fs::File::open(self.inner.path(&media.name))
            .await
            .map_err(|_| not_found())?;
        let len = opened.metadata().await.map_err(|_| not_found())?.len();
        Ok(OpenFile {
            file: opened,
            name: media.name,
            len,
            sha256: media.sha256,
            content_type: file.content_type(),
        })
    }

    /// `ship`'s seam (it follows the uploads service): moves a finished
    /// recording through the upload statuses (`Event::UploadStarted` carries the upload's id,
    /// kept on the row), as the machine allows; a refused move is a
    /// `Conflict`. No scope check: the caller is the host's own service.
    pub async fn upload_moved(&self, id: &str, event: Event) -> Result<Recording, Error> {
        let upload = match &event {
            Event::UploadStarted { upload_id } => Some(upload_id.clone()),
            _ => None,
        };
        if upload.as_ref().is_some_and(|u| u.len() > MAX_TEXT) {
            return Err(Error::Invalid {
                reason: "the upload id is too long".into(),
            });
        }
        let row = self
            .inner
            .store
            .update_recording(id, move |r| {
                let from = r.status.parse::<Status>().map_err(|e| e.to_string())?;
                let (status, reason) = machine::apply(from, &event).map_err(|e| e.to_string())?;
                r.status = status.as_str().to_owned();
                // A new upload clears the last one's failure; how the
                // recording ended (cut, its domain stopped) stays.
                if reason.is_some() || (status == Status::Uploading && from == Status::UploadFailed)
                {
                    r.reason = reason;
                }
                if let Some(upload) = upload {
                    r.upload_id = Some(upload);
                }
                Ok(())
            })
            .await
            .map_err(|e| match e {
                StoreError::NotFound { .. } => Error::NoSuchRecording {
                    id: id.chars().take(64).collect(),
                },
                e => Error::from(e),
            })?;
        Ok(to_recording(row))
    }

    /// Ships finished recordings through `uploads` from now on (once; the
    /// daemon calls it as it builds the service).
    pub(crate) fn attach_uploads(&self, uploads: Uploads) {
        let _ = self.inner.uploads.set(uploads);
    }

    /// After `recover`, with uploads: every recording left REC_COMPLETED
    /// (never submitted: a crash came between, or uploads were turned on
    /// since) is submitted, and every one left UPLOADING waits for its
    /// uploads again (the uploads service resumes them). Returns how many.
    pub async fn resume_uploads(&self) -> Result<usize, Error> {
        let Some(uploads) = self.inner.uploads.get() else {
            return Ok(0);
        };
        let mut n = 0;
        for status in [Status::Uploading, Status::RecCompleted] {
            let rows = self
                .inner
                .store
                .recordings_in(status.as_str())
                .await
                .map_err(Error::from)?;
            for row in rows {
                if self.inner.shipping().contains(&row.id)
                    || self.inner.active().contains_key(&row.id)
                {
                    continue;
                }
                ship::spawn(self.inner.clone(), uploads.clone(), row.id);
                n += 1;
            }
        }
        Ok(n)
    }

    /// The targets of the recording's upload (its video's), for the
    /// dialects' views; empty without uploads or before one started.
    pub async fn upload_targets(&self, rec: &Recording) -> Vec<TargetStatus> {
        match self.inner.uploads.get() {
            Some(uploads) => ship::targets(uploads, rec.upload_id.as_deref()).await,
            None => Vec::new(),
        }
    }

    /// Where one of a recording's files is on disk (for the uploads service,
    /// which reads it whole; dialects use `open`). Never shown to callers.
    pub fn path_of(&self, file: &MediaFile) -> PathBuf {
        self.inner.path(&file.name)
    }

    /// Stops every running recording and waits, at most `within`, for their
    /// files to close (at shutdown).
    pub async fn stop_all(&self, within: Duration) {
        let waits: Vec<_> = self
            .inner
            .active()
            .values()
            .map(|a| {
                a.stop.send_replace(true);
                a.finished.clone()
            })
            .collect();
        let all = futures_util::future::join_all(waits.into_iter().map(|mut f| async move {
            let _ = f.wait_for(|done| *done).await;
        }));
        let _ = tokio::time::timeout(within, all).await;
    }

    /// At start: every recording a crash left `RECORDING` is closed with what
    /// was written (see `recover`), and the disk in use is counted. Returns
    /// how many were closed.
    pub async fn recover(&self) -> Result<usize, Error> {
        let rows = self
            .inner
            .store
            .recordings_in(Status::Recording.as_str())
            .await
            .map_err(Error::from)?;
        let mut closed = 0;
        for row in rows {
            if self.inner.active().contains_key(&row.id) {
                continue;
            }
            let dir = self.inner.settings.dir.clone();
            let names = (row.video.clone(), row.events.clone());
            let found = tokio::task::spawn_blocking(move || recover::salvage(&dir, names))
                .await
                .map_err(|e| Error::Failed {
                    reason: "the recovery failed".into(),
                    detail: e.to_string(),
                })?;
            let updated = self
                .inner
                .store
                .update_recording(&row.id, move |r| {
                    let (status, reason) = machine::apply(
                        Status::Recording,
                        &Event::Complete {
                            reason: Some(recover::CUT.to_owned()),
                        },
                    )
                    .map_err(|e| e.to_string())?;
                    r.status = status.as_str().to_owned();
                    r.reason = reason;
                    found.apply(r);
                    Ok(())
                })
                .await
                .map_err(Error::from)?;
            tracing::info!(recording = %updated.id, frames = updated.frames, "recording cut by a restart, closed");
            closed += 1;
        }
        let used = self
            .inner
            .store
            .recording_bytes()
            .await
            .map_err(Error::from)?;
        self.inner.closed_bytes.store(used, Ordering::Relaxed);
        Ok(closed)
    }
}

/// Runs the recorder, then writes how it ended: the machine's move, the
/// files' sizes and digests, in one transaction; then frees its slot.
async fn finish(
    inner: Arc<Inner>,
    recorder: Recorder,
    finished: watch::Sender<bool>,
    answer: Arc<OnceLock<Recording>>,
) {
    let id = recorder.id.clone();
    let (ended, seat) = recorder.run().await;
    let closed = seat.close(ended.duration).await;
    let (event, files) = match closed {
        Ok(c) => (
            Event::Complete {
                reason: ended.reason.clone(),
            },
            Some(c),
        ),
        Err(e) => {
            tracing::warn!(recording = %id, error = %e, "recording failed");
            (Event::Fail("writing the recording failed".into()), None)
        }
    };
    // Marked before the row says REC_COMPLETED: a delete between the two
    // would pull the files from under the upload.
    let uploads = inner.uploads.get().cloned();
    if uploads.is_some() {
        inner.shipping().insert(id.clone());
    }
    let bytes = files.as_ref().map_or(0, |c| {
        c.events_bytes + c.video.as_ref().map_or(0, |v| v.bytes)
    });
    let result = inner
        .store
        .update_recording(&id, move |r| {
            let from = r.status.parse::<Status>().map_err(|e| e.to_string())?;
            let (status, reason) = machine::apply(from, &event).map_err(|e| e.to_string())?;
            r.status = status.as_str().to_owned();
            r.reason = reason;
            r.start_time = crate::store::from_micros(crate::store::to_micros(ended.start));
            r.end_time = Some(crate::store::from_micros(crate::store::to_micros(
                ended.end,
            )));
            r.duration_ms = ended.duration.as_millis() as u64;
            if let Some(c) = files {
                match (&mut r.video, c.video) {
                    (Some(v), Some(w)) => {
                        v.bytes = w.bytes;
                        v.sha256 = Some(w.sha256);
                        r.frames = w.frames;
                    }
                    // No frame, no video file.
                    (v, _) => *v = None,
                }
                if let Some(e) = &mut r.events {
                    e.bytes = c.events_bytes;
                    e.sha256 = Some(c.events_sha256);
                }
            }
            Ok(())
        })
        .await;
    match result {
        Ok(row) => {
            inner.closed_bytes.fetch_add(bytes, Ordering::Relaxed);
            tracing::info!(recording = %id, status = %row.status, frames = row.frames, "recording ended");
            let shipped = uploads.is_some() && row.status == Status::RecCompleted.as_str();
            let _ = answer.set(to_recording(row));
            match uploads {
                Some(uploads) if shipped => ship::spawn(inner.clone(), uploads, id.clone()),
                _ => {
                    inner.shipping().remove(&id);
                }
            }
        }
        Err(e) => {
            inner.shipping().remove(&id);
            tracing::error!(recording = %id, error = %e, "recording's end not stored; the next start closes it")
        }
    }
    inner.active().remove(&id);
    finished.send_replace(true);
}

fn to_recording(row: RecordingRow) -> Recording {
    let file = |f: Option<FileColumns>| {
        f.map(|f| MediaFile {
            name: f.name,
            bytes: f.bytes,
            sha256: f.sha256,
        })
    };
    Recording {
        domain: Domain {
            name: row.domain_name,
            uuid: row.domain_uuid,
            state: None,
            instance_id: row.instance_id,
            project: row.domain_project,
            user: row.domain_user,
        },
        // The schema allows only the known words.
        kind: row.kind.parse().unwrap_or(Kind::Full),
        status: row.status.parse().unwrap_or(Status::RecFailed),
        reason: row.reason,
        dialect: row.dialect,
        principal: row.principal,
        project: row.project,
        request_id: row.request_id,
        start_time: row.start_time,
        end_time: row.end_time,
        updated_at: row.updated_at,
        duration: Duration::from_millis(row.duration_ms),
        frames: row.frames,
        video: file(row.video),
        events: file(row.events),
        upload_id: row.upload_id,
        id: row.id,
    }
}

/// Recordings one `delete` takes at most.
pub const MAX_DELETE: usize = 10;
/// Recordings one page holds at most.
pub const MAX_PAGE: u64 = 1000;
/// Domain names one list filters by at most.
pub const MAX_NAMES: usize = 100;
/// Bytes of an id, a name, a user, at most.
const MAX_TEXT: usize = 255;
/// Frames a second a recording takes at most.
const MAX_FPS: f64 = 30.0;
/// OPERATION's before and after, at most.
const MAX_AROUND: Duration = Duration::from_secs(300);
/// libvirt screenshots all recordings may have in flight (the daemon's call
/// pool has 8 by default): the rest is the callers'.
const MAX_GRABS: usize = 2;
/// How long `stop` waits for the files to close.
const STOP_WITHIN: Duration = Duration::from_secs(30);
