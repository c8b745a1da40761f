//! vmshot: screenshots of libvirt/QEMU guest consoles, as JPEG with SHA-256.
//!
//! Layers, from the bottom: `hypervisor` (the only code that touches libvirt),
//! `capture` (decode, encode, hash), and the `cli` on top.

pub mod capture;
pub mod cli;
pub mod hypervisor;
