//! What goes back on the wire in Nova's dialect: the version documents, the
//! os-instance-actions bodies per microversion, and Nova's fault bodies.
//!
//! Sources: `nova/api/openstack/compute/instance_actions.py` (which keys, and
//! who sees events, tracebacks, host and details), its response schemas,
//! `compute/versions.py` and `views/versions.py` (discovery), `wsgi.Fault`
//! (fault names, `retryAfter`), `nova.utils.generate_hostid` (hostId).

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha224};
use time::OffsetDateTime;

use super::microversion::{self, Version};
use crate::api::pipeline::WireError;
use crate::service::{self, Outcome};

/// What Nova sends with every JSON body, faults included.
pub const CONTENT_TYPE: &str = "application/json";
pub const FAULT_CONTENT_TYPE: &str = "application/json; charset=UTF-8";
/// Messages carry client text (an id, a header): cut to this.
const MAX_ECHO: usize = 255;
/// Nova's `[api] max_limit` default: the largest page it returns.
pub const MAX_LIMIT: u32 = 1000;

// ---------------------------------------------------------------- versions

/// `updated` of Nova's v2.1 entry, unchanged since the API was written.
const V21_UPDATED: &str = "2013-07-23T11:33:21Z";
const DESCRIBED_BY: &str = "http://docs.openstack.org/";

/// `GET /`: Nova lists v2.0 (DEPRECATED) and v2.1; vmshot serves only v2.1,
/// so only it is listed (a client must not be sent to a /v2 that is not
/// there). The list's entries carry only a self link, no media-types.
/// `root` is the endpoint's root URL without a trailing slash.
pub fn versions_document(root: &str) -> Value {
    json!({"versions": [{
        "id": "v2.1",
        "status": "CURRENT",
        "version": microversion::MAX.to_string(),
        "min_version": microversion::MIN.to_string(),
        "updated": V21_UPDATED,
        "links": [{"rel": "self", "href": format!("{}/v2.1/", root.trim_end_matches('/'))}],
    }]})
}

/// `GET /v2.1/`: one version, with self and describedby links and its
/// media-types.
pub fn version_document(root: &str) -> Value {
    json!({"version": {
        "id": "v2.1",
        "status": "CURRENT",
        "version": microversion::MAX.to_string(),
        "min_version": microversion::MIN.to_string(),
        "updated": V21_UPDATED,
        "links": [
            {"rel": "self", "href": format!("{}/v2.1/", root.trim_end_matches('/'))},
            {"rel": "describedby", "type": "text/html", "href": DESCRIBED_BY},
        ],
        "media-types": [{
            "base": "application/json",
            "type": "application/vnd.openstack.compute+json;version=2.1",
        }],
    }})
}

// ---------------------------------------------------------- instance actions

/// An action as the store gives it, before any microversion decides what
/// shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionView {
    pub request_id: String,
    pub action: String,
    pub instance_uuid: String,
    pub project_id: Option<String>,
    pub user_id: Option<String>,
    pub message: Option<String>,
    pub start_time: OffsetDateTime,
    pub updated_at: Option<OffsetDateTime>,
    pub events: Vec<EventView>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventView {
    pub event: String,
    pub start_time: OffsetDateTime,
    pub finish_time: Option<OffsetDateTime>,
    /// `Success`, `Error`, or none while it runs.
    pub result: Option<String>,
    pub traceback: Option<String>,
    /// The compute host's name.
    pub host: Option<String>,
    pub details: Option<String>,
}

/// Nova's time format: oslo's `to_primitive` writes naive UTC datetimes as
/// `%Y-%m-%dT%H:%M:%S.%f`, no zone. Every time field of these bodies has it.
pub fn nova_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

fn time_or_null(t: Option<OffsetDateTime>) -> Value {
    t.map_or(Value::Null, |t| Value::String(nova_time(t)))
}

/// Nova's obfuscated host id: sha224 of project id then host, in hex; empty
/// for no host.
pub fn host_id(project_id: &str, host: Option<&str>) -> String {
    match host {
        Some(host) if !host.is_empty() => {
            hex::encode(Sha224::digest(format!("{project_id}{host}").as_bytes()))
        }
        _ => String::new(),
    }
}

