//! Paths and queries of os-instance-actions, as Nova routes and validates
//! them: the project id in the path is optional since 2.18 (and, when there,
//! matches `[0-9a-f-]+`); a server id that is no UUID is an unknown instance
//! (404), not a bad request; the list's query is ignored below 2.58, and from
//! 2.58 only `limit`, `marker`, `changes-since` (and from 2.66
//! `changes-before`) are allowed, each once; the show's query is ignored
//! below 2.102 and must be empty from it.

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use super::microversion::Version;
use super::wire::{NovaError, MAX_LIMIT};

/// Nova's `request_id` column is 255 long: a longer id names no action.
pub const MAX_REQUEST_ID: usize = 255;
/// Keystone's project ids are at most 64; leave room, refuse the absurd.
pub const MAX_PROJECT_ID: usize = 255;
/// More query than any Nova client sends.
pub const MAX_QUERY: usize = 4096;

/// What a path asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /`
    Versions,
    /// `GET /v2.1` or `/v2.1/`
    Version,
    /// `…/servers/{server_id}/os-instance-actions`
    List {
        project: Option<String>,
        server: Server,
    },
    /// `…/servers/{server_id}/os-instance-actions/{request_id}`
    Show {
        project: Option<String>,
        server: Server,
        request_id: String,
    },
    /// `…/servers/{server_id}/action` (POST, `os-getConsoleOutput`)
    Action {
        project: Option<String>,
        server: Server,
    },
}

/// A server id as the caller wrote it and, when it is a UUID, canonical.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub asked: String,
    /// Lowercase and hyphenated; `None` when it is no UUID (then the answer
    /// is `Instance … could not be found.`).
    pub uuid: Option<String>,
}

impl Server {
    fn new(asked: String) -> Self {
        // Nova's is_uuid_like: any case, hyphens or not, braces, urn:uuid:.
        let uuid = uuid::Uuid::try_parse(&asked)
            .ok()
            .map(|u| u.hyphenated().to_string());
        Self { asked, uuid }
    }

    /// The canonical UUID, or Nova's 404.
    pub fn require(&self) -> Result<&str, NovaError> {
        self.uuid
            .as_deref()
            .ok_or_else(|| NovaError::instance_not_found(&self.asked))
    }
}

/// Routes a request path (no query). Segments are percent-decoded.
pub fn route(path: &str) -> Result<Route, NovaError> {
    if path == "/" || path.is_empty() {
        return Ok(Route::Versions);
    }
    let rest = path.strip_prefix("/v2.1").ok_or_else(NovaError::no_route)?;
    if rest.is_empty() || rest == "/" {
        return Ok(Route::Version);
    }
    let rest = rest.strip_prefix('/').ok_or_else(NovaError::no_route)?;
    let segments = rest
        .split('/')
        .map(decode)
        .collect::<Option<Vec<String>>>()
        .ok_or_else(NovaError::no_route)?;
    let mut segments: &[String] = &segments;
    let mut project = None;
    if segments.first().map(String::as_str) != Some("servers") {
        let first = segments.first().ok_or_else(NovaError::no_route)?;
        let hex = first
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f' | b'-'));
        if first.is_empty() || !hex || first.len() > MAX_PROJECT_ID {
            return Err(NovaError::no_route());
        }
        project = Some(first.clone());
        segments = &segments[1..];
    }
    match segments {
        [servers, id, action] if servers == "servers" && action == "action" && !id.is_empty() => {
            Ok(Route::Action {
                project,
                server: Server::new(id.clone()),
            })
        }
        [servers, id, actions]
            if servers == "servers" && actions == "os-instance-actions" && !id.is_empty() =>
        {
            Ok(Route::List {
                project,
                server: Server::new(id.clone()),
            })
        }
        [servers, id, actions, request_id]
            if servers == "servers"
                && actions == "os-instance-actions"
                && !id.is_empty()
                && !request_id.is_empty() =>
        {
            Ok(Route::Show {
                project,
                server: Server::new(id.clone()),
                request_id: request_id.clone(),
            })
        }
        _ => Err(NovaError::no_route()),
    }
}

/// A path segment, percent-decoded; `None` for bytes that are not UTF-8.
fn decode(segment: &str) -> Option<String> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// The list's query, as Nova would use it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// As asked (None: not given); the store takes `page_size()`.
    pub limit: Option<u64>,
    pub marker: Option<String>,
    pub changes_since: Option<OffsetDateTime>,
    pub changes_before: Option<OffsetDateTime>,
    /// The parameters as given, for the next link.
    pub raw: Vec<(String, String)>,
}

