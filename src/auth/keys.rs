//! Access keys, read from a TOML file that only vmshot may read:
//!
//! ```toml
//! [[key]]
//! id = "LTAI5tExampleKeyId"
//! secret = "…"
//! # Optional: this key sees only these instances (instance ids, domain
//! # names or UUIDs); others look nonexistent.
//! instances = ["i-web1", "i-db1"]
//! # Optional: only the domains of this tenant (Nova's project UUID in the
//! # domain's metadata); roles = ["admin"] sees every domain.
//! project = "8f2c…"
//! roles = []
//! ```

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use serde::Deserialize;

use crate::config::{read_secret_text, SecretFileError};
use crate::service::Principal;

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error(transparent)]
    File(#[from] SecretFileError),
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKey {
    pub id: String,
    pub secret: String,
    #[serde(default)]
    pub instances: Option<BTreeSet<String>>,
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub roles: BTreeSet<String>,
}

impl AccessKey {
    /// The caller this key stands for, to `dialect`.
    pub fn principal(&self, dialect: &'static str) -> Principal {
        Principal {
            dialect,
            id: self.id.clone(),
            project: self.project.clone(),
            roles: self.roles.clone(),
            allow: self.instances.clone(),
        }
    }
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret, not even in a debug log.
        f.debug_struct("AccessKey")
            .field("id", &self.id)
            .field("instances", &self.instances)
            .field("project", &self.project)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
pub struct KeyStore {
    keys: HashMap<String, AccessKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    #[serde(default)]
    key: Vec<AccessKey>,
}

impl KeyStore {
    pub fn load(path: &Path) -> Result<Self, KeysError> {
        let parse_error = |message: String| KeysError::Parse {
            path: path.display().to_string(),
            message,
        };
        let text = read_secret_text(path)?;
        Self::parse(&text).map_err(parse_error)
    }

    /// A key file's text (`[[key]]` tables).
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: KeyFile = toml::from_str(text).map_err(|e| e.to_string())?;
        Self::from_keys(file.key)
    }

    pub fn from_keys(keys: Vec<AccessKey>) -> Result<Self, String> {
        let mut store = Self::default();
        for key in keys {
            if key.id.is_empty() || key.secret.is_empty() {
                return Err("every key needs a non-empty id and secret".into());
            }
            let id = key.id.clone();
            if store.keys.insert(id.clone(), key).is_some() {
                return Err(format!("key {id} is listed twice"));
            }
        }
        Ok(store)
    }

    pub fn get(&self, id: &str) -> Option<&AccessKey> {
        self.keys.get(id)
    }

    /// Every key's id.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_and_limits_apply() {
        let file: KeyFile = toml::from_str(
            "[[key]]\nid = \"a\"\nsecret = \"s\"\n[[key]]\nid = \"b\"\nsecret = \"t\"\ninstances = [\"i-1\"]\n",
        )
        .unwrap();
        let store = KeyStore::from_keys(file.key).unwrap();
        assert_eq!(store.get("a").unwrap().principal("t").allow, None);
        let b = store.get("b").unwrap().principal("t");
        assert_eq!(b.allow, Some(["i-1".to_owned()].into()));
        assert_eq!((b.dialect, b.id.as_str()), ("t", "b"));
        assert!(store.get("c").is_none());
    }

    #[test]
    fn duplicates_and_empty_secrets_are_refused() {
        let key = |id: &str, secret: &str| AccessKey {
            id: id.into(),
            secret: secret.into(),
            instances: None,
            project: None,
            roles: Default::default(),
        };
        assert!(KeyStore::from_keys(vec![key("a", "s"), key("a", "t")]).is_err());
        assert!(KeyStore::from_keys(vec![key("a", "")]).is_err());
    }

    #[test]
    fn the_documented_example_parses() {
        let file: KeyFile =
            toml::from_str(include_str!("../../systemd/alibaba-credentials.toml")).unwrap();
        let store = KeyStore::from_keys(file.key).unwrap();
        assert_eq!(store.len(), 3);
        let limited = store.get("LTAI5tExampleKeyId0002").unwrap().principal("t");
        assert!(limited.allow.is_some_and(|a| !a.contains("i-other")));
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let key = AccessKey {
            id: "id1".into(),
            secret: "hunter2".into(),
            instances: None,
            project: None,
            roles: Default::default(),
        };
        assert!(!format!("{key:?}").contains("hunter2"));
    }
}
