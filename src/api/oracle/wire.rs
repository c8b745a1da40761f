//! What goes over the wire in Compute Classic's dialect: object names, the
//! screen capture request object (seed 000), the list body, and Oracle's
//! error body, all as `application/oracle-compute-v3+json`.
//!
//! Errors: Oracle's body is `{"message": "…"}` (what Oracle's Go clients
//! read back) with the statuses of Compute Classic's "Status Codes" page:
//! 400 invalid parameters, 401 APIUnauthorizedError, 403 APIForbiddenError,
//! 404 APINotFoundError, 405 APIMethodNotAllowedError, 406
//! APINotAcceptableError, 409 APIConflictError ("a conflict with the current
//! state of the resource"), 413 APIRequestTooLarge, 415
//! APIUnsupportedTypeError, 429 (too many requests), 500 and 503. The class
//! names are only the log's `code`; Oracle puts none in the body.

use std::fmt;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::api::pipeline::WireError;
use crate::service::{self, DomainState, Outcome};

/// Oracle's media type, sent on every body and accepted on requests.
pub const MEDIA_TYPE: &str = "application/oracle-compute-v3+json";
/// Oracle's response header for the call id (`x-oracle-compute-call-id`).
pub const CALL_ID_HEADER: &str = "x-oracle-compute-call-id";
/// Messages carry client text (names): cut to this.
pub const MAX_MESSAGE: usize = 512;
/// Bounds on object names: the whole, one part, and the parts after the
/// container.
pub const MAX_NAME: usize = 512;
pub const MAX_PART: usize = 128;
pub const MAX_PARTS: usize = 4;

/// A call id as Oracle spells them: `yymmdd` and 32 hex digits
/// (`170216d541112a6f8a60aeeabb628d5996c50f` in seed 000), used both for the
/// header and for a capture's `request_id`.
pub fn call_id(now: OffsetDateTime, id: uuid::Uuid) -> String {
    format!(
        "{:02}{:02}{:02}{}",
        now.year().rem_euclid(100),
        u8::from(now.month()),
        now.day(),
        id.simple()
    )
}

/// Whether a request's `Content-Type` is one Oracle's API takes: its own
/// media type or plain JSON, with or without parameters.
pub fn is_json_media(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case(MEDIA_TYPE) || essence.eq_ignore_ascii_case("application/json")
}

/// Times as seed 000 shows them: `2017-02-16T05:37:18Z`.
pub fn format_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

// Object names.

/// A Compute Classic object name, `/Compute-{domain}/{user}/{part}/…`: the
/// container `/Compute-{domain}/{user}/` and at least one part after it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectName {
    pub domain: String,
    pub user: String,
    pub parts: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the name is longer than {MAX_NAME} bytes")]
    TooLong,
    #[error("a name starts with /Compute-{{identity domain}}/{{user}}/")]
    NoContainer,
    #[error("a name has 1 to {MAX_PARTS} parts after its container")]
    Parts,
    #[error("a part of the name is empty, '.', '..', longer than {MAX_PART} bytes or has other characters than letters, digits and '._-@+'")]
    BadPart,
    #[error("the name is not in the identity domain {0}")]
    OtherDomain(String),
}

fn valid_part(part: &str) -> bool {
    !part.is_empty()
        && part.len() <= MAX_PART
        && part != "."
        && part != ".."
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@+".contains(&b))
}

/// `/Compute-{domain}/{user}` and what follows it (without its slash).
fn split_container(name: &str) -> Result<(&str, &str, &str), NameError> {
    if name.len() > MAX_NAME {
        return Err(NameError::TooLong);
    }
    let rest = name
        .strip_prefix("/Compute-")
        .ok_or(NameError::NoContainer)?;
    let (domain, rest) = rest.split_once('/').ok_or(NameError::NoContainer)?;
    let (user, rest) = rest.split_once('/').unwrap_or((rest, ""));
    if !super::config::valid_domain(domain) || !super::credentials::valid_user_name(user) {
        return Err(NameError::NoContainer);
    }
    Ok((domain, user, rest))
}

