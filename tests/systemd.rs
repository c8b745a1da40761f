//! The systemd unit, `systemd/vmshot.service`, as systemd itself reads it:
//! `systemd-analyze verify` must accept it without a word about it, its
//! sandbox must keep scoring as it does, and the directives the daemon relies
//! on must be there.
//!
//! These tests need `systemd-analyze` (Debian package `systemd`) but no running
//! systemd and no `vmshot` user. Without it they fail rather than skip: a unit
//! that nobody checked would otherwise look like one that passed.
//!
//! The last test plays systemd's part of the notify protocol against a real
//! `vmshot serve` (which needs libvirtd, like the other integration tests).

use std::ffi::OsStr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const UNIT: &str = include_str!("../systemd/vmshot.service");
// Where the Debian package puts the binary, and the manual install too.
const EXEC_START: &str = "/usr/bin/vmshot serve --config /etc/vmshot/vmshot.toml";

/// `systemd-analyze` with its arguments, or a failure that says what to install.
fn systemd_analyze(args: &[&str]) -> Output {
    Command::new("systemd-analyze")
        .args(args)
        .env("SYSTEMD_LOG_COLOR", "0")
        .env("SYSTEMD_COLORS", "0")
        .env("SYSTEMD_PAGER", "")
        .output()
        .unwrap_or_else(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                panic!(
                    "systemd-analyze is not installed: install the Debian package `systemd` \
                     (apt-get install systemd; CI does). These tests check the unit file \
                     and do not skip."
                )
            }
            panic!("cannot run systemd-analyze: {e}")
        })
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A directory of its own for one copy of the unit, removed on drop.
struct TempUnit {
    dir: PathBuf,
    path: PathBuf,
}

impl TempUnit {
    /// Writes `unit` as `vmshot.service` (the name is the unit's name) with
    /// ExecStart= pointing at the binary cargo built: verify insists that the
    /// command exists, and the tests must not install into /usr/local/bin.
    fn new(tag: &str, unit: &str) -> TempUnit {
        let dir =
            std::env::temp_dir().join(format!("vmshot-systemd-test-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vmshot.service");
        std::fs::write(&path, with_built_binary(unit)).unwrap();
        TempUnit { dir, path }
    }

    fn path(&self) -> &str {
        self.path.to_str().expect("temporary path is UTF-8")
    }
}

impl Drop for TempUnit {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn with_built_binary(unit: &str) -> String {
    let binary = Path::new(env!("CARGO_BIN_EXE_vmshot"));
    assert!(binary.is_file(), "{} is missing", binary.display());
    let installed = format!("ExecStart={EXEC_START}");
    assert_eq!(
        unit.lines().filter(|l| *l == installed).count(),
        1,
        "the unit must have exactly one `{installed}` line"
    );
    // Quoted: systemd splits an unquoted command line at spaces.
    let built = format!(
        "ExecStart=\"{}\" serve --config /etc/vmshot/vmshot.toml",
        binary.display()
    );
    unit.replace(&installed, &built)
}

/// Runs `systemd-analyze verify` on `unit` and returns its output when it
/// fails or says anything about vmshot. Warnings such as an unknown key leave
/// the exit status at 0, so the output is what tells. Lines about other units
/// (libvirtd.service on a host with a broken one) are not ours to judge, and
/// `--recursive-errors=no` keeps them out of the exit status too.
fn verify(tag: &str, unit: &str) -> Result<(), String> {
    let copy = TempUnit::new(tag, unit);
    let output = systemd_analyze(&["verify", "--recursive-errors=no", copy.path()]);
    let all = text(&output);
    let ours: Vec<&str> = all.lines().filter(|l| l.contains("vmshot")).collect();
    if output.status.success() && ours.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "systemd-analyze verify {} exited with {}; it said:\n{all}",
            copy.path(),
            output.status
        ))
    }
}

#[test]
fn systemd_analyze_verify_accepts_the_unit_silently() {
    if let Err(report) = verify("verify", UNIT) {
        panic!("{report}");
    }
}

/// `verify` exits 0 on an unknown key: make sure this test's reading of its
/// output catches one, or the test above could pass on anything.
#[test]
fn verify_check_catches_a_misspelt_directive() {
    let typo = UNIT.replace("ProtectClock=yes", "ProtectClok=yes");
    assert_ne!(typo, UNIT);
    let report = verify("typo", &typo).expect_err("a misspelt directive went unnoticed");
    assert!(report.contains("ProtectClok"), "{report}");
}

/// `systemd-analyze security` scores what a compromised vmshot could still do
/// (0 = nothing, 10 = everything); the unit scores 1.7 ("OK") with systemd 252
/// (1.4 before CAP_DAC_READ_SEARCH, which reads guests' serial logs).
/// A higher score means some hardening was lost.
#[test]
fn sandbox_exposure_stays_low() {
    let copy = TempUnit::new("security", UNIT);
    let output = systemd_analyze(&["security", "--offline=true", "--no-pager", copy.path()]);
    let all = text(&output);
    let score: f64 = all
        .lines()
        .find_map(|l| l.split("Overall exposure level for vmshot.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in:\n{all}"));
    assert!(score <= 1.7, "exposure {score} > 1.7:\n{all}");
}

