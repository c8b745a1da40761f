//! OpenStack Nova's compute API, the parts vmshot serves: every capture it
//! makes, from any dialect, as the instance action the core recorded
//! (`service::actions`), and the server's console output (`console`).
//!
//! ```text
//!   GET  {path}/                      versions          (no token, as Nova)
//!   GET  {path}/v2.1/                 the v2.1 version  (no token)
//!   GET  {path}/v2.1[/{project}]/servers/{id}/os-instance-actions[/{request_id}]
//!   POST {path}/v2.1[/{project}]/servers/{id}/action  {"os-getConsoleOutput": {"length": N}}
//! ```
//!
//! A request under `/v2.1/` goes as it would through Nova's pipeline: the
//! token first (keystonemiddleware's 401), then the microversion (400/406),
//! the route (404), the path's project against the token's (400), the query
//! for that version, and then the core, which resolves the server id to its
//! domain and decides scope on it.

// What the fuzz target drives (see `api::fuzzing`).
mod config;
mod console;
pub(super) mod fuzz;
mod microversion;
mod params;
mod token;
mod wire;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::request::Parts;
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};

use super::pipeline::{Dialect, Incoming, Record, Refusal};
use super::registry::{Mount, MountError, Registration, Shared};
use crate::auth::StaticTokens;
use crate::service::actions::{Actions, InstanceAction, Page as ActionsPage};
use crate::service::Screenshots;

use config::Section;
use microversion::Version;
use params::Route;
use token::{Caller, Keystone, TokenError, Tokens, Validate, STATIC_RULES};
use wire::{ActionView, EventView, NovaError, Page, Reader};

const NAME: &str = "nova";
/// Nova sends its request id under both names.
const REQUEST_ID: &str = "x-openstack-request-id";
const COMPUTE_REQUEST_ID: &str = "x-compute-request-id";

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
    let actions = shared.service.actions().ok_or_else(|| {
        in_section(
            "instance actions are read from the store: add a [store] section \
             (e.g. path = \"/var/lib/vmshot/vmshot.db\") or set enabled = false"
                .into(),
        )
    })?;
    let (tokens, www_authenticate) = match (&config.tokens_file, &config.keystone) {
        (Some(file), _) => {
            let tokens = StaticTokens::load(file, STATIC_RULES).map_err(&in_section)?;
            tracing::info!(tokens = tokens.len(), "nova dialect, static tokens");
            (Tokens::Static(tokens), None)
        }
        (None, Some(keystone)) => {
            let client = keystone.client().map_err(&in_section)?;
            tracing::info!(keystone = %client.url, "nova dialect, tokens from keystone");
            // Only a URL meant for callers: the one vmshot asks may be internal.
            let header = keystone
                .www_authenticate_uri
                .as_ref()
                .and_then(|uri| HeaderValue::from_str(&format!("Keystone uri=\"{uri}\"")).ok());
            (
                Tokens::Keystone(Keystone::new(client).map_err(&in_section)?),
                header,
            )
        }
        (None, None) => {
            return Err(in_section(
                "tokens_file or [nova.keystone] is required while enabled = true".into(),
            ))
        }
    };
    let root = config.path.clone();
    let paths = vec![
        root.clone(),
        format!("{root}/"),
        format!("{root}/{{*rest}}"),
    ];
    let nova = Nova {
        service: shared.service.clone(),
        actions,
        tokens,
        www_authenticate,
        config,
    };
    Ok(Some(Mount::new(
        format!("OpenStack Nova ({root}/v2.1/)"),
        paths,
        None,
        nova,
        shared.limits(),
    )))
}

pub struct Nova {
    service: Arc<Screenshots>,
    actions: Actions,
    tokens: Tokens,
    /// keystonemiddleware's `WWW-Authenticate` on a 401, when a Keystone
    /// issues the tokens.
    www_authenticate: Option<HeaderValue>,
    config: Section,
}

/// What an error's answer needs: the microversion once settled (Nova echoes
/// it on errors too), and the request id for `x-compute-request-id`.
#[derive(Default)]
pub struct Cx {
    version: Option<Version>,
    request_id: Option<HeaderValue>,
}

