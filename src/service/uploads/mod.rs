//! Uploads of media (recordings, Oracle's captures) to the configured storage
//! targets: a local directory, or S3-compatible endpoints through
//! `object_store`'s `MultipartStore`. A caller `submit`s a file it has
//! finished writing; the upload is committed to the store before `submit`
//! returns, and from then on the owner task (`worker`) alone moves it.
//!
//! Per target, the file goes in chunks of `chunk_bytes` (S3's parts, which
//! must be ≥ 5 MiB but the last). A chunk's row is written once the target
//! acknowledged it, with the id the target gave it (S3's ETag, kept opaque)
//! and the multipart upload's id beside the target's row, so a restart
//! resumes from the first chunk not recorded. A target is `completed` only
//! after the object was read back whole and its SHA-256 equals the media's.
//!
//! A target's states (the upload's overall state is derived: failed if any
//! target failed, completed if all did, uploading once any started):
//!
//! ```text
//!   pending ──(first attempt)──▶ uploading ──(complete + digest ok)──▶ completed
//!                                   │  ▲
//!                    (error, retry) │  │ (backoff; a lost multipart upload
//!                                   ▼  │  starts over with a new id)
//!                                 uploading
//!                                   │
//!        (attempts spent, refused credentials, media gone or changed)
//!                                   ▼
//!                                 failed
//! ```
//!
//! After a restart every upload with a target still pending or uploading is
//! queued again (`recover`); nothing else moves a finished target.

mod blocking;
mod settings;
mod target;
mod worker;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};

use super::{Error, Principal, Screenshots};
use crate::store::{NewUpload, NewUploadTarget, Store, UploadRow};

pub use settings::{S3Target, TargetSettings, UploadSettings};

/// Object names are at most this long (S3 allows 1024 bytes; the prefix
/// comes on top).
pub const MAX_KEY_BYTES: usize = 512;

/// A finished file to upload. The file must stay in place until the upload
/// ends; it is read again on every attempt and after a restart.
#[derive(Debug, Clone)]
pub struct Media {
    pub path: PathBuf,
    /// The object's name under each target, e.g. `recordings/<id>.mp4`:
    /// ASCII letters, digits, `._-` and `/` between non-empty segments
    /// (no `.` or `..` segment), at most `MAX_KEY_BYTES`.
    pub key: String,
    /// Lowercase hex SHA-256 of the whole file, as its writer computed it.
    pub sha256: String,
    pub bytes: u64,
    pub content_type: &'static str,
}

/// An upload's number: Marketplace's `{uploadRequestId}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UploadId(pub i64);

impl std::fmt::Display for UploadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UploadState {
    Pending,
    Uploading,
    Completed,
    Failed,
}

impl UploadState {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }

    /// The word the store keeps.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Uploading => "uploading",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "uploading" => Self::Uploading,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            _ => Self::Pending,
        }
    }

    /// The upload's state from its targets': any failed → failed, all
    /// completed → completed, none started → pending.
    fn overall(targets: impl IntoIterator<Item = Self>) -> Self {
        let (mut all_done, mut any_started, mut any) = (true, false, false);
        for state in targets {
            any = true;
            match state {
                Self::Failed => return Self::Failed,
                Self::Completed => any_started = true,
                Self::Uploading => (any_started, all_done) = (true, false),
                Self::Pending => all_done = false,
            }
        }
        match (any && all_done, any_started) {
            (true, _) => Self::Completed,
            (false, true) => Self::Uploading,
            (false, false) => Self::Pending,
        }
    }
}

impl std::fmt::Display for UploadState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetKind {
    Dir,
    S3,
}

impl TargetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dir => "dir",
            Self::S3 => "s3",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "s3" => Self::S3,
            _ => Self::Dir,
        }
    }
}

/// Who may see an upload: the principal that caused it (through its
/// dialect), and its tenant. Admins see every upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub dialect: String,
    pub principal: String,
    pub project: Option<String>,
}

impl Owner {
    pub fn of(who: &Principal) -> Self {
        Self {
            dialect: who.dialect.to_owned(),
            principal: who.id.clone(),
            project: who.project.clone(),
        }
    }

    /// Whether `who` may see what this owner uploaded: an admin, the same
    /// principal of the same dialect, or a caller bound to the same tenant.
    pub fn may_see(&self, who: &Principal) -> bool {
        who.is_admin()
            || (who.dialect == self.dialect && who.id == self.principal)
            || (who.project.is_some() && who.project == self.project)
    }
}

