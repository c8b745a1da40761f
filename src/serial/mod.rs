//! The end of what a guest wrote to its serial console, read from its log
//! file (see `hypervisor::SerialLog`) and, when virtlogd keeps it, the
//! rolled-over backups before it: virtlogd renames `X` to `X.0` (the newest
//! backup), `X.0` to `X.1`, …, keeping `max_backups` (3 by default) of at
//! most `max_size` (2 MiB). Reads are blocking file I/O, behind
//! `spawn_blocking` in `read_tail`, and bounded by the caller's byte limit.

mod text;

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub use text::{last_lines, without_escapes};

/// Backups looked for past the log itself: virtlogd's `max_backups` is 3 by
/// default; a host may keep more.
const MAX_BACKUPS: usize = 16;

/// The end of a serial log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tail {
    /// At most the asked-for bytes, oldest first.
    pub bytes: Vec<u8>,
    /// When the log was last written; `None` if it does not exist yet (a
    /// domain that never started with it).
    pub modified: Option<SystemTime>,
    /// Whether the log holds more before `bytes`.
    pub cut: bool,
}

/// The last `max_bytes` of the log at `path` (and of its backups, if
/// `rotated`). A log that does not exist is an empty tail.
pub async fn read_tail(path: PathBuf, rotated: bool, max_bytes: usize) -> io::Result<Tail> {
    tokio::task::spawn_blocking(move || tail(&path, rotated, max_bytes))
        .await
        .map_err(io::Error::other)?
}

/// `read_tail`, blocking.
pub fn tail(path: &Path, rotated: bool, max_bytes: usize) -> io::Result<Tail> {
    let mut files = Vec::new();
    let base = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Tail::default()),
        Err(e) => return Err(e),
    };
    let modified = base.metadata()?.modified().ok();
    files.push(base);
    if rotated {
        for n in 0..MAX_BACKUPS {
            let mut name = path.as_os_str().to_owned();
            name.push(format!(".{n}"));
            match File::open(&name) {
                Ok(f) => files.push(f),
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => return Err(e),
            }
        }
    }
    // A rollover between two opens would show one file twice: keep the first.
    let mut seen = HashSet::new();
    let mut chunks = Vec::new();
    let mut left = max_bytes as u64;
    let mut cut = false;
    for mut file in files {
        let meta = file.metadata()?;
        if !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        if left == 0 {
            cut |= meta.len() > 0;
            break;
        }
        let take = meta.len().min(left);
        cut |= meta.len() > take;
        file.seek(SeekFrom::Start(meta.len() - take))?;
        let mut chunk = Vec::with_capacity(take as usize);
        // A log that grows while it is read gives no more than `take`.
        file.take(take).read_to_end(&mut chunk)?;
        left -= chunk.len() as u64;
        chunks.push(chunk);
    }
    let bytes = chunks.into_iter().rev().flatten().collect();
    Ok(Tail {
        bytes,
        modified,
        cut,
    })
}

/// Reads what is appended to a log from where it was when made, following
/// it through virtlogd's rollovers and a truncation at the domain's start.
///
/// The file being read stays open: after a rollover its end is still read
/// through the handle (it lives on as `X.0`), then the new file from its
/// start, so nothing written across a rollover is lost or doubled. Only a
/// second rollover between two calls (more than `max_size` written in
/// between) would skip the file in the middle.
#[derive(Debug)]
pub struct Follow {
    path: PathBuf,
    /// The file read so far and how far into it; `None` before it exists.
    open: Option<(File, u64)>,
}