impl ListQuery {
    /// How many actions to return: the asked limit, capped at Nova's
    /// `max_limit`; 0 is allowed and returns none, as Nova's min() does.
    pub fn page_size(&self) -> u32 {
        self.limit
            .map_or(MAX_LIMIT, |l| l.min(MAX_LIMIT as u64) as u32)
    }
}

/// Parses the list's query for `version`.
pub fn list_query(query: Option<&str>, version: Version) -> Result<ListQuery, NovaError> {
    if !version.at_least(2, 58) {
        // Nova's schema below 2.58 allows anything and uses nothing.
        return Ok(ListQuery::default());
    }
    let pairs = pairs(query)?;
    let mut out = ListQuery::default();
    for (key, values) in group(&pairs) {
        let allowed = match key {
            "limit" | "marker" | "changes-since" => true,
            "changes-before" => version.at_least(2, 66),
            _ => false,
        };
        if !allowed {
            return Err(NovaError::bad_request(format!(
                "Additional properties are not allowed ('{}' was unexpected)",
                cut(key)
            )));
        }
        let [value] = values.as_slice() else {
            let list: Vec<String> = values.iter().map(|v| format!("'{}'", cut(v))).collect();
            let list = format!("[{}]", list.join(", "));
            return Err(invalid(key, &list, &format!("{list} is too long")));
        };
        let value = *value;
        match key {
            "limit" => {
                if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(invalid(
                        key,
                        value,
                        &format!("'{}' does not match '^[0-9]*$'", cut(value)),
                    ));
                }
                // Digits beyond u64 are a limit beyond max_limit all the same.
                out.limit = Some(value.parse().unwrap_or(u64::MAX));
            }
            "marker" => {
                if value.len() > MAX_REQUEST_ID {
                    return Err(NovaError::bad_request(format!(
                        "Marker {} could not be found.",
                        cut(value)
                    )));
                }
                out.marker = Some(value.to_owned());
            }
            _ => {
                let t = parse_isotime(value).ok_or_else(|| {
                    invalid(
                        key,
                        value,
                        &format!("'{}' is not a 'date-time'", cut(value)),
                    )
                })?;
                if key == "changes-since" {
                    out.changes_since = Some(t);
                } else {
                    out.changes_before = Some(t);
                }
            }
        }
        out.raw.push((key.to_owned(), value.to_owned()));
    }
    if let (Some(since), Some(before)) = (out.changes_since, out.changes_before) {
        if before < since {
            return Err(NovaError::bad_request(
                "The value of changes-since must be less than or equal to changes-before.",
            ));
        }
    }
    Ok(out)
}

/// The show's query: ignored below 2.102, refused from it.
pub fn show_query(query: Option<&str>, version: Version) -> Result<(), NovaError> {
    if !version.at_least(2, 102) {
        return Ok(());
    }
    match pairs(query)?.first() {
        None => Ok(()),
        Some((key, _)) => Err(NovaError::bad_request(format!(
            "Additional properties are not allowed ('{}' was unexpected)",
            cut(key)
        ))),
    }
}

/// jsonschema's message for a query parameter, as Nova words it.
fn invalid(key: &str, value: &str, why: &str) -> NovaError {
    NovaError::bad_request(format!(
        "Invalid input for query parameters {key}. Value: {}. {why}",
        cut(value)
    ))
}

fn cut(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// `application/x-www-form-urlencoded` pairs; blank values kept, as webob does.
fn pairs(query: Option<&str>) -> Result<Vec<(String, String)>, NovaError> {
    let query = query.unwrap_or("");
    if query.len() > MAX_QUERY {
        return Err(NovaError::bad_request("The query string is too long."));
    }
    let form = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| NovaError::bad_request("The query string is not UTF-8."))
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Ok((form(k)?, form(v)?))
        })
        .collect()
}

/// Keys in first-seen order, each with its values.
fn group(pairs: &[(String, String)]) -> Vec<(&str, Vec<&str>)> {
    let mut out: Vec<(&str, Vec<&str>)> = Vec::new();
    for (k, v) in pairs {
        match out.iter_mut().find(|(key, _)| key == k) {
            Some((_, values)) => values.push(v),
            None => out.push((k, vec![v])),
        }
    }
    out
}

