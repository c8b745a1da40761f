//! Running the real `vmshot` binary.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::host::uri;

pub struct Run {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Run {
    /// The JSON line `grab` printed on stdout.
    pub fn json(&self) -> Value {
        let text = String::from_utf8(self.stdout.clone()).expect("UTF-8 on stdout");
        assert_eq!(text.lines().count(), 1, "one line on stdout: {text:?}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }
}

/// `vmshot ARGS...` in `cwd`, against the URI under test unless ARGS name one.
pub fn vmshot(cwd: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_vmshot"))
        .args(args)
        .current_dir(cwd)
        .env("LIBVIRT_DEFAULT_URI", uri())
        .env_remove("RUST_LOG")
        .output()
        .expect("vmshot runs");
    Run {
        code: out.status.code().expect("vmshot exits, not killed"),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
