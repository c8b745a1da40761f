//! `cargo bench --bench screenshots -- [OPTIONS]`: vmshot next to the anchor,
//! in one run, as a table of ratios in docs/BENCHMARKS.md (see run.rs, and
//! `-- --help` for the options).

#[path = "run.rs"]
mod run;

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    // clap prints --help, and a bad option with exit code 2.
    let args = <run::Args as clap::Parser>::parse();
    // Under `cargo bench` the binary is the release build made alongside.
    let opts = match run::Options::from_args(args, &raw, env!("CARGO_BIN_EXE_vmshot").into()) {
        Ok(opts) => opts,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    match run::run(&opts) {
        Ok(report) => {
            let errors: u64 = report.errors.values().sum();
            if errors > 0 {
                eprintln!("bench: {errors} request(s) failed, first ones:");
                for e in &report.error_samples {
                    eprintln!("  {e}");
                }
                std::process::exit(1);
            }
        }
        Err(message) => {
            eprintln!("bench: {message}");
            std::process::exit(1);
        }
    }
}
