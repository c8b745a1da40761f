//! The two ways Alibaba's SDKs sign a request, recomputed here to check them.
//!
//! - Signature 1.0 (`aliyun-python-sdk-core`): HMAC-SHA1 over the method and
//!   the sorted, percent-encoded parameters, keyed with `secret + "&"`, base64.
//! - ACS3-HMAC-SHA256 (`alibabacloud-ecs20140526` and other Tea SDKs): HMAC-SHA256
//!   over a canonical request (method, path, sorted query, signed headers,
//!   SHA-256 of the body), hex, in the `Authorization` header.
//!
//! Comparisons go through `Mac::verify_slice`, which is constant-time.

use base64::Engine;
use hmac::{Hmac, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::params::Params;

/// RFC 3986: everything but `A-Z a-z 0-9 - _ . ~` is escaped, in uppercase hex.
const RFC3986: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

pub fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, RFC3986).to_string()
}

/// Checks a signature 1.0 request: `params` are all of its parameters,
/// `Signature` included (and left out of the computation).
pub fn verify_v1(method: &str, params: &Params, secret: &str) -> bool {
    let Some(given) = params.get("Signature") else {
        return false;
    };
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(given) else {
        return false;
    };
    let mut mac =
        Hmac::<Sha1>::new_from_slice(format!("{secret}&").as_bytes()).expect("HMAC takes any key");
    mac.update(v1_string_to_sign(method, params).as_bytes());
    mac.verify_slice(&given).is_ok()
}

fn v1_string_to_sign(method: &str, params: &Params) -> String {
    let canonical = params
        .iter()
        .filter(|(name, _)| *name != "Signature")
        .map(|(name, value)| format!("{}={}", percent_encode(name), percent_encode(value)))
        .collect::<Vec<_>>()
        .join("&");
    format!(
        "{method}&{}&{}",
        percent_encode("/"),
        percent_encode(&canonical)
    )
}

/// The parts of an `Authorization: ACS3-HMAC-SHA256 …` header.
#[derive(Debug, PartialEq, Eq)]
pub struct Acs3Authorization {
    pub access_key_id: String,
    /// Lowercase header names, in the order given.
    pub signed_headers: Vec<String>,
    pub signature: String,
}

pub const ACS3: &str = "ACS3-HMAC-SHA256";

impl Acs3Authorization {
    /// Parses `ACS3-HMAC-SHA256 Credential=AK,SignedHeaders=a;b,Signature=hex`.
    pub fn parse(header: &str) -> Option<Self> {
        let rest = header.strip_prefix(ACS3)?.strip_prefix(' ')?;
        let (mut credential, mut signed, mut signature) = (None, None, None);
        for part in rest.split(',') {
            let (name, value) = part.trim().split_once('=')?;
            let slot = match name {
                "Credential" => &mut credential,
                "SignedHeaders" => &mut signed,
                "Signature" => &mut signature,
                _ => return None,
            };
            if slot.replace(value.to_owned()).is_some() {
                return None;
            }
        }
        let signed_headers: Vec<String> = signed?.split(';').map(str::to_ascii_lowercase).collect();
        Some(Self {
            access_key_id: credential.filter(|c| !c.is_empty())?,
            signed_headers,
            signature: signature?,
        })
    }
}

/// What an ACS3 signature covers, taken from the request as received.
pub struct Acs3Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The decoded query parameters.
    pub query: &'a Params,
    /// Value of each signed header, in `signed_headers` order (`None`: absent).
    pub header: &'a dyn Fn(&str) -> Option<String>,
    pub body: &'a [u8],
}

/// Checks an ACS3 signature. The body's hash must also match the
/// `x-acs-content-sha256` header, which the SDK signs.
pub fn verify_acs3(auth: &Acs3Authorization, request: &Acs3Request<'_>, secret: &str) -> bool {
    let Some(canonical) = acs3_canonical_request(auth, request) else {
        return false;
    };
    let string_to_sign = format!("{ACS3}\n{}", hex(&Sha256::digest(canonical.as_bytes())));
    let Some(given) = unhex(&auth.signature) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(string_to_sign.as_bytes());
    mac.verify_slice(&given).is_ok()
}

