//! One `Range: bytes=…` span of a body of known length (RFC 9110 §14), for
//! the dialects that serve files. Several spans, another unit or a
//! malformed header are ignored (the whole body, 200), as the RFC allows; a
//! span outside the body is 416.

/// What a `Range` header asks of a body of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    /// First and last byte, inclusive.
    Bytes(u64, u64),
    /// Outside the body: 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
    /// The whole body.
    Whole,
}

impl Span {
    /// The span `header` (if any) asks of `len` bytes.
    pub fn of(header: Option<&str>, len: u64) -> Self {
        header.map_or(Self::Whole, |h| parse(h, len))
    }

    /// `Content-Range` for a 206 or 416.
    pub fn content_range(self, len: u64) -> Option<String> {
        match self {
            Self::Bytes(a, b) => Some(format!("bytes {a}-{b}/{len}")),
            Self::Unsatisfiable => Some(format!("bytes */{len}")),
            Self::Whole => None,
        }
    }
}

fn parse(header: &str, len: u64) -> Span {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Span::Whole;
    };
    if spec.contains(',') || header.len() > 64 {
        return Span::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Span::Whole;
    };
    let number = |s: &str| {
        let s = s.trim();
        (!s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    let end = len.saturating_sub(1);
    let asked = match (first.trim().is_empty(), last.trim().is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match number(last) {
            Some(0) => return Span::Unsatisfiable,
            Some(n) => Some((len.saturating_sub(n), end)),
            None => None,
        },
        (false, true) => number(first).map(|a| (a, end)),
        (false, false) => match (number(first), number(last)) {
            (Some(a), Some(b)) if a <= b => Some((a, b.min(end))),
            _ => None,
        },
        (true, true) => None,
    };
    match asked {
        None => Span::Whole,
        Some((a, _)) if len == 0 || a >= len => Span::Unsatisfiable,
        Some((a, b)) => Span::Bytes(a, b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_span_at_a_time() {
        let of = |h: &str| Span::of(Some(h), 100);
        assert_eq!(of("bytes=0-9"), Span::Bytes(0, 9));
        assert_eq!(of("bytes=90-"), Span::Bytes(90, 99));
        assert_eq!(of("bytes=-10"), Span::Bytes(90, 99));
        assert_eq!(of("bytes=-1000"), Span::Bytes(0, 99));
        assert_eq!(of("bytes=50-500"), Span::Bytes(50, 99));
        assert_eq!(of("bytes=100-"), Span::Unsatisfiable);
        assert_eq!(of("bytes=-0"), Span::Unsatisfiable);
        assert_eq!(of("bytes=0-1,5-6"), Span::Whole);
        assert_eq!(of("items=0-1"), Span::Whole);
        assert_eq!(of("bytes=9-0"), Span::Whole);
        assert_eq!(of("bytes=+1-2"), Span::Whole);
        assert_eq!(of("bytes=99999999999999999999-"), Span::Whole);
        assert_eq!(Span::of(None, 100), Span::Whole);
        assert_eq!(Span::of(Some("bytes=0-"), 0), Span::Unsatisfiable);
        assert_eq!(
            Span::Bytes(0, 9).content_range(100).unwrap(),
            "bytes 0-9/100"
        );
        assert_eq!(
            Span::Unsatisfiable.content_range(100).unwrap(),
            "bytes */100"
        );
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Whatever the header, a span served lies inside the body, and
        /// `Content-Range` says so.
        #[test]
        fn a_span_lies_inside_the_body(
            header in "(bytes=)?[ 0-9,-]{0,24}|\\PC{0,70}",
            len in prop_oneof![Just(0u64), 1u64..1000, Just(u64::MAX)],
        ) {
            match Span::of(Some(&header), len) {
                Span::Bytes(a, b) => {
                    prop_assert!(a <= b && b < len, "{header:?} of {len}: {a}-{b}");
                    prop_assert_eq!(Span::Bytes(a, b).content_range(len), Some(format!("bytes {a}-{b}/{len}")));
                }
                Span::Unsatisfiable | Span::Whole => {}
            }
        }

        /// A span written as the RFC writes it is read back as itself.
        #[test]
        fn a_written_span_is_read_back(len in 1u64..1_000_000, a in 0u64..1_000_000, n in 1u64..1000) {
            let a = a % len;
            let b = (a + n - 1).min(len - 1);
            prop_assert_eq!(Span::of(Some(&format!("bytes={a}-{b}")), len), Span::Bytes(a, b));
            prop_assert_eq!(Span::of(Some(&format!("bytes={a}-")), len), Span::Bytes(a, len - 1));
            prop_assert_eq!(Span::of(Some(&format!("bytes=-{n}")), len), Span::Bytes(len.saturating_sub(n), len - 1));
        }
    }
}
