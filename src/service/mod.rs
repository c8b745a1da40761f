//! The core screenshot service: what every dialect calls, after parsing its own
//! request and checking who asks. It applies the per-instance interval, joins
//! a capture of the same screen already in flight (`flight`), and otherwise
//! runs one under the cap on concurrent captures, with the optional wake-up.

pub mod actions;
mod audit;
mod console;
pub mod diagnosis;
mod flight;
pub(crate) mod jobs;
mod live;
mod outcome;
pub mod recordings;
mod scope;
mod throttle;
pub mod uploads;

use std::collections::BTreeMap;

use sha2::Digest;
use std::sync::Arc;
use std::time::Duration;

use crate::capture::{self, Capturer, Checked, MirrorPolicy, Output};
use crate::hypervisor::{self, Hypervisor};
use crate::store::Store;

pub use crate::capture::Shot;
pub use crate::hypervisor::DomainState;
pub use audit::Caller;
pub use console::{
    last_lines, without_escapes, ConsoleFollow, ConsoleOutput, MAX_CONSOLE_BYTES, NO_CONSOLE_LOG,
};
pub use diagnosis::{Diagnosis, DiagnosisSettings, Verdict};
pub use live::{
    CaptureJob, Listed, Live, ScreenState, Thumbnail, MAX_THUMB_WIDTH, MIN_THUMB_WIDTH,
};
pub use outcome::Outcome;
pub use scope::Principal;

use audit::Audit;
use flight::Flights;
use throttle::Throttle;

/// A domain as the core found it, whatever reference the caller gave: its
/// UUID keys everything kept per guest (throttle, shared capture, mirror).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    pub name: String,
    pub uuid: String,
    /// Its state when looked up; `None` if libvirt could not say.
    pub state: Option<DomainState>,
    /// The cloud instance id in its metadata, if any.
    pub instance_id: Option<String>,
    /// The Nova project and user that own it (`<nova:owner>` in its
    /// metadata), on a Nova host: the tenant scope of principals.
    pub project: Option<String>,
    pub user: Option<String>,
}

impl From<hypervisor::Entry> for Domain {
    fn from(entry: hypervisor::Entry) -> Self {
        Self {
            name: entry.name,
            uuid: entry.uuid,
            state: Some(entry.state),
            instance_id: entry.instance_id,
            project: entry.project,
            user: entry.user,
        }
    }
}

/// One screenshot, as a dialect asks for it.
#[derive(Debug, Clone, Default)]
pub struct ScreenshotRequest {
    /// Wake a suspended guest, or nudge a running one so a blanked console redraws.
    pub wake: bool,
    /// Skip the fast path (the VNC mirror): the screen as QEMU holds it now.
    pub fresh: bool,
    /// The dialect's minimum interval between screenshots of one domain.
    pub throttle: Option<Interval>,
    /// Which screen (video head) of the domain; 0 is the first.
    pub screen: u32,
    /// How to encode it, if not as the service's settings say.
    pub output: Option<Output>,
    /// Who asked, for the capture's record in the store (see `audit`).
    pub caller: Option<Caller>,
}

/// A minimum interval between screenshots of one domain, under a rule name:
/// dialects with different rules do not share slots.
#[derive(Debug, Clone, Copy)]
pub struct Interval {
    pub rule: &'static str,
    pub every: Duration,
}

