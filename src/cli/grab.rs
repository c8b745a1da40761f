//! `vmshot grab`: one screen to a file, one JSON line to stdout.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use super::{Connection, Failure};
use crate::capture::{JpegSettings, Output, Shot, SourceFormat, Subsampling};
use crate::service::ScreenshotRequest;

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    #[command(flatten)]
    connection: Connection,
    /// Domain name or UUID.
    domain: String,
    /// Where to write the image; '-' for stdout (the JSON line then goes to
    /// stderr). Default: DOMAIN-<UTC timestamp>.jpg in the current directory.
    #[arg(short = 'o', long = "output")]
    output: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Jpeg)]
    format: Format,
    /// JPEG quality, 1 to 100.
    #[arg(short = 'q', long, default_value_t = 80, value_parser = clap::value_parser!(u8).range(1..=100))]
    quality: u8,
    /// JPEG chroma subsampling.
    #[arg(long, value_enum, default_value_t = Chroma::S420)]
    subsampling: Chroma,
    /// Which screen (video head) of the domain.
    #[arg(long, default_value_t = 0)]
    screen: u32,
    /// Wake the guest first: a suspended (pmsuspended) guest is woken, a running
    /// one gets a Shift key press so that a blanked console redraws.
    #[arg(long)]
    wake: bool,
    /// After --wake, how long the guest gets to redraw before the grab.
    #[arg(long, default_value_t = 1500, value_name = "MS")]
    wake_settle_ms: u64,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Jpeg,
    Png,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Chroma {
    #[value(name = "420")]
    S420,
    #[value(name = "422")]
    S422,
    #[value(name = "444")]
    S444,
    #[value(name = "gray")]
    Gray,
}

/// The JSON line printed for each grab. Field order is part of the interface.
#[derive(Debug, Serialize)]
struct Report<'a> {
    domain: &'a str,
    uuid: &'a str,
    width: usize,
    height: usize,
    format: &'static str,
    bytes: usize,
    sha256: String,
    source_format: SourceFormat,
    grab_ms: f64,
    encode_ms: f64,
    captured_at: String,
    file: Option<String>,
}

pub(super) async fn run(args: Args) -> Result<(), Failure> {
    let output = match args.format {
        Format::Png => Output::Png,
        Format::Jpeg => Output::Jpeg(JpegSettings {
            quality: args.quality,
            subsampling: match args.subsampling {
                Chroma::S420 => Subsampling::S420,
                Chroma::S422 => Subsampling::S422,
                Chroma::S444 => Subsampling::S444,
                Chroma::Gray => Subsampling::Gray,
            },
        }),
    };
    let uri = args.connection.uri.clone();
    let service = args
        .connection
        .service(Duration::from_millis(args.wake_settle_ms));
    let failure = |e| Failure::from_service(e, &uri);
    let domain = service.find(&args.domain).await.map_err(failure)?;
    let request = ScreenshotRequest {
        wake: args.wake,
        // A one-off process has no mirror to read from.
        fresh: true,
        throttle: None,
        screen: args.screen,
        output: Some(output),
        caller: None,
    };
    let shot = service.take(&domain, &request).await.map_err(failure)?;

    let to_stdout = args.output.as_deref() == Some(Path::new("-"));
    let file = match args.output {
        _ if to_stdout => None,
        Some(path) => Some(path),
        None => Some(default_file_name(&shot)),
    };
    match &file {
        Some(path) => write_atomically(path, &shot.image).map_err(|e| {
            Failure::new(
                10,
                format!(
                    "cannot write {}: {e}: choose another path with -o.",
                    path.display()
                ),
            )
        })?,
        None => std::io::stdout()
            .lock()
            .write_all(&shot.image)
            .map_err(|e| Failure::new(10, format!("cannot write the image to stdout: {e}.")))?,
    }

    let line =
        serde_json::to_string(&report(&shot, file.as_deref())).expect("a report always serializes");
    if to_stdout {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
    Ok(())
}

fn report<'a>(shot: &'a Shot, file: Option<&Path>) -> Report<'a> {
    let ms = |d: std::time::Duration| (d.as_secs_f64() * 1e5).round() / 1e2;
    Report {
        domain: &shot.domain,
        uuid: &shot.uuid,
        width: shot.width,
        height: shot.height,
        format: shot.output.name(),
        bytes: shot.image.len(),
        sha256: shot.sha256_hex(),
        source_format: shot.source_format,
        grab_ms: ms(shot.timings.grab),
        encode_ms: ms(shot.timings.processing()),
        captured_at: OffsetDateTime::from(shot.captured_at)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        file: file.map(|p| p.display().to_string()),
    }
}

fn default_file_name(shot: &Shot) -> PathBuf {
    let stamp = OffsetDateTime::from(shot.captured_at)
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_default();
    PathBuf::from(format!(
        "{}-{stamp}.{}",
        shot.domain,
        shot.output.extension()
    ))
}

/// Writes beside the target and renames, so that a failed or interrupted grab
/// never leaves half an image under the requested name. A target that exists
/// and is no regular file (`/dev/null`, a FIFO) is written to, never replaced:
/// a rename as root would put a file where a device was.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
        return std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|mut f| f.write_all(bytes));
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
