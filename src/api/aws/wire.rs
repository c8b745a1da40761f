//! What goes back on the wire in EC2's dialect: the GetConsoleScreenshot
//! answer and EC2's error document, with the HTTP status EC2 gives each code.
//!
//! Statuses: EC2's error-code reference (client errors 4xx, server errors
//! 5xx), the common-errors table of the AWS API references (IncompleteSignature,
//! MissingParameter, RequestExpired 400; ServiceUnavailable 503; InternalFailure
//! 500), and EC2 answers seen on the wire: AuthFailure 401, SignatureDoesNotMatch
//! 403, DryRunOperation 412, RequestLimitExceeded 503, MissingParameter
//! (AWSAccessKeyId) 400 for an unsigned request.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;

use super::params::{ParamError, MAX_ENCODED};
use super::sigv4::SigError;
use crate::api::pipeline::WireError;
use crate::service::{self, DomainState, Outcome};

pub const XMLNS: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";
/// Exactly what EC2 sends.
pub const CONTENT_TYPE: &str = "text/xml;charset=UTF-8";
const XML_DECL: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
/// Messages carry client text (an action's name, an id): cut to this.
const MAX_MESSAGE: usize = 512;

/// An error as EC2 reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub outcome: Outcome,
    /// For the log only: what the message leaves out.
    pub detail: Option<String>,
}