impl ObjectName {
    pub fn parse(name: &str) -> Result<Self, NameError> {
        let (domain, user, rest) = split_container(name)?;
        let parts: Vec<&str> = rest.split('/').collect();
        if rest.is_empty() || parts.len() > MAX_PARTS {
            return Err(NameError::Parts);
        }
        if !parts.iter().all(|p| valid_part(p)) {
            return Err(NameError::BadPart);
        }
        Ok(Self {
            domain: domain.to_owned(),
            user: user.to_owned(),
            parts: parts.into_iter().map(str::to_owned).collect(),
        })
    }

    /// Parsed, and in `identity_domain`.
    pub fn parse_in(name: &str, identity_domain: &str) -> Result<Self, NameError> {
        let parsed = Self::parse(name)?;
        if parsed.domain != identity_domain {
            return Err(NameError::OtherDomain(identity_domain.to_owned()));
        }
        Ok(parsed)
    }

    /// `/Compute-{domain}/{user}/`, the container it belongs to.
    #[cfg(test)]
    pub fn container(&self) -> String {
        format!("/Compute-{}/{}/", self.domain, self.user)
    }

    /// The parts after the container, joined: `vm1` or `vm1/{uuid}`.
    pub fn relative(&self) -> String {
        self.parts.join("/")
    }

    pub fn last(&self) -> &str {
        self.parts.last().expect("at least one part")
    }

    /// A new name under `self`: a capture of instance `vm1` is
    /// `/Compute-acme/jack/vm1/{id}` in the caller's container.
    pub fn child_in(&self, domain: &str, user: &str, id: &str) -> Self {
        let mut parts = self.parts.clone();
        parts.push(id.to_owned());
        Self {
            domain: domain.to_owned(),
            user: user.to_owned(),
            parts,
        }
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "/Compute-{}/{}/{}",
            self.domain,
            self.user,
            self.relative()
        )
    }
}

/// A container as a list path gives it: `/Compute-{domain}/{user}/` (the
/// trailing slash is Oracle's and optional here). `(domain, user)`.
pub fn parse_container(path: &str) -> Result<(String, String), NameError> {
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    let (domain, user, rest) = split_container(trimmed)?;
    if !rest.is_empty() {
        return Err(NameError::Parts);
    }
    Ok((domain.to_owned(), user.to_owned()))
}

/// A `Host` header fit to build URIs from: a DNS name or IP literal with an
/// optional port, nothing that could break out of the authority.
pub fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
}

/// `https://host/console/screencapture/Compute-acme/jack/vm1/{id}`: names
/// carry only path-safe characters, so nothing needs escaping.
pub fn capture_uri(scheme: &str, host: &str, name: &ObjectName) -> String {
    format!("{scheme}://{host}/console/screencapture{name}")
}

/// Where vmshot serves the capture's JPEG itself (Oracle points into Object
/// Storage Classic instead): beside the capture, under `media/`.
pub fn media_uri(scheme: &str, host: &str, name: &ObjectName) -> String {
    format!("{scheme}://{host}/console/screencapture/media{name}")
}

/// `GET /instanceconsole/{name}`'s body (`InstanceConsole-response`): the
/// serial output as text, CRLF kept, and when the log was last written, in
/// the documented form (`2016-06-17T09:21:19.662570`, UTC, no zone).
#[derive(Debug, Serialize)]
pub struct InstanceConsole {
    pub name: String,
    pub output: String,
    pub timestamp: Option<String>,
    pub uri: String,
}

pub fn console_uri(scheme: &str, host: &str, name: &ObjectName) -> String {
    format!("{scheme}://{host}/instanceconsole{name}")
}

pub fn console_time(t: OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]"
    );
    let t = t.to_offset(time::UtcOffset::UTC);
    t.format(&format).unwrap_or_default()
}

// The capture object.

/// A capture's progress (seed 000): `queued → pending → in-progress →
/// uploading → complete`, or `error` from any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Queued,
    Pending,
    InProgress,
    Uploading,
    Complete,
    Error,
}

impl State {
    #[cfg(test)]
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Complete | Self::Error)
    }
}

