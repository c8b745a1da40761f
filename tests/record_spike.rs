//! Screen recordings (src/record/): H.264 in fragmented MP4, checked by an
//! independent reader. `ffprobe` must say H.264, the size and the duration
//! the timestamps make; `ffmpeg` must decode every frame back close to what
//! went in, at the time it was seen; and a file cut mid-fragment, as `kill -9`
//! leaves one, must play up to its last whole fragment once trimmed.
//! Needs ffmpeg (scripts/setup-host.sh installs it).
//!
//! `measure_encode` prints the spike's figures (ms and bytes a frame, static
//! and busy); slow, only built on request:
//! `cargo test --release --features measure --test record_spike -- --nocapture measure_`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sha2::{Digest, Sha256};
use vmshot::record::{truncate_to_fragments, VideoWriter};

/// A text console: `lines` of pseudo-glyphs (8x16 cells), light grey on black.
fn console(width: usize, height: usize, lines: &[String]) -> Vec<u8> {
    let mut rgb = vec![0u8; width * height * 3];
    for (row, line) in lines.iter().enumerate() {
        for (col, ch) in line.bytes().enumerate() {
            if ch == b' ' {
                continue;
            }
            // A glyph: 7x14 bits drawn from the character code.
            let mut seed = u64::from(ch).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            for gy in 1..15 {
                for gx in 0..7 {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let (x, y) = (col * 8 + gx, row * 16 + gy);
                    if seed & 3 == 0 && x < width && y < height {
                        let i = (y * width + x) * 3;
                        rgb[i..i + 3].copy_from_slice(&[0xaa, 0xaa, 0xaa]);
                    }
                }
            }
        }
    }
    rgb
}

fn boot_lines(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                "[    {i}.{:06}] vmshot-fx: probing device {i:04x}, status ok",
                i * 7919 % 1_000_000
            )
        })
        .collect()
}

fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let mse = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0 * 255.0 / mse).log10()
    }
}

fn ffprobe_json(path: &Path) -> serde_json::Value {
    let mut cmd = Command::new("ffprobe");
    cmd.args([
        "-v",
        "error",
        "-count_frames",
        "-show_streams",
        "-show_format",
        "-of",
        "json",
    ])
    .arg(path);
    serde_json::from_slice(&quiet_output(&mut cmd, "ffprobe")).unwrap()
}

/// Runs `cmd` (`what` names it) and returns its stdout; it must succeed and
/// say nothing on stderr, where ffmpeg's tools report a damaged stream.
fn quiet_output(cmd: &mut Command, what: &str) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what} runs (apt-get install ffmpeg): {e}"));
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{what} complains: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Presentation times of the video's frames, in seconds.
fn frame_times(path: &Path) -> Vec<f64> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v",
            "-show_entries",
            "frame=pts_time",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.trim_end_matches(',').parse().unwrap())
        .collect()
}

/// Every frame decoded to RGB, each at its own time (no frame rate imposed).
fn decode(path: &Path, width: usize, height: usize) -> Vec<Vec<u8>> {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-v", "error", "-i"]).arg(path).args([
        "-fps_mode",
        "passthrough",
        "-enc_time_base",
        "-1",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-",
    ]);
    let stdout = quiet_output(&mut cmd, "ffmpeg");
    assert_eq!(stdout.len() % (width * height * 3), 0);
    stdout
        .chunks(width * height * 3)
        .map(<[u8]>::to_vec)
        .collect()
}

/// Box boundaries at the top level of an MP4 file: (type, start, end).
fn top_boxes(bytes: &[u8]) -> Vec<(String, usize, usize)> {
    let mut boxes = Vec::new();
    let mut pos = 0;
    while pos + 8 <= bytes.len() {
        let size = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        let kind = String::from_utf8_lossy(&bytes[pos + 4..pos + 8]).into_owned();
        boxes.push((kind, pos, pos + size));
        pos += size;
    }
    boxes
}

