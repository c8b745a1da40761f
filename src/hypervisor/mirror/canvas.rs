//! The mirror's working copy of the framebuffer, painted as the server's
//! updates arrive, and the bookkeeping that turns those updates into the copy
//! callers read: which areas changed, and whether every pixel has been painted
//! since the last (re)size.

use super::rfb::BYTES_PER_PIXEL;

/// Pixels in B, G, R, X order, rows one after another.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Image {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl Image {
    fn black(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            pixels: vec![0; width * height * BYTES_PER_PIXEL],
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

impl Area {
    fn union(self, other: Area) -> Area {
        let x = self.x.min(other.x);
        let y = self.y.min(other.y);
        let right = (self.x + self.width).max(other.x + other.width);
        let bottom = (self.y + self.height).max(other.y + other.height);
        Area {
            x,
            y,
            width: right - x,
            height: bottom - y,
        }
    }
}

/// Areas listed one by one up to this many per update; past it they merge into
/// their bounding box, which costs a larger compare but bounds the list.
const MAX_DAMAGE: usize = 64;

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

/// The framebuffer as the server has described it so far.
#[derive(Debug)]
pub(super) struct Canvas {
    image: Image,
    /// `Some` until every pixel has been painted since the last (re)size.
    painted: Option<Painted>,
    damage: Vec<Area>,
    /// The size changed since the last publication: the copy must follow.
    resized: bool,
}

impl Canvas {
    pub fn new(width: u16, height: u16) -> Self {
        let (width, height) = (usize::from(width), usize::from(height));
        Self {
            image: Image::black(width, height),
            painted: Some(Painted::new(width, height)),
            damage: Vec::new(),
            resized: true,
        }
    }

    pub fn resize(&mut self, width: u16, height: u16) {
        *self = Self::new(width, height);
    }

    pub fn size(&self) -> (u16, u16) {
        // Only ever built from u16 sizes.
        (self.image.width as u16, self.image.height as u16)
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
        self.damaged(area);
    }

    /// Paints one row; false if it does not fit (the decoder rules that out).
    pub fn row(&mut self, x: u16, y: u16, pixels: &[u8]) -> bool {
        let range = self.image.row_range(
            usize::from(x),
            usize::from(y),
            pixels.len() / BYTES_PER_PIXEL,
        );
        match self.image.pixels.get_mut(range) {
            Some(dst) if dst.len() == pixels.len() => {
                dst.copy_from_slice(pixels);
                true
            }
            _ => false,
        }
    }

    /// CopyRect, source and destination inside the canvas (the decoder checks).
    /// It does not count as painting: its source may not have arrived yet.
    pub fn copy(&mut self, src_x: u16, src_y: u16, x: u16, y: u16, width: u16, height: u16) {
        let dst = self.area(x, y, width, height);
        let (src_x, src_y) = (usize::from(src_x), usize::from(src_y));
        // Rows are copied in the order that never reads a row already written
        // when source and destination overlap.
        let rows: Box<dyn Iterator<Item = usize>> = if dst.y > src_y {
            Box::new((0..dst.height).rev())
        } else {
            Box::new(0..dst.height)
        };
        for r in rows {
            let from = self.image.row_range(src_x, src_y + r, dst.width);
            let to = self.image.row_range(dst.x, dst.y + r, dst.width);
            if from.end <= self.image.pixels.len() && to.end <= self.image.pixels.len() {
                self.image.pixels.copy_within(from, to.start);
            }
        }
        self.damaged(dst);
    }

    fn area(&self, x: u16, y: u16, width: u16, height: u16) -> Area {
        // Clamped so that a caller's mistake cannot index out of bounds.
        let x = usize::from(x).min(self.image.width);
        let y = usize::from(y).min(self.image.height);
        Area {
            x,
            y,
            width: usize::from(width).min(self.image.width - x),
            height: usize::from(height).min(self.image.height - y),
        }
    }

    fn damaged(&mut self, area: Area) {
        if area.width == 0 || area.height == 0 {
            return;
        }
        if self.damage.len() < MAX_DAMAGE {
            self.damage.push(area);
        } else {
            let all = self.damage.drain(..).fold(area, Area::union);
            self.damage.push(all);
        }
    }

    /// Brings `out` up to date with the canvas, copying only the damaged areas
    /// and only where they differ; true if any pixel of `out` changed.
    pub fn publish(&mut self, out: &mut Image) -> bool {
        let mut changed = false;
        if self.resized || out.width != self.image.width || out.height != self.image.height {
            out.clone_from(&self.image);
            self.resized = false;
            changed = true;
        } else {
            for area in &self.damage {
                for y in area.y..area.y + area.height {
                    let range = self.image.row_range(area.x, y, area.width);
                    let (src, dst) = (&self.image.pixels[range.clone()], &mut out.pixels[range]);
                    if src != dst {
                        dst.copy_from_slice(src);
                        changed = true;
                    }
                }
            }
        }
        self.damage.clear();
        changed
    }
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
    fn damage_list_is_bounded() {
        let mut c = Canvas::new(200, 200);
        for i in 0..500u16 {
            c.rect(i % 200, i % 200, 1, 1);
        }
        assert!(c.damage.len() <= MAX_DAMAGE);
        let mut out = Image::default();
        c.publish(&mut out);
        assert!(c.damage.is_empty());
    }
}
