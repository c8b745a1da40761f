//! Bearer tokens from a secret file: `[[token]] id = "…"` (at least 16
//! characters), `user`, optional `project` (the tenant whose uploads it
//! sees) and `roles` (`admin` sees every upload). Kept by SHA-256 only, so
//! neither memory nor a lookup's timing holds a usable token.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::read_secret_text;
use crate::service::Principal;

/// Longer bearer tokens are refused before any lookup.
pub const MAX_TOKEN: usize = 512;

pub struct Tokens {
    by_digest: HashMap<[u8; 32], Principal>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    token: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    id: String,
    user: String,
    project: Option<String>,
    #[serde(default)]
    roles: BTreeSet<String>,
}

/// Says how many, never which.
impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({})", self.by_digest.len())
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = read_secret_text(path).map_err(|e| e.to_string())?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let file: File = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        let mut by_digest = HashMap::new();
        for (i, t) in file.token.into_iter().enumerate() {
            if t.id.len() < 16 || t.id.len() > MAX_TOKEN {
                return Err(format!(
                    "token {}: an id of 16 to {MAX_TOKEN} characters",
                    i + 1
                ));
            }
            if t.user.is_empty() {
                return Err(format!("token {}: a user is needed", i + 1));
            }
            let principal = Principal {
                project: t.project,
                roles: t.roles,
                ..Principal::unlimited(super::NAME, t.user)
            };
            if by_digest.insert(digest(&t.id), principal).is_some() {
                return Err(format!("token {}: the same id twice", i + 1));
            }
        }
        Ok(Self { by_digest })
    }

    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// Who `Authorization: Bearer <token>` is, if anyone.
    pub fn principal(&self, authorization: Option<&str>) -> Option<Principal> {
        let token = authorization?.strip_prefix("Bearer ")?.trim();
        if token.is_empty() || token.len() > MAX_TOKEN {
            return None;
        }
        self.by_digest.get(&digest(token)).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        let tokens = Tokens::parse(include_str!("../../../systemd/marketplace-tokens.toml"));
        assert_eq!(tokens.unwrap().len(), 1);
    }

    #[test]
    fn bearer_tokens_name_their_principal() {
        let tokens = Tokens::parse(
            "[[token]]\nid = \"0123456789abcdef\"\nuser = \"p@x\"\nproject = \"p1\"\n",
        )
        .unwrap();
        let who = tokens.principal(Some("Bearer 0123456789abcdef")).unwrap();
        assert_eq!(
            (who.id.as_str(), who.project.as_deref()),
            ("p@x", Some("p1"))
        );
        assert!(tokens.principal(Some("Bearer 0123456789abcdeX")).is_none());
        assert!(tokens.principal(Some("Basic 0123456789abcdef")).is_none());
        assert!(tokens.principal(None).is_none());
        assert!(Tokens::parse("[[token]]\nid = \"short\"\nuser = \"u\"\n").is_err());
        assert!(
            Tokens::parse("[[token]]\nid = \"0123456789abcdef\"\nuser = \"u\"\nx = 1\n").is_err()
        );
    }
}
