//! What happened to a guest, as libvirt's domain events tell it: starts,
//! stops, reboots, panics, watchdog expiries. Recordings start and stop on
//! these (OPERATION, SESSION) and write them into their event files.
//!
//! The inventory's callbacks (see `inventory`) turn libvirt's lifecycle
//! (event, detail) pairs and its reboot and watchdog events into
//! `DomainEvent`s, stamped with the time they were received, and publish them
//! in the order libvirt delivered them. What one guest action looks like:
//!
//! ```text
//!   virsh start            Started(booted)
//!   guest or virsh reboot  Rebooted                  (QEMU's reset; the guest keeps running)
//!   virsh reset            Rebooted
//!   virsh shutdown         Shutdown(guest), Stopped(shutdown)     (if the guest obeys ACPI)
//!   virsh destroy          Shutdown(host) (mostly), Stopped(destroyed)
//!   pvpanic, on_crash
//!     preserve             Crashed{panicked}(panicked)  (paused, panic on screen)
//!     destroy              Crashed{panicked}(panicked), Stopped(crashed)
//!     restart              Crashed{panicked}(panicked), Rebooted     (QEMU is reset, not restarted)
//!   QEMU dies              Crashed{panicked: false}(failed), Stopped(failed)
//!   watchdog expires       Watchdog(reset|poweroff|…) then what its action does
//! ```
//!
//! (Each measured on the events guest, fixtures/wake/README.md.) QEMU reports
//! one reboot as a run of resets 0.01-0.8 s apart (the guest's, then
//! SeaBIOS's own on the way up: three for a guest reboot or a panic with
//! on_crash=restart, two for a watchdog reset); `Publisher` makes one
//! `Rebooted` of a run, the first, so that a recording starts once per reboot.
//!
//! Events that come while libvirtd is unreachable are lost: libvirt does not
//! replay them. After a reconnect the inventory's table (and its `Change`s)
//! tells what state each domain is in now.

use std::collections::HashMap;
use std::ffi::c_int;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::broadcast;
use virt::sys;

/// What happened, reduced to what a recording cares about. `DomainEvent::detail`
/// keeps libvirt's finer word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GuestEvent {
    /// The domain's QEMU began to run it: booted, restored, migrated in,
    /// reverted to a snapshot.
    Started,
    /// The domain no longer runs (any reason: `detail` tells which).
    Stopped,
    /// A shutdown was asked for or finished; `Stopped` follows when it is done.
    Shutdown,
    /// The guest was reset (its own reboot, `virsh reboot`/`reset`, a watchdog
    /// reset); it keeps running.
    Rebooted,
    /// The guest crashed. `panicked`: the guest itself reported a panic
    /// (pvpanic, Hyper-V crash MSRs, s390 diag); else its QEMU died (detail
    /// `failed`; a `Stopped` follows).
    Crashed { panicked: bool },
    /// The guest's watchdog device expired; `detail` names its action.
    Watchdog,
}

/// One event of one domain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DomainEvent {
    /// Lowercase, with dashes.
    pub uuid: String,
    pub name: String,
    pub event: GuestEvent,
    /// libvirt's detail, one word: for `Started` `booted`, `migrated`,
    /// `restored`, `from_snapshot`, `recreated`; for `Stopped` `shutdown`,
    /// `destroyed`, `crashed`, `migrated`, `saved`, `failed`,
    /// `from_snapshot`, `recreated`; for `Shutdown` `finished`, `guest`,
    /// `host`; for `Crashed` `panicked`, `crashloaded`, `failed`; for `Watchdog` the
    /// action: `none`, `pause`, `reset`, `poweroff`, `shutdown`, `debug`,
    /// `inject_nmi`; for `Rebooted` `reset`. `unknown` for a newer libvirt's
    /// word this build does not know.
    pub detail: &'static str,
    /// When vmshot received it (libvirt's events carry no time).
    #[serde(with = "rfc3339")]
    pub at: SystemTime,
}

/// A lifecycle event (`VIR_DOMAIN_EVENT_*`, with its detail) as the
/// `GuestEvent`s it means, in order: none for those a recording has no use
/// for (defined, undefined, paused, resumed, PM suspend and wake-up); two for
/// a QEMU that died (`Stopped(failed)`), which is a crash seen from outside
/// first (`Crashed { panicked: false }`), so that it can start a recording
/// as a guest's panic does, and a stop.
pub fn from_lifecycle(event: c_int, detail: c_int) -> Vec<(GuestEvent, &'static str)> {
    match lifecycle_event(event, detail) {
        None => Vec::new(),
        Some(stop @ (GuestEvent::Stopped, "failed")) => {
            vec![(GuestEvent::Crashed { panicked: false }, "failed"), stop]
        }
        Some(one) => vec![one],
    }
}

