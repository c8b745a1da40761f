//! Screen recordings of guest consoles: H.264 (OpenH264) in fragmented MP4.
//!
//! A leaf beside `capture`: it takes RGB pixels and timestamps and writes a
//! file, and knows nothing of libvirt. One fragment (`moof` + `mdat`) a frame,
//! so a file cut anywhere plays up to its last whole fragment, and
//! [`truncate_to_fragments`] trims the torn tail at restart.

mod encode;
mod mp4;

pub use encode::{VideoWriter, Written};
pub use mp4::truncate_to_fragments;
