//! A live inventory of the host's domains, kept current by libvirt's events.
//!
//! Finding a guest by instance id used to mean reading every domain's
//! metadata; here one task keeps a table of every domain (UUID, name, state,
//! screens, instance id, Nova owner) and readers look things up in it without
//! a libvirt round trip.
//!
//! ```text
//!                open its own connection,
//!                register the callbacks       full read
//!   start ──► Connecting ─────────────► Syncing ─────────► Live ◄──┐ event: re-read that domain
//!                ▲  │                     │                 │ │   │ tick: full read (backstop)
//!                │  │ fails               │ fails           │ └───┘
//!                │  ▼                     ▼                 │ close callback,
//!                └─ Disconnected ◄────────┴─────────────────┘ keepalive lost
//!        after a backoff (0.25 s, doubling up to 2 s)
//! ```
//!
//! One owner: a tokio task opens its own long-lived libvirt connection (with
//! keepalive, apart from the call pool so that a hung call cannot hold up
//! events), registers the callbacks, then reads everything (callbacks first,
//! so that no change falls between the read and the events). The callbacks
//! run on libvirt's event-loop thread and only pass the domain's UUID down a
//! channel: calling libvirt from there could deadlock the loop that must
//! deliver the reply. The task then re-reads the domains named, through the
//! adapter's pool, on worker threads with deadlines, and is the only writer of
//! the table; readers copy entries out of it under a short lock.
//!
//! While not `Live` (at start, or libvirtd gone), the table may be stale or
//! empty: the `Hypervisor::find*` methods then ask libvirt directly instead,
//! as they did before the inventory existed. A miss on a live table is an
//! answer: the domain does not exist.
//!
//! Subscribers get every change on a broadcast channel. One that lags behind
//! loses changes (`RecvError::Lagged`) and should read `snapshot()` again.
//!
//! The same callbacks (lifecycle, plus reboot and watchdog) also turn what
//! happened to a guest into `DomainEvent`s (see `events`) and put them on a
//! second broadcast channel themselves, stamped as they arrive: a send neither
//! blocks nor calls libvirt, and the events keep libvirt's order without
//! waiting behind the owner's re-reads. Every reconnection registers them
//! again, on the same channel, so `events()` outlives libvirtd restarts
//! (what happens while libvirtd is gone is not replayed).

use std::collections::{BTreeMap, HashSet};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use uuid::Uuid;
use virt::connect::Connect;
use virt::sys;

use super::display::screens_in;
use super::events::{self, DomainEvent, GuestEvent, Publisher};
use super::serial_log::{serial_log_in, SerialLog};
use super::{calls, connection, DomainState, Error, Hypervisor, Inner};

/// Namespace of the metadata element holding a cloud instance id:
/// `<vmshot:instance xmlns:vmshot="…">i-…</vmshot:instance>`.
pub const INSTANCE_NAMESPACE: &str = "https://vmshot.dev/xmlns/instance/1";

/// Namespaces Nova has written its `<nova:instance>` metadata in (1.0 before
/// Train; later releases bumped the version as they added elements, keeping
/// `<owner>` as it was).
const NOVA_NAMESPACES: [&str; 3] = [
    "http://openstack.org/xmlns/libvirt/nova/1.0",
    "http://openstack.org/xmlns/libvirt/nova/1.1",
    "http://openstack.org/xmlns/libvirt/nova/1.2",
];

/// Changes kept for subscribers that have not read them yet.
const CHANGES_KEPT: usize = 256;
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// One domain as the inventory knows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    /// Lowercase, with dashes.
    pub uuid: String,
    pub name: String,
    pub state: DomainState,
    /// Screens over all video devices; 0: no display.
    pub screens: u32,
    /// Text of the metadata element in `INSTANCE_NAMESPACE`.
    pub instance_id: Option<String>,
    /// Nova's `<nova:owner><nova:project uuid=…>`.
    pub project: Option<String>,
    /// Nova's `<nova:owner><nova:user uuid=…>`.
    pub user: Option<String>,
    /// Where its serial console output is written, if it is: a host path,
    /// never serialized for a caller.
    #[serde(skip)]
    pub serial_log: Option<SerialLog>,
}

