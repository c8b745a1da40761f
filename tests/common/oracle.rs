//! Oracle Compute Classic's calls as a client makes them: `POST
//! /authenticate/` for a `nimbula` cookie, then calls carrying it, in
//! Oracle's media type.

use serde_json::{json, Value};

use super::daemon::Daemon;
use super::http::{send, Reply};

pub const MEDIA_TYPE: &str = "application/oracle-compute-v3+json";

/// One call with the cookie (if any) and Oracle's media type.
pub fn call(
    d: &Daemon,
    cookie: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Reply {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let cookie = cookie.map(|c| format!("nimbula={c}"));
    let mut headers = vec![("Accept", MEDIA_TYPE)];
    if !body.is_empty() {
        headers.push(("Content-Type", MEDIA_TYPE));
    }
    if let Some(c) = &cookie {
        headers.push(("Cookie", c));
    }
    send(d.addr, method, path, &headers, body.as_bytes())
}

/// The nimbula cookie's value for `user`, or the failed reply.
pub fn authenticate(d: &Daemon, user: &str, password: &str) -> Result<String, Reply> {
    let reply = call(
        d,
        None,
        "POST",
        "/authenticate/",
        Some(json!({"user": user, "password": password})),
    );
    if reply.status != 204 {
        return Err(reply);
    }
    let set = reply.header("Set-Cookie").expect("Set-Cookie").to_owned();
    let value = set
        .strip_prefix("nimbula=")
        .and_then(|v| v.split(';').next())
        .expect("a nimbula cookie");
    Ok(value.to_owned())
}

/// A capture of `instance` (its whole name) asked for.
pub fn create(d: &Daemon, cookie: &str, instance: &str) -> Reply {
    call(
        d,
        Some(cookie),
        "POST",
        "/console/screencapture/",
        Some(json!({"instance": instance, "cancel": false})),
    )
}
