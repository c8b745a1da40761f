//! Oracle's users, read from a TOML file that only vmshot may read:
//!
//! ```toml
//! [[user]]
//! name = "jack.jones@example.com"   # the {user} of /Compute-{domain}/{user}
//! password_hash = "$argon2id$v=19$m=19456,t=2,p=1$…"
//! roles = ["Compute_Operations"]    # needed for every screen capture call
//! # Optional, as for access keys: one tenant's domains, or only these instances.
//! project = "8f2c…"
//! instances = ["vm1"]
//! ```
//!
//! Passwords are kept only as Argon2id PHC strings; `hash_password` makes
//! one (`vmshot hash-password` wraps it). Checking one costs tens of
//! milliseconds of CPU by design: callers run `Users::verify` off the async
//! runtime.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand_core::OsRng;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::{read_secret_text, SecretFileError};
use crate::service::Principal;

/// The role Oracle requires for creating, reading and cancelling captures.
pub const OPERATIONS_ROLE: &str = "Compute_Operations";
/// Longest user name: Oracle's are e-mail addresses.
pub const MAX_USER: usize = 128;
/// Longest password looked at; longer ones are refused before any hashing.
pub const MAX_PASSWORD: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error(transparent)]
    File(#[from] SecretFileError),
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub password_hash: String,
    #[serde(default)]
    pub roles: BTreeSet<String>,
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub instances: Option<BTreeSet<String>>,
}

impl User {
    /// The caller this user stands for, named by its two-part name.
    pub fn principal(&self, dialect: &'static str, identity_domain: &str) -> Principal {
        Principal {
            dialect,
            id: two_part_name(identity_domain, &self.name),
            project: self.project.clone(),
            roles: self.roles.clone(),
            allow: self.instances.clone(),
        }
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles.contains(role)
    }

    /// A digest of everything this user was granted (password hash, roles,
    /// project, instances). Sessions carry it, so changing any of them in
    /// the file ends the user's sessions at their next request.
    pub fn grant_digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        };
        field(self.password_hash.as_bytes());
        for role in &self.roles {
            field(role.as_bytes());
        }
        field(b"\0project");
        field(self.project.as_deref().unwrap_or("").as_bytes());
        field(b"\0instances");
        for instance in self.instances.iter().flatten() {
            field(instance.as_bytes());
        }
        h.finalize().into()
    }
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The hash is not the password, but it is what an offline guesser wants.
        f.debug_struct("User")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .field("project", &self.project)
            .field("instances", &self.instances)
            .finish_non_exhaustive()
    }
}

/// `/Compute-{domain}/{user}`.
pub fn two_part_name(identity_domain: &str, user: &str) -> String {
    format!("/Compute-{identity_domain}/{user}")
}

/// The characters a user name may have: e-mail addresses and plain names,
/// nothing that needs escaping in a path, a cookie or a log line.
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_USER
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@+".contains(&b))
        && name != "."
        && name != ".."
}

#[derive(Debug, Default)]
pub struct Users {
    by_name: HashMap<String, User>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserFile {
    #[serde(default)]
    user: Vec<User>,
}

impl Users {
    pub fn load(path: &Path) -> Result<Self, CredentialsError> {
        let parse_error = |message: String| CredentialsError::Parse {
            path: path.display().to_string(),
            message,
        };
        let text = read_secret_text(path)?;
        Self::from_toml(&text).map_err(parse_error)
    }

    pub fn from_toml(text: &str) -> Result<Self, String> {
        let file: UserFile = toml::from_str(text).map_err(|e| e.to_string())?;
        Self::from_users(file.user)
    }

    /// Refuses bad names, duplicates and any hash that is not a well-formed
    /// Argon2id PHC string, so that a typo fails the start, not a login.
    pub fn from_users(users: Vec<User>) -> Result<Self, String> {
        let mut by_name = HashMap::new();
        for user in users {
            if !valid_user_name(&user.name) {
                return Err(format!(
                    "user name {:?} must be 1 to {MAX_USER} letters, digits or '._-@+'",
                    truncate(&user.name, 64)
                ));
            }
            check_hash(&user.password_hash)
                .map_err(|e| format!("user {}: password_hash: {e}", user.name))?;
            let name = user.name.clone();
            if by_name.insert(name.clone(), user).is_some() {
                return Err(format!("user {name} is listed twice"));
            }
        }
        Ok(Self { by_name })
    }