impl Dialect for Nova {
    const NAME: &'static str = NAME;
    const REQUEST_ID_HEADER: &'static str = REQUEST_ID;
    type Context = Cx;
    type Error = NovaError;

    fn request_id(&self, id: uuid::Uuid) -> String {
        format!("req-{id}")
    }

    fn context(&self, _: &Parts) -> Cx {
        Cx::default()
    }

    async fn serve(
        &self,
        request: Incoming<'_>,
        cx: &mut Cx,
        record: &mut Record,
    ) -> Result<Response, NovaError> {
        let Incoming {
            head,
            body,
            request_id,
        } = request;
        cx.request_id = HeaderValue::from_str(request_id).ok();
        let path = head
            .uri
            .path()
            .strip_prefix(self.config.path.as_str())
            .unwrap_or("");
        let mut response = if matches!(path, "" | "/") {
            record.action = Some("ListVersions");
            get_only(head)?;
            ok_json(&wire::versions_document(&self.root(head)), None)
        } else if matches!(path, "/v2.1" | "/v2.1/") {
            record.action = Some("ShowVersion");
            get_only(head)?;
            let version = microversion::negotiate(&head.headers)?;
            cx.version = Some(version);
            ok_json(&wire::version_document(&self.root(head)), Some(version))
        } else {
            self.api(head, &body, path, cx, record).await?
        };
        with_compute_request_id(&mut response, cx);
        Ok(response)
    }

    fn refuse(&self, why: Refusal) -> NovaError {
        match why {
            Refusal::AmbiguousLength => NovaError::bad_request(Refusal::AMBIGUOUS_LENGTH),
            Refusal::TooLarge { limit } => NovaError::new(
                413,
                format!("Request is too large: the limit is {limit} bytes."),
            ),
            Refusal::TimedOut { after } => NovaError::unavailable(Refusal::timed_out(after)),
            Refusal::Panicked => NovaError::internal(
                "Unexpected API Error. Please report this at https://vmshot.dev/bugs and attach \
                 the vmshot log if possible.",
            ),
        }
    }

    fn render(&self, error: &NovaError, cx: &Cx, _: &str) -> Response {
        let mut response = error.render(cx.version);
        if error.by_middleware && error.status == 401 {
            if let Some(value) = &self.www_authenticate {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value.clone());
            }
        }
        with_compute_request_id(&mut response, cx);
        response
    }
}

fn with_compute_request_id(response: &mut Response, cx: &Cx) {
    if let Some(id) = &cx.request_id {
        response
            .headers_mut()
            .insert(HeaderName::from_static(COMPUTE_REQUEST_ID), id.clone());
    }
}

fn get_only(head: &Parts) -> Result<(), NovaError> {
    if head.method == Method::GET || head.method == Method::HEAD {
        Ok(())
    } else {
        Err(NovaError::bad_method())
    }
}

fn ok_json(body: &serde_json::Value, version: Option<Version>) -> Response {
    match version {
        Some(version) => wire::ok(body, version),
        // The versions document comes before any microversion.
        None => (
            [(header::CONTENT_TYPE, wire::CONTENT_TYPE)],
            body.to_string(),
        )
            .into_response(),
    }
}

