//! Serial console output, read from the log libvirt declares for a domain:
//! through both official Alibaba SDKs (GetInstanceConsoleOutput) and boto3
//! (GetConsoleOutput), novaclient and openstacksdk (os-getConsoleOutput),
//! byte for byte against the fixture's log file, and
//! through `vmshot console`, whose `--follow` prints what a guest writes
//! after it started; and across virtlogd's rollover of a real log.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;

use common::daemon::{Daemon, KEY_ID, SECRET};
use common::events_guest::EventsGuest;
use common::fixtures::{self, fixtures_dir, KERNEL_PANIC};
use common::host::LibvirtdLock;
use common::nova::{section, Token};
use common::owned::Owned;
use common::sdk::{
    get_console_screenshot, get_instance_console_output, nova_console, nova_line, AwsMode, Sdk,
};

const KEY: (&str, &str) = (KEY_ID, SECRET);
/// What the Alibaba dialect returns at most.
const ALIBABA_BYTES: usize = 64 * 1024;

/// The kernel-panic fixture's serial log: the kernel's boot and its panic,
/// then nothing more (panic=0 halts).
fn panic_log() -> Vec<u8> {
    std::fs::read(fixtures_dir().join("run/panic-serial.log")).unwrap()
}

fn tail(bytes: &[u8], n: usize) -> &[u8] {
    &bytes[bytes.len().saturating_sub(n)..]
}

fn decoded(reply: &Value) -> Vec<u8> {
    assert_eq!(reply["ok"], true, "{reply}");
    base64::engine::general_purpose::STANDARD
        .decode(reply["console_output"].as_str().unwrap())
        .expect("base64")
}

#[test]
fn both_sdks_read_the_serial_log_as_it_is_on_disk() {
    let _lock = LibvirtdLock::shared();
    fixtures::up();
    let log = panic_log();
    assert!(
        String::from_utf8_lossy(&log).contains("Kernel panic - not syncing"),
        "the fixture's log holds its panic"
    );
    let map = format!(
        "\n[alibaba.instances]\n\"i-panic\" = \"{}\"\n",
        KERNEL_PANIC.domain()
    );
    let d = Daemon::start(&map, "");
    for sdk in [Sdk::Classic, Sdk::Tea] {
        let reply = get_instance_console_output(sdk, &d.endpoint(), KEY, "i-panic", &[]);
        assert_eq!(reply["instance_id"], "i-panic", "{reply}");
        assert!(
            decoded(&reply) == tail(&log, ALIBABA_BYTES),
            "{sdk:?}: not the log's end"
        );
        // As ECS writes it: Beijing time, to the second, the log's mtime.
        let written = std::fs::metadata(fixtures_dir().join("run/panic-serial.log"))
            .unwrap()
            .modified()
            .unwrap();
        let beijing = time::OffsetDateTime::from(written).to_offset(time::macros::offset!(+8));
        let format =
            time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
        assert_eq!(
            reply["last_update_time"],
            beijing.format(&format).unwrap(),
            "{reply}"
        );

        // RemoveSymbols: the kernel's \r\n become \n, nothing else changes.
        let clean = get_instance_console_output(
            sdk,
            &d.endpoint(),
            KEY,
            "i-panic",
            &["--remove-symbols", "true"],
        );
        let want: Vec<u8> = tail(&log, ALIBABA_BYTES)
            .iter()
            .copied()
            .filter(|b| *b != b'\r')
            .collect();
        assert!(!log.contains(&0x1b), "the fixture writes no escapes");
        assert!(decoded(&clean) == want, "{sdk:?}: RemoveSymbols");
    }
}

