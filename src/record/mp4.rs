//! Fragmented MP4 boxes (ISO/IEC 14496-12), written by hand: an init segment
//! (`ftyp` + `moov` with an empty sample table and `mvex`) and one `moof` +
//! `mdat` a sample. Only what one H.264 video track needs.

use std::fs::OpenOptions;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

/// Media time units a second: 90 kHz, as MPEG streams count.
pub(super) const TIMESCALE: u32 = 90_000;

/// A box: size, type, then what `body` writes; the size is patched in after.
fn boxed(out: &mut Vec<u8>, kind: &[u8; 4], body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(kind);
    body(out);
    let size = u32::try_from(out.len() - start).expect("an MP4 box over 4 GiB");
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

/// A full box: a box whose body starts with a version byte and 24 bits of flags.
fn full(
    out: &mut Vec<u8>,
    kind: &[u8; 4],
    version: u8,
    flags: u32,
    body: impl FnOnce(&mut Vec<u8>),
) {
    boxed(out, kind, |out| {
        out.extend_from_slice(&((u32::from(version) << 24) | (flags & 0x00ff_ffff)).to_be_bytes());
        body(out);
    });
}

fn u16be(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}
fn u32be(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// The identity transformation, as `mvhd` and `tkhd` carry it.
fn matrix(out: &mut Vec<u8>) {
    for v in [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
        u32be(out, v);
    }
}

/// `ftyp` + `moov`: one video track of `width` x `height`, H.264 with the
/// given SPS and PPS (NAL units without start codes).
pub(super) fn init_segment(width: u16, height: u16, sps: &[u8], pps: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    boxed(&mut out, b"ftyp", |o| {
        o.extend_from_slice(b"isom");
        u32be(o, 0x200);
        for brand in [b"isom", b"iso5", b"iso6", b"avc1", b"mp41"] {
            o.extend_from_slice(brand);
        }
    });
    boxed(&mut out, b"moov", |o| {
        full(o, b"mvhd", 0, 0, |o| {
            u32be(o, 0); // creation time
            u32be(o, 0); // modification time
            u32be(o, 1000); // timescale
            u32be(o, 0); // duration: the fragments tell
            u32be(o, 0x0001_0000); // rate 1.0
            u16be(o, 0x0100); // volume 1.0
            o.extend_from_slice(&[0; 10]);
            matrix(o);
            o.extend_from_slice(&[0; 24]); // pre_defined
            u32be(o, 2); // next track ID
        });
        boxed(o, b"trak", |o| {
            full(o, b"tkhd", 0, 3, |o| {
                u32be(o, 0);
                u32be(o, 0);
                u32be(o, 1); // track ID
                u32be(o, 0);
                u32be(o, 0); // duration
                o.extend_from_slice(&[0; 8]);
                u16be(o, 0); // layer
                u16be(o, 0); // alternate group
                u16be(o, 0); // volume
                u16be(o, 0);
                matrix(o);
                u32be(o, u32::from(width) << 16);
                u32be(o, u32::from(height) << 16);
            });
            boxed(o, b"mdia", |o| {
                full(o, b"mdhd", 0, 0, |o| {
                    u32be(o, 0);
                    u32be(o, 0);
                    u32be(o, TIMESCALE);
                    u32be(o, 0);
                    u16be(o, 0x55c4); // language "und"
                    u16be(o, 0);
                });
                full(o, b"hdlr", 0, 0, |o| {
                    u32be(o, 0);
                    o.extend_from_slice(b"vide");
                    o.extend_from_slice(&[0; 12]);
                    o.extend_from_slice(b"vmshot console\0");
                });
                boxed(o, b"minf", |o| {
                    full(o, b"vmhd", 0, 1, |o| o.extend_from_slice(&[0; 8]));
                    boxed(o, b"dinf", |o| {
                        full(o, b"dref", 0, 0, |o| {
                            u32be(o, 1);
                            full(o, b"url ", 0, 1, |_| {});
                        });
                    });
                    boxed(o, b"stbl", |o| {
                        full(o, b"stsd", 0, 0, |o| {
                            u32be(o, 1);
                            avc1(o, width, height, sps, pps);
                        });
                        full(o, b"stts", 0, 0, |o| u32be(o, 0));
                        full(o, b"stsc", 0, 0, |o| u32be(o, 0));
                        full(o, b"stsz", 0, 0, |o| {
                            u32be(o, 0);
                            u32be(o, 0);
                        });
                        full(o, b"stco", 0, 0, |o| u32be(o, 0));
                    });
                });
            });
        });
        boxed(o, b"mvex", |o| {
            full(o, b"trex", 0, 0, |o| {
                u32be(o, 1); // track ID
                u32be(o, 1); // sample description index
                u32be(o, 0);
                u32be(o, 0);
                u32be(o, 0);
            });
        });
    });
    out
}

fn avc1(o: &mut Vec<u8>, width: u16, height: u16, sps: &[u8], pps: &[u8]) {
    boxed(o, b"avc1", |o| {
        o.extend_from_slice(&[0; 6]);
        u16be(o, 1); // data reference index
        o.extend_from_slice(&[0; 16]);
        u16be(o, width);
        u16be(o, height);
        u32be(o, 0x0048_0000); // 72 dpi
        u32be(o, 0x0048_0000);
        u32be(o, 0);
        u16be(o, 1); // frame count
        o.extend_from_slice(&[0; 32]); // compressor name
        u16be(o, 0x0018); // depth
        u16be(o, 0xffff);
        boxed(o, b"avcC", |o| {
            o.push(1);
            o.extend_from_slice(&sps[1..4]); // profile, compatibility, level
            o.push(0xff); // 4-byte NAL lengths
            o.push(0xe1); // one SPS
            u16be(o, sps.len() as u16);
            o.extend_from_slice(sps);
            o.push(1); // one PPS
            u16be(o, pps.len() as u16);
            o.extend_from_slice(pps);
        });
    });
}

/// One sample as a fragment: `moof` + `mdat`. `data` is the sample in AVCC
/// form (4-byte big-endian lengths before each NAL unit).
pub(super) fn fragment(
    sequence: u32,
    decode_time: u64,
    duration: u32,
    sync: bool,
    data: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 128);
    let mut offset_at = 0;
    boxed(&mut out, b"moof", |o| {
        full(o, b"mfhd", 0, 0, |o| u32be(o, sequence));
        boxed(o, b"traf", |o| {
            // default-base-is-moof: data offsets count from this moof's start.
            full(o, b"tfhd", 0, 0x02_0000, |o| u32be(o, 1));
            full(o, b"tfdt", 1, 0, |o| {
                o.extend_from_slice(&decode_time.to_be_bytes())
            });
            // data offset, then each sample's duration, size and flags.
            full(o, b"trun", 0, 0x0001 | 0x0100 | 0x0200 | 0x0400, |o| {
                u32be(o, 1);
                offset_at = o.len();
                u32be(o, 0);
                u32be(o, duration);
                u32be(o, u32::try_from(data.len()).expect("a sample over 4 GiB"));
                // A sync sample depends on no other; any other is a non-sync
                // sample that depends on others.
                u32be(o, if sync { 0x0200_0000 } else { 0x0101_0000 });
            });
        });
    });
    let data_offset = (out.len() + 8) as u32;
    out[offset_at..offset_at + 4].copy_from_slice(&data_offset.to_be_bytes());
    boxed(&mut out, b"mdat", |o| o.extend_from_slice(data));
    out
}

/// Cuts a recording left by a crash back to its last whole fragment: the
/// init segment and every `moof` followed by its complete `mdat`. Returns the
/// length kept: 0 when not even the init segment is whole (then the file
/// holds nothing playable).
pub fn truncate_to_fragments(path: &Path) -> io::Result<u64> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    let mut pos = 0u64;
    let mut keep = 0u64;
    let mut seen_moov = false;
    let mut open_moof = false;
    while pos + 8 <= len {
        file.seek(SeekFrom::Start(pos))?;
        let mut head = [0u8; 16];
        file.read_exact(&mut head[..8])?;
        let mut size = u64::from(u32::from_be_bytes(head[..4].try_into().unwrap()));
        if size == 1 {
            if pos + 16 > len {
                break;
            }
            file.read_exact(&mut head[8..16])?;
            size = u64::from_be_bytes(head[8..16].try_into().unwrap());
        }
        if size < 8 || pos + size > len {
            break;
        }
        pos += size;
        match &head[4..8] {
            b"moov" => {
                seen_moov = true;
                keep = pos;
            }
            b"moof" => open_moof = true,
            b"mdat" if seen_moov && open_moof => {
                open_moof = false;
                keep = pos;
            }
            _ => {}
        }
    }
    if keep < len {
        file.set_len(keep)?;
        file.sync_all()?;
    }
    Ok(keep)
}
