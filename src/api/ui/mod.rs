//! The live page of every console on the host, `/ui/`: a wall of
//! thumbnails, one domain's live screen, serial log, recordings and capture
//! jobs. Server-rendered HTML (`page`) with one small script and one style
//! sheet (`assets/`, embedded: no build step), over the native JSON API
//! (`api::native`, `/v1/`), which the same `[ui]` section mounts with the
//! same access (`native::access`).
//!
//! ```text
//!   GET  /ui/                 the wall          GET  /ui/domains/{uuid}   one domain
//!   GET  /ui/login, POST      log in (users)    POST /ui/logout           log out
//!   GET  /ui/assets/live.js, live.css
//! ```

mod config;
mod page;

use std::sync::Arc;
use std::time::Duration;

use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::native::access::{Access, Caller, Mode};
use super::native::error::WebError;
use super::native::{self, Native, Query};
use super::pipeline::{Dialect, Incoming, Record, Refusal};
use super::registry::{Mount, MountError, Registration, Shared};
use crate::api::oracle_credentials::Users;
use crate::api::session::{CookieKey, Policy};
use crate::service::recordings::ListFilter;
use crate::service::Live;

use config::{AccessMode, Section};

const NAME: &str = "ui";
const JS: &str = include_str!("assets/live.js");
const CSS: &str = include_str!("assets/live.css");
/// What the page may load and run: its own origin only, nothing inline.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   media-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; \
                   frame-ancestors 'none'";

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
    let secure = shared.server.tls_cert.is_some();
    let mode = match config.access {
        AccessMode::Loopback => Mode::Loopback,
        AccessMode::Users => {
            if !secure {
                return Err(in_section(
                    "access = \"users\" sends passwords and session cookies: it needs HTTPS \
                     (server.tls_cert and server.tls_key)"
                        .into(),
                ));
            }
            let file = config.credentials_file.as_deref().ok_or_else(|| {
                in_section("credentials_file is required for access = \"users\"".into())
            })?;
            let users = Users::load(file).map_err(|e| in_section(e.to_string()))?;
            let key = match &config.cookie_key_file {
                Some(path) => {
                    CookieKey::load(&native::access::UI_COOKIE, path).map_err(&in_section)?
                }
                None => CookieKey::random(&native::access::UI_COOKIE),
            };
            Mode::Users {
                users: Arc::new(users),
                key,
                policy: Policy {
                    lifetime: Duration::from_secs(config.session_secs),
                    cap: Duration::from_secs(config.session_cap_secs),
                },
            }
        }
    };
    let access = Arc::new(Access::new(mode));
    let live = Live::new(shared.service.clone());
    let limits = shared.limits();
    let api = Mount::new(
        String::new(),
        vec!["/v1".into(), "/v1/{*rest}".into()],
        None,
        Native {
            live: live.clone(),
            access: access.clone(),
            // The connection allows the deadline plus a send allowance.
            stream_life: limits.deadline,
        },
        limits,
    );
    let ui = Mount::new(
        String::new(),
        vec!["/ui".into(), "/ui/".into(), "/ui/{*rest}".into()],
        None,
        Page {
            live,
            access,
            secure,
        },
        limits,
    );
    tracing::info!(access = ?config.access, "live page on /ui/, native API on /v1/");
    Ok(Some(Mount {
        name: NAME,
        serves: "the live page (/ui/) and vmshot's JSON API (/v1/)".into(),
        paths: ui.paths.into_iter().chain(api.paths).collect(),
        router: ui.router.merge(api.router),
    }))
}

pub struct Page {
    live: Live,
    access: Arc<Access>,
    secure: bool,
}

/// How a page error is answered: HTML, or a way to the log-in form.
pub struct PageContext;

impl Dialect for Page {
    const NAME: &'static str = NAME;
    const REQUEST_ID_HEADER: &'static str = "x-request-id";
    type Context = PageContext;
    type Error = WebError;

    fn request_id(&self, id: uuid::Uuid) -> String {
        id.simple().to_string()
    }

    fn context(&self, _: &Parts) -> PageContext {
        PageContext
    }

