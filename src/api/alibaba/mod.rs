//! Alibaba Cloud ECS, RPC style, API version 2014-05-26: `GetInstanceScreenshot`
//! and `GetInstanceConsoleOutput` on `/`, as GET with a query string or POST
//! with a query and/or form body, signed with signature 1.0 or
//! ACS3-HMAC-SHA256 (see `signature`).
//!
//! InstanceId → libvirt domain: the `[alibaba.instances]` table of the config
//! first, then a domain whose metadata carries the id (`service::instances`),
//! else the id itself as a domain UUID or name.

// What the fuzz target drives (see `api::fuzzing`).
mod config;
pub(super) mod fuzz;
mod params;
mod signature;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::response::Response;
use axum::routing::MethodFilter;
use base64::Engine;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::pipeline::{Dialect, Incoming, Record, Refusal};
use super::registry::{load_keys, Mount, MountError, Registration, Shared};
use super::{HostNames, LocalAddr};
use crate::auth::{AccessKey, KeyStore, Nonce, NonceCache};
use crate::service::{self, Caller, Interval, Principal, ScreenshotRequest, Screenshots};

use config::Section;
pub use params::{Params, ParamsError};
pub use signature::percent_encode;
use signature::{verify_acs3, verify_v1, Acs3Authorization, Acs3Request, ACS3};
use wire::{AliError, Format};

pub const VERSION: &str = "2014-05-26";
const NAME: &str = "alibaba";
const SCREENSHOT: &str = "GetInstanceScreenshot";
const CONSOLE_OUTPUT: &str = "GetInstanceConsoleOutput";
/// The end of the serial log GetInstanceConsoleOutput returns. Alibaba
/// documents no size; EC2's 64 KB is what such callers expect.
const CONSOLE_BYTES: usize = 64 * 1024;
/// Longest nonce accepted. The SDKs send 32 hex digits or a UUID (36).
const MAX_NONCE_LEN: usize = 64;
/// Longest InstanceId and RegionId: ECS ids are ~22 characters, libvirt
/// domain names rarely longer than a UUID.
const MAX_INSTANCE_LEN: usize = 256;
const MAX_REGION_LEN: usize = 64;

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
    tracing::info!(keys = keys.len(), "alibaba dialect on /");
    let limits = shared.limits();
    let alibaba = Alibaba::new(shared.service.clone(), keys, config, &shared.server);
    Ok(Some(Mount::new(
        "Alibaba ECS (GET or POST /)".into(),
        vec!["/".into()],
        Some(MethodFilter::GET.or(MethodFilter::POST)),
        alibaba,
        limits,
    )))
}

pub struct Alibaba {
    service: Arc<Screenshots>,
    keys: KeyStore,
    nonces: NonceCache,
    hosts: HostNames,
    config: Section,
}

impl Alibaba {
    fn new(
        service: Arc<Screenshots>,
        keys: KeyStore,
        config: Section,
        server: &crate::config::Server,
    ) -> Self {
        let window = Duration::from_secs(config.timestamp_skew_secs * 2);
        let nonces = NonceCache::new(window, config.max_nonces, keys.ids());
        tracing::info!(
            per_key = nonces.per_key(),
            worst_case_mib = nonces.worst_case_bytes() as f64 / f64::from(1 << 20),
            "alibaba nonce cache"
        );
        Self {
            service,
            keys,
            nonces,
            hosts: HostNames::new(&server.host_names),
            config,
        }
    }
}

impl Dialect for Alibaba {
    const NAME: &'static str = NAME;
    const REQUEST_ID_HEADER: &'static str = "x-acs-request-id";
    type Context = Format;
    type Error = AliError;

    fn request_id(&self, id: uuid::Uuid) -> String {
        id.to_string().to_uppercase()
    }

    fn context(&self, head: &Parts) -> Format {
        response_format(None, &head.headers)
    }

