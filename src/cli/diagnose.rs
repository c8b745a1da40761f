//! `vmshot diagnose`: why a guest hangs, as a verdict with its evidence. The
//! CLI has no watcher behind it, so it watches the screen itself for a short
//! window (`--watch`): a screen a rule explains ends it early; one that did
//! not change for the whole window and shows nothing known is `stuck`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use super::{Connection, Failure};
use crate::service::diagnosis::{Diagnosis, Source, MAX_WATCH};

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    #[command(flatten)]
    connection: Connection,
    /// Domain name or UUID.
    domain: String,
    /// Print the diagnosis as one JSON object.
    #[arg(long)]
    json: bool,
    /// Watch the screen for at most this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=MAX_WATCH.as_secs()))]
    watch: u64,
    /// Write the screen the verdict was read from to FILE (its SHA-256 is
    /// the evidence's).
    #[arg(long, value_name = "FILE")]
    screenshot: Option<PathBuf>,
}

pub(super) async fn run(args: Args) -> Result<(), Failure> {
    let uri = args.connection.uri.clone();
    let service = args.connection.service(Duration::ZERO);
    let failure = |e| Failure::from_service(e, &uri);
    let domain = service.find(&args.domain).await.map_err(failure)?;
    let diagnosis = service
        .diagnosis(&domain, Duration::from_secs(args.watch))
        .await
        .map_err(failure)?;
    if let (Some(path), Some(image)) = (&args.screenshot, &diagnosis.screenshot) {
        std::fs::write(path, image.as_slice())
            .map_err(|e| Failure::new(10, format!("cannot write {}: {e}.", path.display())))?;
    }
    let text = if args.json {
        serde_json::to_string(&diagnosis).expect("a diagnosis serializes") + "\n"
    } else {
        human(&diagnosis)
    };
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .map_err(|e| Failure::new(10, format!("cannot write to stdout: {e}.")))
}

fn human(d: &Diagnosis) -> String {
    let since = d
        .since
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut out = format!("{}: {}", d.domain, d.verdict);
    if let Some(rule) = &d.evidence.rule {
        out += &format!(" (rule {rule})");
    }
    out += &format!(
        "\n  screen unchanged for at least {} s, since {since}\n",
        d.unchanged_seconds
    );
    for line in &d.evidence.lines {
        let source = match line.source {
            Source::Screen => "screen",
            Source::Serial => "serial",
        };
        out += &format!("  {source}: {}\n", line.text);
    }
    if d.evidence.blank {
        out += "  the screen is blank\n";
    }
    if !d.evidence.screen_read && !d.evidence.blank {
        out += "  the screen's text was not read (is tesseract-ocr installed?)\n";
    }
    if let Some(sha) = &d.evidence.screenshot_sha256 {
        out += &format!("  screenshot sha256 {sha}\n");
    }
    out
}
