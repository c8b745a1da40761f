//! Upload status in the Oracle Marketplace's shape: an upload (of a
//! recording or a capture, `service::uploads`) is an "upload request", and
//! each storage target one of its data centers.
//!
//! ```text
//!   GET  /appstore/publisher/v1/machineimages/{uploadRequestId}   the status, JSON
//!   HEAD /appstore/publisher/v1/machineimages/{uploadRequestId}   X-Upload-Status, X-Upload-File-Path
//! ```
//!
//! In order: the bearer token (401), the method (405), the id (400: digits,
//! a positive 64-bit integer), then the core, where an upload the caller
//! may not see (another tenant's) is not found (404) in the same words as
//! one that does not exist. Errors are `{"errorCode", "errorMessage"}`.

// What the fuzz target drives (see `api::fuzzing`).
mod config;
pub(super) mod fuzz;
mod wire;

use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::pipeline::{Dialect, Incoming, Record, Refusal};
use super::registry::{Mount, MountError, Registration, Shared};
use crate::auth::{StaticTokens, TokenRules};
use crate::service::uploads::{UploadId, Uploads};
use crate::service::Principal;

use config::Section;
use wire::{MachineImageUploadRequest, MarketError};

const NAME: &str = "marketplace";
const PREFIX: &str = "/appstore/publisher/v1/machineimages/";
/// The id's longest spelling: a positive i64 has at most 19 digits.
const MAX_ID_DIGITS: usize = 19;
/// Bearer tokens from a file (`auth::StaticTokens`): with a project a token
/// sees that tenant's uploads, with role `admin` every upload on the host.
const TOKEN_RULES: TokenRules = TokenRules {
    max_len: 512,
    project_required: false,
    roles: None,
};

pub const REGISTRATION: Registration = Registration {
    name: NAME,
    check: |section| Section::parse(section).map(drop),
    mount,
};

fn mount(section: &toml::Table, shared: &Shared) -> Result<Option<Mount>, MountError> {
    let config = Section::parse(section).map_err(MountError::in_section(NAME))?;
    if !config.enabled {
        return Ok(None);
    }
    let in_section = MountError::in_section(NAME);
    let uploads = shared.service.uploads().ok_or_else(|| {
        in_section(
            "upload statuses are those of [uploads]: configure it (and [store]) \
             or set enabled = false"
                .into(),
        )
    })?;
    let file = config
        .tokens_file
        .as_deref()
        .unwrap_or(std::path::Path::new(""));
    let tokens = StaticTokens::load(file, TOKEN_RULES).map_err(&in_section)?;
    tracing::info!(tokens = tokens.len(), "marketplace dialect");
    Ok(Some(Mount::new(
        format!("Oracle Marketplace upload status ({PREFIX}{{uploadRequestId}})"),
        vec![format!("{PREFIX}{{id}}")],
        None,
        Marketplace { uploads, tokens },
        shared.limits(),
    )))
}

pub struct Marketplace {
    uploads: Uploads,
    tokens: StaticTokens,
}

impl Marketplace {
    /// Who `Authorization: Bearer <token>` is, if anyone.
    fn principal(&self, authorization: Option<&str>) -> Option<Principal> {
        let holder = self.tokens.holder(bearer(authorization)?).ok()?;
        Some(holder.principal(NAME))
    }
}

fn bearer(authorization: Option<&str>) -> Option<&str> {
    authorization?.strip_prefix("Bearer ")?.trim().into()
}

impl Dialect for Marketplace {
    const NAME: &'static str = NAME;
    const REQUEST_ID_HEADER: &'static str = "x-request-id";
    type Context = ();
    type Error = MarketError;

    fn request_id(&self, id: uuid::Uuid) -> String {
        id.to_string()
    }

    fn context(&self, _: &Parts) {}

