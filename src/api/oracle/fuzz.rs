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
        // What a name is written as is read back as that name.
        assert_eq!(ObjectName::parse(&name.to_string()).as_ref(), Ok(&name));
        let _ = name.relative();
    }
    if let Ok(create) = params::parse_create(r.body, DOMAIN) {
        // A capture is created only under a name it can be found by again.
        let user = "jack.jones@example.com";
        let id = "5b8c0d3e-0000-4000-8000-000000000001";
        if let Ok(name) = params::capture_name(&create.instance, DOMAIN, user, id) {
            let found = ObjectName::parse_in(&name.to_string(), DOMAIN);
            assert_eq!(found.as_ref(), Ok(&name), "a capture named beyond reach");
        }
        let instance = create.instance.to_string();
        let _ = params::parse_update(r.body, r.path, &instance, &create.account);
    }
    let _ = Span::of(r.header("range"), r.body.len() as u64);
    held
}
