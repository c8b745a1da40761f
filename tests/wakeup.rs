//! WakeUp on guests whose consoles really are dark (fixtures/wake): a console
//! the kernel has blanked, woken by a key press, and a guest suspended to RAM,
//! woken by virDomainPMWakeup. Through both official SDKs and `vmshot grab --wake`.

mod common;

use std::time::Duration;

use base64::Engine;
use image::RgbImage;
use serde_json::Value;

use common::cli::vmshot;
use common::daemon::{Daemon, KEY_ID, SECRET};
use common::fixtures::{self, tempdir, wait_for_blanked_console, BLANK, SUSPEND};
use common::host::{virsh, wait_until, LibvirtdLock};
use common::image_check::{blue_share, decode_rgb, lit_share};
use common::sdk::{get_instance_screenshot, Sdk};

const KEY: (&str, &str) = (KEY_ID, SECRET);

/// Instance ids on the wake fixtures, and no per-instance interval: each test
/// takes several screenshots of one guest in a row.
fn daemon() -> Daemon {
    Daemon::start(
        &format!(
            "throttle_interval_secs = 0\n\n[alibaba.instances]\n\"i-blank\" = \"{BLANK}\"\n\"i-suspend\" = \"{SUSPEND}\"\n"
        ),
        "",
    )
}

fn screenshot_of(reply: &Value) -> RgbImage {
    assert_eq!(reply["ok"], true, "{reply}");
    let jpeg = base64::engine::general_purpose::STANDARD
        .decode(reply["screenshot_b64"].as_str().unwrap())
        .expect("base64");
    let img = decode_rgb(&jpeg);
    assert_eq!(img.dimensions(), (1024, 768));
    img
}

fn state(domain: &str) -> String {
    virsh(&["domstate", domain]).trim().to_owned()
}

/// Brings the suspend guest to `pmsuspended`: once woken it stays awake, so a
/// kept fixture is restarted and waited for.
fn wait_for_suspended_guest() {
    if !matches!(state(SUSPEND).as_str(), "pmsuspended" | "running") {
        panic!("{SUSPEND} is {}", state(SUSPEND));
    }
    let log = fixtures::fixtures_dir().join("run/suspend-serial.log");
    let woken_before = std::fs::read_to_string(&log).is_ok_and(|l| l.contains("resumed"));
    if state(SUSPEND) == "running" && woken_before {
        virsh(&["destroy", SUSPEND]);
        virsh(&["start", SUSPEND]);
    }
    wait_until(
        "the suspend guest is pmsuspended",
        Duration::from_secs(120),
        || state(SUSPEND) == "pmsuspended",
    );
}

#[test]
fn wakeup_redraws_a_blanked_console() {
    let _lock = LibvirtdLock::shared();
    fixtures::up();
    let d = daemon();
    wait_for_blanked_console();

    // Without WakeUp the answer is the truth: a black screen.
    let dark = screenshot_of(&get_instance_screenshot(
        Sdk::Classic,
        &d.endpoint(),
        KEY,
        "i-blank",
        &[],
    ));
    assert!(lit_share(&dark) < 0.01, "lit: {}", lit_share(&dark));

    // With it, a Shift key press redraws the console before the capture.
    let woken = screenshot_of(&get_instance_screenshot(
        Sdk::Classic,
        &d.endpoint(),
        KEY,
        "i-blank",
        &["--wakeup", "true"],
    ));
    assert!(blue_share(&woken) > 0.8, "blue: {}", blue_share(&woken));

    // The same from the command line, once the console has gone dark again.
    wait_for_blanked_console();
    let dir = tempdir();
    let run = vmshot(&dir, &["grab", BLANK, "--wake", "-o", "woken.jpg"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let img = decode_rgb(&std::fs::read(dir.join("woken.jpg")).unwrap());
    assert!(blue_share(&img) > 0.8, "blue: {}", blue_share(&img));
}

#[test]
fn wakeup_resumes_a_guest_suspended_to_ram() {
    let _lock = LibvirtdLock::shared();
    fixtures::up();
    let d = daemon();
    wait_for_suspended_guest();

    // Suspended is not running: both SDKs are told so, with the state named,
    // and the command line says how to wake it.
    for sdk in [Sdk::Classic, Sdk::Tea] {
        let reply = get_instance_screenshot(sdk, &d.endpoint(), KEY, "i-suspend", &[]);
        assert_eq!(reply["ok"], false, "{reply}");
        assert_eq!(reply["code"], "IncorrectInstanceStatus", "{reply}");
        assert_eq!(reply["http_status"], 405, "{reply}");
        let message = reply["server_message"]
            .as_str()
            .or(reply["message"].as_str())
            .unwrap();
        assert!(message.contains("\"Suspended\""), "{reply}");
    }
    let run = vmshot(&tempdir(), &["grab", SUSPEND]);
    assert_eq!(run.code, 5, "{}", run.stderr);
    assert!(
        run.stderr.contains("suspended") && run.stderr.contains("--wake"),
        "{}",
        run.stderr
    );
    assert_eq!(state(SUSPEND), "pmsuspended", "nothing woke it");

    // WakeUp=true wakes it (virDomainPMWakeup), waits for it, and captures
    // the screen it redraws on resume.
    let woken = screenshot_of(&get_instance_screenshot(
        Sdk::Tea,
        &d.endpoint(),
        KEY,
        "i-suspend",
        &["--wakeup", "true"],
    ));
    assert_eq!(state(SUSPEND), "running");
    assert!(blue_share(&woken) > 0.8, "blue: {}", blue_share(&woken));
}
