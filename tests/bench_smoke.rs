//! A quick run of the benchmark program (benches/screenshots): two load
//! guests, a handful of requests, the table to a temp file. It checks that the
//! program runs end to end, not how fast anything is; and that its default
//! anchor is the baseline in this repository, speaking the interface the
//! benchmark and the scripts in benches/ rely on. And a tiny run of the store
//! benchmark (benches/store), so that it cannot rot either.

mod common;

#[path = "../benches/screenshots/run.rs"]
mod run;
#[path = "../benches/store/run.rs"]
mod store_run;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::fixtures::tempdir;
use common::host::{ensure_libvirtd, uri, wait_until, LibvirtdLock};

/// The baseline in this repository, unless `$VMSHOT_ANCHOR` names another.
fn default_anchor_is_in_the_repository(opts: &run::Options) {
    if std::env::var_os("VMSHOT_ANCHOR").is_none() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        assert_eq!(opts.anchor, repo.join(run::BASELINE));
        assert!(opts.anchor.is_file(), "{}", opts.anchor.display());
    }
}

/// A child process killed when dropped, so a failed assertion leaves none.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One raw request to `port`; the whole reply, read until the server closes.
fn exchange(port: u16, request: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut reply = String::new();
    // read_to_string returns only once the server has closed the connection:
    // the baseline answers one request per connection, as http.server does.
    stream.read_to_string(&mut reply).unwrap();
    reply
}

/// The JSON body of a reply.
fn body(reply: &str) -> serde_json::Value {
    let (_, body) = reply.split_once("\r\n\r\n").expect("a head and a body");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {reply}"))
}

