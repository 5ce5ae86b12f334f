//! `echo-lab serve`'s command line: the flags, the parsers only serve
//! uses, and the limits `serve --help` prints after them.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::PossibleValue;
use clap::{Args, ValueEnum};

use super::{ADDR_VARIABLE, DEFAULT_ADDR};
use crate::lab::work::{Work, parse_work};
use crate::parse::{
    HostPort, parse_addr, parse_duration, parse_positive_count, parse_positive_duration, parse_size,
};
use crate::poller::Backend;
use crate::serve::{self, Mode, Protocol};

/// `--crash-on`: a word that can be found in a chunk: not empty, and short
/// enough to arrive whole in one read.
fn parse_crash_word(text: &str) -> Result<String, String> {
    match text.len() {
        0 => Err("the word must not be empty".into()),
        1..=64 => Ok(text.to_owned()),
        _ => Err("at most 64 bytes, so that it arrives in one read".into()),
    }
}

/// `--stack-size`: a size, big enough for the echo's buffer and frames.
fn parse_stack_size(text: &str) -> Result<usize, String> {
    const MIN: usize = 64 * 1024;
    let size = parse_size(text)?;
    if size < MIN {
        return Err(format!(
            "at least {}KiB: a client's thread holds a 16 KiB buffer and its frames",
            MIN / 1024
        ));
    }
    Ok(size)
}

/// A duration, or a bare `0` for "off".
fn parse_threshold(text: &str) -> Result<Duration, String> {
    match text {
        "0" => Ok(Duration::ZERO),
        _ => parse_duration(text),
    }
}

/// The names `--mode` accepts, each with its one-line description:
/// every model, and `generator`, the notes' name for the state machines.
fn mode_names() -> Vec<PossibleValue> {
    let mut names = Vec::new();
    for mode in Mode::ALL {
        names.extend(mode.to_possible_value());
        if mode == Mode::Statemachine {
            names.push(
                PossibleValue::new("generator")
                    .help("The same model as statemachine, by the notes' name"),
            );
        }
    }
    names
}

/// Parses `--mode`: one of [`mode_names`].
fn mode_parser() -> impl clap::builder::TypedValueParser<Value = Mode> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(mode_names())
        .try_map(|name| Mode::from_str(&name, false))
}

