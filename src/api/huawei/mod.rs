//! Huawei Cloud Workspace's screen records (API v2), as
//! `huaweicloudsdkworkspace` 3.1.219 calls them: ShowScreenRecord,
//! ListScreenRecords and BatchDeleteScreenRecords, plus vmshot's own start,
//! stop and file downloads in the same style (routes in `params`). The SDK
//! reaches it with `.with_endpoints(["https://HOST:PORT"])` and
//! `BasicCredentials(ak, sk, project_id)`.
//!
//! A request goes as it would through Huawei's API gateway, then Workspace:
//!
//! ```text
//!   route (APIGW.0101) ─► who: SDK-HMAC-SHA256 signature, or X-Auth-Token (APIGW.0301)
//!     ─► replay (the signature, once) ─► project: path and X-Project-Id are the caller's (WKS.0003)
//!     ─► query / body (WKS.0001) ─► service::recordings ─► the record, or wire::HuaweiError::from_core
//! ```
//!
//! Every desktop is a libvirt domain, found and scoped by the core (instance
//! id in its metadata, else its name or UUID); records are keyed by the
//! domain's UUID there and outlive the domain.

// What the fuzz target drives (see `api::fuzzing`).
mod config;
pub(super) mod fuzz;
mod params;
mod signing;
mod wire;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::pipeline::{self, Dialect, Incoming, Record, Refusal};
use super::range::Span;
use super::registry::{load_keys, Mount, MountError, Registration, Shared};
use super::{HostNames, LocalAddr};
use crate::auth::{KeyStore, Nonce, NonceCache, StaticTokens, TokenRules};
use crate::service::recordings::{ListFilter, OpenFile, Recording, Recordings, StartRecording};
use crate::service::uploads::{TargetKind, TargetStatus};
use crate::service::{self, Caller, Principal, Screenshots};

use config::Section;
use params::Route;
use signing::SigError;
use wire::{echo, huawei_time, HuaweiError, RecordView};

const NAME: &str = "huawei";
/// `X-Auth-Token` from a static file (`auth::StaticTokens`), for callers that
/// hold an IAM token rather than an AK/SK: IAM tokens are a few KB, and each
/// acts in its project.
const TOKEN_RULES: TokenRules = TokenRules {
    max_len: 16 * 1024,
    project_required: true,
    roles: None,
};
/// Files go out in pieces of this size: a download never holds a whole video.
const CHUNK: usize = 64 * 1024;

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
    let recordings = shared.service.recordings().ok_or_else(|| {
        in_section(
            "screen records are kept in the store: add a [store] section and turn recordings \
             on ([recordings]), or set enabled = false"
                .into(),
        )
    })?;
    let keys = load_keys(NAME, config.credentials_file.as_deref())?;
    let tokens = match &config.tokens_file {
        Some(file) => Some(StaticTokens::load(file, TOKEN_RULES).map_err(&in_section)?),
        None => None,
    };
    let ttl = Duration::from_secs(config.timestamp_skew_secs * 2);
    let nonces = NonceCache::new(ttl, config.max_nonces, keys.ids());
    tracing::info!(
        keys = keys.len(),
        tokens = tokens.as_ref().map_or(0, StaticTokens::len),
        path = %config.path,
        nonce_worst_case_mib = nonces.worst_case_bytes() as f64 / (1 << 20) as f64,
        "huawei dialect"
    );
    // All of /v2: any other Workspace path is the gateway's "no such API".
    let root = format!("{}/v2", config.path);
    let paths = vec![root.clone(), format!("{root}/{{*rest}}")];
    let huawei = Huawei {
        service: shared.service.clone(),
        recordings,
        keys,
        tokens,
        nonces,
        hosts: HostNames::new(&shared.server.host_names),
        config,
    };
    Ok(Some(Mount::new(
        format!("Huawei Workspace ({root}/{{project_id}}/screen-records)"),
        paths,
        None,
        huawei,
        shared.limits(),
    )))
}

pub struct Huawei {
    service: Arc<Screenshots>,
    recordings: Recordings,
    keys: KeyStore,
    tokens: Option<StaticTokens>,
    nonces: NonceCache,
    hosts: HostNames,
    config: Section,
}

