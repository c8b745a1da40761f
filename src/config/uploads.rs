//! The `[uploads]` section: where finished media (recordings, Oracle's
//! captures) are uploaded, in chunks, and how hard to try. Without the
//! section there are no uploads. Documented in `systemd/vmshot.toml`.

use std::path::PathBuf;

use serde::Deserialize;

use super::{read_secret_text, ConfigError};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Uploads {
    /// MiB a chunk (S3's part) but the last; S3 wants at least 5.
    pub chunk_mb: u64,
    /// KiB a chunk, instead of `chunk_mb`: for directory-only targets of
    /// small files, and tests.
    pub chunk_kib: Option<u64>,
    /// Attempts a target gets before it is failed.
    pub max_attempts: u32,
    /// The first retry's wait, in ms; it doubles up to `max_backoff_secs`.
    pub backoff_ms: u64,
    pub max_backoff_secs: u64,
    /// Uploads running at once (each holds one chunk in memory).
    pub max_concurrent: usize,
    /// How long one request to a target may take, a chunk's PUT included.
    pub request_timeout_secs: u64,
    pub connect_timeout_secs: u64,
    /// For tests only: a wait after each chunk. 0 in use.
    pub chunk_pause_ms: u64,
    pub targets: Vec<Target>,
}

impl Default for Uploads {
    fn default() -> Self {
        Self {
            chunk_mb: 8,
            chunk_kib: None,
            max_attempts: 5,
            backoff_ms: 1000,
            max_backoff_secs: 60,
            max_concurrent: 2,
            request_timeout_secs: 120,
            connect_timeout_secs: 10,
            chunk_pause_ms: 0,
            targets: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    Dir,
    S3,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Shown in statuses (Marketplace's `dataCenterName`).
    pub name: String,
    pub kind: TargetKind,
    /// dir: the directory the objects go under.
    pub path: Option<PathBuf>,
    /// s3: `http(s)://host:port`; absent for AWS's own endpoint.
    pub endpoint: Option<String>,
    pub bucket: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    /// s3: put before every object's name; a trailing `/` is added.
    #[serde(default)]
    pub prefix: String,
    /// s3: TOML with `access_key_id` and `secret_access_key`, not readable
    /// by other users.
    pub credentials_file: Option<PathBuf>,
    /// s3: allow an `http://` endpoint (tests, a bucket on this host).
    #[serde(default)]
    pub allow_http: bool,
}

fn default_region() -> String {
    "us-east-1".into()
}

/// An S3 target's keys, from its credentials file.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl Target {
    /// The keys from `credentials_file`, its permissions checked.
    pub fn credentials(&self) -> Result<S3Credentials, ConfigError> {
        let path = self.credentials_file.as_deref().ok_or_else(|| {
            ConfigError::Invalid(format!(
                "uploads target '{}' has no credentials_file",
                self.name
            ))
        })?;
        let text = read_secret_text(path)?;
        // toml's message may quote the file's text: it is not passed on.
        let creds: S3Credentials = toml::from_str(&text).map_err(|_| {
            ConfigError::Invalid(format!(
                "{}: expected access_key_id = \"...\" and secret_access_key = \"...\"",
                path.display()
            ))
        })?;
        if creds.access_key_id.is_empty() || creds.secret_access_key.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "{}: access_key_id and secret_access_key must not be empty",
                path.display()
            )));
        }
        Ok(creds)
    }
}