#[test]
fn the_baseline_serves_the_interface_the_benchmark_uses() {
    let _lock = LibvirtdLock::shared();
    ensure_libvirtd();
    let opts = run::Options::new(env!("CARGO_BIN_EXE_vmshot").into());
    default_anchor_is_in_the_repository(&opts);
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let mut child = Reaped(
        Command::new(&opts.python)
            .arg(&opts.anchor)
            .args(["serve", &port.to_string()])
            .env("LIBVIRT_URI", uri())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("the baseline listens", Duration::from_secs(30), || {
        assert!(child.0.try_wait().unwrap().is_none(), "the baseline exited");
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });

    // HTTP/1.0 and a close after the reply, even to an HTTP/1.1 request.
    let missing = exchange(
        port,
        "GET /?Action=GetInstanceScreenshot HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(missing.starts_with("HTTP/1.0 400 "), "{missing}");
    assert!(
        missing.contains("Content-Type: application/json"),
        "{missing}"
    );
    assert_eq!(body(&missing)["Code"], "MissingParameter");
    assert_eq!(body(&missing)["RequestId"].as_str().map(str::len), Some(36));
    let other = exchange(
        port,
        "GET /?Action=RebootInstance&InstanceId=x HTTP/1.1\r\n\r\n",
    );
    assert_eq!(body(&other)["Code"], "MissingParameter", "{other}");

    // An unknown domain, named in a form body (as POSTing SDKs send it), or
    // with the action in a header (as the Tea SDKs send it): libvirt's error.
    let form = "InstanceId=vmshot-fx-no-such-domain";
    let absent = exchange(
        port,
        &format!(
            "POST /?Action=GetInstanceScreenshot HTTP/1.1\r\nContent-Length: {}\r\n\r\n{form}",
            form.len()
        ),
    );
    assert!(absent.starts_with("HTTP/1.0 404 "), "{absent}");
    assert_eq!(body(&absent)["Code"], "InvalidParameter");
    assert!(
        body(&absent)["Message"]
            .as_str()
            .is_some_and(|m| m.contains("vmshot-fx-no-such-domain")),
        "{absent}"
    );
    let header = exchange(
        port,
        "GET /?InstanceId=vmshot-fx-no-such-domain HTTP/1.1\r\nx-acs-action: GetInstanceScreenshot\r\n\r\n",
    );
    assert!(header.starts_with("HTTP/1.0 404 "), "{header}");

    // Anything else on the command line: the usage, and a failure.
    let usage = Command::new(&opts.python)
        .arg(&opts.anchor)
        .arg("help")
        .output()
        .unwrap();
    assert!(!usage.status.success());
    let usage = String::from_utf8_lossy(&usage.stderr);
    assert!(
        usage.contains("bench DOMAIN [N]") && usage.contains("serve PORT"),
        "{usage}"
    );
}

/// The options as `cargo bench --bench screenshots -- ARGS` would get them.
fn options(args: &[&str]) -> Result<run::Options, String> {
    let raw: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let parsed = <run::Args as clap::Parser>::try_parse_from(
        std::iter::once("screenshots").chain(args.iter().copied()),
    )
    .map_err(|e| e.to_string())?;
    run::Options::from_args(parsed, &raw, "vmshot".into())
}

#[test]
fn options_given_with_quick_win_and_variants_replace_the_default() {
    let opts = options(&[
        "--quick",
        "--clients",
        "3,5",
        "--phases",
        "http,load",
        "--variant",
        "big=capture.max_concurrent = 8",
        "--output",
        "-",
        "--bench",
    ])
    .unwrap();
    assert_eq!((opts.requests, opts.clients), (5, vec![3, 5]));
    assert!(opts.phase_http && !opts.phase_pipeline && opts.phase_load);
    assert_eq!(
        opts.variants,
        [("big".to_owned(), "capture.max_concurrent = 8".to_owned())]
    );
    assert_eq!(opts.output, None);
    assert_eq!(
        opts.command_line,
        "cargo bench --bench screenshots -- --quick --clients 3,5 --phases http,load \
         --variant 'big=capture.max_concurrent = 8' --output -"
    );
    assert!(options(&["--phases", "http,nap"]).is_err());
    assert!(options(&["--requests", "many"]).is_err());
    assert!(
        options(&["--load-guests", "0"]).is_err(),
        "the load phase needs guests"
    );
}

#[test]
fn benchmark_quick_run_produces_the_table() {
    let _lock = LibvirtdLock::shared();
    ensure_libvirtd();
    let out = tempdir().join("BENCHMARKS.md");
    let mut opts = run::Options::new(env!("CARGO_BIN_EXE_vmshot").into()).quick();
    // One screen is enough to go through every phase; the pattern guest is
    // up in a few seconds (the panic guest takes minutes under TCG).
    opts.screens = vec!["pattern".into()];
    opts.output = Some(out.clone());
    opts.uri = uri();
    opts.command_line = "cargo test --test bench_smoke (quick)".into();
    default_anchor_is_in_the_repository(&opts);

    let report = run::run(&opts).unwrap_or_else(|e| panic!("the benchmark failed: {e}"));

    for server in ["anchor", "vmshot"] {
        assert!(
            report.answered.get(server).is_some_and(|n| *n > 0),
            "{server} answered no screenshot: {:?}",
            report.answered
        );
        assert_eq!(
            report.errors.get(server),
            Some(&0),
            "{server} failed requests: {:?}",
            report.error_samples
        );
    }
    let written = std::fs::read_to_string(&out).unwrap();
    let begin = written.find(run::table::BEGIN).expect("begin marker");
    let end = written.find(run::table::END).expect("end marker");
    let section = &written[begin..end];
    for row in [
        "HTTP p50, 1 client, 1024x768 pattern",
        "decode+encode+hash+base64 p50",
        "4 clients / 2 guests: throughput",
        "RSS idle",
        "Machine: ",
        "| measure | anchor | vmshot | ratio |",
    ] {
        assert!(section.contains(row), "no {row:?} in:\n{section}");
    }
    // Every measured row has a figure on both sides.
    for row in &report.table.rows {
        assert!(
            row.anchor.is_some() && row.vmshot[0].is_some(),
            "row {:?} lacks a figure",
            row.measure
        );
    }
    let _ = std::fs::remove_dir_all(out.parent().unwrap());
}

/// Two small stores, a few calls of each kind: the program runs end to end,
/// and its listings answer what the fill put in (the run itself fails on a
/// page of the wrong length or order); nothing about speed.
#[test]
fn store_benchmark_tiny_run_produces_the_table() {
    use store_run::Call;
    let dir = tempdir();
    let mut opts = store_run::Options::new(dir.clone());
    opts.actions = vec![300, 2000];
    opts.domains = 10;
    opts.queries = 20;
    opts.batch = 250;
    opts.command_line = "cargo test --test bench_smoke (tiny)".into();

    let report = store_run::run(&opts).unwrap_or_else(|e| panic!("the store bench failed: {e}"));

    assert_eq!(
        report.sizes.iter().map(|m| m.actions).collect::<Vec<_>>(),
        [300, 2000]
    );
    let (small, big) = (&report.sizes[0], &report.sizes[1]);
    assert!(big.db_bytes > small.db_bytes && small.db_bytes > 0);
    // About 200 actions an instance: a full page of 50, all of them at the
    // default limit, none newer than the newest.
    assert_eq!(big.stats(Call::First50).rows, 50.0);
    let all = big.stats(Call::FirstDefault).rows;
    assert!((100.0..=400.0).contains(&all), "{all}");
    assert_eq!(big.stats(Call::SinceNothing).rows, 0.0);
    assert!(big.stats(Call::AfterMarker).rows > 0.0);
    let events = big.stats(Call::Get).rows;
    assert!((1.0..=2.0).contains(&events), "{events}");
    for call in Call::ALL {
        assert!(big.stats(call).p50 > std::time::Duration::ZERO);
        assert!(
            report.table.contains(call.label()),
            "no {:?} in:\n{}",
            call.label(),
            report.table
        );
    }
    assert!(report
        .table
        .contains("| measure | 300 actions | 2,000 actions | ratio |"));
    // The stores are gone unless --keep.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}
