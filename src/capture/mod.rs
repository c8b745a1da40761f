//! The capture pipeline: libvirt screenshot → decode → JPEG (or PNG) → SHA-256;
//! or, on the fast path, the domain's VNC mirror (`mirrors`) → JPEG → SHA-256.
//!
//! The grab is I/O on a libvirt thread; decoding, encoding and hashing are CPU
//! work, done on tokio's blocking pool so the async threads stay free. Each
//! stage is timed: when a console is slow to capture, the admin sees where the
//! time went.

mod decode;
mod encode;
mod gate;
mod mirrors;
mod ppm;
mod reuse;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

pub use crate::frame::{Frame, Layout};
pub use decode::{decode, DecodeError, Limits, SourceFormat};
pub use encode::{jpeg, png, EncodeError, JpegSettings, Subsampling};
pub use mirrors::MirrorPolicy;

use crate::hypervisor::{self, Hypervisor, RawScreenshot};
use gate::Gate;
use mirrors::{Mirrors, Ready};
use reuse::{Encoded, Fingerprint, Reuse};

/// Encoded screens kept for reuse: one per domain, screen and output is what
/// a host needs; this leaves room for a few hundred domains.
const REUSE_CAPACITY: usize = 512;
/// `capture.max_concurrent` and `max_queued`'s defaults, for a capturer
/// made without `with_gate`.
const DEFAULT_CONCURRENT: usize = 4;
const DEFAULT_QUEUED: usize = 64;

/// The image format vmshot produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Output {
    Jpeg(JpegSettings),
    /// Lossless, for when every pixel matters (and size does not).
    Png,
}

impl Output {
    pub fn name(self) -> &'static str {
        match self {
            Self::Jpeg(_) => "jpeg",
            Self::Png => "png",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Jpeg(_) => "jpg",
            Self::Png => "png",
        }
    }
}

impl Default for Output {
    fn default() -> Self {
        Self::Jpeg(JpegSettings::default())
    }
}

/// What to capture, and how to encode it.
#[derive(Debug, Clone)]
pub struct Request {
    /// Domain name or UUID.
    pub domain: String,
    pub screen: u32,
    pub output: Output,
    /// Skip the fast path: the screen as QEMU holds it now, through
    /// `virDomainScreenshot`, not as the VNC mirror last heard of it.
    pub fresh: bool,
    /// The domain as the caller has just looked it up and found holding a
    /// console: only then may the fast path serve, with no libvirt call.
    pub checked: Option<Checked>,
}

/// A domain's name and UUID, looked up by the caller of a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub name: String,
    pub uuid: String,
}

/// Time spent in each stage of one capture.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// In libvirt and QEMU: lookup, screendump, reading the stream.
    pub grab: Duration,
    pub decode: Duration,
    pub encode: Duration,
    /// SHA-256 of the source (to recognise an unchanged screen) and of the output.
    pub hash: Duration,
}

impl Timings {
    /// Everything after the grab: what vmshot itself spends on the image.
    pub fn processing(&self) -> Duration {
        self.decode + self.encode + self.hash
    }
}

/// One captured screen.
#[derive(Debug, Clone)]
pub struct Shot {
    pub domain: String,
    pub uuid: String,
    pub screen: u32,
    pub width: usize,
    pub height: usize,
    pub output: Output,
    /// Shared: callers of one capture, and later captures of an unchanged
    /// screen, hold the same bytes.
    pub image: Arc<Vec<u8>>,
    pub sha256: [u8; 32],
    pub source_format: SourceFormat,
    pub captured_at: SystemTime,
    pub timings: Timings,
    /// The screen had not changed since the last capture: its image was reused.
    pub reused: bool,
    /// This caller joined a capture in flight for another caller (set by the
    /// service, which runs one capture per screen at a time).
    pub shared: bool,
}

