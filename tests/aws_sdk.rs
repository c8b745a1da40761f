//! boto3, unchanged but for its `endpoint_url`, calls EC2's
//! GetConsoleScreenshot on the real daemon, the real libvirtd and the fixture
//! guests: the screen, its digest, and each documented error.

mod common;

use sha2::{Digest, Sha256};

use common::daemon::{Daemon, KEY_ID, SECRET};
use common::fixtures::{self, shows_pattern, NO_VIDEO, PATTERN, PATTERN_1080, SHUT_OFF};
use common::host::LibvirtdLock;
use common::image_check::{decode_rgb, psnr};
use common::sdk::{get_console_screenshot, AwsMode};
use serde_json::Value;

const KEY: (&str, &str) = (KEY_ID, SECRET);
const REGION: &str = "us-east-1";

/// A daemon whose EC2 ids map onto the fixtures. The interval is per guest:
/// a test that calls one guest twice expects RequestLimitExceeded.
fn setup() -> (LibvirtdLock, Daemon) {
    let lock = LibvirtdLock::shared();
    fixtures::up();
    let mut aws =
        format!("[aws]\ncredentials_file = \"@KEYS@\"\nregion = \"{REGION}\"\n\n[aws.instances]\n");
    for (id, domain) in [
        ("i-0a1b2c3d4e5f60001", PATTERN.domain()),
        ("i-0a1b2c3d4e5f60002", PATTERN_1080.domain()),
        ("i-stopped", SHUT_OFF.to_owned()),
        ("i-novideo", NO_VIDEO.to_owned()),
    ] {
        aws += &format!("\"{id}\" = \"{domain}\"\n");
    }
    (lock, Daemon::start("", &aws))
}

fn call(d: &Daemon, mode: AwsMode, key: (&str, &str), instance: &str, extra: &[&str]) -> Value {
    let endpoint = format!("{}/ec2", d.endpoint());
    get_console_screenshot(mode, &endpoint, key, REGION, instance, extra)
}

/// A screenshot through boto3 in `mode`, checked against libvirt's own screen,
/// with its digest checked against the bytes three ways: vmshot's
/// `<imageSha256>`, the `X-Vmshot-Sha256` header, and the bytes themselves.
fn check_screenshot(d: &Daemon, mode: AwsMode, instance: &str, screen: fixtures::Screen) {
    let saved = d.dir.join(format!("{instance}.jpg"));
    let reply = call(d, mode, KEY, instance, &["--save", saved.to_str().unwrap()]);
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["http_status"], 200, "{reply}");
    assert_eq!(reply["instance_id"], instance, "{reply}");
    assert_eq!(
        reply["request_id"].as_str().map(str::len),
        Some(36),
        "{reply}"
    );
    let jpeg = std::fs::read(&saved).unwrap();
    assert!(jpeg.starts_with(&[0xff, 0xd8, 0xff]), "a JPEG");
    let digest = hex(&Sha256::digest(&jpeg));
    assert_eq!(reply["sha256"], digest, "{reply}");
    assert_eq!(reply["image_sha256_element"], digest, "{reply}");
    assert_eq!(reply["header_sha256"], digest, "{reply}");
    let img = decode_rgb(&jpeg);
    assert_eq!(img.dimensions(), (screen.width, screen.height));
    assert!(shows_pattern(&img, 6.0), "the pattern's colours");
    let reference = decode_rgb(&fixtures::libvirt_screenshot(&screen.domain()));
    assert!(psnr(&reference, &img) >= 30.0);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn assert_code(reply: &Value, code: &str, status: u16) {
    assert_eq!(reply["ok"], false, "{reply}");
    assert_eq!(reply["error_code"], code, "{reply}");
    assert_eq!(reply["http_status"], status, "{reply}");
    assert!(
        reply["request_id"]
            .as_str()
            .is_some_and(|id| id.len() == 36),
        "{reply}"
    );
}

#[test]
fn boto3_gets_the_guests_screen_signed_either_way() {
    let (_lock, d) = setup();
    check_screenshot(&d, AwsMode::Screenshot, "i-0a1b2c3d4e5f60001", PATTERN);
    check_screenshot(&d, AwsMode::Presigned, "i-0a1b2c3d4e5f60002", PATTERN_1080);
}

