//! The Nova dialect's section for a test daemon, with static tokens.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// One static token: id, user, project, roles.
pub struct Token<'a> {
    pub id: &'a str,
    pub user: &'a str,
    pub project: &'a str,
    pub roles: &'a [&'a str],
}

/// `[nova]` with `tokens` in a file written to `dir` (mode 0600).
pub fn section(dir: &Path, tokens: &[Token]) -> String {
    let file = dir.join("nova-tokens.toml");
    let text: String = tokens
        .iter()
        .map(|t| {
            let roles: Vec<String> = t.roles.iter().map(|r| format!("\"{r}\"")).collect();
            format!(
                "[[token]]\nid = \"{}\"\nuser_id = \"{}\"\nproject_id = \"{}\"\nroles = [{}]\n\n",
                t.id,
                t.user,
                t.project,
                roles.join(", ")
            )
        })
        .collect();
    std::fs::write(&file, text).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    format!("[nova]\ntokens_file = \"{}\"\n", file.display())
}
