//! The server's updates as they arrive, and the bookkeeping that turns them
//! into the picture callers read: which pixels changed, and whether every pixel
//! has been painted since the last (re)size.
//!
//! A mirror holds one screen-sized image, the published one. An update
//! message's rows are staged as they stream in (so the socket is never read
//! with a lock held) and applied to that image all at once when the message
//! ends, under the caller's lock: a reader never sees half an update. The
//! staging area is as large as the update and is given back afterwards, so a
//! mirror costs one screen, not two. While a screen is being received whole
//! (at the start, after a resize) nobody may read it yet, so its rows go
//! straight into the image, and many mirrors syncing at once do not each
//! stage a second screen.

use std::sync::Arc;

use super::rfb::BYTES_PER_PIXEL;

/// Pixels in B, G, R, X order, rows one after another.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Image {
    pub width: usize,
    pub height: usize,
    /// Shared with snapshots being encoded; written copy-on-write, so an
    /// update that lands during an encode costs a copy, and nothing else does.
    pub pixels: Arc<Vec<u8>>,
}

impl Image {
    fn black(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            pixels: Arc::new(vec![0; width * height * BYTES_PER_PIXEL]),
        }
    }

    fn row_range(&self, x: usize, y: usize, width: usize) -> std::ops::Range<usize> {
        let start = (y * self.width + x) * BYTES_PER_PIXEL;
        start..start + width * BYTES_PER_PIXEL
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Area {
    x: usize,
    y: usize,
    width: usize,
    height: usize,
}

/// One bit per pixel, set once painted: a screen counts as received only when
/// every pixel has arrived, however the server splits it into rectangles.
#[derive(Debug)]
struct Painted {
    words_per_row: usize,
    bits: Vec<u64>,
    missing: usize,
}

impl Painted {
    fn new(width: usize, height: usize) -> Self {
        let words_per_row = width.div_ceil(64);
        Self {
            words_per_row,
            bits: vec![0; words_per_row * height],
            missing: width * height,
        }
    }

    fn paint(&mut self, area: Area) {
        for y in area.y..area.y + area.height {
            let row = &mut self.bits[y * self.words_per_row..(y + 1) * self.words_per_row];
            let (mut x, end) = (area.x, area.x + area.width);
            while x < end {
                let (word, bit) = (x / 64, x % 64);
                let span = (64 - bit).min(end - x);
                let mask = if span == 64 {
                    u64::MAX
                } else {
                    ((1u64 << span) - 1) << bit
                };
                self.missing -= (mask & !row[word]).count_ones() as usize;
                row[word] |= mask;
                x += span;
            }
        }
    }
}

/// A staging area bigger than this is freed once applied, not kept for the
/// next update: full-screen updates are rare (sync, resize).
const KEEP_STAGING: usize = 256 * 1024;

/// One step of an update, replayed on the published image in order.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// `len` bytes of staged pixels from `at`, to row `y` from column `x`.
    Row {
        x: usize,
        y: usize,
        at: usize,
        len: usize,
    },
    /// CopyRect within the image.
    Copy {
        src_x: usize,
        src_y: usize,
        area: Area,
    },
}

/// The framebuffer as the server has described it so far.
#[derive(Debug)]
pub(super) struct Canvas {
    width: usize,
    height: usize,
    /// `Some` until every pixel has been painted since the last (re)size.
    painted: Option<Painted>,
    staged: Vec<u8>,
    ops: Vec<Op>,
    /// Pixels were written straight into the image since the last publication.
    changed_directly: bool,
}

impl Canvas {
    pub fn new(width: u16, height: u16) -> Self {
        let (width, height) = (usize::from(width), usize::from(height));
        Self {
            width,
            height,
            painted: Some(Painted::new(width, height)),
            staged: Vec::new(),
            ops: Vec::new(),
            changed_directly: false,
        }
    }