#[test]
fn a_recording_plays_back_as_it_was_seen_and_survives_a_cut() {
    let (w, h) = (1024, 768);
    let dir = std::env::temp_dir().join(format!("vmshot-record-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("console.mp4");

    // A static screen seen twelve times at ~2 fps, then eight changes at
    // uneven times: a boot that prints, pauses, prints again.
    let mut frames = Vec::new();
    let mut times_ms = Vec::new();
    for i in 0..12u64 {
        frames.push(console(w, h, &boot_lines(10)));
        times_ms.push(i * 500 + (i * 37) % 60);
    }
    for (i, at) in [6_200u64, 6_350, 6_900, 9_000, 9_010, 12_500, 12_750, 20_000]
        .into_iter()
        .enumerate()
    {
        frames.push(console(w, h, &boot_lines(11 + 3 * i)));
        times_ms.push(at);
    }
    let end_ms = 21_000;

    let mut writer = VideoWriter::create(&path, w, h).unwrap();
    for (rgb, &at) in frames.iter().zip(&times_ms) {
        writer.write_frame(rgb, Duration::from_millis(at)).unwrap();
    }
    let written = writer.finish(Duration::from_millis(end_ms)).unwrap();

    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(written.bytes, bytes.len() as u64);
    assert_eq!(written.sha256, hex::encode(Sha256::digest(&bytes)));
    assert_eq!(written.frames, 20);
    eprintln!("20 frames at {w}x{h}: {} bytes", bytes.len());

    let probe = ffprobe_json(&path);
    let stream = &probe["streams"][0];
    assert_eq!(stream["codec_name"], "h264", "{probe}");
    assert_eq!(stream["width"], w);
    assert_eq!(stream["height"], h);
    assert_eq!(stream["nb_read_frames"], "20", "{probe}");
    let duration: f64 = probe["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (duration - end_ms as f64 / 1000.0).abs() < 0.05,
        "duration {duration} s, wanted {} s",
        end_ms / 1000
    );

    let times = frame_times(&path);
    assert_eq!(times.len(), 20);
    for (got, want) in times.iter().zip(&times_ms) {
        assert!(
            (got - *want as f64 / 1000.0).abs() < 0.002,
            "frame at {got} s, seen at {want} ms"
        );
    }

    let decoded = decode(&path, w, h);
    assert_eq!(decoded.len(), 20);
    for (i, (got, want)) in decoded.iter().zip(&frames).enumerate() {
        let p = psnr(got, want);
        eprintln!(
            "frame {i}: PSNR {p:.1} dB, {} bytes a frame",
            bytes.len() / 20
        );
        assert!(p > 30.0, "frame {i} decodes at PSNR {p:.1} dB");
    }

    // A cut in the middle of the 15th fragment, as a kill -9 mid-write leaves it.
    let boxes = top_boxes(&bytes);
    let kinds: Vec<&str> = boxes.iter().map(|b| b.0.as_str()).collect();
    assert_eq!(&kinds[..2], ["ftyp", "moov"]);
    assert_eq!(
        kinds.len(),
        2 + 2 * 20,
        "one moof + mdat a frame: {kinds:?}"
    );
    let (_, mdat_start, mdat_end) = boxes[2 + 2 * 14 + 1];
    let cut = dir.join("cut.mp4");
    std::fs::write(&cut, &bytes[..(mdat_start + mdat_end) / 2]).unwrap();
    let kept = truncate_to_fragments(&cut).unwrap();
    assert_eq!(
        kept as usize,
        boxes[2 + 2 * 13 + 1].2,
        "trimmed to the end of the 14th fragment"
    );
    let probe = ffprobe_json(&cut);
    assert_eq!(probe["streams"][0]["codec_name"], "h264");
    assert_eq!(probe["streams"][0]["nb_read_frames"], "14", "{probe}");
    let decoded = decode(&cut, w, h);
    assert_eq!(decoded.len(), 14);
    assert!(psnr(&decoded[13], &frames[13]) > 30.0);
    // Trimming again changes nothing; an init segment cut short keeps nothing.
    assert_eq!(truncate_to_fragments(&cut).unwrap(), kept);
    std::fs::write(&cut, &bytes[..boxes[1].2 - 1]).unwrap();
    assert_eq!(truncate_to_fragments(&cut).unwrap(), 0);

    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(feature = "measure")]
#[test]
fn measure_encode() {
    use std::time::Instant;
    for (w, h) in [(720, 400), (1024, 768), (1920, 1080)] {
        let dir = std::env::temp_dir().join(format!("vmshot-record-m-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let n = 60;
        for busy in [false, true] {
            let path = dir.join("m.mp4");
            let mut writer = VideoWriter::create(&path, w, h).unwrap();
            let still = console(w, h, &boot_lines(h / 16));
            let mut encode = Duration::ZERO;
            let mut first = 0;
            let mut size_after_first = 0u64;
            for i in 0..n {
                let rgb = if busy {
                    // Every line rewritten each frame: a scrolling boot log.
                    let lines: Vec<String> = (0..h / 16)
                        .map(|r| boot_lines(r + i + 1)[r + i].clone())
                        .collect();
                    console(w, h, &lines)
                } else {
                    still.clone()
                };
                let t = Instant::now();
                writer
                    .write_frame(&rgb, Duration::from_millis(500 * i as u64))
                    .unwrap();
                encode += t.elapsed();
                if i == 1 {
                    first = std::fs::metadata(&path).unwrap().len();
                    size_after_first = first;
                }
            }
            let written = writer
                .finish(Duration::from_millis(500 * n as u64))
                .unwrap();
            let rest = written.bytes - size_after_first;
            let per_frame = rest as f64 / (n - 1) as f64;
            // An hour at 2 fps: 7,200 frames, one a minute a key frame.
            let hour = per_frame * 7140.0 + 60.0 * first as f64;
            println!(
                "{w}x{h} {}: {:.1} ms a frame, init+first frame {} B, then {:.0} B a frame, {:.2} MB an hour at 2 fps",
                if busy { "busy" } else { "static" },
                encode.as_secs_f64() * 1000.0 / n as f64,
                first,
                per_frame,
                hour / 1e6
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
