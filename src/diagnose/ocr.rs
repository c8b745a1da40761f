//! The text on a screen, read by Debian's `tesseract` (the `tesseract-ocr`
//! and `tesseract-ocr-eng` packages) run as a child process. Out of process
//! on purpose: the pixels are the guest's, so hostile input, and a crash or a
//! runaway in a C++ library must cost one reading, not the daemon. The child
//! runs at nice 10 on one thread, under a CPU and an address-space limit, and
//! is killed at the deadline.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::frame::Frame;

/// Below QEMU's vCPU threads and vmshot's request threads.
const OCR_NICE: libc::c_int = 10;
/// Enough for tesseract's model and a 2048x1536 page, with room to spare.
const OCR_ADDRESS_SPACE: libc::rlim_t = 2 << 30;
/// More text than any console holds; the rest is dropped.
const MAX_TEXT_BYTES: u64 = 256 << 10;
/// Screens larger than this are not read (a 4K desktop is not a console).
const MAX_PIXELS: usize = 1920 * 1200;
/// Brighter than this on a dark screen (or darker on a light one) is ink.
const INK: u8 = 56;

#[derive(Debug, thiserror::Error)]
pub enum OcrError {
    #[error("the OCR program cannot be started: {0}")]
    Spawn(std::io::Error),
    #[error("the OCR program failed: {0}")]
    Failed(String),
    #[error("the OCR program took longer than {0:?}")]
    Timeout(Duration),
    #[error("the screen is too large to read ({0} pixels)")]
    TooLarge(usize),
}

/// How to run the OCR program.
#[derive(Debug, Clone)]
pub struct Ocr {
    pub program: PathBuf,
    pub timeout: Duration,
}

/// What one reading gave, and what it cost.
#[derive(Debug, Clone)]
pub struct Reading {
    pub text: String,
    pub took: Duration,
    /// The CPU time the program used (user and system).
    pub cpu: Duration,
}

impl Default for Ocr {
    fn default() -> Self {
        Self {
            program: PathBuf::from("tesseract"),
            timeout: Duration::from_secs(30),
        }
    }
}

impl Ocr {
    /// Whether the program runs at all (`tesseract --version`).
    pub async fn available(&self) -> bool {
        let mut command = tokio::process::Command::new(&self.program);
        command
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        matches!(
            tokio::time::timeout(Duration::from_secs(10), command.status()).await,
            Ok(Ok(status)) if status.success()
        )
    }

    /// Reads the text on `frame`. The image is prepared (below) on a blocking
    /// thread, then piped to the program.
    pub async fn read(&self, frame: Frame) -> Result<Reading, OcrError> {
        let pixels = frame.width * frame.height;
        if pixels > MAX_PIXELS {
            return Err(OcrError::TooLarge(pixels));
        }
        let image = tokio::task::spawn_blocking(move || pgm(&frame))
            .await
            .map_err(|e| OcrError::Failed(e.to_string()))?;
        let started = Instant::now();
        let before = children_cpu();
        let text = tokio::time::timeout(self.timeout, self.run(image))
            .await
            .map_err(|_| OcrError::Timeout(self.timeout))??;
        Ok(Reading {
            text,
            took: started.elapsed(),
            // Children's CPU is counted once they are reaped; another reading
            // ending meanwhile would count here too, which only overcharges.
            cpu: children_cpu().saturating_sub(before),
        })
    }

