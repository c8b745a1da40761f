//! RGB frames to H.264 (OpenH264, built from source) in fragmented MP4, the
//! file's SHA-256 computed as it is written.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, FrameType, RateControlMode, UsageType, VuiConfig,
};
use openh264::formats::{RgbSliceU8, YUVBuffer};
use openh264::{OpenH264API, Timestamp};
use sha2::{Digest, Sha256};

use super::mp4;

/// A key frame at least this often, so a player can seek without decoding
/// from the start; a static console costs one IDR (tens of KB) a period.
const KEY_FRAME_EVERY: Duration = Duration::from_secs(60);

/// What a finished recording holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub bytes: u64,
    /// Lowercase hex SHA-256 of the file's bytes.
    pub sha256: String,
    pub frames: u64,
}

/// An encoded frame whose duration is known only when the next one comes.
struct Pending {
    at: u64,
    sync: bool,
    avcc: Vec<u8>,
}

/// Writes a recording: `create`, `write_frame` for each changed screen with
/// the time it was seen, then `finish`. Frames are written a frame late (a
/// frame's duration is the gap to the next one), so a crash loses at most the
/// last frame; every earlier one is a whole fragment on disk.
pub struct VideoWriter {
    file: File,
    hasher: Sha256,
    bytes: u64,
    width: usize,
    height: usize,
    encoder: Encoder,
    yuv: YUVBuffer,
    /// The first frame's timestamp: media time starts at it.
    origin: Option<Duration>,
    last_key: Option<Duration>,
    pending: Option<Pending>,
    sequence: u32,
    frames: u64,
}

impl VideoWriter {
    /// A new file at `path` (created or truncated) for frames of `width` x
    /// `height` RGB pixels. H.264 4:2:0 wants even dimensions.
    pub fn create(path: &Path, width: usize, height: usize) -> io::Result<Self> {
        if width == 0
            || height == 0
            || !width.is_multiple_of(2)
            || !height.is_multiple_of(2)
            || width > 4096
            || height > 4096
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot record a {width}x{height} screen: H.264 here wants even sides up to 4096"),
            ));
        }
        let config = EncoderConfig::new()
            .usage_type(UsageType::ScreenContentRealTime)
            .rate_control_mode(RateControlMode::Quality)
            .bitrate(BitRate::from_bps(2_000_000))
            .max_frame_rate(FrameRate::from_hz(5.0))
            .skip_frames(false)
            .adaptive_quantization(false)
            .background_detection(false)
            .num_threads(1)
            .vui(VuiConfig::bt601());
        let encoder =
            Encoder::with_api_config(OpenH264API::from_source(), config).map_err(to_io)?;
        Ok(Self {
            file: File::create(path)?,
            hasher: Sha256::new(),
            bytes: 0,
            width,
            height,
            encoder,
            yuv: YUVBuffer::new(width, height),
            origin: None,
            last_key: None,
            pending: None,
            sequence: 1,
            frames: 0,
        })
    }

    /// Encodes one screen, `rgb` being `width * height * 3` bytes, seen at
    /// `at` (any clock that only goes forward; the first frame is time 0).
    pub fn write_frame(&mut self, rgb: &[u8], at: Duration) -> io::Result<()> {
        if rgb.len() != self.width * self.height * 3 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "frame size differs from the recording's",
            ));
        }
        let origin = *self.origin.get_or_insert(at);
        let since = at.checked_sub(origin).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "frame timestamp before the recording's first",
            )
        })?;
        let media = ticks(since);
        if let Some(p) = &self.pending {
            if media <= p.at {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "frame timestamps must increase",
                ));
            }
        }
        if self
            .last_key
            .is_some_and(|k| since.saturating_sub(k) >= KEY_FRAME_EVERY)
        {
            self.encoder.force_intra_frame();
        }
        self.yuv
            .read_rgb8(RgbSliceU8::new(rgb, (self.width, self.height)));
        let stream = self
            .encoder
            .encode_at(&self.yuv, Timestamp::from_millis(since.as_millis() as u64))
            .map_err(to_io)?;
        let sync = matches!(stream.frame_type(), FrameType::IDR | FrameType::I);
        let (mut sps, mut pps) = (None, None);
        let mut avcc = Vec::new();
        for l in 0..stream.num_layers() {
            let layer = stream.layer(l).expect("layer within num_layers");
            for n in 0..layer.nal_count() {
                let nal = strip_start_code(layer.nal_unit(n).expect("NAL within nal_count"));
                match nal.first().map(|b| b & 0x1f) {
                    Some(7) => sps = Some(nal.to_vec()),
                    Some(8) => pps = Some(nal.to_vec()),
                    _ => {}
                }
                avcc.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                avcc.extend_from_slice(nal);
            }
        }
        if avcc.is_empty() {
            // A skipped frame: the previous one stays on screen.
            return Ok(());
        }
        if sync {
            self.last_key = Some(since);
        }
        if self.bytes == 0 {
            let (Some(sps), Some(pps)) = (sps, pps) else {
                return Err(io::Error::other(
                    "the encoder's first frame carries no SPS and PPS",
                ));
            };
            self.put(&mp4::init_segment(
                self.width as u16,
                self.height as u16,
                &sps,
                &pps,
            ))?;
        }
        if let Some(prev) = self.pending.take() {
            self.put_sample(prev, media)?;
        }
        self.pending = Some(Pending {
            at: media,
            sync,
            avcc,
        });
        Ok(())
    }

    /// Writes the last frame, shown until `end` (at least a tick after it),
    /// flushes the file to disk and says what it holds.
    pub fn finish(mut self, end: Duration) -> io::Result<Written> {
        if let Some(last) = self.pending.take() {
            let end = ticks(end.saturating_sub(self.origin.unwrap_or_default())).max(last.at + 1);
            self.put_sample(last, end)?;
        }
        self.file.sync_all()?;
        Ok(Written {
            bytes: self.bytes,
            sha256: hex::encode(self.hasher.finalize()),
            frames: self.frames,
        })
    }

    fn put_sample(&mut self, sample: Pending, next_at: u64) -> io::Result<()> {
        let duration = u32::try_from(next_at - sample.at).unwrap_or(u32::MAX);
        let fragment = mp4::fragment(
            self.sequence,
            sample.at,
            duration,
            sample.sync,
            &sample.avcc,
        );
        self.sequence += 1;
        self.frames += 1;
        self.put(&fragment)
    }

    /// One write a fragment: a crash leaves whole fragments and at most one torn one.
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
        Ok(())
    }
}

fn ticks(d: Duration) -> u64 {
    (d.as_nanos() * u128::from(mp4::TIMESCALE) / 1_000_000_000) as u64
}

fn strip_start_code(nal: &[u8]) -> &[u8] {
    nal.strip_prefix(&[0, 0, 0, 1][..])
        .or_else(|| nal.strip_prefix(&[0, 0, 1][..]))
        .unwrap_or(nal)
}

fn to_io(e: openh264::Error) -> io::Error {
    io::Error::other(format!("H.264 encoder: {e}"))
}