/// Why a screenshot could not be had. Dialects map each to their own wire
/// error. Messages name no libvirt URI or path: those stay in `detail`, for
/// the log.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("there is no domain '{domain}'")]
    NotFound { domain: String },
    #[error("domain '{domain}' is {state}")]
    NotRunning { domain: String, state: DomainState },
    #[error("domain '{domain}' has no display device")]
    NoDisplay { domain: String },
    #[error("domain '{domain}' has no screen {screen} (it has {screens})")]
    NoSuchScreen {
        domain: String,
        screen: u32,
        screens: u32,
    },
    #[error("the screenshot of domain '{domain}' is larger than the {limit}-byte limit")]
    TooLarge { domain: String, limit: usize },
    #[error("the screenshot of domain '{domain}' cannot be decoded: {reason}")]
    Undecodable { domain: String, reason: String },
    #[error("too many screenshots of '{domain}': retry in {:.1} s", retry_after.as_secs_f64())]
    Throttled {
        domain: String,
        retry_after: Duration,
    },
    #[error("too many screenshots in progress on this host")]
    Busy,
    #[error("{0}")]
    Timeout(String),
    /// A part the screenshot needs (libvirt, the store) does not answer.
    #[error("{what} does not answer")]
    Unavailable { what: &'static str, detail: String },
    /// The file system of vmshot's state (the store, media, recordings) is
    /// full: new work cannot be kept, so it is refused until space returns.
    #[error("the host's storage for vmshot's state is full: retry once space is freed")]
    StorageFull { detail: String },
    /// libvirt refused a call for a reason of its own; its words, which may
    /// name files and URIs, are in `detail`.
    #[error("libvirt could not {what}")]
    Libvirt { what: String, detail: String },
    /// A page's marker names no action of the instance.
    #[error("marker '{marker}' could not be found")]
    NoSuchMarker { marker: String },
    /// No upload has this id, or the caller may not see it (`uploads`).
    #[error("there is no upload {id}")]
    NoSuchUpload { id: i64 },
    #[error("{reason}")]
    Failed { reason: String, detail: String },
    /// No recording `id` that the caller may see.
    #[error("there is no recording '{id}'")]
    NoSuchRecording { id: String },
    /// Past a configured budget (concurrent recordings, disk bytes).
    #[error("over the budget: {what}")]
    OverBudget { what: String },
    /// The thing asked for is in a state that does not allow it now (e.g.
    /// stopping a recording that has ended).
    #[error("{reason}")]
    Conflict { reason: String },
    /// A parameter out of its range or malformed.
    #[error("{reason}")]
    Invalid { reason: String },
    /// The domain's XML declares no log for its serial console.
    #[error("domain '{domain}' keeps no serial console log")]
    NoConsoleLog { domain: String },
}

impl Error {
    /// What the log needs beyond the message, if anything.
    pub fn detail(&self) -> Option<&str> {
        match self {
            Self::Unavailable { detail, .. }
            | Self::StorageFull { detail }
            | Self::Libvirt { detail, .. }
            | Self::Failed { detail, .. } => Some(detail),
            _ => None,
        }
    }

    fn failed(reason: impl Into<String>, detail: impl ToString) -> Self {
        Self::Failed {
            reason: reason.into(),
            detail: detail.to_string(),
        }
    }
}

impl From<hypervisor::Error> for Error {
    fn from(e: hypervisor::Error) -> Self {
        use hypervisor::Error as H;
        match e {
            H::NotFound { domain, .. } => Self::NotFound { domain },
            H::NotRunning { domain, state } => Self::NotRunning { domain, state },
            H::NoDisplay { domain } => Self::NoDisplay { domain },
            e @ (H::Timeout { .. } | H::Hung { .. }) => Self::Timeout(e.to_string()),
            e @ H::Unreachable { .. } => Self::Unavailable {
                what: "libvirt",
                detail: e.to_string(),
            },
            H::NoSuchScreen {
                domain,
                screen,
                screens,
            } => Self::NoSuchScreen {
                domain,
                screen,
                screens,
            },
            H::PayloadTooLarge { domain, limit } => Self::TooLarge { domain, limit },
            // libvirt's own message may name files and URIs: logged, not sent.
            ref e @ H::Libvirt { ref what, .. } => Self::Libvirt {
                what: what.clone(),
                detail: e.to_string(),
            },
        }
    }
}

/// What the store's failures mean to a caller, for every part of the core
/// that keeps state. A full disk is its own answer (each dialect's
/// "unavailable"); the rest is the store failing, with its words logged.
impl From<crate::store::StoreError> for Error {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError as S;
        match e {
            e if e.is_full() => Self::StorageFull {
                detail: e.to_string(),
            },
            S::MarkerNotFound(marker) => Self::NoSuchMarker { marker },
            S::Refused(reason) => Self::Conflict { reason },
            S::Timeout(_) | S::Closed => Self::Unavailable {
                what: "the store",
                detail: e.to_string(),
            },
            e => Self::failed("the store failed", e),
        }
    }
}

impl From<capture::Error> for Error {
    fn from(e: capture::Error) -> Self {
        match e {
            capture::Error::Hypervisor(e) => e.into(),
            capture::Error::Decode { domain, source } => Self::Undecodable {
                domain,
                reason: source.to_string(),
            },
            e @ capture::Error::Worker(_) => Self::failed("the image worker failed", &e),
            capture::Error::Busy => Self::Busy,
            other => Self::failed(other.to_string(), &other),
        }
    }
}

