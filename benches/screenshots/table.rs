//! The result: one table, a row per measure, the anchor's figure, vmshot's
//! (one column per vmshot variant) and their ratio, checked against issue 4's
//! targets; rendered as Markdown into docs/BENCHMARKS.md between markers.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

pub const BEGIN: &str = "<!-- bench:begin -->";
pub const END: &str = "<!-- bench:end -->";

/// What a row must reach. Ratios are always vmshot / anchor.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    RatioAtMost(f64),
    RatioAtLeast(f64),
    AtMost(f64, &'static str),
}

impl Target {
    fn text(self) -> String {
        match self {
            Self::RatioAtMost(r) => format!("≤ {r:.2}×"),
            Self::RatioAtLeast(r) => format!("≥ {r:.2}×"),
            Self::AtMost(0.0, _) => "0".into(),
            Self::AtMost(v, unit) => format!("≤ {v} {unit}").trim_end().to_owned(),
        }
    }

    fn met(self, value: f64, ratio: Option<f64>) -> Option<bool> {
        match self {
            Self::RatioAtMost(r) => ratio.map(|x| x <= r),
            Self::RatioAtLeast(r) => ratio.map(|x| x >= r),
            Self::AtMost(v, _) => Some(value <= v),
        }
    }
}

pub struct Row {
    pub measure: String,
    pub anchor: Option<f64>,
    /// One value per vmshot column, in column order (None: not measured).
    pub vmshot: Vec<Option<f64>>,
    /// Decimals to print.
    pub decimals: usize,
    /// The target of the first vmshot column (the shipped configuration).
    pub target: Option<Target>,
    /// The target of the variant columns, where it differs (fast path).
    pub variant_target: Option<Target>,
}

impl Row {
    pub fn new(measure: impl Into<String>, anchor: Option<f64>, vmshot: Vec<Option<f64>>) -> Self {
        Self {
            measure: measure.into(),
            anchor,
            vmshot,
            decimals: 2,
            target: None,
            variant_target: None,
        }
    }

    pub fn decimals(mut self, n: usize) -> Self {
        self.decimals = n;
        self
    }

    pub fn target(mut self, target: Target) -> Self {
        self.target = Some(target);
        self
    }

    pub fn variant_target(mut self, target: Target) -> Self {
        self.variant_target = Some(target);
        self
    }

    fn ratio(&self, column: usize) -> Option<f64> {
        let (a, v) = (self.anchor?, self.vmshot.get(column).copied().flatten()?);
        (a > 0.0).then(|| v / a)
    }

    fn target_of(&self, column: usize) -> Option<Target> {
        if column == 0 {
            self.target
        } else {
            self.variant_target.or(self.target)
        }
    }

    /// PASS/MISS of one column, None where the row has no target or no value.
    pub fn verdict(&self, column: usize) -> Option<bool> {
        let value = self.vmshot.get(column).copied().flatten()?;
        self.target_of(column)?.met(value, self.ratio(column))
    }
}

pub struct Table {
    /// "vmshot", then "vmshot:NAME" per variant.
    pub columns: Vec<String>,
    pub rows: Vec<Row>,
}

impl Table {
    pub fn markdown(&self) -> String {
        let mut head = String::from("| measure | anchor |");
        let mut rule = String::from("|---|---:|");
        for (i, column) in self.columns.iter().enumerate() {
            let target = if i == 0 { "target" } else { "target (variant)" };
            write!(head, " {column} | ratio | {target} | verdict |").unwrap();
            rule.push_str("---:|---:|---|---|");
        }
        let mut out = format!("{head}\n{rule}\n");
        for row in &self.rows {
            let fmt = |v: Option<f64>| match v {
                Some(v) => format!("{v:.*}", row.decimals),
                None => "—".into(),
            };
            write!(out, "| {} | {} |", row.measure, fmt(row.anchor)).unwrap();
            for i in 0..self.columns.len() {
                let value = row.vmshot.get(i).copied().flatten();
                let ratio = row.ratio(i).map_or("—".into(), |r| format!("{r:.2}×"));
                let target = row.target_of(i).map_or(String::new(), Target::text);
                let verdict = match row.verdict(i) {
                    Some(true) => "PASS",
                    Some(false) => "**MISS**",
                    None => "",
                };
                write!(out, " {} | {ratio} | {target} | {verdict} |", fmt(value)).unwrap();
            }
            out.push('\n');
        }
        out
    }

    /// Every (row, column) with a target, and whether it was met.
    pub fn verdicts(&self) -> Vec<(String, String, bool)> {
        let mut all = Vec::new();
        for row in &self.rows {
            for (i, column) in self.columns.iter().enumerate() {
                if let Some(met) = row.verdict(i) {
                    all.push((row.measure.clone(), column.clone(), met));
                }
            }
        }
        all
    }
}

fn run(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// One line saying what machine this ran on.
pub fn machine(uri: &str, python: &Path) -> String {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or("?".into(), |kb| format!("{:.1}", kb / 1024.0 / 1024.0));
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            Some(
                l.strip_prefix("model name")?
                    .split_once(':')?
                    .1
                    .trim()
                    .to_owned(),
            )
        })
        .unwrap_or_else(|| "?".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or("?".into(), |s| s.trim().to_owned());
    let debian =
        std::fs::read_to_string("/etc/debian_version").map_or("?".into(), |s| s.trim().to_owned());
    let version = run("virsh", &["-c", uri, "version"]).unwrap_or_default();
    let pick = |prefix: &str| {
        version
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| "?".into())
    };
    let libvirt = pick("Using library: libvirt");
    let qemu = pick("Running hypervisor: QEMU");
    let turbo = run("dpkg-query", &["-W", "-f", "${Version}", "libturbojpeg0"])
        .unwrap_or_else(|| "?".into());
    let python = run(
        &python.to_string_lossy(),
        &[
            "-c",
            "import sys, PIL; print(sys.version.split()[0], PIL.__version__)",
        ],
    )
    .and_then(|s| {
        let (py, pil) = s.split_once(' ')?;
        Some(format!("Python {py}, Pillow {pil}"))
    })
    .unwrap_or_else(|| "Python ?".into());
    format!(
        "{nproc} CPUs ({cpu}), {mem_gib} GiB, Debian {debian}, kernel {kernel}, \
         libvirt {libvirt}, QEMU {qemu} (TCG), libjpeg-turbo {turbo}; anchor: {python}"
    )
}

/// Puts `section` between the markers of `path`, keeping the rest of the
/// file; a file without markers gets them, with the section, at its end.
pub fn write_section(path: &Path, section: &str) -> Result<(), String> {
    write_between(path, BEGIN, END, section)
}

/// `write_section` between markers of the caller's choosing (another
/// benchmark's table in the same file).
pub fn write_between(path: &Path, begin: &str, end: &str, section: &str) -> Result<(), String> {
    let old = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let block = format!("{begin}\n{}\n{end}", section.trim_end());
    let new = match (old.find(begin), old.find(end)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{block}{}", &old[..b], &old[e + end.len()..])
        }
        _ if old.is_empty() => format!("{block}\n"),
        _ => format!("{}\n\n{block}\n", old.trim_end()),
    };
    // Written aside and renamed: an interrupted run leaves the old file whole.
    let tmp = path.with_extension("md.tmp");
    std::fs::write(&tmp, new).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}
