//! The `[aws]` section of the daemon's configuration (documented in
//! `systemd/vmshot.toml`); no section, no dialect.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::api::registry::read_section;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Section {
    pub enabled: bool,
    /// TOML file of access keys, in the same form as Alibaba's.
    pub credentials_file: Option<PathBuf>,
    /// The path the Query API is served on (and the same with a trailing
    /// slash): boto3's `endpoint_url` is the host's URL plus this path.
    pub path: String,
    /// If set, the only region a request may be signed for.
    pub region: Option<String>,
    /// Minimum seconds between two screenshots of one instance.
    pub throttle_interval_secs: u64,
    /// Accepted clock difference for `X-Amz-Date`, in seconds (AWS: 5 min).
    pub timestamp_skew_secs: u64,
    /// InstanceId → libvirt domain name or UUID, tried first.
    pub instances: BTreeMap<String, String>,
}

impl Default for Section {
    fn default() -> Self {
        Self {
            enabled: true,
            credentials_file: None,
            path: "/ec2".into(),
            region: None,
            throttle_interval_secs: 10,
            timestamp_skew_secs: super::sigv4::DEFAULT_SKEW.as_secs(),
            instances: BTreeMap::new(),
        }
    }
}

impl Section {
    pub fn parse(table: &toml::Table) -> Result<Self, String> {
        let section: Self =
            read_section(table, |s: &Self| (s.enabled, s.credentials_file.as_deref()))?;
        let path = &section.path;
        let clean = path.starts_with('/') && !path.contains("//") && !path.contains(['?', '#']);
        if !clean || (path.len() > 1 && path.ends_with('/')) {
            return Err(format!(
                "path must start with '/' and not end with one (e.g. \"/ec2\"), not \"{path}\""
            ));
        }
        Ok(section)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Section, String> {
        Section::parse(&toml::from_str(text).unwrap())
    }

    #[test]
    fn defaults_and_checks() {
        let s = parse("credentials_file = \"/k.toml\"").unwrap();
        assert_eq!((s.path.as_str(), s.timestamp_skew_secs), ("/ec2", 300));
        assert!(parse("enabled = true").is_err());
        assert!(parse("enabled = false").is_ok());
        assert!(parse("credentials_file = \"/k\"\npath = \"ec2\"").is_err());
        assert!(parse("credentials_file = \"/k\"\npath = \"/ec2/\"").is_err());
        assert!(parse("credentials_file = \"/k\"\npath = \"/\"").is_ok());
        let err = parse("credentials_file = \"/k\"\nregoin = \"x\"").unwrap_err();
        assert!(err.contains("regoin"), "{err}");
    }

    #[test]
    fn the_documented_example_is_exactly_the_defaults() {
        let file: toml::Table =
            toml::from_str(include_str!("../../../systemd/vmshot.toml")).unwrap();
        let example = Section::parse(file["aws"].as_table().unwrap()).unwrap();
        let defaults = parse("credentials_file = \"/etc/vmshot/aws-credentials.toml\"").unwrap();
        assert_eq!(format!("{example:?}"), format!("{defaults:?}"));
    }
}