    async fn serve(
        &self,
        request: Incoming<'_>,
        _: &mut (),
        record: &mut Record,
    ) -> Result<Response, MarketError> {
        let head = request.head;
        let authorization = head
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let who = self
            .principal(authorization)
            .ok_or_else(MarketError::not_authorized)?;
        record.principal = Some(who.id.clone());
        let head_only = match head.method {
            Method::GET => false,
            Method::HEAD => true,
            _ => return Err(MarketError::method_not_allowed()),
        };
        record.action = Some(if head_only {
            "HeadMachineImage"
        } else {
            "GetMachineImage"
        });
        let raw = head.uri.path().strip_prefix(PREFIX).unwrap_or("");
        let id = parse_id(raw)?;
        let status = self
            .uploads
            .status_for(&who, id)
            .await
            .map_err(|e| MarketError::from_core(&e))?;
        let view = MachineImageUploadRequest::from_status(&status);
        let mut response = if head_only {
            StatusCode::OK.into_response()
        } else {
            let body = serde_json::to_string(&view).expect("a status serializes");
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        };
        let headers = response.headers_mut();
        headers.insert(
            "x-upload-status",
            HeaderValue::from_static(view.status_name),
        );
        if let Ok(path) = HeaderValue::from_str(&view.image_file_path) {
            headers.insert("x-upload-file-path", path);
        }
        Ok(response)
    }

    fn refuse(&self, why: Refusal) -> MarketError {
        match why {
            Refusal::AmbiguousLength => MarketError::invalid_parameter(Refusal::AMBIGUOUS_LENGTH),
            Refusal::TooLarge { limit } => MarketError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                ..MarketError::invalid_parameter(format!(
                    "Request is too large: the limit is {limit} bytes."
                ))
            },
            Refusal::TimedOut { after } => MarketError::unavailable(Refusal::timed_out(after)),
            Refusal::Panicked => MarketError::system_error("System Error."),
        }
    }

    fn render(&self, error: &MarketError, _: &(), _: &str) -> Response {
        (
            error.status,
            [(header::CONTENT_TYPE, "application/json")],
            error.body(),
        )
            .into_response()
    }
}

/// `{uploadRequestId}`: a positive integer in plain digits.
fn parse_id(raw: &str) -> Result<UploadId, MarketError> {
    let bad = || {
        MarketError::invalid_parameter(
            "Invalid Parameter Value: uploadRequestId must be a positive integer.",
        )
    };
    if raw.is_empty() || raw.len() > MAX_ID_DIGITS || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match raw.parse::<i64>() {
        Ok(id) if id > 0 => Ok(UploadId(id)),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_token_file_parses() {
        let text = include_str!("../../../systemd/marketplace-tokens.toml");
        assert_eq!(StaticTokens::parse(text, TOKEN_RULES).unwrap().len(), 1);
    }

    #[test]
    fn only_bearer_authorizations_carry_a_token() {
        assert_eq!(bearer(Some("Bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("bearer abc")), None);
        assert_eq!(bearer(None), None);
    }

    #[test]
    fn ids_are_positive_integers_in_digits() {
        assert_eq!(parse_id("2797087").unwrap(), UploadId(2797087));
        for bad in [
            "",
            "0",
            "-1",
            "+1",
            "1.0",
            "abc",
            "99999999999999999999",
            "1 ",
            "%31",
        ] {
            let err = parse_id(bad).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{bad:?}");
        }
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Every positive id is read back as itself; anything else is a
        /// refusal, never a panic.
        #[test]
        fn ids_round_trip(id in 1i64..=i64::MAX, junk in "[0-9+ -]{0,24}|\\PC{0,24}", token in "\\PC{0,40}") {
            prop_assert_eq!(parse_id(&id.to_string()).ok(), Some(UploadId(id)));
            // Leading zeros are let be: the same upload either way.
            if let Ok(read) = parse_id(&junk) {
                prop_assert!(read.0 > 0 && read.0.to_string() == junk.trim_start_matches('0'));
            }
            let header = format!("Bearer {token}");
            prop_assert_eq!(bearer(Some(&header)), Some(token.trim()));
        }
    }
}
