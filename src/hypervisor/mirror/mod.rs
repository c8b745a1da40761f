//! A live mirror of a domain's screen, kept over a VNC (RFB) connection that
//! libvirt opens for us (`virDomainOpenGraphicsFD`, no password, no port, no
//! taint).
//!
//! `virDomainScreenshot` makes QEMU encode a PNG on every call (~40 ms at
//! 1024x768). A mirror instead receives only what changed, as QEMU notices it,
//! into memory: a capture then reads that memory (shared, copy-on-write). One tokio task per
//! mirror owns the socket; callers read the last complete picture it published.
//!
//! The mirror is a guest on the console, never its owner: it connects as a
//! *shared* client, so a user's viewer stays connected. If QEMU or a user's
//! exclusive client closes the connection, the mirror just reports itself dead;
//! the caller falls back to screenshots and may open a new one later.

mod canvas;
#[doc(hidden)]
pub mod fuzz;
pub mod rfb;

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{oneshot, watch};

use crate::frame::{Frame, Layout};

use super::{Error, Hypervisor};
use canvas::{Canvas, Image};
use rfb::{Decoder, Event, Handshake, RfbError, ServerInit};

/// Time limits of a mirror.
#[derive(Debug, Clone)]
pub struct MirrorSettings {
    /// From the connection to ServerInit.
    pub handshake_timeout: Duration,
    /// From the handshake (or a change of screen size) to a complete screen.
    pub first_frame_timeout: Duration,
    /// Silence after which the mirror asks the server for one pixel, to learn
    /// whether it is still there: an idle screen sends nothing at all.
    pub probe_after: Duration,
    /// How long the server may take to answer that request. QEMU answers at
    /// its next refresh, at most 3 s away on an idle screen.
    pub probe_timeout: Duration,
    /// Longest a write to the server may block.
    pub write_timeout: Duration,
}

impl Default for MirrorSettings {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(5),
            first_frame_timeout: Duration::from_secs(10),
            probe_after: Duration::from_secs(15),
            probe_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a mirror could not be opened or stopped working.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error(transparent)]
    Protocol(#[from] RfbError),
    #[error("the VNC connection failed: {0}")]
    Io(std::io::Error),
    #[error("the VNC server closed the connection (QEMU went away, or a client took the console exclusively)")]
    Closed,
    #[error("{what} within {:.1} s", after.as_secs_f64())]
    Timeout { what: &'static str, after: Duration },
    #[error("the VNC server sent a rectangle the mirror cannot place")]
    Misplaced,
}

impl From<std::io::Error> for MirrorError {
    fn from(e: std::io::Error) -> Self {
        use std::io::ErrorKind::{BrokenPipe, ConnectionReset};
        // Whether the server's close shows up as an end of file or as a
        // failed write depends on who spoke last: the same event either way.
        match e.kind() {
            BrokenPipe | ConnectionReset => Self::Closed,
            _ => Self::Io(e),
        }
    }
}

/// The mirrored screen as it was when taken: it shares the mirror's pixels, and
/// the mirror copies them before changing any while a snapshot holds them.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The screen, `Layout::Bgrx8`.
    pub frame: Frame,
    /// The mirror's generation when the copy was taken.
    pub generation: u64,
    /// When the pixels last changed.
    pub updated_at: Instant,
    /// When the server last sent an update (changed pixels or not): the
    /// picture is known current as of then, give or take QEMU's refresh delay.
    pub heard_at: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Waiting for every pixel of the screen (at the start, after a resize).
    Syncing,
    Synced,
    Dead,
}

/// What the task publishes and callers read.
struct Published {
    image: Image,
    /// `image` is a complete screen: false until the first one, while a new
    /// size is being filled in, and once the mirror is dead. Kept under the
    /// same lock as the image so that a snapshot never sees a half-filled one.
    synced: bool,
    generation: u64,
    updated_at: Instant,
    heard_at: Instant,
    failure: Option<String>,
}

struct Shared {
    label: String,
    alive: AtomicBool,
    published: Mutex<Published>,
    status: watch::Sender<Status>,
    /// The generation, for subscribers that wake only when the screen
    /// changed (recordings); also signalled once when the mirror dies.
    changes: watch::Sender<u64>,
}

