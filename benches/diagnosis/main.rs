//! `cargo bench --bench diagnosis -- [OPTIONS]`: what the diagnosis watcher
//! costs the host, in one run, as a table in docs/BENCHMARKS.md.
//!
//! On the benchmark's load guests (copies of the pattern guest: a static
//! 1024x768 colour grid, which no rule explains), through a real
//! `vmshot serve`:
//!
//! 1. `off`: vmshot's CPU with `[diagnosis] enabled = false`: the baseline;
//! 2. `first look`: from the start of a daemon with the watcher on until
//!    every load guest has its verdict (`stuck`) in `/metrics`: the wall time
//!    and the CPU of vmshot and of the OCR processes it ran (its children);
//! 3. `watching`: the same daemon over `--seconds` once every verdict is in:
//!    what watching costs from then on.
//!
//! CPU is in % of one core for all the guests together. The first look is
//! paced by `--cpu-percent` (the watcher's budget); the default here is
//! higher than the daemon's 5 % so that the run ends in minutes.

#![allow(dead_code)]

#[path = "../screenshots/client.rs"]
mod client;
#[path = "../screenshots/guests.rs"]
mod guests;
#[path = "../screenshots/procfs.rs"]
mod procfs;
#[path = "../screenshots/servers.rs"]
mod servers;
#[allow(clippy::duplicate_mod)]
#[path = "../../tests/common/signing.rs"]
mod signing;
#[path = "../screenshots/table.rs"]
mod table;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use client::Client;
use guests::FixtureEnv;

const BEGIN: &str = "<!-- bench-diagnosis:begin -->";
const END: &str = "<!-- bench-diagnosis:end -->";
const KEY_ID: &str = "bench-key";
const SECRET: &str = "bench-secret-0123456789";
/// The watcher's settings for the run (the daemon's defaults: 5 s and 120 s).
const SETTLE_SECS: u64 = 5;
const STUCK_AFTER_SECS: u64 = 30;

#[derive(Debug, clap::Parser)]
#[command(
    name = "diagnosis",
    override_usage = "cargo bench --bench diagnosis -- [OPTIONS]",
    about = "what the diagnosis watcher costs: CPU for its first look at every guest, and for watching them"
)]
struct Args {
    /// A short run: 4 guests, 10 s.
    #[arg(long)]
    quick: bool,
    /// Load guests watched [default: 32].
    #[arg(long, value_name = "N")]
    guests: Option<usize>,
    /// Wall time of the baseline and of the watching phase [default: 60].
    #[arg(long, value_name = "SECS")]
    seconds: Option<f64>,
    /// The watcher's CPU budget, % of one core [default: 50].
    #[arg(long, value_name = "PERCENT", default_value_t = 50.0)]
    cpu_percent: f64,
    /// vmshot to run [default: the release build cargo bench made].
    #[arg(long, value_name = "PATH")]
    vmshot_bin: Option<PathBuf>,
    /// Where the table goes; - for nowhere [default: docs/BENCHMARKS.md].
    #[arg(long, value_name = "FILE")]
    output: Option<String>,
    /// Leave the load guests running.
    #[arg(long)]
    keep_guests: bool,
    /// libvirt URI [default: $LIBVIRT_URI, else qemu:///system].
    #[arg(long, value_name = "URI")]
    uri: Option<String>,
    /// Added by `cargo bench` to every bench program; means nothing here.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let args = <Args as clap::Parser>::parse();
    if let Err(message) = run(args, &raw) {
        eprintln!("bench: {message}");
        std::process::exit(1);
    }
}

/// CPU seconds of a process itself and of its children that have ended.
fn cpu(pid: u32) -> (f64, f64) {
    let tick = procfs::clock_ticks_per_sec();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    match fields[..] {
        [utime, stime, cutime, cstime] => (
            (utime + stime) as f64 / tick,
            (cutime + cstime) as f64 / tick,
        ),
        _ => (0.0, 0.0),
    }
}

/// One phase: wall seconds, vmshot's CPU seconds, its children's.
struct Phase {
    label: &'static str,
    wall: f64,
    own: f64,
    children: f64,
}

impl Phase {
    fn pct(seconds: f64, wall: f64) -> f64 {
        100.0 * seconds / wall.max(1e-9)
    }
}

/// Verdicts of `domains` in `/metrics`; `None` for a domain without one yet.
fn verdicts(client: &mut Client, domains: &[String]) -> Result<Vec<Option<String>>, String> {
    let reply = client.get("/metrics")?;
    let text = String::from_utf8_lossy(&reply.body).into_owned();
    Ok(domains
        .iter()
        .map(|d| {
            let prefix = format!("vmshot_guest_verdict{{domain=\"{d}\",verdict=\"");
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .and_then(|rest| rest.split_once('"'))
                .map(|(verdict, _)| verdict.to_owned())
        })
        .collect())
}

