//! What goes back on the wire: Alibaba's response and error bodies, in JSON or
//! XML, and the one mapping from vmshot's errors to Alibaba's codes, HTTP
//! statuses and messages (seed 002 and Alibaba's common error codes).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use quick_xml::escape::escape;

use crate::api::pipeline::WireError;
use crate::service::{self, DomainState, Outcome};

/// Response format, chosen by `Format` (JSON or XML, Alibaba's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Xml,
}

/// An error as Alibaba reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// For the log only: what the message leaves out (libvirt's own words).
    pub detail: Option<String>,
    pub outcome: Outcome,
}

impl WireError for AliError {
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

impl AliError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(status).expect("valid status"),
            code,
            message: message.into(),
            detail: None,
            outcome: Outcome::ClientError,
        }
    }

    fn with(self, outcome: Outcome) -> Self {
        Self { outcome, ..self }
    }

    pub fn missing(name: &str) -> Self {
        Self::new(
            400,
            "MissingParameter",
            format!("The input parameter \"{name}\" that is mandatory for processing this request is not supplied."),
        )
    }

    /// A malformed request (bad value, bad encoding): 400, unlike the 404 of an
    /// instance that does not exist.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(400, "InvalidParameter", message)
    }

    /// A header read or signed here, given more than once.
    pub fn header_repeated(name: &str) -> Self {
        Self::invalid(format!("The header {name} is given more than once."))
    }

    pub fn instance_not_found(instance: &str) -> Self {
        Self::new(
            404,
            "InvalidParameter",
            format!("The \"InstanceId\" provided ({instance}) is not valid."),
        )
        .with(Outcome::NotFound)
    }

    pub fn action_not_found(action: &str) -> Self {
        Self::new(
            404,
            "InvalidAction.NotFound",
            format!("Specified api \"{action}\" is not found, please check your url and method."),
        )
    }

    pub fn key_not_found() -> Self {
        Self::new(
            404,
            "InvalidAccessKeyId.NotFound",
            "Specified access key is not found.",
        )
        .with(Outcome::AuthError)
    }

    /// Alibaba's wording, string to sign included: the classic SDK splits the
    /// message on ':' and compares the rest with its own string to sign.
    pub fn signature_mismatch(string_to_sign: &str) -> Self {
        Self::new(
            400,
            "SignatureDoesNotMatch",
            format!("Specified signature is not matched with our calculation. server string to sign is:{string_to_sign}"),
        )
        .with(Outcome::AuthError)
    }

    pub fn nonce_used() -> Self {
        Self::new(
            400,
            "SignatureNonceUsed",
            "Specified signature nonce was used already.",
        )
        .with(Outcome::AuthError)
    }

    pub fn timestamp_expired(skew_secs: u64) -> Self {
        Self::new(
            400,
            "InvalidTimeStamp.Expired",
            format!("Specified time stamp or date value is expired (more than {skew_secs} s from this host's clock)."),
        )
        .with(Outcome::AuthError)
    }

    pub fn timestamp_format(name: &str) -> Self {
        Self::new(
            400,
            "InvalidTimeStamp.Format",
            format!("Specified \"{name}\" is not in the format yyyy-MM-ddTHH:mm:ssZ (UTC)."),
        )
        .with(Outcome::AuthError)
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("The request body is larger than {limit} bytes."),
        )
    }

    pub fn timed_out(after: std::time::Duration) -> Self {
        Self::new(
            503,
            "ServiceUnavailable",
            format!(
                "The request has failed due to a temporary failure of the server: no answer within {} s.",
                after.as_secs()
            ),
        )
        .with(Outcome::Unavailable)
    }

    pub fn busy() -> Self {
        Self::new(
            503,
            "ServiceUnavailable",
            "The request has failed due to a temporary failure of the server: too many screenshots in progress.",
        )
        .with(Outcome::Busy)
    }

    /// A bug of ours (a panic), in Alibaba's words.
    pub fn internal() -> Self {
        Self::new(
            500,
            "InternalError",
            "The request processing has failed due to some unknown error.",
        )
        .with(Outcome::Internal)
    }

    /// The mapping from the core service's errors, for an `instance` asked by id.
    pub fn from_service(err: &service::Error, instance: &str) -> Self {
        Self {
            detail: err.detail().map(str::to_owned),
            outcome: err.outcome(),
            ..Self::map_service(err, instance)
        }
    }

    fn map_service(err: &service::Error, instance: &str) -> Self {
        use service::Error as E;
        match err {
            E::NotFound { .. } => Self::instance_not_found(instance),
            E::NotRunning { state, .. } => Self::new(
                405,
                "IncorrectInstanceStatus",
                format!("The instance status \"{}\" is not applicable.", ecs_status(*state)),
            ),
            E::NoDisplay { .. } => Self::new(
                405,
                "NotSupported",
                format!("The operation is not supported for \"{instance}\": it has no display device."),
            ),
            // Seed 002 documents 400 for Throttling.
            E::Throttled { retry_after, .. } => Self::new(
                400,
                "Throttling",
                format!(
                    "Request was denied due to request throttling: one screenshot of \"{instance}\" per interval, retry in {:.1} s.",
                    retry_after.as_secs_f64()
                ),
            ),
            E::Busy => Self::busy(),
            E::Timeout(_) | E::Unavailable { .. } | E::StorageFull { .. } => Self::new(
                503,
                "ServiceUnavailable",
                format!("The request has failed due to a temporary failure of the server: {err}."),
            ),
            E::NoConsoleLog { .. } => Self::new(
                405,
                "NotSupported",
                service::NO_CONSOLE_LOG,
            ),
            E::NoSuchMarker { .. }
            | E::NoSuchUpload { .. }
            | E::NoSuchRecording { .. }
            | E::Conflict { .. }
            | E::Invalid { .. } => Self::new(400, "InvalidParameter", format!("{err}.")),
            E::OverBudget { .. } => Self::busy(),
            E::NoSuchScreen { .. }
            | E::TooLarge { .. }
            | E::Undecodable { .. }
            | E::Libvirt { .. }
            | E::Failed { .. } => Self::new(
                500,
                "InternalError",
                format!("The request processing has failed due to some unknown error: {err}."),
            ),
        }
    }

    pub fn render(&self, format: Format, request_id: &str, host_id: &str) -> Response {
        let body = match format {
            Format::Json => serde_json::json!({
                "RequestId": request_id,
                "HostId": host_id,
                "Code": self.code,
                "Message": self.message,
            })
            .to_string(),
            Format::Xml => format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><RequestId>{}</RequestId><HostId>{}</HostId>\
                 <Code>{}</Code><Message>{}</Message></Error>",
                escape(request_id),
                escape(host_id),
                self.code,
                escape(self.message.as_str())
            ),
        };
        reply(self.status, format, body)
    }
}

