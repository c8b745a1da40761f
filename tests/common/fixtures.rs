//! The fixture guests (see `fixtures/`): brought up once per test run, shared
//! by every test, and waited for until their screens have settled.
//!
//! "Once per run" holds across test binaries: the first to get here takes an
//! exclusive file lock, runs `fixtures/fixtures.sh up` (which leaves running
//! guests alone) and polls until every screen is final; the others find them
//! settled. Settling is judged by polling screenshots, never by sleeping.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use image::RgbImage;

use super::host::{ensure_libvirtd, uri, virsh};
use super::image_check::{decode_rgb, mean_rgb};

pub const PREFIX: &str = "vmshot-fx-";

/// A guest that shows a known screen.
#[derive(Debug, Clone, Copy)]
pub struct Screen {
    pub name: &'static str,
    pub width: u32,
    pub height: u32,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// SeaBIOS "No bootable device." (its text cursor keeps blinking).
    NoBootDevice,
    /// Kernel panic; the serial log says when it happened.
    Panic,
    /// The colour grid of fixtures/pattern.
    Pattern,
}

pub const NO_BOOT_DEVICE: Screen = Screen {
    name: "nobootdev",
    width: 720,
    height: 400,
    kind: Kind::NoBootDevice,
};
pub const KERNEL_PANIC: Screen = Screen {
    name: "panic",
    width: 1024,
    height: 768,
    kind: Kind::Panic,
};
pub const PATTERN: Screen = Screen {
    name: "pattern",
    width: 1024,
    height: 768,
    kind: Kind::Pattern,
};
pub const PATTERN_1080: Screen = Screen {
    name: "pattern-1080",
    width: 1920,
    height: 1080,
    kind: Kind::Pattern,
};
pub const SCREENS: [Screen; 4] = [NO_BOOT_DEVICE, KERNEL_PANIC, PATTERN, PATTERN_1080];

/// Defined and never started.
pub const SHUT_OFF: &str = "vmshot-fx-shutoff";
/// Running with no video device.
pub const NO_VIDEO: &str = "vmshot-fx-novideo";
/// Running, for tests that freeze its QEMU process (SIGSTOP) on purpose.
pub const STALL: &str = "vmshot-fx-stall";
/// A blue banner that the kernel blanks 3 s after the last key press (fixtures/wake).
pub const BLANK: &str = "vmshot-fx-blank";
/// Suspends itself to RAM once booted; redraws its banner when woken (fixtures/wake).
pub const SUSPEND: &str = "vmshot-fx-suspend";

impl Screen {
    pub fn domain(&self) -> String {
        format!("{PREFIX}{}", self.name)
    }
}

/// The 4x2 grid of fixtures/pattern/README.md: row 0 then row 1, left to right.
pub const PATTERN_COLOURS: [[u8; 3]; 8] = [
    [255, 0, 0],
    [0, 255, 0],
    [0, 0, 255],
    [255, 255, 255],
    [255, 255, 0],
    [0, 255, 255],
    [255, 0, 255],
    [0, 0, 0],
];

/// Centre of region `i` of the pattern grid on a `width`x`height` screen.
pub fn pattern_region_centre(i: usize, width: u32, height: u32) -> (u32, u32) {
    let (col, row) = (i as u32 % 4, i as u32 / 4);
    (col * width / 4 + width / 8, row * height / 2 + height / 4)
}

/// Whether `img` shows the pattern, each region's centre within `tolerance`.
pub fn shows_pattern(img: &RgbImage, tolerance: f64) -> bool {
    PATTERN_COLOURS.iter().enumerate().all(|(i, want)| {
        let (cx, cy) = pattern_region_centre(i, img.width(), img.height());
        let got = mean_rgb(img, cx, cy, 32);
        got.iter()
            .zip(want)
            .all(|(g, w)| (g - f64::from(*w)).abs() <= tolerance)
    })
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixtures_dir() -> PathBuf {
    std::env::var_os("VMSHOT_FIXTURES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/fixtures"))
}

/// libvirt's own screenshot of a domain, taken with `virsh` (not vmshot's code).
pub fn libvirt_screenshot(domain: &str) -> Vec<u8> {
    let dir = tempdir();
    let path = dir.join("shot");
    virsh(&["screenshot", domain, path.to_str().unwrap()]);
    let bytes = std::fs::read(&path).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    bytes
}