/// The one `GuestEvent` a lifecycle event is, if any.
fn lifecycle_event(event: c_int, detail: c_int) -> Option<(GuestEvent, &'static str)> {
    let (event, detail) = (u32::try_from(event).ok()?, u32::try_from(detail).ok());
    let word = |words: &[(u32, &'static str)]| {
        detail
            .and_then(|d| words.iter().find(|(n, _)| *n == d))
            .map_or("unknown", |(_, w)| w)
    };
    match event {
        sys::VIR_DOMAIN_EVENT_STARTED => {
            // A wake-up from PM suspend continues the same run.
            if detail == Some(sys::VIR_DOMAIN_EVENT_STARTED_WAKEUP) {
                return None;
            }
            Some((
                GuestEvent::Started,
                word(&[
                    (sys::VIR_DOMAIN_EVENT_STARTED_BOOTED, "booted"),
                    (sys::VIR_DOMAIN_EVENT_STARTED_MIGRATED, "migrated"),
                    (sys::VIR_DOMAIN_EVENT_STARTED_RESTORED, "restored"),
                    (sys::VIR_DOMAIN_EVENT_STARTED_FROM_SNAPSHOT, "from_snapshot"),
                    (sys::VIR_DOMAIN_EVENT_STARTED_RECREATED, "recreated"),
                ]),
            ))
        }
        sys::VIR_DOMAIN_EVENT_STOPPED => Some((
            GuestEvent::Stopped,
            word(&[
                (sys::VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN, "shutdown"),
                (sys::VIR_DOMAIN_EVENT_STOPPED_DESTROYED, "destroyed"),
                (sys::VIR_DOMAIN_EVENT_STOPPED_CRASHED, "crashed"),
                (sys::VIR_DOMAIN_EVENT_STOPPED_MIGRATED, "migrated"),
                (sys::VIR_DOMAIN_EVENT_STOPPED_SAVED, "saved"),
                (sys::VIR_DOMAIN_EVENT_STOPPED_FAILED, "failed"),
                (sys::VIR_DOMAIN_EVENT_STOPPED_FROM_SNAPSHOT, "from_snapshot"),
                (sys::VIR_DOMAIN_EVENT_STOPPED_RECREATED, "recreated"),
            ]),
        )),
        sys::VIR_DOMAIN_EVENT_SHUTDOWN => Some((
            GuestEvent::Shutdown,
            word(&[
                (sys::VIR_DOMAIN_EVENT_SHUTDOWN_FINISHED, "finished"),
                (sys::VIR_DOMAIN_EVENT_SHUTDOWN_GUEST, "guest"),
                (sys::VIR_DOMAIN_EVENT_SHUTDOWN_HOST, "host"),
            ]),
        )),
        // Both details are the guest's own report of a panic: CRASHLOADED
        // means a crash kernel was loaded to handle it.
        sys::VIR_DOMAIN_EVENT_CRASHED => Some((
            GuestEvent::Crashed { panicked: true },
            word(&[
                (sys::VIR_DOMAIN_EVENT_CRASHED_PANICKED, "panicked"),
                (sys::VIR_DOMAIN_EVENT_CRASHED_CRASHLOADED, "crashloaded"),
            ]),
        )),
        // SUSPENDED(watchdog) follows a watchdog event with action pause,
        // which is published already; other pauses are no guest event.
        _ => None,
    }
}

/// The action of a watchdog event (`VIR_DOMAIN_EVENT_WATCHDOG_*`).
pub fn watchdog_action(action: c_int) -> &'static str {
    let Ok(action) = u32::try_from(action) else {
        return "unknown";
    };
    match action {
        sys::VIR_DOMAIN_EVENT_WATCHDOG_NONE => "none",
        sys::VIR_DOMAIN_EVENT_WATCHDOG_PAUSE => "pause",
        sys::VIR_DOMAIN_EVENT_WATCHDOG_RESET => "reset",
        sys::VIR_DOMAIN_EVENT_WATCHDOG_POWEROFF => "poweroff",
        sys::VIR_DOMAIN_EVENT_WATCHDOG_SHUTDOWN => "shutdown",
        sys::VIR_DOMAIN_EVENT_WATCHDOG_DEBUG => "debug",
        sys::VIR_DOMAIN_EVENT_WATCHDOG_INJECTNMI => "inject_nmi",
        _ => "unknown",
    }
}

/// Events kept for subscribers that have not read them yet.
const KEPT: usize = 256;
/// Resets of one domain closer than this to the one before are one reboot.
const RESET_RUN: Duration = Duration::from_secs(2);

/// Where the callbacks put guest events: a broadcast channel, and what it
/// takes to make one `Rebooted` of a run of resets. Called from libvirt's
/// event-loop thread: nothing here blocks for long or calls libvirt.
pub(super) struct Publisher {
    sender: broadcast::Sender<DomainEvent>,
    /// The last reset seen of each domain (UUID), within `RESET_RUN`.
    resets: Mutex<HashMap<String, Instant>>,
}

