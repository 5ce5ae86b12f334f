//! The command line: what each subcommand accepts, and how it runs.
//!
//! Parsing is clap's: a malformed value is a one-line error and exit code 2
//! before anything starts. Each value goes through one parser per kind, in
//! [`crate::parse`].
//!
//! This file defines the command line and dispatches it; `serve_args.rs`
//! holds serve's flags, `server.rs` starts a server (and refuses flags of
//! other models); `measure.rs` runs the instruments; `manual.rs` prints
//! the completion scripts and man pages.

use std::io::{IsTerminal, Write};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::lab::work::{Work, parse_work};
use crate::net::Blocking;
use crate::parse::{
    HostPort, parse_addr, parse_counts, parse_duration, parse_positive_count,
    parse_positive_duration, parse_rate, parse_size,
};
use crate::poller::Backend;
use crate::serve::{self, Config, Context, Mode, Protocol};
use crate::shutdown::{Shutdown, trigger_on_signals};
use crate::stats::counted;
use crate::tools::bench::{self, BenchConfig, BenchReport, Environment};
use crate::tools::compare::{self, CompareConfig, Peer, parse_peer};
use crate::tools::interrupt::Interrupt;
use crate::tools::{client, probe};

/// `print!` that returns the error instead of panicking on it: a closed
/// stdout (`echo-lab report DIR | head -1`) is an `Err` of kind
/// `BrokenPipe`, which `main` takes as a quiet end.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*)
    }};
}

/// `println!` that returns the error instead of panicking on it.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

mod manual;
mod measure;
mod serve_args;
mod server;

pub use manual::{CompletionsArgs, ManArgs, SUBCOMMANDS, completions, man_page};
pub use serve_args::ServeArgs;

/// When clap refused an address that came from [`ADDR_VARIABLE`], not
/// from `--addr` (which clap would name instead): the line that names the
/// variable.
pub fn blame_the_environment(error: &clap::Error) -> Option<String> {
    if error.kind() != clap::error::ErrorKind::ValueValidation {
        return None;
    }
    let value = std::env::var(ADDR_VARIABLE).ok()?;
    let given = std::env::args().any(|arg| arg == "--addr" || arg.starts_with("--addr="));
    let why = parse_addr(&value).err()?;
    (!given).then(|| {
        format!(
            "{ADDR_VARIABLE}='{value}' is not an address: {why} (fix or unset it, or give --addr)"
        )
    })
}

/// Whether `error` is a write to a standard output nobody reads any more
/// (`| head` has exited): a reason to stop quietly, as `ls | head` does,
/// not a failure to report.
pub fn is_closed_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

use measure::{bench_command, compare_command, probe_command, report_command};
pub use server::exposure_notice;
use server::serve_command;

/// The notes' address: where every server of the notes listens.
pub const DEFAULT_ADDR: &str = "127.0.0.1:55555";

/// The environment variable every subcommand reads as its default address
/// (`--addr` still wins): set it once to move the server and the tools off
/// the notes' port together.
pub const ADDR_VARIABLE: &str = "ECHO_LAB_ADDR";

/// echo-lab: one echo protocol, a server for each concurrency model, and
/// the tools to watch and measure the difference.
#[derive(Debug, Parser)]
#[command(name = "echo-lab", version = env!("ECHO_LAB_VERSION"), about, long_about = None)]
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
    /// Send stdin to an echo server and print what comes back.
    Client(ClientArgs),
    /// Show who waits for whom: N clients at once, and a timeline.
    Probe(ProbeArgs),
    /// Load an echo server, verify every byte, report rate and latency.
    Bench(BenchArgs),
    /// Run every model under the same load; write a table, JSON, CSV, chart.
    Compare(CompareArgs),
    /// Re-print a saved compare run's table and redraw its chart, without
    /// running anything; --against an earlier run.
    Report(ReportArgs),
    /// The notes' programs, one short Rust file each: list them, or run
    /// STEP (Ctrl-C stops it).
    Notes(NotesArgs),
    /// Print a completion script for SHELL (bash, zsh, fish, powershell,
    /// elvish), from the same definitions as --help.
    Completions(CompletionsArgs),
    /// Print a man page (roff): echo-lab's, or with SUBCOMMAND that
    /// subcommand's (echo-lab-serve(1) and so on), from the same
    /// definitions as --help.
    Man(ManArgs),
}

