//! Checking AWS Signature Version 4 (`AWS4-HMAC-SHA256`), as botocore and the
//! other AWS SDKs sign EC2 Query API calls: in the `Authorization` header, or
//! presigned in the query string (`X-Amz-Signature` and friends).
//!
//! The expected signature is recomputed from the request as received: the
//! canonical request (method, normalised and re-encoded path, sorted query,
//! the signed headers, the body's SHA-256), the string to sign over it and
//! the credential scope, and the signing key derived from the secret.
//!
//! Written on `hmac`/`sha2`/`hex` rather than AWS's `aws-sigv4` crate: that
//! one is a signer (it chooses which headers to sign, and when), needs Rust
//! 1.94 against our 1.89, and brings the aws-smithy runtime crates with it;
//! the verifying side is the canonical request and four HMACs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::params::{percent_decode, split_pairs};

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const TERMINATOR: &str = "aws4_request";
/// AWS's own limit on `X-Amz-Expires`: seven days.
pub const MAX_EXPIRES: u64 = 7 * 24 * 3600;
/// The clock skew AWS allows a header-signed request.
pub const DEFAULT_SKEW: Duration = Duration::from_secs(5 * 60);

/// Limits on what the signature parts may be, far above what any SDK sends.
const MAX_AUTHORIZATION: usize = 4096;
const MAX_QUERY: usize = 16 * 1024;
const MAX_QUERY_PARAMS: usize = 64;
const MAX_PATH: usize = 2048;
const MAX_SIGNED_HEADERS: usize = 32;
const MAX_HEADER_NAME: usize = 64;
const MAX_HEADER_VALUE: usize = 8192;
const MAX_KEY_ID: usize = 128;
const MAX_REGION: usize = 64;

/// The request as it came in, before anything was decoded.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The path as on the request line, still percent-encoded.
    pub path: &'a str,
    /// The raw query string, without `?` (empty if none).
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// What a signature must say besides being right.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    /// The service in the credential scope: `ec2`.
    pub service: &'a str,
    /// The region in the scope; `None` takes any (a private cloud rarely has
    /// one the SDKs would agree on).
    pub region: Option<&'a str>,
    pub now: SystemTime,
    /// How far `X-Amz-Date` may be from `now`, either way.
    pub max_skew: Duration,
}

/// Which of the two forms the request was signed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Header,
    Presigned,
}

/// A request whose signature holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub access_key_id: String,
    /// The `Host` header the client signed, for the caller to check against
    /// the names this host answers to.
    pub host: String,
    /// The region in the credential scope.
    pub region: String,
    pub form: Form,
}

/// Why a signature was refused; [`SigError::code`] is the EC2 error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigError {
    /// No signature at all: EC2 answers `MissingParameter` (AWSAccessKeyId).
    Missing,
    /// The signature parts are malformed or incomplete.
    Incomplete(String),
    /// Another way of signing (signature version 2, another algorithm).
    Unsupported(String),
    /// The credential scope is not ours (service, region, date, terminator).
    Scope(String),
    /// The access key id is not known.
    UnknownKey,
    /// The timestamp is outside the allowed skew, or a presigned URL expired.
    Expired(String),
    /// `X-Amz-Content-SHA256` is not the body's hash.
    PayloadHash,
    /// The query string is not validly percent-encoded.
    MalformedQuery,
    /// The signature does not match: the canonical request and string to
    /// sign are for the log, not the client.
    Mismatch {
        canonical_request: String,
        string_to_sign: String,
    },
}

impl SigError {
    /// The EC2 error code for this refusal.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "MissingParameter",
            Self::Incomplete(_) => "IncompleteSignature",
            Self::Unsupported(_) | Self::Scope(_) | Self::UnknownKey => "AuthFailure",
            Self::Expired(_) => "RequestExpired",
            Self::PayloadHash | Self::Mismatch { .. } => "SignatureDoesNotMatch",
            Self::MalformedQuery => "InvalidQueryParameter",
        }
    }

    /// The message for the client, in EC2's words where they are known.
    pub fn message(&self) -> String {
        match self {
            Self::Missing => "The request must contain the parameter AWSAccessKeyId".into(),
            Self::Incomplete(why) | Self::Unsupported(why) | Self::Scope(why) => why.clone(),
            Self::UnknownKey => {
                "AWS was not able to validate the provided access credentials".into()
            }
            Self::Expired(why) => why.clone(),
            Self::PayloadHash => {
                "The provided 'x-amz-content-sha256' header does not match what was computed."
                    .into()
            }
            Self::MalformedQuery => {
                "The query string is malformed or does not adhere to AWS standards.".into()
            }
            Self::Mismatch { .. } => "The request signature we calculated does not match the \
                 signature you provided. Check your AWS Secret Access Key and signing method. \
                 Consult the service documentation for details."
                .into(),
        }
    }
}

fn incomplete(why: impl Into<String>) -> SigError {
    SigError::Incomplete(why.into())
}

/// The signature parts, from whichever form the request used.
struct Parts {
    form: Form,
    key_id: String,
    /// `yyyymmdd/region/service/aws4_request`, exactly as the client wrote it.
    scope: String,
    region: String,
    /// `yyyymmddThhmmssZ`.
    timestamp: String,
    signed_headers: Vec<String>,
    signature: String,
    expires: Option<u64>,
}

