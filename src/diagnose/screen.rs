//! What the watcher asks of a screen's pixels: whether it shows nothing (a
//! console the kernel blanked, a display switched off), and whether it
//! changed. A blinking text cursor is not a change: screens are compared by
//! 16x16 blocks, and a few blocks' difference does not count.

use std::hash::{Hash, Hasher};

use crate::frame::{Frame, Layout};

const BLOCK: usize = 16;
/// Blocks that may differ without the screen counting as changed: a cursor
/// (one glyph cell, which may straddle two blocks) blinking.
const NOISE_BLOCKS: usize = 2;

/// A screen's fingerprint: its size and one hash per 16x16 block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    width: usize,
    height: usize,
    blocks: Vec<u64>,
}

impl Signature {
    pub fn of(frame: &Frame) -> Self {
        let (w, h) = (frame.width, frame.height);
        let bpp = frame.layout.bytes_per_pixel();
        let stride = frame.stride();
        let pixels = frame.pixels();
        let columns = w.div_ceil(BLOCK);
        let mut hashers: Vec<std::collections::hash_map::DefaultHasher> = Vec::new();
        let mut blocks = Vec::with_capacity(columns * h.div_ceil(BLOCK));
        for y in 0..h {
            if y % BLOCK == 0 {
                hashers = (0..columns).map(|_| Default::default()).collect();
            }
            let row = &pixels[y * stride..y * stride + w * bpp];
            for (hasher, chunk) in hashers.iter_mut().zip(row.chunks(BLOCK * bpp)) {
                chunk.hash(hasher);
            }
            if y % BLOCK == BLOCK - 1 || y == h - 1 {
                blocks.extend(hashers.iter().map(Hasher::finish));
            }
        }
        Self {
            width: w,
            height: h,
            blocks,
        }
    }

    /// Whether `other` is a different picture, not the same one with a
    /// cursor blinked.
    pub fn differs(&self, other: &Signature) -> bool {
        (self.width, self.height) != (other.width, other.height)
            || self
                .blocks
                .iter()
                .zip(&other.blocks)
                .filter(|(a, b)| a != b)
                .count()
                > NOISE_BLOCKS
    }
}

/// Brighter than this (0–255, the brightest channel) counts as drawn.
const DARK: u8 = 24;

/// A screen is blank when at most one pixel in 2,000 is drawn: a blinking
/// cursor (8x2 of 720x400) still leaves it blank; one line of text does not.
const DRAWN_PER_MILLE_X2: usize = 1;

pub fn is_blank(frame: &Frame) -> bool {
    let pixels = frame.width * frame.height;
    if pixels == 0 {
        return true;
    }
    let limit = pixels * DRAWN_PER_MILLE_X2 / 2000;
    let bpp = frame.layout.bytes_per_pixel();
    let colour_bytes = match frame.layout {
        Layout::Gray8 => 1,
        Layout::Rgb8 | Layout::Rgba8 | Layout::Bgrx8 => 3,
    };
    let mut drawn = 0;
    for pixel in frame.pixels().chunks_exact(bpp) {
        if pixel[..colour_bytes].iter().any(|&c| c > DARK) {
            drawn += 1;
            if drawn > limit {
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn screen(lit: usize) -> Frame {
        let (w, h) = (720, 400);
        let mut buf = vec![0u8; w * h * 4];
        for pixel in buf.chunks_exact_mut(4).take(lit) {
            pixel[..3].copy_from_slice(&[0xaa, 0xaa, 0xaa]);
        }
        Frame::new(w, h, Layout::Bgrx8, buf, 0)
    }

    fn lit(frame: &Frame, x: usize, y: usize) -> Frame {
        let mut buf = frame.pixels().to_vec();
        let at = (y * frame.width + x) * 4;
        buf[at..at + 3].copy_from_slice(&[0xff, 0xff, 0xff]);
        Frame::new(frame.width, frame.height, Layout::Bgrx8, buf, 0)
    }

    #[test]
    fn a_blinking_cursor_is_no_change_three_blocks_are() {
        let base = screen(0);
        let reference = Signature::of(&base);
        assert!(!reference.differs(&Signature::of(&base)));
        let cursor = lit(&lit(&base, 15, 398), 16, 398);
        assert!(!reference.differs(&Signature::of(&cursor)));
        let text = lit(&cursor, 100, 10);
        assert!(reference.differs(&Signature::of(&text)));
        let smaller = Frame::new(640, 400, Layout::Bgrx8, vec![0; 640 * 400 * 4], 0);
        assert!(reference.differs(&Signature::of(&smaller)));
    }

    #[test]
    fn a_cursor_is_blank_a_line_of_text_is_not() {
        assert!(is_blank(&screen(0)));
        assert!(is_blank(&screen(16)));
        assert!(!is_blank(&screen(720 * 2)));
    }
}
