//! The decode → encode → hash pipeline on payloads made here: odd sizes, gray
//! and RGB, PNG and PPM, and broken ones. No libvirt needed.

mod common;

use std::io::Cursor;
use std::time::{Duration, SystemTime};

use common::image_check::{decode_rgb, psnr};
use image::{DynamicImage, GrayImage, ImageFormat, RgbImage, RgbaImage};
use sha2::{Digest, Sha256};
use vmshot::capture::{
    self, decode, DecodeError, JpegSettings, Layout, Limits, Output, SourceFormat, Subsampling,
};
use vmshot::hypervisor::RawScreenshot;

/// A picture with edges, gradients and flat areas, like a console and unlike noise.
fn test_picture(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        if (x / 8 + y / 16) % 5 == 0 {
            image::Rgb([240, 240, 240])
        } else {
            image::Rgb([
                (x * 255 / width) as u8,
                (y * 255 / height) as u8,
                ((x + y) * 255 / (width + height)) as u8,
            ])
        }
    })
}

fn encode_with_image(img: DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn ppm(magic: &str, width: usize, height: usize, maxval: u32, data: &[u8]) -> Vec<u8> {
    let mut out =
        format!("{magic}\n# made by vmshot's tests\n{width} {height}\n{maxval}\n").into_bytes();
    out.extend_from_slice(data);
    out
}

fn frame_rgb(frame: &capture::Frame) -> Vec<[u8; 3]> {
    (0..frame.height)
        .flat_map(|y| (0..frame.width).map(move |x| (x, y)))
        .map(|(x, y)| frame.rgb_at(x, y))
        .collect()
}

fn limits() -> Limits {
    Limits::default()
}

#[test]
fn png_rgb_of_odd_size_decodes_exactly() {
    let img = test_picture(37, 23);
    let payload = encode_with_image(DynamicImage::ImageRgb8(img.clone()), ImageFormat::Png);
    let (format, frame) = decode(payload, "image/png", &limits()).unwrap();
    assert_eq!(format, SourceFormat::Png);
    assert_eq!(
        (frame.width, frame.height, frame.layout),
        (37, 23, Layout::Rgb8)
    );
    assert_eq!(frame.pixels(), img.as_raw().as_slice());
}

#[test]
fn png_gray_rgba_and_16_bit_decode() {
    let gray = GrayImage::from_fn(13, 7, |x, y| image::Luma([(x * 19 + y * 3) as u8]));
    let payload = encode_with_image(DynamicImage::ImageLuma8(gray.clone()), ImageFormat::Png);
    let (_, frame) = decode(payload, "image/png", &limits()).unwrap();
    assert_eq!(frame.layout, Layout::Gray8);
    assert_eq!(frame.pixels(), gray.as_raw().as_slice());

    let rgba = RgbaImage::from_fn(9, 5, |x, y| {
        image::Rgba([x as u8 * 20, y as u8 * 40, 7, 128])
    });
    let payload = encode_with_image(DynamicImage::ImageRgba8(rgba.clone()), ImageFormat::Png);
    let (_, frame) = decode(payload, "image/png", &limits()).unwrap();
    assert_eq!(frame.layout, Layout::Rgba8);
    assert_eq!(frame.pixels(), rgba.as_raw().as_slice());

    let deep = DynamicImage::ImageRgb8(test_picture(11, 3)).to_rgb16();
    let payload = encode_with_image(DynamicImage::ImageRgb16(deep), ImageFormat::Png);
    let (_, frame) = decode(payload, "image/png", &limits()).unwrap();
    assert_eq!(frame.layout, Layout::Rgb8);
    assert_eq!(frame.pixels(), test_picture(11, 3).as_raw().as_slice());
}

#[test]
fn ppm_rgb_and_pgm_gray_of_odd_sizes_decode_exactly() {
    let img = test_picture(31, 17);
    let (format, frame) = decode(
        ppm("P6", 31, 17, 255, img.as_raw()),
        "image/x-portable-pixmap",
        &limits(),
    )
    .unwrap();
    assert_eq!(format, SourceFormat::Ppm);
    assert_eq!(
        (frame.width, frame.height, frame.layout),
        (31, 17, Layout::Rgb8)
    );
    assert_eq!(frame.pixels(), img.as_raw().as_slice());

    let gray: Vec<u8> = (0..5 * 3).map(|i| i * 17).collect();
    let (_, frame) = decode(
        ppm("P5", 5, 3, 255, &gray),
        "image/x-portable-graymap",
        &limits(),
    )
    .unwrap();
    assert_eq!(frame.layout, Layout::Gray8);
    assert_eq!(frame.pixels(), gray.as_slice());
    assert_eq!(frame.rgb_at(4, 2), [238, 238, 238]);
}

#[test]
fn ppm_of_other_depths_is_scaled_to_8_bits() {
    // maxval 15: one byte per sample.
    let (_, frame) = decode(ppm("P6", 1, 1, 15, &[15, 0, 8]), "", &limits()).unwrap();
    assert_eq!(frame_rgb(&frame), vec![[255, 0, 136]]);
    // maxval 1023: two big-endian bytes per sample.
    let (_, frame) = decode(
        ppm("P6", 1, 1, 1023, &[0x03, 0xff, 0, 0, 0x02, 0x00]),
        "",
        &limits(),
    )
    .unwrap();
    assert_eq!(frame_rgb(&frame), vec![[255, 0, 128]]);
}

#[test]
fn broken_payloads_are_typed_errors() {
    let l = limits();
    assert!(matches!(
        decode(Vec::new(), "image/png", &l),
        Err(DecodeError::Empty)
    ));
    assert!(matches!(
        decode(b"GIF89a....".to_vec(), "image/gif", &l),
        Err(DecodeError::UnknownFormat { mime }) if mime == "image/gif"
    ));
    assert!(matches!(
        decode(ppm("P6", 4, 4, 255, &[0; 47]), "", &l),
        Err(DecodeError::Truncated(_))
    ));
    assert!(matches!(
        decode(ppm("P6", 4, 4, 255, &[0; 49]), "", &l),
        Err(DecodeError::Corrupt(_))
    ));
    assert!(matches!(
        decode(b"P6\n12".to_vec(), "", &l),
        Err(DecodeError::Truncated(_))
    ));
    assert!(matches!(
        decode(b"P6 x 4 255\n".to_vec(), "", &l),
        Err(DecodeError::Corrupt(_))
    ));
    assert!(matches!(
        decode(ppm("P6", 0, 4, 255, &[]), "", &l),
        Err(DecodeError::Corrupt(_))
    ));
    assert!(matches!(
        decode(ppm("P6", 1, 1, 0, &[0; 3]), "", &l),
        Err(DecodeError::Corrupt(_))
    ));
    assert!(matches!(
        decode(b"P6 99999999999 1 255\n".to_vec(), "", &l),
        Err(DecodeError::Corrupt(_))
    ));

    let png = encode_with_image(
        DynamicImage::ImageRgb8(test_picture(64, 48)),
        ImageFormat::Png,
    );
    let cut = png[..png.len() / 2].to_vec();
    assert!(matches!(
        decode(cut, "image/png", &l),
        Err(DecodeError::Truncated(_) | DecodeError::Corrupt(_))
    ));
    let mut flipped = png.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x55; // the IDAT CRC no longer matches
    assert!(matches!(
        decode(flipped, "image/png", &l),
        Err(DecodeError::Corrupt(_))
    ));
}

#[test]
fn oversized_images_are_refused_before_allocating() {
    // A header that claims 100000x100000 RGB (30 GB) with no pixels behind it.
    let err = decode(ppm("P6", 100_000, 100_000, 255, &[]), "", &limits()).unwrap_err();
    assert!(
        matches!(err, DecodeError::TooLarge { width: 100_000, .. }),
        "{err}"
    );

    // The same claim in a PNG header (IHDR rewritten, CRC fixed up).
    let mut png = encode_with_image(
        DynamicImage::ImageRgb8(test_picture(4, 4)),
        ImageFormat::Png,
    );
    png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    let err = decode(png, "image/png", &limits()).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::TooLarge {
                height: 100_000,
                ..
            }
        ),
        "{err}"
    );

    let small = Limits {
        max_width: 16,
        max_height: 16,
        max_pixels: 100,
    };
    let err = decode(ppm("P5", 11, 11, 255, &[0; 121]), "", &small).unwrap_err();
    assert!(matches!(err, DecodeError::TooLarge { .. }), "{err}");
}

