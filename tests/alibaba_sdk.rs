//! Alibaba's official SDKs, unchanged but for the endpoint, against the real
//! daemon, the real libvirtd and the fixture guests.

mod common;

use base64::Engine;
use common::daemon::{Daemon, KEY_ID, LIMITED_KEY_ID, LIMITED_SECRET, SECRET};
use common::fixtures::{self, shows_pattern, NO_VIDEO, PATTERN, PATTERN_1080, SHUT_OFF};
use common::host::LibvirtdLock;
use common::image_check::{decode_rgb, psnr};
use common::sdk::{get_instance_screenshot, Sdk};
use serde_json::Value;

const KEY: (&str, &str) = (KEY_ID, SECRET);

/// A daemon whose InstanceIds map onto the fixtures. The interval is per
/// guest, whatever id names it: a test that calls twice calls two guests.
fn daemon() -> Daemon {
    let mut map = String::from("\n[alibaba.instances]\n");
    for (id, domain) in [
        ("i-pattern-classic", PATTERN.domain()),
        ("i-pattern-xml", PATTERN_1080.domain()),
        ("i-pattern-1080-tea", PATTERN_1080.domain()),
        ("i-throttle-classic", PATTERN.domain()),
        ("i-throttle-tea", PATTERN_1080.domain()),
        ("i-stopped", SHUT_OFF.to_owned()),
        ("i-novideo", NO_VIDEO.to_owned()),
    ] {
        map += &format!("\"{id}\" = \"{domain}\"\n");
    }
    Daemon::start(&map, "")
}

fn setup() -> (LibvirtdLock, Daemon) {
    let lock = LibvirtdLock::shared();
    fixtures::up();
    (lock, daemon())
}

/// A successful reply's screenshot, checked against libvirt's own.
fn check_screenshot(reply: &Value, instance: &str, screen: fixtures::Screen) {
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["instance_id"], instance);
    assert_eq!(
        reply["request_id"].as_str().map(str::len),
        Some(36),
        "{reply}"
    );
    let jpeg = base64::engine::general_purpose::STANDARD
        .decode(reply["screenshot_b64"].as_str().unwrap())
        .expect("base64");
    assert!(jpeg.starts_with(&[0xff, 0xd8, 0xff]), "a JPEG");
    let img = decode_rgb(&jpeg);
    assert_eq!(img.dimensions(), (screen.width, screen.height));
    assert!(shows_pattern(&img, 6.0), "the pattern's colours");
    let reference = decode_rgb(&fixtures::libvirt_screenshot(&screen.domain()));
    assert!(psnr(&reference, &img) >= 30.0);
}

fn assert_code(reply: &Value, code: &str, status: u16) {
    assert_eq!(reply["ok"], false, "{reply}");
    assert_eq!(reply["code"], code, "{reply}");
    assert_eq!(reply["http_status"], status, "{reply}");
    assert!(
        reply["request_id"]
            .as_str()
            .is_some_and(|id| id.len() == 36),
        "{reply}"
    );
}

#[test]
fn the_classic_sdk_gets_the_guests_screen() {
    let (_lock, d) = setup();
    let reply = get_instance_screenshot(Sdk::Classic, &d.endpoint(), KEY, "i-pattern-classic", &[]);
    check_screenshot(&reply, "i-pattern-classic", PATTERN);
    let xml = get_instance_screenshot(
        Sdk::Classic,
        &d.endpoint(),
        KEY,
        "i-pattern-xml",
        &["--format", "XML"],
    );
    check_screenshot(&xml, "i-pattern-xml", PATTERN_1080);
}

#[test]
fn the_tea_sdk_gets_the_guests_screen() {
    let (_lock, d) = setup();
    let reply = get_instance_screenshot(
        Sdk::Tea,
        &d.endpoint(),
        KEY,
        "i-pattern-1080-tea",
        &["--wakeup", "false"],
    );
    check_screenshot(&reply, "i-pattern-1080-tea", PATTERN_1080);
}

#[test]
fn instance_ids_resolve_by_metadata_and_by_uuid() {
    let (_lock, d) = setup();
    // fixtures/domains/pattern-1080.xml carries this id in its metadata.
    let reply = get_instance_screenshot(Sdk::Tea, &d.endpoint(), KEY, "i-vmshotfx-meta-1080", &[]);
    check_screenshot(&reply, "i-vmshotfx-meta-1080", PATTERN_1080);
    let uuid = common::host::virsh(&["domuuid", &PATTERN.domain()])
        .trim()
        .to_owned();
    // A guest with an instance id answers to that id alone...
    let reply = get_instance_screenshot(Sdk::Classic, &d.endpoint(), KEY, &uuid, &[]);
    assert_code(&reply, "InvalidParameter", 404);
    // ... and one without answers to its UUID.
    let bare = Daemon::start("", "");
    let reply = get_instance_screenshot(Sdk::Classic, &bare.endpoint(), KEY, &uuid, &[]);
    check_screenshot(&reply, &uuid, PATTERN);
}

#[test]
fn documented_errors_reach_both_sdks_with_their_codes() {
    let (_lock, d) = setup();
    for sdk in [Sdk::Classic, Sdk::Tea] {
        let call =
            |key, instance: &str| get_instance_screenshot(sdk, &d.endpoint(), key, instance, &[]);
        assert_code(&call(KEY, "i-does-not-exist"), "InvalidParameter", 404);
        assert_code(&call(KEY, ""), "MissingParameter", 400);
        assert_code(&call(KEY, "i-stopped"), "IncorrectInstanceStatus", 405);
        assert_code(&call(KEY, "i-novideo"), "NotSupported", 405);
        let throttled = format!("i-throttle-{}", sdk.name());
        assert_eq!(call(KEY, &throttled)["ok"], true, "{sdk:?}: first call");
        assert_code(&call(KEY, &throttled), "Throttling", 400);
    }
}

#[test]
fn authentication_failures_reach_both_sdks_with_their_codes() {
    let (_lock, d) = setup();
    for sdk in [Sdk::Classic, Sdk::Tea] {
        let call =
            |key, instance: &str| get_instance_screenshot(sdk, &d.endpoint(), key, instance, &[]);
        assert_code(
            &call(("LTAI-unknown", SECRET), "i-pattern-classic"),
            "InvalidAccessKeyId.NotFound",
            404,
        );
        assert_code(
            &call((LIMITED_KEY_ID, LIMITED_SECRET), "i-pattern-classic"),
            "InvalidParameter",
            404,
        );
        let wrong = call((KEY_ID, "wrong-secret"), "i-pattern-classic");
        // The classic SDK recognises its own string to sign in Alibaba's
        // message and reports a wrong secret as such.
        let expected = match sdk {
            Sdk::Classic => "InvalidAccessKeySecret",
            Sdk::Tea => "SignatureDoesNotMatch",
        };
        assert_code(&wrong, expected, 400);
    }
}
