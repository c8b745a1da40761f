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
/// or `ESC \`, and two-byte `ESC x` with `x` printable ASCII) and without
/// control characters other than tab and newline (so `\r\n` becomes `\n`).
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
                // A two-byte escape ends in a printable ASCII byte; after
                // a lone ESC, anything else (a newline, half of a UTF-8
                // character) is text of its own.
                Some(0x20..=0x7e) => i += 1,
                Some(_) | None => {}
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

    /// Found by `props::utf8_in_utf8_out`: a lone ESC took the next byte
    /// with it, half a UTF-8 character or a line's newline.
    #[test]
    fn a_lone_escape_takes_no_text_with_it() {
        assert_eq!(without_escapes("\x1bé".as_bytes()), "é".as_bytes());
        assert_eq!(without_escapes("a\x1b𐂀".as_bytes()), "a𐂀".as_bytes());
        assert_eq!(without_escapes(b"line\x1b\nnext"), b"line\nnext");
        assert_eq!(without_escapes(b"\x1bcReset"), b"Reset");
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;

    /// Serial bytes with the pieces escape sequences are made of, often.
    fn serial() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            any::<u8>().prop_map(|b| vec![b]),
            Just(b"\x1b[".to_vec()),
            Just(b"\x1b]".to_vec()),
            Just(b"\x1b\\".to_vec()),
            Just(vec![ESC]),
            Just(vec![BEL]),
            Just("é€".as_bytes().to_vec()),
            "[ -~]{0,8}".prop_map(String::into_bytes),
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|p| p.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Never more than was given, no escape or control left but tab
        /// and newline, and a second pass changes nothing.
        #[test]
        fn stripping_only_removes(bytes in serial()) {
            let clean = without_escapes(&bytes);
            prop_assert!(clean.len() <= bytes.len());
            prop_assert!(clean.iter().all(|b| !b.is_ascii_control() || matches!(b, b'\t' | b'\n')));
            prop_assert_eq!(without_escapes(&clean), clean);
        }

        /// Text stays text: the dialects send the log as a string, and a
        /// sequence cut wrong would leave half a character behind.
        #[test]
        fn utf8_in_utf8_out(text in "(\\PC|\x1b|\x1b\\[|\x1b\\]|\x07){0,40}") {
            let clean = without_escapes(text.as_bytes());
            prop_assert!(std::str::from_utf8(&clean).is_ok(), "{:?} → {:?}", text, clean);
        }

        /// Printable text without escapes comes through whole.
        #[test]
        fn plain_text_is_kept(text in "[^\\x00-\\x1f\\x7f]{0,60}") {
            prop_assert_eq!(without_escapes(text.as_bytes()), text.as_bytes());
        }

        /// A suffix of the input with at most `n` line ends before its last line.
        #[test]
        fn last_lines_is_a_short_suffix(bytes in serial(), n in 0usize..6) {
            let tail = last_lines(&bytes, n);
            prop_assert!(bytes.ends_with(tail));
            let body = tail.strip_suffix(b"\n").unwrap_or(tail);
            prop_assert!(body.iter().filter(|b| **b == b'\n').count() < n.max(1));
        }
    }
}
