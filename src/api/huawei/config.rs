//! The `[huawei]` section of the daemon's configuration (documented in
//! `systemd/vmshot.toml`); no section, no dialect.

use std::path::PathBuf;

use serde::Deserialize;

use crate::api::registry::read_section;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Section {
    pub enabled: bool,
    /// TOML file of AK/SK pairs, in the same form as Alibaba's key file; a
    /// key acts in its `project` only (see `systemd/huawei-credentials.toml`).
    pub credentials_file: Option<PathBuf>,
    /// Static `X-Auth-Token` values (`[[token]] id, user_id, project_id,
    /// roles`), kept as digests; none without it.
    pub tokens_file: Option<PathBuf>,
    /// Where the API is rooted: "" serves `/v2/{project_id}/screen-records`,
    /// as the SDK's endpoint is the host's URL.
    pub path: String,
    /// Accepted clock difference for `X-Sdk-Date`, in seconds (Huawei's API
    /// gateway: 15 min).
    pub timestamp_skew_secs: u64,
    /// Signatures remembered (for twice the skew) to refuse replays, shared
    /// evenly among the keys (~77 bytes each, allocated at start).
    pub max_nonces: usize,
}

impl Default for Section {
    fn default() -> Self {
        Self {
            enabled: true,
            credentials_file: None,
            tokens_file: None,
            path: String::new(),
            timestamp_skew_secs: 15 * 60,
            max_nonces: 200_000,
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
        if section.timestamp_skew_secs == 0 {
            return Err("timestamp_skew_secs must be at least 1".into());
        }
        let path = &section.path;
        let plain = path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.'));
        let shaped = path.is_empty() || (path.starts_with('/') && !path.ends_with('/'));
        if !plain || !shaped || path.contains("//") || path.len() > 256 {
            return Err(format!(
                "path must be \"\" or a prefix like \"/workspace\", not {path:?}"
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
        assert_eq!((s.path.as_str(), s.timestamp_skew_secs), ("", 900));
        assert!(parse("enabled = true").is_err(), "keys are required");
        assert!(parse("enabled = false").is_ok());
        assert!(parse("credentials_file = \"/k\"\nmax_nonces = 0").is_err());
        for bad in ["/", "ws", "/ws/", "/a b", "//ws"] {
            let text = format!("credentials_file = \"/k\"\npath = \"{bad}\"");
            assert!(parse(&text).is_err(), "{bad}");
        }
        assert!(parse("credentials_file = \"/k\"\npath = \"/workspace\"").is_ok());
        let err = parse("credentials_file = \"/k\"\ntoken_file = \"/t\"").unwrap_err();
        assert!(err.contains("token_file"), "{err}");
    }

    #[test]
    fn the_documented_example_is_exactly_the_defaults() {
        let file: toml::Table =
            toml::from_str(include_str!("../../../systemd/vmshot.toml")).unwrap();
        let example = Section::parse(file["huawei"].as_table().unwrap()).unwrap();
        let defaults = parse(
            "credentials_file = \"/etc/vmshot/huawei-credentials.toml\"\n\
             tokens_file = \"/etc/vmshot/huawei-tokens.toml\"",
        )
        .unwrap();
        assert_eq!(format!("{example:?}"), format!("{defaults:?}"));
    }
}
