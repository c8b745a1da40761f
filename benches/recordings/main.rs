//! `cargo bench --bench recordings -- [OPTIONS]`: what screen recordings cost
//! the host, in one run, as a table in docs/BENCHMARKS.md.
//!
//! On the benchmark's load guests (copies of the pattern guest: a static
//! 1024x768 screen) and the busy guest (boot-log lines scrolling, 20 a
//! second), through a real `vmshot serve`, recordings started and stopped
//! with the Huawei dialect's calls (X-Auth-Token):
//!
//! 1. `idle`: screenshot p50 (Alibaba GetInstanceScreenshot over the load
//!    guests, one client) and CPU of vmshot and of the load guests' QEMUs
//!    with no recording: the baseline;
//! 2. for each N of `--guests` (8, 32): N FULL recordings at `--fps` (2) of
//!    N load guests for `--seconds`: CPU of vmshot and of the recorded QEMUs
//!    per recorded guest above the baseline (% of one core), and bytes a
//!    guest-hour of a static console; with the most guests, screenshot p50
//!    again while they record;
//! 3. `busy`: one FULL recording of the busy guest: bytes a guest-hour of a
//!    busy console and vmshot's CPU for it.
//!
//! Bytes a guest-hour come from the files' growth between the end of the
//! first frame's second and the end of the run, scaled to an hour, with the
//! first (key) frame's bytes shown apart. Every recording must end
//! `REC_COMPLETED` with digests, or the run fails.

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

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use client::{check_screenshot, Client};
use guests::FixtureEnv;
use servers::Server;

const BEGIN: &str = "<!-- bench-recordings:begin -->";
const END: &str = "<!-- bench-recordings:end -->";
const KEY_ID: &str = "bench-key";
const SECRET: &str = "bench-secret-0123456789";
const TOKEN: &str = "bench-token-0123456789abcdef0123456789";
const PROJECT: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";

#[derive(Debug, clap::Parser)]
#[command(
    name = "recordings",
    override_usage = "cargo bench --bench recordings -- [OPTIONS]",
    about = "what screen recordings cost the host: CPU per recorded guest, bytes a \
             guest-hour, screenshot latency while guests record"
)]
struct Args {
    /// A short run: 2 guests, 8 s, 10 requests.
    #[arg(long)]
    quick: bool,
    /// Guests recorded at once, one run each [default: 8,32].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    guests: Option<Vec<usize>>,
    /// Wall time of each run [default: 60].
    #[arg(long, value_name = "SECS")]
    seconds: Option<f64>,
    /// Frames a second of every recording [default: 2].
    #[arg(long, value_name = "FPS")]
    fps: Option<f64>,
    /// Screenshots for each p50 [default: 60].
    #[arg(long, value_name = "N")]
    requests: Option<usize>,
    /// Skip the busy guest.
    #[arg(long)]
    no_busy: bool,
    /// vmshot to run [default: the release build cargo bench made].
    #[arg(long, value_name = "PATH")]
    vmshot_bin: Option<PathBuf>,
    /// Where the table goes; - for nowhere [default: docs/BENCHMARKS.md].
    #[arg(long, value_name = "FILE")]
    output: Option<String>,
    /// Leave the load and busy guests running.
    #[arg(long)]
    keep_guests: bool,
    /// libvirt URI [default: $LIBVIRT_URI, else qemu:///system].
    #[arg(long, value_name = "URI")]
    uri: Option<String>,
    /// Added by `cargo bench` to every bench program; means nothing here.
    #[arg(long, hide = true)]
    bench: bool,
}

struct Options {
    guests: Vec<usize>,
    seconds: f64,
    fps: f64,
    requests: usize,
    busy: bool,
    vmshot_bin: PathBuf,
    output: Option<PathBuf>,
    keep_guests: bool,
    uri: String,
    env: FixtureEnv,
    command_line: String,
}