#[test]
fn a_domain_without_a_serial_log_is_not_supported_and_says_how_to_add_one() {
    let _lock = LibvirtdLock::shared();
    common::host::ensure_libvirtd();
    let guest = Owned::define(
        &format!("vmshot-console-nolog-{}", std::process::id()),
        "0000000000004000800000000000c0de",
        None,
    );
    let map = format!("\n[alibaba.instances]\n\"i-nolog\" = \"{}\"\n", guest.name);
    let d = Daemon::start(&map, "");
    for sdk in [Sdk::Classic, Sdk::Tea] {
        let reply = get_instance_console_output(sdk, &d.endpoint(), KEY, "i-nolog", &[]);
        assert_eq!(
            (
                reply["ok"].clone(),
                reply["code"].clone(),
                reply["http_status"].clone()
            ),
            (false.into(), "NotSupported".into(), 405.into()),
            "{reply}"
        );
        assert!(
            !reply.to_string().contains("/var/"),
            "no host path: {reply}"
        );
    }
    let out = vmshot_console(&[&guest.name]);
    assert_eq!(out.status.code(), Some(11), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("virsh edit {}", guest.name)) && stderr.contains("<log file="),
        "{stderr}"
    );
}

fn vmshot_console(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vmshot"))
        .arg("console")
        .args(["--connect", &common::host::uri()])
        .args(args)
        .output()
        .expect("vmshot runs")
}

#[test]
fn the_cli_prints_the_last_lines_without_carriage_returns() {
    let _lock = LibvirtdLock::shared();
    fixtures::up();
    let log: Vec<u8> = panic_log().into_iter().filter(|b| *b != b'\r').collect();
    let text = String::from_utf8_lossy(&log);
    let last5: Vec<&str> = text.lines().rev().take(5).collect::<Vec<_>>();
    let last5 = last5.into_iter().rev().collect::<Vec<_>>().join("\n") + "\n";
    let out = vmshot_console(&[&KERNEL_PANIC.domain(), "--lines", "5"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), last5);
    let raw = vmshot_console(&[&KERNEL_PANIC.domain(), "--raw", "--bytes", "1000"]);
    assert!(raw.status.success(), "{raw:?}");
    assert!(raw.stdout == tail(&panic_log(), 1000), "--raw --bytes 1000");
}

/// `vmshot console DOMAIN --follow ARGS…`, its output sent in chunks to the
/// receiver as it comes. Killed when dropped.
struct Follower {
    child: std::process::Child,
    chunks: std::sync::mpsc::Receiver<Vec<u8>>,
    seen: Vec<u8>,
}