/// Checks the SigV4 signature of `request`; `secret_for` gives the secret of
/// an access key id, `None` for an unknown one.
pub fn verify<S: AsRef<[u8]>>(
    request: &Request<'_>,
    policy: &Policy<'_>,
    secret_for: impl FnOnce(&str) -> Option<S>,
) -> Result<Verified, SigError> {
    if request.query.len() > MAX_QUERY || request.path.len() > MAX_PATH {
        return Err(SigError::MalformedQuery);
    }
    let query = decode_query(request.query)?;
    let parts = parts(request, &query)?;
    check_scope(&parts, policy)?;
    check_time(&parts, policy)?;
    // `host` must be signed, so a request cannot be replayed to another
    // endpoint that shares the key.
    if !parts.signed_headers.iter().any(|h| h == "host") {
        return Err(incomplete("'Host' must be a signed header."));
    }
    let host = single_header(request.headers, "host")?
        .ok_or_else(|| incomplete("The signed header 'host' is not in the request."))?;
    let host = String::from_utf8(host.to_vec())
        .map_err(|_| incomplete("The 'host' header is not valid."))?;
    let body_hash = hex::encode(Sha256::digest(request.body));
    if let Some(given) = single_header(request.headers, "x-amz-content-sha256")? {
        if !given.eq_ignore_ascii_case(body_hash.as_bytes()) {
            return Err(SigError::PayloadHash);
        }
    }
    let canonical = canonical_request(request, &parts, &query, &body_hash)?;
    let secret = secret_for(&parts.key_id).ok_or(SigError::UnknownKey)?;

    let string_to_sign = format!(
        "{ALGORITHM}\n{}\n{}\n{}",
        parts.timestamp,
        parts.scope,
        hex::encode(Sha256::digest(&canonical))
    );
    let given = hex::decode(&parts.signature).unwrap_or_default();
    let mut mac = HmacSha256::new_from_slice(&signing_key(secret.as_ref(), &parts.scope))
        .expect("HMAC takes any key");
    mac.update(string_to_sign.as_bytes());
    // verify_slice compares in constant time.
    mac.verify_slice(&given).map_err(|_| SigError::Mismatch {
        canonical_request: String::from_utf8_lossy(&canonical).into_owned(),
        string_to_sign,
    })?;
    Ok(Verified {
        access_key_id: parts.key_id,
        host,
        region: parts.region,
        form: parts.form,
    })
}

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service),
/// "aws4_request"), over the scope's own parts.
fn signing_key(secret: &[u8], scope: &str) -> [u8; 32] {
    let mut key = [b"AWS4".as_slice(), secret].concat();
    for part in scope.split('/') {
        key = hmac(&key, part.as_bytes()).to_vec();
    }
    key.try_into().expect("an HMAC-SHA256 is 32 bytes")
}

/// A query parameter, decoded: name and value as bytes.
type Pair = (Vec<u8>, Vec<u8>);

/// The query's pairs, percent-decoded (a `+` stays a plus, as SigV4 has it).
fn decode_query(raw: &str) -> Result<Vec<Pair>, SigError> {
    let mut pairs = Vec::new();
    for (name, value) in split_pairs(raw.as_bytes()) {
        if pairs.len() == MAX_QUERY_PARAMS {
            return Err(SigError::MalformedQuery);
        }
        pairs.push((
            percent_decode(name, false).ok_or(SigError::MalformedQuery)?,
            percent_decode(value, false).ok_or(SigError::MalformedQuery)?,
        ));
    }
    Ok(pairs)
}

fn query_value<'q>(query: &'q [Pair], name: &str) -> Result<Option<&'q str>, SigError> {
    let mut found = query.iter().filter(|(n, _)| n == name.as_bytes());
    let value = found.next();
    if found.next().is_some() {
        return Err(incomplete(format!(
            "The parameter {name} is given more than once."
        )));
    }
    value
        .map(|(_, v)| {
            std::str::from_utf8(v).map_err(|_| incomplete(format!("{name} is not valid.")))
        })
        .transpose()
}

/// The one value of header `name`, `None` if absent; refused if repeated,
/// since the signature parts must not be ambiguous.
fn single_header<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h [u8]>, SigError> {
    let mut all = headers.get_all(name).iter();
    let first = all.next();
    if all.next().is_some() {
        return Err(incomplete(format!(
            "The header '{name}' is given more than once."
        )));
    }
    Ok(first.map(|v| v.as_bytes()))
}

fn parts(request: &Request<'_>, query: &[Pair]) -> Result<Parts, SigError> {
    let authorization = single_header(request.headers, "authorization")?;
    let algorithm = query_value(query, "X-Amz-Algorithm")?;
    match (authorization, algorithm) {
        (Some(_), Some(_)) => Err(incomplete(
            "Only one authentication method is allowed: the Authorization header or X-Amz-Algorithm.",
        )),
        (Some(header), None) => {
            if query_value(query, "X-Amz-Signature")?.is_some() {
                return Err(incomplete(
                    "Only one authentication method is allowed: the Authorization header or X-Amz-Signature.",
                ));
            }
            header_parts(request.headers, header)
        }
        (None, Some(algorithm)) => presigned_parts(query, algorithm),
        (None, None) => {
            if query_value(query, "X-Amz-Signature")?.is_some()
                || query_value(query, "X-Amz-Credential")?.is_some()
            {
                Err(incomplete("The request must contain the parameter X-Amz-Algorithm."))
            } else if query_value(query, "AWSAccessKeyId")?.is_some()
                || query_value(query, "Signature")?.is_some()
            {
                Err(SigError::Unsupported(
                    "Only AWS Signature Version 4 (AWS4-HMAC-SHA256) is supported.".into(),
                ))
            } else {
                Err(SigError::Missing)
            }
        }
    }
}

/// `AWS4-HMAC-SHA256 Credential=AK/date/region/service/aws4_request,
/// SignedHeaders=a;b, Signature=hex` (commas with or without spaces).
fn header_parts<'a>(headers: &HeaderMap, header: &'a [u8]) -> Result<Parts, SigError> {
    if header.len() > MAX_AUTHORIZATION {
        return Err(incomplete("The Authorization header is too long."));
    }
    let header = std::str::from_utf8(header)
        .map_err(|_| incomplete("The Authorization header is not valid."))?;
    let rest = match header.split_once(' ') {
        Some((ALGORITHM, rest)) => rest,
        Some((other, _)) if other.starts_with("AWS4-") => {
            return Err(SigError::Unsupported(format!(
                "Unsupported signing algorithm; only {ALGORITHM} is supported."
            )))
        }
        _ => {
            return Err(SigError::Unsupported(format!(
                "Unsupported Authorization type; only {ALGORITHM} is supported."
            )))
        }
    };
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (name, value) = part.trim().split_once('=').ok_or_else(|| {
            incomplete(format!(
                "Authorization header is malformed: '{}'.",
                clip(part)
            ))
        })?;
        let slot = match name {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut signature,
            _ => {
                return Err(incomplete(format!(
                    "Authorization header has an unknown part '{}'.",
                    clip(name)
                )))
            }
        };
        if slot.replace(value).is_some() {
            return Err(incomplete(format!(
                "Authorization header gives '{name}' twice."
            )));
        }
    }
    let need = |v: Option<&'a str>, name: &str| {
        v.ok_or_else(|| incomplete(format!("Authorization header requires '{name}' parameter.")))
    };
    let (credential, signed, signature) = (
        need(credential, "Credential")?,
        need(signed, "SignedHeaders")?,
        need(signature, "Signature")?,
    );
    let timestamp = single_header(headers, "x-amz-date")?.ok_or_else(|| {
        incomplete("Authorization header requires existence of a 'X-Amz-Date' header.")
    })?;
    let timestamp = std::str::from_utf8(timestamp)
        .map_err(|_| incomplete("The X-Amz-Date header is not valid."))?;
    build_parts(Form::Header, credential, signed, signature, timestamp, None)
}

