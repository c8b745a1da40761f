//! The `[alibaba]` section of the daemon's configuration (documented in
//! `systemd/vmshot.toml`); no section, no dialect.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::api::registry::read_section;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Section {
    pub enabled: bool,
    /// TOML file of access keys (see `systemd/alibaba-credentials.toml`).
    pub credentials_file: Option<PathBuf>,
    /// If set, requests for another RegionId are refused.
    pub region_id: Option<String>,
    /// Minimum seconds between two screenshots of one instance.
    pub throttle_interval_secs: u64,
    /// Accepted clock difference for request timestamps, in seconds.
    pub timestamp_skew_secs: u64,
    /// Signature nonces remembered at once, shared evenly among the keys
    /// (~77 bytes each, allocated at start).
    pub max_nonces: usize,
    /// Accept signature 1.0 (the classic SDK's). It does not cover the host:
    /// a request captured for one host can be replayed once, within the
    /// skew, on another host that knows the same key.
    pub signature_v1: bool,
    /// The `HostId` reported in error bodies.
    pub host_id: String,
    /// InstanceId → libvirt domain name or UUID, tried first.
    pub instances: BTreeMap<String, String>,
}

impl Default for Section {
    fn default() -> Self {
        Self {
            enabled: true,
            credentials_file: None,
            region_id: None,
            throttle_interval_secs: 10,
            timestamp_skew_secs: 15 * 60,
            max_nonces: 200_000,
            signature_v1: true,
            host_id: "vmshot".into(),
            instances: BTreeMap::new(),
        }
    }
}

impl Section {
    pub fn parse(table: &toml::Table) -> Result<Self, String> {
        let section: Self =
            read_section(table, |s: &Self| (s.enabled, s.credentials_file.as_deref()))?;
        if section.max_nonces == 0 {
            return Err("max_nonces must be at least 1".into());
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
        assert_eq!(s.throttle_interval_secs, 10);
        assert!(s.signature_v1);
        assert!(parse("enabled = true").is_err());
        assert!(parse("enabled = false").is_ok());
        assert!(parse("credentials_file = \"/k\"\nmax_nonces = 0").is_err());
        let err = parse("credentials_file = \"/k\"\nthrotle_interval_secs = 1").unwrap_err();
        assert!(err.contains("throtle_interval_secs"), "{err}");
    }

    #[test]
    fn the_documented_example_is_exactly_the_defaults() {
        let file: toml::Table =
            toml::from_str(include_str!("../../../systemd/vmshot.toml")).unwrap();
        let example = Section::parse(file["alibaba"].as_table().unwrap()).unwrap();
        let defaults =
            parse("credentials_file = \"/etc/vmshot/alibaba-credentials.toml\"").unwrap();
        assert_eq!(format!("{example:?}"), format!("{defaults:?}"));
    }
}
