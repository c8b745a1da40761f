//! The screenshot benchmark of issue 4: vmshot next to the anchor (the
//! baseline an operator would script with libvirt-python and Pillow,
//! `benches/baseline/py_agent.py`) in one run, on the fixture guests, as a
//! table of ratios written to docs/BENCHMARKS.md.
//!
//! Phases, each with both sides measured alike in the same run:
//! 1. `http`: one client, GetInstanceScreenshot over HTTP per screen size,
//!    calls alternating between the servers so that drift hits all of them;
//! 2. `pipeline`: in-process decode+encode+hash+base64 (and the grab) of one
//!    raw libvirt screenshot, against `py_agent.py bench`;
//! 3. `load`: N clients over the load guests for a fixed wall time:
//!    throughput, latency, errors;
//!
//! and throughout, CPU per screenshot (server, QEMU, libvirtd) and RSS.
//!
//! This file is shared by `benches/screenshots/main.rs` (the real run) and
//! `tests/bench_smoke.rs` (a quick run in CI); its submodules are named by
//! path so that both find them.
#![allow(dead_code)]

#[path = "client.rs"]
mod client;
#[path = "guests.rs"]
mod guests;
#[path = "procfs.rs"]
mod procfs;
#[path = "servers.rs"]
mod servers;
// The tests' signer, not a copy; the smoke test also has it through `common`.
#[allow(clippy::duplicate_mod)]
#[path = "../../tests/common/signing.rs"]
mod signing;
#[path = "table.rs"]
pub mod table;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use vmshot::capture::{process, Limits, Output};
use vmshot::hypervisor::{Hypervisor, RawScreenshot, Settings};

use client::{check_screenshot, Client};
use guests::{FixtureEnv, Guests, Screen};
use servers::Server;
use table::{Row, Table, Target};

/// The command line of `cargo bench --bench screenshots -- [OPTIONS]`. Every
/// option is optional here, so that `--quick` can lower the defaults and an
/// option given with it still wins; the defaults are in `Options::new`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "screenshots",
    override_usage = "cargo bench --bench screenshots -- [OPTIONS]",
    about = "vmshot next to the anchor (the libvirt-python + Pillow baseline), \
             on the fixture guests, as a table of ratios in docs/BENCHMARKS.md",
    after_help = "Guests are named with $VMSHOT_FIXTURE_PREFIX (vmshot-fx-), their images in \
                  $VMSHOT_FIXTURES_DIR (target/fixtures), as fixtures/fixtures.sh does."
)]
pub struct Args {
    /// A short run: 2 load guests, 5 requests, 2 s per load run, 2 and 4 clients.
    #[arg(long)]
    quick: bool,
    /// Screen fixtures [default: nobootdev,panic,pattern,pattern-1080].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    screens: Option<Vec<String>>,
    /// Phase 1: requests per server per screen [default: 100].
    #[arg(long, value_name = "N")]
    requests: Option<usize>,
    /// Phase 2: in-process runs per screen, both sides [default: 50].
    #[arg(long, value_name = "N")]
    pipeline_runs: Option<usize>,
    /// Phase 3: pattern guests to spread the load over [default: 32].
    #[arg(long, value_name = "N")]
    load_guests: Option<usize>,
    /// Phase 3: concurrent clients [default: 8,32].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    clients: Option<Vec<usize>>,
    /// Phase 3: wall time of each load run [default: 15].
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Phases to run [default: all].
    #[arg(long, value_name = "LIST", value_enum, value_delimiter = ',')]
    phases: Option<Vec<Phase>>,
    /// vmshot to run [default: the release build cargo bench made].
    #[arg(long, value_name = "PATH")]
    vmshot_bin: Option<PathBuf>,
    /// TOML merged into vmshot's config, inline or @FILE [default:
    /// capture.fast_path = "off", the stable path].
    #[arg(long = "vmshot-config-extra", value_name = "T", value_parser = toml_arg)]
    vmshot_extra: Option<String>,
    /// One more vmshot column with T (inline or @FILE) merged in; repeatable
    /// [default: fast=capture.fast_path = "vnc"].
    #[arg(long = "variant", value_name = "NAME=T", value_parser = variant_arg)]
    variants: Vec<(String, String)>,
    /// HTTP p50 target of variant columns, × anchor [default: 0.2].
    #[arg(long, value_name = "R")]
    variant_p50_target: Option<f64>,
    /// The baseline's py_agent.py [default: $VMSHOT_ANCHOR, else
    /// benches/baseline/py_agent.py in this repository].
    #[arg(long, value_name = "PATH")]
    anchor: Option<PathBuf>,
    /// The anchor's interpreter [default: /usr/bin/python3].
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,
    /// Where the table goes; - for nowhere [default: docs/BENCHMARKS.md].
    #[arg(long, value_name = "FILE")]
    output: Option<String>,
    /// Leave the load guests (and started fixtures) running.
    #[arg(long)]
    keep_guests: bool,
    /// libvirt URI [default: $LIBVIRT_URI, else qemu:///system].
    #[arg(long, value_name = "URI")]
    uri: Option<String>,
    /// Added by `cargo bench` to every bench program; means nothing here.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Phase {
    Http,
    Pipeline,
    Load,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub screens: Vec<String>,
    pub requests: usize,
    pub pipeline_runs: usize,
    pub load_guests: usize,
    pub clients: Vec<usize>,
    pub duration: Duration,
    pub phase_http: bool,
    pub phase_pipeline: bool,
    pub phase_load: bool,
    pub vmshot_bin: PathBuf,
    pub vmshot_extra: Option<String>,
    /// (name, TOML) of each extra vmshot column.
    pub variants: Vec<(String, String)>,
    pub variant_p50_target: f64,
    pub anchor: PathBuf,
    pub python: PathBuf,
    pub output: Option<PathBuf>,
    pub keep_guests: bool,
    pub uri: String,
    pub prefix: String,
    pub fixtures_dir: PathBuf,
    /// How this run was started, for the report.
    pub command_line: String,
}