    async fn serve(
        &self,
        request: Incoming<'_>,
        format: &mut Format,
        record: &mut Record,
    ) -> Result<Response, AliError> {
        let Incoming {
            head,
            body,
            request_id,
        } = request;
        single_headers(&head.headers)?;
        let query = head.uri.query().unwrap_or("");
        // ACS3 signs the query alone (the body only by its hash); both sign
        // and act on the same values, since a name may not appear in both.
        let (params, query) = Params::parse(query, b"")
            .and_then(|q| Ok((Params::parse(query, &body)?, q)))
            .map_err(|e| AliError::invalid(format!("{e}.")))?;
        *format = response_format(Some(&params), &head.headers);
        // The metrics' action label: ours, named before anything is checked.
        let named = params
            .get("Action")
            .map(str::to_owned)
            .or_else(|| header(&head.headers, "x-acs-action"));
        record.action =
            named.and_then(|a| [SCREENSHOT, CONSOLE_OUTPUT].into_iter().find(|k| *k == a));
        let (key, nonce) = self.authenticate(head, &params, &query, &body)?;
        self.check_nonce(key, &nonce).await?;
        record.principal = Some(key.id.clone());
        let who = key.principal(NAME);
        self.dispatch(&who, &head.headers, &params, record, *format, request_id)
            .await
    }

    fn refuse(&self, why: Refusal) -> AliError {
        match why {
            Refusal::AmbiguousLength => AliError::invalid(Refusal::AMBIGUOUS_LENGTH),
            Refusal::TooLarge { limit } => AliError::too_large(limit),
            Refusal::TimedOut { after } => AliError::timed_out(after),
            Refusal::Panicked => AliError::internal(),
        }
    }

    fn render(&self, error: &AliError, format: &Format, request_id: &str) -> Response {
        error.render(*format, request_id, &self.config.host_id)
    }
}

impl Alibaba {
    async fn dispatch(
        &self,
        who: &Principal,
        headers: &HeaderMap,
        params: &Params,
        record: &mut Record,
        format: Format,
        request_id: &str,
    ) -> Result<Response, AliError> {
        let action = params
            .get("Action")
            .map(str::to_owned)
            .or_else(|| header(headers, "x-acs-action"))
            .filter(|a| !a.is_empty())
            .ok_or_else(|| AliError::missing("Action"))?;
        let version = params
            .get("Version")
            .map(str::to_owned)
            .or_else(|| header(headers, "x-acs-version"));
        if let Some(version) = version.filter(|v| v != VERSION) {
            return Err(AliError::invalid(format!(
                "The specified Version \"{version}\" is not supported; use {VERSION}."
            )));
        }
        let console = match action.as_str() {
            SCREENSHOT => false,
            CONSOLE_OUTPUT => true,
            _ => return Err(AliError::action_not_found(&action)),
        };

        let region = required(params, "RegionId")?;
        bounded("RegionId", region, MAX_REGION_LEN)?;
        if let Some(ours) = self
            .config
            .region_id
            .as_deref()
            .filter(|ours| *ours != region)
        {
            return Err(AliError::invalid(format!(
                "The RegionId \"{region}\" is not served by this host ({ours})."
            )));
        }
        let instance = required(params, "InstanceId")?;
        bounded("InstanceId", instance, MAX_INSTANCE_LEN)?;
        record.instance = Some(instance.to_owned());
        if console {
            let remove_symbols = flag(params.get("RemoveSymbols"), "RemoveSymbols")?;
            return self
                .console_output(who, instance, remove_symbols, record, format, request_id)
                .await;
        }
        let wake = flag(
            params.get("WakeUp").or_else(|| params.get("Wakeup")),
            "WakeUp",
        )?;
        // vmshot's own: skip the VNC mirror and ask QEMU for the screen now.
        let fresh = flag(params.get("Fresh"), "Fresh")?;
        let from_service = |e| AliError::from_service(&e, instance);
        let domain = self
            .service
            .find_instance(who, instance, &self.config.instances)
            .await
            .map_err(from_service)?;
        record.domain = Some(domain.name.clone());
        let request = ScreenshotRequest {
            wake,
            fresh,
            caller: Some(Caller {
                request_id: request_id.to_owned(),
                user: who.id.clone(),
            }),
            throttle: Some(Interval {
                rule: NAME,
                every: Duration::from_secs(self.config.throttle_interval_secs),
            }),
            // An ECS instance has one screen, in the configured JPEG.
            screen: 0,
            output: None,
        };
        let shot = self
            .service
            .take(&domain, &request)
            .await
            .map_err(from_service)?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(shot.image.as_slice());
        let response = wire::screenshot(format, request_id, instance, &encoded, &shot.sha256_hex());
        record.shot = Some(shot);
        Ok(response)
    }

