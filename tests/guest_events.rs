//! Guest events (`Inventory::events`) against the real libvirtd: copies of the
//! events guest (tests/common/events_guest.rs) are started, rebooted, reset,
//! shut down, destroyed, panicked through pvpanic and left to their watchdog,
//! and each must come out as the `DomainEvent`s that say so, in order; the
//! events must go on after a libvirtd restart.

mod common;

use std::time::{Duration, Instant};

use common::events_guest::EventsGuest;
use common::host::{ensure_libvirtd, qemu_pid, restart_libvirtd, uri, virsh, LibvirtdLock};
use common::image_check::{blue_share, decode_rgb};
use tokio::sync::broadcast::{self, error::RecvError};
use vmshot::capture::{Frame, Layout};
use vmshot::hypervisor::{
    DomainEvent, DomainState, GuestEvent, Hypervisor, Inventory, Mirror, Settings,
};

/// A TCG boot to the guest's "ready" (6-10 s on a quiet host, 85 s seen on a
/// 2-CPU host loaded to 13), with room for a busier one.
const BOOT: Duration = Duration::from_secs(240);
/// From a virsh call (or a key) to its event.
const SOON: Duration = Duration::from_secs(30);

async fn live_inventory() -> (Hypervisor, Inventory) {
    tokio::task::spawn_blocking(ensure_libvirtd).await.unwrap();
    let hypervisor = Hypervisor::new(Settings::new(uri()));
    let inventory = hypervisor.start_inventory();
    assert!(
        inventory.wait_live(Duration::from_secs(30)).await,
        "inventory not live: {:?}",
        inventory.status()
    );
    (hypervisor, inventory)
}

/// Runs blocking test code (virsh, polling a serial log) off the runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// Events of one domain as they come, ignoring everyone else's (other tests
/// and other users of this libvirtd have guests too).
struct Events {
    rx: broadcast::Receiver<DomainEvent>,
    uuid: String,
}

impl Events {
    /// The domain's events up to and including the first that `want`
    /// matches; panics naming `what` and what came instead after `limit`.
    async fn until(
        &mut self,
        what: &str,
        limit: Duration,
        want: impl Fn(&DomainEvent) -> bool,
    ) -> Vec<DomainEvent> {
        let start = Instant::now();
        let mut seen = Vec::new();
        loop {
            let left = limit.saturating_sub(start.elapsed());
            let event = match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Ok(event)) => event,
                Ok(Err(RecvError::Lagged(n))) => panic!("{what}: lost {n} events"),
                Ok(Err(RecvError::Closed)) => panic!("{what}: the events channel closed"),
                Err(_) => panic!("{what}: not seen within {limit:?}; saw {seen:#?}"),
            };
            if event.uuid != self.uuid {
                continue;
            }
            eprintln!(
                "{what}: {:?} ({}) after {:.0} ms",
                event.event,
                event.detail,
                start.elapsed().as_secs_f64() * 1e3
            );
            let done = want(&event);
            seen.push(event);
            if done {
                return seen;
            }
        }
    }

    /// The domain's next event, which must be `event` with `detail`.
    async fn next(&mut self, what: &str, event: GuestEvent, detail: &str) -> DomainEvent {
        let seen = self.until(what, SOON, |_| true).await;
        let got = seen.last().unwrap();
        assert_eq!((got.event, got.detail), (event, detail), "{what}: {got:?}");
        got.clone()
    }

    /// None of the domain's events within `quiet`.
    async fn none_within(&mut self, what: &str, quiet: Duration) {
        let start = Instant::now();
        while let Some(left) = quiet.checked_sub(start.elapsed()) {
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Ok(event)) if event.uuid == self.uuid => {
                    panic!("{what}: unexpected {event:?}")
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("{what}: {e}"),
                Err(_) => return,
            }
        }
    }
}