/// One target's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetStatus {
    /// The target's configured name.
    pub target: String,
    pub kind: TargetKind,
    pub state: UploadState,
    pub uploaded_chunks: u64,
    pub total_chunks: u64,
    pub bytes_done: u64,
    /// Attempts that failed and were retried (or gave up).
    pub attempts: u32,
    /// Where the object is: `s3://bucket/key` or, for a directory, the
    /// object's name under it; never a host path. Set from the start.
    pub uri: Option<String>,
    pub bucket: Option<String>,
    /// The object's folder: under the bucket (prefix included) or the
    /// directory target.
    pub directory: Option<String>,
    /// Why it failed, or the last error a retry is recovering from; names
    /// no host path, endpoint or secret.
    pub error: Option<String>,
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadStatus {
    pub id: UploadId,
    /// The object's name (`Media::key`).
    pub file_name: String,
    pub bytes: u64,
    pub sha256: String,
    pub owner: Owner,
    pub state: UploadState,
    pub targets: Vec<TargetStatus>,
    pub created: OffsetDateTime,
}

impl UploadStatus {
    /// All targets' chunks, and those acknowledged.
    pub fn chunks(&self) -> (u64, u64) {
        self.targets.iter().fold((0, 0), |(done, total), t| {
            (done + t.uploaded_chunks, total + t.total_chunks)
        })
    }

    fn from_row(row: UploadRow) -> Self {
        let total = chunk_count(row.bytes, row.chunk_bytes);
        let targets: Vec<TargetStatus> = row
            .targets
            .into_iter()
            .map(|t| TargetStatus {
                kind: TargetKind::parse(&t.kind),
                state: UploadState::parse(&t.state),
                uploaded_chunks: t.chunks,
                total_chunks: total,
                bytes_done: t.chunk_bytes_done,
                attempts: t.attempts,
                uri: t.uri,
                bucket: t.bucket,
                directory: t.directory,
                error: t.error,
                updated_at: t.updated,
                target: t.target,
            })
            .collect();
        Self {
            id: UploadId(row.id),
            file_name: row.object_key,
            bytes: row.bytes,
            sha256: row.sha256,
            owner: Owner {
                dialect: row.owner_dialect,
                principal: row.owner_principal,
                project: row.owner_project,
            },
            state: UploadState::overall(targets.iter().map(|t| t.state)),
            targets,
            created: row.created,
        }
    }
}

/// Chunks of `chunk` bytes in a file of `bytes`; an empty file is one
/// (empty) chunk, since S3 has no multipart upload of no parts.
pub(crate) fn chunk_count(bytes: u64, chunk: u64) -> u64 {
    bytes.div_ceil(chunk.max(1)).max(1)
}

/// The handle on uploads; cheap to clone.
#[derive(Clone)]
pub struct Uploads {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    settings: Arc<UploadSettings>,
    /// New uploads for the owner task.
    queue: mpsc::UnboundedSender<UploadId>,
    /// Watchers of unfinished uploads; the owner task publishes each state
    /// after writing it to the store.
    watchers: Watchers,
}

/// Per upload, the sender its watchers subscribe to.
#[derive(Clone, Default)]
pub(crate) struct Watchers(Arc<Mutex<HashMap<UploadId, watch::Sender<UploadState>>>>);

impl Watchers {
    fn subscribe(&self, id: UploadId) -> watch::Receiver<UploadState> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(id)
            .or_insert_with(|| watch::channel(UploadState::Pending).0)
            .subscribe()
    }

    /// Tells `id`'s watchers its state; a terminal one is the last.
    pub(crate) fn publish(&self, id: UploadId, state: UploadState) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sender) = map.get(&id) {
            sender.send_replace(state);
        }
        if state.is_terminal() {
            map.remove(&id);
        }
    }
}

impl Uploads {
    /// Checks the settings, starts the owner task and queues again every
    /// upload an earlier run left unfinished.
    pub async fn start(store: Store, settings: UploadSettings) -> Result<Uploads, Error> {
        let settings = Arc::new(settings.checked()?);
        let (queue, queued) = mpsc::unbounded_channel();
        let watchers = Watchers::default();
        let uploads = Uploads {
            inner: Arc::new(Inner {
                store: store.clone(),
                settings: settings.clone(),
                queue,
                watchers: watchers.clone(),
            }),
        };
        let left = store.unfinished_uploads().await.map_err(Error::from)?;
        if !left.is_empty() {
            tracing::info!(uploads = left.len(), "resuming unfinished uploads");
        }
        let owner = worker::Owner::new(store, settings, watchers)?;
        tokio::spawn(owner.run(left.into_iter().map(UploadId).collect(), queued));
        Ok(uploads)
    }

    /// The configured targets' names, in order.
    pub fn targets(&self) -> Vec<String> {
        let targets = &self.inner.settings.targets;
        targets.iter().map(|t| t.name().to_owned()).collect()
    }