impl Shared {
    fn published(&self) -> MutexGuard<'_, Published> {
        // The lock only guards plain copies; a poisoned one still holds a
        // consistent picture.
        self.published.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Owned by the `Mirror` handles; its drop stops the task.
struct Handle {
    shared: Arc<Shared>,
    _stop: oneshot::Sender<()>,
}

/// A live mirror of one domain's screen. Clones share the connection, which
/// is closed when the last clone is dropped.
#[derive(Clone)]
pub struct Mirror {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("label", &self.handle.shared.label)
            .field("alive", &self.is_alive())
            .finish()
    }
}

impl Mirror {
    /// Opens a mirror of the first VNC display of `domain` (a name or UUID)
    /// and completes the RFB handshake; the screen then follows (`wait_synced`).
    pub async fn open(hypervisor: &Hypervisor, domain: &str) -> Result<Mirror, Error> {
        Self::open_with(hypervisor, domain, MirrorSettings::default()).await
    }

    pub async fn open_with(
        hypervisor: &Hypervisor,
        domain: &str,
        settings: MirrorSettings,
    ) -> Result<Mirror, Error> {
        let fd = hypervisor.open_graphics(domain).await?;
        let label = format!("domain '{domain}'");
        Self::over_fd(fd, &label, settings)
            .await
            .map_err(|e| match e {
                // The only deadline before `open` returns.
                MirrorError::Timeout { after, .. } => Error::Timeout {
                    what: format!("the VNC handshake with domain '{domain}'"),
                    after,
                },
                e => Error::Libvirt {
                    what: format!("open a VNC mirror of domain '{domain}'"),
                    message: e.to_string(),
                },
            })
    }

    /// A mirror over a connected stream socket to an RFB server; `label`
    /// names it in logs.
    pub async fn over_fd(
        fd: OwnedFd,
        label: &str,
        settings: MirrorSettings,
    ) -> Result<Mirror, MirrorError> {
        let stream = std::os::unix::net::UnixStream::from(fd);
        stream.set_nonblocking(true)?;
        Self::over_stream(UnixStream::from_std(stream)?, label, settings).await
    }