impl Publisher {
    pub(super) fn new() -> Self {
        Self {
            sender: broadcast::channel(KEPT).0,
            resets: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<DomainEvent> {
        self.sender.subscribe()
    }

    /// Sends `event` unless it is a reset that continues a run (`now`: when
    /// it came). No subscriber is not an error.
    pub(super) fn publish(&self, event: DomainEvent, now: Instant) {
        if event.event == GuestEvent::Rebooted && !self.first_reset(&event.uuid, now) {
            tracing::debug!(?event, "guest event: a reset of the same reboot");
            return;
        }
        tracing::debug!(?event, "guest event");
        let _ = self.sender.send(event);
    }

    /// Whether a reset of `uuid` at `now` starts a run. Entries past the
    /// window go, so the map holds only domains reset in the last 2 s.
    fn first_reset(&self, uuid: &str, now: Instant) -> bool {
        let mut resets = self.resets.lock().unwrap_or_else(|e| e.into_inner());
        resets.retain(|_, last| now.saturating_duration_since(*last) < RESET_RUN);
        resets.insert(uuid.to_owned(), now).is_none()
    }
}

/// `at` as RFC 3339 in UTC, as the rest of vmshot writes times.
mod rfc3339 {
    use std::time::SystemTime;

    use time::format_description::well_known::Rfc3339;
    use time::OffsetDateTime;

    pub fn serialize<S: serde::Serializer>(at: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let text = OffsetDateTime::from(*at)
            .format(&Rfc3339)
            .map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lifecycle(event: u32, detail: u32) -> Option<(GuestEvent, &'static str)> {
        let mut events = from_lifecycle(event as c_int, detail as c_int);
        assert!(events.len() <= 1, "{events:?}");
        events.pop()
    }

    #[test]
    fn a_qemu_that_died_is_a_crash_then_a_stop() {
        use sys::*;
        assert_eq!(
            from_lifecycle(
                VIR_DOMAIN_EVENT_STOPPED as c_int,
                VIR_DOMAIN_EVENT_STOPPED_FAILED as c_int
            ),
            [
                (GuestEvent::Crashed { panicked: false }, "failed"),
                (GuestEvent::Stopped, "failed")
            ]
        );
        // After a panic with on_crash=destroy, the crash came first already.
        assert_eq!(
            lifecycle(VIR_DOMAIN_EVENT_STOPPED, VIR_DOMAIN_EVENT_STOPPED_CRASHED),
            Some((GuestEvent::Stopped, "crashed"))
        );
    }

    #[test]
    fn starts() {
        use sys::*;
        assert_eq!(
            lifecycle(VIR_DOMAIN_EVENT_STARTED, VIR_DOMAIN_EVENT_STARTED_BOOTED),
            Some((GuestEvent::Started, "booted"))
        );
        assert_eq!(
            lifecycle(VIR_DOMAIN_EVENT_STARTED, VIR_DOMAIN_EVENT_STARTED_RESTORED),
            Some((GuestEvent::Started, "restored"))
        );
        assert_eq!(
            lifecycle(VIR_DOMAIN_EVENT_STARTED, VIR_DOMAIN_EVENT_STARTED_WAKEUP),
            None
        );
    }

    #[test]
    fn stops_keep_their_reason() {
        use sys::*;
        for (detail, word) in [
            (VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN, "shutdown"),
            (VIR_DOMAIN_EVENT_STOPPED_DESTROYED, "destroyed"),
            (VIR_DOMAIN_EVENT_STOPPED_CRASHED, "crashed"),
            (VIR_DOMAIN_EVENT_STOPPED_SAVED, "saved"),
        ] {
            assert_eq!(
                lifecycle(VIR_DOMAIN_EVENT_STOPPED, detail),
                Some((GuestEvent::Stopped, word))
            );
        }
    }

    #[test]
    fn shutdowns() {
        use sys::*;
        assert_eq!(
            lifecycle(VIR_DOMAIN_EVENT_SHUTDOWN, VIR_DOMAIN_EVENT_SHUTDOWN_GUEST),
            Some((GuestEvent::Shutdown, "guest"))
        );
        assert_eq!(
            lifecycle(
                VIR_DOMAIN_EVENT_SHUTDOWN,
                VIR_DOMAIN_EVENT_SHUTDOWN_FINISHED
            ),
            Some((GuestEvent::Shutdown, "finished"))
        );
    }

    #[test]
    fn a_guest_panic_is_a_panicked_crash() {
        use sys::*;
        assert_eq!(
            lifecycle(VIR_DOMAIN_EVENT_CRASHED, VIR_DOMAIN_EVENT_CRASHED_PANICKED),
            Some((GuestEvent::Crashed { panicked: true }, "panicked"))
        );
        assert_eq!(
            lifecycle(
                VIR_DOMAIN_EVENT_CRASHED,
                VIR_DOMAIN_EVENT_CRASHED_CRASHLOADED
            ),
            Some((GuestEvent::Crashed { panicked: true }, "crashloaded"))
        );
    }

    #[test]
    fn pauses_and_definitions_are_no_guest_event() {
        use sys::*;
        for (event, detail) in [
            (VIR_DOMAIN_EVENT_DEFINED, VIR_DOMAIN_EVENT_DEFINED_ADDED),
            (
                VIR_DOMAIN_EVENT_UNDEFINED,
                VIR_DOMAIN_EVENT_UNDEFINED_REMOVED,
            ),
            (
                VIR_DOMAIN_EVENT_SUSPENDED,
                VIR_DOMAIN_EVENT_SUSPENDED_PAUSED,
            ),
            (
                VIR_DOMAIN_EVENT_SUSPENDED,
                VIR_DOMAIN_EVENT_SUSPENDED_WATCHDOG,
            ),
            (VIR_DOMAIN_EVENT_RESUMED, VIR_DOMAIN_EVENT_RESUMED_UNPAUSED),
            (
                VIR_DOMAIN_EVENT_PMSUSPENDED,
                VIR_DOMAIN_EVENT_PMSUSPENDED_MEMORY,
            ),
        ] {
            assert_eq!(lifecycle(event, detail), None, "{event}/{detail}");
        }
    }

    #[test]
    fn unknown_details_and_events() {
        use sys::*;
        assert_eq!(
            lifecycle(VIR_DOMAIN_EVENT_STOPPED, 99),
            Some((GuestEvent::Stopped, "unknown"))
        );
        assert_eq!(
            from_lifecycle(VIR_DOMAIN_EVENT_STOPPED as c_int, -1),
            [(GuestEvent::Stopped, "unknown")]
        );
        assert_eq!(lifecycle(99, 0), None);
        assert_eq!(from_lifecycle(-1, 0), []);
    }

    #[test]
    fn watchdog_actions() {
        use sys::*;
        assert_eq!(
            watchdog_action(VIR_DOMAIN_EVENT_WATCHDOG_RESET as c_int),
            "reset"
        );
        assert_eq!(
            watchdog_action(VIR_DOMAIN_EVENT_WATCHDOG_INJECTNMI as c_int),
            "inject_nmi"
        );
        assert_eq!(watchdog_action(42), "unknown");
        assert_eq!(watchdog_action(-3), "unknown");
    }

    fn event(uuid: &str, event: GuestEvent) -> DomainEvent {
        DomainEvent {
            uuid: uuid.into(),
            name: "g".into(),
            event,
            detail: "reset",
            at: SystemTime::now(),
        }
    }

    #[test]
    fn a_run_of_resets_is_one_reboot() {
        let publisher = Publisher::new();
        let mut rx = publisher.subscribe();
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        // One reboot as QEMU reports it (three resets), another domain's in
        // the middle, then a crash and the same domain reset again later.
        publisher.publish(event("a", GuestEvent::Rebooted), ms(0));
        publisher.publish(event("b", GuestEvent::Rebooted), ms(50));
        publisher.publish(event("a", GuestEvent::Rebooted), ms(100));
        publisher.publish(event("a", GuestEvent::Rebooted), ms(1900));
        publisher.publish(event("a", GuestEvent::Crashed { panicked: true }), ms(2000));
        // 2 s after the last reset of the run: a new reboot.
        publisher.publish(event("a", GuestEvent::Rebooted), ms(3900));
        let got: Vec<(String, GuestEvent)> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|e| (e.uuid, e.event))
            .collect();
        assert_eq!(
            got,
            [
                ("a".into(), GuestEvent::Rebooted),
                ("b".into(), GuestEvent::Rebooted),
                ("a".into(), GuestEvent::Crashed { panicked: true }),
                ("a".into(), GuestEvent::Rebooted),
            ]
        );
        // Old entries go: only "a" (reset at 3.9 s) is left.
        assert_eq!(publisher.resets.lock().unwrap().len(), 1);
    }

    #[test]
    fn serializes_with_kind_detail_and_time() {
        let event = DomainEvent {
            uuid: "7aba64ba-dabf-42cd-9b3a-662533e9ffbb".into(),
            name: "g".into(),
            event: GuestEvent::Crashed { panicked: true },
            detail: "panicked",
            at: SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1500),
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "uuid": "7aba64ba-dabf-42cd-9b3a-662533e9ffbb",
                "name": "g",
                "event": {"kind": "crashed", "panicked": true},
                "detail": "panicked",
                "at": "1970-01-01T00:00:01.5Z",
            })
        );
    }
}
