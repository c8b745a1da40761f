//! Serial output as text: its last lines, and without the terminal's
//! escape sequences (colours, cursor moves) that a boot log is full of.

/// The last `n` lines of `bytes`; a final newline ends the last line rather
/// than starting an empty one.
pub fn last_lines(bytes: &[u8], n: usize) -> &[u8] {
    if n == 0 {
        return &bytes[bytes.len()..];
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    match body
        .iter()
        .rev()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(n - 1)
    {
        Some((from_end, _)) => &bytes[body.len() - from_end..],
        None => bytes,
    }
}

const ESC: u8 = 0x1b;
const BEL: u8 = 0x07;

/// `bytes` without escape sequences (CSI `ESC [ … final`, OSC `ESC ] … BEL`
/// or `ESC \`, and two-byte `ESC x`) and without control characters other
/// than tab and newline (so `\r\n` becomes `\n`).
pub fn without_escapes(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        i += 1;
        match b {
            ESC => match bytes.get(i) {
                Some(b'[') => {
                    // Parameters and intermediates, up to a final byte @..~.
                    i += 1;
                    while i < bytes.len() && !(0x40..=0x7e).contains(&bytes[i]) {
                        i += 1;
                    }
                    i += 1;
                }
                Some(b']') => {
                    i += 1;
                    while i < bytes.len() {
                        if bytes[i] == BEL {
                            i += 1;
                            break;
                        }
                        if bytes[i] == ESC && bytes.get(i + 1) == Some(&b'\\') {
                            i += 2;
                            break;
                        }
                        i += 1;
                    }
                }
                Some(_) => i += 1,
                None => {}
            },
            b'\t' | b'\n' => out.push(b),
            0x00..=0x1f | 0x7f => {}
            _ => out.push(b),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_lines_count_a_final_newline_as_an_end() {
        assert_eq!(last_lines(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(last_lines(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(last_lines(b"a\nb\nc\n", 3), b"a\nb\nc\n");
        assert_eq!(last_lines(b"a\nb\nc\n", 9), b"a\nb\nc\n");
        assert_eq!(last_lines(b"a\nb\n", 0), b"");
        assert_eq!(last_lines(b"", 5), b"");
        assert_eq!(last_lines(b"\n\n", 1), b"\n");
    }

    #[test]
    fn escapes_and_controls_go_text_stays() {
        let boot =
            b"\x1b[0;32m  OK  \x1b[0m] Started \x1b]0;title\x07Journal.\r\n\x1bcReset\tdone\x7f\n";
        assert_eq!(
            without_escapes(boot),
            b"  OK  ] Started Journal.\nReset\tdone\n".to_vec()
        );
        // Cut off mid-sequence: nothing of it is kept, nothing panics.
        assert_eq!(without_escapes(b"abc\x1b[12"), b"abc".to_vec());
        assert_eq!(without_escapes(b"abc\x1b"), b"abc".to_vec());
        assert_eq!(without_escapes(b"\x1b]unterminated"), b"".to_vec());
        assert_eq!(without_escapes("é\n".as_bytes()), "é\n".as_bytes().to_vec());
    }
}
