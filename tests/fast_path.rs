//! The fast path through the real daemon: a VNC mirror per captured domain,
//! opened by the first capture; later captures read it; `Fresh=true` and
//! domains without VNC take the stable path; a change on screen reaches the
//! mirror within QEMU's VNC refresh bound.

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use image::RgbImage;

use common::daemon::{Daemon, KEY_ID, SECRET};
use common::fixtures::{self, libvirt_screenshot, shows_pattern, BLANK, NO_VIDEO, PATTERN};
use common::host::{virsh, LibvirtdLock};
use common::http::{send, Reply};
use common::image_check::{blue_share, decode_rgb, psnr};
use common::signing::signed_query;

/// A daemon with the default configuration (fast path on), no per-instance
/// interval, and InstanceId = domain name.
fn daemon() -> Daemon {
    Daemon::start("throttle_interval_secs = 0\n", "")
}

fn screenshot(d: &Daemon, domain: &str, extra: &[(&str, &str)]) -> Reply {
    let mut params = vec![
        ("Action", "GetInstanceScreenshot"),
        ("RegionId", "cn-test"),
        ("InstanceId", domain),
    ];
    params.extend_from_slice(extra);
    let query = signed_query("GET", KEY_ID, SECRET, &params);
    send(d.addr, "GET", &format!("/?{query}"), &[], b"")
}

fn image_of(reply: &Reply) -> (Vec<u8>, RgbImage) {
    assert_eq!(reply.status, 200, "{}", reply.text());
    let jpeg = base64::engine::general_purpose::STANDARD
        .decode(reply.json()["Screenshot"].as_str().unwrap())
        .unwrap();
    let img = decode_rgb(&jpeg);
    (jpeg, img)
}

fn metric(d: &Daemon, name: &str) -> u64 {
    let text = send(d.addr, "GET", "/metrics", &[], b"").text();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .map(|n| n.parse::<u64>().unwrap())
        })
        .unwrap_or(0)
}

fn served(d: &Daemon, how: &str) -> u64 {
    metric(d, &format!("vmshot_captures_total{{how=\"{how}\"}}"))
}

#[test]
fn after_the_first_capture_the_mirror_serves_the_same_screen() {
    let _lock = LibvirtdLock::shared();
    fixtures::up();
    let d = daemon();
    let domain = PATTERN.domain();

    // The first capture is a screenshot; it opens the mirror for the next ones.
    let (_, first) = image_of(&screenshot(&d, &domain, &[]));
    assert!(shows_pattern(&first, 6.0));
    assert_eq!(served(&d, "encoded"), 1);
    assert!(
        d.wait_for_log("VNC mirror synced", Duration::from_secs(20))
            .is_some(),
        "{}",
        d.logs()
    );
    assert_eq!(metric(&d, "vmshot_vnc_mirrors"), 1);

    // From the mirror: the same pixels as libvirt's own screenshot.
    let (jpeg, mirrored) = image_of(&screenshot(&d, &domain, &[]));
    assert_eq!(served(&d, "mirrored"), 1, "{}", d.logs());
    assert_eq!(mirrored.dimensions(), (PATTERN.width, PATTERN.height));
    assert!(shows_pattern(&mirrored, 6.0));
    let reference = decode_rgb(&libvirt_screenshot(&domain));
    assert!(psnr(&reference, &mirrored) >= 30.0);

    // The screen stands still: the next capture reuses that JPEG.
    let (again, _) = image_of(&screenshot(&d, &domain, &[]));
    assert_eq!(again, jpeg);
    assert_eq!(served(&d, "reused"), 1);

    // Fresh=true asks QEMU itself.
    let (_, fresh) = image_of(&screenshot(&d, &domain, &[("Fresh", "true")]));
    assert!(shows_pattern(&fresh, 6.0));
    assert_eq!(served(&d, "encoded"), 2);
    assert_eq!(served(&d, "mirrored"), 1);

    let bad = screenshot(&d, &domain, &[("Fresh", "maybe")]);
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["Code"], "InvalidParameter");
}

#[test]
fn a_domain_without_vnc_keeps_the_stable_path() {
    let _lock = LibvirtdLock::shared();
    fixtures::up();
    let d = daemon();
    for _ in 0..2 {
        let reply = screenshot(&d, NO_VIDEO, &[]);
        assert_eq!(reply.status, 405, "{}", reply.text());
        assert_eq!(reply.json()["Code"], "NotSupported");
    }
    assert!(d
        .wait_for_log("no VNC mirror", Duration::from_secs(20))
        .is_some());
    assert_eq!(metric(&d, "vmshot_vnc_mirrors"), 0);
}

#[test]
fn a_change_on_screen_reaches_the_mirror_within_the_refresh_bound() {
    let _lock = LibvirtdLock::shared();
    fixtures::up();
    let d = daemon();
    fixtures::wait_for_blanked_console();
    image_of(&screenshot(&d, BLANK, &[]));
    assert!(d
        .wait_for_log("VNC mirror synced", Duration::from_secs(20))
        .is_some());
    // The console has been black for a while: QEMU's VNC refresh has backed
    // off towards its 3 s ceiling, the worst case for freshness.
    std::thread::sleep(Duration::from_secs(3));
    let (_, dark) = image_of(&screenshot(&d, BLANK, &[]));
    assert!(blue_share(&dark) < 0.01);
    assert!(served(&d, "mirrored") >= 1, "{}", d.logs());

    // A key press (not WakeUp, which asks QEMU directly) redraws the banner.
    virsh(&["send-key", BLANK, "KEY_LEFTSHIFT"]);
    let pressed = Instant::now();
    loop {
        let (_, img) = image_of(&screenshot(&d, BLANK, &[]));
        if blue_share(&img) > 0.8 {
            break;
        }
        assert!(
            pressed.elapsed() < Duration::from_millis(3500),
            "the banner has not reached the mirror after {:?}",
            pressed.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("the redraw reached the mirror in {:?}", pressed.elapsed());
}

#[test]
fn mirrors_stay_within_their_memory_budget() {
    let _lock = LibvirtdLock::shared();
    fixtures::up();
    // 4 MiB: room for one 1024x768 screen (3 MiB), not for a 1920x1080 one too.
    let d = Daemon::start(
        "throttle_interval_secs = 0\n",
        "[capture]\nmirror_memory_mb = 4\n",
    );
    image_of(&screenshot(&d, &PATTERN.domain(), &[]));
    assert!(d
        .wait_for_log("VNC mirror synced", Duration::from_secs(20))
        .is_some());
    // The 1080p guest carries this instance id in its metadata, and answers to it alone.
    let big = "i-vmshotfx-meta-1080";
    image_of(&screenshot(&d, big, &[]));
    // No mirror is even opened for it: the one held leaves no room for a
    // screen its size (one opened anyway would be closed once synced).
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(metric(&d, "vmshot_vnc_mirrors"), 1);
    // The big screen is still served, by screenshots.
    let (_, img) = image_of(&screenshot(&d, big, &[]));
    assert!(shows_pattern(&img, 6.0));
    assert_eq!(served(&d, "mirrored"), 0, "{}", d.logs());
}