impl Dialect for Huawei {
    const NAME: &'static str = NAME;
    const REQUEST_ID_HEADER: &'static str = "x-request-id";
    type Context = ();
    type Error = HuaweiError;

    /// Huawei's request ids are 32 hex digits.
    fn request_id(&self, id: uuid::Uuid) -> String {
        id.simple().to_string()
    }

    fn context(&self, _: &Parts) {}

    async fn serve(
        &self,
        request: Incoming<'_>,
        _: &mut (),
        record: &mut Record,
    ) -> Result<Response, HuaweiError> {
        let Incoming {
            head,
            body,
            request_id,
        } = request;
        let path = head
            .uri
            .path()
            .strip_prefix(self.config.path.as_str())
            .unwrap_or("");
        let route = params::route(head.method.as_str(), path)?;
        record.action = Some(route.action());
        let who = self.authenticate(head, &body).await?;
        record.principal = Some(who.id.clone());
        self.check_project(head, &route, &who)?;
        let content_type = head
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let caller = Caller {
            request_id: request_id.to_owned(),
            user: who.id.clone(),
        };
        match route {
            Route::List { .. } => self.list(head, &who, record).await,
            Route::Start { .. } => {
                let asked = params::start(content_type, &body)?;
                record.instance = Some(asked.desktop_id.clone());
                let start = StartRecording {
                    fps: asked.fps,
                    interval: asked.interval,
                    max_duration: asked.max_duration,
                    before: asked.before,
                    after: asked.after,
                    triggers: asked.triggers,
                    ..StartRecording::new(asked.kind, caller)
                };
                let started = self
                    .recordings
                    .start(&who, &asked.desktop_id, start)
                    .await
                    .map_err(|e| HuaweiError::from_core(&e, "desktop", &asked.desktop_id))?;
                record.domain = Some(started.domain.name.clone());
                Ok(wire::json(StatusCode::OK, &view(&started)))
            }
            Route::BatchDelete { .. } => {
                let ids = params::batch_delete(content_type, &body)?;
                record.instance = Some(ids.join(","));
                let job_id = self
                    .recordings
                    .delete(&who, &ids)
                    .await
                    .map_err(|e| from_records(&e, &ids))?;
                Ok(wire::json(StatusCode::OK, &json!({ "job_id": job_id })))
            }
            Route::Show { id, .. } => {
                record.instance = Some(id.clone());
                let found = self
                    .recordings
                    .get(&who, &id)
                    .await
                    .map_err(|e| HuaweiError::from_core(&e, "screen record", &id))?;
                record.domain = Some(found.domain.name.clone());
                Ok(wire::json(StatusCode::OK, &self.view(&found).await))
            }
            Route::Stop { id, .. } => {
                record.instance = Some(id.clone());
                let stopped = self
                    .recordings
                    .stop(&who, &id)
                    .await
                    .map_err(|e| HuaweiError::from_core(&e, "screen record", &id))?;
                record.domain = Some(stopped.domain.name.clone());
                Ok(wire::json(StatusCode::OK, &self.view(&stopped).await))
            }
            Route::Download {
                id,
                file,
                head: only_head,
                ..
            } => {
                record.instance = Some(id.clone());
                let open = self
                    .recordings
                    .open(&who, &id, file)
                    .await
                    .map_err(|e| HuaweiError::from_core(&e, "screen record", &id))?;
                download(head, open, only_head).await
            }
        }
    }

    fn refuse(&self, why: Refusal) -> HuaweiError {
        match why {
            Refusal::AmbiguousLength => HuaweiError::bad_parameter(Refusal::AMBIGUOUS_LENGTH),
            Refusal::TooLarge { limit } => HuaweiError::too_large(limit),
            Refusal::TimedOut { after } => HuaweiError::unavailable(Refusal::timed_out(after)),
            Refusal::Panicked => HuaweiError::internal(),
        }
    }

    fn render(&self, error: &HuaweiError, _: &(), _: &str) -> Response {
        error.render()
    }
}

