//! What the server tells dialects about a request beyond its HTTP message,
//! as request extensions.

use std::net::SocketAddr;

/// The local address of the connection a request came on: the address the
/// client dialled.
#[derive(Debug, Clone, Copy)]
pub struct LocalAddr(pub SocketAddr);

/// The request's head gave its body's length both as `Content-Length` and as
/// `Transfer-Encoding` (hyper reads it chunked and drops the other): dialects
/// refuse it in their own terms. See `server::framing`.
#[derive(Debug, Clone, Copy)]
pub struct AmbiguousLength;
