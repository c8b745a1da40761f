//! Retention: finished jobs and actions older than `max_age`, then the
//! oldest finished jobs until their media fit `max_media_bytes` and the
//! oldest actions beyond `max_actions`; expired nonces and throttle slots;
//! finished uploads older than `max_age`. Jobs' rows go first, in one
//! transaction, then their files; unfinished jobs are never removed (a
//! restart must find them).
//!
//! Actions and nonces are the rows a busy host makes by the hundred a second,
//! so an hour's worth goes in transactions of at most `BATCH` rows, each its
//! own store call: captures wait for one batch (milliseconds), never for the
//! whole hour's (seconds, in the load soak), and the WAL stays small.

use std::collections::HashSet;
use std::path::PathBuf;

use rusqlite::params;
use time::OffsetDateTime;

use super::worker::{Db, Store};
use super::{media, now, to_micros, StoreError};

/// Most rows one retention transaction removes (or, for nonces, looks at).
const BATCH: i64 = 2_000;

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
        let now_us = to_micros(now);
        let (mut out, cutoff, max_actions) = self
            .call(move |db| {
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
                out.uploads_removed = tx
                    .prepare_cached(
                        "DELETE FROM uploads WHERE created < ?1 AND NOT EXISTS (SELECT 1 FROM \
                     upload_targets t WHERE t.upload_id = uploads.id \
                     AND t.state IN ('pending', 'uploading'))",
                    )?
                    .execute([cutoff])? as u64;
                out.slots_removed = tx
                    .prepare_cached("DELETE FROM throttle_slots WHERE next_allowed <= ?1")?
                    .execute(params![now_us])? as u64;
                let referenced: HashSet<String> = {
                    let mut stmt = tx.prepare_cached(
                        "SELECT media_path FROM jobs WHERE media_path IS NOT NULL",
                    )?;
                    let rows = stmt.query_map([], |r| r.get(0))?;
                    rows.collect::<Result<_, _>>()?
                };
                tx.commit()?;

                for file in &files {
                    media::remove(file);
                }
                out.orphans_removed = media::sweep(&dir, &referenced) as u64;
                Ok((out, cutoff, db.settings.max_actions))
            })
            .await?;

        // Too old; then beyond the cap, oldest first in Nova's listing order
        // (start time, then id). Their events go with them (ON DELETE CASCADE).
        out.actions_removed = self
            .in_batches(move |db| {
                let removed = db
                    .conn
                    .prepare_cached(
                        "DELETE FROM actions WHERE id IN (SELECT id FROM actions \
                         WHERE updated_at < ?1 ORDER BY updated_at LIMIT ?2)",
                    )?
                    .execute([cutoff, BATCH])?;
                Ok(removed as u64)
            })
            .await?;
        let held: u64 = self
            .call(|db| {
                let n: i64 = db
                    .conn
                    .query_row("SELECT count(*) FROM actions", [], |r| r.get(0))?;
                Ok(n.max(0) as u64)
            })
            .await?;
        let mut excess = held.saturating_sub(max_actions);
        while excess > 0 {
            let n = excess.min(BATCH as u64) as i64;
            let removed = self
                .call(move |db| {
                    let removed = db
                        .conn
                        .prepare_cached(
                            "DELETE FROM actions WHERE id IN (SELECT id FROM actions \
                             ORDER BY start_time, id LIMIT ?1)",
                        )?
                        .execute([n])?;
                    Ok(removed as u64)
                })
                .await?;
            out.actions_removed += removed;
            // Another pass may have taken them first.
            excess = if removed == 0 { 0 } else { excess - removed };
        }

        // Nonces have no index by expiry (each accepted call writes one; an
        // index would cost every call): walk them in key order, `BATCH` keys
        // a call, from where the last call stopped.
        let mut after: Option<(String, String)> = None;
        loop {
            let from = after.take();
            let (removed, last) = self
                .call(move |db| expired_nonces(db, now_us, from))
                .await?;
            out.nonces_removed += removed;
            match last {
                Some(last) => after = Some(last),
                None => break,
            }
        }
        Ok(out)
    }

    /// Runs `batch`, one transaction removing at most `BATCH` rows, until
    /// one removes fewer; other store work runs between them.
    async fn in_batches<F>(&self, batch: F) -> Result<u64, StoreError>
    where
        F: Fn(&mut Db) -> Result<u64, StoreError> + Clone + Send + 'static,
    {
        let mut total = 0;
        loop {
            let removed = self.call(batch.clone()).await?;
            total += removed;
            if removed < BATCH as u64 {
                return Ok(total);
            }
        }
    }
}

/// Removes the expired nonces among the `BATCH` keys after `after`; says how
/// many, and the last key looked at if there may be more.
fn expired_nonces(
    db: &mut Db,
    now_us: i64,
    after: Option<(String, String)>,
) -> Result<(u64, Option<(String, String)>), StoreError> {
    let tx = db.conn.transaction()?;
    let mut keys: Vec<(String, String, bool)> = {
        let mut stmt = match &after {
            None => tx.prepare_cached(
                "SELECT dialect, key, expires_at <= ?1 FROM nonces \
                 ORDER BY dialect, key LIMIT ?2",
            )?,
            Some(_) => tx.prepare_cached(
                "SELECT dialect, key, expires_at <= ?1 FROM nonces \
                 WHERE (dialect, key) > (?3, ?4) ORDER BY dialect, key LIMIT ?2",
            )?,
        };
        let row = |r: &rusqlite::Row<'_>| Ok((r.get(0)?, r.get(1)?, r.get(2)?));
        let rows = match &after {
            None => stmt.query_map(params![now_us, BATCH], row)?,
            Some((dialect, key)) => stmt.query_map(params![now_us, BATCH, dialect, key], row)?,
        };
        rows.collect::<Result<_, _>>()?
    };
    let mut removed = 0;
    {
        let mut delete = tx.prepare_cached("DELETE FROM nonces WHERE dialect = ?1 AND key = ?2")?;
        for (dialect, key, expired) in &keys {
            if *expired {
                removed += delete.execute([dialect, key])? as u64;
            }
        }
    }
    tx.commit()?;
    let last = if keys.len() < BATCH as usize {
        None
    } else {
        keys.pop().map(|(dialect, key, _)| (dialect, key))
    };
    Ok((removed, last))
}
