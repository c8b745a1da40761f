//! The daemon's configuration: one TOML file, read once at start into typed
//! values. Every key has a default (documented in `systemd/vmshot.toml`), and an
//! unknown key is an error: a typo must not silently fall back to a default.
//! Each dialect's section is its own (`api::<dialect>::config`); here they
//! are kept as tables, and `api::registry` refuses a name it does not know.

mod diagnosis;
mod secret;
mod uploads;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use diagnosis::Diagnosis;
pub use secret::{read_secret_file, read_secret_text, SecretFileError};
pub use uploads::{TargetKind as UploadTargetKind, Uploads};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Secret(#[from] SecretFileError),
}

// No `deny_unknown_fields` here: every other section is a dialect's, checked
// by the registry (serde cannot deny and collect at once).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Config {
    pub server: Server,
    pub libvirt: Libvirt,
    pub capture: Capture,
    pub metrics: Metrics,
    /// The durable store; without this section there is none (no capture
    /// records, and no dialect that needs one).
    pub store: Option<Store>,
    /// Screen recordings; without this section (or without a store) there
    /// are none.
    pub recordings: Option<Recordings>,
    /// Uploads of media to storage targets; without this section, none.
    pub uploads: Option<Uploads>,
    /// Verdicts on hanging guests.
    pub diagnosis: Diagnosis,
    /// The dialects' sections, by name: a dialect without one is off.
    #[serde(flatten)]
    pub dialects: BTreeMap<String, toml::Table>,
    /// What the file said in an old way, for the log.
    #[serde(skip)]
    pub deprecated: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// PEM certificate chain and private key; both or neither. With them the
    /// daemon speaks HTTPS only.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Plain HTTP is served on loopback only, unless this says otherwise.
    pub allow_plaintext_remote: bool,
    /// Whole-request deadline, in seconds.
    pub request_timeout_secs: u64,
    pub max_body_bytes: usize,
    /// Bound on the request line plus headers.
    pub max_header_bytes: usize,
    /// How long requests in flight may take to finish after SIGTERM.
    pub shutdown_grace_secs: u64,
    /// Names a signed request's host may carry besides this machine's host
    /// name and the address the client connected to (e.g. a proxy's name).
    pub host_names: Vec<String>,
    /// A request line and headers must arrive within this many seconds of
    /// the connection (or of their first byte on a kept-alive connection).
    pub header_read_timeout_secs: u64,
    /// A kept-alive connection waiting for its next request is closed after this.
    pub idle_timeout_secs: u64,
    /// A TLS handshake must finish within this.
    pub tls_handshake_timeout_secs: u64,
    /// Connections open at once, TLS handshakes included; past it a newcomer
    /// closes the connection idle the longest (never one being served).
    pub max_connections: usize,
}

impl Default for Server {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8480)),
            tls_cert: None,
            tls_key: None,
            allow_plaintext_remote: false,
            request_timeout_secs: 30,
            max_body_bytes: 64 * 1024,
            max_header_bytes: 16 * 1024,
            shutdown_grace_secs: 20,
            host_names: Vec::new(),
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            tls_handshake_timeout_secs: 10,
            // A quarter of LimitNOFILE (4096): the rest is libvirt's and the
            // VNC mirrors'. At the cap: +24 MiB of RSS with silent clients,
            // +34 MiB with 15 KiB heads pending (tests/connections.rs).
            max_connections: 1024,
        }
    }
}

impl Server {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    pub fn tls_handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.tls_handshake_timeout_secs)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Libvirt {
    pub uri: String,
    pub call_timeout_secs: u64,
    /// libvirt calls in flight at once (hung ones count until they return).
    pub max_calls: usize,
    /// The inventory's full read besides the events, in seconds.
    pub inventory_resync_secs: u64,
}