fn subscribe(inventory: &Inventory, guest: &EventsGuest) -> Events {
    Events {
        rx: inventory.events(),
        uuid: guest.uuid.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_reboot_reset_shutdown_and_destroy_are_events_in_order() {
    let _lock = LibvirtdLock::shared();
    let (_hypervisor, inventory) = live_inventory().await;
    let guest = blocking(|| EventsGuest::define("life", "")).await;
    let mut events = subscribe(&inventory, &guest);
    let name = guest.name.clone();

    let before = std::time::SystemTime::now();
    run(&["start", &name]).await;
    let started = events.next("start", GuestEvent::Started, "booted").await;
    assert_eq!(
        (started.uuid.as_str(), started.name.as_str()),
        (guest.uuid.as_str(), name.as_str())
    );
    assert!(started.at >= before && started.at <= std::time::SystemTime::now());
    let guest = blocking(move || {
        guest.wait_ready(1, BOOT);
        guest
    })
    .await;

    // The guest's own reboot: QEMU resets it several times on the way, one
    // event says so; nothing else comes until the guest is up again.
    let guest = blocking(move || {
        guest.key("KEY_R");
        guest
    })
    .await;
    events
        .next("the guest reboots", GuestEvent::Rebooted, "reset")
        .await;
    let guest = blocking(move || {
        guest.wait_ready(2, BOOT);
        guest
    })
    .await;
    assert!(guest.serial_log().contains("vmshot-fixture: rebooting"));
    events
        .none_within("after the reboot", Duration::from_secs(3))
        .await;

    // A reset from the host.
    run(&["reset", &name]).await;
    events
        .next("virsh reset", GuestEvent::Rebooted, "reset")
        .await;
    let guest = blocking(move || {
        guest.wait_ready(3, BOOT);
        guest
    })
    .await;

    // A shutdown the guest obeys (ACPI power button): the guest's shutdown,
    // then the stop.
    run(&["shutdown", &name]).await;
    events
        .next("virsh shutdown", GuestEvent::Shutdown, "guest")
        .await;
    events
        .next("the guest powered off", GuestEvent::Stopped, "shutdown")
        .await;
    assert!(guest.serial_log().contains("power button: powering off"));

    // Started again, then destroyed: QEMU may report its own shutdown (host)
    // first; the stop says destroyed.
    run(&["start", &name]).await;
    events
        .next("start again", GuestEvent::Started, "booted")
        .await;
    run(&["destroy", &name]).await;
    let seen = events
        .until("virsh destroy", SOON, |e| e.event == GuestEvent::Stopped)
        .await;
    assert_eq!(seen.last().unwrap().detail, "destroyed");
    assert!(
        seen[..seen.len() - 1]
            .iter()
            .all(|e| (e.event, e.detail) == (GuestEvent::Shutdown, "host")),
        "{seen:#?}"
    );
    drop(guest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pvpanic_panic_is_a_panicked_crash_with_the_panic_on_screen() {
    let _lock = LibvirtdLock::shared();
    let (hypervisor, inventory) = live_inventory().await;
    let guest = blocking(|| EventsGuest::define("panic", "")).await;
    let mut events = subscribe(&inventory, &guest);
    let name = guest.name.clone();

    run(&["start", &name]).await;
    events.next("start", GuestEvent::Started, "booted").await;
    let guest = blocking(move || {
        guest.wait_ready(1, BOOT);
        guest
    })
    .await;
    // Its banner first: blue. A VNC mirror (what recordings read) follows it.
    let shot = hypervisor.screenshot(&name, 0).await.unwrap();
    let banner = decode_rgb(&shot.payload);
    assert!(blue_share(&banner) > 0.8, "{}", blue_share(&banner));
    let mirror = Mirror::open(&hypervisor, &name).await.unwrap();
    assert!(mirror.wait_synced(SOON).await, "{:?}", mirror.failure());

    let guest = blocking(move || {
        guest.key("KEY_P");
        guest
    })
    .await;
    let crashed = events
        .next(
            "the guest panics",
            GuestEvent::Crashed { panicked: true },
            "panicked",
        )
        .await;
    assert!(guest
        .serial_log()
        .contains("Kernel panic - not syncing: sysrq triggered crash"));

    // on_crash=preserve: QEMU stays, paused, and the panic stays on screen,
    // which vmshot captures from a crashed domain.
    let entry = loop {
        let entry = inventory.by_uuid(&guest.uuid).unwrap();
        if entry.state == DomainState::Crashed {
            break entry;
        }
        assert!(
            crashed.at.elapsed().unwrap() < SOON,
            "state after the panic: {entry:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(entry.name, name);
    let shot = hypervisor.screenshot(&name, 0).await.unwrap();
    let screen = decode_rgb(&shot.payload);
    assert_eq!(screen.dimensions(), (1024, 768));
    let (red, text_rows) = (red_share(&screen), text_rows(&screen));
    eprintln!(
        "panic screen: {:.1} % red, {text_rows} rows of text",
        red * 100.0
    );
    // The fixture's red notice, then the kernel's panic lines and call trace.
    assert!(red > 0.6, "{red}");
    assert!(text_rows >= 10, "{text_rows}");
    // Paused: the screen does not change.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = decode_rgb(&hypervisor.screenshot(&name, 0).await.unwrap().payload);
    assert!(again == screen, "the panic screen changed");
    // The mirror opened before the panic reaches the same pixels, and so
    // does one opened on the crashed domain.
    let start = Instant::now();
    while mirror.snapshot().map(|s| to_rgb(&s.frame)).as_ref() != Some(&screen) {
        assert!(
            start.elapsed() < SOON,
            "the mirror did not follow the panic"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "the mirror showed the panic screen {:.0} ms after the screenshot",
        start.elapsed().as_secs_f64() * 1e3
    );
    let after = Mirror::open(&hypervisor, &name).await.unwrap();
    assert!(after.wait_synced(SOON).await, "{:?}", after.failure());
    assert!(to_rgb(&after.snapshot().unwrap().frame) == screen);

    run(&["destroy", &name]).await;
    let seen = events
        .until("virsh destroy", SOON, |e| e.event == GuestEvent::Stopped)
        .await;
    assert_eq!(seen.last().unwrap().detail, "destroyed");
    drop(guest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_told_to_panic_after_some_seconds_does() {
    let _lock = LibvirtdLock::shared();
    let (_hypervisor, inventory) = live_inventory().await;
    let guest = blocking(|| EventsGuest::define("later", "vmshot.panic_after=3")).await;
    let mut events = subscribe(&inventory, &guest);
    run(&["start", &guest.name]).await;
    events.next("start", GuestEvent::Started, "booted").await;
    // Its boot, then 3 s of ticks.
    let seen = events
        .until("the guest panics by itself", BOOT, |e| {
            matches!(e.event, GuestEvent::Crashed { .. })
        })
        .await;
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(
        (seen[0].event, seen[0].detail),
        (GuestEvent::Crashed { panicked: true }, "panicked")
    );
    let log = guest.serial_log();
    assert!(
        log.contains("vmshot-fixture: panicking (vmshot.panic_after)"),
        "{log}"
    );
    assert_eq!(guest.ready_boots(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starved_watchdog_is_a_watchdog_event_then_a_reboot_and_a_killed_qemu_a_crash() {
    let _lock = LibvirtdLock::shared();
    let (_hypervisor, inventory) = live_inventory().await;
    let guest = blocking(|| EventsGuest::define("wdt", "")).await;
    let mut events = subscribe(&inventory, &guest);
    let name = guest.name.clone();

    run(&["start", &name]).await;
    events.next("start", GuestEvent::Started, "booted").await;
    let guest = blocking(move || {
        guest.wait_ready(1, BOOT);
        guest.key("KEY_W");
        guest
    })
    .await;
    // Armed at 2 s; the i6300esb acts at the end of its second stage.
    let watchdog = events
        .next("the watchdog expires", GuestEvent::Watchdog, "reset")
        .await;
    let reboot = events
        .next("its reset", GuestEvent::Rebooted, "reset")
        .await;
    assert!(reboot.at >= watchdog.at);
    assert!(guest
        .serial_log()
        .contains("vmshot-fixture: watchdog armed, timeout 2 s, no longer fed"));
    let guest = blocking(move || {
        guest.wait_ready(2, BOOT);
        guest
    })
    .await;

    // Its QEMU killed: a crash seen from outside, then the stop.
    let pid = qemu_pid(&name);
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    events
        .next(
            "QEMU killed",
            GuestEvent::Crashed { panicked: false },
            "failed",
        )
        .await;
    events
        .next("QEMU gone", GuestEvent::Stopped, "failed")
        .await;
    drop(guest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_go_on_after_a_libvirtd_restart() {
    // Exclusive: this test restarts libvirtd.
    let _lock = LibvirtdLock::exclusive();
    let (_hypervisor, inventory) = live_inventory().await;
    let guest = blocking(|| EventsGuest::define("restart", "")).await;
    let mut events = subscribe(&inventory, &guest);
    let name = guest.name.clone();
    run(&["start", &name]).await;
    events.next("start", GuestEvent::Started, "booted").await;
    let guest = blocking(move || {
        guest.wait_ready(1, BOOT);
        guest
    })
    .await;

    let syncs = inventory.syncs();
    blocking(restart_libvirtd).await;
    // Reconnected: a full read after the restart, on callbacks registered anew.
    let start = Instant::now();
    while !(inventory.is_live() && inventory.syncs() > syncs) {
        assert!(
            start.elapsed() < SOON,
            "the inventory did not reconnect: {:?}",
            inventory.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    run(&["reset", &name]).await;
    events
        .next(
            "virsh reset after the restart",
            GuestEvent::Rebooted,
            "reset",
        )
        .await;
    run(&["destroy", &name]).await;
    events
        .until("virsh destroy", SOON, |e| e.event == GuestEvent::Stopped)
        .await;
    drop(guest);
}

/// Runs virsh on a blocking thread, so the runtime's workers stay free.
async fn run(args: &[&str]) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        virsh(&args);
    })
    .await;
}

/// A mirror's BGRX frame as RGB.
fn to_rgb(frame: &Frame) -> image::RgbImage {
    assert_eq!(frame.layout, Layout::Bgrx8);
    let rgb = frame
        .pixels()
        .chunks_exact(4)
        .flat_map(|p| [p[2], p[1], p[0]])
        .collect();
    image::RgbImage::from_raw(frame.width as u32, frame.height as u32, rgb).unwrap()
}

/// Share of pixels that are fbcon's red background (170, 0, 0).
fn red_share(img: &image::RgbImage) -> f64 {
    let red = img
        .pixels()
        .filter(|p| p[0] > 120 && p[1] < 80 && p[2] < 80)
        .count();
    red as f64 / f64::from(img.width() * img.height())
}

/// Rows of the 8x16 console holding any white (text) pixel.
fn text_rows(img: &image::RgbImage) -> usize {
    (0..img.height() / 16)
        .filter(|row| {
            (row * 16..row * 16 + 16)
                .any(|y| (0..img.width()).any(|x| img.get_pixel(x, y).0.iter().all(|c| *c > 200)))
        })
        .count()
}
