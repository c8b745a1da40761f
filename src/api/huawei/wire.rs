//! What goes back on the wire in Huawei's dialect: the screen record bodies
//! (`ScreenRecordDetail`'s 21 fields, as `huaweicloudsdkworkspace` 3.1.219
//! reads them) and the error body every Huawei Cloud service answers with,
//! `{"error_code", "error_msg"}`, beside an `X-Request-Id` header (the
//! pipeline's). The SDK raises `ClientRequestException` for a 4xx and
//! `ServerResponseException` for a 5xx, with both fields and the request id.
//!
//! Codes: `APIGW.*` are what Huawei's API gateway answers before a service
//! sees the call (unknown API, authentication, throttling, size); `WKS.*` are
//! Workspace's. `WKS.0001` (bad request) and `WKS.0202` (resource not found)
//! are Workspace's documented codes; the others are vmshot's, numbered in
//! the same style (the table is in README.md).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use time::OffsetDateTime;

use crate::api::pipeline::WireError;
use crate::service::{self, Outcome};

pub const CONTENT_TYPE: &str = "application/json;charset=UTF-8";
/// Messages may carry client text (an id): cut to this many characters.
const MAX_ECHO: usize = 128;

/// A refusal, as the SDK will see it.
#[derive(Debug, Clone)]
pub struct HuaweiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub outcome: Outcome,
    /// For the log only (libvirt's words, a canonical request).
    pub detail: Option<String>,
}

impl WireError for HuaweiError {
    fn code(&self) -> &'static str {
        self.code
    }
    fn outcome(&self) -> Outcome {
        self.outcome
    }
    fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }
}

/// Client text in a message: bounded, and printable.
pub fn echo(text: &str) -> String {
    text.chars()
        .take(MAX_ECHO)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

impl HuaweiError {
    fn new(status: u16, code: &'static str, message: impl Into<String>, outcome: Outcome) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            outcome,
            detail: None,
        }
    }

    pub fn with_detail(self, detail: impl Into<String>) -> Self {
        Self {
            detail: Some(detail.into()),
            ..self
        }
    }

    // ------------------------------------------------------------ gateway

    /// No such API (path or method): the gateway's 404.
    pub fn no_api() -> Self {
        Self::new(
            404,
            "APIGW.0101",
            "The API does not exist or has not been published in the environment.",
            Outcome::NotFound,
        )
    }

    /// Who asks could not be established (signature, key, date, replay, token).
    pub fn auth(why: impl std::fmt::Display) -> Self {
        Self::new(
            401,
            "APIGW.0301",
            format!("Incorrect IAM authentication information: {why}"),
            Outcome::AuthError,
        )
    }

    pub fn throttled(message: impl Into<String>) -> Self {
        Self::new(429, "APIGW.0308", message, Outcome::Throttled)
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "APIGW.0201",
            format!("Request entity too large: the limit is {limit} bytes."),
            Outcome::ClientError,
        )
    }

    // ------------------------------------------------------------ service

    /// A malformed or out-of-range parameter or body.
    pub fn bad_parameter(message: impl Into<String>) -> Self {
        Self::new(400, "WKS.0001", message, Outcome::ClientError)
    }

    /// The project in the path or `X-Project-Id` is not the caller's.
    pub fn project_mismatch() -> Self {
        Self::new(
            403,
            "WKS.0003",
            "The project in the request is not the project of the credentials.",
            Outcome::AuthError,
        )
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        Self::new(
            404,
            "WKS.0202",
            format!("The {what} '{}' is not found.", echo(id)),
            Outcome::NotFound,
        )
    }

    /// The record is not in a state that allows the call.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, "WKS.0409", message, Outcome::ClientError)
    }

    /// The desktop cannot be recorded now (not running, no display).
    pub fn desktop_state(message: impl Into<String>) -> Self {
        Self::new(409, "WKS.0410", message, Outcome::ClientError)
    }

    /// Past the host's recording budget, or too much in progress.
    pub fn busy(message: impl Into<String>) -> Self {
        Self::new(429, "WKS.0429", message, Outcome::Busy)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "WKS.0503", message, Outcome::Unavailable)
    }

    pub fn internal() -> Self {
        Self::new(
            500,
            "WKS.0500",
            "Internal error. Please try again later.",
            Outcome::Internal,
        )
    }

    /// Every core error, in one place. `what` names the object asked for
    /// ("desktop" or "screen record"), `id` the caller's reference to it.
    pub fn from_core(e: &service::Error, what: &str, id: &str) -> Self {
        use service::Error as E;
        let wire = match e {
            E::NotFound { .. } => Self::not_found(what, id),
            E::NoSuchRecording { id } => Self::not_found("screen record", id),
            E::NoSuchUpload { id } => Self::not_found("upload", &id.to_string()),
            E::Conflict { reason } => Self::conflict(echo(reason)),
            E::Invalid { reason } => Self::bad_parameter(echo(reason)),
            E::OverBudget { what } => {
                Self::busy(format!("Over the host's recording budget: {}.", echo(what)))
            }
            E::NotRunning { state, .. } => {
                Self::desktop_state(format!("The desktop '{}' is {state}.", echo(id)))
            }
            E::NoConsoleLog { .. } => Self::desktop_state(format!(
                "The desktop '{}' keeps no serial console log.",
                echo(id)
            )),
            E::NoDisplay { .. } | E::NoSuchScreen { .. } => Self::desktop_state(format!(
                "The desktop '{}' has no display to record.",
                echo(id)
            )),
            E::NoSuchMarker { marker } => {
                Self::bad_parameter(format!("The marker '{}' could not be found.", echo(marker)))
            }
            E::Throttled { retry_after, .. } => Self::throttled(format!(
                "The throttling threshold has been reached: retry in {:.1} s.",
                retry_after.as_secs_f64()
            )),
            E::Busy => Self::busy("Too many requests in progress on this host."),
            E::Timeout(_) | E::Unavailable { .. } | E::StorageFull { .. } => {
                Self::unavailable("The service is unavailable. Please try again later.")
            }
            E::TooLarge { .. } | E::Undecodable { .. } | E::Libvirt { .. } | E::Failed { .. } => {
                Self::internal()
            }
        };
        // The core's own words (which may name files or URIs) go to the log.
        Self {
            detail: Some(e.detail().map_or_else(|| e.to_string(), str::to_owned)),
            ..wire
        }
    }

    pub fn render(&self) -> Response {
        #[derive(Serialize)]
        struct Body<'a> {
            error_code: &'a str,
            error_msg: &'a str,
        }
        let body = serde_json::to_string(&Body {
            error_code: self.code,
            error_msg: &self.message,
        })
        .expect("strings serialize");
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, [(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
    }
}

