//! Support shared by the integration tests.
#![allow(dead_code)]

pub mod cli;
pub mod fixtures;
pub mod host;
pub mod image_check;
