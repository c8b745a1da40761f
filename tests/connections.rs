//! Connection limits through a real `vmshot serve`: the header-read, idle and
//! TLS handshake timeouts, the cap on open connections and its eviction, and
//! HTTP/1.1 only. Every wait is a bounded poll on loopback. The figures are
//! printed: `cargo test --test connections -- --nocapture`.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::host::LibvirtdLock;
use common::http::send;
use common::tls::Cert;

/// Header 2 s and idle 3 s: different, so a test can tell which timer fired.
const SHORT: &str =
    "[server]\nlisten = \"127.0.0.1:0\"\nheader_read_timeout_secs = 2\nidle_timeout_secs = 3\n";
const HEADER: Duration = Duration::from_secs(2);
const IDLE: Duration = Duration::from_secs(3);
/// How late a close may come after its timeout (a busy 2-core host).
const LATE: Duration = Duration::from_millis(1500);
/// How early: tokio's timers are good to the millisecond.
const EARLY: Duration = Duration::from_millis(100);

/// Waits until `limit` after `start` for the server to close `s` (EOF or a
/// reset); when it did, from `start`. What the server sends is read and dropped.
fn wait_closed(s: &mut TcpStream, start: Instant, limit: Duration) -> Option<Duration> {
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

fn assert_closed_at(closed: Option<Duration>, timeout: Duration, what: &str) {
    let at = closed.unwrap_or_else(|| panic!("{what}: still open {:?} after", timeout + LATE));
    assert!(
        at + EARLY >= timeout && at <= timeout + LATE,
        "{what}: closed after {at:?}, the timeout is {timeout:?}"
    );
    eprintln!("{what}: closed after {at:.2?} (timeout {timeout:?})");
}

/// One GET on a kept-alive connection; status and body (Content-Length replies).
fn get_kept_alive(s: &mut TcpStream, path: &str) -> (u16, String) {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if raw.len() >= end + 4 + length {
                let status = head[9..12].parse().unwrap();
                let body = String::from_utf8_lossy(&raw[end + 4..end + 4 + length]);
                return (status, body.into_owned());
            }
        }
        let n = s.read(&mut buf).expect("a response");
        assert!(n > 0, "closed before the response: {raw:?}");
        raw.extend_from_slice(&buf[..n]);
    }
}

/// `GET /healthz` on a new connection, waiting 10 s at most: the status (0
/// for no answer) and how long it took.
fn healthz(addr: SocketAddr) -> (u16, Duration) {
    let start = Instant::now();
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(10)) else {
        return (0, start.elapsed());
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let reply = String::from_utf8_lossy(&raw);
    let status = match reply.strip_prefix("HTTP/1.1 ") {
        Some(rest) if reply.ends_with("\r\n\r\nok\n") => rest[..3].parse().unwrap_or(0),
        _ => 0,
    };
    (status, start.elapsed())
}

/// A series' value in `/metrics`, e.g. `vmshot_connections_open`; NaN if
/// absent, which fails every comparison.
fn metric(d: &Daemon, series: &str) -> f64 {
    let text = send(d.addr, "GET", "/metrics", &[], b"").text();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn closed_total(d: &Daemon, reason: &str) -> f64 {
    metric(
        d,
        &format!("vmshot_connections_closed_total{{reason=\"{reason}\"}}"),
    )
}

/// Opens `n` connections that never send anything; `each` runs after every one.
fn open_silent(addr: SocketAddr, n: usize, mut each: impl FnMut(usize)) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("connection {i}: {e}"));
            each(i);
            s
        })
        .collect()
}

/// How many of `conns` the server has not closed: a peek finds neither EOF
/// nor a reset.
fn still_open(conns: &[TcpStream]) -> usize {
    conns
        .iter()
        .filter(|s| {
            s.set_nonblocking(true).unwrap();
            let open = matches!(s.peek(&mut [0u8; 1]), Err(e) if e.kind() == ErrorKind::WouldBlock);
            s.set_nonblocking(false).unwrap();
            open
        })
        .count()
}

/// Sets the open-file limit of `pid` (0: this process, whose daemons then
/// inherit it). Root may raise the hard limit too.
fn set_fd_limit(pid: i32, soft: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit reads and writes only the structs given.
    unsafe {
        assert_eq!(
            libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut limit),
            0
        );
        limit.rlim_cur = soft;
        limit.rlim_max = limit.rlim_max.max(soft);
        assert_eq!(
            libc::prlimit(pid, libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut()),
            0,
            "{}",
            std::io::Error::last_os_error()
        );
    }
}

