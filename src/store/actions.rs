//! Nova's instance actions and their events: every capture, from any
//! dialect, is recorded as an action (`vmshot_capture`) with one event a
//! stage (`vmshot_grab`, `vmshot_encode`, `vmshot_store`).

use rusqlite::{params, OptionalExtension, Row, ToSql};
use time::OffsetDateTime;

use super::worker::Store;
use super::{from_micros, to_micros, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventResult {
    Success,
    Error,
}

impl EventResult {
    /// As Nova spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            EventResult::Success => "Success",
            EventResult::Error => "Error",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "Success" => Some(EventResult::Success),
            "Error" => Some(EventResult::Error),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewAction {
    pub request_id: String,
    pub instance_uuid: String,
    pub project_id: Option<String>,
    pub user_id: Option<String>,
    pub action: String,
    pub message: Option<String>,
    pub start_time: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionEvent {
    pub event: String,
    pub start_time: OffsetDateTime,
    pub finish_time: Option<OffsetDateTime>,
    pub result: Option<EventResult>,
    pub traceback: Option<String>,
    pub details: Option<String>,
    pub host: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub request_id: String,
    pub instance_uuid: String,
    pub project_id: Option<String>,
    pub user_id: Option<String>,
    pub action: String,
    pub message: Option<String>,
    pub start_time: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// In start order; empty in a listing (Nova lists actions without them).
    pub events: Vec<ActionEvent>,
}

/// Nova's paging of `os-instance-actions`: newest first; `marker` is the
/// request id of the last action of the previous page (not included);
/// `changes_since` / `changes_before` bound `updated_at`, both inclusive.
#[derive(Debug, Clone, Default)]
pub struct ActionPage {
    pub limit: Option<u32>,
    pub marker: Option<String>,
    pub changes_since: Option<OffsetDateTime>,
    pub changes_before: Option<OffsetDateTime>,
}

/// Nova's default `max_limit`.
const MAX_LIMIT: u32 = 1000;

const COLUMNS: &str =
    "id, request_id, instance_uuid, project_id, user_id, action, message, start_time, updated_at";

fn read_action(r: &Row<'_>) -> rusqlite::Result<(i64, Action)> {
    Ok((
        r.get(0)?,
        Action {
            request_id: r.get(1)?,
            instance_uuid: r.get(2)?,
            project_id: r.get(3)?,
            user_id: r.get(4)?,
            action: r.get(5)?,
            message: r.get(6)?,
            start_time: from_micros(r.get(7)?),
            updated_at: from_micros(r.get(8)?),
            events: Vec::new(),
        },
    ))
}

fn not_found(instance: &str, request_id: &str) -> StoreError {
    StoreError::NotFound {
        kind: "action",
        key: format!("{instance}/{request_id}"),
    }
}

/// Inserts one action and its events; `updated_at` is the last event's
/// finish, and an `Error` event makes the message `Error`, as Nova does.
fn insert(
    tx: &rusqlite::Transaction<'_>,
    new: &NewAction,
    events: &[ActionEvent],
) -> Result<(), StoreError> {
    let updated = events
        .iter()
        .filter_map(|e| e.finish_time)
        .map(to_micros)
        .max()
        .unwrap_or(to_micros(new.start_time));
    let failed = events.iter().any(|e| e.result == Some(EventResult::Error));
    let message = if failed {
        Some("Error")
    } else {
        new.message.as_deref()
    };
    let id: i64 = tx
        .prepare_cached(
            "INSERT INTO actions (request_id, instance_uuid, project_id, user_id, action, \
             message, start_time, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT (instance_uuid, request_id) DO NOTHING RETURNING id",
        )?
        .query_row(
            params![
                new.request_id,
                new.instance_uuid,
                new.project_id,
                new.user_id,
                new.action,
                message,
                to_micros(new.start_time),
                updated
            ],
            |r| r.get(0),
        )
        .optional()?
        .ok_or_else(|| StoreError::Exists {
            kind: "action",
            key: format!("{}/{}", new.instance_uuid, new.request_id),
        })?;
    for e in events {
        if !insert_event(tx, id, e)? {
            return Err(StoreError::Exists {
                kind: "event",
                key: format!("{}/{}/{}", new.instance_uuid, new.request_id, e.event),
            });
        }
    }
    Ok(())
}

/// Inserts one event of action `id`; false if the action has one by that
/// name already.
fn insert_event(
    tx: &rusqlite::Transaction<'_>,
    id: i64,
    e: &ActionEvent,
) -> Result<bool, StoreError> {
    let inserted = tx
        .prepare_cached(
            "INSERT INTO action_events (action_id, event, start_time, finish_time, \
             result, traceback, details, host) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT (action_id, event) DO NOTHING",
        )?
        .execute(params![
            id,
            e.event,
            to_micros(e.start_time),
            e.finish_time.map(to_micros),
            e.result.map(EventResult::as_str),
            e.traceback,
            e.details,
            e.host
        ])?;
    Ok(inserted == 1)
}

/// Marks an action changed at `at` (and failed, with `message`), for an
/// event of it; its row id, or `NotFound`.
fn touch_action(
    tx: &rusqlite::Transaction<'_>,
    instance: &str,
    request: &str,
    at: i64,
    message: Option<&str>,
) -> Result<i64, StoreError> {
    tx.prepare_cached(
        "UPDATE actions SET updated_at = max(updated_at, ?3), message = coalesce(?4, message) \
         WHERE instance_uuid = ?1 AND request_id = ?2 RETURNING id",
    )?
    .query_row(params![instance, request, at, message], |r| r.get(0))
    .optional()?
    .ok_or_else(|| not_found(instance, request))
}

/// Whether fewer than `limit` of an instance's actions changed in the
/// window: then the `(instance_uuid, updated_at)` index finds them all and
/// they are sorted, where walking the history newest first would go to its
/// end for a page that never fills (the poll that finds nothing new). With
/// more, the walk fills its page first: every action started since the
/// window opened changed in it, and those come first.
fn few_changed(
    conn: &rusqlite::Connection,
    instance: &str,
    since: i64,
    before: Option<i64>,
    limit: i64,
) -> rusqlite::Result<bool> {
    let changed: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM (SELECT 1 FROM actions INDEXED BY actions_changed \
             WHERE instance_uuid = ?1 AND updated_at >= ?2 AND updated_at <= ?3 LIMIT ?4)",
        )?
        .query_row(
            params![instance, since, before.unwrap_or(i64::MAX), limit],
            |r| r.get(0),
        )?;
    Ok(changed < limit)
}

impl Store {
    /// Records the start of an action; `Exists` if this instance already
    /// has one with that request id. (Step by step, for actions that outlast
    /// a request, like the recordings to come; only tests call it yet.)
    #[cfg(test)]
    pub(crate) async fn start_action(&self, new: NewAction) -> Result<(), StoreError> {
        self.call(move |db| {
            let start = to_micros(new.start_time);
            let inserted = db
                .conn
                .prepare_cached(
                    "INSERT INTO actions (request_id, instance_uuid, project_id, user_id, action, \
                     message, start_time, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7) \
                     ON CONFLICT (instance_uuid, request_id) DO NOTHING",
                )?
                .execute(params![
                    new.request_id,
                    new.instance_uuid,
                    new.project_id,
                    new.user_id,
                    new.action,
                    new.message,
                    start
                ])?;
            if inserted == 0 {
                return Err(StoreError::Exists {
                    kind: "action",
                    key: format!("{}/{}", new.instance_uuid, new.request_id),
                });
            }
            Ok(())
        })
        .await
    }

    /// Records a whole action with its finished events in one transaction
    /// (one fsync): what a capture that already ran left to say.
    pub async fn record_action(
        &self,
        new: NewAction,
        events: Vec<ActionEvent>,
    ) -> Result<(), StoreError> {
        self.call(move |db| {
            let tx = db.conn.transaction()?;
            insert(&tx, &new, &events)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Records many whole actions in one transaction (one fsync), all or
    /// none: `Exists` for the first one already there, and nothing is kept.
    /// For bulk loads (the store benchmark fills a million rows with it); a
    /// batch holds the store thread while it runs, so keep it to thousands.
    pub async fn record_actions(
        &self,
        actions: Vec<(NewAction, Vec<ActionEvent>)>,
    ) -> Result<(), StoreError> {
        self.call(move |db| {
            let tx = db.conn.transaction()?;
            for (new, events) in &actions {
                insert(&tx, new, events)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Adds one finished event to an action, in one transaction: a stage
    /// that ran after the action was recorded (a job's media written). An
    /// `Error` also marks the action's message `Error`, as Nova does.
    pub(crate) async fn append_event(
        &self,
        instance_uuid: &str,
        request_id: &str,
        event: ActionEvent,
    ) -> Result<(), StoreError> {
        let (instance, request) = (instance_uuid.to_owned(), request_id.to_owned());
        self.call(move |db| {
            let tx = db.conn.transaction()?;
            let at = to_micros(event.finish_time.unwrap_or(event.start_time));
            let message = (event.result == Some(EventResult::Error)).then_some("Error");
            let id = touch_action(&tx, &instance, &request, at, message)?;
            if !insert_event(&tx, id, &event)? {
                return Err(StoreError::Exists {
                    kind: "event",
                    key: format!("{instance}/{request}/{}", event.event),
                });
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Records the start of one event of an action.
    #[cfg(test)]
    pub(crate) async fn start_event(
        &self,
        instance_uuid: &str,
        request_id: &str,
        event: &str,
        start_time: OffsetDateTime,
        host: Option<String>,
    ) -> Result<(), StoreError> {
        let (instance, request, event) = (
            instance_uuid.to_owned(),
            request_id.to_owned(),
            event.to_owned(),
        );
        self.call(move |db| {
            let at = to_micros(start_time);
            let tx = db.conn.transaction()?;
            let id: i64 = tx
                .prepare_cached(
                    "UPDATE actions SET updated_at = max(updated_at, ?3) \
                     WHERE instance_uuid = ?1 AND request_id = ?2 RETURNING id",
                )?
                .query_row(params![instance, request, at], |r| r.get(0))
                .optional()?
                .ok_or_else(|| not_found(&instance, &request))?;
            let inserted = tx
                .prepare_cached(
                    "INSERT INTO action_events (action_id, event, start_time, host) \
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (action_id, event) DO NOTHING",
                )?
                .execute(params![id, event, at, host])?;
            if inserted == 0 {
                return Err(StoreError::Exists {
                    kind: "event",
                    key: format!("{instance}/{request}/{event}"),
                });
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Records how an event ended. An `Error` also marks the action's
    /// message `Error`, as Nova does.
    #[allow(clippy::too_many_arguments)]
    #[cfg(test)]
    pub(crate) async fn finish_event(
        &self,
        instance_uuid: &str,
        request_id: &str,
        event: &str,
        finish_time: OffsetDateTime,
        result: EventResult,
        traceback: Option<String>,
        details: Option<String>,
    ) -> Result<(), StoreError> {
        let (instance, request, event) = (
            instance_uuid.to_owned(),
            request_id.to_owned(),
            event.to_owned(),
        );
        self.call(move |db| {
            let at = to_micros(finish_time);
            let tx = db.conn.transaction()?;
            let message = (result == EventResult::Error).then_some("Error");
            let id = touch_action(&tx, &instance, &request, at, message)?;
            let changed = tx
                .prepare_cached(
                    "UPDATE action_events SET finish_time = ?3, result = ?4, traceback = ?5, \
                     details = ?6 WHERE action_id = ?1 AND event = ?2",
                )?
                .execute(params![id, event, at, result.as_str(), traceback, details])?;
            if changed == 0 {
                return Err(StoreError::NotFound {
                    kind: "event",
                    key: format!("{instance}/{request}/{event}"),
                });
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// A page of an instance's actions, newest first, without events.
    pub async fn list_actions(
        &self,
        instance_uuid: &str,
        page: ActionPage,
    ) -> Result<Vec<Action>, StoreError> {
        let instance = instance_uuid.to_owned();
        self.call(move |db| {
            let limit = page.limit.unwrap_or(MAX_LIMIT).min(MAX_LIMIT);
            // The marker's place in the order; a marker this instance does
            // not have is an error (Nova: 400 "Marker not found").
            let after = match &page.marker {
                None => None,
                Some(marker) => Some(
                    db.conn
                        .prepare_cached(
                            "SELECT start_time, id FROM actions \
                             WHERE instance_uuid = ?1 AND request_id = ?2",
                        )?
                        .query_row(params![instance, marker], |r| {
                            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                        })
                        .optional()?
                        .ok_or_else(|| StoreError::MarkerNotFound(marker.clone()))?,
                ),
            };
            let limit = i64::from(limit);
            let since = page.changes_since.map(to_micros);
            let before = page.changes_before.map(to_micros);
            // Only the terms this page has, each one the index can seek by:
            // `?2 IS NULL OR ...` would have SQLite walk the instance's whole
            // history and test it row by row (tens of ms at 10,000 actions).
            let mut terms = vec!["instance_uuid = :instance"];
            let mut args: Vec<(&str, &dyn ToSql)> = vec![(":instance", &instance)];
            if let Some((start, id)) = &after {
                terms.push("(start_time, id) < (:start, :id)");
                args.extend([(":start", start as &dyn ToSql), (":id", id)]);
            }
            if let Some(since) = &since {
                terms.push("updated_at >= :since");
                args.push((":since", since));
            }
            if let Some(before) = &before {
                terms.push("updated_at <= :before");
                args.push((":before", before));
            }
            args.push((":limit", &limit));
            let index = match since {
                Some(since) if few_changed(&db.conn, &instance, since, before, limit)? => {
                    "actions_changed"
                }
                _ => "actions_newest",
            };
            let sql = format!(
                "SELECT {COLUMNS} FROM actions INDEXED BY {index} WHERE {} \
                 ORDER BY start_time DESC, id DESC LIMIT :limit",
                terms.join(" AND ")
            );
            let mut stmt = db.conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(args.as_slice(), |r| read_action(r).map(|(_, a)| a))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// One action with its events.
    pub async fn get_action(
        &self,
        instance_uuid: &str,
        request_id: &str,
    ) -> Result<Option<Action>, StoreError> {
        let (instance, request) = (instance_uuid.to_owned(), request_id.to_owned());
        self.call(move |db| {
            let sql = format!(
                "SELECT {COLUMNS} FROM actions WHERE instance_uuid = ?1 AND request_id = ?2"
            );
            let Some((id, mut action)) = db
                .conn
                .prepare_cached(&sql)?
                .query_row(params![instance, request], read_action)
                .optional()?
            else {
                return Ok(None);
            };
            let mut stmt = db.conn.prepare_cached(
                "SELECT event, start_time, finish_time, result, traceback, details, host \
                 FROM action_events WHERE action_id = ?1 ORDER BY start_time, id",
            )?;
            let events = stmt.query_map([id], |r| {
                let result: Option<String> = r.get(3)?;
                Ok(ActionEvent {
                    event: r.get(0)?,
                    start_time: from_micros(r.get(1)?),
                    finish_time: r.get::<_, Option<i64>>(2)?.map(from_micros),
                    result: result.as_deref().and_then(EventResult::parse),
                    traceback: r.get(4)?,
                    details: r.get(5)?,
                    host: r.get(6)?,
                })
            })?;
            action.events = events.collect::<Result<Vec<_>, _>>()?;
            Ok(Some(action))
        })
        .await
    }
}
