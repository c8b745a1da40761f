//! The `[ui]` section: the live page (`/ui/`) and the native JSON API under
//! it (`/v1/`). No section, neither. Every key and its default:
//!
//! ```toml
//! [ui]
//! enabled = true
//! access = "loopback"       # "loopback": callers on 127.0.0.1/::1 only, no log-in;
//!                           # "users": anyone who logs in (HTTPS only, see server.tls_cert)
//! # credentials_file = "/etc/vmshot/ui-users.toml"   # required for access = "users"
//! session_secs = 1800       # a session cookie's life
//! session_cap_secs = 43200  # never past 12 h from the log-in
//! # cookie_key_file = "/etc/vmshot/ui-cookie.key"    # ≥ 32 bytes, mode 0600/0640
//! ```

use std::path::PathBuf;

use serde::Deserialize;

use crate::api::registry::read_section;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessMode {
    /// Callers on a loopback address only, as the host's operator.
    Loopback,
    /// Users from `credentials_file`, over HTTPS, with a session cookie.
    Users,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Section {
    pub enabled: bool,
    pub access: AccessMode,
    /// `[[user]]` entries, as Oracle's file (`name`, `password_hash`,
    /// `roles`, `project`, `instances`); `roles = ["admin"]` sees every domain.
    pub credentials_file: Option<PathBuf>,
    pub session_secs: u64,
    pub session_cap_secs: u64,
    /// Without it, each start draws a key: a restart logs everyone out.
    pub cookie_key_file: Option<PathBuf>,
}

impl Default for Section {
    fn default() -> Self {
        Self {
            enabled: true,
            access: AccessMode::Loopback,
            credentials_file: None,
            session_secs: 1800,
            session_cap_secs: 43_200,
            cookie_key_file: None,
        }
    }
}

impl Section {
    pub fn parse(table: &toml::Table) -> Result<Self, String> {
        let section: Self = read_section(table, |s: &Self| {
            (
                s.enabled && s.access == AccessMode::Users,
                s.credentials_file.as_deref(),
            )
        })?;
        if section.session_secs == 0 || section.session_secs > section.session_cap_secs {
            return Err(format!(
                "session_secs must be at least 1 and at most session_cap_secs ({}), not {}",
                section.session_cap_secs, section.session_secs
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
    fn loopback_needs_nothing_and_users_need_a_file() {
        let s = parse("").unwrap();
        assert_eq!((s.access, s.session_secs), (AccessMode::Loopback, 1800));
        assert!(parse("access = \"users\"").is_err());
        assert!(parse("access = \"users\"\ncredentials_file = \"/u\"").is_ok());
        assert!(parse("access = \"everyone\"").is_err());
        assert!(parse("sesion_secs = 1").is_err());
        assert!(parse("session_secs = 0").is_err());
    }
}
