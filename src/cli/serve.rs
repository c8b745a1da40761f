//! `vmshot serve`: run the daemon.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::Failure;
use crate::config::Config;

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// The TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Overrides server.listen.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,
    /// Overrides libvirt.uri.
    #[arg(short = 'c', long = "connect", value_name = "URI")]
    uri: Option<String>,
}

/// Loads the configuration; overrides from the command line go through the
/// same checks as the file.
pub(super) fn load(args: &Args) -> Result<Config, Failure> {
    let mut config = Config::load(&args.config).map_err(|e| Failure::new(2, format!("{e}.")))?;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(uri) = &args.uri {
        config.libvirt.uri = uri.clone();
    }
    config
        .validate()
        .map_err(|e| Failure::new(2, format!("{e}.")))?;
    crate::server::check_dialects(&config).map_err(|e| Failure::new(2, format!("{e}.")))?;
    Ok(config)
}

pub(super) async fn run(config: Config) -> Result<(), Failure> {
    crate::server::run(config)
        .await
        .map_err(|e| Failure::internal(format!("{e}.")))
}