    /// Makes `out` a black screen of the canvas's size, for the rows to come:
    /// at the start, and after every resize.
    pub fn prepare(&mut self, out: &mut Image) {
        *out = Image::black(self.width, self.height);
        self.staged = Vec::new();
        self.ops.clear();
        self.changed_directly = true;
    }

    /// True until every pixel has arrived since the last (re)size: the image
    /// is not published as a screen yet, and rows may go straight into it.
    pub fn syncing(&self) -> bool {
        self.painted.is_some()
    }

    pub fn resize(&mut self, width: u16, height: u16) {
        *self = Self::new(width, height);
    }

    pub fn size(&self) -> (u16, u16) {
        // Only ever built from u16 sizes.
        (self.width as u16, self.height as u16)
    }

    /// Whether every pixel has been received since the last (re)size.
    pub fn complete(&mut self) -> bool {
        if self.painted.as_ref().is_some_and(|p| p.missing == 0) {
            self.painted = None;
        }
        self.painted.is_none()
    }

    /// A Raw rectangle is about to be painted, row by row.
    pub fn rect(&mut self, x: u16, y: u16, width: u16, height: u16) {
        let area = self.area(x, y, width, height);
        if let Some(painted) = &mut self.painted {
            painted.paint(area);
        }
    }

    fn fits(&self, x: usize, y: usize, pixels: &[u8]) -> bool {
        pixels.len().is_multiple_of(BYTES_PER_PIXEL)
            && y < self.height
            && x + pixels.len() / BYTES_PER_PIXEL <= self.width
    }

    /// Writes one row straight into `out` (only while `syncing`); false if it
    /// does not fit.
    pub fn row_into(&mut self, out: &mut Image, x: u16, y: u16, pixels: &[u8]) -> bool {
        let (x, y) = (usize::from(x), usize::from(y));
        if !self.fits(x, y, pixels) || out.width != self.width || out.height != self.height {
            return false;
        }
        let range = out.row_range(x, y, pixels.len() / BYTES_PER_PIXEL);
        Arc::make_mut(&mut out.pixels)[range].copy_from_slice(pixels);
        self.changed_directly = true;
        true
    }

    /// CopyRect straight into `out` (only while `syncing`).
    pub fn copy_into(
        &mut self,
        out: &mut Image,
        src: (u16, u16),
        x: u16,
        y: u16,
        width: u16,
        height: u16,
    ) {
        let area = self.area(x, y, width, height);
        let (src_x, src_y) = (usize::from(src.0), usize::from(src.1));
        if out.width == self.width
            && out.height == self.height
            && src_x + area.width <= self.width
            && src_y + area.height <= self.height
        {
            self.changed_directly |= copy_within(out, src_x, src_y, area);
        }
    }

    /// Stages one row; false if it does not fit (the decoder rules that out).
    pub fn row(&mut self, x: u16, y: u16, pixels: &[u8]) -> bool {
        let (x, y) = (usize::from(x), usize::from(y));
        let fits = self.fits(x, y, pixels);
        if fits && !pixels.is_empty() {
            self.ops.push(Op::Row {
                x,
                y,
                at: self.staged.len(),
                len: pixels.len(),
            });
            self.staged.extend_from_slice(pixels);
        }
        fits
    }

    /// CopyRect, source and destination inside the canvas (the decoder checks).
    /// It does not count as painting: its source may not have arrived yet.
    pub fn copy(&mut self, src_x: u16, src_y: u16, x: u16, y: u16, width: u16, height: u16) {
        let area = self.area(x, y, width, height);
        let (src_x, src_y) = (usize::from(src_x), usize::from(src_y));
        if area.width > 0
            && area.height > 0
            && src_x + area.width <= self.width
            && src_y + area.height <= self.height
        {
            self.ops.push(Op::Copy { src_x, src_y, area });
        }
    }

