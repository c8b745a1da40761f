//! What the fuzz targets (`fuzz/`, through `crate::fuzzing`) hand each
//! dialect: one request carved out of arbitrary bytes, in the shape of an
//! HTTP/1 head (`METHOD TARGET`, `Name: value` lines, an empty line, the
//! body), so that a seed is a captured request as it went over the wire and
//! the fuzzer mutates it where a client could. Each dialect runs every parser
//! it applies to untrusted input on it (its `fuzz` module); a parser may
//! refuse anything, but must not panic, loop or allocate without bound.

use std::sync::OnceLock;

use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue};

use super::session::{self, CookieKey, CookieSpec, Session};
use super::HostNames;

/// A request as the fuzzer wrote it. Parsers that read the raw request line
/// (signature checks) get `path` and `query`; those that read axum's view get
/// `parts`, which is `None` when the line is not one hyper would accept.
pub(crate) struct Request<'a> {
    pub method: &'a str,
    /// The path as on the wire, before any `?`.
    pub path: &'a str,
    /// Without `?`; empty when there is none.
    pub query: &'a str,
    pub headers: HeaderMap,
    pub body: &'a [u8],
    pub parts: Option<Parts>,
}

/// At most this many header lines are taken: hyper's own default limit.
const MAX_HEADERS: usize = 100;

impl<'a> Request<'a> {
    pub(crate) fn carve(data: &'a [u8]) -> Self {
        // The head ends at the first empty line, `\n\n` or `\r\n\r\n`.
        let end = [&b"\n\n"[..], b"\n\r\n"]
            .into_iter()
            .filter_map(|sep| find(data, sep).map(|at| (at, at + sep.len())))
            .min();
        let (head, body) = match end {
            Some((at, from)) => (&data[..at], &data[from..]),
            None => (data, &b""[..]),
        };
        let mut lines = head
            .split(|b| *b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let line = std::str::from_utf8(lines.next().unwrap_or_default()).unwrap_or("");
        // `METHOD TARGET`, and an `HTTP/1.1` after it is let be.
        let (method, rest) = line.split_once(' ').unwrap_or((line, "/"));
        let target = rest.split(' ').next().unwrap_or_default();
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut headers = HeaderMap::new();
        for l in lines.take(MAX_HEADERS) {
            let Some(colon) = l.iter().position(|b| *b == b':') else {
                continue;
            };
            let value = l[colon + 1..].trim_ascii();
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(&l[..colon]),
                HeaderValue::from_bytes(value),
            ) {
                headers.append(name, value);
            }
        }
        let parts = axum::http::Request::builder()
            .method(method)
            .uri(target)
            .body(())
            .ok()
            .map(|r| {
                let (mut parts, ()) = r.into_parts();
                parts.headers = headers.clone();
                parts
            });
        Self {
            method,
            path,
            query,
            headers,
            body,
            parts,
        }
    }

    /// A header's value as text, the way the dialects read one.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The names a signed request's `Host` is checked against, built once: it
/// reads this machine's host name.
pub(crate) fn hosts() -> &'static HostNames {
    static HOSTS: OnceLock<HostNames> = OnceLock::new();
    HOSTS.get_or_init(|| HostNames::new(&["vmshot.example".into(), "127.0.0.1:8080".into()]))
}

/// The key that checks session cookies in the targets; the seeds carry
/// cookies sealed with it.
pub(crate) const COOKIE_KEY: [u8; 32] = [7; 32];
/// The time sessions are checked at: the seeds' cookies are valid then.
pub(crate) const SESSION_TIME: u64 = 1_700_000_100;

