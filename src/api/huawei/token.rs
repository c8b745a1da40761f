//! `X-Auth-Token` from a static file, for callers that hold an IAM token
//! rather than an AK/SK (the SDK itself always signs):
//!
//! ```toml
//! [[token]]
//! id = "…"                 # at least 16 characters
//! user_id = "…"
//! project_id = "…"         # the tenant it acts in
//! roles = ["member"]       # "admin" sees every domain on the host
//! expires = "2027-01-01T00:00:00Z"   # optional
//! ```
//!
//! The same form as the Nova dialect's token file. Tokens are kept and
//! looked up by their SHA-256 only, so neither memory nor a lookup's timing
//! holds a usable token.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::config::read_secret_text;
use crate::service::Principal;

/// IAM tokens are a few KB; anything past this is refused unread.
pub const MAX_TOKEN: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not valid")]
    Invalid,
    #[error("the token has expired")]
    Expired,
}

struct Entry {
    user_id: String,
    project_id: String,
    roles: BTreeSet<String>,
    expires_at: Option<OffsetDateTime>,
}

pub struct Tokens {
    by_digest: HashMap<[u8; 32], Entry>,
}

/// Says how many, never which.
impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({})", self.by_digest.len())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    token: Vec<FileEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    id: String,
    user_id: String,
    project_id: String,
    #[serde(default)]
    roles: Vec<String>,
    expires: Option<String>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    pub fn load(path: &Path) -> Result<Self, String> {
        // Tokens are secrets: the same ownership and mode checks as key files.
        let text = read_secret_text(path).map_err(|e| e.to_string())?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let file: File = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        let mut by_digest = HashMap::new();
        for (i, t) in file.token.into_iter().enumerate() {
            let n = i + 1;
            if t.id.len() < 16 || t.id.len() > MAX_TOKEN {
                return Err(format!("token {n}: an id of 16 to {MAX_TOKEN} characters"));
            }
            if t.project_id.is_empty() || t.user_id.is_empty() {
                return Err(format!(
                    "token {n}: user_id and project_id may not be empty"
                ));
            }
            let expires_at = t
                .expires
                .map(|e| {
                    OffsetDateTime::parse(&e, &time::format_description::well_known::Rfc3339)
                        .map_err(|err| format!("token {n}: expires '{e}': {err}"))
                })
                .transpose()?;
            let entry = Entry {
                user_id: t.user_id,
                project_id: t.project_id,
                roles: t.roles.into_iter().collect(),
                expires_at,
            };
            if by_digest.insert(digest(&t.id), entry).is_some() {
                return Err(format!("token {n}: the same id twice"));
            }
        }
        Ok(Self { by_digest })
    }

    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// The caller `token` stands for, to `dialect`: bound to its project.
    pub fn validate(&self, dialect: &'static str, token: &str) -> Result<Principal, TokenError> {
        if token.len() > MAX_TOKEN {
            return Err(TokenError::Invalid);
        }
        let entry = self
            .by_digest
            .get(&digest(token))
            .ok_or(TokenError::Invalid)?;
        if entry
            .expires_at
            .is_some_and(|t| t <= OffsetDateTime::now_utc())
        {
            return Err(TokenError::Expired);
        }
        Ok(Principal {
            dialect,
            id: entry.user_id.clone(),
            project: Some(entry.project_id.clone()),
            roles: entry.roles.clone(),
            allow: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[[token]]
id = "tok-aaaaaaaaaaaaaaaa"
user_id = "u1"
project_id = "p1"
roles = ["member"]

[[token]]
id = "tok-expired-xxxxxxxx"
user_id = "u2"
project_id = "p1"
expires = "2020-01-01T00:00:00Z"
"#;

    #[test]
    fn tokens_name_their_project_and_expire() {
        let tokens = Tokens::parse(FILE).unwrap();
        assert_eq!(tokens.len(), 2);
        let who = tokens.validate("huawei", "tok-aaaaaaaaaaaaaaaa").unwrap();
        assert_eq!(
            (who.id.as_str(), who.project.as_deref()),
            ("u1", Some("p1"))
        );
        assert_eq!(
            tokens.validate("huawei", "tok-expired-xxxxxxxx"),
            Err(TokenError::Expired)
        );
        assert_eq!(tokens.validate("huawei", "nope"), Err(TokenError::Invalid));
        assert!(!format!("{tokens:?}").contains("tok-"));
    }

    #[test]
    fn bad_files_are_refused() {
        assert!(
            Tokens::parse("[[token]]\nid = \"short\"\nuser_id = \"u\"\nproject_id = \"p\"")
                .is_err()
        );
        assert!(Tokens::parse(
            "[[token]]\nid = \"tok-aaaaaaaaaaaaaaaa\"\nuser_id = \"u\"\nproject_id = \"\""
        )
        .is_err());
        let twice = format!(
            "{}\n{}",
            &FILE[..FILE.find("[[token]]\nid = \"tok-expired").unwrap()],
            &FILE[..FILE.find("[[token]]\nid = \"tok-expired").unwrap()]
        );
        assert!(Tokens::parse(&twice).unwrap_err().contains("twice"));
    }

    #[test]
    fn the_documented_example_parses() {
        Tokens::parse(include_str!("../../../systemd/huawei-tokens.toml")).unwrap();
    }
}