impl Huawei {
    /// An AK/SK signature, else an `X-Auth-Token`; a request with both is
    /// refused rather than read one way here and another by a proxy.
    async fn authenticate(&self, head: &Parts, body: &[u8]) -> Result<Principal, HuaweiError> {
        let signed = head.headers.contains_key(header::AUTHORIZATION);
        let token = head.headers.get("x-auth-token");
        let who = match (signed, token) {
            (true, Some(_)) => {
                return Err(HuaweiError::auth(
                    "give either an AK/SK signature or X-Auth-Token, not both",
                ))
            }
            (false, Some(token)) => {
                let tokens = self.tokens.as_ref().ok_or_else(|| {
                    HuaweiError::auth("tokens are not accepted on this host: sign with AK/SK")
                })?;
                let token = token.to_str().unwrap_or("");
                tokens
                    .holder(token)
                    .map_err(|e| HuaweiError::auth(e.to_string()))?
                    .principal(NAME)
            }
            (_, None) => self.verify_signature(head, body).await?,
        };
        if who.project.is_none() {
            return Err(HuaweiError::auth("the credentials are bound to no project"));
        }
        Ok(who)
    }

    async fn verify_signature(&self, head: &Parts, body: &[u8]) -> Result<Principal, HuaweiError> {
        let request = signing::Request {
            method: head.method.as_str(),
            path: head.uri.path(),
            query: head.uri.query().unwrap_or(""),
            headers: &head.headers,
            body,
        };
        let skew = Duration::from_secs(self.config.timestamp_skew_secs);
        let verified = signing::verify(&request, SystemTime::now(), skew, |ak| {
            self.keys.get(ak).map(|key| key.secret.as_bytes())
        })
        .map_err(|e| {
            let wire = HuaweiError::auth(e.message());
            match e {
                SigError::Mismatch { string_to_sign, .. } => {
                    wire.with_detail(format!("string to sign: {string_to_sign:?}"))
                }
                _ => wire,
            }
        })?;
        // The signature covers the host; it must be this one, so that a
        // request cannot be replayed on another host that knows the key.
        let local = head.extensions.get::<LocalAddr>().copied();
        if !self.hosts.accepts(&verified.host, local) {
            return Err(HuaweiError::auth(format!(
                "the request was signed for the host '{}', not this one",
                echo(&verified.host)
            )));
        }
        let key = self
            .keys
            .get(&verified.access_key)
            .ok_or_else(|| HuaweiError::auth("ak not exist"))?;
        self.check_replay(&key.id, &verified.signature).await?;
        Ok(key.principal(NAME))
    }

