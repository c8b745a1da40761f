//! The libvirt host the tests run against: a real libvirtd, started here when
//! none runs, and restarted on purpose by the reconnect test.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The URI under test (`VMSHOT_TEST_URI`, default `qemu:///system`).
pub fn uri() -> String {
    std::env::var("VMSHOT_TEST_URI").unwrap_or_else(|_| "qemu:///system".into())
}

/// `virsh -c URI ARGS...`; panics with virsh's own words on failure.
pub fn virsh(args: &[&str]) -> String {
    let out = Command::new("virsh")
        .arg("-q")
        .args(["-c", &uri()])
        .args(args)
        .output()
        .expect("virsh runs");
    assert!(
        out.status.success(),
        "virsh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8(out.stdout).expect("virsh prints UTF-8")
}

pub fn libvirtd_answers() -> bool {
    Command::new("virsh")
        .args(["-c", &uri(), "list", "--name"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn managed_by_systemd() -> bool {
    Path::new("/run/systemd/system").exists()
        && Command::new("systemctl")
            .args(["is-active", "--quiet", "libvirtd"])
            .status()
            .is_ok_and(|s| s.success())
}

/// Makes sure libvirtd (and virtlogd, which QEMU's logs go through) run.
pub fn ensure_libvirtd() {
    if libvirtd_answers() {
        return;
    }
    for daemon in ["virtlogd", "libvirtd"] {
        let running = Command::new("pgrep")
            .args(["-x", daemon])
            .output()
            .is_ok_and(|o| o.status.success());
        if !running {
            let status = Command::new(daemon)
                .arg("-d")
                .status()
                .expect("libvirt daemons are installed");
            assert!(status.success(), "{daemon} -d failed");
        }
    }
    wait_until(
        "libvirtd answers",
        Duration::from_secs(30),
        libvirtd_answers,
    );
}

/// Stops libvirtd and starts it again; running guests live on.
pub fn restart_libvirtd() {
    if managed_by_systemd() {
        systemctl("restart");
    } else {
        stop_libvirtd();
        start_libvirtd();
    }
    wait_until(
        "libvirtd answers again",
        Duration::from_secs(30),
        libvirtd_answers,
    );
}

/// Stops libvirtd and waits until it is gone; running guests live on.
pub fn stop_libvirtd() {
    if managed_by_systemd() {
        // Its socket would start it again at the next connection.
        systemctl("stop libvirtd.socket libvirtd-ro.socket libvirtd-admin.socket");
        systemctl("stop");
        return;
    }
    let status = Command::new("pkill")
        .args(["-TERM", "-x", "libvirtd"])
        .status()
        .unwrap();
    assert!(status.success(), "no libvirtd to stop");
    wait_until("libvirtd exits", Duration::from_secs(30), || {
        !Command::new("pgrep")
            .args(["-x", "libvirtd"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
}

/// Starts libvirtd (after `stop_libvirtd`); returns without waiting for it
/// to answer.
pub fn start_libvirtd() {
    if managed_by_systemd() {
        systemctl("start libvirtd.socket libvirtd-ro.socket libvirtd-admin.socket");
        systemctl("start");
        return;
    }
    let status = Command::new("libvirtd").arg("-d").status().unwrap();
    assert!(status.success(), "libvirtd -d");
}

/// `systemctl VERB UNITS…` (the units default to libvirtd).
fn systemctl(verb_and_units: &str) {
    let mut args: Vec<&str> = verb_and_units.split(' ').collect();
    if args.len() == 1 {
        args.push("libvirtd");
    }
    let status = Command::new("systemctl").args(&args).status().unwrap();
    assert!(status.success(), "systemctl {}", args.join(" "));
}

/// Polls `done` every 250 ms until it holds; panics after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Held by every test that needs libvirtd up; the restart test holds it
/// exclusively, so that it never pulls libvirtd from under another test (test
/// binaries run one after another under `cargo test`, but not under nextest).
/// The lock is machine-wide, as libvirtd is: two checkouts testing at once
/// share it.
pub struct LibvirtdLock(std::fs::File);

impl LibvirtdLock {
    fn open() -> std::fs::File {
        std::fs::File::create(std::env::temp_dir().join("vmshot-libvirtd-test.lock")).unwrap()
    }

    pub fn shared() -> Self {
        let file = Self::open();
        file.lock_shared().unwrap();
        Self(file)
    }

    pub fn exclusive() -> Self {
        let file = Self::open();
        file.lock().unwrap();
        Self(file)
    }
}

/// The PID of a running domain's QEMU process.
pub fn qemu_pid(domain: &str) -> i32 {
    let path = format!("/run/libvirt/qemu/{domain}.pid");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .parse()
        .unwrap()
}

/// Freezes a process with SIGSTOP until dropped (then SIGCONT), so a test that
/// fails half-way never leaves a guest frozen.
pub struct Frozen(i32);

impl Frozen {
    pub fn new(pid: i32) -> Self {
        let status = Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -STOP {pid}");
        Self(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

/// Serialises the tests of one binary that freeze the stall guest.
pub fn stall_guard() -> std::sync::MutexGuard<'static, ()> {
    static STALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    STALL.lock().unwrap_or_else(|e| e.into_inner())
}