#[test]
fn every_prefix_and_many_corruptions_fail_cleanly() {
    let png = encode_with_image(
        DynamicImage::ImageRgb8(test_picture(23, 9)),
        ImageFormat::Png,
    );
    let pnm = ppm("P6", 23, 9, 255, test_picture(23, 9).as_raw());
    for payload in [&png, &pnm] {
        for len in 0..payload.len() {
            assert!(
                decode(payload[..len].to_vec(), "", &limits()).is_err(),
                "prefix of {len} bytes decoded"
            );
        }
        // Deterministic pseudo-random byte corruption: any result but a panic.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut broken = payload.clone();
            let at = (seed as usize) % broken.len();
            broken[at] = (seed >> 32) as u8;
            let _ = decode(broken, "", &limits());
        }
    }
}

#[test]
fn jpeg_output_decodes_back_to_the_input() {
    let img = test_picture(333, 211);
    let frame_of = |img: &RgbImage| {
        decode(ppm("P6", 333, 211, 255, img.as_raw()), "", &limits())
            .unwrap()
            .1
    };
    let frame = frame_of(&img);
    for (quality, subsampling, min_db) in [
        (80, Subsampling::S420, 30.0),
        (80, Subsampling::S444, 32.0),
        (95, Subsampling::S444, 38.0),
        (80, Subsampling::S422, 30.0),
    ] {
        let jpeg = capture::jpeg(
            &frame,
            JpegSettings {
                quality,
                subsampling,
            },
        )
        .unwrap();
        assert!(jpeg.starts_with(&[0xff, 0xd8]), "JPEG SOI marker");
        let back = decode_rgb(&jpeg);
        assert_eq!(back.dimensions(), (333, 211));
        let db = psnr(&img, &back);
        assert!(
            db >= min_db,
            "q{quality} {subsampling:?}: PSNR {db:.1} dB < {min_db}"
        );
    }
}

