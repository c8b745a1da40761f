//! The capture pipeline: libvirt screenshot → decode → JPEG (or PNG) → SHA-256.
//!
//! The grab is I/O on a libvirt thread; decoding, encoding and hashing are CPU
//! work, done on tokio's blocking pool so the async threads stay free. Each
//! stage is timed: when a console is slow to capture, the admin sees where the
//! time went.

mod decode;
mod encode;
mod frame;
mod ppm;
mod reuse;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

pub use decode::{decode, DecodeError, Limits, SourceFormat};
pub use encode::{jpeg, png, EncodeError, JpegSettings, Subsampling};
pub use frame::{Frame, Layout};

use crate::hypervisor::{self, Hypervisor, RawScreenshot};
use reuse::{Encoded, Reuse};

/// Encoded screens kept for reuse: one per domain, screen and output is what
/// a host needs; this leaves room for a few hundred domains.
const REUSE_CAPACITY: usize = 512;

/// The image format vmshot produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
        hex(&self.sha256)
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
}

/// Captures screens through a hypervisor adapter.
#[derive(Clone)]
pub struct Capturer {
    hypervisor: Hypervisor,
    limits: Limits,
    reuse: Arc<Reuse>,
}

impl Capturer {
    pub fn new(hypervisor: Hypervisor) -> Self {
        Self {
            hypervisor,
            limits: Limits::default(),
            reuse: Arc::new(Reuse::new(REUSE_CAPACITY)),
        }
    }

    pub fn hypervisor(&self) -> &Hypervisor {
        &self.hypervisor
    }

    pub async fn capture(&self, request: &Request) -> Result<Shot, Error> {
        let raw = self
            .hypervisor
            .screenshot(&request.domain, request.screen)
            .await?;
        let (output, limits, reuse) = (request.output, self.limits, self.reuse.clone());
        tokio::task::spawn_blocking(move || process_reusing(raw, output, &limits, &reuse))
            .await
            .map_err(|e| Error::Worker(e.to_string()))?
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
        return Ok(Shot {
            domain: raw.domain,
            uuid: raw.uuid,
            screen: raw.screen,
            width: done.width,
            height: done.height,
            output,
            image: done.image,
            sha256: done.sha256,
            source_format: done.source_format,
            captured_at: raw.taken_at,
            timings: Timings {
                grab: raw.elapsed,
                hash: fingerprinting,
                ..Timings::default()
            },
            reused: true,
            shared: false,
        });
    }
    let mut shot = process(raw, output, limits)?;
    shot.timings.hash += fingerprinting;
    reuse.put(
        &shot.uuid,
        shot.screen,
        output,
        fingerprint,
        Encoded {
            width: shot.width,
            height: shot.height,
            source_format: shot.source_format,
            image: shot.image.clone(),
            sha256: shot.sha256,
        },
    );
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

    let started = Instant::now();
    let encoded = match output {
        Output::Jpeg(settings) => jpeg(&frame, settings),
        Output::Png => png(&frame),
    };
    let image = match encoded {
        Ok(image) => image,
        Err(source) => return Err(Error::Encode { domain, source }),
    };
    timings.encode = started.elapsed();

    let started = Instant::now();
    let sha256: [u8; 32] = Sha256::digest(&image).into();
    timings.hash = started.elapsed();

    Ok(Shot {
        domain,
        uuid,
        screen,
        width: frame.width,
        height: frame.height,
        output,
        image: Arc::new(image),
        sha256,
        source_format,
        captured_at: taken_at,
        timings,
        reused: false,
        shared: false,
    })
}

/// Lowercase hexadecimal, as `sha256sum` prints it.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
