//! `vmshot list`: every domain, its state, and whether it has a display.

use super::{Connection, Failure};
use crate::hypervisor::DomainSummary;

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    #[command(flatten)]
    connection: Connection,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

pub(super) async fn run(args: Args) -> Result<(), Failure> {
    let domains = args.connection.hypervisor().list().await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&domains).expect("summaries always serialize")
        );
    } else {
        print!("{}", table(&domains));
    }
    Ok(())
}

fn table(domains: &[DomainSummary]) -> String {
    let width = domains
        .iter()
        .map(|d| d.name.len())
        .max()
        .unwrap_or(0)
        .max(4);
    let mut out = format!(
        "{:<width$}  {:<14}  {:<7}  UUID\n",
        "NAME", "STATE", "DISPLAY"
    );
    for d in domains {
        let display = match d.screens {
            0 => "none".to_owned(),
            1 => "yes".to_owned(),
            n => format!("{n} heads"),
        };
        out += &format!(
            "{:<width$}  {:<14}  {:<7}  {}\n",
            d.name,
            d.state.as_str(),
            display,
            d.uuid
        );
    }
    out
}