impl Uploads {
    pub fn chunk_bytes(&self) -> u64 {
        match self.chunk_kib {
            Some(kib) => kib << 10,
            None => self.chunk_mb << 20,
        }
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(format!("uploads: {m}")));
        if self.targets.is_empty() {
            return bad("at least one [[uploads.targets]] is needed".into());
        }
        let has_s3 = self.targets.iter().any(|t| t.kind == TargetKind::S3);
        if self.chunk_bytes() == 0 || (has_s3 && self.chunk_bytes() < 5 << 20) {
            return bad("chunks must be at least 5 MiB with an S3 target (and never 0)".into());
        }
        // One chunk a running upload is held in memory.
        if self.chunk_bytes() > 512 << 20 {
            return bad("chunk_mb is at most 512".into());
        }
        if self.max_attempts == 0 || self.max_concurrent == 0 {
            return bad("max_attempts and max_concurrent must be at least 1".into());
        }
        if self.request_timeout_secs == 0 || self.connect_timeout_secs == 0 {
            return bad("timeouts must be at least 1 second".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for t in &self.targets {
            let name_ok = !t.name.is_empty()
                && t.name.len() <= 64
                && t.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !name_ok {
                return bad(format!(
                    "target name '{}' must be 1 to 64 letters, digits, '-', '_' or '.'",
                    t.name
                ));
            }
            if !names.insert(&t.name) {
                return bad(format!("two targets are named '{}'", t.name));
            }
            match t.kind {
                TargetKind::Dir => {
                    if !t.path.as_deref().is_some_and(|p| p.is_absolute()) {
                        return bad(format!("dir target '{}' needs an absolute path", t.name));
                    }
                    if t.endpoint.is_some() || t.bucket.is_some() || t.credentials_file.is_some() {
                        return bad(format!(
                            "dir target '{}' takes only name, kind and path",
                            t.name
                        ));
                    }
                }
                TargetKind::S3 => {
                    // S3's rule, checked here rather than met as a 400 at
                    // the first upload.
                    let bucket = t.bucket.as_deref().unwrap_or("");
                    let bucket_ok = (3..=63).contains(&bucket.len())
                        && bucket.bytes().all(|b| {
                            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-'
                        });
                    if !bucket_ok {
                        return bad(format!(
                            "s3 target '{}' needs a bucket of 3 to 63 lowercase letters, \
                             digits, '.' or '-'",
                            t.name
                        ));
                    }
                    if t.credentials_file.is_none() {
                        return bad(format!("s3 target '{}' needs a credentials_file", t.name));
                    }
                    if t.path.is_some() {
                        return bad(format!("s3 target '{}' takes no path", t.name));
                    }
                    if let Some(e) = &t.endpoint {
                        let http = e.starts_with("http://");
                        if !(http || e.starts_with("https://")) {
                            return bad(format!(
                                "s3 target '{}': endpoint must start with http:// or https://",
                                t.name
                            ));
                        }
                        if http && !t.allow_http {
                            return bad(format!(
                                "s3 target '{}': an http:// endpoint needs allow_http = true",
                                t.name
                            ));
                        }
                    }
                    if t.prefix.starts_with('/') || t.prefix.contains("//") {
                        return bad(format!(
                            "s3 target '{}': prefix must be relative, without empty segments",
                            t.name
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text).map_err(|e| e.to_string())
    }

    #[test]
    fn targets_are_checked() {
        let dir = "[[uploads.targets]]\nname = \"local\"\nkind = \"dir\"\npath = \"/srv/v\"\n";
        let c = parse(dir).unwrap();
        let u = c.uploads.unwrap();
        assert_eq!((u.chunk_bytes(), u.max_attempts), (8 << 20, 5));
        assert!(parse("[uploads]\n").unwrap_err().contains("at least one"));
        let s3 = "[[uploads.targets]]\nname = \"obs\"\nkind = \"s3\"\nbucket = \"bkt\"\n\
                  credentials_file = \"/k\"\nendpoint = \"http://127.0.0.1:9000\"\n";
        assert!(parse(s3).unwrap_err().contains("allow_http"));
        assert!(parse(&format!("{s3}allow_http = true\n")).is_ok());
        let small = format!("[uploads]\nchunk_kib = 64\n{s3}allow_http = true\n");
        assert!(parse(&small).unwrap_err().contains("5 MiB"));
        assert!(parse(&format!("[uploads]\nchunk_kib = 64\n{dir}")).is_ok());
        assert!(parse(&format!("{dir}{dir}"))
            .unwrap_err()
            .contains("two targets"));
        let relative = dir.replace("/srv/v", "srv");
        assert!(parse(&relative).unwrap_err().contains("absolute"));
        assert!(parse(&dir.replace("local", "a b")).is_err());
        assert!(parse(&format!("{dir}bucket = \"x\"\n")).is_err());
        assert!(parse(&format!("{dir}colour = 1\n")).is_err());
        let caps = s3.replace("bkt", "Bkt");
        assert!(parse(&format!("{caps}allow_http = true\n"))
            .unwrap_err()
            .contains("bucket"));
    }
}
