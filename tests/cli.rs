//! Commands of the real `vmshot` binary beside `grab` (tests/grab.rs):
//! `hash-password` makes the Argon2id PHC string of a password read on
//! stdin, which the daemon's Oracle dialect then accepts.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

use common::daemon::Daemon;
use common::host::LibvirtdLock;
use common::http::send;

/// `vmshot hash-password ARGS` with `stdin` piped in.
fn hash_password(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmshot"))
        .arg("hash-password")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vmshot runs");
    // A command that refused its arguments may be gone before reading.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

const MEDIA: &str = "application/oracle-compute-v3+json";

fn authenticate(d: &Daemon, user: &str, password: &str) -> u16 {
    let body = serde_json::json!({"user": user, "password": password}).to_string();
    let headers = [("Accept", MEDIA), ("Content-Type", MEDIA)];
    send(d.addr, "POST", "/authenticate/", &headers, body.as_bytes()).status
}

#[test]
fn hash_password_prints_a_hash_the_oracle_dialect_accepts() {
    let password = "correct horse battery staple";
    let out = hash_password(&[], format!("{password}\n").as_bytes());
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "one line: {text:?}");
    let phc = text.trim_end().to_owned();
    // Argon2id with the crate's defaults (OWASP's m=19 MiB, t=2, p=1).
    assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    // A fresh salt each time: the same password never gives the same string.
    let again = hash_password(&[], password.as_bytes());
    assert!(again.status.success(), "{again:?}");
    let again = String::from_utf8(again.stdout).unwrap();
    assert_ne!(again.trim_end(), phc);

    // Nothing to hash, or the password as an argument (where `ps` shows
    // it): refused, and nothing printed.
    for (args, stdin) in [
        (&[][..], &b""[..]),
        (&[], b"\n"),
        (&["hunter2"], b"hunter2\n"),
    ] {
        let out = hash_password(args, stdin);
        assert_eq!(out.status.code(), Some(2), "{args:?} {stdin:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");
    }
    let empty = hash_password(&[], b"\n");
    let told = String::from_utf8_lossy(&empty.stderr);
    assert!(told.contains("no password on stdin"), "{told}");

    // The daemon checks the string with its own code: the password opens a
    // session, another does not.
    let _lock = LibvirtdLock::shared();
    let dir = common::fixtures::tempdir();
    let users = dir.join("oracle-users.toml");
    std::fs::write(
        &users,
        format!("[[user]]\nname = \"ops\"\npassword_hash = \"{phc}\"\nroles = [\"Compute_Operations\"]\n"),
    )
    .unwrap();
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o600)).unwrap();
    let d = Daemon::start(
        "",
        &format!(
            "[oracle]\ncredentials_file = \"{}\"\nidentity_domain = \"acme\"\n",
            users.display()
        ),
    );
    assert_eq!(authenticate(&d, "/Compute-acme/ops", password), 204);
    assert_eq!(authenticate(&d, "/Compute-acme/ops", "correct horse"), 401);
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}