pub struct Screenshots {
    captures: Arc<Captures>,
    flights: Flights<FlightKey, Result<Shot, Error>>,
    throttle: Throttle,
    audit: Option<Audit>,
    recordings: Option<recordings::Recordings>,
    /// Uploads of media to storage targets, if configured (`uploads`).
    uploads: Option<uploads::Uploads>,
    /// Verdicts on hanging guests (`diagnosis`).
    diagnosis: diagnosis::Diagnoses,
}

/// What one capture needs, shared with the task that runs it.
struct Captures {
    capturer: Capturer,
    output: Output,
    wake_settle: Duration,
}

/// Requests that may share one capture: same domain, screen and output, and
/// the same wake-up (a caller who asked for one must not get a screen taken
/// without it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FlightKey {
    uuid: String,
    screen: u32,
    output: Output,
    wake: bool,
    fresh: bool,
}

/// Settings of the service, from the daemon's configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub output: Output,
    pub max_concurrent: usize,
    pub max_queued: usize,
    pub wake_settle: Duration,
    /// The fast path (VNC mirrors), or `None` for screenshots only.
    pub fast_path: Option<MirrorPolicy>,
    /// Where every capture is recorded as an instance action, if anywhere.
    pub store: Option<Store>,
    /// Screen recordings, if enabled (they need the store).
    pub recordings: Option<recordings::RecordingSettings>,
}

impl Screenshots {
    pub fn new(hypervisor: Hypervisor, settings: Settings) -> Self {
        let capturer = match settings.fast_path {
            Some(policy) => Capturer::with_mirrors(hypervisor, policy),
            None => Capturer::new(hypervisor),
        }
        .with_gate(settings.max_concurrent, settings.max_queued);
        Self {
            recordings: match (&settings.store, settings.recordings) {
                (Some(store), Some(rec)) => {
                    recordings::Recordings::new(store.clone(), rec, capturer.clone())
                }
                _ => None,
            },
            captures: Arc::new(Captures {
                capturer,
                output: settings.output,
                wake_settle: settings.wake_settle,
            }),
            flights: Flights::new(),
            // The throttle's own handle on the store, which owns the slots.
            throttle: Throttle::new(settings.store.clone()),
            audit: settings.store.map(Audit::new),
            uploads: None,
            diagnosis: diagnosis::Diagnoses::new(DiagnosisSettings::default()),
        }
    }

    /// The recordings service, if there is a store and `[recordings]` is on.
    pub fn recordings(&self) -> Option<recordings::Recordings> {
        self.recordings.clone()
    }

    /// A service on libvirt's test driver without a store, for the tests of
    /// the layers above, which may not reach the hypervisor themselves.
    #[cfg(test)]
    pub(crate) fn on_test_driver() -> Self {
        tests::service()
    }

    pub fn hypervisor(&self) -> &Hypervisor {
        self.captures.capturer.hypervisor()
    }

    /// Whether `nonce` of `key` is used for the first time within `ttl`. With
    /// a store the answer is durable (a nonce seen before a restart is still
    /// refused after it); without one, true: the dialect's memory decides.
    pub async fn first_use(
        &self,
        dialect: &'static str,
        key: &str,
        nonce: &str,
        ttl: Duration,
    ) -> Result<bool, Error> {
        let Some(audit) = &self.audit else {
            return Ok(true);
        };
        // A digest, not the caller's text: bounded, and no secrets at rest.
        let digest = hex::encode(&sha2::Sha256::digest(nonce.as_bytes())[..16]);
        let now = time::OffsetDateTime::now_utc();
        audit
            .store()
            .insert_nonce_if_absent(dialect, &format!("{key}/{digest}"), now, now + ttl)
            .await
            .map_err(Error::from)
    }

    /// VNC mirrors holding a screen now.
    pub fn mirrors_open(&self) -> usize {
        self.captures.capturer.mirrors_open()
    }

    /// The domain `reference` (a name or UUID, any case, dashes or not) refers to.
    pub async fn find(&self, reference: &str) -> Result<Domain, Error> {
        Ok(self.hypervisor().find(reference).await?.into())
    }

    /// The domain a cloud instance id names, if `who` may see it: by the
    /// dialect's own `table` (id → domain name or UUID) first, then by the
    /// domains' metadata (in `hypervisor::INSTANCE_NAMESPACE`, read from the
    /// inventory), else the id itself as a domain name or UUID. A guest that
    /// has an instance id answers to that id alone; its name and UUID are not
    /// found, so that one guest has one name for callers. A domain out of
    /// `who`'s scope is not found, in the same words as one that does not
    /// exist.
    pub async fn find_instance(
        &self,
        who: &Principal,
        id: &str,
        table: &BTreeMap<String, String>,
    ) -> Result<Domain, Error> {
        find_instance(self.hypervisor(), who, id, table).await
    }

