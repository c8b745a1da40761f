//! Matching a rule's phrase against a line of screen or serial text. Both are
//! folded the same way: lowercase, runs of whitespace as one space, and on the
//! screen the characters OCR confuses (`0`/`o`, `1`/`l`/`i`/`|`, quotes) as
//! one. A screen phrase may then differ from the line by one edit in eight
//! characters (OCR's slips); a serial phrase must appear as it is.

/// Folds `text` for matching; `ocr` adds the screen's confusions.
pub(crate) fn fold(text: &str, ocr: bool) -> Vec<char> {
    let mut out = Vec::with_capacity(text.len());
    let mut space = true;
    for c in text.chars() {
        if c.is_whitespace() || c.is_control() {
            if !space {
                out.push(' ');
            }
            space = true;
            continue;
        }
        space = false;
        for c in c.to_lowercase() {
            out.push(if ocr { ocr_fold(c) } else { c });
        }
    }
    if out.last() == Some(&' ') {
        out.pop();
    }
    out
}

fn ocr_fold(c: char) -> char {
    match c {
        '0' => 'o',
        '1' | 'i' | '|' | '!' | 'ì' | 'í' => 'l',
        '5' => 's',
        '‘' | '’' | '`' | '´' | '"' | '“' | '”' => '\'',
        '—' | '–' => '-',
        other => other,
    }
}

/// The edits a screen phrase of `len` characters may differ by.
pub(crate) fn slack(len: usize) -> usize {
    len / 8
}

/// Whether `phrase` appears in `line` with at most `k` edits (insertions,
/// deletions, substitutions): the smallest edit distance between the phrase
/// and any stretch of the line (Sellers' variant of Levenshtein's table, one
/// row at a time).
pub(crate) fn contains(line: &[char], phrase: &[char], k: usize) -> bool {
    if phrase.is_empty() {
        return true;
    }
    if k == 0 {
        return line.windows(phrase.len()).any(|w| w == phrase);
    }
    if line.len() + k < phrase.len() {
        return false;
    }
    // column[i]: the edits to match phrase[..i] ending at the current line position.
    let mut column: Vec<usize> = (0..=phrase.len()).collect();
    if column[phrase.len()] <= k {
        return true;
    }
    for &c in line {
        let mut diagonal = column[0];
        // A match may start anywhere in the line: free at row 0.
        column[0] = 0;
        for i in 1..=phrase.len() {
            let substitute = diagonal + usize::from(phrase[i - 1] != c);
            diagonal = column[i];
            column[i] = substitute.min(column[i] + 1).min(column[i - 1] + 1);
        }
        if column[phrase.len()] <= k {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn screen(line: &str, phrase: &str) -> bool {
        let phrase = fold(phrase, true);
        contains(&fold(line, true), &phrase, slack(phrase.len()))
    }

    #[test]
    fn folding_collapses_space_and_case() {
        assert_eq!(
            fold("  Kernel  panic -\tnot ", false)
                .iter()
                .collect::<String>(),
            "kernel panic - not"
        );
        assert_eq!(
            fold("Boot 0K |1", true).iter().collect::<String>(),
            "boot ok ll"
        );
    }

    #[test]
    fn exact_phrases_match_anywhere_in_the_line() {
        let line = fold("[  1.23] Kernel panic - not syncing: VFS", false);
        assert!(contains(
            &line,
            &fold("kernel panic - not syncing", false),
            0
        ));
        assert!(!contains(
            &line,
            &fold("kernel panic - now syncing", false),
            0
        ));
    }

    #[test]
    fn the_screen_tolerates_ocr_slips() {
        // Two slips in 26 characters: within one in eight.
        assert!(screen(
            "Kernal panic - not synclng: VFS",
            "Kernel panic - not syncing"
        ));
        assert!(screen("No bootabIe device.", "No bootable device"));
        assert!(screen(
            "GNU GRUB version 2.06-13+deb12u2",
            "GNU GRUB  version"
        ));
        // Too many: four slips in 18 characters.
        assert!(!screen("No bxxtaxle dev", "No bootable device"));
        // Eleven characters allow one slip; under eight, none.
        assert!(screen("(initramfs) _", "(initramfs)"));
        assert!(screen("(lnitranfs)", "(initramfs)"));
        assert!(!screen("(inxtxanfs)", "(initramfs)"));
        assert!(!screen("gvub>", "grub>"));
    }

    #[test]
    fn deletions_and_insertions_count_once() {
        assert!(contains(
            &fold("abcdefgh", false),
            &fold("abdefgh", false),
            1
        ));
        assert!(contains(
            &fold("abcdefgh", false),
            &fold("abcXdefgh", false),
            1
        ));
        assert!(!contains(
            &fold("abcdefgh", false),
            &fold("abXXdefgh", false),
            1
        ));
        assert!(contains(&fold("", false), &fold("", false), 0));
        assert!(!contains(
            &fold("ab", false),
            &fold("abcdefghijkl", false),
            1
        ));
    }
}
