//! Alibaba RPC parameters: the query string and, on POST, a form body. Parsed
//! strictly: a malformed escape, invalid UTF-8 or a repeated name is an error,
//! because the signature is computed over exactly these values and a lenient
//! parser would sign something other than what it acts on.

use std::collections::BTreeMap;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    #[error("malformed percent-encoding in the request")]
    BadEscape,
    #[error("the request parameters are not valid UTF-8")]
    NotUtf8,
    #[error("the parameter {0} is given more than once")]
    Duplicate(String),
}

/// Decoded parameters, sorted by name (the order signatures want).
#[derive(Debug, Default, Clone)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    /// Parses `query` and then `body` (either may be empty) into one set.
    pub fn parse(query: &str, body: &[u8]) -> Result<Self, ParamsError> {
        let mut params = Self::default();
        params.add(query.as_bytes())?;
        params.add(body)?;
        Ok(params)
    }

    fn add(&mut self, encoded: &[u8]) -> Result<(), ParamsError> {
        for pair in encoded.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
            let (name, value) = match pair.iter().position(|b| *b == b'=') {
                Some(at) => (&pair[..at], &pair[at + 1..]),
                None => (pair, &b""[..]),
            };
            let name = decode(name)?;
            let value = decode(value)?;
            if self.0.contains_key(&name) {
                return Err(ParamsError::Duplicate(name));
            }
            self.0.insert(name, value);
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte.
fn decode(bytes: &[u8]) -> Result<String, ParamsError> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(ParamsError::BadEscape)?;
                // Two hex digits exactly: `from_str_radix` alone would also
                // take a sign, so `%+1` would pass for `%01`.
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return Err(ParamsError::BadEscape);
                }
                let hex = std::str::from_utf8(hex).map_err(|_| ParamsError::BadEscape)?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| ParamsError::BadEscape)?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| ParamsError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_body_merge_decoded() {
        let p = Params::parse(
            "Action=GetInstanceScreenshot&InstanceId=i-1&Empty=",
            b"A+B=c%20d%2B&Flag",
        )
        .unwrap();
        assert_eq!(p.get("Action"), Some("GetInstanceScreenshot"));
        assert_eq!(p.get("Empty"), Some(""));
        assert_eq!(p.get("A B"), Some("c d+"));
        assert_eq!(p.get("Flag"), Some(""));
        let names: Vec<_> = p.iter().map(|(k, _)| k).collect();
        assert_eq!(
            names,
            ["A B", "Action", "Empty", "Flag", "InstanceId"],
            "sorted by name"
        );
    }

    /// Found by `props::a_malformed_escape_is_refused`: `%+1` decoded as
    /// `%01`, since `u8::from_str_radix` takes a sign.
    #[test]
    fn an_escape_with_a_sign_is_refused() {
        for query in ["a=%+1", "a=%+f", "%-1=a"] {
            assert_eq!(
                Params::parse(query, b"").unwrap_err(),
                ParamsError::BadEscape
            );
        }
    }

    #[test]
    fn hostile_input_is_refused() {
        assert_eq!(
            Params::parse("a=%zz", b"").unwrap_err(),
            ParamsError::BadEscape
        );
        assert_eq!(
            Params::parse("a=%4", b"").unwrap_err(),
            ParamsError::BadEscape
        );
        assert_eq!(
            Params::parse("a=%", b"").unwrap_err(),
            ParamsError::BadEscape
        );
        assert_eq!(
            Params::parse("a=%ff", b"").unwrap_err(),
            ParamsError::NotUtf8
        );
        assert_eq!(
            Params::parse("", b"\xff=1").unwrap_err(),
            ParamsError::NotUtf8
        );
        assert_eq!(
            Params::parse("InstanceId=a&InstanceId=b", b"").unwrap_err(),
            ParamsError::Duplicate("InstanceId".into())
        );
        assert_eq!(
            Params::parse("InstanceId=a", b"InstanceId=b").unwrap_err(),
            ParamsError::Duplicate("InstanceId".into())
        );
    }
}

#[cfg(test)]
mod props {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::super::percent_encode;
    use super::*;

    /// Query-string-like bytes: the separators and escapes often.
    fn encoded() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            any::<u8>().prop_map(|b| vec![b]),
            Just(b"&".to_vec()),
            Just(b"=".to_vec()),
            Just(b"+".to_vec()),
            "%[0-9a-fA-F+-]{0,2}".prop_map(String::into_bytes),
            "[a-zA-Z0-9]{1,6}".prop_map(String::into_bytes),
        ];
        proptest::collection::vec(piece, 0..30).prop_map(|p| p.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// No more parameters than pieces, and no more text than was sent.
        #[test]
        fn parsing_is_bounded(query in encoded(), body in encoded()) {
            let query = String::from_utf8_lossy(&query).into_owned();
            if let Ok(params) = Params::parse(&query, &body) {
                let pieces = query.split('&').count() + body.split(|b| *b == b'&').count();
                prop_assert!(params.iter().count() <= pieces);
                let text: usize = params.iter().map(|(k, v)| k.len() + v.len()).sum();
                prop_assert!(text <= query.len() + body.len());
            }
        }

        /// What the SDKs encode is decoded back to itself, in the query or
        /// in a form body.
        #[test]
        fn encoded_parameters_round_trip(map in proptest::collection::btree_map("\\PC{1,8}", "\\PC{0,8}", 0..6)) {
            let encoded = map
                .iter()
                .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
                .collect::<Vec<_>>()
                .join("&");
            for params in [Params::parse(&encoded, b"").unwrap(), Params::parse("", encoded.as_bytes()).unwrap()] {
                let back: BTreeMap<String, String> =
                    params.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
                prop_assert_eq!(&back, &map);
            }
        }

        /// `%` is followed by two hex digits, or the request is refused: a
        /// lenient decoder would act on a value other than the one signed.
        #[test]
        fn a_malformed_escape_is_refused(
            before in "[a-z=]{0,4}",
            digits in "[0-9a-fA-F+ gzé&=%-]{0,2}".prop_filter("not two hex digits", |d| {
                d.len() != 2 || !d.bytes().all(|b| b.is_ascii_hexdigit())
            }),
        ) {
            let query = format!("{before}%{digits}");
            prop_assert_eq!(Params::parse(&query, b"").unwrap_err(), ParamsError::BadEscape, "{}", query);
        }
    }
}
