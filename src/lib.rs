//! vmshot: screenshots of libvirt/QEMU guest consoles, as JPEG with SHA-256.
//!
//! Layers, from the bottom: `hypervisor` (the only code that touches libvirt),
//! `capture` (decode, encode, hash), `service` (what every API calls: limits,
//! throttling, wake-up), and on top the `cli` and the daemon's `server` with
//! one module per cloud dialect under `api`.

pub mod api;
pub mod auth;
pub mod capture;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod frame;
pub mod hypervisor;
pub mod server;
pub mod service;
