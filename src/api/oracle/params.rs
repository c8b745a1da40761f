//! The bodies of `POST /console/screencapture/` and
//! `PUT /console/screencapture/{name}`, parsed into values before anything
//! happens.
//!
//! Choices where the docs are silent:
//! - POST: `instance` is required; `account` is optional (Oracle's is the
//!   Object Storage account, `/Compute-{domain}/cloud_storage`, which vmshot
//!   does not use: it is echoed back, and must be a two-part name in the
//!   identity domain); `cancel` may only be `false`: cancelling is PUT's.
//! - Unknown fields are refused (400 naming the field), so a typo is not a
//!   silent default. PUT also takes the read-only fields of the object as
//!   GET returned it, ignored, so a GET-edit-PUT round trip works; its
//!   `name`, `instance` and `account`, if present, must match the object.
//! - The instance is referenced by its object name; `lookup_id` says which
//!   part of it vmshot resolves to a domain.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::wire::{NameError, ObjectName, OracleError, MAX_NAME};

/// Largest body taken: the three fields fit in well under 2 KiB.
pub const MAX_BODY: usize = 8 * 1024;

const CREATE_FIELDS: &[&str] = &["account", "instance", "cancel"];
/// What GET returns besides the writable fields.
const READ_ONLY: &[&str] = &[
    "name",
    "uri",
    "state",
    "creation_time",
    "request_id",
    "media_uri",
    "error_reason",
    "cancellation",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("the request body is larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("the request body is not valid JSON")]
    NotJson,
    #[error("the request body must be a JSON object")]
    NotObject,
    #[error("the parameter {0} is required")]
    Missing(&'static str),
    #[error("the parameter {0} is not recognized")]
    Unknown(String),
    #[error("the parameter {field} must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("the parameter {field} is not a valid name: {error}")]
    Name {
        field: &'static str,
        error: NameError,
    },
    #[error("cancel can only be set to true by updating an existing request (PUT)")]
    CancelOnCreate,
    #[error("the parameter {0} does not match the screen capture request")]
    Mismatch(&'static str),
}

impl ParamError {
    /// Every refused body is Oracle's 400, but for its size.
    pub fn to_wire(&self) -> OracleError {
        match self {
            Self::TooLarge => OracleError::too_large(MAX_BODY),
            e => OracleError::bad_request(format!("{}.", capitalize(&e.to_string()))),
        }
    }
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A new capture, as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRequest {
    /// As given, or `/Compute-{domain}/cloud_storage`.
    pub account: String,
    pub instance: ObjectName,
}

/// A change to an existing capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateRequest {
    pub cancel: bool,
}

fn object(body: &[u8]) -> Result<Map<String, Value>, ParamError> {
    if body.len() > MAX_BODY {
        return Err(ParamError::TooLarge);
    }
    match serde_json::from_slice(body).map_err(|_| ParamError::NotJson)? {
        Value::Object(map) => Ok(map),
        _ => Err(ParamError::NotObject),
    }
}

fn unknown(map: &Map<String, Value>, allowed: &[&[&str]]) -> Result<(), ParamError> {
    match map
        .keys()
        .find(|k| !allowed.iter().any(|set| set.contains(&k.as_str())))
    {
        Some(k) => Err(ParamError::Unknown(clip(k, 64))),
        None => Ok(()),
    }
}

fn string<'a>(
    map: &'a Map<String, Value>,
    field: &'static str,
) -> Result<Option<&'a str>, ParamError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() > MAX_NAME => Err(ParamError::Name {
            field,
            error: NameError::TooLong,
        }),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ParamError::WrongType {
            field,
            expected: "a string",
        }),
    }
}

fn flag(map: &Map<String, Value>, field: &'static str) -> Result<Option<bool>, ParamError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ParamError::WrongType {
            field,
            expected: "true or false",
        }),
    }
}

/// A two-part account name in the identity domain: `/Compute-acme/cloud_storage`.
fn account(name: &str, identity_domain: &str) -> Result<String, ParamError> {
    let bad = |error| ParamError::Name {
        field: "account",
        error,
    };
    let (domain, _) = super::wire::parse_container(name).map_err(bad)?;
    if name.ends_with('/') {
        return Err(bad(NameError::Parts));
    }
    if domain != identity_domain {
        return Err(bad(NameError::OtherDomain(identity_domain.to_owned())));
    }
    Ok(name.to_owned())
}