/// `(section, key, value)` for every assignment, in order.
fn directives(unit: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
        } else if let Some((key, value)) = line.split_once('=') {
            out.push((
                section.clone(),
                key.trim().to_owned(),
                value.trim().to_owned(),
            ));
        }
    }
    out
}

#[test]
fn the_directives_vmshot_relies_on_are_there() {
    let all = directives(UNIT);
    let has = |section: &str, key: &str, value: &str| {
        all.iter()
            .any(|(s, k, v)| s == section && k == key && v == value)
    };
    let expected = [
        // READY=1, STOPPING=1 and the watchdog (src/daemon/notify.rs).
        ("Service", "Type", "notify"),
        ("Service", "NotifyAccess", "main"),
        ("Service", "WatchdogSec", "30s"),
        ("Service", "Restart", "on-failure"),
        ("Service", "ExecStart", EXEC_START),
        // Its own user, with a way into libvirtd.
        ("Service", "User", "vmshot"),
        ("Service", "Group", "vmshot"),
        ("Service", "SupplementaryGroups", "libvirt"),
        // The sandbox.
        ("Service", "ProtectSystem", "strict"),
        ("Service", "NoNewPrivileges", "yes"),
        // One capability, to read virtlogd's root-only logs, and the secrets
        // it would otherwise open up hidden.
        ("Service", "CapabilityBoundingSet", "CAP_DAC_READ_SEARCH"),
        ("Service", "AmbientCapabilities", "CAP_DAC_READ_SEARCH"),
        (
            "Service",
            "InaccessiblePaths",
            "-/etc/libvirt -/var/lib/libvirt",
        ),
        ("Service", "SystemCallFilter", "@system-service"),
        // libnuma (through libvirt.so) calls it before main(): without it the
        // syscall filter kills vmshot at every start.
        ("Service", "SystemCallFilter", "set_mempolicy"),
        // The OCR child's nice 10 (src/diagnose/ocr.rs).
        ("Service", "SystemCallFilter", "setpriority"),
        ("Install", "WantedBy", "multi-user.target"),
    ];
    let missing: Vec<String> = expected
        .iter()
        .filter(|(s, k, v)| !has(s, k, v))
        .map(|(s, k, v)| format!("[{s}] {k}={v}"))
        .collect();
    assert!(missing.is_empty(), "missing from the unit: {missing:?}");

    // Later SystemCallFilter= lines edit the set the earlier ones made: the
    // exception only counts after the exclusion. (@privileged also holds
    // open_by_handle_at, with which CAP_DAC_READ_SEARCH would reach files the
    // mount namespace hides.)
    let filters: Vec<&str> = all
        .iter()
        .filter(|(s, k, _)| s == "Service" && k == "SystemCallFilter")
        .map(|(_, _, v)| v.as_str())
        .collect();
    let position = |v: &str| filters.iter().position(|f| *f == v);
    for allowed in ["set_mempolicy", "setpriority"] {
        match (position("~@privileged @resources"), position(allowed)) {
            (Some(exclusion), Some(exception)) if exclusion < exception => {}
            _ => panic!("{allowed} must be allowed after @resources is excluded: {filters:?}"),
        }
    }
}

/// Kills the daemon if a test fails before stopping it.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The next datagram equal to `want` within `limit`, and what came before it.
fn wait_for(
    socket: &UnixDatagram,
    want: &str,
    limit: Duration,
) -> Result<Vec<String>, Vec<String>> {
    let deadline = Instant::now() + limit;
    let mut before = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(before);
        }
        socket.set_read_timeout(Some(left)).unwrap();
        match socket.recv(&mut buf) {
            Ok(n) => {
                let got = String::from_utf8_lossy(&buf[..n]).into_owned();
                if got == want {
                    return Ok(before);
                }
                before.push(got);
            }
            Err(_) => return Err(before),
        }
    }
}

