//! Living as a host daemon: systemd's notify protocol, and the allocator's tuning.

pub mod memory;
pub mod notify;
