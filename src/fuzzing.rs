//! The entry points of the coverage-guided fuzz targets in `fuzz/` (one
//! function each, taking the fuzzer's bytes), kept in the crate so that the
//! targets need nothing else of it to be public. Each runs every parser of
//! one kind of untrusted input; a parser may refuse anything, but must not
//! panic, and where a target checks more (the RFB stream cut into reads two
//! ways, a decoded screen's size), it says so.
//!
//! `cargo test --lib` replays every seed of `fuzz/corpus/<target>/` and every
//! crash the fuzzers found (`fuzz/regressions/<target>/`) through these
//! functions, so a fixed crash stays fixed without the fuzzer.

use std::sync::OnceLock;

use crate::api::fuzzing as api;
use crate::capture::{decode, Limits};
use crate::diagnose::Rules;

/// A target's entry: the fuzzer's bytes in, nothing out but a panic.
pub type Target = fn(&[u8]);

/// Every target: its name (its folder under `fuzz/corpus`) and its entry.
pub const TARGETS: &[(&str, Target)] = &[
    ("alibaba", alibaba),
    ("aws", aws),
    ("huawei", huawei),
    ("marketplace", marketplace),
    ("nova", nova),
    ("oracle", oracle),
    ("native", native),
    ("rfb", rfb),
    ("screenshot", screenshot),
    ("config", config),
    ("credentials", credentials),
    ("console", console),
];

/// One request to the Alibaba dialect (see `api::fuzzing` for the format).
pub fn alibaba(data: &[u8]) {
    api::alibaba(data);
}

pub fn aws(data: &[u8]) {
    api::aws(data);
}

pub fn huawei(data: &[u8]) {
    api::huawei(data);
}

pub fn marketplace(data: &[u8]) {
    api::marketplace(data);
}

pub fn nova(data: &[u8]) {
    api::nova(data);
}

pub fn oracle(data: &[u8]) {
    api::oracle(data);
}

/// The native API and the live page (`/v1`, `/ui`).
pub fn native(data: &[u8]) {
    api::native(data);
}

/// A VNC server's stream (see `hypervisor::mirror::fuzz`).
pub fn rfb(data: &[u8]) {
    crate::hypervisor::mirror::fuzz::stream(data);
}

/// A screenshot payload from libvirt, PNG or PPM, under the daemon's limits.
/// A screen that decodes must hold exactly its size in pixels: the encoders
/// trust that.
pub fn screenshot(data: &[u8]) {
    if let Ok((_, frame)) = decode(data.to_vec(), "image/png", &Limits::default()) {
        let expected = frame.width * frame.height * frame.layout.bytes_per_pixel();
        assert_eq!(frame.pixels().len(), expected, "a frame of the wrong size");
    }
}

/// `vmshot.toml` with every dialect's section, or an admin's `rules.toml`.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    api::config(text);
    let _ = Rules::parse(text);
}

/// A key file, the users file or a token file.
pub fn credentials(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        api::credentials(text);
    }
}

/// A serial log as the dialects and the diagnosis read it: without its
/// escape sequences, its last lines, and the built-in rules matched against
/// it as serial text and as a screen's OCR.
pub fn console(data: &[u8]) {
    static RULES: OnceLock<Rules> = OnceLock::new();
    let rules = RULES.get_or_init(Rules::built_in);
    let Some((&n, log)) = data.split_first() else {
        return;
    };
    let clean = crate::serial::without_escapes(log);
    assert!(clean.len() <= log.len(), "stripping escapes grew the text");
    let tail = crate::serial::last_lines(&clean, usize::from(n));
    let text = String::from_utf8_lossy(tail);
    let _ = rules.first_hit(&text, &text);
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use proptest::prelude::*;
    use proptest::sample::Index;

    use super::*;

    /// Every seed, with the target it is for.
    fn seeds() -> &'static [(Target, Vec<u8>)] {
        static SEEDS: OnceLock<Vec<(Target, Vec<u8>)>> = OnceLock::new();
        SEEDS.get_or_init(|| {
            let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
            let mut seeds = Vec::new();
            for (name, target) in TARGETS {
                for file in std::fs::read_dir(corpus.join(name)).unwrap() {
                    seeds.push((*target, std::fs::read(file.unwrap().path()).unwrap()));
                }
            }
            seeds
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(600))]

        /// The fuzzers' work in miniature, in every test run: seeds with a
        /// few bytes replaced, inserted or removed, through their targets.
        #[test]
        fn mutated_seeds_run_clean(
            seed in any::<Index>(),
            edits in proptest::collection::vec((any::<Index>(), any::<u8>(), 0..3u8), 1..6),
        ) {
            let (target, data) = &seeds()[seed.index(seeds().len())];
            let mut data = data.clone();
            for (at, byte, how) in edits {
                let i = at.index(data.len() + 1);
                match how {
                    0 if i < data.len() => data[i] = byte,
                    1 if i < data.len() => drop(data.remove(i)),
                    _ => data.insert(i, byte),
                }
            }
            target(&data);
        }

        /// And plain random bytes, for every target.
        #[test]
        fn any_bytes_run_clean(
            target in any::<Index>(),
            data in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            (TARGETS[target.index(TARGETS.len())].1)(&data);
        }
    }

    /// Every seed and every regression of every target, through the target.
    #[test]
    fn every_kept_input_runs_clean() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut ran = 0;
        for (name, target) in TARGETS {
            for kind in ["corpus", "regressions"] {
                let Ok(dir) = std::fs::read_dir(root.join(kind).join(name)) else {
                    assert_ne!(kind, "corpus", "{name} has no seed corpus");
                    continue;
                };
                for file in dir {
                    let path = file.unwrap().path();
                    let data = std::fs::read(&path).unwrap();
                    let run = std::panic::catch_unwind(|| target(&data));
                    assert!(run.is_ok(), "{} fails {name}", path.display());
                    ran += 1;
                }
            }
        }
        assert!(ran >= TARGETS.len(), "only {ran} inputs");
    }
}
