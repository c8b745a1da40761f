//! Support shared by the integration tests.
#![allow(dead_code)]

pub mod cli;
pub mod daemon;
pub mod events_guest;
pub mod faulty;
pub mod fixtures;
pub mod host;
pub mod http;
pub mod image_check;
pub mod matrix;
pub mod nova;
pub mod oracle;
pub mod owned;
pub mod page;
pub mod s3;
pub mod sdk;
pub mod signing;
pub mod tls;
pub mod users;
