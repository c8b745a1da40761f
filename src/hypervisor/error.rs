//! What can go wrong between vmshot and libvirt, typed so that a caller can tell
//! a missing domain from a dead libvirtd without reading message strings.

use std::fmt;
use std::time::Duration;

/// The run state of a domain, as libvirt reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DomainState {
    Running,
    Blocked,
    Paused,
    Shutdown,
    Shutoff,
    Crashed,
    PmSuspended,
    NoState,
}

impl DomainState {
    /// Whether QEMU is up and holds a console that can be captured. A paused
    /// guest still has its last frame on screen, and that frame is often the
    /// answer to "why did it stop". So has a crashed one: QEMU guests are only
    /// left `crashed` by `<on_crash>preserve</on_crash>`, which keeps QEMU
    /// paused on the panic screen (any other action stops or restarts them).
    pub fn has_console(self) -> bool {
        matches!(
            self,
            Self::Running | Self::Blocked | Self::Paused | Self::Crashed
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Blocked => "blocked",
            Self::Paused => "paused",
            Self::Shutdown => "shutting down",
            Self::Shutoff => "shut off",
            Self::Crashed => "crashed",
            Self::PmSuspended => "suspended (pmsuspended)",
            Self::NoState => "in no state",
        }
    }
}

impl fmt::Display for DomainState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach libvirt at {uri}: {reason}")]
    Unreachable { uri: String, reason: String },

    #[error("there is no domain '{domain}' on {uri}")]
    NotFound { domain: String, uri: String },

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

    #[error("{what} did not finish within {}", secs(*.after))]
    Timeout { what: String, after: Duration },

    /// An earlier call on the domain outlived its deadline and has not
    /// returned (QEMU stopped or wedged): calls on it fail at once.
    #[error("domain '{domain}' has not answered a call for {}; it is asked again once that call returns", secs(*.since))]
    Hung { domain: String, since: Duration },

    #[error("the screenshot of domain '{domain}' is larger than the {limit}-byte limit")]
    PayloadTooLarge { domain: String, limit: usize },

    #[error("libvirt could not {what}: {message}")]
    Libvirt { what: String, message: String },
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

impl Error {
    pub(crate) fn libvirt(what: impl Into<String>, err: &virt::error::Error) -> Self {
        Self::Libvirt {
            what: what.into(),
            message: err.message().to_owned(),
        }
    }
}