/// `echo-lab client`.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The server, as HOST:PORT.
    #[arg(long, value_name = "HOST:PORT", env = ADDR_VARIABLE, default_value = DEFAULT_ADDR, value_parser = parse_addr)]
    pub addr: HostPort,
    /// How long the server may stay silent while it owes an echo (or after
    /// the input ended) before the client gives up with an error. Waiting
    /// for you to type has no limit.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_positive_duration)]
    pub timeout: Duration,
    /// What the server speaks. `chat`: lines you type are commands, lines
    /// from others appear as they come, and nothing is owed back (no echo
    /// to wait for).
    #[arg(long, value_enum, default_value_t = Protocol::Echo)]
    pub protocol: Protocol,
    /// With chat: register under NAME first (`register,NAME`).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

/// `echo-lab probe`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The server, as HOST:PORT.
    #[arg(long, value_name = "HOST:PORT", env = ADDR_VARIABLE, default_value = DEFAULT_ADDR, value_parser = parse_addr)]
    pub addr: HostPort,
    /// Clients started at once.
    #[arg(long, value_name = "N", default_value = "3", value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub clients: u16,
    /// How long each client stays connected after its echo.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub hold: Duration,
    /// How long a client waits for its echo before it is reported as
    /// failed. Default: long enough for a one-at-a-time server to reach the
    /// last client (clients x hold + 5s).
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
    pub timeout: Option<Duration>,
    /// Print the timeline as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also draw the timeline as a picture into FILE (SVG): a row per
    /// client, its wait for the echo and its hold on a time axis.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Chat instead of echo: every client registers NAME at the same
    /// moment, and the probe says how many were told `ok` (one, unless
    /// the server's registration races: serve --racy-register).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["hold", "json", "svg"])]
    pub register: Option<String>,
    /// Chat instead of echo: one client registers NAME and never reads,
    /// the --clients others send it lines as fast as the server takes
    /// them, and the probe says how it ended: NAME cut off as too slow
    /// and its senders told so, or a server that stopped or died (serve
    /// --lock-order-bug). Exits 1 unless NAME was cut off.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["hold", "json", "svg", "register"])]
    pub flood: Option<String>,
}

/// `echo-lab bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The server, as HOST:PORT.
    #[arg(long, value_name = "HOST:PORT", env = ADDR_VARIABLE, default_value = DEFAULT_ADDR, value_parser = parse_addr)]
    pub addr: HostPort,
    /// Connections, opened before the run.
    #[arg(long, short, value_name = "C", default_value = "10", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub connections: u32,
    /// More connections that connect and stay silent throughout: the C10K
    /// shape, most clients idle. Shows what each readiness backend pays per
    /// idle client (serve --poller).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub idle: usize,
    /// More connections that send without pause throughout (64 KiB blocks
    /// back to back, reading what comes back on another thread): noisy
    /// neighbours. The report's latencies are the measured connections'
    /// only: whether a server still gives them their turn.
    #[arg(long, value_name = "K", default_value_t = 0, value_parser = parse_hogs)]
    pub hogs: usize,

    /// Every message on a new connection, as HTTP/1.0: each of the
    /// --connections clients connects, sends one message, reads its echo
    /// and closes, again and again. Reports connections per second (as
    /// msg/s) and the latency of connect plus echo: what a model pays to
    /// take a client on and let it go.
    #[arg(long, conflicts_with_all = ["idle", "hogs", "depth", "rate", "threads"])]
    pub churn: bool,
    /// The measured time.
    #[arg(long, short, value_name = "DURATION", default_value = "5s", value_parser = parse_positive_duration)]
    pub duration: Duration,
    /// Time run before measuring, not counted.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Bytes per message (at least 12: id and sequence number; default
    /// 512).
    #[arg(long, value_name = "BYTES", value_parser = parse_message_size)]
    pub size: Option<usize>,
    /// Messages in flight per connection (closed loop); with chat, lines
    /// each client has sent and not yet seen delivered.
    #[arg(long, value_name = "K", default_value = "1", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub depth: u32,
    /// Open loop: send this many messages per second in total, and measure
    /// latency from when each was due.
    #[arg(long, value_name = "MSG_PER_SEC", value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Client threads, each running its own readiness loop (default 1).
    #[arg(long, value_name = "T", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
    /// What the server speaks. `chat` (a server started with `serve
    /// --protocol chat`): every connection registers, then sends `chat`
    /// lines to random others; every delivered line is checked (receiver,
    /// sender, order, whole, none lost) and timed from send to receipt.
    #[arg(long, value_enum, default_value_t = Protocol::Echo)]
    pub protocol: Protocol,
    /// Print one JSON object: parameters, results, environment.
    #[arg(long)]
    pub json: bool,
}

