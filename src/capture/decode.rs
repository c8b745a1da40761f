//! Screenshot payloads (PNG from QEMU 7.1 on, PPM before) into `Frame`s.
//!
//! The payload comes from QEMU through libvirt: trusted more than a network
//! peer, but a wedged or hostile guest driver can still set odd modes, so sizes
//! are checked before anything is allocated, and every failure is an error
//! value, never a panic.

use super::ppm;
use crate::frame::{Frame, Layout};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    Png,
    Ppm,
    /// Pixels from the domain's VNC mirror (the fast path): nothing to decode.
    Vnc,
}

impl SourceFormat {
    /// Recognises a payload by its first bytes; libvirt's MIME type is only a hint.
    pub fn sniff(payload: &[u8]) -> Option<Self> {
        if payload.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Self::Png)
        } else if payload.starts_with(b"P6") || payload.starts_with(b"P5") {
            Some(Self::Ppm)
        } else {
            None
        }
    }
}

/// Bounds on what a decoder accepts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_width: usize,
    pub max_height: usize,
    pub max_pixels: usize,
}

impl Default for Limits {
    /// 8K UHD (7680x4320) fits; QEMU's own displays stop well below.
    fn default() -> Self {
        Self {
            max_width: 16384,
            max_height: 16384,
            max_pixels: 7680 * 4320,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the payload is empty")]
    Empty,
    #[error("the payload is neither PNG nor PPM (libvirt said {mime})")]
    UnknownFormat { mime: String },
    #[error("the payload is truncated: {0}")]
    Truncated(String),
    #[error("the image is {width}x{height}, beyond the {max_width}x{max_height}, {max_pixels}-pixel limit")]
    TooLarge {
        width: usize,
        height: usize,
        max_width: usize,
        max_height: usize,
        max_pixels: usize,
    },
    #[error("the payload is corrupt: {0}")]
    Corrupt(String),
}

pub(super) fn check_dimensions(
    width: usize,
    height: usize,
    limits: &Limits,
) -> Result<(), DecodeError> {
    if width == 0 || height == 0 {
        return Err(DecodeError::Corrupt(format!(
            "the image is {width}x{height}"
        )));
    }
    if width > limits.max_width || height > limits.max_height || width * height > limits.max_pixels
    {
        return Err(DecodeError::TooLarge {
            width,
            height,
            max_width: limits.max_width,
            max_height: limits.max_height,
            max_pixels: limits.max_pixels,
        });
    }
    Ok(())
}

/// Decodes a screenshot payload; `mime` only serves error messages.
pub fn decode(
    payload: Vec<u8>,
    mime: &str,
    limits: &Limits,
) -> Result<(SourceFormat, Frame), DecodeError> {
    if payload.is_empty() {
        return Err(DecodeError::Empty);
    }
    match SourceFormat::sniff(&payload) {
        Some(SourceFormat::Png) => Ok((SourceFormat::Png, decode_png(&payload, limits)?)),
        Some(SourceFormat::Ppm) => Ok((SourceFormat::Ppm, ppm::decode(payload, limits)?)),
        // sniff never says Vnc: mirror pixels are not a payload.
        Some(SourceFormat::Vnc) | None => Err(DecodeError::UnknownFormat {
            mime: mime.to_owned(),
        }),
    }
}

fn decode_png(payload: &[u8], limits: &Limits) -> Result<Frame, DecodeError> {
    check_palette(payload)?;
    let mut decoder = png::Decoder::new(payload);
    // Palettes and sub-byte depths become 8-bit gray/RGB(A); 16-bit becomes 8.
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(png_error)?;
    let (width, height) = {
        let info = reader.info();
        (info.width as usize, info.height as usize)
    };
    check_dimensions(width, height, limits)?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let out = reader.next_frame(&mut buf).map_err(png_error)?;
    // An animated PNG's first frame may cover less than the image (its
    // fcTL): that is not a screen, and a frame must hold its size in pixels.
    if (out.width as usize, out.height as usize) != (width, height) {
        return Err(DecodeError::Corrupt(format!(
            "the PNG's first frame is {}x{} of a {width}x{height} image",
            out.width, out.height
        )));
    }
    buf.truncate(out.buffer_size());
    // Read through IEND: a stream cut after its last IDAT is still truncated.
    reader.finish().map_err(png_error)?;
    let frame = match out.color_type {
        png::ColorType::Rgb => Frame::new(width, height, Layout::Rgb8, buf, 0),
        png::ColorType::Rgba => Frame::new(width, height, Layout::Rgba8, buf, 0),
        png::ColorType::Grayscale => Frame::new(width, height, Layout::Gray8, buf, 0),
        // turbojpeg has no gray+alpha input: keep the gray.
        png::ColorType::GrayscaleAlpha => {
            let gray = buf.chunks_exact(2).map(|ga| ga[0]).collect();
            Frame::new(width, height, Layout::Gray8, gray, 0)
        }
        png::ColorType::Indexed => {
            return Err(DecodeError::Corrupt("indexed PNG was not expanded".into()));
        }
    };
    Ok(frame)
}

/// `png` 0.17 (and 0.18) panics expanding a palette whose PLTE chunk is not
/// whole RGB entries (found by the fuzz target `screenshot`); PNG allows 1 to
/// 256 of them, so any other PLTE is refused before the decoder sees it.
fn check_palette(payload: &[u8]) -> Result<(), DecodeError> {
    // Chunks after the signature: length, type, data, CRC; each step moves
    // at least 12 bytes, so the walk ends.
    let mut at = 8;
    while let Some(head) = payload.get(at..at + 8) {
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if &head[4..] == b"PLTE" && (len == 0 || !len.is_multiple_of(3) || len > 3 * 256) {
            return Err(DecodeError::Corrupt(format!(
                "PNG: a palette of {len} bytes"
            )));
        }
        at = at.saturating_add(12).saturating_add(len);
    }
    Ok(())
}

fn png_error(err: png::DecodingError) -> DecodeError {
    match err {
        png::DecodingError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            DecodeError::Truncated("PNG data".into())
        }
        other => DecodeError::Corrupt(format!("PNG: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found with the fuzz target `screenshot`'s size check, on an input
    /// written for it (fuzz/regressions/screenshot) after reading this code:
    /// an APNG whose first frame (fcTL) is 2x2 of a 4x4 image decoded to a
    /// 4x4 frame holding 2x2 pixels, which the encoders would read past.
    #[test]
    fn a_first_frame_smaller_than_the_image_is_refused() {
        let payload = include_bytes!("../../fuzz/regressions/screenshot/apng-small-first-frame");
        let err = decode(payload.to_vec(), "image/png", &Limits::default()).unwrap_err();
        assert!(matches!(err, DecodeError::Corrupt(_)), "{err}");
    }

    /// Found by the fuzz target `screenshot` (18 inputs in 240 s, all this
    /// one bug, kept in fuzz/regressions/screenshot): a PLTE chunk of 1 or 2
    /// bytes made `png` panic (slice index) when expanding the palette.
    #[test]
    fn a_palette_of_partial_entries_is_refused() {
        let payload = include_bytes!("../../fuzz/regressions/screenshot/crash-29e99de4a34ed623");
        let err = decode(payload.to_vec(), "image/png", &Limits::default()).unwrap_err();
        assert!(matches!(err, DecodeError::Corrupt(_)), "{err}");
        // The same image with whole entries still decodes.
        let png = |plte: &[u8]| {
            let mut out = Vec::new();
            let mut encoder = png::Encoder::new(&mut out, 2, 1);
            encoder.set_color(png::ColorType::Indexed);
            encoder.set_depth(png::BitDepth::Eight);
            encoder.set_palette(plte.to_vec());
            let mut writer = encoder.write_header().unwrap();
            writer.write_image_data(&[0, 0]).unwrap();
            writer.finish().unwrap();
            out
        };
        let (_, frame) = decode(png(&[1, 2, 3]), "image/png", &Limits::default()).unwrap();
        assert_eq!(frame.pixels(), [1, 2, 3, 1, 2, 3]);
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;

    /// Pixels of a small screen in one of the layouts the encoders write.
    fn screen() -> impl Strategy<Value = (usize, usize, png::ColorType, Vec<u8>)> {
        let color = prop_oneof![
            Just(png::ColorType::Rgb),
            Just(png::ColorType::Rgba),
            Just(png::ColorType::Grayscale),
            Just(png::ColorType::GrayscaleAlpha),
        ];
        (1usize..24, 1usize..24, color).prop_flat_map(|(w, h, color)| {
            let len = w * h * color.samples();
            proptest::collection::vec(any::<u8>(), len).prop_map(move |px| (w, h, color, px))
        })
    }

    fn png_of(w: usize, h: usize, color: png::ColorType, pixels: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, w as u32, h as u32);
        encoder.set_color(color);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(pixels).unwrap();
        writer.finish().unwrap();
        out
    }

    /// A screen, if the payload is one, holds exactly its size in pixels:
    /// the encoders trust that.
    fn check(payload: &[u8]) {
        if let Ok((_, frame)) = decode(payload.to_vec(), "image/png", &Limits::default()) {
            let size = frame.width * frame.height * frame.layout.bytes_per_pixel();
            assert_eq!(frame.pixels().len(), size);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// A PNG written by an encoder is decoded to its own pixels (gray
        /// with alpha to its gray).
        #[test]
        fn png_round_trips((w, h, color, pixels) in screen()) {
            let payload = png_of(w, h, color, &pixels);
            let (format, frame) = decode(payload, "image/png", &Limits::default()).unwrap();
            prop_assert_eq!(format, SourceFormat::Png);
            prop_assert_eq!((frame.width, frame.height), (w, h));
            let want: Vec<u8> = match color {
                png::ColorType::GrayscaleAlpha => pixels.chunks(2).map(|ga| ga[0]).collect(),
                _ => pixels,
            };
            prop_assert_eq!(frame.pixels(), &want[..]);
        }

        /// A PPM as QEMU writes it is decoded to its own pixels, in place;
        /// at another depth, to pixels scaled to 8 bits.
        #[test]
        fn ppm_round_trips(w in 1usize..24, h in 1usize..24, gray in any::<bool>(), maxval in prop_oneof![Just(255usize), 1usize..65536], seed in any::<u64>()) {
            let channels = if gray { 1 } else { 3 };
            let wide = maxval > 255;
            let samples: Vec<usize> = (0..w * h * channels)
                .map(|i| (seed as usize).wrapping_mul(i + 1).wrapping_add(i) % (maxval + 1))
                .collect();
            let mut payload = format!("P{} {w} {h} {maxval}\n", if gray { 5 } else { 6 }).into_bytes();
            for s in &samples {
                if wide {
                    payload.extend_from_slice(&(*s as u16).to_be_bytes());
                } else {
                    payload.push(*s as u8);
                }
            }
            let (format, frame) = decode(payload, "image/x-portable-pixmap", &Limits::default()).unwrap();
            prop_assert_eq!(format, SourceFormat::Ppm);
            prop_assert_eq!((frame.width, frame.height), (w, h));
            let want: Vec<u8> = samples.iter().map(|s| ((s * 255 + maxval / 2) / maxval) as u8).collect();
            prop_assert_eq!(frame.pixels(), &want[..]);
        }

        /// Any payload, or a valid one with a byte changed, is a screen of
        /// exactly its size or an error.
        #[test]
        fn any_payload_is_an_answer(
            (w, h, color, pixels) in screen(),
            at in any::<prop::sample::Index>(),
            to in any::<u8>(),
            junk in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut payload = png_of(w, h, color, &pixels);
            let i = at.index(payload.len());
            payload[i] = to;
            check(&payload);
            check(&junk);
            let mut ppm = format!("P6 {w} {h} 255\n").into_bytes();
            ppm.extend(std::iter::repeat_n(9, w * h * 3));
            let i = at.index(ppm.len());
            ppm[i] = to;
            check(&ppm);
        }
    }
}
