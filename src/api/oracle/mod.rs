//! Oracle Compute Classic: asynchronous screen capture requests
//! (`/console/screencapture/`) behind a `nimbula` session cookie from
//! `POST /authenticate/`. A capture is a job of the core (`service::jobs`):
//! `POST` answers 201 once the job is committed `queued`, and the client
//! polls `GET` until `complete`, then fetches `media_uri` (served here, under
//! `/console/screencapture/media/`, with the image's SHA-256 as its ETag).
//!
//! ```text
//!   POST /authenticate/                         {"user","password"} → 204 + Set-Cookie
//!   GET  /refresh/                              → 204 + a later Set-Cookie
//!   POST /console/screencapture/                {"instance","account"?} → 201
//!   GET|PUT|DELETE /console/screencapture/{name}
//!   GET  /console/screencapture/{container}/    (trailing slash: the list)
//!   GET  /console/screencapture/media/{name}    the JPEG (Range: one span)
//!   GET  /instanceconsole/{instance}            the serial console's output
//! ```
//!
//! The dialect needs the store: without `[store]` it refuses to mount.

// What the fuzz target drives (see `api::fuzzing`).
mod config;
pub(crate) mod credentials;
pub(super) mod fuzz;
mod params;
mod wire;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use time::OffsetDateTime;

use super::pipeline::{self, Dialect, Incoming, Record, Refusal};
use super::range::Span;
use super::registry::{Mount, MountError, Registration, Shared};
use crate::service::jobs::{CancellationState, Job, JobSettings, JobState, Jobs, Submit};
use crate::service::{self, Interval, Principal};

use super::session::{self, CookieKey, Policy, Session, SessionError, ORACLE};
use config::Section;
use credentials::{User, Users, OPERATIONS_ROLE};
use wire::{CancelState, Cancellation, ObjectName, OracleError, ScreenCapture, State};

const NAME: &str = "oracle";
const CAPTURES: &str = "/console/screencapture";
const MEDIA: &str = "/console/screencapture/media";
const CONSOLE: &str = "/instanceconsole";
/// The end of the serial log an instanceconsole holds (Oracle documents no
/// size; EC2 keeps 64 KB).
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
    let in_section = MountError::in_section(NAME);
    let jobs = shared
        .service
        .jobs(JobSettings {
            dialect: NAME,
            start_delay: Duration::from_millis(config.start_delay_ms),
            upload_delay: Duration::from_millis(config.upload_delay_ms),
            reason: job_reason,
        })
        .ok_or_else(|| {
            in_section(
                "screen captures are jobs kept in the store: add a [store] section \
                 (e.g. path = \"/var/lib/vmshot/vmshot.db\") or set enabled = false"
                    .into(),
            )
        })?;
    let file = config
        .credentials_file
        .as_deref()
        .ok_or_else(|| in_section("credentials_file is required while enabled = true".into()))?;
    let users = Users::load(file).map_err(|e| in_section(e.to_string()))?;
    let key = match &config.cookie_key_file {
        Some(path) => CookieKey::load(&ORACLE, path).map_err(&in_section)?,
        None => CookieKey::random(&ORACLE),
    };
    tracing::info!(users = users.len(), domain = %config.identity_domain, "oracle dialect");
    // Jobs left unfinished by the last run (created before now: nothing is
    // served yet) are resumed or ended in the background, so that the start
    // does not wait on libvirt. Without a runtime (a configuration check)
    // there is nothing to run them on.
    let started = time::OffsetDateTime::now_utc();
    let recovering = jobs.clone();
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            match recovering.recover(started).await {
                Ok(resumed) => tracing::info!(resumed, "oracle jobs recovered"),
                Err(e) => tracing::warn!(error = %e, "oracle job recovery failed"),
            }
        });
    }
    let oracle = Oracle {
        service: shared.service.clone(),
        jobs,
        users: Arc::new(users),
        key,
        policy: Policy {
            lifetime: Duration::from_secs(config.session_secs),
            cap: Duration::from_secs(config.session_cap_secs),
        },
        secure: shared.server.tls_cert.is_some(),
        config,
    };
    let paths: Vec<String> = [
        "/authenticate/",
        "/refresh/",
        "/console/screencapture/",
        "/console/screencapture/{*name}",
        "/instanceconsole/{*name}",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    Ok(Some(Mount::new(
        "Oracle Compute Classic (/authenticate/, /console/screencapture/, /instanceconsole/)"
            .into(),
        paths,
        None,
        oracle,
        shared.limits(),
    )))
}

