//! vmshot's own JSON API under `/v1/`, the live page's ground: domains in
//! the caller's scope, their screens (whole, as thumbnails, and as a stream
//! of changes), serial logs, recordings and capture jobs. Access is
//! `access`'s (loopback, or a session from `/ui/login`); every route comes
//! from one table (`routes`), which also generates `/v1/openapi.json`.
//! Handlers only translate: the core (`service::Live`, `Screenshots`,
//! `Recordings`) does the work.

// What the fuzz target drives (see `api::fuzzing`).
pub(crate) mod access;
pub(crate) mod error;
mod files;
pub(super) mod fuzz;
pub(crate) mod routes;
mod views;

use std::sync::Arc;
use std::time::Duration;

use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;

use super::pipeline::{Dialect, Incoming, Record, Refusal};
use crate::service::recordings::{FileKind, Kind, ListFilter, StartRecording};
use crate::service::{self, Caller as AuditCaller, Listed, Live, ScreenshotRequest};

use access::{Access, Caller};
use error::WebError;
use routes::{Action, Miss};

pub const NAME: &str = "native";
/// The serial log's end a console call returns by default.
const CONSOLE_BYTES: usize = 64 * 1024;
/// Longest one-off diagnosis a request may ask for: within its deadline.
const MAX_DIAGNOSIS_WATCH: u64 = 20;
/// Longest query string looked at.
const MAX_QUERY: usize = 1024;

pub struct Native {
    pub live: Live,
    pub access: Arc<Access>,
    /// How long a screen's event stream lasts: within the connection's
    /// in-service limit, after which the browser reconnects.
    pub stream_life: Duration,
}

impl Dialect for Native {
    const NAME: &'static str = NAME;
    const REQUEST_ID_HEADER: &'static str = "x-request-id";
    type Context = ();
    type Error = WebError;

    fn request_id(&self, id: uuid::Uuid) -> String {
        id.simple().to_string()
    }

    fn context(&self, _: &Parts) {}

