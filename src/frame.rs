//! A decoded screen: pixels as turbojpeg and the PNG encoder take them, and as
//! the VNC mirror keeps them. A leaf: it imports nothing of vmshot.

use std::sync::Arc;

/// How the bytes of one pixel are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Gray8,
    Rgb8,
    Rgba8,
    /// Blue, green, red, then an unused byte: a little-endian xRGB word, as
    /// QEMU keeps its console surface and as the VNC mirror receives it.
    Bgrx8,
}

impl Layout {
    pub fn bytes_per_pixel(self) -> usize {
        match self {
            Self::Gray8 => 1,
            Self::Rgb8 => 3,
            Self::Rgba8 | Self::Bgrx8 => 4,
        }
    }
}

/// Pixels with their geometry. The pixel rows start `offset` bytes into `buf`,
/// so a PPM payload becomes a frame without copying its pixels; the buffer may
/// be shared (a VNC mirror's screen), so taking a frame never copies a screen.
#[derive(Debug, Clone)]
pub struct Frame {
    pub width: usize,
    pub height: usize,
    pub layout: Layout,
    buf: Arc<Vec<u8>>,
    offset: usize,
}

impl Frame {
    /// `buf[offset..]` must hold exactly `width * height` pixels of `layout`.
    pub(crate) fn new(
        width: usize,
        height: usize,
        layout: Layout,
        buf: Vec<u8>,
        offset: usize,
    ) -> Self {
        Self::shared(width, height, layout, Arc::new(buf), offset)
    }

    /// Like `new`, over a buffer others may hold too.
    pub(crate) fn shared(
        width: usize,
        height: usize,
        layout: Layout,
        buf: Arc<Vec<u8>>,
        offset: usize,
    ) -> Self {
        debug_assert_eq!(
            buf.len() - offset,
            width * height * layout.bytes_per_pixel()
        );
        Self {
            width,
            height,
            layout,
            buf,
            offset,
        }
    }

    pub fn pixels(&self) -> &[u8] {
        &self.buf[self.offset..]
    }

    /// Bytes from the start of one row to the next.
    pub fn stride(&self) -> usize {
        self.width * self.layout.bytes_per_pixel()
    }

    /// The pixel at (x, y) as RGB.
    pub fn rgb_at(&self, x: usize, y: usize) -> [u8; 3] {
        let bpp = self.layout.bytes_per_pixel();
        let at = y * self.stride() + x * bpp;
        let p = &self.pixels()[at..at + bpp];
        match self.layout {
            Layout::Gray8 => [p[0]; 3],
            Layout::Rgb8 | Layout::Rgba8 => [p[0], p[1], p[2]],
            Layout::Bgrx8 => [p[2], p[1], p[0]],
        }
    }
}