#[test]
fn a_request_head_trickled_a_byte_a_second_is_cut_at_the_header_timeout() {
    let d = Daemon::start("", SHORT);
    // A whole request in time is served.
    assert_eq!(send(d.addr, "GET", "/healthz", &[], b"").status, 200);
    // So is one sent in three pieces, within the timeout.
    let mut s = TcpStream::connect(d.addr).unwrap();
    for piece in ["GET /healthz HTT", "P/1.1\r\nHost: local", "host\r\n\r\n"] {
        std::thread::sleep(Duration::from_millis(400));
        s.write_all(piece.as_bytes()).unwrap();
    }
    assert_eq!(get_kept_alive(&mut s, "/healthz").0, 200);

    // One byte a second: the read between two bytes is the pause.
    let mut s = TcpStream::connect(d.addr).unwrap();
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut closed = None;
    // Bounded: ten bytes, ten seconds; the head is longer than that.
    for &byte in b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
        .iter()
        .take(10)
    {
        if s.write_all(&[byte]).is_err() {
            closed = Some(start.elapsed());
            break;
        }
        match s.read(&mut [0u8; 512]) {
            Ok(0) => closed = Some(start.elapsed()),
            Ok(n) => panic!("{n} bytes of answer to part of a head"),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => closed = Some(start.elapsed()),
        }
        if closed.is_some() {
            break;
        }
    }
    assert_closed_at(closed, HEADER, "a head trickled a byte a second");
    assert!(closed_total(&d, "header_timeout") >= 1.0);
}

#[test]
fn an_idle_kept_alive_connection_closes_at_the_idle_timeout_a_silent_one_at_the_header_timeout() {
    let d = Daemon::start("", SHORT);

    let mut silent = TcpStream::connect(d.addr).unwrap();
    let start = Instant::now();
    let closed = wait_closed(&mut silent, start, HEADER + LATE);
    assert_closed_at(closed, HEADER, "a new connection that sends nothing");

    let mut kept = TcpStream::connect(d.addr).unwrap();
    assert_eq!(get_kept_alive(&mut kept, "/healthz"), (200, "ok\n".into()));
    // Used again before the idle timeout (and after the header one): still served.
    let again = Instant::now();
    assert!(wait_closed(&mut kept, again, HEADER + Duration::from_millis(500)).is_none());
    assert_eq!(get_kept_alive(&mut kept, "/healthz").0, 200);
    let idle_from = Instant::now();
    let closed = wait_closed(&mut kept, idle_from, IDLE + LATE);
    assert_closed_at(closed, IDLE, "a kept-alive connection after its response");

    assert!(closed_total(&d, "idle") >= 1.0);
    assert!(closed_total(&d, "header_timeout") >= 1.0);
}

#[test]
fn at_the_cap_silent_connections_are_evicted_and_healthz_answers() {
    // A long header timeout, so only eviction closes them here.
    let d = Daemon::start(
        "",
        "[server]\nlisten = \"127.0.0.1:0\"\nmax_connections = 64\nheader_read_timeout_secs = 60\n",
    );
    d.settled();
    assert_eq!(healthz(d.addr).0, 200);
    let base = d.open_fds();
    let mut max_fds = base;
    let conns = open_silent(d.addr, 200, |i| {
        if i % 10 == 0 {
            max_fds = max_fds.max(d.open_fds());
        }
    });
    let mut latencies = Vec::new();
    for _ in 0..5 {
        let (status, took) = healthz(d.addr);
        assert_eq!(status, 200, "healthz at the cap\n{}", d.logs());
        latencies.push(took);
        max_fds = max_fds.max(d.open_fds());
    }
    let open = still_open(&conns);
    let evicted = closed_total(&d, "evicted");
    let open_gauge = metric(&d, "vmshot_connections_open");
    eprintln!(
        "max_connections 64, 200 silent: {open} still open client-side; healthz {latencies:.1?}; \
         daemon fds {base} before, {max_fds} at most; evicted {evicted}; open {open_gauge}"
    );
    // The first call may wait behind connects still in the backlog.
    assert!(latencies[0] < Duration::from_secs(5), "{latencies:?}");
    assert!(
        latencies[1..].iter().all(|t| *t < Duration::from_secs(1)),
        "{latencies:?}"
    );
    // The cap, one accepted while making room, and a few more the runtime may hold.
    assert!(max_fds <= base + 64 + 4, "{max_fds} fds, {base} before");
    assert!(open <= 64 + 1, "{open} silent connections still open");
    // 200 silent ones and 6 requests through 64 places.
    assert!(evicted >= 136.0, "{evicted} evicted");
    assert!(open_gauge <= 64.0);
}