/// A fresh, empty directory under the target directory.
pub fn tempdir() -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = repo()
        .join("target/test-tmp")
        .join(format!("{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `text` in `dir/name`, mode 0600: a secret file the daemon accepts.
pub fn secret_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Brings every fixture up (once per process; once per run thanks to the lock)
/// and returns when every screen has settled.
pub fn up() {
    static UP: OnceLock<()> = OnceLock::new();
    UP.get_or_init(|| {
        ensure_libvirtd();
        std::fs::create_dir_all(fixtures_dir()).unwrap();
        let lock = File::create(fixtures_dir().join(".lock")).unwrap();
        lock.lock().unwrap();
        let status = Command::new("bash")
            .arg(repo().join("fixtures/fixtures.sh"))
            .arg("up")
            .env("LIBVIRT_URI", uri())
            .env("VMSHOT_FIXTURES_DIR", fixtures_dir())
            .status()
            .unwrap();
        assert!(status.success(), "fixtures/fixtures.sh up failed");
        wait_for_screens(&fixtures_dir());
        lock.unlock().unwrap();
    });
}

/// Polls every screen fixture until all are final, within one deadline.
fn wait_for_screens(dir: &Path) {
    let deadline = Duration::from_secs(300);
    let start = Instant::now();
    let mut pending: Vec<(Screen, Option<RgbImage>, u32)> =
        SCREENS.iter().map(|s| (*s, None, 0)).collect();
    while !pending.is_empty() {
        assert!(
            start.elapsed() < deadline,
            "fixture screens not settled after {deadline:?}: {:?}",
            pending.iter().map(|p| p.0.name).collect::<Vec<_>>()
        );
        pending.retain_mut(|(screen, previous, stable)| {
            let img = decode_rgb(&libvirt_screenshot(&screen.domain()));
            let settled = is_final(screen, dir, &img, previous.as_ref(), stable);
            *previous = Some(img);
            !settled
        });
        if !pending.is_empty() {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    eprintln!(
        "fixture screens settled in {:.1} s",
        start.elapsed().as_secs_f64()
    );
}

/// Whether `img` is the fixture's final screen; `stable` counts consecutive
/// polls that barely changed.
fn is_final(
    screen: &Screen,
    dir: &Path,
    img: &RgbImage,
    previous: Option<&RgbImage>,
    stable: &mut u32,
) -> bool {
    if img.dimensions() != (screen.width, screen.height) {
        *stable = 0;
        return false;
    }
    // A blinking text cursor changes a few dozen pixels between polls.
    let barely_changed = previous
        .is_some_and(|p| p.dimensions() == img.dimensions() && changed_pixels(p, img) <= 200);
    *stable = if barely_changed { *stable + 1 } else { 0 };
    match screen.kind {
        Kind::Pattern => shows_pattern(img, 1.0),
        Kind::Panic => {
            let log = std::fs::read_to_string(dir.join("run/panic-serial.log")).unwrap_or_default();
            log.contains("end Kernel panic") && *stable >= 2
        }
        Kind::NoBootDevice => *stable >= 3 && lit_pixels(img) > 1000,
    }
}

fn changed_pixels(a: &RgbImage, b: &RgbImage) -> usize {
    a.pixels().zip(b.pixels()).filter(|(p, q)| p != q).count()
}

fn lit_pixels(img: &RgbImage) -> usize {
    img.pixels().filter(|p| p.0.iter().any(|c| *c > 64)).count()
}

/// Waits until the blank guest has drawn its banner (its serial log says so)
/// and the kernel has blanked it: libvirt's own screenshot is all black.
pub fn wait_for_blanked_console() {
    let log = fixtures_dir().join("run/blank-serial.log");
    super::host::wait_until(
        "the blank guest's console is blanked",
        Duration::from_secs(120),
        || {
            let ready =
                std::fs::read_to_string(&log).is_ok_and(|l| l.contains("vmshot-fixture: ready"));
            let img = decode_rgb(&libvirt_screenshot(BLANK));
            ready && img.dimensions() == (1024, 768) && lit_pixels(&img) == 0
        },
    );
}
