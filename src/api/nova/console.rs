//! `POST …/servers/{id}/action` with `{"os-getConsoleOutput": {"length": N}}`:
//! the body checked as Nova's JSON schema checks it, and the output shaped
//! as Nova's compute manager and API shape it (the last `length` lines of
//! the last 100 KiB, non-ASCII bytes as U+FFFD, control characters other
//! than tab and newline removed).

use serde_json::Value;

use super::wire::{echo, NovaError};

/// What Nova's libvirt driver reads of a console log (`MAX_CONSOLE_BYTES`).
pub const CONSOLE_BYTES: usize = 100 * 1024;

/// Lines asked for: `None` is all of them.
pub type Length = Option<u64>;

/// The one action this dialect performs, from the action body.
pub fn parse(body: &[u8]) -> Result<Length, NovaError> {
    let body: Value = serde_json::from_slice(body)
        .map_err(|_| NovaError::bad_request("Malformed request body"))?;
    let Some(object) = body.as_object() else {
        return Err(NovaError::bad_request("Malformed request body"));
    };
    let mut keys = object.keys();
    let (Some(action), None) = (keys.next(), keys.next()) else {
        return Err(NovaError::bad_request("Malformed request body"));
    };
    if action != "os-getConsoleOutput" {
        return Err(NovaError::bad_request(format!(
            "There is no such action: {}",
            echo(action)
        )));
    }
    let invalid = |why: String| {
        NovaError::bad_request(format!(
            "Invalid input for field/attribute os-getConsoleOutput. {why}"
        ))
    };
    let Some(args) = object[action].as_object() else {
        return Err(invalid(format!(
            "Value: {}. {} is not of type 'object'",
            echo(&object[action].to_string()),
            echo(&object[action].to_string())
        )));
    };
    if let Some(extra) = args.keys().find(|k| *k != "length") {
        return Err(invalid(format!(
            "Additional properties are not allowed ('{}' was unexpected)",
            echo(extra)
        )));
    }
    let length = match args.get("length") {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => v,
    };
    let bad_length = |why: String| {
        NovaError::bad_request(format!(
            "Invalid input for field/attribute length. Value: {}. {why}",
            echo(&length.to_string())
        ))
    };
    // An integer, or a string of one (novaclient sends "50").
    let n: i64 = match length {
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| bad_length(format!("{n} is not of type 'integer', 'string', 'null'")))?,
        Value::String(s) => {
            let digits = s.strip_prefix('-').unwrap_or(s);
            if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(bad_length(format!(
                    "'{}' does not match '^-?[0-9]+$'",
                    echo(s)
                )));
            }
            s.parse().map_err(|_| bad_length("not a number".into()))?
        }
        other => {
            return Err(bad_length(format!(
                "{} is not of type 'integer', 'string', 'null'",
                echo(&other.to_string())
            )))
        }
    };
    match n {
        // Nova documents -1 as "unlimited" (its tail drops the first line).
        -1 => Ok(None),
        n if n < -1 => Err(bad_length(format!("{n} is less than the minimum of -1"))),
        n => Ok(Some(n as u64)),
    }
}

/// The console's `bytes` as Nova returns them for `length`.
pub fn output(bytes: &[u8], length: Length) -> String {
    let lines = match length {
        Some(0) => &bytes[..0],
        // Nova splits on \n and keeps the last N pieces: a final newline
        // leaves an empty last piece, which counts.
        Some(n) => {
            let cut = bytes
                .iter()
                .enumerate()
                .rev()
                .filter(|(_, b)| **b == b'\n')
                .nth((n - 1) as usize)
                .map_or(0, |(i, _)| i + 1);
            &bytes[cut..]
        }
        None => bytes,
    };
    lines
        .iter()
        .filter(|b| !matches!(b, 0x00..=0x08 | 0x0b..=0x1f))
        .map(|&b| if b.is_ascii() { b as char } else { '\u{fffd}' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_as_novas_schema_takes_them() {
        let length = |body: &str| parse(body.as_bytes());
        assert_eq!(
            length(r#"{"os-getConsoleOutput": {"length": 50}}"#).unwrap(),
            Some(50)
        );
        assert_eq!(
            length(r#"{"os-getConsoleOutput": {"length": "50"}}"#).unwrap(),
            Some(50)
        );
        assert_eq!(
            length(r#"{"os-getConsoleOutput": {"length": null}}"#).unwrap(),
            None
        );
        assert_eq!(length(r#"{"os-getConsoleOutput": {}}"#).unwrap(), None);
        assert_eq!(
            length(r#"{"os-getConsoleOutput": {"length": -1}}"#).unwrap(),
            None
        );
        assert_eq!(
            length(r#"{"os-getConsoleOutput": {"length": 0}}"#).unwrap(),
            Some(0)
        );
        for bad in [
            r#"{"os-getConsoleOutput": {"length": -2}}"#,
            r#"{"os-getConsoleOutput": {"length": "NaN"}}"#,
            r#"{"os-getConsoleOutput": {"length": 2.5}}"#,
            r#"{"os-getConsoleOutput": {"length": true}}"#,
            r#"{"os-getConsoleOutput": {"length": 1, "x": 2}}"#,
            r#"{"os-getConsoleOutput": 5}"#,
            r#"{"os-reboot": {"type": "HARD"}}"#,
            r#"{}"#,
            r#"[1]"#,
            "not json",
        ] {
            let err = length(bad).unwrap_err();
            assert_eq!(err.status, 400, "{bad}");
        }
        let unknown = length(r#"{"os-reboot": {}}"#).unwrap_err();
        assert_eq!(unknown.message, "There is no such action: os-reboot");
    }

    #[test]
    fn output_is_novas_tail_in_ascii_without_controls() {
        let log = "one\r\ntwo\r\n\x1b[1mthree\x1b[0m\r\nné\n".as_bytes();
        assert_eq!(
            output(log, None),
            "one\ntwo\n[1mthree[0m\nn\u{fffd}\u{fffd}\n"
        );
        // The final newline's empty piece is one of the N.
        assert_eq!(output(log, Some(2)), "n\u{fffd}\u{fffd}\n");
        assert_eq!(output(log, Some(0)), "");
        assert_eq!(output(log, Some(99)), output(log, None));
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;
    use crate::api::fuzzing::strategies;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Any body is a length or a refusal; the SDK's own body is read as
        /// the length it asks, and the output has at most that many lines.
        #[test]
        fn bodies_never_panic(body in strategies::body(), length in 1u64..100, log in "[a-z\n]{0,200}") {
            let _ = parse(&body);
            let sdk = format!(r#"{{"os-getConsoleOutput": {{"length": {length}}}}}"#);
            let asked = parse(sdk.as_bytes()).unwrap();
            prop_assert_eq!(asked, Some(length));
            let out = output(log.as_bytes(), asked);
            prop_assert!(out.matches('\n').count() < length as usize);
        }
    }
}
