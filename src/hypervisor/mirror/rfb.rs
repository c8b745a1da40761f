//! The client side of RFB (the VNC protocol, RFC 6143), as far as a mirror of
//! the framebuffer needs it, without any I/O: the handshake and the server's
//! messages are parsed from byte strings, and the client's messages are built
//! as byte strings. The mirror moves the bytes; everything the server can get
//! wrong is caught here, as a typed error.
//!
//! Every length the server announces is checked against a limit before it
//! decides how much is read or skipped, so a corrupt or hostile stream costs a
//! bounded amount of memory and ends in an error, never a panic.

/// Largest framebuffer side accepted (8K UHD is 7680x4320).
pub const MAX_SIDE: u16 = 8192;
/// Largest desktop name or failure reason accepted.
pub const MAX_TEXT: u32 = 4096;
/// Largest clipboard text skipped. QEMU only sends clipboard text when a guest
/// agent shares it; anything beyond this is not worth reading through.
pub const MAX_CUT_TEXT: u32 = 1 << 20;
/// The mirror's pixels are 32-bit words.
pub const BYTES_PER_PIXEL: usize = 4;

pub const ENCODING_RAW: i32 = 0;
pub const ENCODING_COPY_RECT: i32 = 1;
/// Pseudo-encoding: the framebuffer changed size (a guest switching video modes).
pub const ENCODING_DESKTOP_SIZE: i32 = -223;

/// Security type 1: no authentication. libvirt's SKIPAUTH makes QEMU offer it.
const SECURITY_NONE: u8 = 1;

/// The protocol versions spoken; servers announcing others are mapped onto
/// these as RFC 6143 section 7.1.1 asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V3_3,
    V3_7,
    V3_8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RfbError {
    #[error("not an RFB server (it greeted with {0:?})")]
    NotRfb(String),
    #[error("unsupported RFB version {0}.{1}")]
    UnsupportedVersion(u32, u32),
    #[error("the VNC server refused the connection: {0}")]
    Refused(String),
    #[error("the VNC server wants authentication (security types {0:?}, none of them 1 = None)")]
    NoSecurityNone(Vec<u8>),
    #[error("the VNC server offered no security types")]
    NoSecurityTypes,
    #[error("framebuffer size {0}x{1} is outside 1x1..=8192x8192")]
    BadSize(u16, u16),
    #[error("{what} of {len} bytes is longer than the {limit}-byte limit")]
    TooLong {
        what: &'static str,
        len: u32,
        limit: u32,
    },
    #[error("rectangle at {x},{y} of {width}x{height} lies outside the {fb_width}x{fb_height} framebuffer")]
    OutOfBounds {
        x: u16,
        y: u16,
        width: u16,
        height: u16,
        fb_width: u16,
        fb_height: u16,
    },
    #[error("the VNC server used encoding {0}, which was not asked for")]
    UnexpectedEncoding(i32),
    #[error("unknown VNC server message type {0}")]
    UnknownMessage(u8),
}

/// What the server says about its framebuffer once the handshake is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInit {
    pub width: u16,
    pub height: u16,
    /// The server's own pixel format, raw (the mirror replaces it at once).
    pub pixel_format: [u8; 16],
    pub name: String,
    pub version: Version,
}

/// One step of the handshake: bytes of the input used, and what to send back.
#[derive(Debug, PartialEq, Eq)]
pub struct Progress {
    pub consumed: usize,
    pub reply: Vec<u8>,
    /// Set when the handshake is complete.
    pub init: Option<ServerInit>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HandshakeState {
    Version,
    SecurityTypes,
    SecurityType33,
    SecurityResult,
    ServerInit,
    Done,
}

/// The handshake up to ServerInit, fed with what the server sends.
#[derive(Debug)]
pub struct Handshake {
    state: HandshakeState,
    version: Version,
    shared: bool,
}

impl Handshake {
    /// `shared`: whether other clients may stay connected. With `false`, QEMU's
    /// default share policy (allow-exclusive) disconnects every other client.
    pub fn new(shared: bool) -> Self {
        Self {
            state: HandshakeState::Version,
            version: Version::V3_8,
            shared,
        }
    }