/// ECS's word for a libvirt state, as IncorrectInstanceStatus names it.
fn ecs_status(state: DomainState) -> &'static str {
    match state {
        DomainState::Running | DomainState::Blocked => "Running",
        DomainState::Paused => "Paused",
        DomainState::Shutdown => "Stopping",
        DomainState::Shutoff | DomainState::NoState => "Stopped",
        DomainState::Crashed => "Crashed",
        DomainState::PmSuspended => "Suspended",
    }
}

/// The successful GetInstanceScreenshot response. `ScreenshotSha256` (hex of
/// the JPEG's bytes, before base64) is vmshot's own field: both SDKs ignore
/// fields they do not know.
pub fn screenshot(
    format: Format,
    request_id: &str,
    instance: &str,
    base64: &str,
    sha256: &str,
) -> Response {
    let body = match format {
        Format::Json => serde_json::json!({
            "RequestId": request_id,
            "InstanceId": instance,
            "Screenshot": base64,
            "ScreenshotSha256": sha256,
        })
        .to_string(),
        Format::Xml => format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<GetInstanceScreenshotResponse><RequestId>{}</RequestId>\
             <InstanceId>{}</InstanceId><Screenshot>{base64}</Screenshot>\
             <ScreenshotSha256>{sha256}</ScreenshotSha256></GetInstanceScreenshotResponse>",
            escape(request_id),
            escape(instance)
        ),
    };
    reply(StatusCode::OK, format, body)
}

