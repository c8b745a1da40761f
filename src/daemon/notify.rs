//! Talking to systemd: readiness, status and the watchdog (`sd_notify(3)`,
//! `sd_watchdog_enabled(3)`).
//!
//! `vmshot serve` runs as a `Type=notify` service (see `systemd/vmshot.service`):
//! systemd considers it started only when it says `READY=1`, so units ordered
//! after it, and `systemctl start` itself, wait until its listeners are bound
//! rather than until the process exists. With `WatchdogSec=` set, systemd
//! expects `WATCHDOG=1` at least that often and restarts the service when the
//! pings stop: that is how a daemon that is alive but wedged gets restarted.
//!
//! The protocol is one datagram of newline-separated `KEY=VALUE` lines sent to
//! the `AF_UNIX` socket named by `$NOTIFY_SOCKET` (a path, or an abstract
//! socket when it starts with `@`). That is small enough to speak with std
//! alone, so vmshot neither links libsystemd nor takes a crate for it.
//!
//! Outside systemd (`$NOTIFY_SOCKET` unset: a terminal, a container, the test
//! suite) every function here does nothing. A failure to notify is logged once
//! and otherwise ignored: it must never take the daemon down, and systemd's own
//! timeouts already deal with a service that stays silent.
//!
//! The environment is only read, never cleared (`sd_notify`'s `unset_environment`
//! has no counterpart here): changing the environment of a multi-threaded
//! process races with every other thread that reads it, which is why Rust 2024
//! makes `std::env::remove_var` unsafe. A child process vmshot might spawn would
//! inherit `$NOTIFY_SOCKET`, but with `NotifyAccess=main` systemd ignores
//! whatever a process other than the main one sends.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// How long one notification may block when systemd's receive queue is full.
/// The socket is blocking so that `READY=1` is not lost to a momentary
/// backlog, but callers run on the async runtime, and a stuck PID 1 must not
/// stall a runtime worker indefinitely.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Tells systemd that start-up is complete: configuration loaded, listeners
/// bound. Until then `systemctl start vmshot` waits (up to `TimeoutStartSec=`).
pub fn ready() {
    send("READY=1");
}

/// Tells systemd that a graceful shutdown has begun, so that `systemctl status`
/// shows "deactivating" while in-flight requests drain, not "running".
pub fn stopping() {
    send("STOPPING=1");
}

/// A one-line, human-readable state shown by `systemctl status vmshot`.
/// Newlines would start new `KEY=VALUE` assignments in the datagram, so they
/// are replaced by spaces.
pub fn status(msg: &str) {
    send(&status_state(msg));
}

/// Feeds the watchdog once. Prefer [`spawn_watchdog`], which feeds it for as
/// long as the daemon is healthy.
pub fn watchdog() {
    send("WATCHDOG=1");
}

/// The watchdog period systemd expects pings within, if it enabled one for this
/// process: `$WATCHDOG_USEC`, provided `$WATCHDOG_PID` is absent or is our pid
/// (a pid of someone else means the variables were inherited from a parent
/// service and are not meant for us). `None` when there is no watchdog or the
/// variables are malformed (that case is logged).
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var_os("WATCHDOG_USEC");
    let pid = std::env::var_os("WATCHDOG_PID");
    match parse_watchdog(usec.as_deref(), pid.as_deref(), std::process::id()) {
        Ok(interval) => interval,
        Err(reason) => {
            tracing::warn!(
                usec = ?usec,
                pid = ?pid,
                "ignoring systemd's watchdog settings: {reason}"
            );
            None
        }
    }
}

/// Feeds the systemd watchdog every `interval / 2` (what `sd_watchdog_enabled(3)`
/// recommends) for as long as `healthy()` returns true; while it returns false
/// the pings stop, and if that lasts `interval`, systemd restarts the service.
/// Pings resume if `healthy()` recovers before then.
///
/// The task runs on the caller's tokio runtime, and it must be the runtime
/// that serves requests: not a dedicated thread, not a runtime of its own. The
/// point of the watchdog is that a wedged runtime (every worker blocked, a
/// deadlock, a stuck timer driver) stops feeding it; a feeder that lives
/// elsewhere would keep a dead daemon looking alive. For the same reason
/// `healthy` must be cheap and must not block: it runs on that runtime too.
/// Pass it whatever else "able to serve" means (e.g. the accept loop made
/// progress recently), or `|| true`. Not libvirt's health: restarting vmshot
/// mends neither libvirtd nor a hung QEMU, it only drops the requests in
/// flight, and a watchdog tied to libvirt would restart vmshot in a loop for
/// as long as libvirtd is down.
///
/// Call it once, with [`watchdog_interval`]'s value, after [`ready`]; abort the
/// returned handle on shutdown if the runtime outlives the daemon.
///
/// # Panics
///
/// When called outside a tokio runtime, as `tokio::spawn` does.
pub fn spawn_watchdog(
    interval: Duration,
    healthy: impl Fn() -> bool + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(feed_watchdog(interval, healthy, watchdog))
}

