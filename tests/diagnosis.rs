//! Boot-hang diagnosis on real guests: fresh copies of the hang fixtures are
//! booted while a daemon watches, and each must reach its verdict, and no
//! other, in `/metrics` (`vmshot_guest_verdict`); the time from `virsh start`
//! to the verdict is printed as a table. Then `vmshot diagnose` must say the
//! same of each, with the lines that decided it and the screen whose SHA-256
//! the evidence names.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use common::cli::vmshot;
use common::daemon::Daemon;
use common::fixtures::{self, fixtures_dir, tempdir, PATTERN};
use common::host::{uri, virsh, LibvirtdLock};
use common::http::send;

/// This test's own copies, apart from the shared fixtures (which keep theirs).
const PREFIX: &str = "vmshot-dx-";

/// Seconds a screen must rest before it is read, and before it is `stuck`:
/// longer than the initramfs guest's 30 s wait for its root device, whose
/// screen does not change while it repeats the same line (it is stuck then,
/// for all a screen can say).
const SETTLE_SECS: u64 = 3;
const STUCK_AFTER_SECS: u64 = 45;

/// The guests booted here, with the verdict each must reach and a phrase of
/// the line that must decide it (empty: none needed). GRUB waits for a key by
/// spinning a host core, and a panicked kernel spins too: those are paused
/// once their verdict is in (their screen stays).
const HANGS: [(&str, &str, &str, bool); 8] = [
    (
        "nobootdev",
        "no_bootable_device",
        "No bootable device",
        false,
    ),
    ("panic", "kernel_panic", "Kernel panic", true),
    ("blank", "blank_screen", "", false),
    ("grub-menu", "bootloader_prompt", "GNU GRUB", true),
    ("grub-rescue", "bootloader_prompt", "grub rescue>", true),
    ("initramfs", "emergency_shell", "Gave up waiting", false),
    ("login", "login_prompt", "login login:", false),
    // Scrolls 20 lines a second forever.
    ("busy", "changing", "", false),
];

/// `fixtures.sh` with this test's prefix and serial-log directory.
fn fixtures_sh(args: &[&str]) {
    let run = fixtures_dir().join("run-dx");
    std::fs::create_dir_all(&run).unwrap();
    let status = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/fixtures.sh"))
        .args(args)
        .env("LIBVIRT_URI", uri())
        .env("VMSHOT_FIXTURES_DIR", fixtures_dir())
        .env("VMSHOT_FIXTURE_PREFIX", PREFIX)
        .env("VMSHOT_FIXTURE_RUNDIR", &run)
        .status()
        .unwrap();
    assert!(status.success(), "fixtures.sh {args:?} failed");
}

/// Removes this test's guests, however it ends.
struct Guests;

impl Drop for Guests {
    fn drop(&mut self) {
        fixtures_sh(&["down"]);
    }
}

/// Each domain's verdict in the daemon's `/metrics`, and its unchanged seconds.
fn verdicts(daemon: &Daemon) -> BTreeMap<String, (String, u64)> {
    let text = send(daemon.addr, "GET", "/metrics", &[], b"").text();
    let mut unchanged = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("vmshot_screen_unchanged_seconds{domain=\"") {
            let (domain, value) = rest.split_once("\"} ").unwrap();
            unchanged.insert(domain.to_owned(), value.parse::<u64>().unwrap());
        }
    }
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("vmshot_guest_verdict{domain=\"") {
            let (domain, rest) = rest.split_once("\",verdict=\"").unwrap();
            let (verdict, value) = rest.split_once("\"} ").unwrap();
            assert_eq!(value, "1", "{line}");
            let seconds = unchanged.get(domain).copied().unwrap_or_default();
            out.insert(domain.to_owned(), (verdict.to_owned(), seconds));
        }
    }
    out
}

