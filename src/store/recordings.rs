//! Screen recordings' rows. The store keeps kinds and statuses as the words
//! the service gives (the schema checks them); which moves are allowed is
//! the service's state machine (`service::recordings::machine`), applied by
//! `update_recording` in the same transaction as the write.

use rusqlite::{params, OptionalExtension, Row};
use time::OffsetDateTime;

use super::worker::{Db, Store};
use super::{from_micros, now, to_micros, StoreError};

/// A recording as its row holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordingRow {
    pub id: String,
    pub domain_uuid: String,
    pub domain_name: String,
    pub instance_id: Option<String>,
    pub domain_project: Option<String>,
    pub domain_user: Option<String>,
    pub kind: String,
    pub status: String,
    pub reason: Option<String>,
    pub dialect: String,
    pub principal: String,
    pub project: Option<String>,
    pub request_id: String,
    pub params: String,
    pub start_time: OffsetDateTime,
    pub end_time: Option<OffsetDateTime>,
    pub updated_at: OffsetDateTime,
    pub duration_ms: u64,
    pub frames: u64,
    pub video: Option<FileColumns>,
    pub events: Option<FileColumns>,
    pub upload_id: Option<String>,
}

/// One file of a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileColumns {
    pub name: String,
    pub bytes: u64,
    pub sha256: Option<String>,
}

/// Which recordings to list; every filter optional.
#[derive(Debug, Clone, Default)]
pub(crate) struct RecordingQuery {
    pub domain_uuid: Option<String>,
    pub domain_names: Vec<String>,
    /// The domain's user or the principal that started it.
    pub username: Option<String>,
    pub status: Option<String>,
    pub kind: Option<String>,
    /// Only recordings of domains owned by this project (a tenant's view).
    pub domain_project: Option<String>,
    /// Only these domains (a principal's allow list, as UUIDs).
    pub domain_uuids: Option<Vec<String>>,
    pub from: Option<OffsetDateTime>,
    pub to: Option<OffsetDateTime>,
    pub ascending: bool,
    pub offset: u64,
    pub limit: u64,
}

const COLUMNS: &str = "id, domain_uuid, domain_name, instance_id, domain_project, domain_user, \
     kind, status, reason, dialect, principal, project, request_id, params, start_time, end_time, \
     updated_at, duration_ms, frames, video_name, video_bytes, video_sha256, events_name, \
     events_bytes, events_sha256, upload_id";

fn file(r: &Row<'_>, at: usize) -> rusqlite::Result<Option<FileColumns>> {
    let name: Option<String> = r.get(at)?;
    Ok(match name {
        Some(name) => Some(FileColumns {
            name,
            bytes: r.get::<_, Option<i64>>(at + 1)?.unwrap_or(0).max(0) as u64,
            sha256: r.get(at + 2)?,
        }),
        None => None,
    })
}

fn read(r: &Row<'_>) -> rusqlite::Result<RecordingRow> {
    Ok(RecordingRow {
        id: r.get(0)?,
        domain_uuid: r.get(1)?,
        domain_name: r.get(2)?,
        instance_id: r.get(3)?,
        domain_project: r.get(4)?,
        domain_user: r.get(5)?,
        kind: r.get(6)?,
        status: r.get(7)?,
        reason: r.get(8)?,
        dialect: r.get(9)?,
        principal: r.get(10)?,
        project: r.get(11)?,
        request_id: r.get(12)?,
        params: r.get(13)?,
        start_time: from_micros(r.get(14)?),
        end_time: r.get::<_, Option<i64>>(15)?.map(from_micros),
        updated_at: from_micros(r.get(16)?),
        duration_ms: r.get::<_, i64>(17)?.max(0) as u64,
        frames: r.get::<_, i64>(18)?.max(0) as u64,
        video: file(r, 19)?,
        events: file(r, 22)?,
        upload_id: r.get(25)?,
    })
}

