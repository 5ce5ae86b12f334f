//! The command line: what each subcommand accepts, and how it runs.
//!
//! Parsing is clap's: a malformed value is a one-line error and exit code 2
//! before anything starts. Each value goes through one parser per kind, in
//! [`crate::parse`].

use std::io::Write;
use std::num::NonZeroUsize;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::parse::{HostPort, parse_addr, parse_positive_duration};
use crate::serve::{self, Config, Context, Mode};
use crate::shutdown::trigger_on_signals;

/// The notes' address: where every server of the notes listens.
pub const DEFAULT_ADDR: &str = "127.0.0.1:55555";

/// echo-lab: one echo protocol, five concurrency models, and the tools to
/// watch and measure the difference.
#[derive(Debug, Parser)]
#[command(name = "echo-lab", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the TCP echo protocol (RFC 862) with one concurrency model.
    Serve(ServeArgs),
}

/// `echo-lab serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The concurrency model.
    #[arg(long, value_enum, default_value_t = Mode::Selector)]
    pub mode: Mode,

    /// Where to listen, as HOST:PORT. Port 0 picks a free port; the real one
    /// is printed as `listening on HOST:PORT`.
    #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_ADDR, value_parser = parse_addr)]
    pub addr: HostPort,

    /// Threads in the pool (threadpool mode).
    #[arg(long, value_name = "N", default_value_t = serve::DEFAULT_WORKERS)]
    pub workers: NonZeroUsize,

    /// Accepted clients that may wait for a free worker (threadpool mode);
    /// beyond that, clients wait in the kernel's backlog. 0 hands each
    /// client straight to an idle worker.
    #[arg(long, value_name = "N", default_value_t = serve::DEFAULT_QUEUE)]
    pub queue: usize,

    /// The listen() backlog: connections the kernel completes and holds
    /// until the server accepts them (capped by net.core.somaxconn).
    #[arg(long, value_name = "N", default_value_t = crate::net::DEFAULT_BACKLOG)]
    pub backlog: u32,

    /// Disconnect a client that sends nothing (or reads nothing) for this
    /// long, e.g. 30s or 500ms. Off by default.
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
    pub idle_timeout: Option<Duration>,

    /// Do not log each connection and disconnection on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Runs the parsed command line.
///
/// # Errors
/// Whatever stopped the command, with context for one clear line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve_command(args),
    }
}

fn serve_command(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = Config {
        workers: args.workers,
        queue: args.queue,
        backlog: args.backlog,
        idle_timeout: args.idle_timeout,
        quiet: args.quiet,
    };
    let listener = serve::bind(args.mode, &args.addr, &config)?;
    let ctx = Context::new(config);
    trigger_on_signals(&ctx.shutdown)?;
    announce(&format!("listening on {}", listener.local_addr()?));
    serve::run(args.mode, listener, &ctx)?;
    eprintln!("{}", ctx.stats.summary());
    Ok(ExitCode::SUCCESS)
}

/// Prints a line that scripts wait for, and flushes it at once. A closed
/// stdout is not a reason to stop serving.
fn announce(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
}
