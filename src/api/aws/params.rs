//! EC2 Query API parameters: the query string and, on `POST` with
//! `application/x-www-form-urlencoded`, the body. Parsed whole before anything
//! acts on them: a bad escape, invalid UTF-8, a repeated or unknown name, or a
//! field over its limit refuses the request, so what was signed is what runs.

use std::collections::BTreeMap;

/// The only API version vmshot speaks, the one boto3 sends for EC2.
pub const VERSION: &str = "2016-11-15";
pub const SCREENSHOT: &str = "GetConsoleScreenshot";
pub const CONSOLE_OUTPUT: &str = "GetConsoleOutput";

/// Limits: a GetConsoleScreenshot needs a handful of short parameters (a
/// presigned URL adds six), so anything much larger is not a real client.
pub const MAX_ENCODED: usize = 16 * 1024;
pub const MAX_PARAMS: usize = 32;
pub const MAX_NAME: usize = 64;
pub const MAX_VALUE: usize = 2048;
pub const MAX_INSTANCE_ID: usize = 256;

/// The names either action may carry: theirs, and SigV4's presigned ones,
/// which the signature check reads from the same query string. Each action's
/// own one (`WakeUp`, `Latest`) is checked apart.
const KNOWN: &[&str] = &[
    "Action",
    "Version",
    "InstanceId",
    "DryRun",
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("the request is not GET or POST ({0})")]
    Method(String),
    #[error("a POST body must be application/x-www-form-urlencoded")]
    BodyType,
    #[error("malformed percent-encoding in the request parameters")]
    BadEscape,
    #[error("the request parameters are not valid UTF-8")]
    NotUtf8,
    #[error("the request parameters are longer than {MAX_ENCODED} bytes")]
    TooLong,
    #[error("the request has more than {MAX_PARAMS} parameters")]
    TooMany,
    #[error("a parameter name or value is over its length limit")]
    FieldTooLong,
    #[error("the parameter {0} is given more than once")]
    Duplicate(String),
    #[error("the parameter {0} is not recognized")]
    Unknown(String),
    #[error("the request has no Action")]
    MissingAction,
    #[error("the action {0} is not valid for this web service")]
    InvalidAction(String),
    #[error("the request must contain the parameter {0}")]
    Missing(&'static str),
    #[error("the requested version ({0}) of service AmazonEC2 does not exist")]
    Version(String),
    #[error("invalid id: {0:?}")]
    InstanceId(String),
    #[error("value ({value}) for parameter {name} is invalid: expected true or false")]
    Bool { name: &'static str, value: String },
}

/// A GetConsoleScreenshot, as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScreenshotRequest {
    /// An EC2 id (`i-` + hex), a libvirt name or a UUID: checked for its
    /// characters and length only, looked up by the caller.
    pub instance_id: String,
    pub wake_up: bool,
    pub dry_run: bool,
}

/// A GetConsoleOutput, as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleOutputRequest {
    /// As `ScreenshotRequest::instance_id`.
    pub instance_id: String,
    /// Read the log now: vmshot always does, so this changes nothing.
    pub latest: bool,
    pub dry_run: bool,
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Asked {
    Screenshot(ScreenshotRequest),
    ConsoleOutput(ConsoleOutputRequest),
}

