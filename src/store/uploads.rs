//! Uploads to storage targets (`service::uploads`): the upload, one row a
//! target with its state and multipart upload id, and one row a chunk the
//! target acknowledged. The service owns the states and their moves; here
//! they are words, and each write is one transaction.

use std::path::PathBuf;

use rusqlite::{params, OptionalExtension};
use time::OffsetDateTime;

use super::worker::{Db, Store};
use super::{from_micros, now, to_micros, StoreError};

/// An upload to create, with its targets (all `pending`).
#[derive(Debug, Clone)]
pub(crate) struct NewUpload {
    pub media_path: PathBuf,
    pub object_key: String,
    pub sha256: String,
    pub bytes: u64,
    pub content_type: String,
    pub chunk_bytes: u64,
    pub owner_dialect: String,
    pub owner_principal: String,
    pub owner_project: Option<String>,
    pub created: OffsetDateTime,
    pub targets: Vec<NewUploadTarget>,
}

#[derive(Debug, Clone)]
pub(crate) struct NewUploadTarget {
    pub target: String,
    pub kind: String,
    pub uri: Option<String>,
    pub bucket: Option<String>,
    pub directory: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct UploadRow {
    pub id: i64,
    pub media_path: PathBuf,
    pub object_key: String,
    pub sha256: String,
    pub bytes: u64,
    pub content_type: String,
    pub chunk_bytes: u64,
    pub owner_dialect: String,
    pub owner_principal: String,
    pub owner_project: Option<String>,
    pub created: OffsetDateTime,
    pub targets: Vec<TargetRow>,
}

#[derive(Debug, Clone)]
pub(crate) struct TargetRow {
    pub target: String,
    pub kind: String,
    pub state: String,
    pub multipart_id: Option<String>,
    pub attempts: u32,
    pub error: Option<String>,
    pub uri: Option<String>,
    pub bucket: Option<String>,
    pub directory: Option<String>,
    pub updated: OffsetDateTime,
    /// Chunks acknowledged, and their bytes.
    pub chunks: u64,
    pub chunk_bytes_done: u64,
}

/// A chunk the target acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChunkRow {
    pub part: u64,
    pub content_id: String,
    pub sha256: String,
    pub bytes: u64,
}

/// A target's new state; `None` fields are left as they are.
#[derive(Debug, Clone, Default)]
pub(crate) struct TargetUpdate {
    pub state: Option<&'static str>,
    pub attempts: Option<u32>,
    /// `Some(None)` clears the error.
    pub error: Option<Option<String>>,
}

fn not_found(id: i64, target: &str) -> StoreError {
    StoreError::NotFound {
        kind: "upload target",
        key: format!("{id}/{target}"),
    }
}

