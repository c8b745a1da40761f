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
