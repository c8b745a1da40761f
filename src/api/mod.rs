//! The cloud dialects vmshot speaks. Each parses its own wire format into a core
//! request, checks who asks, calls the core service, and renders its own answer;
//! none talks to libvirt.

pub mod alibaba;
pub mod aws;
mod host;
mod request;

pub use host::HostNames;
pub use request::{AmbiguousLength, Answered, LocalAddr};
