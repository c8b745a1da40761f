//! Media files: written so that a file under its final name is always
//! whole and on disk.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::StoreError;

/// Temporary names start with this; `sweep` removes any left by a crash.
const TEMP_PREFIX: &str = ".tmp-";

/// Writes `bytes` to `dir/file` (temp name, fsync, rename, fsync of the
/// directory) and returns its SHA-256 in lowercase hex.
pub(super) fn write_durably(dir: &Path, file: &str, bytes: &[u8]) -> Result<String, StoreError> {
    let temp = dir.join(format!("{TEMP_PREFIX}{file}"));
    let target = dir.join(file);
    let fail = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Media { path, source }
    };
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&temp);
        return Err(fail(&temp)(e));
    }
    fs::rename(&temp, &target).map_err(fail(&target))?;
    // The rename is durable only once the directory entry is.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(fail(dir))?;
    Ok(hex::encode(Sha256::digest(bytes)))
}

/// Removes a media file whose record is gone; a failure is logged, and the
/// file is left for `sweep`.
pub(super) fn remove(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot remove media file"),
    }
}

/// Removes the files in `dir` that no record names (orphans of a crash
/// between a file and its row, or temp files); returns how many.
pub(super) fn sweep(dir: &Path, referenced: &HashSet<String>) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if is_file && !referenced.contains(&name) {
            remove(&entry.path());
            removed += 1;
        }
    }
    removed
}
