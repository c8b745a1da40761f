//! Files that hold secrets (access keys, TLS private keys) must not be readable
//! by other users: vmshot refuses to start rather than serve with a leaked key.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("cannot read secret file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "secret file {path} is accessible to other users (mode {mode:04o}): \
         run 'chmod o-rwx {path}' (0640 root:vmshot or 0600 vmshot is right)"
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("secret file {path} is not UTF-8 text")]
    NotText { path: PathBuf },
}

/// Reads a secret file, after checking that "other" users have no access to it.
/// Group read stays allowed: root-owned, group-vmshot 0640 is the usual layout.
pub fn read_secret_file(path: &Path) -> Result<Vec<u8>, SecretFileError> {
    let read_error = |source| SecretFileError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_error)?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o007 != 0 {
        return Err(SecretFileError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    std::fs::read(path).map_err(read_error)
}

/// A secret file that holds text (TOML, a token), checked as `read_secret_file`.
pub fn read_secret_text(path: &Path) -> Result<String, SecretFileError> {
    String::from_utf8(read_secret_file(path)?).map_err(|_| SecretFileError::NotText {
        path: path.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn world_readable_secrets_are_refused() {
        let dir = std::env::temp_dir().join(format!("vmshot-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        std::fs::write(&path, b"s3cret").unwrap();
        for (mode, ok) in [
            (0o600, true),
            (0o640, true),
            (0o644, false),
            (0o606, false),
            (0o601, false),
        ] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let result = read_secret_file(&path);
            assert_eq!(result.is_ok(), ok, "mode {mode:o}: {result:?}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_secret_file(&path).unwrap_err().to_string();
        assert!(err.contains("0644") && err.contains("chmod o-rwx"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
