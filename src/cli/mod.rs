//! `vmshot` on the command line: what an admin runs on a hypervisor host to see
//! a guest's console.

mod console;
mod diagnose;
mod failure;
mod grab;
mod hash_password;
mod list;
mod serve;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

pub use failure::{Failure, EXIT_CODES};

use crate::capture::Output;
use crate::hypervisor::{Hypervisor, Settings};
use crate::service::{self, Screenshots};

#[derive(Debug, Parser)]
#[command(
    name = "vmshot",
    version,
    about = "Screenshots of libvirt/QEMU guest consoles, as JPEG with SHA-256"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Capture a domain's screen to a file and print one JSON line about it.
    Grab(grab::Args),
    /// List every domain with its state and whether it has a display.
    List(list::Args),
    /// Print the end of what a domain wrote to its serial console (from the
    /// log libvirt keeps; nobody on the console is disturbed).
    Console(console::Args),
    /// Say why a domain hangs: a verdict (kernel_panic, no_bootable_device,
    /// bootloader_prompt, emergency_shell, fsck_prompt, blank_screen,
    /// login_prompt, stuck, changing) with the lines that decided it.
    Diagnose(diagnose::Args),
    /// Read a password (one line) on stdin and print its Argon2id PHC string,
    /// for a `password_hash` of the Oracle dialect's credentials file.
    HashPassword(hash_password::Args),
    /// Run the daemon that answers control planes over HTTP(S).
    Serve(serve::Args),
}

/// How to reach libvirt; shared by every subcommand.
#[derive(Debug, clap::Args)]
struct Connection {
    /// libvirt URI.
    #[arg(
        short = 'c',
        long = "connect",
        env = "LIBVIRT_DEFAULT_URI",
        default_value = "qemu:///system"
    )]
    uri: String,
    /// Seconds one libvirt call may take before vmshot gives up on it.
    #[arg(long, default_value_t = 15.0, value_parser = positive_seconds)]
    timeout: f64,
}

impl Connection {
    fn hypervisor(&self) -> Hypervisor {
        let mut settings = Settings::new(self.uri.clone());
        settings.call_timeout = Duration::from_secs_f64(self.timeout);
        Hypervisor::new(settings)
    }

    /// The service for one command, alone in its process: nothing waits,
    /// nothing is mirrored, nothing kept (an admin at the console is not a
    /// control plane); `wake_settle` for a grab that wakes its guest.
    fn service(&self, wake_settle: Duration) -> Screenshots {
        Screenshots::new(
            self.hypervisor(),
            service::Settings {
                // Unused: a grab names its output in the request.
                output: Output::default(),
                max_concurrent: 1,
                max_queued: 0,
                wake_settle,
                fast_path: None,
                store: None,
                recordings: None,
            },
        )
    }
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 3600.0 => Ok(v),
        _ => Err("expected seconds, more than 0 and at most 3600".into()),
    }
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = match cli.command {
        Command::Serve(args) => return serve_main(&args),
        Command::HashPassword(args) => {
            return hash_password::run(args).map_or_else(Failure::report, |()| ExitCode::SUCCESS)
        }
        other => other,
    };
    init_logging("warn", false);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Failure::internal(format!("cannot start the runtime: {e}")).report(),
    };
    let result = runtime.block_on(async {
        match command {
            Command::Grab(args) => grab::run(args).await,
            Command::List(args) => list::run(args).await,
            Command::Console(args) => console::run(args).await,
            Command::Diagnose(args) => diagnose::run(args).await,
            Command::Serve(_) | Command::HashPassword(_) => unreachable!("run above"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}

/// The daemon: a multi-threaded runtime, info-level logs, JSON off a terminal.
fn serve_main(args: &serve::Args) -> ExitCode {
    use std::io::IsTerminal;
    crate::daemon::memory::limit_malloc_arenas();
    init_logging("info", !std::io::stderr().is_terminal());
    let config = match serve::load(args) {
        Ok(config) => config,
        Err(failure) => return failure.report(),
    };
    for note in &config.deprecated {
        tracing::warn!("{note}");
    }
    // One worker per CPU up to 8: HTTP work is light (captures run on their own
    // threads), and the unit's TasksMax must hold on hosts with many CPUs.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(8));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Failure::internal(format!("cannot start the runtime: {e}")).report(),
    };
    match runtime.block_on(serve::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}

/// Logs to stderr at `default` level (`RUST_LOG` overrides), as JSON lines when
/// `json` (journald and log shippers read those).
fn init_logging(default: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}
