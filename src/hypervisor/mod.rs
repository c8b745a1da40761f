//! The hypervisor adapter: the only code in vmshot that touches libvirt.
//!
//! Callers get an async API; underneath, every libvirt call runs on a worker
//! thread of its own with a deadline (`blocking`), on a connection it leases
//! from a pool that keeps them alive and reopens them after libvirtd restarts
//! (`connection`). A call that finds its connection dead is retried once on a
//! fresh one: every call here either only reads or wakes a guest (which is
//! harmless to repeat), so a retry never does harm.
//!
//! The daemon also keeps a live table of the host's domains, fed by libvirt's
//! events (`inventory`), so that finding a guest costs no round trip.

mod blocking;
mod calls;
mod connection;
mod display;
mod error;
pub mod events;
pub mod inventory;
pub mod mirror;
mod serial_log;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

pub use error::{DomainState, Error};
pub use events::{DomainEvent, GuestEvent};
pub use inventory::{Change, Entry, Inventory, Status as InventoryStatus, INSTANCE_NAMESPACE};
pub use mirror::{Mirror, Snapshot};
pub use serial_log::SerialLog;

use blocking::Blocking;
use connection::Pool;

/// How the adapter talks to libvirt.
#[derive(Debug, Clone)]
pub struct Settings {
    /// libvirt URI, e.g. `qemu:///system`.
    pub uri: String,
    /// Deadline of one call, connecting and retrying included.
    pub call_timeout: Duration,
    /// Most libvirt calls in flight at once (hung ones count until they return).
    pub max_calls: usize,
    /// Largest screenshot payload accepted from libvirt, in bytes.
    pub max_payload: usize,
    /// Between two full reads of every domain by the inventory: the backstop
    /// for an event missed.
    pub resync_every: Duration,
}

impl Settings {
    pub fn new(uri: impl Into<String>) -> Self {
        Self {
            uri: uri.into(),
            call_timeout: Duration::from_secs(15),
            max_calls: 16,
            // A 7680x4320 PPM is 99.5 MB; anything beyond is not a console.
            max_payload: 100 * 1024 * 1024,
            resync_every: Duration::from_secs(60),
        }
    }
}

/// A domain as `vmshot list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DomainSummary {
    pub name: String,
    pub uuid: String,
    pub state: DomainState,
    /// Number of screens (heads over all video devices); 0: no display.
    pub screens: u32,
}

/// A screenshot exactly as libvirt returned it, before any decoding.
#[derive(Debug)]
pub struct RawScreenshot {
    pub domain: String,
    pub uuid: String,
    pub screen: u32,
    /// The MIME type libvirt announced (`image/png`, `image/x-portable-pixmap`).
    pub mime: String,
    pub payload: Vec<u8>,
    pub taken_at: SystemTime,
    /// Time spent in libvirt: lookup, screenshot and reading the stream.
    pub elapsed: Duration,
}

/// A handle on the adapter; cheap to clone and share between tasks.
#[derive(Clone)]
pub struct Hypervisor {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    connections: Pool,
    blocking: Blocking,
    /// Once started; the sender stops its task when the adapter goes.
    inventory: OnceLock<(Inventory, tokio::sync::oneshot::Sender<()>)>,
}

