//! Living under systemd.

pub mod notify;
