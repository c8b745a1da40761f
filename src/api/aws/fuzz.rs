//! Everything the AWS dialect parses of a request, for the fuzz target `aws`
//! (see `api::fuzzing`): the query and form parameters and the action they
//! ask for, and SigV4 in both forms, checked with the key of AWS's SigV4 test
//! suite at the suite's time (the seeds are its requests) and any skew, so
//! that mutations of a signed request reach every check after the clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::params::Params;
use super::sigv4;
use crate::api::fuzzing::{hosts, Request};

/// The suite's secret, for any key id.
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
/// 2015-08-30T12:36:00Z, the suite's time.
const SUITE_TIME: u64 = 1_440_938_160;

/// Whether the signature held.
pub(in crate::api) fn request(r: &Request<'_>) -> bool {
    if let Ok(params) = Params::parse(r.method, r.query, r.header("content-type"), r.body) {
        let _ = params.request();
    }
    let request = sigv4::Request {
        method: r.method,
        path: r.path,
        query: r.query,
        headers: &r.headers,
        body: r.body,
    };
    let mut held = false;
    for service in ["service", "ec2"] {
        let policy = sigv4::Policy {
            service,
            region: None,
            now: UNIX_EPOCH + Duration::from_secs(SUITE_TIME),
            max_skew: Duration::MAX,
        };
        if let Ok(verified) = sigv4::verify(&request, &policy, |_| Some(SECRET)) {
            hosts().accepts(&verified.host, None);
            held = true;
        }
    }
    // The clock's own arithmetic, at the extremes a host could have.
    let policy = sigv4::Policy {
        service: "ec2",
        region: Some("us-east-1"),
        now: SystemTime::UNIX_EPOCH,
        max_skew: sigv4::DEFAULT_SKEW,
    };
    let _ = sigv4::verify(&request, &policy, |_| Some(SECRET));
    held
}