impl Options {
    fn from_args(args: Args, raw: &[String]) -> Result<Self, String> {
        let repo = guests::repo();
        let uri = args
            .uri
            .or_else(|| std::env::var("LIBVIRT_URI").ok())
            .unwrap_or_else(|| "qemu:///system".into());
        let (guests_default, seconds_default, requests_default) = if args.quick {
            (vec![2], 8.0, 10)
        } else {
            (vec![8, 32], 60.0, 60)
        };
        let guests = args.guests.unwrap_or(guests_default);
        if guests.is_empty() || guests.iter().any(|&n| n == 0 || n > 99) {
            return Err("--guests: each between 1 and 99".into());
        }
        let seconds = args.seconds.unwrap_or(seconds_default);
        if !(4.0..=3600.0).contains(&seconds) {
            return Err("--seconds: between 4 and 3600".into());
        }
        let fps = args.fps.unwrap_or(2.0);
        if !(fps > 0.0 && fps <= 30.0) {
            return Err("--fps: above 0, at most 30".into());
        }
        let output = match args.output.as_deref() {
            Some("-") => None,
            Some(path) => Some(PathBuf::from(path)),
            None => Some(repo.join("docs/BENCHMARKS.md")),
        };
        let env = FixtureEnv {
            dir: guests::default_fixtures_dir(&repo),
            prefix: std::env::var("VMSHOT_FIXTURE_PREFIX").unwrap_or_else(|_| "vmshot-fx-".into()),
            uri: uri.clone(),
            repo,
        };
        Ok(Self {
            guests,
            seconds,
            fps,
            requests: args.requests.unwrap_or(requests_default).max(1),
            busy: !args.no_busy,
            vmshot_bin: args
                .vmshot_bin
                .unwrap_or_else(|| env!("CARGO_BIN_EXE_vmshot").into()),
            output,
            keep_guests: args.keep_guests,
            uri,
            env,
            command_line: std::iter::once("cargo bench --bench recordings --".to_owned())
                .chain(raw.iter().filter(|a| *a != "--bench").cloned())
                .collect::<Vec<_>>()
                .join(" "),
        })
    }
}

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let args = <Args as clap::Parser>::parse();
    let opts = match Options::from_args(args, &raw) {
        Ok(opts) => opts,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    if let Err(message) = run(&opts) {
        eprintln!("bench: {message}");
        std::process::exit(1);
    }
}

/// CPU seconds of vmshot and of a set of QEMUs over one stretch of wall time.
struct Cpu {
    wall: f64,
    vmshot: f64,
    qemu: f64,
}

impl Cpu {
    fn measure(vmshot: u32, qemus: &[u32], during: impl FnOnce()) -> Self {
        let tick = procfs::clock_ticks_per_sec();
        let (v0, q0) = (
            procfs::cpu_ticks(vmshot).unwrap_or(0),
            procfs::cpu_ticks_sum(qemus),
        );
        let start = Instant::now();
        during();
        let wall = start.elapsed().as_secs_f64();
        let (v1, q1) = (
            procfs::cpu_ticks(vmshot).unwrap_or(0),
            procfs::cpu_ticks_sum(qemus),
        );
        Self {
            wall,
            vmshot: (v1.saturating_sub(v0)) as f64 / tick,
            qemu: (q1.saturating_sub(q0)) as f64 / tick,
        }
    }

    /// Percent of one core, per process of `n`.
    fn pct(seconds: f64, wall: f64, n: usize) -> f64 {
        100.0 * seconds / wall / n as f64
    }
}

/// CPU with nothing recorded, % of one core: vmshot's, and each QEMU's.
#[derive(Clone, Copy)]
struct Baseline {
    vmshot: f64,
    qemu_each: f64,
}

impl Baseline {
    fn of(idle: &Cpu, guests: usize) -> Self {
        Self {
            vmshot: Cpu::pct(idle.vmshot, idle.wall, 1),
            qemu_each: Cpu::pct(idle.qemu, idle.wall, guests.max(1)),
        }
    }
}

/// One group of recordings run together.
struct Run {
    label: String,
    guests: usize,
    cpu: Cpu,
    idle: Baseline,
    /// Bytes (video + events) a guest-hour, from the growth after the first frame.
    bytes_per_hour: f64,
    /// Bytes of the first second (the first, key, frame), per guest.
    first_bytes: f64,
    frames: u64,
    p50_ms: Option<f64>,
}

