//! The VNC mirror against real guests under the real libvirtd: it shows what
//! libvirt's own screenshot shows, it lives beside other VNC clients without
//! disturbing them, it steps aside for an exclusive one, and a change on
//! screen reaches it (how fast is printed: that is the freshness figure).
//!
//! `VMSHOT_MIRROR_PREFIX=vmshot-dev-m-` runs the tests against fixture copies
//! brought up by hand under that prefix instead of the shared `vmshot-fx-` ones.
//! The `measure_*` tests print the figures in docs/BENCHMARKS.md; they are slow
//! and only built on request:
//! `cargo test --release --features measure --test mirror -- --nocapture --test-threads 1 measure_`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use image::RgbImage;

use common::fixtures::{self, libvirt_screenshot, shows_pattern, Screen, PREFIX};
use common::host::{uri, virsh, LibvirtdLock};
use common::image_check::{blue_share, decode_rgb, lit_share, psnr};
use vmshot::capture::{self, JpegSettings, Layout};
use vmshot::hypervisor::mirror::{rfb, MirrorSettings};
use vmshot::hypervisor::{Hypervisor, Mirror, Settings, Snapshot};

const SYNC_LIMIT: Duration = Duration::from_secs(15);

/// Held by every test: they share guests, and one of them takes a console
/// exclusively, which would close the others' connections.
struct Setup {
    _libvirtd: LibvirtdLock,
    _serial: MutexGuard<'static, ()>,
    hypervisor: Hypervisor,
}

fn setup() -> Setup {
    static SERIAL: Mutex<()> = Mutex::new(());
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let libvirtd = LibvirtdLock::shared();
    if std::env::var_os("VMSHOT_MIRROR_PREFIX").is_none() {
        fixtures::up();
    }
    Setup {
        _libvirtd: libvirtd,
        _serial: serial,
        hypervisor: Hypervisor::new(Settings::new(uri())),
    }
}

