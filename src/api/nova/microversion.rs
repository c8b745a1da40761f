//! Nova's microversion negotiation, as `nova/api/openstack/wsgi.py` does it
//! with `microversion_parse.get_version`: the standard header
//! `OpenStack-API-Version: compute X.Y` first (the last `compute` entry wins),
//! then the legacy `X-OpenStack-Nova-API-Version: X.Y` (its last value);
//! neither means 2.1; `latest` (exactly, lower case) means the maximum.
//! A value that is not `X.Y` is a 400, one outside [MIN, MAX] a 406.

use std::fmt;

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use super::wire::NovaError;

pub const STANDARD_HEADER: &str = "openstack-api-version";
pub const LEGACY_HEADER: &str = "x-openstack-nova-api-version";

/// What Nova's `DEFAULT_API_VERSION` and `_MIN_API_VERSION` are.
pub const MIN: Version = Version::new(2, 1);
/// Nova's own maximum today (`_MAX_API_VERSION`, 2.104), which is above
/// python-novaclient's `API_MAX_VERSION` (2.96), so `2.latest` there settles
/// on the client's maximum. Nothing in os-instance-actions changed after 2.102.
pub const MAX: Version = Version::new(2, 104);

/// A microversion, compared as (major, minor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
}

impl Version {
    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }

    /// Whether this request gets what microversion `major.minor` added.
    pub fn at_least(self, major: u32, minor: u32) -> bool {
        self >= Self::new(major, minor)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The version a request asked for, or Nova's refusal.
pub fn negotiate(headers: &HeaderMap) -> Result<Version, NovaError> {
    match requested(headers) {
        None => Ok(MIN),
        Some(asked) if asked == "latest" => Ok(MAX),
        Some(asked) => parse(&asked),
    }
}

/// The headers Nova puts on every answer once a version was settled, errors
/// included (a refused version gets none of them). Nova adds `Vary` twice.
pub fn echo(version: Version, headers: &mut HeaderMap) {
    let value = |s: String| HeaderValue::from_str(&s).expect("digits and a dot");
    headers.insert(
        HeaderName::from_static(STANDARD_HEADER),
        value(format!("compute {version}")),
    );
    headers.insert(
        HeaderName::from_static(LEGACY_HEADER),
        value(version.to_string()),
    );
    for name in ["OpenStack-API-Version", "X-OpenStack-Nova-API-Version"] {
        headers.append(axum::http::header::VARY, HeaderValue::from_static(name));
    }
}

/// The raw version string, as microversion_parse finds it. Repeated header
/// lines are folded with `,` first, as WSGI servers do.
fn requested(headers: &HeaderMap) -> Option<String> {
    let folded = |name: &str| -> Option<String> {
        let mut values = headers.get_all(name).iter().peekable();
        values.peek()?;
        let parts: Vec<String> = values
            .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned())
            .collect();
        Some(parts.join(","))
    };
    if let Some(standard) = folded(STANDARD_HEADER) {
        // Entries without a version (`compute` alone) are skipped, not refused.
        let found = standard.rsplit(',').find_map(|entry| {
            let entry = entry.trim();
            let (service, version) = entry.split_once(char::is_whitespace)?;
            let version = version.trim();
            (service.eq_ignore_ascii_case("compute") && !version.is_empty())
                .then(|| version.to_owned())
        });
        if found.is_some() {
            return found;
        }
    }
    folded(LEGACY_HEADER).map(|v| v.rsplit(',').next().unwrap_or("").trim().to_owned())
}

