//! Replay nonces and per-guest throttle slots, kept so that a restart does
//! not reopen a replay window or an interval.
//!
//! They are written on every request, so they are committed without the
//! fsync the rest of the store pays (`synchronous=NORMAL` for their
//! transactions): in WAL mode a commit is then in the OS's hands before the
//! call returns, so it survives `kill -9` and any crash of vmshot, and the
//! next fsynced commit makes it durable on disk too. Only a power loss in
//! between can forget one: a slot reopened early, or a nonce seen again
//! while its request is still within its timestamp window.

use std::time::Duration;

use rusqlite::{params, OptionalExtension};
use time::OffsetDateTime;

use super::worker::{Db, Store};
use super::{from_micros, to_micros, StoreError};

/// Runs `f` with commits that skip the fsync (see the module doc), then
/// puts `synchronous=FULL` back whatever `f` did.
fn unsynced<T>(
    db: &mut Db,
    f: impl FnOnce(&mut Db) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    db.conn.pragma_update(None, "synchronous", "NORMAL")?;
    let result = f(db);
    db.conn.pragma_update(None, "synchronous", "FULL")?;
    result
}

/// What taking a throttle slot gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// Taken: the next capture may come at `now + interval`.
    Taken,
    /// Not yet: the rule allows the next capture at `next_allowed`.
    Busy { next_allowed: OffsetDateTime },
}

impl Store {
    /// Records a nonce unless one is there and unexpired; true if it was
    /// fresh (first use, or its earlier use has expired).
    pub(crate) async fn insert_nonce_if_absent(
        &self,
        dialect: &str,
        key: &str,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let (dialect, key) = (dialect.to_owned(), key.to_owned());
        self.call(move |db| {
            unsynced(db, |db| {
                let changed = db
                    .conn
                    .prepare_cached(
                        "INSERT INTO nonces (dialect, key, expires_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (dialect, key) DO UPDATE SET expires_at = excluded.expires_at \
                     WHERE nonces.expires_at <= ?4",
                    )?
                    .execute(params![dialect, key, to_micros(expires_at), to_micros(now)])?;
                Ok(changed == 1)
            })
        })
        .await
    }

    /// Takes the slot of `rule` for a domain if it is free at `now`, in one
    /// transaction, so two callers cannot both take it.
    pub(crate) async fn take_throttle_slot(
        &self,
        rule: &str,
        domain_uuid: &str,
        now: OffsetDateTime,
        interval: Duration,
    ) -> Result<Slot, StoreError> {
        let (rule, domain) = (rule.to_owned(), domain_uuid.to_owned());
        self.call(move |db| unsynced(db, |db| {
            let now_us = to_micros(now);
            let next = now_us.saturating_add(interval.as_micros().min(i64::MAX as u128) as i64);
            let tx = db.conn.transaction()?;
            let current: Option<i64> = tx
                .prepare_cached(
                    "SELECT next_allowed FROM throttle_slots WHERE rule = ?1 AND domain_uuid = ?2",
                )?
                .query_row(params![rule, domain], |r| r.get(0))
                .optional()?;
            if let Some(at) = current.filter(|at| *at > now_us) {
                return Ok(Slot::Busy {
                    next_allowed: from_micros(at),
                });
            }
            tx.prepare_cached(
                "INSERT INTO throttle_slots (rule, domain_uuid, next_allowed) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (rule, domain_uuid) DO UPDATE SET next_allowed = excluded.next_allowed",
            )?
            .execute(params![rule, domain, next])?;
            tx.commit()?;
            Ok(Slot::Taken)
        }))
        .await
    }

    /// Gives a slot back (a failed capture does not count), unless a later
    /// taker has moved it since.
    pub(crate) async fn release_throttle_slot(
        &self,
        rule: &str,
        domain_uuid: &str,
        taken_at: OffsetDateTime,
        interval: Duration,
    ) -> Result<(), StoreError> {
        let (rule, domain) = (rule.to_owned(), domain_uuid.to_owned());
        self.call(move |db| {
            unsynced(db, |db| {
                let next = to_micros(taken_at)
                    .saturating_add(interval.as_micros().min(i64::MAX as u128) as i64);
                db.conn
                    .prepare_cached(
                        "DELETE FROM throttle_slots WHERE rule = ?1 AND domain_uuid = ?2 \
                     AND next_allowed = ?3",
                    )?
                    .execute(params![rule, domain, next])?;
                Ok(())
            })
        })
        .await
    }
}
