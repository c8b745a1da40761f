//! `vmshot grab` and `vmshot list` against real QEMU guests under a real
//! libvirtd: what they print and write is checked against libvirt's own
//! screenshot (taken with virsh) and against the known fixture screens.

mod common;

use std::time::{Duration, Instant};

use common::cli::vmshot;
use common::fixtures::{self, tempdir, Screen, NO_VIDEO, PATTERN_COLOURS, SHUT_OFF, STALL};
use common::host::{qemu_pid, virsh, Frozen, LibvirtdLock};
use common::image_check::{decode_rgb, mean_rgb, psnr};
use sha2::{Digest, Sha256};

fn setup() -> LibvirtdLock {
    let lock = LibvirtdLock::shared();
    fixtures::up();
    lock
}

/// Grabs `screen` with vmshot, then takes libvirt's own screenshot, and checks
/// that the two agree and that the JSON line tells the truth about the file.
fn grab_matches_libvirt(screen: Screen) {
    let _lock = setup();
    let dir = tempdir();
    let domain = screen.domain();
    let run = vmshot(&dir, &["grab", &domain, "-o", "shot.jpg"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let reference = decode_rgb(&fixtures::libvirt_screenshot(&domain));

    let line = run.json();
    let file = std::fs::read(dir.join("shot.jpg")).unwrap();
    assert_eq!(line["domain"], domain.as_str());
    assert_eq!(line["uuid"], virsh(&["domuuid", &domain]).trim());
    assert_eq!(line["format"], "jpeg");
    assert_eq!(line["source_format"], "png", "QEMU 7.2 answers in PNG");
    assert_eq!(line["bytes"], file.len());
    assert_eq!(line["sha256"], format!("{:x}", Sha256::digest(&file)));
    assert_eq!(line["file"], "shot.jpg");
    assert!(line["grab_ms"].as_f64().unwrap() > 0.0);
    assert!(line["encode_ms"].as_f64().unwrap() > 0.0);

    let jpeg = decode_rgb(&file);
    assert_eq!(jpeg.dimensions(), (screen.width, screen.height));
    assert_eq!(jpeg.dimensions(), reference.dimensions());
    assert_eq!(
        (line["width"].as_u64(), line["height"].as_u64()),
        (Some(screen.width.into()), Some(screen.height.into()))
    );
    let db = psnr(&reference, &jpeg);
    assert!(
        db >= 30.0,
        "{domain}: PSNR {db:.1} dB against libvirt's screenshot"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn seabios_no_bootable_device_720x400() {
    grab_matches_libvirt(fixtures::NO_BOOT_DEVICE);
}

#[test]
fn kernel_panic_1024x768() {
    grab_matches_libvirt(fixtures::KERNEL_PANIC);
}

#[test]
fn pattern_1024x768() {
    grab_matches_libvirt(fixtures::PATTERN);
}

#[test]
fn pattern_1920x1080() {
    grab_matches_libvirt(fixtures::PATTERN_1080);
}

#[test]
fn pattern_regions_have_their_colours() {
    let _lock = setup();
    for screen in [fixtures::PATTERN, fixtures::PATTERN_1080] {
        let dir = tempdir();
        let run = vmshot(&dir, &["grab", &screen.domain(), "-o", "p.jpg"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let img = decode_rgb(&std::fs::read(dir.join("p.jpg")).unwrap());
        let (w, h) = (screen.width, screen.height);
        for (i, want) in PATTERN_COLOURS.iter().enumerate() {
            let (col, row) = (i as u32 % 4, i as u32 / 4);
            let (x0, y0) = (col * w / 4, row * h / 2);
            let (x1, y1) = (x0 + w / 4, y0 + h / 2);
            // The centre, and 16x16 squares 16 px inside each corner: a shifted,
            // scaled or transposed picture fails at least one of them.
            let probes = [
                ((x0 + x1) / 2, (y0 + y1) / 2),
                (x0 + 24, y0 + 24),
                (x1 - 24, y0 + 24),
                (x0 + 24, y1 - 24),
                (x1 - 24, y1 - 24),
            ];
            for (x, y) in probes {
                let got = mean_rgb(&img, x, y, 16);
                let off = got
                    .iter()
                    .zip(want)
                    .map(|(g, w)| (g - f64::from(*w)).abs())
                    .fold(0.0, f64::max);
                assert!(
                    off <= 6.0,
                    "{} region {i} at ({x},{y}): {got:?}, want {want:?}",
                    screen.name
                );
            }
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn png_output_is_libvirts_screen_exactly() {
    let _lock = setup();
    let dir = tempdir();
    let domain = fixtures::PATTERN.domain();
    let run = vmshot(&dir, &["grab", &domain, "--format", "png", "-o", "p.png"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["format"], "png");
    let ours = decode_rgb(&std::fs::read(dir.join("p.png")).unwrap());
    assert_eq!(ours, decode_rgb(&fixtures::libvirt_screenshot(&domain)));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn quality_and_subsampling_change_the_jpeg() {
    let _lock = setup();
    let dir = tempdir();
    let domain = fixtures::KERNEL_PANIC.domain();
    let size = |args: &[&str]| {
        let run = vmshot(
            &dir,
            &[&["grab", domain.as_str(), "-o", "q.jpg"], args].concat(),
        );
        assert_eq!(run.code, 0, "{}", run.stderr);
        run.json()["bytes"].as_u64().unwrap()
    };
    let (low, high) = (size(&["--quality", "30"]), size(&["--quality", "95"]));
    assert!(
        low * 2 < high,
        "quality 30 gave {low} bytes, 95 gave {high}"
    );
    let gray = size(&["--subsampling", "gray"]);
    let full = size(&["--subsampling", "444"]);
    assert!(gray < full, "gray {gray} bytes, 4:4:4 {full}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn dash_writes_the_image_to_stdout_and_the_line_to_stderr() {
    let _lock = setup();
    let dir = tempdir();
    let run = vmshot(&dir, &["grab", &fixtures::PATTERN.domain(), "-o", "-"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.starts_with(&[0xff, 0xd8, 0xff]),
        "JPEG on stdout"
    );
    let line: serde_json::Value =
        serde_json::from_str(run.stderr.trim()).expect("JSON line on stderr");
    assert_eq!(line["sha256"], format!("{:x}", Sha256::digest(&run.stdout)));
    assert_eq!(line["file"], serde_json::Value::Null);
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "no file written"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn without_output_it_writes_domain_and_utc_time_in_the_current_directory() {
    let _lock = setup();
    let dir = tempdir();
    let domain = fixtures::PATTERN.domain();
    let run = vmshot(&dir, &["grab", &domain]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = &files[0];
    let stamp = name
        .strip_prefix(&format!("{domain}-"))
        .and_then(|s| s.strip_suffix(".jpg"))
        .unwrap();
    assert_eq!(stamp.len(), "20261122T074839Z".len(), "{name}");
    assert!(
        stamp[..8].chars().all(|c| c.is_ascii_digit())
            && &stamp[8..9] == "T"
            && stamp.ends_with('Z'),
        "{name}"
    );
    assert_eq!(run.json()["file"], name.as_str());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_domain_can_be_named_by_uuid() {
    let _lock = setup();
    let dir = tempdir();
    let domain = fixtures::NO_BOOT_DEVICE.domain();
    let uuid = virsh(&["domuuid", &domain]).trim().to_owned();
    let run = vmshot(&dir, &["grab", &uuid, "-o", "u.jpg"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["domain"], domain.as_str());
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs a failing grab; checks exit code, that stderr is one line starting
/// with "vmshot: " and containing `needles`, and that no file was left behind.
fn fails(args: &[&str], code: i32, needles: &[&str]) {
    let dir = tempdir();
    let run = vmshot(&dir, args);
    assert_eq!(run.code, code, "{args:?}: {}", run.stderr);
    assert!(run.stdout.is_empty(), "nothing on stdout");
    assert_eq!(
        run.stderr.lines().count(),
        1,
        "one line on stderr: {:?}",
        run.stderr
    );
    assert!(run.stderr.starts_with("vmshot: "), "{}", run.stderr);
    for needle in needles {
        assert!(
            run.stderr.contains(needle),
            "{args:?}: {:?} lacks {needle:?}",
            run.stderr
        );
    }
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "no file left behind"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn each_failure_has_its_exit_code_and_message() {
    let _lock = setup();
    fails(
        &["grab", SHUT_OFF, "-o", "x.jpg"],
        5,
        &[SHUT_OFF, "is shut off", "virsh start"],
    );
    fails(
        &["grab", NO_VIDEO, "-o", "x.jpg"],
        6,
        &[NO_VIDEO, "no display device"],
    );
    fails(
        &["grab", "vmshot-fx-no-such-domain", "-o", "x.jpg"],
        4,
        &["vmshot-fx-no-such-domain", "vmshot list"],
    );
    let nobootdev = fixtures::NO_BOOT_DEVICE.domain();
    fails(
        &["grab", &nobootdev, "--screen", "1", "-o", "x.jpg"],
        7,
        &[&nobootdev, "no screen 1", "--screen 0"],
    );
    let nowhere = "qemu+unix:///system?socket=/nonexistent/libvirt-sock";
    fails(
        &["grab", "-c", nowhere, &nobootdev, "-o", "x.jpg"],
        3,
        &[nowhere, "libvirtd is running"],
    );
    fails(&["list", "-c", nowhere], 3, &[nowhere]);
    let pattern = fixtures::PATTERN.domain();
    fails(
        &["grab", &pattern, "-o", "no/such/dir/x.jpg"],
        10,
        &["no/such/dir/x.jpg", "-o"],
    );
}

#[test]
fn bad_arguments_are_usage_errors() {
    let dir = tempdir();
    for args in [
        &["grab", "d", "--quality", "0"][..],
        &["grab", "d", "--quality", "101"],
        &["grab", "d", "--format", "gif"],
        &["grab", "d", "--timeout", "-1"],
        &["grab"],
        &["shoot", "d"],
    ] {
        let run = vmshot(&dir, args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
    }
}

#[test]
fn a_hung_qemu_costs_a_timeout_not_a_hang() {
    let _lock = setup();
    let pid = qemu_pid(STALL);
    {
        let _frozen = Frozen::new(pid);
        let started = Instant::now();
        let dir = tempdir();
        let run = vmshot(&dir, &["grab", STALL, "--timeout", "2", "-o", "x.jpg"]);
        assert_eq!(run.code, 8, "{}", run.stderr);
        assert!(
            run.stderr.contains("did not finish within 2.0 s"),
            "{}",
            run.stderr
        );
        assert!(run.stderr.contains(STALL), "{}", run.stderr);
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    }
    // Thawed, the guest answers again.
    let dir = tempdir();
    let run = vmshot(&dir, &["grab", STALL, "-o", "x.jpg"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
}

#[test]
fn list_shows_every_fixture_with_state_and_display() {
    let _lock = setup();
    let dir = tempdir();
    let run = vmshot(&dir, &["list", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let domains: Vec<serde_json::Value> = serde_json::from_slice(&run.stdout).unwrap();
    let find = |name: &str| {
        domains
            .iter()
            .find(|d| d["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed"))
            .clone()
    };
    for screen in fixtures::SCREENS {
        let d = find(&screen.domain());
        // fixtures.sh pauses the panicked kernel, which would spin otherwise.
        let state = if screen.name == "panic" {
            "paused"
        } else {
            "running"
        };
        assert_eq!(d["state"], state, "{}", screen.name);
        assert_eq!(d["screens"], 1);
        assert_eq!(d["uuid"], virsh(&["domuuid", &screen.domain()]).trim());
    }
    assert_eq!(find(SHUT_OFF)["state"], "shutoff");
    assert_eq!(find(NO_VIDEO)["screens"], 0);

    let run = vmshot(&dir, &["list"]);
    assert_eq!(run.code, 0);
    let table = String::from_utf8(run.stdout).unwrap();
    assert!(table.starts_with("NAME"), "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with(NO_VIDEO))
        .expect("novideo row");
    assert!(row.contains("running") && row.contains("none"), "{row}");
    let row = table
        .lines()
        .find(|l| l.starts_with(SHUT_OFF))
        .expect("shutoff row");
    assert!(row.contains("shut off") && row.contains("yes"), "{row}");
}

#[test]
fn the_test_driver_works_for_quick_checks() {
    // libvirt's test driver serves one fixed image: it proves the plumbing, not capture.
    let dir = tempdir();
    let run = vmshot(
        &dir,
        &["grab", "-c", "test:///default", "test", "-o", "t.jpg"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let line = run.json();
    assert_eq!(line["domain"], "test");
    assert_eq!(
        decode_rgb(&std::fs::read(dir.join("t.jpg")).unwrap()).width(),
        line["width"].as_u64().unwrap() as u32
    );
}

#[test]
fn a_special_file_as_output_is_written_to_not_replaced() {
    use std::os::unix::fs::FileTypeExt;
    let _lock = setup();
    let dir = tempdir();
    // A FIFO stands in for /dev/null and the like: renaming a file over it,
    // as root, would have replaced it.
    let fifo = dir.join("out.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    let run = vmshot(
        &dir,
        &["grab", &fixtures::PATTERN.domain(), "-o", "out.fifo"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let bytes = reader.join().unwrap();
    assert!(
        bytes.starts_with(&[0xff, 0xd8, 0xff]),
        "a JPEG came through"
    );
    assert_eq!(
        run.json()["sha256"],
        format!("{:x}", Sha256::digest(&bytes))
    );
    let kind = std::fs::symlink_metadata(&fifo).unwrap().file_type();
    assert!(kind.is_fifo(), "still a FIFO");
}
