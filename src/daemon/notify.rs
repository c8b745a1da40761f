//! Telling systemd how `vmshot serve` is doing (`Type=notify`, `WatchdogSec=`):
//! the `sd-notify` crate speaks `sd_notify(3)`, and everything here is a no-op
//! when `$NOTIFY_SOCKET` is unset or empty. What is vmshot's own is the
//! watchdog feeder, and that a failure to notify is logged, never fatal.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// Start-up is complete: listeners bound, libvirt answers.
pub fn ready() {
    send(&NotifyState::Ready);
}

/// A graceful shutdown has begun ("deactivating" while requests drain).
pub fn stopping() {
    send(&NotifyState::Stopping);
}

/// One line for `systemctl status vmshot`; a newline would start another
/// `KEY=VALUE` assignment, so line breaks become spaces.
pub fn status(msg: &str) {
    send(&NotifyState::Status(&one_line(msg)));
}

/// The watchdog period systemd set for this process (`WATCHDOG_USEC`, unless
/// `WATCHDOG_PID` names another process), if any.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|interval| !interval.is_zero())
}

/// Feeds the watchdog every `interval / 2` (as `sd_watchdog_enabled(3)`
/// recommends) for as long as `healthy()` is true; if it stays false for
/// `interval`, systemd restarts vmshot.
///
/// The task runs on the caller's runtime, which must be the one serving
/// requests: a wedged runtime must stop feeding the watchdog, so the feeder
/// may not live on a thread or runtime of its own, and `healthy` must be cheap
/// and never block. It is not libvirt's health: restarting vmshot mends neither
/// libvirtd nor a hung QEMU.
///
/// # Panics
///
/// Outside a tokio runtime, as `tokio::spawn` does.
pub fn spawn_watchdog(
    interval: Duration,
    healthy: impl Fn() -> bool + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(feed_watchdog(interval, healthy, || {
        send(&NotifyState::Watchdog)
    }))
}

/// The feeder's loop, the ping a parameter so that tests can count pings.
async fn feed_watchdog(
    interval: Duration,
    healthy: impl Fn() -> bool + Send + 'static,
    mut ping: impl FnMut() + Send + 'static,
) {
    // tokio's interval panics on a zero period.
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

/// Sends one notification; the first failure is a warning, later ones (a
/// watchdog ping every few seconds would repeat it) are logged at debug.
fn send(state: &NotifyState<'_>) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if let Err(err) = notify(state) {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                %err,
                %state,
                socket = ?socket,
                "cannot notify systemd; further failures are logged at debug level"
            );
        } else {
            tracing::debug!(%err, %state, socket = ?socket, "cannot notify systemd");
        }
    }
}

/// The environment is only read, never cleared (the crate's `*_and_unset_env`
/// are unsafe once threads run); with `NotifyAccess=main` systemd ignores
/// whatever a child that inherits `$NOTIFY_SOCKET` might send.
fn notify(state: &NotifyState<'_>) -> io::Result<()> {
    match std::env::var_os("NOTIFY_SOCKET") {
        // The crate refuses an empty value (EINVAL); sd_notify(3) ignores it.
        Some(socket) if !socket.is_empty() => match socket.as_bytes().strip_prefix(b"@") {
            Some(name) => notify_abstract(name, state),
            None => sd_notify::notify(std::slice::from_ref(state)),
        },
        _ => Ok(()),
    }
}

/// sd-notify 0.5 takes `$NOTIFY_SOCKET` as a file path, so `@name` (the
/// abstract namespace, which `sd_notify(3)` allows) would be sent to a file
/// called `@name`. The same datagram as the crate's, to the abstract address.
fn notify_abstract(name: &[u8], state: &NotifyState<'_>) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    socket.connect_addr(&SocketAddr::from_abstract_name(name)?)?;
    socket.send(format!("{state}\n").as_bytes())?;
    Ok(())
}

fn one_line(msg: &str) -> String {
    msg.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn status_stays_on_one_line() {
        assert_eq!(one_line("serving on :8443"), "serving on :8443");
        assert_eq!(one_line("a\nb\r\nc"), "a b  c");
    }

    /// The exact datagrams, through a socket of the test's own in the
    /// abstract namespace (the path case is `tests/systemd.rs`, against a real
    /// `vmshot serve`, which also covers this one).
    #[test]
    fn abstract_socket_gets_what_the_crate_would_send() {
        let name = format!("vmshot-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 256];
        let status = NotifyState::Status("waiting for libvirt");
        for (state, want) in [
            (NotifyState::Ready, "READY=1\n"),
            (status, "STATUS=waiting for libvirt\n"),
            (NotifyState::Watchdog, "WATCHDOG=1\n"),
            (NotifyState::Stopping, "STOPPING=1\n"),
        ] {
            notify_abstract(name.as_bytes(), &state).unwrap();
            let n = rx.recv(&mut buf).expect("no datagram arrived");
            assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), want);
        }
        drop(rx);
        assert!(notify_abstract(name.as_bytes(), &NotifyState::Ready).is_err());
    }

    /// Pings every interval / 2, none while unhealthy, again once healthy.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watchdog_pings_only_while_healthy() {
        let (tx, rx) = std::sync::mpsc::channel::<Instant>();
        let healthy = Arc::new(AtomicBool::new(true));
        let flag = healthy.clone();
        let feeder = tokio::spawn(feed_watchdog(
            Duration::from_millis(200),
            move || flag.load(Ordering::SeqCst),
            move || tx.send(Instant::now()).unwrap(),
        ));
        let next = || rx.recv_timeout(Duration::from_secs(5)).expect("no ping");

        // The first at once, then every 100 ms: 5 periods ~500 ms, where
        // pinging at the full interval would take 1 s. A worker preempted
        // between a tick and its ping shortens one period, hence the margin.
        let first = next();
        let mut last = first;
        for _ in 0..5 {
            last = next();
        }
        let took = last - first;
        assert!(
            took >= Duration::from_millis(350) && took < Duration::from_millis(950),
            "5 periods took {took:?}, not ~500 ms"
        );

        healthy.store(false, Ordering::SeqCst);
        // A ping decided on just before the flag changed may still land.
        std::thread::sleep(Duration::from_millis(150));
        while rx.try_recv().is_ok() {}
        std::thread::sleep(Duration::from_millis(500));
        assert!(rx.try_recv().is_err(), "pinged while unhealthy");

        healthy.store(true, Ordering::SeqCst);
        next();
        feeder.abort();
    }
}
