//! Everything the native API and the live page parse of a request, for the
//! fuzz target `native` (see `api::fuzzing`): the route and its path
//! parameters, the query (and the log-in form, which is read the same way),
//! the session cookie of `access = "users"` against the documented users
//! file, the CSRF check of a POST, and a file's `Range`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::access::{Access, Mode, UI_COOKIE};
use super::{decode, routes, Query};
use crate::api::fuzzing::{session, Request, COOKIE_KEY};
use crate::api::oracle_credentials::Users;
use crate::api::range::Span;
use crate::api::session::{CookieKey, Policy};

/// Whether the session let the caller in.
pub(in crate::api) fn request(r: &Request<'_>) -> bool {
    static ACCESS: OnceLock<Access> = OnceLock::new();
    let access = ACCESS.get_or_init(|| {
        let text = include_str!("../../../systemd/oracle-credentials.toml");
        Access::new(Mode::Users {
            users: Arc::new(Users::from_toml(text).expect("the documented users file parses")),
            key: CookieKey::from_bytes(&UI_COOKIE, &COOKIE_KEY).expect("a 32-byte key"),
            policy: Policy {
                lifetime: Duration::from_secs(1800),
                cap: Duration::from_secs(10_800),
            },
        })
    });
    if let Ok((_, params)) = routes::find(r.method, r.path) {
        for p in params {
            let _ = decode(p);
        }
    }
    let query = (!r.query.is_empty()).then_some(r.query);
    if let Ok(q) = Query::parse(query) {
        let _ = (q.flag("fresh"), q.number("width", 64, 640));
    }
    if let Ok(form) = std::str::from_utf8(r.body) {
        let _ = Query::parse(Some(form));
    }
    let _ = session(r, &UI_COOKIE);
    let caller = r.parts.as_ref().and_then(|parts| {
        let caller = access.caller(parts).ok()?;
        let _ = access.check_post(parts, &caller);
        Some(caller)
    });
    let _ = Span::of(r.header("range"), r.body.len() as u64);
    caller.is_some()
}