impl Db {
    fn recording(&self, id: &str) -> Result<Option<RecordingRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM recordings WHERE id = ?1");
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_row([id], read)
            .optional()?)
    }
}

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Store {
    /// Inserts a new recording as given (committed before this returns).
    pub(crate) async fn create_recording(
        &self,
        row: RecordingRow,
    ) -> Result<RecordingRow, StoreError> {
        self.call(move |db| {
            let f = |f: &Option<FileColumns>| f.as_ref().map(|f| f.name.clone());
            db.conn
                .prepare_cached(
                    "INSERT INTO recordings (id, domain_uuid, domain_name, instance_id, \
                     domain_project, domain_user, kind, status, reason, dialect, principal, \
                     project, request_id, params, start_time, end_time, updated_at, video_name, \
                     events_name) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, \
                     ?13, ?14, ?15, ?16, ?15, ?17, ?18)",
                )?
                .execute(params![
                    row.id,
                    row.domain_uuid,
                    row.domain_name,
                    row.instance_id,
                    row.domain_project,
                    row.domain_user,
                    row.kind,
                    row.status,
                    row.reason,
                    row.dialect,
                    row.principal,
                    row.project,
                    row.request_id,
                    row.params,
                    to_micros(row.start_time),
                    row.end_time.map(to_micros),
                    f(&row.video),
                    f(&row.events),
                ])?;
            db.recording(&row.id)?.ok_or(StoreError::NotFound {
                kind: "recording",
                key: row.id,
            })
        })
        .await
    }

    pub(crate) async fn get_recording(&self, id: &str) -> Result<Option<RecordingRow>, StoreError> {
        let id = id.to_owned();
        self.call(move |db| db.recording(&id)).await
    }

    /// Reads, decides and writes a recording in one transaction: `rule`
    /// (pure; it runs on the store thread) changes the row or refuses with a
    /// reason. Every column but the id, domain and creator may change.
    pub(crate) async fn update_recording<F>(
        &self,
        id: &str,
        rule: F,
    ) -> Result<RecordingRow, StoreError>
    where
        F: FnOnce(&mut RecordingRow) -> Result<(), String> + Send + 'static,
    {
        let id = id.to_owned();
        self.call(move |db| {
            let tx = db.conn.transaction()?;
            let sql = format!("SELECT {COLUMNS} FROM recordings WHERE id = ?1");
            let mut row = tx
                .prepare_cached(&sql)?
                .query_row([&id], read)
                .optional()?
                .ok_or_else(|| StoreError::NotFound {
                    kind: "recording",
                    key: id.clone(),
                })?;
            rule(&mut row).map_err(StoreError::Refused)?;
            row.updated_at = now();
            let (v, e) = (row.video.clone(), row.events.clone());
            tx.prepare_cached(
                "UPDATE recordings SET kind = ?2, status = ?3, reason = ?4, params = ?5, \
                 end_time = ?6, updated_at = ?7, duration_ms = ?8, frames = ?9, video_name = ?10, \
                 video_bytes = ?11, video_sha256 = ?12, events_name = ?13, events_bytes = ?14, \
                 events_sha256 = ?15, upload_id = ?16, start_time = ?17 WHERE id = ?1",
            )?
            .execute(params![
                id,
                row.kind,
                row.status,
                row.reason,
                row.params,
                row.end_time.map(to_micros),
                to_micros(row.updated_at),
                as_i64(row.duration_ms),
                as_i64(row.frames),
                v.as_ref().map(|f| f.name.clone()),
                v.as_ref().map(|f| as_i64(f.bytes)),
                v.as_ref().and_then(|f| f.sha256.clone()),
                e.as_ref().map(|f| f.name.clone()),
                e.as_ref().map(|f| as_i64(f.bytes)),
                e.as_ref().and_then(|f| f.sha256.clone()),
                row.upload_id,
                to_micros(row.start_time),
            ])?;
            tx.commit()?;
            Ok(row)
        })
        .await
    }

    /// A page of recordings matching `query`, by start time, and how many
    /// match in all.
    pub(crate) async fn list_recordings(
        &self,
        query: RecordingQuery,
    ) -> Result<(Vec<RecordingRow>, u64), StoreError> {
        self.call(move |db| {
            let names = (!query.domain_names.is_empty())
                .then(|| serde_json::to_string(&query.domain_names).unwrap_or_default());
            let uuids = query
                .domain_uuids
                .as_ref()
                .map(|u| serde_json::to_string(u).unwrap_or_default());
            // Lists go in as JSON arrays (json_each), so one prepared
            // statement serves any number of names.
            let filter = "(?1 IS NULL OR domain_uuid = ?1) \
                 AND (?2 IS NULL OR domain_name IN (SELECT value FROM json_each(?2))) \
                 AND (?3 IS NULL OR domain_user = ?3 OR principal = ?3) \
                 AND (?4 IS NULL OR status = ?4) AND (?5 IS NULL OR kind = ?5) \
                 AND (?6 IS NULL OR domain_project = ?6) \
                 AND (?7 IS NULL OR domain_uuid IN (SELECT value FROM json_each(?7))) \
                 AND (?8 IS NULL OR start_time >= ?8) AND (?9 IS NULL OR start_time <= ?9)";
            let order = if query.ascending { "ASC" } else { "DESC" };
            let (from, to) = (query.from.map(to_micros), query.to.map(to_micros));
            let (limit, offset) = (as_i64(query.limit), as_i64(query.offset));
            let args: [&dyn rusqlite::ToSql; 11] = [
                &query.domain_uuid,
                &names,
                &query.username,
                &query.status,
                &query.kind,
                &query.domain_project,
                &uuids,
                &from,
                &to,
                &limit,
                &offset,
            ];
            let args = &args[..];
            let total: i64 = db
                .conn
                .prepare_cached(&format!(
                    "SELECT count(*) FROM recordings WHERE {filter} AND ?10 >= 0 AND ?11 >= 0"
                ))?
                .query_row(args, |r| r.get(0))?;
            let sql = format!(
                "SELECT {COLUMNS} FROM recordings WHERE {filter} \
                 ORDER BY start_time {order}, id {order} LIMIT ?10 OFFSET ?11"
            );
            let mut stmt = db.conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(args, read)?;
            Ok((rows.collect::<Result<Vec<_>, _>>()?, total.max(0) as u64))
        })
        .await
    }

    /// Recordings in `status` (at start: those a crash left `RECORDING`).
    pub(crate) async fn recordings_in(
        &self,
        status: &str,
    ) -> Result<Vec<RecordingRow>, StoreError> {
        let status = status.to_owned();
        self.call(move |db| {
            let sql =
                format!("SELECT {COLUMNS} FROM recordings WHERE status = ?1 ORDER BY start_time");
            let mut stmt = db.conn.prepare_cached(&sql)?;
            let rows = stmt.query_map([status], read)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Bytes of the files of every recording no longer being written.
    pub(crate) async fn recording_bytes(&self) -> Result<u64, StoreError> {
        self.call(|db| {
            let n: i64 = db.conn.query_row(
                "SELECT coalesce(sum(coalesce(video_bytes, 0) + coalesce(events_bytes, 0)), 0) \
                 FROM recordings WHERE status != 'RECORDING'",
                [],
                |r| r.get(0),
            )?;
            Ok(n.max(0) as u64)
        })
        .await
    }

    /// Deletes the rows of `ids` in one transaction (their files are the
    /// caller's to remove after: a row never names a missing file for long).
    pub(crate) async fn delete_recordings(&self, ids: Vec<String>) -> Result<(), StoreError> {
        self.call(move |db| {
            let tx = db.conn.transaction()?;
            for id in &ids {
                tx.prepare_cached("DELETE FROM recordings WHERE id = ?1")?
                    .execute([id])?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }
}
