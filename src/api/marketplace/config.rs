//! The `[marketplace]` section (documented in `systemd/vmshot.toml`); no
//! section, no dialect.
//!
//! ```toml
//! [marketplace]
//! tokens_file = "/etc/vmshot/marketplace-tokens.toml"   # bearer tokens, a secret file
//! ```

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Section {
    pub enabled: bool,
    /// `[[token]] id, user, project, roles`: see `tokens`.
    pub tokens_file: Option<PathBuf>,
}

impl Default for Section {
    fn default() -> Self {
        Self {
            enabled: true,
            tokens_file: None,
        }
    }
}

impl Section {
    pub fn parse(table: &toml::Table) -> Result<Self, String> {
        let section: Self = toml::Value::Table(table.clone())
            .try_into()
            .map_err(|e: toml::de::Error| e.message().to_owned())?;
        if section.enabled && section.tokens_file.is_none() {
            return Err("tokens_file is required while enabled = true".into());
        }
        Ok(section)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tokens_file_is_needed_while_on() {
        let parse = |t: &str| Section::parse(&toml::from_str(t).unwrap());
        assert!(parse("").is_err());
        assert!(parse("enabled = false").is_ok());
        assert!(parse("tokens_file = \"/t\"").is_ok());
        assert!(parse("tokens_file = \"/t\"\npath = \"/x\"").is_err());
    }
}