    pub async fn over_stream(
        mut stream: UnixStream,
        label: &str,
        settings: MirrorSettings,
    ) -> Result<Mirror, MirrorError> {
        let started = Instant::now();
        let (init, leftover) =
            tokio::time::timeout(settings.handshake_timeout, handshake(&mut stream))
                .await
                .map_err(|_| MirrorError::Timeout {
                    what: "no handshake from the VNC server",
                    after: settings.handshake_timeout,
                })??;
        tracing::debug!(
            mirror = %label,
            width = init.width,
            height = init.height,
            name = %init.name,
            version = ?init.version,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "VNC mirror connected"
        );
        let now = Instant::now();
        let shared = Arc::new(Shared {
            label: label.to_owned(),
            alive: AtomicBool::new(true),
            published: Mutex::new(Published {
                image: Image::default(),
                synced: false,
                generation: 0,
                updated_at: now,
                heard_at: now,
                failure: None,
            }),
            status: watch::Sender::new(Status::Syncing),
            changes: watch::Sender::new(0),
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        tokio::spawn(run(
            stream,
            shared.clone(),
            stop_rx,
            init,
            leftover,
            settings,
        ));
        Ok(Mirror {
            handle: Arc::new(Handle {
                shared,
                _stop: stop_tx,
            }),
        })
    }

    /// Waits until the mirror holds a complete screen, at most `limit`; false
    /// if it does not (yet), or if it died.
    pub async fn wait_synced(&self, limit: Duration) -> bool {
        let mut status = self.handle.shared.status.subscribe();
        let settled = tokio::time::timeout(limit, status.wait_for(|s| *s != Status::Syncing))
            .await
            .ok()
            .and_then(Result::ok)
            .map(|s| *s);
        settled == Some(Status::Synced)
    }

    pub fn is_alive(&self) -> bool {
        self.handle.shared.alive.load(Ordering::Acquire)
    }

    /// Why the mirror died, once it has.
    pub fn failure(&self) -> Option<String> {
        self.handle.shared.published().failure.clone()
    }

    /// Bytes of the screen the mirror holds (4 per pixel).
    pub fn screen_bytes(&self) -> usize {
        self.handle.shared.published().image.pixels.len()
    }

    /// Changes whenever the mirrored pixels change (and only then).
    pub fn generation(&self) -> u64 {
        self.handle.shared.published().generation
    }

    /// The generation as it changes: `changed()` wakes when the mirrored
    /// pixels changed, or when the mirror died (check `is_alive`), and never
    /// for a screen that stayed the same.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.handle.shared.changes.subscribe()
    }

    /// The screen, without copying it; `None` until it is complete, while a new screen
    /// size is being filled in, and once the mirror is dead.
    pub fn snapshot(&self) -> Option<Snapshot> {
        let published = self.handle.shared.published();
        if !published.synced {
            return None;
        }
        let image = &published.image;
        let frame = Frame::shared(
            image.width,
            image.height,
            Layout::Bgrx8,
            image.pixels.clone(),
            0,
        );
        Some(Snapshot {
            frame,
            generation: published.generation,
            updated_at: published.updated_at,
            heard_at: published.heard_at,
        })
    }
}

/// Reads bytes until the handshake is through; returns ServerInit and the
/// bytes that came after it.
async fn handshake(stream: &mut UnixStream) -> Result<(ServerInit, Vec<u8>), MirrorError> {
    // Always shared: with shared-flag 0, QEMU's default policy
    // (allow-exclusive) disconnects the user's own viewer.
    let mut hs = Handshake::new(true);
    let mut buf = Vec::with_capacity(4096);
    loop {
        while let Some(step) = hs.feed(&buf)? {
            buf.drain(..step.consumed);
            if !step.reply.is_empty() {
                stream.write_all(&step.reply).await?;
            }
            if let Some(init) = step.init {
                return Ok((init, buf));
            }
        }
        // The codec refuses anything longer than a header and 4 KiB of text
        // before it gets here; this only keeps the buffer bounded regardless.
        if buf.len() > 2 * rfb::MAX_TEXT as usize {
            return Err(MirrorError::Protocol(RfbError::TooLong {
                what: "handshake message",
                len: u32::try_from(buf.len()).unwrap_or(u32::MAX),
                limit: 2 * rfb::MAX_TEXT,
            }));
        }
        buf.reserve(4096);
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(MirrorError::Closed);
        }
    }
}

async fn run(
    mut stream: UnixStream,
    shared: Arc<Shared>,
    stop: oneshot::Receiver<()>,
    init: ServerInit,
    leftover: Vec<u8>,
    settings: MirrorSettings,
) {
    let outcome = tokio::select! {
        outcome = session(&mut stream, &shared, init, leftover, &settings) => outcome,
        _ = stop => Ok(()),
    };
    let failure = match outcome {
        Ok(()) => {
            tracing::debug!(mirror = %shared.label, "VNC mirror closed");
            "the mirror was closed".to_owned()
        }
        Err(e) => {
            tracing::info!(mirror = %shared.label, error = %e, "VNC mirror died");
            e.to_string()
        }
    };
    {
        let mut published = shared.published();
        published.failure = Some(failure);
        published.synced = false;
    }
    shared.alive.store(false, Ordering::Release);
    shared.status.send_replace(Status::Dead);
    shared.changes.send_modify(|_| {});
}

/// Bytes asked of the socket per read. The buffer also needs room for one
/// whole pixel row (8192 * 4) plus a header, which the decoder returns whole.
const READ_CHUNK: usize = 64 * 1024;