    async fn serve(
        &self,
        request: Incoming<'_>,
        _: &mut (),
        record: &mut Record,
    ) -> Result<Response, WebError> {
        let head = request.head;
        let path = head.uri.path();
        let (route, params) =
            routes::find(head.method.as_str(), path).map_err(|miss| match miss {
                Miss::NotFound => WebError::no_route(path),
                Miss::Method => WebError::method_not_allowed(head.method.as_str()),
            })?;
        record.action = Some(action_name(route.action));
        let caller = self.access.caller(head)?;
        record.principal = Some(caller.principal.id.clone());
        self.access.check_post(head, &caller)?;
        let params: Vec<String> = params.iter().map(|p| decode(p)).collect::<Result<_, _>>()?;
        let query = Query::parse(head.uri.query())?;
        let param = |i: usize| params.get(i).map(String::as_str).unwrap_or("");
        match route.action {
            Action::OpenApi => Ok(json(StatusCode::OK, &routes::openapi())),
            Action::ListDomains => {
                let listed = self.live.domains(&caller.principal).await.map_err(core)?;
                let body: Vec<_> = listed.iter().map(views::domain).collect();
                Ok(json(StatusCode::OK, &body))
            }
            Action::GetDomain => {
                let listed = self.domain(&caller, param(0), record).await?;
                Ok(json(StatusCode::OK, &views::domain(&listed)))
            }
            Action::Screenshot => {
                let listed = self.domain(&caller, param(0), record).await?;
                let asked = ScreenshotRequest {
                    fresh: query.flag("fresh")?,
                    ..ScreenshotRequest::default()
                };
                let shot = self
                    .live
                    .service()
                    .take(&listed.domain, &asked)
                    .await
                    .map_err(core)?;
                let response = image(shot.image.to_vec(), &shot.sha256_hex());
                record.shot = Some(shot);
                Ok(response)
            }
            Action::Thumbnail => {
                let listed = self.domain(&caller, param(0), record).await?;
                let width = query.number("width", 64, 640)?.unwrap_or(256) as u32;
                let thumb = self
                    .live
                    .thumbnail(&listed.domain, width)
                    .await
                    .map_err(core)?;
                let etag = format!("\"{}\"", thumb.sha256_hex());
                let unchanged = head
                    .headers
                    .get(header::IF_NONE_MATCH)
                    .is_some_and(|v| v.as_bytes() == etag.as_bytes());
                let mut response = if unchanged {
                    StatusCode::NOT_MODIFIED.into_response()
                } else {
                    image(thumb.jpeg.to_vec(), &thumb.sha256_hex())
                };
                set(&mut response, header::ETAG, &etag);
                set(&mut response, header::CACHE_CONTROL, "private, no-cache");
                Ok(response)
            }
            Action::ScreenEvents => {
                let listed = self.domain(&caller, param(0), record).await?;
                Ok(views::screen_events(
                    self.live.clone(),
                    listed.domain,
                    self.stream_life,
                ))
            }
            Action::PressKey => {
                let listed = self.domain(&caller, param(0), record).await?;
                let pressed = self.live.press_key(&listed.domain).await.map_err(core)?;
                Ok(json(
                    StatusCode::OK,
                    &serde_json::json!({"pressed": pressed}),
                ))
            }
            Action::Console => {
                let listed = self.domain(&caller, param(0), record).await?;
                let bytes = query
                    .number("bytes", 1, service::MAX_CONSOLE_BYTES as u64)?
                    .unwrap_or(CONSOLE_BYTES as u64);
                let out = self
                    .live
                    .service()
                    .console_output(&listed.domain, bytes as usize)
                    .await
                    .map_err(core)?;
                Ok(json(StatusCode::OK, &views::console(&out)))
            }
            Action::Diagnosis => {
                let listed = self.domain(&caller, param(0), record).await?;
                // The watcher's verdict at once; else one from watching the
                // screen now, for `watch_seconds`, within the request's deadline.
                let window = query
                    .number("watch_seconds", 1, MAX_DIAGNOSIS_WATCH)?
                    .unwrap_or(5);
                let found = self
                    .live
                    .service()
                    .diagnosis(&listed.domain, Duration::from_secs(window))
                    .await
                    .map_err(core)?;
                Ok(json(StatusCode::OK, &found))
            }
            Action::ListRecordings => {
                let listed = self.domain(&caller, param(0), record).await?;
                let recordings = self.recordings()?;
                let filter = ListFilter::of_domain(&listed.domain.uuid, 100);
                let page = recordings
                    .list(&caller.principal, &filter)
                    .await
                    .map_err(core)?;
                let body: Vec<_> = page.items.iter().map(views::recording).collect();
                Ok(json(StatusCode::OK, &body))
            }
            Action::StartRecording => {
                let listed = self.domain(&caller, param(0), record).await?;
                let recordings = self.recordings()?;
                let mut start = StartRecording::new(
                    Kind::Full,
                    AuditCaller {
                        request_id: request.request_id.to_owned(),
                        user: caller.principal.id.clone(),
                    },
                );
                start.max_duration = query
                    .number("max_duration_seconds", 1, 86_400)?
                    .map(Duration::from_secs);
                let rec = recordings
                    .start(&caller.principal, &listed.domain.uuid, start)
                    .await
                    .map_err(core)?;
                Ok(json(StatusCode::CREATED, &views::recording(&rec)))
            }
            Action::StopRecording => {
                let rec = self
                    .recordings()?
                    .stop(&caller.principal, param(0))
                    .await
                    .map_err(core)?;
                Ok(json(StatusCode::OK, &views::recording(&rec)))
            }
            Action::RecordingVideo => {
                let file = self
                    .recordings()?
                    .open(&caller.principal, param(0), FileKind::Video)
                    .await
                    .map_err(core)?;
                let range = head
                    .headers
                    .get(header::RANGE)
                    .and_then(|v| v.to_str().ok());
                files::serve(
                    file.file,
                    file.len,
                    file.content_type,
                    file.sha256.as_deref(),
                    range,
                )
                .await
            }
            Action::ListCaptures => {
                let listed = self.domain(&caller, param(0), record).await?;
                let jobs = self.live.captures(&listed.domain).await.map_err(core)?;
                let body: Vec<_> = jobs
                    .iter()
                    .map(|j| views::capture(&listed.domain, j))
                    .collect();
                Ok(json(StatusCode::OK, &body))
            }
            Action::CaptureImage => {
                let listed = self.domain(&caller, param(0), record).await?;
                let id: i64 = param(1)
                    .parse()
                    .map_err(|_| WebError::bad_request("a capture id is a number"))?;
                let jobs = self.live.captures(&listed.domain).await.map_err(core)?;
                let media = jobs
                    .into_iter()
                    .find(|j| j.id == id)
                    .and_then(|j| j.media)
                    .ok_or_else(|| {
                        WebError::from_core(&service::Error::NotFound {
                            domain: format!("capture {id}"),
                        })
                    })?;
                // A damaged file is refused, never streamed as the capture.
                service::jobs::read_verified(&media.path, media.bytes, &media.sha256)
                    .await
                    .map_err(core)?;
                let file = tokio::fs::File::open(&media.path)
                    .await
                    .map_err(|e| WebError::internal(format!("{}: {e}", media.path.display())))?;
                let range = head
                    .headers
                    .get(header::RANGE)
                    .and_then(|v| v.to_str().ok());
                files::serve(file, media.bytes, "image/jpeg", Some(&media.sha256), range).await
            }
        }
    }

    fn refuse(&self, why: Refusal) -> WebError {
        WebError::refusal(why)
    }

    fn render(&self, error: &WebError, _: &(), _: &str) -> Response {
        error.json()
    }
}

impl Native {
    async fn domain(
        &self,
        caller: &Caller,
        reference: &str,
        record: &mut Record,
    ) -> Result<Listed, WebError> {
        record.instance = Some(reference.to_owned());
        let listed = self
            .live
            .domain(&caller.principal, reference)
            .await
            .map_err(core)?;
        record.domain = Some(listed.domain.name.clone());
        Ok(listed)
    }

