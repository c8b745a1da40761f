//! A real `vmshot serve` for a test: its own config and key file in a temp dir,
//! on a free loopback port, stopped with SIGTERM when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::fixtures::tempdir;
use super::host::uri;
use super::http::{send, Reply};
use super::signing::screenshot_query;

pub struct Daemon {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    /// stderr lines (JSON logs), as they come.
    logs: mpsc::Receiver<String>,
    /// Every line received so far.
    seen: std::cell::RefCell<Vec<String>>,
}

/// Access keys every daemon in the tests knows.
pub const KEY_ID: &str = "vmshot-test-key";
pub const SECRET: &str = "vmshot-test-secret";
/// A key that may only see `LIMITED_TO`.
pub const LIMITED_KEY_ID: &str = "vmshot-limited-key";
pub const LIMITED_SECRET: &str = "vmshot-limited-secret";
pub const LIMITED_TO: &str = "i-limited-only";
/// Keys bound to one Nova project each, and an admin (of project B).
pub const PROJECT_A: &str = "1b0c7e5a-4f8d-4c2e-9a61-0d3e5f7a9b11";
pub const PROJECT_B: &str = "2c1d8f6b-5a9e-4d3f-8b72-1e4f6a8b0c22";
pub const PROJECT_A_KEY: (&str, &str) = ("vmshot-project-a-key", "vmshot-project-a-secret");
pub const PROJECT_B_KEY: (&str, &str) = ("vmshot-project-b-key", "vmshot-project-b-secret");
pub const ADMIN_KEY: (&str, &str) = ("vmshot-admin-key", "vmshot-admin-secret");
/// How many keys `KEYS` holds (nonce shares are split among them).
pub const KEY_COUNT: usize = 5;

const KEYS: &str = r#"
[[key]]
id = "vmshot-test-key"
secret = "vmshot-test-secret"

[[key]]
id = "vmshot-limited-key"
secret = "vmshot-limited-secret"
instances = ["i-limited-only"]

[[key]]
id = "vmshot-project-a-key"
secret = "vmshot-project-a-secret"
project = "1b0c7e5a-4f8d-4c2e-9a61-0d3e5f7a9b11"

[[key]]
id = "vmshot-project-b-key"
secret = "vmshot-project-b-secret"
project = "2C1D8F6B5A9E4D3F8B721E4F6A8B0C22"

[[key]]
id = "vmshot-admin-key"
secret = "vmshot-admin-secret"
project = "2c1d8f6b-5a9e-4d3f-8b72-1e4f6a8b0c22"
roles = ["admin"]
"#;

impl Daemon {
    /// An Alibaba GetInstanceScreenshot of `instance`, signed with `key`.
    pub fn alibaba_screenshot(&self, (key, secret): (&str, &str), instance: &str) -> Reply {
        let query = screenshot_query(key, secret, instance);
        send(self.addr, "GET", &format!("/?{query}"), &[], b"")
    }

    /// Starts a daemon whose config is the default plus `extra` TOML (which
    /// may add keys to `[alibaba]` through `alibaba_extra`). Both dialects
    /// are on, with the same key file.
    pub fn start(alibaba_extra: &str, extra: &str) -> Self {
        Self::try_start(alibaba_extra, extra, 0o600).expect("the daemon starts")
    }

    /// Like `start`, with the key file's mode; `Err` carries the exit code and
    /// stderr of a daemon that refused to start.
    pub fn try_start(
        alibaba_extra: &str,
        extra: &str,
        key_mode: u32,
    ) -> Result<Self, (i32, String)> {
        Self::try_start_logging(alibaba_extra, extra, key_mode, None)
    }

    /// Like `start`, with `RUST_LOG` set to `filter` (for a test that waits
    /// for a log line below info, such as `vmshot::hypervisor::blocking=debug`:
    /// each libvirt call as it starts and returns).
    pub fn start_logging(alibaba_extra: &str, extra: &str, filter: &str) -> Self {
        Self::try_start_logging(alibaba_extra, extra, 0o600, Some(filter))
            .expect("the daemon starts")
    }