/// Decoded parameters by name, from the query and the form body together.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    /// Parses the raw `query` (without `?`) and, for a form `POST`, the body.
    /// In the query a `+` is a literal plus, as SigV4 canonicalises it; in the
    /// form body it is a space, as HTML forms and botocore write it.
    pub fn parse(
        method: &str,
        query: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Self, ParamError> {
        let form = match method {
            "GET" => false,
            "POST" => content_type.is_some_and(is_form),
            other => return Err(ParamError::Method(truncate(other, 16))),
        };
        if !form && !body.is_empty() {
            return Err(ParamError::BodyType);
        }
        if query.len() + body.len() > MAX_ENCODED {
            return Err(ParamError::TooLong);
        }
        let mut params = Self::default();
        params.add(query.as_bytes(), false)?;
        if form {
            params.add(body, true)?;
        }
        Ok(params)
    }

    fn add(&mut self, encoded: &[u8], plus_is_space: bool) -> Result<(), ParamError> {
        for (name, value) in split_pairs(encoded) {
            if self.0.len() == MAX_PARAMS {
                return Err(ParamError::TooMany);
            }
            if name.len() > MAX_NAME * 3 || value.len() > MAX_VALUE * 3 {
                return Err(ParamError::FieldTooLong);
            }
            let name = utf8(percent_decode(name, plus_is_space).ok_or(ParamError::BadEscape)?)?;
            let value = utf8(percent_decode(value, plus_is_space).ok_or(ParamError::BadEscape)?)?;
            if name.len() > MAX_NAME || value.len() > MAX_VALUE {
                return Err(ParamError::FieldTooLong);
            }
            if self.0.contains_key(&name) {
                return Err(ParamError::Duplicate(name));
            }
            self.0.insert(name, value);
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// The request these parameters ask for. Checked in EC2's order: the
    /// action and version first, then unknown names, then each field.
    pub fn request(&self) -> Result<Asked, ParamError> {
        let own = match self.get("Action") {
            None | Some("") => return Err(ParamError::MissingAction),
            Some(SCREENSHOT) => "WakeUp",
            Some(CONSOLE_OUTPUT) => "Latest",
            Some(other) => return Err(ParamError::InvalidAction(truncate(other, 64))),
        };
        match self.get("Version") {
            None | Some("") => return Err(ParamError::Missing("Version")),
            Some(VERSION) => {}
            Some(other) => return Err(ParamError::Version(truncate(other, 64))),
        }
        if let Some(name) = self
            .0
            .keys()
            .find(|k| *k != own && !KNOWN.contains(&k.as_str()))
        {
            return Err(ParamError::Unknown(truncate(name, MAX_NAME)));
        }
        let instance_id = match self.get("InstanceId") {
            None | Some("") => return Err(ParamError::Missing("InstanceId")),
            Some(id) if valid_instance_id(id) => id.to_owned(),
            Some(id) => return Err(ParamError::InstanceId(truncate(id, 64))),
        };
        let dry_run = self.flag("DryRun")?;
        Ok(if own == "WakeUp" {
            Asked::Screenshot(ScreenshotRequest {
                instance_id,
                wake_up: self.flag("WakeUp")?,
                dry_run,
            })
        } else {
            Asked::ConsoleOutput(ConsoleOutputRequest {
                instance_id,
                latest: self.flag("Latest")?,
                dry_run,
            })
        })
    }

    fn flag(&self, name: &'static str) -> Result<bool, ParamError> {
        match self.get(name) {
            None => Ok(false),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(v) => Err(ParamError::Bool {
                name,
                value: truncate(v, 16),
            }),
        }
    }
}

/// `application/x-www-form-urlencoded`, with or without parameters
/// (botocore adds `; charset=utf-8`).
fn is_form(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/x-www-form-urlencoded")
}

/// EC2 ids (`i-` and 8 or 17 hex digits), libvirt UUIDs and the usual libvirt
/// names: letters, digits and `. _ - + : @`. Nothing that needs escaping in
/// XML, a log line or a shell, so an id is safe to echo back.
pub fn valid_instance_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_INSTANCE_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+:@".contains(&b))
}

/// `name=value` pieces of an encoded string; empty pieces are skipped and a
/// piece without `=` has an empty value.
pub(super) fn split_pairs(encoded: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    encoded
        .split(|b| *b == b'&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.iter().position(|b| *b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &b""[..]),
        })
}

/// Strict percent-decoding: `%` must be followed by two hex digits. `None`
/// for a malformed escape, so no two encodings of one request decode alike.
pub(super) fn percent_decode(bytes: &[u8], plus_is_space: bool) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' => {
                let hi = hex_digit(*bytes.get(i + 1)?)?;
                let lo = hex_digit(*bytes.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Some(out)
}