    /// The SDK sends no nonce: a signature is used once, in memory (bounded,
    /// per key) and, durably, in the store, so a request seen before a
    /// restart is refused after it. Two identical calls within one second
    /// sign alike: the second is refused too.
    async fn check_replay(&self, key: &str, signature: &str) -> Result<(), HuaweiError> {
        let replayed = || HuaweiError::auth("the request was already received (replay)");
        match self.nonces.check(key, signature) {
            Nonce::Fresh => {}
            Nonce::Reused => return Err(replayed()),
            Nonce::Full => {
                return Err(HuaweiError::throttled(
                    "The throttling threshold has been reached: too many requests of this key.",
                ))
            }
        }
        let ttl = Duration::from_secs(self.config.timestamp_skew_secs * 2);
        match self.service.first_use(NAME, key, signature, ttl).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(replayed()),
            Err(e) => Err(HuaweiError::from_core(&e, "request", "-")),
        }
    }

    /// The project in the path and in `X-Project-Id` must both be the
    /// caller's, admins included (as Nova): an admin sees every desktop, but
    /// through its own project's URL.
    fn check_project(
        &self,
        head: &Parts,
        route: &Route,
        who: &Principal,
    ) -> Result<(), HuaweiError> {
        let own = who.project.as_deref().unwrap_or_default();
        let header = match head.headers.get("x-project-id") {
            None => None,
            Some(v) => Some(v.to_str().map_err(|_| HuaweiError::project_mismatch())?),
        };
        let same = |p: &str| bare(p) == bare(own);
        if !same(route.project()) || header.is_some_and(|h| !same(h)) {
            return Err(HuaweiError::project_mismatch());
        }
        Ok(())
    }

    async fn list(
        &self,
        head: &Parts,
        who: &Principal,
        record: &mut Record,
    ) -> Result<Response, HuaweiError> {
        let now = time::OffsetDateTime::now_utc();
        let query = params::list_query(head.uri.query().unwrap_or(""), now)?;
        let empty = || {
            wire::json(
                StatusCode::OK,
                &json!({"screen_records": [], "total_count": 0}),
            )
        };
        let domain_uuid = match &query.desktop_id {
            None => None,
            Some(desktop) => {
                record.instance = Some(desktop.clone());
                match self
                    .service
                    .find_instance(who, desktop, &BTreeMap::new())
                    .await
                {
                    Ok(domain) => Some(domain.uuid),
                    // A desktop deleted since keeps its records, by UUID.
                    Err(service::Error::NotFound { .. }) => match uuid::Uuid::parse_str(desktop) {
                        Ok(uuid) => Some(uuid.hyphenated().to_string()),
                        Err(_) => return Ok(empty()),
                    },
                    Err(e) => return Err(HuaweiError::from_core(&e, "desktop", desktop)),
                }
            }
        };
        let filter = ListFilter {
            domain_uuid,
            domain_names: query.desktop_names,
            username: query.username,
            status: query.status,
            kind: query.kind,
            from: query.from,
            to: query.to,
            ascending: query.ascending,
            offset: query.offset,
            limit: query.limit,
        };
        let page = self
            .recordings
            .list(who, &filter)
            .await
            .map_err(|e| HuaweiError::from_core(&e, "screen record", "-"))?;
        let mut records: Vec<RecordView> = Vec::with_capacity(page.items.len());
        for r in &page.items {
            records.push(self.view(r).await);
        }
        Ok(wire::json(
            StatusCode::OK,
            &json!({"screen_records": records, "total_count": page.total}),
        ))
    }
}

/// A batch's failure names the record it is about when the core says which.
fn from_records(e: &service::Error, ids: &[String]) -> HuaweiError {
    match e {
        service::Error::NoSuchRecording { id } => HuaweiError::from_core(e, "screen record", id),
        _ => HuaweiError::from_core(e, "screen record", &ids.join(",")),
    }
}

/// A UUID compared as libvirt, Nova and Huawei may spell it.
fn bare(s: &str) -> String {
    s.replace('-', "").to_ascii_lowercase()
}

impl Huawei {
    /// `view`, with where the recording was uploaded, if it was.
    async fn view(&self, r: &Recording) -> RecordView {
        let targets = self.recordings.upload_targets(r).await;
        uploaded(view(r), &targets)
    }
}

/// Where the upload puts the recording, as Workspace names it: the first S3
/// target's bucket and folder (`upload_type` "OBS"), else the first
/// directory target's folder under it ("LOCAL"); never a host path. A
/// recording without uploads keeps the three null.
fn uploaded(mut view: RecordView, targets: &[TargetStatus]) -> RecordView {
    let s3 = targets.iter().find(|t| t.kind == TargetKind::S3);
    let Some(target) = s3.or_else(|| targets.first()) else {
        return view;
    };
    view.obs_bucket = target.bucket.clone();
    view.file_directory = target.directory.clone();
    view.upload_type = Some(
        match target.kind {
            TargetKind::S3 => "OBS",
            TargetKind::Dir => "LOCAL",
        }
        .to_owned(),
    );
    view
}

