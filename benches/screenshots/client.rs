//! The benchmark's HTTP client: blocking HTTP/1.1 over a std TcpStream,
//! keeping the connection alive when the server allows it (vmshot does; the
//! anchor's http.server speaks HTTP/1.0 and closes after every reply, which
//! is part of what it costs its callers).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use base64::Engine;

pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

pub struct Client {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
}

/// Failure before the server said anything on a kept-alive connection: it
/// closed the connection while idle, and the request was never seen.
struct NotSent(String);

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, conn: None }
    }

    /// GET `target`; the whole reply, whatever its status.
    pub fn get(&mut self, target: &str) -> Result<Reply, String> {
        self.request("GET", target, &[], b"")
    }

    /// `method target` with `headers` and `body`; the whole reply, whatever
    /// its status.
    pub fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Reply, String> {
        let reused = self.conn.is_some();
        match self.exchange(method, target, headers, body) {
            Ok(reply) => Ok(reply),
            // Only a request the server cannot have seen is sent again: a
            // signed request carries a nonce that vmshot refuses twice.
            Err(Ok(NotSent(_))) if reused => {
                self.conn = None;
                self.exchange(method, target, headers, body)
                    .map_err(|e| match e {
                        Ok(NotSent(e)) | Err(e) => e,
                    })
            }
            Err(Ok(NotSent(e)) | Err(e)) => {
                self.conn = None;
                Err(e)
            }
        }
    }

    fn exchange(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Reply, Result<NotSent, String>> {
        if self.conn.is_none() {
            let stream = TcpStream::connect(self.addr)
                .map_err(|e| Err(format!("connect to {}: {e}", self.addr)))?;
            stream.set_nodelay(true).ok();
            stream.set_read_timeout(Some(Duration::from_secs(60))).ok();
            self.conn = Some(BufReader::with_capacity(1 << 16, stream));
        }
        let addr = self.addr;
        let conn = self.conn.as_mut().expect("connected above");
        let mut request = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        if !body.is_empty() {
            request.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(body);
        conn.get_mut()
            .write_all(&bytes)
            .map_err(|e| Ok(NotSent(format!("send: {e}"))))?;

        let mut line = String::new();
        match conn.read_line(&mut line) {
            Ok(0) => return Err(Ok(NotSent("closed before replying".into()))),
            Ok(_) => {}
            Err(e) => return Err(Err(format!("read status line: {e}"))),
        }
        let mut parts = line.split_whitespace();
        let version = parts.next().unwrap_or_default().to_owned();
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Err(format!("bad status line {line:?}")))?;
        let mut keep_alive = version == "HTTP/1.1";
        let (mut length, mut chunked) = (None, false);
        loop {
            line.clear();
            conn.read_line(&mut line)
                .map_err(|e| Err(format!("read headers: {e}")))?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse::<usize>().ok(),
                "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
                "connection" => keep_alive = !value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        let body = if chunked {
            read_chunked(conn).map_err(|e| Err(format!("read chunked body: {e}")))?
        } else if let Some(n) = length {
            let mut body = vec![0; n];
            conn.read_exact(&mut body)
                .map_err(|e| Err(format!("read body: {e}")))?;
            body
        } else {
            keep_alive = false;
            let mut body = Vec::new();
            conn.read_to_end(&mut body)
                .map_err(|e| Err(format!("read body: {e}")))?;
            body
        };
        if !keep_alive {
            self.conn = None;
        }
        Ok(Reply { status, body })
    }
}

fn read_chunked(conn: &mut BufReader<TcpStream>) -> std::io::Result<Vec<u8>> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        conn.read_line(&mut line)?;
        let size = line.trim().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size, 16).map_err(|_| bad("chunk size"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                line.clear();
                if conn.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        conn.read_exact(&mut body[start..])?;
        line.clear();
        conn.read_line(&mut line)?;
    }
}

/// Checks that a reply is a screenshot: 200, JSON, a base64 JPEG in
/// `Screenshot`. Returns the JPEG's size.
pub fn check_screenshot(reply: &Reply) -> Result<usize, String> {
    let excerpt = || String::from_utf8_lossy(&reply.body[..reply.body.len().min(300)]).into_owned();
    if reply.status != 200 {
        return Err(format!("HTTP {}: {}", reply.status, excerpt()));
    }
    let value: serde_json::Value = serde_json::from_slice(&reply.body)
        .map_err(|e| format!("not JSON ({e}): {}", excerpt()))?;
    let encoded = value["Screenshot"]
        .as_str()
        .ok_or_else(|| format!("no Screenshot: {}", excerpt()))?;
    let jpeg = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("Screenshot is not base64: {e}"))?;
    if !jpeg.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Err(format!(
            "Screenshot is not a JPEG: {:02x?}",
            &jpeg[..jpeg.len().min(4)]
        ));
    }
    Ok(jpeg.len())
}