    async fn serve(
        &self,
        request: Incoming<'_>,
        _: &mut PageContext,
        record: &mut Record,
    ) -> Result<Response, WebError> {
        let head = request.head;
        let path = head.uri.path();
        let method = &head.method;
        match (method, path) {
            (&Method::GET, "/ui/assets/live.js") => {
                record.action = Some("Asset");
                return Ok(asset("text/javascript; charset=utf-8", JS));
            }
            (&Method::GET, "/ui/assets/live.css") => {
                record.action = Some("Asset");
                return Ok(asset("text/css; charset=utf-8", CSS));
            }
            (&Method::GET, "/ui") => return Ok(redirect("/ui/", None)),
            (&Method::GET, "/ui/login") => {
                record.action = Some("LoginForm");
                return Ok(html(StatusCode::OK, page::login(None)));
            }
            (&Method::POST, "/ui/login") => {
                record.action = Some("Login");
                return self.log_in(head, &request.body, record).await;
            }
            _ => {}
        }
        let caller = match self.access.caller(head) {
            Ok(caller) => caller,
            // A browser without a session goes to the form.
            Err(e) if self.access.logs_in() && *method == Method::GET => {
                record.action = Some("Redirect");
                tracing::debug!(why = %e.message, "to the log-in form");
                return Ok(redirect("/ui/login", None));
            }
            Err(e) => return Err(e),
        };
        record.principal = Some(caller.principal.id.clone());
        self.access.check_post(head, &caller)?;
        match (method, path) {
            (&Method::GET, "/ui/") => {
                record.action = Some("Wall");
                let domains = self
                    .live
                    .domains(&caller.principal)
                    .await
                    .map_err(|e| WebError::from_core(&e))?;
                Ok(html(
                    StatusCode::OK,
                    page::wall(&domains, &caller.csrf, caller.user.as_deref()),
                ))
            }
            (&Method::POST, "/ui/logout") => {
                record.action = Some("Logout");
                Ok(redirect("/ui/login", Some(self.access.log_out())))
            }
            (&Method::GET, p) if p.starts_with("/ui/domains/") => {
                record.action = Some("Domain");
                let reference = &p["/ui/domains/".len()..];
                if reference.is_empty()
                    || reference.len() > native::routes::MAX_PARAM
                    || reference.contains('/')
                {
                    return Err(WebError::no_route(p));
                }
                self.domain(&caller, reference, record).await
            }
            (&Method::GET, p) => Err(WebError::no_route(p)),
            (m, _) => Err(WebError::method_not_allowed(m.as_str())),
        }
    }

    fn refuse(&self, why: Refusal) -> WebError {
        WebError::refusal(why)
    }

    fn render(&self, error: &WebError, _: &PageContext, _: &str) -> Response {
        html(
            error.status,
            page::error(error.status.as_u16(), &error.message),
        )
    }
}

impl Page {
    async fn domain(
        &self,
        caller: &Caller,
        reference: &str,
        record: &mut Record,
    ) -> Result<Response, WebError> {
        let reference = percent_encoding::percent_decode_str(reference)
            .decode_utf8()
            .map_err(|_| WebError::bad_request("the domain is not UTF-8"))?;
        record.instance = Some(reference.to_string());
        let listed = self
            .live
            .domain(&caller.principal, &reference)
            .await
            .map_err(|e| WebError::from_core(&e))?;
        record.domain = Some(listed.domain.name.clone());
        let service = self.live.service();
        let console = service
            .console_output(&listed.domain, 16 * 1024)
            .await
            .map_err(|e| e.to_string());
        let recordings = match service.recordings() {
            None => Err("recordings are off on this host".to_owned()),
            Some(r) => r
                .list(
                    &caller.principal,
                    &ListFilter::of_domain(&listed.domain.uuid, 20),
                )
                .await
                .map(|p| p.items)
                .map_err(|e| e.to_string()),
        };
        let captures = self.live.captures(&listed.domain).await.unwrap_or_default();
        let body = page::domain(
            &page::DomainPage {
                listed: &listed,
                console,
                recordings,
                captures,
            },
            &caller.csrf,
            caller.user.as_deref(),
        );
        Ok(html(StatusCode::OK, body))
    }

    async fn log_in(
        &self,
        head: &Parts,
        body: &[u8],
        record: &mut Record,
    ) -> Result<Response, WebError> {
        let site = head
            .headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok());
        if site.is_some_and(|s| s != "same-origin" && s != "none") {
            return Err(WebError::forbidden("cross-site requests are refused"));
        }
        let form = std::str::from_utf8(body)
            .map_err(|_| WebError::bad_request("the form is not UTF-8"))?;
        let form = Query::parse(Some(form))?;
        let (user, password) = (
            form.get("user").unwrap_or(""),
            form.get("password").unwrap_or(""),
        );
        record.principal = Some(user.chars().take(128).collect());
        match self.access.log_in(user, password, self.secure).await {
            Ok(cookie) => Ok(redirect("/ui/", Some(cookie))),
            // The form again, with why: a person reads this answer.
            Err(e) if e.status == StatusCode::UNAUTHORIZED => Ok(html(
                StatusCode::UNAUTHORIZED,
                page::login(Some(&e.message)),
            )),
            Err(e) => Err(e),
        }
    }
}

fn html(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

fn redirect(to: &'static str, cookie: Option<String>) -> Response {
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response();
    if let Some(v) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}
