//! The store benchmark of issue 9: a fresh store filled with N instance
//! actions (see data.rs), then its size on disk, how long the daemon's open
//! takes on it, and the latency of the calls Nova's `os-instance-actions`
//! makes (listing pages, a marker, changes-since; one action with its
//! events) and of recording one more capture; at each N in one run, as a
//! table whose ratio column is the largest N over the smallest.
//!
//! Every call goes through `vmshot::store`'s own API, on its own thread and
//! queue, as the daemon makes it: the figures include that hop. The fill
//! uses `Store::record_actions`, one transaction a batch; everything else
//! is what a capture or a listing does.
//!
//! Shared by `benches/store/main.rs` and `tests/bench_smoke.rs` (a tiny run
//! in CI); its submodule is named by path so that both find it.
#![allow(dead_code)]

#[path = "data.rs"]
mod data;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use vmshot::store::{ActionPage, Store, StoreError, StoreSettings};

use data::{Generator, Rng, Sample};

/// The command line of `cargo bench --bench store -- [OPTIONS]`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "store",
    override_usage = "cargo bench --bench store -- [OPTIONS]",
    about = "The durable store with N recorded captures: size on disk, open time, and the \
             latency of Nova's action listing and of recording a capture, at each N"
)]
pub struct Args {
    /// Store sizes, in actions [default: 10000,1000000].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    actions: Option<Vec<u64>>,
    /// Instances the actions are spread over [default: 100].
    #[arg(long, value_name = "N")]
    domains: Option<usize>,
    /// Calls of each kind measured [default: 300].
    #[arg(long, value_name = "N")]
    queries: Option<usize>,
    /// Actions a transaction while filling [default: 5000].
    #[arg(long, value_name = "N")]
    batch: Option<usize>,
    /// Where the stores are made, one directory each [default: target/tmp].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Leave the stores behind, to look into them with sqlite3.
    #[arg(long)]
    keep: bool,
    /// Added by `cargo bench` to every bench program; means nothing here.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub actions: Vec<u64>,
    pub domains: usize,
    pub queries: usize,
    pub batch: usize,
    pub dir: PathBuf,
    pub keep: bool,
    /// How this run was started, for the report.
    pub command_line: String,
}

impl Options {
    /// The full run, its stores under `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            actions: vec![10_000, 1_000_000],
            domains: 100,
            queries: 300,
            batch: 5000,
            dir,
            keep: false,
            command_line: "cargo bench --bench store".into(),
        }
    }

    pub fn from_args(args: Args, raw: &[String], dir: PathBuf) -> Result<Self, String> {
        let mut o = Self::new(args.dir.unwrap_or(dir));
        o.actions = args.actions.unwrap_or(o.actions);
        o.domains = args.domains.unwrap_or(o.domains);
        o.queries = args.queries.unwrap_or(o.queries);
        o.batch = args.batch.unwrap_or(o.batch);
        o.keep = args.keep;
        if o.actions.is_empty() || o.actions.contains(&0) {
            return Err("--actions: every size must be at least 1".into());
        }
        if o.domains == 0 || o.queries == 0 || o.batch == 0 {
            return Err("--domains, --queries and --batch must be at least 1".into());
        }
        let shown: Vec<&str> = raw
            .iter()
            .map(String::as_str)
            .filter(|a| *a != "--bench")
            .collect();
        if !shown.is_empty() {
            o.command_line = format!("cargo bench --bench store -- {}", shown.join(" "));
        }
        Ok(o)
    }
}

/// What is measured of each call, in table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `record_action`: one capture's record, one transaction, one fsync.
    Record,
    /// An instance's first page, `?limit=50`.
    First50,
    /// An instance's first page at the default limit (1000).
    FirstDefault,
    /// The page after a marker anywhere in the instance's history, limit 50.
    AfterMarker,
    /// `?changes-since=` one hour before the newest action.
    SinceHour,
    /// `?changes-since=` after the newest action: a poll that finds nothing.
    SinceNothing,
    /// `GET .../os-instance-actions/{request_id}`: one action with its events.
    Get,
}