/// Seed 000 shows only `not_requested`; the others are vmshot's `[U]`:
/// `requested` until the job sees it, then `complete` (stopped before the
/// capture completed) or `error` (too late: `error_reason` says why).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelState {
    NotRequested,
    Requested,
    Complete,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cancellation {
    pub state: CancelState,
    /// `null` unless the cancel failed (seed 000 shows `null`).
    pub error_reason: Option<String>,
}

/// The screen capture request object, every field always present: seed 000
/// shows `error_reason` set on error and `cancellation.error_reason` as
/// `null`, so an unset field is `null`, never absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScreenCapture {
    /// The storage account named at creation (Oracle's
    /// `/Compute-{domain}/cloud_storage`).
    pub account: String,
    pub cancel: bool,
    pub cancellation: Cancellation,
    pub creation_time: String,
    pub error_reason: Option<String>,
    pub instance: String,
    /// `null` until the JPEG is stored.
    pub media_uri: Option<String>,
    pub name: String,
    pub request_id: String,
    pub state: State,
    pub uri: String,
}

/// Oracle's list body: `{"result": […]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct List {
    pub result: Vec<ScreenCapture>,
}

/// A body in Oracle's media type.
pub fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let text = serde_json::to_string(body).expect("plain data serializes");
    let mut response = (status, text).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
    response
}

// Errors.

/// An error as Compute Classic reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OracleError {
    pub status: StatusCode,
    pub message: String,
    pub outcome: Outcome,
    /// For the log only: what the message leaves out.
    pub detail: Option<String>,
    /// Seconds for `Retry-After` on 429 and 503.
    pub retry_after: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct ErrorBody {
    message: String,
}

impl WireError for OracleError {
    fn code(&self) -> &'static str {
        match self.status.as_u16() {
            400 => "APIClientError",
            401 => "APIUnauthorizedError",
            403 => "APIForbiddenError",
            404 => "APINotFoundError",
            405 => "APIMethodNotAllowedError",
            406 => "APINotAcceptableError",
            409 => "APIConflictError",
            413 => "APIRequestTooLarge",
            415 => "APIUnsupportedTypeError",
            429 => "APITooManyRequestsError",
            503 => "APIServiceUnavailableError",
            _ => "APIInternalServerError",
        }
    }

    fn outcome(&self) -> Outcome {
        self.outcome
    }

    fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }
}