#[test]
fn out_of_file_descriptors_the_daemon_evicts_to_accept_and_healthz_answers() {
    // The review's case: LimitNOFILE reached before any cap. The default cap
    // (1024) is far off; the daemon's own limit is set just above what it holds.
    let _lock = LibvirtdLock::shared();
    let d = Daemon::start(
        "",
        "[server]\nlisten = \"127.0.0.1:0\"\nheader_read_timeout_secs = 60\n",
    );
    // libvirt takes its descriptors first: its GLib aborts the process when
    // it finds none (the reason for the cap's reserve).
    assert!(d
        .wait_for_log("connected to libvirt", Duration::from_secs(20))
        .is_some());
    d.settled();
    assert_eq!(healthz(d.addr).0, 200);
    let base = d.open_fds();
    let limit = base as u64 + 32;
    set_fd_limit(d.pid(), limit);
    let conns = open_silent(d.addr, 200, |_| {});
    let mut latencies = Vec::new();
    for _ in 0..5 {
        let (status, took) = healthz(d.addr);
        assert_eq!(status, 200, "healthz out of fds\n{}", d.logs());
        latencies.push(took);
    }
    assert!(
        d.wait_for_log("out of file descriptors", Duration::from_secs(5))
            .is_some(),
        "{}",
        d.logs()
    );
    let fds = d.open_fds();
    let open = still_open(&conns);
    eprintln!(
        "open-file limit {limit}, 200 silent: {open} still open client-side; healthz {latencies:.1?}; daemon fds {fds}"
    );
    // The first call may wait behind connects still in the backlog.
    assert!(latencies[0] < Duration::from_secs(5), "{latencies:?}");
    assert!(
        latencies[1..].iter().all(|t| *t < Duration::from_secs(1)),
        "{latencies:?}"
    );
    assert!(fds as u64 <= limit);
    assert!(closed_total(&d, "evicted") >= 100.0);
}

#[test]
fn two_thousand_silent_connections_with_the_defaults() {
    // vmshot.service's LimitNOFILE, inherited by the daemon; room for 2,000 here.
    set_fd_limit(0, 4096);
    let d = Daemon::start("", "");
    d.settled();
    assert_eq!(healthz(d.addr).0, 200);
    let (base_fds, (base_rss, _)) = (d.open_fds(), d.rss_kib());
    let mut max_fds = base_fds;
    let start = Instant::now();
    let conns = open_silent(d.addr, 2000, |i| {
        if i % 100 == 0 {
            max_fds = max_fds.max(d.open_fds());
        }
    });
    let opened_in = start.elapsed();
    // The default header timeout (10 s) would close them otherwise.
    assert!(
        opened_in < Duration::from_secs(6),
        "opening took {opened_in:?}"
    );
    let mut latencies = Vec::new();
    for _ in 0..5 {
        let (status, took) = healthz(d.addr);
        assert_eq!(
            status,
            200,
            "healthz with 2,000 silent connections\n{}",
            d.logs()
        );
        latencies.push(took);
        max_fds = max_fds.max(d.open_fds());
    }
    let open = still_open(&conns);
    let (rss, peak) = d.rss_kib();
    let evicted = closed_total(&d, "evicted");
    let open_gauge = metric(&d, "vmshot_connections_open");
    eprintln!(
        "defaults, 2,000 silent connections opened in {opened_in:.2?}: {open} still open client-side, \
         {open_gauge} open in the daemon, {evicted} evicted; healthz 200 in {latencies:.1?}; \
         daemon RSS {base_rss} KiB before, {rss} KiB now, {peak} KiB peak; fds {base_fds} before, {max_fds} at most"
    );
    // The first call waits its turn behind the connects still in the kernel's
    // backlog (1.7 s seen with a debug build on a busy 2-core machine); once
    // the daemon has caught up, each answers at once.
    assert!(latencies[0] < Duration::from_secs(5), "{latencies:?}");
    assert!(
        latencies[1..].iter().all(|t| *t < Duration::from_secs(1)),
        "{latencies:?}"
    );
    assert!(
        max_fds <= base_fds + 1024 + 4,
        "{max_fds} fds, {base_fds} before"
    );
    assert!(open <= 1024 + 1, "{open}");
    assert!(
        peak <= base_rss + 48 * 1024,
        "peak RSS {peak} KiB, {base_rss} KiB before"
    );
    drop(conns);

    // The worst case at the cap: every connection holding an unfinished
    // head just under max_header_bytes (16 KiB) in its buffer.
    let mut head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Pad: ".to_vec();
    head.resize(15 * 1024, b'a');
    let heavy = open_silent(d.addr, 1100, |_| {});
    for s in &heavy {
        let _ = (&*s).write_all(&head);
    }
    let (status, took) = healthz(d.addr);
    assert_eq!(status, 200);
    let (rss, peak) = d.rss_kib();
    let open_gauge = metric(&d, "vmshot_connections_open");
    eprintln!(
        "defaults, 1,100 connections each with 15 KiB of an unfinished head: {open_gauge} open in the \
         daemon; healthz 200 in {took:.1?}; daemon RSS {rss} KiB now, {peak} KiB peak"
    );
    // Like the first call above, it may wait behind 1,100 heads being read
    // (1.2 s seen on a busy 2-core machine); it must answer, not hang.
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(
        peak <= base_rss + 96 * 1024,
        "peak RSS {peak} KiB, {base_rss} KiB before"
    );
}