impl Call {
    pub const ALL: [Call; 7] = [
        Call::Record,
        Call::First50,
        Call::FirstDefault,
        Call::AfterMarker,
        Call::SinceHour,
        Call::SinceNothing,
        Call::Get,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Call::Record => "record_action, one capture (one fsync)",
            Call::First50 => "list, first page, limit 50",
            Call::FirstDefault => "list, first page, default limit (1000)",
            Call::AfterMarker => "list, page after a random marker, limit 50",
            Call::SinceHour => "list, changes-since 1 h before the newest",
            Call::SinceNothing => "list, changes-since after the newest (empty)",
            Call::Get => "get_action, with its events",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub p50: Duration,
    pub p99: Duration,
    /// Actions (or events, for `Get`) per answer, on average.
    pub rows: f64,
}

impl Stats {
    fn of(mut times: Vec<Duration>, rows: usize) -> Self {
        times.sort();
        let n = times.len().max(1);
        Self {
            p50: pct(&times, 50.0),
            p99: pct(&times, 99.0),
            rows: rows as f64 / n as f64,
        }
    }
}

/// Nearest rank, as benches/*.py compute it.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// One store size.
#[derive(Debug, Clone)]
pub struct Measured {
    pub actions: u64,
    pub fill: Duration,
    /// The database file once closed (the WAL checkpointed into it).
    pub db_bytes: u64,
    /// `Store::open` on it: quick check, migrations, write probe.
    pub open: Duration,
    pub calls: Vec<(Call, Stats)>,
}

impl Measured {
    pub fn stats(&self, call: Call) -> &Stats {
        &self
            .calls
            .iter()
            .find(|(c, _)| *c == call)
            .expect("measured")
            .1
    }
}

pub struct Report {
    pub sizes: Vec<Measured>,
    /// The Markdown section for docs/BENCHMARKS.md.
    pub table: String,
}

pub fn run(opts: &Options) -> Result<Report, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| format!("tokio: {e}"))?;
    let mut sizes = Vec::new();
    for &n in &opts.actions {
        eprintln!("store bench: {n} actions over {} instances", opts.domains);
        sizes.push(runtime.block_on(measure(opts, n))?);
    }
    let table = table(opts, &sizes);
    println!("{table}");
    Ok(Report { sizes, table })
}

fn failed(what: &str) -> impl Fn(StoreError) -> String + '_ {
    move |e| format!("{what}: {e}")
}

async fn measure(opts: &Options, n: u64) -> Result<Measured, String> {
    let dir = opts
        .dir
        .join(format!("store-bench-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let settings = StoreSettings::new(dir.join("vmshot.db"));
    let result = measure_in(opts, n, settings).await;
    if !opts.keep {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("store bench: kept {}", dir.display());
    }
    result
}

async fn measure_in(opts: &Options, n: u64, settings: StoreSettings) -> Result<Measured, String> {
    // The newest action a second ago; `max_age` of history behind it.
    let now = now();
    let mut data = Generator::new(
        n,
        opts.domains,
        now - Duration::from_secs(1),
        settings.max_age,
        opts.queries as u64 * 4,
    );
    let store = Store::open(settings.clone())
        .await
        .map_err(failed("open"))?;
    let started = Instant::now();
    while let Some(batch) = data.batch(opts.batch) {
        store
            .record_actions(batch)
            .await
            .map_err(failed("record_actions"))?;
    }
    let fill = started.elapsed();
    drop(store);

    // Reopened as the daemon opens it at start; the file measured then, its
    // WAL checkpointed away by the close.
    let (store, open) = reopen(&settings).await?;
    let db_bytes = std::fs::metadata(&settings.path)
        .map_err(|e| format!("{}: {e}", settings.path.display()))?
        .len();

    let mut rng = Rng::new(n);
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); Call::ALL.len()];
    let mut rows = vec![0usize; Call::ALL.len()];
    let hour_ago = data.last() - Duration::from_secs(3600);
    // Past the newest action's last event (events end within 65 ms).
    let after_last = data.last() + Duration::from_secs(1);
    // Captures recorded now go to an instance of their own, so that the
    // listings above see the fill alone.
    let own = data::Domain {
        uuid: rng.uuid(),
        name: "vm-bench".into(),
        project: None,
    };
    // Calls alternate kinds, so that drift on the machine hits all alike.
    for q in 0..opts.queries {
        let sample = data.samples[rng.below(data.samples.len() as u64) as usize].clone();
        let d = rng.below(opts.domains as u64) as usize;
        let domain = data.domains[d].uuid.clone();
        let in_domain = data.counts[d];
        for (k, call) in Call::ALL.iter().enumerate() {
            let page = |limit, marker, since| ActionPage {
                limit,
                marker,
                changes_since: since,
                changes_before: None,
            };
            let t = Instant::now();
            let got = match call {
                Call::Record => {
                    let (action, events) =
                        data::capture(&mut rng, &own, format!("req-bench-{q}"), now);
                    store
                        .record_action(action, events)
                        .await
                        .map_err(failed("record_action"))?;
                    1
                }
                Call::First50 => {
                    expect_page(
                        &store,
                        &domain,
                        page(Some(50), None, None),
                        in_domain.min(50),
                    )
                    .await?
                }
                Call::FirstDefault => {
                    expect_page(&store, &domain, page(None, None, None), in_domain.min(1000))
                        .await?
                }
                Call::AfterMarker => after_marker(&store, &data, &sample).await?,
                Call::SinceHour => since(&store, &domain, page(None, None, Some(hour_ago))).await?,
                Call::SinceNothing => {
                    expect_page(&store, &domain, page(None, None, Some(after_last)), 0).await?
                }
                Call::Get => {
                    let uuid = &data.domains[sample.domain].uuid;
                    let action = store
                        .get_action(uuid, &sample.request_id)
                        .await
                        .map_err(failed("get_action"))?
                        .ok_or_else(|| format!("get_action: {} not found", sample.request_id))?;
                    if action.events.is_empty() || action.start_time != sample.start {
                        return Err(format!("get_action: {} came back wrong", sample.request_id));
                    }
                    action.events.len()
                }
            };
            times[k].push(t.elapsed());
            rows[k] += got;
        }
    }
    let calls = Call::ALL
        .iter()
        .zip(times.into_iter().zip(rows))
        .map(|(c, (t, r))| (*c, Stats::of(t, r)))
        .collect();
    Ok(Measured {
        actions: n,
        fill,
        db_bytes,
        open,
        calls,
    })
}

