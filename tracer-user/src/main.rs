//! leaktrace: finds what is stuck in a live process with eBPF.
use std::process::ExitCode;

use clap::Parser as _;
use tracer_user::cli::Cli;

fn main() -> ExitCode {
    match tracer_user::app::run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("leaktrace: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
