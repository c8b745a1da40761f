//! Checking `SDK-HMAC-SHA256`, the AK/SK signature `huaweicloudsdkcore`
//! (3.1.219, `signer/signer.py`) puts on every call:
//!
//! ```text
//!   canonical = METHOD \n URI/ \n sorted query \n name:value\n… \n signed;names \n hex(sha256(body))
//!   string to sign = "SDK-HMAC-SHA256" \n X-Sdk-Date \n hex(sha256(canonical))
//!   Authorization: SDK-HMAC-SHA256 Access=AK, SignedHeaders=a;b, Signature=hex(hmac(SK, string to sign))
//! ```
//!
//! The expected signature is rebuilt from the request as received. The SDK
//! has no nonce: the caller keeps the signature as the replay key. Stricter
//! than the SDK needs in one place: a body is always hashed (its
//! `X-Sdk-Content-Sha256: UNSIGNED-PAYLOAD`, which the SDK sends only for
//! bodies that are not JSON, is refused).

use std::time::{Duration, SystemTime};

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

pub const ALGORITHM: &str = "SDK-HMAC-SHA256";
/// The other ways the SDK can sign, named in the refusal.
const OTHERS: [&str; 4] = [
    "SDK-HMAC-SM3",
    "SDK-ECDSA-P256-SHA256",
    "SDK-SM2-SM3",
    "V11-HMAC-SHA256",
];
pub const EMPTY_HASH: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Far above what the SDK sends.
const MAX_AUTHORIZATION: usize = 4096;
pub const MAX_QUERY: usize = 16 * 1024;
pub const MAX_QUERY_PARAMS: usize = 64;
pub const MAX_PATH: usize = 2048;
const MAX_SIGNED_HEADERS: usize = 32;
const MAX_KEY_ID: usize = 128;

/// The request as it came in, before anything was decoded.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The path as on the request line, still percent-encoded.
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// A request whose signature holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub access_key: String,
    /// The hex signature: the replay key.
    pub signature: String,
    /// The signed `Host`, for the caller to check it names this host.
    pub host: String,
}

/// Why a signature was refused. Messages name what is wrong, never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigError {
    /// No `Authorization` header.
    Missing,
    /// Another algorithm than SDK-HMAC-SHA256.
    Unsupported(String),
    /// The header's parts, a signed header or the query are malformed.
    Malformed(String),
    UnknownKey,
    /// `X-Sdk-Date` is not `yyyyMMddTHHmmssZ`.
    DateFormat,
    /// `X-Sdk-Date` is further than the skew from this host's clock.
    Expired {
        skew_secs: u64,
    },
    /// `X-Sdk-Content-Sha256` is not the body's hash (or says UNSIGNED-PAYLOAD).
    PayloadHash,
    /// The canonical request and string to sign are for the log only.
    Mismatch {
        canonical_request: String,
        string_to_sign: String,
    },
}

impl SigError {
    /// The words after "Incorrect IAM authentication information: ", as
    /// Huawei's API gateway says them.
    pub fn message(&self) -> String {
        match self {
            Self::Missing => "no Authorization header (AK/SK signature) or X-Auth-Token".into(),
            Self::Unsupported(alg) => format!(
                "the signing algorithm '{alg}' is not supported here: sign with {ALGORITHM}"
            ),
            Self::Malformed(why) => why.clone(),
            Self::UnknownKey => "ak not exist".into(),
            Self::DateFormat => "X-Sdk-Date must be yyyyMMddTHHmmssZ (UTC)".into(),
            Self::Expired { skew_secs } => format!(
                "X-Sdk-Date is more than {} min from this host's clock",
                skew_secs / 60
            ),
            Self::PayloadHash => "X-Sdk-Content-Sha256 is not the SHA-256 of the body".into(),
            Self::Mismatch { .. } => "verify aksk signature fail".into(),
        }
    }
}

fn malformed(why: impl Into<String>) -> SigError {
    SigError::Malformed(why.into())
}