impl Default for Libvirt {
    fn default() -> Self {
        Self {
            uri: "qemu:///system".into(),
            call_timeout_secs: 15,
            max_calls: 16,
            inventory_resync_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Capture {
    /// Captures running at once; each holds one decoded screen in memory.
    pub max_concurrent: usize,
    /// Captures allowed to wait for a slot; beyond that callers are told "busy".
    pub max_queued: usize,
    pub jpeg_quality: u8,
    pub subsampling: Subsampling,
    /// How screens are obtained: screenshots only, or VNC mirrors first.
    pub fast_path: FastPath,
    /// A VNC mirror no capture has used for this long is closed.
    pub mirror_idle_secs: u64,
    /// Most VNC mirrors open at once; other domains get screenshots.
    pub max_mirrors: usize,
    /// MiB of screens all VNC mirrors may hold together (4 bytes a pixel).
    pub mirror_memory_mb: usize,
    /// After a wake-up, how long the guest may redraw before the capture.
    pub wakeup_settle_ms: u64,
}

/// `capture.subsampling`: chroma subsampling of the JPEG output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Subsampling {
    #[serde(rename = "420")]
    S420,
    #[serde(rename = "422")]
    S422,
    #[serde(rename = "444")]
    S444,
    #[serde(rename = "gray")]
    Gray,
}

/// `capture.fast_path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FastPath {
    /// Every capture is a `virDomainScreenshot`.
    Off,
    /// A shared VNC connection per captured domain holds a live copy of its
    /// screen; captures read it, and fall back to screenshots when it cannot serve.
    Vnc,
}

impl Default for Capture {
    fn default() -> Self {
        Self {
            max_concurrent: 4,
            max_queued: 64,
            jpeg_quality: 80,
            subsampling: Subsampling::S420,
            fast_path: FastPath::Vnc,
            mirror_idle_secs: 300,
            max_mirrors: 64,
            mirror_memory_mb: 96,
            wakeup_settle_ms: 1500,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Store {
    /// The SQLite database; its media directory is beside it (`PATH.media`).
    pub path: PathBuf,
    /// Finished jobs and capture records older than this are removed.
    pub max_age_days: u64,
    /// Media (captured images) kept at most, oldest removed first.
    pub max_media_mb: u64,
    /// Capture records (instance actions) kept at most, oldest removed first.
    pub max_actions: u64,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            // StateDirectory=vmshot in vmshot.service.
            path: PathBuf::from("/var/lib/vmshot/vmshot.db"),
            max_age_days: 30,
            max_media_mb: 1024,
            max_actions: 1_000_000,
        }
    }
}

/// `[recordings]`: where recordings go and what they may cost.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Recordings {
    pub enabled: bool,
    /// Where the files go; default: beside the store (`PATH.recordings`).
    pub dir: Option<PathBuf>,
    /// FULL, SESSION and OPERATION frames a second, unless asked otherwise.
    pub fps: f64,
    /// INTERVAL's period, unless asked otherwise.
    pub interval_secs: u64,
    /// OPERATION's seconds kept before the event and recorded after it.
    pub before_secs: u64,
    pub after_secs: u64,
    /// The longest a recording may run (and its default length).
    pub max_duration_secs: u64,
    /// Recordings running at once (OPERATION watchers included).
    pub max_concurrent: usize,
    /// Megabytes of recording files, all together and one recording.
    pub max_disk_mb: u64,
    pub max_recording_mb: u64,
    /// Threads that encode every recording: their CPU share.
    pub encoder_threads: usize,
}

impl Default for Recordings {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: None,
            fps: 2.0,
            interval_secs: 10,
            before_secs: 10,
            after_secs: 20,
            max_duration_secs: 4 * 3600,
            max_concurrent: 32,
            max_disk_mb: 10 * 1024,
            max_recording_mb: 1024,
            encoder_threads: 1,
        }
    }
}

/// Who may read `/metrics` (or `/readyz`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsAccess {
    /// Anyone who can reach the listener.
    Open,
    /// Only clients connecting from a loopback address.
    #[default]
    Loopback,
    /// Not served.
    Off,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    pub access: MetricsAccess,
    /// Who may read `/readyz`.
    pub readyz_access: MetricsAccess,
}