#[test]
fn every_hang_reaches_its_verdict_from_boot_and_the_cli_agrees() {
    let _lock = LibvirtdLock::shared();
    // The shared fixtures: their pattern guest (a colour grid, no text) is the
    // screen nothing explains.
    fixtures::up();
    let stuck = PATTERN.domain();
    fixtures_sh(&["build"]);
    let _guests = Guests;
    fixtures_sh(&["down"]);
    let daemon = Daemon::start(
        "",
        &format!(
            "[diagnosis]\nsettle_secs = {SETTLE_SECS}\nstuck_after_secs = {STUCK_AFTER_SECS}\n\
             poll_secs = 2\ncpu_percent = 100\n"
        ),
    );
    daemon.settled();

    let names: Vec<&str> = HANGS.iter().map(|h| h.0).collect();
    let started = Instant::now();
    let mut args = vec!["start"];
    args.extend(&names);
    fixtures_sh(&args);

    // Every verdict each domain showed, and when it first showed the right one.
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut reached: BTreeMap<String, f64> = BTreeMap::new();
    let expected: Vec<(String, &str, bool)> = HANGS
        .iter()
        .map(|(name, verdict, _, park)| (format!("{PREFIX}{name}"), *verdict, *park))
        .chain([(stuck.clone(), "stuck", false)])
        .collect();
    let limit = Duration::from_secs(600);
    while reached.len() < expected.len() {
        assert!(
            started.elapsed() < limit,
            "after {limit:?}, verdicts reached: {reached:?}; seen: {seen:?}"
        );
        let now = verdicts(&daemon);
        for (domain, verdict, park) in &expected {
            let Some((current, _)) = now.get(domain) else {
                continue;
            };
            seen.entry(domain.clone())
                .or_default()
                .insert(current.clone());
            if current == verdict && !reached.contains_key(domain) {
                reached.insert(domain.clone(), started.elapsed().as_secs_f64());
                if *park {
                    virsh(&["suspend", domain]);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }

    // No domain was ever given a verdict but its own (on the way there, every
    // domain is `changing`; the shared pattern guest may be found `stuck`
    // before this test's start).
    for (domain, verdict, _) in &expected {
        let allowed: BTreeSet<String> = [verdict.to_string(), "changing".to_string()].into();
        assert!(
            seen[domain].is_subset(&allowed),
            "{domain}: verdicts seen {:?}, expected only {verdict} (and changing)",
            seen[domain]
        );
    }
    // A busy screen stays `changing`, and its screen keeps changing.
    let now = verdicts(&daemon);
    let busy = &now[&format!("{PREFIX}busy")];
    assert_eq!(busy.0, "changing");
    assert!(
        busy.1 < SETTLE_SECS,
        "the busy screen unchanged for {} s",
        busy.1
    );
    assert!(now[&stuck].1 >= STUCK_AFTER_SECS, "{:?}", now[&stuck]);

    eprintln!("\nverdict table (seconds from `virsh start` to the verdict in /metrics):");
    eprintln!("| domain | verdict | s |");
    for (domain, verdict, _) in &expected {
        eprintln!("| {domain} | {verdict} | {:.1} |", reached[domain]);
    }

    // The CLI watches each screen itself and must agree, with its evidence.
    let dir = tempdir();
    for (name, verdict, phrase, _) in HANGS {
        let domain = format!("{PREFIX}{name}");
        check_cli(&dir, &domain, verdict, phrase);
    }
    check_cli(&dir, &stuck, "stuck", "");
}

fn check_cli(dir: &std::path::Path, domain: &str, verdict: &str, phrase: &str) {
    let shot: PathBuf = dir.join(format!("{domain}.jpg"));
    let run = vmshot(
        dir,
        &[
            "diagnose",
            domain,
            "--json",
            "--screenshot",
            shot.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 0, "{domain}: {}", run.stderr);
    let d: Value = run.json();
    assert_eq!(d["domain"], domain);
    assert_eq!(d["verdict"], verdict, "{domain}: {d}");
    let lines = d["evidence"]["lines"].as_array().unwrap();
    if !phrase.is_empty() {
        assert!(
            lines
                .iter()
                .any(|l| l["text"].as_str().unwrap().contains(phrase)),
            "{domain}: no evidence line with {phrase:?}: {d}"
        );
    }
    if verdict == "changing" {
        return;
    }
    // The screen the verdict was read from: the digest is of these bytes,
    // and they decode.
    let bytes = std::fs::read(&shot).unwrap_or_else(|e| panic!("{domain}: {e}"));
    assert_eq!(
        d["evidence"]["screenshot_sha256"],
        hex::encode(Sha256::digest(&bytes)),
        "{domain}"
    );
    image::load_from_memory(&bytes).unwrap_or_else(|e| panic!("{domain}: {e}"));
    assert_eq!(
        d["evidence"]["blank"],
        verdict == "blank_screen",
        "{domain}: {d}"
    );
}

#[test]
fn diagnose_errors_are_the_clis_own() {
    let _lock = LibvirtdLock::shared();
    fixtures::up();
    let dir = tempdir();
    let cases: [(&[&str], i32, &str); 4] = [
        (&["diagnose", fixtures::SHUT_OFF], 5, "is shut off"),
        (&["diagnose", "vmshot-fx-no-such-domain"], 4, "no domain"),
        // Neither a screen nor a serial log: nothing to judge.
        (
            &["diagnose", fixtures::NO_VIDEO],
            6,
            "has no display device",
        ),
        (
            &["diagnose", "--watch", "1", fixtures::SHUT_OFF],
            2,
            "--watch",
        ),
    ];
    for (args, code, words) in cases {
        let run = vmshot(&dir, args);
        assert_eq!(run.code, code, "{args:?}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{args:?}");
        assert!(
            run.stderr.to_lowercase().contains(words),
            "{args:?}: {words:?} not in {}",
            run.stderr
        );
    }
}
