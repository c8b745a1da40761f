//! Signature 1.0 requests built by hand, for what the SDKs will not send: old
//! timestamps, replayed nonces, unknown actions.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;
use vmshot::api::alibaba::percent_encode;

/// A query string signed for `method` with `secret`: `params` plus the common
/// parameters (`Timestamp` and `SignatureNonce` may be overridden in `params`).
pub fn signed_query(method: &str, key_id: &str, secret: &str, params: &[(&str, &str)]) -> String {
    let now = alibaba_date(0);
    let nonce = uuid::Uuid::new_v4().to_string();
    let mut all: Vec<(String, String)> = vec![
        ("AccessKeyId".into(), key_id.into()),
        ("Format".into(), "JSON".into()),
        ("SignatureMethod".into(), "HMAC-SHA1".into()),
        ("SignatureVersion".into(), "1.0".into()),
        ("SignatureNonce".into(), nonce),
        ("Timestamp".into(), now),
        ("Version".into(), "2014-05-26".into()),
    ];
    for (name, value) in params {
        all.retain(|(n, _)| n != name);
        all.push(((*name).into(), (*value).into()));
    }
    all.sort();
    let canonical = all
        .iter()
        .map(|(n, v)| format!("{}={}", percent_encode(n), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let to_sign = format!("{method}&%2F&{}", percent_encode(&canonical));
    let mut mac = Hmac::<Sha1>::new_from_slice(format!("{secret}&").as_bytes()).unwrap();
    mac.update(to_sign.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("{canonical}&Signature={}", percent_encode(&signature))
}

/// Headers of an ACS3-HMAC-SHA256 request, signed as the Tea SDKs sign:
/// `host` (unless empty), `x-acs-*` and `Authorization`. `query` is sent as
/// given and must hold only unreserved characters.
pub fn acs3_headers(
    method: &str,
    query: &str,
    host: &str,
    body: &[u8],
    key_id: &str,
    secret: &str,
) -> Vec<(String, String)> {
    acs3_headers_at(0, method, query, host, body, (key_id, secret))
}

/// `acs3_headers`, dated `skew_secs` from now (negative: in the past).
pub fn acs3_headers_at(
    skew_secs: i64,
    method: &str,
    query: &str,
    host: &str,
    body: &[u8],
    (key_id, secret): (&str, &str),
) -> Vec<(String, String)> {
    use sha2::Digest;
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let now = alibaba_date(skew_secs);
    let mut headers: Vec<(String, String)> = vec![
        ("accept".into(), "application/json".into()),
        ("x-acs-content-sha256".into(), hex(&Sha256::digest(body))),
        ("x-acs-date".into(), now),
        (
            "x-acs-signature-nonce".into(),
            uuid::Uuid::new_v4().simple().to_string(),
        ),
        ("x-acs-version".into(), "2014-05-26".into()),
    ];
    if !host.is_empty() {
        headers.push(("host".into(), host.into()));
    }
    headers.sort();
    let mut pairs: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    pairs.sort();
    let canonical_headers: String = headers.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let signed: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    let signed = signed.join(";");
    let canonical = format!(
        "{method}\n/\n{}\n{canonical_headers}\n{signed}\n{}",
        pairs.join("&"),
        hex(&Sha256::digest(body))
    );
    let to_sign = format!(
        "ACS3-HMAC-SHA256\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(to_sign.as_bytes());
    let signature = hex(&mac.finalize().into_bytes());
    for (name, _) in headers.iter_mut() {
        if name == "host" {
            *name = "Host".into();
        }
    }
    headers.push((
        "Authorization".into(),
        format!(
            "ACS3-HMAC-SHA256 Credential={key_id},SignedHeaders={signed},Signature={signature}"
        ),
    ));
    headers
}

/// A signed GetInstanceScreenshot of `instance`, as the query of `GET /`.
pub fn screenshot_query(key: &str, secret: &str, instance: &str) -> String {
    signed_query(
        "GET",
        key,
        secret,
        &[
            ("Action", "GetInstanceScreenshot"),
            ("RegionId", "cn-test"),
            ("InstanceId", instance),
        ],
    )
}

/// A date as Alibaba's signatures carry it (`2026-11-30T05:13:25Z`),
/// `skew_secs` from now (negative: in the past).
pub fn alibaba_date(skew_secs: i64) -> String {
    (time::OffsetDateTime::now_utc() + time::Duration::seconds(skew_secs))
        .format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
        ))
        .unwrap()
}

/// A date as SigV4 and SDK-HMAC-SHA256 sign it (`20261130T051325Z`),
/// `skew_secs` from now (negative: in the past).
pub fn basic_date(skew_secs: i64) -> String {
    (time::OffsetDateTime::now_utc() + time::Duration::seconds(skew_secs))
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(Sha256::digest(bytes))
}

fn hmac_sha256(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The canonical request SigV4 and SDK-HMAC-SHA256 share, and the signed
/// header names: `query` is already canonical (sorted, encoded), `headers`
/// have lowercase names.
fn canonical_request(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (String, String) {
    let mut headers = headers.to_vec();
    headers.sort();
    let lines: String = headers.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let signed = headers
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(";");
    let canonical = format!(
        "{method}\n{path}\n{query}\n{lines}\n{signed}\n{}",
        sha256_hex(body)
    );
    (canonical, signed)
}

/// `name=value` pairs percent-encoded (RFC 3986) and sorted: a canonical query.
pub fn canonical_query(pairs: &[(&str, &str)]) -> String {
    let mut encoded: Vec<String> = pairs
        .iter()
        .map(|(n, v)| format!("{}={}", percent_encode(n), percent_encode(v)))
        .collect();
    encoded.sort();
    encoded.join("&")
}

/// An EC2 call signed with SigV4 as botocore signs it, for `host` (which
/// the request must carry), dated `skew_secs` from now.
pub struct SigV4<'a> {
    pub key: (&'a str, &'a str),
    pub region: &'a str,
    pub host: &'a str,
    pub skew_secs: i64,
}

impl SigV4<'_> {
    fn scope(&self, date: &str) -> String {
        format!("{}/{}/ec2/aws4_request", &date[..8], self.region)
    }

    fn signature(&self, date: &str, canonical: &str) -> String {
        let scope = self.scope(date);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
            sha256_hex(canonical.as_bytes())
        );
        let mut key = format!("AWS4{}", self.key.1).into_bytes();
        for part in scope.split('/') {
            key = hmac_sha256(&key, part);
        }
        hex::encode(hmac_sha256(&key, &to_sign))
    }

    /// The headers of a GET of `path?query` (canonical) signed in `Authorization`.
    pub fn headers(&self, path: &str, query: &str) -> Vec<(String, String)> {
        let date = basic_date(self.skew_secs);
        let signed = [("host", self.host), ("x-amz-date", date.as_str())];
        let (canonical, names) = canonical_request("GET", path, query, &signed, b"");
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={}/{}, SignedHeaders={names}, Signature={}",
            self.key.0,
            self.scope(&date),
            self.signature(&date, &canonical)
        );
        vec![
            ("X-Amz-Date".into(), date),
            ("Authorization".into(), authorization),
        ]
    }

    /// The query of a presigned GET of `path` with `params`, good for
    /// `expires` seconds from its date.
    pub fn presigned(&self, path: &str, params: &[(&str, &str)], expires: u64) -> String {
        let date = basic_date(self.skew_secs);
        let credential = format!("{}/{}", self.key.0, self.scope(&date));
        let expires = expires.to_string();
        let mut all = params.to_vec();
        all.extend([
            ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
            ("X-Amz-Credential", credential.as_str()),
            ("X-Amz-Date", date.as_str()),
            ("X-Amz-Expires", expires.as_str()),
            ("X-Amz-SignedHeaders", "host"),
        ]);
        let query = canonical_query(&all);
        let (canonical, _) = canonical_request("GET", path, &query, &[("host", self.host)], b"");
        format!(
            "{query}&X-Amz-Signature={}",
            self.signature(&date, &canonical)
        )
    }
}

/// `X-Sdk-Date` and `Authorization` for a call signed as huaweicloudsdkcore
/// signs it: `headers` (lowercase, `host` among them) all signed, the path
/// with its trailing `/`, dated `skew_secs` from now.
pub fn huawei_headers(
    (ak, sk): (&str, &str),
    method: &str,
    path: &str,
    query: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    skew_secs: i64,
) -> Vec<(String, String)> {
    let date = basic_date(skew_secs);
    let mut signed = headers.to_vec();
    signed.push(("x-sdk-date", &date));
    let (canonical, names) = canonical_request(method, &format!("{path}/"), query, &signed, body);
    let to_sign = format!(
        "SDK-HMAC-SHA256\n{date}\n{}",
        sha256_hex(canonical.as_bytes())
    );
    let signature = hex::encode(hmac_sha256(sk.as_bytes(), &to_sign));
    vec![
        ("X-Sdk-Date".into(), date.clone()),
        (
            "Authorization".into(),
            format!("SDK-HMAC-SHA256 Access={ak}, SignedHeaders={names}, Signature={signature}"),
        ),
    ]
}