impl Follower {
    fn start(domain: &str, args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vmshot"))
            .args(["console", "--connect", &common::host::uri(), domain])
            .args(args)
            .arg("--follow")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("vmshot runs");
        let mut stdout = child.stdout.take().unwrap();
        let (tx, chunks) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            chunks,
            seen: Vec::new(),
        }
    }

    /// Everything printed until it has been quiet for `quiet`.
    fn drain(&mut self, quiet: Duration) {
        while let Ok(chunk) = self.chunks.recv_timeout(quiet) {
            self.seen.extend(chunk);
        }
    }

    /// Reads until what was printed contains `text`; panics with `context()`
    /// after `limit`.
    fn wait_for(&mut self, text: &str, limit: Duration, context: impl Fn() -> String) {
        let start = Instant::now();
        while !String::from_utf8_lossy(&self.seen).contains(text) {
            assert!(
                start.elapsed() < limit,
                "no {text:?} after {limit:?}; followed output: {}\n{}",
                String::from_utf8_lossy(tail(&self.seen, 4096)),
                context()
            );
            if let Ok(chunk) = self.chunks.recv_timeout(Duration::from_millis(200)) {
                self.seen.extend(chunk);
            }
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn follow_prints_what_the_guest_writes_next() {
    let _lock = LibvirtdLock::shared();
    let guest = EventsGuest::define("console-follow", "");
    guest.start();
    guest.wait_ready(1, Duration::from_secs(120));
    let mut follower = Follower::start(&guest.name, &["--lines", "0"]);
    // Nothing yet: --lines 0 prints none of what was written before.
    follower.drain(Duration::from_millis(1500));
    assert!(
        follower.seen.is_empty(),
        "{}",
        String::from_utf8_lossy(&follower.seen)
    );
    // A reboot: the guest's next boot writes its banner line again.
    guest.key("KEY_R");
    follower.wait_for("vmshot-fixture: events:", Duration::from_secs(120), || {
        format!("serial log: {}", guest.serial_log())
    });
    assert!(
        !follower.seen.contains(&b'\r'),
        "escapes and \\r are removed by default"
    );
}

/// The numbers of the fixture's flood lines ("vmshot-flood 0000042 ....") in
/// `text`, in order, each checked to be whole.
fn flood_lines(text: &[u8]) -> Vec<u32> {
    String::from_utf8_lossy(text)
        .lines()
        .filter(|l| l.starts_with("vmshot-flood "))
        .map(|l| {
            assert_eq!(l.len(), 63, "a whole flood line: {l:?}");
            l[13..20].parse().expect("a flood line's number")
        })
        .collect()
}

/// A guest writes 2 MiB past its boot to a pty whose log virtlogd keeps:
/// virtlogd rolls it over (the log moves to `.0`, a new one starts), and
/// `vmshot console --follow` still prints every line once and in order, a
/// tail reads back across the two files, and the Alibaba dialect's 64 KiB
/// are the end of both.
#[test]
fn virtlogds_rollover_loses_no_line_for_a_follower_or_a_tail() {
    let _lock = LibvirtdLock::shared();
    const LINES: u32 = 2048 * 1024 / 64;
    let guest = EventsGuest::define_logged("console-roll", "vmshot.flood_kib=2048");
    guest.start();
    guest.wait_ready(1, Duration::from_secs(120));
    // With --lines 1 it prints the log's last line first, so once that is
    // out it is following.
    let mut follower = Follower::start(&guest.name, &["--lines", "1"]);
    follower.wait_for(
        "vmshot-fixture: events:",
        Duration::from_secs(30),
        String::new,
    );
    guest.key("KEY_F");
    let done = format!("vmshot-fixture: flood done: {LINES} lines");
    follower.wait_for(&done, Duration::from_secs(240), || {
        let log = guest.serial_log();
        format!(
            "serial log's end: {}",
            String::from_utf8_lossy(tail(log.as_bytes(), 2048))
        )
    });
    let numbers = flood_lines(&follower.seen);
    assert!(
        numbers.iter().copied().eq(0..LINES),
        "followed: {} flood lines, first gap after {:?}",
        numbers.len(),
        numbers.windows(2).find(|w| w[1] != w[0] + 1)
    );

    // virtlogd rolled it over: a full backup, and a new log with the rest.
    let backup = std::fs::read(format!("{}.0", guest.serial.display())).expect("a .0 backup");
    let current = std::fs::read(&guest.serial).unwrap();
    assert!(
        backup.len() <= 2 << 20 && backup.len() > (2 << 20) - 4096,
        "virtlogd's 2 MiB backup: {} bytes",
        backup.len()
    );
    assert!(
        !current.is_empty() && current.len() < 1 << 20,
        "what followed the rollover: {} bytes",
        current.len()
    );
    let both = [backup.as_slice(), current.as_slice()].concat();
    assert_eq!(flood_lines(&both), (0..LINES).collect::<Vec<_>>());

    // A tail of 1 MiB is mostly the backup's end, then the new log.
    let out = vmshot_console(&[&guest.name, "--raw", "--bytes", "1048576"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout == tail(&both, 1 << 20),
        "--bytes 1048576 across the rollover"
    );
    let map = format!("\n[alibaba.instances]\n\"i-roll\" = \"{}\"\n", guest.name);
    let d = Daemon::start(&map, "");
    let reply = get_instance_console_output(Sdk::Tea, &d.endpoint(), KEY, "i-roll", &[]);
    assert!(
        decoded(&reply) == tail(&both, ALIBABA_BYTES),
        "the Alibaba dialect's 64 KiB"
    );
}

#[test]
fn boto3_gets_the_console_output_as_ec2_gives_it() {
    let _lock = LibvirtdLock::shared();
    fixtures::up();
    let aws = format!(
        "[aws]\ncredentials_file = \"@KEYS@\"\nregion = \"us-east-1\"\n\n[aws.instances]\n\
         \"i-0a1b2c3d4e5f6aaaa\" = \"{}\"\n",
        KERNEL_PANIC.domain()
    );
    let d = Daemon::start("", &aws);
    let endpoint = format!("{}/ec2", d.endpoint());
    let call = |extra: &[&str]| {
        get_console_screenshot(
            AwsMode::ConsoleOutput,
            &endpoint,
            KEY,
            "us-east-1",
            "i-0a1b2c3d4e5f6aaaa",
            extra,
        )
    };
    let log = panic_log();
    for latest in [&[][..], &["--latest", "true"]] {
        let reply = call(latest);
        assert_eq!(reply["ok"], true, "{reply}");
        assert_eq!(reply["instance_id"], "i-0a1b2c3d4e5f6aaaa");
        // boto3 decoded the base64 itself, as UTF-8 with replacement.
        assert_eq!(
            reply["output"].as_str().unwrap(),
            String::from_utf8_lossy(tail(&log, 64 * 1024))
        );
        assert!(reply["timestamp"].as_str().is_some(), "{reply}");
    }
    let unknown = get_console_screenshot(
        AwsMode::ConsoleOutput,
        &endpoint,
        KEY,
        "us-east-1",
        "i-0a1b2c3d4e5f6ffff",
        &[],
    );
    assert_eq!(
        unknown["error_code"], "InvalidInstanceID.NotFound",
        "{unknown}"
    );
}

/// What Nova returns for a log: its last `length` pieces split on `\n`,
/// non-ASCII bytes as U+FFFD, controls other than tab and newline removed.
fn as_nova(log: &[u8], length: Option<usize>) -> String {
    let text: String = log
        .iter()
        .filter(|b| !matches!(b, 0x00..=0x08 | 0x0b..=0x1f))
        .map(|&b| if b.is_ascii() { b as char } else { '\u{fffd}' })
        .collect();
    match length {
        None => text,
        Some(n) => {
            let pieces: Vec<&str> = text.split('\n').collect();
            pieces[pieces.len().saturating_sub(n)..].join("\n")
        }
    }
}

#[test]
fn novaclient_and_openstacksdk_read_the_console_log_as_nova_gives_it() {
    let _lock = LibvirtdLock::shared();
    fixtures::up();
    let dir = fixtures::tempdir();
    let admin = "nova-console-token-admin-0001";
    let member = "nova-console-token-member-001";
    let nova = section(
        &dir,
        &[
            Token {
                id: admin,
                user: "operator",
                project: "0f5a0f5a",
                roles: &["admin"],
                expires: None,
            },
            Token {
                id: member,
                user: "alice",
                project: "0a0a0a0a",
                roles: &["member"],
                expires: None,
            },
        ],
    );
    let d = Daemon::start("", &nova);
    let compute = format!("http://{}/compute", d.addr);
    let server = common::host::virsh(&["domuuid", &KERNEL_PANIC.domain()])
        .trim()
        .to_owned();
    let log = panic_log();
    let last = &log[log.len().saturating_sub(100 * 1024)..];
    for (length, want) in [("all", as_nova(last, None)), ("5", as_nova(last, Some(5)))] {
        let lines = nova_console(&compute, admin, "0f5a0f5a", &server, length);
        for sdk in ["novaclient", "openstacksdk"] {
            let got = nova_line(&lines, sdk, "console");
            assert_eq!(
                got["output"].as_str(),
                Some(want.as_str()),
                "{sdk} --length {length}"
            );
        }
    }
    // Another tenant's server is not found, as in Nova.
    let lines = nova_console(&compute, member, "0a0a0a0a", &server, "all");
    for sdk in ["novaclient", "openstacksdk"] {
        let line = lines.iter().find(|l| l["sdk"] == sdk).unwrap();
        assert!(line["error"].is_string(), "{sdk}: {line}");
        assert!(
            line["message"]
                .as_str()
                .unwrap()
                .contains("could not be found"),
            "{line}"
        );
    }
}