/// The watchdog loop, with the ping itself a parameter so that tests can send
/// it to a socket of their own without touching the environment.
async fn feed_watchdog(
    interval: Duration,
    healthy: impl Fn() -> bool + Send + 'static,
    mut ping: impl FnMut() + Send + 'static,
) {
    // tokio's interval panics on a zero period; systemd never asks for less
    // than a microsecond, but a ping per millisecond is already absurd.
    let period = (interval / 2).max(Duration::from_millis(1));
    let mut ticks = tokio::time::interval(period);
    // After a stall, one ping is enough; a burst of catch-up pings is noise.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut was_healthy = true;
    loop {
        ticks.tick().await;
        let is_healthy = healthy();
        if is_healthy {
            ping();
        }
        if is_healthy != was_healthy {
            if is_healthy {
                tracing::info!("healthy again: feeding systemd's watchdog");
            } else {
                tracing::warn!(
                    ?interval,
                    "unhealthy: no longer feeding systemd's watchdog; \
                     systemd restarts vmshot if this lasts"
                );
            }
            was_healthy = is_healthy;
        }
    }
}

/// Sends one notification and logs a failure: the first one as a warning,
/// later ones (a watchdog ping every few seconds would repeat it) at debug.
fn send(state: &str) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if let Err(err) = notify(state) {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                %err,
                state,
                socket = ?socket,
                "cannot notify systemd; further failures are logged at debug level"
            );
        } else {
            tracing::debug!(%err, state, socket = ?socket, "cannot notify systemd");
        }
    }
}

/// Sends `state` to `$NOTIFY_SOCKET`; `Ok` without doing anything when the
/// variable is unset or empty (not running under systemd).
fn notify(state: &str) -> io::Result<()> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(value) if !value.is_empty() => send_to(&parse_notify_socket(&value)?, state),
        _ => Ok(()),
    }
}

/// `$NOTIFY_SOCKET`'s value as an address: `@name` is `name` in the abstract
/// namespace (some supervisors and test harnesses use one), `/path` a socket
/// in the file system (systemd's own `/run/systemd/notify`). Anything else
/// (systemd ≥ 254 may hand `vsock:` addresses to VMs) is refused, as
/// `sd_notify` did before 254.
fn parse_notify_socket(value: &OsStr) -> io::Result<SocketAddr> {
    let bytes = value.as_bytes();
    match bytes.first() {
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
        Some(b'/') => SocketAddr::from_pathname(Path::new(value)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "NOTIFY_SOCKET={value:?} is neither an absolute path nor '@' and an abstract name"
            ),
        )),
    }
}

/// Sends `state` as one datagram from a fresh unbound socket, as `sd_notify`
/// does. systemd identifies the sender by the credentials the kernel attaches
/// (`SO_PASSCRED` on its side), which is what `NotifyAccess=main` checks.
fn send_to(addr: &SocketAddr, state: &str) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    socket.set_write_timeout(Some(SEND_TIMEOUT))?;
    let sent = socket.send_to_addr(state.as_bytes(), addr)?;
    if sent != state.len() {
        // Datagrams are all or nothing; this would be a kernel surprise.
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes", state.len()),
        ));
    }
    Ok(())
}

fn status_state(msg: &str) -> String {
    format!("STATUS={}", msg.replace(['\n', '\r'], " "))
}

