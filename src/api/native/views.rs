//! What the native API answers, as JSON, and the screen's event stream.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::service::recordings::Recording;
use crate::service::{CaptureJob, ConsoleOutput, Domain, Listed, Live, ScreenState};

/// Least time between two `screen` events: a screen that changes all the
/// time costs a browser at most this many fetches a second.
const MIN_EVENT_GAP: Duration = Duration::from_millis(200);
/// Without a mirror, the page refetches the screen this often.
const POLL: Duration = Duration::from_secs(2);
/// A comment line this often keeps proxies from closing a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

fn rfc3339(t: OffsetDateTime) -> Option<String> {
    t.format(&Rfc3339).ok()
}

fn base(domain: &Domain) -> String {
    format!("/v1/domains/{}", domain.uuid)
}

fn screen(s: &ScreenState) -> Value {
    json!({"generation": s.generation, "unchanged_seconds": s.unchanged.map(|d| d.as_secs())})
}

pub fn domain(listed: &Listed) -> Value {
    let d = &listed.domain;
    let base = base(d);
    json!({
        "name": d.name,
        "uuid": d.uuid,
        "state": d.state.map(|s| s.as_str()),
        "display": listed.screens > 0,
        "screens": listed.screens,
        "instance_id": d.instance_id,
        "project": d.project,
        "screen": screen(&listed.screen),
        "diagnosis": diagnosis(listed),
        "links": {
            "screenshot": format!("{base}/screenshot"),
            "thumbnail": format!("{base}/thumbnail"),
            "events": format!("{base}/screen/events"),
            "console": format!("{base}/console"),
            "recordings": format!("{base}/recordings"),
            "captures": format!("{base}/captures"),
            "page": format!("/ui/domains/{}", d.uuid),
        },
    })
}

/// The diagnosis watcher's verdict of the domain, as JSON, if it has one.
pub fn diagnosis(listed: &Listed) -> Option<Value> {
    listed
        .diagnosis
        .as_ref()
        .and_then(|d| serde_json::to_value(d).ok())
}

pub fn console(out: &ConsoleOutput) -> Value {
    let text = crate::service::without_escapes(&out.bytes);
    json!({
        "output": String::from_utf8_lossy(&text),
        "updated": out.updated.and_then(rfc3339),
        "cut": out.cut,
    })
}

pub fn recording(r: &Recording) -> Value {
    let file = |f: &Option<crate::service::recordings::MediaFile>| {
        f.as_ref()
            .map(|f| json!({"bytes": f.bytes, "sha256": f.sha256}))
    };
    let mut video = file(&r.video);
    if let Some(v) = video.as_mut() {
        v["url"] = json!(format!("/v1/recordings/{}/video", r.id));
    }
    json!({
        "id": r.id,
        "kind": r.kind.as_str(),
        "status": r.status.as_str(),
        "reason": r.reason,
        "start_time": rfc3339(r.start_time),
        "end_time": r.end_time.and_then(rfc3339),
        "duration_seconds": r.duration.as_secs_f64(),
        "frames": r.frames,
        "video": video,
        "events": file(&r.events),
    })
}

pub fn capture(domain: &Domain, job: &CaptureJob) -> Value {
    json!({
        "id": job.id,
        "name": job.name,
        "dialect": job.dialect,
        "state": job.state,
        "created": rfc3339(job.created),
        "error_reason": job.error_reason,
        "image": job.media.as_ref().map(|m| json!({
            "bytes": m.bytes,
            "sha256": m.sha256,
            "url": format!("{}/captures/{}", base(domain), job.id),
        })),
    })
}

/// `text/event-stream`: a `screen` event now, then one each time the screen
/// changes (from the VNC mirror's generation), or every `POLL` without a
/// mirror; it ends after `life`, and the browser's EventSource reconnects.
pub fn screen_events(live: Live, domain: Domain, life: Duration) -> Response {
    let events = Events {
        live,
        domain,
        changes: None,
        until: Instant::now() + life,
        first: true,
    };
    let stream = futures_util::stream::unfold(events, |mut e| async move {
        let chunk = e.next().await?;
        Some((Ok::<_, Infallible>(Bytes::from(chunk)), e))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

struct Events {
    live: Live,
    domain: Domain,
    changes: Option<watch::Receiver<u64>>,
    until: Instant,
    first: bool,
}

impl Events {
    async fn next(&mut self) -> Option<String> {
        if std::mem::take(&mut self.first) {
            return Some(format!("retry: 1000\n\n{}", self.event()));
        }
        let left = self.until.checked_duration_since(Instant::now())?;
        if self.changes.is_none() {
            self.changes = self.live.changes(&self.domain);
        }
        let Some(changes) = self.changes.as_mut() else {
            tokio::time::sleep(POLL.min(left)).await;
            return (Instant::now() < self.until).then(|| self.event());
        };
        match tokio::time::timeout(KEEP_ALIVE.min(left), changes.changed()).await {
            Ok(Ok(())) => {
                changes.borrow_and_update();
                tokio::time::sleep(MIN_EVENT_GAP).await;
                Some(self.event())
            }
            // The mirror is gone: ask for another next time.
            Ok(Err(_)) => {
                self.changes = None;
                Some(": mirror lost\n\n".into())
            }
            Err(_) => Some(": keep-alive\n\n".into()),
        }
    }

    fn event(&self) -> String {
        let state = self.live.screen_state(&self.domain);
        format!("event: screen\ndata: {}\n\n", screen(&state))
    }
}
