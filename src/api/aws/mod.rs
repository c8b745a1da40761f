//! AWS EC2's Query API, version 2016-11-15: `GetConsoleScreenshot` and
//! `GetConsoleOutput` on `aws.path` (`/ec2`), as GET with a query or POST
//! with a form body, signed with Signature Version 4 in the `Authorization`
//! header or presigned in the query (see `sigv4`). boto3 reaches it with `endpoint_url` set to this
//! host's URL plus the path.
//!
//! InstanceId → libvirt domain: the `[aws.instances]` table first, then a
//! domain whose metadata carries the id, else the id as a domain UUID or name.

// What the fuzz target drives (see `api::fuzzing`).
mod config;
pub(super) mod fuzz;
mod params;
mod sigv4;
mod wire;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::http::header;
use axum::http::request::Parts;
use axum::response::Response;
use axum::routing::MethodFilter;

use super::pipeline::{Dialect, Incoming, Record, Refusal};
use super::registry::{load_keys, Mount, MountError, Registration, Shared};
use super::{HostNames, LocalAddr};
use crate::auth::KeyStore;
use crate::service::{Caller, Interval, Principal, ScreenshotRequest, Screenshots};

use config::Section;
use params::{Asked, ConsoleOutputRequest, Params, CONSOLE_OUTPUT, SCREENSHOT};
use wire::AwsError;

const NAME: &str = "aws";
/// "Only the most recent 64 KB of console output is available" (EC2's docs).
const CONSOLE_BYTES: usize = 64 * 1024;

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
    let keys = load_keys(NAME, config.credentials_file.as_deref())?;
    tracing::info!(keys = keys.len(), path = %config.path, "aws dialect");
    let limits = shared.limits();
    // boto3 asks for the endpoint's path itself; others add a slash.
    let route = config.path.clone();
    let paths = match route.as_str() {
        "/" => vec![route.clone()],
        _ => vec![route.clone(), format!("{route}/")],
    };
    let aws = Aws {
        service: shared.service.clone(),
        keys,
        hosts: HostNames::new(&shared.server.host_names),
        config,
    };
    Ok(Some(Mount::new(
        format!("AWS EC2 (GET or POST {route})"),
        paths,
        Some(MethodFilter::GET.or(MethodFilter::POST)),
        aws,
        limits,
    )))
}

pub struct Aws {
    service: Arc<Screenshots>,
    keys: KeyStore,
    hosts: HostNames,
    config: Section,
}

impl Dialect for Aws {
    const NAME: &'static str = NAME;
    const REQUEST_ID_HEADER: &'static str = "x-amzn-requestid";
    type Context = ();
    type Error = AwsError;

    fn request_id(&self, id: uuid::Uuid) -> String {
        id.to_string()
    }

    fn context(&self, _: &Parts) {}

    async fn serve(
        &self,
        request: Incoming<'_>,
        _: &mut (),
        record: &mut Record,
    ) -> Result<Response, AwsError> {
        let Incoming {
            head,
            body,
            request_id,
        } = request;
        let query = head.uri.query().unwrap_or("");
        let content_type = head
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let params = Params::parse(head.method.as_str(), query, content_type, &body)
            .map_err(|e| AwsError::from_params(&e))?;
        record.action = params
            .get("Action")
            .and_then(|a| [SCREENSHOT, CONSOLE_OUTPUT].into_iter().find(|k| *k == a));
        let who = self.authenticate(head, &body)?;
        record.principal = Some(who.id.clone());
        let asked = match params.request().map_err(|e| AwsError::from_params(&e))? {
            Asked::Screenshot(asked) => asked,
            Asked::ConsoleOutput(asked) => {
                return self.console_output(&who, &asked, record, request_id).await;
            }
        };
        let instance = asked.instance_id.as_str();
        record.instance = Some(instance.to_owned());
        let from_core = |e| AwsError::from_core(&e, instance);
        let domain = self
            .service
            .find_instance(&who, instance, &self.config.instances)
            .await
            .map_err(from_core)?;
        record.domain = Some(domain.name.clone());
        // EC2 answers a dry run once the caller may act on the instance.
        if asked.dry_run {
            return Err(AwsError::dry_run());
        }
        let request = ScreenshotRequest {
            wake: asked.wake_up,
            caller: Some(Caller {
                request_id: request_id.to_owned(),
                user: who.id.clone(),
            }),
            throttle: Some(Interval {
                rule: NAME,
                every: Duration::from_secs(self.config.throttle_interval_secs),
            }),
            ..ScreenshotRequest::default()
        };
        let shot = self
            .service
            .take(&domain, &request)
            .await
            .map_err(from_core)?;
        let response =
            wire::screenshot_response(request_id, instance, &shot.image, &shot.sha256_hex());
        record.shot = Some(shot);
        Ok(response)
    }

