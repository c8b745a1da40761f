//! The native API's one error type, and the one place core errors become
//! HTTP statuses. `/v1/` renders it as JSON (`{"error": {"code", "message"}}`),
//! `/ui/` as a short HTML page; the words are the same.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::api::pipeline::{Refusal, WireError};
use crate::service::{self, Outcome};

#[derive(Debug, Clone)]
pub struct WebError {
    pub status: StatusCode,
    /// A stable snake_case word for programs.
    pub code: &'static str,
    /// For people; names no host path or libvirt URI.
    pub message: String,
    /// For the log only.
    pub detail: Option<String>,
    pub outcome: Outcome,
}

impl WebError {
    fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
        outcome: Outcome,
    ) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            detail: None,
            outcome,
        }
    }

    /// The core's error, mapped once for both the API and the page.
    pub fn from_core(e: &service::Error) -> Self {
        use service::Error as E;
        use StatusCode as S;
        let (status, code) = match e {
            E::NotFound { .. } | E::NoSuchUpload { .. } | E::NoSuchMarker { .. } => {
                (S::NOT_FOUND, "not_found")
            }
            E::NoSuchRecording { .. } => (S::NOT_FOUND, "not_found"),
            E::NoSuchScreen { .. } => (S::NOT_FOUND, "no_such_screen"),
            E::NoConsoleLog { .. } => (S::NOT_FOUND, "no_console_log"),
            E::NotRunning { .. } => (S::CONFLICT, "not_running"),
            E::NoDisplay { .. } => (S::CONFLICT, "no_display"),
            E::Conflict { .. } => (S::CONFLICT, "conflict"),
            E::Invalid { .. } => (S::BAD_REQUEST, "invalid"),
            E::Throttled { .. } => (S::TOO_MANY_REQUESTS, "throttled"),
            E::OverBudget { .. } => (S::TOO_MANY_REQUESTS, "over_budget"),
            E::Busy => (S::SERVICE_UNAVAILABLE, "busy"),
            E::Timeout(_) => (S::SERVICE_UNAVAILABLE, "timeout"),
            E::Unavailable { .. } | E::StorageFull { .. } => {
                (S::SERVICE_UNAVAILABLE, "unavailable")
            }
            E::TooLarge { .. } | E::Undecodable { .. } | E::Libvirt { .. } | E::Failed { .. } => {
                (S::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        Self {
            detail: e.detail().map(str::to_owned),
            ..Self::new(status, code, e.to_string(), e.outcome())
        }
    }

    pub fn no_route(path: &str) -> Self {
        let shown: String = path.chars().take(128).collect();
        Self::new(
            StatusCode::NOT_FOUND,
            "no_route",
            format!("no such resource: {shown}"),
            Outcome::NotFound,
        )
    }

    pub fn method_not_allowed(method: &str) -> Self {
        let shown: String = method.chars().take(16).collect();
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{shown} is not allowed here"),
            Outcome::ClientError,
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            message,
            Outcome::ClientError,
        )
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            message,
            Outcome::AuthError,
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            message,
            Outcome::AuthError,
        )
    }

    pub fn not_implemented(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_implemented",
            message,
            Outcome::ClientError,
        )
    }

    pub fn internal(detail: impl ToString) -> Self {
        Self {
            detail: Some(detail.to_string()),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
                Outcome::Internal,
            )
        }
    }

    /// The pipeline's own refusals.
    pub fn refusal(why: Refusal) -> Self {
        match why {
            Refusal::AmbiguousLength => Self::bad_request(Refusal::AMBIGUOUS_LENGTH),
            Refusal::TooLarge { limit } => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the body is over {limit} bytes"),
                Outcome::ClientError,
            ),
            Refusal::TimedOut { after } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                Refusal::timed_out(after),
                Outcome::Unavailable,
            ),
            Refusal::Panicked => Self::internal("the handler panicked"),
        }
    }

    pub fn json(&self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        (
            self.status,
            [("content-type", "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

impl WireError for WebError {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_core_error_has_its_status() {
        let cases = [
            (service::Error::NotFound { domain: "x".into() }, 404),
            (service::Error::NoDisplay { domain: "x".into() }, 409),
            (service::Error::Busy, 503),
            (service::Error::NoConsoleLog { domain: "x".into() }, 404),
            (
                service::Error::Libvirt {
                    what: "read".into(),
                    detail: "/etc/secret path".into(),
                },
                500,
            ),
        ];
        for (e, status) in cases {
            let w = WebError::from_core(&e);
            assert_eq!(w.status.as_u16(), status, "{e}");
            assert!(!w.message.contains("/etc"), "paths stay in the detail");
        }
    }
}