impl Config {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })?;
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let mut config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        config.migrate()?;
        config.validate()?;
        Ok(config)
    }

    /// Keys that moved: the old place still works, with a note for the log,
    /// unless the new place is set too.
    fn migrate(&mut self) -> Result<(), ConfigError> {
        let moved = self
            .dialects
            .get_mut("alibaba")
            .and_then(|section| section.remove("wakeup_settle_ms"));
        if let Some(value) = moved {
            let ms = value
                .as_integer()
                .and_then(|ms| u64::try_from(ms).ok())
                .ok_or_else(|| {
                    ConfigError::Invalid("alibaba.wakeup_settle_ms must be milliseconds".into())
                })?;
            if self.capture.wakeup_settle_ms != Capture::default().wakeup_settle_ms {
                return Err(ConfigError::Invalid(
                    "alibaba.wakeup_settle_ms moved to capture.wakeup_settle_ms: set only the latter"
                        .into(),
                ));
            }
            self.capture.wakeup_settle_ms = ms;
            self.deprecated.push(
                "alibaba.wakeup_settle_ms is deprecated: it is now capture.wakeup_settle_ms".into(),
            );
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        if s.tls_cert.is_some() != s.tls_key.is_some() {
            return Err(ConfigError::Invalid(
                "server.tls_cert and server.tls_key go together: set both or neither".into(),
            ));
        }
        if s.tls_cert.is_none() && !s.listen.ip().is_loopback() && !s.allow_plaintext_remote {
            return Err(ConfigError::Invalid(format!(
                "server.listen = {} is not a loopback address: configure server.tls_cert and \
                 server.tls_key, or set server.allow_plaintext_remote = true",
                s.listen
            )));
        }
        if !(1..=100).contains(&self.capture.jpeg_quality) {
            return Err(ConfigError::Invalid(
                "capture.jpeg_quality must be 1 to 100".into(),
            ));
        }
        if self.capture.max_concurrent == 0 || self.libvirt.max_calls == 0 {
            return Err(ConfigError::Invalid(
                "capture.max_concurrent and libvirt.max_calls must be at least 1".into(),
            ));
        }
        if [
            s.request_timeout_secs,
            s.header_read_timeout_secs,
            s.idle_timeout_secs,
            s.tls_handshake_timeout_secs,
            self.libvirt.call_timeout_secs,
            self.libvirt.inventory_resync_secs,
        ]
        .contains(&0)
        {
            return Err(ConfigError::Invalid(
                "timeouts must be at least 1 second".into(),
            ));
        }
        if s.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "server.max_connections must be at least 1".into(),
            ));
        }
        if let Some(uploads) = &self.uploads {
            uploads.validate()?;
        }
        self.diagnosis.validate()?;
        // hyper panics below its minimum read buffer.
        if s.max_header_bytes < 8192 {
            return Err(ConfigError::Invalid(
                "server.max_header_bytes must be at least 8192".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str =
        "[alibaba]\ncredentials_file = \"/etc/vmshot/alibaba-credentials.toml\"\n";

    #[test]
    fn defaults_fill_what_the_file_leaves_out() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:8480".parse().unwrap());
        assert_eq!(c.libvirt.uri, "qemu:///system");
        assert_eq!(c.capture.jpeg_quality, 80);
        assert!(c.dialects["alibaba"].contains_key("credentials_file"));
        assert_eq!(c.metrics.access, MetricsAccess::Loopback);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Config::parse(&format!("{MINIMAL}[server]\nlisten_port = 80\n")).unwrap_err();
        assert!(err.to_string().contains("listen_port"), "{err}");
        // Other sections are the dialects': `api::registry` knows their names.
        let other = Config::parse(&format!("{MINIMAL}[sever]\n")).unwrap();
        assert!(other.dialects.contains_key("sever"));
    }

    #[test]
    fn plaintext_is_loopback_only_unless_allowed() {
        let remote = format!("{MINIMAL}[server]\nlisten = \"0.0.0.0:8480\"\n");
        let err = Config::parse(&remote).unwrap_err();
        assert!(err.to_string().contains("tls_cert"), "{err}");
        let allowed = format!(
            "{MINIMAL}[server]\nlisten = \"0.0.0.0:8480\"\nallow_plaintext_remote = true\n"
        );
        assert!(Config::parse(&allowed).is_ok());
        let tls = format!("{MINIMAL}[server]\nlisten = \"0.0.0.0:8443\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n");
        assert!(Config::parse(&tls).is_ok());
        let half = format!("{MINIMAL}[server]\ntls_cert = \"c.pem\"\n");
        assert!(Config::parse(&half).is_err());
    }

    #[test]
    fn the_documented_example_is_exactly_the_defaults() {
        let example = Config::parse(include_str!("../../systemd/vmshot.toml")).unwrap();
        let defaults = Config::parse(MINIMAL).unwrap();
        // Debug output compares every field, nested ones included; the
        // dialects compare their own sections.
        let core = |c: &Config| format!("{:?}", (&c.server, &c.libvirt, &c.capture, &c.metrics));
        assert_eq!(core(&example), core(&defaults));
        assert_eq!(
            format!("{:?}", example.store),
            format!("{:?}", Some(Store::default()))
        );
    }

    #[test]
    fn a_moved_key_still_works_with_a_note() {
        let old = Config::parse(&format!("{MINIMAL}wakeup_settle_ms = 700\n")).unwrap();
        assert_eq!(old.capture.wakeup_settle_ms, 700);
        assert!(!old.dialects["alibaba"].contains_key("wakeup_settle_ms"));
        assert_eq!(old.deprecated.len(), 1, "{:?}", old.deprecated);
        let new = Config::parse(&format!("{MINIMAL}[capture]\nwakeup_settle_ms = 700\n")).unwrap();
        assert_eq!(new.capture.wakeup_settle_ms, 700);
        assert!(new.deprecated.is_empty());
        let both = format!("{MINIMAL}wakeup_settle_ms = 700\n[capture]\nwakeup_settle_ms = 900\n");
        assert!(Config::parse(&both).is_err());
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(Config::parse(&format!("{MINIMAL}[capture]\njpeg_quality = 0\n")).is_err());
        assert!(Config::parse(&format!("{MINIMAL}[capture]\nsubsampling = \"411\"\n")).is_err());
        assert!(Config::parse(&format!("{MINIMAL}[metrics]\naccess = \"public\"\n")).is_err());
        for zero in [
            "header_read_timeout_secs = 0",
            "idle_timeout_secs = 0",
            "tls_handshake_timeout_secs = 0",
            "max_connections = 0",
            "max_header_bytes = 4096",
        ] {
            let err = Config::parse(&format!("{MINIMAL}[server]\n{zero}\n")).unwrap_err();
            assert!(matches!(err, ConfigError::Invalid(_)), "{zero}: {err}");
        }
    }
}
