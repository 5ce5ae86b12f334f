//! The `echo-lab` binary: parse, run, report. Everything else is in the
//! library.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    // Before anything else: a stop signal waits until `serve` has its
    // handlers (the other commands let it through at once).
    let _ = echo_lab::sys::hold_stop_signals();
    // `serve --offload-processes` starts its workers as this binary with
    // one word, not a subcommand a user would complete or read about. A
    // worker keeps the stop signals held: a Ctrl-C at the terminal reaches
    // every process of the group, and its server, not the signal, ends it,
    // by closing its input.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == echo_lab::lab::offload::WORKER_ARG)
    {
        return match echo_lab::lab::offload::worker_main() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("echo-lab: offload worker: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let cli = match echo_lab::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => match echo_lab::cli::blame_the_environment(&e) {
            Some(line) => {
                eprintln!("echo-lab: {line}");
                return ExitCode::from(2);
            }
            None => e.exit(),
        },
    };
    match echo_lab::cli::run(cli) {
        Ok(code) => code,
        // `echo-lab report DIR | head -1`: the reader has all it wanted.
        Err(e) if echo_lab::cli::is_closed_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo-lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}
