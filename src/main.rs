//! The `gptsan` command line. Each subcommand lives in its own module under `cli/`.

use clap::Parser;

fn main() {
    gptsan::cli::init_logging();
    let cli = gptsan::cli::Cli::parse();
    if let Err(err) = gptsan::cli::run(cli) {
        // One clear line (plus its causes), never a panic or a backtrace.
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