/// `echo-lab compare`.
#[derive(Debug, Args)]
#[command(after_long_help = compare::LEGEND)]
pub struct CompareArgs {
    /// Models to run: a comma-separated list, or `all`.
    #[arg(long, value_name = "LIST|all", default_value = "all", value_parser = parse_modes)]
    pub modes: ModeList,
    /// Connection counts to sweep.
    #[arg(long, short, value_name = "LIST", default_value = "1,10,100,1000", value_parser = counts)]
    pub connections: Counts,
    /// Bytes per message.
    #[arg(long, value_name = "BYTES", default_value = "512", value_parser = parse_message_size)]
    pub size: usize,
    /// Measured time per run.
    #[arg(long, short, value_name = "DURATION", default_value = "5s", value_parser = parse_positive_duration)]
    pub duration: Duration,
    /// Warm-up per run, not counted.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Another echo server to include, as NAME=COMMAND; `{port}` in the
    /// command becomes a free port. Repeatable.
    #[arg(long, value_name = "NAME=COMMAND", value_parser = parse_peer)]
    pub also: Vec<Peer>,
    /// Notes steps to include (`echo-lab notes`), named notes-STEP in the
    /// table: the notes' programs beside the lab's models.
    #[arg(long, value_name = "STEPS", value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(crate::notes::echo_steps()))]
    pub notes: Vec<String>,
    /// The notes' Python of these steps to include (`python3
    /// docs/tutorial/notes/STEP.py`), named python-STEP: needs python3 and
    /// the source tree.
    #[arg(long, value_name = "STEPS", value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(crate::notes::echo_steps()))]
    pub python: Vec<String>,
    /// Run each server on CPU 0 and the client on CPU 1 (needs 2 CPUs).
    #[arg(long, conflicts_with = "shared_core")]
    pub pin: bool,
    /// Run each server and the client both on CPU 0: their total CPU cost
    /// decides the rate.
    #[arg(long)]
    pub shared_core: bool,
    /// Run the whole sweep this many times and print the median of each
    /// cell: msg/s, p99, and the server's CPU time per message. Servers run
    /// side by side for each connection count, in an order rotated each
    /// repeat; ratios to a --baseline are medians of per-repeat ratios.
    #[arg(long, value_name = "N", default_value = "1", value_parser = clap::value_parser!(u16).range(1..=100))]
    pub repeat: u16,
    /// `--threads` for the one-thread models: event loops per server.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub server_threads: usize,
    /// bench --idle: this many more connections, silent, for every run.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub idle: usize,
    /// bench --hogs: this many more connections that send without pause,
    /// for every run; latencies are the measured connections'.
    #[arg(long, value_name = "K", default_value_t = 0, value_parser = parse_hogs)]
    pub hogs: usize,
    /// bench --churn: every message on a new connection, for every run;
    /// msg/s is then connections per second.
    #[arg(long, conflicts_with_all = ["idle", "hogs"])]
    pub churn: bool,
    /// serve --poller for the one-thread models it starts.
    #[arg(long, value_enum, value_name = "BACKEND")]
    pub poller: Option<Backend>,
    /// `serve --work` for every echo-lab server it starts (not for --also
    /// servers): e.g. cpu:1ms to see each model under CPU work.
    #[arg(long, value_name = "KIND:DURATION", value_parser = parse_work)]
    pub work: Option<Work>,
    /// `serve --offload N` for the one-loop models, with --work cpu or
    /// sleep.
    #[arg(long, value_name = "N", value_parser = parse_positive_count, requires = "work")]
    pub offload: Option<NonZeroUsize>,
    /// What the servers speak. `chat`: our models that host it
    /// (threadpool, selector, statemachine, async, completion) with `serve
    /// --protocol chat`, loaded by `bench --protocol chat`; msg/s is lines
    /// delivered, latency is from send to receipt. `--modes all` means
    /// those five.
    #[arg(long, value_enum, default_value_t = Protocol::Echo)]
    pub protocol: Protocol,
    /// Servers to compare the others with, e.g. `tokio`: adds ratio columns
    /// to the table of medians.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub baseline: Vec<String>,
    /// Where runs go: each run writes results.json, results.csv and
    /// throughput.svg to a new directory of its own under DIR
    /// (`run-<UTC time>`), and DIR/latest names the last; nothing is
    /// overwritten.
    #[arg(long, value_name = "DIR", default_value = "echo-lab-results")]
    pub out: PathBuf,
    /// Holding the run against an earlier one.
    #[command(flatten)]
    pub judge: JudgeArgs,
}