fn presigned_parts(query: &[Pair], algorithm: &str) -> Result<Parts, SigError> {
    if algorithm != ALGORITHM {
        return Err(SigError::Unsupported(format!(
            "X-Amz-Algorithm only supports {ALGORITHM}."
        )));
    }
    let need = |name: &str| {
        query_value(query, name)?
            .ok_or_else(|| incomplete(format!("The request must contain the parameter {name}.")))
    };
    let credential = need("X-Amz-Credential")?;
    let timestamp = need("X-Amz-Date")?;
    let expires = need("X-Amz-Expires")?;
    let signed = need("X-Amz-SignedHeaders")?;
    let signature = need("X-Amz-Signature")?;
    // Digits only: `u64::from_str` would also take a leading `+`.
    let expires = Some(expires)
        .filter(|e| !e.is_empty() && e.len() <= 7 && e.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|e| e.parse::<u64>().ok())
        .filter(|e| (1..=MAX_EXPIRES).contains(e))
        .ok_or_else(|| {
            incomplete(format!(
                "X-Amz-Expires must be a whole number of seconds from 1 to {MAX_EXPIRES}."
            ))
        })?;
    build_parts(
        Form::Presigned,
        credential,
        signed,
        signature,
        timestamp,
        Some(expires),
    )
}

fn build_parts(
    form: Form,
    credential: &str,
    signed: &str,
    signature: &str,
    timestamp: &str,
    expires: Option<u64>,
) -> Result<Parts, SigError> {
    // AK/yyyymmdd/region/service/aws4_request: the key id cannot hold a '/'.
    let (key_id, scope) = credential.split_once('/').ok_or_else(|| {
        SigError::Scope(format!("Credential is malformed: '{}'.", clip(credential)))
    })?;
    if key_id.is_empty()
        || key_id.len() > MAX_KEY_ID
        || !key_id.bytes().all(|b| b.is_ascii_graphic() && b != b',')
    {
        return Err(SigError::Scope(
            "The access key id in Credential is not valid.".into(),
        ));
    }
    let region = scope.split('/').nth(1).unwrap_or_default().to_owned();
    let signed_headers: Vec<String> = signed.split(';').map(str::to_owned).collect();
    let valid_name = |h: &String| {
        !h.is_empty()
            && h.len() <= MAX_HEADER_NAME
            && h.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
    };
    // The SDKs write the names lowercase, sorted, each once: anything else
    // would give the same request two canonical forms.
    if signed_headers.len() > MAX_SIGNED_HEADERS
        || !signed_headers.iter().all(valid_name)
        || !signed_headers.windows(2).all(|w| w[0] < w[1])
    {
        return Err(incomplete(
            "SignedHeaders must be distinct lowercase header names in sorted order.",
        ));
    }
    if parse_timestamp(timestamp).is_none() {
        return Err(incomplete(format!(
            "X-Amz-Date must be in the ISO8601 basic format yyyyMMdd'T'HHmmss'Z': '{}'.",
            clip(timestamp)
        )));
    }
    if signature.len() != 64
        || !signature
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(incomplete(
            "Signature must be 64 lowercase hexadecimal digits.",
        ));
    }
    Ok(Parts {
        form,
        key_id: key_id.to_owned(),
        scope: scope.to_owned(),
        region,
        timestamp: timestamp.to_owned(),
        signed_headers,
        signature: signature.to_owned(),
        expires,
    })
}

fn check_scope(parts: &Parts, policy: &Policy<'_>) -> Result<(), SigError> {
    let fields: Vec<&str> = parts.scope.split('/').collect();
    let [date, region, service, terminator] = fields[..] else {
        return Err(SigError::Scope(format!(
            "Credential should be scoped to a valid region, service and date: '{}'.",
            clip(&parts.scope)
        )));
    };
    if terminator != TERMINATOR {
        return Err(SigError::Scope(format!(
            "Credential should be scoped with a valid terminator: '{TERMINATOR}', not '{}'.",
            clip(terminator)
        )));
    }
    if service != policy.service {
        return Err(SigError::Scope(format!(
            "Credential should be scoped to correct service: '{}'.",
            policy.service
        )));
    }
    let region_ok = !region.is_empty()
        && region.len() <= MAX_REGION
        && region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    // Some SDKs have sent the region in capitals; the scope is signed as
    // written, so matching it without case loosens nothing.
    if !region_ok
        || policy
            .region
            .is_some_and(|want| !want.eq_ignore_ascii_case(region))
    {
        return Err(SigError::Scope(format!(
            "Credential should be scoped to a valid region{}.",
            policy
                .region
                .map(|r| format!(": '{r}'"))
                .unwrap_or_default()
        )));
    }
    if parts.timestamp.get(..8) != Some(date) {
        return Err(SigError::Scope(
            "Date in Credential scope does not match YYYYMMDD from X-Amz-Date.".into(),
        ));
    }
    Ok(())
}

