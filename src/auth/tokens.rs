//! Static tokens from a secret file, the one form the Nova, Huawei and
//! Marketplace dialects share:
//!
//! ```toml
//! [[token]]
//! id = "…"                 # at least 16 characters
//! user_id = "…"
//! project_id = "…"         # the tenant it acts in (a dialect may require it)
//! roles = ["member"]       # "admin" sees every domain on the host
//! expires = "2027-01-01T00:00:00Z"   # optional, RFC 3339
//! ```
//!
//! Tokens are kept and looked up by their SHA-256 only, so neither memory
//! nor a lookup's timing holds a usable token.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::config::read_secret_text;
use crate::service::Principal;

/// What one dialect asks of its token file.
#[derive(Debug, Clone, Copy)]
pub struct TokenRules {
    /// Longer ids are refused in the file and unread at lookup.
    pub max_len: usize,
    /// Whether every token must name its project.
    pub project_required: bool,
    /// The roles a token may carry; `None` takes any.
    pub roles: Option<&'static [&'static str]>,
}

/// Who a token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHolder {
    pub user_id: String,
    /// Always `Some` under `project_required`.
    pub project_id: Option<String>,
    pub roles: BTreeSet<String>,
    pub expires_at: Option<OffsetDateTime>,
}

impl TokenHolder {
    /// The caller, to `dialect`: bound to the token's project, if it names one.
    pub fn principal(&self, dialect: &'static str) -> Principal {
        Principal {
            dialect,
            id: self.user_id.clone(),
            project: self.project_id.clone(),
            roles: self.roles.clone(),
            allow: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not valid")]
    Invalid,
    #[error("the token has expired")]
    Expired,
}

pub struct StaticTokens {
    max_len: usize,
    by_digest: HashMap<[u8; 32], TokenHolder>,
}

/// Says how many, never which.
impl std::fmt::Debug for StaticTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StaticTokens({})", self.by_digest.len())
    }
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
    user_id: String,
    project_id: Option<String>,
    #[serde(default)]
    roles: BTreeSet<String>,
    expires: Option<String>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl StaticTokens {
    pub fn load(path: &Path, rules: TokenRules) -> Result<Self, String> {
        // Tokens are secrets: the same ownership and mode checks as key files.
        let text = read_secret_text(path).map_err(|e| e.to_string())?;
        Self::parse(&text, rules).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str, rules: TokenRules) -> Result<Self, String> {
        let file: File = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        let mut by_digest = HashMap::new();
        for (i, t) in file.token.into_iter().enumerate() {
            let n = i + 1;
            if t.id.len() < 16 || t.id.len() > rules.max_len {
                return Err(format!(
                    "token {n}: an id of 16 to {} characters",
                    rules.max_len
                ));
            }
            if t.user_id.is_empty() {
                return Err(format!("token {n}: user_id may not be empty"));
            }
            match t.project_id.as_deref() {
                Some("") => return Err(format!("token {n}: project_id may not be empty")),
                None if rules.project_required => {
                    return Err(format!("token {n}: a project_id is needed"))
                }
                _ => {}
            }
            if let Some(known) = rules.roles {
                if let Some(role) = t.roles.iter().find(|r| !known.contains(&r.as_str())) {
                    return Err(format!(
                        "token {n}: unknown role '{role}' ({})",
                        known.join(", ")
                    ));
                }
            }
            let expires_at = t
                .expires
                .map(|e| {
                    OffsetDateTime::parse(&e, &time::format_description::well_known::Rfc3339)
                        .map_err(|err| format!("token {n}: expires '{e}': {err}"))
                })
                .transpose()?;
            let holder = TokenHolder {
                user_id: t.user_id,
                project_id: t.project_id,
                roles: t.roles,
                expires_at,
            };
            if by_digest.insert(digest(&t.id), holder).is_some() {
                return Err(format!("token {n}: the same id twice"));
            }
        }
        Ok(Self {
            max_len: rules.max_len,
            by_digest,
        })
    }

    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// Who `token` stands for, unless it is unknown or past its expiry.
    pub fn holder(&self, token: &str) -> Result<&TokenHolder, TokenError> {
        if token.len() > self.max_len {
            return Err(TokenError::Invalid);
        }
        let holder = self
            .by_digest
            .get(&digest(token))
            .ok_or(TokenError::Invalid)?;
        if holder
            .expires_at
            .is_some_and(|t| t <= OffsetDateTime::now_utc())
        {
            return Err(TokenError::Expired);
        }
        Ok(holder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: TokenRules = TokenRules {
        max_len: 64,
        project_required: true,
        roles: Some(&["admin", "member"]),
    };

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
    fn tokens_name_their_holder_and_expire() {
        let tokens = StaticTokens::parse(FILE, RULES).unwrap();
        assert_eq!(tokens.len(), 2);
        let who = tokens.holder("tok-aaaaaaaaaaaaaaaa").unwrap();
        assert_eq!(
            (who.user_id.as_str(), who.project_id.as_deref()),
            ("u1", Some("p1"))
        );
        assert_eq!(
            tokens.holder("tok-expired-xxxxxxxx"),
            Err(TokenError::Expired)
        );
        assert_eq!(tokens.holder("nope"), Err(TokenError::Invalid));
        assert_eq!(tokens.holder(&"x".repeat(65)), Err(TokenError::Invalid));
        assert!(!format!("{tokens:?}").contains("tok-"));
    }

    #[test]
    fn bad_files_are_refused() {
        let refused = |text: &str, rules: TokenRules| StaticTokens::parse(text, rules).unwrap_err();
        let one = |rest: &str| format!("[[token]]\nid = \"tok-aaaaaaaaaaaaaaaa\"\n{rest}");
        assert!(refused(
            "[[token]]\nid = \"short\"\nuser_id = \"u\"\nproject_id = \"p\"",
            RULES
        )
        .contains("16 to 64"));
        assert!(refused(&one("user_id = \"u\"\nproject_id = \"\""), RULES).contains("empty"));
        assert!(refused(&one("user_id = \"u\""), RULES).contains("project_id is needed"));
        assert!(refused(
            &one("user_id = \"u\"\nproject_id = \"p\"\nroles = [\"root\"]"),
            RULES
        )
        .contains("unknown role 'root' (admin, member)"));
        assert!(
            refused(&one("user_id = \"u\"\nproject_id = \"p\"\nx = 1"), RULES)
                .contains("unknown field")
        );
        let twice = one("user_id = \"u\"\nproject_id = \"p\"\n").repeat(2);
        assert!(refused(&twice, RULES).contains("twice"));

        let open = TokenRules {
            project_required: false,
            roles: None,
            ..RULES
        };
        let admin =
            StaticTokens::parse(&one("user_id = \"u\"\nroles = [\"admin\"]"), open).unwrap();
        assert_eq!(
            admin.holder("tok-aaaaaaaaaaaaaaaa").unwrap().project_id,
            None
        );
    }
}