    fn try_start_logging(
        alibaba_extra: &str,
        extra: &str,
        key_mode: u32,
        filter: Option<&str>,
    ) -> Result<Self, (i32, String)> {
        let dir = tempdir();
        let keys = dir.join("keys.toml");
        std::fs::write(&keys, KEYS).unwrap();
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(key_mode)).unwrap();
        let config = dir.join("vmshot.toml");
        // `extra` may bring its own [libvirt] or [server] section instead of these.
        let mut text = String::new();
        if !extra.contains("[server]") {
            text += "[server]\nlisten = \"127.0.0.1:0\"\n\n";
        }
        if !extra.contains("[libvirt]") {
            text += &format!("[libvirt]\nuri = \"{}\"\n\n", uri());
        }
        // Each daemon keeps its own store, in its own directory, unless
        // `extra` brings a [store] section (`@DIR@` names the directory).
        let extra = extra.replace("@DIR@", &dir.display().to_string());
        if !extra.contains("[store]") {
            text += &format!(
                "[store]\npath = \"{}\"\n\n",
                dir.join("vmshot.db").display()
            );
        }
        // The diagnosis watcher opens a VNC mirror on every running domain and
        // reads screens with tesseract: off unless a test asks for it.
        if !extra.contains("[diagnosis]") {
            text += "[diagnosis]\nenabled = false\n\n";
        }
        // `extra` may bring its own [aws] section, naming the key file `@KEYS@`.
        let extra = extra.replace("@KEYS@", &keys.display().to_string());
        if !extra.contains("[aws]") {
            text += &format!("[aws]\ncredentials_file = \"{}\"\n\n", keys.display());
        }
        text += &format!(
            "{extra}\n\n[alibaba]\ncredentials_file = \"{}\"\n{alibaba_extra}\n",
            keys.display()
        );
        std::fs::write(&config, text).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_vmshot"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .env(
                "RUST_LOG",
                filter.map(str::to_owned).unwrap_or_else(|| {
                    std::env::var("VMSHOT_TEST_LOG").unwrap_or_else(|_| "info".into())
                }),
            )
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("vmshot starts");
        let (tx, logs) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut daemon = Self {
            child: Some(child),
            addr: "0.0.0.0:0".parse().unwrap(),
            dir,
            logs,
            seen: Default::default(),
        };
        match daemon.wait_for_log("listening", Duration::from_secs(20)) {
            Some(line) => {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                daemon.addr = v["addr"].as_str().unwrap().parse().unwrap();
                Ok(daemon)
            }
            None => {
                let status = daemon.child.take().unwrap().wait().unwrap();
                daemon.wait_for_log("\u{0}", Duration::from_millis(200));
                Err((status.code().unwrap_or(-1), daemon.seen.borrow().join("\n")))
            }
        }
    }

    /// Waits until the daemon holds what it holds at rest: its libvirt
    /// connection and the domain inventory's (measure descriptors after this).
    pub fn settled(&self) {
        let needle = "\"inventory live\"";
        let seen = self.seen.borrow().iter().any(|l| l.contains(needle));
        assert!(
            seen || self.wait_for_log(needle, Duration::from_secs(20)).is_some(),
            "the inventory did not go live"
        );
    }

    /// The next log line containing `needle`, if one comes within `limit`.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) -> Option<String> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            let line = self.logs.recv_timeout(left).ok()?;
            self.seen.borrow_mut().push(line.clone());
            if line.contains(needle) {
                return Some(line);
            }
        }
    }

    /// Every log line so far (for a failing assertion's message).
    pub fn logs(&self) -> String {
        while let Ok(line) = self.logs.try_recv() {
            self.seen.borrow_mut().push(line);
        }
        self.seen.borrow().join("\n")
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// The daemon's resident memory now and at its peak (VmRSS, VmHWM), KiB.
    pub fn rss_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in /proc/PID/status"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// File descriptors the daemon holds open now.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    /// Whether the process has not exited yet.
    pub fn running(&mut self) -> bool {
        let child = self.child.as_mut().expect("started");
        child.try_wait().expect("waitpid").is_none()
    }

    /// SIGKILL: nothing of the daemon's runs after this.
    pub fn kill_9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, then the exit code.
    pub fn stop(&mut self) -> i32 {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        self.wait_exit()
    }

    /// Waits for the daemon to exit (after a signal sent by the test).
    pub fn wait_exit(&mut self) -> i32 {
        let status = self.child.take().expect("running").wait().unwrap();
        status.code().unwrap_or(-1)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