    /// Parses the next server message of the handshake from the start of
    /// `input`; `Ok(None)` means more bytes are needed (nothing was used).
    pub fn feed(&mut self, input: &[u8]) -> Result<Option<Progress>, RfbError> {
        let step = |consumed, reply| {
            Ok(Some(Progress {
                consumed,
                reply,
                init: None,
            }))
        };
        match self.state {
            HandshakeState::Version => {
                let Some(greeting) = input.get(..12) else {
                    return Ok(None);
                };
                self.version = parse_version(greeting)?;
                self.state = match self.version {
                    Version::V3_3 => HandshakeState::SecurityType33,
                    Version::V3_7 | Version::V3_8 => HandshakeState::SecurityTypes,
                };
                step(12, version_message(self.version).to_vec())
            }
            HandshakeState::SecurityTypes => {
                let Some(&count) = input.first() else {
                    return Ok(None);
                };
                if count == 0 {
                    return match reason(&input[1..])? {
                        Some(why) => Err(RfbError::Refused(why)),
                        None => Ok(None),
                    };
                }
                let Some(types) = input.get(1..1 + usize::from(count)) else {
                    return Ok(None);
                };
                if !types.contains(&SECURITY_NONE) {
                    return Err(RfbError::NoSecurityNone(types.to_vec()));
                }
                // 3.8 confirms even "None" with a SecurityResult; 3.7 goes on
                // straight to the client's init.
                let consumed = 1 + usize::from(count);
                if self.version == Version::V3_8 {
                    self.state = HandshakeState::SecurityResult;
                    step(consumed, vec![SECURITY_NONE])
                } else {
                    self.state = HandshakeState::ServerInit;
                    step(consumed, vec![SECURITY_NONE, u8::from(self.shared)])
                }
            }
            HandshakeState::SecurityType33 => {
                let Some(word) = input.get(..4) else {
                    return Ok(None);
                };
                match be32(word) {
                    0 => match reason(&input[4..])? {
                        Some(why) => Err(RfbError::Refused(why)),
                        None => Ok(None),
                    },
                    1 => {
                        self.state = HandshakeState::ServerInit;
                        step(4, vec![u8::from(self.shared)])
                    }
                    other => Err(RfbError::NoSecurityNone(vec![
                        u8::try_from(other).unwrap_or(u8::MAX)
                    ])),
                }
            }
            HandshakeState::SecurityResult => {
                let Some(word) = input.get(..4) else {
                    return Ok(None);
                };
                if be32(word) == 0 {
                    self.state = HandshakeState::ServerInit;
                    return step(4, vec![u8::from(self.shared)]);
                }
                match reason(&input[4..])? {
                    Some(why) => Err(RfbError::Refused(why)),
                    None => Ok(None),
                }
            }
            HandshakeState::ServerInit => {
                let Some(head) = input.get(..24) else {
                    return Ok(None);
                };
                let (width, height) = (be16(&head[0..]), be16(&head[2..]));
                check_size(width, height)?;
                let name_len = checked_len("desktop name", be32(&head[20..]), MAX_TEXT)?;
                let Some(name) = input.get(24..24 + name_len) else {
                    return Ok(None);
                };
                let mut pixel_format = [0; 16];
                pixel_format.copy_from_slice(&head[4..20]);
                self.state = HandshakeState::Done;
                Ok(Some(Progress {
                    consumed: 24 + name_len,
                    reply: Vec::new(),
                    init: Some(ServerInit {
                        width,
                        height,
                        pixel_format,
                        name: String::from_utf8_lossy(name).into_owned(),
                        version: self.version,
                    }),
                }))
            }
            HandshakeState::Done => Ok(None),
        }
    }
}

/// A failure reason (u32 length, then text); `Ok(None)` if not all there yet.
fn reason(input: &[u8]) -> Result<Option<String>, RfbError> {
    let Some(word) = input.get(..4) else {
        return Ok(None);
    };
    let len = checked_len("failure reason", be32(word), MAX_TEXT)?;
    Ok(input
        .get(4..4 + len)
        .map(|text| String::from_utf8_lossy(text).into_owned()))
}

fn parse_version(greeting: &[u8]) -> Result<Version, RfbError> {
    let not_rfb = || RfbError::NotRfb(String::from_utf8_lossy(greeting).into_owned());
    if &greeting[..4] != b"RFB " || greeting[7] != b'.' || greeting[11] != b'\n' {
        return Err(not_rfb());
    }
    let number = |digits: &[u8]| -> Option<u32> {
        digits.iter().try_fold(0u32, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let (Some(major), Some(minor)) = (number(&greeting[4..7]), number(&greeting[8..11])) else {
        return Err(not_rfb());
    };
    match (major, minor) {
        (3, 8..) => Ok(Version::V3_8),
        (3, 7) => Ok(Version::V3_7),
        // 3.5 and other odd minors are 3.3 as far as a client is concerned.
        (3, _) => Ok(Version::V3_3),
        _ => Err(RfbError::UnsupportedVersion(major, minor)),
    }
}

pub fn version_message(version: Version) -> &'static [u8; 12] {
    match version {
        Version::V3_3 => b"RFB 003.003\n",
        Version::V3_7 => b"RFB 003.007\n",
        Version::V3_8 => b"RFB 003.008\n",
    }
}

/// SetPixelFormat: 32 bits per pixel, depth 24, little-endian true colour with
/// red at bit 16, green at 8, blue at 0, so that each pixel lands in memory as
/// B, G, R, X: QEMU's own surface format (no conversion on its side) and one
/// libjpeg-turbo reads directly.
pub fn set_pixel_format_bgrx() -> [u8; 20] {
    [
        0, 0, 0, 0, // message type, padding
        32, 24, 0, 1, // bits per pixel, depth, big-endian, true colour
        0, 255, 0, 255, 0, 255, // red, green, blue maximum
        16, 8, 0, // red, green, blue shift
        0, 0, 0, // padding
    ]
}

/// SetEncodings, in order of preference.
pub fn set_encodings(encodings: &[i32]) -> Vec<u8> {
    let count = u16::try_from(encodings.len()).expect("a handful of encodings");
    let mut msg = vec![2, 0];
    msg.extend_from_slice(&count.to_be_bytes());
    for e in encodings {
        msg.extend_from_slice(&e.to_be_bytes());
    }
    msg
}

pub fn update_request(incremental: bool, x: u16, y: u16, width: u16, height: u16) -> [u8; 10] {
    let mut msg = [3, u8::from(incremental), 0, 0, 0, 0, 0, 0, 0, 0];
    for (i, v) in [x, y, width, height].into_iter().enumerate() {
        msg[2 + 2 * i..4 + 2 * i].copy_from_slice(&v.to_be_bytes());
    }
    msg
}

/// What the server's stream says, one piece at a time.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A FramebufferUpdate begins; its rectangles follow.
    UpdateStart {
        rects: u16,
    },
    /// A Raw rectangle begins; its rows follow as `Row` events, top to bottom.
    Rect {
        x: u16,
        y: u16,
        width: u16,
        height: u16,
    },
    /// One row of a Raw rectangle: `width * 4` bytes of pixels for (x.., y).
    Row {
        x: u16,
        y: u16,
        pixels: &'a [u8],
    },
    /// Copy the `width`x`height` area at (src_x, src_y) to (x, y).
    Copy {
        src_x: u16,
        src_y: u16,
        x: u16,
        y: u16,
        width: u16,
        height: u16,
    },
    /// The framebuffer now has this size; its content is undefined until the
    /// server repaints it.
    Resize {
        width: u16,
        height: u16,
    },
    /// The current FramebufferUpdate is complete.
    UpdateEnd,
    Bell,
    /// A SetColourMapEntries message (meaningless in true colour); its entries
    /// are skipped.
    ColourMap {
        count: u16,
    },
    /// A ServerCutText message; its text is skipped.
    CutText {
        len: u32,
    },
    /// Bytes of a skipped payload passed over.
    Skipped(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamState {
    Idle,
    Rects {
        left: u16,
    },
    Rows {
        left: u16,
        x: u16,
        y: u16,
        width: u16,
        height: u16,
        row: u16,
    },
    Skip {
        left: u32,
    },
}

/// Parses the server's messages after the handshake, in the pixel format of
/// `set_pixel_format_bgrx` and the encodings Raw, CopyRect and DesktopSize.
/// It keeps the framebuffer size to check every rectangle against it.
#[derive(Debug)]
pub struct Decoder {
    width: u16,
    height: u16,
    state: StreamState,
}

impl Decoder {
    pub fn new(width: u16, height: u16) -> Self {
        Self {
            width,
            height,
            state: StreamState::Idle,
        }
    }

    /// The next event at the start of `input`, and how many bytes of it were
    /// used. With no event, more input is needed; the bytes used (headers
    /// already taken in) must still be dropped. A pixel row is only returned
    /// whole, so the caller's buffer must hold at least `MAX_SIDE * 4` bytes
    /// plus a header.
    pub fn next<'a>(&mut self, input: &'a [u8]) -> Result<(usize, Option<Event<'a>>), RfbError> {
        loop {
            let buf = input;
            match self.state {
                StreamState::Idle => {
                    let Some(&kind) = buf.first() else {
                        return Ok((0, None));
                    };
                    return match kind {
                        0 => {
                            let Some(head) = buf.get(..4) else {
                                return Ok((0, None));
                            };
                            let rects = be16(&head[2..]);
                            self.state = StreamState::Rects { left: rects };
                            Ok((4, Some(Event::UpdateStart { rects })))
                        }
                        1 => {
                            let Some(head) = buf.get(..6) else {
                                return Ok((0, None));
                            };
                            let count = be16(&head[4..]);
                            self.state = StreamState::Skip {
                                left: u32::from(count) * 6,
                            };
                            Ok((6, Some(Event::ColourMap { count })))
                        }
                        2 => Ok((1, Some(Event::Bell))),
                        3 => {
                            let Some(head) = buf.get(..8) else {
                                return Ok((0, None));
                            };
                            let len = be32(&head[4..]);
                            checked_len("clipboard text", len, MAX_CUT_TEXT)?;
                            self.state = StreamState::Skip { left: len };
                            Ok((8, Some(Event::CutText { len })))
                        }
                        other => Err(RfbError::UnknownMessage(other)),
                    };
                }
                StreamState::Skip { left: 0 } => self.state = StreamState::Idle,
                StreamState::Skip { left } => {
                    let n = buf.len().min(left as usize);
                    if n == 0 {
                        return Ok((0, None));
                    }
                    self.state = StreamState::Skip {
                        left: left - n as u32,
                    };
                    return Ok((n, Some(Event::Skipped(n))));
                }
                StreamState::Rects { left: 0 } => {
                    self.state = StreamState::Idle;
                    return Ok((0, Some(Event::UpdateEnd)));
                }
                StreamState::Rects { left } => {
                    let Some(head) = buf.get(..12) else {
                        return Ok((0, None));
                    };
                    let (x, y) = (be16(&head[0..]), be16(&head[2..]));
                    let (width, height) = (be16(&head[4..]), be16(&head[6..]));
                    let encoding = be32(&head[8..]) as i32;
                    let rest = StreamState::Rects { left: left - 1 };
                    match encoding {
                        ENCODING_RAW => {
                            self.check_rect(x, y, width, height)?;
                            self.state = if width == 0 || height == 0 {
                                rest
                            } else {
                                StreamState::Rows {
                                    left: left - 1,
                                    x,
                                    y,
                                    width,
                                    height,
                                    row: 0,
                                }
                            };
                            let rect = Event::Rect {
                                x,
                                y,
                                width,
                                height,
                            };
                            return Ok((12, Some(rect)));
                        }
                        ENCODING_COPY_RECT => {
                            let Some(src) = buf.get(12..16) else {
                                return Ok((0, None));
                            };
                            let (src_x, src_y) = (be16(&src[0..]), be16(&src[2..]));
                            self.check_rect(x, y, width, height)?;
                            self.check_rect(src_x, src_y, width, height)?;
                            self.state = rest;
                            let copy = Event::Copy {
                                src_x,
                                src_y,
                                x,
                                y,
                                width,
                                height,
                            };
                            return Ok((16, Some(copy)));
                        }
                        ENCODING_DESKTOP_SIZE => {
                            check_size(width, height)?;
                            (self.width, self.height) = (width, height);
                            self.state = rest;
                            return Ok((12, Some(Event::Resize { width, height })));
                        }
                        other => return Err(RfbError::UnexpectedEncoding(other)),
                    }
                }
                StreamState::Rows {
                    left,
                    x,
                    y,
                    width,
                    height,
                    row,
                } => {
                    let len = usize::from(width) * BYTES_PER_PIXEL;
                    let Some(pixels) = buf.get(..len) else {
                        return Ok((0, None));
                    };
                    self.state = if row + 1 == height {
                        StreamState::Rects { left }
                    } else {
                        StreamState::Rows {
                            left,
                            x,
                            y,
                            width,
                            height,
                            row: row + 1,
                        }
                    };
                    let y = y + row;
                    return Ok((len, Some(Event::Row { x, y, pixels })));
                }
            }
        }
    }

    fn check_rect(&self, x: u16, y: u16, width: u16, height: u16) -> Result<(), RfbError> {
        let inside = u32::from(x) + u32::from(width) <= u32::from(self.width)
            && u32::from(y) + u32::from(height) <= u32::from(self.height);
        if inside {
            Ok(())
        } else {
            Err(RfbError::OutOfBounds {
                x,
                y,
                width,
                height,
                fb_width: self.width,
                fb_height: self.height,
            })
        }
    }
}

fn check_size(width: u16, height: u16) -> Result<(), RfbError> {
    if (1..=MAX_SIDE).contains(&width) && (1..=MAX_SIDE).contains(&height) {
        Ok(())
    } else {
        Err(RfbError::BadSize(width, height))
    }
}

fn checked_len(what: &'static str, len: u32, limit: u32) -> Result<usize, RfbError> {
    if len <= limit {
        Ok(len as usize)
    } else {
        Err(RfbError::TooLong { what, len, limit })
    }
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU's ServerInit for a 1024x768 screen in its native xRGB format.
    fn server_init(width: u16, height: u16, name: &[u8]) -> Vec<u8> {
        let mut msg = Vec::new();
        msg.extend_from_slice(&width.to_be_bytes());
        msg.extend_from_slice(&height.to_be_bytes());
        msg.extend_from_slice(&[32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]);
        msg.extend_from_slice(&(name.len() as u32).to_be_bytes());
        msg.extend_from_slice(name);
        msg
    }

    /// Runs a handshake over `server` (the whole server side, concatenated),
    /// feeding it one byte more at a time so that every "need more" path runs.
    fn handshake(server: &[u8]) -> Result<(ServerInit, Vec<u8>), RfbError> {
        let mut hs = Handshake::new(true);
        let mut sent = Vec::new();
        let mut pos = 0;
        let mut end = pos;
        loop {
            match hs.feed(&server[pos..end])? {
                Some(p) => {
                    pos += p.consumed;
                    sent.extend_from_slice(&p.reply);
                    if let Some(init) = p.init {
                        assert_eq!(pos, server.len(), "all of the server's bytes used");
                        return Ok((init, sent));
                    }
                }
                None if end == server.len() => panic!("handshake stalled at byte {pos}"),
                None => end += 1,
            }
        }
    }

    #[test]
    fn handshake_3_8_with_security_none_and_shared_flag() {
        let mut server = b"RFB 003.008\n".to_vec();
        server.extend_from_slice(&[2, 2, 1]); // VNC auth, None
        server.extend_from_slice(&[0, 0, 0, 0]); // SecurityResult OK
        server.extend_from_slice(&server_init(1024, 768, b"QEMU (guest)"));
        let (init, sent) = handshake(&server).unwrap();
        assert_eq!(sent, b"RFB 003.008\n\x01\x01");
        assert_eq!((init.width, init.height), (1024, 768));
        assert_eq!(init.name, "QEMU (guest)");
        assert_eq!(init.version, Version::V3_8);
    }

    #[test]
    fn handshake_3_7_has_no_security_result() {
        let mut server = b"RFB 003.007\n".to_vec();
        server.extend_from_slice(&[1, 1]);
        server.extend_from_slice(&server_init(720, 400, b""));
        let (init, sent) = handshake(&server).unwrap();
        assert_eq!(sent, b"RFB 003.007\n\x01\x01");
        assert_eq!(
            (init.width, init.height, init.version),
            (720, 400, Version::V3_7)
        );
    }

    #[test]
    fn handshake_3_3_server_picks_the_type() {
        let mut server = b"RFB 003.003\n".to_vec();
        server.extend_from_slice(&[0, 0, 0, 1]);
        server.extend_from_slice(&server_init(640, 480, b"x"));
        let (init, sent) = handshake(&server).unwrap();
        assert_eq!(sent, b"RFB 003.003\n\x01");
        assert_eq!(init.version, Version::V3_3);
    }

    #[test]
    fn odd_versions_map_onto_known_ones() {
        assert_eq!(parse_version(b"RFB 003.889\n"), Ok(Version::V3_8));
        assert_eq!(parse_version(b"RFB 003.005\n"), Ok(Version::V3_3));
        assert_eq!(
            parse_version(b"RFB 004.001\n"),
            Err(RfbError::UnsupportedVersion(4, 1))
        );
        assert!(matches!(
            parse_version(b"SSH-2.0-x\r\n\0"),
            Err(RfbError::NotRfb(_))
        ));
        assert!(matches!(
            parse_version(b"RFB 0a3.008\n"),
            Err(RfbError::NotRfb(_))
        ));
    }

    #[test]
    fn handshake_refusals_are_errors() {
        let mut hs = Handshake::new(true);
        hs.feed(b"RFB 003.008\n").unwrap();
        let mut refused = vec![0, 0, 0, 0, 4];
        refused.extend_from_slice(b"busy");
        assert_eq!(hs.feed(&refused[..6]), Ok(None), "reason not all there");
        assert_eq!(hs.feed(&refused), Err(RfbError::Refused("busy".into())));

        let mut hs = Handshake::new(true);
        hs.feed(b"RFB 003.008\n").unwrap();
        assert_eq!(hs.feed(&[1, 2]), Err(RfbError::NoSecurityNone(vec![2])));

        let mut hs = Handshake::new(true);
        hs.feed(b"RFB 003.003\n").unwrap();
        assert_eq!(
            hs.feed(&[0, 0, 0, 2]),
            Err(RfbError::NoSecurityNone(vec![2]))
        );

        let mut hs = Handshake::new(true);
        hs.feed(b"RFB 003.008\n").unwrap();
        hs.feed(&[1, 1]).unwrap();
        let mut failed = vec![0, 0, 0, 1, 0, 0, 0, 2];
        failed.extend_from_slice(b"no");
        assert_eq!(hs.feed(&failed), Err(RfbError::Refused("no".into())));
    }

    #[test]
    fn handshake_rejects_oversized_names_reasons_and_screens() {
        let mut hs = Handshake::new(true);
        hs.feed(b"RFB 003.008\n").unwrap();
        let huge = [0, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(hs.feed(&huge), Err(RfbError::TooLong { .. })));

        let mut hs = Handshake::new(true);
        hs.feed(b"RFB 003.007\n").unwrap();
        hs.feed(&[1, 1]).unwrap();
        let mut init = server_init(800, 600, b"");
        init[20..24].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(hs.feed(&init), Err(RfbError::TooLong { .. })));

        for (w, h) in [(0, 600), (800, 0), (8193, 600), (65535, 65535)] {
            let mut hs = Handshake::new(true);
            hs.feed(b"RFB 003.007\n").unwrap();
            hs.feed(&[1, 1]).unwrap();
            assert_eq!(
                hs.feed(&server_init(w, h, b"")),
                Err(RfbError::BadSize(w, h))
            );
        }
    }

    #[test]
    fn exclusive_handshake_says_so() {
        let mut hs = Handshake::new(false);
        hs.feed(b"RFB 003.007\n").unwrap();
        assert_eq!(hs.feed(&[1, 1]).unwrap().unwrap().reply, vec![1, 0]);
    }

    #[test]
    fn client_messages() {
        let pf = set_pixel_format_bgrx();
        assert_eq!(pf[0], 0);
        assert_eq!(&pf[4..8], &[32, 24, 0, 1]);
        assert_eq!(&pf[14..17], &[16, 8, 0]);
        assert_eq!(
            set_encodings(&[ENCODING_RAW, ENCODING_DESKTOP_SIZE]),
            vec![2, 0, 0, 2, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x21]
        );
        assert_eq!(
            update_request(true, 1, 2, 1024, 768),
            [3, 1, 0, 1, 0, 2, 4, 0, 3, 0]
        );
    }

    fn rect(x: u16, y: u16, w: u16, h: u16, encoding: i32) -> Vec<u8> {
        let mut r = Vec::new();
        for v in [x, y, w, h] {
            r.extend_from_slice(&v.to_be_bytes());
        }
        r.extend_from_slice(&encoding.to_be_bytes());
        r
    }

    fn update(rects: &[Vec<u8>]) -> Vec<u8> {
        let mut msg = vec![0, 0];
        msg.extend_from_slice(&(rects.len() as u16).to_be_bytes());
        for r in rects {
            msg.extend_from_slice(r);
        }
        msg
    }

    /// Every event of `stream`, fed whole; owned so that they outlive it.
    fn events(decoder: &mut Decoder, stream: &[u8]) -> Result<Vec<String>, RfbError> {
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            let (used, event) = decoder.next(&stream[pos..])?;
            pos += used;
            match event {
                Some(e) => out.push(format!("{e:?}")),
                None => return Ok(out),
            }
        }
    }