impl Options {
    /// The full run, with vmshot from `vmshot_bin`.
    pub fn new(vmshot_bin: PathBuf) -> Self {
        let repo = guests::repo();
        Self {
            screens: guests::SCREENS.iter().map(|s| s.0.to_owned()).collect(),
            requests: 100,
            pipeline_runs: 50,
            load_guests: 32,
            clients: vec![8, 32],
            duration: Duration::from_secs(15),
            phase_http: true,
            phase_pipeline: true,
            phase_load: true,
            vmshot_bin,
            // The main vmshot column is the stable path (virDomainScreenshot
            // on every capture), judged by the stable targets; the fast path
            // (VNC mirrors, vmshot's default) is a column of its own, judged
            // by the fast-path target. --vmshot-config-extra / --variant
            // replace these.
            vmshot_extra: Some(STABLE.into()),
            variants: vec![("fast".into(), FAST.into())],
            variant_p50_target: 0.2,
            anchor: std::env::var_os("VMSHOT_ANCHOR")
                .map(PathBuf::from)
                .unwrap_or_else(|| repo.join(BASELINE)),
            python: "/usr/bin/python3".into(),
            output: Some(repo.join("docs/BENCHMARKS.md")),
            keep_guests: false,
            uri: std::env::var("LIBVIRT_URI").unwrap_or_else(|_| "qemu:///system".into()),
            prefix: std::env::var("VMSHOT_FIXTURE_PREFIX").unwrap_or_else(|_| "vmshot-fx-".into()),
            fixtures_dir: guests::default_fixtures_dir(&repo),
            command_line: "cargo bench --bench screenshots".into(),
        }
    }

    /// A few iterations of everything: for CI, and to try options out.
    pub fn quick(mut self) -> Self {
        self.requests = 5;
        self.pipeline_runs = 5;
        self.load_guests = 2;
        self.clients = vec![2, 4];
        self.duration = Duration::from_secs(2);
        self
    }

