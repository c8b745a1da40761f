//! The `[oracle]` section of the daemon's configuration; no section, no
//! dialect. Every key and its default:
//!
//! ```toml
//! [oracle]
//! enabled = true
//! credentials_file = "/etc/vmshot/oracle-users.toml"   # required while enabled
//! identity_domain = "acme"          # required: the {domain} of /Compute-{domain}/{user}
//! capture_interval_secs = 60        # one capture per instance per minute, as Oracle's; 0: none
//! session_secs = 1800               # a nimbula cookie's life, and what /refresh/ adds
//! session_cap_secs = 10800          # never past 3 h from the first authentication
//! start_delay_ms = 0                # how long a new capture waits in `pending`
//! upload_delay_ms = 0               # for tests only: how long it waits in `uploading`
//! # cookie_key_file = "/etc/vmshot/oracle-cookie.key"  # ≥ 32 bytes, mode 0600/0640
//! [oracle.instances]                # instance name (after the container) → domain
//! "web1" = "6a1f2c3d-0000-4000-8000-000000000001"
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::api::registry::read_section;

/// Longest identity domain accepted: Oracle's are short (`acme`, a
/// nine-digit service instance id); the limit only keeps names bounded.
pub const MAX_DOMAIN: usize = 64;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Section {
    pub enabled: bool,
    /// TOML file of `[[user]]` entries (see `credentials`).
    pub credentials_file: Option<PathBuf>,
    /// The `{domain}` of `/Compute-{domain}/{user}`: every name this host
    /// answers to lives under `/Compute-{identity_domain}/`.
    pub identity_domain: String,
    /// Minimum seconds between two captures of one instance; 0 for none,
    /// as the other dialects' intervals (a private host, a benchmark).
    pub capture_interval_secs: u64,
    /// Life of a `nimbula` cookie, and how far `GET /refresh/` extends it.
    pub session_secs: u64,
    /// No session outlives its first authentication by more than this.
    pub session_cap_secs: u64,
    /// A secret (≥ 32 bytes) that signs cookies. Without it each start draws
    /// a random key, so a restart logs every caller out (401 until they
    /// authenticate again) and two daemons behind one name reject each
    /// other's cookies.
    pub cookie_key_file: Option<PathBuf>,
    /// How long a new capture waits in `pending` before its grab: time for
    /// the console to settle after whatever prompted the request, and a
    /// window in which a cancel stops it before any pixel is taken.
    pub start_delay_ms: u64,
    /// How long a capture waits in `uploading` before its image is stored.
    /// For tests only (0 otherwise): storing takes milliseconds, too short
    /// a window for a test to cancel or kill an uploading capture in.
    pub upload_delay_ms: u64,
    /// Instance name relative to its container (`vm1` or `vm1/{uuid}`) →
    /// libvirt domain name or UUID, tried first.
    pub instances: BTreeMap<String, String>,
}

impl Default for Section {
    fn default() -> Self {
        Self {
            enabled: true,
            credentials_file: None,
            identity_domain: String::new(),
            capture_interval_secs: 60,
            session_secs: 1800,
            session_cap_secs: 10_800,
            cookie_key_file: None,
            start_delay_ms: 0,
            upload_delay_ms: 0,
            instances: BTreeMap::new(),
        }
    }
}

impl Section {
    pub fn parse(table: &toml::Table) -> Result<Self, String> {
        let section: Self =
            read_section(table, |s: &Self| (s.enabled, s.credentials_file.as_deref()))?;
        if !section.enabled {
            return Ok(section);
        }
        if !valid_domain(&section.identity_domain) {
            return Err(format!(
                "identity_domain must be 1 to {MAX_DOMAIN} letters, digits, '-', '_' or '.' \
                 (e.g. \"acme\" for /Compute-acme/), not {:?}",
                section.identity_domain
            ));
        }
        if section.session_secs == 0 || section.session_secs > section.session_cap_secs {
            return Err(format!(
                "session_secs must be at least 1 and at most session_cap_secs ({}), not {}",
                section.session_cap_secs, section.session_secs
            ));
        }
        Ok(section)
    }

    /// `/Compute-{identity_domain}`, the root of every name on this host.
    #[cfg(test)]
    pub fn root(&self) -> String {
        format!("/Compute-{}", self.identity_domain)
    }
}

/// The characters an identity domain may have: nothing that needs escaping
/// in a path, a cookie or a log line.
pub fn valid_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= MAX_DOMAIN
        && domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Section, String> {
        Section::parse(&toml::from_str(text).unwrap())
    }

    const BASE: &str = "credentials_file = \"/u.toml\"\nidentity_domain = \"acme\"\n";

    #[test]
    fn defaults() {
        let s = parse(BASE).unwrap();
        assert_eq!(
            (s.capture_interval_secs, s.session_secs, s.session_cap_secs),
            (60, 1800, 10_800)
        );
        assert!(s.cookie_key_file.is_none() && s.instances.is_empty());
        assert_eq!(s.root(), "/Compute-acme");
    }

    #[test]
    fn checks() {
        assert!(
            parse("identity_domain = \"acme\"").is_err(),
            "no credentials"
        );
        assert!(parse("enabled = false").is_ok());
        assert!(parse("credentials_file = \"/u\"").is_err(), "no domain");
        for bad in ["a/b", "a b", "", "é"] {
            let text = format!("credentials_file = \"/u\"\nidentity_domain = \"{bad}\"");
            assert!(parse(&text).is_err(), "{bad:?}");
        }
        let long = format!(
            "credentials_file = \"/u\"\nidentity_domain = \"{}\"",
            "a".repeat(65)
        );
        assert!(parse(&long).is_err());
        assert!(parse(&format!("{BASE}session_secs = 0")).is_err());
        assert!(parse(&format!("{BASE}session_secs = 20000")).is_err());
        let off = parse(&format!("{BASE}capture_interval_secs = 0")).unwrap();
        assert_eq!(off.capture_interval_secs, 0, "0: no interval");
        let err = parse(&format!("{BASE}sesion_secs = 1")).unwrap_err();
        assert!(err.contains("sesion_secs"), "{err}");
        let s = parse(&format!(
            "{BASE}cookie_key_file = \"/k\"\n[instances]\n\"vm1\" = \"web-01\"\n"
        ))
        .unwrap();
        assert_eq!(s.instances["vm1"], "web-01");
    }

    #[test]
    fn the_module_doc_example_parses() {
        let doc = include_str!("config.rs");
        let example: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! [oracle]"))
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.trim_start_matches("//!").trim_start().to_owned() + "\n")
            .collect::<String>()
            .replace("# cookie_key_file", "cookie_key_file");
        let file: toml::Table = toml::from_str(&example).unwrap();
        let s = Section::parse(file["oracle"].as_table().unwrap()).unwrap();
        assert_eq!(s.identity_domain, "acme");
        assert!(s.cookie_key_file.is_some() && s.instances.contains_key("web1"));
    }
}
