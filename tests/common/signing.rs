//! Signature 1.0 requests built by hand, for what the SDKs will not send: old
//! timestamps, replayed nonces, unknown actions.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;
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
