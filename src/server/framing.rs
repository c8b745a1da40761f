//! Spots a request head that gives its body's length two ways, as
//! `Content-Length` and `Transfer-Encoding`. hyper follows RFC 9112 there
//! (chunked wins, and the connection closes after the answer) but drops the
//! `Content-Length` it ignored, so a handler cannot tell. A proxy in front may
//! have framed the same bytes by the length instead (request smuggling): such
//! a request is refused, in the dialect's own terms, rather than guessed at.
//!
//! Fed with the bytes read from the socket while a request head is awaited;
//! header names are matched at line starts, case-insensitively.

const CONTENT_LENGTH: &[u8] = b"content-length:";
const TRANSFER_ENCODING: &[u8] = b"transfer-encoding:";
/// Longest name looked for, colon included.
const LONGEST: usize = TRANSFER_ENCODING.len();

#[derive(Debug, Clone, Default)]
pub(crate) struct HeadScan {
    /// The first bytes of the current line, lowercased.
    line: Vec<u8>,
    /// Whether the current line is longer than `LONGEST` (no more to match).
    line_long: bool,
    /// A non-empty line (the request line) has been read.
    started: bool,
    /// An empty line followed it: the head ended.
    ended: bool,
    content_length: bool,
    transfer_encoding: bool,
}

impl HeadScan {
    /// Starts over, for the next request on the connection.
    pub(crate) fn reset(&mut self) {
        *self = Self::default();
    }

    /// Reads `bytes`, the next ones off the socket; nothing after the end of
    /// the head counts (it is the body, or the next request).
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.ended {
                return;
            }
            if b == b'\n' {
                self.end_line();
                continue;
            }
            if !self.line_long {
                if self.line.len() < LONGEST {
                    self.line.push(b.to_ascii_lowercase());
                } else {
                    self.line_long = true;
                }
            }
        }
    }

    fn end_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        let long = std::mem::replace(&mut self.line_long, false);
        // The head ends with an empty line; empty lines before the request
        // line are skipped, as hyper skips them.
        let empty = !long && (line.is_empty() || line == b"\r");
        if empty {
            self.ended = self.started;
            return;
        }
        self.started = true;
        self.content_length |= line.starts_with(CONTENT_LENGTH);
        self.transfer_encoding |= line.starts_with(TRANSFER_ENCODING);
    }

    /// Whether the head read so far gives the length both ways.
    pub(crate) fn ambiguous(&self) -> bool {
        self.content_length && self.transfer_encoding
    }
}

#[cfg(test)]
mod tests {
    use super::HeadScan;

    fn scan(chunks: &[&[u8]]) -> bool {
        let mut scan = HeadScan::default();
        for chunk in chunks {
            scan.feed(chunk);
        }
        scan.ambiguous()
    }

    #[test]
    fn both_lengths_are_spotted_however_the_bytes_arrive() {
        let head = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTRANSFER-encoding: chunked\r\n\r\n0\r\n\r\n";
        assert!(scan(&[head]));
        let bytes: Vec<&[u8]> = head.chunks(1).collect();
        assert!(scan(&bytes), "one byte at a time");
        assert!(scan(&[b"\r\n", head]), "after a leading empty line");
    }

    #[test]
    fn one_length_or_lookalikes_are_not_ambiguous() {
        assert!(!scan(&[
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
        ]));
        assert!(!scan(&[
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        ]));
        // Names must start their line and end with the colon.
        assert!(!scan(&[
            b"POST / HTTP/1.1\r\nX-Content-Length: 5\r\nTransfer-Encoding-X: chunked\r\n\r\n"
        ]));
        // What follows the head (a body, the next request) does not count.
        assert!(!scan(&[
            b"POST / HTTP/1.1\r\nContent-Length: 30\r\n\r\nTransfer-Encoding: chunked\r\n\r\n"
        ]));
    }

    #[test]
    fn a_reset_starts_the_next_request_afresh() {
        let mut scan = HeadScan::default();
        scan.feed(b"GET / HTTP/1.1\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(scan.ambiguous());
        scan.reset();
        scan.feed(b"GET / HTTP/1.1\r\n\r\n");
        assert!(!scan.ambiguous());
    }
}