/// Opens once the previous handle's thread has let go of the lock; the
/// time of the open that succeeded.
async fn reopen(settings: &StoreSettings) -> Result<(Store, Duration), String> {
    for _ in 0..500 {
        let t = Instant::now();
        match Store::open(settings.clone()).await {
            Ok(store) => return Ok((store, t.elapsed())),
            Err(StoreError::Locked { .. }) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => return Err(format!("reopen: {e}")),
        }
    }
    Err("reopen: the store stayed locked".into())
}

async fn expect_page(
    store: &Store,
    domain: &str,
    page: ActionPage,
    expected: u64,
) -> Result<usize, String> {
    let got = store
        .list_actions(domain, page.clone())
        .await
        .map_err(failed("list_actions"))?;
    if got.len() as u64 != expected {
        return Err(format!(
            "list_actions {page:?}: {} actions, not {expected}",
            got.len()
        ));
    }
    Ok(got.len())
}

async fn after_marker(store: &Store, data: &Generator, marker: &Sample) -> Result<usize, String> {
    let page = ActionPage {
        limit: Some(50),
        marker: Some(marker.request_id.clone()),
        ..ActionPage::default()
    };
    let got = store
        .list_actions(&data.domains[marker.domain].uuid, page)
        .await
        .map_err(failed("list_actions after a marker"))?;
    if let Some(a) = got.iter().find(|a| a.start_time > marker.start) {
        return Err(format!(
            "list_actions: {} is after its marker",
            a.request_id
        ));
    }
    Ok(got.len())
}

async fn since(store: &Store, domain: &str, page: ActionPage) -> Result<usize, String> {
    let from = page.changes_since.expect("a changes-since page");
    let got = store
        .list_actions(domain, page)
        .await
        .map_err(failed("list_actions changes-since"))?;
    if let Some(a) = got.iter().find(|a| a.updated_at < from) {
        return Err(format!(
            "list_actions: {} is older than asked",
            a.request_id
        ));
    }
    Ok(got.len())
}

fn now() -> OffsetDateTime {
    // Whole microseconds, as the store keeps times.
    let t = OffsetDateTime::now_utc();
    t - Duration::from_nanos(u64::from(t.nanosecond() % 1000))
}

fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1e3;
    if v < 10.0 {
        format!("{v:.3}")
    } else {
        format!("{v:.1}")
    }
}

