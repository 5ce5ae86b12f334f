//! `echo-lab serve`: the flags each model takes, and starting a server.

use super::*;

/// The flags that belong to some models only, and those models. Giving one
/// to another model is an error, not a flag silently ignored.
const MODEL_FLAGS: [(&str, &[Mode]); 12] = [
    ("--workers", &[Mode::Threadpool]),
    ("--queue", &[Mode::Threadpool]),
    (
        "--global-lock",
        &[
            Mode::Threadpool,
            Mode::Selector,
            Mode::Statemachine,
            Mode::Async,
            Mode::Completion,
        ],
    ),
    ("--threads", &Mode::LOOPS),
    ("--offload", &Mode::LOOPS),
    ("--offload-processes", &Mode::LOOPS),
    ("--slow-handler", &Mode::LOOPS),
    ("--poller", &Mode::READINESS),
    ("--budget", &[Mode::Async]),
    ("--stack-size", &[Mode::Threads]),
    ("--naive-send", &[Mode::Selector]),
    ("--trace", &[Mode::Statemachine, Mode::Async]),
];

/// Refuses a model-specific flag given to a model it does not apply to.
fn check_model_flags(args: &ServeArgs) -> anyhow::Result<()> {
    let given = [
        args.workers.is_some(),
        args.queue.is_some(),
        args.global_lock,
        args.threads.is_some(),
        args.offload.is_some(),
        args.offload_processes.is_some(),
        args.slow_handler.is_some(),
        args.poller.is_some(),
        args.budget.is_some(),
        args.stack_size.is_some(),
        args.naive_send,
        args.trace,
    ];
    for ((flag, models), given) in MODEL_FLAGS.into_iter().zip(given) {
        if given && !models.contains(&args.mode) {
            anyhow::bail!(
                "{flag} applies to {} only, not to {}",
                serve::list_of(models),
                args.mode
            );
        }
    }
    let blocking_work = args.work.is_some_and(Work::blocks);
    let offload = args.offload.or(args.offload_processes);
    if offload.is_some() && !blocking_work {
        anyhow::bail!(
            "--offload and --offload-processes run --work cpu:... or sleep:... beside the loop; without such work they have nothing to do (wait never blocks the loop)"
        );
    }
    if args.protocol == Protocol::Chat {
        check_chat_flags(args)?;
    }
    if args.global_lock && args.work.is_none() {
        anyhow::bail!("--global-lock is held while a worker does its --work; give --work too");
    }
    if args.global_lock && args.mode != Mode::Threadpool && offload.is_none() {
        anyhow::bail!(
            "--global-lock on a one-thread loop is held by its --offload threads while they compute (the loop alone has no one to share it with); give --offload or --offload-processes"
        );
    }
    if args.racy_register.is_some()
        && (args.protocol != Protocol::Chat
            || !matches!(args.mode, Mode::Threads | Mode::Threadpool | Mode::Async))
    {
        anyhow::bail!(
            "--racy-register splits the chat's registration where a model can let go of the registry: --protocol chat with --mode threads, threadpool or async"
        );
    }
    if args.lock_order_bug
        && (args.protocol != Protocol::Chat
            || !matches!(args.mode, Mode::Threads | Mode::Threadpool))
    {
        anyhow::bail!(
            "--lock-order-bug is in the thread chat's two locks: --protocol chat with --mode threads or threadpool"
        );
    }
    if args.processes.is_some() && args.mode == Mode::Forking {
        anyhow::bail!(
            "forking makes a process per client already; --processes applies to the other models"
        );
    }
    if args.trace && (args.processes.is_some() || args.threads.is_some_and(|n| n != 1)) {
        anyhow::bail!(
            "--trace follows the tasks of one loop, numbered by that loop: not with --threads or --processes, where several loops would number theirs alike"
        );
    }
    if args.processes.is_some() && args.threads.is_some_and(|n| n != 1) {
        anyhow::bail!(
            "--processes and --threads both multiply the model: choose one (each worker or loop gets a listener of its own on the port)"
        );
    }
    Ok(())
}

/// Refuses what the chat cannot do: a chat is one room, so one loop and
/// one registry, and its clients may listen quietly for as long as they
/// like.
fn check_chat_flags(args: &ServeArgs) -> anyhow::Result<()> {
    if args.mode == Mode::Sequential {
        anyhow::bail!("{}", serve::chat::SEQUENTIAL_CANNOT_CHAT);
    }
    if args.mode == Mode::Forking {
        anyhow::bail!("{}", serve::chat::FORKING_CANNOT_CHAT);
    }
    refuse_for_chat(&[
        (
            args.threads.is_some_and(|n| n != 1),
            "--threads",
            "the chat is one room: a second loop would hold a second registry, and its users could not see the first's",
        ),
        (
            args.workers.is_some() || args.queue.is_some(),
            "--workers and --queue",
            "the chat on threadpool starts a thread per client, as the notes do (--max-connections bounds them)",
        ),
        (
            args.processes.is_some(),
            "--processes",
            "the chat is one room: a second process would hold a second registry, and its users could not see the first's",
        ),
        (
            args.naive_send,
            "--naive-send",
            "the chat's selector already writes what a client is owed only as its socket takes it",
        ),
        (
            args.crash_on.is_some(),
            "--crash-on",
            "it is a word an echo handler receives",
        ),
        (
            args.idle_timeout.is_some(),
            "--idle-timeout",
            "a chat client may listen quietly for as long as it likes",
        ),
        (
            args.work.is_some(),
            "--work",
            "it is work done before an echo",
        ),
    ])
}