impl Nova {
    /// The API's root URL, for links: configured, or from the request.
    fn root(&self, head: &Parts) -> String {
        if let Some(url) = &self.config.public_url {
            return url.trim_end_matches('/').to_owned();
        }
        let host = head
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| h.len() <= 255 && !h.contains(['/', ' ', '"']))
            .unwrap_or("localhost");
        let scheme = head.uri.scheme_str().unwrap_or("http");
        format!("{scheme}://{host}{}", self.config.path)
    }

    async fn authenticate(&self, head: &Parts, record: &mut Record) -> Result<Caller, NovaError> {
        let token = head
            .headers
            .get("x-auth-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        match self.tokens.validate(token).await {
            Ok(caller) => {
                record.principal = Some(caller.user_id.clone());
                Ok(caller)
            }
            Err(TokenError::Unavailable(why)) => Err(NovaError {
                detail: Some(why),
                ..NovaError::keystone_unavailable()
            }),
            Err(why) => Err(NovaError {
                detail: Some(why.to_string()),
                ..NovaError::unauthorized()
            }),
        }
    }

    async fn api(
        &self,
        head: &Parts,
        body: &[u8],
        path: &str,
        cx: &mut Cx,
        record: &mut Record,
    ) -> Result<Response, NovaError> {
        let caller = self.authenticate(head, record).await?;
        let version = microversion::negotiate(&head.headers)?;
        cx.version = Some(version);
        let route = params::route(path)?;
        let post = matches!(route, Route::Action { .. });
        if head.method != if post { Method::POST } else { Method::GET } {
            return Err(NovaError::bad_method());
        }
        let (Route::List { project, server }
        | Route::Show {
            project, server, ..
        }
        | Route::Action { project, server }) = &route
        else {
            return Err(NovaError::no_route());
        };
        if let Some(project) = project {
            if *project != caller.project_id {
                return Err(NovaError::project_mismatch(project, &caller.project_id));
            }
        }
        record.instance = Some(server.asked.clone());
        let who = caller.principal();
        let reader = Reader {
            admin: caller.is_admin(),
        };
        match &route {
            Route::List { .. } => {
                record.action = Some("ListInstanceActions");
                let query = params::list_query(head.uri.query(), version)?;
                let uuid = server.require()?;
                let page = ActionsPage {
                    limit: Some(query.page_size()),
                    marker: query.marker.clone(),
                    changes_since: query.changes_since,
                    changes_before: query.changes_before,
                };
                let actions = self
                    .actions
                    .list(&who, uuid, page)
                    .await
                    .map_err(|e| NovaError::from_core(&e, &server.asked))?;
                record.domain = Some(uuid.to_owned());
                let views: Vec<ActionView> = actions.iter().map(view).collect();
                let endpoint = format!("{}/v2.1", self.root(head));
                let page = Page {
                    endpoint: &endpoint,
                    project_in_path: project.as_deref(),
                    server_id: &server.asked,
                    query: &query.raw,
                    limit: query.limit,
                };
                Ok(wire::ok(
                    &wire::action_list(&views, version, &page),
                    version,
                ))
            }
            Route::Action { .. } => {
                record.action = Some("GetConsoleOutput");
                let length = console::parse(body)?;
                let uuid = server.require()?;
                let from_core = |e| NovaError::from_core(&e, &server.asked);
                let domain = self
                    .service
                    .find_instance(&who, uuid, &BTreeMap::new())
                    .await
                    .map_err(from_core)?;
                record.domain = Some(domain.name.clone());
                let log = self
                    .service
                    .console_output(&domain, console::CONSOLE_BYTES)
                    .await
                    .map_err(from_core)?;
                let output = console::output(&log.bytes, length);
                Ok(wire::ok(&serde_json::json!({ "output": output }), version))
            }
            Route::Show { request_id, .. } => {
                record.action = Some("ShowInstanceAction");
                params::show_query(head.uri.query(), version)?;
                let uuid = server.require()?;
                let action = self
                    .actions
                    .get(&who, uuid, request_id)
                    .await
                    .map_err(|e| NovaError::from_core(&e, &server.asked))?
                    .ok_or_else(|| NovaError::action_not_found(request_id))?;
                record.domain = Some(uuid.to_owned());
                Ok(wire::ok(
                    &wire::action_show(&view(&action), version, reader),
                    version,
                ))
            }
            _ => Err(NovaError::no_route()),
        }
    }
}

/// The core's record, as Nova's bodies take it.
fn view(action: &InstanceAction) -> ActionView {
    ActionView {
        request_id: action.request_id.clone(),
        action: action.action.clone(),
        instance_uuid: action.instance_uuid.clone(),
        project_id: action.project_id.clone(),
        user_id: action.user_id.clone(),
        message: action.message.clone(),
        start_time: action.start_time,
        updated_at: Some(action.updated_at),
        events: action
            .events
            .iter()
            .map(|e| EventView {
                event: e.event.clone(),
                start_time: e.start_time,
                finish_time: e.finish_time,
                result: e.result.map(|r| r.as_str().to_owned()),
                traceback: e.traceback.clone(),
                host: e.host.clone(),
                details: e.details.clone(),
            })
            .collect(),
    }
}