    fn recordings(&self) -> Result<service::recordings::Recordings, WebError> {
        self.live.service().recordings().ok_or_else(|| {
            WebError::not_implemented(
                "recordings are off on this host ([recordings] needs [store])",
            )
        })
    }
}

/// The verdict word of a domain's diagnosis, for the page's badge.
pub(crate) fn verdict(listed: &Listed) -> Option<String> {
    views::diagnosis(listed).and_then(|d| d["verdict"].as_str().map(str::to_owned))
}

fn core(e: service::Error) -> WebError {
    WebError::from_core(&e)
}

fn action_name(action: Action) -> &'static str {
    match action {
        Action::ListDomains => "ListDomains",
        Action::GetDomain => "GetDomain",
        Action::Screenshot => "Screenshot",
        Action::Thumbnail => "Thumbnail",
        Action::ScreenEvents => "ScreenEvents",
        Action::PressKey => "PressKey",
        Action::Console => "Console",
        Action::Diagnosis => "Diagnosis",
        Action::ListRecordings => "ListRecordings",
        Action::StartRecording => "StartRecording",
        Action::StopRecording => "StopRecording",
        Action::RecordingVideo => "RecordingVideo",
        Action::ListCaptures => "ListCaptures",
        Action::CaptureImage => "CaptureImage",
        Action::OpenApi => "OpenApi",
    }
}

fn decode(segment: &str) -> Result<String, WebError> {
    percent_decode_str(segment)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| WebError::bad_request("a path parameter is not UTF-8"))
}

pub fn json(status: StatusCode, body: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => WebError::internal(e).json(),
    }
}

fn image(bytes: Vec<u8>, sha256: &str) -> Response {
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "image/jpeg")],
        bytes,
    )
        .into_response();
    set(
        &mut response,
        header::HeaderName::from_static(super::pipeline::SHA256_HEADER),
        sha256,
    );
    response
}

fn set(response: &mut Response, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, v);
    }
}

/// A query string's parameters, decoded, each at most once.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(query: Option<&str>) -> Result<Self, WebError> {
        let query = query.unwrap_or("");
        if query.len() > MAX_QUERY {
            return Err(WebError::bad_request(format!(
                "the query is over {MAX_QUERY} bytes"
            )));
        }
        let mut pairs: Vec<(String, String)> = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (decode(&k.replace('+', " "))?, decode(&v.replace('+', " "))?);
            if pairs.iter().any(|(seen, _)| *seen == k) {
                return Err(WebError::bad_request(format!(
                    "'{}' is given twice",
                    k.chars().take(32).collect::<String>()
                )));
            }
            pairs.push((k, v));
        }
        Ok(Self(pairs))
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, name: &str) -> Result<bool, WebError> {
        match self.get(name) {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") | Some("") => Ok(true),
            Some(_) => Err(WebError::bad_request(format!("{name} is true or false"))),
        }
    }

    fn number(&self, name: &str, min: u64, max: u64) -> Result<Option<u64>, WebError> {
        let Some(text) = self.get(name) else {
            return Ok(None);
        };
        match text.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(WebError::bad_request(format!(
                "{name} is a number from {min} to {max}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_bounded_and_strict() {
        let q = Query::parse(Some("width=128&fresh=true")).unwrap();
        assert_eq!(q.number("width", 64, 640).unwrap(), Some(128));
        assert!(q.flag("fresh").unwrap());
        assert!(Query::parse(Some("a=1&a=2")).is_err());
        assert!(Query::parse(Some(&"a".repeat(MAX_QUERY + 1))).is_err());
        assert!(Query::parse(Some("a=%ff")).is_err());
        let q = Query::parse(Some("width=9999&fresh=maybe")).unwrap();
        assert!(q.number("width", 64, 640).is_err());
        assert!(q.flag("fresh").is_err());
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;
    use crate::api::fuzzing::strategies;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Parameters encoded as a browser encodes a form are read back as
        /// themselves; anything else is read or refused, never a panic.
        #[test]
        fn queries_round_trip(
            pairs in proptest::collection::btree_map("\\PC{1,8}", "\\PC{0,8}", 0..5),
            junk in strategies::query(),
            method in "GET|POST|PUT|[A-Z]{0,5}",
            path in "(/v1)?(/(domains|recordings|[a-z%0-9.]{0,8})){0,5}",
        ) {
            let enc = |s: &str| {
                percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
            };
            let query = pairs.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&");
            prop_assume!(query.len() <= MAX_QUERY);
            let read = Query::parse(Some(&query)).unwrap();
            for (k, v) in &pairs {
                prop_assert_eq!(read.get(k), Some(v.as_str()));
            }
            let _ = Query::parse(Some(&junk));
            if let Ok((_, params)) = routes::find(&method, &path) {
                for p in params {
                    let _ = decode(p);
                }
            }
        }
    }
}