fn ratio(big: f64, small: f64) -> String {
    if small > 0.0 {
        format!("{:.2}×", big / small)
    } else {
        "—".into()
    }
}

/// With thousands separators: 1,000,000.
fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn table(opts: &Options, sizes: &[Measured]) -> String {
    let mut t = String::new();
    let date = OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute] UTC"
        ))
        .unwrap_or_default();
    t += &format!("Command: `{}`\n\nDate: {date}\n\n", opts.command_line);
    t += &format!("Machine: {}\n\n", machine(&opts.dir));
    t += &format!(
        "Each store: {} instances, the actions spread evenly over 7 days (one in \
         100 a failed grab, one event; the rest two), filled {} a transaction; \
         then reopened, and {} calls of each kind, kinds alternating.\n\n",
        opts.domains,
        count(opts.batch as u64),
        opts.queries
    );
    let (first, last) = (&sizes[0], &sizes[sizes.len() - 1]);
    t += "| measure |";
    for m in sizes {
        t += &format!(" {} actions |", count(m.actions));
    }
    t += " ratio |\n|---|";
    t += &"---:|".repeat(sizes.len() + 1);
    t += "\n";
    let mut row = |name: &str, cell: &dyn Fn(&Measured) -> String, r: String| {
        t += &format!("| {name} |");
        for m in sizes {
            t += &format!(" {} |", cell(m));
        }
        t += &format!(" {r} |\n");
    };
    let secs = |m: &Measured| m.fill.as_secs_f64();
    row(
        "fill (s)",
        &|m| format!("{:.1}", secs(m)),
        ratio(secs(last), secs(first)),
    );
    let rate = |m: &Measured| m.actions as f64 / secs(m).max(1e-9);
    row(
        "fill rate (actions/s)",
        &|m| format!("{:.0}", rate(m)),
        ratio(rate(last), rate(first)),
    );
    let mb = |m: &Measured| m.db_bytes as f64 / 1e6;
    row(
        "database file (MB)",
        &|m| format!("{:.1}", mb(m)),
        ratio(mb(last), mb(first)),
    );
    let per = |m: &Measured| m.db_bytes as f64 / m.actions as f64;
    row(
        "bytes per action (with its events and indexes)",
        &|m| format!("{:.0}", per(m)),
        ratio(per(last), per(first)),
    );
    let open = |m: &Measured| m.open.as_secs_f64();
    row(
        "open: quick check, migrations (ms)",
        &|m| ms(m.open),
        ratio(open(last), open(first)),
    );
    for call in Call::ALL {
        let p = |m: &Measured, p99: bool| {
            let s = m.stats(call);
            if p99 {
                s.p99
            } else {
                s.p50
            }
        };
        let f = |m: &Measured, p99| p(m, p99).as_secs_f64();
        row(
            &format!("{}: p50 / p99 (ms)", call.label()),
            &|m| format!("{} / {}", ms(p(m, false)), ms(p(m, true))),
            format!(
                "{} / {}",
                ratio(f(last, false), f(first, false)),
                ratio(f(last, true), f(first, true))
            ),
        );
        if !matches!(call, Call::Record) {
            let unit = if call == Call::Get {
                "events"
            } else {
                "actions"
            };
            row(
                &format!("{}: {unit} per answer", call.label()),
                &|m| format!("{:.1}", m.stats(call).rows),
                String::new(),
            );
        }
    }
    t += &format!(
        "\nRatios are {} ÷ {} actions.\n",
        count(last.actions),
        count(first.actions)
    );
    t
}

/// CPUs, memory, kernel, SQLite, and the file system the stores were on.
fn machine(dir: &Path) -> String {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or("?".into(), |kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or("?".into(), |s| s.trim().to_owned());
    let debian =
        std::fs::read_to_string("/etc/debian_version").map_or("?".into(), |s| s.trim().to_owned());
    let fs = Command::new("findmnt")
        .args(["-n", "-o", "FSTYPE,SOURCE", "--target"])
        .arg(dir)
        .output()
        .ok()
        .map(|o| {
            let out = String::from_utf8_lossy(&o.stdout).into_owned();
            out.split_whitespace().collect::<Vec<_>>().join(" on ")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "?".into());
    format!(
        "{nproc} CPUs, {mem}, Debian {debian}, kernel {kernel}, SQLite {} (bundled), \
         stores on {fs}",
        rusqlite::version()
    )
}
