//! Retention: finished jobs and actions older than `max_age`, then the
//! oldest finished jobs until their media fit `max_media_bytes` and the
//! oldest actions beyond `max_actions`; expired nonces and throttle slots;
//! finished uploads older than `max_age`. Rows go first, in one transaction, then their
//! files; unfinished jobs are never removed (a restart must find them).

use std::collections::HashSet;
use std::path::PathBuf;

use rusqlite::params;
use time::OffsetDateTime;

use super::worker::Store;
use super::{media, now, to_micros, StoreError};

/// What one `retain` pass removed and kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Retained {
    pub jobs_removed: u64,
    pub actions_removed: u64,
    pub nonces_removed: u64,
    pub slots_removed: u64,
    pub media_bytes_freed: u64,
    /// Media bytes still kept: at most the budget, unless unfinished jobs
    /// alone hold more.
    pub media_bytes_kept: u64,
    /// Files no record named (a crash between file and row), removed.
    pub orphans_removed: u64,
    /// Uploads older than `max_age` with every target finished (their
    /// targets and chunks go with them).
    pub uploads_removed: u64,
}

impl Store {
    /// One retention pass now; a periodic task calls this.
    pub(crate) async fn retain(&self) -> Result<Retained, StoreError> {
        self.retain_at(now()).await
    }

    /// One retention pass as if it were `now`.
    pub(crate) async fn retain_at(&self, now: OffsetDateTime) -> Result<Retained, StoreError> {
        self.call(move |db| {
            let cutoff = to_micros(now - db.settings.max_age);
            let budget = db.settings.max_media_bytes;
            let dir = db.settings.media_dir.clone();
            let mut out = Retained::default();
            let mut files: Vec<PathBuf> = Vec::new();

            let tx = db.conn.transaction()?;
            // Finished jobs, oldest first, with their media.
            let finished: Vec<(i64, i64, Option<String>, u64)> = {
                let mut stmt = tx.prepare_cached(
                    "SELECT id, creation_time, media_path, coalesce(media_bytes, 0) FROM jobs \
                     WHERE state IN ('complete', 'error') ORDER BY creation_time, id",
                )?;
                let rows = stmt.query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get::<_, i64>(3)?.max(0) as u64,
                    ))
                })?;
                rows.collect::<Result<_, _>>()?
            };
            let mut total: u64 =
                tx.query_row("SELECT coalesce(sum(media_bytes), 0) FROM jobs", [], |r| {
                    r.get::<_, i64>(0).map(|b| b.max(0) as u64)
                })?;
            {
                let mut delete = tx.prepare_cached("DELETE FROM jobs WHERE id = ?1")?;
                for (id, created, file, bytes) in finished {
                    let too_old = created < cutoff;
                    // Oldest first: once a job is young enough and the
                    // budget holds, so does every later one.
                    if !too_old && total <= budget {
                        break;
                    }
                    delete.execute([id])?;
                    out.jobs_removed += 1;
                    if let Some(file) = file {
                        total -= bytes.min(total);
                        out.media_bytes_freed += bytes;
                        files.push(dir.join(file));
                    }
                }
            }
            out.media_bytes_kept = total;
            out.actions_removed = tx
                .prepare_cached("DELETE FROM actions WHERE updated_at < ?1")?
                .execute([cutoff])? as u64;
            // Beyond the cap, oldest first (in Nova's listing order); the
            // events go with them (ON DELETE CASCADE).
            out.actions_removed += tx
                .prepare_cached(
                    "DELETE FROM actions WHERE id IN (SELECT id FROM actions \
                     ORDER BY start_time DESC, id DESC LIMIT -1 OFFSET ?1)",
                )?
                .execute([db.settings.max_actions.min(i64::MAX as u64) as i64])?
                as u64;
            out.uploads_removed = tx
                .prepare_cached(
                    "DELETE FROM uploads WHERE created < ?1 AND NOT EXISTS (SELECT 1 FROM \
                     upload_targets t WHERE t.upload_id = uploads.id \
                     AND t.state IN ('pending', 'uploading'))",
                )?
                .execute([cutoff])? as u64;
            let now_us = to_micros(now);
            out.nonces_removed = tx
                .prepare_cached("DELETE FROM nonces WHERE expires_at <= ?1")?
                .execute([now_us])? as u64;
            out.slots_removed = tx
                .prepare_cached("DELETE FROM throttle_slots WHERE next_allowed <= ?1")?
                .execute(params![now_us])? as u64;
            let referenced: HashSet<String> = {
                let mut stmt =
                    tx.prepare_cached("SELECT media_path FROM jobs WHERE media_path IS NOT NULL")?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            tx.commit()?;

            for file in &files {
                media::remove(file);
            }
            out.orphans_removed = media::sweep(&dir, &referenced) as u64;
            Ok(out)
        })
        .await
    }
}