impl WireError for AwsError {
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

impl AwsError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(status).expect("valid status"),
            code,
            message: message.into(),
            outcome: Outcome::ClientError,
            detail: None,
        }
    }

    fn with(self, outcome: Outcome) -> Self {
        Self { outcome, ..self }
    }

    /// The one mapping from the core's errors, for `instance` as the caller
    /// named it.
    pub fn from_core(err: &service::Error, instance: &str) -> Self {
        use service::Error as E;
        let wire = match err {
            E::NotFound { .. } => Self::instance_not_found(instance),
            E::NotRunning { state, .. } => Self::incorrect_state(instance, ec2_state(*state)),
            E::NoDisplay { .. } => Self::unsupported_operation(format!(
                "The instance '{instance}' has no display device: there is no screen to capture."
            )),
            E::Throttled { .. } => Self::request_limit_exceeded(),
            E::Busy => Self::unavailable(),
            E::Timeout(_) | E::Unavailable { .. } | E::StorageFull { .. } => {
                Self::service_unavailable(format!("The service is unavailable: {err}."))
            }
            E::NoSuchScreen { .. }
            | E::NoSuchMarker { .. }
            | E::NoSuchUpload { .. }
            | E::NoSuchRecording { .. }
            | E::Conflict { .. }
            | E::Invalid { .. } => Self::invalid_parameter_value(format!("{err}.")),
            E::OverBudget { .. } => Self::unavailable(),
            E::NoConsoleLog { .. } => {
                Self::new(400, "UnsupportedOperation", service::NO_CONSOLE_LOG)
            }
            E::TooLarge { .. } | E::Undecodable { .. } | E::Libvirt { .. } | E::Failed { .. } => {
                Self::new(
                    500,
                    "InternalError",
                    format!("An internal error has occurred: {err}."),
                )
            }
        };
        Self {
            outcome: err.outcome(),
            detail: err.detail().map(str::to_owned),
            ..wire
        }
    }

    // Authentication.

    /// Unknown key, a credential scope that is not ours, another way of
    /// signing: EC2 says no more than this.
    pub fn auth_failure() -> Self {
        Self::new(
            401,
            "AuthFailure",
            "AWS was not able to validate the provided access credentials",
        )
        .with(Outcome::AuthError)
    }

    pub fn auth_failure_because(message: impl Into<String>) -> Self {
        Self::new(401, "AuthFailure", message).with(Outcome::AuthError)
    }

    #[cfg(test)]
    pub fn signature_mismatch() -> Self {
        Self::from_sig(&SigError::Mismatch {
            canonical_request: String::new(),
            string_to_sign: String::new(),
        })
    }

    /// The one mapping from a refused signature.
    pub fn from_sig(err: &SigError) -> Self {
        let status = match err.code() {
            "AuthFailure" => 401,
            "SignatureDoesNotMatch" => 403,
            _ => 400,
        };
        let outcome = match err {
            SigError::MalformedQuery => Outcome::ClientError,
            _ => Outcome::AuthError,
        };
        Self::new(status, err.code(), err.message()).with(outcome)
    }

    // Parameters.

    pub fn missing_parameter(name: &str) -> Self {
        Self::new(
            400,
            "MissingParameter",
            format!("The request must contain the parameter {name}"),
        )
    }

    pub fn missing_action() -> Self {
        Self::new(
            400,
            "MissingAction",
            "The request must contain the parameter Action",
        )
    }

    pub fn invalid_action(action: &str) -> Self {
        Self::new(
            400,
            "InvalidAction",
            format!("The action {action} is not valid for this web service."),
        )
    }

    pub fn no_such_version(version: &str) -> Self {
        Self::new(
            400,
            "NoSuchVersion",
            format!("The requested version ({version}) of service AmazonEC2 does not exist"),
        )
    }

    pub fn unknown_parameter(name: &str) -> Self {
        Self::new(
            400,
            "UnknownParameter",
            format!("The parameter {name} is not recognized"),
        )
    }

    pub fn invalid_parameter_value(message: impl Into<String>) -> Self {
        Self::new(400, "InvalidParameterValue", message)
    }

    pub fn invalid_query(message: impl Into<String>) -> Self {
        Self::new(400, "InvalidQueryParameter", message)
    }

    pub fn instance_malformed(id: &str) -> Self {
        Self::new(
            400,
            "InvalidInstanceID.Malformed",
            format!("Invalid id: \"{id}\""),
        )
    }

    /// The request body over the pipeline's limit.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("The request body is larger than {limit} bytes."),
        )
    }

    /// The one mapping from a refused parameter set.
    pub fn from_params(err: &ParamError) -> Self {
        match err {
            ParamError::Method(m) => Self::new(
                405,
                "UnsupportedHttpVerb",
                format!("The HTTP method {m} is not supported; use GET or POST."),
            ),
            ParamError::BodyType => {
                Self::invalid_query("A POST body must be application/x-www-form-urlencoded.")
            }
            ParamError::BadEscape | ParamError::NotUtf8 => {
                Self::invalid_query(format!("The query string is malformed: {err}."))
            }
            ParamError::TooLong => Self::invalid_query(format!(
                "The request parameters are longer than {MAX_ENCODED} bytes."
            )),
            ParamError::TooMany | ParamError::FieldTooLong => {
                Self::invalid_query(format!("The query string is too large: {err}."))
            }
            ParamError::Duplicate(name) => {
                Self::invalid_query(format!("The parameter {name} is given more than once."))
            }
            ParamError::Unknown(name) => Self::unknown_parameter(name),
            ParamError::MissingAction => Self::missing_action(),
            ParamError::InvalidAction(action) => Self::invalid_action(action),
            ParamError::Missing(name) => Self::missing_parameter(name),
            ParamError::Version(v) => Self::no_such_version(v),
            ParamError::InstanceId(id) => Self::instance_malformed(id),
            ParamError::Bool { name, value } => Self::invalid_parameter_value(format!(
                "Value ({value}) for parameter {name} is invalid. Expected: 'true' or 'false'."
            )),
        }
    }

    // Outcomes of the call.

    pub fn dry_run() -> Self {
        Self::new(
            412,
            "DryRunOperation",
            "Request would have succeeded, but DryRun flag is set.",
        )
        .with(Outcome::Ok)
    }

    pub fn instance_not_found(id: &str) -> Self {
        Self::new(
            400,
            "InvalidInstanceID.NotFound",
            format!("The instance ID '{id}' does not exist"),
        )
    }

    pub fn incorrect_state(id: &str, state: &str) -> Self {
        Self::new(
            400,
            "IncorrectInstanceState",
            format!("The instance '{id}' is not in a state from which a screenshot can be taken (it is {state})."),
        )
    }

    pub fn unsupported_operation(message: impl Into<String>) -> Self {
        Self::new(400, "UnsupportedOperation", message)
    }

    pub fn request_limit_exceeded() -> Self {
        Self::new(503, "RequestLimitExceeded", "Request limit exceeded.")
    }

    /// Too much in progress here: EC2's "overloaded" code.
    pub fn unavailable() -> Self {
        Self::new(
            503,
            "Unavailable",
            "The server is overloaded and can't handle the request.",
        )
    }

    /// A passing failure of what the host depends on (libvirt, a deadline).
    pub fn service_unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    pub fn internal_error() -> Self {
        Self::new(500, "InternalError", "An internal error has occurred").with(Outcome::Internal)
    }

    /// EC2's error document.
    pub fn body(&self, request_id: &str) -> String {
        let mut out = String::with_capacity(256 + self.message.len());
        out.push_str(XML_DECL);
        out.push_str("<Response><Errors><Error><Code>");
        push_text(&mut out, self.code);
        out.push_str("</Code><Message>");
        push_text(&mut out, &clip(&self.message, MAX_MESSAGE));
        out.push_str("</Message></Error></Errors><RequestID>");
        push_text(&mut out, request_id);
        out.push_str("</RequestID></Response>");
        out
    }

    pub fn into_response(self, request_id: &str) -> Response {
        xml_response(self.status, self.body(request_id))
    }
}