    #[test]
    fn raw_update_is_delivered_row_by_row() {
        let mut raw = rect(1, 2, 2, 2, ENCODING_RAW);
        raw.extend_from_slice(&[1, 1, 1, 0, 2, 2, 2, 0, 3, 3, 3, 0, 4, 4, 4, 0]);
        let stream = update(&[raw]);
        let mut d = Decoder::new(4, 4);
        assert_eq!(
            events(&mut d, &stream).unwrap(),
            [
                "UpdateStart { rects: 1 }",
                "Rect { x: 1, y: 2, width: 2, height: 2 }",
                "Row { x: 1, y: 2, pixels: [1, 1, 1, 0, 2, 2, 2, 0] }",
                "Row { x: 1, y: 3, pixels: [3, 3, 3, 0, 4, 4, 4, 0] }",
                "UpdateEnd",
            ]
        );
    }

    #[test]
    fn every_split_of_the_stream_gives_the_same_events() {
        let mut raw = rect(0, 0, 3, 1, ENCODING_RAW);
        raw.extend_from_slice(&[9; 12]);
        let mut copy = rect(1, 1, 2, 2, ENCODING_COPY_RECT);
        copy.extend_from_slice(&[0, 0, 0, 0]);
        let mut stream = update(&[raw, copy, rect(0, 0, 0, 0, ENCODING_RAW)]);
        stream.push(2); // Bell
        stream.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 3, b'a', b'b', b'c']);
        stream.extend_from_slice(&[1, 0, 0, 0, 0, 1]);
        stream.extend_from_slice(&[0; 6]);
        stream.extend_from_slice(&update(&[]));

        let whole = events(&mut Decoder::new(4, 4), &stream).unwrap();
        let skipped: Vec<_> = whole.iter().filter(|e| e.starts_with("Skipped")).collect();
        assert_eq!(skipped, ["Skipped(3)", "Skipped(6)"]);
        assert_eq!(whole.last().unwrap(), "UpdateEnd");

        // Fed one byte more at a time: the same events, skipped bytes aside
        // (which arrive in as many pieces as the input does).
        let mut d = Decoder::new(4, 4);
        let (mut got, mut pos) = (Vec::new(), 0);
        for end in 0..=stream.len() {
            loop {
                let (used, event) = d.next(&stream[pos..end]).unwrap();
                pos += used;
                match event {
                    Some(Event::Skipped(_)) => {}
                    Some(e) => got.push(format!("{e:?}")),
                    None => break,
                }
            }
        }
        assert_eq!(pos, stream.len());
        let whole: Vec<_> = whole
            .into_iter()
            .filter(|e| !e.starts_with("Skipped"))
            .collect();
        assert_eq!(got, whole);
    }

    #[test]
    fn desktop_size_changes_the_bounds() {
        let mut raw = rect(700, 0, 1, 1, ENCODING_RAW);
        raw.extend_from_slice(&[0; 4]);
        let stream = update(&[rect(0, 0, 1024, 768, ENCODING_DESKTOP_SIZE), raw.clone()]);
        let mut d = Decoder::new(640, 480);
        let got = events(&mut d, &stream).unwrap();
        assert_eq!(got[1], "Resize { width: 1024, height: 768 }");
        assert_eq!(got.last().unwrap(), "UpdateEnd");

        let shrink = update(&[rect(0, 0, 640, 480, ENCODING_DESKTOP_SIZE), raw]);
        assert!(matches!(
            events(&mut d, &shrink),
            Err(RfbError::OutOfBounds { x: 700, .. })
        ));
        let mut d = Decoder::new(640, 480);
        assert_eq!(
            events(
                &mut d,
                &update(&[rect(0, 0, 9000, 10, ENCODING_DESKTOP_SIZE)])
            ),
            Err(RfbError::BadSize(9000, 10))
        );
    }

    #[test]
    fn rectangles_outside_the_framebuffer_are_refused() {
        for (x, y, w, h) in [
            (0, 0, 5, 1),
            (4, 0, 1, 1),
            (0, 3, 1, 2),
            (65535, 0, 2, 1),
            (0, 65535, 1, 65535),
        ] {
            let mut d = Decoder::new(4, 4);
            let stream = update(&[rect(x, y, w, h, ENCODING_RAW)]);
            assert!(
                matches!(events(&mut d, &stream), Err(RfbError::OutOfBounds { .. })),
                "{x},{y} {w}x{h}"
            );
        }
        // A copy whose source is outside.
        let mut copy = rect(0, 0, 2, 2, ENCODING_COPY_RECT);
        copy.extend_from_slice(&[0, 3, 0, 0]);
        assert!(matches!(
            events(&mut Decoder::new(4, 4), &update(&[copy])),
            Err(RfbError::OutOfBounds { x: 3, .. })
        ));
    }

    #[test]
    fn corrupt_streams_are_errors() {
        let mut d = Decoder::new(4, 4);
        assert_eq!(events(&mut d, &[7]), Err(RfbError::UnknownMessage(7)));
        let mut d = Decoder::new(4, 4);
        assert_eq!(
            events(&mut d, &update(&[rect(0, 0, 1, 1, 16)])),
            Err(RfbError::UnexpectedEncoding(16))
        );
        let mut d = Decoder::new(4, 4);
        assert!(matches!(
            events(&mut d, &[3, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff]),
            Err(RfbError::TooLong {
                what: "clipboard text",
                ..
            })
        ));
    }

    #[test]
    fn truncated_input_only_asks_for_more() {
        let mut raw = rect(0, 0, 2, 2, ENCODING_RAW);
        raw.extend_from_slice(&[5; 16]);
        let stream = update(&[raw]);
        for cut in 0..stream.len() {
            let mut d = Decoder::new(4, 4);
            let mut pos = 0;
            loop {
                let (used, event) = d.next(&stream[pos..cut]).unwrap();
                pos += used;
                assert!(pos <= cut);
                if event.is_none() {
                    break;
                }
                assert_ne!(event, Some(Event::UpdateEnd), "ended early at {cut}");
            }
        }
    }

    #[test]
    fn many_empty_rectangles_take_no_memory() {
        let rects: Vec<_> = (0..1000).map(|_| rect(0, 0, 0, 0, ENCODING_RAW)).collect();
        let got = events(&mut Decoder::new(4, 4), &update(&rects)).unwrap();
        assert_eq!(got.len(), 1002);
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;

    /// A server message, its numbers to be fitted to the screen of the
    /// moment when it is encoded.
    #[derive(Debug, Clone)]
    enum Msg {
        Update(Vec<(u8, [u16; 6])>),
        Bell,
        ColourMap(u16),
        CutText(Vec<u8>),
    }

    fn msg() -> impl Strategy<Value = Msg> {
        prop_oneof![
            4 => proptest::collection::vec((0u8..3, any::<[u16; 6]>()), 0..4).prop_map(Msg::Update),
            1 => Just(Msg::Bell),
            1 => (0u16..20).prop_map(Msg::ColourMap),
            1 => proptest::collection::vec(any::<u8>(), 0..20).prop_map(Msg::CutText),
        ]
    }

    /// What the decoder should say, owned.
    #[derive(Debug, PartialEq, Eq)]
    enum Said {
        Event(String),
        Row(u16, u16, Vec<u8>),
    }

    fn said(event: Event<'_>) -> Said {
        match event {
            Event::Row { x, y, pixels } => Said::Row(x, y, pixels.to_vec()),
            other => Said::Event(format!("{other:?}")),
        }
    }

    /// The server's side: `msgs` encoded for a screen of `size`, with the
    /// events a client should read from them.
    fn encode(mut size: (u16, u16), msgs: &[Msg]) -> (Vec<u8>, Vec<Said>) {
        let (mut out, mut want) = (Vec::new(), Vec::new());
        let ev = |e: Event<'_>| said(e);
        for m in msgs {
            match m {
                Msg::Bell => {
                    out.push(2);
                    want.push(ev(Event::Bell));
                }
                Msg::ColourMap(count) => {
                    out.extend_from_slice(&[1, 0, 0, 0]);
                    out.extend_from_slice(&count.to_be_bytes());
                    out.extend(std::iter::repeat_n(7, usize::from(*count) * 6));
                    want.push(ev(Event::ColourMap { count: *count }));
                    if *count > 0 {
                        want.push(ev(Event::Skipped(usize::from(*count) * 6)));
                    }
                }
                Msg::CutText(text) => {
                    out.extend_from_slice(&[3, 0, 0, 0]);
                    out.extend_from_slice(&(text.len() as u32).to_be_bytes());
                    out.extend_from_slice(text);
                    want.push(ev(Event::CutText {
                        len: text.len() as u32,
                    }));
                    if !text.is_empty() {
                        want.push(ev(Event::Skipped(text.len())));
                    }
                }
                Msg::Update(rects) => {
                    out.extend_from_slice(&[0, 0]);
                    out.extend_from_slice(&(rects.len() as u16).to_be_bytes());
                    want.push(ev(Event::UpdateStart {
                        rects: rects.len() as u16,
                    }));
                    for (kind, n) in rects {
                        let (w, h) = size;
                        let (x, y) = (n[0] % w, n[1] % h);
                        let (width, height) = (n[2] % (w - x + 1), n[3] % (h - y + 1));
                        let head = |out: &mut Vec<u8>, v: [u16; 4], encoding: i32| {
                            for part in v {
                                out.extend_from_slice(&part.to_be_bytes());
                            }
                            out.extend_from_slice(&encoding.to_be_bytes());
                        };
                        match kind {
                            0 => {
                                head(&mut out, [x, y, width, height], ENCODING_RAW);
                                want.push(ev(Event::Rect {
                                    x,
                                    y,
                                    width,
                                    height,
                                }));
                                // A rectangle without pixels has no rows.
                                for row in (0..height).filter(|_| width > 0) {
                                    let pixels: Vec<u8> = (0..usize::from(width) * BYTES_PER_PIXEL)
                                        .map(|i| (i as u16 ^ row ^ n[4]) as u8)
                                        .collect();
                                    out.extend_from_slice(&pixels);
                                    want.push(Said::Row(x, y + row, pixels));
                                }
                            }
                            1 => {
                                let (src_x, src_y) =
                                    (n[4] % (w - width + 1), n[5] % (h - height + 1));
                                head(&mut out, [x, y, width, height], ENCODING_COPY_RECT);
                                out.extend_from_slice(&src_x.to_be_bytes());
                                out.extend_from_slice(&src_y.to_be_bytes());
                                want.push(ev(Event::Copy {
                                    src_x,
                                    src_y,
                                    x,
                                    y,
                                    width,
                                    height,
                                }));
                            }
                            _ => {
                                let (width, height) = (1 + n[4] % 40, 1 + n[5] % 40);
                                head(&mut out, [0, 0, width, height], ENCODING_DESKTOP_SIZE);
                                want.push(ev(Event::Resize { width, height }));
                                size = (width, height);
                            }
                        }
                    }
                    want.push(ev(Event::UpdateEnd));
                }
            }
        }
        (out, want)
    }

    /// Everything a decoder says of `input`, and how it ended.
    fn decode_all(size: (u16, u16), input: &[u8]) -> (Vec<Said>, Result<usize, RfbError>) {
        let mut decoder = Decoder::new(size.0, size.1);
        let (mut pos, mut got) = (0, Vec::new());
        loop {
            match decoder.next(&input[pos..]) {
                Ok((used, event)) => {
                    pos += used;
                    match event {
                        Some(e) => got.push(said(e)),
                        None => return (got, Ok(pos)),
                    }
                }
                Err(e) => return (got, Err(e)),
            }
        }
    }

    fn server_init(width: u16, height: u16, name: &[u8]) -> Vec<u8> {
        let mut msg = Vec::new();
        msg.extend_from_slice(&width.to_be_bytes());
        msg.extend_from_slice(&height.to_be_bytes());
        msg.extend_from_slice(&[32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]);
        msg.extend_from_slice(&(name.len() as u32).to_be_bytes());
        msg.extend_from_slice(name);
        msg
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Messages a server encodes are decoded into exactly the events
        /// they stand for, all of the input used.
        #[test]
        fn server_messages_round_trip(w in 1u16..40, h in 1u16..40, msgs in proptest::collection::vec(msg(), 0..8)) {
            let (bytes, want) = encode((w, h), &msgs);
            let (got, end) = decode_all((w, h), &bytes);
            prop_assert_eq!(end, Ok(bytes.len()));
            prop_assert_eq!(got, want);
        }

        /// Each version's handshake, as a server speaks it, ends in the
        /// ServerInit it sent, with the replies RFC 6143 asks for.
        #[test]
        fn handshakes_round_trip(
            minor in prop_oneof![Just(3u32), Just(5), Just(7), Just(8), 9u32..1000],
            w in 1..=MAX_SIDE,
            h in 1..=MAX_SIDE,
            name in proptest::collection::vec(any::<u8>(), 0..40),
            others in proptest::collection::vec(2u8..=255, 0..5),
            shared in any::<bool>(),
        ) {
            let mut server = format!("RFB 003.{minor:03}\n").into_bytes();
            let version = match minor { 3 | 5 => Version::V3_3, 7 => Version::V3_7, _ => Version::V3_8 };
            match version {
                Version::V3_3 => server.extend_from_slice(&1u32.to_be_bytes()),
                _ => {
                    server.push(others.len() as u8 + 1);
                    server.extend_from_slice(&others);
                    server.push(SECURITY_NONE);
                }
            }
            if version == Version::V3_8 {
                server.extend_from_slice(&0u32.to_be_bytes());
            }
            server.extend_from_slice(&server_init(w, h, &name));
            let mut hs = Handshake::new(shared);
            let (mut pos, mut replies) = (0, Vec::new());
            let init = loop {
                let progress = hs.feed(&server[pos..]).unwrap().expect("a whole handshake");
                pos += progress.consumed;
                replies.extend_from_slice(&progress.reply);
                if let Some(init) = progress.init {
                    break init;
                }
            };
            prop_assert_eq!(pos, server.len());
            prop_assert_eq!((init.width, init.height, init.version), (w, h, version));
            prop_assert_eq!(init.name, String::from_utf8_lossy(&name).into_owned());
            let mut want = version_message(version).to_vec();
            if version != Version::V3_3 {
                want.push(SECURITY_NONE);
            }
            want.push(u8::from(shared));
            prop_assert_eq!(replies, want);
        }

        /// Whatever a server sends, the handshake and the decoder answer
        /// with an event, a wait or an error, using no more than was given.
        #[test]
        fn any_bytes_are_an_answer(
            w in 0u16..=MAX_SIDE + 1,
            h in 0u16..=MAX_SIDE + 1,
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut hs = Handshake::new(true);
            let mut pos = 0;
            while let Ok(Some(p)) = hs.feed(&bytes[pos..]) {
                prop_assert!(p.consumed <= bytes.len() - pos);
                pos += p.consumed;
                if p.init.is_some() {
                    break;
                }
            }
            if let (_, Ok(used)) = decode_all((w, h), &bytes) {
                prop_assert!(used <= bytes.len());
            }
        }

        /// A whole session's stream, cut into reads of any size, leaves the
        /// mirror with the same screen as read in one piece (the fuzz
        /// target's check, on streams a server would send and on those
        /// with one byte changed).
        #[test]
        fn the_screen_does_not_depend_on_reads(
            w in 1u16..24,
            h in 1u16..24,
            msgs in proptest::collection::vec(msg(), 0..6),
            cut in any::<u8>(),
            at in any::<prop::sample::Index>(),
            to in any::<u8>(),
        ) {
            let mut stream = vec![cut];
            stream.extend_from_slice(b"RFB 003.008\n\x01\x01\0\0\0\0");
            stream.extend_from_slice(&server_init(w, h, b"q"));
            stream.extend_from_slice(&encode((w, h), &msgs).0);
            super::super::fuzz::stream(&stream);
            let i = at.index(stream.len());
            stream[i] = to;
            super::super::fuzz::stream(&stream);
        }
    }
}
