//! The core screenshot service: what every dialect calls, after parsing its own
//! request and checking who asks. It applies the per-instance interval, joins
//! a capture of the same screen already in flight (`flight`), and otherwise
//! runs one under the cap on concurrent captures, with the optional wake-up.

mod flight;
mod gate;
mod instances;
mod throttle;

use std::sync::Arc;
use std::time::Duration;

use crate::capture::{self, Capturer, MirrorPolicy, Output, Shot};
use crate::hypervisor::{self, DomainState, Hypervisor};

use flight::Flights;
use gate::Gate;
use instances::InstanceIndex;
pub use instances::INSTANCE_NAMESPACE;
use throttle::Throttle;

/// One screenshot, as a dialect asks for it.
#[derive(Debug, Clone)]
pub struct ScreenshotRequest {
    /// libvirt domain name or UUID (dialects resolve their own ids first).
    pub domain: String,
    /// Wake a suspended guest, or nudge a running one so a blanked console redraws.
    pub wake: bool,
    /// Skip the fast path (the VNC mirror): the screen as QEMU holds it now.
    pub fresh: bool,
    /// Per-instance minimum interval, keyed by the dialect's instance id.
    pub throttle: Option<(String, Duration)>,
}

/// Why a screenshot could not be had. Dialects map each to their own wire error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("there is no domain '{domain}'")]
    NotFound { domain: String },
    #[error("domain '{domain}' is {state}")]
    NotRunning { domain: String, state: DomainState },
    #[error("domain '{domain}' has no display device")]
    NoDisplay { domain: String },
    #[error("too many screenshots of '{key}': retry in {:.1} s", retry_after.as_secs_f64())]
    Throttled { key: String, retry_after: Duration },
    #[error("too many screenshots in progress on this host")]
    Busy,
    #[error("{0}")]
    Timeout(String),
    #[error("libvirt is unreachable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Failed(String),
}

impl From<hypervisor::Error> for Error {
    fn from(e: hypervisor::Error) -> Self {
        use hypervisor::Error as H;
        match e {
            H::NotFound { domain, .. } => Self::NotFound { domain },
            H::NotRunning { domain, state } => Self::NotRunning { domain, state },
            H::NoDisplay { domain } => Self::NoDisplay { domain },
            e @ H::Timeout { .. } => Self::Timeout(e.to_string()),
            e @ H::Unreachable { .. } => Self::Unavailable(e.to_string()),
            e @ (H::NoSuchScreen { .. } | H::PayloadTooLarge { .. } | H::Libvirt { .. }) => {
                Self::Failed(e.to_string())
            }
        }
    }
}

impl From<capture::Error> for Error {
    fn from(e: capture::Error) -> Self {
        match e {
            capture::Error::Hypervisor(e) => e.into(),
            other => Self::Failed(other.to_string()),
        }
    }
}

pub struct Screenshots {
    captures: Arc<Captures>,
    flights: Flights<FlightKey, Result<Shot, Error>>,
    throttle: Throttle,
    instances: InstanceIndex,
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
    domain: String,
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
            instances: InstanceIndex::new(),
        }
    }

    pub fn hypervisor(&self) -> &Hypervisor {
        self.captures.capturer.hypervisor()
    }

    /// VNC mirrors holding a screen now.
    pub fn mirrors_open(&self) -> usize {
        self.captures.capturer.mirrors_open()
    }

    /// The domain a cloud instance id names, by the domains' metadata (see
    /// `instances`); `None` if no domain carries it.
    pub async fn domain_of_instance(&self, id: &str) -> Result<Option<String>, Error> {
        Ok(self.instances.resolve(self.hypervisor(), id).await?)
    }

    pub async fn take(&self, request: &ScreenshotRequest) -> Result<Shot, Error> {
        let slot = match &request.throttle {
            Some((key, interval)) => {
                Some(self.throttle.take(key, *interval).map_err(|retry_after| {
                    Error::Throttled {
                        key: key.clone(),
                        retry_after,
                    }
                })?)
            }
            None => None,
        };
        let key = FlightKey {
            domain: request.domain.clone(),
            wake: request.wake,
            fresh: request.fresh,
        };
        let (captures, what) = (self.captures.clone(), key.clone());
        let result = self
            .flights
            .join(key, || async move { captures.capture(&what).await })
            .await
            .map(|(result, shared)| result.map(|shot| Shot { shared, ..shot }))
            .unwrap_or_else(|| Err(Error::Failed("the capture task failed".into())));
        if let (Err(_), Some(slot)) = (&result, slot) {
            self.throttle.release(slot);
        }
        result
    }
}

impl Captures {
    async fn capture(&self, key: &FlightKey) -> Result<Shot, Error> {
        let _pass = self.gate.enter().await.ok_or(Error::Busy)?;
        let hypervisor = self.capturer.hypervisor();
        let woken = key.wake && hypervisor.wake(&key.domain).await?;
        if woken {
            tokio::time::sleep(self.wake_settle).await;
        }
        let capture = capture::Request {
            domain: key.domain.clone(),
            screen: 0,
            output: self.output,
            // QEMU's VNC server may take up to 3 s to send a redraw that
            // follows a long idle spell: after a wake-up, ask QEMU itself.
            fresh: key.fresh || woken,
        };
        Ok(self.capturer.capture(&capture).await?)
    }
}