fn action_object(action: &ActionView, version: Version) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("action".into(), json!(action.action));
    out.insert("instance_uuid".into(), json!(action.instance_uuid));
    out.insert("request_id".into(), json!(action.request_id));
    out.insert("user_id".into(), json!(action.user_id));
    out.insert("project_id".into(), json!(action.project_id));
    out.insert("start_time".into(), json!(nova_time(action.start_time)));
    out.insert("message".into(), json!(action.message));
    if version.at_least(2, 58) {
        out.insert("updated_at".into(), time_or_null(action.updated_at));
    }
    out
}

/// Where the next page's link points, as Nova's `_get_next_link` builds it.
#[derive(Debug, Clone)]
pub struct Page<'a> {
    /// The v2.1 endpoint, e.g. `http://host:8774/v2.1`.
    pub endpoint: &'a str,
    /// The project id, when the request's path had one.
    pub project_in_path: Option<&'a str>,
    pub server_id: &'a str,
    /// The request's query parameters (already validated, each once).
    pub query: &'a [(String, String)],
    /// `limit` as asked, before capping.
    pub limit: Option<u64>,
}

/// `{"instanceActions": [...]}`, with `links` (a next page) from 2.58 when
/// the page is full.
pub fn action_list(actions: &[ActionView], version: Version, page: &Page<'_>) -> Value {
    let list: Vec<Value> = actions
        .iter()
        .map(|a| Value::Object(action_object(a, version)))
        .collect();
    let mut body = Map::new();
    body.insert("instanceActions".into(), Value::Array(list));
    if version.at_least(2, 58) {
        let max_items = page
            .limit
            .map_or(MAX_LIMIT as u64, |l| l.min(MAX_LIMIT as u64));
        if let (true, Some(last)) = (
            max_items > 0 && max_items as usize == actions.len(),
            actions.last(),
        ) {
            body.insert(
                "links".into(),
                json!([{"rel": "next", "href": next_link(page, &last.request_id)}]),
            );
        }
    }
    Value::Object(body)
}

fn next_link(page: &Page<'_>, marker: &str) -> String {
    let mut params: Vec<(&str, &str)> = page
        .query
        .iter()
        .filter(|(k, _)| k != "marker")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    params.push(("marker", marker));
    params.sort();
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", quote_plus(k), quote_plus(v)))
        .collect();
    let mut url = page.endpoint.trim_end_matches('/').to_owned();
    if let Some(project) = page.project_in_path {
        url = format!("{url}/{project}");
    }
    format!(
        "{url}/servers/{}/os-instance-actions?{}",
        page.server_id,
        query.join("&")
    )
}

/// Python's `urllib.parse.quote_plus`: unreserved bytes kept, space as `+`.
fn quote_plus(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Who reads an action: Nova's default policy shows events, tracebacks,
/// host and details to admins only; from 2.51 owners see events too, without
/// traceback or host; hostId is for everyone from 2.62.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reader {
    pub admin: bool,
}

/// `{"instanceAction": {...}}` with `events` as this reader and version see
/// them.
pub fn action_show(action: &ActionView, version: Version, reader: Reader) -> Value {
    let mut out = action_object(action, version);
    let show_events = reader.admin || version.at_least(2, 51);
    if show_events {
        // Events made by periodic tasks have no project: Nova then hashes
        // with the instance's project, which is the action's here.
        let project = action.project_id.as_deref().unwrap_or("");
        let events: Vec<Value> = action
            .events
            .iter()
            .map(|e| {
                let mut ev = Map::new();
                ev.insert("event".into(), json!(e.event));
                ev.insert("start_time".into(), json!(nova_time(e.start_time)));
                ev.insert("finish_time".into(), time_or_null(e.finish_time));
                ev.insert("result".into(), json!(e.result));
                if reader.admin {
                    ev.insert("traceback".into(), json!(e.traceback));
                    if version.at_least(2, 62) {
                        ev.insert("host".into(), json!(e.host.as_deref().unwrap_or("")));
                    }
                }
                if version.at_least(2, 62) {
                    ev.insert("hostId".into(), json!(host_id(project, e.host.as_deref())));
                }
                if reader.admin && version.at_least(2, 84) {
                    ev.insert("details".into(), json!(e.details));
                }
                Value::Object(ev)
            })
            .collect();
        out.insert("events".into(), Value::Array(events));
    }
    json!({ "instanceAction": out })
}

