//! A quick run of the benchmark program (benches/screenshots): two load
//! guests, a handful of requests, the table to a temp file. It checks that the
//! program runs end to end, not how fast anything is.

mod common;

#[path = "../benches/screenshots/run.rs"]
mod run;

use common::fixtures::tempdir;
use common::host::{ensure_libvirtd, uri, LibvirtdLock};

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
