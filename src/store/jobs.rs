//! Capture jobs: a request a client polls (Oracle's screen capture). The
//! store keeps them and compares-and-sets their state; which moves are
//! allowed is the service's state machine (`service::jobs::machine`).

use std::fmt;
use std::path::{Path, PathBuf};

use rusqlite::{params, OptionalExtension, Row, Transaction};
use time::OffsetDateTime;

use super::worker::{Db, Store};
use super::{from_micros, media, now, to_micros, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum JobState {
    Queued,
    Pending,
    InProgress,
    Uploading,
    Complete,
    Error,
}

impl JobState {
    pub(crate) const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Pending,
        JobState::InProgress,
        JobState::Uploading,
        JobState::Complete,
        JobState::Error,
    ];

    /// As Oracle spells it, and as the database keeps it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Pending => "pending",
            JobState::InProgress => "in-progress",
            JobState::Uploading => "uploading",
            JobState::Complete => "complete",
            JobState::Error => "error",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    pub(crate) fn is_terminal(self) -> bool {
        matches!(self, JobState::Complete | JobState::Error)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum CancellationState {
    NotRequested,
    Requested,
    Completed,
    Failed,
}

impl CancellationState {
    pub(crate) const ALL: [CancellationState; 4] = [
        CancellationState::NotRequested,
        CancellationState::Requested,
        CancellationState::Completed,
        CancellationState::Failed,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CancellationState::NotRequested => "not_requested",
            CancellationState::Requested => "requested",
            CancellationState::Completed => "completed",
            CancellationState::Failed => "failed",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for CancellationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The part of a job the state machine moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JobStatus {
    pub state: JobState,
    pub error_reason: Option<String>,
    pub cancellation: CancellationState,
    pub cancellation_error: Option<String>,
}

impl JobStatus {
    /// A new job: queued, no cancel asked.
    pub(crate) fn queued() -> Self {
        Self {
            state: JobState::Queued,
            error_reason: None,
            cancellation: CancellationState::NotRequested,
            cancellation_error: None,
        }
    }

    /// Oracle's `cancel` flag: set once a cancel was asked for.
    pub(crate) fn cancel(&self) -> bool {
        self.cancellation != CancellationState::NotRequested
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (cancellation {})", self.state, self.cancellation)
    }
}

/// A job to create. It starts `queued`.
#[derive(Debug, Clone)]
pub(crate) struct NewJob {
    /// The job's name, unique (Oracle: `/Compute-acme/user/instance/id`).
    pub name: String,
    pub dialect: String,
    /// The principal that asked (access key or user id).
    pub principal: String,
    pub project: Option<String>,
    /// The instance reference as the client gave it.
    pub instance: String,
    pub domain_uuid: String,
    pub request_id: String,
    pub creation_time: OffsetDateTime,
    /// The storage account the request named, if its dialect has one.
    pub account: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Job {
    pub id: i64,
    pub name: String,
    pub dialect: String,
    pub principal: String,
    pub project: Option<String>,
    pub instance: String,
    pub domain_uuid: String,
    pub status: JobStatus,
    pub creation_time: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// The media file, if one was stored.
    pub media_path: Option<PathBuf>,
    pub media_uri: Option<String>,
    pub media_sha256: Option<String>,
    pub media_bytes: Option<u64>,
    pub request_id: String,
    pub account: Option<String>,
}

/// Which jobs to list: all filters optional, names in ascending order,
/// `after` (the last name of the previous page) excluded.
#[derive(Debug, Clone, Default)]
pub(crate) struct JobFilter {
    pub dialect: Option<String>,
    pub principal: Option<String>,
    pub project: Option<String>,
    pub name_prefix: Option<String>,
    pub after: Option<String>,
    /// The jobs of one domain (the live page's list).
    pub domain_uuid: Option<String>,
    /// At most this many (0 means the cap, 1000).
    pub limit: u32,
}

const MAX_PAGE: u32 = 1000;

const COLUMNS: &str = "id, name, dialect, principal, project, instance, domain_uuid, state, \
     error_reason, cancellation_state, cancellation_error, creation_time, updated_at, \
     media_path, media_uri, media_sha256, media_bytes, request_id, account";

fn read_job(media_dir: &Path, r: &Row<'_>) -> rusqlite::Result<Job> {
    let bad = |i: usize, what: String| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("unknown {what}").into(),
        )
    };
    let state: String = r.get(7)?;
    let cancellation: String = r.get(9)?;
    let media: Option<String> = r.get(13)?;
    Ok(Job {
        id: r.get(0)?,
        name: r.get(1)?,
        dialect: r.get(2)?,
        principal: r.get(3)?,
        project: r.get(4)?,
        instance: r.get(5)?,
        domain_uuid: r.get(6)?,
        status: JobStatus {
            state: JobState::parse(&state).ok_or_else(|| bad(7, format!("state {state}")))?,
            error_reason: r.get(8)?,
            cancellation: CancellationState::parse(&cancellation)
                .ok_or_else(|| bad(9, format!("cancellation {cancellation}")))?,
            cancellation_error: r.get(10)?,
        },
        creation_time: from_micros(r.get(11)?),
        updated_at: from_micros(r.get(12)?),
        media_path: media.map(|m| media_dir.join(m)),
        media_uri: r.get(14)?,
        media_sha256: r.get(15)?,
        media_bytes: r.get::<_, Option<i64>>(16)?.map(|b| b.max(0) as u64),
        request_id: r.get(17)?,
        account: r.get(18)?,
    })
}

impl Db {
    pub(super) fn job(&self, name: &str) -> Result<Option<Job>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM jobs WHERE name = ?1");
        let dir = &self.settings.media_dir;
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_row([name], |r| read_job(dir, r))
            .optional()?)
    }

    fn job_in(tx: &Transaction<'_>, dir: &Path, name: &str) -> Result<Job, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM jobs WHERE name = ?1");
        tx.prepare_cached(&sql)?
            .query_row([name], |r| read_job(dir, r))
            .optional()?
            .ok_or_else(|| StoreError::NotFound {
                kind: "job",
                key: name.to_owned(),
            })
    }

    fn write_status(
        tx: &Transaction<'_>,
        name: &str,
        status: &JobStatus,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        tx.prepare_cached(
            "UPDATE jobs SET state = ?2, error_reason = ?3, cancel = ?4, \
             cancellation_state = ?5, cancellation_error = ?6, updated_at = ?7 WHERE name = ?1",
        )?
        .execute(params![
            name,
            status.state.as_str(),
            status.error_reason,
            status.cancel(),
            status.cancellation.as_str(),
            status.cancellation_error,
            to_micros(at),
        ])?;
        Ok(())
    }

    /// Applies `rule` to the job's status in one transaction.
    fn update_with(
        &mut self,
        name: &str,
        rule: impl FnOnce(&JobStatus) -> Result<JobStatus, StoreError>,
    ) -> Result<Job, StoreError> {
        let dir = self.settings.media_dir.clone();
        let tx = self.conn.transaction()?;
        let job = Self::job_in(&tx, &dir, name)?;
        let next = rule(&job.status)?;
        Self::write_status(&tx, name, &next, now())?;
        let job = Self::job_in(&tx, &dir, name)?;
        tx.commit()?;
        Ok(job)
    }
}

impl Store {
    /// Creates a job, `queued`; `Exists` if the name is taken.
    pub(crate) async fn create_job(&self, new: NewJob) -> Result<Job, StoreError> {
        self.call(move |db| {
            let created = to_micros(new.creation_time);
            let status = JobStatus::queued();
            let inserted = db
                .conn
                .prepare_cached(
                    "INSERT INTO jobs (name, dialect, principal, project, instance, domain_uuid, \
                     state, cancel, cancellation_state, creation_time, updated_at, request_id, account) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8, ?9, ?9, ?10, ?11) \
                     ON CONFLICT (name) DO NOTHING",
                )?
                .execute(params![
                    new.name,
                    new.dialect,
                    new.principal,
                    new.project,
                    new.instance,
                    new.domain_uuid,
                    status.state.as_str(),
                    status.cancellation.as_str(),
                    created,
                    new.request_id,
                    new.account,
                ])?;
            if inserted == 0 {
                return Err(StoreError::Exists {
                    kind: "job",
                    key: new.name,
                });
            }
            db.job(&new.name)?.ok_or(StoreError::NotFound {
                kind: "job",
                key: new.name,
            })
        })
        .await
    }

    pub(crate) async fn get_job(&self, name: &str) -> Result<Option<Job>, StoreError> {
        let name = name.to_owned();
        self.call(move |db| db.job(&name)).await
    }

    /// A page of jobs matching `filter`, by name.
    pub(crate) async fn list_jobs(&self, filter: JobFilter) -> Result<Vec<Job>, StoreError> {
        self.call(move |db| {
            let limit = match filter.limit {
                0 => MAX_PAGE,
                n => n.min(MAX_PAGE),
            };
            // The prefix is matched with substr, not LIKE, so `%` and `_` in
            // names mean themselves.
            let sql = format!(
                "SELECT {COLUMNS} FROM jobs WHERE (?1 IS NULL OR dialect = ?1) \
                 AND (?2 IS NULL OR principal = ?2) AND (?3 IS NULL OR project = ?3) \
                 AND (?4 IS NULL OR substr(name, 1, length(?4)) = ?4) \
                 AND (?5 IS NULL OR name > ?5) AND (?7 IS NULL OR domain_uuid = ?7) \
                 ORDER BY name LIMIT ?6"
            );
            let dir = db.settings.media_dir.clone();
            let mut stmt = db.conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(
                params![
                    filter.dialect,
                    filter.principal,
                    filter.project,
                    filter.name_prefix,
                    filter.after,
                    limit as i64,
                    filter.domain_uuid
                ],
                |r| read_job(&dir, r),
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Moves a job from `expected` to `next` if it is still `expected`
    /// (state and cancellation): of two writers, one wins and the other gets
    /// `Conflict` with what it lost to. Whether the move is allowed is the
    /// caller's (the state machine's) to say.
    pub(crate) async fn transition_job(
        &self,
        name: &str,
        expected: JobStatus,
        next: JobStatus,
    ) -> Result<Job, StoreError> {
        let name = name.to_owned();
        self.call(move |db| {
            let job_name = name.clone();
            db.update_with(&name, move |current| {
                if current.state != expected.state || current.cancellation != expected.cancellation
                {
                    return Err(StoreError::Conflict {
                        name: job_name,
                        expected: expected.to_string(),
                        current: current.to_string(),
                    });
                }
                Ok(next)
            })
        })
        .await
    }

    /// Reads, decides and writes a job's status in one transaction: `rule`
    /// (pure; it runs on the store thread) gets the current status and
    /// returns the next, or refuses with a reason. A cancel request is this,
    /// with the state machine's rule.
    pub(crate) async fn update_job<F>(&self, name: &str, rule: F) -> Result<Job, StoreError>
    where
        F: FnOnce(&JobStatus) -> Result<JobStatus, String> + Send + 'static,
    {
        let name = name.to_owned();
        self.call(move |db| db.update_with(&name, |s| rule(s).map_err(StoreError::Refused)))
            .await
    }

    /// Stores a job's image: the file is durable before the row names it.
    /// The store computes the SHA-256 it records. With `expected`, only if
    /// the job's status is still that (else `Conflict`, and no file is
    /// written): a cancel that came first wins.
    pub(crate) async fn set_job_media(
        &self,
        name: &str,
        bytes: Vec<u8>,
        extension: &'static str,
        media_uri: Option<String>,
        expected: Option<JobStatus>,
    ) -> Result<Job, StoreError> {
        let name = name.to_owned();
        self.call(move |db| {
            let dir = db.settings.media_dir.clone();
            let old = db.job(&name)?.ok_or_else(|| StoreError::NotFound {
                kind: "job",
                key: name.clone(),
            })?;
            if let Some(expected) = expected.filter(|e| *e != old.status) {
                return Err(StoreError::Conflict {
                    name,
                    expected: expected.to_string(),
                    current: old.status.to_string(),
                });
            }
            let file = format!("job-{}.{extension}", old.id);
            let sha256 = media::write_durably(&dir, &file, &bytes)?;
            let tx = db.conn.transaction()?;
            let changed = tx
                .prepare_cached(
                    "UPDATE jobs SET media_path = ?2, media_uri = ?3, media_sha256 = ?4, \
                     media_bytes = ?5, updated_at = ?6 WHERE name = ?1",
                )?
                .execute(params![
                    name,
                    file,
                    media_uri,
                    sha256,
                    bytes.len() as i64,
                    to_micros(now())
                ])?;
            if changed == 0 {
                // Deleted between the read and the write: ours alone now.
                drop(tx);
                media::remove(&dir.join(&file));
                return Err(StoreError::NotFound {
                    kind: "job",
                    key: name,
                });
            }
            let job = Db::job_in(&tx, &dir, &name)?;
            tx.commit()?;
            if let Some(previous) = old.media_path {
                if Some(&previous) != job.media_path.as_ref() {
                    media::remove(&previous);
                }
            }
            Ok(job)
        })
        .await
    }

    /// Sets where a job's media went (an upload's object), once it is there.
    pub(crate) async fn set_job_media_uri(
        &self,
        name: &str,
        uri: String,
    ) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.call(move |db| {
            let changed = db
                .conn
                .prepare_cached("UPDATE jobs SET media_uri = ?2, updated_at = ?3 WHERE name = ?1")?
                .execute(params![name, uri, to_micros(now())])?;
            if changed == 0 {
                return Err(StoreError::NotFound {
                    kind: "job",
                    key: name,
                });
            }
            Ok(())
        })
        .await
    }

    /// Deletes a job and then its media; false if there was none.
    pub(crate) async fn delete_job(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.call(move |db| {
            let Some(job) = db.job(&name)? else {
                return Ok(false);
            };
            db.conn
                .prepare_cached("DELETE FROM jobs WHERE id = ?1")?
                .execute([job.id])?;
            if let Some(path) = job.media_path {
                media::remove(&path);
            }
            Ok(true)
        })
        .await
    }

    /// Jobs not yet `complete` or `error`, oldest first: what a restart
    /// must resume or end.
    pub(crate) async fn unfinished_jobs(&self) -> Result<Vec<Job>, StoreError> {
        self.call(|db| {
            let sql = format!(
                "SELECT {COLUMNS} FROM jobs WHERE state NOT IN ('complete', 'error') \
                 ORDER BY creation_time, id"
            );
            let dir = db.settings.media_dir.clone();
            let mut stmt = db.conn.prepare_cached(&sql)?;
            let rows = stmt.query_map([], |r| read_job(&dir, r))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }
}