    fn area(&self, x: u16, y: u16, width: u16, height: u16) -> Area {
        // Clamped so that a caller's mistake cannot index out of bounds.
        let x = usize::from(x).min(self.width);
        let y = usize::from(y).min(self.height);
        Area {
            x,
            y,
            width: usize::from(width).min(self.width - x),
            height: usize::from(height).min(self.height - y),
        }
    }

    /// Applies the staged update to `out`, in the order the server sent it;
    /// true if any pixel of `out` changed.
    pub fn publish(&mut self, out: &mut Image) -> bool {
        let mut changed = std::mem::take(&mut self.changed_directly);
        if out.width != self.width || out.height != self.height {
            // Not prepared (a caller's slip): start from black rather than panic.
            *out = Image::black(self.width, self.height);
            changed = true;
        }
        for op in self.ops.drain(..) {
            match op {
                Op::Row { x, y, at, len } => {
                    let range = out.row_range(x, y, len / BYTES_PER_PIXEL);
                    let src = &self.staged[at..at + len];
                    if src != &out.pixels[range.clone()] {
                        Arc::make_mut(&mut out.pixels)[range].copy_from_slice(src);
                        changed = true;
                    }
                }
                Op::Copy { src_x, src_y, area } => {
                    changed |= copy_within(out, src_x, src_y, area);
                }
            }
        }
        self.staged.clear();
        if self.staged.capacity() > KEEP_STAGING {
            self.staged = Vec::new();
        }
        changed
    }
}