    /// GetInstanceConsoleOutput: the end of the serial log, base64, whatever
    /// the instance's state (the log of its last run is kept).
    async fn console_output(
        &self,
        who: &Principal,
        instance: &str,
        remove_symbols: bool,
        record: &mut Record,
        format: Format,
        request_id: &str,
    ) -> Result<Response, AliError> {
        let from_service = |e| AliError::from_service(&e, instance);
        let domain = self
            .service
            .find_instance(who, instance, &self.config.instances)
            .await
            .map_err(from_service)?;
        record.domain = Some(domain.name.clone());
        let output = self
            .service
            .console_output(&domain, CONSOLE_BYTES)
            .await
            .map_err(from_service)?;
        let bytes = if remove_symbols {
            service::without_escapes(&output.bytes)
        } else {
            output.bytes
        };
        let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let updated = output.updated.map(beijing_time).unwrap_or_default();
        Ok(wire::console_output(
            format, request_id, instance, &updated, &encoded,
        ))
    }

    /// Who signed this request, by either of the two signature schemes.
    fn authenticate(
        &self,
        parts: &Parts,
        params: &Params,
        query: &Params,
        body: &[u8],
    ) -> Result<(&AccessKey, String), AliError> {
        let authorization = header(&parts.headers, "authorization");
        if let Some(authorization) = authorization.filter(|a| a.starts_with(ACS3)) {
            return self.authenticate_acs3(parts, params, query, body, &authorization);
        }
        if !self.config.signature_v1 {
            return Err(AliError::invalid(
                "Signature 1.0 is not accepted here: sign with ACS3-HMAC-SHA256.",
            ));
        }
        let key_id = params
            .get("AccessKeyId")
            .ok_or_else(|| AliError::missing("AccessKeyId"))?;
        let key = self.keys.get(key_id).ok_or_else(AliError::key_not_found)?;
        self.check_timestamp("Timestamp", params.get("Timestamp"))?;
        if params.get("Signature").is_none() {
            return Err(AliError::missing("Signature"));
        }
        if params
            .get("SignatureMethod")
            .is_some_and(|m| m != "HMAC-SHA1")
        {
            return Err(AliError::invalid("SignatureMethod must be HMAC-SHA1."));
        }
        if params.get("SignatureVersion").is_some_and(|v| v != "1.0") {
            return Err(AliError::invalid("SignatureVersion must be 1.0."));
        }
        let nonce = valid_nonce(params.get("SignatureNonce"), "SignatureNonce")?;
        verify_v1(parts.method.as_str(), params, &key.secret)
            .map_err(|m| AliError::signature_mismatch(&m.string_to_sign))?;
        Ok((key, nonce.to_owned()))
    }

    fn authenticate_acs3(
        &self,
        parts: &Parts,
        params: &Params,
        query: &Params,
        body: &[u8],
        authorization: &str,
    ) -> Result<(&AccessKey, String), AliError> {
        let auth = Acs3Authorization::parse(authorization)
            .ok_or_else(|| AliError::invalid("The Authorization header is malformed."))?;
        let key = self
            .keys
            .get(&auth.access_key_id)
            .ok_or_else(AliError::key_not_found)?;
        // Whatever vmshot acts on must be covered by the signature, and the
        // host too, so that a request cannot be replayed on another host.
        let mut must_sign = vec![
            "host",
            "x-acs-date",
            "x-acs-signature-nonce",
            "x-acs-content-sha256",
        ];
        if params.get("Action").is_none() {
            must_sign.push("x-acs-action");
        }
        if params.get("Version").is_none() {
            must_sign.push("x-acs-version");
        }
        if let Some(unsigned) = must_sign
            .iter()
            .find(|h| !auth.signed_headers.iter().any(|s| s == *h))
        {
            return Err(AliError::invalid(format!(
                "The header {unsigned} must be signed."
            )));
        }
        self.check_timestamp(
            "x-acs-date",
            header(&parts.headers, "x-acs-date").as_deref(),
        )?;
        let nonce = header(&parts.headers, "x-acs-signature-nonce");
        let nonce = valid_nonce(nonce.as_deref(), "x-acs-signature-nonce")?.to_owned();
        let signed = auth.signed_headers.iter().map(String::as_str);
        if let Some(name) = repeated(&parts.headers, signed) {
            return Err(AliError::header_repeated(name));
        }
        let headers = &parts.headers;
        let lookup = |name: &str| header(headers, name);
        let request = Acs3Request {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query,
            header: &lookup,
            body,
        };
        verify_acs3(&auth, &request, &key.secret)
            .map_err(|m| AliError::signature_mismatch(&m.string_to_sign))?;
        let host = header(headers, "host").unwrap_or_default();
        if !self
            .hosts
            .accepts(&host, parts.extensions.get::<LocalAddr>().copied())
        {
            return Err(AliError::invalid(format!(
                "The request was signed for the host \"{host}\", not this one."
            )));
        }
        Ok((key, nonce))
    }