/// The body of `POST /console/screencapture/`.
pub fn parse_create(body: &[u8], identity_domain: &str) -> Result<CreateRequest, ParamError> {
    let map = object(body)?;
    unknown(&map, &[CREATE_FIELDS])?;
    let instance = string(&map, "instance")?.ok_or(ParamError::Missing("instance"))?;
    let instance =
        ObjectName::parse_in(instance, identity_domain).map_err(|error| ParamError::Name {
            field: "instance",
            error,
        })?;
    let account = match string(&map, "account")? {
        Some(name) => account(name, identity_domain)?,
        None => format!("/Compute-{identity_domain}/cloud_storage"),
    };
    if flag(&map, "cancel")? == Some(true) {
        return Err(ParamError::CancelOnCreate);
    }
    Ok(CreateRequest { account, instance })
}

/// The name of a new capture of `instance` in `user`'s container: the
/// instance's name with the capture's id after it. Refused when that is no
/// name itself (a fifth part, or too long): a capture that cannot be named
/// could be neither read, cancelled nor deleted.
pub fn capture_name(
    instance: &ObjectName,
    identity_domain: &str,
    user: &str,
    id: &str,
) -> Result<ObjectName, ParamError> {
    let name = instance.child_in(identity_domain, user, id);
    ObjectName::parse(&name.to_string()).map_err(|error| ParamError::Name {
        field: "instance",
        error,
    })
}

/// The body of `PUT /console/screencapture/{name}`, given the stored
/// capture's name, instance and account.
pub fn parse_update(
    body: &[u8],
    name: &str,
    instance: &str,
    account: &str,
) -> Result<UpdateRequest, ParamError> {
    let map = object(body)?;
    unknown(&map, &[CREATE_FIELDS, READ_ONLY])?;
    for (field, want) in [("name", name), ("instance", instance), ("account", account)] {
        if let Some(given) = string(&map, field)? {
            if given != want {
                return Err(ParamError::Mismatch(field));
            }
        }
    }
    let cancel = flag(&map, "cancel")?.ok_or(ParamError::Missing("cancel"))?;
    Ok(UpdateRequest { cancel })
}

/// What vmshot looks the instance up by: its name relative to its container
/// if `[oracle.instances]` has it (`vm1`, `vm1/{uuid}`), else its last part
/// (Compute Classic's instance names end in the instance's UUID, which is
/// the libvirt domain's UUID on a host vmshot serves), used as a domain name
/// or UUID.
pub fn lookup_id(instance: &ObjectName, table: &BTreeMap<String, String>) -> String {
    let relative = instance.relative();
    if table.contains_key(&relative) {
        relative
    } else {
        instance.last().to_owned()
    }
}

