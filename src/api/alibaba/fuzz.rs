//! Everything the Alibaba dialect parses of a request, for the fuzz target
//! `alibaba` (see `api::fuzzing`): the query and form parameters, the
//! headers it insists come once, `Authorization: ACS3-HMAC-SHA256 …`, both
//! signature checks (with the SDK vectors' key, so that a captured request
//! verifies and its mutations reach the checks after it), the timestamps and
//! the flags.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::signature::{verify_acs3, verify_v1, Acs3Authorization, Acs3Request};
use super::{flag, header, response_format, single_headers, valid_nonce, Params};
use crate::api::fuzzing::Request;

/// The secret of `tests/sdk/vectors`.
const SECRET: &str = "testsecret";

/// Whether either signature held.
pub(in crate::api) fn request(r: &Request<'_>) -> bool {
    let _ = single_headers(&r.headers);
    let (Ok(query), Ok(params)) = (Params::parse(r.query, b""), Params::parse(r.query, r.body))
    else {
        return false;
    };
    let _ = response_format(Some(&params), &r.headers);
    for name in ["Timestamp", "x-acs-date"] {
        let value = params.get(name).or_else(|| r.header(name));
        let _ = value.map(|v| OffsetDateTime::parse(v, &Rfc3339));
    }
    let _ = valid_nonce(params.get("SignatureNonce"), "SignatureNonce");
    let _ = flag(params.get("WakeUp"), "WakeUp");
    let v1 = verify_v1(r.method, &params, SECRET).is_ok();
    let Some(auth) = r.header("authorization").and_then(Acs3Authorization::parse) else {
        return v1;
    };
    let lookup = |name: &str| header(&r.headers, name);
    let acs3 = Acs3Request {
        method: r.method,
        path: r.path,
        query: &query,
        header: &lookup,
        body: r.body,
    };
    verify_acs3(&auth, &acs3, SECRET).is_ok() || v1
}