    fn check_timestamp(&self, name: &str, value: Option<&str>) -> Result<(), AliError> {
        let value = value.ok_or_else(|| AliError::missing(name))?;
        let at =
            OffsetDateTime::parse(value, &Rfc3339).map_err(|_| AliError::timestamp_format(name))?;
        let skew = (OffsetDateTime::now_utc() - at).abs();
        if skew > time::Duration::seconds(self.config.timestamp_skew_secs as i64) {
            return Err(AliError::timestamp_expired(self.config.timestamp_skew_secs));
        }
        Ok(())
    }

    /// A nonce is used once: in memory (bounded, per key) and, with a store,
    /// durably, so that a request seen before a restart is refused after it.
    async fn check_nonce(&self, key: &AccessKey, nonce: &str) -> Result<(), AliError> {
        match self.nonces.check(&key.id, nonce) {
            Nonce::Fresh => {}
            Nonce::Reused => return Err(AliError::nonce_used()),
            Nonce::Full => return Err(AliError::busy()),
        }
        let ttl = Duration::from_secs(self.config.timestamp_skew_secs * 2);
        match self.service.first_use(NAME, &key.id, nonce, ttl).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(AliError::nonce_used()),
            Err(e) => Err(AliError::from_service(&e, "-")),
        }
    }
}

/// JSON when asked for with `Format=JSON` (or by an `Accept: application/json`
/// and no `Format`, as the Tea SDKs do); XML otherwise, Alibaba's default.
fn response_format(params: Option<&Params>, headers: &HeaderMap) -> Format {
    match params.and_then(|p| p.get("Format")) {
        Some(f) if f.eq_ignore_ascii_case("json") => Format::Json,
        Some(_) => Format::Xml,
        None if header(headers, "accept").is_some_and(|a| a.contains("json")) => Format::Json,
        None => Format::Xml,
    }
}

/// A parameter that must be there and not be empty.
fn required<'a>(params: &'a Params, name: &str) -> Result<&'a str, AliError> {
    params
        .get(name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| AliError::missing(name))
}

/// A parameter no longer than `max` bytes.
fn bounded(name: &str, value: &str, max: usize) -> Result<(), AliError> {
    if value.len() > max {
        return Err(AliError::invalid(format!(
            "The parameter {name} is longer than {max} characters."
        )));
    }
    Ok(())
}

/// A signature nonce: present, not empty, and short (each is remembered).
fn valid_nonce<'a>(value: Option<&'a str>, name: &str) -> Result<&'a str, AliError> {
    let nonce = value
        .filter(|n| !n.is_empty())
        .ok_or_else(|| AliError::missing(name))?;
    bounded(name, nonce, MAX_NONCE_LEN)?;
    Ok(nonce)
}

/// Headers vmshot reads or that signatures cover must come once: a proxy in
/// front may act on another copy than the one checked here.
fn single_headers(headers: &HeaderMap) -> Result<(), AliError> {
    let read = [
        header::AUTHORIZATION,
        header::HOST,
        header::ACCEPT,
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::USER_AGENT,
    ];
    let matter = headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-acs-") || read.contains(name))
        .map(|name| name.as_str());
    match repeated(headers, matter) {
        Some(name) => Err(AliError::header_repeated(name)),
        None => Ok(()),
    }
}

/// The first of `names` that `headers` carries more than once.
fn repeated<'a>(headers: &HeaderMap, mut names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    names.find(|name| headers.get_all(*name).iter().nth(1).is_some())
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// `yyyy-MM-dd HH:mm:ss` in UTC+8, as ECS writes `LastUpdateTime`.
fn beijing_time(t: OffsetDateTime) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let t = t.to_offset(time::macros::offset!(+8));
    t.format(&format).unwrap_or_default()
}

/// An optional boolean parameter: absent is false; `true`/`false` in any case
/// (the SDKs send Python's `True`/`False`).
fn flag(value: Option<&str>, name: &str) -> Result<bool, AliError> {
    match value {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(v) => Err(AliError::invalid(format!(
            "{name} must be true or false, not \"{v}\"."
        ))),
    }
}
