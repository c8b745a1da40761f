//! A row of the fault matrix (`tests/faults.rs`): what was done, what was
//! expected, what was measured and whether that met it, written as one line
//! of a Markdown table to `target/reliability/<name>.md`.
//! `scripts/reliability.sh` runs the rows and puts the lines into
//! `docs/RELIABILITY.md`. A row is written before its test asserts, so a
//! failing row still shows what it measured. The auth matrix's rows
//! (`AuthRow`) are written the same way.

use std::fmt::Display;
use std::path::PathBuf;
use std::time::Duration;

pub struct Row {
    name: &'static str,
    fault: String,
    expected: String,
    figures: Vec<String>,
}

impl Row {
    pub fn new(name: &'static str, fault: &str, expected: &str) -> Self {
        Self {
            name,
            fault: fault.to_owned(),
            expected: expected.to_owned(),
            figures: Vec::new(),
        }
    }

    /// One measured figure, e.g. `figure("lost", 0)`.
    pub fn figure(&mut self, what: &str, value: impl Display) {
        self.figures.push(format!("{what} {value}"));
    }

    /// Writes the row with its verdict; returns `met` for the test to assert.
    pub fn write(&self, met: bool) -> bool {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/reliability");
        std::fs::create_dir_all(&dir).unwrap();
        let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
        let line = format!(
            "| {} | {} | {} | {} |\n",
            cell(&self.fault),
            cell(&self.expected),
            cell(&self.figures.join("; ")),
            if met { "yes" } else { "**no**" }
        );
        std::fs::write(dir.join(format!("{}.md", self.name)), &line).unwrap();
        eprintln!("fault matrix row {}: {line}", self.name);
        met
    }
}

/// A row of the auth matrix (`tests/auth_matrix.rs`): one scheme's answer
/// to each kind of caller, in `COLUMNS`' order, written to
/// `target/reliability/auth-<scheme>.md` before the test asserts.
pub struct AuthRow {
    scheme: &'static str,
    cells: Vec<(&'static str, String)>,
    misses: Vec<String>,
}

/// The matrix's columns after the scheme's name.
pub const COLUMNS: [&str; 7] = [
    "valid",
    "wrong secret",
    "unknown key",
    "expired/skewed",
    "replayed",
    "other tenant",
    "missing role",
];

impl AuthRow {
    pub fn new(scheme: &'static str) -> Self {
        Self {
            scheme,
            cells: Vec::new(),
            misses: Vec::new(),
        }
    }

    /// A cell: the answer observed, met if it is the one `expected`.
    pub fn check(&mut self, column: &'static str, observed: impl Display, expected: impl Display) {
        let (observed, expected) = (observed.to_string(), expected.to_string());
        self.verdict(column, observed.clone(), observed == expected, &expected);
    }

    /// A cell whose answer `observed` was judged by the test (`met`).
    pub fn verdict(&mut self, column: &'static str, observed: String, met: bool, expected: &str) {
        if met {
            self.cells.push((column, format!("{observed} ✓")));
        } else {
            self.cells
                .push((column, format!("{observed} ✗ (expected {expected})")));
            self.misses
                .push(format!("{column}: {observed}, expected {expected}"));
        }
    }

    /// A column that cannot apply, and why; `holds` says whether the test
    /// saw the reason hold.
    pub fn not_applicable(&mut self, column: &'static str, reason: &str, holds: bool) {
        let text = format!("n/a — {reason}");
        if holds {
            self.cells.push((column, text));
        } else {
            self.cells
                .push((column, format!("{text} ✗ (did not hold)")));
            self.misses
                .push(format!("{column}: the n/a reason did not hold"));
        }
    }

    /// Writes the row, then fails the test on any cell that missed.
    pub fn finish(self) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/reliability");
        std::fs::create_dir_all(&dir).unwrap();
        let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
        let mut line = format!("| {} |", self.scheme);
        for column in COLUMNS {
            let text = self
                .cells
                .iter()
                .find(|(c, _)| *c == column)
                .map_or("not checked", |(_, t)| t.as_str());
            line += &format!(" {} |", cell(text));
        }
        line.push('\n');
        std::fs::write(dir.join(format!("auth-{}.md", self.scheme)), &line).unwrap();
        eprintln!("auth matrix row {}: {line}", self.scheme);
        assert!(
            self.misses.is_empty() && self.cells.len() == COLUMNS.len(),
            "{}: {:#?}",
            self.scheme,
            self.misses
        );
    }
}

/// Milliseconds with one decimal, for a row's figures.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The `p`-th percentile (0–100) of `samples` (sorted here), nearest rank.
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort();
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

/// A small seeded generator (xorshift64*): the faults' moments are random,
/// and the seed is printed so a failing run can be replayed with
/// `VMSHOT_FAULT_SEED`.
pub struct Rng(u64);

impl Rng {
    pub fn seeded(what: &str) -> Self {
        let seed = std::env::var("VMSHOT_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("{what}: VMSHOT_FAULT_SEED={seed}");
        Self(seed | 1)
    }

    /// A generator of its own for a worker thread, drawn from this one.
    pub fn fork(&mut self) -> Self {
        Self(self.next() | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A duration in `[low, high)`.
    pub fn between(&mut self, low: Duration, high: Duration) -> Duration {
        let span = (high - low).as_micros() as u64;
        low + Duration::from_micros(self.next() % span.max(1))
    }
}