    /// A screenshot of `domain`, as found by `find` or `find_instance`.
    pub async fn take(&self, domain: &Domain, request: &ScreenshotRequest) -> Result<Shot, Error> {
        match domain.state {
            Some(DomainState::PmSuspended) if request.wake => {}
            Some(state) if !state.has_console() => {
                return Err(Error::NotRunning {
                    domain: domain.name.clone(),
                    state,
                })
            }
            _ => {}
        }
        let slot = match request.throttle {
            Some(interval) => Some(self.throttle.take(domain, interval).await?),
            None => None,
        };
        let key = FlightKey {
            uuid: domain.uuid.clone(),
            screen: request.screen,
            output: request.output.unwrap_or(self.captures.output),
            wake: request.wake,
            fresh: request.fresh,
        };
        let checked = Checked {
            name: domain.name.clone(),
            uuid: domain.uuid.clone(),
        };
        let captures = self.captures.clone();
        let started = time::OffsetDateTime::now_utc();
        let result = self
            .flights
            .join(key.clone(), || async move {
                captures.capture(&key, checked).await
            })
            .await
            .map(|(result, shared)| result.map(|shot| Shot { shared, ..shot }))
            .unwrap_or_else(|| Err(Error::failed("the capture task failed", "it panicked")));
        if let (Err(_), Some(slot)) = (&result, slot) {
            self.throttle.release(slot).await;
        }
        if let (Some(audit), Some(caller)) = (&self.audit, &request.caller) {
            audit.record(domain, caller, started, &result).await;
        }
        result
    }
}

impl Captures {
    async fn capture(&self, key: &FlightKey, checked: Checked) -> Result<Shot, Error> {
        let hypervisor = self.capturer.hypervisor();
        let name = checked.name.clone();
        let woken = key.wake
            && hypervisor
                .wake(&key.uuid)
                .await
                .map_err(|e| timeout_by_name(e.into(), "wake-up", &name))?;
        if woken {
            tokio::time::sleep(self.wake_settle).await;
        }
        let capture = capture::Request {
            domain: key.uuid.clone(),
            screen: key.screen,
            output: key.output,
            // QEMU's VNC server may take up to 3 s to send a redraw that
            // follows a long idle spell: after a wake-up, ask QEMU itself.
            fresh: key.fresh || woken,
            checked: Some(checked),
        };
        self.capturer
            .capture(&capture)
            .await
            .map_err(|e| timeout_by_name(e, "screenshot", &name))
    }
}

/// `Screenshots::find_instance`, for whatever holds a hypervisor.
pub(crate) async fn find_instance(
    hypervisor: &Hypervisor,
    who: &Principal,
    id: &str,
    table: &BTreeMap<String, String>,
) -> Result<Domain, Error> {
    let not_found = || Error::NotFound {
        domain: id.to_owned(),
    };
    let domain = resolve(hypervisor, id, table).await.map_err(|e| match e {
        Error::NotFound { .. } => not_found(),
        e => e,
    })?;
    if !who.may_see(&domain, table) {
        return Err(not_found());
    }
    Ok(domain)
}

async fn resolve(
    hypervisor: &Hypervisor,
    id: &str,
    table: &BTreeMap<String, String>,
) -> Result<Domain, Error> {
    let not_found = || Error::NotFound {
        domain: id.to_owned(),
    };
    if let Some(reference) = table.get(id) {
        return Ok(hypervisor.find(reference).await?.into());
    }
    if let Some(entry) = hypervisor.find_instance(id).await? {
        return Ok(entry.into());
    }
    let domain: Domain = hypervisor.find(id).await?.into();
    if domain.instance_id.is_some() || table.values().any(|r| scope::names(r, &domain)) {
        return Err(not_found());
    }
    Ok(domain)
}

