//! Netpbm P6 (RGB) and P5 (gray) payloads, as QEMU older than 7.1 returns them.
//!
//! A tiny format, parsed here rather than through a general image library so
//! that 8-bit pixels stay where they are in the payload (see `Frame`).

use super::decode::{check_dimensions, DecodeError, Limits};
use crate::frame::{Frame, Layout};

pub(super) fn decode(payload: Vec<u8>, limits: &Limits) -> Result<Frame, DecodeError> {
    let mut header = Header {
        bytes: &payload,
        pos: 2,
    };
    let layout = match &payload[..2] {
        b"P6" => Layout::Rgb8,
        b"P5" => Layout::Gray8,
        _ => return Err(DecodeError::Corrupt("not a binary PPM/PGM".into())),
    };
    let width = header.number("width")?;
    let height = header.number("height")?;
    let maxval = header.number("maxval")?;
    if maxval == 0 || maxval > 65535 {
        return Err(DecodeError::Corrupt(format!(
            "PPM maxval {maxval} is out of range"
        )));
    }
    // Exactly one whitespace byte separates the header from the pixels.
    if !header.peek().is_some_and(|b| b.is_ascii_whitespace()) {
        return Err(DecodeError::Truncated("PPM header".into()));
    }
    let data_start = header.pos + 1;
    check_dimensions(width, height, limits)?;

    let sample_bytes = if maxval < 256 { 1 } else { 2 };
    let samples = width * height * layout.bytes_per_pixel();
    let expected = samples * sample_bytes;
    let available = payload.len() - data_start;
    if available < expected {
        return Err(DecodeError::Truncated(format!(
            "PPM pixel data: {available} of {expected} bytes"
        )));
    }
    if available > expected {
        return Err(DecodeError::Corrupt(format!(
            "PPM has {} bytes after its pixel data",
            available - expected
        )));
    }
    if maxval == 255 {
        return Ok(Frame::new(width, height, layout, payload, data_start));
    }
    let pixels = rescale(&payload[data_start..], samples, sample_bytes, maxval);
    Ok(Frame::new(width, height, layout, pixels, 0))
}

/// Samples of any depth scaled to 0..=255, rounding to nearest.
fn rescale(data: &[u8], samples: usize, sample_bytes: usize, maxval: usize) -> Vec<u8> {
    (0..samples)
        .map(|i| {
            let v = if sample_bytes == 1 {
                usize::from(data[i])
            } else {
                usize::from(u16::from_be_bytes([data[2 * i], data[2 * i + 1]]))
            };
            ((v.min(maxval) * 255 + maxval / 2) / maxval) as u8
        })
        .collect()
}

struct Header<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Header<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// Skips whitespace and `#` comments, then reads one decimal number.
    fn number(&mut self, what: &str) -> Result<usize, DecodeError> {
        loop {
            match self.peek() {
                Some(b) if b.is_ascii_whitespace() => self.pos += 1,
                Some(b'#') => {
                    while self.peek().is_some_and(|b| b != b'\n') {
                        self.pos += 1;
                    }
                }
                Some(_) => break,
                None => return Err(DecodeError::Truncated(format!("PPM header before {what}"))),
            }
        }
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
            if self.pos - start > 9 {
                return Err(DecodeError::Corrupt(format!("PPM {what} is too long")));
            }
        }
        std::str::from_utf8(&self.bytes[start..self.pos])
            .ok()
            .and_then(|digits| digits.parse().ok())
            .ok_or_else(|| DecodeError::Corrupt(format!("PPM {what} is not a number")))
    }
}
