//! How uploads run and where they go, as the daemon's `[uploads]` section
//! gave it (the configuration layer reads the files; here are only values).

use std::path::PathBuf;
use std::time::Duration;

use super::{Error, TargetKind};

/// S3's smallest part but the last.
pub const MIN_S3_CHUNK: u64 = 5 << 20;
/// The largest chunk: one is held in memory per running upload (S3 would
/// take parts of up to 5 GiB).
pub const MAX_CHUNK: u64 = 512 << 20;
/// S3's most parts an upload.
pub const MAX_PARTS: u64 = 10_000;

#[derive(Debug, Clone)]
pub struct UploadSettings {
    /// Bytes a chunk (S3's part) but the last.
    pub chunk_bytes: u64,
    /// Attempts a target gets before it fails: one a failed step, across
    /// restarts of the daemon.
    pub max_attempts: u32,
    /// The wait before the first retry; it doubles, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Uploads that run at once; each holds one chunk in memory.
    pub max_concurrent: usize,
    /// How long one request to a target may take (a chunk's PUT included).
    pub request_timeout: Duration,
    /// How long connecting to a target may take.
    pub connect_timeout: Duration,
    /// For tests only: a wait after each chunk, so that a test can act on
    /// an upload halfway (kill the daemon, stop the target). Zero in use.
    pub chunk_pause: Duration,
    pub targets: Vec<TargetSettings>,
}

impl Default for UploadSettings {
    fn default() -> Self {
        Self {
            chunk_bytes: 8 << 20,
            max_attempts: 5,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            max_concurrent: 2,
            request_timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(10),
            chunk_pause: Duration::ZERO,
            targets: Vec::new(),
        }
    }
}

#[derive(Clone)]
pub enum TargetSettings {
    /// A directory on this host.
    Dir {
        name: String,
        path: PathBuf,
    },
    S3(S3Target),
}

/// An S3-compatible bucket.
#[derive(Clone)]
pub struct S3Target {
    pub name: String,
    /// `http(s)://host:port`; `None` for AWS's own endpoint of the region.
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
    /// Put before every object's name, e.g. `vmshot/` (may be empty).
    pub prefix: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub allow_http: bool,
}

// By hand: the secret key must never reach a log.
impl std::fmt::Debug for TargetSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Dir { name, path } => f
                .debug_struct("Dir")
                .field("name", name)
                .field("path", path)
                .finish(),
            Self::S3(s) => f
                .debug_struct("S3")
                .field("name", &s.name)
                .field("endpoint", &s.endpoint)
                .field("bucket", &s.bucket)
                .field("region", &s.region)
                .field("prefix", &s.prefix)
                .field("access_key_id", &s.access_key_id)
                .field("allow_http", &s.allow_http)
                .finish_non_exhaustive(),
        }
    }
}

/// Where an object lands in a target, as status shows it: no host path.
pub(crate) struct Place {
    pub uri: String,
    pub bucket: Option<String>,
    pub directory: Option<String>,
}

impl TargetSettings {
    pub fn name(&self) -> &str {
        match self {
            Self::Dir { name, .. } => name,
            Self::S3(s) => &s.name,
        }
    }

    pub fn kind(&self) -> TargetKind {
        match self {
            Self::Dir { .. } => TargetKind::Dir,
            Self::S3(_) => TargetKind::S3,
        }
    }

    /// The object's name within the target (the prefix on an S3 key).
    pub(crate) fn object_name(&self, key: &str) -> String {
        match self {
            Self::Dir { .. } => key.to_owned(),
            Self::S3(s) => format!("{}{key}", s.prefix),
        }
    }

    pub(crate) fn place(&self, key: &str) -> Place {
        let name = self.object_name(key);
        let directory = name.rsplit_once('/').map(|(dir, _)| dir.to_owned());
        match self {
            Self::Dir { .. } => Place {
                uri: name,
                bucket: None,
                directory,
            },
            Self::S3(s) => Place {
                uri: format!("s3://{}/{name}", s.bucket),
                bucket: Some(s.bucket.clone()),
                directory,
            },
        }
    }
}

impl UploadSettings {
    /// The settings if they can work: parts S3 takes, names that differ.
    pub(crate) fn checked(self) -> Result<Self, Error> {
        let bad = |why: String| Error::Failed {
            reason: format!("uploads are misconfigured: {why}"),
            detail: String::new(),
        };
        if self.targets.is_empty() {
            return Err(bad("no target".into()));
        }
        if self.chunk_bytes == 0 || self.chunk_bytes > MAX_CHUNK {
            return Err(bad(format!("chunk size {} bytes", self.chunk_bytes)));
        }
        let has_s3 = self.targets.iter().any(|t| t.kind() == TargetKind::S3);
        if has_s3 && self.chunk_bytes < MIN_S3_CHUNK {
            return Err(bad("an S3 target needs chunks of at least 5 MiB".into()));
        }
        if self.max_attempts == 0 || self.max_concurrent == 0 {
            return Err(bad(
                "max_attempts and max_concurrent must be at least 1".into()
            ));
        }
        let mut names: Vec<_> = self.targets.iter().map(|t| t.name()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err(bad("two targets have the same name".into()));
        }
        Ok(self)
    }
}