#[test]
fn documented_errors_reach_boto3_with_their_codes() {
    let (_lock, d) = setup();
    let screenshot = |key, instance: &str| call(&d, AwsMode::Screenshot, key, instance, &[]);
    let missing = screenshot(KEY, "i-0fffffffffffffff0");
    assert_code(&missing, "InvalidInstanceID.NotFound", 400);
    assert_eq!(
        missing["error_message"],
        "The instance ID 'i-0fffffffffffffff0' does not exist"
    );
    assert_code(
        &screenshot(KEY, "i-bad id!"),
        "InvalidInstanceID.Malformed",
        400,
    );
    assert_code(&screenshot(KEY, "i-stopped"), "IncorrectInstanceState", 400);
    assert_code(&screenshot(KEY, "i-novideo"), "UnsupportedOperation", 400);
    // A dry run answers once the caller may act, and takes no screenshot: the
    // interval is still free for the call after it.
    let dry = call(&d, AwsMode::DryRun, KEY, "i-0a1b2c3d4e5f60001", &[]);
    assert_code(&dry, "DryRunOperation", 412);
    assert_eq!(screenshot(KEY, "i-0a1b2c3d4e5f60001")["ok"], true);
    assert_code(
        &screenshot(KEY, "i-0a1b2c3d4e5f60001"),
        "RequestLimitExceeded",
        503,
    );
    // What boto3's own validation would not send, signed by its own signer.
    let raw = |params: &[&str]| {
        let mut extra = Vec::new();
        for p in params {
            extra.extend(["--param", p]);
        }
        call(&d, AwsMode::Raw, KEY, "-", &extra)
    };
    assert_code(
        &raw(&["Action=GetConsoleScreenshot", "Version=2016-11-15"]),
        "MissingParameter",
        400,
    );
    assert_code(
        &raw(&[
            "Action=RunInstances",
            "Version=2016-11-15",
            "InstanceId=i-1",
        ]),
        "InvalidAction",
        400,
    );
}

#[test]
fn authentication_failures_reach_boto3_with_their_codes() {
    let (_lock, d) = setup();
    let instance = "i-0a1b2c3d4e5f60001";
    let unknown = call(&d, AwsMode::Screenshot, ("AKIDUNKNOWN", "x"), instance, &[]);
    assert_code(&unknown, "AuthFailure", 401);
    let wrong = call(
        &d,
        AwsMode::Screenshot,
        (KEY_ID, "not-the-secret"),
        instance,
        &[],
    );
    assert_code(&wrong, "SignatureDoesNotMatch", 403);
    let late = call(&d, AwsMode::Screenshot, KEY, instance, &["--skew", "-3600"]);
    assert_code(&late, "RequestExpired", 400);
    let expired = call(
        &d,
        AwsMode::Presigned,
        KEY,
        instance,
        &["--expires", "1", "--skew", "-60"],
    );
    assert_code(&expired, "RequestExpired", 400);
    let region = get_console_screenshot(
        AwsMode::Screenshot,
        &format!("{}/ec2", d.endpoint()),
        KEY,
        "eu-west-1",
        instance,
        &[],
    );
    assert_code(&region, "AuthFailure", 401);
    // Signed, rightly, for another host: not to be replayed here.
    let params = ["Action=GetConsoleScreenshot", "Version=2016-11-15"];
    let mut extra = vec!["--host", "vmshot.other-host.example"];
    for p in &params {
        extra.extend(["--param", *p]);
    }
    let elsewhere = call(&d, AwsMode::Raw, KEY, "-", &extra);
    assert_code(&elsewhere, "AuthFailure", 401);
    assert!(
        elsewhere["error_message"]
            .as_str()
            .is_some_and(|m| m.contains("vmshot.other-host.example")),
        "{elsewhere}"
    );
    // None of these took the guest's interval.
    assert_eq!(
        call(&d, AwsMode::Screenshot, KEY, instance, &[])["ok"],
        true
    );
}