    async fn run(&self, image: Vec<u8>) -> Result<String, OcrError> {
        let cpu_secs = self.timeout.as_secs().max(1) as libc::rlim_t;
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(["stdin", "stdout", "-l", "eng", "--psm", "6"])
            .env_clear()
            // tesseract's OpenMP would take every core; one is its share.
            .env("OMP_THREAD_LIMIT", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        // SAFETY: between fork and exec the closure makes only the
        // async-signal-safe prctl, setpriority and setrlimit system calls.
        unsafe {
            command.pre_exec(move || {
                // systemd/vmshot.service gives vmshot CAP_DAC_READ_SEARCH as
                // an ambient capability, which exec would pass on: the OCR
                // reads what a guest puts on its screen and needs none.
                // Variadic: each argument as the unsigned long the kernel reads.
                let clear = libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong;
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    clear,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                );
                libc::setpriority(libc::PRIO_PROCESS, 0, OCR_NICE);
                let limit = |resource, value| {
                    let rlim = libc::rlimit {
                        rlim_cur: value,
                        rlim_max: value,
                    };
                    libc::setrlimit(resource, &rlim)
                };
                limit(libc::RLIMIT_CPU, cpu_secs);
                limit(libc::RLIMIT_AS, OCR_ADDRESS_SPACE);
                limit(libc::RLIMIT_CORE, 0);
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(OcrError::Spawn)?;
        let mut stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let write = async move {
            let written = stdin.write_all(&image).await;
            drop(stdin);
            written
        };
        let read = async move {
            let mut text = Vec::new();
            stdout
                .take(MAX_TEXT_BYTES)
                .read_to_end(&mut text)
                .await
                .map(|_| text)
        };
        let (written, text) = tokio::join!(write, read);
        let status = child
            .wait()
            .await
            .map_err(|e| OcrError::Failed(e.to_string()))?;
        if !status.success() {
            return Err(OcrError::Failed(status.to_string()));
        }
        written.map_err(|e| OcrError::Failed(format!("writing the image: {e}")))?;
        let text = text.map_err(|e| OcrError::Failed(format!("reading the text: {e}")))?;
        Ok(String::from_utf8_lossy(&text).into_owned())
    }
}

/// CPU time of this process's reaped children (`getrusage(RUSAGE_CHILDREN)`).
fn children_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given and nothing else.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// The screen as tesseract reads consoles best: one bit of ink, dark on
/// light (light-on-dark consoles inverted), text-mode screens doubled so a
/// glyph's x-height passes tesseract's ~10 pixels, and a white margin; as a
/// binary PGM, which it reads from stdin.
pub(crate) fn pgm(frame: &Frame) -> Vec<u8> {
    let (w, h) = (frame.width, frame.height);
    let mut grey = Vec::with_capacity(w * h);
    let mut sum = 0u64;
    for y in 0..h {
        for x in 0..w {
            let [r, g, b] = frame.rgb_at(x, y);
            let luma = ((u32::from(r) * 77 + u32::from(g) * 150 + u32::from(b) * 29) >> 8) as u8;
            sum += u64::from(luma);
            grey.push(luma);
        }
    }
    let dark = w * h == 0 || sum / ((w * h) as u64) < 128;
    let ink = |v: u8| if dark { v > INK } else { v < 255 - INK };
    // 80x25 text mode is 720x400 (9x16 glyphs, x-height ~8): doubled.
    let scale = if h <= 480 { 2 } else { 1 };
    let margin = 8;
    let (ow, oh) = (w * scale + 2 * margin, h * scale + 2 * margin);
    let mut out = format!("P5\n{ow} {oh}\n255\n").into_bytes();
    let header = out.len();
    out.resize(header + ow * oh, 255);
    let body = &mut out[header..];
    for y in 0..h {
        for x in 0..w {
            if ink(grey[y * w + x]) {
                for dy in 0..scale {
                    let row = (margin + y * scale + dy) * ow + margin + x * scale;
                    body[row..row + scale].fill(0);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::{is_blank, Rules, Verdict};
    use crate::frame::Layout;

    /// A screen of fixtures/screens, decoded.
    fn screen(name: &str) -> Frame {
        let path = format!("{}/fixtures/screens/{name}.png", env!("CARGO_MANIFEST_DIR"));
        let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb, "{name}");
        buf.truncate(info.buffer_size());
        Frame::new(
            info.width as usize,
            info.height as usize,
            Layout::Rgb8,
            buf,
            0,
        )
    }

    /// Needs tesseract-ocr and tesseract-ocr-eng (scripts/setup-host.sh).
    #[tokio::test]
    async fn every_fixture_screen_reads_as_its_verdict() {
        let rules = Rules::built_in();
        let cases = [
            (
                "nobootdev",
                Verdict::NoBootableDevice,
                "No bootable device.",
            ),
            ("panic", Verdict::KernelPanic, "Kernel panic - not syncing"),
            ("grub-menu", Verdict::BootloaderPrompt, "GNU GRUB"),
            ("grub-rescue", Verdict::BootloaderPrompt, "grub rescue>"),
            (
                "initramfs",
                Verdict::EmergencyShell,
                "Gave up waiting for root file system device",
            ),
            ("login", Verdict::LoginPrompt, "login login:"),
        ];
        for (name, verdict, line) in cases {
            let frame = screen(name);
            assert!(!is_blank(&frame), "{name}");
            let reading = Ocr::default().read(frame).await.unwrap();
            let hit = rules
                .first_hit(&reading.text, "")
                .unwrap_or_else(|| panic!("nothing recognised on {name}:\n{}", reading.text));
            assert_eq!(hit.verdict, verdict, "{name}: {hit:?}");
            assert!(hit.line.contains(line), "{name}: {hit:?}");
        }
        assert!(is_blank(&screen("blank")));
    }

    #[tokio::test]
    async fn a_missing_program_is_an_error_not_a_hang() {
        let ocr = Ocr {
            program: "/nonexistent/tesseract".into(),
            timeout: Duration::from_secs(5),
        };
        assert!(!ocr.available().await);
        assert!(matches!(
            ocr.read(screen("blank")).await,
            Err(OcrError::Spawn(_))
        ));
    }

    #[tokio::test]
    async fn a_program_past_its_deadline_is_killed() {
        // A script that ignores its arguments and sleeps: a tesseract that hangs.
        let dir = std::env::temp_dir().join(format!("vmshot-ocr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let program = dir.join("hang");
        std::fs::write(&program, "#!/bin/sh\nexec sleep 30\n").unwrap();
        std::fs::set_permissions(
            &program,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let ocr = Ocr {
            program,
            timeout: Duration::from_millis(500),
        };
        let started = Instant::now();
        assert!(matches!(
            ocr.read(screen("blank")).await,
            Err(OcrError::Timeout(_))
        ));
        assert!(started.elapsed() < Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_dark_text_screen_becomes_dark_ink_on_white_doubled() {
        let (w, h) = (4, 2);
        let mut buf = vec![0u8; w * h * 4];
        buf[..3].copy_from_slice(&[0xaa, 0xaa, 0xaa]); // one grey pixel at (0, 0)
        let pgm = pgm(&Frame::new(w, h, Layout::Bgrx8, buf, 0));
        let header = b"P5\n24 20\n255\n";
        assert_eq!(&pgm[..header.len()], header);
        let body = &pgm[header.len()..];
        assert_eq!(body.len(), 24 * 20);
        let ink: Vec<usize> = (0..body.len()).filter(|&i| body[i] == 0).collect();
        assert_eq!(ink, [8 * 24 + 8, 8 * 24 + 9, 9 * 24 + 8, 9 * 24 + 9]);
    }

    #[test]
    fn a_light_screen_is_not_inverted() {
        let (w, h) = (2, 1);
        let buf = vec![0xff, 0xff, 0xff, 0, 0x10, 0x10, 0x10, 0];
        let pgm = pgm(&Frame::new(w, h, Layout::Bgrx8, buf, 0));
        let body = &pgm[b"P5\n20 18\n255\n".len()..];
        assert_eq!(body.iter().filter(|&&v| v == 0).count(), 4);
        assert_eq!(body[8 * 20 + 10], 0);
    }
}
