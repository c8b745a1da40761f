//! A VNC server's byte stream as a mirror meets it, for the fuzz target
//! `rfb` (through `crate::fuzzing`): the handshake, then every message
//! decoded and applied to the canvas and the published image the way
//! `session` applies them. The first byte of the input sets how the stream is
//! cut into reads; the rest is what the server sent.
//!
//! Besides never panicking, this checks what the mirror relies on: a row the
//! decoder lets through always fits the canvas (else the mirror would drop
//! the connection as `Misplaced`), and the outcome does not depend on how the
//! stream was cut into reads.

use super::canvas::{Canvas, Image};
use super::rfb::{Decoder, Event, Handshake, RfbError, ServerInit};

/// Screens larger than this many pixels are not drawn here: a 8192x8192
/// canvas costs 256 MiB a run, which would starve the fuzzer. Their sizes
/// are still checked by the decoder (and unit-tested).
const MAX_PIXELS: usize = 1 << 20;

#[doc(hidden)]
pub fn stream(data: &[u8]) {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let whole = run(stream, stream.len().max(1));
    let pieces = run(stream, 1 + usize::from(cut));
    assert_eq!(
        whole, pieces,
        "the outcome depends on how reads cut the stream"
    );
}

/// What a mirror ends with: the handshake's result, then the stream's.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    init: Option<ServerInit>,
    replies: Vec<u8>,
    end: Result<(), RfbError>,
    image: Image,
    complete: bool,
    updates: usize,
}

/// Runs the mirror on `stream`, handed over `read` bytes at a time.
fn run(stream: &[u8], read: usize) -> Outcome {
    let mut reads = stream.chunks(read);
    let mut buf = Vec::new();
    let mut outcome = Outcome {
        init: None,
        replies: Vec::new(),
        end: Ok(()),
        image: Image::default(),
        complete: false,
        updates: 0,
    };
    let mut handshake = Handshake::new(true);
    let init = loop {
        match handshake.feed(&buf) {
            Ok(Some(progress)) => {
                assert!(progress.consumed <= buf.len(), "consumed more than given");
                buf.drain(..progress.consumed);
                outcome.replies.extend_from_slice(&progress.reply);
                if let Some(init) = progress.init {
                    break init;
                }
            }
            Ok(None) => match reads.next() {
                Some(more) => buf.extend_from_slice(more),
                None => return outcome,
            },
            Err(e) => {
                outcome.end = Err(e);
                return outcome;
            }
        }
    };
    outcome.init = Some(init.clone());
    if usize::from(init.width) * usize::from(init.height) > MAX_PIXELS {
        return outcome;
    }
    let mut decoder = Decoder::new(init.width, init.height);
    let mut canvas = Canvas::new(init.width, init.height);
    canvas.prepare(&mut outcome.image);
    loop {
        let mut pos = 0;
        loop {
            let (used, event) = match decoder.next(&buf[pos..]) {
                Ok(step) => step,
                Err(e) => {
                    outcome.end = Err(e);
                    return outcome;
                }
            };
            assert!(used <= buf.len() - pos, "used more than given");
            pos += used;
            let Some(event) = event else { break };
            match event {
                Event::Rect {
                    x,
                    y,
                    width,
                    height,
                } => canvas.rect(x, y, width, height),
                Event::Row { x, y, pixels } => {
                    let placed = if canvas.syncing() {
                        canvas.row_into(&mut outcome.image, x, y, pixels)
                    } else {
                        canvas.row(x, y, pixels)
                    };
                    assert!(placed, "the decoder let through a row off the canvas");
                }
                Event::Copy {
                    src_x,
                    src_y,
                    x,
                    y,
                    width,
                    height,
                } => {
                    if canvas.syncing() {
                        canvas.copy_into(&mut outcome.image, (src_x, src_y), x, y, width, height);
                    } else {
                        canvas.copy(src_x, src_y, x, y, width, height);
                    }
                }
                Event::Resize { width, height } => {
                    if usize::from(width) * usize::from(height) > MAX_PIXELS {
                        return outcome;
                    }
                    canvas.resize(width, height);
                    canvas.prepare(&mut outcome.image);
                }
                Event::UpdateEnd => {
                    outcome.complete = canvas.complete();
                    canvas.publish(&mut outcome.image);
                    outcome.updates += 1;
                }
                Event::UpdateStart { .. }
                | Event::Bell
                | Event::ColourMap { .. }
                | Event::CutText { .. }
                | Event::Skipped(_) => {}
            }
        }
        buf.drain(..pos);
        match reads.next() {
            Some(more) => buf.extend_from_slice(more),
            None => return outcome,
        }
    }
}