/// The parts of `Authorization`.
struct Parts {
    access_key: String,
    signed_headers: Vec<String>,
    signature: String,
}

/// Checks the signature of `request` at `now`; `secret_for` gives the SK of
/// an AK, `None` for an unknown one.
pub fn verify<S: AsRef<[u8]>>(
    request: &Request<'_>,
    now: SystemTime,
    max_skew: Duration,
    secret_for: impl FnOnce(&str) -> Option<S>,
) -> Result<Verified, SigError> {
    if request.path.len() > MAX_PATH || request.query.len() > MAX_QUERY {
        return Err(malformed("the path or query is too long"));
    }
    let authorization = match single(request.headers, "authorization")? {
        None => return Err(SigError::Missing),
        Some(v) => v,
    };
    let parts = parse_authorization(authorization)?;
    for needed in ["host", "x-sdk-date"] {
        if !parts.signed_headers.iter().any(|h| h == needed) {
            return Err(malformed(format!("'{needed}' must be a signed header")));
        }
    }
    if request.headers.contains_key("x-project-id")
        && !parts.signed_headers.iter().any(|h| h == "x-project-id")
    {
        return Err(malformed("'x-project-id' must be a signed header"));
    }
    let date = single(request.headers, "x-sdk-date")?.ok_or(SigError::DateFormat)?;
    check_date(date, now, max_skew)?;
    let payload = payload_hash(request)?;
    let canonical_request = canonical_request(request, &parts.signed_headers, &payload)?;
    let secret = secret_for(&parts.access_key).ok_or(SigError::UnknownKey)?;
    let string_to_sign = format!(
        "{ALGORITHM}\n{date}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_ref()).expect("any key length");
    mac.update(string_to_sign.as_bytes());
    let given = hex::decode(&parts.signature).map_err(|_| malformed("bad Signature"))?;
    if mac.verify_slice(&given).is_err() {
        return Err(SigError::Mismatch {
            canonical_request,
            string_to_sign,
        });
    }
    let host = single(request.headers, "host")?
        .ok_or_else(|| malformed("the signed header 'host' is not in the request"))?;
    Ok(Verified {
        access_key: parts.access_key,
        signature: parts.signature,
        host: host.to_owned(),
    })
}

/// A header that may come at most once, as text.
fn single<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, SigError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(malformed(format!("the header '{name}' is given twice")));
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| malformed(format!("the header '{name}' is not text")))
}