impl Db {
    fn upload(&self, id: i64) -> Result<Option<UploadRow>, StoreError> {
        let row = self
            .conn
            .prepare_cached(
                "SELECT id, media_path, object_key, sha256, bytes, content_type, chunk_bytes, \
                 owner_dialect, owner_principal, owner_project, created FROM uploads WHERE id = ?1",
            )?
            .query_row([id], |r| {
                Ok(UploadRow {
                    id: r.get(0)?,
                    media_path: PathBuf::from(r.get::<_, String>(1)?),
                    object_key: r.get(2)?,
                    sha256: r.get(3)?,
                    bytes: r.get::<_, i64>(4)? as u64,
                    content_type: r.get(5)?,
                    chunk_bytes: r.get::<_, i64>(6)? as u64,
                    owner_dialect: r.get(7)?,
                    owner_principal: r.get(8)?,
                    owner_project: r.get(9)?,
                    created: from_micros(r.get(10)?),
                    targets: Vec::new(),
                })
            })
            .optional()?;
        let Some(mut row) = row else {
            return Ok(None);
        };
        let mut stmt = self.conn.prepare_cached(
            "SELECT t.target, t.kind, t.state, t.multipart_id, t.attempts, t.error, t.uri, \
             t.bucket, t.directory, t.updated, \
             (SELECT count(*) FROM upload_chunks c WHERE c.upload_id = t.upload_id AND c.target = t.target), \
             (SELECT coalesce(sum(bytes), 0) FROM upload_chunks c WHERE c.upload_id = t.upload_id AND c.target = t.target) \
             FROM upload_targets t WHERE t.upload_id = ?1 ORDER BY t.rowid",
        )?;
        row.targets = stmt
            .query_map([id], |r| {
                Ok(TargetRow {
                    target: r.get(0)?,
                    kind: r.get(1)?,
                    state: r.get(2)?,
                    multipart_id: r.get(3)?,
                    attempts: r.get(4)?,
                    error: r.get(5)?,
                    uri: r.get(6)?,
                    bucket: r.get(7)?,
                    directory: r.get(8)?,
                    updated: from_micros(r.get(9)?),
                    chunks: r.get::<_, i64>(10)? as u64,
                    chunk_bytes_done: r.get::<_, i64>(11)? as u64,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(Some(row))
    }
}

impl Store {
    /// Creates the upload and its targets, `pending`, in one transaction;
    /// returns its id.
    pub(crate) async fn create_upload(&self, new: NewUpload) -> Result<i64, StoreError> {
        self.call(move |db| {
            let tx = db.conn.transaction()?;
            tx.prepare_cached(
                "INSERT INTO uploads (media_path, object_key, sha256, bytes, content_type, \
                 chunk_bytes, owner_dialect, owner_principal, owner_project, created) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                new.media_path.to_string_lossy(),
                new.object_key,
                new.sha256,
                new.bytes as i64,
                new.content_type,
                new.chunk_bytes as i64,
                new.owner_dialect,
                new.owner_principal,
                new.owner_project,
                to_micros(new.created),
            ])?;
            let id = tx.last_insert_rowid();
            for t in &new.targets {
                tx.prepare_cached(
                    "INSERT INTO upload_targets (upload_id, target, kind, state, uri, bucket, \
                     directory, updated) VALUES (?1, ?2, ?3, 'pending', ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    id,
                    t.target,
                    t.kind,
                    t.uri,
                    t.bucket,
                    t.directory,
                    to_micros(new.created)
                ])?;
            }
            tx.commit()?;
            Ok(id)
        })
        .await
    }

    pub(crate) async fn get_upload(&self, id: i64) -> Result<Option<UploadRow>, StoreError> {
        self.call(move |db| db.upload(id)).await
    }

    /// The newest upload of the object `key` with digest `sha256`, if any.
    pub(crate) async fn find_upload(
        &self,
        key: &str,
        sha256: &str,
    ) -> Result<Option<i64>, StoreError> {
        let (key, sha256) = (key.to_owned(), sha256.to_owned());
        self.call(move |db| {
            Ok(db
                .conn
                .prepare_cached(
                    "SELECT max(id) FROM uploads WHERE object_key = ?1 AND sha256 = ?2",
                )?
                .query_row(params![key, sha256], |r| r.get(0))?)
        })
        .await
    }

    /// Uploads with a target still pending or uploading, oldest first.
    pub(crate) async fn unfinished_uploads(&self) -> Result<Vec<i64>, StoreError> {
        self.call(|db| {
            let mut stmt = db.conn.prepare_cached(
                "SELECT DISTINCT upload_id FROM upload_targets \
                 WHERE state IN ('pending', 'uploading') ORDER BY upload_id",
            )?;
            let ids = stmt
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            Ok(ids)
        })
        .await
    }

    /// The chunks of one target the target acknowledged, by part.
    pub(crate) async fn upload_chunks(
        &self,
        id: i64,
        target: &str,
    ) -> Result<Vec<ChunkRow>, StoreError> {
        let target = target.to_owned();
        self.call(move |db| {
            let mut stmt = db.conn.prepare_cached(
                "SELECT part, content_id, sha256, bytes FROM upload_chunks \
                 WHERE upload_id = ?1 AND target = ?2 ORDER BY part",
            )?;
            let rows = stmt
                .query_map(params![id, target], |r| {
                    Ok(ChunkRow {
                        part: r.get::<_, i64>(0)? as u64,
                        content_id: r.get(1)?,
                        sha256: r.get(2)?,
                        bytes: r.get::<_, i64>(3)? as u64,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// Changes a target's state, attempts or error.
    pub(crate) async fn update_upload_target(
        &self,
        id: i64,
        target: &str,
        update: TargetUpdate,
    ) -> Result<(), StoreError> {
        let target = target.to_owned();
        self.call(move |db| {
            let (set_error, error) = match update.error {
                Some(e) => (true, e),
                None => (false, None),
            };
            let changed = db
                .conn
                .prepare_cached(
                    "UPDATE upload_targets SET state = coalesce(?3, state), \
                     attempts = coalesce(?4, attempts), \
                     error = CASE WHEN ?5 THEN ?6 ELSE error END, updated = ?7 \
                     WHERE upload_id = ?1 AND target = ?2",
                )?
                .execute(params![
                    id,
                    target,
                    update.state,
                    update.attempts,
                    set_error,
                    error,
                    to_micros(now())
                ])?;
            if changed == 0 {
                return Err(not_found(id, &target));
            }
            Ok(())
        })
        .await
    }

    /// Starts a target over with a new multipart upload (`None`: none yet):
    /// its chunks go, in the same transaction.
    pub(crate) async fn restart_upload_target(
        &self,
        id: i64,
        target: &str,
        multipart_id: Option<String>,
    ) -> Result<(), StoreError> {
        let target = target.to_owned();
        self.call(move |db| {
            let tx = db.conn.transaction()?;
            tx.prepare_cached("DELETE FROM upload_chunks WHERE upload_id = ?1 AND target = ?2")?
                .execute(params![id, target])?;
            let changed = tx
                .prepare_cached(
                    "UPDATE upload_targets SET multipart_id = ?3, updated = ?4 \
                     WHERE upload_id = ?1 AND target = ?2",
                )?
                .execute(params![id, target, multipart_id, to_micros(now())])?;
            if changed == 0 {
                return Err(not_found(id, &target));
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Records a chunk the target acknowledged (again, if it was sent again).
    pub(crate) async fn record_upload_chunk(
        &self,
        id: i64,
        target: &str,
        chunk: ChunkRow,
    ) -> Result<(), StoreError> {
        let target = target.to_owned();
        self.call(move |db| {
            db.conn
                .prepare_cached(
                    "INSERT INTO upload_chunks (upload_id, target, part, content_id, sha256, bytes) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                     ON CONFLICT (upload_id, target, part) DO UPDATE SET \
                     content_id = excluded.content_id, sha256 = excluded.sha256, bytes = excluded.bytes",
                )?
                .execute(params![
                    id,
                    target,
                    chunk.part as i64,
                    chunk.content_id,
                    chunk.sha256,
                    chunk.bytes as i64
                ])?;
            Ok(())
        })
        .await
    }
}