/// `vmshot serve` with `NOTIFY_SOCKET=notify_socket` and a one-second
/// watchdog, its config and stderr in `copy`'s directory.
fn serve(copy: &TempUnit, notify_socket: &OsStr, uri: &str) -> (Serve, PathBuf) {
    let config = copy.dir.join("vmshot.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[libvirt]\nuri = \"{uri}\"\n\n\
             # No dialect section: no dialect, the daemon still runs.\n"
        ),
    )
    .unwrap();
    let log = copy.dir.join("stderr");
    let serve = Serve(
        Command::new(env!("CARGO_BIN_EXE_vmshot"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("NOTIFY_SOCKET", notify_socket)
            // One second: a ping every half second. No WATCHDOG_PID: absent
            // means "for whoever reads it", as when systemd runs vmshot itself.
            .env("WATCHDOG_USEC", "1000000")
            .env_remove("WATCHDOG_PID")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("vmshot serve starts"),
    );
    (serve, log)
}

fn test_uri() -> String {
    std::env::var("VMSHOT_TEST_URI").unwrap_or_else(|_| "qemu:///system".into())
}

/// SIGTERM, then STOPPING=1 (after nothing but datagrams that start with
/// `meanwhile`) and a clean exit within the grace period.
fn stop(mut serve: Serve, systemd: &UnixDatagram, meanwhile: &str, logs: impl Fn() -> String) {
    let pid = serve.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    match wait_for(systemd, "STOPPING=1\n", Duration::from_secs(10)) {
        Ok(before) => assert!(
            before.iter().all(|d| d.starts_with(meanwhile)),
            "before STOPPING=1: {before:?}"
        ),
        Err(got) => panic!(
            "no STOPPING=1 after SIGTERM (got {got:?}); vmshot said:\n{}",
            logs()
        ),
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = serve.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running 30 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}; vmshot said:\n{}", logs());
}

/// What systemd sees of `vmshot serve` under `Type=notify` and `WatchdogSec=`:
/// exactly `READY=1` once it serves, `WATCHDOG=1` every WATCHDOG_USEC / 2
/// after that (never a gap near the full second that would get it
/// restarted), and `STOPPING=1` when SIGTERM starts the drain, then a clean
/// exit. Each datagram is one state and its newline, as sd_notify(3) sends.
fn speaks_the_notify_protocol(copy: &TempUnit, systemd: &UnixDatagram, notify_socket: &OsStr) {
    let (serve, log) = serve(copy, notify_socket, &test_uri());
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();

    let before = wait_for(systemd, "READY=1\n", Duration::from_secs(30))
        .unwrap_or_else(|got| panic!("no READY=1 (got {got:?}); vmshot said:\n{}", logs()));
    assert!(before.is_empty(), "before READY=1: {before:?}");

    // The feeder starts right after READY=1; its first ping comes at once.
    let mut pings = Vec::new();
    for _ in 0..5 {
        match wait_for(systemd, "WATCHDOG=1\n", Duration::from_secs(3)) {
            Ok(before) => assert!(before.is_empty(), "between pings: {before:?}"),
            Err(got) => panic!("watchdog not fed (got {got:?}); vmshot said:\n{}", logs()),
        }
        pings.push(Instant::now());
    }
    let gaps: Vec<Duration> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    let total: Duration = gaps.iter().sum();
    assert!(
        total >= Duration::from_millis(1800) && total <= Duration::from_millis(2800),
        "4 periods in {total:?}, not ~2 s: {gaps:?}"
    );
    assert!(
        gaps.iter().all(|g| *g < Duration::from_millis(900)),
        "a gap close to WATCHDOG_USEC: {gaps:?}"
    );

    stop(serve, systemd, "WATCHDOG=1\n", logs);
}

#[test]
fn serve_speaks_the_notify_protocol() {
    let copy = TempUnit::new("serve", UNIT);
    let path = copy.dir.join("notify");
    let systemd = UnixDatagram::bind(&path).unwrap();
    speaks_the_notify_protocol(&copy, &systemd, path.as_os_str());
}

/// `NOTIFY_SOCKET=@name` is a socket in the abstract namespace (sd_notify(3)).
#[test]
fn serve_speaks_the_notify_protocol_on_an_abstract_socket() {
    let copy = TempUnit::new("abstract", UNIT);
    let name = format!("vmshot-systemd-test-{}-abstract", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let systemd = UnixDatagram::bind_addr(&addr).unwrap();
    speaks_the_notify_protocol(&copy, &systemd, OsStr::new(&format!("@{name}")));
}

/// While libvirt does not answer, `systemctl status` says so and READY=1
/// (and with it the watchdog) waits; SIGTERM still stops it cleanly.
#[test]
fn serve_says_why_it_is_not_ready() {
    let copy = TempUnit::new("unready", UNIT);
    let path = copy.dir.join("notify");
    let systemd = UnixDatagram::bind(&path).unwrap();
    let uri = format!(
        "qemu+unix:///system?socket={}",
        copy.dir.join("no-libvirtd").display()
    );
    let (serve, log) = serve(&copy, path.as_os_str(), &uri);
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();

    let mut statuses = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut buf = [0u8; 4096];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        systemd
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match systemd.recv(&mut buf) {
            Ok(n) => statuses.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => break,
        }
    }
    assert!(
        statuses.len() >= 2,
        "retries every 0.5 s, then 1 s, each with a STATUS=: {statuses:?}; vmshot said:\n{}",
        logs()
    );
    for status in &statuses {
        let line = status
            .strip_prefix("STATUS=waiting for libvirt: ")
            .and_then(|s| s.strip_suffix('\n'))
            .unwrap_or_else(|| panic!("not a STATUS= line: {status:?}"));
        assert!(!line.contains('\n'), "{status:?}");
    }
    stop(serve, &systemd, "STATUS=waiting for libvirt: ", logs);
}