    /// The options `args` (parsed from `raw`, the arguments after `--`) ask
    /// for, with vmshot from `vmshot_bin` unless they name another.
    pub fn from_args(args: Args, raw: &[String], vmshot_bin: PathBuf) -> Result<Self, String> {
        let mut opts = Self::new(vmshot_bin);
        opts.command_line = std::iter::once("cargo bench --bench screenshots --".to_owned())
            .chain(
                raw.iter()
                    .filter(|a| *a != "--bench")
                    .map(|a| shell_quote(a)),
            )
            .collect::<Vec<_>>()
            .join(" ");
        if opts.command_line.ends_with(" --") {
            opts.command_line.truncate(opts.command_line.len() - 3);
        }
        if args.quick {
            opts = opts.quick();
        }
        if let Some(screens) = args.screens {
            opts.screens = screens
                .iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
        }
        set(&mut opts.requests, args.requests);
        set(&mut opts.pipeline_runs, args.pipeline_runs);
        set(&mut opts.load_guests, args.load_guests);
        set(&mut opts.clients, args.clients);
        if let Some(secs) = args.duration {
            opts.duration = Duration::try_from_secs_f64(secs)
                .map_err(|_| format!("--duration: not a number of seconds: {secs}"))?;
        }
        if let Some(phases) = args.phases {
            opts.phase_http = phases.contains(&Phase::Http);
            opts.phase_pipeline = phases.contains(&Phase::Pipeline);
            opts.phase_load = phases.contains(&Phase::Load);
        }
        set(&mut opts.vmshot_bin, args.vmshot_bin);
        if args.vmshot_extra.is_some() {
            opts.vmshot_extra = args.vmshot_extra;
        }
        // Variants given replace the default ones, not add to them.
        if !args.variants.is_empty() {
            opts.variants = args.variants;
        }
        set(&mut opts.variant_p50_target, args.variant_p50_target);
        set(&mut opts.anchor, args.anchor);
        set(&mut opts.python, args.python);
        if let Some(output) = args.output {
            opts.output = (output != "-").then(|| output.into());
        }
        opts.keep_guests |= args.keep_guests;
        set(&mut opts.uri, args.uri);
        if opts.phase_load && (opts.load_guests == 0 || opts.clients.is_empty()) {
            return Err("the load phase needs --load-guests ≥ 1 and --clients".into());
        }
        Ok(opts)
    }
}

/// Overrides a default with the value given, if one was.
fn set<T>(option: &mut T, given: Option<T>) {
    if let Some(value) = given {
        *option = value;
    }
}

/// A `--variant`: a column name, `=`, and its TOML (inline or `@FILE`).
fn variant_arg(v: &str) -> Result<(String, String), String> {
    let (name, toml) = v.split_once('=').ok_or("--variant takes NAME=TOML")?;
    Ok((name.to_owned(), toml_arg(toml)?))
}

/// The anchor's default: vmshot's own baseline, in this repository (relative
/// to its root; `--anchor` or `$VMSHOT_ANCHOR` point elsewhere).
pub const BASELINE: &str = "benches/baseline/py_agent.py";

/// vmshot's configuration for the stable path, and for the fast path.
const STABLE: &str = "capture.fast_path = \"off\"";
const FAST: &str = "capture.fast_path = \"vnc\"";

/// A TOML option: inline (`capture.max_concurrent = 8`) or `@FILE`.
fn toml_arg(v: &str) -> Result<String, String> {
    match v.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}")),
        None => Ok(v.to_owned()),
    }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// What a run found, beyond the table: for the smoke test's assertions.
pub struct Report {
    pub table: Table,
    /// The Markdown section written between the markers.
    pub section: String,
    /// Screenshots answered correctly, per server label.
    pub answered: BTreeMap<String, u64>,
    /// Failed requests (not 200, not a JPEG, I/O), per server label.
    pub errors: BTreeMap<String, u64>,
    /// The first few error messages.
    pub error_samples: Vec<String>,
}

/// Counts kept per server label.
#[derive(Default, Clone)]
struct Tally {
    ok: u64,
    errors: u64,
    latencies_ms: Vec<f64>,
    server_ticks: u64,
    qemu_ticks: u64,
    libvirtd_ticks: u64,
}

impl Tally {
    fn per_shot_ms(&self, ticks: u64) -> Option<f64> {
        (self.ok > 0).then(|| procfs::ticks_ms(ticks) / self.ok as f64)
    }
}

/// One load run's figures.
#[derive(Default, Clone)]
struct LoadRun {
    tally: Tally,
    elapsed: Duration,
    rss_max_kb: u64,
}

impl LoadRun {
    fn throughput(&self) -> f64 {
        self.tally.ok as f64 / self.elapsed.as_secs_f64()
    }
}