/// CopyRect on the image itself; true if it changed any pixel.
fn copy_within(out: &mut Image, src_x: usize, src_y: usize, dst: Area) -> bool {
    // Rows are copied in the order that never reads a row already written
    // when source and destination overlap.
    let rows: Box<dyn Iterator<Item = usize>> = if dst.y > src_y {
        Box::new((0..dst.height).rev())
    } else {
        Box::new(0..dst.height)
    };
    let mut changed = false;
    for r in rows {
        let from = out.row_range(src_x, src_y + r, dst.width);
        let to = out.row_range(dst.x, dst.y + r, dst.width);
        let inside = from.end <= out.pixels.len() && to.end <= out.pixels.len();
        if inside && out.pixels[from.clone()] != out.pixels[to.clone()] {
            Arc::make_mut(&mut out.pixels).copy_within(from, to.start);
            changed = true;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn px(v: u8, n: usize) -> Vec<u8> {
        vec![v; n * BYTES_PER_PIXEL]
    }

    #[test]
    fn complete_only_once_every_pixel_arrived() {
        let mut c = Canvas::new(100, 3);
        assert!(!c.complete());
        c.rect(0, 0, 100, 2);
        // Overlapping rectangles count each pixel once.
        c.rect(10, 1, 80, 2);
        assert!(!c.complete());
        c.rect(0, 2, 10, 1);
        c.rect(90, 2, 10, 1);
        assert!(c.complete());
    }

    #[test]
    fn resize_starts_over() {
        let mut c = Canvas::new(4, 4);
        c.rect(0, 0, 4, 4);
        assert!(c.complete());
        c.resize(8, 2);
        assert_eq!(c.size(), (8, 2));
        assert!(!c.complete());
        let mut out = Image::default();
        assert!(c.publish(&mut out));
        assert_eq!((out.width, out.height, out.pixels.len()), (8, 2, 64));
    }

    #[test]
    fn publish_copies_only_real_changes() {
        let mut c = Canvas::new(4, 2);
        let mut out = Image::default();
        assert!(c.publish(&mut out), "the first publication sets the size");
        c.rect(1, 0, 2, 1);
        assert!(c.row(1, 0, &px(7, 2)));
        assert!(c.publish(&mut out));
        assert_eq!(&out.pixels[4..12], &px(7, 2)[..]);
        assert_eq!(&out.pixels[..4], &[0; 4]);
        // The same pixels again: damage, but no change.
        c.rect(1, 0, 2, 1);
        assert!(c.row(1, 0, &px(7, 2)));
        assert!(!c.publish(&mut out));
    }

    #[test]
    fn rows_that_do_not_fit_are_refused() {
        let mut c = Canvas::new(4, 2);
        assert!(!c.row(3, 1, &px(1, 2)));
        assert!(!c.row(0, 2, &px(1, 1)));
    }

    #[test]
    fn overlapping_copies_move_the_pixels() {
        let mut c = Canvas::new(1, 4);
        for y in 0..4 {
            c.rect(0, y, 1, 1);
            c.row(0, y, &px(y as u8 + 1, 1));
        }
        c.copy(0, 0, 0, 1, 1, 3); // down by one
        let mut out = Image::default();
        c.publish(&mut out);
        let column: Vec<u8> = out.pixels.chunks(4).map(|p| p[0]).collect();
        assert_eq!(column, [1, 1, 2, 3]);
        c.copy(0, 1, 0, 0, 1, 3); // back up
        c.publish(&mut out);
        let column: Vec<u8> = out.pixels.chunks(4).map(|p| p[0]).collect();
        assert_eq!(column, [1, 2, 3, 3]);
    }

    #[test]
    fn while_syncing_rows_go_straight_into_the_image() {
        let mut c = Canvas::new(4, 2);
        let mut out = Image::default();
        c.prepare(&mut out);
        assert_eq!((out.width, out.height), (4, 2));
        assert!(c.syncing());
        c.rect(0, 0, 4, 2);
        assert!(c.row_into(&mut out, 0, 0, &px(5, 4)));
        assert!(!c.row_into(&mut out, 2, 1, &px(5, 4)), "past the edge");
        assert_eq!(&out.pixels[..16], &px(5, 4)[..], "written at once");
        assert!(c.row_into(&mut out, 0, 1, &px(6, 4)));
        c.copy_into(&mut out, (0, 0), 0, 1, 2, 1);
        assert_eq!(&out.pixels[16..24], &px(5, 2)[..]);
        assert!(c.complete());
        assert!(!c.syncing());
        assert!(c.publish(&mut out), "direct writes count as a change");
        assert!(
            c.staged.capacity() == 0 && c.ops.is_empty(),
            "nothing staged"
        );
        assert!(!c.publish(&mut out));
    }

    #[test]
    fn a_snapshot_keeps_its_pixels_while_the_image_changes() {
        let mut c = Canvas::new(2, 1);
        let mut out = Image::default();
        c.prepare(&mut out);
        c.rect(0, 0, 2, 1);
        assert!(c.row_into(&mut out, 0, 0, &px(1, 2)));
        assert!(c.complete());
        c.publish(&mut out);
        let held = out.pixels.clone(); // what a snapshot holds
        c.row(0, 0, &px(2, 2));
        assert!(c.publish(&mut out));
        assert_eq!((held[0], out.pixels[0]), (1, 2));
        drop(held);
        c.row(0, 0, &px(3, 2));
        let before = Arc::as_ptr(&out.pixels);
        assert!(c.publish(&mut out));
        assert_eq!(
            Arc::as_ptr(&out.pixels),
            before,
            "no copy when nobody holds it"
        );
    }

    #[test]
    fn a_full_screen_update_is_not_kept_once_applied() {
        let mut c = Canvas::new(400, 300);
        c.rect(0, 0, 400, 300);
        for y in 0..300 {
            assert!(c.row(0, y, &px(9, 400)));
        }
        let mut out = Image::default();
        assert!(c.publish(&mut out));
        assert!(c.complete());
        assert!(out.pixels.iter().step_by(4).all(|p| *p == 9));
        assert_eq!(c.staged.capacity(), 0, "the staging area was given back");
        assert!(c.ops.is_empty());
        // Small updates keep their small staging area.
        c.rect(0, 0, 2, 1);
        c.row(0, 0, &px(1, 2));
        assert!(c.publish(&mut out));
        assert!(c.staged.capacity() > 0);
    }
}