impl Shot {
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }

    /// The image and what describes it, to keep for reuse.
    fn encoded(&self) -> Encoded {
        Encoded {
            width: self.width,
            height: self.height,
            source_format: self.source_format,
            output: self.output,
            image: self.image.clone(),
            sha256: self.sha256,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Hypervisor(#[from] hypervisor::Error),
    #[error("the screenshot of domain '{domain}' cannot be decoded: {source}")]
    Decode {
        domain: String,
        #[source]
        source: DecodeError,
    },
    #[error("the screenshot of domain '{domain}' cannot be encoded: {source}")]
    Encode {
        domain: String,
        #[source]
        source: EncodeError,
    },
    #[error("the image worker failed: {0}")]
    Worker(String),
    #[error("too many screens being processed on this host")]
    Busy,
}

/// Captures screens through a hypervisor adapter.
#[derive(Clone)]
pub struct Capturer {
    hypervisor: Hypervisor,
    limits: Limits,
    reuse: Arc<Reuse>,
    /// The fast path, when enabled.
    mirrors: Option<Arc<Mirrors>>,
    gate: Arc<Gate>,
}

impl Capturer {
    /// A capturer that always asks libvirt for a screenshot.
    pub fn new(hypervisor: Hypervisor) -> Self {
        Self {
            hypervisor,
            limits: Limits::default(),
            reuse: Arc::new(Reuse::new(REUSE_CAPACITY)),
            mirrors: None,
            gate: Arc::new(Gate::new(DEFAULT_CONCURRENT, DEFAULT_QUEUED)),
        }
    }

    /// At most `max_concurrent` screens processed at once and `max_queued`
    /// waiting for a turn; past that, captures fail with `Busy`.
    pub fn with_gate(self, max_concurrent: usize, max_queued: usize) -> Self {
        Self {
            gate: Arc::new(Gate::new(max_concurrent, max_queued)),
            ..self
        }
    }

    /// A capturer that serves screens from VNC mirrors where it can (see
    /// `mirrors`). Call from within the tokio runtime.
    pub fn with_mirrors(hypervisor: Hypervisor, policy: MirrorPolicy) -> Self {
        let mirrors = Mirrors::new(hypervisor.clone(), policy);
        Self {
            mirrors: Some(mirrors),
            ..Self::new(hypervisor)
        }
    }

    /// VNC mirrors holding a screen now (0 without the fast path).
    pub fn mirrors_open(&self) -> usize {
        self.mirrors.as_ref().map_or(0, |m| m.open_count())
    }

    pub fn hypervisor(&self) -> &Hypervisor {
        &self.hypervisor
    }

    /// The domain's VNC mirror (by UUID) if it holds a complete screen, for a
    /// recording; if it has none yet, one is opened in the background, as
    /// for a capture. Asking counts as a use: a recording that asks at least
    /// every `idle_after` keeps the registry's mirror from closing, and the
    /// clone it holds keeps the connection open regardless.
    pub fn mirror(&self, domain: &str) -> Option<hypervisor::Mirror> {
        self.mirrors
            .as_ref()
            .and_then(|m| m.ready(domain))
            .map(|ready| ready.mirror)
    }

    /// The screen as libvirt's screenshot gives it now, decoded (no encoding):
    /// a recording's frames when the domain has no mirror, a thumbnail's.
    pub async fn frame(&self, domain: &str) -> Result<Frame, Error> {
        let raw = self.hypervisor.screenshot(domain, 0).await?;
        let _pass = self.gate.enter().await.ok_or(Error::Busy)?;
        let (limits, name) = (self.limits, raw.domain.clone());
        tokio::task::spawn_blocking(move || decode(raw.payload, &raw.mime, &limits))
            .await
            .map_err(|e| Error::Worker(e.to_string()))?
            .map(|(_, frame)| frame)
            .map_err(|source| Error::Decode {
                domain: name,
                source,
            })
    }

    pub async fn capture(&self, request: &Request) -> Result<Shot, Error> {
        // The fast path serves only a domain the caller has just checked: a
        // mirror cannot tell a suspended guest from a black screen. Mirrors
        // are kept per domain UUID.
        let ready = match (&self.mirrors, &request.checked) {
            (Some(mirrors), Some(checked)) if !request.fresh && request.screen == 0 => {
                mirrors.ready(&checked.uuid).map(|ready| (ready, checked))
            }
            _ => None,
        };
        if let Some((ready, checked)) = ready {
            let _pass = self.gate.enter().await.ok_or(Error::Busy)?;
            if let Some(shot) = self
                .capture_mirrored(request.output, checked, ready)
                .await?
            {
                return Ok(shot);
            }
        }
        // The gate is entered once the screenshot is in: only its PNG or PPM,
        // at most `max_payload`, waits for a turn.
        let raw = self
            .hypervisor
            .screenshot(&request.domain, request.screen)
            .await?;
        let _pass = self.gate.enter().await.ok_or(Error::Busy)?;
        let (output, limits, reuse) = (request.output, self.limits, self.reuse.clone());
        tokio::task::spawn_blocking(move || process_reusing(raw, output, &limits, &reuse))
            .await
            .map_err(|e| Error::Worker(e.to_string()))?
    }
}

impl Capturer {
    /// The fast path: the mirror's screen, encoded unless it has not changed
    /// since the last capture. `None` if the mirror has no complete screen
    /// after all (it is resizing, or just died): the caller takes a screenshot.
    async fn capture_mirrored(
        &self,
        output: Output,
        checked: &Checked,
        ready: Ready,
    ) -> Result<Option<Shot>, Error> {
        let started = Instant::now();
        let taken_at = SystemTime::now();
        let (domain, uuid) = (checked.name.clone(), checked.uuid.clone());
        let fingerprint = mirror_fingerprint(ready.id, ready.mirror.generation());
        if let Some(done) = self.reuse.get(&uuid, 0, output, &fingerprint) {
            let timings = Timings {
                grab: started.elapsed(),
                ..Timings::default()
            };
            return Ok(Some(
                done.into_shot(domain, uuid, 0, taken_at, timings, true),
            ));
        }
        let Some(snapshot) = ready.mirror.snapshot() else {
            return Ok(None);
        };
        let grab = started.elapsed();
        let reuse = self.reuse.clone();
        let id = ready.id;
        tokio::task::spawn_blocking(move || {
            let mut timings = Timings {
                grab,
                ..Timings::default()
            };
            let encoded = encode_frame(
                &domain,
                &snapshot.frame,
                SourceFormat::Vnc,
                output,
                &mut timings,
            )?;
            let fingerprint = mirror_fingerprint(id, snapshot.generation);
            reuse.put(&uuid, 0, output, fingerprint, encoded.clone());
            Ok(Some(
                encoded.into_shot(domain, uuid, 0, taken_at, timings, false),
            ))
        })
        .await
        .map_err(|e| Error::Worker(e.to_string()))?
    }
}

/// Names a mirrored picture exactly: mirror ids are unique in the process, and
/// a mirror's generation changes whenever its pixels do.
fn mirror_fingerprint(id: u64, generation: u64) -> Fingerprint {
    let mut fingerprint = [0; 32];
    fingerprint[..8].copy_from_slice(b"vnc-mirr");
    fingerprint[8..16].copy_from_slice(&id.to_le_bytes());
    fingerprint[16..24].copy_from_slice(&generation.to_le_bytes());
    fingerprint
}

/// Encodes and hashes a frame, timed into `timings`.
fn encode_frame(
    domain: &str,
    frame: &Frame,
    source_format: SourceFormat,
    output: Output,
    timings: &mut Timings,
) -> Result<Encoded, Error> {
    let started = Instant::now();
    let image = match output {
        Output::Jpeg(settings) => jpeg(frame, settings),
        Output::Png => png(frame),
    }
    .map_err(|source| Error::Encode {
        domain: domain.to_owned(),
        source,
    })?;
    timings.encode = started.elapsed();
    let started = Instant::now();
    let sha256: [u8; 32] = Sha256::digest(&image).into();
    timings.hash = started.elapsed();
    Ok(Encoded {
        width: frame.width,
        height: frame.height,
        source_format,
        output,
        image: Arc::new(image),
        sha256,
    })
}

impl Encoded {
    /// The shot of this image, for one capture of `domain`.
    fn into_shot(
        self,
        domain: String,
        uuid: String,
        screen: u32,
        captured_at: SystemTime,
        timings: Timings,
        reused: bool,
    ) -> Shot {
        Shot {
            domain,
            uuid,
            screen,
            width: self.width,
            height: self.height,
            output: self.output,
            image: self.image,
            sha256: self.sha256,
            source_format: self.source_format,
            captured_at,
            timings,
            reused,
            shared: false,
        }
    }
}

/// `process`, unless the payload is the one the last image of this screen was
/// made from: then that image, at the cost of hashing the payload.
fn process_reusing(
    raw: RawScreenshot,
    output: Output,
    limits: &Limits,
    reuse: &Reuse,
) -> Result<Shot, Error> {
    let started = Instant::now();
    let fingerprint: [u8; 32] = Sha256::digest(&raw.payload).into();
    let fingerprinting = started.elapsed();
    if let Some(done) = reuse.get(&raw.uuid, raw.screen, output, &fingerprint) {
        let timings = Timings {
            grab: raw.elapsed,
            hash: fingerprinting,
            ..Timings::default()
        };
        return Ok(done.into_shot(
            raw.domain,
            raw.uuid,
            raw.screen,
            raw.taken_at,
            timings,
            true,
        ));
    }
    let mut shot = process(raw, output, limits)?;
    shot.timings.hash += fingerprinting;
    reuse.put(&shot.uuid, shot.screen, output, fingerprint, shot.encoded());
    Ok(shot)
}

/// Decode, encode and hash one raw screenshot (always: no reuse).
pub fn process(raw: RawScreenshot, output: Output, limits: &Limits) -> Result<Shot, Error> {
    let RawScreenshot {
        domain,
        uuid,
        screen,
        mime,
        payload,
        taken_at,
        elapsed,
    } = raw;
    let mut timings = Timings {
        grab: elapsed,
        ..Timings::default()
    };
    let started = Instant::now();
    let (source_format, frame) = match decode(payload, &mime, limits) {
        Ok(decoded) => decoded,
        Err(source) => return Err(Error::Decode { domain, source }),
    };
    timings.decode = started.elapsed();
    let encoded = encode_frame(&domain, &frame, source_format, output, &mut timings)?;
    Ok(encoded.into_shot(domain, uuid, screen, taken_at, timings, false))
}
