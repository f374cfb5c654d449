//! leaktrace: finds what is stuck in a live process with eBPF.
use std::process::ExitCode;

use clap::Parser as _;
use tracer_user::cli::{Cli, Command};
use tracer_user::report::diff::Worse;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // diff(1)'s convention: 1 says the reports differ for the worse, so trouble is 2.
    let trouble = match cli.subcommand {
        Some(Command::Diff { .. }) => 2,
        _ => 1,
    };
    match tracer_user::app::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // The output said which candidates.
        Err(err) if err.is::<Worse>() => ExitCode::from(1),
        Err(err) => {
            eprintln!("leaktrace: error: {err:#}");
            ExitCode::from(trouble)
        }
    }
}