impl Entry {
    /// An entry from what libvirt said of the domain: its XML gives the rest.
    pub(super) fn new(uuid: String, name: String, state: DomainState, domain_xml: &str) -> Self {
        let described = describe(domain_xml).unwrap_or_else(|e| {
            // libvirt writes this XML itself; if it ever fails to parse, the
            // domain is still listed, just without what the XML would add.
            tracing::warn!(domain = %name, error = %e, "unreadable domain XML");
            Described::default()
        });
        Self {
            uuid: uuid.to_ascii_lowercase(),
            name,
            state,
            screens: described.screens,
            instance_id: described.instance_id,
            project: described.project,
            user: described.user,
            serial_log: described.serial_log,
        }
    }
}

/// What changed in the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Added(Entry),
    Updated { before: Entry, after: Entry },
    Removed(Entry),
}

impl Change {
    /// The domain as it is now (as it was last, if removed).
    pub fn entry(&self) -> &Entry {
        match self {
            Self::Added(e) | Self::Removed(e) | Self::Updated { after: e, .. } => e,
        }
    }
}

/// Where the inventory stands; see the module's drawing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Connecting,
    Syncing,
    Live,
    Disconnected,
}

/// A handle on the inventory; cheap to clone. Readers only: the task started
/// by `Hypervisor::start_inventory` is its one writer.
#[derive(Clone)]
pub struct Inventory {
    shared: Arc<Shared>,
}

struct Shared {
    /// Domains by UUID (lowercase, dashes).
    domains: RwLock<BTreeMap<String, Entry>>,
    changes: broadcast::Sender<Change>,
    /// Guest events, published by the callbacks themselves (see `Sink`).
    events: Arc<Publisher>,
    status: watch::Sender<Status>,
    /// Full reads completed, the first and those after each reconnect included.
    syncs: std::sync::atomic::AtomicU64,
}

impl Inventory {
    /// Whether the table is current (see the module doc).
    pub fn status(&self) -> Status {
        *self.shared.status.borrow()
    }

    pub fn is_live(&self) -> bool {
        self.status() == Status::Live
    }