/// A failed job's reason in seed 000's words.
fn job_reason(err: &service::Error, state: JobState) -> String {
    wire::error_reason(err, wire_state(state))
}

fn wire_state(state: JobState) -> State {
    match state {
        JobState::Queued => State::Queued,
        JobState::Pending => State::Pending,
        JobState::InProgress => State::InProgress,
        JobState::Uploading => State::Uploading,
        JobState::Complete => State::Complete,
        JobState::Error => State::Error,
    }
}

pub struct Oracle {
    service: Arc<service::Screenshots>,
    jobs: Jobs,
    users: Arc<Users>,
    key: CookieKey,
    policy: Policy,
    secure: bool,
    config: Section,
}

/// What rendering needs: nothing beyond the error itself.
impl Dialect for Oracle {
    const NAME: &'static str = NAME;
    const REQUEST_ID_HEADER: &'static str = wire::CALL_ID_HEADER;
    type Context = ();
    type Error = OracleError;

    fn request_id(&self, id: uuid::Uuid) -> String {
        wire::call_id(OffsetDateTime::now_utc(), id)
    }

    fn context(&self, _: &Parts) {}

    async fn serve(
        &self,
        request: Incoming<'_>,
        _: &mut (),
        record: &mut Record,
    ) -> Result<Response, OracleError> {
        let Incoming {
            head,
            body,
            request_id,
        } = request;
        let path = head.uri.path();
        let method = &head.method;
        if path == "/authenticate/" {
            record.action = Some("Authenticate");
            only(method, &Method::POST)?;
            return self.authenticate(head, &body, record).await;
        }
        if path == "/refresh/" {
            record.action = Some("Refresh");
            only(method, &Method::GET)?;
            return self.refresh(head, record);
        }
        let who = self.session(head, record)?;
        if let Some(name) = path.strip_prefix(CONSOLE).filter(|n| n.starts_with('/')) {
            record.action = Some("GetInstanceConsole");
            only(method, &Method::GET)?;
            return self.console(head, &who, name, record).await;
        }
        if let Some(name) = path.strip_prefix(MEDIA).filter(|n| n.starts_with('/')) {
            record.action = Some("GetScreenCaptureMedia");
            only(method, &Method::GET)?;
            return self.media(head, &who, name).await;
        }
        let rest = path.strip_prefix(CAPTURES).unwrap_or("");
        if rest == "/" {
            record.action = Some("CreateScreenCapture");
            only(method, &Method::POST)?;
            return self.create(head, &body, &who, request_id, record).await;
        }
        if rest.ends_with('/') {
            record.action = Some("ListScreenCaptures");
            only(method, &Method::GET)?;
            return self.list(head, &who, rest).await;
        }
        let name = ObjectName::parse_in(rest, &self.config.identity_domain)
            .map_err(|_| OracleError::no_such_path(path))?;
        let name = name.to_string();
        match *method {
            Method::GET => {
                record.action = Some("GetScreenCapture");
                let job = self.jobs.get(&who, &name).await.map_err(by_name(&name))?;
                Ok(wire::json_response(
                    StatusCode::OK,
                    &self.render_job(head, &job),
                ))
            }
            Method::PUT => {
                record.action = Some("UpdateScreenCapture");
                json_body(head)?;
                let job = self.jobs.get(&who, &name).await.map_err(by_name(&name))?;
                let account = job.account.clone().unwrap_or_default();
                let update = params::parse_update(&body, &job.name, &job.instance, &account)
                    .map_err(|e| e.to_wire())?;
                let job = if update.cancel {
                    self.jobs
                        .cancel(&who, &name)
                        .await
                        .map_err(by_name(&name))?
                } else {
                    job
                };
                Ok(wire::json_response(
                    StatusCode::OK,
                    &self.render_job(head, &job),
                ))
            }
            Method::DELETE => {
                record.action = Some("DeleteScreenCapture");
                self.jobs
                    .delete(&who, &name)
                    .await
                    .map_err(by_name(&name))?;
                Ok(StatusCode::NO_CONTENT.into_response())
            }
            ref other => Err(OracleError::method_not_allowed(other.as_str())),
        }
    }

