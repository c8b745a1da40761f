//! A row of the fault matrix (`tests/faults.rs`): what was done, what was
//! expected, what was measured and whether that met it, written as one line
//! of a Markdown table to `target/reliability/<name>.md`.
//! `scripts/reliability.sh` runs the rows and puts the lines into
//! `docs/RELIABILITY.md`. A row is written before its test asserts, so a
//! failing row still shows what it measured.

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
