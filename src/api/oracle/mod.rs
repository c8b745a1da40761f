//! Oracle Compute Classic: asynchronous screen capture requests
//! (`/console/screencapture/`) behind a `nimbula` session cookie from
//! `POST /authenticate/`. Built as plain modules first; the routes, the job
//! runner and the registry line come with the job store.
#![allow(dead_code)]

mod config;
mod credentials;
mod params;
mod session;
mod wire;