/// `--against` and `--fail-if-slower`, for compare and report.
#[derive(Debug, Args)]
pub struct JudgeArgs {
    /// An earlier results.json (or its run's directory, or an --out
    /// directory: its latest run): print each cell's change,
    /// called real only where it exceeds both runs' spread over repeats.
    #[arg(long, value_name = "RESULTS")]
    pub against: Option<PathBuf>,
    /// Exit 1 if a cell got slower for real by more than this many percent
    /// (with --against), for scripts.
    #[arg(long, value_name = "PCT", requires = "against")]
    pub fail_if_slower: Option<f64>,
}

/// `echo-lab notes`.
#[derive(Debug, Args)]
pub struct NotesArgs {
    /// The step to run; none lists them all.
    #[arg(value_name = "STEP", value_parser = clap::builder::PossibleValuesParser::new(crate::notes::STEPS.map(|s| s.name)))]
    pub step: Option<String>,
    /// Where the step listens, as HOST:PORT.
    #[arg(long, value_name = "HOST:PORT", env = ADDR_VARIABLE, default_value = DEFAULT_ADDR, value_parser = parse_addr)]
    pub addr: HostPort,
    /// The pool's size, for the `pool` step (the notes' 20).
    #[arg(long, value_name = "N", value_parser = parse_positive_count)]
    pub workers: Option<NonZeroUsize>,
}

/// `echo-lab report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A run's directory (or its results.json, or an --out directory: its
    /// latest run).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Servers to compare the others with, as for compare.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub baseline: Vec<String>,
    /// Holding it against an earlier run.
    #[command(flatten)]
    pub judge: JudgeArgs,
}

/// A list of models given as one value (clap reads a `Vec` field as a
/// repeated flag, so lists given with commas need a type of their own).
#[derive(Clone, Debug)]
pub struct ModeList(pub Vec<Mode>);

/// A comma-separated list of counts given as one value.
#[derive(Clone, Debug)]
pub struct Counts(pub Vec<usize>);

/// Hogs for bench and compare: each is a connection and two threads, so a
/// few are enough to show a loop's fairness, and a hundred is plenty.
fn parse_hogs(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n <= MAX_HOGS => Ok(n),
        Ok(_) => Err(format!(
            "at most {MAX_HOGS}: each hog is a connection and two threads"
        )),
        Err(_) => Err(format!("expected a number of connections, 0 to {MAX_HOGS}")),
    }
}

/// The most `--hogs`.
const MAX_HOGS: usize = 100;

/// A message size for bench and compare: a size, and room for the id and
/// sequence number each message carries.
fn parse_message_size(text: &str) -> Result<usize, String> {
    let size = parse_size(text)?;
    if size < bench::MIN_MESSAGE_SIZE {
        return Err(format!(
            "must be at least {} bytes: a message carries its connection id and sequence number",
            bench::MIN_MESSAGE_SIZE
        ));
    }
    Ok(size)
}

fn counts(text: &str) -> Result<Counts, String> {
    parse_counts(text).map(Counts)
}

