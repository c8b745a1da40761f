//! libvirt connections: a small pool, each call leasing one for itself, kept
//! alive and reopened when libvirtd goes away.
//!
//! Why not one shared connection: libvirt's client multiplexes calls over one
//! socket, but a call stuck in libvirtd (a screenshot of a frozen QEMU) holds up
//! unrelated calls queued behind it on the same connection until it returns —
//! seen here as a metadata lookup of a healthy guest waiting for a frozen one.
//! libvirtd also caps the requests it serves at once per connection (5 by
//! default). A leased connection serves one call at a time, so a hung call
//! costs only its own connection (and its thread, and its permit in
//! `blocking`), and concurrent captures run side by side. The pool holds at
//! most as many connections as calls may run at once.
//!
//! Keepalive needs an event loop: libvirt's default implementation is
//! registered once per process and driven by a thread of its own, which also
//! lets the client notice a closed socket at once, so `is_alive` tells the truth
//! before the next call is made on a dead connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};
use std::time::Duration;

use virt::connect::Connect;

use super::Error;

/// Seconds between keepalive probes, and how many may go unanswered before
/// libvirt closes the connection: a hung libvirtd is detected in about 20 s.
const KEEPALIVE_INTERVAL_S: i32 = 5;
const KEEPALIVE_COUNT: u32 = 3;

pub(crate) struct Pool {
    uri: String,
    /// Connections not in use, each with the epoch it was opened in.
    idle: Mutex<Vec<(u64, Connect)>>,
    /// Bumped each time a connection of the current epoch is found dead: all
    /// connections opened before then are presumed dead too.
    epoch: AtomicU64,
    /// The epoch whose first connection was announced in the log, plus one.
    announced: AtomicU64,
    max_idle: usize,
}

/// One connection, used by one call at a time; back to the pool when dropped,
/// unless it died.
pub(crate) struct Lease<'a> {
    pool: &'a Pool,
    epoch: u64,
    conn: Option<Connect>,
}

impl Pool {
    pub(crate) fn new(uri: String, max_idle: usize) -> Self {
        Self {
            uri,
            idle: Mutex::new(Vec::new()),
            epoch: AtomicU64::new(0),
            announced: AtomicU64::new(0),
            max_idle: max_idle.max(1),
        }
    }

    /// Times libvirt went away and connections had to be opened anew.
    pub(crate) fn reconnects(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    pub(crate) fn uri(&self) -> &str {
        &self.uri
    }

    /// A live connection for one call: an idle one, or a new one. Blocking:
    /// call it only from the adapter's worker threads.
    pub(crate) fn lease(&self) -> Result<Lease<'_>, Error> {
        loop {
            let next = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let Some((epoch, conn)) = next else { break };
            if epoch == self.epoch.load(Ordering::Acquire) && conn.is_alive().unwrap_or(false) {
                return Ok(Lease {
                    pool: self,
                    epoch,
                    conn: Some(conn),
                });
            }
            self.lost(epoch);
            close(conn);
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let conn = open(&self.uri)?;
        if self.announced.swap(epoch + 1, Ordering::AcqRel) != epoch + 1 {
            tracing::info!(uri = %self.uri, "connected to libvirt");
        }
        Ok(Lease {
            pool: self,
            epoch,
            conn: Some(conn),
        })
    }

    /// A connection of `epoch` turned out dead: the first to notice starts a
    /// new epoch (one reconnect), and the idle connections of older ones go.
    fn lost(&self, epoch: u64) {
        if self
            .epoch
            .compare_exchange(epoch, epoch + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            tracing::warn!(uri = %self.uri, "libvirt connection lost; reconnecting");
        }
        let current = self.epoch.load(Ordering::Acquire);
        let stale: Vec<_> = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let (keep, stale) = idle.drain(..).partition(|(e, _)| *e == current);
            *idle = keep;
            stale
        };
        stale.into_iter().for_each(|(_, conn)| close(conn));
    }

    fn give_back(&self, epoch: u64, conn: Connect) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle && epoch == self.epoch.load(Ordering::Acquire) {
            idle.push((epoch, conn));
        } else {
            drop(idle);
            close(conn);
        }
    }
}

impl Lease<'_> {
    pub(crate) fn conn(&self) -> &Connect {
        self.conn.as_ref().expect("held until dropped")
    }

    /// Whether the connection still works. If not, it is not given back, and
    /// the pool starts a new epoch.
    pub(crate) fn check_alive(&mut self) -> bool {
        if self.conn().is_alive().unwrap_or(false) {
            return true;
        }
        if let Some(conn) = self.conn.take() {
            self.pool.lost(self.epoch);
            close(conn);
        }
        false
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.give_back(self.epoch, conn);
        }
    }
}

/// Closes a connection (dropping the last reference closes it).
fn close(conn: Connect) {
    drop(conn);
}

pub(super) fn open(uri: &str) -> Result<Connect, Error> {
    start_event_loop();
    let conn = Connect::open(Some(uri)).map_err(|e| Error::Unreachable {
        uri: uri.to_owned(),
        reason: e.message().to_owned(),
    })?;
    // Local drivers (test:///, qemu:///embed) have no keepalive: that is fine.
    if let Err(e) = conn.set_keep_alive(KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT) {
        tracing::debug!(uri, error = %e.message(), "keepalive not available");
    }
    tracing::debug!(uri, "opened a libvirt connection");
    Ok(conn)
}

/// Process-wide libvirt setup. The default event loop must be registered before the first connection
/// is opened, and something must run it.
fn start_event_loop() {
    static START: Once = Once::new();
    START.call_once(|| {
        // libvirt's default error handler prints every error to stderr; errors
        // reach our callers as values instead, and are reported once, by them.
        virt::error::clear_error_callback();
        if let Err(e) = virt::event::event_register_default_impl() {
            tracing::warn!(error = %e.message(), "no libvirt event loop: keepalive is off");
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("vmshot-libvirt-events".into())
            .spawn(|| loop {
                // Blocks in poll(2) until something happens: no busy loop.
                if let Err(e) = virt::event::event_run_default_impl() {
                    tracing::warn!(error = %e.message(), "libvirt event loop failed");
                    std::thread::sleep(Duration::from_secs(1));
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the libvirt event thread");
        }
    });
}