impl OracleError {
    fn new(status: u16, outcome: Outcome, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(status).expect("valid status"),
            message: clip(&message.into()),
            outcome,
            detail: None,
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, Outcome::ClientError, message)
    }

    /// No cookie, a bad or expired one, or a wrong password: Oracle answers
    /// all with 401 and the client authenticates again.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, Outcome::AuthError, message)
    }

    /// Authenticated, but without the role or outside the container.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, Outcome::AuthError, message)
    }

    pub fn missing_role(role: &str) -> Self {
        Self::forbidden(format!("The {role} role is required for this request."))
    }

    pub fn not_found(name: &str) -> Self {
        Self::new(404, Outcome::NotFound, format!("{name} does not exist"))
    }

    pub fn no_such_path(path: &str) -> Self {
        Self::new(404, Outcome::NotFound, format!("No such resource: {path}"))
    }

    pub fn method_not_allowed(method: &str) -> Self {
        Self::new(
            405,
            Outcome::ClientError,
            format!("The method {method} is not allowed for this resource."),
        )
    }

    #[cfg(test)]
    pub fn not_acceptable() -> Self {
        Self::new(
            406,
            Outcome::ClientError,
            format!("This resource is served only as {MEDIA_TYPE} or application/json."),
        )
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, Outcome::ClientError, message)
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            Outcome::ClientError,
            format!("The request body is larger than {limit} bytes."),
        )
    }

    pub fn unsupported_type() -> Self {
        Self::new(
            415,
            Outcome::ClientError,
            format!("The request body must be {MEDIA_TYPE} or application/json."),
        )
    }

    /// Oracle's rule, in its documentation's words.
    pub fn too_many_captures(instance: &str, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after.max(1)),
            ..Self::new(
                429,
                Outcome::Throttled,
                format!(
                    "You can take only one screen capture of an instance per minute: \
                     retry {instance} in {} s.",
                    retry_after.max(1)
                ),
            )
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, Outcome::Unavailable, message)
    }

    pub fn internal() -> Self {
        Self::new(
            500,
            Outcome::Internal,
            "An internal error has occurred; the request can be retried.",
        )
    }

    /// The one mapping from the core's errors met while answering a request,
    /// for `instance` as the caller named it. (A failure inside a capture job
    /// goes into its `error_reason` instead: see `error_reason`.)
    pub fn from_core(err: &service::Error, instance: &str) -> Self {
        use service::Error as E;
        let wire = match err {
            E::NotFound { .. } => Self::not_found(instance),
            // "Only on instances which are in the running state": the
            // instance's current state is the conflict, and a later retry
            // may succeed.
            E::NotRunning { state, .. } => Self::conflict(format!(
                "You can take screen captures only on instances in the running state; \
                 {instance} is {}.",
                oracle_state(*state)
            )),
            E::NoDisplay { .. } => Self::bad_request(format!(
                "{instance} has no display device: there is no screen to capture."
            )),
            E::NoSuchScreen { .. }
            | E::NoSuchMarker { .. }
            | E::NoSuchUpload { .. }
            | E::Invalid { .. } => Self::bad_request(format!("{err}.")),
            E::NoSuchRecording { .. } => Self::not_found(instance),
            E::Conflict { reason } => Self::conflict(format!("{reason}.")),
            E::NoConsoleLog { .. } => Self::conflict(service::NO_CONSOLE_LOG),
            E::OverBudget { .. } => Self::unavailable(format!("{err}.")),
            E::Throttled { retry_after, .. } => {
                Self::too_many_captures(instance, retry_after.as_secs_f64().ceil() as u64)
            }
            E::Busy => Self {
                retry_after: Some(1),
                ..Self::unavailable("Too many screen captures are in progress; retry shortly.")
            },
            E::Timeout(_) | E::Unavailable { .. } | E::StorageFull { .. } => {
                Self::unavailable(format!("The service is unavailable: {err}."))
            }
            E::TooLarge { .. } | E::Undecodable { .. } | E::Libvirt { .. } | E::Failed { .. } => {
                Self::new(
                    500,
                    Outcome::Internal,
                    format!("Error capturing instance screen: {err}."),
                )
            }
        };
        Self {
            outcome: err.outcome(),
            detail: err.detail().map(str::to_owned),
            ..wire
        }
    }

    pub fn body(&self) -> String {
        serde_json::to_string(&ErrorBody {
            message: self.message.clone(),
        })
        .expect("a string serializes")
    }

    pub fn into_response(self) -> Response {
        let mut response = (self.status, self.body()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// A failed capture job's `error_reason`, in the shape seed 000 shows
/// ("Error capturing instance screen, last state 'in-progress' (…)").
pub fn error_reason(err: &service::Error, last_state: State) -> String {
    let state = serde_json::to_value(last_state).expect("a state serializes");
    clip(&format!(
        "Error capturing instance screen, last state '{}' ({err})",
        state.as_str().unwrap_or("")
    ))
}

/// A libvirt state in Compute Classic's instance words where it has them.
fn oracle_state(state: DomainState) -> &'static str {
    match state {
        DomainState::Running | DomainState::Blocked => "running",
        DomainState::Paused => "suspended",
        DomainState::PmSuspended => "suspended",
        DomainState::Shutdown => "stopping",
        DomainState::Shutoff | DomainState::NoState => "shutdown",
        DomainState::Crashed => "error",
    }
}

fn clip(s: &str) -> String {
    let mut end = s.len().min(MAX_MESSAGE);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sample() -> ScreenCapture {
        ScreenCapture {
            account: "/Compute-acme/cloud_storage".into(),
            cancel: false,
            cancellation: Cancellation {
                state: CancelState::NotRequested,
                error_reason: None,
            },
            creation_time: "2017-02-16T05:37:18Z".into(),
            error_reason: Some(
                "Error capturing instance screen, last state 'in-progress' (x)".into(),
            ),
            instance: "/Compute-acme/jack/vm1".into(),
            media_uri: None,
            name: "/Compute-acme/jack/vm1/6a1f".into(),
            request_id: "170216d541112a6f8a60aeeabb628d5996c50f".into(),
            state: State::Error,
            uri: "https://h/console/screencapture/Compute-acme/jack/vm1/6a1f".into(),
        }
    }

    #[test]
    fn the_capture_object_is_seed_000s() {
        let value = serde_json::to_value(sample()).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(
            keys,
            [
                "account",
                "cancel",
                "cancellation",
                "creation_time",
                "error_reason",
                "instance",
                "media_uri",
                "name",
                "request_id",
                "state",
                "uri"
            ]
        );
        assert_eq!(value["state"], "error");
        assert_eq!(value["media_uri"], serde_json::Value::Null);
        assert_eq!(
            value["cancellation"],
            serde_json::json!({"state": "not_requested", "error_reason": null})
        );
        for (state, text) in [
            (State::Queued, "queued"),
            (State::Pending, "pending"),
            (State::InProgress, "in-progress"),
            (State::Uploading, "uploading"),
            (State::Complete, "complete"),
        ] {
            assert_eq!(serde_json::to_value(state).unwrap(), text);
        }
        assert!(State::Complete.is_terminal() && !State::Uploading.is_terminal());
    }

    #[test]
    fn json_round_trips() {
        let list = List {
            result: vec![sample()],
        };
        let text = serde_json::to_string(&list).unwrap();
        assert!(text.starts_with("{\"result\":[{\"account\":"));
        assert_eq!(serde_json::from_str::<List>(&text).unwrap(), list);
        // Seed 000's example, as captured (its URIs were lost).
        let seed = r#"{"account": "/Compute-acme/cloud_storage", "name": "/Compute-acme/",
            "creation_time": "2017-02-16T05:37:18Z", "uri": "", "instance": "/Compute-acme/",
            "state": "error", "request_id": "170216d541112a6f8a60aeeabb628d5996c50f",
            "cancel": false, "error_reason": "Error capturing instance screen, last state 'in-progress' (unsupported operand type(s) for -: 'NoneType' and 'int')",
            "media_uri": "", "cancellation": {"error_reason": null, "state": "not_requested"}}"#;
        let parsed: ScreenCapture = serde_json::from_str(seed).unwrap();
        assert_eq!(parsed.state, State::Error);
        assert_eq!(parsed.cancellation.error_reason, None);
    }

    #[test]
    fn names_parse_and_belong_to_their_container() {
        let n = ObjectName::parse("/Compute-acme/jack.jones@example.com/vm1/6a1f-2c").unwrap();
        assert_eq!(n.container(), "/Compute-acme/jack.jones@example.com/");
        assert_eq!(
            (n.relative().as_str(), n.last()),
            ("vm1/6a1f-2c", "6a1f-2c")
        );
        assert_eq!(
            n.to_string(),
            "/Compute-acme/jack.jones@example.com/vm1/6a1f-2c"
        );
        let capture = n.child_in("acme", "ops", "abc");
        assert_eq!(capture.to_string(), "/Compute-acme/ops/vm1/6a1f-2c/abc");
        assert_eq!(
            ObjectName::parse_in("/Compute-other/jack/vm1", "acme"),
            Err(NameError::OtherDomain("acme".into()))
        );
        use NameError::*;
        for (bad, why) in [
            ("", NoContainer),
            ("/Compute-acme", NoContainer),
            ("/Compute-acme/jack", Parts),
            ("/Compute-acme/jack/", Parts),
            ("/compute-acme/jack/vm1", NoContainer),
            ("Compute-acme/jack/vm1", NoContainer),
            ("/Compute-/jack/vm1", NoContainer),
            ("/Compute-acme//vm1", NoContainer),
            ("/Compute-acme/jack/vm1/", BadPart),
            ("/Compute-acme/jack/a//b", BadPart),
            ("/Compute-acme/jack/..", BadPart),
            ("/Compute-acme/jack/a b", BadPart),
            ("/Compute-acme/jack/a?b", BadPart),
            ("/Compute-acme/jack/a/b/c/d/e", Parts),
        ] {
            assert_eq!(ObjectName::parse(bad), Err(why), "{bad:?}");
        }
        let long = format!("/Compute-acme/jack/{}", "a".repeat(MAX_NAME));
        assert_eq!(ObjectName::parse(&long), Err(TooLong));
        let part = format!("/Compute-acme/jack/{}", "a".repeat(MAX_PART + 1));
        assert_eq!(ObjectName::parse(&part), Err(BadPart));
    }

    #[test]
    fn containers_and_uris() {
        let c = ("acme".to_owned(), "jack".to_owned());
        assert_eq!(parse_container("/Compute-acme/jack/"), Ok(c.clone()));
        assert_eq!(parse_container("/Compute-acme/jack"), Ok(c));
        assert!(parse_container("/Compute-acme/jack/vm1/").is_err());
        assert!(parse_container("/Compute-acme/").is_err());
        let n = ObjectName::parse("/Compute-acme/jack/vm1/id1").unwrap();
        assert_eq!(
            capture_uri("https", "api.example.com:8443", &n),
            "https://api.example.com:8443/console/screencapture/Compute-acme/jack/vm1/id1"
        );
        assert_eq!(
            media_uri("https", "h", &n),
            "https://h/console/screencapture/media/Compute-acme/jack/vm1/id1"
        );
        assert!(valid_host("[::1]:8443") && valid_host("10.0.0.1"));
        for bad in ["", "a/b", "a@b", "h\r\nx", "a b"] {
            assert!(!valid_host(bad), "{bad:?}");
        }
    }

    #[test]
    fn ids_times_and_media_types() {
        let t = time::macros::datetime!(2017-02-16 05:37:18 UTC);
        let id = call_id(t, uuid::Uuid::from_u128(0xd541112a6f8a60aeeabb628d5996c50f));
        assert_eq!(id, "170216d541112a6f8a60aeeabb628d5996c50f");
        assert_eq!(format_time(t), "2017-02-16T05:37:18Z");
        assert!(is_json_media(Some(MEDIA_TYPE)));
        assert!(is_json_media(Some("application/json; charset=utf-8")));
        assert!(is_json_media(Some("Application/Oracle-Compute-V3+JSON")));
        assert!(!is_json_media(Some("text/plain")) && !is_json_media(None));
    }

    #[test]
    fn error_bodies_are_oracles() {
        let e = OracleError::not_found("/Compute-acme/jack/vm1/x");
        assert_eq!(
            e.body(),
            r#"{"message":"/Compute-acme/jack/vm1/x does not exist"}"#
        );
        let response = OracleError::too_many_captures("/Compute-acme/jack/vm1", 42).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::CONTENT_TYPE], MEDIA_TYPE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "42");
        let hostile = OracleError::bad_request(format!("\"}}{}", "x".repeat(10_000)));
        let back: ErrorBody = serde_json::from_str(&hostile.body()).unwrap();
        assert_eq!(back.message.len(), MAX_MESSAGE);
        let cases: [(OracleError, u16, &str, Outcome); 9] = [
            (
                OracleError::bad_request("x"),
                400,
                "APIClientError",
                Outcome::ClientError,
            ),
            (
                OracleError::unauthorized("x"),
                401,
                "APIUnauthorizedError",
                Outcome::AuthError,
            ),
            (
                OracleError::missing_role("Compute_Operations"),
                403,
                "APIForbiddenError",
                Outcome::AuthError,
            ),
            (
                OracleError::method_not_allowed("PATCH"),
                405,
                "APIMethodNotAllowedError",
                Outcome::ClientError,
            ),
            (
                OracleError::not_acceptable(),
                406,
                "APINotAcceptableError",
                Outcome::ClientError,
            ),
            (
                OracleError::conflict("x"),
                409,
                "APIConflictError",
                Outcome::ClientError,
            ),
            (
                OracleError::too_large(8),
                413,
                "APIRequestTooLarge",
                Outcome::ClientError,
            ),
            (
                OracleError::unsupported_type(),
                415,
                "APIUnsupportedTypeError",
                Outcome::ClientError,
            ),
            (
                OracleError::internal(),
                500,
                "APIInternalServerError",
                Outcome::Internal,
            ),
        ];
        for (e, status, code, outcome) in cases {
            assert_eq!(
                (e.status.as_u16(), e.code(), e.outcome()),
                (status, code, outcome)
            );
        }
    }

    #[test]
    fn core_errors_map_once() {
        use service::Error as E;
        let d = || "dom".to_owned();
        let cases: Vec<(E, u16, Outcome)> = vec![
            (E::NotFound { domain: d() }, 404, Outcome::NotFound),
            (
                E::NotRunning {
                    domain: d(),
                    state: DomainState::Shutoff,
                },
                409,
                Outcome::ClientError,
            ),
            (E::NoDisplay { domain: d() }, 400, Outcome::ClientError),
            (
                E::Throttled {
                    domain: d(),
                    retry_after: Duration::from_millis(30_200),
                },
                429,
                Outcome::Throttled,
            ),
            (E::Busy, 503, Outcome::Busy),
            (E::Timeout("slow".into()), 503, Outcome::Unavailable),
            (
                E::Unavailable {
                    what: "libvirt",
                    detail: "down".into(),
                },
                503,
                Outcome::Unavailable,
            ),
            (
                E::Failed {
                    reason: "r".into(),
                    detail: "libvirt said".into(),
                },
                500,
                Outcome::Internal,
            ),
        ];
        for (err, status, outcome) in cases {
            let wire = OracleError::from_core(&err, "/Compute-acme/jack/vm1");
            assert_eq!(
                (wire.status.as_u16(), wire.outcome),
                (status, outcome),
                "{err:?}"
            );
            assert!(
                !wire.message.contains("dom'"),
                "names the caller's instance: {}",
                wire.message
            );
        }
        let throttled = OracleError::from_core(
            &E::Throttled {
                domain: d(),
                retry_after: Duration::from_millis(30_200),
            },
            "/Compute-acme/jack/vm1",
        );
        assert_eq!(throttled.retry_after, Some(31));
        assert!(throttled
            .message
            .starts_with("You can take only one screen capture of an instance per minute"));
        let failed = OracleError::from_core(
            &E::Failed {
                reason: "r".into(),
                detail: "libvirt said".into(),
            },
            "i",
        );
        assert_eq!(failed.detail.as_deref(), Some("libvirt said"));
        assert!(!failed.body().contains("libvirt said"));
        let reason = error_reason(&E::Busy, State::InProgress);
        assert!(reason.starts_with("Error capturing instance screen, last state 'in-progress' ("));
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;

    fn part() -> impl Strategy<Value = String> {
        "[A-Za-z0-9._@+-]{1,10}".prop_filter("not . or ..", |p| p != "." && p != "..")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// A name is written as it was read: parsing what `Display` wrote
        /// gives the same name, and its container is read back too.
        #[test]
        fn names_round_trip(
            domain in "[A-Za-z0-9_.-]{1,12}",
            user in part(),
            parts in proptest::collection::vec(part(), 1..=MAX_PARTS),
        ) {
            let name = ObjectName { domain: domain.clone(), user: user.clone(), parts };
            prop_assert_eq!(ObjectName::parse(&name.to_string()), Ok(name.clone()));
            prop_assert_eq!(ObjectName::parse_in(&name.to_string(), &domain), Ok(name.clone()));
            prop_assert_eq!(parse_container(&name.container()), Ok((domain, user)));
        }

        /// Anything else is a name or a refusal, never a panic.
        #[test]
        fn names_never_panic(name in "(/Compute-[a-z.]{0,6}/[a-z.@]{0,6})?(/[a-z0-9./%é-]{0,8}){0,6}/?") {
            if let Ok(parsed) = ObjectName::parse(&name) {
                prop_assert_eq!(parsed.to_string(), name.clone());
            }
            let _ = parse_container(&name);
            let _ = valid_host(&name);
        }
    }
}