#[test]
fn gray_sources_and_gray_output_give_grayscale_jpeg() {
    let gray: Vec<u8> = (0..64 * 32).map(|i| (i % 251) as u8).collect();
    let (_, frame) = decode(ppm("P5", 64, 32, 255, &gray), "", &limits()).unwrap();
    let jpeg = capture::jpeg(&frame, JpegSettings::default()).unwrap();
    let back = image::load_from_memory(&jpeg).unwrap();
    assert_eq!(back.color(), image::ColorType::L8);

    let rgb = test_picture(40, 40);
    let (_, frame) = decode(ppm("P6", 40, 40, 255, rgb.as_raw()), "", &limits()).unwrap();
    let settings = JpegSettings {
        quality: 80,
        subsampling: Subsampling::Gray,
    };
    let back = image::load_from_memory(&capture::jpeg(&frame, settings).unwrap()).unwrap();
    assert_eq!(back.color(), image::ColorType::L8);
}

#[test]
fn png_output_is_lossless_and_quality_is_checked() {
    let img = test_picture(45, 27);
    let (_, frame) = decode(ppm("P6", 45, 27, 255, img.as_raw()), "", &limits()).unwrap();
    let png = capture::png(&frame).unwrap();
    assert_eq!(decode_rgb(&png), img);
    let err = capture::jpeg(
        &frame,
        JpegSettings {
            quality: 0,
            subsampling: Subsampling::S420,
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("quality 0"), "{err}");
}

#[test]
fn process_hashes_exactly_the_bytes_it_returns() {
    let img = test_picture(64, 40);
    let raw = RawScreenshot {
        domain: "d".into(),
        uuid: "u".into(),
        screen: 0,
        mime: "image/png".into(),
        payload: encode_with_image(DynamicImage::ImageRgb8(img.clone()), ImageFormat::Png),
        taken_at: SystemTime::now(),
        elapsed: Duration::from_millis(5),
    };
    let shot = capture::process(raw, Output::default(), &limits()).unwrap();
    assert_eq!((shot.width, shot.height), (64, 40));
    assert_eq!(shot.source_format, SourceFormat::Png);
    assert_eq!(
        shot.sha256,
        <[u8; 32]>::from(Sha256::digest(shot.image.as_slice()))
    );
    assert_eq!(
        shot.sha256_hex(),
        hex::encode(Sha256::digest(shot.image.as_slice()))
    );
    assert_eq!(shot.timings.grab, Duration::from_millis(5));
    assert!(psnr(&img, &decode_rgb(shot.image.as_slice())) >= 30.0);

    let broken = RawScreenshot {
        payload: b"P6 4 4 255\n".to_vec(),
        ..raw_clone(&shot)
    };
    let err = capture::process(broken, Output::default(), &limits()).unwrap_err();
    assert!(
        matches!(err, capture::Error::Decode { ref domain, .. } if domain == "d"),
        "{err}"
    );
}

fn raw_clone(shot: &capture::Shot) -> RawScreenshot {
    RawScreenshot {
        domain: shot.domain.clone(),
        uuid: shot.uuid.clone(),
        screen: 0,
        mime: "image/x-portable-pixmap".into(),
        payload: Vec::new(),
        taken_at: shot.captured_at,
        elapsed: Duration::ZERO,
    }
}

/// CRC-32 as PNG chunks use it (to forge a header in a test).
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn large_rgba_screens_decode() {
    // 4400x4000 RGBA is 70.4 MB of pixels: beyond png's 64 MiB default limit
    // (which does not cover the output buffer we allocate), within ours.
    let img = RgbaImage::from_fn(4400, 4000, |x, y| {
        image::Rgba([(x / 16) as u8, (y / 16) as u8, 0, 255])
    });
    let payload = encode_with_image(DynamicImage::ImageRgba8(img), ImageFormat::Png);
    let (_, frame) = decode(payload, "image/png", &limits()).unwrap();
    assert_eq!(
        (frame.width, frame.height, frame.layout),
        (4400, 4000, Layout::Rgba8)
    );
    assert_eq!(
        frame.rgb_at(4399, 3999),
        [(4399 / 16) as u8, (3999 / 16) as u8, 0]
    );
}