/// A libvirt state in EC2's words where it has them (`stopping`,
/// `stopped`); paused and suspended, which EC2 lacks, as themselves.
fn ec2_state(state: DomainState) -> &'static str {
    match state {
        DomainState::Running | DomainState::Blocked => "running",
        DomainState::Paused => "paused",
        DomainState::PmSuspended => "suspended",
        DomainState::Shutdown => "stopping",
        DomainState::Shutoff | DomainState::NoState => "stopped",
        DomainState::Crashed => "crashed",
    }
}

/// The GetConsoleScreenshot answer: the JPEG in base64, and its SHA-256 as
/// vmshot's own `imageSha256` (botocore skips members its model lacks).
pub fn screenshot_body(
    request_id: &str,
    instance_id: &str,
    jpeg: &[u8],
    sha256_hex: &str,
) -> String {
    let b64_len = jpeg.len().div_ceil(3) * 4;
    let mut out = String::with_capacity(320 + b64_len + instance_id.len());
    out.push_str(XML_DECL);
    out.push_str("<GetConsoleScreenshotResponse xmlns=\"");
    out.push_str(XMLNS);
    out.push_str("\"><requestId>");
    push_text(&mut out, request_id);
    out.push_str("</requestId><instanceId>");
    push_text(&mut out, instance_id);
    out.push_str("</instanceId><imageData>");
    base64::engine::general_purpose::STANDARD.encode_string(jpeg, &mut out);
    out.push_str("</imageData><imageSha256>");
    push_text(&mut out, sha256_hex);
    out.push_str("</imageSha256></GetConsoleScreenshotResponse>");
    out
}

/// GetConsoleOutput's answer, in EC2's order: `requestId`, `instanceId`,
/// `timestamp` (when the log was last written; omitted if never), `output`
/// (base64, which boto3 decodes itself).
pub fn console_output_body(
    request_id: &str,
    instance_id: &str,
    timestamp: Option<&str>,
    output: &[u8],
) -> String {
    let mut out = String::with_capacity(256 + output.len().div_ceil(3) * 4);
    out.push_str(XML_DECL);
    out.push_str("<GetConsoleOutputResponse xmlns=\"");
    out.push_str(XMLNS);
    out.push_str("\"><requestId>");
    push_text(&mut out, request_id);
    out.push_str("</requestId><instanceId>");
    push_text(&mut out, instance_id);
    out.push_str("</instanceId>");
    if let Some(t) = timestamp {
        out.push_str("<timestamp>");
        push_text(&mut out, t);
        out.push_str("</timestamp>");
    }
    out.push_str("<output>");
    base64::engine::general_purpose::STANDARD.encode_string(output, &mut out);
    out.push_str("</output></GetConsoleOutputResponse>");
    out
}

pub fn console_output_response(
    request_id: &str,
    instance_id: &str,
    timestamp: Option<&str>,
    output: &[u8],
) -> Response {
    xml_response(
        StatusCode::OK,
        console_output_body(request_id, instance_id, timestamp, output),
    )
}