/// What bounds a server's memory, shown after `serve --help`: every number
/// is the constant the code uses, so the text cannot drift from it.
fn serve_limits() -> String {
    use crate::serve::buffers::{MAX_IDLE_BUFFERS, TASK_BUFFER_SIZE};
    use crate::serve::chat::{CLOSE_GRACE, protocol::MAX_LINE, room::MAX_PENDING};
    use crate::serve::{READ_BUFFER_SIZE, readiness::selector::MAX_UNSENT};
    let kib = |bytes: usize| format!("{} KiB", bytes / 1024);
    #[cfg(target_os = "linux")]
    let completion = {
        use crate::serve::completion::ring::{BUFFER_SIZE, BUFFERS};
        let buffers = usize::from(BUFFERS);
        format!(
            "{buffers} buffers of {} ({} MiB) per loop",
            kib(BUFFER_SIZE),
            (buffers * BUFFER_SIZE) >> 20
        )
    };
    #[cfg(not(target_os = "linux"))]
    let completion = String::from("a ring's buffers per loop (Linux)");
    format!(
        "\
Limits (every bound on memory, per model):
  --max-connections   clients held at once, every model; more are accepted
                      and closed at once. (sequential never holds more than
                      1, threadpool more than workers + queue + 1: beyond
                      that, clients wait in the kernel's backlog.)
  read buffer         {read} per read: one per thread (sequential,
                      threadpool), one shared by all clients (selector);
                      {task} lent to a client task (statemachine, async)
                      from its loop's pool while it holds data; a client
                      waiting to speak holds none, and the pool keeps at
                      most {idle} idle buffers ({idle_bytes}).
                      completion: {completion}
                      lent to the kernel, whatever the clients; a client
                      holds one only from a receive until the echo's send
                      returns.
  unsent bytes        selector and completion: at most {unsent} per client,
                      then it stops reading that client until it drains.
                      statemachine and async never read while they hold
                      unsent bytes, so their {task} buffer is the bound.
                      Blocking models write before reading again.
  --queue             threadpool: accepted clients waiting for a worker.
  --work, --offload   a client whose chunk is with its work reads nothing
                      more until it is echoed: one chunk per client ({read}
                      at most; a copy of it on the pool with --offload).
                      completion reads on meanwhile, up to the {unsent} above.
  --idle-timeout      off by default; a slow client is bounded by the
                      buffers above, not by time.
  --protocol chat     each client's outbox holds at most {pending} of lines
                      owed to it (the thread per client also holds one
                      chunk it is writing); past that the client is cut
                      off, with {grace} s to take its last line. Lines are at
                      most {line}. threads and threadpool: two threads per
                      client, {stack} of stack each (--stack-size).
  threads             a thread per client, {stack} of stack each by
                      default (--stack-size): --max-connections bounds
                      them.",
        read = kib(READ_BUFFER_SIZE),
        task = kib(TASK_BUFFER_SIZE),
        idle = MAX_IDLE_BUFFERS,
        idle_bytes = if MAX_IDLE_BUFFERS * TASK_BUFFER_SIZE >= 1 << 20 {
            format!("{} MiB", (MAX_IDLE_BUFFERS * TASK_BUFFER_SIZE) >> 20)
        } else {
            kib(MAX_IDLE_BUFFERS * TASK_BUFFER_SIZE)
        },
        unsent = kib(MAX_UNSENT),
        pending = kib(MAX_PENDING),
        grace = CLOSE_GRACE.as_secs(),
        line = kib(MAX_LINE),
        stack = kib(crate::serve::DEFAULT_STACK_SIZE),
    )
}

/// `echo-lab serve`.
#[derive(Debug, Args)]
#[command(after_long_help = serve_limits())]
pub struct ServeArgs {
    /// The concurrency model.
    #[arg(long, default_value = "selector", value_parser = mode_parser())]
    pub mode: Mode,

    /// Where to listen, as HOST:PORT. Port 0 picks a free port; the real one
    /// is printed as `listening on HOST:PORT`.
    #[arg(long, value_name = "HOST:PORT", env = ADDR_VARIABLE, default_value = DEFAULT_ADDR, value_parser = parse_addr)]
    pub addr: HostPort,

    /// What the server speaks. `echo`: every byte back to its sender.
    /// `chat`: the notes' chat, one command per line (`register,NAME` ->
    /// ok; `list` -> the names; `chat,NAME,TEXT` -> NAME gets
    /// `from,SENDER,TEXT`, `*` for everyone else; `quit`), on threads and
    /// threadpool (a thread per client), selector, statemachine, async and
    /// completion.
    #[arg(long, value_enum, default_value_t = Protocol::Echo)]
    pub protocol: Protocol,

    /// Threads in the pool (threadpool only; default 20, the notes' pool).
    #[arg(long, value_name = "N", value_parser = parse_positive_count)]
    pub workers: Option<NonZeroUsize>,

    /// Accepted clients that may wait for a free worker (threadpool only;
    /// default 16); beyond that, clients wait in the kernel's backlog. 0
    /// hands each client straight to an idle worker.
    #[arg(long, value_name = "N")]
    pub queue: Option<usize>,

    /// The listen() backlog: connections the kernel completes and holds
    /// until the server accepts them (capped by net.core.somaxconn).
    #[arg(long, value_name = "N", default_value_t = crate::net::DEFAULT_BACKLOG)]
    pub backlog: u32,

    /// Disconnect a client that sends nothing (or reads nothing) for this
    /// long, e.g. 30s or 500ms. Off by default.
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
    pub idle_timeout: Option<Duration>,

    /// Clients served at once; more are accepted and closed at once.
    #[arg(long, value_name = "N", default_value_t = serve::DEFAULT_MAX_CONNECTIONS, value_parser = parse_positive_count)]
    pub max_connections: NonZeroUsize,

    /// Independent event loops (selector, statemachine, async and
    /// completion only; default 1), each on its own thread with its own
    /// listener on the same port (SO_REUSEPORT): the kernel spreads new
    /// clients over them. 0 = one per CPU.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// Worker processes (at most 64 per CPU), each running the model on a
    /// listener of its own on the one port (SO_REUSEPORT: the kernel
    /// spreads clients over them), under a master that restarts a worker
    /// that dies and stops them all on SIGINT/SIGTERM (nginx's master and
    /// workers, Apache's prefork and worker MPMs). Every worker has its own
    /// counters, limits and --global-lock; the master prints one summary,
    /// with the clients each worker served.
    #[arg(long, value_name = "N", value_parser = parse_positive_count)]
    pub processes: Option<NonZeroUsize>,

    /// A handler that receives WORD aborts its whole process, as a crash in
    /// a C extension would: under threads every client drops; under
    /// --processes only that worker's, and the master starts another.
    #[arg(long, value_name = "WORD", value_parser = parse_crash_word)]
    pub crash_on: Option<String>,

    /// Do not log each connection and disconnection on stderr.
    #[arg(long, short)]
    pub quiet: bool,

    /// Work done on each chunk read, before it is echoed: `cpu:2ms`
    /// computes until the handling thread has used 2 ms of CPU time;
    /// `sleep:2ms` blocks the thread in sleep (the notes' time.sleep);
    /// `wait:2ms` waits the model's own non-blocking way (selector: a timer
    /// the loop fires; statemachine: a yielded deadline; async: an awaited
    /// timer, the notes' asyncio.sleep; completion: a timer of its ring's
    /// wait). In sequential and threadpool a waiting thread is blocked
    /// anyway: there `wait` is `sleep`.
    #[arg(long, value_name = "KIND:DURATION", value_parser = parse_work)]
    pub work: Option<Work>,

    /// Threads beside each loop that run its `cpu` and `sleep` work, so the
    /// loop goes on serving others (selector, statemachine, async and
    /// completion only): the notes' run_in_executor, tokio's
    /// spawn_blocking.
    #[arg(long, value_name = "N", value_parser = parse_positive_count)]
    pub offload: Option<NonZeroUsize>,

    /// As --offload, but each of the N threads hands its jobs to a worker
    /// process of its own (this binary again), copying each chunk
    /// there and back through pipes: a ProcessPoolExecutor. Each process
    /// has its own --global-lock, so the work runs N at once under it.
    #[arg(long, value_name = "N", value_parser = parse_positive_count, conflicts_with = "offload")]
    pub offload_processes: Option<NonZeroUsize>,

    /// The stack each client's thread gets (threads only; default 128KiB):
    /// the cost this model shows. At least 64KiB, enough for the echo's
    /// 16 KiB buffer and its frames.
    #[arg(long, value_name = "SIZE", value_parser = parse_stack_size)]
    pub stack_size: Option<usize>,

    /// Every worker holds one shared lock while it does `cpu` work, and
    /// releases it to sleep: a stand-in for CPython's GIL, one per process.
    /// The workers are threadpool's threads, or a one-thread loop's
    /// --offload threads (--offload-processes: one lock per process).
    #[arg(long)]
    pub global_lock: bool,

    /// Warn (on stderr, at most once a second, even with --quiet) when a
    /// one-thread loop runs this long without waiting: every other client
    /// waited as long. 0 turns the warning off. Default 100ms (selector,
    /// statemachine, async and completion only).
    #[arg(long, value_name = "DURATION", value_parser = parse_threshold)]
    pub slow_handler: Option<Duration>,

    /// How the one-thread loops wait for readiness (selector, statemachine
    /// and async only): `polling`, the portable crate (epoll, kqueue or
    /// IOCP: Python's DefaultSelector), the default; `epoll`, our own, one
    /// system call per wait (Linux); `poll`, poll(2) over every socket on
    /// every wait (the notes' select loop); `spin`, wrong on purpose: no
    /// wait at all, every socket asked in turn (the notes' loop before
    /// select), a core burnt even with no client.
    #[arg(long, value_enum, value_name = "BACKEND")]
    pub poller: Option<Backend>,

    /// The async model's cooperative budget: a task may complete N reads
    /// and writes each time it runs, then it yields to the others (tokio's
    /// coop budget; default 128). 0 turns it off: a client that sends
    /// without pause then keeps the loop to itself (async only).
    #[arg(long, value_name = "N")]
    pub budget: Option<u32>,

    /// Wrong on purpose (selector only): write each echo with a blocking
    /// `sendall` inside the handler, as the notes' selector code does. A
    /// client that does not read then blocks the whole loop, and every
    /// other client with it.
    #[arg(long)]
    pub naive_send: bool,

    /// Wrong on purpose (chat on threads, threadpool and async): register
    /// in two steps, "is the name free?" then, DURATION later, "take it",
    /// letting go of the registry in between (the lock dropped, or an
    /// await). Clients that register one name at once all get `ok`.
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
    pub racy_register: Option<Duration>,

    /// Wrong on purpose (chat on threads and threadpool): a receiver found
    /// too slow is unregistered inside its outbox's lock, the two locks in
    /// the order chapter 8 warns against. A deadlock follows; a watch names
    /// the threads and locks of it, and the server exits with status 3.
    #[arg(long)]
    pub lock_order_bug: bool,

    /// Each task's life on stderr, in the notes' words (statemachine and
    /// async only): statemachine, the generator loop's `next()`, `yield
    /// WAIT_READ`, `send(...)` and `close()`; async, spawned, polled to
    /// `Pending`, woken, and dropped (cancelled). One loop only (not with
    /// --threads or --processes). At most 200 lines a second; those left
    /// out are counted.
    #[arg(long)]
    pub trace: bool,

    /// Every INTERVAL (1s if not given), one line of counters per loop or
    /// pool on stderr, in its model's terms: traffic for all; waits, events
    /// per wait, busy share and the longest turn for the one-thread loops;
    /// tasks and the ready queue for statemachine and async; busy workers,
    /// queued clients and the longest wait for a worker for threadpool; the
    /// kernel's accept queue for sequential. A final line at shutdown is the
    /// whole run's: counts summed, rates over the whole run, the longest turn
    /// of all.
    #[arg(long, value_name = "INTERVAL", num_args = 0..=1, default_missing_value = "1s", value_parser = parse_positive_duration)]
    pub stats: Option<Duration>,

    /// Also write the --stats lines to FILE as JSON lines (implies --stats).
    #[arg(long, value_name = "FILE")]
    pub stats_json: Option<PathBuf>,
}
