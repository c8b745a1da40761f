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

/// A signature that does not match, with the string vmshot signed: Alibaba
/// returns it in the error, and the classic SDK compares it with its own to
/// tell a wrong secret from a request changed on the way.
#[derive(Debug)]
pub struct Mismatch {
    pub string_to_sign: String,
}

/// Checks a signature 1.0 request: `params` are all of its parameters,
/// `Signature` included (and left out of the computation).
pub fn verify_v1(method: &str, params: &Params, secret: &str) -> Result<(), Mismatch> {
    let string_to_sign = v1_string_to_sign(method, params);
    let given = params
        .get("Signature")
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .unwrap_or_default();
    let mut mac =
        Hmac::<Sha1>::new_from_slice(format!("{secret}&").as_bytes()).expect("HMAC takes any key");
    mac.update(string_to_sign.as_bytes());
    mac.verify_slice(&given)
        .map_err(|_| Mismatch { string_to_sign })
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
        // Exactly what the SDKs write: 64 lowercase hex digits.
        let signature = signature.filter(|s| {
            s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })?;
        Some(Self {
            access_key_id: credential.filter(|c| !c.is_empty())?,
            signed_headers,
            signature,
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
pub fn verify_acs3(
    auth: &Acs3Authorization,
    request: &Acs3Request<'_>,
    secret: &str,
) -> Result<(), Mismatch> {
    let canonical = acs3_canonical_request(auth, request).unwrap_or_default();
    let string_to_sign = format!(
        "{ACS3}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let given = hex::decode(&auth.signature).unwrap_or_default();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(string_to_sign.as_bytes());
    // A missing signed header or a body that does not match its hash fails
    // here too: the canonical request is then empty and cannot match.
    match (
        acs3_canonical_request(auth, request),
        mac.verify_slice(&given),
    ) {
        (Some(_), Ok(())) => Ok(()),
        _ => Err(Mismatch { string_to_sign }),
    }
}

fn acs3_canonical_request(auth: &Acs3Authorization, r: &Acs3Request<'_>) -> Option<String> {
    let body_hash = hex::encode(Sha256::digest(r.body));
    if (r.header)("x-acs-content-sha256")? != body_hash {
        return None;
    }
    // As the Tea SDKs write it: names as they are, values percent-encoded.
    let query = r
        .query
        .iter()
        .map(|(name, value)| format!("{name}={}", percent_encode(value)))
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
        assert!(verify_v1("GET", &signed, "testsecret").is_ok());
        let mismatch = verify_v1("GET", &signed, "wrongsecret").unwrap_err();
        assert_eq!(mismatch.string_to_sign, expected);
        assert!(verify_v1("POST", &signed, "testsecret").is_err());
    }

    /// A request captured from an official SDK (tests/sdk/vectors, made by
    /// tests/sdk/alibaba.py against a recording server).
    struct Vector {
        method: String,
        target: String,
        headers: Vec<(String, String)>,
        body: String,
        secret: String,
    }

    fn vector(json: &str) -> Vector {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        Vector {
            method: v["method"].as_str().unwrap().into(),
            target: v["target"].as_str().unwrap().into(),
            headers: v["headers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| (h[0].as_str().unwrap().into(), h[1].as_str().unwrap().into()))
                .collect(),
            body: v["body"].as_str().unwrap().into(),
            secret: v["secret"].as_str().unwrap().into(),
        }
    }

    impl Vector {
        fn query(&self) -> &str {
            self.target.split_once('?').map_or("", |(_, q)| q)
        }

        fn header(&self, name: &str) -> Option<String> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn the_classic_sdks_own_request_verifies() {
        let v = vector(include_str!("../../../tests/sdk/vectors/classic.json"));
        let params = Params::parse(v.query(), v.body.as_bytes()).unwrap();
        assert!(verify_v1(&v.method, &params, &v.secret).is_ok());
        assert!(verify_v1(&v.method, &params, "other").is_err());
        let tampered =
            Params::parse(&v.query().replace("cn-test", "cn-tesu"), v.body.as_bytes()).unwrap();
        assert!(verify_v1(&v.method, &tampered, &v.secret).is_err());
    }

    #[test]
    fn the_tea_sdks_own_request_verifies() {
        let v = vector(include_str!("../../../tests/sdk/vectors/tea.json"));
        let auth = Acs3Authorization::parse(&v.header("authorization").unwrap()).unwrap();
        assert_eq!(auth.access_key_id, "testkey");
        let query = Params::parse(v.query(), b"").unwrap();
        let lookup = |name: &str| v.header(name);
        let ok = Acs3Request {
            method: &v.method,
            path: "/",
            query: &query,
            header: &lookup,
            body: v.body.as_bytes(),
        };
        assert!(verify_acs3(&auth, &ok, &v.secret).is_ok());
        assert!(verify_acs3(&auth, &ok, "other").is_err());
        let other_body = Acs3Request { body: b"x=1", ..ok };
        assert!(
            verify_acs3(&auth, &other_body, &v.secret).is_err(),
            "body must match its signed hash"
        );
        let other_host = |name: &str| {
            if name == "host" {
                Some("evil:1".into())
            } else {
                v.header(name)
            }
        };
        let moved = Acs3Request {
            header: &other_host,
            ..ok
        };
        assert!(
            verify_acs3(&auth, &moved, &v.secret).is_err(),
            "signed headers are covered"
        );
    }

    #[test]
    fn acs3_authorization_parses_strictly() {
        let hex = "0123456789abcdef".repeat(4);
        let a = Acs3Authorization::parse(&format!(
            "ACS3-HMAC-SHA256 Credential=AK1,SignedHeaders=host;x-acs-date,Signature={hex}"
        ))
        .unwrap();
        assert_eq!(a.access_key_id, "AK1");
        assert_eq!(a.signed_headers, ["host", "x-acs-date"]);
        assert_eq!(a.signature, hex);
        let loose = [
            hex.to_uppercase(),
            hex.replacen('0', "+", 1),
            hex[..62].to_owned(),
            format!("{hex}00"),
            format!(" {}", &hex[1..]),
        ];
        for signature in loose {
            let header =
                format!("ACS3-HMAC-SHA256 Credential=a,SignedHeaders=h,Signature={signature}");
            assert!(Acs3Authorization::parse(&header).is_none(), "{signature}");
        }
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

#[cfg(test)]
mod props {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// A signer written from Alibaba's documentation, separately from the
    /// verifier: signature 1.0 over the query string it returns.
    fn sign_v1(method: &str, params: &BTreeMap<String, String>, secret: &str) -> String {
        let enc = |s: &str| utf8_percent_encode(s, RFC3986).to_string();
        let pairs: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect();
        let to_sign = format!("{method}&%2F&{}", enc(&pairs.join("&")));
        let mut mac = Hmac::<Sha1>::new_from_slice(format!("{secret}&").as_bytes()).unwrap();
        mac.update(to_sign.as_bytes());
        let signature =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        format!("{}&Signature={}", pairs.join("&"), enc(&signature))
    }

    /// The same for ACS3: the `Authorization` value over the given headers.
    fn sign_acs3(
        method: &str,
        path: &str,
        query: &BTreeMap<String, String>,
        headers: &BTreeMap<String, String>,
        body: &[u8],
        secret: &str,
    ) -> String {
        let enc = |s: &str| utf8_percent_encode(s, RFC3986).to_string();
        let q: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{k}={}", enc(v)))
            .collect();
        let h: String = headers
            .iter()
            .map(|(k, v)| format!("{k}:{}\n", v.trim()))
            .collect();
        let names: Vec<&str> = headers.keys().map(String::as_str).collect();
        let canonical = format!(
            "{method}\n{path}\n{}\n{h}\n{}\n{}",
            q.join("&"),
            names.join(";"),
            hex::encode(Sha256::digest(body))
        );
        let to_sign = format!(
            "{ACS3}\n{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(to_sign.as_bytes());
        format!(
            "{ACS3} Credential=AK,SignedHeaders={},Signature={}",
            names.join(";"),
            hex::encode(mac.finalize().into_bytes())
        )
    }

    fn values() -> impl Strategy<Value = BTreeMap<String, String>> {
        proptest::collection::btree_map("[A-Za-z][A-Za-z0-9]{0,6}", "\\PC{0,10}", 1..5)
    }

    /// Every parameter of a query string, decoded.
    fn decoded(query: &[u8]) -> Option<Vec<(String, String)>> {
        let p = Params::parse(std::str::from_utf8(query).ok()?, b"").ok()?;
        Some(p.iter().map(|(k, v)| (k.into(), v.into())).collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// A request signed by the documented rules verifies; changing any
        /// one byte of it on the way (query, method) makes it fail, unless
        /// the change decodes to the very same parameters (`%2f` for `%2F`).
        #[test]
        fn v1_accepts_what_is_signed_and_nothing_else(
            params in values(),
            secret in "[ -~]{1,20}",
            post in any::<bool>(),
            at in any::<prop::sample::Index>(),
            to in any::<u8>(),
        ) {
            let method = if post { "POST" } else { "GET" };
            let query = sign_v1(method, &params, &secret);
            let signed = Params::parse(&query, b"").unwrap();
            prop_assert!(verify_v1(method, &signed, &secret).is_ok(), "{}", query);
            let other = if post { "GET" } else { "POST" };
            prop_assert!(verify_v1(other, &signed, &secret).is_err());

            let mut bytes = query.clone().into_bytes();
            let i = at.index(bytes.len());
            prop_assume!(bytes[i] != to);
            bytes[i] = to;
            let held = std::str::from_utf8(&bytes)
                .ok()
                .and_then(|q| Params::parse(q, b"").ok())
                .is_some_and(|p| verify_v1(method, &p, &secret).is_ok());
            if held {
                prop_assert_eq!(decoded(&bytes), decoded(query.as_bytes()));
            }
        }

        /// The same for ACS3: any byte of a signed header value, of the
        /// body or of the path changed, and the signature fails.
        #[test]
        fn acs3_accepts_what_is_signed_and_nothing_else(
            query in values(),
            extra in proptest::collection::btree_map("x-acs-[a-z]{1,6}", "[!-~][ -~]{0,10}[!-~]", 0..3),
            body in proptest::collection::vec(any::<u8>(), 0..40),
            secret in "[ -~]{1,20}",
            part in 0..3usize,
            at in any::<prop::sample::Index>(),
            to in any::<u8>(),
        ) {
            let mut headers = extra;
            headers.insert("host".into(), "ecs.example".into());
            headers.insert("x-acs-content-sha256".into(), hex::encode(Sha256::digest(&body)));
            let authorization = sign_acs3("POST", "/", &query, &headers, &body, &secret);
            let auth = Acs3Authorization::parse(&authorization).unwrap();
            let params = Params::parse(
                &query.iter().map(|(k, v)| format!("{k}={}", percent_encode(v))).collect::<Vec<_>>().join("&"),
                b"",
            ).unwrap();
            let check = |path: &str, headers: &BTreeMap<String, String>, body: &[u8]| {
                let lookup = |name: &str| headers.get(name).cloned();
                let request = Acs3Request { method: "POST", path, query: &params, header: &lookup, body };
                verify_acs3(&auth, &request, &secret).is_ok()
            };
            prop_assert!(check("/", &headers, &body));

            let mutate = |s: &[u8]| -> Option<Vec<u8>> {
                let mut s = s.to_vec();
                let i = at.index(s.len().max(1));
                (i < s.len() && s[i] != to).then(|| { s[i] = to; s })
            };
            match part {
                0 => {
                    let name = headers.keys().nth(at.index(headers.len())).unwrap().clone();
                    let value = mutate(headers[&name].as_bytes());
                    let value = value.and_then(|v| String::from_utf8(v).ok());
                    prop_assume!(value.as_ref().is_some_and(|v| v.trim() != headers[&name].trim()));
                    let mut changed = headers.clone();
                    changed.insert(name, value.unwrap());
                    prop_assert!(!check("/", &changed, &body));
                }
                1 => {
                    let changed = mutate(&body);
                    prop_assume!(changed.is_some());
                    prop_assert!(!check("/", &headers, &changed.unwrap()));
                }
                _ => prop_assert!(!check("/x", &headers, &body)),
            }
        }

        /// Whatever the header, parsing it never panics, and what it accepts
        /// has the SDKs' shape.
        #[test]
        fn acs3_authorization_never_panics(header in "(ACS3-HMAC-SHA256 )?[ -~]{0,120}") {
            if let Some(auth) = Acs3Authorization::parse(&header) {
                prop_assert_eq!(auth.signature.len(), 64);
                prop_assert!(!auth.access_key_id.is_empty());
            }
        }
    }
}