/// The session a request's cookie of `spec` carries, as the dialects read
/// cookies: every `Cookie` header, one value of that name, then the MAC,
/// then the body, then the grant of the seeds' user.
pub(crate) fn session(r: &Request<'_>, spec: &'static CookieSpec) -> Option<Session> {
    let cookies = r
        .headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let value = session::from_cookie_headers(spec, cookies).ok()?;
    let key = CookieKey::from_bytes(spec, &COOKIE_KEY).expect("a 32-byte key");
    let opened = Session::open(&key, value, SESSION_TIME).ok()?;
    let _ = opened.check_grant(&[0; 32]);
    Some(opened)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// Each says whether the request's signature or session held, for the test
// that the signed seeds still do.

pub(crate) fn alibaba(data: &[u8]) -> bool {
    super::alibaba::fuzz::request(&Request::carve(data))
}

pub(crate) fn aws(data: &[u8]) -> bool {
    super::aws::fuzz::request(&Request::carve(data))
}

pub(crate) fn huawei(data: &[u8]) -> bool {
    super::huawei::fuzz::request(&Request::carve(data))
}

pub(crate) fn marketplace(data: &[u8]) {
    super::marketplace::fuzz::request(&Request::carve(data));
}

pub(crate) fn nova(data: &[u8]) {
    super::nova::fuzz::request(&Request::carve(data));
}

pub(crate) fn oracle(data: &[u8]) -> bool {
    super::oracle::fuzz::request(&Request::carve(data))
}

pub(crate) fn native(data: &[u8]) -> bool {
    super::native::fuzz::request(&Request::carve(data))
}

/// The secret files the dialects read at start: key files, the users file
/// and token files, each under every dialect's rules.
pub(crate) fn credentials(text: &str) {
    let _ = crate::auth::KeyStore::parse(text);
    let _ = super::oracle_credentials::Users::from_toml(text);
    super::huawei::fuzz::token_file(text);
    super::marketplace::fuzz::token_file(text);
    super::nova::fuzz::token_file(text);
}

/// The configuration file, and every dialect's section of it.
pub(crate) fn config(text: &str) {
    if let Ok(config) = crate::config::Config::parse(text) {
        let _ = super::registry::check(&config.dialects);
    }
}

/// Inputs for the property tests of the dialects' parsers.
#[cfg(test)]
pub(crate) mod strategies {
    use proptest::prelude::*;
    use serde_json::Value;

    /// Any JSON document, small: objects and arrays nested three deep.
    pub fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z_-]{0,12}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A JSON body: a document, or bytes that are not quite one.
    pub fn body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            json().prop_map(|v| v.to_string().into_bytes()),
            proptest::collection::vec(any::<u8>(), 0..40),
        ]
    }

    /// `name=value&…` with escapes, separators and odd bytes often.
    pub fn query() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            "[a-z_-]{1,8}=[a-zA-Z0-9 :.+-]{0,12}",
            "%[0-9a-fA-F]{0,2}",
            Just("&".to_owned()),
            Just("=".to_owned()),
            "\\PC{0,4}",
        ];
        proptest::collection::vec(piece, 0..10).prop_map(|p| p.concat())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_captured_request_is_carved_as_it_was_sent() {
        let r = Request::carve(
            b"POST /a/b?x=1&y=2 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nX-A: 2\r\n\r\nbody",
        );
        assert_eq!((r.method, r.path, r.query), ("POST", "/a/b", "x=1&y=2"));
        assert_eq!(r.body, b"body");
        assert_eq!(r.header("host"), Some("h"));
        assert_eq!(r.headers.get_all("x-a").iter().count(), 2);
        let r = Request::carve(b"GET /v?a=1\nHost: h\n\nbody");
        assert_eq!((r.query, r.body), ("a=1", &b"body"[..]));
        assert!(r.parts.is_some_and(|p| p.uri.query() == Some("a=1")));
    }

    /// The seeds named `signed-*` (fuzz/seeds.py) carry a signature or a
    /// session the targets accept, so that the fuzzer starts past the check
    /// and its mutations reach both sides of it.
    #[test]
    fn the_signed_seeds_are_accepted() {
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        type Accepts = fn(&[u8]) -> bool;
        let targets: [(&str, Accepts); 5] = [
            ("alibaba", alibaba),
            ("aws", aws),
            ("huawei", huawei),
            ("oracle", oracle),
            ("native", native),
        ];
        for (name, target) in targets {
            let mut signed = 0;
            for file in std::fs::read_dir(corpus.join(name)).unwrap() {
                let path = file.unwrap().path();
                if path
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("signed-")
                {
                    let data = std::fs::read(&path).unwrap();
                    assert!(target(&data), "{} is refused", path.display());
                    signed += 1;
                }
            }
            assert!(signed > 0, "{name} has no signed seed");
        }
    }
}
