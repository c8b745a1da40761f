//! The cloud dialects vmshot speaks. Each parses its own wire format into a core
//! request, authenticates the caller into a principal, calls the core service,
//! and renders its own answer; none talks to libvirt. What every request needs
//! (request id, limits, deadline, log, metrics) is the `pipeline`'s; which
//! dialects there are is the `registry`'s.

pub mod alibaba;
mod aws;
pub(crate) mod fuzzing;
mod host;
mod huawei;
mod marketplace;
mod native;
mod nova;
mod oracle;
pub(crate) mod pipeline;
mod range;
pub(crate) mod registry;
mod request;
mod session;
mod ui;

pub use host::HostNames;
/// The Oracle dialect's users file, for `vmshot hash-password`.
pub(crate) use oracle::credentials as oracle_credentials;
pub use request::{AmbiguousLength, Answered, LocalAddr};