/// What oslo's `parse_isotime` (the `iso8601` package) accepts: a date
/// (`YYYY-MM-DD`, `YYYYMMDD`, `YYYY-MM`), then optionally `T` or a space and
/// a time (`HH[:MM[:SS[.f]]]` or `HHMM[SS[.f]]`, `,` also a decimal mark),
/// then optionally `Z` or `±HH[:MM]`/`±HHMM`; no zone means UTC.
pub fn parse_isotime(s: &str) -> Option<OffsetDateTime> {
    if s.len() > 64 || !s.is_ascii() {
        return None;
    }
    let (date, rest) = match s.find(['T', 't', ' ']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let num = |t: &str| -> Option<u32> {
        (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse().ok())
            .flatten()
    };
    let (y, m, d) = match (date.len(), date.as_bytes().get(4)) {
        (10, Some(b'-')) if &date[7..8] == "-" => (&date[..4], &date[5..7], &date[8..]),
        (7, Some(b'-')) => (&date[..4], &date[5..], "01"),
        (8, _) => (&date[..4], &date[4..6], &date[6..]),
        _ => return None,
    };
    let month = Month::try_from(u8::try_from(num(m)?).ok()?).ok()?;
    let date = Date::from_calendar_date(num(y)? as i32, month, u8::try_from(num(d)?).ok()?).ok()?;
    let Some(rest) = rest else {
        return Some(PrimitiveDateTime::new(date, Time::MIDNIGHT).assume_utc());
    };
    let (clock, zone) = match rest.find(['Z', 'z', '+', '-']) {
        Some(i) => (&rest[..i], Some(&rest[i..])),
        None => (rest, None),
    };
    let (hms, frac) = match clock.find(['.', ',']) {
        Some(i) => (&clock[..i], Some(&clock[i + 1..])),
        None => (clock, None),
    };
    let parts: Vec<&str> = if hms.contains(':') {
        hms.split(':').collect()
    } else {
        hms.as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap_or(""))
            .collect()
    };
    if parts.is_empty() || parts.len() > 3 || parts.iter().any(|p| p.len() != 2) {
        return None;
    }
    let field = |i: usize| parts.get(i).map_or(Some(0), |p| num(p));
    let (h, mi, sec) = (field(0)?, field(1)?, field(2)?);
    let micros = match frac {
        None => 0,
        Some(f) if f.is_empty() || parts.len() < 3 => return None,
        Some(f) => {
            let digits: String = f.chars().chain(std::iter::repeat('0')).take(6).collect();
            num(f)?;
            num(&digits)?
        }
    };
    let time = Time::from_hms_micro(
        u8::try_from(h).ok()?,
        u8::try_from(mi).ok()?,
        u8::try_from(sec).ok()?,
        micros,
    )
    .ok()?;
    let offset = match zone {
        None | Some("Z") | Some("z") => UtcOffset::UTC,
        Some(z) => {
            let sign: i8 = if z.starts_with('-') { -1 } else { 1 };
            let z = &z[1..];
            let (zh, zm) = match (z.len(), z.contains(':')) {
                (2, false) => (z, "00"),
                (4, false) => (&z[..2], &z[2..]),
                (5, true) if &z[2..3] == ":" => (&z[..2], &z[3..]),
                _ => return None,
            };
            let (zh, zm) = (i8::try_from(num(zh)?).ok()?, i8::try_from(num(zm)?).ok()?);
            UtcOffset::from_hms(sign * zh, sign * zm, 0).ok()?
        }
    };
    Some(PrimitiveDateTime::new(date, time).assume_offset(offset))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const ID: &str = "b48316c5-71e8-45e4-9884-6c78055b9b13";

    #[test]
    fn paths_with_and_without_a_project() {
        assert_eq!(route("/").unwrap(), Route::Versions);
        assert_eq!(route("/v2.1").unwrap(), Route::Version);
        assert_eq!(route("/v2.1/").unwrap(), Route::Version);
        let with = route(&format!(
            "/v2.1/ad355aa6ed3e4cf5/servers/{ID}/os-instance-actions"
        ))
        .unwrap();
        let Route::List { project, server } = with else {
            panic!()
        };
        assert_eq!(project.as_deref(), Some("ad355aa6ed3e4cf5"));
        assert_eq!(server.require().unwrap(), ID);
        let without = route(&format!(
            "/v2.1/servers/{}/os-instance-actions/req-1",
            ID.to_uppercase()
        ))
        .unwrap();
        let Route::Show {
            project,
            server,
            request_id,
        } = without
        else {
            panic!()
        };
        assert_eq!((project, request_id.as_str()), (None, "req-1"));
        assert_eq!(server.require().unwrap(), ID, "canonical");
        assert_eq!(server.asked, ID.to_uppercase(), "as asked");
    }

    #[test]
    fn hostile_paths_are_404s() {
        for path in [
            "/v2",
            "/v2.10",
            "/v2.1x",
            "/v2.1//servers/x/os-instance-actions",
            "/v2.1/admin/servers/x/os-instance-actions", // not hex
            "/v2.1/servers//os-instance-actions",
            "/v2.1/servers/x/os-instance-actions/",
            "/v2.1/servers/x/os-instance-actions/a/b",
            "/v2.1/servers/x/os-interface",
            "/v2.1/ab/cd/servers/x/os-instance-actions",
            "/v2.1/servers/%ff/os-instance-actions",
            "/../v2.1/servers/x/os-instance-actions",
        ] {
            let err = route(path).unwrap_err();
            assert_eq!(err.status.as_u16(), 404, "{path}");
        }
        let long = format!("/v2.1/{}/servers/{ID}/os-instance-actions", "a".repeat(300));
        assert!(route(&long).is_err());
        // Not a UUID: routed, then the instance is not found.
        let Route::List { server, .. } = route("/v2.1/servers/web1/os-instance-actions").unwrap()
        else {
            panic!()
        };
        let err = server.require().unwrap_err();
        assert_eq!(err.message, "Instance web1 could not be found.");
        let Route::List { server, .. } =
            route("/v2.1/servers/%7B0000/os-instance-actions").unwrap()
        else {
            panic!()
        };
        assert!(server.uuid.is_none());
    }

    fn v(minor: u32) -> Version {
        Version::new(2, minor)
    }

    #[test]
    fn below_2_58_the_query_is_ignored() {
        let q = list_query(Some("limit=abc&bogus=1&changes-since=never"), v(57)).unwrap();
        assert_eq!(q, ListQuery::default());
        assert_eq!(q.page_size(), MAX_LIMIT);
    }

    #[test]
    fn from_2_58_limit_marker_and_changes_since() {
        let q = list_query(
            Some("limit=5&marker=req-1&changes-since=2018-04-25T01%3A26%3A36Z"),
            v(58),
        )
        .unwrap();
        assert_eq!((q.limit, q.marker.as_deref()), (Some(5), Some("req-1")));
        assert_eq!(q.changes_since, Some(datetime!(2018-04-25 01:26:36 UTC)));
        assert_eq!(q.raw.len(), 3);
        assert_eq!(list_query(Some("limit=0"), v(58)).unwrap().page_size(), 0);
        assert_eq!(
            list_query(Some("limit=99999999999999999999999"), v(58))
                .unwrap()
                .page_size(),
            MAX_LIMIT
        );

        let err = |q: &str, minor| list_query(Some(q), v(minor)).unwrap_err().message;
        assert_eq!(
            err("limit=-1", 58),
            "Invalid input for query parameters limit. Value: -1. '-1' does not match '^[0-9]*$'"
        );
        assert_eq!(
            err("limit=", 58),
            "Invalid input for query parameters limit. Value: . '' does not match '^[0-9]*$'"
        );
        assert_eq!(
            err("limit=1&limit=2", 58),
            "Invalid input for query parameters limit. Value: ['1', '2']. ['1', '2'] is too long"
        );
        assert_eq!(err("changes-since=yesterday", 58), "Invalid input for query parameters changes-since. Value: yesterday. 'yesterday' is not a 'date-time'");
        // changes-before is 2.66's: an unknown property before it.
        assert_eq!(
            err("changes-before=2018-01-01", 65),
            "Additional properties are not allowed ('changes-before' was unexpected)"
        );
        assert_eq!(
            err("foo=1", 96),
            "Additional properties are not allowed ('foo' was unexpected)"
        );
        assert_eq!(
            err("changes-since=2018-02-01&changes-before=2018-01-01", 66),
            "The value of changes-since must be less than or equal to changes-before."
        );
        let q = list_query(
            Some("changes-since=2018-01-01&changes-before=2018-01-01"),
            v(66),
        )
        .unwrap();
        assert_eq!(q.changes_before, Some(datetime!(2018-01-01 0:00 UTC)));
    }

    #[test]
    fn hostile_queries() {
        let huge = format!("marker={}", "m".repeat(5000));
        assert_eq!(
            list_query(Some(&huge), v(58)).unwrap_err().status.as_u16(),
            400
        );
        let long_marker = format!("marker={}", "m".repeat(300));
        assert_eq!(
            list_query(Some(&long_marker), v(58))
                .unwrap_err()
                .status
                .as_u16(),
            400
        );
        assert!(list_query(Some("marker=%ff"), v(58)).is_err());
        let noise = format!("{}=1", "k".repeat(1000));
        assert!(list_query(Some(&noise), v(58)).unwrap_err().message.len() < 200);
        assert!(list_query(Some("&&&"), v(58)).is_ok());
        assert!(show_query(Some("x=1"), v(101)).is_ok());
        assert!(show_query(Some("x=1"), v(102)).is_err());
        assert!(show_query(None, v(102)).is_ok());
    }

    #[test]
    fn iso_8601_as_nova_reads_it() {
        let ok = |s: &str| parse_isotime(s).unwrap_or_else(|| panic!("{s}"));
        assert_eq!(ok("2018-04-25"), datetime!(2018-04-25 0:00 UTC));
        assert_eq!(ok("20180425"), datetime!(2018-04-25 0:00 UTC));
        assert_eq!(
            ok("2018-04-25T01:26:36.790544"),
            datetime!(2018-04-25 01:26:36.790544 UTC)
        );
        assert_eq!(
            ok("2018-04-25 01:26:36,5Z"),
            datetime!(2018-04-25 01:26:36.5 UTC)
        );
        assert_eq!(
            ok("2018-04-25T01:26:36+02:00"),
            datetime!(2018-04-24 23:26:36 UTC)
        );
        assert_eq!(
            ok("2018-04-25T012636-0130"),
            datetime!(2018-04-25 02:56:36 UTC)
        );
        assert_eq!(ok("2018-04-25T01:26"), datetime!(2018-04-25 01:26 UTC));
        assert_eq!(ok("2018-04-25T01+05"), datetime!(2018-04-24 20:00 UTC));
        for bad in [
            "",
            "2018",
            "2018-13-01",
            "2018-02-30",
            "2018-04-25T25:00",
            "2018-04-25T01:26:36 02:00",
            "2018-04-25T1:2:3",
            "yesterday",
            "2018-04-25T01:26:36+2",
            "2018-04-25T01.5",
            "２０１８-04-25",
        ] {
            assert!(parse_isotime(bad).is_none(), "{bad}");
        }
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::super::microversion::{MAX, MIN};
    use super::*;
    use crate::api::fuzzing::strategies;

    fn version() -> impl Strategy<Value = Version> {
        (MIN.minor..=MAX.minor).prop_map(|minor| Version::new(2, minor))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// A path the clients build is routed to what it names, its server
        /// id decoded; anything else is a refusal, never a panic.
        #[test]
        fn routes_read_back_what_was_built(
            project in proptest::option::of("[0-9a-f]{32}"),
            server in "[a-z0-9 %é-]{1,12}",
            request in "req-[0-9a-f-]{1,12}",
            which in 0..3usize,
            junk in "(/v2\\.1)?(/[a-z0-9.%-]{0,8}){0,5}",
        ) {
            let encoded = percent_encoding::utf8_percent_encode(&server, percent_encoding::NON_ALPHANUMERIC).to_string();
            let prefix = project.as_ref().map(|p| format!("/{p}")).unwrap_or_default();
            let path = match which {
                0 => format!("/v2.1{prefix}/servers/{encoded}/action"),
                1 => format!("/v2.1{prefix}/servers/{encoded}/os-instance-actions"),
                _ => format!("/v2.1{prefix}/servers/{encoded}/os-instance-actions/{request}"),
            };
            let (asked_project, asked_server) = match route(&path).unwrap() {
                Route::Action { project, server } | Route::List { project, server } => (project, server),
                Route::Show { project, server, request_id } => {
                    prop_assert_eq!(request_id, request.clone());
                    (project, server)
                }
                other => return Err(TestCaseError::fail(format!("{path} → {other:?}"))),
            };
            prop_assert_eq!(asked_project, project);
            prop_assert_eq!(asked_server.asked, server);
            let _ = route(&junk);
        }

        /// The queries, at every microversion: refused or read, never a
        /// panic; a limit read is the one asked.
        #[test]
        fn queries_never_panic(query in strategies::query(), version in version(), limit in 0u64..2000) {
            let _ = list_query(Some(&query), version);
            let _ = show_query(Some(&query), version);
            if version.at_least(2, 58) {
                let read = list_query(Some(&format!("limit={limit}")), version).unwrap();
                prop_assert_eq!(read.limit, Some(limit));
            }
        }

        /// `changes-since` as Nova writes times is read back as that time.
        #[test]
        fn isotimes_round_trip(secs in 0i64..4_102_444_800, junk in "\\PC{0,24}") {
            let t = OffsetDateTime::from_unix_timestamp(secs).unwrap();
            let written = t.format(&time::format_description::well_known::Rfc3339).unwrap();
            prop_assert_eq!(parse_isotime(&written), Some(t));
            let _ = parse_isotime(&junk);
        }
    }
}
