//! Everything the Marketplace dialect parses of a request, for the fuzz
//! target `marketplace` (see `api::fuzzing`): the bearer token, looked up in
//! the documented token file, and the upload id in the path.

use std::sync::OnceLock;

use super::{bearer, parse_id, PREFIX, TOKEN_RULES};
use crate::api::fuzzing::Request;
use crate::auth::StaticTokens;

pub(in crate::api) fn request(r: &Request<'_>) {
    static TOKENS: OnceLock<StaticTokens> = OnceLock::new();
    let tokens = TOKENS.get_or_init(|| {
        let text = include_str!("../../../systemd/marketplace-tokens.toml");
        StaticTokens::parse(text, TOKEN_RULES).expect("the documented token file parses")
    });
    if let Some(token) = bearer(r.header("authorization")) {
        let _ = tokens.holder(token);
    }
    let _ = parse_id(r.path.strip_prefix(PREFIX).unwrap_or(r.path));
}

/// A token file as this dialect reads one.
pub(in crate::api) fn token_file(text: &str) {
    let _ = StaticTokens::parse(text, TOKEN_RULES);
}
