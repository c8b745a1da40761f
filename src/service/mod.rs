//! The core screenshot service: what every dialect calls, after parsing its own
//! request and checking who asks. It applies the per-instance interval, joins
//! a capture of the same screen already in flight (`flight`), and otherwise
//! runs one under the cap on concurrent captures, with the optional wake-up.

mod flight;
mod gate;
mod throttle;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::capture::{self, Capturer, Checked, MirrorPolicy, Output};
use crate::hypervisor::{self, Hypervisor};

pub use crate::capture::Shot;
pub use crate::hypervisor::DomainState;

use flight::Flights;
use gate::Gate;
use throttle::Throttle;

/// A domain as the core found it, whatever reference the caller gave: its
/// UUID keys everything kept per guest (throttle, shared capture, mirror).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    pub name: String,
    pub uuid: String,
    /// Its state when looked up; `None` if libvirt could not say.
    pub state: Option<DomainState>,
    /// The Nova project and user that own it (`<nova:owner>` in its
    /// metadata), on a Nova host.
    pub project: Option<String>,
    pub user: Option<String>,
}

impl From<hypervisor::Entry> for Domain {
    fn from(entry: hypervisor::Entry) -> Self {
        Self {
            name: entry.name,
            uuid: entry.uuid,
            state: Some(entry.state),
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
    #[error("too many screenshots of '{domain}': retry in {:.1} s", retry_after.as_secs_f64())]
    Throttled {
        domain: String,
        retry_after: Duration,
    },
    #[error("too many screenshots in progress on this host")]
    Busy,
    #[error("{0}")]
    Timeout(String),
    #[error("libvirt does not answer")]
    Unavailable { detail: String },
    #[error("{reason}")]
    Failed { reason: String, detail: String },
}

impl Error {
    /// What the log needs beyond the message, if anything.
    /// Whether the call was refused for the per-domain interval.
    pub fn is_throttled(&self) -> bool {
        matches!(self, Self::Throttled { .. })
    }

    pub fn detail(&self) -> Option<&str> {
        match self {
            Self::Unavailable { detail } | Self::Failed { detail, .. } => Some(detail),
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
            e @ H::Timeout { .. } => Self::Timeout(e.to_string()),
            e @ H::Unreachable { .. } => Self::Unavailable {
                detail: e.to_string(),
            },
            e @ (H::NoSuchScreen { .. } | H::PayloadTooLarge { .. }) => {
                Self::failed(e.to_string(), &e)
            }
            // libvirt's own message may name files and URIs: logged, not sent.
            H::Libvirt { ref what, .. } => Self::failed(format!("libvirt could not {what}"), &e),
        }
    }
}

impl From<capture::Error> for Error {
    fn from(e: capture::Error) -> Self {
        match e {
            capture::Error::Hypervisor(e) => e.into(),
            e @ capture::Error::Worker(_) => Self::failed("the image worker failed", &e),
            other => Self::failed(other.to_string(), &other),
        }
    }
}

pub struct Screenshots {
    captures: Arc<Captures>,
    flights: Flights<FlightKey, Result<Shot, Error>>,
    throttle: Throttle,
}

/// What one capture needs, shared with the task that runs it.
struct Captures {
    capturer: Capturer,
    output: Output,
    gate: Gate,
    wake_settle: Duration,
}

/// Requests that may share one capture: same domain, and the same wake-up (a
/// caller who asked for one must not get a screen taken without it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FlightKey {
    uuid: String,
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
}

impl Screenshots {
    pub fn new(hypervisor: Hypervisor, settings: Settings) -> Self {
        Self {
            captures: Arc::new(Captures {
                capturer: match settings.fast_path {
                    Some(policy) => Capturer::with_mirrors(hypervisor, policy),
                    None => Capturer::new(hypervisor),
                },
                output: settings.output,
                gate: Gate::new(settings.max_concurrent, settings.max_queued),
                wake_settle: settings.wake_settle,
            }),
            flights: Flights::new(),
            throttle: Throttle::new(),
        }
    }

