//! The encoder pool: the one boundary between recordings and the CPU. A
//! fixed number of threads (`encoder_threads`, the CPU share of all
//! recordings together), each owning the open files of the recordings
//! assigned to it: the video (`record::VideoWriter`) and the events file,
//! both hashed as they are written. Nothing here runs on tokio's threads or
//! under the capture gate, and the threads run at `ENCODER_NICE`, so
//! recordings cannot starve screenshots or the guests' vCPUs: on a busy host
//! they fall behind and drop frames (gaps) instead.
//!
//! Frames are bounded: a thread takes at most `QUEUED_FRAMES` waiting
//! frames; past that `frame` refuses and the recorder writes a gap (frames
//! dropped for the budget). Events and closes always get through.
//!
//! A screen whose size changes mid-recording is scaled (nearest pixel) to the
//! size of the recording's first frame, and the change is an event line: one
//! H.264 track has one size, and a recording that stopped at a resize would
//! lose a boot's every mode switch.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use crate::frame::{Frame, Layout};
use crate::record::{VideoWriter, Written};

/// Frames waiting for one encoder thread, at most.
const QUEUED_FRAMES: usize = 8;
/// The encoder threads' nice value: below QEMU's vCPUs and vmshot's own
/// request threads (both 0) for the CPU.
const ENCODER_NICE: libc::c_int = 10;

/// What a recording has written so far, read by its recorder for the
/// budget and by `get` for a running recording's sizes.
#[derive(Debug, Default)]
pub(super) struct Progress {
    pub video_bytes: AtomicU64,
    pub events_bytes: AtomicU64,
    pub frames: AtomicU64,
}

impl Progress {
    pub fn bytes(&self) -> u64 {
        self.video_bytes.load(Ordering::Relaxed) + self.events_bytes.load(Ordering::Relaxed)
    }
}

/// A closed recording's files.
#[derive(Debug)]
pub(super) struct Closed {
    /// `None` when no frame was ever written (there is no video file).
    pub video: Option<Written>,
    pub events_bytes: u64,
    pub events_sha256: String,
}

enum Msg {
    Open {
        id: String,
        video: PathBuf,
        events: PathBuf,
        progress: Arc<Progress>,
        reply: oneshot::Sender<io::Result<()>>,
    },
    Frame {
        id: String,
        frame: Frame,
        at: Duration,
        wall: String,
    },
    Event {
        id: String,
        line: serde_json::Value,
    },
    Close {
        id: String,
        end: Duration,
        reply: oneshot::Sender<io::Result<Closed>>,
    },
}

struct Lane {
    tx: mpsc::Sender<Msg>,
    queued: Arc<AtomicUsize>,
    sessions: AtomicUsize,
}

/// The threads; cheap to clone.
#[derive(Clone)]
pub(super) struct Pool {
    lanes: Arc<Vec<Lane>>,
}

/// Sets the calling thread's nice value to `ENCODER_NICE`. On Linux,
/// `setpriority(PRIO_PROCESS, 0)` applies to the calling thread alone.
fn lower_priority() {
    // SAFETY: setpriority takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, ENCODER_NICE) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        tracing::warn!(error = %err, "the encoder thread keeps its priority");
    }
}

/// A recording's place on one thread.
pub(super) struct Seat {
    pool: Pool,
    lane: usize,
    id: String,
}

impl Pool {
    pub fn new(threads: usize) -> io::Result<Self> {
        let mut lanes = Vec::new();
        for n in 0..threads.max(1) {
            let (tx, rx) = mpsc::channel();
            let queued = Arc::new(AtomicUsize::new(0));
            let counter = queued.clone();
            std::thread::Builder::new()
                .name(format!("vmshot-rec-{n}"))
                .spawn(move || {
                    lower_priority();
                    run(rx, counter)
                })?;
            lanes.push(Lane {
                tx,
                queued,
                sessions: AtomicUsize::new(0),
            });
        }
        Ok(Self {
            lanes: Arc::new(lanes),
        })
    }

    /// Opens a recording's files on the least busy thread.
    pub async fn open(
        &self,
        id: &str,
        video: PathBuf,
        events: PathBuf,
        progress: Arc<Progress>,
    ) -> io::Result<Seat> {
        let lane = (0..self.lanes.len())
            .min_by_key(|&i| self.lanes[i].sessions.load(Ordering::Relaxed))
            .unwrap_or(0);
        let (reply, answer) = oneshot::channel();
        self.send(
            lane,
            Msg::Open {
                id: id.to_owned(),
                video,
                events,
                progress,
                reply,
            },
        )?;
        answer.await.map_err(|_| gone())??;
        self.lanes[lane].sessions.fetch_add(1, Ordering::Relaxed);
        Ok(Seat {
            pool: self.clone(),
            lane,
            id: id.to_owned(),
        })
    }

    fn send(&self, lane: usize, msg: Msg) -> io::Result<()> {
        self.lanes[lane].tx.send(msg).map_err(|_| gone())
    }
}