    fn refuse(&self, why: Refusal) -> OracleError {
        match why {
            Refusal::AmbiguousLength => OracleError::bad_request(Refusal::AMBIGUOUS_LENGTH),
            Refusal::TooLarge { limit } => OracleError::too_large(limit),
            Refusal::TimedOut { after } => OracleError::unavailable(Refusal::timed_out(after)),
            Refusal::Panicked => OracleError::internal(),
        }
    }

    fn render(&self, error: &OracleError, _: &(), _: &str) -> Response {
        error.clone().into_response()
    }
}

fn only(method: &Method, allowed: &Method) -> Result<(), OracleError> {
    if method == allowed {
        Ok(())
    } else {
        Err(OracleError::method_not_allowed(method.as_str()))
    }
}

fn json_body(head: &Parts) -> Result<(), OracleError> {
    let content_type = head
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if wire::is_json_media(content_type) {
        Ok(())
    } else {
        Err(OracleError::unsupported_type())
    }
}

/// A job's errors name the job, as Oracle's 404 does.
fn by_name(name: &str) -> impl Fn(service::Error) -> OracleError + '_ {
    move |e| OracleError::from_core(&e, name)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    user: String,
    password: String,
}

impl Oracle {
    /// `{"user": "/Compute-{domain}/{user}", "password": …}` → a cookie. The
    /// Argon2 check runs off the async runtime: it costs tens of ms of CPU.
    async fn authenticate(
        &self,
        head: &Parts,
        body: &[u8],
        record: &mut Record,
    ) -> Result<Response, OracleError> {
        json_body(head)?;
        let asked: Credentials = serde_json::from_slice(body).map_err(|_| {
            OracleError::bad_request("The body must be {\"user\": …, \"password\": …}.")
        })?;
        let refused = || OracleError::unauthorized("Incorrect username or password");
        let (domain, user) = wire::parse_container(&asked.user).map_err(|_| refused())?;
        if domain != self.config.identity_domain || asked.user.ends_with('/') {
            return Err(refused());
        }
        let users = self.users.clone();
        let name = user.clone();
        let found =
            tokio::task::spawn_blocking(move || users.verify(&name, &asked.password).cloned())
                .await
                .map_err(|_| OracleError::internal())?
                .ok_or_else(refused)?;
        record.principal = Some(credentials::two_part_name(&domain, &user));
        let now = unix_now();
        let session = Session::begin(&found.name, found.grant_digest(), now, self.policy);
        Ok(self.with_cookie(&session, now))
    }

    fn refresh(&self, head: &Parts, record: &mut Record) -> Result<Response, OracleError> {
        let (session, _) = self.open(head, record)?;
        let now = unix_now();
        Ok(self.with_cookie(&session.refreshed(now, self.policy), now))
    }

    fn with_cookie(&self, session: &Session, now: u64) -> Response {
        let value = session::set_cookie(
            &ORACLE,
            &session.seal(&self.key),
            session.max_age(now),
            self.secure,
        );
        let mut response = StatusCode::NO_CONTENT.into_response();
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
        response
    }

