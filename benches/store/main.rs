//! `cargo bench --bench store -- [OPTIONS]`: the durable store filled with
//! 10,000 and 1,000,000 recorded captures, its size and the latency of
//! Nova's action listing at each, in one run (see run.rs, and `-- --help`).

#[path = "run.rs"]
mod run;

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let args = <run::Args as clap::Parser>::parse();
    // Stores go beside the build (target/tmp): on a disk, whatever /tmp is.
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let opts = match run::Options::from_args(args, &raw, dir) {
        Ok(opts) => opts,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    if let Err(message) = run::run(&opts) {
        eprintln!("store bench: {message}");
        std::process::exit(1);
    }
}
