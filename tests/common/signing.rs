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
    let now = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
        ))
        .unwrap();
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
    use sha2::Digest;
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let now = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
        ))
        .unwrap();
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