/// The error of a call made by UUID, a timeout told by the domain's name
/// instead: libvirt names what timed out by the reference it was given, and
/// the caller knows the domain by the name it asked for.
fn timeout_by_name(err: capture::Error, call: &str, name: &str) -> Error {
    match err {
        capture::Error::Hypervisor(hypervisor::Error::Timeout { after, .. }) => Error::Timeout(
            hypervisor::Error::Timeout {
                what: format!("{call} of domain '{name}'"),
                after,
            }
            .to_string(),
        ),
        capture::Error::Hypervisor(hypervisor::Error::Hung { since, .. }) => Error::Timeout(
            hypervisor::Error::Hung {
                domain: name.to_owned(),
                since,
            }
            .to_string(),
        ),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::Settings as HvSettings;

    /// A service on libvirt's test driver, which serves one fixed screen
    /// whichever is asked for.
    pub(super) fn service() -> Screenshots {
        service_with(None)
    }

    fn service_with(store: Option<Store>) -> Screenshots {
        Screenshots::new(
            Hypervisor::new(HvSettings::new("test:///default")),
            Settings {
                output: Output::default(),
                max_concurrent: 4,
                max_queued: 4,
                wake_settle: Duration::ZERO,
                fast_path: None,
                store,
                recordings: None,
            },
        )
    }

    #[tokio::test]
    async fn every_capture_is_recorded_with_its_events_before_the_answer() {
        let dir = std::env::temp_dir().join(format!("vmshot-audit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(crate::store::StoreSettings::new(dir.join("s.db")))
            .await
            .unwrap();
        let service = service_with(Some(store.clone()));
        let domain = service.find("test").await.unwrap();
        let asked = |id: &str, screen| ScreenshotRequest {
            screen,
            caller: Some(Caller {
                request_id: id.into(),
                user: "key-1".into(),
            }),
            ..ScreenshotRequest::default()
        };
        let shot = service.take(&domain, &asked("req-ok", 0)).await.unwrap();
        let action = store
            .get_action(&domain.uuid, "req-ok")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                action.action.as_str(),
                action.user_id.as_deref(),
                action.message
            ),
            ("vmshot_capture", Some("key-1"), None)
        );
        let names: Vec<_> = action.events.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(names, ["vmshot_grab", "vmshot_encode"]);
        assert!(action
            .events
            .iter()
            .all(|e| e.result == Some(crate::store::EventResult::Success)));
        let encode = &action.events[1];
        assert!(encode
            .details
            .as_deref()
            .unwrap()
            .contains(&shot.sha256_hex()));
        assert!(encode.finish_time.unwrap() >= encode.start_time);

        // A failed capture says what broke (here: the domain went away
        // between the lookup and the capture); a call without a caller is
        // not recorded.
        let gone = Domain {
            name: "gone".into(),
            uuid: "00000000-0000-4000-8000-000000000001".into(),
            state: None,
            instance_id: None,
            project: None,
            user: None,
        };
        service.take(&gone, &asked("req-bad", 0)).await.unwrap_err();
        let failed = store
            .get_action(&gone.uuid, "req-bad")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(failed.message.as_deref(), Some("Error"));
        let grab = &failed.events[0];
        assert_eq!(grab.result, Some(crate::store::EventResult::Error));
        assert!(
            grab.details.as_deref().unwrap().contains("no domain"),
            "{grab:?}"
        );
        service
            .take(&domain, &ScreenshotRequest::default())
            .await
            .unwrap();
        let page = crate::store::ActionPage::default();
        // Only the first capture of `test` was asked for by a caller.
        assert_eq!(
            store.list_actions(&domain.uuid, page).await.unwrap().len(),
            1
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn only_requests_for_the_same_screen_and_output_share_a_capture() {
        let service = service();
        let domain = service
            .find("test")
            .await
            .expect("the test driver's domain");
        let jpeg = ScreenshotRequest::default();
        let png = ScreenshotRequest {
            output: Some(Output::Png),
            ..ScreenshotRequest::default()
        };
        let second = ScreenshotRequest {
            screen: 1,
            ..ScreenshotRequest::default()
        };
        let (a, b, c, d) = tokio::join!(
            service.take(&domain, &jpeg),
            service.take(&domain, &jpeg),
            service.take(&domain, &png),
            service.take(&domain, &second),
        );
        let (a, b, c, d) = (a.unwrap(), b.unwrap(), c.unwrap(), d.unwrap());
        assert_eq!((a.output, b.output), (Output::default(), Output::default()));
        assert!(
            a.shared != b.shared,
            "one of the two JPEGs joined the other"
        );
        assert_eq!(c.output, Output::Png);
        assert!(!c.shared, "the PNG had a capture of its own");
        assert_eq!((d.screen, d.shared), (1, false), "so had screen 1");
    }
}