    pub fn get(&self, name: &str) -> Option<&User> {
        self.by_name.get(name)
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// The user, if `password` is theirs. An unknown name still costs one
    /// Argon2 check (against another user's hash, its answer ignored), so
    /// that timing does not tell which names exist.
    pub fn verify(&self, name: &str, password: &str) -> Option<&User> {
        if password.len() > MAX_PASSWORD {
            return None;
        }
        match self.by_name.get(name) {
            Some(user) => verify_password(password, &user.password_hash).then_some(user),
            None => {
                if let Some(decoy) = self.by_name.values().next() {
                    let _ = verify_password(password, &decoy.password_hash);
                }
                None
            }
        }
    }
}

fn check_hash(phc: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(phc).map_err(|e| e.to_string())?;
    if parsed.algorithm != argon2::ARGON2ID_IDENT {
        return Err(format!("must be argon2id, not {}", parsed.algorithm));
    }
    Params::try_from(&parsed).map_err(|e| e.to_string())?;
    Ok(())
}

/// Whether `password` matches the PHC string (compared in constant time by
/// the crate, with the parameters the string names).
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// An Argon2id PHC string for `password` with the crate's defaults (OWASP's
/// m=19 MiB, t=2, p=1) and a random salt: what goes in `password_hash`.
pub fn hash_password(password: &str) -> Result<String, String> {
    hash_password_with(password, Params::default())
}

pub fn hash_password_with(password: &str, params: Params) -> Result<String, String> {
    if password.is_empty() || password.len() > MAX_PASSWORD {
        return Err(format!("a password is 1 to {MAX_PASSWORD} bytes"));
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Cheap parameters: debug builds would take seconds on the defaults.
    pub fn quick_hash(password: &str) -> String {
        hash_password_with(password, Params::new(64, 1, 1, None).unwrap()).unwrap()
    }

    pub fn user(name: &str, password: &str, roles: &[&str]) -> User {
        User {
            name: name.into(),
            password_hash: quick_hash(password),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            project: None,
            instances: None,
        }
    }

    #[test]
    fn hashes_are_argon2id_phc_and_verify() {
        let phc = quick_hash("ft7)Dvjo");
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{phc}");
        assert!(verify_password("ft7)Dvjo", &phc));
        assert!(!verify_password("ft7)Dvj", &phc));
        assert_ne!(phc, quick_hash("ft7)Dvjo"), "salted");
        assert!(hash_password_with("", Params::default()).is_err());
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn the_default_hash_uses_owasp_parameters() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    }

    #[test]
    fn users_load_and_verify() {
        let text = format!(
            "[[user]]\nname = \"jack.jones@example.com\"\npassword_hash = \"{}\"\n\
             roles = [\"Compute_Operations\"]\ninstances = [\"vm1\"]\n\
             [[user]]\nname = \"monitor\"\npassword_hash = \"{}\"\nroles = [\"Compute_Monitor\"]\n",
            quick_hash("pw1"),
            quick_hash("pw2")
        );
        let users = Users::from_toml(&text).unwrap();
        assert_eq!(users.len(), 2);
        let jack = users.verify("jack.jones@example.com", "pw1").unwrap();
        assert!(jack.has_role(OPERATIONS_ROLE));
        let p = jack.principal("oracle", "acme");
        assert_eq!(p.id, "/Compute-acme/jack.jones@example.com");
        assert_eq!(p.allow, Some(["vm1".to_owned()].into()));
        assert!(users.verify("jack.jones@example.com", "pw2").is_none());
        assert!(users.verify("nobody", "pw1").is_none());
        assert!(!users.get("monitor").unwrap().has_role(OPERATIONS_ROLE));
        let long = "x".repeat(MAX_PASSWORD + 1);
        assert!(users.verify("monitor", &long).is_none());
    }

    #[test]
    fn bad_files_are_refused_at_load() {
        let ok = quick_hash("pw");
        let cases = [
            format!("[[user]]\nname = \"a b\"\npassword_hash = \"{ok}\"\n"),
            format!("[[user]]\nname = \"\"\npassword_hash = \"{ok}\"\n"),
            "[[user]]\nname = \"a\"\npassword_hash = \"plaintext\"\n".to_owned(),
            // argon2i is not argon2id.
            format!(
                "[[user]]\nname = \"a\"\npassword_hash = \"{}\"\n",
                ok.replace("argon2id", "argon2i")
            ),
            format!("[[user]]\nname = \"a\"\npassword_hash = \"{ok}\"\npasword = 1\n"),
            format!(
                "[[user]]\nname = \"a\"\npassword_hash = \"{ok}\"\n\
                 [[user]]\nname = \"a\"\npassword_hash = \"{ok}\"\n"
            ),
        ];
        for text in &cases {
            assert!(Users::from_toml(text).is_err(), "{text}");
        }
    }

    #[test]
    fn grant_digest_changes_with_every_grant() {
        let base = user("a", "pw", &["Compute_Operations"]);
        let d = base.grant_digest();
        let mut other = base.clone();
        other.roles.insert("admin".into());
        assert_ne!(other.grant_digest(), d);
        let mut other = base.clone();
        other.project = Some("p".into());
        assert_ne!(other.grant_digest(), d);
        let mut other = base.clone();
        other.instances = Some(["vm1".to_owned()].into());
        assert_ne!(other.grant_digest(), d);
        let mut other = base.clone();
        other.password_hash = quick_hash("pw");
        assert_ne!(other.grant_digest(), d);
        assert_eq!(base.clone().grant_digest(), d);
    }

    #[test]
    fn debug_output_hides_the_hash() {
        let u = user("a", "pw", &[]);
        assert!(!format!("{u:?}").contains("argon2"));
    }
}

#[cfg(test)]
mod example {
    #[test]
    fn the_example_file_loads_and_its_password_checks() {
        let users =
            super::Users::from_toml(include_str!("../../../systemd/oracle-credentials.toml"))
                .unwrap();
        let user = users
            .verify("jack.jones@example.com", "example-password-change-me")
            .unwrap();
        assert!(user.has_role(super::OPERATIONS_ROLE));
    }
}