fn acs3_canonical_request(auth: &Acs3Authorization, r: &Acs3Request<'_>) -> Option<String> {
    let body_hash = hex(&Sha256::digest(r.body));
    if (r.header)("x-acs-content-sha256")? != body_hash {
        return None;
    }
    let query = r
        .query
        .iter()
        .map(|(name, value)| format!("{}={}", percent_encode(name), percent_encode(value)))
        .collect::<Vec<_>>()
        .join("&");
    let mut headers = String::new();
    for name in &auth.signed_headers {
        let value = (r.header)(name)?;
        headers.push_str(&format!("{name}:{}\n", value.trim()));
    }
    Some(format!(
        "{}\n{}\n{query}\n{headers}\n{}\n{body_hash}",
        r.method,
        r.path,
        auth.signed_headers.join(";")
    ))
}

fn hex(bytes: &[u8]) -> String {
    crate::capture::hex(bytes)
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_is_rfc3986() {
        assert_eq!(percent_encode("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(percent_encode("a b*c+d/é"), "a%20b%2Ac%2Bd%2F%C3%A9");
        assert_eq!(
            percent_encode("2014-05-26T12:00:00Z"),
            "2014-05-26T12%3A00%3A00Z"
        );
    }

    #[test]
    fn v1_matches_alibabas_documented_example() {
        // The worked example of Alibaba's signature 1.0 documentation
        // (DescribeRegions, secret "testsecret").
        let query =
            "AccessKeyId=testid&Action=DescribeRegions&Format=XML&SignatureMethod=HMAC-SHA1\
                     &SignatureNonce=3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf&SignatureVersion=1.0\
                     &Timestamp=2016-02-23T12%3A46%3A24Z&Version=2014-05-26";
        let params = Params::parse(query, b"").unwrap();
        let expected = "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML\
                        %26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf\
                        %26SignatureVersion%3D1.0%26Timestamp%3D2016-02-23T12%253A46%253A24Z%26Version%3D2014-05-26";
        assert_eq!(v1_string_to_sign("GET", &params), expected);
        let signed = Params::parse(
            &format!("{query}&Signature=OLeaidS1JvxuMvnyHOwuJ%2BuX5qY%3D"),
            b"",
        )
        .unwrap();
        assert!(verify_v1("GET", &signed, "testsecret"));
        assert!(!verify_v1("GET", &signed, "wrongsecret"));
        assert!(!verify_v1("POST", &signed, "testsecret"));
    }

    #[test]
    fn acs3_authorization_parses_strictly() {
        let a = Acs3Authorization::parse(
            "ACS3-HMAC-SHA256 Credential=AK1,SignedHeaders=host;x-acs-date,Signature=abcdef",
        )
        .unwrap();
        assert_eq!(a.access_key_id, "AK1");
        assert_eq!(a.signed_headers, ["host", "x-acs-date"]);
        assert_eq!(a.signature, "abcdef");
        for bad in [
            "ACS3-HMAC-SHA256",
            "ACS3-HMAC-SHA1 Credential=a,SignedHeaders=h,Signature=s",
            "ACS3-HMAC-SHA256 Credential=a,SignedHeaders=h",
            "ACS3-HMAC-SHA256 Credential=,SignedHeaders=h,Signature=s",
            "ACS3-HMAC-SHA256 Credential=a,Credential=b,SignedHeaders=h,Signature=s",
            "ACS3-HMAC-SHA256 Credential=a,SignedHeaders=h,Signature=s,Extra=1",
        ] {
            assert!(Acs3Authorization::parse(bad).is_none(), "{bad}");
        }
    }
}
