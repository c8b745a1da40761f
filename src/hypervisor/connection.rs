//! One libvirt connection, shared by every call, kept alive and reopened when
//! libvirtd goes away.
//!
//! libvirt connections are thread-safe and multiplex concurrent calls, so one is
//! enough. Keepalive needs an event loop: libvirt's default implementation is
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

pub(crate) struct Connection {
    uri: String,
    current: Mutex<Option<Connect>>,
    opened: AtomicU64,
}

impl Connection {
    pub(crate) fn new(uri: String) -> Self {
        Self {
            uri,
            current: Mutex::new(None),
            opened: AtomicU64::new(0),
        }
    }

    pub(crate) fn reconnects(&self) -> u64 {
        self.opened.load(Ordering::Relaxed).saturating_sub(1)
    }

    pub(crate) fn uri(&self) -> &str {
        &self.uri
    }

    /// The live connection, opened or reopened as needed. Blocking: call it only
    /// from the adapter's worker threads.
    pub(crate) fn get(&self) -> Result<Connect, Error> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(conn) = current.as_ref() {
            if conn.is_alive().unwrap_or(false) {
                return Ok(conn.clone());
            }
            tracing::warn!(uri = %self.uri, "libvirt connection lost; reconnecting");
        }
        *current = None;
        let conn = open(&self.uri)?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        *current = Some(conn.clone());
        Ok(conn)
    }

    /// Whether `conn` is still usable; if not, it is forgotten so that the next
    /// `get` opens a new one.
    pub(crate) fn check_alive(&self, conn: &Connect) -> bool {
        if conn.is_alive().unwrap_or(false) {
            return true;
        }
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the pointers are only compared, never dereferenced.
        let same = current
            .as_ref()
            .is_some_and(|c| unsafe { c.as_ptr() == conn.as_ptr() });
        if same {
            *current = None;
        }
        false
    }
}

fn open(uri: &str) -> Result<Connect, Error> {
    start_event_loop();
    let conn = Connect::open(Some(uri)).map_err(|e| Error::Unreachable {
        uri: uri.to_owned(),
        reason: e.message().to_owned(),
    })?;
    // Local drivers (test:///, qemu:///embed) have no keepalive: that is fine.
    if let Err(e) = conn.set_keep_alive(KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT) {
        tracing::debug!(uri, error = %e.message(), "keepalive not available");
    }
    tracing::info!(uri, "connected to libvirt");
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