/// The core's recording, as `ScreenRecordDetail` (without its upload: see
/// `uploaded`).
fn view(r: &Recording) -> RecordView {
    let domain = &r.domain;
    RecordView {
        id: r.id.clone(),
        desktop_id: Some(
            domain
                .instance_id
                .clone()
                .unwrap_or_else(|| domain.uuid.clone()),
        ),
        desktop_name: Some(domain.name.clone()),
        desktop_pool_id: None,
        username: Some(domain.user.clone().unwrap_or_else(|| r.principal.clone())),
        size: r.video.as_ref().map(|v| v.bytes),
        kind: r.kind.as_str().to_owned(),
        status: r.status.as_str().to_owned(),
        policy_id: None,
        // From the upload, if any (`uploaded`).
        obs_bucket: None,
        file_directory: None,
        video_filename: r.video.as_ref().map(|v| v.name.clone()),
        video_file_sha256: r.video.as_ref().and_then(|v| v.sha256.clone()),
        event_filename: r.events.as_ref().map(|v| v.name.clone()),
        event_file_sha256: r.events.as_ref().and_then(|v| v.sha256.clone()),
        start_time: Some(huawei_time(r.start_time)),
        end_time: r.end_time.map(huawei_time),
        update_time: Some(huawei_time(r.updated_at)),
        duration: Some(r.duration.as_secs()),
        upload_type: None,
        site_type: None,
        reason: r.reason.clone(),
    }
}

/// A recording's file, whole or one `Range` span, streamed in chunks.
async fn download(head: &Parts, open: OpenFile, only_head: bool) -> Result<Response, HuaweiError> {
    let OpenFile {
        mut file,
        name,
        len,
        sha256,
        content_type,
    } = open;
    let range = head
        .headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok());
    let span = Span::of(range, len);
    let (status, first, count) = match span {
        Span::Whole => (StatusCode::OK, 0, len),
        Span::Bytes(a, b) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        Span::Unsatisfiable => {
            let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            set_headers(
                &mut response,
                &span,
                len,
                0,
                &name,
                sha256.as_deref(),
                content_type,
            );
            return Ok(response);
        }
    };
    let body = if only_head {
        Body::empty()
    } else {
        file.seek(std::io::SeekFrom::Start(first))
            .await
            .map_err(|e| HuaweiError::internal().with_detail(format!("seek {name}: {e}")))?;
        let chunks = stream::unfold(
            (file.take(count), name.clone()),
            |(mut rest, name)| async move {
                let mut buf = vec![0u8; CHUNK];
                match rest.read(&mut buf).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        Some((Ok(axum::body::Bytes::from(buf)), (rest, name)))
                    }
                    Err(e) => {
                        tracing::warn!(file = %name, error = %e, "a recording's file could not be read");
                        Some((Err(e), (rest, name)))
                    }
                }
            },
        );
        Body::from_stream(chunks)
    };
    let mut response = (status, body).into_response();
    set_headers(
        &mut response,
        &span,
        len,
        count,
        &name,
        sha256.as_deref(),
        content_type,
    );
    Ok(response)
}

