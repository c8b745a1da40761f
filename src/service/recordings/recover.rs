//! Closing a recording that `kill -9` (or a power loss) cut: what was written
//! is kept. The video is trimmed to its last whole fragment (`record::
//! truncate_to_fragments`, so it plays), the events file to its last whole
//! line, and both digests are computed again from the files as they now are.
//! Runs on a blocking thread at start, before new recordings begin.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::record::truncate_to_fragments;
use crate::store::{FileColumns, RecordingRow};

/// The reason a recovered recording carries.
pub(super) const CUT: &str = "cut short when vmshot stopped; kept up to its last whole frame";

/// What the files held after trimming.
pub(super) struct Found {
    video: Option<(u64, String)>,
    events: Option<(u64, String)>,
    frames: u64,
    /// The last frame's or event's offset from the start, in ms.
    last_ms: u64,
}

impl Found {
    pub(super) fn apply(self, row: &mut RecordingRow) {
        let set = |f: &mut Option<FileColumns>, found: Option<(u64, String)>| match found {
            Some((bytes, sha)) => {
                if let Some(f) = f {
                    f.bytes = bytes;
                    f.sha256 = Some(sha);
                }
            }
            None => *f = None,
        };
        set(&mut row.video, self.video);
        set(&mut row.events, self.events);
        // The video is written a frame late: its last listed frame never
        // reached it.
        row.frames = if row.video.is_some() {
            self.frames.saturating_sub(1)
        } else {
            0
        };
        row.duration_ms = self.last_ms;
        let end = row.start_time + std::time::Duration::from_millis(self.last_ms);
        row.end_time = Some(end.min(OffsetDateTime::now_utc()).max(row.start_time));
    }
}

fn sha256_of(path: &Path) -> io::Result<(u64, String)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok((bytes, hex::encode(hasher.finalize())))
}

/// Cuts the file after its last newline; returns the frame lines kept and
/// the last `ms` seen.
fn trim_lines(path: &Path) -> io::Result<(u64, u64)> {
    let mut reader = BufReader::new(File::open(path)?);
    let (mut whole, mut frames, mut last_ms) = (0u64, 0u64, 0u64);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        whole += n as u64;
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) {
            if v["type"] == "frame" {
                frames += 1;
            }
            if let Some(ms) = v["ms"].as_u64() {
                last_ms = last_ms.max(ms);
            }
        }
    }
    let file = OpenOptions::new().write(true).open(path)?;
    file.set_len(whole)?;
    file.sync_all()?;
    Ok((frames, last_ms))
}

/// Trims and digests a cut recording's files (named, in `dir`). A file that
/// is missing or holds nothing playable is dropped from the row.
pub(super) fn salvage(
    dir: &Path,
    (video, events): (Option<FileColumns>, Option<FileColumns>),
) -> Found {
    let mut found = Found {
        video: None,
        events: None,
        frames: 0,
        last_ms: 0,
    };
    if let Some(events) = events {
        let path = dir.join(&events.name);
        if let Ok((frames, last_ms)) = trim_lines(&path) {
            found.frames = frames;
            found.last_ms = last_ms;
            found.events = sha256_of(&path).ok();
        }
    }
    if let Some(video) = video {
        let path = dir.join(&video.name);
        match truncate_to_fragments(&path) {
            Ok(0) => {
                let _ = std::fs::remove_file(&path);
            }
            Ok(_) => {
                found.video = sha256_of(&path).ok();
                let _ = File::open(&path).and_then(|f| f.sync_all());
            }
            Err(_) => {}
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("vmshot-rec-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn named(name: &str) -> Option<FileColumns> {
        Some(FileColumns {
            name: name.into(),
            bytes: 0,
            sha256: None,
        })
    }

    #[test]
    fn a_torn_events_line_is_cut_and_the_digest_is_the_files() {
        let dir = dir("torn");
        let whole = "{\"type\":\"start\",\"ms\":0}\n{\"type\":\"frame\",\"ms\":500}\n\
                     {\"type\":\"frame\",\"ms\":1000}\n";
        std::fs::write(dir.join("e.jsonl"), format!("{whole}{{\"type\":\"fra")).unwrap();
        // A video without even its init segment holds nothing playable.
        std::fs::write(dir.join("v.mp4"), b"\0\0\0\x20ftypis").unwrap();
        let found = salvage(&dir, (named("v.mp4"), named("e.jsonl")));
        assert_eq!(std::fs::read_to_string(dir.join("e.jsonl")).unwrap(), whole);
        let (bytes, sha) = found.events.clone().unwrap();
        assert_eq!(bytes, whole.len() as u64);
        assert_eq!(sha, hex::encode(Sha256::digest(whole.as_bytes())));
        assert_eq!((found.frames, found.last_ms), (2, 1000));
        assert!(found.video.is_none());
        assert!(
            !dir.join("v.mp4").exists(),
            "an unplayable video is removed"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_files_leave_a_row_without_files() {
        let dir = dir("missing");
        let found = salvage(&dir, (named("v.mp4"), named("e.jsonl")));
        assert!(found.video.is_none() && found.events.is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
