//! OpenStack Nova's compute API, the os-instance-actions part: the pure
//! pieces (microversions, bodies, paths and queries, tokens) before they are
//! wired to the store and registered.
#![allow(dead_code)]

mod microversion;
mod params;
mod token;
mod wire;