// ------------------------------------------------------------------ bodies

/// `ScreenRecordDetail`, every field the SDK knows (absent ones are null).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RecordView {
    pub id: String,
    pub desktop_id: Option<String>,
    pub desktop_name: Option<String>,
    pub desktop_pool_id: Option<String>,
    pub username: Option<String>,
    /// Bytes of the video file.
    pub size: Option<u64>,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub policy_id: Option<String>,
    pub obs_bucket: Option<String>,
    pub file_directory: Option<String>,
    pub video_filename: Option<String>,
    pub video_file_sha256: Option<String>,
    pub event_filename: Option<String>,
    pub event_file_sha256: Option<String>,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    pub update_time: Option<String>,
    /// Seconds.
    pub duration: Option<u64>,
    pub upload_type: Option<String>,
    pub site_type: Option<String>,
    /// vmshot's: why a recording failed (the SDK ignores unknown keys).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Huawei's time: UTC with milliseconds, `2024-10-15T11:04:41.263Z`.
pub fn huawei_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let text = serde_json::to_string(body).expect("bodies serialize");
    let mut response = (status, text).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn errors_have_huaweis_shape() {
        let response = HuaweiError::not_found("screen record", "r-1").render();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error_code"], "WKS.0202");
        assert_eq!(v["error_msg"], "The screen record 'r-1' is not found.");
    }

    #[test]
    fn echoed_text_is_bounded_and_printable() {
        assert_eq!(echo("a\nb"), "a?b");
        assert_eq!(echo(&"x".repeat(1000)).len(), MAX_ECHO);
    }

    #[test]
    fn no_core_error_leaks_its_words() {
        let e = service::Error::Libvirt {
            what: "open qemu+ssh://root@10.0.0.1/system".into(),
            detail: "/var/run/libvirt/secret".into(),
        };
        let wire = HuaweiError::from_core(&e, "desktop", "d-1");
        assert_eq!((wire.status, wire.code), (500, "WKS.0500"));
        assert!(!wire.message.contains("qemu") && !wire.message.contains("/var"));
        assert!(wire.detail.unwrap().contains("/var/run"));
    }

    #[test]
    fn times_have_milliseconds_and_z() {
        let t = time::macros::datetime!(2024-10-15 11:04:41.263 UTC);
        assert_eq!(huawei_time(t), "2024-10-15T11:04:41.263Z");
    }

    #[test]
    fn a_record_has_the_sdks_21_fields() {
        let v = serde_json::to_value(RecordView::default()).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 21, "{v}");
        assert!(v.get("type").is_some());
    }
}