    /// Waits until the inventory is live; false if `limit` passed first.
    pub async fn wait_live(&self, limit: Duration) -> bool {
        let mut status = self.shared.status.subscribe();
        tokio::time::timeout(limit, status.wait_for(|s| *s == Status::Live))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// How many full reads have completed: one after each (re)connection,
    /// plus the periodic ones.
    pub fn syncs(&self) -> u64 {
        self.shared.syncs.load(std::sync::atomic::Ordering::Acquire)
    }

    /// How many domains it holds.
    pub fn len(&self) -> usize {
        self.read(|domains| domains.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every domain, by UUID.
    pub fn snapshot(&self) -> Vec<Entry> {
        self.read(|domains| domains.values().cloned().collect())
    }

    /// The domain with this UUID (any case, dashes or not).
    pub fn by_uuid(&self, uuid: &str) -> Option<Entry> {
        let key = Uuid::try_parse(uuid).ok()?.hyphenated().to_string();
        self.read(|domains| domains.get(&key).cloned())
    }

    pub fn by_name(&self, name: &str) -> Option<Entry> {
        self.find(|e| e.name == name)
    }

    pub fn by_instance_id(&self, id: &str) -> Option<Entry> {
        self.find(|e| e.instance_id.as_deref() == Some(id))
    }

    /// The domain a reference names: by UUID when it is one, else (or if no
    /// domain has that UUID) by name, as libvirt's own lookups go.
    pub fn by_reference(&self, reference: &str) -> Option<Entry> {
        self.by_uuid(reference).or_else(|| self.by_name(reference))
    }

    /// Changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.shared.changes.subscribe()
    }

    /// Guest events (starts, stops, reboots, panics, watchdogs; see `events`)
    /// from now on, in the order libvirt delivered them, across reconnects.
    /// One that lags behind loses events (`RecvError::Lagged`). An event may
    /// come before the table shows what it did (the table waits for a
    /// re-read): who needs the new state waits for its `Change`.
    pub fn events(&self) -> broadcast::Receiver<DomainEvent> {
        self.shared.events.subscribe()
    }

    /// A linear scan: a host holds hundreds of domains at most, and a scan of
    /// those costs less than keeping more indexes in step.
    fn find(&self, matches: impl Fn(&Entry) -> bool) -> Option<Entry> {
        self.read(|domains| domains.values().find(|e| matches(e)).cloned())
    }

    fn read<T>(&self, f: impl FnOnce(&BTreeMap<String, Entry>) -> T) -> T {
        f(&self
            .shared
            .domains
            .read()
            .unwrap_or_else(|e| e.into_inner()))
    }
}

impl Shared {
    fn set_status(&self, status: Status) {
        self.status.send_if_modified(|s| {
            if *s == status {
                return false;
            }
            tracing::debug!(from = ?*s, to = ?status, "inventory");
            *s = status;
            true
        });
    }

    /// Sets what is known of one domain (`None`: it is gone) and tells
    /// subscribers if that changed anything. The change is sent under the
    /// table's lock, so whoever sees the table change finds it already sent.
    fn apply(&self, uuid: &str, now: Option<Entry>) {
        let mut domains = self.domains.write().unwrap_or_else(|e| e.into_inner());
        let change = match now {
            Some(entry) => match domains.insert(uuid.to_owned(), entry.clone()) {
                None => Some(Change::Added(entry)),
                Some(before) if before != entry => Some(Change::Updated {
                    before,
                    after: entry,
                }),
                Some(_) => None,
            },
            None => domains.remove(uuid).map(Change::Removed),
        };
        if let Some(change) = change {
            tracing::debug!(?change, "inventory change");
            // No subscriber is not an error; `send` never blocks.
            let _ = self.changes.send(change);
        }
    }

    /// Replaces the table with a full read; domains that were listed but could
    /// not be read keep their last entry rather than vanish.
    fn apply_all(&self, listing: calls::Listing) {
        let mut seen: HashSet<String> = listing.unreadable.into_iter().collect();
        for entry in listing.entries {
            seen.insert(entry.uuid.clone());
            let uuid = entry.uuid.clone();
            self.apply(&uuid, Some(entry));
        }
        let gone: Vec<String> = self.read_keys(|uuid| !seen.contains(uuid));
        for uuid in gone {
            self.apply(&uuid, None);
        }
        self.syncs.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    fn read_keys(&self, keep: impl Fn(&str) -> bool) -> Vec<String> {
        let domains = self.domains.read().unwrap_or_else(|e| e.into_inner());
        domains.keys().filter(|k| keep(k)).cloned().collect()
    }
}

/// Starts the owner task (see the module doc) on the current tokio runtime.
/// It stops when `stop`'s sender goes, with the adapter.
pub(super) fn start(hypervisor: &Hypervisor, stop: oneshot::Receiver<()>) -> Inventory {
    let (status, _) = watch::channel(Status::Connecting);
    let shared = Arc::new(Shared {
        domains: RwLock::new(BTreeMap::new()),
        changes: broadcast::channel(CHANGES_KEPT).0,
        events: Arc::new(Publisher::new()),
        status,
        syncs: Default::default(),
    });
    let (events, inbox) = mpsc::unbounded_channel();
    let owner = Owner {
        adapter: Arc::downgrade(&hypervisor.inner),
        uri: hypervisor.inner.settings.uri.clone(),
        resync_every: hypervisor.inner.settings.resync_every,
        shared: shared.clone(),
        events,
        inbox,
        stop,
    };
    tokio::spawn(owner.run());
    Inventory { shared }
}

/// What the libvirt callbacks tell the owner.
#[derive(Debug)]
enum Message {
    /// Something about this domain (UUID) changed.
    Domain(String),
    /// The events connection of this generation closed.
    Closed { generation: u64, reason: c_int },
}

/// Why following events stopped.
enum Ended {
    Closed,
    Stopped,
}

struct Owner {
    adapter: Weak<Inner>,
    uri: String,
    resync_every: Duration,
    shared: Arc<Shared>,
    /// Cloned into each callback; kept here too so `inbox` never closes.
    events: mpsc::UnboundedSender<Message>,
    inbox: mpsc::UnboundedReceiver<Message>,
    stop: oneshot::Receiver<()>,
}

impl Owner {
    async fn run(mut self) {
        let mut backoff = MIN_BACKOFF;
        let mut generation = 0;
        loop {
            generation += 1;
            self.shared.set_status(Status::Connecting);
            let opened = match self.adapter() {
                Some(hv) => {
                    let (uri, sink) = (self.uri.clone(), self.events.clone());
                    let guest = self.shared.events.clone();
                    let deadline = hv.inner.settings.call_timeout;
                    hv.inner
                        .blocking
                        .run("open the events connection".into(), deadline, move || {
                            Events::open(&uri, sink, guest, generation)
                        })
                        .await
                }
                None => return,
            };
            let ended = match opened {
                Ok(events) => {
                    let ended = self.sync_and_follow(generation, &events).await;
                    // Deregistering is a libvirt call: not on the runtime.
                    std::thread::Builder::new()
                        .name("vmshot-libvirt".into())
                        .spawn(move || drop(events))
                        .ok();
                    ended
                }
                Err(e) => {
                    tracing::warn!(uri = %self.uri, error = %e, "inventory: no events connection");
                    Err(())
                }
            };
            match ended {
                Ok(Ended::Stopped) => return,
                Ok(Ended::Closed) => backoff = MIN_BACKOFF,
                Err(()) => {}
            }
            self.shared.set_status(Status::Disconnected);
            tokio::select! {
                _ = &mut self.stop => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// The first full read on a new events connection, then events until it
    /// closes. `Err` if the first read failed.
    async fn sync_and_follow(&mut self, generation: u64, events: &Events) -> Result<Ended, ()> {
        self.shared.set_status(Status::Syncing);
        // Events queued so far are covered by this read; a close of this
        // very connection is not.
        while let Ok(message) = self.inbox.try_recv() {
            if matches!(message, Message::Closed { generation: g, .. } if g == generation) {
                return Ok(Ended::Closed);
            }
        }
        if let Err(e) = self.resync().await {
            tracing::warn!(error = %e, "inventory: first read failed");
            return Err(());
        }
        self.shared.set_status(Status::Live);
        tracing::info!(
            domains = self.shared.read_keys(|_| true).len(),
            "inventory live"
        );
        Ok(self.follow(generation, events).await)
    }

    async fn follow(&mut self, generation: u64, events: &Events) -> Ended {
        let start = tokio::time::Instant::now() + self.resync_every;
        let mut resync = tokio::time::interval_at(start, self.resync_every);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut self.stop => return Ended::Stopped,
                message = self.inbox.recv() => {
                    // A burst of events (a start sends several) is one re-read.
                    let mut uuids = HashSet::new();
                    let mut closed = false;
                    for message in message.into_iter().chain(std::iter::from_fn(|| self.inbox.try_recv().ok())) {
                        match message {
                            Message::Domain(uuid) => { uuids.insert(uuid); }
                            Message::Closed { generation: g, reason } if g == generation => {
                                tracing::warn!(reason = close_reason(reason), "inventory: events connection closed");
                                closed = true;
                            }
                            Message::Closed { .. } => {}
                        }
                    }
                    if closed {
                        return Ended::Closed;
                    }
                    self.reread(uuids.into_iter().collect()).await;
                }
                _ = resync.tick() => {
                    // The close callback's backstop. A local check on a
                    // connection nothing else calls on: it does not block.
                    if !events.conn.is_alive().unwrap_or(false) {
                        tracing::warn!("inventory: events connection found dead");
                        return Ended::Closed;
                    }
                    if let Err(e) = self.resync().await {
                        tracing::warn!(error = %e, "inventory: periodic read failed");
                    }
                }
            }
        }
    }

    fn adapter(&self) -> Option<Hypervisor> {
        self.adapter.upgrade().map(|inner| Hypervisor { inner })
    }

    async fn resync(&self) -> Result<(), Error> {
        let hv = self.adapter().ok_or_else(gone)?;
        let listing = hv.call("read every domain".into(), calls::read_all).await?;
        self.shared.apply_all(listing);
        Ok(())
    }

    async fn reread(&self, uuids: Vec<String>) {
        let Some(hv) = self.adapter() else { return };
        let what = format!("re-read {} domain(s)", uuids.len());
        let read = hv
            .call(what, move |conn, uri| calls::read_some(conn, uri, &uuids))
            .await;
        match read {
            Ok(found) => {
                for (uuid, entry) in found {
                    self.shared.apply(&uuid, entry);
                }
            }
            // The periodic read (or the one after a reconnect) catches up.
            Err(e) => tracing::warn!(error = %e, "inventory: re-read after an event failed"),
        }
    }
}

fn gone() -> Error {
    Error::Libvirt {
        what: "read domains".into(),
        message: "the adapter is gone".into(),
    }
}

fn close_reason(reason: c_int) -> &'static str {
    match reason as u32 {
        sys::VIR_CONNECT_CLOSE_REASON_ERROR => "error",
        sys::VIR_CONNECT_CLOSE_REASON_EOF => "end of file",
        sys::VIR_CONNECT_CLOSE_REASON_KEEPALIVE => "keepalive timeout",
        sys::VIR_CONNECT_CLOSE_REASON_CLIENT => "closed by client",
        _ => "unknown",
    }
}

/// The inventory's own connection and the callbacks registered on it. Dropping
/// it deregisters them (libvirt calls: drop it on a worker thread).
struct Events {
    conn: Connect,
    callbacks: Vec<c_int>,
    close_callback: bool,
}

/// What each callback holds: where to send, and which connection it is on.
///
/// Guest events go straight onto their broadcast channel from the callback
/// (a send never blocks, nor calls libvirt): they keep libvirt's order and the
/// time they came, and are not held up behind a re-read the owner is waiting
/// on. Changes to the table still go through the owner.
struct Sink {
    tx: mpsc::UnboundedSender<Message>,
    guest: Arc<Publisher>,
    generation: u64,
}

impl Events {
    fn open(
        uri: &str,
        tx: mpsc::UnboundedSender<Message>,
        guest: Arc<Publisher>,
        generation: u64,
    ) -> Result<Self, Error> {
        let mut events = Self {
            conn: connection::open(uri)?,
            callbacks: Vec::new(),
            close_callback: false,
        };
        let sink = || {
            Box::into_raw(Box::new(Sink {
                tx: tx.clone(),
                guest: guest.clone(),
                generation,
            })) as *mut c_void
        };
        let ptr = unsafe { events.conn.as_ptr() };
        // SAFETY: `ptr` is the open connection `events` holds; libvirt owns the
        // box from here and frees it with `free_sink` when the callback goes.
        let status = unsafe {
            sys::virConnectRegisterCloseCallback(ptr, Some(on_close), sink(), Some(free_sink))
        };
        if status < 0 {
            return Err(last_error("register the close callback"));
        }
        events.close_callback = true;
        // libvirt calls each with the arguments of its event's own callback
        // type and expects it passed as the generic one, as its C API does.
        let callbacks: [(u32, sys::virConnectDomainEventGenericCallback); 6] = unsafe {
            type Lifecycle = unsafe extern "C" fn(
                sys::virConnectPtr,
                sys::virDomainPtr,
                c_int,
                c_int,
                *mut c_void,
            );
            type Metadata = unsafe extern "C" fn(
                sys::virConnectPtr,
                sys::virDomainPtr,
                c_int,
                *const c_char,
                *mut c_void,
            );
            type Device = unsafe extern "C" fn(
                sys::virConnectPtr,
                sys::virDomainPtr,
                *const c_char,
                *mut c_void,
            );
            type Watchdog =
                unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, c_int, *mut c_void);
            type Generic = unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void);
            [
                (
                    sys::VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                    Some(std::mem::transmute::<Lifecycle, Generic>(on_lifecycle)),
                ),
                (
                    sys::VIR_DOMAIN_EVENT_ID_METADATA_CHANGE,
                    Some(std::mem::transmute::<Metadata, Generic>(on_metadata)),
                ),
                (
                    sys::VIR_DOMAIN_EVENT_ID_DEVICE_ADDED,
                    Some(std::mem::transmute::<Device, Generic>(on_device)),
                ),
                (
                    sys::VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED,
                    Some(std::mem::transmute::<Device, Generic>(on_device)),
                ),
                (sys::VIR_DOMAIN_EVENT_ID_REBOOT, Some(on_reboot as Generic)),
                (
                    sys::VIR_DOMAIN_EVENT_ID_WATCHDOG,
                    Some(std::mem::transmute::<Watchdog, Generic>(on_watchdog)),
                ),
            ]
        };
        for (event, callback) in callbacks {
            // SAFETY: as above; a null domain asks for the events of every domain.
            let id = unsafe {
                sys::virConnectDomainEventRegisterAny(
                    ptr,
                    std::ptr::null_mut(),
                    event as c_int,
                    callback,
                    sink(),
                    Some(free_sink),
                )
            };
            if id < 0 {
                return Err(last_error("register for domain events"));
            }
            events.callbacks.push(id);
        }
        tracing::debug!(uri, generation, "inventory: events connection open");
        Ok(events)
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        // SAFETY: the connection is still held; each id was returned by it.
        // Failures (a dead connection) still drop the callbacks client-side.
        unsafe {
            let ptr = self.conn.as_ptr();
            for id in self.callbacks.drain(..) {
                sys::virConnectDomainEventDeregisterAny(ptr, id);
            }
            if self.close_callback {
                sys::virConnectUnregisterCloseCallback(ptr, Some(on_close));
            }
        }
    }
}

fn last_error(what: &str) -> Error {
    Error::libvirt(what, &virt::error::Error::last_error())
}

/// Hands the domain's UUID to the owner. Runs on libvirt's event-loop thread:
/// no libvirt call that talks to libvirtd (reading the UUID is local).
unsafe fn notify(dom: sys::virDomainPtr, opaque: *mut c_void) {
    let sink = &*(opaque as *const Sink);
    let mut buf = [0 as c_char; sys::VIR_UUID_STRING_BUFLEN as usize];
    if sys::virDomainGetUUIDString(dom, buf.as_mut_ptr()) == 0 {
        let uuid = CStr::from_ptr(buf.as_ptr())
            .to_string_lossy()
            .to_ascii_lowercase();
        let _ = sink.tx.send(Message::Domain(uuid));
    }
}

/// Publishes a guest event of `dom`, stamped now. Runs on libvirt's
/// event-loop thread: reading the UUID and name is local.
unsafe fn publish(
    dom: sys::virDomainPtr,
    opaque: *mut c_void,
    event: GuestEvent,
    detail: &'static str,
) {
    let (at, now) = (std::time::SystemTime::now(), std::time::Instant::now());
    let sink = &*(opaque as *const Sink);
    let mut buf = [0 as c_char; sys::VIR_UUID_STRING_BUFLEN as usize];
    if sys::virDomainGetUUIDString(dom, buf.as_mut_ptr()) != 0 {
        return;
    }
    let uuid = CStr::from_ptr(buf.as_ptr())
        .to_string_lossy()
        .to_ascii_lowercase();
    let name = sys::virDomainGetName(dom);
    let name = if name.is_null() {
        String::new()
    } else {
        CStr::from_ptr(name).to_string_lossy().into_owned()
    };
    let event = DomainEvent {
        uuid,
        name,
        event,
        detail,
        at,
    };
    sink.guest.publish(event, now);
}

unsafe extern "C" fn on_lifecycle(
    _: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    event: c_int,
    detail: c_int,
    opaque: *mut c_void,
) {
    for (event, detail) in events::from_lifecycle(event, detail) {
        publish(dom, opaque, event, detail);
    }
    notify(dom, opaque);
}

unsafe extern "C" fn on_reboot(_: sys::virConnectPtr, dom: sys::virDomainPtr, opaque: *mut c_void) {
    publish(dom, opaque, GuestEvent::Rebooted, "reset");
}

unsafe extern "C" fn on_watchdog(
    _: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    action: c_int,
    opaque: *mut c_void,
) {
    publish(
        dom,
        opaque,
        GuestEvent::Watchdog,
        events::watchdog_action(action),
    );
}

unsafe extern "C" fn on_metadata(
    _: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    _kind: c_int,
    _namespace: *const c_char,
    opaque: *mut c_void,
) {
    notify(dom, opaque);
}

unsafe extern "C" fn on_device(
    _: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    _alias: *const c_char,
    opaque: *mut c_void,
) {
    notify(dom, opaque);
}

unsafe extern "C" fn on_close(_: sys::virConnectPtr, reason: c_int, opaque: *mut c_void) {
    let sink = &*(opaque as *const Sink);
    let _ = sink.tx.send(Message::Closed {
        generation: sink.generation,
        reason,
    });
}

unsafe extern "C" fn free_sink(opaque: *mut c_void) {
    drop(Box::from_raw(opaque as *mut Sink));
}

/// What the inventory reads from a domain's XML.
#[derive(Debug, Default, PartialEq, Eq)]
struct Described {
    screens: u32,
    instance_id: Option<String>,
    project: Option<String>,
    user: Option<String>,
    serial_log: Option<SerialLog>,
}

/// Screens, the serial log, and the metadata elements of vmshot and Nova, from a domain's XML.
fn describe(domain_xml: &str) -> Result<Described, roxmltree::Error> {
    let doc = roxmltree::Document::parse(domain_xml)?;
    let mut described = Described {
        screens: screens_in(&doc),
        serial_log: serial_log_in(&doc),
        ..Described::default()
    };
    let metadata = doc
        .root_element()
        .children()
        .filter(|n| n.has_tag_name("metadata"));
    for element in metadata
        .flat_map(|m| m.children())
        .filter(|n| n.is_element())
    {
        let Some(namespace) = element.tag_name().namespace() else {
            continue;
        };
        if namespace == INSTANCE_NAMESPACE {
            described.instance_id = text(element.text());
        } else if NOVA_NAMESPACES.contains(&namespace) && element.tag_name().name() == "instance" {
            let owner = element
                .children()
                .find(|n| n.has_tag_name((namespace, "owner")));
            let uuid_of = |name: &str| {
                owner
                    .and_then(|o| o.children().find(|n| n.has_tag_name((namespace, name))))
                    .and_then(|n| text(n.attribute("uuid")))
            };
            described.user = uuid_of("user");
            described.project = uuid_of("project");
        }
    }
    Ok(described)
}

fn text(s: Option<&str>) -> Option<String> {
    s.map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::{describe, Described};

    fn domain(metadata: &str) -> String {
        format!(
            "<domain type='qemu'><name>d</name><metadata>{metadata}</metadata>\
             <devices><video><model type='vga'/></video></devices></domain>"
        )
    }

    const NOVA_OWNER: &str =
        "<nova:instance xmlns:nova='http://openstack.org/xmlns/libvirt/nova/1.1'>\
        <nova:name>web-1</nova:name>\
        <nova:owner>\
          <nova:user uuid='85d7c3b1f2a44b44a0b1c0f9a8b7e6d5'>alice</nova:user>\
          <nova:project uuid='0f1e2d3c4b5a69788796a5b4c3d2e1f0'>demo</nova:project>\
        </nova:owner></nova:instance>";

    #[test]
    fn reads_the_instance_id() {
        let xml = domain(
            "<vmshot:instance xmlns:vmshot='https://vmshot.dev/xmlns/instance/1'>\n  i-abc \n</vmshot:instance>",
        );
        let d = describe(&xml).unwrap();
        assert_eq!(d.instance_id.as_deref(), Some("i-abc"));
        assert_eq!(d.screens, 1);
        assert_eq!((d.project, d.user), (None, None));
    }

    #[test]
    fn an_empty_instance_id_is_none() {
        let xml =
            domain("<v:instance xmlns:v='https://vmshot.dev/xmlns/instance/1'>  </v:instance>");
        assert_eq!(describe(&xml).unwrap().instance_id, None);
    }

    #[test]
    fn another_namespace_is_not_an_instance_id() {
        let xml = domain("<v:instance xmlns:v='https://vmshot.dev/xmlns/instance/2'>i-x</v:instance><instance>i-y</instance>");
        assert_eq!(describe(&xml).unwrap().instance_id, None);
    }

    #[test]
    fn reads_novas_owner() {
        let xml = domain(&format!(
            "{NOVA_OWNER}<v:instance xmlns:v='https://vmshot.dev/xmlns/instance/1'>i-1</v:instance>"
        ));
        let d = describe(&xml).unwrap();
        assert_eq!(d.user.as_deref(), Some("85d7c3b1f2a44b44a0b1c0f9a8b7e6d5"));
        assert_eq!(
            d.project.as_deref(),
            Some("0f1e2d3c4b5a69788796a5b4c3d2e1f0")
        );
        assert_eq!(d.instance_id.as_deref(), Some("i-1"));
    }

    #[test]
    fn accepts_nova_namespace_versions_1_0_to_1_2() {
        for version in ["1.0", "1.1", "1.2"] {
            let xml = domain(&NOVA_OWNER.replace("nova/1.1", &format!("nova/{version}")));
            assert_eq!(
                describe(&xml).unwrap().project.as_deref(),
                Some("0f1e2d3c4b5a69788796a5b4c3d2e1f0"),
                "{version}"
            );
        }
        let xml = domain(&NOVA_OWNER.replace("nova/1.1", "nova/9.9"));
        assert_eq!(describe(&xml).unwrap().project, None);
    }

    #[test]
    fn an_owner_outside_novas_namespace_or_without_uuid_is_ignored() {
        // The owner's children must be in Nova's namespace too.
        let xml = domain(
            "<nova:instance xmlns:nova='http://openstack.org/xmlns/libvirt/nova/1.0'>\
             <nova:owner><user uuid='u'/><nova:project>demo</nova:project></nova:owner></nova:instance>",
        );
        let d = describe(&xml).unwrap();
        assert_eq!((d.user, d.project), (None, None));
    }

    #[test]
    fn metadata_elsewhere_than_under_domain_is_ignored() {
        let xml = "<domain><devices><metadata><v:instance xmlns:v='https://vmshot.dev/xmlns/instance/1'>i-1</v:instance></metadata></devices></domain>";
        assert_eq!(describe(xml).unwrap(), Described::default());
    }

    #[test]
    fn bad_xml_is_an_error() {
        assert!(describe("<domain><metadata>").is_err());
        assert!(describe("").is_err());
        assert!(describe("<domain><metadata><a:b/></metadata></domain>").is_err());
    }
}