/// A 200 with Nova's JSON and the version headers.
pub fn ok(body: &Value, version: Version) -> Response {
    let mut response = (StatusCode::OK, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    microversion::echo(version, headers);
    response
}

// ------------------------------------------------------------------- faults

/// An error as Nova reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NovaError {
    pub status: StatusCode,
    /// The fault's key: `itemNotFound`, `badRequest`, ...
    pub name: &'static str,
    pub message: String,
    pub outcome: Outcome,
    /// For the log only: what the message leaves out.
    pub detail: Option<String>,
    /// Seconds, for 413/429 (`retryAfter` and `Retry-After`).
    pub retry_after: Option<u64>,
    /// Refused before Nova saw the request, by keystonemiddleware, which
    /// has its own body: `{"error": {"code", "title", "message"}}`.
    pub by_middleware: bool,
}

impl WireError for NovaError {
    fn code(&self) -> &'static str {
        self.name
    }

    fn outcome(&self) -> Outcome {
        self.outcome
    }

    fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }
}

/// `wsgi.Fault._fault_names`; any other status is a `computeFault` (406
/// and 500 among them).
pub fn fault_name(status: u16) -> &'static str {
    match status {
        400 => "badRequest",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "itemNotFound",
        405 => "badMethod",
        409 => "conflictingRequest",
        413 | 429 => "overLimit",
        415 => "badMediaType",
        501 => "notImplemented",
        503 => "serviceUnavailable",
        _ => "computeFault",
    }
}

