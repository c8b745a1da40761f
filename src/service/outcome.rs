//! How a call ended, in words every dialect shares: the metrics' `outcome`
//! label and the access log's. The core's error decides it, never a
//! dialect's wire code.

use super::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Ok,
    /// The request itself is wrong: a missing or malformed parameter.
    ClientError,
    /// Who asks could not be established: key, signature, timestamp, nonce.
    AuthError,
    NotFound,
    /// Refused for the per-domain interval.
    Throttled,
    /// Too much in progress on this host.
    Busy,
    /// libvirt or the guest did not answer in time, or not at all.
    Unavailable,
    Internal,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::ClientError => "client_error",
            Self::AuthError => "auth_error",
            Self::NotFound => "not_found",
            Self::Throttled => "throttled",
            Self::Busy => "busy",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }
}

impl Error {
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::NotFound { .. } | Self::NoSuchUpload { .. } => Outcome::NotFound,
            // The guest is there but cannot be shown: the caller asked for
            // something this domain cannot give now.
            Self::NotRunning { .. }
            | Self::NoDisplay { .. }
            | Self::NoSuchScreen { .. }
            | Self::NoSuchMarker { .. }
            | Self::Conflict { .. }
            | Self::Invalid { .. }
            | Self::NoConsoleLog { .. } => Outcome::ClientError,
            Self::NoSuchRecording { .. } => Outcome::NotFound,
            Self::OverBudget { .. } => Outcome::Busy,
            Self::Throttled { .. } => Outcome::Throttled,
            Self::Busy => Outcome::Busy,
            Self::Timeout(_) | Self::Unavailable { .. } | Self::StorageFull { .. } => {
                Outcome::Unavailable
            }
            Self::TooLarge { .. }
            | Self::Undecodable { .. }
            | Self::Libvirt { .. }
            | Self::Failed { .. } => Outcome::Internal,
        }
    }
}