fn run(opts: &Options) -> Result<(), String> {
    let most = *opts.guests.iter().max().expect("checked non-empty");
    eprintln!("bench: bringing up {most} load guests");
    let guests = guests::up(&opts.env, &[], most, opts.keep_guests)?;
    let busy_domain = format!("{}busy", opts.env.prefix);
    if opts.busy {
        opts.env.script(&["up", "busy"])?;
    }
    let _busy = BusyGuest {
        env: opts.env.clone(),
        domain: busy_domain.clone(),
        remove: opts.busy && !opts.keep_guests,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let hv =
        vmshot::hypervisor::Hypervisor::new(vmshot::hypervisor::Settings::new(opts.uri.clone()));
    runtime.block_on(guests.wait_settled(&hv, Duration::from_secs(180)))?;

    let dir = tempdir()?;
    let config = config(opts, &dir, &guests.load, &busy_domain)?;
    let server = servers::start_vmshot(&opts.vmshot_bin, &dir, "vmshot", &config)?;
    let pid = server.pid();
    let mut client = Client::new(server.addr);
    wait_for_huawei(&mut client)?;

    eprintln!("bench: baseline, nothing recorded");
    let load_pids = guests.load_qemu_pids();
    let idle = Cpu::measure(pid, &load_pids, || {
        std::thread::sleep(Duration::from_secs_f64(opts.seconds.min(20.0)))
    });
    // Warm-up: the first screenshots of a guest open its VNC mirror and take
    // the slower stable path until it holds the screen; recordings keep
    // mirrors open, so the baseline is measured with them open too.
    screenshot_p50(&mut client, &guests.load, guests.load.len() * 3)?;
    let p50_idle = screenshot_p50(&mut client, &guests.load, opts.requests)?;
    let mut runs = Vec::new();
    for &n in &opts.guests {
        eprintln!("bench: {n} guests recording at {} fps", opts.fps);
        let domains = &guests.load[..n];
        let measure_p50 = n == most;
        runs.push(record(
            opts,
            &server,
            &dir,
            &format!("{n} static"),
            domains,
            Baseline::of(&idle, load_pids.len()),
            measure_p50.then_some(&guests.load),
        )?);
    }
    if opts.busy {
        eprintln!("bench: the busy guest recording at {} fps", opts.fps);
        let busy_pid: Vec<u32> = procfs::qemu_pid(&busy_domain).into_iter().collect();
        let busy_idle = Cpu::measure(pid, &busy_pid, || {
            std::thread::sleep(Duration::from_secs_f64(opts.seconds.min(20.0)))
        });
        runs.push(record(
            opts,
            &server,
            &dir,
            "1 busy",
            std::slice::from_ref(&busy_domain),
            Baseline::of(&busy_idle, 1),
            None,
        )?);
    }
    let report = report(opts, &idle, load_pids.len(), p50_idle, &runs);
    println!("{report}");
    if let Some(path) = &opts.output {
        table::write_between(path, BEGIN, END, &report)?;
        eprintln!("bench: table written to {}", path.display());
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Removes the busy guest at the end, unless kept.
struct BusyGuest {
    env: FixtureEnv,
    domain: String,
    remove: bool,
}

impl Drop for BusyGuest {
    fn drop(&mut self) {
        if self.remove {
            self.env.virsh(&["destroy", &self.domain]);
            self.env.virsh(&["undefine", &self.domain]);
        }
    }
}

fn tempdir() -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("vmshot-bench-rec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

fn secret_file(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// vmshot's config: the store and recordings in `dir` (budget above the
/// largest run), Alibaba for the screenshots, Huawei with a static admin
/// token for the recordings.
fn config(opts: &Options, dir: &Path, load: &[String], busy: &str) -> Result<String, String> {
    let keys = servers::write_keys(dir, KEY_ID, SECRET)?;
    let huawei_keys = dir.join("huawei-keys.toml");
    secret_file(
        &huawei_keys,
        &format!("[[key]]\nid = \"HW{KEY_ID}\"\nsecret = \"{SECRET}\"\nproject = \"{PROJECT}\"\n"),
    )?;
    let tokens = dir.join("huawei-tokens.toml");
    secret_file(
        &tokens,
        &format!(
            "[[token]]\nid = \"{TOKEN}\"\nuser_id = \"bench\"\nproject_id = \"{PROJECT}\"\nroles = [\"admin\"]\n"
        ),
    )?;
    let most = opts.guests.iter().max().copied().unwrap_or(1);
    let extra = format!(
        "[store]\npath = \"{store}\"\n\
         [recordings]\nenabled = true\ndir = \"{recs}\"\nfps = {fps:?}\nmax_concurrent = {conc}\n\
         max_disk_mb = 20480\nmax_recording_mb = 2048\n\
         [huawei]\nenabled = true\ncredentials_file = \"{keys}\"\ntokens_file = \"{tokens}\"\n",
        store = dir.join("vmshot.db").display(),
        recs = dir.join("recordings").display(),
        fps = opts.fps,
        conc = most + 1,
        keys = huawei_keys.display(),
        tokens = tokens.display(),
    );
    let mut domains = load.to_vec();
    domains.push(busy.to_owned());
    servers::vmshot_config(&opts.uri, &keys, &domains, &[&extra])
}

fn auth() -> [(&'static str, &'static str); 2] {
    [
        ("X-Auth-Token", TOKEN),
        ("Content-Type", "application/json"),
    ]
}

/// Waits until the Huawei dialect answers a list (the store and recordings
/// are up).
fn wait_for_huawei(client: &mut Client) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = client.request(
            "GET",
            &format!("/v2/{PROJECT}/screen-records?limit=1"),
            &auth(),
            b"",
        )?;
        if reply.status == 200 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the Huawei dialect does not answer: HTTP {} {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn json(reply: &client::Reply, what: &str) -> Result<serde_json::Value, String> {
    if reply.status != 200 {
        return Err(format!(
            "{what}: HTTP {} {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        ));
    }
    serde_json::from_slice(&reply.body).map_err(|e| format!("{what}: not JSON: {e}"))
}

/// Records `domains` together for the run's time; measures CPU against the
/// idle baseline, the files' growth, and (with `p50_over`) screenshot p50
/// meanwhile.
fn record(
    opts: &Options,
    server: &Server,
    dir: &Path,
    label: &str,
    domains: &[String],
    idle: Baseline,
    p50_over: Option<&Vec<String>>,
) -> Result<Run, String> {
    let mut client = Client::new(server.addr);
    let qemus: Vec<u32> = domains.iter().filter_map(|d| procfs::qemu_pid(d)).collect();
    let body =
        |d: &str| serde_json::json!({"desktop_id": d, "type": "FULL", "fps": opts.fps}).to_string();
    let mut ids = Vec::new();
    for domain in domains {
        let reply = client.request(
            "POST",
            &format!("/v2/{PROJECT}/screen-records"),
            &auth(),
            body(domain).as_bytes(),
        )?;
        let record = json(&reply, &format!("start recording {domain}"))?;
        ids.push(
            record["id"]
                .as_str()
                .ok_or("a started record without an id")?
                .to_owned(),
        );
    }
    let files = dir.join("recordings");
    // The first frame of each is a key frame: past the first second, what
    // the files gain is what an hour costs.
    std::thread::sleep(Duration::from_secs(2));
    let first = bytes_of(&files, &ids);
    let mut p50 = None;
    let cpu = Cpu::measure(server.pid(), &qemus, || match p50_over {
        Some(guests) => {
            let start = Instant::now();
            p50 = Some(screenshot_p50(&mut client, guests, opts.requests));
            let left = opts.seconds - start.elapsed().as_secs_f64();
            if left > 0.0 {
                std::thread::sleep(Duration::from_secs_f64(left));
            }
        }
        None => std::thread::sleep(Duration::from_secs_f64(opts.seconds)),
    });
    let last = bytes_of(&files, &ids);
    let mut frames = 0;
    for id in &ids {
        let reply = client.request(
            "POST",
            &format!("/v2/{PROJECT}/screen-records/{id}/stop"),
            &auth(),
            b"",
        )?;
        let record = json(&reply, &format!("stop recording {id}"))?;
        if record["status"] != "REC_COMPLETED" || !record["video_file_sha256"].is_string() {
            return Err(format!("recording {id} did not complete: {record}"));
        }
        frames += frames_of(&files, id);
    }
    let n = domains.len();
    Ok(Run {
        label: label.to_owned(),
        guests: n,
        idle,
        bytes_per_hour: (last.saturating_sub(first)) as f64 / cpu.wall * 3600.0 / n as f64,
        first_bytes: first as f64 / n as f64,
        frames,
        cpu,
        p50_ms: p50.transpose()?,
    })
}

/// Bytes of the video and events files of `ids` so far.
fn bytes_of(dir: &Path, ids: &[String]) -> u64 {
    let mut total = 0;
    for id in ids {
        for name in [format!("{id}.mp4"), format!("{id}.events.jsonl")] {
            total += std::fs::metadata(dir.join(name)).map_or(0, |m| m.len());
        }
    }
    total
}

/// Frames written, from the events file.
fn frames_of(dir: &Path, id: &str) -> u64 {
    std::fs::read_to_string(dir.join(format!("{id}.events.jsonl")))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"type\":\"frame\""))
        .count() as u64
}

/// p50 of `n` GetInstanceScreenshot calls spread over `guests`, in ms.
fn screenshot_p50(client: &mut Client, guests: &[String], n: usize) -> Result<f64, String> {
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let domain = &guests[i % guests.len()];
        let query = signing::signed_query(
            "GET",
            KEY_ID,
            SECRET,
            &[
                ("Action", "GetInstanceScreenshot"),
                ("RegionId", "cn-bench"),
                ("InstanceId", domain),
            ],
        );
        let start = Instant::now();
        let reply = client.get(&format!("/?{query}"))?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        check_screenshot(&reply).map_err(|e| format!("screenshot of {domain}: {e}"))?;
        times.push(ms);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn report(opts: &Options, idle: &Cpu, idle_guests: usize, p50_idle: f64, runs: &[Run]) -> String {
    let mut out = String::new();
    let date = time::OffsetDateTime::now_utc().date();
    out.push_str(&format!(
        "### Latest run\n\n{date}, {}.\n\n`{}`\n\n",
        machine(),
        opts.command_line
    ));
    out.push_str(&format!(
        "FULL recordings at {} fps for {:.0} s each; CPU in % of one core per recorded \
         guest, above the same processes with nothing recorded (vmshot {:.2} %, each \
         load guest's QEMU {:.2} %).\n\n",
        opts.fps,
        opts.seconds,
        Cpu::pct(idle.vmshot, idle.wall, 1),
        Cpu::pct(idle.qemu, idle.wall, idle_guests),
    ));
    out.push_str(
        "| guests recording | vmshot CPU / guest | QEMU CPU / guest | frames | first frame, bytes / guest | bytes / guest-hour after it | screenshot p50 |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    out.push_str(&format!("| none | | | | | | {p50_idle:.2} ms |\n"));
    for run in runs {
        let vmshot =
            (Cpu::pct(run.cpu.vmshot, run.cpu.wall, 1) - run.idle.vmshot) / run.guests as f64;
        let qemu = Cpu::pct(run.cpu.qemu, run.cpu.wall, run.guests) - run.idle.qemu_each;
        out.push_str(&format!(
            "| {} | {:.2} % | {:.2} % | {} | {} | {} | {} |\n",
            run.label,
            vmshot,
            qemu,
            run.frames,
            human(run.first_bytes),
            human(run.bytes_per_hour),
            run.p50_ms.map_or(String::new(), |p| format!(
                "{p:.2} ms ({:.2}×)",
                p / p50_idle
            )),
        ));
    }
    out
}

fn human(bytes: f64) -> String {
    if bytes >= 1e6 {
        format!("{:.1} MB", bytes / 1e6)
    } else if bytes >= 1e3 {
        format!("{:.1} kB", bytes / 1e3)
    } else {
        format!("{bytes:.0} B")
    }
}

fn machine() -> String {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
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
    format!("{nproc} CPUs ({cpu}), QEMU TCG")
}
