//! Everything the Nova dialect parses of a request, for the fuzz target
//! `nova` (see `api::fuzzing`): the route, the microversion headers, the
//! list and show queries, the action body and the console length it asks
//! for, `X-Auth-Token` against the documented token file, and (the body
//! standing in for Keystone's answer) a token validation.

use std::sync::OnceLock;

use super::{console, microversion, params, token};
use crate::api::fuzzing::Request;
use crate::auth::StaticTokens;

pub(in crate::api) fn request(r: &Request<'_>) {
    static TOKENS: OnceLock<StaticTokens> = OnceLock::new();
    let tokens = TOKENS.get_or_init(|| {
        let text = include_str!("../../../systemd/nova-tokens.toml");
        StaticTokens::parse(text, token::STATIC_RULES).expect("the documented token file parses")
    });
    if let Some(t) = r.header("x-auth-token") {
        let _ = tokens.holder(t);
    }
    for prefix in ["", "/compute"] {
        let _ = params::route(r.path.strip_prefix(prefix).unwrap_or(r.path));
    }
    let version = microversion::negotiate(&r.headers).unwrap_or(microversion::MIN);
    let query = (!r.query.is_empty()).then_some(r.query);
    let _ = params::list_query(query, version);
    let _ = params::show_query(query, version);
    if let Ok(length) = console::parse(r.body) {
        let _ = console::output(r.body, length);
    }
    let _ = token::parse_validation(r.body);
}

/// A token file as this dialect reads one.
pub(in crate::api) fn token_file(text: &str) {
    let _ = StaticTokens::parse(text, token::STATIC_RULES);
}