fn gone() -> io::Error {
    io::Error::other("the encoder thread is gone")
}

impl Seat {
    /// Queues a frame seen `at` after the recording's origin; false if the
    /// thread has too many waiting (the frame is dropped: a gap).
    pub fn frame(&self, frame: Frame, at: Duration, wall: String) -> bool {
        let lane = &self.pool.lanes[self.lane];
        if lane.queued.fetch_add(1, Ordering::AcqRel) >= QUEUED_FRAMES {
            lane.queued.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        let msg = Msg::Frame {
            id: self.id.clone(),
            frame,
            at,
            wall,
        };
        if self.pool.send(self.lane, msg).is_err() {
            lane.queued.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Appends a line to the events file.
    pub fn event(&self, line: serde_json::Value) {
        let _ = self.pool.send(
            self.lane,
            Msg::Event {
                id: self.id.clone(),
                line,
            },
        );
    }

    /// Closes both files (the video's last frame shown until `end`), fsynced.
    pub async fn close(self, end: Duration) -> io::Result<Closed> {
        let (reply, answer) = oneshot::channel();
        self.pool.send(
            self.lane,
            Msg::Close {
                id: self.id.clone(),
                end,
                reply,
            },
        )?;
        let closed = answer.await.map_err(|_| gone())?;
        self.pool.lanes[self.lane]
            .sessions
            .fetch_sub(1, Ordering::Relaxed);
        closed
    }
}

/// A line-per-write file with its digest.
struct Hashed {
    file: File,
    hasher: Sha256,
    bytes: u64,
}

impl Hashed {
    fn line(&mut self, value: &serde_json::Value) -> io::Result<()> {
        let mut line = serde_json::to_vec(value).map_err(io::Error::other)?;
        line.push(b'\n');
        // One write a line: a crash leaves whole lines and at most one torn.
        self.file.write_all(&line)?;
        self.hasher.update(&line);
        self.bytes += line.len() as u64;
        Ok(())
    }
}

struct Session {
    video_path: PathBuf,
    video: Option<VideoWriter>,
    /// The recording's size: its first frame's, made even.
    size: Option<(usize, usize)>,
    /// The size of the last frame seen, to tell a resize.
    seen: Option<(usize, usize)>,
    last_at: Option<Duration>,
    events: Hashed,
    progress: Arc<Progress>,
    /// The first write error: later frames are ignored, the close reports it.
    failed: Option<String>,
    rgb: Vec<u8>,
}

impl Session {
    fn frame(&mut self, frame: &Frame, at: Duration, wall: String) -> io::Result<()> {
        if self.last_at.is_some_and(|last| at <= last) {
            return Ok(());
        }
        let (w, h) = (frame.width, frame.height);
        let (rw, rh) = *self.size.get_or_insert((w & !1, h & !1));
        if self.seen.is_some_and(|s| s != (w, h)) {
            self.events.line(&serde_json::json!({
                "t": wall, "ms": at.as_millis() as u64, "type": "resize",
                "width": w, "height": h, "scaled_to": [rw, rh],
            }))?;
        }
        self.seen = Some((w, h));
        to_rgb(frame, rw, rh, &mut self.rgb);
        if self.video.is_none() {
            self.video = Some(VideoWriter::create(&self.video_path, rw, rh)?);
        }
        let video = self.video.as_mut().expect("created above");
        let before = self.progress.video_bytes.load(Ordering::Relaxed);
        video.write_frame(&self.rgb, at)?;
        self.last_at = Some(at);
        let after = std::fs::metadata(&self.video_path).map_or(before, |m| m.len());
        self.progress.video_bytes.store(after, Ordering::Relaxed);
        self.progress.frames.fetch_add(1, Ordering::Relaxed);
        self.events.line(&serde_json::json!({
            "t": wall, "ms": at.as_millis() as u64, "type": "frame",
            "width": w, "height": h, "bytes": after.saturating_sub(before),
        }))?;
        self.progress
            .events_bytes
            .store(self.events.bytes, Ordering::Relaxed);
        Ok(())
    }

    fn close(mut self, end: Duration) -> io::Result<Closed> {
        let video = match self.video.take() {
            Some(v) => Some(v.finish(end.max(self.last_at.unwrap_or_default()))?),
            None => None,
        };
        self.events.file.sync_all()?;
        if let Some(reason) = self.failed {
            return Err(io::Error::other(reason));
        }
        Ok(Closed {
            video,
            events_bytes: self.events.bytes,
            events_sha256: hex::encode(self.events.hasher.finalize()),
        })
    }
}

/// `frame` as RGB of `width` x `height` (nearest pixel when sizes differ).
fn to_rgb(frame: &Frame, width: usize, height: usize, out: &mut Vec<u8>) {
    out.clear();
    out.reserve(width * height * 3);
    let (fw, fh) = (frame.width, frame.height);
    let bpp = frame.layout.bytes_per_pixel();
    let stride = frame.stride();
    let px = frame.pixels();
    for y in 0..height {
        // A side made even loses its last row or column: a crop, not a scale.
        let sy = if fh == height || fh == height + 1 {
            y
        } else {
            y * fh / height
        };
        let row = &px[sy * stride..sy * stride + fw * bpp];
        for x in 0..width {
            let sx = if fw == width || fw == width + 1 {
                x
            } else {
                x * fw / width
            };
            let p = &row[sx * bpp..sx * bpp + bpp];
            let rgb = match frame.layout {
                Layout::Gray8 => [p[0]; 3],
                Layout::Rgb8 | Layout::Rgba8 => [p[0], p[1], p[2]],
                Layout::Bgrx8 => [p[2], p[1], p[0]],
            };
            out.extend_from_slice(&rgb);
        }
    }
}

fn run(rx: mpsc::Receiver<Msg>, queued: Arc<AtomicUsize>) {
    let mut sessions: HashMap<String, Session> = HashMap::new();
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Open {
                id,
                video,
                events,
                progress,
                reply,
            } => {
                let opened = File::create(&events).map(|file| Session {
                    video_path: video,
                    video: None,
                    size: None,
                    seen: None,
                    last_at: None,
                    events: Hashed {
                        file,
                        hasher: Sha256::new(),
                        bytes: 0,
                    },
                    progress,
                    failed: None,
                    rgb: Vec::new(),
                });
                let _ = reply.send(opened.map(|s| {
                    sessions.insert(id, s);
                }));
            }
            Msg::Frame {
                id,
                frame,
                at,
                wall,
            } => {
                queued.fetch_sub(1, Ordering::AcqRel);
                if let Some(s) = sessions.get_mut(&id).filter(|s| s.failed.is_none()) {
                    if let Err(e) = s.frame(&frame, at, wall) {
                        tracing::warn!(recording = %id, error = %e, "recording failed to write a frame");
                        s.failed = Some(format!("writing the video failed: {e}"));
                    }
                }
            }
            Msg::Event { id, line } => {
                if let Some(s) = sessions.get_mut(&id).filter(|s| s.failed.is_none()) {
                    if let Err(e) = s.events.line(&line) {
                        s.failed = Some(format!("writing the events failed: {e}"));
                    }
                    s.progress
                        .events_bytes
                        .store(s.events.bytes, Ordering::Relaxed);
                }
            }
            Msg::Close { id, end, reply } => {
                let closed = match sessions.remove(&id) {
                    Some(s) => s.close(end),
                    None => Err(io::Error::other("no such recording open")),
                };
                let _ = reply.send(closed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BGRX frame whose pixel (x, y) is (x, y, x + y) in RGB.
    fn ramp(width: usize, height: usize) -> Frame {
        let mut buf = Vec::with_capacity(width * height * 4);
        for y in 0..height {
            for x in 0..width {
                buf.extend_from_slice(&[(x + y) as u8, y as u8, x as u8, 0]);
            }
        }
        Frame::new(width, height, Layout::Bgrx8, buf, 0)
    }

    /// Nice values of this process's threads named `vmshot-rec-*`
    /// (/proc/self/task/*/stat: the name in parentheses, then field 19).
    fn encoder_nices() -> Vec<i64> {
        let mut nices = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let stat =
                std::fs::read_to_string(task.unwrap().path().join("stat")).unwrap_or_default();
            let Some((head, rest)) = stat.rsplit_once(") ") else {
                continue;
            };
            if head.contains("(vmshot-rec-") {
                nices.push(rest.split(' ').nth(16).unwrap().parse().unwrap());
            }
        }
        nices
    }

    #[test]
    fn encoder_threads_yield_the_cpu() {
        let _pool = Pool::new(2).unwrap();
        // A thread lowers itself once it runs: poll until both have.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let nices = encoder_nices();
            let lowered = nices
                .iter()
                .filter(|n| **n == i64::from(ENCODER_NICE))
                .count();
            if lowered >= 2 && lowered == nices.len() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{nices:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn odd_sides_are_cropped_and_other_sizes_scaled_to_the_recordings() {
        let mut out = Vec::new();
        // Same size: the pixels, as RGB.
        to_rgb(&ramp(4, 2), 4, 2, &mut out);
        assert_eq!(&out[..6], &[0, 0, 0, 1, 0, 1]);
        assert_eq!(&out[3 * 4..3 * 5], &[0, 1, 1]);
        // One more column and row (an odd side made even): a crop.
        to_rgb(&ramp(5, 3), 4, 2, &mut out);
        let mut want = Vec::new();
        to_rgb(&ramp(4, 2), 4, 2, &mut want);
        assert_eq!(out, want);
        // Twice the size: every other pixel.
        to_rgb(&ramp(8, 4), 4, 2, &mut out);
        assert_eq!(out.len(), 4 * 2 * 3);
        assert_eq!(&out[3..6], &[2, 0, 2]);
        assert_eq!(&out[3 * 4..3 * 5], &[0, 2, 2]);
    }
}