/// `^([1-9]\d*)\.([1-9]\d*|0)$`, then the global range. A number too large
/// for u32 is well formed and simply out of range, as in Python.
fn parse(asked: &str) -> Result<Version, NovaError> {
    let number = |s: &str, zero_ok: bool| -> Option<Option<u32>> {
        let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let leading_zero = s.starts_with('0') && !(zero_ok && s == "0");
        (digits && !leading_zero).then(|| s.parse().ok())
    };
    let well_formed = asked
        .split_once('.')
        .and_then(|(major, minor)| Some((number(major, false)?, number(minor, true)?)));
    match well_formed {
        None => Err(NovaError::invalid_version(asked)),
        Some((Some(major), Some(minor))) => {
            let version = Version::new(major, minor);
            if (MIN..=MAX).contains(&version) {
                Ok(version)
            } else {
                Err(NovaError::unsupported_version(asked))
            }
        }
        Some(_) => Err(NovaError::unsupported_version(asked)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn ask(pairs: &[(&'static str, &str)]) -> Result<Version, NovaError> {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_bytes(value.as_bytes()).unwrap());
        }
        negotiate(&headers)
    }

    #[test]
    fn absent_is_2_1_and_latest_is_the_maximum() {
        assert_eq!(ask(&[]).unwrap(), Version::new(2, 1));
        assert_eq!(
            ask(&[("OpenStack-API-Version", "compute latest")]).unwrap(),
            MAX
        );
        assert_eq!(
            ask(&[("X-OpenStack-Nova-API-Version", "latest")]).unwrap(),
            MAX
        );
        assert!(MAX >= Version::new(2, 96), "novaclient's API_MAX_VERSION");
    }

    #[test]
    fn the_standard_header_wins_and_names_its_service() {
        let both = [
            ("OpenStack-API-Version", "compute 2.58"),
            ("X-OpenStack-Nova-API-Version", "2.62"),
        ];
        assert_eq!(ask(&both).unwrap(), Version::new(2, 58));
        // Another service's entry is not ours: the legacy header decides.
        let other = [
            ("OpenStack-API-Version", "volume 3.10"),
            ("X-OpenStack-Nova-API-Version", "2.62"),
        ];
        assert_eq!(ask(&other).unwrap(), Version::new(2, 62));
        assert_eq!(
            ask(&[("OpenStack-API-Version", "volume 3.10")]).unwrap(),
            MIN
        );
        // The last compute entry of a list, header lines folded with commas.
        let list = [
            ("OpenStack-API-Version", "compute 2.10, volume 3.1"),
            ("OpenStack-API-Version", "COMPUTE 2.84"),
        ];
        assert_eq!(ask(&list).unwrap(), Version::new(2, 84));
        assert_eq!(
            ask(&[("X-OpenStack-Nova-API-Version", "2.5, 2.7")]).unwrap(),
            Version::new(2, 7)
        );
    }

    #[test]
    fn malformed_is_400_and_out_of_range_is_406_in_novas_words() {
        for bad in [
            "2", "2.", ".1", "2.01", "02.1", "2.1.1", "v2.1", "Latest", "2.1 x", "٢.١",
        ] {
            let err = ask(&[("X-OpenStack-Nova-API-Version", bad)]).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{bad}");
            assert_eq!(err.name, "badRequest");
            assert_eq!(
                err.message,
                format!(
                    "API Version String {bad} is of invalid format. Must be of format MajorNum.MinorNum."
                )
            );
        }
        for far in ["2.0", "1.1", "3.0", "2.105", "2.99999999999999999999"] {
            let asked = format!("compute {far}");
            let err = ask(&[("OpenStack-API-Version", &asked)]).unwrap_err();
            assert_eq!(err.status, StatusCode::NOT_ACCEPTABLE, "{far}");
            // Nova has no fault name for 406: the default one.
            assert_eq!(err.name, "computeFault");
            assert_eq!(
                err.message,
                format!(
                    "Version {far} is not supported by the API. Minimum is 2.1 and maximum is {MAX}."
                )
            );
        }
    }

    #[test]
    fn the_answer_echoes_the_version_and_varies_on_both_headers() {
        let mut headers = HeaderMap::new();
        echo(Version::new(2, 62), &mut headers);
        assert_eq!(headers["openstack-api-version"], "compute 2.62");
        assert_eq!(headers["x-openstack-nova-api-version"], "2.62");
        let vary: Vec<_> = headers.get_all("vary").iter().collect();
        assert_eq!(
            vary,
            ["OpenStack-API-Version", "X-OpenStack-Nova-API-Version"]
        );
    }
}

#[cfg(test)]
mod props {
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Every version Nova serves, asked for in either header, is the one
        /// settled on; and whatever the headers say, the answer is a version
        /// or Nova's refusal.
        #[test]
        fn versions_round_trip(
            minor in MIN.minor..=MAX.minor,
            legacy in any::<bool>(),
            junk in proptest::collection::vec("(compute )?[0-9.a-z ,-]{0,12}|\\PC{0,12}", 0..3),
        ) {
            let version = Version::new(2, minor);
            let mut headers = HeaderMap::new();
            if legacy {
                headers.insert(LEGACY_HEADER, HeaderValue::from_str(&version.to_string()).unwrap());
            } else {
                headers.insert(STANDARD_HEADER, HeaderValue::from_str(&format!("compute {version}")).unwrap());
            }
            prop_assert_eq!(negotiate(&headers).unwrap(), version);
            let mut echoed = HeaderMap::new();
            echo(version, &mut echoed);
            prop_assert_eq!(negotiate(&echoed).unwrap(), version);

            let mut odd = HeaderMap::new();
            for value in junk.iter().filter_map(|j| HeaderValue::from_str(j).ok()) {
                odd.append(if legacy { LEGACY_HEADER } else { STANDARD_HEADER }, value);
            }
            if let Ok(v) = negotiate(&odd) {
                prop_assert!((MIN..=MAX).contains(&v));
            }
        }
    }
}
