//! The requests of Huawei's dialect, parsed strictly: the route (path and
//! method), ListScreenRecords' query, and the JSON bodies. Everything here
//! is bounded; anything malformed is `WKS.0001`, an unknown path or method
//! `APIGW.0101`.
//!
//! ```text
//!   GET    /v2/{project_id}/screen-records                    ListScreenRecords
//!   POST   /v2/{project_id}/screen-records                    start (vmshot's)
//!   POST   /v2/{project_id}/screen-records/batch-delete       BatchDeleteScreenRecords
//!   GET    /v2/{project_id}/screen-records/{record_id}        ShowScreenRecord
//!   POST   /v2/{project_id}/screen-records/{record_id}/stop   stop (vmshot's)
//!   GET    /v2/{project_id}/screen-records/{record_id}/video  the MP4 (Range)
//!   GET    /v2/{project_id}/screen-records/{record_id}/events the event file (Range)
//! ```

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Deserialize;
use time::OffsetDateTime;

use super::signing::{decode_query, percent_decode};
use super::wire::{echo, HuaweiError};
use crate::service::recordings::{FileKind, Kind, Status, Trigger, MAX_DELETE};

pub const MAX_PROJECT: usize = 64;
pub const MAX_RECORD_ID: usize = 64;
pub const MAX_DESKTOP_ID: usize = 256;
pub const MAX_NAME: usize = 255;
pub const MAX_NAMES: usize = 100;
pub const MAX_USERNAME: usize = 128;
/// The SDK's documented page size: default 100, at most 1000.
pub const DEFAULT_LIMIT: u64 = 100;
pub const MAX_LIMIT: u64 = 1000;
const MAX_OFFSET: u64 = 10_000_000;
/// Without `start_time`/`end_time`: the last 15 days, as Workspace.
pub const DEFAULT_WINDOW: time::Duration = time::Duration::days(15);

/// What a path and method ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    List {
        project: String,
    },
    Start {
        project: String,
    },
    BatchDelete {
        project: String,
    },
    Show {
        project: String,
        id: String,
    },
    Stop {
        project: String,
        id: String,
    },
    Download {
        project: String,
        id: String,
        file: FileKind,
        head: bool,
    },
}

impl Route {
    /// The action's name in logs and metrics.
    pub fn action(&self) -> &'static str {
        match self {
            Self::List { .. } => "ListScreenRecords",
            Self::Start { .. } => "StartScreenRecord",
            Self::BatchDelete { .. } => "BatchDeleteScreenRecords",
            Self::Show { .. } => "ShowScreenRecord",
            Self::Stop { .. } => "StopScreenRecord",
            Self::Download {
                file: FileKind::Video,
                ..
            } => "DownloadScreenRecordVideo",
            Self::Download {
                file: FileKind::Events,
                ..
            } => "DownloadScreenRecordEvents",
        }
    }

    pub fn project(&self) -> &str {
        match self {
            Self::List { project }
            | Self::Start { project }
            | Self::BatchDelete { project }
            | Self::Show { project, .. }
            | Self::Stop { project, .. }
            | Self::Download { project, .. } => project,
        }
    }
}

/// `path` is what follows the configured prefix.
pub fn route(method: &str, path: &str) -> Result<Route, HuaweiError> {
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    let [version, project, collection, rest @ ..] = segments.as_slice() else {
        return Err(HuaweiError::no_api());
    };
    if *version != "v2" || *collection != "screen-records" {
        return Err(HuaweiError::no_api());
    }
    let project = segment(project, "project_id", MAX_PROJECT)?;
    let id = |raw: &str| segment(raw, "record_id", MAX_RECORD_ID);
    let route = match (method, rest) {
        ("GET", []) => Route::List { project },
        ("POST", []) => Route::Start { project },
        ("POST", ["batch-delete"]) => Route::BatchDelete { project },
        ("GET", [record]) => Route::Show {
            project,
            id: id(record)?,
        },
        ("POST", [record, "stop"]) => Route::Stop {
            project,
            id: id(record)?,
        },
        ("GET" | "HEAD", [record, file @ ("video" | "events")]) => Route::Download {
            project,
            id: id(record)?,
            file: if *file == "video" {
                FileKind::Video
            } else {
                FileKind::Events
            },
            head: method == "HEAD",
        },
        _ => return Err(HuaweiError::no_api()),
    };
    Ok(route)
}