/// The successful GetInstanceConsoleOutput response, in the documented
/// order; `LastUpdateTime` as every example writes it (`yyyy-MM-dd
/// HH:mm:ss`, Beijing time), empty if the log was never written.
pub fn console_output(
    format: Format,
    request_id: &str,
    instance: &str,
    last_update: &str,
    base64: &str,
) -> Response {
    let body = match format {
        Format::Json => serde_json::json!({
            "RequestId": request_id,
            "InstanceId": instance,
            "LastUpdateTime": last_update,
            "ConsoleOutput": base64,
        })
        .to_string(),
        Format::Xml => format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<GetInstanceConsoleOutputResponse><RequestId>{}</RequestId>\
             <InstanceId>{}</InstanceId><LastUpdateTime>{last_update}</LastUpdateTime>\
             <ConsoleOutput>{base64}</ConsoleOutput></GetInstanceConsoleOutputResponse>",
            escape(request_id),
            escape(instance)
        ),
    };
    reply(StatusCode::OK, format, body)
}

fn reply(status: StatusCode, format: Format, body: String) -> Response {
    let content_type = match format {
        Format::Json => "application/json;charset=utf-8",
        Format::Xml => "text/xml;charset=utf-8",
    };
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn map(err: service::Error) -> (u16, &'static str) {
        let e = AliError::from_service(&err, "i-1");
        (e.status.as_u16(), e.code)
    }

    #[test]
    fn each_service_error_has_its_code_and_status() {
        let d = || "web1".to_owned();
        assert_eq!(
            map(service::Error::NotFound { domain: d() }),
            (404, "InvalidParameter")
        );
        assert_eq!(
            map(service::Error::NotRunning {
                domain: d(),
                state: DomainState::Shutoff
            }),
            (405, "IncorrectInstanceStatus")
        );
        assert_eq!(
            map(service::Error::NoDisplay { domain: d() }),
            (405, "NotSupported")
        );
        assert_eq!(
            map(service::Error::Throttled {
                domain: d(),
                retry_after: Duration::from_secs(3)
            }),
            (400, "Throttling")
        );
        assert_eq!(map(service::Error::Busy), (503, "ServiceUnavailable"));
        assert_eq!(
            map(service::Error::Timeout("t".into())),
            (503, "ServiceUnavailable")
        );
        assert_eq!(
            map(service::Error::Unavailable {
                what: "libvirt",
                detail: "qemu+ssh://admin@hv/system".into()
            }),
            (503, "ServiceUnavailable")
        );
        for failed in [
            service::Error::Failed {
                reason: "f".into(),
                detail: "g".into(),
            },
            service::Error::Libvirt {
                what: "take the screenshot".into(),
                detail: "g".into(),
            },
            service::Error::NoSuchScreen {
                domain: d(),
                screen: 1,
                screens: 1,
            },
            service::Error::TooLarge {
                domain: d(),
                limit: 1 << 20,
            },
            service::Error::Undecodable {
                domain: d(),
                reason: "r".into(),
            },
        ] {
            assert_eq!(map(failed), (500, "InternalError"));
        }
    }

    #[test]
    fn details_go_to_the_log_not_the_wire() {
        let uri = "qemu+ssh://admin@hv1/system?keyfile=/root/.ssh/id_hv";
        let unavailable = service::Error::Unavailable {
            what: "libvirt",
            detail: format!("cannot reach libvirt at {uri}: Connection refused"),
        };
        let failed = service::Error::Libvirt {
            what: "take the screenshot".into(),
            detail: "internal error: unable to open /var/lib/libvirt/qemu/x.png".into(),
        };
        for err in [unavailable, failed] {
            let e = AliError::from_service(&err, "i-1");
            let body = e.render(Format::Json, "R", "h");
            let text = body_text(body);
            assert!(
                !text.contains("keyfile") && !text.contains("/var/"),
                "{text}"
            );
            assert!(!e.message.contains("qemu+ssh"), "{}", e.message);
            assert_eq!(e.detail.as_deref(), err.detail());
        }
    }

    fn body_text(response: Response) -> String {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = runtime
            .block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn incorrect_status_names_the_state() {
        let e = AliError::from_service(
            &service::Error::NotRunning {
                domain: "d".into(),
                state: DomainState::Shutoff,
            },
            "i-1",
        );
        assert_eq!(
            e.message,
            "The instance status \"Stopped\" is not applicable."
        );
    }

    #[test]
    fn xml_is_escaped() {
        let e = AliError::invalid("a <b> & \"c\"");
        let response = e.render(Format::Xml, "R&1", "h");
        assert_eq!(response.status(), 400);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/xml;charset=utf-8"
        );
        let body = body_text(response);
        assert!(
            body.contains("<RequestId>R&amp;1</RequestId>")
                && body.contains("<Message>a &lt;b&gt; &amp; &quot;c&quot;</Message>"),
            "{body}"
        );
    }
}
