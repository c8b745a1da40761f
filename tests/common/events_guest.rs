//! The events guest (fixtures/domains/events.xml, fixtures/wake/README.md): a
//! copy of a test's own, with its own name and serial log, that panics
//! through pvpanic, reboots or starves its watchdog when sent a key, and
//! powers off on `virsh shutdown`. Destroyed and undefined when dropped.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use super::fixtures::{fixtures_dir, tempdir};
use super::host::{ensure_libvirtd, uri, virsh};

/// Serial-log line of a boot that has drawn its banner and waits for keys.
const READY: &str = "vmshot-fixture: events:";

pub struct EventsGuest {
    pub name: String,
    pub uuid: String,
    pub serial: PathBuf,
}

impl EventsGuest {
    /// Builds the fixture images if needed, then defines a copy named
    /// `vmshot-ev-<tag>-<random>` (shut off), with `cmdline` added to its
    /// kernel command line (e.g. `vmshot.panic_after=5`).
    pub fn define(tag: &str, cmdline: &str) -> Self {
        Self::define_edited(tag, cmdline, |xml| xml)
    }

    /// `define`, with its serial port a pty whose log virtlogd writes
    /// (`<log file=… append='on'/>`) and rolls over at 2 MiB to `serial.0`, ….
    pub fn define_logged(tag: &str, cmdline: &str) -> Self {
        Self::define_edited(tag, cmdline, |xml| {
            let xml = xml.replace(
                "<serial type='file'><source path='@RUNDIR@/events-serial.log'/></serial>",
                "<serial type='pty'><log file='@RUNDIR@/events-serial.log' append='on'/></serial>",
            );
            assert!(xml.contains("<log file="), "events.xml's serial port moved");
            xml
        })
    }

    /// `define`, with SeaBIOS's boot menu prompt shown for `ms` at each boot:
    /// the screen is 720x400 text for that long before the kernel sets
    /// 1024x768, so a reboot changes the resolution twice, slowly enough to see.
    pub fn define_with_boot_menu(tag: &str, ms: u32) -> Self {
        Self::define_edited(tag, "", |xml| {
            xml.replace(
                "</os>",
                &format!("<bootmenu enable='yes' timeout='{ms}'/></os>"),
            )
        })
    }

    /// `define`, with the domain's XML template changed by `edit` first.
    fn define_edited(tag: &str, cmdline: &str, edit: impl FnOnce(String) -> String) -> Self {
        build();
        let uuid = uuid::Uuid::new_v4().hyphenated().to_string();
        let name = format!("vmshot-ev-{tag}-{}", &uuid[..8]);
        let dir = fixtures_dir();
        let serial = dir.join("run").join(format!("{name}-serial.log"));
        remove_logs(&serial);
        let template =
            edit(std::fs::read_to_string(repo().join("fixtures/domains/events.xml")).unwrap());
        let xml = template
            .replace("@PREFIX@events", &name)
            .replace("@RUNDIR@/events-serial.log", serial.to_str().unwrap())
            .replace("@KERNEL@", dir.join("vmlinuz").to_str().unwrap())
            .replace("@IMAGES@", dir.to_str().unwrap())
            .replace(
                "vmshot.mode=events",
                &format!("vmshot.mode=events {cmdline}"),
            )
            .replace("<vcpu>", &format!("<uuid>{uuid}</uuid><vcpu>"));
        let file = tempdir().join(format!("{name}.xml"));
        std::fs::write(&file, xml).unwrap();
        virsh(&["define", file.to_str().unwrap()]);
        let _ = std::fs::remove_dir_all(file.parent().unwrap());
        Self { name, uuid, serial }
    }

    pub fn start(&self) {
        virsh(&["start", &self.name]);
    }

    /// Presses and releases a key (Linux name, e.g. `KEY_P`) on its keyboard.
    pub fn key(&self, key: &str) {
        virsh(&["send-key", &self.name, key]);
    }

    /// What the guest wrote on its serial port since it was last started.
    pub fn serial_log(&self) -> String {
        std::fs::read_to_string(&self.serial).unwrap_or_default()
    }

    /// Boots that reached the point where keys work, since the last start
    /// (a reboot keeps the log).
    pub fn ready_boots(&self) -> usize {
        self.serial_log().matches(READY).count()
    }

    /// Polls its serial log until `boots` boots are ready; panics with the
    /// log after `limit`.
    pub fn wait_ready(&self, boots: usize, limit: Duration) {
        let start = Instant::now();
        while self.ready_boots() < boots {
            assert!(
                start.elapsed() < limit,
                "{}: {boots} boot(s) not ready after {limit:?}; serial log:\n{}",
                self.name,
                self.serial_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for EventsGuest {
    fn drop(&mut self) {
        ensure_libvirtd();
        for action in ["destroy", "undefine"] {
            let _ = Command::new("virsh")
                .args(["-c", &uri(), action, &self.name])
                .output();
        }
        remove_logs(&self.serial);
    }
}

/// The log and virtlogd's backups of it.
fn remove_logs(serial: &std::path::Path) {
    let _ = std::fs::remove_file(serial);
    for n in 0..4 {
        let mut backup = serial.as_os_str().to_owned();
        backup.push(format!(".{n}"));
        let _ = std::fs::remove_file(backup);
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `fixtures/fixtures.sh build` once per process, under the fixtures' lock
/// (as `fixtures::up` takes it): the kernel, its modules and the initramfs.
fn build() {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        std::fs::create_dir_all(fixtures_dir()).unwrap();
        let lock = std::fs::File::create(fixtures_dir().join(".lock")).unwrap();
        lock.lock().unwrap();
        let status = Command::new("bash")
            .arg(repo().join("fixtures/fixtures.sh"))
            .arg("build")
            .env("VMSHOT_FIXTURES_DIR", fixtures_dir())
            .status()
            .unwrap();
        assert!(status.success(), "fixtures/fixtures.sh build failed");
        assert!(
            fixtures_dir().join("events-initramfs.img").exists(),
            "fixtures/fixtures.sh build made no events-initramfs.img"
        );
        lock.unlock().unwrap();
    });
}
