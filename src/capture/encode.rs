//! Frames into JPEG (libjpeg-turbo, SIMD) or lossless PNG.

use std::cell::RefCell;

use crate::frame::{Frame, Layout};

/// Chroma subsampling of the JPEG output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subsampling {
    /// 4:2:0: the smallest files; fine for console text at quality 80.
    S420,
    S422,
    /// 4:4:4: no chroma loss, for coloured thin text.
    S444,
    /// Grayscale JPEG.
    Gray,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JpegSettings {
    /// 1..=100.
    pub quality: u8,
    pub subsampling: Subsampling,
}

impl Default for JpegSettings {
    fn default() -> Self {
        Self {
            quality: 80,
            subsampling: Subsampling::S420,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("JPEG quality {0} is outside 1..=100")]
    BadQuality(u8),
    #[error("JPEG encoding failed: {0}")]
    Jpeg(#[from] turbojpeg::Error),
    #[error("PNG encoding failed: {0}")]
    Png(#[from] png::EncodingError),
}

thread_local! {
    // A compressor holds libjpeg state and buffers: one per thread, reused.
    static COMPRESSOR: RefCell<Option<turbojpeg::Compressor>> = const { RefCell::new(None) };
}

pub fn jpeg(frame: &Frame, settings: JpegSettings) -> Result<Vec<u8>, EncodeError> {
    if !(1..=100).contains(&settings.quality) {
        return Err(EncodeError::BadQuality(settings.quality));
    }
    let (format, subsamp) = match frame.layout {
        // Color subsampling of a gray source would only add empty chroma planes.
        Layout::Gray8 => (turbojpeg::PixelFormat::GRAY, turbojpeg::Subsamp::Gray),
        Layout::Rgb8 => (turbojpeg::PixelFormat::RGB, subsamp(settings.subsampling)),
        // turbojpeg ignores the fourth byte when compressing.
        Layout::Rgba8 => (turbojpeg::PixelFormat::RGBA, subsamp(settings.subsampling)),
        // libjpeg-turbo converts BGRX itself, in SIMD: no swizzling pass of ours.
        Layout::Bgrx8 => (turbojpeg::PixelFormat::BGRX, subsamp(settings.subsampling)),
    };
    let image = turbojpeg::Image {
        pixels: frame.pixels(),
        width: frame.width,
        pitch: frame.stride(),
        height: frame.height,
        format,
    };
    COMPRESSOR.with_borrow_mut(|slot| {
        let compressor = match slot {
            Some(c) => c,
            None => slot.insert(turbojpeg::Compressor::new()?),
        };
        compressor.set_quality(i32::from(settings.quality));
        compressor.set_subsamp(subsamp);
        Ok(compressor.compress_to_vec(image)?)
    })
}

fn subsamp(s: Subsampling) -> turbojpeg::Subsamp {
    match s {
        Subsampling::S420 => turbojpeg::Subsamp::Sub2x2,
        Subsampling::S422 => turbojpeg::Subsamp::Sub2x1,
        Subsampling::S444 => turbojpeg::Subsamp::None,
        Subsampling::Gray => turbojpeg::Subsamp::Gray,
    }
}

/// Lossless PNG, compressed for speed: a console compresses well even so.
pub fn png(frame: &Frame) -> Result<Vec<u8>, EncodeError> {
    // PNG has no BGR order; the padding byte is not alpha and would make every
    // pixel transparent, so it goes too.
    let converted;
    let (color, pixels) = match frame.layout {
        Layout::Gray8 => (png::ColorType::Grayscale, frame.pixels()),
        Layout::Rgb8 => (png::ColorType::Rgb, frame.pixels()),
        Layout::Rgba8 => (png::ColorType::Rgba, frame.pixels()),
        Layout::Bgrx8 => {
            converted = bgrx_to_rgb(frame.pixels());
            (png::ColorType::Rgb, converted.as_slice())
        }
    };
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, frame.width as u32, frame.height as u32);
    encoder.set_color(color);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(pixels)?;
    writer.finish()?;
    Ok(out)
}

fn bgrx_to_rgb(bgrx: &[u8]) -> Vec<u8> {
    let mut rgb = Vec::with_capacity(bgrx.len() / 4 * 3);
    for p in bgrx.chunks_exact(4) {
        rgb.extend_from_slice(&[p[2], p[1], p[0]]);
    }
    rgb
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two pixels, red and a blue-ish grey, with junk in the padding bytes.
    fn bgrx_frame() -> Frame {
        let pixels = vec![0, 0, 255, 7, 200, 100, 50, 9];
        Frame::new(2, 1, Layout::Bgrx8, pixels, 0)
    }

    #[test]
    fn bgrx_reads_as_rgb() {
        let frame = bgrx_frame();
        assert_eq!(frame.rgb_at(0, 0), [255, 0, 0]);
        assert_eq!(frame.rgb_at(1, 0), [50, 100, 200]);
    }

    #[test]
    fn bgrx_png_is_rgb_and_opaque() {
        let png = png(&bgrx_frame()).unwrap();
        let decoder = png::Decoder::new(png.as_slice());
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        assert_eq!(&buf[..info.buffer_size()], &[255, 0, 0, 50, 100, 200]);
    }

    #[test]
    fn bgrx_jpeg_keeps_colours() {
        // A flat 16x16 block survives JPEG almost exactly, so a swapped
        // channel order would show.
        let mut pixels = Vec::new();
        for _ in 0..16 * 16 {
            pixels.extend_from_slice(&[30, 60, 220, 0]);
        }
        let frame = Frame::new(16, 16, Layout::Bgrx8, pixels, 0);
        let jpeg = jpeg(
            &frame,
            JpegSettings {
                quality: 95,
                subsampling: Subsampling::S444,
            },
        )
        .unwrap();
        let mut decompressor = turbojpeg::Decompressor::new().unwrap();
        let header = decompressor.read_header(&jpeg).unwrap();
        let mut out = vec![0; header.width * header.height * 3];
        decompressor
            .decompress(
                &jpeg,
                turbojpeg::Image {
                    pixels: out.as_mut_slice(),
                    width: header.width,
                    pitch: header.width * 3,
                    height: header.height,
                    format: turbojpeg::PixelFormat::RGB,
                },
            )
            .unwrap();
        let centre = (8 * 16 + 8) * 3;
        for (got, want) in out[centre..centre + 3].iter().zip([220u8, 60, 30]) {
            assert!(got.abs_diff(want) <= 3, "{:?}", &out[centre..centre + 3]);
        }
    }
}