/// `sd_watchdog_enabled(3)`'s rules: no `WATCHDOG_USEC` means no watchdog; a
/// `WATCHDOG_PID` other than ours means the watchdog is someone else's; a
/// value that is not a positive integer (or is `USEC_INFINITY`) is an error.
fn parse_watchdog(
    usec: Option<&OsStr>,
    pid: Option<&OsStr>,
    our_pid: u32,
) -> Result<Option<Duration>, String> {
    let Some(usec) = usec else {
        return Ok(None);
    };
    let usec = usec
        .to_str()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|&us| us > 0 && us != u64::MAX)
        .ok_or("WATCHDOG_USEC is not a positive number of microseconds")?;
    if let Some(pid) = pid {
        let pid = pid
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
            .filter(|&p| p > 0)
            .ok_or("WATCHDOG_PID is not a pid")?;
        if pid != our_pid {
            return Ok(None);
        }
    }
    Ok(Some(Duration::from_micros(usec)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::AtomicUsize;
    use std::sync::{Arc, Mutex, MutexGuard};
    use std::time::Instant;

    /// Serialises the tests that change the process environment: they would
    /// otherwise see each other's `NOTIFY_SOCKET` and `WATCHDOG_*`.
    static ENV_LOCK: Mutex<()> = Mutex::new(());

    fn env_lock() -> MutexGuard<'static, ()> {
        // A test that failed while holding the lock poisons it; the
        // environment it leaves is reset by the next holder anyway.
        ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets or removes a variable. Only called with `ENV_LOCK` held; what
    /// makes this unsafe in Rust 2024 (`unsafe` is redundant in 2021) is C
    /// code reading the environment on another thread, and no unit test of
    /// this crate runs any (libvirt is only used by the integration tests,
    /// which are processes of their own).
    #[allow(unused_unsafe)]
    fn set_env(key: &str, value: Option<&OsStr>) {
        // SAFETY: serialised by ENV_LOCK with every other writer and reader of
        // these variables in the test binary; see above.
        unsafe {
            match value {
                Some(v) => std::env::set_var(key, v),
                None => std::env::remove_var(key),
            }
        }
    }

    fn unique(tag: &str) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        format!("vmshot-notify-test-{}-{tag}-{n}", std::process::id())
    }

    /// A temporary directory holding a bound datagram socket: systemd's side
    /// of the protocol. Removed on drop.
    struct Receiver {
        socket: UnixDatagram,
        dir: Option<PathBuf>,
    }

    impl Receiver {
        fn at_path() -> (Receiver, PathBuf) {
            let dir = std::env::temp_dir().join(unique("dir"));
            std::fs::create_dir(&dir).unwrap();
            let path = dir.join("notify");
            let socket = UnixDatagram::bind(&path).unwrap();
            Self::timeouts(&socket);
            let dir = Some(dir);
            (Receiver { socket, dir }, path)
        }

        fn abstract_name() -> (Receiver, String) {
            let name = unique("abstract");
            let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
            let socket = UnixDatagram::bind_addr(&addr).unwrap();
            Self::timeouts(&socket);
            (Receiver { socket, dir: None }, name)
        }

        fn timeouts(socket: &UnixDatagram) {
            socket
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
        }

        fn recv(&self) -> String {
            let mut buf = [0u8; 4096];
            let n = self.socket.recv(&mut buf).expect("no datagram arrived");
            String::from_utf8(buf[..n].to_vec()).unwrap()
        }

        /// What is queued now, without waiting.
        fn drain(&self) -> Vec<String> {
            self.socket.set_nonblocking(true).unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = self.socket.recv(&mut buf) {
                got.push(String::from_utf8(buf[..n].to_vec()).unwrap());
            }
            self.socket.set_nonblocking(false).unwrap();
            got
        }

        fn addr(&self) -> SocketAddr {
            self.socket.local_addr().unwrap()
        }
    }

    impl Drop for Receiver {
        fn drop(&mut self) {
            if let Some(dir) = &self.dir {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    #[test]
    fn path_socket_receives_exact_datagrams() {
        let (rx, path) = Receiver::at_path();
        let addr = parse_notify_socket(path.as_os_str()).unwrap();
        for state in ["READY=1", "STOPPING=1", "WATCHDOG=1", "STATUS=serving"] {
            send_to(&addr, state).unwrap();
            assert_eq!(rx.recv(), state);
        }
    }

    #[test]
    fn abstract_socket_receives_exact_datagrams() {
        let (rx, name) = Receiver::abstract_name();
        let addr = parse_notify_socket(OsStr::new(&format!("@{name}"))).unwrap();
        assert_eq!(addr.as_abstract_name(), Some(name.as_bytes()));
        send_to(&addr, "READY=1").unwrap();
        assert_eq!(rx.recv(), "READY=1");
    }

    #[test]
    fn status_stays_on_one_line() {
        assert_eq!(status_state("serving on :8443"), "STATUS=serving on :8443");
        assert_eq!(status_state("a\nb\r\nc"), "STATUS=a b  c");
    }

    #[test]
    fn notify_socket_must_be_absolute_or_abstract() {
        for bad in ["relative/notify", "vsock:2:1234", "notify"] {
            let err = parse_notify_socket(OsStr::new(bad)).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad}");
        }
        assert!(parse_notify_socket(OsStr::new("/run/systemd/notify")).is_ok());
        assert!(parse_notify_socket(OsStr::new("@x")).is_ok());
    }

    #[test]
    fn sending_to_a_missing_socket_is_an_error_not_a_panic() {
        let addr = SocketAddr::from_pathname("/nonexistent/vmshot/notify").unwrap();
        assert!(send_to(&addr, "READY=1").is_err());
    }

    /// The public functions end to end, through `$NOTIFY_SOCKET`, for both
    /// kinds of address.
    #[test]
    fn public_functions_send_through_notify_socket() {
        let _env = env_lock();
        let (rx, path) = Receiver::at_path();
        set_env("NOTIFY_SOCKET", Some(path.as_os_str()));
        ready();
        assert_eq!(rx.recv(), "READY=1");
        status("grabbing\nscreens");
        assert_eq!(rx.recv(), "STATUS=grabbing screens");
        watchdog();
        assert_eq!(rx.recv(), "WATCHDOG=1");
        stopping();
        assert_eq!(rx.recv(), "STOPPING=1");

        let (rx, name) = Receiver::abstract_name();
        set_env("NOTIFY_SOCKET", Some(OsStr::new(&format!("@{name}"))));
        ready();
        assert_eq!(rx.recv(), "READY=1");

        // A socket that went away: logged, not fatal.
        set_env(
            "NOTIFY_SOCKET",
            Some(OsStr::new("/nonexistent/vmshot/notify")),
        );
        assert!(notify("READY=1").is_err());
        ready();
        ready();
        set_env("NOTIFY_SOCKET", None);
    }

    #[test]
    fn without_notify_socket_nothing_happens() {
        let _env = env_lock();
        set_env("NOTIFY_SOCKET", None);
        assert!(notify("READY=1").is_ok());
        set_env("NOTIFY_SOCKET", Some(OsStr::new("")));
        assert!(notify("READY=1").is_ok());
        ready();
        stopping();
        status("x");
        watchdog();
        set_env("NOTIFY_SOCKET", None);
    }

    #[test]
    fn watchdog_settings_follow_sd_watchdog_enabled() {
        let us = |s: &'static str| Some(OsStr::new(s));
        let five = Some(Duration::from_secs(5));
        assert_eq!(parse_watchdog(us("5000000"), None, 42), Ok(five));
        assert_eq!(parse_watchdog(us("5000000"), us("42"), 42), Ok(five));
        assert_eq!(parse_watchdog(us("5000000"), us("43"), 42), Ok(None));
        assert_eq!(parse_watchdog(None, us("42"), 42), Ok(None));
        assert_eq!(parse_watchdog(None, None, 42), Ok(None));
        for garbage in ["", "5s", "-1", "0", "1.5", "18446744073709551615"] {
            assert!(parse_watchdog(us(garbage), None, 42).is_err(), "{garbage}");
        }
        assert!(parse_watchdog(us("5000000"), us("x"), 42).is_err());
        assert!(parse_watchdog(us("5000000"), us("0"), 42).is_err());
    }

    #[test]
    fn watchdog_interval_reads_the_environment() {
        let _env = env_lock();
        let ours = std::process::id().to_string();
        let set = |usec: Option<&str>, pid: Option<&str>| {
            set_env("WATCHDOG_USEC", usec.map(OsStr::new));
            set_env("WATCHDOG_PID", pid.map(OsStr::new));
            watchdog_interval()
        };
        let five = Some(Duration::from_secs(5));
        assert_eq!(set(Some("5000000"), None), five);
        assert_eq!(set(Some("5000000"), Some(&ours)), five);
        let other = (std::process::id() + 1).to_string();
        assert_eq!(set(Some("5000000"), Some(&other)), None);
        assert_eq!(set(Some("garbage"), None), None);
        assert_eq!(set(None, None), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watchdog_pings_only_while_healthy() {
        // The test body blocks on recv(); the loop runs on the workers.
        let (rx, _path) = Receiver::at_path();
        let addr = rx.addr();
        let healthy = Arc::new(AtomicBool::new(true));
        let flag = healthy.clone();
        let feeder = tokio::spawn(feed_watchdog(
            Duration::from_millis(200),
            move || flag.load(Ordering::SeqCst),
            move || send_to(&addr, "WATCHDOG=1").unwrap(),
        ));

        // Every interval / 2 = 100 ms, the first one at once.
        let start = Instant::now();
        for _ in 0..4 {
            assert_eq!(rx.recv(), "WATCHDOG=1");
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(250),
            "4 pings in {took:?}: faster than every 100 ms"
        );

        healthy.store(false, Ordering::SeqCst);
        // A ping decided on just before the flag changed may still land.
        std::thread::sleep(Duration::from_millis(300));
        rx.drain();
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(rx.drain(), Vec::<String>::new(), "pinged while unhealthy");

        healthy.store(true, Ordering::SeqCst);
        assert_eq!(rx.recv(), "WATCHDOG=1");
        feeder.abort();
    }

    #[test]
    fn spawn_watchdog_without_notify_socket_is_harmless() {
        let _env = env_lock();
        set_env("NOTIFY_SOCKET", None);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let feeder = spawn_watchdog(Duration::from_millis(10), || true);
            tokio::time::sleep(Duration::from_millis(30)).await;
            assert!(!feeder.is_finished(), "the feeder runs until aborted");
            feeder.abort();
        });
    }
}
