//! The Nova dialect's section for a test daemon, with static tokens (the
//! token file's form, which Huawei and the Marketplace share).

use std::path::{Path, PathBuf};

/// One static token: id, user, project, roles, and when it expires (RFC 3339).
pub struct Token<'a> {
    pub id: &'a str,
    pub user: &'a str,
    pub project: &'a str,
    pub roles: &'a [&'a str],
    pub expires: Option<&'a str>,
}

/// `[nova]` with `tokens` in a file written to `dir` (mode 0600).
pub fn section(dir: &Path, tokens: &[Token]) -> String {
    let file = tokens_file(dir, "nova-tokens.toml", tokens);
    format!("[nova]\ntokens_file = \"{}\"\n", file.display())
}

/// `tokens` in `dir/name` (mode 0600).
pub fn tokens_file(dir: &Path, name: &str, tokens: &[Token]) -> PathBuf {
    let text: String = tokens
        .iter()
        .map(|t| {
            let roles: Vec<String> = t.roles.iter().map(|r| format!("\"{r}\"")).collect();
            let expires = t.expires.map(|e| format!("expires = \"{e}\"\n"));
            format!(
                "[[token]]\nid = \"{}\"\nuser_id = \"{}\"\nproject_id = \"{}\"\nroles = [{}]\n{}\n",
                t.id,
                t.user,
                t.project,
                roles.join(", "),
                expires.unwrap_or_default()
            )
        })
        .collect();
    super::fixtures::secret_file(dir, name, &text)
}