impl Hypervisor {
    /// Creates the adapter. It connects lazily, on the first call.
    pub fn new(settings: Settings) -> Self {
        let inner = Inner {
            connections: Pool::new(settings.uri.clone(), settings.max_calls),
            blocking: Blocking::new(settings.max_calls),
            inventory: OnceLock::new(),
            settings,
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    pub fn uri(&self) -> &str {
        &self.inner.settings.uri
    }

    /// Connects now (rather than on the first call) and checks that libvirt answers.
    pub async fn connect(&self) -> Result<(), Error> {
        self.call("connect to libvirt".into(), |conn, _| {
            conn.lib_version()
                .map(drop)
                .map_err(|e| Error::libvirt("answer", &e))
        })
        .await
    }

    /// Every domain, running or not, sorted by name.
    pub async fn list(&self) -> Result<Vec<DomainSummary>, Error> {
        self.call("list domains".into(), calls::list).await
    }

    /// Takes a screenshot of `screen` of the domain named by `domain` (a name or
    /// a UUID) and reads it to the end.
    pub async fn screenshot(&self, domain: &str, screen: u32) -> Result<RawScreenshot, Error> {
        let max_payload = self.inner.settings.max_payload;
        let reference = domain.to_owned();
        self.call_on(
            domain,
            format!("screenshot of domain '{domain}'"),
            move |conn, uri| calls::screenshot(conn, uri, &reference, screen, max_payload),
        )
        .await
    }

    /// Wakes the domain for a screenshot (see `calls::wake`); true if it did anything.
    pub async fn wake(&self, domain: &str) -> Result<bool, Error> {
        let reference = domain.to_owned();
        self.call_on(
            domain,
            format!("wake-up of domain '{domain}'"),
            move |conn, uri| calls::wake(conn, uri, &reference),
        )
        .await
    }

    /// A socket to the domain's first VNC display, through libvirt
    /// (`virDomainOpenGraphicsFD` with SKIPAUTH): no password, no network
    /// port, and no taint on the domain. The socket speaks RFB; see `mirror`.
    pub async fn open_graphics(&self, domain: &str) -> Result<std::os::fd::OwnedFd, Error> {
        let reference = domain.to_owned();
        self.call_on(
            domain,
            format!("opening the VNC console of domain '{domain}'"),
            move |conn, uri| calls::open_graphics(conn, uri, &reference),
        )
        .await
    }

    /// Starts the live inventory of domains (once; later calls return the
    /// same one). Needs a tokio runtime. One-off commands do without it.
    pub fn start_inventory(&self) -> Inventory {
        let (inventory, _) = self.inner.inventory.get_or_init(|| {
            let (stop, stopped) = tokio::sync::oneshot::channel();
            (inventory::start(self, stopped), stop)
        });
        inventory.clone()
    }

    /// The inventory, if `start_inventory` was called.
    pub fn inventory(&self) -> Option<&Inventory> {
        self.inner.inventory.get().map(|(inventory, _)| inventory)
    }

    /// The domain a name or UUID (any case, dashes or not) refers to: from
    /// the inventory while it is live, else asked of libvirt.
    pub async fn find(&self, reference: &str) -> Result<Entry, Error> {
        if let Some(inventory) = self.inventory().filter(|i| i.is_live()) {
            let found = inventory.by_reference(reference);
            // The counterpart of a libvirt call's log line, for who counts lookups.
            tracing::debug!(target: "vmshot::hypervisor::inventory", call = %format!("look up domain '{reference}'"), found = found.is_some(), "answered by the inventory");
            return found.ok_or_else(|| Error::NotFound {
                domain: reference.to_owned(),
                uri: self.uri().to_owned(),
            });
        }
        let reference = reference.to_owned();
        self.call(format!("look up domain '{reference}'"), move |conn, uri| {
            calls::read_reference(conn, uri, &reference)
        })
        .await
    }

    /// The domain whose metadata carries instance id `id` (see
    /// `INSTANCE_NAMESPACE`): from the inventory while it is live, else by
    /// reading every domain.
    pub async fn find_instance(&self, id: &str) -> Result<Option<Entry>, Error> {
        if let Some(inventory) = self.inventory().filter(|i| i.is_live()) {
            return Ok(inventory.by_instance_id(id));
        }
        let listing = self
            .call(
                "read instance ids from domain metadata".into(),
                calls::read_all,
            )
            .await?;
        Ok(listing
            .entries
            .into_iter()
            .find(|e| e.instance_id.as_deref() == Some(id)))
    }

    /// Connections opened after the first: how often libvirt went away.
    pub fn reconnects(&self) -> u64 {
        self.inner.connections.reconnects()
    }

    /// Domains whose last call hangs (see `blocking`).
    pub fn hung_domains(&self) -> usize {
        self.inner.blocking.hung_count()
    }

    /// Runs `call` with the live connection on a libvirt thread, retrying once
    /// on a new connection if the first one turns out to be dead.
    async fn call<T, F>(&self, what: String, call: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: Fn(&virt::connect::Connect, &str) -> Result<T, Error> + Send + 'static,
    {
        let deadline = self.inner.settings.call_timeout;
        self.inner
            .blocking
            .run(what, deadline, self.with_connection(call))
            .await
    }

    /// `call`, on one domain: refused at once while an earlier call on it
    /// hangs (see `blocking`).
    async fn call_on<T, F>(&self, domain: &str, what: String, call: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: Fn(&virt::connect::Connect, &str) -> Result<T, Error> + Send + 'static,
    {
        let deadline = self.inner.settings.call_timeout;
        self.inner
            .blocking
            .run_on(domain, what, deadline, self.with_connection(call))
            .await
    }

    fn with_connection<T, F>(&self, call: F) -> impl FnOnce() -> Result<T, Error> + Send + 'static
    where
        T: Send + 'static,
        F: Fn(&virt::connect::Connect, &str) -> Result<T, Error> + Send + 'static,
    {
        let inner = self.inner.clone();
        move || {
            let pool = &inner.connections;
            let mut lease = pool.lease()?;
            match call(lease.conn(), pool.uri()) {
                Err(e) if !lease.check_alive() => {
                    tracing::warn!(error = %e, "libvirt connection dropped during a call; retrying once");
                    drop(lease);
                    call(pool.lease()?.conn(), pool.uri())
                }
                result => result,
            }
        }
    }
}