/// One path segment, decoded, non-empty and short.
fn segment(raw: &str, name: &str, max: usize) -> Result<String, HuaweiError> {
    let value = percent_decode(raw)
        .filter(|v| !v.is_empty() && v.len() <= max && !v.chars().any(char::is_control))
        .ok_or_else(|| {
            HuaweiError::bad_parameter(format!(
                "The {name} in the path must be 1 to {max} printable characters."
            ))
        })?;
    Ok(value)
}

/// ListScreenRecords' query, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    pub limit: u64,
    pub offset: u64,
    pub desktop_id: Option<String>,
    pub desktop_names: Vec<String>,
    pub username: Option<String>,
    pub status: Option<Status>,
    pub kind: Option<Kind>,
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
    pub ascending: bool,
}

/// `now` decides the default window.
pub fn list_query(raw: &str, now: OffsetDateTime) -> Result<ListQuery, HuaweiError> {
    let pairs = decode_query(raw)
        .map_err(|_| HuaweiError::bad_parameter("The query string is not validly encoded."))?;
    let mut seen = BTreeSet::new();
    let mut query = ListQuery {
        limit: DEFAULT_LIMIT,
        offset: 0,
        desktop_id: None,
        desktop_names: Vec::new(),
        username: None,
        status: None,
        kind: None,
        from: now - DEFAULT_WINDOW,
        to: now,
        ascending: false,
    };
    let (mut from, mut to) = (None, None);
    for (name, value) in &pairs {
        if !seen.insert(name.as_str()) {
            return Err(HuaweiError::bad_parameter(format!(
                "The parameter '{}' is given twice.",
                echo(name)
            )));
        }
        let bad =
            |what: &str| HuaweiError::bad_parameter(format!("The parameter '{name}' {what}."));
        match name.as_str() {
            "limit" => query.limit = number(value, MAX_LIMIT).ok_or_else(|| bad("must be 0 to 1000"))?,
            "offset" => {
                query.offset = number(value, MAX_OFFSET).ok_or_else(|| bad("must be a number from 0"))?
            }
            "desktop_id" => query.desktop_id = Some(text(value, MAX_DESKTOP_ID).ok_or_else(|| bad("must be 1 to 256 characters"))?),
            "desktop_names" => {
                let names: Vec<String> = value.split(',').map(|n| n.trim().to_owned()).collect();
                if names.len() > MAX_NAMES
                    || names.iter().any(|n| n.is_empty() || n.len() > MAX_NAME || n.chars().any(char::is_control))
                {
                    return Err(bad("must list 1 to 100 names of 1 to 255 characters, separated by commas"));
                }
                query.desktop_names = names;
            }
            "username" => query.username = Some(text(value, MAX_USERNAME).ok_or_else(|| bad("must be 1 to 128 characters"))?),
            "status" => query.status = Some(value.parse().map_err(|_| bad("must be RECORDING, REC_COMPLETED, UPLOADING, UPLOAD_COMPLETED, REC_FAILED or UPLOAD_FAILED"))?),
            "type" => query.kind = Some(value.parse().map_err(|_| bad("must be FULL, INTERVAL, OPERATION or SESSION"))?),
            "start_time" => from = Some(parse_time(value).ok_or_else(|| bad("must be yyyy-MM-dd HH:mm:ss (UTC)"))?),
            "end_time" => to = Some(parse_time(value).ok_or_else(|| bad("must be yyyy-MM-dd HH:mm:ss (UTC)"))?),
            // Only one order exists; the SDK sends the field with sort_type.
            "sort_field" if value == "start_time" => {}
            "sort_field" => return Err(bad("must be start_time")),
            "sort_type" => {
                query.ascending = match value.as_str() {
                    "asc" => true,
                    "desc" => false,
                    _ => return Err(bad("must be asc or desc")),
                }
            }
            _ => {
                return Err(HuaweiError::bad_parameter(format!(
                    "Unknown parameter '{}'.",
                    echo(name)
                )))
            }
        }
    }
    // One end given: the window runs 15 days from it (or up to now).
    match (from, to) {
        (Some(f), Some(t)) => (query.from, query.to) = (f, t),
        (Some(f), None) => (query.from, query.to) = (f, now.max(f)),
        (None, Some(t)) => (query.from, query.to) = (t - DEFAULT_WINDOW, t),
        (None, None) => {}
    }
    if query.from > query.to {
        return Err(HuaweiError::bad_parameter(
            "The start_time must not be after the end_time.",
        ));
    }
    Ok(query)
}

