//! The users of the tests that log in (Oracle's `/authenticate/`, the live
//! page's `/ui/login`): one credentials file, Argon2id PHC strings as
//! `vmshot hash-password` prints them.

pub const ALICE_PASSWORD: &str = "oracle-test-password-a";
pub const BOB_PASSWORD: &str = "oracle-test-password-b";

/// Users of the tests. alice has no project (she sees every guest) and bob
/// is bound to project B; carol (project A), root (an admin) and dave (no
/// role at all) reuse alice's password, so her hash serves them too
/// (Argon2id, the crate's defaults).
pub const USERS: &str = r#"
[[user]]
name = "alice"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$MeDYB9OU3kIZyLNm6t1W3g$cHVK+3/4mOSP7oOM0qcIYOpVVmbJHxptnluQE9vv08w"
roles = ["Compute_Operations"]

[[user]]
name = "bob"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$NbALI51wM2sl7j596bu2LA$H/PuF6+NsqyE9YdRSWQqa7j5zOqVVaapZ+zLsyqX37s"
roles = ["Compute_Operations"]
project = "2c1d8f6b-5a9e-4d3f-8b72-1e4f6a8b0c22"

[[user]]
name = "carol"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$MeDYB9OU3kIZyLNm6t1W3g$cHVK+3/4mOSP7oOM0qcIYOpVVmbJHxptnluQE9vv08w"
roles = ["Compute_Operations"]
project = "1b0c7e5a-4f8d-4c2e-9a61-0d3e5f7a9b11"

[[user]]
name = "root"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$MeDYB9OU3kIZyLNm6t1W3g$cHVK+3/4mOSP7oOM0qcIYOpVVmbJHxptnluQE9vv08w"
roles = ["Compute_Operations", "admin"]
project = "2c1d8f6b-5a9e-4d3f-8b72-1e4f6a8b0c22"

[[user]]
name = "dave"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$MeDYB9OU3kIZyLNm6t1W3g$cHVK+3/4mOSP7oOM0qcIYOpVVmbJHxptnluQE9vv08w"
"#;

/// `USERS` in a file of `dir` only its owner may read, as the daemon wants.
pub fn users_file(dir: &std::path::Path) -> std::path::PathBuf {
    super::fixtures::secret_file(dir, "users.toml", USERS)
}
