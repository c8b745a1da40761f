//! What the live page's tests share: guests of their own (by default
//! `vmshot-pg-*`, so that nobody else's fixtures are pressed or recorded),
//! a daemon serving `/ui/` and `/v1/`, and the page's CSRF token.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use super::daemon::Daemon;
use super::host::{ensure_libvirtd, uri, wait_until};
use super::http::send;

/// The guests the page tests bring up (`fixtures/fixtures.sh up NAME…`).
pub const GUESTS: [&str; 4] = ["blank", "pattern", "nobootdev", "shutoff"];

pub fn prefix() -> String {
    std::env::var("VMSHOT_FIXTURE_PREFIX").unwrap_or_else(|_| "vmshot-pg-".into())
}

pub fn guest(name: &str) -> String {
    format!("{}{name}", prefix())
}

/// Their own directory too: serial logs are named without the prefix.
pub fn dir() -> PathBuf {
    std::env::var_os("VMSHOT_FIXTURES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fixtures-page"))
}

/// Brings the guests up once per process (they are left running, as the
/// shared fixtures are; `VMSHOT_FIXTURE_PREFIX=… fixtures.sh down` removes
/// them) and waits for the blank guest's banner.
pub fn up() {
    static UP: OnceLock<()> = OnceLock::new();
    UP.get_or_init(|| {
        ensure_libvirtd();
        std::fs::create_dir_all(dir()).unwrap();
        let status = Command::new("bash")
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/fixtures.sh"))
            .arg("up")
            .args(GUESTS)
            .env("LIBVIRT_URI", uri())
            .env("VMSHOT_FIXTURES_DIR", dir())
            .env("VMSHOT_FIXTURE_PREFIX", prefix())
            .status()
            .unwrap();
        assert!(status.success(), "fixtures.sh up failed");
        let log = dir().join("run/blank-serial.log");
        wait_until("the blank guest is ready", Duration::from_secs(180), || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("vmshot-fixture: ready"))
        });
    });
}

/// A daemon with the page (loopback access), recordings, and the diagnosis
/// watcher for the badges (at a full core's budget: the host has a dozen
/// screens to read).
pub fn daemon() -> Daemon {
    Daemon::start(
        "",
        "[ui]\n\n[recordings]\ndir = \"@DIR@/recordings\"\n\n\
         [diagnosis]\nsettle_secs = 2\ncpu_percent = 100\n",
    )
}

/// The CSRF token the wall carries in its `<meta>`.
pub fn csrf(daemon: &Daemon) -> String {
    let page = send(daemon.addr, "GET", "/ui/", &[], b"").text();
    let at = page
        .find(r#"name="vmshot-csrf" content=""#)
        .expect("the meta tag")
        + r#"name="vmshot-csrf" content=""#.len();
    page[at..at + 64].to_owned()
}
