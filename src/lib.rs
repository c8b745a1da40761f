//! vmshot: screenshots of libvirt/QEMU guest consoles, as JPEG with SHA-256.
//!
//! Layers, from the bottom: `hypervisor` (the only code that touches libvirt),
//! `capture` (decode, encode, hash), `service` (what every API calls: limits,
//! throttling, wake-up; it keeps what must outlive a restart in `store`),
//! and on top the `cli` and the daemon's `server` with
//! one module per cloud dialect under `api`. `scripts/check-layers.sh` keeps
//! the imports pointing down. Public only what the integration tests and the
//! benchmarks use (`capture`, `hypervisor`, `record`, the signing helper in
//! `api`, the action calls of `store`, `service` for the recording tests), and `cli` for the binary; the rest is the
//! crate's own, so dead code warns.

pub mod api;
pub(crate) mod auth;
pub mod capture;
pub mod cli;
pub(crate) mod config;
pub(crate) mod daemon;
pub(crate) mod diagnose;
pub(crate) mod frame;
/// The fuzz targets' entry points (`fuzz/`): not an API.
#[doc(hidden)]
pub mod fuzzing;
pub mod hypervisor;
pub mod record;
pub(crate) mod serial;
pub(crate) mod server;
pub mod service;
pub mod store;
