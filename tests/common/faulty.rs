//! A TCP proxy in front of a real server, whose faults a test switches on
//! and off: the object store "down" (every connection closed at once),
//! "slow" (every byte forwarded at a trickle), or "failing" (every request
//! answered `500 InternalError` in S3's words, the body read and dropped).
//! Switching closes the connections open, so a client's pooled keep-alive
//! connection meets the new fault at its next request.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    Down,
    /// Bytes a second, each way.
    Slow(u32),
    Failing,
}

pub struct Faulty {
    pub addr: SocketAddr,
    fault: Arc<Mutex<Fault>>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

const S3_500: &str =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code>\
<Message>We encountered an internal error. Please try again.</Message></Error>";

impl Faulty {
    /// A proxy on a free loopback port to `upstream`, passing everything.
    pub fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let proxy = Self {
            addr,
            fault: Arc::new(Mutex::new(Fault::None)),
            open: Arc::default(),
            stop: Arc::default(),
        };
        let (fault, open, stop) = (proxy.fault.clone(), proxy.open.clone(), proxy.stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = client else { continue };
                let now = *fault.lock().unwrap();
                if let Ok(c) = client.try_clone() {
                    open.lock().unwrap().push(c);
                }
                std::thread::spawn(move || serve(client, upstream, now));
            }
        });
        proxy
    }

    /// Switches to `fault`, closing every connection open.
    pub fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
        for c in self.open.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// `http://addr`, for a target's endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Faulty {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.set(Fault::Down);
        // Wakes the accept loop so that it sees `stop`.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(client: TcpStream, upstream: SocketAddr, fault: Fault) {
    match fault {
        Fault::Down => {
            let _ = client.shutdown(Shutdown::Both);
        }
        Fault::Failing => fail_every_request(client),
        Fault::None | Fault::Slow(_) => {
            let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) else {
                return;
            };
            let rate = match fault {
                Fault::Slow(rate) => Some(rate),
                _ => None,
            };
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || pump(c2, s2, rate));
            pump(server, client, rate);
        }
    }
}

/// Copies `from` to `to` until either ends, at `rate` bytes a second if given.
fn pump(mut from: TcpStream, mut to: TcpStream, rate: Option<u32>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let want = match rate {
            Some(rate) => buf.len().min((rate as usize / 10).max(1)),
            None => buf.len(),
        };
        match from.read(&mut buf[..want]) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                if rate.is_some() {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

/// Reads each request (head, then `Content-Length` bytes of body) and
/// answers it S3's 500, keeping the connection for the next one.
fn fail_every_request(mut client: TcpStream) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(30)));
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let head_end = loop {
            if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match client.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
        };
        let head = String::from_utf8_lossy(&pending[..head_end]).to_ascii_lowercase();
        let body: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while pending.len() < head_end + body {
            match client.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
        }
        pending.drain(..head_end + body);
        let reply = format!(
            "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\n\
             Content-Length: {}\r\nx-amz-request-id: VMSHOTFAULT\r\n\r\n{S3_500}",
            S3_500.len()
        );
        if client.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}