struct Bench<'a> {
    opts: &'a Options,
    key_id: String,
    secret: String,
    errors: BTreeMap<String, u64>,
    answered: BTreeMap<String, u64>,
    error_samples: Vec<String>,
}

impl Bench<'_> {
    /// A signed GetInstanceScreenshot for `domain` (mapped to itself in
    /// vmshot's config; the anchor takes it as the domain name). Both sides get
    /// the same kind of request: the anchor ignores the signature.
    fn target(&self, domain: &str) -> String {
        let query = signing::signed_query(
            "GET",
            &self.key_id,
            &self.secret,
            &[
                ("Action", "GetInstanceScreenshot"),
                ("RegionId", "cn-bench"),
                ("InstanceId", domain),
            ],
        );
        format!("/?{query}")
    }

    fn record(&mut self, label: &str, tally: &Tally, samples: Vec<String>) {
        *self.answered.entry(label.to_owned()).or_default() += tally.ok;
        *self.errors.entry(label.to_owned()).or_default() += tally.errors;
        for s in samples {
            if self.error_samples.len() < 10 {
                self.error_samples.push(format!("{label}: {s}"));
            }
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    // Nearest rank: the smallest value with at least p% of them at or below.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

fn p99(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    percentile(&v, 99.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs the whole benchmark; writes the table to `opts.output` and prints it.
pub fn run(opts: &Options) -> Result<Report, String> {
    for (what, path) in [
        ("vmshot", &opts.vmshot_bin),
        ("the anchor", &opts.anchor),
        ("python", &opts.python),
    ] {
        if !path.exists() {
            return Err(format!("{what} not found at {}", path.display()));
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let env = FixtureEnv {
        repo: guests::repo(),
        uri: opts.uri.clone(),
        prefix: opts.prefix.clone(),
        dir: opts.fixtures_dir.clone(),
    };
    let load = if opts.phase_load { opts.load_guests } else { 0 };
    eprintln!(
        "bench: bringing up {} screen guest(s) and {load} load guest(s) ({}*)",
        opts.screens.len(),
        opts.prefix
    );
    let guests = guests::up(&env, &opts.screens, load, opts.keep_guests)?;
    let hypervisor = runtime.block_on(async { Hypervisor::new(Settings::new(opts.uri.clone())) });
    runtime.block_on(guests.wait_settled(&hypervisor, Duration::from_secs(600)))?;
    // Booting guests cost CPU; let that settle before measuring anything.
    std::thread::sleep(Duration::from_secs(2));

    let dir = std::env::temp_dir().join(format!("vmshot-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let result = run_with_guests(opts, &runtime, &hypervisor, &guests, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    drop(guests);
    result
}

fn run_with_guests(
    opts: &Options,
    runtime: &tokio::runtime::Runtime,
    hypervisor: &Hypervisor,
    guests: &Guests,
    dir: &Path,
) -> Result<Report, String> {
    let mut bench = Bench {
        opts,
        key_id: "vmshot-bench".into(),
        secret: uuid::Uuid::new_v4().simple().to_string(),
        errors: BTreeMap::new(),
        answered: BTreeMap::new(),
        error_samples: Vec::new(),
    };

    // The servers: the anchor first, then a vmshot column per variant.
    let keys = servers::write_keys(dir, &bench.key_id, &bench.secret)?;
    let domains: Vec<String> = guests
        .screens
        .iter()
        .map(|s| s.domain.clone())
        .chain(guests.load.iter().cloned())
        .collect();
    let mut variants: Vec<(String, Vec<&str>)> = vec![(
        "vmshot".into(),
        opts.vmshot_extra.iter().map(String::as_str).collect(),
    )];
    for (name, extra) in &opts.variants {
        let mut extras: Vec<&str> = opts.vmshot_extra.iter().map(String::as_str).collect();
        extras.push(extra);
        variants.push((format!("vmshot:{name}"), extras));
    }
    let mut servers = vec![servers::start_anchor(
        &opts.python,
        &opts.anchor,
        dir,
        &opts.uri,
    )?];
    for (label, extras) in &variants {
        let config = servers::vmshot_config(&opts.uri, &keys, &domains, extras)?;
        servers.push(servers::start_vmshot(
            &opts.vmshot_bin,
            dir,
            label,
            &config,
        )?);
    }
    let columns: Vec<String> = servers[1..].iter().map(|s| s.label.clone()).collect();
    // Idle: started, connected, not yet asked for anything.
    std::thread::sleep(Duration::from_secs(2));
    let idle_rss: Vec<Option<u64>> = servers
        .iter()
        .map(|s| procfs::status_kb(s.pid(), "VmRSS"))
        .collect();

    let mut rows = Vec::new();
    let per_server = |f: &dyn Fn(usize) -> Option<f64>| -> (Option<f64>, Vec<Option<f64>>) {
        (f(0), (1..servers.len()).map(f).collect())
    };

    if opts.phase_http {
        eprintln!(
            "bench: phase 1, one client, {} requests per server per screen",
            opts.requests
        );
        let mut total: Vec<Tally> = vec![Tally::default(); servers.len()];
        for screen in &guests.screens {
            let tallies = http_one_client(&mut bench, &servers, screen);
            let (a, v) = per_server(&|i| median(&tallies[i].latencies_ms));
            rows.push(
                Row::new(format!("HTTP p50, 1 client, {} (ms)", screen.label()), a, v)
                    .target(Target::RatioAtMost(0.7))
                    .variant_target(Target::RatioAtMost(opts.variant_p50_target)),
            );
            let (a, v) = per_server(&|i| p99(&tallies[i].latencies_ms));
            rows.push(Row::new(
                format!("HTTP p99, 1 client, {} (ms)", screen.label()),
                a,
                v,
            ));
            for (t, new) in total.iter_mut().zip(tallies) {
                t.ok += new.ok;
                t.errors += new.errors;
                t.server_ticks += new.server_ticks;
                t.qemu_ticks += new.qemu_ticks;
                t.libvirtd_ticks += new.libvirtd_ticks;
            }
        }
        let (a, v) = per_server(&|i| Some(total[i].errors as f64));
        rows.push(
            Row::new("HTTP errors, 1 client", a, v)
                .decimals(0)
                .target(Target::AtMost(0.0, "")),
        );
        for (what, pick) in cpu_pickers() {
            let (a, v) = per_server(&|i| total[i].per_shot_ms(pick(&total[i])));
            rows.push(Row::new(
                format!("CPU per screenshot, 1 client: {what} (ms)"),
                a,
                v,
            ));
        }
    }

    if opts.phase_pipeline {
        eprintln!(
            "bench: phase 2, in-process pipeline, {} runs per screen",
            opts.pipeline_runs
        );
        for screen in &guests.screens {
            let ours =
                runtime.block_on(pipeline(hypervisor, &screen.domain, opts.pipeline_runs))?;
            let theirs = anchor_bench(opts, &screen.domain)?;
            let blank = vec![None; columns.len() - 1];
            let with_blank = |v: f64| std::iter::once(Some(v)).chain(blank.clone()).collect();
            rows.push(
                Row::new(
                    format!("decode+encode+hash+base64 p50, {} (ms)", screen.label()),
                    Some(theirs.1),
                    with_blank(ours.1),
                )
                .target(Target::RatioAtMost(0.25)),
            );
            rows.push(Row::new(
                format!("grab (virDomainScreenshot) p50, {} (ms)", screen.label()),
                Some(theirs.0),
                with_blank(ours.0),
            ));
        }
    }

    let mut load_rss: Vec<u64> = vec![0; servers.len()];
    if opts.phase_load {
        let max_clients = *opts.clients.iter().max().unwrap_or(&0);
        let guests_n = guests.load.len();
        for &clients in &opts.clients {
            eprintln!(
                "bench: phase 3, {clients} clients over {guests_n} guests, {:?} per server",
                opts.duration
            );
            let mut runs = Vec::new();
            for (i, server) in servers.iter().enumerate() {
                let run = load_run(&mut bench, server, guests, clients);
                load_rss[i] = load_rss[i].max(run.rss_max_kb);
                runs.push(run);
                // Let the last requests' tail pass before the next server's turn.
                std::thread::sleep(Duration::from_secs(1));
            }
            let at = |t: Target| (clients == max_clients).then_some(t);
            let label = format!("{clients} clients / {guests_n} guests");
            let (a, v) = per_server(&|i| Some(runs[i].throughput()));
            let mut row =
                Row::new(format!("{label}: throughput (screenshots/s)"), a, v).decimals(1);
            row.target = at(Target::RatioAtLeast(3.0));
            rows.push(row);
            let (a, v) = per_server(&|i| median(&runs[i].tally.latencies_ms));
            rows.push(Row::new(format!("{label}: p50 (ms)"), a, v));
            let (a, v) = per_server(&|i| p99(&runs[i].tally.latencies_ms));
            let mut row = Row::new(format!("{label}: p99 (ms)"), a, v);
            row.target = at(Target::RatioAtMost(0.5));
            rows.push(row);
            let (a, v) = per_server(&|i| Some(runs[i].tally.errors as f64));
            rows.push(
                Row::new(format!("{label}: errors"), a, v)
                    .decimals(0)
                    .target(Target::AtMost(0.0, "")),
            );
            if clients == max_clients {
                for (what, pick) in cpu_pickers() {
                    let (a, v) = per_server(&|i| runs[i].tally.per_shot_ms(pick(&runs[i].tally)));
                    rows.push(Row::new(
                        format!("CPU per screenshot, {label}: {what} (ms)"),
                        a,
                        v,
                    ));
                }
            }
        }
    }

    // Memory: idle, the largest sampled under load, and the peak of the run.
    let mb = |kb: u64| kb as f64 * 1024.0 / 1e6;
    let (a, v) = per_server(&|i| idle_rss[i].map(mb));
    rows.push(
        Row::new("RSS idle, after start (MB)", a, v)
            .decimals(1)
            .target(Target::AtMost(30.0, "MB")),
    );
    if opts.phase_load {
        let (a, v) = per_server(&|i| Some(mb(load_rss[i])));
        rows.push(Row::new("RSS under load, largest sample (MB)", a, v).decimals(1));
    }
    // The kernel updates VmHWM lazily: a sample taken under load can be higher.
    let (a, v) = per_server(&|i| {
        let hwm = procfs::status_kb(servers[i].pid(), "VmHWM")?;
        Some(mb(hwm.max(load_rss[i])))
    });
    rows.push(
        Row::new("RSS peak of the run, VmHWM (MB)", a, v)
            .decimals(1)
            .target(Target::AtMost(150.0, "MB")),
    );
    for server in &servers {
        bench.answered.entry(server.label.clone()).or_default();
        bench.errors.entry(server.label.clone()).or_default();
    }
    drop(servers);

    let table = Table { columns, rows };
    let section = section(opts, guests, &table);
    println!("\n{section}");
    if let Some(path) = &opts.output {
        table::write_section(path, &section)?;
        eprintln!("bench: table written to {}", path.display());
    }
    Ok(Report {
        table,
        section,
        answered: bench.answered,
        errors: bench.errors,
        error_samples: bench.error_samples,
    })
}

type Pick = fn(&Tally) -> u64;

fn cpu_pickers() -> [(&'static str, Pick); 3] {
    [
        ("server process", |t| t.server_ticks),
        ("QEMU", |t| t.qemu_ticks),
        ("libvirtd", |t| t.libvirtd_ticks),
    ]
}

/// CPU ticks of (server, QEMU processes, libvirtd), now.
fn ticks(server: u32, qemu: &[u32], libvirtd: Option<u32>) -> (u64, u64, u64) {
    (
        procfs::cpu_ticks(server).unwrap_or(0),
        procfs::cpu_ticks_sum(qemu),
        libvirtd.and_then(procfs::cpu_ticks).unwrap_or(0),
    )
}

/// Phase 1 on one screen: requests alternate between the servers, the first
/// of each round rotating. QEMU and libvirtd serve every server, so their CPU
/// is read around each request and charged to the server that made it.
fn http_one_client(bench: &mut Bench, servers: &[Server], screen: &Screen) -> Vec<Tally> {
    let qemu: Vec<u32> = procfs::qemu_pid(&screen.domain).into_iter().collect();
    let libvirtd = procfs::libvirtd_pid();
    let mut clients: Vec<Client> = servers.iter().map(|s| Client::new(s.addr)).collect();
    let mut tallies = vec![Tally::default(); servers.len()];
    let mut samples: Vec<Vec<String>> = vec![Vec::new(); servers.len()];
    // Warm-up: connections, caches, the anchor's first libvirt connection.
    for _ in 0..3 {
        for client in clients.iter_mut() {
            let _ = client.get(&bench.target(&screen.domain));
        }
    }
    for round in 0..bench.opts.requests {
        for k in 0..servers.len() {
            let i = (round + k) % servers.len();
            let target = bench.target(&screen.domain);
            let before = ticks(servers[i].pid(), &qemu, libvirtd);
            let started = Instant::now();
            let result = clients[i].get(&target).and_then(|r| check_screenshot(&r));
            let elapsed = ms(started.elapsed());
            let after = ticks(servers[i].pid(), &qemu, libvirtd);
            let t = &mut tallies[i];
            t.server_ticks += after.0.saturating_sub(before.0);
            t.qemu_ticks += after.1.saturating_sub(before.1);
            t.libvirtd_ticks += after.2.saturating_sub(before.2);
            match result {
                Ok(_) => {
                    t.ok += 1;
                    t.latencies_ms.push(elapsed);
                }
                Err(e) => {
                    t.errors += 1;
                    samples[i].push(e);
                }
            }
        }
    }
    for (i, server) in servers.iter().enumerate() {
        bench.record(&server.label, &tallies[i], std::mem::take(&mut samples[i]));
    }
    tallies
}

/// Phase 3: `clients` threads call `server` back to back for the set wall
/// time, spreading their calls over the load guests in turn.
fn load_run(bench: &mut Bench, server: &Server, guests: &Guests, clients: usize) -> LoadRun {
    let qemu = guests.load_qemu_pids();
    let libvirtd = procfs::libvirtd_pid();
    let before = ticks(server.pid(), &qemu, libvirtd);
    let sampler = procfs::RssSampler::start(server.pid());
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let deadline = started + bench.opts.duration;
    let this: &Bench = bench;
    let results: Vec<(Vec<f64>, Vec<String>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                scope.spawn(|| {
                    let mut client = Client::new(server.addr);
                    let (mut latencies, mut errors) = (Vec::new(), Vec::new());
                    while Instant::now() < deadline {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        let target = this.target(&guests.load[n % guests.load.len()]);
                        let t0 = Instant::now();
                        match client.get(&target).and_then(|r| check_screenshot(&r)) {
                            Ok(_) => latencies.push(ms(t0.elapsed())),
                            Err(e) => {
                                errors.push(e);
                                // A server that fails at once must not be
                                // hammered into millions of errors.
                                std::thread::sleep(Duration::from_millis(10));
                            }
                        }
                    }
                    (latencies, errors)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_default())
            .collect()
    });
    let elapsed = started.elapsed();
    let after = ticks(server.pid(), &qemu, libvirtd);
    let rss_max_kb = sampler.finish();
    let mut tally = Tally {
        server_ticks: after.0.saturating_sub(before.0),
        qemu_ticks: after.1.saturating_sub(before.1),
        libvirtd_ticks: after.2.saturating_sub(before.2),
        ..Tally::default()
    };
    let mut samples = Vec::new();
    for (latencies, errors) in results {
        tally.ok += latencies.len() as u64;
        tally.errors += errors.len() as u64;
        tally.latencies_ms.extend(latencies);
        samples.extend(errors.into_iter().take(3));
    }
    bench.record(&server.label, &tally, samples);
    LoadRun {
        tally,
        elapsed,
        rss_max_kb,
    }
}

/// Phase 2, vmshot's side: p50 of the grab (`Hypervisor::screenshot`) and of
/// `capture::process` + base64 on the last raw screenshot, in milliseconds.
async fn pipeline(
    hypervisor: &Hypervisor,
    domain: &str,
    runs: usize,
) -> Result<(f64, f64), String> {
    let grab = || async {
        hypervisor
            .screenshot(domain, 0)
            .await
            .map_err(|e| e.to_string())
    };
    for _ in 0..3 {
        grab().await?;
    }
    let mut grabs = Vec::with_capacity(runs);
    let mut raw = None;
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        raw = Some(grab().await?);
        grabs.push(ms(started.elapsed()));
    }
    let raw = raw.expect("at least one run");
    let mut times = Vec::with_capacity(runs);
    // Three warm-up runs (the thread's compressor is made on first use).
    for n in 0..runs.max(1) + 3 {
        // The copy is made outside the timed part: `process` takes the payload
        // by value, as the server's capture does.
        let copy = RawScreenshot {
            domain: raw.domain.clone(),
            uuid: raw.uuid.clone(),
            screen: raw.screen,
            mime: raw.mime.clone(),
            payload: raw.payload.clone(),
            taken_at: raw.taken_at,
            elapsed: raw.elapsed,
        };
        let started = Instant::now();
        let shot =
            process(copy, Output::default(), &Limits::default()).map_err(|e| e.to_string())?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(shot.image.as_slice());
        let elapsed = ms(started.elapsed());
        std::hint::black_box(encoded);
        if n >= 3 {
            times.push(elapsed);
        }
    }
    Ok((median(&grabs).unwrap_or(0.0), median(&times).unwrap_or(0.0)))
}

/// Phase 2, the anchor's side: `py_agent.py bench DOMAIN N`, (grab p50,
/// encode+hash+base64 p50) in milliseconds.
fn anchor_bench(opts: &Options, domain: &str) -> Result<(f64, f64), String> {
    let out = Command::new(&opts.python)
        .arg(&opts.anchor)
        .args(["bench", domain, &opts.pipeline_runs.max(1).to_string()])
        .env("LIBVIRT_URI", &opts.uri)
        .env("JPEG_QUALITY", "80")
        .output()
        .map_err(|e| format!("{}: {e}", opts.python.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "py_agent.py bench {domain} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let v: serde_json::Value = serde_json::from_str(stdout.trim())
        .map_err(|e| format!("py_agent.py bench printed no JSON ({e}): {stdout}"))?;
    let field = |name: &str| {
        v[name]
            .as_f64()
            .ok_or_else(|| format!("py_agent.py bench: no {name} in {stdout}"))
    };
    Ok((field("p50_grab_ms")?, field("p50_encode_hash_b64_ms")?))
}

/// The Markdown written to docs/BENCHMARKS.md: how, where, when, the table.
fn section(opts: &Options, guests: &Guests, table: &Table) -> String {
    let date = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute] UTC"
        ))
        .unwrap_or_default();
    let verdicts = table.verdicts();
    let met = verdicts.iter().filter(|v| v.2).count();
    let screens: Vec<String> = guests
        .screens
        .iter()
        .map(|s| format!("`{}`", s.domain))
        .collect();
    let mut out = String::new();
    out.push_str("### Latest run\n\n");
    out.push_str(&format!("Command: `{}`\n\n", opts.command_line));
    out.push_str(&format!("Date: {date}\n\n"));
    out.push_str(&format!(
        "Machine: {}\n\n",
        table::machine(&opts.uri, &opts.python)
    ));
    let mut what = format!(
        "Guests: {} (screens); {} copies of the pattern guest as load.",
        if screens.is_empty() {
            "none".into()
        } else {
            screens.join(", ")
        },
        guests.load.len(),
    );
    if opts.phase_http {
        what += &format!(
            " Phase 1: {} requests per server per screen, one client, calls alternating.",
            opts.requests
        );
    }
    if opts.phase_pipeline {
        what += &format!(
            " Phase 2: {} runs per screen on each side.",
            opts.pipeline_runs
        );
    }
    if opts.phase_load {
        let clients: Vec<String> = opts.clients.iter().map(ToString::to_string).collect();
        what += &format!(
            " Phase 3: {} clients, {:.0} s per server each.",
            clients.join(" and "),
            opts.duration.as_secs_f64()
        );
    }
    out.push_str(&what);
    out.push_str("\n\n");
    if opts.vmshot_extra.is_some() || !opts.variants.is_empty() {
        if let Some(extra) = &opts.vmshot_extra {
            out.push_str(&format!("vmshot config extra: `{}`\n\n", extra.trim()));
        }
        for (name, toml) in &opts.variants {
            out.push_str(&format!("Variant `vmshot:{name}`: `{}`\n\n", toml.trim()));
        }
    }
    out.push_str(&table.markdown());
    out.push_str(&format!(
        "\nRatios are vmshot / anchor. Targets met: {met} of {}.\n",
        verdicts.len()
    ));
    out
}