/// `yyyymmddThhmmssZ` as seconds since the epoch.
fn parse_timestamp(s: &str) -> Option<i64> {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    if s.len() != 16 {
        return None;
    }
    let at = time::PrimitiveDateTime::parse(s, &format).ok()?;
    Some(at.assume_utc().unix_timestamp())
}

fn check_time(parts: &Parts, policy: &Policy<'_>) -> Result<(), SigError> {
    // build_parts checked the format.
    let at = parse_timestamp(&parts.timestamp).unwrap_or_default();
    let now = match policy.now.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    };
    let skew = i64::try_from(policy.max_skew.as_secs()).unwrap_or(i64::MAX);
    let too_early = at.saturating_sub(skew) > now;
    let too_late = match parts.expires {
        None => now.saturating_sub(skew) > at,
        Some(expires) => now > at.saturating_add(expires as i64),
    };
    if too_early || too_late {
        let what = match parts.expires {
            Some(_) if too_late => "Request has expired.".to_owned(),
            _ => format!(
                "Request timestamp {} is more than {} s from the server's time.",
                parts.timestamp, skew
            ),
        };
        return Err(SigError::Expired(what));
    }
    Ok(())
}

/// The canonical request, as bytes: a signed header's value may hold bytes
/// that are not UTF-8, and they are signed as they are.
fn canonical_request(
    request: &Request<'_>,
    parts: &Parts,
    query: &[Pair],
    body_hash: &str,
) -> Result<Vec<u8>, SigError> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(request.method.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical_uri(request.path).as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical_query(query, parts.form).as_bytes());
    out.push(b'\n');
    for name in &parts.signed_headers {
        let mut values = request.headers.get_all(name.as_str()).iter().peekable();
        if values.peek().is_none() {
            return Err(incomplete(format!(
                "The signed header '{name}' is not in the request."
            )));
        }
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        for (i, value) in values.enumerate() {
            if value.len() > MAX_HEADER_VALUE {
                return Err(incomplete(format!("The header '{name}' is too long.")));
            }
            if i > 0 {
                out.push(b',');
            }
            push_trimmed(&mut out, value.as_bytes());
        }
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(parts.signed_headers.join(";").as_bytes());
    out.push(b'\n');
    out.extend_from_slice(body_hash.as_bytes());
    Ok(out)
}

/// A header value trimmed, with each run of spaces and tabs made one space.
fn push_trimmed(out: &mut Vec<u8>, value: &[u8]) {
    let mut words = value
        .split(|b| *b == b' ' || *b == b'\t')
        .filter(|w| !w.is_empty());
    if let Some(first) = words.next() {
        out.extend_from_slice(first);
        for word in words {
            out.push(b' ');
            out.extend_from_slice(word);
        }
    }
}

/// RFC 3986 encoding: everything but `A-Z a-z 0-9 - _ . ~` as `%XX`
/// (uppercase), and `/` too unless `keep_slash`.
fn uri_encode(bytes: &[u8], keep_slash: bool, out: &mut String) {
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// The path with empty and `.` segments dropped and `..` applied, then
/// URI-encoded once more: services other than S3 sign the already-encoded
/// path encoded again (a `%20` on the wire is `%2520` here), as botocore does.
fn canonical_uri(raw_path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in raw_path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut path = String::from("/");
    path.push_str(&segments.join("/"));
    if raw_path.ends_with('/') && !segments.is_empty() {
        path.push('/');
    }
    let mut out = String::with_capacity(path.len());
    uri_encode(path.as_bytes(), true, &mut out);
    out
}

/// Pairs encoded, sorted by name then value, `X-Amz-Signature` left out of a
/// presigned one.
fn canonical_query(query: &[Pair], form: Form) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .filter(|(name, _)| !(form == Form::Presigned && name == b"X-Amz-Signature"))
        .map(|(name, value)| {
            let (mut n, mut v) = (String::new(), String::new());
            uri_encode(name, false, &mut n);
            uri_encode(value, false, &mut v);
            (n, v)
        })
        .collect();
    pairs.sort();
    let mut out = String::new();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(name);
        out.push('=');
        out.push_str(value);
    }
    out
}

