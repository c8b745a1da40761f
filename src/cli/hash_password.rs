//! `vmshot hash-password`: the Argon2id PHC string for a `password_hash` of
//! the Oracle dialect's credentials file, made by the code the daemon checks
//! it with. The password comes on stdin, never as an argument, where `ps`
//! and shell history would show it.

use std::io::{BufRead, IsTerminal, Write};

use super::Failure;
use crate::api::oracle_credentials::{hash_password, MAX_PASSWORD};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_: Args) -> Result<(), Failure> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        // Echo stays on: a pipe is the usual source, and a prompt is enough.
        eprint!("password (one line): ");
    }
    let password = read_password(stdin.lock())?;
    let phc = hash_password(&password).map_err(Failure::internal)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{phc}")
        .and_then(|()| out.flush())
        .map_err(|e| Failure::new(10, format!("cannot write the hash: {e}")))
}

/// The first line of `input` without its line ending; an empty one, or one
/// longer than a password may be, is refused. At most one byte past the
/// limit (and the line ending) is read.
fn read_password(input: impl BufRead) -> Result<String, Failure> {
    let mut line = Vec::new();
    input
        .take(MAX_PASSWORD as u64 + 3)
        .read_until(b'\n', &mut line)
        .map_err(|e| Failure::internal(format!("cannot read the password from stdin: {e}")))?;
    for end in [b"\n".as_slice(), b"\r"] {
        if line.ends_with(end) {
            line.truncate(line.len() - end.len());
        }
    }
    if line.is_empty() {
        return Err(Failure::new(
            2,
            "no password on stdin: give it as one line, e.g. from a pipe",
        ));
    }
    if line.len() > MAX_PASSWORD {
        return Err(Failure::new(
            2,
            format!("the password is longer than {MAX_PASSWORD} bytes"),
        ));
    }
    String::from_utf8(line).map_err(|_| Failure::new(2, "the password is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_is_the_password_and_empty_or_long_ones_are_refused() {
        let read =
            |bytes: &[u8]| read_password(bytes).map_err(|f| (f.code(), f.message().to_owned()));
        assert_eq!(read(b"s3cret\n").unwrap(), "s3cret");
        assert_eq!(read(b"s3cret\r\nsecond line\n").unwrap(), "s3cret");
        assert_eq!(
            read(b" spaced  ").unwrap(),
            " spaced  ",
            "no end of line, no trim"
        );
        for empty in [&b""[..], b"\n", b"\r\n"] {
            let (code, message) = read(empty).unwrap_err();
            assert_eq!(code, 2);
            assert!(message.contains("no password"), "{message}");
        }
        let mut long = vec![b'x'; MAX_PASSWORD];
        assert_eq!(read(&long).unwrap().len(), MAX_PASSWORD);
        long.extend_from_slice(b"xx\n");
        assert!(read(&long).unwrap_err().1.contains("longer than"));
        assert!(read(b"\xff\xfe\n").unwrap_err().1.contains("UTF-8"));
    }
}