fn set_headers(
    response: &mut Response,
    span: &Span,
    len: u64,
    count: u64,
    name: &str,
    sha256: Option<&str>,
    content_type: &str,
) {
    let headers = response.headers_mut();
    let mut set = |name: header::HeaderName, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    set(header::ACCEPT_RANGES, "bytes".into());
    set(header::CONTENT_LENGTH, count.to_string());
    if let Some(range) = span.content_range(len) {
        set(header::CONTENT_RANGE, range);
    }
    if matches!(span, Span::Unsatisfiable) {
        return;
    }
    set(header::CONTENT_TYPE, content_type.into());
    set(
        header::CONTENT_DISPOSITION,
        format!(
            "attachment; filename=\"{}\"",
            name.replace(['"', '\\'], "_")
        ),
    );
    // Only a closed file has a digest; one still being written has none.
    if let Some(sha256) = sha256 {
        set(header::ETAG, format!("\"{sha256}\""));
        set(
            header::HeaderName::from_static(pipeline::SHA256_HEADER),
            sha256.to_owned(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_token_file_parses() {
        let text = include_str!("../../../systemd/huawei-tokens.toml");
        assert_eq!(StaticTokens::parse(text, TOKEN_RULES).unwrap().len(), 1);
    }
    use crate::service::recordings::{Kind, MediaFile, Status};
    use crate::service::Domain;

    #[tokio::test]
    async fn without_recordings_the_dialect_refuses_to_mount() {
        let shared = Shared {
            service: Arc::new(Screenshots::on_test_driver()),
            server: crate::config::Server::default(),
        };
        let section: toml::Table = toml::from_str("credentials_file = \"/nonexistent\"").unwrap();
        let err = mount(&section, &shared).err().expect("refused").to_string();
        assert!(
            err.starts_with("[huawei]: ") && err.contains("[recordings]"),
            "{err}"
        );
        let off: toml::Table = toml::from_str("enabled = false").unwrap();
        assert!(mount(&off, &shared).unwrap().is_none());
    }

    fn recording(instance_id: Option<&str>, video: Option<MediaFile>) -> Recording {
        let at = time::macros::datetime!(2026-11-30 11:00:00.250 UTC);
        Recording {
            id: "5b8c0d3e-0000-4000-8000-000000000001".into(),
            domain: Domain {
                name: "web1".into(),
                uuid: "6f1c2a8e-9d3b-4c5e-8a7f-1b2c3d4e5f60".into(),
                state: None,
                instance_id: instance_id.map(str::to_owned),
                project: Some("p".into()),
                user: None,
            },
            kind: Kind::Interval,
            status: Status::Recording,
            reason: None,
            dialect: NAME.into(),
            principal: "HPUAKEY".into(),
            project: Some("p".into()),
            request_id: "r".into(),
            start_time: at,
            end_time: None,
            updated_at: at,
            duration: Duration::from_millis(61_900),
            frames: 7,
            video,
            events: None,
            upload_id: None,
        }
    }

    #[test]
    fn a_record_shows_the_desktop_by_the_name_callers_use() {
        let running = view(&recording(None, None));
        assert_eq!(
            running.desktop_id.as_deref(),
            Some("6f1c2a8e-9d3b-4c5e-8a7f-1b2c3d4e5f60")
        );
        assert_eq!(running.desktop_name.as_deref(), Some("web1"));
        assert_eq!(
            running.username.as_deref(),
            Some("HPUAKEY"),
            "who started it"
        );
        assert_eq!(
            (running.kind.as_str(), running.status.as_str()),
            ("INTERVAL", "RECORDING")
        );
        assert_eq!((running.size, running.video_file_sha256), (None, None));
        assert_eq!(
            running.start_time.as_deref(),
            Some("2026-11-30T11:00:00.250Z")
        );
        assert_eq!((running.end_time, running.duration), (None, Some(61)));
        let video = MediaFile {
            name: "x.mp4".into(),
            bytes: 1234,
            sha256: Some("ab".repeat(32)),
        };
        let tagged = view(&recording(Some("i-web1"), Some(video)));
        assert_eq!(tagged.desktop_id.as_deref(), Some("i-web1"));
        assert_eq!(tagged.size, Some(1234));
        assert_eq!(tagged.video_filename.as_deref(), Some("x.mp4"));
    }

    fn target(name: &str, kind: TargetKind, bucket: Option<&str>, dir: &str) -> TargetStatus {
        TargetStatus {
            target: name.into(),
            kind,
            state: crate::service::uploads::UploadState::Completed,
            uploaded_chunks: 1,
            total_chunks: 1,
            bytes_done: 1,
            attempts: 0,
            uri: None,
            bucket: bucket.map(Into::into),
            directory: Some(dir.into()),
            error: None,
            updated_at: time::OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn the_upload_fields_name_the_first_bucket_else_the_directory_else_nothing() {
        let plain = view(&recording(None, None));
        let none = uploaded(plain.clone(), &[]);
        assert_eq!(
            (none.obs_bucket, none.file_directory, none.upload_type),
            (None, None, None)
        );
        let local = target("local", TargetKind::Dir, None, "recordings");
        let obs = target("obs", TargetKind::S3, Some("bkt"), "vmshot/recordings");
        let both = uploaded(plain.clone(), &[local.clone(), obs]);
        assert_eq!(both.obs_bucket.as_deref(), Some("bkt"));
        assert_eq!(both.file_directory.as_deref(), Some("vmshot/recordings"));
        assert_eq!(both.upload_type.as_deref(), Some("OBS"));
        let dir = uploaded(plain, &[local]);
        assert_eq!(dir.obs_bucket, None);
        assert_eq!(dir.file_directory.as_deref(), Some("recordings"));
        assert_eq!(dir.upload_type.as_deref(), Some("LOCAL"));
    }
}