#[test]
fn a_tls_client_that_never_says_hello_is_closed_at_the_handshake_timeout() {
    let cert = Cert::new();
    // Handshake 2 s, header 4 s: which one fired shows.
    let d = Daemon::start(
        "",
        &cert.server_section(
            "127.0.0.1:0",
            "tls_handshake_timeout_secs = 2\nheader_read_timeout_secs = 4\n",
        ),
    );
    let mut silent = TcpStream::connect(d.addr).unwrap();
    let start = Instant::now();
    let closed = wait_closed(&mut silent, start, HEADER + LATE);
    assert_closed_at(closed, HEADER, "a TLS client that sends no ClientHello");

    // Only HTTP/1.1 is offered, even to a client that prefers h2.
    let mut tls = cert.client(d.addr, &[b"h2", b"http/1.1"]);
    tls.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut reply = String::new();
    tls.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply.contains("vmshot_connections_closed_total{reason=\"handshake_timeout\"} 1"),
        "{reply}"
    );
}

#[test]
fn the_h2c_preface_gets_no_http2_and_http1_still_works() {
    let d = Daemon::start("", SHORT);
    let mut s = TcpStream::connect(d.addr).unwrap();
    // The prior-knowledge preface, then an empty SETTINGS frame.
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .unwrap();
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 1024];
    // Until the server closes, or 3 s: an HTTP/2 server would answer at once
    // with its SETTINGS frame and keep the connection open.
    while start.elapsed() < Duration::from_secs(3) {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let closed = start.elapsed() < Duration::from_secs(3);
    eprintln!(
        "h2c preface: {} bytes back ({:?}), closed: {closed}",
        reply.len(),
        String::from_utf8_lossy(&reply[..reply.len().min(40)])
    );
    assert!(
        reply.is_empty() || reply.starts_with(b"HTTP/1.1 4") || reply.starts_with(b"HTTP/1.1 5"),
        "an HTTP/2 answer: {reply:?}"
    );
    assert!(closed, "the connection stayed open");
    assert_eq!(send(d.addr, "GET", "/healthz", &[], b"").status, 200);
}

#[test]
fn a_request_in_service_outlives_the_timers_and_is_never_evicted() {
    // A libvirtd that never answers: libvirt calls wait out call_timeout_secs
    // (3 s), longer than the header and idle timeouts (1 s).
    let dir = common::fixtures::tempdir();
    let socket = dir.join("libvirt-sock");
    let stub = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    stub.set_nonblocking(true).unwrap();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nheader_read_timeout_secs = 1\nidle_timeout_secs = 1\n\
         max_connections = 1\n\n[libvirt]\nuri = \"qemu+unix:///system?socket={}\"\ncall_timeout_secs = 3\n",
        socket.display()
    );
    let d = Daemon::start("", &config);
    let addr = d.addr;
    let ready = std::thread::spawn(move || {
        let reply = send(addr, "GET", "/readyz", &[], b"");
        (reply.status, Instant::now())
    });
    // The daemon's readiness probe at start and /readyz each connect to the
    // stub; once both have, /readyz is in service. Held, never answered.
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while held.len() < 2 && Instant::now() < deadline {
        match stub.accept() {
            Ok((conn, _)) => held.push(conn),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    assert_eq!(held.len(), 2, "libvirt calls reaching the stub");
    // At the cap of 1, with the only connection in service: this one waits.
    let asked = Instant::now();
    let (status, took) = healthz(addr);
    let answered = Instant::now();
    let (ready_status, ready_done) = ready.join().unwrap();
    eprintln!("cap 1, one request in service: healthz {status} after {took:.2?}");
    assert_eq!(ready_status, 503, "/readyz answered, not cut");
    assert_eq!(status, 200);
    // Both clients wake as /readyz's connection closes: allow for threads.
    assert!(
        took > Duration::from_millis(1500) && answered + Duration::from_millis(100) >= ready_done,
        "healthz was served beside the request in service, not after it: after {took:?}, \
         /readyz done {:?} after healthz was asked",
        ready_done.saturating_duration_since(asked)
    );
    assert_eq!(closed_total(&d, "evicted"), 0.0);
    assert_eq!(closed_total(&d, "send_timeout"), 0.0);
    drop(held);
    let _ = std::fs::remove_dir_all(dir);
}
