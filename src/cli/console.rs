//! `vmshot console`: what a guest wrote to its serial console, from the log
//! libvirt keeps for it, without attaching to the console (no one connected
//! to it is disturbed).

use std::io::Write;
use std::time::Duration;

use super::{Connection, Failure};
use crate::service::{self, MAX_CONSOLE_BYTES};

/// How often `--follow` looks for more.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    #[command(flatten)]
    connection: Connection,
    /// Domain name or UUID.
    domain: String,
    /// Only the last N lines.
    #[arg(short = 'n', long, value_name = "N")]
    lines: Option<usize>,
    /// Read at most this many bytes from the end of the log (at most 1 MiB).
    #[arg(long, default_value_t = 100 * 1024, value_parser = clap::value_parser!(u64).range(1..=MAX_CONSOLE_BYTES as u64))]
    bytes: u64,
    /// Keep printing what the guest writes, until interrupted.
    #[arg(short = 'f', long)]
    follow: bool,
    /// Print the guest's bytes as they are, terminal escape sequences
    /// included (by default they are removed: a guest's output should not
    /// drive the admin's terminal).
    #[arg(long)]
    raw: bool,
}

pub(super) async fn run(args: Args) -> Result<(), Failure> {
    let uri = args.connection.uri.clone();
    let service = args.connection.service(Duration::ZERO);
    let failure = |e| Failure::from_service(e, &uri);
    let domain = service.find(&args.domain).await.map_err(failure)?;
    // Followed from the end as it was before the tail is read: a line
    // written in between is printed twice rather than not at all.
    let follow = if args.follow {
        Some(service.console_follow(&domain).await.map_err(failure)?)
    } else {
        None
    };
    let output = service
        .console_output(&domain, args.bytes as usize)
        .await
        .map_err(failure)?;
    let text = if args.raw {
        output.bytes
    } else {
        service::without_escapes(&output.bytes)
    };
    let shown = match args.lines {
        Some(n) => service::last_lines(&text, n),
        None => &text[..],
    };
    print(shown)?;
    let Some(mut follow) = follow else {
        return Ok(());
    };
    loop {
        let new = follow.next(MAX_CONSOLE_BYTES).await.map_err(failure)?;
        if new.is_empty() {
            tokio::time::sleep(FOLLOW_EVERY).await;
            continue;
        }
        print(&if args.raw {
            new
        } else {
            service::without_escapes(&new)
        })?;
    }
}

fn print(bytes: &[u8]) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| Failure::new(10, format!("cannot write to stdout: {e}.")))
}
