//! Everything the Oracle dialect parses of a request, for the fuzz target
//! `oracle` (see `api::fuzzing`): the `nimbula` session cookie, the
//! authenticate body (up to the password check, whose Argon2 would cost
//! the fuzzer 30 ms a run), the object names in every path it serves, the
//! create and update bodies, the `Host` it builds URIs from and the `Range`
//! of a media download.

use super::wire::{self, ObjectName};
use super::{params, Credentials, CAPTURES, CONSOLE, MEDIA};
use crate::api::fuzzing::{session, Request};
use crate::api::range::Span;
use crate::api::session::ORACLE;

const DOMAIN: &str = "vmshot";

/// Whether the session cookie held.
pub(in crate::api) fn request(r: &Request<'_>) -> bool {
    let held = session(r, &ORACLE).is_some();
    let _ = wire::is_json_media(r.header("content-type"));
    let _ = r.header("host").map(wire::valid_host);
    if let Ok(asked) = serde_json::from_slice::<Credentials>(r.body) {
        let _ = wire::parse_container(&asked.user);
    }
    for prefix in [CONSOLE, MEDIA, CAPTURES] {
        if let Some(rest) = r.path.strip_prefix(prefix) {
            let _ = ObjectName::parse_in(rest, DOMAIN);
            let _ = wire::parse_container(rest);
        }
    }
    if let Ok(name) = ObjectName::parse(r.path) {
        let child = name.child_in(DOMAIN, "user", "0");
        // What a capture's name is rendered as is read back as that name.
        assert_eq!(ObjectName::parse(&child.to_string()).ok(), Some(child));
        let _ = name.relative();
    }
    if let Ok(create) = params::parse_create(r.body, DOMAIN) {
        let instance = create.instance.to_string();
        let _ = params::parse_update(r.body, r.path, &instance, &create.account);
    }
    let _ = Span::of(r.header("range"), r.body.len() as u64);
    held
}
