//! What the server and the dialects tell each other beyond the HTTP
//! messages, as extensions: the server on each request, a dialect on each
//! response.

use std::net::SocketAddr;

use crate::service::{Outcome, Shot};

/// The local address of the connection a request came on: the address the
/// client dialled.
#[derive(Debug, Clone, Copy)]
pub struct LocalAddr(pub SocketAddr);

/// The request's head gave its body's length both as `Content-Length` and as
/// `Transfer-Encoding` (hyper reads it chunked and drops the other): dialects
/// refuse it in their own terms. See `server::framing`.
#[derive(Debug, Clone, Copy)]
pub struct AmbiguousLength;

/// How the pipeline answered a request, in the response's extensions: the
/// server records it (metrics) and takes it off before the response goes out.
#[derive(Debug, Clone)]
pub struct Answered {
    pub dialect: &'static str,
    /// One of the dialect's actions, or `"unknown"`: callers do not choose
    /// metric labels.
    pub action: &'static str,
    pub outcome: Outcome,
    /// The screen served, if any.
    pub shot: Option<Shot>,
}
