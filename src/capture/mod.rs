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

use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

pub use decode::{decode, DecodeError, Limits, SourceFormat};
pub use encode::{jpeg, png, EncodeError, JpegSettings, Subsampling};
pub use frame::{Frame, Layout};

use crate::hypervisor::{self, Hypervisor, RawScreenshot};

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
    pub image: Vec<u8>,
    pub sha256: [u8; 32],
    pub source_format: SourceFormat,
    pub captured_at: SystemTime,
    pub timings: Timings,
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
}

impl Capturer {
    pub fn new(hypervisor: Hypervisor) -> Self {
        Self {
            hypervisor,
            limits: Limits::default(),
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
        let (output, limits) = (request.output, self.limits);
        tokio::task::spawn_blocking(move || process(raw, output, &limits))
            .await
            .map_err(|e| Error::Worker(e.to_string()))?
    }
}

/// Decode, encode and hash one raw screenshot.
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
        image,
        sha256,
        source_format,
        captured_at: taken_at,
        timings,
    })
}

/// Lowercase hexadecimal, as `sha256sum` prints it.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