impl Follow {
    /// From the log's current end: only what is written from now on.
    pub fn from_end(path: PathBuf) -> io::Result<Self> {
        let open = match File::open(&path) {
            Ok(f) => {
                let len = f.metadata()?.len();
                Some((f, len))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        Ok(Self { path, open })
    }

    /// What was written since the last call, at most `max_bytes`.
    pub fn next(&mut self, max_bytes: usize) -> io::Result<Vec<u8>> {
        let mut new = Vec::new();
        if let Some((file, at)) = &mut self.open {
            read_on(file, at, max_bytes, &mut new)?;
            if new.len() == max_bytes {
                return Ok(new);
            }
        }
        let current = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(new),
            Err(e) => return Err(e),
        };
        let id = identity(&current)?;
        if let Some((file, at)) = &mut self.open {
            if identity(file)? == id {
                return Ok(new);
            }
            // Rolled over: virtlogd writes no more to the old file once the
            // new one exists, so its end can be read to the last byte first.
            read_on(file, at, max_bytes - new.len(), &mut new)?;
            if new.len() == max_bytes {
                return Ok(new);
            }
        }
        let mut current = (current, 0);
        read_on(
            &mut current.0,
            &mut current.1,
            max_bytes - new.len(),
            &mut new,
        )?;
        self.open = Some(current);
        Ok(new)
    }
}

fn identity(file: &File) -> io::Result<(u64, u64)> {
    let meta = file.metadata()?;
    Ok((meta.dev(), meta.ino()))
}

/// Appends to `out` at most `max_bytes` of `file` from `*at`, moving `*at`
/// on. A file now shorter than `*at` was truncated in place (a domain
/// restarted with `append='off'`) and is read from its start.
fn read_on(file: &mut File, at: &mut u64, max_bytes: usize, out: &mut Vec<u8>) -> io::Result<()> {
    if file.metadata()?.len() < *at {
        *at = 0;
    }
    file.seek(SeekFrom::Start(*at))?;
    let n = file.take(max_bytes as u64).read_to_end(out)?;
    *at += n as u64;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vmshot-serial-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_tail_reads_back_across_virtlogds_backups_oldest_first() {
        let d = dir("rotated");
        let log = d.join("g-serial0.log");
        std::fs::write(d.join("g-serial0.log.1"), "one\n").unwrap();
        std::fs::write(d.join("g-serial0.log.0"), "two\n").unwrap();
        std::fs::write(&log, "three\n").unwrap();
        let all = tail(&log, true, 1 << 20).unwrap();
        assert_eq!(all.bytes, b"one\ntwo\nthree\n");
        assert!(!all.cut);
        assert!(all.modified.is_some());
        let some = tail(&log, true, 8).unwrap();
        assert_eq!(some.bytes, b"o\nthree\n");
        assert!(some.cut);
        // A file device's log has no backups, whatever lies beside it.
        assert_eq!(tail(&log, false, 1 << 20).unwrap().bytes, b"three\n");
        let exact = tail(&log, true, 14).unwrap();
        assert_eq!((exact.bytes.len(), exact.cut), (14, false));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn following_reads_what_is_appended_through_a_rollover_and_a_truncation() {
        use std::io::Write;
        let d = dir("follow");
        let log = d.join("g.log");
        std::fs::write(&log, "old\n").unwrap();
        let mut follow = Follow::from_end(log.clone()).unwrap();
        assert_eq!(follow.next(100).unwrap(), b"");
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(b"new 1\nnew 2\n").unwrap();
        assert_eq!(follow.next(7).unwrap(), b"new 1\nn");
        assert_eq!(follow.next(100).unwrap(), b"ew 2\n");
        // Written just before virtlogd's rollover: the file moves to .0 and a
        // new one starts. The old file's end comes first, whole.
        f.write_all(b"last of old\n").unwrap();
        drop(f);
        std::fs::rename(&log, d.join("g.log.0")).unwrap();
        std::fs::write(&log, "after\n").unwrap();
        assert_eq!(follow.next(6).unwrap(), b"last o");
        assert_eq!(follow.next(100).unwrap(), b"f old\nafter\n");
        assert_eq!(follow.next(100).unwrap(), b"");
        // The domain restarted with append='off': the same file, truncated.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&log)
            .unwrap();
        drop(f);
        std::fs::write(&log, "boot\n").unwrap();
        assert_eq!(follow.next(100).unwrap(), b"boot\n");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_log_not_written_yet_is_empty() {
        let d = dir("missing");
        let t = tail(&d.join("none.log"), true, 100).unwrap();
        assert_eq!(t, Tail::default());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
