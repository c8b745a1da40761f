//! Everything the Huawei dialect parses of a request, for the fuzz target
//! `huawei` (see `api::fuzzing`): the route, ListScreenRecords' query, the
//! JSON bodies, `X-Auth-Token` against the documented token file, and the
//! `SDK-HMAC-SHA256` signature, checked with the probe's key at any skew so
//! that mutations of a signed request reach every check after the clock.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;

use super::{params, signing, TOKEN_RULES};
use crate::api::fuzzing::{hosts, Request};
use crate::auth::StaticTokens;

/// The secret of the unit tests' probe vectors (`huawei_probe.py`).
const SECRET: &str = "exampleSecretKey0000000000000000000000000";
/// 2026-11-22T07:00:14Z, when the probe signed them.
const PROBE_TIME: u64 = 1_795_330_814;
/// A century either way: any date the fuzzer writes is on time.
const ANY_SKEW: Duration = Duration::from_secs(100 * 366 * 24 * 3600);

/// Whether the signature held.
pub(in crate::api) fn request(r: &Request<'_>) -> bool {
    static TOKENS: OnceLock<StaticTokens> = OnceLock::new();
    let tokens = TOKENS.get_or_init(|| {
        let text = include_str!("../../../systemd/huawei-tokens.toml");
        StaticTokens::parse(text, TOKEN_RULES).expect("the documented token file parses")
    });
    for prefix in ["", "/workspace"] {
        let _ = params::route(r.method, r.path.strip_prefix(prefix).unwrap_or(r.path));
    }
    let now = OffsetDateTime::from_unix_timestamp(PROBE_TIME as i64).expect("a valid time");
    let _ = params::list_query(r.query, now);
    let content_type = r.header("content-type");
    let _ = params::start(content_type, r.body);
    let _ = params::batch_delete(content_type, r.body);
    if let Some(token) = r.header("x-auth-token") {
        let _ = tokens.holder(token);
    }
    let request = signing::Request {
        method: r.method,
        path: r.path,
        query: r.query,
        headers: &r.headers,
        body: r.body,
    };
    let at = UNIX_EPOCH + Duration::from_secs(PROBE_TIME);
    let verified = signing::verify(&request, at, ANY_SKEW, |_| Some(SECRET));
    if let Ok(verified) = &verified {
        hosts().accepts(&verified.host, None);
    }
    let _ = signing::verify(&request, SystemTime::UNIX_EPOCH, Duration::ZERO, |_| {
        Some(SECRET)
    });
    verified.is_ok()
}

/// A token file as this dialect reads one.
pub(in crate::api) fn token_file(text: &str) {
    let _ = StaticTokens::parse(text, TOKEN_RULES);
}