fn hex_digit(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn utf8(bytes: Vec<u8>) -> Result<String, ParamError> {
    String::from_utf8(bytes).map_err(|_| ParamError::NotUtf8)
}

/// At most `max` bytes of `s`, cut on a character boundary, for messages
/// that echo a value back.
pub(super) fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORM: Option<&str> = Some("application/x-www-form-urlencoded; charset=utf-8");

    fn parse(method: &str, query: &str, body: &str) -> Result<ScreenshotRequest, ParamError> {
        match Params::parse(method, query, FORM, body.as_bytes())?.request()? {
            Asked::Screenshot(r) => Ok(r),
            other => panic!("not a screenshot: {other:?}"),
        }
    }

    #[test]
    fn boto3_get_console_output() {
        // What botocore sends for ec2.get_console_output(InstanceId=…, Latest=True).
        let body =
            "Action=GetConsoleOutput&Version=2016-11-15&InstanceId=i-0123456789abcdef0&Latest=true";
        let p = Params::parse("POST", "", FORM, body.as_bytes()).unwrap();
        assert_eq!(
            p.request().unwrap(),
            Asked::ConsoleOutput(ConsoleOutputRequest {
                instance_id: "i-0123456789abcdef0".into(),
                latest: true,
                dry_run: false,
            })
        );
        // Each action's own parameter is unknown to the other.
        let wake = "Action=GetConsoleOutput&Version=2016-11-15&InstanceId=i-1&WakeUp=true";
        let p = Params::parse("POST", "", FORM, wake.as_bytes()).unwrap();
        assert_eq!(p.request(), Err(ParamError::Unknown("WakeUp".into())));
        let latest = "Action=GetConsoleScreenshot&Version=2016-11-15&InstanceId=i-1&Latest=true";
        let p = Params::parse("POST", "", FORM, latest.as_bytes()).unwrap();
        assert_eq!(p.request(), Err(ParamError::Unknown("Latest".into())));
    }

    #[test]
    fn boto3_form_post() {
        // What botocore sends for ec2.get_console_screenshot(InstanceId=…, WakeUp=True).
        let r = parse(
            "POST",
            "",
            "Action=GetConsoleScreenshot&Version=2016-11-15&InstanceId=i-0123456789abcdef0&WakeUp=true",
        )
        .unwrap();
        assert_eq!(
            r,
            ScreenshotRequest {
                instance_id: "i-0123456789abcdef0".into(),
                wake_up: true,
                dry_run: false
            }
        );
    }

    #[test]
    fn presigned_get_keeps_signature_parameters_aside() {
        let q = "Action=GetConsoleScreenshot&InstanceId=vm-1&Version=2016-11-15&DryRun=true\
                 &X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AK%2F20261130%2Fus-east-1%2Fec2%2Faws4_request\
                 &X-Amz-Date=20261130T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature=00";
        let p = Params::parse("GET", q, None, b"").unwrap();
        assert_eq!(
            p.get("X-Amz-Credential"),
            Some("AK/20261130/us-east-1/ec2/aws4_request")
        );
        let Asked::Screenshot(r) = p.request().unwrap() else {
            panic!("a screenshot")
        };
        assert_eq!(r.instance_id, "vm-1");
        assert!(r.dry_run && !r.wake_up);
    }

    #[test]
    fn ids_of_every_kind() {
        for id in [
            "i-1234abcd",
            "i-0123456789abcdef0",
            "6a1f2c3d-0000-4000-8000-000000000001",
            "web_01.example",
            "x",
        ] {
            assert!(valid_instance_id(id), "{id}");
        }
        for id in ["", "a b", "a/b", "<x>", "a&b", "é", "a\"b", "a\nb"] {
            assert!(!valid_instance_id(id), "{id:?}");
        }
        assert!(valid_instance_id(&"a".repeat(256)));
        assert!(!valid_instance_id(&"a".repeat(257)));
    }

    #[test]
    fn plus_is_a_space_only_in_the_body() {
        let p = Params::parse("POST", "A=a+b", FORM, b"B=a+b").unwrap();
        assert_eq!(p.get("A"), Some("a+b"));
        assert_eq!(p.get("B"), Some("a b"));
    }

    #[test]
    fn bad_requests_are_refused_with_their_reason() {
        use ParamError::*;
        let base = "Action=GetConsoleScreenshot&Version=2016-11-15";
        let cases: &[(&str, &str, &str, ParamError)] = &[
            ("PUT", "", "", Method("PUT".into())),
            ("POST", "", "", MissingAction),
            ("POST", "", "Action=", MissingAction),
            (
                "POST",
                "",
                "Action=RunInstances&Version=2016-11-15",
                InvalidAction("RunInstances".into()),
            ),
            (
                "POST",
                "",
                "Action=GetConsoleScreenshot&InstanceId=i-1",
                Missing("Version"),
            ),
            (
                "POST",
                "",
                "Action=GetConsoleScreenshot&Version=2014-05-26&InstanceId=i-1",
                Version("2014-05-26".into()),
            ),
            ("POST", "", base, Missing("InstanceId")),
            (
                "POST",
                "",
                &format!("{base}&InstanceId="),
                Missing("InstanceId"),
            ),
            (
                "POST",
                "",
                &format!("{base}&InstanceId=a%2Fb"),
                InstanceId("a/b".into()),
            ),
            (
                "POST",
                "",
                &format!("{base}&InstanceId=i-1&WakeUp=1"),
                Bool {
                    name: "WakeUp",
                    value: "1".into(),
                },
            ),
            (
                "POST",
                "",
                &format!("{base}&InstanceId=i-1&DryRun=yes"),
                Bool {
                    name: "DryRun",
                    value: "yes".into(),
                },
            ),
            (
                "POST",
                "",
                &format!("{base}&InstanceId=i-1&Foo=1"),
                Unknown("Foo".into()),
            ),
            (
                "POST",
                "InstanceId=i-1",
                &format!("{base}&InstanceId=i-2"),
                Duplicate("InstanceId".into()),
            ),
            (
                "POST",
                "",
                &format!("{base}&InstanceId=i-1&InstanceId=i-1"),
                Duplicate("InstanceId".into()),
            ),
            ("POST", "", "Action=%zz", BadEscape),
            ("POST", "", "Action=%4", BadEscape),
            ("POST", "", "Action=%", BadEscape),
            ("POST", "", "Action=%ff", NotUtf8),
            ("GET", "", "Action=x", BodyType),
        ];
        for (method, query, body, want) in cases {
            assert_eq!(
                parse(method, query, body).as_ref(),
                Err(want),
                "{method} ?{query} {body}"
            );
        }
        // A POST body that is not a form is refused, not ignored.
        assert_eq!(
            Params::parse("POST", "", Some("application/json"), b"{}"),
            Err(BodyType)
        );
    }

    #[test]
    fn limits_hold() {
        let many: String = (0..=MAX_PARAMS).map(|i| format!("p{i}=1&")).collect();
        assert_eq!(
            Params::parse("GET", &many, None, b""),
            Err(ParamError::TooMany)
        );
        let long = format!("InstanceId={}", "a".repeat(MAX_VALUE + 1));
        assert_eq!(
            Params::parse("GET", &long, None, b""),
            Err(ParamError::FieldTooLong)
        );
        let huge = "a".repeat(MAX_ENCODED + 1);
        assert_eq!(
            Params::parse("GET", &huge, None, b""),
            Err(ParamError::TooLong)
        );
        let id = format!(
            "Action=GetConsoleScreenshot&Version=2016-11-15&InstanceId={}",
            "a".repeat(MAX_INSTANCE_ID + 1)
        );
        assert!(matches!(
            parse("GET", &id, ""),
            Err(ParamError::InstanceId(s)) if s.len() == 64
        ));
    }

    #[test]
    fn random_bytes_never_panic() {
        // A cheap fuzz: xorshift bytes biased toward the characters the
        // parser treats specially.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let alphabet = b"%&=+aA0fF\xff\xc3 ";
        for _ in 0..20_000 {
            let len = (state % 40) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    if state.is_multiple_of(3) {
                        state as u8
                    } else {
                        alphabet[(state >> 8) as usize % alphabet.len()]
                    }
                })
                .collect();
            let query = String::from_utf8_lossy(&bytes);
            if let Ok(p) = Params::parse("POST", &query, FORM, &bytes) {
                let _ = p.request();
            }
        }
    }
}
