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
//!   virsh shutdown         Shutdown(guest|host|finished)… then Stopped(shutdown)
//!   virsh destroy          Stopped(destroyed)
//!   pvpanic, on_crash
//!     preserve             Crashed{panicked}(panicked)  (paused, panic on screen)
//!     destroy              Crashed{panicked}(panicked), Stopped(crashed)
//!     restart              Crashed{panicked}(panicked), Stopped(crashed), Started(booted)
//!   QEMU dies              Stopped(failed)
//!   watchdog expires       Watchdog(reset|poweroff|…) then what its action does
//! ```
//!
//! Events that come while libvirtd is unreachable are lost: libvirt does not
//! replay them. After a reconnect the inventory's table (and its `Change`s)
//! tells what state each domain is in now.

use std::ffi::c_int;
use std::time::SystemTime;

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
    /// (pvpanic, Hyper-V crash MSRs, s390 diag), as opposed to a crash seen
    /// from outside.
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
    /// `host`; for `Crashed` `panicked`, `crashloaded`; for `Watchdog` the
    /// action: `none`, `pause`, `reset`, `poweroff`, `shutdown`, `debug`,
    /// `inject_nmi`; for `Rebooted` `reset`. `unknown` for a newer libvirt's
    /// word this build does not know.
    pub detail: &'static str,
    /// When vmshot received it (libvirt's events carry no time).
    #[serde(with = "rfc3339")]
    pub at: SystemTime,
}

/// A lifecycle event (`VIR_DOMAIN_EVENT_*`, with its detail) as a
/// `GuestEvent`; `None` for those a recording has no use for (defined,
/// undefined, paused, resumed, PM suspend and wake-up).
pub fn from_lifecycle(event: c_int, detail: c_int) -> Option<(GuestEvent, &'static str)> {
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
        from_lifecycle(event as c_int, detail as c_int)
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
            (VIR_DOMAIN_EVENT_STOPPED_FAILED, "failed"),
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
            Some((GuestEvent::Stopped, "unknown"))
        );
        assert_eq!(lifecycle(99, 0), None);
        assert_eq!(from_lifecycle(-1, 0), None);
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