pub(super) fn serve_command(args: ServeArgs) -> anyhow::Result<ExitCode> {
    // First of all, the handlers: a SIGINT or SIGTERM from here on rings
    // the shutdown's bell, which the server hears as soon as it serves.
    // One that came earlier (`main` held it back) is delivered when they
    // are let through, below.
    let shutdown = Shutdown::new().context("preparing the shutdown")?;
    // A blocking model has no event loop to hear the signal bell.
    trigger_on_signals(&shutdown, args.mode.blocking() == Blocking::Yes)?;
    crate::sys::release_stop_signals().context("letting stop signals through")?;
    check_model_flags(&args)?;
    let seat = serve::processes::seat()?;
    if args.mode == Mode::Completion {
        // Before listening: a machine without io_uring gets one line.
        serve::completion::available().map_err(|why| serve::completion::unavailable(&why))?;
    }
    let config = Config {
        workers: args.workers.unwrap_or(serve::DEFAULT_WORKERS),
        queue: args.queue.unwrap_or(serve::DEFAULT_QUEUE),
        backlog: args.backlog,
        idle_timeout: args.idle_timeout,
        max_connections: args.max_connections,
        threads: args.threads.unwrap_or(1),
        quiet: args.quiet,
        work: args.work,
        offload: args
            .offload
            .or(args.offload_processes)
            .map_or(0, NonZeroUsize::get),
        offload_processes: args.offload_processes.is_some(),
        stack_size: args.stack_size.unwrap_or(serve::DEFAULT_STACK_SIZE),
        global_lock: args.global_lock,
        slow_handler: match args.slow_handler {
            None => Some(serve::DEFAULT_SLOW_HANDLER),
            Some(Duration::ZERO) => None,
            Some(threshold) => Some(threshold),
        },
        poller: args.poller.unwrap_or_default(),
        naive_send: args.naive_send,
        racy_register: args.racy_register,
        lock_order_bug: args.lock_order_bug,
        trace: args.trace,
        budget: args.budget.unwrap_or(serve::DEFAULT_BUDGET),
        stats: args
            .stats
            .or(args.stats_json.is_some().then_some(Duration::from_secs(1))),
        stats_json: match &args.stats_json {
            // Every worker adds its lines to the file its master made.
            Some(path) => Some(
                crate::lab::live::JsonSink::open(path, seat.is_some())
                    .with_context(|| format!("opening {}", path.display()))?,
            ),
            None => None,
        },
        protocol: args.protocol,
        crash_on: args.crash_on,
        worker: seat.as_ref().map(|seat| seat.index),
    };
    if let Some(seat) = seat {
        // A worker: the master listens, announces and sums up. Its counts
        // go to the master however the run ended.
        let ctx = Context::with_shutdown(config, shutdown);
        let served = serve::run(args.mode, serve::Listeners::one(seat.listener), &ctx);
        serve::processes::report_totals(&ctx.stats.totals());
        served?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(count) = args.processes {
        serve::processes::check_count(count.get())?;
    }
    if config.poller == crate::poller::Backend::Spin {
        eprintln!(
            "wrong on purpose: --poller spin asks every socket in turn and never sleeps, the loop before select that the notes only mention; it burns a core even with no client"
        );
    }
    if config.racy_register.is_some() {
        eprintln!(
            "wrong on purpose: --racy-register lets go of the registry between checking a name and taking it; clients that register one name at once will all get it"
        );
    }
    if config.lock_order_bug {
        eprintln!(
            "wrong on purpose: --lock-order-bug takes an outbox's lock and then the registry's, the order chapter 8 warns against; a receiver too slow to keep up will deadlock the server"
        );
    }
    if config.naive_send {
        eprintln!(
            "wrong on purpose: --naive-send writes each echo with a blocking sendall inside the loop, as the notes' selector does; a client that does not read will stop every other client"
        );
    }
    let listeners = match args.processes {
        // A listener per worker, on one port (see `processes`).
        #[cfg(target_os = "linux")]
        Some(count) => serve::bind_group(args.mode, &args.addr, &config, count.get())?,
        _ => serve::bind(args.mode, &args.addr, &config)?,
    };
    let ctx = Context::with_shutdown(config, shutdown);
    let local = listeners.local_addr()?;
    announce(&format!("listening on {local}"));
    if let Some(notice) = exposure_notice(local) {
        eprintln!("{notice}");
    }
    let roll = match args.processes {
        Some(count) => {
            let mut seats = listeners.into_vec();
            // One listener shared by every worker where SO_REUSEPORT does
            // not spread connections.
            while seats.len() < count.get() {
                seats.push(seats[0].try_clone().context("sharing the listener")?);
            }
            let roll = serve::processes::supervise(seats, &ctx)?;
            eprintln!("the workers' counts, added up (the peak is the busiest worker's):");
            Some(roll)
        }
        None => {
            serve::run(args.mode, listeners, &ctx)?;
            None
        }
    };
    eprintln!("{}", ctx.stats.summary());
    if let Some(roll) = roll {
        eprintln!("{roll}");
    }
    Ok(ExitCode::SUCCESS)
}

/// A one-line notice when the server listens beyond this machine: a
/// wildcard (`0.0.0.0`, `[::]`) or any address that is not loopback.
pub fn exposure_notice(local: std::net::SocketAddr) -> Option<String> {
    (!local.ip().is_loopback()).then(|| {
        format!("notice: listening on {local} exposes this echo service to every machine that can reach it")
    })
}