fn number(value: &str, max: u64) -> Option<u64> {
    let ok = !value.is_empty() && value.len() <= 10 && value.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| value.parse().ok())?.filter(|n| *n <= max)
}

fn text(value: &str, max: usize) -> Option<String> {
    (!value.is_empty() && value.len() <= max && !value.chars().any(char::is_control))
        .then(|| value.to_owned())
}

/// `yyyy-MM-dd HH:mm:ss`, UTC.
pub fn parse_time(value: &str) -> Option<OffsetDateTime> {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::PrimitiveDateTime::parse(value, &format)
        .ok()
        .map(|t| t.assume_utc())
}

// ------------------------------------------------------------------ bodies

/// The body must be JSON (the SDK says `application/json;charset=utf-8`).
fn json_body<'a, T: Deserialize<'a>>(
    content_type: Option<&str>,
    body: &'a [u8],
) -> Result<T, HuaweiError> {
    if let Some(ct) = content_type {
        if !ct
            .trim()
            .to_ascii_lowercase()
            .starts_with("application/json")
        {
            return Err(HuaweiError::bad_parameter(
                "The body must be application/json.",
            ));
        }
    }
    if body.is_empty() {
        return Err(HuaweiError::bad_parameter("The request body is empty."));
    }
    serde_json::from_slice(body).map_err(|e| {
        // serde's words name the field and position, never our internals.
        HuaweiError::bad_parameter(format!(
            "The request body is not valid: {}",
            echo(&e.to_string())
        ))
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchDeleteBody {
    screen_records: Vec<RecordRef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordRef {
    id: String,
}

/// BatchDeleteScreenRecords' ids: 1 to 10, each a record id, repeats merged.
pub fn batch_delete(content_type: Option<&str>, body: &[u8]) -> Result<Vec<String>, HuaweiError> {
    let body: BatchDeleteBody = json_body(content_type, body)?;
    if body.screen_records.is_empty() || body.screen_records.len() > MAX_DELETE {
        return Err(HuaweiError::bad_parameter(format!(
            "screen_records must hold 1 to {MAX_DELETE} records."
        )));
    }
    let mut ids: Vec<String> = Vec::new();
    for r in body.screen_records {
        if r.id.is_empty() || r.id.len() > MAX_RECORD_ID || r.id.chars().any(char::is_control) {
            return Err(HuaweiError::bad_parameter(format!(
                "Each screen record id must be 1 to {MAX_RECORD_ID} characters."
            )));
        }
        if !ids.contains(&r.id) {
            ids.push(r.id);
        }
    }
    Ok(ids)
}

/// vmshot's start call, in the style of Workspace's bodies.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    /// The desktop: its instance id, or its domain name or UUID.
    pub desktop_id: String,
    /// FULL (default), INTERVAL, OPERATION or SESSION.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub fps: Option<f64>,
    pub interval_seconds: Option<u64>,
    pub max_duration_seconds: Option<u64>,
    pub before_seconds: Option<u64>,
    pub after_seconds: Option<u64>,
    pub triggers: Option<Vec<String>>,
}

/// What a start asks for, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Start {
    pub desktop_id: String,
    pub kind: Kind,
    pub fps: Option<f64>,
    pub interval: Option<Duration>,
    pub max_duration: Option<Duration>,
    pub before: Option<Duration>,
    pub after: Option<Duration>,
    pub triggers: Vec<Trigger>,
}

/// Seconds in a body field: at most a day.
const MAX_SECONDS: u64 = 24 * 3600;

pub fn start(content_type: Option<&str>, body: &[u8]) -> Result<Start, HuaweiError> {
    let b: StartBody = json_body(content_type, body)?;
    let desktop_id = text(&b.desktop_id, MAX_DESKTOP_ID)
        .ok_or_else(|| HuaweiError::bad_parameter("desktop_id must be 1 to 256 characters."))?;
    let kind = match b.kind.as_deref() {
        None => Kind::Full,
        Some(word) => word.parse().map_err(|_| {
            HuaweiError::bad_parameter("type must be FULL, INTERVAL, OPERATION or SESSION.")
        })?,
    };
    if let Some(fps) = b.fps {
        if !(fps.is_finite() && fps > 0.0 && fps <= 30.0) {
            return Err(HuaweiError::bad_parameter(
                "fps must be above 0 and at most 30.",
            ));
        }
    }
    let seconds = |name: &str, v: Option<u64>| -> Result<Option<Duration>, HuaweiError> {
        match v {
            Some(s) if s == 0 || s > MAX_SECONDS => Err(HuaweiError::bad_parameter(format!(
                "{name} must be 1 to {MAX_SECONDS}."
            ))),
            v => Ok(v.map(Duration::from_secs)),
        }
    };
    let triggers = b
        .triggers
        .unwrap_or_default()
        .iter()
        .map(|t| {
            t.parse().map_err(|_| {
                HuaweiError::bad_parameter(
                    "triggers may hold REBOOT, CRASH, PANIC, WATCHDOG and SHUTDOWN.",
                )
            })
        })
        .collect::<Result<Vec<Trigger>, _>>()?
        .into_iter()
        .fold(Vec::new(), |mut seen, t| {
            if !seen.contains(&t) {
                seen.push(t);
            }
            seen
        });
    Ok(Start {
        desktop_id,
        kind,
        fps: b.fps,
        interval: seconds("interval_seconds", b.interval_seconds)?,
        max_duration: seconds("max_duration_seconds", b.max_duration_seconds)?,
        before: seconds("before_seconds", b.before_seconds)?,
        after: seconds("after_seconds", b.after_seconds)?,
        triggers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/v2/0a1b2c3d4e5f60718293a4b5c6d7e8f9/screen-records";

    #[test]
    fn routes_and_their_neighbours() {
        let project = "0a1b2c3d4e5f60718293a4b5c6d7e8f9".to_owned();
        assert_eq!(
            route("GET", P).unwrap(),
            Route::List {
                project: project.clone()
            }
        );
        assert_eq!(
            route("POST", P).unwrap(),
            Route::Start {
                project: project.clone()
            }
        );
        assert_eq!(
            route("POST", &format!("{P}/batch-delete")).unwrap(),
            Route::BatchDelete {
                project: project.clone()
            }
        );
        assert_eq!(
            route("GET", &format!("{P}/r%2D1")).unwrap(),
            Route::Show {
                project: project.clone(),
                id: "r-1".into()
            }
        );
        assert_eq!(
            route("HEAD", &format!("{P}/r1/video")).unwrap(),
            Route::Download {
                project,
                id: "r1".into(),
                file: FileKind::Video,
                head: true
            }
        );
        // Workspace's real neighbours, and anything else, are no API here.
        for (method, path) in [
            ("PUT", format!("{P}/r1")),
            ("PUT", format!("{P}/traffic-limit-config")),
            ("DELETE", format!("{P}/r1")),
            ("GET", format!("{P}/r1/stop")),
            ("GET", format!("{P}/r1/video/x")),
            ("GET", "/v2/p/desktops".to_owned()),
            ("GET", "/v3/p/screen-records".to_owned()),
            ("GET", "/".to_owned()),
        ] {
            let e = route(method, &path).unwrap_err();
            assert_eq!(e.code, "APIGW.0101", "{method} {path}");
        }
        // GET of the traffic limits reads as a record id that no record has.
        assert!(matches!(
            route("GET", &format!("{P}/traffic-limit-config")),
            Ok(Route::Show { .. })
        ));
        let long = "x".repeat(65);
        assert_eq!(
            route("GET", &format!("{P}/{long}")).unwrap_err().code,
            "WKS.0001"
        );
        assert_eq!(
            route("GET", "/v2/%zz/screen-records").unwrap_err().code,
            "WKS.0001"
        );
    }

    fn now() -> OffsetDateTime {
        time::macros::datetime!(2026-11-30 12:00:00 UTC)
    }

    #[test]
    fn the_list_query_takes_every_filter() {
        let raw = "desktop_id=d-1&desktop_names=guest1%2Cguest%202&end_time=2026-11-22%2023%3A59%3A59&limit=5&offset=0&sort_field=start_time&sort_type=asc&start_time=2026-11-01%2000%3A00%3A00&status=UPLOAD_COMPLETED&type=FULL&username=alice";
        let q = list_query(raw, now()).unwrap();
        assert_eq!((q.limit, q.offset, q.ascending), (5, 0, true));
        assert_eq!(q.desktop_names, ["guest1", "guest 2"]);
        assert_eq!(q.status, Some(Status::UploadCompleted));
        assert_eq!(q.kind, Some(Kind::Full));
        assert_eq!(q.from, time::macros::datetime!(2026-11-01 00:00:00 UTC));
        assert_eq!(q.to, time::macros::datetime!(2026-11-22 23:59:59 UTC));
        assert_eq!(q.desktop_id.as_deref(), Some("d-1"));
        assert_eq!(q.username.as_deref(), Some("alice"));
    }

    #[test]
    fn the_list_defaults_to_100_newest_first_over_15_days() {
        let q = list_query("", now()).unwrap();
        assert_eq!((q.limit, q.offset, q.ascending), (100, 0, false));
        assert_eq!((q.from, q.to), (now() - time::Duration::days(15), now()));
        let from_only = list_query("start_time=2026-11-01%2000:00:00", now()).unwrap();
        assert_eq!(from_only.to, now());
    }

    #[test]
    fn the_list_query_refuses_what_is_out_of_range() {
        let names = vec!["n"; 101].join(",");
        for raw in [
            "limit=1001".to_owned(),
            "limit=-1".to_owned(),
            "limit=abc".to_owned(),
            "offset=1e3".to_owned(),
            "status=DONE".to_owned(),
            "type=full".to_owned(),
            "sort_field=end_time".to_owned(),
            "sort_type=up".to_owned(),
            "start_time=2026-11-01T00:00:00Z".to_owned(),
            "start_time=2026-11-02%2000:00:00&end_time=2026-11-01%2000:00:00".to_owned(),
            format!("desktop_names={names}"),
            "desktop_names=a,,b".to_owned(),
            format!("username={}", "u".repeat(129)),
            "limit=1&limit=2".to_owned(),
            "marker=x".to_owned(),
            "limit=%zz".to_owned(),
        ] {
            let e = list_query(&raw, now()).unwrap_err();
            assert_eq!((e.status, e.code), (400, "WKS.0001"), "{raw}");
        }
        assert_eq!(list_query("limit=0", now()).unwrap().limit, 0);
        assert_eq!(list_query("limit=1000", now()).unwrap().limit, 1000);
    }

    #[test]
    fn batch_delete_takes_one_to_ten_ids() {
        let body = |n: usize| {
            let records: Vec<String> = (0..n).map(|i| format!("{{\"id\": \"r{i}\"}}")).collect();
            format!("{{\"screen_records\": [{}]}}", records.join(", "))
        };
        let json = Some("application/json;charset=utf-8");
        assert_eq!(batch_delete(json, body(10).as_bytes()).unwrap().len(), 10);
        assert!(batch_delete(json, body(11).as_bytes()).is_err());
        assert!(batch_delete(json, body(0).as_bytes()).is_err());
        let twice = br#"{"screen_records": [{"id": "a"}, {"id": "a"}]}"#;
        assert_eq!(batch_delete(json, twice).unwrap(), ["a"]);
        for bad in [
            &b"{"[..],
            b"",
            br#"{"screen_records": [{"id": ""}]}"#,
            br#"{"records": []}"#,
        ] {
            assert_eq!(batch_delete(json, bad).unwrap_err().code, "WKS.0001");
        }
        assert!(batch_delete(Some("text/plain"), body(1).as_bytes()).is_err());
    }

    #[test]
    fn start_bodies_are_checked() {
        let json = Some("application/json");
        let s = start(json, br#"{"desktop_id": "d-1"}"#).unwrap();
        assert_eq!((s.kind, s.fps), (Kind::Full, None));
        let s = start(json, br#"{"desktop_id": "d-1", "type": "OPERATION", "before_seconds": 5, "triggers": ["PANIC", "REBOOT"]}"#).unwrap();
        assert_eq!(s.before, Some(Duration::from_secs(5)));
        assert_eq!(s.triggers, [Trigger::Panic, Trigger::Reboot]);
        for bad in [
            &br#"{"desktop_id": ""}"#[..],
            br#"{"desktop_id": "d", "type": "BOOT"}"#,
            br#"{"desktop_id": "d", "fps": 0}"#,
            br#"{"desktop_id": "d", "fps": 1000}"#,
            br#"{"desktop_id": "d", "interval_seconds": 0}"#,
            br#"{"desktop_id": "d", "triggers": ["FIRE"]}"#,
            br#"{"desktop_id": "d", "colour": "red"}"#,
            br#"{"type": "FULL"}"#,
        ] {
            assert_eq!(
                start(json, bad).unwrap_err().code,
                "WKS.0001",
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;
    use crate::api::fuzzing::strategies;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Every path the SDK builds is routed to what it names, its ids
        /// decoded; any other path is `APIGW.0101` or `WKS.0001`, never a panic.
        #[test]
        fn routes_read_back_what_was_built(
            project in "[0-9a-f]{32}",
            record in "[a-z0-9 é-]{1,20}",
            which in 0..5usize,
            junk in "(/v2)?(/[a-z0-9%.-]{0,10}){0,5}",
            method in "GET|POST|HEAD|PUT|[A-Z]{0,6}",
        ) {
            let id = percent_encoding::utf8_percent_encode(&record, percent_encoding::NON_ALPHANUMERIC);
            let base = format!("/v2/{project}/screen-records");
            let (method_used, path) = match which {
                0 => ("GET", base.clone()),
                1 => ("POST", format!("{base}/batch-delete")),
                2 => ("GET", format!("{base}/{id}")),
                3 => ("POST", format!("{base}/{id}/stop")),
                _ => ("GET", format!("{base}/{id}/video")),
            };
            let routed = route(method_used, &path).unwrap();
            prop_assert_eq!(routed.project(), project.as_str());
            match routed {
                Route::Show { id, .. } | Route::Stop { id, .. } | Route::Download { id, .. } => {
                    prop_assert_eq!(id, record.clone());
                }
                Route::List { .. } | Route::BatchDelete { .. } | Route::Start { .. } => {}
            }
            let _ = route(&method, &junk);
        }

        /// The list's query and the bodies: read or refused, never a panic;
        /// a limit and offset given are the ones read.
        #[test]
        fn queries_and_bodies_never_panic(
            query in strategies::query(),
            body in strategies::body(),
            limit in 1u64..=MAX_LIMIT,
            offset in 0u64..1000,
        ) {
            let now = OffsetDateTime::from_unix_timestamp(1_795_330_814).unwrap();
            let _ = list_query(&query, now);
            let read = list_query(&format!("limit={limit}&offset={offset}"), now).unwrap();
            prop_assert_eq!((read.limit, read.offset), (limit, offset));
            for content_type in [None, Some("application/json"), Some("text/plain")] {
                let _ = start(content_type, &body);
                let _ = batch_delete(content_type, &body);
            }
        }
    }
}