/// Client text in a message, cut so a hostile id cannot grow the answer.
pub(super) fn echo(s: &str) -> &str {
    match s.char_indices().nth(MAX_ECHO) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

impl NovaError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(status).expect("valid status"),
            name: fault_name(status),
            message: message.into(),
            outcome: match status {
                401 | 403 => Outcome::AuthError,
                404 => Outcome::NotFound,
                413 | 429 => Outcome::Throttled,
                503 => Outcome::Unavailable,
                s if s >= 500 => Outcome::Internal,
                _ => Outcome::ClientError,
            },
            detail: None,
            retry_after: None,
            by_middleware: false,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    /// `InvalidAPIVersionString`.
    pub fn invalid_version(asked: &str) -> Self {
        Self::bad_request(format!(
            "API Version String {} is of invalid format. Must be of format MajorNum.MinorNum.",
            echo(asked)
        ))
    }

    /// `InvalidGlobalAPIVersion`, answered with `HTTPNotAcceptable`.
    pub fn unsupported_version(asked: &str) -> Self {
        Self::new(
            406,
            format!(
                "Version {} is not supported by the API. Minimum is {} and maximum is {}.",
                echo(asked),
                microversion::MIN,
                microversion::MAX
            ),
        )
    }

    /// The path's project is not the token's (`wsgi.Resource._process_stack`).
    pub fn project_mismatch(in_url: &str, in_token: &str) -> Self {
        Self::bad_request(format!(
            "Malformed request URL: URL's project_id '{}' doesn't match Context's project_id '{}'",
            echo(in_url),
            echo(in_token)
        ))
    }

    /// `InstanceNotFound`: also Nova's answer to a server id that is no UUID.
    pub fn instance_not_found(server_id: &str) -> Self {
        Self::new(
            404,
            format!("Instance {} could not be found.", echo(server_id)),
        )
    }

    /// What `InstanceActionsController.show` says for an unknown request id.
    pub fn action_not_found(request_id: &str) -> Self {
        Self::new(404, format!("Action {} not found", echo(request_id)))
    }

    /// A path no route matches: webob's `HTTPNotFound` explanation.
    pub fn no_route() -> Self {
        Self::new(404, "The resource could not be found.")
    }

    /// A known path with another method: webob's `HTTPMethodNotAllowed`.
    pub fn bad_method() -> Self {
        Self::new(405, "The method is not allowed for the requested URL.")
    }

    /// No or a refused token: keystonemiddleware's answer.
    pub fn unauthorized() -> Self {
        Self {
            by_middleware: true,
            ..Self::new(401, "The request you have made requires authentication.")
        }
    }

    /// Keystone did not answer: keystonemiddleware's answer.
    pub fn keystone_unavailable() -> Self {
        Self {
            by_middleware: true,
            ..Self::new(503, "The Keystone service is temporarily unavailable.")
        }
    }

    pub fn over_limit(status: u16, message: impl Into<String>, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(status, message)
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, message)
    }

    /// The one mapping from the core's errors, for `server_id` as the caller
    /// named it.
    pub fn from_core(err: &service::Error, server_id: &str) -> Self {
        use service::Error as E;
        let id = echo(server_id);
        let wire = match err {
            E::NotFound { .. } => Self::instance_not_found(server_id),
            // Nova's raise_http_conflict_for_instance_invalid_state wording.
            E::NotRunning { state, .. } => Self::new(
                409,
                format!("Cannot 'screenshot' instance {id} while it is in vm_state {state}"),
            ),
            E::NoDisplay { .. } => Self::new(
                409,
                format!("Instance {id} has no display device: there is no screen to capture."),
            ),
            E::NoSuchScreen { .. } | E::NoSuchUpload { .. } | E::Invalid { .. } => {
                Self::bad_request(format!("{err}."))
            }
            E::NoSuchRecording { .. } => Self::new(404, format!("{err}.")),
            // What Nova's `ConsoleNotAvailable` says.
            E::NoConsoleLog { .. } => Self::new(404, "Guest does not have a console available."),
            E::Conflict { .. } => Self::new(409, format!("{err}.")),
            E::OverBudget { .. } => Self::unavailable(format!("{err}.")),
            // What Nova's `MarkerNotFound` says.
            E::NoSuchMarker { marker } => {
                Self::bad_request(format!("Marker {} could not be found.", echo(marker)))
            }
            E::Throttled { retry_after, .. } => Self::over_limit(
                429,
                "This request was rate-limited.",
                retry_after.as_secs_f64().ceil().max(1.0) as u64,
            ),
            E::Busy => Self::unavailable("Too many requests in progress on this host."),
            E::Timeout(_) | E::Unavailable { .. } | E::StorageFull { .. } => {
                Self::unavailable(format!("The service is unavailable: {err}."))
            }
            E::TooLarge { .. } | E::Undecodable { .. } | E::Libvirt { .. } | E::Failed { .. } => {
                Self::internal(format!("Unexpected API Error: {err}."))
            }
        };
        Self {
            outcome: err.outcome(),
            detail: err.detail().map(str::to_owned),
            ..wire
        }
    }

    /// The fault document: `{"<name>": {"code": N, "message": "…"}}`, with
    /// `retryAfter` (a string, from the header) for 413/429.
    pub fn body(&self) -> Value {
        if self.by_middleware {
            let title = self.status.canonical_reason().unwrap_or("Error");
            return json!({"error": {
                "code": self.status.as_u16(),
                "title": title,
                "message": self.message,
            }});
        }
        let mut inner = Map::new();
        inner.insert("code".into(), json!(self.status.as_u16()));
        inner.insert("message".into(), json!(self.message));
        if let Some(retry) = self.retry_after {
            inner.insert("retryAfter".into(), json!(retry.to_string()));
        }
        json!({ self.name: inner })
    }

    /// The whole answer. `version` is the settled microversion: Nova echoes
    /// it on faults too, and has none when the version itself was refused.
    pub fn render(&self, version: Option<Version>) -> Response {
        let mut response = (self.status, self.body().to_string()).into_response();
        let headers: &mut HeaderMap = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(FAULT_CONTENT_TYPE),
        );
        if let Some(retry) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry));
        }
        // keystonemiddleware answers before Nova settles a version.
        if let Some(version) = version.filter(|_| !self.by_middleware) {
            microversion::echo(version, headers);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use time::macros::datetime;

    fn action() -> ActionView {
        ActionView {
            request_id: "req-3293a3f1-b44c-4609-b8d2-d81b105636b8".into(),
            action: "screenshot".into(),
            instance_uuid: "b48316c5-71e8-45e4-9884-6c78055b9b13".into(),
            project_id: Some("147".into()),
            user_id: Some("789".into()),
            message: None,
            start_time: datetime!(2018-04-25 01:26:36.790544 UTC),
            updated_at: Some(datetime!(2018-04-25 01:26:37 UTC)),
            events: vec![EventView {
                event: "compute_screenshot".into(),
                start_time: datetime!(2018-04-25 01:26:36.8 UTC),
                finish_time: Some(datetime!(2018-04-25 03:26:37 +02:00)),
                result: Some("Success".into()),
                traceback: None,
                host: Some("compute".into()),
                details: Some("ok".into()),
            }],
        }
    }

    fn keys(v: &Value) -> Vec<&str> {
        let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        k.sort();
        k
    }

    #[test]
    fn times_are_naive_utc_with_microseconds() {
        assert_eq!(
            nova_time(datetime!(2018-04-25 01:26:36.790544 UTC)),
            "2018-04-25T01:26:36.790544"
        );
        assert_eq!(
            nova_time(datetime!(2018-04-25 03:26:36 +02:00)),
            "2018-04-25T01:26:36.000000"
        );
    }

    #[test]
    fn host_id_is_sha224_of_project_then_host() {
        // hashlib.sha224(b"147compute").hexdigest()
        assert_eq!(
            host_id("147", Some("compute")),
            hex::encode(Sha224::digest(b"147compute"))
        );
        assert_eq!(host_id("147", Some("compute")).len(), 56);
        assert_eq!(host_id("147", None), "");
        assert_eq!(host_id("147", Some("")), "");
    }

    #[test]
    fn the_list_gains_updated_at_and_links_at_2_58() {
        let page = Page {
            endpoint: "http://h:8774/v2.1",
            project_in_path: Some("147"),
            server_id: "b48316c5-71e8-45e4-9884-6c78055b9b13",
            query: &[
                ("limit".into(), "1".into()),
                ("changes-since".into(), "2018-01-01 00:00".into()),
            ],
            limit: Some(1),
        };
        let old = action_list(&[action()], Version::new(2, 57), &page);
        assert_eq!(keys(&old), ["instanceActions"]);
        assert_eq!(
            keys(&old["instanceActions"][0]),
            [
                "action",
                "instance_uuid",
                "message",
                "project_id",
                "request_id",
                "start_time",
                "user_id"
            ]
        );
        assert_eq!(
            old["instanceActions"][0]["start_time"],
            "2018-04-25T01:26:36.790544"
        );
        assert_eq!(old["instanceActions"][0]["message"], Value::Null);

        let new = action_list(&[action()], Version::new(2, 58), &page);
        assert_eq!(
            new["instanceActions"][0]["updated_at"],
            "2018-04-25T01:26:37.000000"
        );
        assert_eq!(
            new["links"],
            json!([{"rel": "next", "href": "http://h:8774/v2.1/147/servers/b48316c5-71e8-45e4-9884-6c78055b9b13/os-instance-actions?changes-since=2018-01-01+00%3A00&limit=1&marker=req-3293a3f1-b44c-4609-b8d2-d81b105636b8"}])
        );
        // A page that is not full has no next link; nor does limit=0.
        let short = Page {
            limit: Some(2),
            project_in_path: None,
            ..page.clone()
        };
        assert_eq!(
            keys(&action_list(&[action()], Version::new(2, 58), &short)),
            ["instanceActions"]
        );
        let zero = Page {
            limit: Some(0),
            ..page.clone()
        };
        assert_eq!(
            keys(&action_list(&[], Version::new(2, 58), &zero)),
            ["instanceActions"]
        );
        // Without a project in the path, none in the link.
        let bare = Page {
            project_in_path: None,
            query: &[],
            ..page
        };
        let href = action_list(&[action()], Version::new(2, 96), &bare)["links"][0]["href"].clone();
        assert_eq!(
            href,
            "http://h:8774/v2.1/servers/b48316c5-71e8-45e4-9884-6c78055b9b13/os-instance-actions?marker=req-3293a3f1-b44c-4609-b8d2-d81b105636b8"
        );
    }

    #[test]
    fn events_per_microversion_and_reader() {
        let admin = Reader { admin: true };
        let member = Reader { admin: false };
        let show = |v: (u32, u32), r| {
            action_show(&action(), Version::new(v.0, v.1), r)["instanceAction"].clone()
        };

        // Before 2.51 only admins see events, with traceback.
        assert!(show((2, 50), member).get("events").is_none());
        assert_eq!(
            keys(&show((2, 1), admin)["events"][0]),
            ["event", "finish_time", "result", "start_time", "traceback"]
        );
        // 2.51: owners see events, without traceback.
        assert_eq!(
            keys(&show((2, 51), member)["events"][0]),
            ["event", "finish_time", "result", "start_time"]
        );
        assert!(show((2, 57), member).get("updated_at").is_none());
        assert!(show((2, 58), member).get("updated_at").is_some());
        // 2.62: hostId for all, host for admins.
        assert_eq!(
            keys(&show((2, 62), member)["events"][0]),
            ["event", "finish_time", "hostId", "result", "start_time"]
        );
        let ev = show((2, 62), admin)["events"][0].clone();
        assert_eq!(
            keys(&ev),
            [
                "event",
                "finish_time",
                "host",
                "hostId",
                "result",
                "start_time",
                "traceback"
            ]
        );
        assert_eq!(ev["hostId"], host_id("147", Some("compute")));
        assert_eq!(ev["finish_time"], "2018-04-25T01:26:37.000000");
        // 2.84: details for admins only.
        assert_eq!(show((2, 84), admin)["events"][0]["details"], "ok");
        assert!(show((2, 84), member)["events"][0].get("details").is_none());
    }

    #[test]
    fn version_documents() {
        let all = versions_document("http://h:8774/");
        let v = &all["versions"][0];
        assert_eq!(all["versions"].as_array().unwrap().len(), 1);
        assert_eq!(
            keys(v),
            ["id", "links", "min_version", "status", "updated", "version"]
        );
        assert_eq!(
            (v["id"].as_str(), v["status"].as_str()),
            (Some("v2.1"), Some("CURRENT"))
        );
        assert_eq!(v["version"], microversion::MAX.to_string());
        assert_eq!(v["min_version"], "2.1");
        assert_eq!(v["links"][0]["href"], "http://h:8774/v2.1/");

        let one = version_document("http://h:8774");
        let v = &one["version"];
        assert_eq!(
            keys(v),
            [
                "id",
                "links",
                "media-types",
                "min_version",
                "status",
                "updated",
                "version"
            ]
        );
        assert_eq!(
            v["links"][0],
            json!({"rel": "self", "href": "http://h:8774/v2.1/"})
        );
        assert_eq!(v["links"][1]["rel"], "describedby");
        assert_eq!(
            v["media-types"][0]["type"],
            "application/vnd.openstack.compute+json;version=2.1"
        );
    }

    #[test]
    fn faults_in_novas_shape() {
        let e = NovaError::instance_not_found("nope");
        assert_eq!(
            e.body(),
            json!({"itemNotFound": {"code": 404, "message": "Instance nope could not be found."}})
        );
        assert_eq!(e.outcome, Outcome::NotFound);
        let e = NovaError::project_mismatch("a", "b");
        assert_eq!(
            e.body()["badRequest"]["message"],
            "Malformed request URL: URL's project_id 'a' doesn't match Context's project_id 'b'"
        );
        for (status, name) in [
            (400, "badRequest"),
            (401, "unauthorized"),
            (403, "forbidden"),
            (404, "itemNotFound"),
            (405, "badMethod"),
            (406, "computeFault"),
            (409, "conflictingRequest"),
            (413, "overLimit"),
            (429, "overLimit"),
            (500, "computeFault"),
            (503, "serviceUnavailable"),
        ] {
            assert_eq!(NovaError::new(status, "m").name, name);
        }
        let throttled = service::Error::Throttled {
            domain: "d".into(),
            retry_after: Duration::from_millis(1500),
        };
        let e = NovaError::from_core(&throttled, "s");
        assert_eq!(
            e.body(),
            json!({"overLimit": {"code": 429, "message": "This request was rate-limited.", "retryAfter": "2"}})
        );
        assert_eq!(e.outcome, Outcome::Throttled);
        let r = e.render(Some(Version::new(2, 58)));
        assert_eq!(r.headers()["retry-after"], "2");
        assert_eq!(r.headers()["openstack-api-version"], "compute 2.58");
        assert_eq!(r.headers()["content-type"], FAULT_CONTENT_TYPE);
        let r = NovaError::invalid_version("x").render(None);
        assert!(r.headers().get("openstack-api-version").is_none());

        let nf = NovaError::from_core(
            &service::Error::NotFound {
                domain: "dom".into(),
            },
            "uuid-1",
        );
        assert_eq!(
            (nf.status.as_u16(), nf.message.as_str()),
            (404, "Instance uuid-1 could not be found.")
        );
        let lib = NovaError::from_core(
            &service::Error::Libvirt {
                what: "screenshot".into(),
                detail: "/secret/path".into(),
            },
            "u",
        );
        assert_eq!(
            (lib.name, lib.detail.as_deref()),
            ("computeFault", Some("/secret/path"))
        );
        assert!(!lib.message.contains("/secret/path"));
        // A hostile id is cut in the message.
        let long = "x".repeat(10_000);
        assert!(NovaError::instance_not_found(&long).message.len() < 300);
    }
}
