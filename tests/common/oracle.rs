//! Oracle Compute Classic's calls as a client makes them: `POST
//! /authenticate/` for a `nimbula` cookie, then calls carrying it, in
//! Oracle's media type.

use std::net::SocketAddr;

use serde_json::{json, Value};

use super::daemon::Daemon;
use super::http::{send, try_send, Reply};

pub const MEDIA_TYPE: &str = "application/oracle-compute-v3+json";

/// One call with the cookie (if any) and Oracle's media type.
pub fn call(
    d: &Daemon,
    cookie: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Reply {
    let (headers, body) = parts(cookie, body);
    send(d.addr, method, path, &borrowed(&headers), body.as_bytes())
}

/// `call` to a daemon that may die at any moment (`http::try_send`): `None`
/// unless a whole reply came back.
pub fn try_call(
    addr: SocketAddr,
    cookie: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Option<Reply> {
    let (headers, body) = parts(cookie, body);
    try_send(addr, method, path, &borrowed(&headers), body.as_bytes())
}

/// The headers and body of a call: Oracle's media type, the cookie if any.
fn parts(cookie: Option<&str>, body: Option<Value>) -> (Vec<(&'static str, String)>, String) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut headers = vec![("Accept", MEDIA_TYPE.to_owned())];
    if !body.is_empty() {
        headers.push(("Content-Type", MEDIA_TYPE.to_owned()));
    }
    if let Some(c) = cookie {
        headers.push(("Cookie", format!("nimbula={c}")));
    }
    (headers, body)
}

fn borrowed<'a>(headers: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    headers.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The nimbula cookie an `/authenticate/` reply set, if it set one.
pub fn cookie_of(reply: &Reply) -> Option<String> {
    let set = reply.header("Set-Cookie")?;
    Some(set.strip_prefix("nimbula=")?.split(';').next()?.to_owned())
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
    Ok(cookie_of(&reply).expect("a nimbula cookie"))
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