    /// Records the upload of `media` to every target, durably, and queues
    /// it; returns at once with its id.
    pub async fn submit(&self, media: Media, owner: Owner) -> Result<UploadId, Error> {
        check_media(&media)?;
        // The size now, cheaply; the digest is checked when the upload runs.
        let size = tokio::fs::metadata(&media.path).await.map(|m| m.len());
        if size.as_ref().ok() != Some(&media.bytes) {
            return Err(Error::Failed {
                reason: "the media file is missing or not of the size given".into(),
                detail: format!("{}: {size:?}", media.path.display()),
            });
        }
        let settings = &self.inner.settings;
        let s3 = settings.targets.iter().any(|t| t.kind() == TargetKind::S3);
        if s3 && chunk_count(media.bytes, settings.chunk_bytes) > settings::MAX_PARTS {
            return Err(Error::Failed {
                reason: "the media is too large for its chunk size (over 10,000 parts)".into(),
                detail: format!("{} bytes", media.bytes),
            });
        }
        let new = NewUpload {
            media_path: media.path,
            object_key: media.key.clone(),
            sha256: media.sha256,
            bytes: media.bytes,
            content_type: media.content_type.to_owned(),
            chunk_bytes: settings.chunk_bytes,
            owner_dialect: owner.dialect,
            owner_principal: owner.principal,
            owner_project: owner.project,
            created: crate::store::now(),
            targets: settings
                .targets
                .iter()
                .map(|t| {
                    let place = t.place(&media.key);
                    NewUploadTarget {
                        target: t.name().to_owned(),
                        kind: t.kind().as_str().to_owned(),
                        uri: Some(place.uri),
                        bucket: place.bucket,
                        directory: place.directory,
                    }
                })
                .collect(),
        };
        let id = UploadId(
            self.inner
                .store
                .create_upload(new)
                .await
                .map_err(Error::from)?,
        );
        tracing::info!(upload = id.0, key = %media.key, bytes = media.bytes, "upload queued");
        // The owner task lives as long as any handle: a send cannot fail
        // but while the runtime shuts down, and then recovery queues it.
        let _ = self.inner.queue.send(id);
        Ok(id)
    }

    /// The newest upload of the object `key` with this digest, if any: how
    /// a caller that kept no id finds its upload again after a restart.
    pub async fn find(&self, key: &str, sha256: &str) -> Result<Option<UploadId>, Error> {
        let found = self.inner.store.find_upload(key, sha256).await;
        Ok(found.map_err(Error::from)?.map(UploadId))
    }

    /// The upload's status as the store has it.
    pub async fn status(&self, id: UploadId) -> Result<UploadStatus, Error> {
        let row = self
            .inner
            .store
            .get_upload(id.0)
            .await
            .map_err(Error::from)?
            .ok_or(Error::NoSuchUpload { id: id.0 })?;
        Ok(UploadStatus::from_row(row))
    }

    /// The status if `who` may see the upload; another's is not found, in
    /// the same words as one that does not exist.
    pub async fn status_for(&self, who: &Principal, id: UploadId) -> Result<UploadStatus, Error> {
        let status = self.status(id).await?;
        if !status.owner.may_see(who) {
            return Err(Error::NoSuchUpload { id: id.0 });
        }
        Ok(status)
    }

    /// The upload's overall state, now and as it changes; its last value is
    /// terminal once the upload ended (`wait_for(|s| s.is_terminal())`).
    pub async fn watch(&self, id: UploadId) -> Result<watch::Receiver<UploadState>, Error> {
        let rx = self.inner.watchers.subscribe(id);
        // After subscribing: a state the owner wrote before it is read here,
        // one written after is published to the receiver.
        let now = self.status(id).await?;
        self.inner.watchers.publish(id, now.state);
        Ok(rx)
    }

    /// Waits until the upload ended and returns its final status.
    pub async fn finished(&self, id: UploadId) -> Result<UploadStatus, Error> {
        let mut rx = self.watch(id).await?;
        let _ = rx.wait_for(|s| s.is_terminal()).await;
        self.status(id).await
    }
}

/// Refuses media no target could hold safely: a key that could climb out
/// of a directory, or a file whose size is not what the caller said.
fn check_media(media: &Media) -> Result<(), Error> {
    let bad = |why: &str| Error::Failed {
        reason: format!("the media cannot be uploaded: {why}"),
        detail: format!("key {:?}", media.key),
    };
    if media.key.is_empty() || media.key.len() > MAX_KEY_BYTES {
        return Err(bad("its name is empty or too long"));
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if media
        .key
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == ".." || !s.chars().all(ok_char))
    {
        return Err(bad("its name is not a plain relative object name"));
    }
    if media.sha256.len() != 64 || !media.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad("its digest is not a SHA-256"));
    }
    Ok(())
}

impl Screenshots {
    /// Uploads, if configured.
    pub fn uploads(&self) -> Option<Uploads> {
        self.uploads.clone()
    }

    /// The service with uploads on (see `Uploads::start`).
    /// Finished recordings are uploaded too, from now on.
    pub fn with_uploads(mut self, uploads: Uploads) -> Self {
        if let Some(recordings) = &self.recordings {
            recordings.attach_uploads(uploads.clone());
        }
        self.uploads = Some(uploads);
        self
    }
}

#[cfg(test)]
mod tests;