fn clip(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::pipeline::WireError;

    const D: &str = "acme";

    fn create(body: &str) -> Result<CreateRequest, ParamError> {
        parse_create(body.as_bytes(), D)
    }

    #[test]
    fn oracles_curl_body() {
        let r = create(
            r#"{"account": "/Compute-acme/cloud_storage", "instance": "/Compute-acme/jack.jones@example.com/vm1/6a1f", "cancel": false}"#,
        )
        .unwrap();
        assert_eq!(r.account, "/Compute-acme/cloud_storage");
        assert_eq!(r.instance.relative(), "vm1/6a1f");
        let minimal = create(r#"{"instance": "/Compute-acme/jack/vm1"}"#).unwrap();
        assert_eq!(minimal.account, "/Compute-acme/cloud_storage");
        let nulls =
            create(r#"{"instance": "/Compute-acme/jack/vm1", "account": null, "cancel": null}"#);
        assert!(nulls.is_ok());
    }

    #[test]
    fn bad_create_bodies_say_why() {
        use ParamError::*;
        let name = |field, error| Name { field, error };
        let cases: &[(&str, ParamError)] = &[
            ("", NotJson),
            ("{", NotJson),
            ("[]", NotObject),
            ("\"x\"", NotObject),
            ("{}", Missing("instance")),
            (r#"{"instance": null}"#, Missing("instance")),
            (
                r#"{"instance": 5}"#,
                WrongType {
                    field: "instance",
                    expected: "a string",
                },
            ),
            (
                r#"{"instance": ["a"]}"#,
                WrongType {
                    field: "instance",
                    expected: "a string",
                },
            ),
            (
                r#"{"instance": "vm1"}"#,
                name("instance", NameError::NoContainer),
            ),
            (
                r#"{"instance": "/Compute-evil/jack/vm1"}"#,
                name("instance", NameError::OtherDomain("acme".into())),
            ),
            (
                r#"{"instance": "/Compute-acme/jack/../x"}"#,
                name("instance", NameError::BadPart),
            ),
            (
                r#"{"instance": "/Compute-acme/jack/vm1", "cancel": "false"}"#,
                WrongType {
                    field: "cancel",
                    expected: "true or false",
                },
            ),
            (
                r#"{"instance": "/Compute-acme/jack/vm1", "cancel": true}"#,
                CancelOnCreate,
            ),
            (
                r#"{"instance": "/Compute-acme/jack/vm1", "acount": "x"}"#,
                Unknown("acount".into()),
            ),
            (
                r#"{"instance": "/Compute-acme/jack/vm1", "account": "/Compute-acme/a/b"}"#,
                name("account", NameError::Parts),
            ),
            (
                r#"{"instance": "/Compute-acme/jack/vm1", "account": "/Compute-other/cloud_storage"}"#,
                name("account", NameError::OtherDomain("acme".into())),
            ),
        ];
        for (body, want) in cases {
            assert_eq!(create(body).as_ref(), Err(want), "{body}");
        }
    }

    #[test]
    fn hostile_bodies() {
        let huge = format!(r#"{{"instance": "{}"}}"#, "a".repeat(MAX_BODY));
        assert_eq!(create(&huge), Err(ParamError::TooLarge));
        assert_eq!(ParamError::TooLarge.to_wire().status.as_u16(), 413);
        let long = format!(
            r#"{{"instance": "/Compute-acme/jack/{}"}}"#,
            "a".repeat(600)
        );
        assert!(matches!(
            create(&long),
            Err(ParamError::Name {
                error: NameError::TooLong,
                ..
            })
        ));
        let long_key = format!(r#"{{"{}": 1}}"#, "k".repeat(1000));
        assert!(matches!(create(&long_key), Err(ParamError::Unknown(k)) if k.len() == 64));
        let deep = "[".repeat(5000);
        assert_eq!(create(&deep), Err(ParamError::NotJson));
        assert_eq!(parse_create(b"\xff\xfe{}", D), Err(ParamError::NotJson));
        // Duplicate keys: serde_json keeps the last; the last must still pass.
        assert!(create(r#"{"instance": "/Compute-acme/jack/vm1", "instance": 1}"#).is_err());
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let alphabet = b"{}[]\":,/ \\u0aCompute-acme/instancetrue";
        for _ in 0..5_000 {
            let len = (state % 60) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    if state.is_multiple_of(5) {
                        state as u8
                    } else {
                        alphabet[(state >> 8) as usize % alphabet.len()]
                    }
                })
                .collect();
            if let Err(e) = parse_create(&bytes, D) {
                assert_eq!(e.to_wire().status.as_u16(), 400);
            }
            let _ = parse_update(&bytes, "n", "i", "a");
        }
    }

    #[test]
    fn updates() {
        let n = "/Compute-acme/jack/vm1/c1";
        let i = "/Compute-acme/jack/vm1";
        let a = "/Compute-acme/cloud_storage";
        let up = |body: &str| parse_update(body.as_bytes(), n, i, a);
        assert_eq!(
            up(r#"{"cancel": true}"#),
            Ok(UpdateRequest { cancel: true })
        );
        // The object as GET returned it, with cancel flipped.
        let round_trip = format!(
            r#"{{"account": "{a}", "cancel": true, "cancellation": {{"state": "not_requested", "error_reason": null}},
               "creation_time": "2017-02-16T05:37:18Z", "error_reason": null, "instance": "{i}", "media_uri": null,
               "name": "{n}", "request_id": "x", "state": "queued", "uri": "https://h/x"}}"#
        );
        assert_eq!(up(&round_trip), Ok(UpdateRequest { cancel: true }));
        assert_eq!(up("{}"), Err(ParamError::Missing("cancel")));
        assert_eq!(
            up(r#"{"cancel": 1}"#),
            Err(ParamError::WrongType {
                field: "cancel",
                expected: "true or false"
            })
        );
        assert_eq!(
            up(r#"{"cancel": true, "name": "/Compute-acme/jack/vm1/c2"}"#),
            Err(ParamError::Mismatch("name"))
        );
        assert_eq!(
            up(r#"{"cancel": true, "instance": "/Compute-acme/jack/vm2"}"#),
            Err(ParamError::Mismatch("instance"))
        );
        assert_eq!(
            up(r#"{"cancel": true, "shape": "x"}"#),
            Err(ParamError::Unknown("shape".into()))
        );
    }

    #[test]
    fn wire_words() {
        let e = ParamError::Missing("instance").to_wire();
        assert_eq!((e.status.as_u16(), e.code()), (400, "APIClientError"));
        assert_eq!(e.message, "The parameter instance is required.");
    }

    #[test]
    fn lookup_prefers_the_table_then_the_last_part() {
        let name = ObjectName::parse("/Compute-acme/jack/vm1/6a1f").unwrap();
        let mut table = BTreeMap::new();
        assert_eq!(lookup_id(&name, &table), "6a1f");
        table.insert("vm1/6a1f".to_owned(), "web-01".to_owned());
        assert_eq!(lookup_id(&name, &table), "vm1/6a1f");
        let short = ObjectName::parse("/Compute-acme/jack/web-01").unwrap();
        assert_eq!(lookup_id(&short, &BTreeMap::new()), "web-01");
    }
}

#[cfg(test)]
mod capture_names {
    use super::*;

    /// Found writing the fuzz target's round trip (`oracle::fuzz`): an
    /// instance of four parts, the most a name has, was given a capture of
    /// five, which no path could name again.
    #[test]
    fn a_capture_is_only_made_under_a_name_that_reads_back() {
        let id = "5b8c0d3e-0000-4000-8000-000000000001";
        let two = ObjectName::parse("/Compute-acme/jack/web1/6f1c2a8e").unwrap();
        let name = capture_name(&two, "acme", "jill", id).unwrap();
        assert_eq!(
            name.to_string(),
            format!("/Compute-acme/jill/web1/6f1c2a8e/{id}")
        );
        let four = ObjectName::parse("/Compute-acme/jack/a/b/c/d").unwrap();
        assert!(matches!(
            capture_name(&four, "acme", "jill", id),
            Err(ParamError::Name {
                error: NameError::Parts,
                ..
            })
        ));
        // Three parts of 128 bytes: a name, but not with a long user and an
        // id after it.
        let part = "v".repeat(128);
        let long = ObjectName::parse(&format!("/Compute-acme/jack/{part}/{part}/{part}")).unwrap();
        let user = "u".repeat(crate::api::oracle_credentials::MAX_USER);
        assert!(matches!(
            capture_name(&long, "acme", &user, id),
            Err(ParamError::Name {
                error: NameError::TooLong,
                ..
            })
        ));
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;
    use crate::api::fuzzing::strategies;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Any body is a request or a refusal, never a panic; the clients'
        /// own body is read as written.
        #[test]
        fn bodies_never_panic(body in strategies::body(), field in strategies::json(), vm in "[a-z0-9]{1,8}") {
            let _ = parse_create(&body, "acme");
            let _ = parse_update(&body, "/Compute-acme/jack/vm1/1", "/Compute-acme/jack/vm1", "");
            for name in ["instance", "account", "cancel", "name"] {
                let shaped = serde_json::json!({ name: field.clone() }).to_string();
                let _ = parse_create(shaped.as_bytes(), "acme");
                let _ = parse_update(shaped.as_bytes(), "n", "i", "a");
            }
            let instance = format!("/Compute-acme/jack/{vm}");
            let asked = parse_create(serde_json::json!({ "instance": instance }).to_string().as_bytes(), "acme").unwrap();
            prop_assert_eq!(asked.instance.to_string(), instance);
        }
    }
}