    pub fn hypervisor(&self) -> &Hypervisor {
        self.captures.capturer.hypervisor()
    }

    /// VNC mirrors holding a screen now.
    pub fn mirrors_open(&self) -> usize {
        self.captures.capturer.mirrors_open()
    }

    /// The domain `reference` (a name or UUID, any case, dashes or not) refers to.
    pub async fn find(&self, reference: &str) -> Result<Domain, Error> {
        Ok(self.find_entry(reference).await?.into())
    }

    async fn find_entry(&self, reference: &str) -> Result<hypervisor::Entry, Error> {
        Ok(self.hypervisor().find(reference).await?)
    }

    /// The domain a cloud instance id names: by the dialect's own `table` (id
    /// → domain name or UUID) first, then by the domains' metadata (in
    /// `hypervisor::INSTANCE_NAMESPACE`, read from the inventory), else the id
    /// itself as a domain name or UUID. A guest that has an instance id
    /// answers to that id alone; its name and UUID are not found, so that one
    /// guest has one name for callers (and their scopes).
    pub async fn find_instance(
        &self,
        id: &str,
        table: &BTreeMap<String, String>,
    ) -> Result<Domain, Error> {
        let not_found = || Error::NotFound {
            domain: id.to_owned(),
        };
        if let Some(reference) = table.get(id) {
            return self.find(reference).await.map_err(|e| match e {
                Error::NotFound { .. } => not_found(),
                e => e,
            });
        }
        if let Some(entry) = self.hypervisor().find_instance(id).await? {
            return Ok(entry.into());
        }
        let entry = self.find_entry(id).await?;
        let domain = Domain::from(entry.clone());
        if entry.instance_id.is_some() || table.values().any(|r| names(r, &domain)) {
            return Err(not_found());
        }
        Ok(domain)
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
            Some(Interval { rule, every }) => Some(
                self.throttle
                    .take(&format!("{rule}/{}", domain.uuid), every)
                    .map_err(|retry_after| Error::Throttled {
                        domain: domain.name.clone(),
                        retry_after,
                    })?,
            ),
            None => None,
        };
        let key = FlightKey {
            uuid: domain.uuid.clone(),
            wake: request.wake,
            fresh: request.fresh,
        };
        let checked = Checked {
            name: domain.name.clone(),
            uuid: domain.uuid.clone(),
        };
        let captures = self.captures.clone();
        let result = self
            .flights
            .join(key.clone(), || async move {
                captures.capture(&key, checked).await
            })
            .await
            .map(|(result, shared)| result.map(|shot| Shot { shared, ..shot }))
            .unwrap_or_else(|| Err(Error::failed("the capture task failed", "it panicked")));
        if let (Err(_), Some(slot)) = (&result, slot) {
            self.throttle.release(slot);
        }
        result
    }
}

/// Whether a configured reference (a domain name or UUID) names `domain`.
fn names(reference: &str, domain: &Domain) -> bool {
    let bare = |s: &str| s.replace('-', "").to_ascii_lowercase();
    reference == domain.name || bare(reference) == bare(&domain.uuid)
}

impl Captures {
    async fn capture(&self, key: &FlightKey, checked: Checked) -> Result<Shot, Error> {
        let _pass = self.gate.enter().await.ok_or(Error::Busy)?;
        let hypervisor = self.capturer.hypervisor();
        let woken = key.wake && hypervisor.wake(&key.uuid).await?;
        if woken {
            tokio::time::sleep(self.wake_settle).await;
        }
        let capture = capture::Request {
            domain: key.uuid.clone(),
            screen: 0,
            output: self.output,
            // QEMU's VNC server may take up to 3 s to send a redraw that
            // follows a long idle spell: after a wake-up, ask QEMU itself.
            fresh: key.fresh || woken,
            checked: Some(checked),
        };
        Ok(self.capturer.capture(&capture).await?)
    }
}
