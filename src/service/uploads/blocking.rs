//! The uploads' one boundary to blocking file work: reading the media and
//! writing a directory target's partial file run on the blocking pool,
//! each call a bounded amount of work (one chunk, one hash pass).

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use sha2::{Digest, Sha256};

/// Runs `f` off the runtime's threads.
pub(super) async fn run<T, F>(f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(format!("the file task failed: {e}"))))
}

/// The SHA-256 (lowercase hex) and length of a whole file.
pub(super) fn digest(path: &Path) -> io::Result<(String, u64)> {
    let mut file = File::open(path)?;
    let (mut hasher, mut len) = (Sha256::new(), 0u64);
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok((hex::encode(hasher.finalize()), len));
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
}

/// `len` bytes of the file from `offset`; short only at its end.
pub(super) fn read_chunk(path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let file = File::open(path)?;
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        let n = file.read_at(&mut buf[filled..], offset + filled as u64)?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    buf.truncate(filled);
    Ok(buf)
}

/// A new, empty partial file (and its directories).
pub(super) fn create_partial(path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?
        .sync_all()?;
    sync_dir(path)
}

/// Writes `data` at `offset` of an existing partial file and fsyncs it:
/// only then may the chunk be recorded as kept.
pub(super) fn write_at(path: &Path, offset: u64, data: &[u8]) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    file.write_all_at(data, offset)?;
    file.sync_data()
}

/// Renames the partial file to its final name, durably; an object already
/// there is replaced, as S3 replaces one.
pub(super) fn publish(partial: &Path, fin: &Path) -> io::Result<()> {
    File::open(partial)?.sync_all()?;
    std::fs::rename(partial, fin)?;
    sync_dir(fin)
}

fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}