fn domain(name: &str) -> String {
    let prefix = std::env::var("VMSHOT_MIRROR_PREFIX").unwrap_or_else(|_| PREFIX.to_owned());
    format!("{prefix}{name}")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn to_rgb(shot: &Snapshot) -> RgbImage {
    let frame = &shot.frame;
    assert_eq!(frame.layout, Layout::Bgrx8);
    let rgb = frame
        .pixels()
        .chunks_exact(4)
        .flat_map(|p| [p[2], p[1], p[0]])
        .collect();
    RgbImage::from_raw(frame.width as u32, frame.height as u32, rgb).unwrap()
}

async fn synced_mirror(hv: &Hypervisor, domain: &str) -> Mirror {
    let mirror = Mirror::open(hv, domain)
        .await
        .unwrap_or_else(|e| panic!("{domain}: {e}"));
    assert!(
        mirror.wait_synced(SYNC_LIMIT).await,
        "{domain}: no complete screen: {:?}",
        mirror.failure()
    );
    mirror
}

/// The mirror's picture against libvirt's screenshot taken right after it.
fn mirror_matches_libvirt(screen: Screen) {
    let setup = setup();
    let name = domain(screen.name);
    runtime().block_on(async {
        let mirror = synced_mirror(&setup.hypervisor, &name).await;
        let shot = mirror.snapshot().expect("a synced mirror has a snapshot");
        let reference = decode_rgb(&libvirt_screenshot(&name));
        let mirrored = to_rgb(&shot);
        assert_eq!(mirrored.dimensions(), (screen.width, screen.height));
        assert_eq!(mirrored.dimensions(), reference.dimensions());
        let db = psnr(&reference, &mirrored);
        eprintln!("{name}: mirror vs libvirt screenshot: PSNR {db:.1} dB");
        assert!(db >= 30.0, "{name}: PSNR {db:.1} dB");
        if screen.name.starts_with("pattern") {
            // A still screen, two lossless copies of one surface.
            assert_eq!(mirrored, reference, "{name}: not pixel-identical");
            assert!(shows_pattern(&mirrored, 0.0));
        }

        // The encoder takes the mirror's BGRX as it is.
        let jpeg = capture::jpeg(&shot.frame, JpegSettings::default()).unwrap();
        let decoded = decode_rgb(&jpeg);
        let db = psnr(&reference, &decoded);
        assert!(db >= 30.0, "{name}: JPEG of the mirror: PSNR {db:.1} dB");
        assert!(mirror.is_alive());
    });
}

#[test]
fn pattern_1024x768_mirror_is_libvirts_screenshot() {
    mirror_matches_libvirt(fixtures::PATTERN);
}

#[test]
fn pattern_1920x1080_mirror_is_libvirts_screenshot() {
    mirror_matches_libvirt(fixtures::PATTERN_1080);
}

#[test]
fn seabios_text_mode_720x400_mirror_matches() {
    mirror_matches_libvirt(fixtures::NO_BOOT_DEVICE);
}

#[test]
fn a_missing_domain_is_not_found() {
    let setup = setup();
    runtime().block_on(async {
        let err = Mirror::open(&setup.hypervisor, "vmshot-no-such-domain")
            .await
            .unwrap_err();
        assert!(
            matches!(err, vmshot::hypervisor::Error::NotFound { .. }),
            "{err}"
        );
    });
}

#[test]
fn domains_without_a_vnc_console_are_refused_with_the_reason() {
    if std::env::var_os("VMSHOT_MIRROR_PREFIX").is_some() {
        return; // these two exist among the shared fixtures only
    }
    let setup = setup();
    runtime().block_on(async {
        let err = Mirror::open(&setup.hypervisor, fixtures::SHUT_OFF)
            .await
            .unwrap_err();
        assert!(
            matches!(err, vmshot::hypervisor::Error::NotRunning { .. }),
            "{err}"
        );
        let err = Mirror::open(&setup.hypervisor, fixtures::NO_VIDEO)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no VNC display"), "{err}");
    });
}

#[test]
fn qemu_answers_the_probes_of_an_idle_mirror() {
    let setup = setup();
    let name = domain("pattern");
    runtime().block_on(async {
        let settings = MirrorSettings {
            probe_after: Duration::from_millis(500),
            probe_timeout: Duration::from_secs(5),
            ..MirrorSettings::default()
        };
        let mirror = Mirror::open_with(&setup.hypervisor, &name, settings)
            .await
            .unwrap();
        assert!(mirror.wait_synced(SYNC_LIMIT).await);
        let first = mirror.snapshot().unwrap();
        // The pattern never changes: only probes and their answers pass.
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert!(mirror.is_alive(), "{:?}", mirror.failure());
        let later = mirror.snapshot().unwrap();
        assert_eq!(later.generation, first.generation);
        assert_eq!(later.updated_at, first.updated_at);
        let heard = later.heard_at.elapsed();
        eprintln!("{name}: idle for 8 s; last heard from QEMU {heard:?} ago");
        assert!(heard < Duration::from_secs(5), "{heard:?}");
    });
}

/// A plain VNC client over QEMU's TCP port, as a user's viewer would be.
struct Viewer {
    sock: TcpStream,
    width: u16,
    height: u16,
}

impl Viewer {
    /// Connects to the domain's VNC port; `shared` is the ClientInit flag.
    /// None if the server closed the connection during the handshake.
    fn connect(domain: &str, shared: bool) -> Option<Viewer> {
        let display = virsh(&["domdisplay", domain]);
        let display: u16 = display
            .trim()
            .rsplit(':')
            .next()
            .and_then(|d| d.parse().ok())
            .unwrap_or_else(|| panic!("{domain}: display {display:?}"));
        let mut sock = TcpStream::connect(("127.0.0.1", 5900 + display)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut hs = rfb::Handshake::new(shared);
        let mut buf = Vec::new();
        loop {
            while let Some(step) = hs.feed(&buf).unwrap() {
                buf.drain(..step.consumed);
                sock.write_all(&step.reply).unwrap();
                if let Some(init) = step.init {
                    assert!(buf.is_empty());
                    sock.write_all(&rfb::set_pixel_format_bgrx()).unwrap();
                    sock.write_all(&rfb::set_encodings(&[rfb::ENCODING_RAW]))
                        .unwrap();
                    return Some(Viewer {
                        sock,
                        width: init.width,
                        height: init.height,
                    });
                }
            }
            let mut chunk = [0; 4096];
            match sock.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("{domain}: VNC handshake: {e}"),
            }
        }
    }

    /// Asks for the whole screen and reads the update through; false if the
    /// server closed the connection.
    fn full_update(&mut self) -> bool {
        let request = rfb::update_request(false, 0, 0, self.width, self.height);
        if self.sock.write_all(&request).is_err() {
            return false;
        }
        let mut decoder = rfb::Decoder::new(self.width, self.height);
        let mut buf = Vec::new();
        loop {
            loop {
                let (used, event) = decoder.next(&buf).unwrap();
                let (more, end) = (event.is_some(), event == Some(rfb::Event::UpdateEnd));
                buf.drain(..used);
                if end {
                    return true;
                }
                if !more {
                    break;
                }
            }
            let mut chunk = vec![0; 256 * 1024];
            match self.sock.read(&mut chunk) {
                Ok(0) | Err(_) => return false,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Whether the server has closed the connection (waiting up to `limit`).
    fn closed_within(&mut self, limit: Duration) -> bool {
        self.sock.set_read_timeout(Some(limit)).unwrap();
        let mut chunk = vec![0; 256 * 1024];
        let start = Instant::now();
        while start.elapsed() < limit {
            match self.sock.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
                Err(_) => return true,
            }
        }
        false
    }
}

#[test]
fn the_mirror_and_a_users_viewer_leave_each_other_alone() {
    let setup = setup();
    let name = domain("pattern");
    runtime().block_on(async {
        let mut viewer = Viewer::connect(&name, true).expect("the viewer connects");
        assert!(viewer.full_update());

        let mirror = synced_mirror(&setup.hypervisor, &name).await;
        // A second mirror too: shared clients all the way.
        let second = synced_mirror(&setup.hypervisor, &name).await;
        assert!(viewer.full_update(), "the viewer was disconnected");
        assert!(mirror.is_alive() && second.is_alive());

        // The viewer's own traffic does not disturb the mirrors either.
        for _ in 0..3 {
            assert!(viewer.full_update());
        }
        drop(viewer);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(mirror.is_alive() && second.is_alive());
        assert!(mirror.snapshot().is_some());

        // Closing a mirror leaves the other one be.
        drop(second);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(mirror.is_alive());
    });
}

#[test]
fn an_exclusive_viewer_takes_the_console_and_the_mirror_steps_aside() {
    let setup = setup();
    // Not a domain other tests here mirror at the same moment (they are
    // serialised anyway): an exclusive client closes every other connection.
    let name = domain("nobootdev");
    runtime().block_on(async {
        let mirror = synced_mirror(&setup.hypervisor, &name).await;
        let mut exclusive = Viewer::connect(&name, false).expect("the exclusive viewer connects");
        assert!(exclusive.full_update());

        let start = Instant::now();
        while mirror.is_alive() {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "still alive beside an exclusive client"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let failure = mirror.failure().unwrap();
        assert!(failure.contains("closed the connection"), "{failure}");
        assert!(mirror.snapshot().is_none());
        assert!(!mirror.wait_synced(Duration::from_secs(1)).await);

        // While the exclusive viewer holds on, a new mirror is turned away
        // (QEMU closes shared clients then) and the viewer stays.
        match Mirror::open(&setup.hypervisor, &name).await {
            Ok(again) => {
                assert!(!again.wait_synced(Duration::from_secs(5)).await);
                assert!(!again.is_alive());
                eprintln!("{name}: beside an exclusive client: {:?}", again.failure());
            }
            Err(e) => eprintln!("{name}: beside an exclusive client: {e}"),
        }
        assert!(!exclusive.closed_within(Duration::from_millis(500)));
        assert!(
            exclusive.full_update(),
            "the exclusive viewer was disturbed"
        );
        drop(exclusive);

        // Once it is gone, the console is free again.
        let back = synced_mirror(&setup.hypervisor, &name).await;
        assert!(back.snapshot().is_some());
    });
}

/// Waits until `check` holds for the mirror's picture; returns how long that
/// took, or None after `limit`.
async fn until_mirror_shows(
    mirror: &Mirror,
    limit: Duration,
    check: impl Fn(&RgbImage) -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    let mut seen = u64::MAX;
    while start.elapsed() < limit {
        let generation = mirror.generation();
        if generation != seen {
            seen = generation;
            if let Some(shot) = mirror.snapshot() {
                if check(&to_rgb(&shot)) {
                    return Some(start.elapsed());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

/// Presses Shift on the blank guest once its console has gone dark (as seen
/// by the mirror, after `idle` of darkness at least), and returns how long
/// the banner took to reach the mirror.
async fn key_to_mirror(mirror: &Mirror, name: &str, idle: Duration) -> Duration {
    let dark =
        until_mirror_shows(mirror, Duration::from_secs(30), |img| lit_share(img) == 0.0).await;
    assert!(dark.is_some(), "{name}: the console never went dark");
    tokio::time::sleep(idle).await;
    let generation = mirror.generation();
    let pressed = Instant::now();
    virsh(&["send-key", name, "KEY_LEFTSHIFT"]);
    let shown =
        until_mirror_shows(mirror, Duration::from_secs(10), |img| blue_share(img) > 0.9).await;
    let taken = pressed.elapsed();
    assert!(
        shown.is_some(),
        "{name}: the banner did not reach the mirror within 10 s"
    );
    assert_ne!(mirror.generation(), generation);
    taken
}

#[test]
fn a_key_press_on_a_blanked_console_reaches_the_mirror() {
    let setup = setup();
    let name = domain("blank");
    runtime().block_on(async {
        let mirror = synced_mirror(&setup.hypervisor, &name).await;
        let mut taken = Vec::new();
        for _ in 0..3 {
            taken.push(key_to_mirror(&mirror, &name, Duration::ZERO).await);
        }
        eprintln!("{name}: key press to banner in the mirror: {taken:?}");
        // QEMU's refresh backs off to 3 s on an idle screen; a second on top
        // for the guest's redraw under TCG.
        for t in &taken {
            assert!(*t < Duration::from_secs(5), "{taken:?}");
        }
        assert!(mirror.is_alive());
    });
}

/// Freshness after a long idle spell, when QEMU's refresh interval has backed
/// off all the way (30 ms, +50 ms per idle refresh, up to 3 s: ~90 s).
/// Figures for docs/BENCHMARKS.md: slow, so only built with `--features measure`.
#[cfg(feature = "measure")]
mod measure {
    use super::*;
    use common::host::qemu_pid;

    #[test]
    fn measure_freshness_after_long_idle() {
        let setup = setup();
        let name = domain("blank");
        runtime().block_on(async {
            let mirror = synced_mirror(&setup.hypervisor, &name).await;
            for idle in [0, 5, 20, 100, 100, 100] {
                let idle = Duration::from_secs(idle);
                let taken = key_to_mirror(&mirror, &name, idle).await;
                eprintln!(
                    "{name}: dark for >= {idle:?}, key press to banner in the mirror: {taken:?}"
                );
            }
        });
    }

    #[test]
    fn measure_open_and_sync() {
        let setup = setup();
        runtime().block_on(async {
            for screen in ["nobootdev", "pattern", "pattern-1080"] {
                let name = domain(screen);
                let mut times = Vec::new();
                for _ in 0..5 {
                    let start = Instant::now();
                    let mirror = Mirror::open(&setup.hypervisor, &name).await.unwrap();
                    let opened = start.elapsed();
                    assert!(mirror.wait_synced(SYNC_LIMIT).await);
                    let synced = start.elapsed();
                    let size = mirror
                        .snapshot()
                        .map(|s| (s.frame.width, s.frame.height))
                        .unwrap();
                    times.push((opened, synced, size));
                }
                for (opened, synced, size) in times {
                    eprintln!(
                        "{name} {}x{}: open (libvirt + handshake) {:.1} ms, synced {:.1} ms",
                        size.0,
                        size.1,
                        opened.as_secs_f64() * 1e3,
                        synced.as_secs_f64() * 1e3
                    );
                }
            }
        });
    }

    #[test]
    fn measure_snapshot_and_jpeg() {
        let setup = setup();
        let name = domain("pattern");
        runtime().block_on(async {
            let mirror = synced_mirror(&setup.hypervisor, &name).await;
            let rounds = 200;
            let (mut copy, mut encode) = (Duration::ZERO, Duration::ZERO);
            let mut bytes = 0;
            for _ in 0..rounds {
                let start = Instant::now();
                let shot = mirror.snapshot().unwrap();
                let copied = start.elapsed();
                let jpeg = capture::jpeg(&shot.frame, JpegSettings::default()).unwrap();
                encode += start.elapsed() - copied;
                copy += copied;
                bytes = jpeg.len();
            }
            eprintln!(
                "{name} 1024x768: snapshot {:.3} ms + JPEG q80 4:2:0 {:.3} ms ({bytes} bytes), mean of {rounds}",
                copy.as_secs_f64() * 1e3 / f64::from(rounds),
                encode.as_secs_f64() * 1e3 / f64::from(rounds)
            );
            let start = Instant::now();
            for _ in 0..20 {
                libvirt_screenshot(&name);
            }
            eprintln!(
                "{name}: virsh screenshot (process, libvirt, QEMU PNG) {:.1} ms each",
                start.elapsed().as_secs_f64() * 1e3 / 20.0
            );
        });
    }

    /// A guest booting through video modes (QEMU's placeholder, SeaBIOS text
    /// mode, the kernel's 1024x768): the mirror follows each DesktopSize. It
    /// restarts the blank guest, so it only runs on copies of one's own.
    #[test]
    fn measure_mode_switches_during_boot() {
        if std::env::var_os("VMSHOT_MIRROR_PREFIX").is_none() {
            panic!("set VMSHOT_MIRROR_PREFIX to fixture copies of your own");
        }
        let setup = setup();
        let name = domain("blank");
        runtime().block_on(async {
            let _ = std::process::Command::new("virsh")
                .args(["-q", "-c", &uri(), "destroy", &name])
                .output();
            virsh(&["start", &name]);
            let start = Instant::now();
            let mirror = synced_mirror(&setup.hypervisor, &name).await;
            let mut sizes = Vec::new();
            let mut banner = None;
            while start.elapsed() < Duration::from_secs(60) && banner.is_none() {
                assert!(mirror.is_alive(), "{:?}", mirror.failure());
                if let Some(shot) = mirror.snapshot() {
                    let size = (shot.frame.width, shot.frame.height);
                    if sizes.last().map(|s: &(_, _, _)| (s.0, s.1)) != Some(size) {
                        sizes.push((size.0, size.1, start.elapsed()));
                    }
                    if blue_share(&to_rgb(&shot)) > 0.9 {
                        banner = Some(start.elapsed());
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            for (w, h, at) in &sizes {
                eprintln!("{name}: {w}x{h} in the mirror {at:?} after start");
            }
            eprintln!("{name}: banner in the mirror {banner:?} after start");
            assert!(banner.is_some(), "no banner");
            assert_eq!(sizes.last().map(|s| (s.0, s.1)), Some((1024, 768)));
            assert!(sizes.len() >= 2, "no mode switch seen: {sizes:?}");
        });
    }

    /// CPU time of a process (user + system), in clock ticks (1/100 s).
    fn cpu_ticks(pid: i32) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // Fields after the parenthesised command name; utime and stime are 14, 15.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split(' ').collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    #[test]
    fn measure_qemu_cpu_of_an_idle_mirror() {
        let setup = setup();
        let window = Duration::from_secs(
            std::env::var("VMSHOT_MIRROR_CPU_SECS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(30),
        );
        runtime().block_on(async {
            for screen in ["pattern", "pattern-1080", "nobootdev"] {
                let name = domain(screen);
                let pid = qemu_pid(&name);
                let before = cpu_ticks(pid);
                tokio::time::sleep(window).await;
                let without = cpu_ticks(pid) - before;

                let mirror = synced_mirror(&setup.hypervisor, &name).await;
                // Past the first seconds, when QEMU still refreshes fast.
                tokio::time::sleep(Duration::from_secs(5)).await;
                let generation = mirror.generation();
                let before = cpu_ticks(pid);
                tokio::time::sleep(window).await;
                let with = cpu_ticks(pid) - before;
                let pct = |ticks: u64| ticks as f64 / window.as_secs_f64();
                eprintln!(
                    "{name}: QEMU CPU over {window:?}: {:.2} % without a mirror, {:.2} % with one \
                     ({} updates with changes meanwhile)",
                    pct(without),
                    pct(with),
                    mirror.generation() - generation
                );
                assert!(mirror.is_alive());
            }
        });
    }
}