fn parse_authorization(value: &str) -> Result<Parts, SigError> {
    if value.len() > MAX_AUTHORIZATION {
        return Err(malformed("the Authorization header is too long"));
    }
    let (algorithm, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if algorithm != ALGORITHM {
        let known = OTHERS.contains(&algorithm) || algorithm.starts_with("SDK-");
        let named = if known || algorithm.len() <= 32 {
            algorithm
        } else {
            "?"
        };
        return Err(SigError::Unsupported(named.to_owned()));
    }
    let (mut access, mut signed, mut signature) = (None, None, None);
    for field in rest.split(',') {
        let (name, value) = field.trim().split_once('=').ok_or_else(|| {
            malformed("Authorization must be Access=…, SignedHeaders=…, Signature=…")
        })?;
        let slot = match name {
            "Access" => &mut access,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut signature,
            _ => {
                return Err(malformed(format!(
                    "unknown Authorization part '{name:.32}'"
                )))
            }
        };
        if slot.replace(value.to_owned()).is_some() {
            return Err(malformed(format!("Authorization gives {name} twice")));
        }
    }
    let access = access
        .filter(|a| !a.is_empty() && a.len() <= MAX_KEY_ID)
        .ok_or_else(|| malformed("Authorization needs Access=<AK>"))?;
    let signed = signed.ok_or_else(|| malformed("Authorization needs SignedHeaders"))?;
    let signature = signature
        .filter(|s| s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .ok_or_else(|| malformed("Signature must be 64 lowercase hex digits"))?;
    let signed_headers: Vec<String> = signed.split(';').map(str::to_owned).collect();
    let well_formed = signed_headers.len() <= MAX_SIGNED_HEADERS
        && signed_headers.windows(2).all(|w| w[0] < w[1])
        && signed_headers.iter().all(|h| {
            !h.is_empty()
                && h.len() <= 64
                && h.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if !well_formed {
        return Err(malformed(
            "SignedHeaders must be distinct lower-case header names, sorted, separated by ';'",
        ));
    }
    Ok(Parts {
        access_key: access,
        signed_headers,
        signature,
    })
}

/// `yyyyMMddTHHmmssZ`, as the SDK writes `datetime.utcnow()`.
pub fn parse_date(value: &str) -> Option<OffsetDateTime> {
    let b = value.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let s = value.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let month = time::Month::try_from(digits(4..6)? as u8).ok()?;
    let date = time::Date::from_calendar_date(digits(0..4)? as i32, month, digits(6..8)? as u8);
    let time = time::Time::from_hms(
        digits(9..11)? as u8,
        digits(11..13)? as u8,
        digits(13..15)? as u8,
    );
    Some(date.ok()?.with_time(time.ok()?).assume_utc())
}

fn check_date(value: &str, now: SystemTime, max_skew: Duration) -> Result<(), SigError> {
    let at = parse_date(value).ok_or(SigError::DateFormat)?;
    let now = OffsetDateTime::from(now);
    if (now - at).abs() > max_skew {
        return Err(SigError::Expired {
            skew_secs: max_skew.as_secs(),
        });
    }
    Ok(())
}

/// What the canonical request says of the body: its SHA-256, always.
fn payload_hash(request: &Request<'_>) -> Result<String, SigError> {
    if request.body.is_empty() {
        return Ok(EMPTY_HASH.to_owned());
    }
    let computed = hex::encode(Sha256::digest(request.body));
    match single(request.headers, "x-sdk-content-sha256")? {
        None => Ok(computed),
        // The SDK signs the header's own value: it must be the body's hash.
        Some(given) if given.eq_ignore_ascii_case(&computed) => Ok(given.to_owned()),
        Some(_) => Err(SigError::PayloadHash),
    }
}

fn canonical_request(
    request: &Request<'_>,
    signed_headers: &[String],
    payload: &str,
) -> Result<String, SigError> {
    let uri = canonical_uri(request.path)?;
    let query = canonical_query(&decode_query(request.query)?);
    let mut headers = String::new();
    for name in signed_headers {
        let value = single(request.headers, name)?.ok_or_else(|| {
            malformed(format!("the signed header '{name}' is not in the request"))
        })?;
        headers.push_str(name);
        headers.push(':');
        headers.push_str(value.trim());
        headers.push('\n');
    }
    Ok(format!(
        "{}\n{uri}\n{query}\n{headers}\n{}\n{payload}",
        request.method.to_ascii_uppercase(),
        signed_headers.join(";")
    ))
}

/// The path decoded, each segment re-encoded, with a trailing `/`.
fn canonical_uri(path: &str) -> Result<String, SigError> {
    let decoded =
        percent_decode(path).ok_or_else(|| malformed("the path is not validly encoded"))?;
    let mut uri = decoded.split('/').map(encode).collect::<Vec<_>>().join("/");
    if !uri.ends_with('/') {
        uri.push('/');
    }
    Ok(uri)
}

/// The query's pairs, decoded; a name without `=` has an empty value.
pub fn decode_query(raw: &str) -> Result<Vec<(String, String)>, SigError> {
    let bad = || malformed("the query is not validly encoded");
    let mut pairs = Vec::new();
    for part in raw.split('&').filter(|p| !p.is_empty()) {
        if pairs.len() == MAX_QUERY_PARAMS {
            return Err(malformed("too many query parameters"));
        }
        let (name, value) = part.split_once('=').unwrap_or((part, ""));
        pairs.push((
            percent_decode(name).ok_or_else(bad)?,
            percent_decode(value).ok_or_else(bad)?,
        ));
    }
    Ok(pairs)
}

/// Sorted by name then value, each re-encoded with `~` unreserved.
fn canonical_query(pairs: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = pairs.iter().collect();
    sorted.sort();
    sorted
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Python's `quote(s, safe='~')`: all but `A-Za-z0-9_.-~` as `%XX`.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Strict `%XX` decoding to UTF-8 (`+` stays `+`); `None` if malformed.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(
                u8::from_str_radix(hex, 16)
                    .ok()
                    .filter(|_| hex.bytes().all(|c| c.is_ascii_hexdigit()))?,
            );
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderName, HeaderValue};

    // tests/sdk/huawei_probe.py --date 20261122T070014Z --user-agent vmshot-probe --port 18931
    const AK: &str = "HPUAEXAMPLEAK0000001";
    const SK: &str = "exampleSecretKey0000000000000000000000000";
    const PROJECT: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
    const DATE: &str = "20261122T070014Z";
    const SHOW: &str =
        "/v2/0a1b2c3d4e5f60718293a4b5c6d7e8f9/screen-records/8c2f8a3e-5b1d-4f3c-9e7a-1d2c3b4a5f60";
    const SHOW_SIG: &str = "81263bf91464963f82421052f94827973b1a0ce6dd7d9337bb6d510e5e9f36f8";
    const LIST: &str = "/v2/0a1b2c3d4e5f60718293a4b5c6d7e8f9/screen-records";
    const LIST_QUERY: &str = "desktop_id=d-1&desktop_names=guest1%2Cguest%202&end_time=2026-11-22%2023%3A59%3A59&limit=5&offset=0&sort_field=start_time&sort_type=desc&start_time=2026-11-01%2000%3A00%3A00&status=UPLOAD_COMPLETED&type=FULL&username=alice";
    const LIST_SIG: &str = "ec05bd98583d8e3d43a536b755344e8ea4f22aeefb7575a0bb9802a75c707b09";
    const DELETE: &str = "/v2/0a1b2c3d4e5f60718293a4b5c6d7e8f9/screen-records/batch-delete";
    const DELETE_BODY: &str =
        r#"{"screen_records": [{"id": "8c2f8a3e-5b1d-4f3c-9e7a-1d2c3b4a5f60"}]}"#;
    const DELETE_SIG: &str = "4a645ec0c5818176593947008b5d3393001a18b2b494846898d2853b009ea7ac";

    fn headers(content_type: &str, signature: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let mut set = |name: &'static str, value: String| {
            h.append(
                HeaderName::from_static(name),
                HeaderValue::from_str(&value).unwrap(),
            );
        };
        set("user-agent", "vmshot-probe".into());
        set("accept-encoding", "gzip, deflate".into());
        set("accept", "*/*".into());
        set("content-type", content_type.into());
        set("x-sdk-date", DATE.into());
        set("x-project-id", PROJECT.into());
        set("host", "127.0.0.1:18931".into());
        set(
            "authorization",
            format!(
                "{ALGORITHM} Access={AK}, SignedHeaders=content-type;host;user-agent;x-project-id;x-sdk-date, Signature={signature}"
            ),
        );
        h
    }

    fn at_probe_time() -> SystemTime {
        parse_date(DATE).unwrap().into()
    }

    fn check(
        method: &str,
        path: &str,
        query: &str,
        h: &HeaderMap,
        body: &[u8],
    ) -> Result<Verified, SigError> {
        let request = Request {
            method,
            path,
            query,
            headers: h,
            body,
        };
        verify(&request, at_probe_time(), Duration::from_secs(900), |ak| {
            (ak == AK).then_some(SK)
        })
    }

    #[test]
    fn the_sdks_own_requests_verify() {
        let show = check("GET", SHOW, "", &headers("application/json", SHOW_SIG), b"").unwrap();
        assert_eq!(
            (
                show.access_key.as_str(),
                show.signature.as_str(),
                show.host.as_str()
            ),
            (AK, SHOW_SIG, "127.0.0.1:18931")
        );
        check(
            "GET",
            LIST,
            LIST_QUERY,
            &headers("application/json", LIST_SIG),
            b"",
        )
        .unwrap();
        let json = "application/json;charset=utf-8";
        check(
            "POST",
            DELETE,
            "",
            &headers(json, DELETE_SIG),
            DELETE_BODY.as_bytes(),
        )
        .unwrap();
    }

    #[test]
    fn the_query_is_canonical_whatever_its_order_and_spelling() {
        // The same parameters, shuffled and spelled with other escapes.
        let shuffled = "username=alice&type=FULL&limit=5&offset=0&desktop_id=d-1&desktop_names=guest1,guest%202&end_time=2026-11-22%2023:59:59&sort_field=start_time&sort_type=desc&start_time=2026-11-01%2000:00:00&status=UPLOAD_COMPLETED";
        check(
            "GET",
            LIST,
            shuffled,
            &headers("application/json", LIST_SIG),
            b"",
        )
        .unwrap();
        // A path spelled with an escape the SDK would not use is the same path.
        let path = SHOW.replace("screen-records", "screen%2Drecords");
        check(
            "GET",
            &path,
            "",
            &headers("application/json", SHOW_SIG),
            b"",
        )
        .unwrap();
    }

    #[test]
    fn every_part_of_the_request_is_covered() {
        let mismatch = |r: Result<Verified, SigError>| {
            assert!(matches!(r, Err(SigError::Mismatch { .. })), "{r:?}");
        };
        let ok = || headers("application/json", SHOW_SIG);
        // Each signed header changed.
        for (name, value) in [
            ("content-type", "text/plain"),
            ("host", "127.0.0.1:18932"),
            ("user-agent", "other"),
            ("x-project-id", "ffffffffffffffffffffffffffffffff"),
        ] {
            let mut h = ok();
            h.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
            mismatch(check("GET", SHOW, "", &h, b""));
        }
        // Method, path, query.
        mismatch(check("DELETE", SHOW, "", &ok(), b""));
        mismatch(check("GET", &SHOW.replace("5f60", "5f61"), "", &ok(), b""));
        mismatch(check("GET", SHOW, "limit=1", &ok(), b""));
        let list = || headers("application/json", LIST_SIG);
        mismatch(check(
            "GET",
            LIST,
            &LIST_QUERY.replace("limit=5", "limit=6"),
            &list(),
            b"",
        ));
        // The body.
        let post = || headers("application/json;charset=utf-8", DELETE_SIG);
        let other = DELETE_BODY.replace("5f60", "5f61");
        mismatch(check("POST", DELETE, "", &post(), other.as_bytes()));
        mismatch(check("POST", DELETE, "", &post(), b""));
        // A wrong secret.
        let h = ok();
        let request = Request {
            method: "GET",
            path: SHOW,
            query: "",
            headers: &h,
            body: b"",
        };
        let wrong = verify(&request, at_probe_time(), Duration::from_secs(900), |_| {
            Some("x")
        });
        mismatch(wrong);
    }

    #[test]
    fn the_body_is_always_hashed() {
        let mut h = headers("application/json;charset=utf-8", DELETE_SIG);
        h.insert(
            "x-sdk-content-sha256",
            HeaderValue::from_static("UNSIGNED-PAYLOAD"),
        );
        let r = check("POST", DELETE, "", &h, DELETE_BODY.as_bytes());
        assert_eq!(r, Err(SigError::PayloadHash));
    }

    #[test]
    fn the_date_is_checked_against_the_skew() {
        let h = headers("application/json", SHOW_SIG);
        let request = Request {
            method: "GET",
            path: SHOW,
            query: "",
            headers: &h,
            body: b"",
        };
        let secret = |_: &str| Some(SK);
        let skew = Duration::from_secs(900);
        let later = at_probe_time() + Duration::from_secs(901);
        assert_eq!(
            verify(&request, later, skew, secret),
            Err(SigError::Expired { skew_secs: 900 })
        );
        let earlier = at_probe_time() - Duration::from_secs(899);
        verify(&request, earlier, skew, secret).unwrap();
        for bad in [
            "2026-11-22T07:00:14Z",
            "20261122T070014",
            "20261322T070014Z",
            "20261122T250014Z",
        ] {
            let mut h = h.clone();
            h.insert("x-sdk-date", HeaderValue::from_static(bad));
            let request = Request {
                headers: &h,
                ..request
            };
            assert_eq!(
                verify(&request, later, skew, secret),
                Err(SigError::DateFormat),
                "{bad}"
            );
        }
    }

    #[test]
    fn what_must_be_signed_is_signed() {
        let with_signed = |signed: &str| {
            let mut h = headers("application/json", SHOW_SIG);
            let auth =
                format!("{ALGORITHM} Access={AK}, SignedHeaders={signed}, Signature={SHOW_SIG}");
            h.insert("authorization", HeaderValue::from_str(&auth).unwrap());
            check("GET", SHOW, "", &h, b"")
        };
        for signed in [
            "content-type;user-agent;x-project-id;x-sdk-date",
            "content-type;host;user-agent;x-project-id",
            "content-type;host;user-agent;x-sdk-date",
        ] {
            assert!(
                matches!(with_signed(signed), Err(SigError::Malformed(_))),
                "{signed}"
            );
        }
        // Unsorted, repeated or upper-case names.
        for signed in [
            "host;content-type;user-agent;x-project-id;x-sdk-date",
            "host;host;x-project-id;x-sdk-date",
            "Host;x-project-id;x-sdk-date",
        ] {
            assert!(
                matches!(with_signed(signed), Err(SigError::Malformed(_))),
                "{signed}"
            );
        }
        // A signed header absent from the request.
        assert!(matches!(
            with_signed("content-type;host;user-agent;x-extra;x-project-id;x-sdk-date"),
            Err(SigError::Malformed(m)) if m.contains("x-extra")
        ));
    }

    #[test]
    fn other_algorithms_and_broken_headers_are_refused_clearly() {
        let with_auth = |auth: &str| {
            let mut h = headers("application/json", SHOW_SIG);
            h.insert("authorization", HeaderValue::from_str(auth).unwrap());
            check("GET", SHOW, "", &h, b"")
        };
        let sm3 = with_auth(&format!(
            "SDK-HMAC-SM3 Access={AK}, SignedHeaders=host;x-sdk-date, Signature={SHOW_SIG}"
        ));
        assert_eq!(sm3, Err(SigError::Unsupported("SDK-HMAC-SM3".into())));
        assert!(sm3.unwrap_err().message().contains("SDK-HMAC-SHA256"));
        assert!(matches!(
            with_auth("AWS4-HMAC-SHA256 Credential=x"),
            Err(SigError::Unsupported(_))
        ));
        for bad in [
            format!("{ALGORITHM} Access={AK}, SignedHeaders=host;x-sdk-date"),
            format!("{ALGORITHM} Access={AK}, SignedHeaders=host;x-sdk-date, Signature=ABC"),
            format!("{ALGORITHM} Access={AK}, Access={AK}, SignedHeaders=host;x-sdk-date, Signature={SHOW_SIG}"),
            format!("{ALGORITHM} Access=, SignedHeaders=host;x-sdk-date, Signature={SHOW_SIG}"),
            format!("{ALGORITHM} Access={AK} SignedHeaders=host;x-sdk-date, Signature={SHOW_SIG}"),
        ] {
            assert!(matches!(with_auth(&bad), Err(SigError::Malformed(_))), "{bad}");
        }
        let mut h = headers("application/json", SHOW_SIG);
        h.remove("authorization");
        assert_eq!(check("GET", SHOW, "", &h, b""), Err(SigError::Missing));
        let unknown = with_auth(&format!("{ALGORITHM} Access=OTHER, SignedHeaders=content-type;host;user-agent;x-project-id;x-sdk-date, Signature={SHOW_SIG}"));
        assert_eq!(unknown, Err(SigError::UnknownKey));
        // A repeated signed header could be read two ways: refused.
        let mut h = headers("application/json", SHOW_SIG);
        h.append("x-project-id", HeaderValue::from_static(PROJECT));
        assert!(matches!(
            check("GET", SHOW, "", &h, b""),
            Err(SigError::Malformed(_))
        ));
        // Bad escapes in the path or query.
        let h = headers("application/json", SHOW_SIG);
        assert!(matches!(
            check("GET", "/v2/%zz", "", &h, b""),
            Err(SigError::Malformed(_))
        ));
        assert!(matches!(
            check("GET", SHOW, "a=%ff", &h, b""),
            Err(SigError::Malformed(_))
        ));
    }

    #[test]
    fn encoding_follows_pythons_quote() {
        assert_eq!(
            encode("a b:c,d~e_f.g-h/é"),
            "a%20b%3Ac%2Cd~e_f.g-h%2F%C3%A9"
        );
        assert_eq!(percent_decode("a%20b+c").as_deref(), Some("a b+c"));
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%+1"), None);
        assert_eq!(canonical_uri("/v2/p/x").unwrap(), "/v2/p/x/");
        assert_eq!(canonical_uri("/v2/p/a%2Fb/").unwrap(), "/v2/p/a/b/");
        let q = decode_query("b=2&a=1&a=0&c").unwrap();
        assert_eq!(canonical_query(&q), "a=0&a=1&b=2&c=");
    }
}

#[cfg(test)]
mod props {
    use std::collections::BTreeMap;

    use axum::http::{HeaderName, HeaderValue};
    use proptest::prelude::*;

    use super::*;

    const SK: &[u8] = b"exampleSecretKey0000000000000000000000000";
    const DATE: &str = "20261122T070014Z";

    /// Python's `quote(s, safe='~')`, as the SDK encodes.
    fn quote(s: &str) -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"_.-~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    /// A signer written from the SDK's `signer.py`, apart from the verifier.
    fn sign(
        method: &str,
        path: &str,
        query: &BTreeMap<String, String>,
        headers: &BTreeMap<String, String>,
        body: &[u8],
    ) -> String {
        let q: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{}={}", quote(k), quote(v)))
            .collect();
        let h: String = headers
            .iter()
            .map(|(k, v)| format!("{k}:{}\n", v.trim()))
            .collect();
        let names = headers.keys().cloned().collect::<Vec<_>>().join(";");
        let canonical = format!(
            "{method}\n{path}/\n{}\n{h}\n{names}\n{}",
            q.join("&"),
            hex::encode(Sha256::digest(body))
        );
        let to_sign = format!(
            "SDK-HMAC-SHA256\n{DATE}\n{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(SK).unwrap();
        mac.update(to_sign.as_bytes());
        format!(
            "SDK-HMAC-SHA256 Access=AK, SignedHeaders={names}, Signature={}",
            hex::encode(mac.finalize().into_bytes())
        )
    }

    fn check(
        method: &str,
        path: &str,
        query: &str,
        headers: &[(String, Vec<u8>)],
        body: &[u8],
    ) -> bool {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            let Ok(value) = HeaderValue::from_bytes(value) else {
                return false;
            };
            map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value);
        }
        let request = Request {
            method,
            path,
            query,
            headers: &map,
            body,
        };
        let at = parse_date(DATE).unwrap().into();
        verify(&request, at, Duration::from_secs(900), |ak| {
            (ak == "AK").then_some(SK)
        })
        .is_ok()
    }

    fn mutate(s: &[u8], at: prop::sample::Index, to: u8) -> Option<Vec<u8>> {
        let mut s = s.to_vec();
        let i = at.index(s.len().max(1));
        (i < s.len() && s[i] != to).then(|| {
            s[i] = to;
            s
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// A request signed as the SDK signs verifies; any one byte of its
        /// path, query, signed header values or body changed, and it fails,
        /// unless the path or query still decodes to the same text.
        #[test]
        fn accepts_what_is_signed_and_nothing_else(
            post in any::<bool>(),
            path in "(/[a-z0-9-]{1,6}){1,4}",
            query in proptest::collection::btree_map("[a-z_]{1,8}", "\\PC{0,10}", 0..4),
            project in proptest::option::of("[0-9a-f]{32}"),
            body in proptest::collection::vec(any::<u8>(), 0..40),
            part in 0..4usize,
            at in any::<prop::sample::Index>(),
            to in any::<u8>(),
        ) {
            let method = if post { "POST" } else { "GET" };
            let mut signed = BTreeMap::from([
                ("host".to_owned(), "127.0.0.1:8443".to_owned()),
                ("x-sdk-date".to_owned(), DATE.to_owned()),
                ("content-type".to_owned(), "application/json".to_owned()),
            ]);
            if let Some(p) = project {
                signed.insert("x-project-id".into(), p);
            }
            let authorization = sign(method, &path, &query, &signed, &body);
            let raw_query = query.iter().map(|(k, v)| format!("{}={}", quote(k), quote(v))).collect::<Vec<_>>().join("&");
            let mut headers: Vec<(String, Vec<u8>)> =
                signed.iter().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect();
            headers.push(("authorization".into(), authorization.into_bytes()));
            prop_assert!(check(method, &path, &raw_query, &headers, &body));

            let text = |b: Option<Vec<u8>>| b.and_then(|b| String::from_utf8(b).ok());
            match part {
                0 => {
                    let changed = text(mutate(path.as_bytes(), at, to));
                    prop_assume!(changed.is_some());
                    let changed = changed.unwrap();
                    if check(method, &changed, &raw_query, &headers, &body) {
                        prop_assert_eq!(percent_decode(&changed), percent_decode(&path));
                    }
                }
                1 => {
                    let changed = text(mutate(raw_query.as_bytes(), at, to));
                    prop_assume!(changed.is_some());
                    let changed = changed.unwrap();
                    if check(method, &path, &changed, &headers, &body) {
                        let sorted = |q: &str| decode_query(q).map(|mut p| { p.sort(); p });
                        prop_assert_eq!(sorted(&changed), sorted(&raw_query));
                    }
                }
                2 => {
                    let i = at.index(headers.len() - 1);
                    let changed = mutate(&headers[i].1, at, to);
                    prop_assume!(changed.is_some());
                    let mut headers = headers.clone();
                    headers[i].1 = changed.unwrap();
                    prop_assert!(!check(method, &path, &raw_query, &headers, &body));
                }
                _ => {
                    let changed = mutate(&body, at, to);
                    prop_assume!(changed.is_some());
                    prop_assert!(!check(method, &path, &raw_query, &headers, &changed.unwrap()));
                }
            }
        }

        /// `X-Sdk-Date` written from a time is read back as that time, and
        /// anything else is refused, never a panic.
        #[test]
        fn dates_round_trip(secs in 0i64..253_402_300_799, junk in "\\PC{0,20}") {
            let t = OffsetDateTime::from_unix_timestamp(secs).unwrap();
            let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
            prop_assert_eq!(parse_date(&t.format(&format).unwrap()), Some(t));
            let _ = parse_date(&junk);
        }

        /// Whatever arrives, checking it never panics.
        #[test]
        fn never_panics(
            path in "\\PC{0,20}",
            query in "([a-z%0-9]{0,6}=[ -~]{0,10}&?){0,5}",
            authorization in "(SDK-HMAC-SHA256 )?(Access=[ -~]{0,20}, ?)?(SignedHeaders=[a-z;-]{0,30}, ?)?(Signature=[0-9a-f]{0,64})?",
            date in "[0-9]{8}T[0-9]{6}Z|\\PC{0,16}",
            body in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let headers = [
                ("host".to_owned(), b"h".to_vec()),
                ("x-sdk-date".to_owned(), date.into_bytes()),
                ("authorization".to_owned(), authorization.into_bytes()),
            ];
            let _ = check("GET", &path, &query, &headers, &body);
        }
    }
}