/// At most 64 bytes of a client's text, for an error message.
fn clip(s: &str) -> String {
    super::params::truncate(s, 64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderName, HeaderValue};

    /// The secret of AWS's published examples and of the SigV4 test suite.
    const EXAMPLE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn at(ts: &str) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(parse_timestamp(ts).unwrap() as u64)
    }

    fn headers(list: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in list {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value.as_bytes()).unwrap(),
            );
        }
        map
    }

    fn lookup(key: &str) -> impl FnOnce(&str) -> Option<&'static str> + '_ {
        move |id| (id == key).then_some(EXAMPLE_SECRET)
    }

    /// One test-suite case: request line, headers (the Authorization last),
    /// body. Region us-east-1, service "service", 2015-08-30T12:36:00Z.
    fn suite(
        method: &str,
        target: &str,
        list: &[(&str, &str)],
        body: &str,
    ) -> Result<Verified, SigError> {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let map = headers(list);
        let request = Request {
            method,
            path,
            query,
            headers: &map,
            body: body.as_bytes(),
        };
        let policy = Policy {
            service: "service",
            region: Some("us-east-1"),
            now: at("20150830T123600Z"),
            max_skew: DEFAULT_SKEW,
        };
        verify(&request, &policy, lookup("AKIDEXAMPLE"))
    }

    fn authz(signed: &str, signature: &str) -> String {
        format!(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders={signed}, Signature={signature}"
        )
    }

    const HOST: (&str, &str) = ("host", "example.amazonaws.com");
    const DATE: (&str, &str) = ("x-amz-date", "20150830T123600Z");

    // The cases below are AWS's SigV4 test suite (aws-sig-v4-test-suite,
    // 2015-08-30): request as given, the signature it publishes.

    #[test]
    fn suite_get_vanilla() {
        let a = authz(
            "host;x-amz-date",
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        );
        let v = suite("GET", "/", &[HOST, DATE, ("authorization", &a)], "").unwrap();
        assert_eq!(v.access_key_id, "AKIDEXAMPLE");
        assert_eq!(v.host, "example.amazonaws.com");
        assert_eq!(v.region, "us-east-1");
        assert_eq!(v.form, Form::Header);
    }

    #[test]
    fn suite_get_vanilla_query_order_key_case() {
        let a = authz(
            "host;x-amz-date",
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        );
        suite(
            "GET",
            "/?Param2=value2&Param1=value1",
            &[HOST, DATE, ("authorization", &a)],
            "",
        )
        .unwrap();
    }

    #[test]
    fn suite_get_vanilla_query_unreserved() {
        let u = "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let a = authz(
            "host;x-amz-date",
            "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197",
        );
        suite(
            "GET",
            &format!("/?{u}={u}"),
            &[HOST, DATE, ("authorization", &a)],
            "",
        )
        .unwrap();
    }

    #[test]
    fn suite_get_utf8_path() {
        let a = authz(
            "host;x-amz-date",
            "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85",
        );
        suite("GET", "/ሴ", &[HOST, DATE, ("authorization", &a)], "").unwrap();
    }

    #[test]
    fn suite_get_header_value_trim() {
        let a = authz(
            "host;my-header1;my-header2;x-amz-date",
            "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
        );
        suite(
            "GET",
            "/",
            &[
                HOST,
                ("my-header1", " value1"),
                ("my-header2", " \"a   b   c\""),
                DATE,
                ("authorization", &a),
            ],
            "",
        )
        .unwrap();
    }

    #[test]
    fn suite_post_x_www_form_urlencoded() {
        let a = authz(
            "content-type;host;x-amz-date",
            "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a",
        );
        suite(
            "POST",
            "/",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                HOST,
                DATE,
                ("authorization", &a),
            ],
            "Param1=value1",
        )
        .unwrap();
        // Its canonical request, as the suite's .creq publishes it.
        let map = headers(&[
            ("content-type", "application/x-www-form-urlencoded"),
            HOST,
            DATE,
        ]);
        let request = Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &map,
            body: b"Param1=value1",
        };
        let parts = build_parts(
            Form::Header,
            "AKIDEXAMPLE/20150830/us-east-1/service/aws4_request",
            "content-type;host;x-amz-date",
            &"0".repeat(64),
            "20150830T123600Z",
            None,
        )
        .unwrap();
        let body_hash = hex::encode(Sha256::digest(b"Param1=value1"));
        let creq = canonical_request(&request, &parts, &[], &body_hash).unwrap();
        assert_eq!(
            String::from_utf8(creq).unwrap(),
            "POST\n/\n\ncontent-type:application/x-www-form-urlencoded\nhost:example.amazonaws.com\n\
             x-amz-date:20150830T123600Z\n\ncontent-type;host;x-amz-date\n\
             9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"
        );
    }

    #[test]
    fn suite_post_x_www_form_urlencoded_parameters() {
        let a = authz(
            "content-type;host;x-amz-date",
            "1a72ec8f64bd914b0e42e42607c7fbce7fb2c7465f63e3092b3b0d39fa77a6fe",
        );
        suite(
            "POST",
            "/",
            &[
                (
                    "content-type",
                    "application/x-www-form-urlencoded; charset=utf8",
                ),
                HOST,
                DATE,
                ("authorization", &a),
            ],
            "Param1=value1",
        )
        .unwrap();
    }

    #[test]
    fn canonical_uri_normalises_and_encodes_again() {
        assert_eq!(canonical_uri("/"), "/");
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("//example//"), "/example/");
        assert_eq!(canonical_uri("/example/.."), "/");
        assert_eq!(canonical_uri("/example/../.."), "/");
        assert_eq!(canonical_uri("/./"), "/");
        assert_eq!(canonical_uri("/example space/"), "/example%20space/");
        assert_eq!(canonical_uri("/a%20b"), "/a%2520b");
    }

    #[test]
    fn canonical_query_sorts_encoded_pairs() {
        let q = decode_query("b=2&a=2&a=1&c&X-Amz-Signature=x&s=%2F%20+").unwrap();
        assert_eq!(
            canonical_query(&q, Form::Presigned),
            "a=1&a=2&b=2&c=&s=%2F%20%2B"
        );
        assert!(canonical_query(&q, Form::Header).starts_with("X-Amz-Signature=x&"));
        assert_eq!(decode_query("a=%g1"), Err(SigError::MalformedQuery));
    }

    // Requests botocore 1.44.8 signed (captured by a stub server; key
    // AKIDEXAMPLE and the example secret, region us-east-1).

    fn botocore_policy(now: &str) -> Policy<'static> {
        Policy {
            service: "ec2",
            region: Some("us-east-1"),
            now: at(now),
            max_skew: DEFAULT_SKEW,
        }
    }

    #[derive(Clone, Copy)]
    struct BotocoreVector<'a> {
        method: &'a str,
        target: &'a str,
        headers: &'a [(&'a str, &'a str)],
        body: &'a str,
        /// Its X-Amz-Date: the tests' clock.
        date: &'a str,
    }

    const BOTOCORE_HOST: &str = "127.0.0.1:18777";

    const BOTOCORE_POST: BotocoreVector<'static> = BotocoreVector {
        method: "POST",
        target: "/",
        headers: &[
            ("host", "127.0.0.1:18777"),
            ("accept-encoding", "identity"),
            ("content-type", "application/x-www-form-urlencoded; charset=utf-8"),
            ("user-agent", "Boto3/1.44.8 md/Botocore#1.44.8 ua/2.1 os/linux#6.18.44-fc-v782 md/arch#x86_64 lang/python#3.11.2 md/pyimpl#CPython m/Z,N,E,e,b cfg/retry-mode#standard Botocore/1.44.8"),
            ("x-amz-date", "20261130T051324Z"),
            ("authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261130/us-east-1/ec2/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=784187f5fc39c40784f089d7b01a51ff7394da4cb43cfdd577df23edbfbe4b4c"),
            ("amz-sdk-invocation-id", "5fb9927d-c37e-4d89-81e2-fcdcf697a9c2"),
            ("amz-sdk-request", "attempt=1; max=1"),
            ("content-length", "89"),
        ],
        body: "Action=GetConsoleScreenshot&Version=2016-11-15&InstanceId=i-0123456789abcdef0&WakeUp=true",
        date: "20261130T051324Z",
    };

    const BOTOCORE_PRESIGNED: BotocoreVector<'static> = BotocoreVector {
        method: "GET",
        target: "/?Action=GetConsoleScreenshot&Version=2016-11-15&InstanceId=i-0123456789abcdef0&WakeUp=true&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20261130%2Fus-east-1%2Fec2%2Faws4_request&X-Amz-Date=20261130T051325Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature=d17ef6f92a54fea83db5454b1c8c2a25e994078273f9789eef0ed295648658cd",
        headers: &[
            ("accept-encoding", "identity"),
            ("host", "127.0.0.1:18777"),
            ("user-agent", "Python-urllib/3.11"),
            ("connection", "close"),
        ],
        body: "",
        date: "20261130T051325Z",
    };

    fn run_botocore(v: &BotocoreVector<'_>, now: &str) -> Result<Verified, SigError> {
        let map = headers(v.headers);
        let (path, query) = v.target.split_once('?').unwrap_or((v.target, ""));
        let request = Request {
            method: v.method,
            path,
            query,
            headers: &map,
            body: v.body.as_bytes(),
        };
        verify(&request, &botocore_policy(now), lookup("AKIDEXAMPLE"))
    }

    #[test]
    fn botocore_header_signed_form_post() {
        let v = run_botocore(&BOTOCORE_POST, BOTOCORE_POST.date).unwrap();
        assert_eq!(v.form, Form::Header);
        assert_eq!(v.host, BOTOCORE_HOST);
    }

    #[test]
    fn botocore_presigned_get() {
        let v = run_botocore(&BOTOCORE_PRESIGNED, BOTOCORE_PRESIGNED.date).unwrap();
        assert_eq!(v.form, Form::Presigned);
        assert_eq!(v.access_key_id, "AKIDEXAMPLE");
    }

    #[test]
    fn botocore_requests_expire() {
        // Header form: five minutes either way.
        let date = parse_timestamp(BOTOCORE_POST.date).unwrap();
        let fmt = |secs: i64| {
            let t = time::OffsetDateTime::from_unix_timestamp(secs).unwrap();
            format!(
                "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
                t.year(),
                t.month() as u8,
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        };
        assert!(run_botocore(&BOTOCORE_POST, &fmt(date + 300)).is_ok());
        assert!(run_botocore(&BOTOCORE_POST, &fmt(date - 300)).is_ok());
        assert!(matches!(
            run_botocore(&BOTOCORE_POST, &fmt(date + 301)),
            Err(SigError::Expired(_))
        ));
        assert!(matches!(
            run_botocore(&BOTOCORE_POST, &fmt(date - 301)),
            Err(SigError::Expired(_))
        ));
        // Presigned: until X-Amz-Expires (3600 s) has passed.
        let date = parse_timestamp(BOTOCORE_PRESIGNED.date).unwrap();
        assert!(run_botocore(&BOTOCORE_PRESIGNED, &fmt(date + 3600)).is_ok());
        assert!(matches!(
            run_botocore(&BOTOCORE_PRESIGNED, &fmt(date + 3601)),
            Err(SigError::Expired(_))
        ));
        assert!(matches!(
            run_botocore(&BOTOCORE_PRESIGNED, &fmt(date - 301)),
            Err(SigError::Expired(_))
        ));
    }

    #[test]
    fn tampering_is_caught() {
        // Another body, another path, another secret, another host.
        let mut v = BOTOCORE_POST;
        let body = v.body.replace("WakeUp=true", "WakeUp=fals");
        v.body = &body;
        assert!(matches!(
            run_botocore(&v, v.date),
            Err(SigError::Mismatch { .. })
        ));

        let mut v = BOTOCORE_POST;
        v.target = "/x";
        assert!(matches!(
            run_botocore(&v, v.date),
            Err(SigError::Mismatch { .. })
        ));

        let v = BOTOCORE_POST;
        let map = headers(v.headers);
        let request = Request {
            method: v.method,
            path: "/",
            query: "",
            headers: &map,
            body: v.body.as_bytes(),
        };
        let wrong = verify(&request, &botocore_policy(v.date), |_| Some("other"));
        assert!(matches!(wrong, Err(SigError::Mismatch { .. })));
        let unknown = verify(&request, &botocore_policy(v.date), |_| None::<&str>);
        assert_eq!(unknown, Err(SigError::UnknownKey));

        let mut list: Vec<(&str, &str)> = v.headers.to_vec();
        for h in &mut list {
            if h.0 == "host" {
                h.1 = "evil.example";
            }
        }
        let map = headers(&list);
        let request = Request {
            headers: &map,
            ..request
        };
        assert!(matches!(
            verify(&request, &botocore_policy(v.date), lookup("AKIDEXAMPLE")),
            Err(SigError::Mismatch { .. })
        ));

        // The presigned URL with one parameter changed.
        let mut v = BOTOCORE_PRESIGNED;
        let target = v.target.replace("WakeUp=true", "WakeUp=false");
        v.target = &target;
        assert!(matches!(
            run_botocore(&v, v.date),
            Err(SigError::Mismatch { .. })
        ));
    }

    #[test]
    fn scope_and_policy() {
        let v = BOTOCORE_POST;
        let map = headers(v.headers);
        let request = Request {
            method: v.method,
            path: "/",
            query: "",
            headers: &map,
            body: v.body.as_bytes(),
        };
        let mut policy = botocore_policy(v.date);
        policy.region = None;
        assert!(verify(&request, &policy, lookup("AKIDEXAMPLE")).is_ok());
        policy.region = Some("US-EAST-1");
        assert!(verify(&request, &policy, lookup("AKIDEXAMPLE")).is_ok());
        policy.region = Some("eu-west-1");
        assert!(matches!(
            verify(&request, &policy, lookup("AKIDEXAMPLE")),
            Err(SigError::Scope(_))
        ));
        policy.region = None;
        policy.service = "s3";
        assert!(matches!(
            verify(&request, &policy, lookup("AKIDEXAMPLE")),
            Err(SigError::Scope(_))
        ));
    }

    fn with_auth(authorization: &str, extra: &[(&str, &str)]) -> Result<Verified, SigError> {
        let mut list = vec![HOST, DATE, ("authorization", authorization)];
        list.extend_from_slice(extra);
        suite("GET", "/", &list, "")
    }

    #[test]
    fn malformed_signatures_are_refused_with_ec2_codes() {
        let sig = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
        let cred = "Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request";
        let code = |r: Result<Verified, SigError>| r.unwrap_err().code();
        assert_eq!(
            code(suite("GET", "/", &[HOST, DATE], "")),
            "MissingParameter"
        );
        assert_eq!(code(with_auth("Basic YTpi", &[])), "AuthFailure");
        assert_eq!(
            code(with_auth("AWS4-ECDSA-P256-SHA256 x", &[])),
            "AuthFailure"
        );
        assert_eq!(
            code(suite(
                "GET",
                "/?AWSAccessKeyId=a&Signature=b",
                &[HOST, DATE],
                ""
            )),
            "AuthFailure"
        );
        for bad in [
            format!("AWS4-HMAC-SHA256 {cred}, Signature={sig}"),
            format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;x-amz-date"),
            format!("AWS4-HMAC-SHA256 SignedHeaders=host;x-amz-date, Signature={sig}"),
            format!(
                "AWS4-HMAC-SHA256 {cred}, {cred}, SignedHeaders=host;x-amz-date, Signature={sig}"
            ),
            format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=x-amz-date;host, Signature={sig}"),
            format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=Host;x-amz-date, Signature={sig}"),
            format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=x-amz-date, Signature={sig}"),
            format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;x-amz-date, Signature=abc"),
            format!(
                "AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;x-amz-date, Signature={}",
                sig.to_uppercase()
            ),
            format!(
                "AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;x-amz-date, Signature={sig}, Extra=1"
            ),
            format!(
                "AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;x-amz-date;x-missing, Signature={sig}"
            ),
        ] {
            assert_eq!(code(with_auth(&bad, &[])), "IncompleteSignature", "{bad}");
        }
        for bad in [
            "Credential=AKIDEXAMPLE",
            "Credential=/20150830/us-east-1/service/aws4_request",
            "Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws5_request",
            "Credential=AKIDEXAMPLE/20150830/us-east-1/service",
            "Credential=AKIDEXAMPLE/20150831/us-east-1/service/aws4_request",
            "Credential=AKIDEXAMPLE/20150830/eu-west-1/service/aws4_request",
            "Credential=AKIDEXAMPLE/20150830/us-east-1/ec2/aws4_request",
        ] {
            let a =
                format!("AWS4-HMAC-SHA256 {bad}, SignedHeaders=host;x-amz-date, Signature={sig}");
            assert_eq!(code(with_auth(&a, &[])), "AuthFailure", "{bad}");
        }
        let good = authz("host;x-amz-date", sig);
        // No X-Amz-Date, a bad one, two of them.
        assert_eq!(
            code(suite("GET", "/", &[HOST, ("authorization", &good)], "")),
            "IncompleteSignature"
        );
        assert_eq!(
            code(suite(
                "GET",
                "/",
                &[
                    HOST,
                    ("x-amz-date", "2015-08-30T12:36:00Z"),
                    ("authorization", &good)
                ],
                ""
            )),
            "IncompleteSignature"
        );
        assert_eq!(code(with_auth(&good, &[DATE])), "IncompleteSignature");
        // Two Authorization headers, or one and a presigned query.
        assert_eq!(
            code(with_auth(&good, &[("authorization", &good)])),
            "IncompleteSignature"
        );
        assert_eq!(
            code(suite(
                "GET",
                "/?X-Amz-Algorithm=AWS4-HMAC-SHA256",
                &[HOST, DATE, ("authorization", &good)],
                ""
            )),
            "IncompleteSignature"
        );
        // A body hash that is not the body's.
        assert_eq!(
            code(with_auth(
                &good,
                &[("x-amz-content-sha256", "UNSIGNED-PAYLOAD")]
            )),
            "SignatureDoesNotMatch"
        );
        // A wrong signature.
        assert_eq!(
            code(with_auth(&authz("host;x-amz-date", &"0".repeat(64)), &[])),
            "SignatureDoesNotMatch"
        );
    }

    #[test]
    fn malformed_presigned_queries_are_refused() {
        let base = "X-Amz-Algorithm=AWS4-HMAC-SHA256\
                    &X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request\
                    &X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host";
        let sig = format!("X-Amz-Signature={}", "0".repeat(64));
        let code = |q: &str| {
            suite("GET", &format!("/?{q}"), &[HOST], "")
                .unwrap_err()
                .code()
        };
        assert_eq!(
            code(&format!("{base}&X-Amz-Expires=60&{sig}")),
            "SignatureDoesNotMatch"
        );
        assert_eq!(code(&format!("{base}&{sig}")), "IncompleteSignature");
        assert_eq!(
            code(&format!("{base}&X-Amz-Expires=60")),
            "IncompleteSignature"
        );
        for expires in [
            "0",
            "604801",
            "+60",
            "-1",
            "6e1",
            "",
            "99999999999999999999",
        ] {
            assert_eq!(
                code(&format!("{base}&X-Amz-Expires={expires}&{sig}")),
                "IncompleteSignature",
                "{expires}"
            );
        }
        assert_eq!(
            code(&format!("{base}&X-Amz-Expires=60&{sig}&{sig}")),
            "IncompleteSignature"
        );
        assert_eq!(
            code(&format!(
                "{}&X-Amz-Expires=60&{sig}",
                base.replace("HMAC", "XXXX")
            )),
            "AuthFailure"
        );
        assert_eq!(
            code(&format!("X-Amz-Credential=a&{sig}")),
            "IncompleteSignature"
        );
        assert_eq!(code("a=%zz"), "InvalidQueryParameter");
    }

    #[test]
    fn random_requests_never_panic() {
        // A cheap fuzz over Authorization headers and query strings built
        // from the pieces the parser cares about, shuffled by xorshift.
        let pieces = [
            "AWS4-HMAC-SHA256 ",
            "Credential=",
            "AKIDEXAMPLE",
            "/",
            "20150830",
            "us-east-1",
            "service",
            "aws4_request",
            ", ",
            ",",
            "SignedHeaders=",
            "host",
            ";",
            "x-amz-date",
            "Signature=",
            "5fa00fa3",
            "=",
            "&",
            "%",
            "%2F",
            "X-Amz-Algorithm",
            "X-Amz-Expires",
            "X-Amz-Signature",
            "X-Amz-Credential",
            "X-Amz-Date",
            "X-Amz-SignedHeaders",
            "0",
            "é",
            "..",
            " ",
            "\t",
        ];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..5_000 {
            let mut auth = String::new();
            let mut query = String::new();
            for _ in 0..(next() % 24) {
                auth.push_str(pieces[next() as usize % pieces.len()]);
                query.push_str(pieces[next() as usize % pieces.len()]);
            }
            let mut list = vec![HOST, DATE];
            let with_header = next().is_multiple_of(2);
            if with_header {
                list.push(("authorization", &auth));
            }
            let Ok(map) = std::panic::catch_unwind(|| headers(&list)) else {
                continue;
            };
            let request = Request {
                method: "GET",
                path: "/",
                query: &query,
                headers: &map,
                body: b"",
            };
            let policy = Policy {
                service: "service",
                region: None,
                now: at("20150830T123600Z"),
                max_skew: DEFAULT_SKEW,
            };
            let _ = verify(&request, &policy, lookup("AKIDEXAMPLE"));
        }
    }
}

