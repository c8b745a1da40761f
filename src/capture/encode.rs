//! Frames into JPEG (libjpeg-turbo, SIMD) or lossless PNG.

use std::cell::RefCell;

use super::frame::{Frame, Layout};

/// Chroma subsampling of the JPEG output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Subsampling {
    /// 4:2:0: the smallest files; fine for console text at quality 80.
    #[serde(rename = "420")]
    S420,
    #[serde(rename = "422")]
    S422,
    /// 4:4:4: no chroma loss, for coloured thin text.
    #[serde(rename = "444")]
    S444,
    /// Grayscale JPEG.
    #[serde(rename = "gray")]
    Gray,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, frame.width as u32, frame.height as u32);
    encoder.set_color(match frame.layout {
        Layout::Gray8 => png::ColorType::Grayscale,
        Layout::Rgb8 => png::ColorType::Rgb,
        Layout::Rgba8 => png::ColorType::Rgba,
    });
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(frame.pixels())?;
    writer.finish()?;
    Ok(out)
}
