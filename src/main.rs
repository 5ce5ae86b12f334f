//! The `echo-lab` binary: parse, run, report. Everything else is in the
//! library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Before anything else: a stop signal waits until `serve` has its
    // handlers (the other commands let it through at once).
    let _ = echo_lab::sys::hold_stop_signals();
    let cli = echo_lab::cli::Cli::parse();
    match echo_lab::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("echo-lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}