#[cfg(test)]
mod props {
    use std::collections::BTreeMap;

    use axum::http::{HeaderName, HeaderValue};
    use proptest::prelude::*;

    use super::*;

    const SECRET: &[u8] = b"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const DATE: &str = "20150830T123600Z";

    fn enc(s: &str) -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    /// A signer written from AWS's SigV4 documentation, apart from the
    /// verifier: the `Authorization` value for a request with these parts.
    fn sign(
        method: &str,
        path: &str,
        query: &BTreeMap<String, String>,
        headers: &BTreeMap<String, String>,
        body: &[u8],
    ) -> String {
        let q: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect();
        let h: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let names = headers.keys().cloned().collect::<Vec<_>>().join(";");
        let canonical = format!(
            "{method}\n{path}\n{}\n{h}\n{names}\n{}",
            q.join("&"),
            hex::encode(Sha256::digest(body))
        );
        let scope = format!("{}/us-east-1/ec2/aws4_request", &DATE[..8]);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{DATE}\n{scope}\n{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let mut key = [b"AWS4", SECRET].concat();
        for part in [&DATE[..8], "us-east-1", "ec2", "aws4_request"] {
            key = hmac(&key, part.as_bytes()).to_vec();
        }
        format!(
            "AWS4-HMAC-SHA256 Credential=AKID/{scope}, SignedHeaders={names}, Signature={}",
            hex::encode(hmac(&key, to_sign.as_bytes()))
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
        let policy = Policy {
            service: "ec2",
            region: Some("us-east-1"),
            now: UNIX_EPOCH + Duration::from_secs(parse_timestamp(DATE).unwrap() as u64),
            max_skew: DEFAULT_SKEW,
        };
        verify(&request, &policy, |id| (id == "AKID").then_some(SECRET)).is_ok()
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

        /// A request signed by the documented rules verifies; any one byte
        /// of its query, of a signed header's value or of its body changed,
        /// and it fails, unless the query still decodes to the same pairs.
        #[test]
        fn accepts_what_is_signed_and_nothing_else(
            post in any::<bool>(),
            path in "(/[a-z0-9]{1,5}){0,3}",
            query in proptest::collection::btree_map("[A-Za-z][A-Za-z0-9]{0,6}", "\\PC{0,10}", 0..4),
            extra in proptest::collection::btree_map("x-amz-meta-[a-z]{1,4}", "[!-~]{1,12}", 0..3),
            body in proptest::collection::vec(any::<u8>(), 0..40),
            part in 0..3usize,
            at in any::<prop::sample::Index>(),
            to in any::<u8>(),
        ) {
            let method = if post { "POST" } else { "GET" };
            let path = if path.is_empty() { "/".to_owned() } else { path };
            let mut signed = extra;
            signed.insert("host".into(), "ec2.example".into());
            signed.insert("x-amz-date".into(), DATE.into());
            let authorization = sign(method, &path, &query, &signed, &body);
            let raw_query = query.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&");
            let mut headers: Vec<(String, Vec<u8>)> =
                signed.iter().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect();
            headers.push(("authorization".into(), authorization.into_bytes()));
            prop_assert!(check(method, &path, &raw_query, &headers, &body));

            match part {
                0 => {
                    let changed = mutate(raw_query.as_bytes(), at, to);
                    let changed = changed.and_then(|q| String::from_utf8(q).ok());
                    prop_assume!(changed.is_some());
                    let changed = changed.unwrap();
                    if check(method, &path, &changed, &headers, &body) {
                        prop_assert_eq!(decode_query(&changed), decode_query(&raw_query));
                    }
                }
                1 => {
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

        /// Whatever arrives, checking it never panics.
        #[test]
        fn never_panics(
            path in "\\PC{0,20}",
            query in "(X-Amz-[A-Za-z]{1,10}=[ -~]{0,20}&?){0,6}",
            authorization in "(AWS4-HMAC-SHA256 )?(Credential=[ -~]{0,40}, ?)?(SignedHeaders=[a-z;-]{0,20}, ?)?(Signature=[0-9a-f]{0,64})?",
            date in "[0-9]{8}T[0-9]{6}Z|\\PC{0,16}",
            body in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let headers = [
                ("host".to_owned(), b"h".to_vec()),
                ("x-amz-date".to_owned(), date.into_bytes()),
                ("authorization".to_owned(), authorization.into_bytes()),
            ];
            let _ = check("GET", &path, &query, &headers, &body);
            let _ = check("GET", &path, &query, &headers[..2], &body);
        }
    }
}