/// Parses `all` or a comma-separated list of models.
///
/// # Errors
/// An unknown model name.
pub fn parse_modes(text: &str) -> Result<ModeList, String> {
    if text == "all" {
        return Ok(ModeList(Mode::ALL.to_vec()));
    }
    text.split(',')
        .map(|name| {
            Mode::from_str(name.trim(), false).map_err(|_| {
                let names: Vec<&str> = Mode::ALL.iter().map(|m| m.name()).collect();
                format!(
                    "unknown model '{name}'; expected `all` or some of {} (generator is statemachine)",
                    names.join(",")
                )
            })
        })
        .collect::<Result<_, _>>()
        .map(ModeList)
}

/// Runs the parsed command line.
///
/// # Errors
/// Whatever stopped the command, with context for one clear line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if !matches!(cli.command, Command::Serve(_)) {
        // Held back by `main` for serve's sake: the tools take the default.
        let _ = crate::sys::release_stop_signals();
    }
    match cli.command {
        Command::Serve(args) => serve_command(args),
        Command::Client(args) => {
            let speaks = match (args.protocol, args.name) {
                (Protocol::Echo, None) => client::Speaks::Echo,
                (Protocol::Echo, Some(_)) => {
                    anyhow::bail!("--name registers in a chat: give --protocol chat too")
                }
                (Protocol::Chat, name) => client::Speaks::Chat { name },
            };
            client::run(&args.addr, args.timeout, speaks)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Probe(args) => probe_command(args),
        Command::Bench(args) => bench_command(args),
        Command::Compare(args) => compare_command(args),
        Command::Report(args) => report_command(args),
        Command::Notes(args) => notes_command(&args),
        Command::Completions(args) => {
            std::io::stdout().write_all(&completions(args.shell))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man(args) => {
            std::io::stdout().write_all(&man_page(args.subcommand.as_deref())?)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `echo-lab notes [STEP]`: lists the steps, or runs one.
fn notes_command(args: &NotesArgs) -> anyhow::Result<ExitCode> {
    let Some(name) = &args.step else {
        for step in crate::notes::STEPS {
            outln!("{:<14} {}", step.name, step.mirrors)?;
            outln!("{:<14} grows into: echo-lab {}", "", step.grows_into)?;
        }
        return Ok(ExitCode::SUCCESS);
    };
    if args.workers.is_some() && name != "pool" {
        anyhow::bail!("--workers is the pool's size: it applies to the pool step only");
    }
    let step = crate::notes::find(name).with_context(|| format!("no step {name}"))?;
    let notes_args = crate::notes::Args {
        addr: args.addr.clone(),
        workers: args.workers.map_or(20, NonZeroUsize::get),
    };
    (step.run)(&notes_args)?;
    Ok(ExitCode::SUCCESS)
}

/// Refuses the first flag given (`true`) that does not apply to the chat,
/// with why: `[(given, flag, why)]`.
fn refuse_for_chat(flags: &[(bool, &str, &str)]) -> anyhow::Result<()> {
    match flags.iter().find(|(given, _, _)| *given) {
        Some((_, flag, why)) => anyhow::bail!("{flag} does not apply to --protocol chat: {why}"),
        None => Ok(()),
    }
}

/// Prints a line that scripts wait for, and flushes it at once. A closed
/// stdout is not a reason to stop serving.
fn announce(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn wildcard_and_public_addresses_get_a_notice() {
        for exposed in [
            "0.0.0.0:7000",
            "[::]:7000",
            "192.168.1.10:7000",
            "[2001:db8::1]:7000",
        ] {
            assert!(
                exposure_notice(exposed.parse().unwrap()).is_some(),
                "{exposed}"
            );
        }
        for local in ["127.0.0.1:7000", "127.8.9.10:7000", "[::1]:7000"] {
            assert_eq!(exposure_notice(local.parse().unwrap()), None, "{local}");
        }
    }

    #[test]
    fn mode_lists() {
        assert_eq!(parse_modes("all").unwrap().0.len(), Mode::ALL.len());
        assert_eq!(
            parse_modes("selector,generator").unwrap().0,
            [Mode::Selector, Mode::Statemachine]
        );
        for bad in ["", "selector,", "Selector", "select", "all,async", "☃"] {
            assert!(parse_modes(bad).is_err(), "{bad:?}");
        }
    }
}