fn run(args: Args, raw: &[String]) -> Result<(), String> {
    let repo = guests::repo();
    let uri = args
        .uri
        .clone()
        .or_else(|| std::env::var("LIBVIRT_URI").ok())
        .unwrap_or_else(|| "qemu:///system".into());
    let (n, seconds) = if args.quick {
        (args.guests.unwrap_or(4), args.seconds.unwrap_or(10.0))
    } else {
        (args.guests.unwrap_or(32), args.seconds.unwrap_or(60.0))
    };
    if n == 0 || n > 99 || !(4.0..=3600.0).contains(&seconds) {
        return Err("--guests 1 to 99, --seconds 4 to 3600".into());
    }
    if !(args.cpu_percent > 0.0 && args.cpu_percent <= 100.0) {
        return Err("--cpu-percent: above 0, at most 100".into());
    }
    let bin = args
        .vmshot_bin
        .clone()
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_vmshot").into());
    let env = FixtureEnv {
        dir: guests::default_fixtures_dir(&repo),
        prefix: std::env::var("VMSHOT_FIXTURE_PREFIX").unwrap_or_else(|_| "vmshot-fx-".into()),
        uri: uri.clone(),
        repo: repo.clone(),
    };
    eprintln!("bench: bringing up {n} load guests");
    let guests = guests::up(&env, &[], n, args.keep_guests)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let hv = vmshot::hypervisor::Hypervisor::new(vmshot::hypervisor::Settings::new(uri.clone()));
    runtime.block_on(guests.wait_settled(&hv, Duration::from_secs(180)))?;

    let dir = std::env::temp_dir().join(format!("vmshot-bench-diagnosis-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let keys = servers::write_keys(&dir, KEY_ID, SECRET)?;
    let mut phases = Vec::new();

    eprintln!("bench: baseline, the watcher off");
    let off = servers::vmshot_config(&uri, &keys, &guests.load, &[])?;
    let server = servers::start_vmshot(&bin, &dir, "off", &off)?;
    std::thread::sleep(Duration::from_secs(2));
    phases.push(measure("off", server.pid(), || {
        std::thread::sleep(Duration::from_secs_f64(seconds));
        Ok(())
    })?);
    drop(server);

    eprintln!("bench: the watcher's first look at {n} guests");
    let on = format!(
        "[diagnosis]\nenabled = true\nsettle_secs = {SETTLE_SECS}\nstuck_after_secs = {STUCK_AFTER_SECS}\n\
         cpu_percent = {:?}\n",
        args.cpu_percent
    );
    let config = servers::vmshot_config(&uri, &keys, &guests.load, &[&on])?;
    let server = servers::start_vmshot(&bin, &dir, "on", &config)?;
    let mut client = Client::new(server.addr);
    let limit = Duration::from_secs(1800);
    let first = measure("first look", server.pid(), || {
        let start = Instant::now();
        loop {
            let now = verdicts(&mut client, &guests.load)?;
            if now.iter().all(|v| v.as_deref() == Some("stuck")) {
                return Ok(());
            }
            if start.elapsed() > limit {
                return Err(format!(
                    "verdicts after {limit:?}: {now:?}\n{}",
                    server.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    })?;
    phases.push(first);
    eprintln!("bench: watching {n} guests");
    phases.push(measure("watching", server.pid(), || {
        std::thread::sleep(Duration::from_secs_f64(seconds));
        Ok(())
    })?);
    let after = verdicts(&mut client, &guests.load)?;
    if !after.iter().all(|v| v.as_deref() == Some("stuck")) {
        return Err(format!("verdicts changed while watching: {after:?}"));
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);

    let command = std::iter::once("cargo bench --bench diagnosis --".to_owned())
        .chain(raw.iter().filter(|a| *a != "--bench").cloned())
        .collect::<Vec<_>>()
        .join(" ");
    let report = report(&uri, n, args.cpu_percent, &command, &phases);
    println!("{report}");
    let output = match args.output.as_deref() {
        Some("-") => None,
        Some(path) => Some(PathBuf::from(path)),
        None => Some(repo.join("docs/BENCHMARKS.md")),
    };
    if let Some(path) = output {
        table::write_between(&path, BEGIN, END, &report)?;
        eprintln!("bench: table written to {}", path.display());
    }
    Ok(())
}

fn measure(
    label: &'static str,
    pid: u32,
    during: impl FnOnce() -> Result<(), String>,
) -> Result<Phase, String> {
    let (own0, children0) = cpu(pid);
    let start = Instant::now();
    during()?;
    let wall = start.elapsed().as_secs_f64();
    let (own1, children1) = cpu(pid);
    Ok(Phase {
        label,
        wall,
        own: own1 - own0,
        children: children1 - children0,
    })
}

fn report(uri: &str, n: usize, budget: f64, command: &str, phases: &[Phase]) -> String {
    let machine = table::machine(uri, std::path::Path::new("python3"));
    let mut out = format!(
        "Measured with `{command}` on {machine}.\n\n\
         {n} load guests (static 1024x768 colour grids, `stuck` once read), \
         settle {SETTLE_SECS} s, stuck after {STUCK_AFTER_SECS} s, budget {budget} % of a core. \
         CPU in % of one core for all {n} guests together.\n\n\
         | phase | wall s | vmshot CPU | OCR (tesseract) CPU | all, per guest |\n\
         |---|---:|---:|---:|---:|\n"
    );
    for p in phases {
        let all = Phase::pct(p.own + p.children, p.wall);
        out += &format!(
            "| {} | {:.1} | {:.2} % | {:.2} % | {:.3} % |\n",
            p.label,
            p.wall,
            Phase::pct(p.own, p.wall),
            Phase::pct(p.children, p.wall),
            all / n as f64,
        );
    }
    if let Some(first) = phases.iter().find(|p| p.label == "first look") {
        out += &format!(
            "\nThe first look cost {:.1} CPU s in all ({:.2} s a guest, OCR included) and took {:.0} s to give every guest its verdict.\n",
            first.own + first.children,
            (first.own + first.children) / n as f64,
            first.wall
        );
    }
    out
}