    fn refuse(&self, why: Refusal) -> AwsError {
        match why {
            Refusal::AmbiguousLength => AwsError::invalid_query(Refusal::AMBIGUOUS_LENGTH),
            Refusal::TooLarge { limit } => AwsError::too_large(limit),
            Refusal::TimedOut { after } => AwsError::service_unavailable(Refusal::timed_out(after)),
            Refusal::Panicked => AwsError::internal_error(),
        }
    }

    fn render(&self, error: &AwsError, _: &(), request_id: &str) -> Response {
        error.clone().into_response(request_id)
    }
}

impl Aws {
    /// GetConsoleOutput: the last 64 KB of the serial log, whatever the
    /// instance's state, as EC2 keeps the most recent 64 KB.
    async fn console_output(
        &self,
        who: &Principal,
        asked: &ConsoleOutputRequest,
        record: &mut Record,
        request_id: &str,
    ) -> Result<Response, AwsError> {
        let instance = asked.instance_id.as_str();
        record.instance = Some(instance.to_owned());
        let from_core = |e| AwsError::from_core(&e, instance);
        let domain = self
            .service
            .find_instance(who, instance, &self.config.instances)
            .await
            .map_err(from_core)?;
        record.domain = Some(domain.name.clone());
        if asked.dry_run {
            return Err(AwsError::dry_run());
        }
        let output = self
            .service
            .console_output(&domain, CONSOLE_BYTES)
            .await
            .map_err(from_core)?;
        // As EC2 writes it: 2022-10-14T01:12:41.000Z.
        let format = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        let timestamp = output
            .updated
            .and_then(|t| t.to_offset(time::UtcOffset::UTC).format(&format).ok());
        Ok(wire::console_output_response(
            request_id,
            instance,
            timestamp.as_deref(),
            &output.bytes,
        ))
    }

    /// Who signed this request (SigV4, either form), for this host.
    fn authenticate(&self, head: &Parts, body: &[u8]) -> Result<Principal, AwsError> {
        let request = sigv4::Request {
            method: head.method.as_str(),
            path: head.uri.path(),
            query: head.uri.query().unwrap_or(""),
            headers: &head.headers,
            body,
        };
        let policy = sigv4::Policy {
            service: "ec2",
            region: self.config.region.as_deref(),
            now: SystemTime::now(),
            max_skew: Duration::from_secs(self.config.timestamp_skew_secs),
        };
        let verified = sigv4::verify(&request, &policy, |id| {
            self.keys.get(id).map(|key| key.secret.as_bytes())
        })
        .map_err(|e| {
            let mut wire = AwsError::from_sig(&e);
            if let sigv4::SigError::Mismatch { string_to_sign, .. } = e {
                wire.detail = Some(format!("string to sign: {string_to_sign:?}"));
            }
            wire
        })?;
        // The signature covers the host; the host must be this one, so that a
        // request cannot be replayed on another host with the same key.
        let local = head.extensions.get::<LocalAddr>().copied();
        if !self.hosts.accepts(&verified.host, local) {
            return Err(AwsError::auth_failure_because(format!(
                "The request was signed for the host \"{}\", not this one.",
                verified.host
            )));
        }
        let key = self
            .keys
            .get(&verified.access_key_id)
            .ok_or_else(AwsError::auth_failure)?;
        Ok(key.principal(NAME))
    }
}