    /// The session the request's cookie carries, and its user as today's
    /// file has it.
    fn open(&self, head: &Parts, record: &mut Record) -> Result<(Session, &User), OracleError> {
        let unauthorized = |e: SessionError| {
            OracleError::unauthorized(format!("{}: authenticate again.", capitalized(&e)))
        };
        let cookies = head
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok());
        let value = session::from_cookie_headers(&ORACLE, cookies).map_err(unauthorized)?;
        let session = Session::open(&self.key, value, unix_now()).map_err(unauthorized)?;
        let user = self
            .users
            .get(&session.user)
            .ok_or_else(|| unauthorized(SessionError::Revoked))?;
        session
            .check_grant(&user.grant_digest())
            .map_err(unauthorized)?;
        record.principal = Some(credentials::two_part_name(
            &self.config.identity_domain,
            &user.name,
        ));
        Ok((session, user))
    }

    /// The caller of a capture call: a live session and Oracle's role.
    fn session(&self, head: &Parts, record: &mut Record) -> Result<Principal, OracleError> {
        let (_, user) = self.open(head, record)?;
        if !user.has_role(OPERATIONS_ROLE) {
            return Err(OracleError::missing_role(OPERATIONS_ROLE));
        }
        Ok(user.principal(NAME, &self.config.identity_domain))
    }

    /// The instance's serial console output, whatever its state.
    async fn console(
        &self,
        head: &Parts,
        who: &Principal,
        name: &str,
        record: &mut Record,
    ) -> Result<Response, OracleError> {
        let instance = ObjectName::parse_in(name, &self.config.identity_domain)
            .map_err(|_| OracleError::no_such_path(&format!("{CONSOLE}{name}")))?;
        let shown = instance.to_string();
        record.instance = Some(shown.clone());
        let lookup = params::lookup_id(&instance, &self.config.instances);
        let from_core = |e| OracleError::from_core(&e, &shown);
        let domain = self
            .service
            .find_instance(who, &lookup, &self.config.instances)
            .await
            .map_err(from_core)?;
        record.domain = Some(domain.name.clone());
        let output = self
            .service
            .console_output(&domain, CONSOLE_BYTES)
            .await
            .map_err(from_core)?;
        let (scheme, host) = self.origin(head);
        let body = wire::InstanceConsole {
            name: shown,
            output: String::from_utf8_lossy(&output.bytes).into_owned(),
            timestamp: output.updated.map(wire::console_time),
            uri: wire::console_uri(scheme, host, &instance),
        };
        Ok(wire::json_response(StatusCode::OK, &body))
    }

    async fn create(
        &self,
        head: &Parts,
        body: &[u8],
        who: &Principal,
        request_id: &str,
        record: &mut Record,
    ) -> Result<Response, OracleError> {
        json_body(head)?;
        let asked =
            params::parse_create(body, &self.config.identity_domain).map_err(|e| e.to_wire())?;
        let instance = asked.instance.to_string();
        record.instance = Some(instance.clone());
        let lookup = params::lookup_id(&asked.instance, &self.config.instances);
        let user = who.id.rsplit('/').next().unwrap_or(&who.id).to_owned();
        let id = uuid::Uuid::new_v4().to_string();
        let name = params::capture_name(&asked.instance, &self.config.identity_domain, &user, &id)
            .map_err(|e| e.to_wire())?;
        let job = self
            .jobs
            .submit(Submit {
                who,
                lookup: &lookup,
                table: &self.config.instances,
                interval: Interval {
                    rule: NAME,
                    every: Duration::from_secs(self.config.capture_interval_secs),
                },
                name: name.to_string(),
                instance: instance.clone(),
                account: Some(asked.account),
                request_id: request_id.to_owned(),
            })
            .await
            .map_err(|e| OracleError::from_core(&e, &instance))?;
        Ok(wire::json_response(
            StatusCode::CREATED,
            &self.render_job(head, &job),
        ))
    }

    async fn list(
        &self,
        head: &Parts,
        who: &Principal,
        container: &str,
    ) -> Result<Response, OracleError> {
        let (domain, user) = wire::parse_container(container)
            .map_err(|_| OracleError::no_such_path(&format!("{CAPTURES}{container}")))?;
        let prefix = format!("/Compute-{domain}/{user}/");
        let jobs = if domain == self.config.identity_domain {
            self.jobs
                .list(who, &prefix)
                .await
                .map_err(|e| OracleError::from_core(&e, container))?
        } else {
            Vec::new()
        };
        let list = wire::List {
            result: jobs.iter().map(|j| self.render_job(head, j)).collect(),
        };
        Ok(wire::json_response(StatusCode::OK, &list))
    }

    /// The JPEG, whole or one `Range` span of it.
    async fn media(
        &self,
        head: &Parts,
        who: &Principal,
        name: &str,
    ) -> Result<Response, OracleError> {
        let media = self.jobs.media(who, name).await.map_err(by_name(name))?;
        let bytes = media.read().await.map_err(by_name(name))?;
        let len = bytes.len() as u64;
        let range = head
            .headers
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok());
        let span = Span::of(range, len);
        let content_range = span.content_range(len);
        let (status, body) = match span {
            Span::Whole => (StatusCode::OK, bytes),
            Span::Unsatisfiable => {
                let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
                if let Some(v) = content_range.and_then(|r| HeaderValue::from_str(&r).ok()) {
                    response.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return Ok(response);
            }
            Span::Bytes(a, b) => (
                StatusCode::PARTIAL_CONTENT,
                bytes[a as usize..=b as usize].to_vec(),
            ),
        };
        let content_type = if media.path.extension().is_some_and(|e| e == "png") {
            "image/png"
        } else {
            "image/jpeg"
        };
        let body_len = body.len();
        let mut response = (status, Body::from(body)).into_response();
        let headers = response.headers_mut();
        let mut set = |name, value: String| {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        };
        set(header::CONTENT_TYPE, content_type.into());
        set(header::CONTENT_LENGTH, body_len.to_string());
        set(header::ETAG, format!("\"{}\"", media.sha256));
        set(header::ACCEPT_RANGES, "bytes".into());
        set(
            header::HeaderName::from_static(pipeline::SHA256_HEADER),
            media.sha256.clone(),
        );
        if let Some(range) = content_range {
            set(header::CONTENT_RANGE, range);
        }
        debug_assert_eq!(media.len, len);
        Ok(response)
    }

    /// The scheme and host this request reached, for the URIs in answers.
    fn origin<'a>(&self, head: &'a Parts) -> (&'static str, &'a str) {
        let scheme = if self.secure { "https" } else { "http" };
        let host = head
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .filter(|h| wire::valid_host(h))
            .unwrap_or("localhost");
        (scheme, host)
    }

    fn render_job(&self, head: &Parts, job: &Job) -> ScreenCapture {
        let (scheme, host) = self.origin(head);
        let name = ObjectName::parse(&job.name).ok();
        let uri = |f: fn(&str, &str, &ObjectName) -> String| {
            name.as_ref()
                .map(|n| f(scheme, host, n))
                .unwrap_or_default()
        };
        let status = &job.status;
        ScreenCapture {
            account: job.account.clone().unwrap_or_default(),
            cancel: status.cancel(),
            cancellation: Cancellation {
                state: match status.cancellation {
                    CancellationState::NotRequested => CancelState::NotRequested,
                    CancellationState::Requested => CancelState::Requested,
                    CancellationState::Completed => CancelState::Complete,
                    CancellationState::Failed => CancelState::Error,
                },
                error_reason: status.cancellation_error.clone(),
            },
            creation_time: wire::format_time(job.creation_time),
            error_reason: status.error_reason.clone(),
            instance: job.instance.clone(),
            // Where `[uploads]` put it (an S3 object), else where we serve it.
            media_uri: job
                .media_uri
                .clone()
                .or_else(|| job.media_path.as_ref().map(|_| uri(wire::media_uri))),
            name: job.name.clone(),
            request_id: job.request_id.clone(),
            state: wire_state(status.state),
            uri: uri(wire::capture_uri),
        }
    }
}

fn capitalized(e: &SessionError) -> String {
    let text = e.to_string();
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_a_store_the_dialect_refuses_to_mount() {
        let service = service::Screenshots::on_test_driver();
        let shared = Shared {
            service: Arc::new(service),
            server: crate::config::Server::default(),
        };
        let section: toml::Table =
            toml::from_str("credentials_file = \"/nonexistent\"\nidentity_domain = \"acme\"")
                .unwrap();
        let err = mount(&section, &shared).err().expect("refused").to_string();
        assert!(
            err.starts_with("[oracle]: ") && err.contains("[store]"),
            "{err}"
        );
    }
}
