//! The `[nova]` section of the daemon's configuration; no section, no
//! dialect. Tokens come from exactly one of a static file or a Keystone:
//!
//! ```toml
//! [nova]
//! enabled = true
//! path = "/compute"            # Nova's root here: /compute/, /compute/v2.1/…
//! tokens_file = "/etc/vmshot/nova-tokens.toml"   # [[token]] id, user_id, project_id, roles
//! # public_url = "https://host.example:8443/compute"   # links in answers; else from Host
//!
//! # …or, instead of tokens_file:
//! [nova.keystone]
//! url = "http://keystone.example:5000"
//! service_token_file = "/etc/vmshot/nova-service-token"   # mode 0600/0640
//! # www_authenticate_uri = "https://keystone.example/identity"  # told to callers on a 401
//! timeout_ms = 5000
//! cache_secs = 300             # a revoked token is taken at most this long
//! cache_entries = 10000
//! cache_per_user = 100
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::token::KeystoneConfig;
use crate::api::registry::read_section;
use crate::config::read_secret_text;

/// Longest `path` or `public_url` accepted.
const MAX_URL: usize = 512;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Section {
    pub enabled: bool,
    /// Where Nova's API is rooted on this server: Alibaba has `/` itself, so
    /// Nova lives under a prefix, as devstack serves it (`/compute`).
    pub path: String,
    /// Static tokens (see `token::StaticTokens`).
    pub tokens_file: Option<PathBuf>,
    pub keystone: Option<KeystoneSection>,
    /// The root URL clients reach this API at, for the links in answers;
    /// without it, built from the request's `Host` as Nova does.
    pub public_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeystoneSection {
    /// Where vmshot validates tokens (may be an internal address).
    pub url: String,
    pub service_token_file: PathBuf,
    /// Where callers get tokens, sent in `WWW-Authenticate` on a 401 (as
    /// keystonemiddleware's `www_authenticate_uri`); none without it.
    pub www_authenticate_uri: Option<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_cache_secs")]
    pub cache_secs: u64,
    #[serde(default = "default_cache_entries")]
    pub cache_entries: usize,
    #[serde(default = "default_cache_per_user")]
    pub cache_per_user: usize,
}

fn default_timeout_ms() -> u64 {
    5000
}
fn default_cache_secs() -> u64 {
    300
}
fn default_cache_entries() -> usize {
    10_000
}
fn default_cache_per_user() -> usize {
    100
}

impl Default for Section {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "/compute".into(),
            tokens_file: None,
            keystone: None,
            public_url: None,
        }
    }
}

impl Section {
    pub fn parse(table: &toml::Table) -> Result<Self, String> {
        // Tokens, not a credentials file: checked below.
        let section: Self = read_section(table, |_: &Self| (false, None))?;
        if !section.enabled {
            return Ok(section);
        }
        if section.tokens_file.is_none() && section.keystone.is_none() {
            return Err("tokens_file or [nova.keystone] is required while enabled = true".into());
        }
        if section.tokens_file.is_some() && section.keystone.is_some() {
            return Err("tokens_file and [nova.keystone]: name one source of tokens".into());
        }
        let path = &section.path;
        let plain = path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.'));
        if !path.starts_with('/') || path.len() < 2 || path.ends_with('/') || !plain {
            return Err(format!(
                "path must be a prefix like \"/compute\" (not \"/\": Alibaba answers there), not {path:?}"
            ));
        }
        if let Some(url) = &section.public_url {
            let parsed: axum::http::Uri = url
                .parse()
                .map_err(|_| format!("public_url {url:?} is not a URL"))?;
            if parsed.scheme().is_none() || parsed.host().is_none() || url.len() > MAX_URL {
                return Err(format!(
                    "public_url must be absolute, like \"https://host:8443/compute\", not {url:?}"
                ));
            }
        }
        if let Some(k) = &section.keystone {
            if k.timeout_ms == 0 {
                return Err("[nova.keystone] timeout_ms must be at least 1".into());
            }
            if let Some(uri) = &k.www_authenticate_uri {
                let plain = uri.len() <= MAX_URL && !uri.contains(['"', '\\']);
                if !plain || uri.parse::<axum::http::Uri>().is_err() {
                    return Err(format!(
                        "[nova.keystone] www_authenticate_uri must be a URL, not {uri:?}"
                    ));
                }
            }
        }
        Ok(section)
    }
}

impl KeystoneSection {
    /// The client's settings, with the service token read (a secret: owner
    /// and mode checked).
    pub fn client(&self) -> Result<KeystoneConfig, String> {
        let service_token = read_secret_text(&self.service_token_file)
            .map_err(|e| e.to_string())?
            .trim()
            .to_owned();
        if service_token.is_empty() {
            return Err(format!("{}: empty", self.service_token_file.display()));
        }
        Ok(KeystoneConfig {
            url: self.url.clone(),
            service_token,
            timeout: Duration::from_millis(self.timeout_ms),
            max_ttl: Duration::from_secs(self.cache_secs),
            capacity: self.cache_entries,
            per_user: self.cache_per_user,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Section, String> {
        Section::parse(&toml::from_str(text).unwrap())
    }

    #[test]
    fn one_source_of_tokens_is_required() {
        let err = parse("").unwrap_err();
        assert!(err.contains("tokens_file or [nova.keystone]"), "{err}");
        let both = "tokens_file = \"/t\"\n[keystone]\nurl = \"http://k:5000\"\nservice_token_file = \"/s\"";
        assert!(parse(both).unwrap_err().contains("one source"));
        assert_eq!(parse("tokens_file = \"/t\"").unwrap().path, "/compute");
        assert!(parse("enabled = false").is_ok());
    }

    #[test]
    fn the_path_is_a_plain_prefix() {
        for bad in ["/", "compute", "/compute/", "/a b", "/a?b"] {
            let text = format!("tokens_file = \"/t\"\npath = \"{bad}\"");
            assert!(parse(&text).is_err(), "{bad}");
        }
        let ok = parse("tokens_file = \"/t\"\npath = \"/nova/v2-api\"").unwrap();
        assert_eq!(ok.path, "/nova/v2-api");
    }

    #[test]
    fn keystone_tells_callers_only_a_url_it_is_given() {
        let keystone = |extra: &str| {
            parse(&format!(
                "[keystone]\nurl = \"http://10.0.0.5:5000\"\nservice_token_file = \"/s\"\n{extra}"
            ))
        };
        assert_eq!(
            keystone("").unwrap().keystone.unwrap().www_authenticate_uri,
            None
        );
        let public = keystone("www_authenticate_uri = \"https://id.example/v3\"").unwrap();
        assert!(public.keystone.unwrap().www_authenticate_uri.is_some());
        assert!(keystone("www_authenticate_uri = \"https://id\\\"x\"").is_err());
    }

    #[test]
    fn unknown_keys_and_relative_urls_are_refused() {
        assert!(parse("tokens_file = \"/t\"\ntoken_file = \"/t\"").is_err());
        assert!(parse("tokens_file = \"/t\"\npublic_url = \"/compute\"").is_err());
        assert!(parse("tokens_file = \"/t\"\npublic_url = \"http://h:1/compute\"").is_ok());
    }
}
