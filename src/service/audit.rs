//! Every capture, from any dialect, is recorded in the store as an instance
//! action (Nova's audit model): `vmshot_capture`, with a `vmshot_grab` and a
//! `vmshot_encode` event that say when each stage ran and, on failure, what
//! broke; a capture job adds `vmshot_store` when its image is kept (or not).
//! Each record is committed (one transaction) before the caller or the job
//! goes on.

use time::OffsetDateTime;

use super::{Domain, Error, Shot};
use crate::store::{ActionEvent, EventResult, NewAction, Store};

pub const CAPTURE_ACTION: &str = "vmshot_capture";

/// Who asked for a capture, for its record.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The dialect's request id, the action's key.
    pub request_id: String,
    /// The principal's id (a key, a user).
    pub user: String,
}

#[derive(Clone)]
pub(crate) struct Audit {
    store: Store,
    /// This host's name, as events carry it.
    host: Option<String>,
}

impl Audit {
    pub(crate) fn new(store: Store) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty());
        Self { store, host }
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Records one capture of `domain` that started at `started`. A store
    /// that fails costs the record, not the capture: it is logged.
    pub(crate) async fn record(
        &self,
        domain: &Domain,
        caller: &Caller,
        started: OffsetDateTime,
        result: &Result<Shot, Error>,
    ) {
        let finished = OffsetDateTime::now_utc();
        let event = |name: &str, start, finish, result, details: Option<String>| ActionEvent {
            event: name.to_owned(),
            start_time: start,
            finish_time: Some(finish),
            result: Some(result),
            traceback: None,
            details,
            host: self.host.clone(),
        };
        let events = match result {
            Ok(shot) => {
                // A shared or reused screen was grabbed once, for whoever came first.
                let grabbed = started + shot.timings.grab;
                let encoded = grabbed + shot.timings.processing();
                let how = format!(
                    "{}x{} {} bytes, sha256 {}{}",
                    shot.width,
                    shot.height,
                    shot.image.len(),
                    shot.sha256_hex(),
                    if shot.shared {
                        ", shared with a capture in flight"
                    } else {
                        ""
                    }
                );
                vec![
                    event(
                        "vmshot_grab",
                        started,
                        grabbed.min(finished),
                        EventResult::Success,
                        None,
                    ),
                    event(
                        "vmshot_encode",
                        grabbed.min(finished),
                        encoded.min(finished),
                        EventResult::Success,
                        Some(how),
                    ),
                ]
            }
            // The core's message names no URI or path; libvirt's own words stay in the log.
            Err(e) => vec![event(
                "vmshot_grab",
                started,
                finished,
                EventResult::Error,
                Some(e.to_string()),
            )],
        };
        let action = NewAction {
            request_id: caller.request_id.clone(),
            instance_uuid: domain.uuid.clone(),
            project_id: domain.project.clone(),
            user_id: Some(caller.user.clone()),
            action: CAPTURE_ACTION.to_owned(),
            message: None,
            start_time: started,
        };
        if let Err(e) = self.store.record_action(action, events).await {
            tracing::warn!(request_id = caller.request_id, domain = domain.name, error = %e, "capture not recorded");
        }
    }

    /// Adds the `vmshot_store` event to the capture `request_id` of `domain`:
    /// its image kept (`Ok`: what was kept) or not (`Err`: why), from
    /// `started` until now.
    pub(crate) async fn record_stored(
        &self,
        domain: &Domain,
        request_id: &str,
        started: OffsetDateTime,
        result: Result<String, String>,
    ) {
        let (result, details) = match result {
            Ok(what) => (EventResult::Success, what),
            Err(why) => (EventResult::Error, why),
        };
        let event = ActionEvent {
            event: "vmshot_store".to_owned(),
            start_time: started,
            finish_time: Some(OffsetDateTime::now_utc()),
            result: Some(result),
            traceback: None,
            details: Some(details),
            host: self.host.clone(),
        };
        if let Err(e) = self
            .store
            .append_event(&domain.uuid, request_id, event)
            .await
        {
            tracing::warn!(request_id, domain = domain.name, error = %e, "store stage not recorded");
        }
    }
}