async fn session(
    stream: &mut UnixStream,
    shared: &Shared,
    init: ServerInit,
    mut buf: Vec<u8>,
    settings: &MirrorSettings,
) -> Result<(), MirrorError> {
    let mut decoder = Decoder::new(init.width, init.height);
    let mut canvas = Canvas::new(init.width, init.height);
    canvas.prepare(&mut shared.published().image);
    let mut out = Vec::new();
    out.extend_from_slice(&rfb::set_pixel_format_bgrx());
    out.extend_from_slice(&rfb::set_encodings(&[
        rfb::ENCODING_RAW,
        rfb::ENCODING_COPY_RECT,
        rfb::ENCODING_DESKTOP_SIZE,
    ]));
    out.extend_from_slice(&rfb::update_request(false, 0, 0, init.width, init.height));

    let mut sync_by = Some(Instant::now() + settings.first_frame_timeout);
    let mut heard = Instant::now();
    let mut probed: Option<Instant> = None;
    loop {
        let mut pos = 0;
        loop {
            // The bytes used count even without an event: they were headers.
            let (used, event) = decoder.next(&buf[pos..])?;
            pos += used;
            let Some(event) = event else { break };
            match event {
                Event::Rect {
                    x,
                    y,
                    width,
                    height,
                } => canvas.rect(x, y, width, height),
                Event::Row { x, y, pixels } => {
                    // A screen being received whole is not readable yet: its
                    // rows need no staging (see canvas).
                    let placed = if canvas.syncing() {
                        canvas.row_into(&mut shared.published().image, x, y, pixels)
                    } else {
                        canvas.row(x, y, pixels)
                    };
                    if !placed {
                        return Err(MirrorError::Misplaced);
                    }
                }
                Event::Copy {
                    src_x,
                    src_y,
                    x,
                    y,
                    width,
                    height,
                } => {
                    if canvas.syncing() {
                        let image = &mut shared.published().image;
                        canvas.copy_into(image, (src_x, src_y), x, y, width, height);
                    } else {
                        canvas.copy(src_x, src_y, x, y, width, height);
                    }
                }
                Event::Resize { width, height } => {
                    tracing::debug!(mirror = %shared.label, width, height, "VNC screen resized");
                    canvas.resize(width, height);
                    {
                        let mut published = shared.published();
                        published.synced = false;
                        canvas.prepare(&mut published.image);
                    }
                    shared.status.send_replace(Status::Syncing);
                    sync_by = Some(Instant::now() + settings.first_frame_timeout);
                    // QEMU repaints after a resize anyway; asking makes it so
                    // for any server.
                    out.extend_from_slice(&rfb::update_request(false, 0, 0, width, height));
                }
                Event::UpdateEnd => {
                    heard = Instant::now();
                    probed = None;
                    let complete = canvas.complete();
                    let changed = {
                        let mut published = shared.published();
                        let became_synced = complete && !published.synced;
                        let changed = canvas.publish(&mut published.image);
                        if changed {
                            published.generation += 1;
                            published.updated_at = heard;
                        }
                        published.heard_at = heard;
                        published.synced = complete;
                        // A screen completed after a resize counts as a change.
                        ((changed || became_synced) && complete).then_some(published.generation)
                    };
                    if let Some(generation) = changed {
                        shared.changes.send_replace(generation);
                    }
                    if complete && sync_by.take().is_some() {
                        shared.status.send_replace(Status::Synced);
                    }
                    let (width, height) = canvas.size();
                    out.extend_from_slice(&rfb::update_request(true, 0, 0, width, height));
                }
                Event::UpdateStart { .. }
                | Event::Bell
                | Event::ColourMap { .. }
                | Event::CutText { .. }
                | Event::Skipped(_) => {}
            }
        }
        buf.drain(..pos);

        if !out.is_empty() {
            tokio::time::timeout(settings.write_timeout, stream.write_all(&out))
                .await
                .map_err(|_| MirrorError::Timeout {
                    what: "the VNC server did not read our requests",
                    after: settings.write_timeout,
                })??;
            out.clear();
        }

        let (deadline, expired) = match (sync_by, probed) {
            (Some(by), _) => (
                by,
                MirrorError::Timeout {
                    what: "no complete screen from the VNC server",
                    after: settings.first_frame_timeout,
                },
            ),
            (None, Some(at)) => (
                at + settings.probe_timeout,
                MirrorError::Timeout {
                    what: "no answer to a probe from the VNC server",
                    after: settings.probe_timeout,
                },
            ),
            (None, None) => (
                heard + settings.probe_after,
                // Not an error: time to probe (below).
                MirrorError::Closed,
            ),
        };
        buf.reserve(READ_CHUNK);
        match tokio::time::timeout_at(deadline.into(), stream.read_buf(&mut buf)).await {
            Ok(Ok(0)) => return Err(MirrorError::Closed),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(_) if sync_by.is_none() && probed.is_none() => {
                probed = Some(Instant::now());
                out.extend_from_slice(&rfb::update_request(false, 0, 0, 1, 1));
            }
            Err(_) => return Err(expired),
        }
    }
}

#[cfg(test)]
mod tests;