pub fn screenshot_response(
    request_id: &str,
    instance_id: &str,
    jpeg: &[u8],
    sha256_hex: &str,
) -> Response {
    xml_response(
        StatusCode::OK,
        screenshot_body(request_id, instance_id, jpeg, sha256_hex),
    )
}

fn xml_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

/// XML character data: the five specials escaped, and characters XML 1.0
/// cannot carry at all (most controls, U+FFFE/U+FFFF) replaced by U+FFFD,
/// so a hostile value can never break the document.
fn push_text(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' => out.push(c),
            // A raw CR would be read back as LF.
            '\r' => out.push_str("&#13;"),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
}

fn clip(s: &str, max: usize) -> String {
    super::params::truncate(s, max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn parse(xml: &str) -> roxmltree::Document<'_> {
        roxmltree::Document::parse(xml).unwrap_or_else(|e| panic!("not XML ({e}): {xml}"))
    }

    fn text<'a>(doc: &'a roxmltree::Document<'_>, name: &str) -> Option<&'a str> {
        doc.descendants()
            .find(|n| n.tag_name().name() == name)
            .map(|n| n.text().unwrap_or(""))
    }

    #[test]
    fn screenshot_body_is_ec2s_with_the_hash() {
        let jpeg = b"\xff\xd8\xff\xe0 not really a jpeg \xff\xd9";
        let sha = hex::encode(Sha256::digest(jpeg));
        let body = screenshot_body("8f3c-req", "i-0123456789abcdef0", jpeg, &sha);
        assert!(body.starts_with(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<GetConsoleScreenshotResponse \
             xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>8f3c-req</requestId>"
        ));
        let doc = parse(&body);
        assert_eq!(doc.root_element().tag_name().namespace(), Some(XMLNS));
        assert_eq!(text(&doc, "instanceId"), Some("i-0123456789abcdef0"));
        let data = base64::engine::general_purpose::STANDARD
            .decode(text(&doc, "imageData").unwrap())
            .unwrap();
        assert_eq!(data, jpeg);
        assert_eq!(text(&doc, "imageSha256"), Some(sha.as_str()));
    }

    #[test]
    fn error_body_is_ec2s() {
        let body = AwsError::dry_run().body("req-2");
        assert_eq!(
            body,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error>\
             <Code>DryRunOperation</Code><Message>Request would have succeeded, but DryRun flag \
             is set.</Message></Error></Errors><RequestID>req-2</RequestID></Response>"
        );
    }

    #[test]
    fn hostile_text_cannot_break_the_document() {
        let evil = "</Message><Code>x</Code>&amp;\"'\u{0}\u{1b}\r\n\u{fffe}é";
        let err = AwsError::invalid_action(evil);
        let body = err.body(evil);
        let doc = parse(&body);
        assert_eq!(
            text(&doc, "Message"),
            Some("The action </Message><Code>x</Code>&amp;\"'\u{fffd}\u{fffd}\r\n\u{fffd}é is not valid for this web service.")
        );
        assert_eq!(text(&doc, "Code"), Some("InvalidAction"));
        let body = screenshot_body(evil, evil, b"", evil);
        assert!(parse(&body)
            .root_element()
            .has_tag_name((XMLNS, "GetConsoleScreenshotResponse")));
        // A long message is cut, on a character boundary.
        let long = AwsError::invalid_parameter_value("é".repeat(1000)).body("r");
        assert!(text(&parse(&long), "Message").unwrap().len() <= MAX_MESSAGE);
    }

    #[test]
    fn statuses_per_code() {
        let sig = |e: SigError| {
            let a = AwsError::from_sig(&e);
            (a.status.as_u16(), a.code)
        };
        assert_eq!(sig(SigError::Missing), (400, "MissingParameter"));
        assert_eq!(sig(SigError::UnknownKey), (401, "AuthFailure"));
        assert_eq!(sig(SigError::Scope("x".into())), (401, "AuthFailure"));
        assert_eq!(sig(SigError::Unsupported("x".into())), (401, "AuthFailure"));
        assert_eq!(
            sig(SigError::Incomplete("x".into())),
            (400, "IncompleteSignature")
        );
        assert_eq!(sig(SigError::Expired("x".into())), (400, "RequestExpired"));
        assert_eq!(sig(SigError::PayloadHash), (403, "SignatureDoesNotMatch"));
        assert_eq!(
            sig(SigError::MalformedQuery),
            (400, "InvalidQueryParameter")
        );
        assert_eq!(AwsError::signature_mismatch().status, StatusCode::FORBIDDEN);

        let p = |e: ParamError| {
            let a = AwsError::from_params(&e);
            (a.status.as_u16(), a.code)
        };
        assert_eq!(p(ParamError::MissingAction), (400, "MissingAction"));
        assert_eq!(
            p(ParamError::InvalidAction("X".into())),
            (400, "InvalidAction")
        );
        assert_eq!(
            p(ParamError::Missing("InstanceId")),
            (400, "MissingParameter")
        );
        assert_eq!(p(ParamError::Version("1".into())), (400, "NoSuchVersion"));
        assert_eq!(
            p(ParamError::Unknown("Foo".into())),
            (400, "UnknownParameter")
        );
        assert_eq!(
            p(ParamError::InstanceId("a/b".into())),
            (400, "InvalidInstanceID.Malformed")
        );
        assert_eq!(
            p(ParamError::Bool {
                name: "WakeUp",
                value: "1".into()
            }),
            (400, "InvalidParameterValue")
        );
        assert_eq!(
            p(ParamError::Duplicate("A".into())),
            (400, "InvalidQueryParameter")
        );
        assert_eq!(p(ParamError::Method("PUT".into())).0, 405);

        for (e, status, code) in [
            (AwsError::dry_run(), 412, "DryRunOperation"),
            (
                AwsError::instance_not_found("i-1"),
                400,
                "InvalidInstanceID.NotFound",
            ),
            (
                AwsError::incorrect_state("i-1", "shut off"),
                400,
                "IncorrectInstanceState",
            ),
            (
                AwsError::unsupported_operation("x"),
                400,
                "UnsupportedOperation",
            ),
            (
                AwsError::request_limit_exceeded(),
                503,
                "RequestLimitExceeded",
            ),
            (AwsError::unavailable(), 503, "Unavailable"),
            (
                AwsError::service_unavailable("x"),
                503,
                "ServiceUnavailable",
            ),
            (AwsError::internal_error(), 500, "InternalError"),
            (AwsError::too_large(1), 413, "RequestEntityTooLarge"),
        ] {
            assert_eq!((e.status.as_u16(), e.code), (status, code));
        }
    }

    #[test]
    fn responses_carry_ec2s_content_type() {
        let r = AwsError::auth_failure().into_response("r");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        let r = screenshot_response("r", "i-1", b"x", "00");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
    }

    /// Writes sample bodies for checking with boto3 against a stub server:
    /// `VMSHOT_AWS_SAMPLES=dir cargo test --lib api::aws::wire -- samples`.
    #[test]
    fn samples() {
        let Some(dir) = std::env::var_os("VMSHOT_AWS_SAMPLES") else {
            return;
        };
        let dir = std::path::PathBuf::from(dir);
        let jpeg = b"\xff\xd8\xff\xe0 sample \xff\xd9";
        let sha = hex::encode(Sha256::digest(jpeg));
        let write = |name: &str, status: u16, body: String| {
            let json = serde_json::json!({ "status": status, "body": body });
            std::fs::write(dir.join(format!("{name}.json")), json.to_string()).unwrap();
        };
        write(
            "ok",
            200,
            screenshot_body("req-ok", "i-0123456789abcdef0", jpeg, &sha),
        );
        for (name, e) in [
            ("dry_run", AwsError::dry_run()),
            ("auth", AwsError::auth_failure()),
            ("mismatch", AwsError::signature_mismatch()),
            (
                "expired",
                AwsError::from_sig(&SigError::Expired("Request has expired.".into())),
            ),
            (
                "not_found",
                AwsError::instance_not_found("i-0123456789abcdef0"),
            ),
            ("hostile", AwsError::invalid_action("<&\"'>\u{1}é")),
        ] {
            write(name, e.status.as_u16(), e.body(&format!("req-{name}")));
        }
    }
}
